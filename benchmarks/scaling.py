"""Whether a build's cost per image stays flat with scale, and how soon a big one starts.

Two measurements of ``idigdask build`` as a whole process (the CLI, in a subprocess):

``flat``
    A build of ``--images`` distinct tiny JPEGs from local paths, in waves. While it
    runs, the ledger parts it commits are watched (each part is one wave: its file
    appears when the wave is committed) and the build process's RSS is sampled. Reported:
    the seconds the first and the last ``--window`` images took to commit, their ratio
    (target <= 1.1), and the process's RSS when ``--window`` and when all images were
    committed, with their ratio (target <= 1.15).

``plan``
    A build over a GUODA-schema media dump of ``--rows`` rows whose media URLs point at
    a socket on 127.0.0.1 that this script listens on: the figure is the time from the
    process's start to the first request reaching that socket (target <= 10 s for
    1,000,000 rows). The build is stopped there.

Usage::

    python benchmarks/scaling.py flat [--images 100000] [--window 10000] [--size 32]
    python benchmarks/scaling.py plan [--rows 1000000] [--repeat 3]
    python benchmarks/scaling.py all --out benchmarks/results/scaling-DATE.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmarks._data import cache_root, guoda_parquet  # noqa: E402

BIN = Path(sys.executable).parent


def tiny_images(n: int, folder: Path, seed: int = 11) -> Path:
    """``n`` distinct 48x72 JPEGs of noise (distinct pHashes too) and a URL table of their
    paths; cached in ``folder``."""
    import numpy as np
    import simplejpeg

    table = folder / f"tiny-{n}.csv"
    if table.exists():
        return table
    images = folder / f"tiny-{n}"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = ["url"]
    for i in range(n):
        # coarse blocks of noise: every image differs in its low frequencies
        small = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
        pixels = np.ascontiguousarray(small.repeat(12, 0).repeat(12, 1))
        path = images / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(simplejpeg.encode_jpeg(pixels, quality=90))
        lines.append(str(path))
    tmp = table.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, table)
    return table


class Watch:
    """Sample the committed rows (ledger parts) and the RSS of a process, every ``interval``."""

    def __init__(self, pid: int, ledger: Path, interval: float = 0.2):
        import psutil

        self.proc = psutil.Process(pid)
        self.ledger, self.interval = ledger, interval
        self.rows: dict[str, int] = {}
        self.samples: list[tuple[float, int, int]] = []  # (time, committed rows, rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _committed(self) -> int:
        import pyarrow.parquet as pq

        if self.ledger.exists():
            for part in self.ledger.glob("part-*.parquet"):
                if part.name not in self.rows:
                    try:
                        self.rows[part.name] = pq.read_metadata(part).num_rows
                    except OSError:  # being renamed into place
                        continue
        return sum(self.rows.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.proc.memory_info().rss
            except Exception:  # the process ended
                rss = 0
            if not rss:
                # Exited (a zombie reports no memory): one last count of the rows, with the
                # last RSS seen, so rows committed just before the exit are not missed.
                if self.samples:
                    self.samples.append((time.perf_counter(), self._committed(), self.samples[-1][2]))
                break
            self.samples.append((time.perf_counter(), self._committed(), rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        ended = time.perf_counter()
        self._stop.set()
        self._thread.join()
        # the rows of the last wave may be committed after the last sample
        if self.samples and self._committed() > self.samples[-1][1]:
            self.samples.append((ended, self._committed(), self.samples[-1][2]))

    def when(self, rows: int) -> tuple[float, int]:
        """(time, rss) of the first sample with at least ``rows`` committed."""
        for t, done, rss in self.samples:
            if done >= rows:
                return t, rss
        raise ValueError(f"never {rows} rows committed (last: {self.samples[-1][1]})")


def run_flat(args: argparse.Namespace) -> dict:
    folder = Path(args.cache or cache_root()) / "scaling"
    folder.mkdir(parents=True, exist_ok=True)
    table = tiny_images(args.images, folder)
    out = Path(tempfile.mkdtemp(prefix="idigdask-scaling-"))
    store = out / "tiny.zarr"
    cmd = [str(BIN / "idigdask"), "build", str(table), "-o", str(store), "--url-column", "url",
           "--size", str(args.size), "--no-progress", "--json"]
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with Watch(proc.pid, store / "ledger") as watch:
            stdout, stderr = proc.communicate()
        wall = time.perf_counter() - started
        if proc.returncode:
            raise SystemExit(f"the build failed ({proc.returncode}): {stderr[-2000:]}")
        n, w = args.images, args.window
        t_first, rss_first = watch.when(w)
        t_before_last, _ = watch.when(n - w)
        t_end, rss_end = watch.when(n)
        t0 = watch.when(1)[0]
        first, last = t_first - t0, t_end - t_before_last
        if first <= 0:
            raise SystemExit(f"--window {w} is within the first wave: make it larger")
        return {"images": n, "window": w, "wall_s": wall, "first_window_s": first,
                "last_window_s": last, "time_ratio": last / first,
                "rss_at_window_mib": rss_first / 2**20, "rss_at_end_mib": rss_end / 2**20,
                "rss_ratio": rss_end / rss_first,
                "peak_rss_mib": max(s[2] for s in watch.samples) / 2**20}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def first_fetch_seconds(catalog: str, listener: socket.socket, timeout: float = 120) -> float:
    out = Path(tempfile.mkdtemp(prefix="idigdask-plan-"))
    env = {**os.environ, "DASK_IDIGDASK__FETCH__ALLOW_PRIVATE": "true"}
    started = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "idigdask"), "build", catalog, "-o", str(out / "s.zarr"),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        listener.settimeout(timeout)
        conn, _ = listener.accept()
        seconds = time.perf_counter() - started
        conn.close()
        return seconds
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(out, ignore_errors=True)


def run_plan(args: argparse.Namespace) -> dict:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(256)
    port = listener.getsockname()[1]  # --port 0: any free one (the dump is then new)
    try:
        catalog = guoda_parquet(args.rows, root=args.cache,
                                url_base=f"http://127.0.0.1:{port}/media/")
        runs = []
        for _ in range(args.repeat):
            runs.append(first_fetch_seconds(catalog, listener))
            # drain what the killed build had queued
            listener.settimeout(0.2)
            try:
                while True:
                    listener.accept()[0].close()
            except OSError:
                pass
        return {"rows": args.rows, "runs_s": runs, "median_s": statistics.median(runs)}
    finally:
        listener.close()


def report(results: dict, args: argparse.Namespace) -> str:
    cores = os.cpu_count()
    lines = [f"# Scaling of a build ({datetime.date.today().isoformat()})", "",
             f"Machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}.",
             f"Command: `python benchmarks/scaling.py {args.what}"
             + (f" --images {args.images} --window {args.window} --size {args.size}"
                if args.what in ("flat", "all") else "")
             + (f" --rows {args.rows} --repeat {args.repeat}" if args.what in ("plan", "all")
                else "") + "`", ""]
    if "flat" in results:
        f = results["flat"]
        lines += ["## Cost per image with scale", "",
                  f"`idigdask build` of {f['images']:,} distinct 48x72 JPEGs from local paths, "
                  f"size {args.size}, default settings: {f['wall_s']:.1f} s in all.", "",
                  "| figure | first window | last window | ratio | target |",
                  "| --- | ---: | ---: | ---: | ---: |",
                  f"| seconds for {f['window']:,} images | {f['first_window_s']:.1f} | "
                  f"{f['last_window_s']:.1f} | {f['time_ratio']:.2f} | <= 1.10 |",
                  f"| RSS of the build process (MiB), at {f['window']:,} and at {f['images']:,} "
                  f"committed | {f['rss_at_window_mib']:.0f} | {f['rss_at_end_mib']:.0f} | "
                  f"{f['rss_ratio']:.2f} | <= 1.15 |", "",
                  f"Peak RSS: {f['peak_rss_mib']:.0f} MiB.", ""]
    if "plan" in results:
        p = results["plan"]
        lines += ["## Planning a big catalog", "",
                  f"From the start of `idigdask build` over a {p['rows']:,}-row GUODA-schema "
                  "dump to its first media request: "
                  + ", ".join(f"{s:.2f}" for s in p["runs_s"])
                  + f" s (median {p['median_s']:.2f} s; target <= 10 s).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("flat", "plan", "all"))
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    results = {}
    if args.what in ("plan", "all"):
        results["plan"] = run_plan(args)
    if args.what in ("flat", "all"):
        results["flat"] = run_flat(args)
    text = report(results, args)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
