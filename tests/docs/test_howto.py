"""Every command of the how-to pages (``docs/howto/*.rst``), run as a reader types it.

Sphinx does not execute these pages; this test does. For each page it reads every
``.. code-block:: console`` block, takes each ``$ `` line (with its ``\\``
continuation lines) as one command, and runs the page's commands in order in ONE
bash session in a scratch folder, as a reader at a terminal would (``cd``, shell
variables and background jobs carry from one command to the next). A code block
whose ``:caption:`` is a path (``~/.config/dask/idigdask.yaml``, ``./settings.py``)
is a file the reader writes: the test writes it at that point of the page.

What is checked:

* every command exits 0, or with the code its line names (``# exit code 2``);
* the output shown under a command is in what it printed, line by line and in
  order (``...`` in a shown line stands for anything; a line ``...`` alone for any
  lines);
* no command is left unrun: every ``$ `` line of a page is in a console block, and
  every command parsed ran.

The pages name the real services (iDigBio's search and media APIs, Figshare). The
test points them at real local stand-ins through a small substitution table per
page (see each ``test_<page>_page``), applied to the commands, to the files and to the output shown; each entry
must be used, so the table cannot go stale. The environment makes everything local:
``HOME`` is a scratch folder (``~/.config/dask`` is the page's own), media on
127.0.0.1 are allowed (``DASK_IDIGDASK__FETCH__ALLOW_PRIVATE=true``), and the
internet is never reached.

The HPC page runs on the project's real Slurm and Grid Engine (``ci/slurm.sh``,
``ci/sge.sh``), which ``make test`` starts; this test only asks them (``env``) and
never starts or stops them. Without them it skips, and under ``CI=true`` it fails.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOWTO = ROOT / "docs" / "howto"
BIN = Path(sys.executable).parent
PAGE_TIMEOUT_S = 600

PAGES = ("search", "schuettpelz", "hpc", "configuration", "ledger", "performance",
         "sounds")


# ----------------------------------------------------------------------------- parsing

@dataclasses.dataclass
class Step:
    """One thing a page has the reader do: run a command, or write a file."""

    kind: str            # "run" or "file"
    text: str            # the command (continuations joined) or the file's content
    line: int            # where it starts in the page (1-based)
    expect: int = 0      # the exit code the page says
    output: list[str] = dataclasses.field(default_factory=list)  # shown output lines
    path: str = ""       # for a file: where it goes


_DIRECTIVE = re.compile(r"^(\s*)\.\. code-block::\s*(\S+)\s*$")
_OPTION = re.compile(r"^\s*:(\w[\w-]*):\s*(.*?)\s*$")
_EXIT = re.compile(r"#\s*exit code (\d+)\s*$")


def _blocks(lines: list[str]):
    """(language, options, body lines, first body line number) of each code block."""
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, language = len(match.group(1)), match.group(2)
        options, i = {}, i + 1
        while i < len(lines) and _OPTION.match(lines[i]):
            key, value = _OPTION.match(lines[i]).groups()
            options[key] = value
            i += 1
        body, start = [], i + 1
        while i < len(lines) and (not lines[i].strip() or
                                  len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
            start += 1
        margin = min((len(b) - len(b.lstrip()) for b in body if b.strip()), default=0)
        yield language, options, [b[margin:] for b in body], start


def parse_page(path: Path) -> list[Step]:
    """The steps of a page, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    steps: list[Step] = []
    for language, options, body, start in _blocks(lines):
        caption = options.get("caption", "")
        if language != "console":
            if caption.startswith(("~/", "./")):
                steps.append(Step("file", "\n".join(body) + "\n", start, path=caption))
            continue
        k = 0
        while k < len(body):
            if not body[k].startswith("$ "):
                if steps and steps[-1].kind == "run":
                    steps[-1].output.append(body[k])
                k += 1
                continue
            first, command = start + k, body[k][2:]
            while command.endswith("\\") and k + 1 < len(body):
                k += 1
                command += "\n" + body[k]
            match = _EXIT.search(command)
            steps.append(Step("run", command, first, expect=int(match.group(1)) if match else 0))
            k += 1
    return steps


