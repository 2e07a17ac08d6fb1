"""idigdask's sound build side by side with a plain librosa loop, on the same recordings.

One command, one machine, one run: it writes (or reuses from its cache) a set of
synthetic animal-call recordings (``idigdask.synthetic_calls.write_call_catalog``:
WAV, FLAC, Ogg Vorbis and MP3 at 16 to 48 kHz, mono and stereo) and runs each tool on
them as a whole process, start-up included::

    python benchmarks/sounds.py                        # 200 recordings of about 6 s
    python benchmarks/sounds.py --n 40 --repeat 2 --tools idigdask,librosa

Tools (``--tools``):

``idigdask``
    ``idigdask build media.parquet -o STORE --media sounds --no-progress --json``, the
    CLI in a subprocess with its default cluster (one in-process worker, a thread a
    core): decode (libsndfile), resample to 16 kHz (soxr), trim leading silence, 2 s
    clips every 1 s, 64-band log-mel spectrograms stored as uint8 in Zarr, a ledger.
    Its clips are counted from the JSON summary.
``librosa``
    A plain script as a user would write it (:data:`LIBROSA_LOOP`), one process:
    ``librosa.load(path, sr=16000, mono=True)`` per file, no trimming, the same 2 s
    windows every 1 s, ``librosa.feature.melspectrogram(n_fft=512, hop_length=160,
    n_mels=64, fmin=50, fmax=8000)`` and ``librosa.power_to_db(ref=np.max, top_db=80)``
    per window, the clips stacked and written with ``np.save``.
``librosa-pool``
    The same script with a ``multiprocessing.Pool`` of ``--processes`` (default: the
    usable cores) mapped over the files, so that the comparison is honest about
    idigdask using every core.

Every figure is the median of ``--repeat`` runs; the tools run round-robin, their order
rotating every round. Clips/s and recordings/s are over the wall time of the tool's
process, start-up included. Every round also runs each tool on a one-recording
input: its wall time is the tool's start-up, and "steady" clips/s is the rate once
running, (clips - clips of one recording) / (wall - wall of one recording).

``--blas-threads N`` sets ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``MKL_NUM_THREADS`` in every tool's environment (by default they are left unset, as a
user runs the tools; numpy's OpenBLAS then starts a thread a core in every process).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # ``benchmarks._data`` and ``compare``

TOOLS = ("idigdask", "librosa", "librosa-pool")
#: The recordings of the set: seed and nominal seconds of each recording's call part.
SEED = 31
DURATION = 6.0
#: Seconds one tool's run may take before it is killed and reported as failed.
RUN_TIMEOUT = 3600
#: The variables ``--blas-threads`` sets in every tool's environment.
BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: The plain loop, written into a file and run as ``python loop.py PATHS OUT.npy [N]``.
#: It mirrors idigdask's clip grid (``idigdask.audio.clip_starts``) so that both cut the
#: same windows; it trims nothing, so it yields a few more clips from the same files.
LIBROSA_LOOP = '''\
import json
import sys

import librosa
import numpy as np

SR = 16000
WINDOW, HOP = 2 * SR, 1 * SR


def starts_of(n):
    """Windows every second while they fit; a short tail of half a window or more, padded."""
    if n < WINDOW:
        return [0]
    starts = list(range(0, n - WINDOW + 1, HOP))
    last = starts[-1]
    if 2 * (n - max(last + HOP, last + WINDOW)) >= WINDOW:
        starts.append(last + HOP)
    return starts


def clips_of(path):
    y, sr = librosa.load(path, sr=SR, mono=True)
    clips = []
    for start in starts_of(len(y)):
        window = y[start:start + WINDOW]
        if len(window) < WINDOW:
            window = np.pad(window, (0, WINDOW - len(window)))
        mel = librosa.feature.melspectrogram(y=window, sr=SR, n_fft=512, hop_length=160,
                                             n_mels=64, fmin=50, fmax=8000)
        clips.append(librosa.power_to_db(mel, ref=np.max, top_db=80))
    return np.stack(clips)


def main():
    with open(sys.argv[1], encoding="utf-8") as fh:
        paths = [line for line in fh.read().splitlines() if line]
    processes = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    if processes > 1:
        from multiprocessing import Pool

        with Pool(processes) as pool:
            per_file = pool.map(clips_of, paths)
    else:
        per_file = [clips_of(path) for path in paths]
    clips = np.concatenate(per_file).astype(np.float32)
    np.save(sys.argv[2], clips)
    print("RESULT " + json.dumps({"recordings": len(per_file), "clips": int(clips.shape[0])}))


if __name__ == "__main__":
    main()
'''


# =====================================================================================
# The recordings
# =====================================================================================

@dataclass(frozen=True)
class CallSet:
    """A cached folder of synthetic recordings and what is known about them.

    Attributes
    ----------
    folder : str
        The set's folder (``sounds/``, ``media.parquet``, ``recordings.csv``).
    catalog : str
        The GUODA-schema media parquet of every recording.
    one : str
        The same catalog cut to its first recording (for start-up runs).
    paths : list of str
        The recordings' files, in catalog order.
    nbytes : int
        Total size of the files.
    seconds : float
        Total duration of the recordings.
    formats : dict
        Recordings per file format.
    """

    folder: str
    catalog: str
    one: str
    paths: list[str]
    nbytes: int
    seconds: float
    formats: dict


def cache_dir(cache: str | os.PathLike | None) -> Path:
    """The benchmarks' cache folder, or ``cache`` (created): the suites' own rule."""
    from benchmarks._data import _base

    return _base(cache)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (another process writing the same set waits)."""
    import fcntl

    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def call_set(n: int, *, duration: float = DURATION, seed: int = SEED,
             root: str | os.PathLike | None = None) -> CallSet:
    """Return a cached set of ``n`` synthetic recordings, writing it if needed.

    The catalog holds the files' absolute paths, so a set is written under its final
    name (under a lock) and only marked complete (``done.json``) at the end; a folder
    left without the mark by an interrupted run is written again.
    """
    import pyarrow.parquet as pq

    from idigdask.synthetic_calls import write_call_catalog

    base = cache_dir(root)
    final = base / f"calls-n{n}-d{duration:g}-s{seed}"
    done = final / "done.json"
    if not done.exists():
        with _locked(base / f".{final.name}.lock"):
            if not done.exists():
                shutil.rmtree(final, ignore_errors=True)
                catalog = write_call_catalog(final, n=n, seed=seed, duration=duration,
                                             faults=False)
                table = pq.read_table(catalog)
                pq.write_table(table.slice(0, 1), final / "one.parquet")
                paths = [str(p) for p in table.column("accessuri").to_pylist()]
                with open(final / "recordings.csv", newline="", encoding="utf-8") as fh:
                    rows = list(csv.DictReader(fh))
                formats: dict[str, int] = {}
                for row in rows:
                    formats[row["format"]] = formats.get(row["format"], 0) + 1
                done.write_text(json.dumps({
                    "paths": paths, "seconds": sum(float(r["duration"]) for r in rows),
                    "formats": dict(sorted(formats.items())),
                    "rates": sorted({int(r["rate"]) for r in rows}),
                    "stereo": sum(1 for r in rows if int(r["channels"]) > 1)}))
    meta = json.loads(done.read_text())
    paths = meta["paths"]
    return CallSet(str(final), str(final / "media.parquet"), str(final / "one.parquet"), paths,
                   sum(os.path.getsize(p) for p in paths), float(meta["seconds"]),
                   meta["formats"])


