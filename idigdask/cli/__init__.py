"""The ``idigdask`` command: a thin layer of argument parsing over the Python API.

Each sub-command lives in a module of this package with two functions:
``register(subparsers)`` adds its parser, and ``run(args) -> dict`` calls the public API
and returns a summary. ``main`` prints that summary as text, or as JSON with ``--json``,
and turns a :class:`~idigdask.errors.UserError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import os
import sys
from typing import Any, Sequence

from ..errors import UserError

#: Sub-command modules, in the order of the route the data takes.
COMMANDS = ("synth", "catalog", "build", "ledger", "report", "train", "evaluate", "predict",
            "explain", "demo", "cluster_info")

#: The libraries each command loads anyway, imported up front by :func:`entry`.
#: Keras is left to the commands: TensorFlow logs to stderr as it loads, which would
#: come before the one line of a user mistake.
_DASK = ("dask.dataframe", "distributed")
#: What a build's tasks load on the in-process worker: the store, the HTTP client, the
#: decoders and the DCT of the perceptual hash.
_MEDIA = ("zarr", "aiohttp", "PIL.Image", "simplejpeg", "imagehash", "scipy.fftpack",
          "pyarrow.parquet")
STACKS: dict[str, tuple[str, ...]] = {
    "catalog": ("idigdask.catalog", "dask.dataframe"),
    "build": ("idigdask.build", *_DASK, *_MEDIA),
    "ledger": ("idigdask.store",),
    "report": ("idigdask.quality", *_DASK),
    "train": ("idigdask.train", *_DASK),
    "evaluate": ("idigdask.evaluate", *_DASK),
    "predict": ("idigdask.predict", *_DASK),
    "explain": ("idigdask.explain", "idigdask.predict", *_DASK),
    "demo": ("idigdask.demo", *_DASK),
    "cluster-info": ("idigdask.cluster", *_DASK),
}
#: Libraries a command's stack would import and the command never uses. dask.array
#: imports ``sparse`` (and with it numba: about 0.15 s of a build's 2 s start-up)
#: wherever it is installed, as dask-ml's dask-glm installs it, only to register its
#: array type, and xarray (about 40 ms) for the same reason; a build makes neither
#: sparse arrays nor xarray objects. Kept out of the process, they look not installed
#: (``importlib.util.find_spec`` gives None).
UNUSED: dict[str, tuple[str, ...]] = {"build": ("sparse", "xarray")}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``idigdask`` command and all its sub-commands."""
    from .. import __version__

    parser = _Parser(prog="idigdask", description="iDigBio specimen media to training-ready "
                     "image arrays and CNNs, with Dask.")
    parser.add_argument("--version", action="version", version=f"idigdask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        p = module.register(sub)
        p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def _print_text(summary: dict[str, Any], indent: str = "") -> None:
    for key, value in summary.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_text(value, indent + "  ")
        else:
            print(f"{indent}{key}: {value}")


def _log_to_stderr() -> None:
    """Show idigdask's own progress messages (the dashboard link...) on stderr."""
    logger = logging.getLogger("idigdask")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("idigdask: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _import_stack(modules: Sequence[str], unused: Sequence[str] = ()) -> None:
    """Import a command's libraries with the cyclic garbage collector paused, then freeze.

    Their objects live as long as the process. Importing them creates hundreds of
    thousands of objects, and the collector would traverse them again and again
    during start-up (about a quarter of the start-up of ``idigdask build``); frozen,
    it skips them. A library that is missing is left for the command to report;
    those in ``unused`` (:data:`UNUSED`) are kept out of the process.
    """
    for name in unused:  # a None entry makes `import name` fail as if not installed
        sys.modules.setdefault(name, None)
    gc.disable()
    try:
        for name in modules:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
    finally:
        gc.freeze()
        gc.enable()


def entry() -> None:
    """The ``idigdask`` program: :func:`main` in a process of its own, then exit."""
    code = main(_preload=True)
    # exiting: frozen objects are not traversed by the collection at interpreter
    # shutdown, which otherwise takes most of a second after a build
    gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None, *, _preload: bool = False) -> int:
    """Run the ``idigdask`` command line and return its exit code."""
    # TensorFlow's C++ log noise, before anything imports it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    _log_to_stderr()
    if _preload:
        _import_stack(STACKS.get(args.command, ()), UNUSED.get(args.command, ()))
    try:
        # with --json, stdout carries the summary alone: progress goes to stderr
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            summary = dry_run(args) if getattr(args, "dry_run", False) else args._run(args)
    except UserError as exc:
        from ..fetch import redact

        # messages may quote a URL: never print its credentials
        print(f"idigdask {args.command}: error: {redact(_as_flag(exc, args._parser))}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"idigdask {args.command}: interrupted", file=sys.stderr)
        return 130
    if args.json:
        json.dump(summary, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif "job_script" in summary:  # --dry-run: the script as the batch system gets it
        sys.stdout.write(summary["job_script"])
    else:
        _print_text(summary)
    return 0


def _as_flag(exc: UserError, parser: argparse.ArgumentParser) -> str:
    """The message of an error, naming the command's flag where it names an option.

    An :class:`~idigdask.options.OptionError` names the option (``batch_size``); on
    the command line the flag that sets it (``--batch-size``, or the flag whose
    destination is the option, e.g. ``--no-augment`` for ``augment``) says more.
    """
    from ..options import OptionError

    if not isinstance(exc, OptionError):
        return str(exc)
    flags = parser._option_string_actions  # flag -> action, argparse's own table
    flag = "--" + exc.option.replace("_", "-")
    if flag not in flags:
        flag = next((f for f, action in flags.items()
                     if action.dest == exc.option and f.startswith("--")), None)
    return f"{flag}: {exc.detail}" if flag else str(exc)


def json_object_arg(text: str | None, flag: str) -> dict | None:
    """Parse a flag holding a JSON object, reporting bad JSON as a user error."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{flag} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise UserError(f"{flag} must be a JSON object")
    return value


def storage_options_arg(text: str | None, flag: str = "--storage-options") -> dict | None:
    """Parse a storage-options JSON flag, reporting bad JSON as a user error."""
    return json_object_arg(text, flag)


def add_cluster_kind(p, help_prefix: str) -> None:
    """``--cluster KIND``: local or a batch system of dask-jobqueue."""
    from ..hpc import JOBQUEUE_CLASSES

    p.add_argument("--cluster", default=None, metavar="KIND",
                   choices=["local", *JOBQUEUE_CLASSES],
                   help=help_prefix + ", ".join(JOBQUEUE_CLASSES))


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """Where a command's work runs: a scheduler, batch jobs or a LocalCluster."""
    g = p.add_argument_group("where the work runs (defaults: dask config idigdask.cluster; "
                             "a batch job's resources: dask-jobqueue's jobqueue.yaml)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="join this Dask scheduler (tcp://host:8786)")
    add_cluster_kind(g, "local, or workers as batch jobs: ")
    g.add_argument("--jobs", default=None, metavar="N|MIN:MAX",
                   help="batch jobs to keep (1); MIN:MAX follows the work; jobs that end "
                        "are replaced")
    g.add_argument("--adapt", action="store_const", const=True, default=None,
                   help="--jobs N means between 0 and N jobs")
    g.add_argument("--cluster-options", default=None, metavar="JSON",
                   help="keyword arguments of the dask-jobqueue cluster over jobqueue.yaml, "
                        "e.g. '{\"queue\": \"gpu\", \"walltime\": \"02:00:00\"}'")
    g.add_argument("--dry-run", action="store_true",
                   help="print the job script the batch system would get; submit nothing")
    g.add_argument("--workers", type=int, default=None,
                   help="worker processes of the LocalCluster (default: one thread per core)")
    g.add_argument("--threads", type=int, default=None,
                   help="threads of the in-process LocalCluster (default: one per core)")


def _cluster_kind(args: argparse.Namespace) -> str:
    from .. import config

    return str(args.cluster or config.get("cluster.kind") or "local").lower()


def wants_cluster(args: argparse.Namespace) -> bool:
    """Whether the command was asked to run on a cluster (a flag or the dask config)."""
    from .. import config

    return bool(args.scheduler or config.get("cluster.scheduler") or args.workers
                or args.threads or _cluster_kind(args) != "local")


def cluster_settings(args: argparse.Namespace):
    """The cluster flags as the dask config ``idigdask.cluster`` of a command's calls.

    So a stage function starts its cluster itself, after it has checked its
    arguments, and a mistake ends before any job is submitted.
    """
    import dask

    settings = {f"idigdask.cluster.{key}": value for key, value in (
        ("n-workers", args.workers), ("n-threads", args.threads),
        ("kind", args.cluster), ("jobs", args.jobs), ("adapt", args.adapt))
        if value is not None}
    return dask.config.set(settings) if settings else contextlib.nullcontext()


def cluster_options_arg(args: argparse.Namespace) -> dict | None:
    """``--cluster-options``: keyword arguments of the dask-jobqueue cluster."""
    return json_object_arg(args.cluster_options, "--cluster-options")


@contextlib.contextmanager
def cluster_client(args: argparse.Namespace):
    """The Dask client of a command, by its cluster flags over the dask config."""
    from ..cluster import get_client

    with cluster_settings(args), get_client(args.scheduler,
                                            cluster_options=cluster_options_arg(args)) as client:
        yield client


def dry_run(args: argparse.Namespace) -> dict[str, Any]:
    """``--dry-run``: the job script the command's batch jobs would run, nothing submitted."""
    from ..hpc import job_script

    kind = _cluster_kind(args)
    if kind == "local" or args.scheduler:
        raise UserError("--dry-run shows a batch job's script: give --cluster slurm (sge, "
                        "pbs, lsf, htcondor...) or set idigdask.cluster.kind")
    from .. import config

    script = job_script(kind, cluster_options_arg(args), lifetime=config.get_bool("cluster.lifetime"))
    return {"cluster": kind, "job_script": script}


def with_cluster(summary: dict[str, Any], client) -> dict[str, Any]:
    """A command's summary with where it ran (``cluster``: scheduler, dashboard, jobs)."""
    from ..cluster import cluster_summary

    if client is not None:
        summary["cluster"] = cluster_summary(client)
    return summary


def add_catalog_options(p: argparse.ArgumentParser) -> None:
    """Options every command that reads a catalog shares with ``read_catalog``."""
    p.add_argument("--format", dest="source_format", default=None,
                   help="source kind: guoda, table, dwca, search (default: detected)")
    p.add_argument("--url-column", default=None, help="column holding the media URL")
    p.add_argument("--id-column", default=None, help="column holding a media identifier")
    p.add_argument("--label-column", default=None, help="column holding the label")
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec storage options for the source and store, as JSON")


if __name__ == "__main__":  # pragma: no cover
    entry()