def prompt_lines(path: Path) -> int:
    """``$ `` lines anywhere in the page, console blocks or not."""
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines()
               if line.lstrip().startswith("$ "))


# ----------------------------------------------------------------------------- running

def _output_matches(shown: list[str], printed: str) -> str | None:
    """None when the shown lines are in the printed ones in order, else the first missing."""
    actual = printed.splitlines()
    pos = 0
    for line in shown:
        if line.strip() in ("", "..."):
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in line.rstrip().split("...")))
        while pos < len(actual) and not pattern.search(actual[pos]):
            pos += 1
        if pos == len(actual):
            return line
        pos += 1
    return None


def _script(steps: list[Step], home: Path, logs: Path) -> str:
    out = ["cd \"$HOWTO_SCRATCH\""]
    for n, step in enumerate(steps):
        if step.kind == "file":
            target = home / step.path[2:] if step.path.startswith("~/") else step.path[2:]
            out.append(f"mkdir -p {shlex.quote(str(Path(target).parent))}")
            out.append(f"cat > {shlex.quote(str(target))} <<'__HOWTO_FILE__'\n{step.text}"
                       f"__HOWTO_FILE__")
            out.append(f"echo '{n} 0' >> {shlex.quote(str(logs / 'rcs'))}")
            continue
        log = shlex.quote(str(logs / f"{n}.log"))
        out.append(f"{{ {step.text}\n}} > {log} 2>&1 < /dev/null")
        out.append(f"rc=$?; echo \"{n} $rc\" >> {shlex.quote(str(logs / 'rcs'))}; "
                   f"[ \"$rc\" -eq {step.expect} ] || exit 97")
    return "\n".join(out) + "\n"