# =====================================================================================
# Running the tools
# =====================================================================================

@dataclass
class ToolRun:
    """One run of one tool: wall seconds, recordings and clips done, peak tree RSS, or an
    error; ``cpu``: user + system seconds of its process and the descendants it waited for."""

    seconds: float
    recordings: int = 0
    clips: int = 0
    failed: int = 0
    peak: int = 0
    error: str = ""
    cpu: float = 0.0


def _monitored(cmd: list[str], timeout: float = RUN_TIMEOUT,
               env: dict | None = None) -> tuple[float, int, str, str, int, float]:
    """Run ``cmd``; (wall seconds, exit code, stdout, stderr, peak RSS of its process tree,
    CPU seconds of the process and the descendants it waited for)."""
    import resource
    import subprocess

    from benchmarks._data import PeakTreeRSS

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        with PeakTreeRSS(proc.pid) as peak:
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        seconds = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        out.seek(0)
        err.seek(0)
        return seconds, code, out.read(), err.read(), peak.peak, cpu


def _tail(text: str, n: int = 4) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])[-400:].replace("|", "/") or "no output"


class Runner:
    """Runs the tools as whole processes in a work folder of its own."""

    def __init__(self, processes: int, timeout: float = RUN_TIMEOUT,
                 blas_threads: int | None = None):
        self.processes = processes
        self.timeout = timeout
        self.env = None if blas_threads is None else \
            dict(os.environ, **{name: str(blas_threads) for name in BLAS_THREADS})
        self.work = Path(tempfile.mkdtemp(prefix="idigdask-sounds-"))
        self.loop = self.work / "librosa_loop.py"
        self.loop.write_text(LIBROSA_LOOP)
        self._lists: dict[tuple[str, ...], Path] = {}

    def run(self, tool: str, catalog: str, paths: list[str]) -> ToolRun:
        out = self.work / f"{tool}-{time.time_ns()}"
        try:
            if tool == "idigdask":
                return self._idigdask(catalog, out.with_suffix(".zarr"))
            if tool in ("librosa", "librosa-pool"):
                return self._librosa(paths, out.with_suffix(".npy"),
                                     self.processes if tool == "librosa-pool" else 1)
            return ToolRun(0.0, error=f"unknown tool {tool!r}")
        except Exception as exc:  # a broken tool is a row of the report, not a crash
            return ToolRun(0.0, error=f"{type(exc).__name__}: {exc}"[:400])
        finally:
            shutil.rmtree(out.with_suffix(".zarr"), ignore_errors=True)
            out.with_suffix(".npy").unlink(missing_ok=True)

    def _idigdask(self, catalog: str, store: Path) -> ToolRun:
        cmd = [sys.executable, "-m", "idigdask", "build", catalog, "-o", str(store),
               "--media", "sounds", "--no-progress", "--json"]
        seconds, code, stdout, stderr, peak, cpu = _monitored(cmd, self.timeout, self.env)
        if code != 0:
            return ToolRun(seconds, peak=peak, error=f"exit {code}: {_tail(stderr)}", cpu=cpu)
        summary = json.loads(stdout[stdout.index("{"):])
        status = summary["status"]
        return ToolRun(seconds, status["ok"], int(summary["clips"]), status["failed"], peak,
                       cpu=cpu)

    def _librosa(self, paths: list[str], out: Path, processes: int) -> ToolRun:
        key = tuple(paths)
        if key not in self._lists:
            listing = self.work / f"paths-{len(self._lists)}.txt"
            listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
            self._lists[key] = listing
        cmd = [sys.executable, str(self.loop), str(self._lists[key]), str(out)]
        if processes > 1:
            cmd.append(str(processes))
        seconds, code, stdout, stderr, peak, cpu = _monitored(cmd, self.timeout, self.env)
        if code != 0:
            return ToolRun(seconds, peak=peak, error=f"exit {code}: {_tail(stderr)}", cpu=cpu)
        for line in reversed(stdout.splitlines()):
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
                return ToolRun(seconds, result["recordings"], result["clips"],
                               len(paths) - result["recordings"], peak, cpu=cpu)
        return ToolRun(seconds, peak=peak, error=f"no RESULT line: {_tail(stdout + stderr)}",
                       cpu=cpu)

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def summarize(runs: list[ToolRun], startup: list[ToolRun] | None = None) -> dict:
    """Medians over a tool's good runs (and its one-recording runs, for the start-up)."""
    good = [r for r in runs if not r.error and r.seconds > 0]
    if not good:
        return {"error": next((r.error for r in runs if r.error), "no run")}
    row = {"clips_s": statistics.median(r.clips / r.seconds for r in good),
           "recordings_s": statistics.median(r.recordings / r.seconds for r in good),
           "seconds": statistics.median(r.seconds for r in good),
           "seconds_range": (min(r.seconds for r in good), max(r.seconds for r in good)),
           "cpu_s": statistics.median(r.cpu for r in good),
           "peak_mib": statistics.median(r.peak for r in good) / 2**20,
           "clips": min(r.clips for r in good), "recordings": min(r.recordings for r in good),
           "failed": max(r.failed for r in good), "runs": len(good),
           "errors": [r.error for r in runs if r.error],
           "startup_s": None, "steady_clips_s": None}
    ones = [r for r in startup or [] if not r.error and r.seconds > 0]
    if ones:
        row["startup_s"] = statistics.median(r.seconds for r in ones)
        one_clips = statistics.median(r.clips for r in ones)
        steady = [(r.clips - one_clips) / (r.seconds - row["startup_s"]) for r in good
                  if r.seconds > row["startup_s"]]
        row["steady_clips_s"] = statistics.median(steady) if steady else None
    return row


