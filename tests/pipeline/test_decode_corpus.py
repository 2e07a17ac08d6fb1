"""Robustness of decode_image over a corpus of odd image files the project did not make.

The corpus is ``Tests/images`` of Pillow's source distribution on PyPI, for the Pillow
version installed: about a thousand files, many of them deliberately broken (fuzzer
finds, truncations, odd modes and headers) in JPEG, PNG, GIF, TIFF, WebP, BMP, PPM, ICO,
JPEG 2000, AVIF and formats idigdask refuses. ``pip download`` fetches it once; it is
cached under ``~/.cache/idigdask/corpus`` (``IDIGDASK_CORPUS_CACHE`` moves it), and
the test skips only when the registry cannot be reached and nothing is cached.

Every file is judged, none sampled: decode_image must either return pixels within
``MEAN_TOLERANCE`` levels (mean absolute difference over pixels and channels) of
Pillow's own rendering, or raise MediaError with a reason. Pillow's rendering is
``Image.open`` -> ``ImageOps.exif_transpose`` -> RGB (alpha composited on white; 16-bit,
32-bit and float samples scaled by the documented rule) -> idigdask's ``resize``, so
what is compared is the decode, not the resize. Files Pillow cannot open or load must
end as MediaError. Nothing may raise another exception, take longer than
``SECONDS_PER_FILE`` or grow the worker's resident memory by more than
``MEMORY_PER_FILE``. Files run in two worker processes (this file, run as a script) so
that a hang is killed and a crash is counted, not inherited by the test session.

Running this file as ``python test_decode_corpus.py --report`` prints the tally.
"""

from __future__ import annotations

import collections
import io
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

#: Side of the decoded square; small enough to be quick, large enough to see detail.
SIZE = 96
#: Most mean absolute difference (0-255 levels) from Pillow's rendering of an ``ok`` file.
MEAN_TOLERANCE = 3.0
#: Wall-clock bound of one file (decode and Pillow's reference render).
SECONDS_PER_FILE = 30.0
#: Most growth of a worker's peak resident memory while one file decodes.
MEMORY_PER_FILE = 512 << 20
#: Address-space headroom a worker gets above its size after imports: a runaway
#: allocation ends as MemoryError (and so as out_of_memory) instead of swapping.
ADDRESS_SPACE = 3 << 30
WORKERS = 2


# --------------------------------------------------------------------------- the corpus


def cache_root() -> Path:
    """Where corpora are kept between runs."""
    return Path(os.environ.get("IDIGDASK_CORPUS_CACHE", Path.home() / ".cache" / "idigdask" / "corpus"))


def _pip() -> list[str] | None:
    """A pip command line: this interpreter's pip, else one on PATH."""
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    found = shutil.which("pip3") or shutil.which("pip")
    return [found] if found else None


def _extract_images(sdist: Path, target: Path) -> int:
    """Extract the regular files under ``*/Tests/images/`` of an sdist into ``target``."""
    count = 0
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 4 or parts[1:3] != ("Tests", "images"):
                continue
            if ".." in parts or member.name.startswith("/"):
                continue
            dest = target.joinpath(*parts[3:])
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(dest, "wb") as out:  # type: ignore[union-attr]
                shutil.copyfileobj(src, out)
            count += 1
    return count