def run_page(name: str, tmp_path: Path, substitutions: dict[str, str],
             env: dict[str, str] | None = None) -> tuple[list[Step], Path]:
    """Run every step of a page; fail naming the first command that went wrong."""
    page = HOWTO / f"{name}.rst"
    steps = parse_page(page)
    commands = [s for s in steps if s.kind == "run"]
    assert commands, f"{page}: no commands"
    assert prompt_lines(page) == len(commands), \
        f"{page}: a '$ ' line outside a console block would not be run"
    substitutions = dict(substitutions)
    used = {key: False for key in substitutions}

    def substitute(text: str) -> str:
        for key, value in substitutions.items():
            if key in text:
                used[key] = True
                text = text.replace(key, value)
        return text

    for step in steps:
        step.text = substitute(step.text)
        step.output = [substitute(line) for line in step.output]
    for step in commands:  # the media API's root has a default: the real one
        assert "--derivative" not in step.text or "--media-api" in step.text, \
            f"{page}:{step.line}: --derivative without --media-api would reach iDigBio"
    unused = [key for key, was in used.items() if not was]
    assert not unused, f"{page}: substitutions never used: {unused}"

    scratch, home, logs = tmp_path / "work", tmp_path / "home", tmp_path / "logs"
    for folder in (scratch, home, logs):
        folder.mkdir()
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("DASK_", "SLURM_", "SGE_")) and k != "VIRTUAL_ENV"}
    full_env.update({
        "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": sys.prefix, "HOWTO_SCRATCH": str(scratch),
        "DASK_IDIGDASK__FETCH__ALLOW_PRIVATE": "true", "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    script = tmp_path / "page.sh"
    script.write_text(_script(steps, home, logs))
    proc = subprocess.Popen(["bash", str(script)], env=full_env, cwd=scratch,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        shell_out, _ = proc.communicate(timeout=PAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        shell_out, _ = proc.communicate()
    finally:
        with _suppress():
            os.killpg(proc.pid, signal.SIGKILL)  # background jobs a page left behind
    codes = {}
    rcs = logs / "rcs"
    for line in (rcs.read_text().splitlines() if rcs.exists() else []):
        n, rc = line.split()
        codes[int(n)] = int(rc)
    for n, step in enumerate(steps):
        where = f"{page.name}:{step.line}"
        log = logs / f"{n}.log"
        printed = log.read_text(errors="replace") if log.exists() else ""
        assert n in codes, (f"{where}: not run (timed out or stopped before it; "
                            f"shell said: {shell_out[-2000:]})\n$ {step.text}\n{printed[-3000:]}")
        if step.kind != "run":
            continue
        assert codes[n] == step.expect, (f"{where}: exit code {codes[n]}, the page says "
                                         f"{step.expect}\n$ {step.text}\n{printed[-4000:]}")
        missing = _output_matches(step.output, printed)
        assert missing is None, (f"{where}: the page shows {missing!r}, which the command "
                                 f"did not print\n$ {step.text}\n{printed[-4000:]}")
    assert len(codes) == len(steps)
    return steps, scratch


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (ProcessLookupError, PermissionError))


# ----------------------------------------------------------------------------- the pages

def test_index_lists_every_page():
    index = (HOWTO / "index.rst").read_text(encoding="utf-8")
    listed = re.findall(r"^\s{3}(\w+)\s*$", index.split(".. toctree::", 1)[1], re.M)
    assert sorted(listed) == sorted(PAGES)
    on_disk = sorted(p.stem for p in HOWTO.glob("*.rst") if p.stem != "index")
    assert on_disk == sorted(PAGES)
    assert prompt_lines(HOWTO / "index.rst") == 0


def test_the_parser_reads_continuations_exit_codes_output_and_files(tmp_path):
    page = tmp_path / "p.rst"
    page.write_text(
        "Title\n=====\n\n.. code-block:: yaml\n   :caption: ~/.config/dask/x.yaml\n\n"
        "   a:\n     b: 1\n\n.. code-block:: console\n\n   $ echo one \\\n       two\n"
        "   one two\n   $ false   # exit code 1\n\nText.\n")
    steps = parse_page(page)
    assert [(s.kind, s.expect) for s in steps] == [("file", 0), ("run", 0), ("run", 1)]
    assert steps[0].path == "~/.config/dask/x.yaml" and steps[0].text == "a:\n  b: 1\n"
    assert steps[1].text == "echo one \\\n    two" and steps[1].output == ["one two"]
    assert _output_matches(["rows: ...", "..."], "x\nrows: 12\n") is None
    assert _output_matches(["rows: 13"], "rows: 12\n") == "rows: 13"


# ----------------------------------------------------------------------------- stand-ins

SEARCH_API = "https://search.idigbio.org/v2"
MEDIA_API = "https://api.idigbio.org/v2"
FIGSHARE = "https://figshare.com/ndownloader/files/"


@pytest.fixture(scope="module")
def idigbio(tmp_path_factory):
    """iDigBio's search and media APIs, stood in for by SearchAPIServer on 127.0.0.1.

    24 synthetic sheets served by a MediaServer: US herbarium sheets, half of the
    specimens Lycopodiaceae and half Selaginellaceae (their ``recordTerms``, which
    ``rq`` filters on). The media API's ``/v2/media/<uuid>?size=webview`` redirects to
    the sheet's file itself: the stand-in has no smaller derivative.
    """
    from idigdask.synthetic import make_sheets, media_uuid, record_uuid
    from idigdask.testing.media_server import MediaServer
    from idigdask.testing.search_api import SearchAPIServer, make_media_item

    seed = 7
    sheets = make_sheets(tmp_path_factory.mktemp("idigbio"), n=24, size=(240, 360), seed=seed)
    with MediaServer(sheets.folder) as media:
        items = []
        for i in range(sheets.n):
            url = media.url_for(f"images/{media_uuid(seed, i)}.jpg")
            terms = {"family": "lycopodiaceae" if i % 2 else "selaginellaceae",
                     "kingdom": "plantae", "basisofrecord": "preservedspecimen",
                     "institutioncode": "us", "hasImage": True}
            items.append(make_media_item(media_uuid(seed, i), url, records=[record_uuid(seed, i)],
                                         data={"ac:accessURI": url}, record_terms=terms))
        with SearchAPIServer(items, redirect=lambda uuid, size: media.url_for(
                f"images/{uuid}.jpg")) as api:
            yield api


def test_search_page(tmp_path, idigbio):
    steps, work = run_page("search", tmp_path, {
        SEARCH_API: idigbio.base_url,   # the search API
        MEDIA_API: idigbio.base_url,    # the media API (/v2/media/<uuid> redirects)
    })
    import idigdask

    ds = idigdask.open_dataset(str(work / "families.zarr"))
    assert sorted(set(ds["label"].values)) == ["lycopodiaceae", "selaginellaceae"]
    assert all("/v2/media/" in u for u in idigdask.read_ledger(str(work / "sheets.zarr"))["access_uri"])


@pytest.fixture(scope="module")
def figshare(tmp_path_factory):
    """Figshare's download path, stood in for by a MediaServer: two archives of small
    synthetic sheets (stained, unstained) at ``/ndownloader/files/<FILE_ID>``."""
    from idigdask.synthetic import make_sheets
    from idigdask.testing.media_server import MediaServer

    root = tmp_path_factory.mktemp("figshare")
    sheets = make_sheets(root / "sheets", n=40, size=(160, 240), seed=3)
    files = root / "site" / "ndownloader" / "files"
    files.mkdir(parents=True)
    for name, folder, flag in (("STAINED_FILE_ID", "Stained", 1),
                               ("UNSTAINED_FILE_ID", "Unstained", 0)):
        with zipfile.ZipFile(files / name, "w") as archive:
            for i, (path, stained) in enumerate(zip(sheets.paths, sheets.stained)):
                if stained == flag:
                    archive.write(path, f"{folder}/US {3000000 + i}.jpg")
    with MediaServer(root / "site") as server:
        yield server


def test_schuettpelz_page(tmp_path, figshare):
    steps, work = run_page("schuettpelz", tmp_path, {
        FIGSHARE: figshare.url + "/ndownloader/files/",  # the archives
        "--epochs 30": "--epochs 1",                     # a test's training: one epoch
        "--size 256": "--size 64",                       # of tiny images
    })
    import idigdask

    assert idigdask.read_ledger(str(work / "mercury" / "mercury.zarr"))["status"].eq("ok").sum() == 40
    assert (work / "mercury" / "mercury-report" / "metrics.json").is_file()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _batch_env(script: str, check: list[str]) -> dict[str, str]:
    """The environment of the project's running Slurm or Grid Engine (``ci/<script> env``).

    Never starts or stops one: ``make test`` (ci/test.sh) does. Skips when none
    answers, or fails under ``CI=true``.
    """
    def unavailable(reason: str):
        message = f"{script}: {reason} (make test starts it: ci/test.sh)"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    found = subprocess.run(["bash", str(ROOT / "ci" / script), "env"], capture_output=True,
                           text=True, timeout=60)
    if found.returncode != 0:
        unavailable("not running")
    env = {}
    for line in found.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export "):].partition("=")
            env[name.strip()] = value.strip().strip("'\"")
    if shutil.which(check[0]) is None or subprocess.run(
            check, env={**os.environ, **env}, capture_output=True, timeout=30).returncode:
        unavailable(f"{' '.join(check)} does not answer")
    return env


@pytest.fixture
def batch_systems():
    """The environment of both batch systems the HPC page uses."""
    return {**_batch_env("slurm.sh", ["sinfo", "-h"]), **_batch_env("sge.sh", ["qstat", "-f"])}


def test_hpc_page(tmp_path, batch_systems):
    steps, work = run_page("hpc", tmp_path, {
        "/work/main/.venv": sys.prefix,  # the page's prologue: this checkout's venv
        "--epochs 2": "--epochs 1",
    }, env={**batch_systems,
            # a job whose worker died is given up after 2 s, not 15: replaced sooner
            "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "2s"})
    # the job the page cancelled was one of the build's, and a new one replaced it
    n = next(i for i, s in enumerate(steps) if s.kind == "run" and "scancel" in s.text)
    victim = (tmp_path / "logs" / f"{n}.log").read_text().split()[-1]
    log = (work / "cancelled.log").read_text()
    ids = re.search(r"^\s*ids: \[(.*)\]", log, re.M).group(1)
    assert victim.isdigit() and f"'{victim}'" not in ids, log
    shown = subprocess.run(["scontrol", "show", "job", victim], capture_output=True, text=True,
                           env={**os.environ, **batch_systems}).stdout
    completed = Path(batch_systems["IDIGDASK_SLURM_DIR"], "log", "jobcomp.txt")
    record = shown if shown.strip() else "\n".join(
        line for line in completed.read_text().splitlines() if f"JobId={victim} " in line)
    assert "JobState=CANCELLED" in record, record


def test_configuration_page(tmp_path):
    run_page("configuration", tmp_path, {})


def test_ledger_page(tmp_path):
    steps, work = run_page("ledger", tmp_path, {})
    import idigdask

    ledger = idigdask.read_ledger(str(work / "odd.zarr"))
    assert dict(zip(ledger["access_uri"].str.rsplit("/", n=1).str[-1], ledger["status"])) \
        == {"copy.jpg": "duplicate", "missing.jpg": "ok", "labels.csv": "failed",
            "sheet.jpg": "excluded", **{Path(u).name: "ok" for u in ledger["access_uri"]
                                        if "/sheets/images/" in u}}


def test_performance_page(tmp_path):
    run_page("performance", tmp_path, {})


def test_sounds_page(tmp_path):
    """The sounds page: synthetic calls through build, ledger, train, evaluate, predict.

    Its search section runs against iDigBio's search and records APIs stood in for by a
    RecordsAPIServer: twelve synthetic bird recordings (sounds, ``class`` aves) served
    by a MediaServer, two images the ``mq`` filter must leave out, and the specimen
    records whose ``genus`` makes the labels.
    """
    import pandas as pd

    from idigdask.synthetic_calls import write_call_catalog
    from idigdask.testing.media_server import MediaServer
    from idigdask.testing.records_api import RecordsAPIServer, make_record_item
    from idigdask.testing.search_api import make_media_item

    archive = tmp_path / "archive"
    archive.mkdir()
    with MediaServer(archive) as media:
        path = write_call_catalog(archive, n=12, seed=5, duration=3.0, base_url=media.url)
        rows = pd.read_parquet(path)
        items, records = [], {}
        for row in rows.itertuples():
            record = row.records[0]
            genus = row.data["dwc:scientificName"].split()[0]
            items.append(make_media_item(row.uuid, row.accessuri, records=[record],
                                         recordset=row.recordset, mediatype="sounds",
                                         fmt=row.format, record_terms={"class": "aves"}))
            # a specimen is one bird: the genus its first recording names
            records.setdefault(record, make_record_item(record, genus=genus,
                                                        family=row.data["dwc:family"]))
        for k, record in enumerate(list(records)[:2]):  # photographs, which mq leaves out
            items.append(make_media_item(f"photo-{k}", media.url_for(f"photo-{k}.jpg"),
                                         records=[record], record_terms={"class": "aves"}))
        with RecordsAPIServer(items, records=list(records.values())) as api:
            steps, work = run_page("sounds", tmp_path, {
                SEARCH_API: api.base_url,  # the media search and the records endpoint
                "--epochs 10": "--epochs 3",
            })
    import idigdask

    assert idigdask.open_dataset(str(work / "calls.zarr")).attrs["media"] == "sounds"
    birds = idigdask.read_ledger(str(work / "birds.zarr"))
    assert len(birds) == 12 and birds["status"].eq("ok").all()
    assert (work / "report" / "metrics.json").is_file()