def compare(n: int = 200, *, repeat: int = 3, tools: tuple[str, ...] | list[str] = TOOLS,
            duration: float = DURATION, seed: int = SEED, cache: str | os.PathLike | None = None,
            processes: int | None = None, startup: bool = True,
            blas_threads: int | None = None, log=print) -> dict:
    """Write or reuse the set, run ``tools`` round-robin ``repeat`` times; return the medians.

    Returns
    -------
    dict
        ``rows`` (tool: medians, or ``{"error": ...}``), ``ratios`` (idigdask's clips/s
        ÷ each tool's, whole process and steady), ``set`` (the recordings), ``cores``,
        ``processes``, ``repeat``.
    """
    tools = list(tools)
    cores = usable_cores()
    processes = processes or cores
    log(f"writing or reusing {n} recordings in {cache_dir(cache)} ...")
    calls = call_set(n, duration=duration, seed=seed, root=cache)
    runner = Runner(processes, blas_threads=blas_threads)
    load = [os.getloadavg()[0]]
    runs: dict[str, list[ToolRun]] = {t: [] for t in tools}
    ones: dict[str, list[ToolRun]] = {t: [] for t in tools}
    try:
        for r in range(repeat):
            order = tools[r % len(tools):] + tools[:r % len(tools)]
            inputs = ([("one", calls.one, calls.paths[:1])] if startup else []) + \
                [("all", calls.catalog, calls.paths)]
            for name, catalog, paths in inputs:
                for tool in order:
                    run = runner.run(tool, catalog, paths)
                    (ones if name == "one" else runs)[tool].append(run)
                    status = run.error or (f"{run.recordings} recordings, {run.clips} clips in "
                                           f"{run.seconds:.2f} s ({run.clips / run.seconds:.1f} "
                                           f"clips/s), {run.cpu:.2f} s CPU, "
                                           f"peak {run.peak / 2**20:.0f} MiB")
                    log(f"[round {r + 1}/{repeat}] {name:<3} {tool:<12} {status}")
    finally:
        runner.close()
    load.append(os.getloadavg()[0])
    rows = {t: summarize(runs[t], ones[t]) for t in tools}
    ours = rows.get("idigdask", {})
    ratios = {t: {"wall": _ratio(ours.get("clips_s"), rows[t].get("clips_s")),
                  "steady": _ratio(ours.get("steady_clips_s"), rows[t].get("steady_clips_s")),
                  "recordings": _ratio(ours.get("recordings_s"), rows[t].get("recordings_s"))}
              for t in tools if t != "idigdask"}
    return {"rows": rows, "ratios": ratios, "cores": cores, "processes": processes,
            "repeat": repeat, "startup": startup, "blas_threads": blas_threads, "load": load,
            "set": {"n": len(calls.paths), "folder": calls.folder, "seconds": calls.seconds,
                    "nbytes": calls.nbytes, "formats": calls.formats, "duration": duration,
                    "seed": seed}}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