def fetch_corpus(version: str, root: Path | None = None) -> tuple[Path | None, str]:
    """The folder of Pillow ``version``'s test images, downloading it once.

    Returns
    -------
    (Path or None, str)
        The folder (None when there is none) and what happened, for a skip reason.
    """
    root = root or cache_root()
    folder = root / f"pillow-{version}"
    if (folder / ".complete").exists():
        return folder, "cached"
    pip = _pip()
    if pip is None:
        return None, "no pip to download Pillow's source distribution with"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        cmd = pip + ["download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
                     f"pillow=={version}", "-d", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return None, "pip download of Pillow's sdist timed out"
        sdists = sorted(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not sdists:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no sdist"]
            return None, f"pip download pillow=={version} failed: {tail[0][:200]}"
        staging = Path(tmp) / "images"
        if _extract_images(sdists[0], staging) == 0:
            return None, f"Pillow {version}'s sdist ships no Tests/images"
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    (folder / ".complete").write_text(f"pillow=={version} Tests/images from PyPI\n")
    return folder, "downloaded"


def corpus_files(folder: Path) -> list[Path]:
    """Every file of the corpus, in a fixed order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".complete")


# --------------------------------------------------------------------------- one file (worker side)


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        match = re.search(key + r":\s+(\d+)", fh.read())
    return int(match.group(1)) * 1024 if match else 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def pillow_rendering(data: bytes, size: int):
    """Pillow's own rendering of the first frame, through idigdask's resize."""
    import numpy as np
    from PIL import Image, ImageOps

    from idigdask.decode import resize
    from imagecases import scale_high_depth_reference

    img = Image.open(io.BytesIO(data))
    img.load()
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - an unreadable EXIF: shown as stored
        pass
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        img = Image.fromarray(scale_high_depth_reference(np.asarray(img), img.mode))
    elif img.has_transparency_data:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return resize(img.convert("RGB"), size)


def examine(path: Path, size: int = SIZE) -> dict:
    """decode_image's outcome for one file, next to Pillow's."""
    import warnings

    import numpy as np
    from PIL import Image

    from idigdask.decode import decode_bytes, decode_image
    from idigdask.errors import MediaError

    data = path.read_bytes()
    row: dict = {"outcome": "ok", "warnings": [], "diff": None, "peak": None, "estimate": None}
    measured = _reset_peak()
    base = _status("VmRSS")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = decode_image(data, size)
            row["warnings"] = list(out.warnings)
        except MediaError as exc:
            out, row["outcome"] = None, exc.reason
        except BaseException as exc:  # noqa: BLE001 - exactly what must never happen
            out, row["outcome"] = None, f"raised:{type(exc).__name__}: {str(exc)[:200]}"
        row["seconds"] = round(time.perf_counter() - started, 3)
        row["peak"] = _status("VmHWM") - base if measured else None
        try:
            opened = Image.open(io.BytesIO(data))
            row["pillow_format"] = opened.format
            row["estimate"] = decode_bytes(opened, size)
        except Exception:  # noqa: BLE001
            row["pillow_format"] = None
        try:
            reference = pillow_rendering(data, size)
            row["pillow"] = "ok"
        except Exception as exc:  # noqa: BLE001 - Pillow's own verdict
            reference, row["pillow"] = None, f"{type(exc).__name__}: {str(exc)[:120]}"
    if out is not None and reference is not None:
        diff = np.abs(out.pixels.astype(np.int16) - reference.astype(np.int16))
        row["diff"] = round(float(diff.mean()), 3)
    return row


def _worker() -> None:
    """Read file paths from stdin, one a line; write one JSON result a line."""
    import resource

    import numpy  # noqa: F401 - imports first, then the address-space bound
    import PIL.Image  # noqa: F401

    import idigdask.decode  # noqa: F401

    vm = _status("VmSize")
    if vm:
        resource.setrlimit(resource.RLIMIT_AS, (vm + ADDRESS_SPACE, resource.RLIM_INFINITY))
    for line in sys.stdin:
        row = examine(Path(line.rstrip("\n")))
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------- the pool (test side)


class _Worker:
    """One worker process and the file it is on."""

    def __init__(self, log):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1, env=env)
        self.path: Path | None = None
        self.since = 0.0

    def send(self, path: Path) -> None:
        self.path, self.since = path, time.monotonic()
        self.proc.stdin.write(f"{path}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_corpus(files: list[Path], root: Path, log_path: Path) -> dict[str, dict]:
    """Examine every file in ``WORKERS`` processes, killing one that exceeds the time bound."""
    results: dict[str, dict] = {}
    queue = list(reversed(files))
    sel = selectors.DefaultSelector()
    with open(log_path, "w") as log:
        workers = [_Worker(log) for _ in range(min(WORKERS, len(files)))]

        def feed(w: _Worker) -> None:
            if queue:
                w.send(queue.pop())
                sel.register(w.proc.stdout, selectors.EVENT_READ, w)  # type: ignore[arg-type]

        def replace(w: _Worker, outcome: str) -> None:
            results[str(w.path.relative_to(root))] = {"outcome": outcome, "pillow": None, "diff": None,
                                                      "peak": None, "warnings": [], "seconds": None}
            sel.unregister(w.proc.stdout)  # type: ignore[arg-type]
            w.stop()
            fresh = _Worker(log)
            workers[workers.index(w)] = fresh
            feed(fresh)

        for w in workers:
            feed(w)
        try:
            while sel.get_map():
                for key, _ in sel.select(timeout=1.0):
                    w = key.data
                    line = w.proc.stdout.readline()
                    if not line:
                        replace(w, f"crash:exit {w.proc.wait()}")
                        continue
                    results[str(w.path.relative_to(root))] = json.loads(line)
                    sel.unregister(w.proc.stdout)
                    w.path = None
                    feed(w)
                for w in list(workers):
                    if w.path is not None and time.monotonic() - w.since > SECONDS_PER_FILE:
                        replace(w, "hang")
        finally:
            for w in workers:
                w.stop()
    return results


def tally(results: dict[str, dict]) -> str:
    """A short report: outcomes by format, refusals of files Pillow renders, warnings."""
    by_format: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in results.values():
        fmt = row.get("pillow_format") or "unopenable"
        by_format[fmt]["ok" if row["outcome"] == "ok" else "failed"] += 1
    ok = sum(r["outcome"] == "ok" for r in results.values())
    lines = [f"{len(results)} files: {ok} ok, {len(results) - ok} failed (MediaError)"]
    lines += [f"  {fmt:<12} ok {c['ok']:>4}  failed {c['failed']:>4}" for fmt, c in sorted(by_format.items())]
    reasons = collections.Counter(r["outcome"] for r in results.values() if r["outcome"] != "ok")
    lines.append("failure reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    refused = sorted((name, r["outcome"]) for name, r in results.items()
                     if r["outcome"] != "ok" and r.get("pillow") == "ok" and r["outcome"] != "not_an_image")
    lines.append("refused although Pillow renders them: " + ", ".join(f"{n} ({o})" for n, o in refused))
    warned = collections.Counter(w for r in results.values() for w in r.get("warnings") or [])
    lines.append("warnings: " + ", ".join(f"{k} {v}" for k, v in sorted(warned.items())))
    diffs = sorted((r["diff"], n) for n, r in results.items() if r.get("diff") is not None)
    if diffs:
        lines.append(f"largest differences from Pillow: {diffs[-3:]}")
    peaks = [r["peak"] for r in results.values() if r.get("peak")]
    if peaks:
        lines.append(f"largest decode peak: {max(peaks) / 2**20:.0f} MiB")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def corpus() -> Path:
    import PIL

    folder, how = fetch_corpus(PIL.__version__)
    if folder is None:  # another version's cached corpus still tests the decoder
        cached = sorted(p.parent for p in cache_root().glob("pillow-*/.complete"))
        if not cached:
            pytest.skip(f"no image corpus: {how}, and none is cached under {cache_root()}")
        folder = cached[-1]
    return folder


@pytest.fixture(scope="module")
def results(corpus, tmp_path_factory) -> dict[str, dict]:
    files = corpus_files(corpus)
    assert len(files) > 500, f"{corpus} holds only {len(files)} files"
    return run_corpus(files, corpus, tmp_path_factory.mktemp("corpus") / "workers.log")


def test_every_file_ends_ok_or_as_a_media_error(results):
    bad = {n: r["outcome"] for n, r in results.items()
           if r["outcome"].startswith(("raised:", "hang", "crash"))}
    print("\n" + tally(results))
    assert not bad


def test_ok_files_match_pillows_rendering(results):
    far = {n: (r["diff"], r.get("pillow")) for n, r in results.items()
           if r["outcome"] == "ok" and (r.get("pillow") != "ok" or r["diff"] > MEAN_TOLERANCE)}
    assert not far


def test_files_pillow_cannot_read_end_as_media_errors(results):
    wrong = [n for n, r in results.items() if r.get("pillow") not in ("ok", None) and r["outcome"] == "ok"]
    assert not wrong


def test_recognised_formats_are_never_called_not_an_image(results):
    """Among the accepted formats, a refusal of a file Pillow reads names what is wrong."""
    from idigdask.decode import _FORMATS

    wrong = [n for n, r in results.items()
             if r["outcome"] == "not_an_image" and r.get("pillow") == "ok" and r.get("pillow_format") in _FORMATS]
    assert not wrong


def test_each_file_decodes_in_bounded_memory(results):
    heavy = {n: r["peak"] for n, r in results.items() if r.get("peak") and r["peak"] > MEMORY_PER_FILE}
    assert not heavy


def test_decoded_files_stay_within_their_memory_estimate(results):
    """What max_decode_bytes is judged on (decode_bytes) bounds what a decode takes."""
    over = {n: (r["peak"], r["estimate"]) for n, r in results.items()
            if r["outcome"] == "ok" and r.get("peak") and r.get("estimate") and r["peak"] > r["estimate"]}
    assert not over


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    if sys.argv[1:] == ["--worker"]:
        _worker()
    elif sys.argv[1:] == ["--report"]:
        import PIL

        found, how = fetch_corpus(PIL.__version__)
        if found is None:
            sys.exit(how)
        with tempfile.TemporaryDirectory() as tmp:
            print(tally(run_corpus(corpus_files(found), found, Path(tmp) / "workers.log")))
    else:
        sys.exit("usage: test_decode_corpus.py --worker | --report")