# =====================================================================================
# The report
# =====================================================================================

def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def labels(processes: int) -> dict[str, str]:
    return {"idigdask": "idigdask build --media sounds",
            "librosa": "librosa loop (1 process)",
            "librosa-pool": f"librosa loop (Pool of {processes})"}


def table(result: dict) -> str:
    """Markdown table of the medians; ratios are idigdask ÷ tool (above 1: idigdask faster)."""
    names = labels(result["processes"])
    lines = ["| tool | clips/s | recordings/s | clips | wall s (min–max) | CPU s | start-up s | "
             "steady clips/s | peak memory (MiB) | idigdask ÷ tool (clips/s) | "
             "idigdask ÷ tool (steady) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for tool, row in result["rows"].items():
        name = names.get(tool, tool)
        if "error" in row:
            lines.append(f"| {name} | error: {row['error'][:300]} | | | | | | | | | |")
            continue
        ratio = result["ratios"].get(tool, {"wall": 1.0, "steady": 1.0 if row["steady_clips_s"]
                                            else None})
        failed = f" ({row['failed']} failed)" if row["failed"] else ""
        lines.append(
            f"| {name} | {_fmt(row['clips_s'])} | {_fmt(row['recordings_s'])} | "
            f"{row['clips']:,}{failed} | {_fmt(row['seconds'], 2)} "
            f"({_fmt(row['seconds_range'][0], 2)}–{_fmt(row['seconds_range'][1], 2)}) | "
            f"{_fmt(row['cpu_s'], 2)} | {_fmt(row['startup_s'], 2)} | "
            f"{_fmt(row['steady_clips_s'])} | {_fmt(row['peak_mib'], 0)} | "
            f"{_fmt(ratio['wall'], 2)} | {_fmt(ratio['steady'], 2)} |")
    return "\n".join(lines)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("idigdask", "librosa", "soundfile", "soxr", "numpy", "dask", "zarr"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    try:
        import soundfile

        found["libsndfile"] = soundfile.__libsndfile_version__
    except Exception:  # noqa: BLE001 - a version line, nothing more
        pass
    return found


def report(result: dict, argv: list[str]) -> str:
    from compare import machine_info

    info, s = machine_info(), result["set"]
    now = _dt.datetime.now().astimezone()
    formats = ", ".join(f"{n} {fmt}" for fmt, n in s["formats"].items())
    lines = [f"# idigdask's sound build vs a plain librosa loop — {now:%Y-%m-%d %H:%M %Z}", "",
             f"Command: `python benchmarks/sounds.py {' '.join(argv)}`".rstrip(), "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
             f"{info['os']}; load average (1 min) {result['load'][0]:.2f} before the runs, "
             f"{result['load'][-1]:.2f} after (other work on the machine shows here)", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), "",
             f"Recordings: {s['n']} synthetic animal calls (`write_call_catalog(n={s['n']}, "
             f"seed={s['seed']}, duration={s['duration']:g})`: {formats}; 16 to 48 kHz, a "
             f"quarter stereo, some with a spoken introduction or leading silence), "
             f"{s['seconds'] / 60:.1f} minutes of audio, {s['nbytes'] / 1e6:.1f} MB.", "",
             f"Median of {result['repeat']} runs, tools round-robin, each a whole process "
             "(start-up included). Both cut 2 s clips every 1 s of the 16 kHz signal into "
             "64-band log-mel spectrograms (n_fft 512, hop 160, 50-8000 Hz, 80 dB); idigdask "
             "also trims leading silence (so it makes fewer clips of the same files), hashes "
             "every file, quantizes to uint8 and writes a Zarr store and its ledger; the "
             "loop writes float32 clips with `np.save`. Start-up: the median wall time of "
             "the same tool on the first recording alone; steady clips/s = (clips − clips of "
             "that recording) ÷ (wall − its wall). CPU s: user + system time of the tool's "
             "process and its children (median).", "",
             "Threads: " + ("OMP/OPENBLAS/MKL_NUM_THREADS unset, each library's default "
                            "(as a user runs them)" if result.get("blas_threads") is None else
                            f"OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS = "
                            f"{result['blas_threads']} in every tool's environment") + ".", "",
             table(result), ""]
    ratios = result["ratios"]
    names = labels(result["processes"])
    if ratios:
        lines += ["Ratios (idigdask ÷ tool; above 1: idigdask faster):", ""]
        for tool, ratio in ratios.items():
            lines.append(f"- {names.get(tool, tool)}: {_fmt(ratio['wall'], 2)}x clips/s, "
                         f"{_fmt(ratio['recordings'], 2)}x recordings/s, "
                         f"{_fmt(ratio['steady'], 2)}x steady clips/s")
        lines.append("")
    return "\n".join(lines)


# =====================================================================================
# main
# =====================================================================================

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cores = usable_cores()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="recordings (200)")
    p.add_argument("--duration", type=float, default=DURATION,
                   help=f"nominal seconds of a recording's call part ({DURATION:g})")
    p.add_argument("--seed", type=int, default=SEED, help=f"seed of the set ({SEED})")
    p.add_argument("--repeat", type=int, default=3, help="runs of each tool; the median is kept")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"subset of {','.join(TOOLS)}")
    p.add_argument("--processes", type=int, default=cores,
                   help=f"processes of librosa-pool (the usable cores: {cores})")
    p.add_argument("--out", default=None,
                   help="Markdown report (benchmarks/results/sounds-DATE.md)")
    p.add_argument("--cache", default=None, help="dataset cache (~/.cache/idigdask-bench)")
    p.add_argument("--blas-threads", type=int, default=None, metavar="N",
                   help="set OMP/OPENBLAS/MKL_NUM_THREADS=N for every tool "
                        "(default: unset, as a user runs them)")
    p.add_argument("--no-startup", action="store_true",
                   help="skip the one-recording runs that measure each tool's start-up")
    args = p.parse_args(argv)
    chosen = [t for t in args.tools.split(",") if t]
    unknown = set(chosen) - set(TOOLS)
    if unknown or not chosen:
        p.error(f"--tools: unknown {', '.join(sorted(unknown)) or 'none given'}; "
                f"choose from {', '.join(TOOLS)}")
    if args.n < 1 or args.repeat < 1 or args.processes < 1 or args.duration <= 0 \
            or (args.blas_threads is not None and args.blas_threads < 1):
        p.error("--n, --repeat, --processes and --blas-threads must be at least 1, "
                "--duration above 0")
    args.tools = [t for t in TOOLS if t in chosen]
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; print the table, write the Markdown report, return the medians."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    result = compare(args.n, repeat=args.repeat, tools=args.tools, duration=args.duration,
                     seed=args.seed, cache=args.cache, processes=args.processes,
                     startup=not args.no_startup, blas_threads=args.blas_threads,
                     log=lambda line: print(line, flush=True))
    text = report(result, argv)
    print("\n" + text)
    out = Path(args.out) if args.out else \
        HERE / "results" / f"sounds-{_dt.date.today().isoformat()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"written: {out}")
    return {**result, "report": str(out)}


if __name__ == "__main__":
    main()
