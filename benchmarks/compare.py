"""idigdask side by side with img2dataset, the seed's Spark approach and a decode ceiling.

One command, one machine, one run: it generates (or reuses from its cache) the same
image sets, serves them from one loopback media server, and runs every tool on the same
URL list with the same number of processes::

    python benchmarks/compare.py                       # the full comparison
    python benchmarks/compare.py --n-full 40 --n-web 200 --repeat 2
    python benchmarks/compare.py --local --memory-scaling --tools idigdask

Tools (``--tools``):

``idigdask``
    ``idigdask build URLS.csv -o STORE --size 256 --resize-mode pad --workers N``, the
    CLI in a subprocess.
``img2dataset``
    ``img2dataset.download`` at 256 px, ``resize_mode="border"`` (its letterbox, the
    closest to ``pad``), ``processes_count=N``, 32 threads a process (idigdask keeps 32
    requests in flight a worker), ``output_format="files"``. It pins ``pandas<3``, so
    unless it imports here it runs from a virtualenv of its own in the cache folder.
``spark``
    The seed's approach: a PySpark ``local[N]`` job whose Python UDF opens each URL
    with ``urllib``, decodes the whole image with PIL, resizes it to 256x256 and
    returns the pixels, written to parquet. Where Spark cannot run, the same function
    runs in a ``multiprocessing`` pool of N, and the table says so.
``ceiling``
    ``idigdask.decode.decode_image`` (reduced-scale decode plus resize) over the files'
    bytes already in memory, in a forked process pool of N: no fetch, no store, no
    interpreter start-up in the time. No tool can beat it on this machine.

Every figure is the median of ``--repeat`` runs; the tools run round-robin (their order
rotating every round), so that drift on a noisy machine hits them alike. Images/s and
MB/s are over the wall time of the tool's process, start-up included (the ceiling
excepted); peak memory is the largest summed RSS of the tool's process tree, polled.

``--local`` adds a run over local files (no HTTP): ``idigdask build`` of file paths
against a pool of N doing a full decode then resize per file. ``--memory-scaling``
builds 2,000 and 20,000 small images and compares the peaks (memory must not grow with
the catalog).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = ("idigdask", "img2dataset", "spark", "ceiling")
#: Version of img2dataset installed into its own virtualenv when it does not import here.
IMG2DATASET_SPEC = "img2dataset==1.47.0"
OUTPUT_SIZE = 256
THREADS_PER_PROCESS = 32

#: Targets of the project's issues: (set, tool, minimum of idigdask's images/s ÷ tool's).
#: (set, tool, minimum ratio of idigdask's images/s to the tool's), read on the whole
#: process's rate, start-up included (the ceiling: warm, inside its pool)
TARGETS = (
    ("full", "img2dataset", 5.0),
    ("full", "spark", 10.0),
    ("full", "ceiling", 0.85),
    ("web", "img2dataset", 2.0),
)


# =====================================================================================
# Runners: each runs inside a subprocess (``compare.py --run TOOL SPEC.json``) and
# prints one line ``RESULT {json}``. They import only what their tool needs, so the
# img2dataset runner works in its own virtualenv, without idigdask.
# =====================================================================================

def seed_pixels(url: str) -> bytes:
    """What the seed's Spark UDF did for one image: urlopen, full PIL decode, resize, numpy."""
    from urllib.request import urlopen

    import numpy as np
    from PIL import Image

    with urlopen(url, timeout=60) as response:
        data = response.read()
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")  # decodes every pixel of the full-size scan
    small = rgb.resize((OUTPUT_SIZE, OUTPUT_SIZE))
    return np.asarray(small, dtype=np.uint8).tobytes()


def _run_img2dataset(spec: dict) -> dict:
    from img2dataset import download

    download(url_list=spec["csv"], input_format="csv", url_col="url",
             output_folder=spec["out"], output_format="files", image_size=OUTPUT_SIZE,
             resize_mode="border", processes_count=spec["workers"],
             thread_count=THREADS_PER_PROCESS, number_sample_per_shard=spec["per_shard"],
             timeout=60, retries=0, enable_wandb=False, distributor="multiprocessing")
    ok = failed = 0
    for stats in Path(spec["out"]).glob("*_stats.json"):
        values = json.loads(stats.read_text())
        ok += int(values.get("successes", 0))
        failed += int(values.get("failed_to_download", 0)) + int(values.get("failed_to_resize", 0))
    return {"ok": ok, "failed": failed}


def _run_spark(spec: dict) -> dict:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import col, udf
    from pyspark.sql.types import BinaryType

    urls = Path(spec["csv"]).read_text().split("\n")[1:]
    urls = [u for u in urls if u]
    spark = (SparkSession.builder.master(f"local[{spec['workers']}]")
             .appName("seed-approach").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "2g").getOrCreate())
    try:
        spark.sparkContext.setLogLevel("ERROR")
        frame = spark.createDataFrame([(u,) for u in urls], ["url"])
        frame = frame.repartition(4 * spec["workers"])
        pixels = udf(seed_pixels, BinaryType())
        frame.withColumn("pixels", pixels(col("url"))).write.mode("overwrite").parquet(spec["out"])
    finally:
        spark.stop()
    import pyarrow.parquet as pq

    n = pq.read_table(spec["out"], columns=["url"]).num_rows
    return {"ok": n, "failed": len(urls) - n}


def _run_seed_pool(spec: dict) -> dict:
    import multiprocessing

    urls = [u for u in Path(spec["csv"]).read_text().split("\n")[1:] if u]
    with multiprocessing.get_context("fork").Pool(spec["workers"]) as pool:
        sizes = pool.map(len_of_seed_pixels, urls, chunksize=4)
    return {"ok": sum(1 for s in sizes if s), "failed": sum(1 for s in sizes if not s)}


def len_of_seed_pixels(url: str) -> int:
    return len(seed_pixels(url))


_BLOBS: list[bytes] = []


def _decode_blob(i: int) -> int:
    from idigdask.decode import decode_image

    return int(decode_image(_BLOBS[i], OUTPUT_SIZE, resize_mode="pad").pixels.shape[0])


def _run_ceiling(spec: dict) -> dict:
    import multiprocessing

    _BLOBS[:] = [Path(p).read_bytes() for p in spec["paths"]]
    # forked after the bytes are loaded: workers read them without any copy or pipe
    with multiprocessing.get_context("fork").Pool(spec["workers"]) as pool:
        pool.map(_decode_blob, range(min(len(_BLOBS), spec["workers"])))  # warm
        t0 = time.perf_counter()
        done = pool.map(_decode_blob, range(len(_BLOBS)), chunksize=4)
        seconds = time.perf_counter() - t0
    return {"ok": len(done), "failed": 0, "seconds": seconds}


def _full_decode_file(path: str) -> int:
    from PIL import Image

    from idigdask.decode import resize

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    return int(resize(rgb, OUTPUT_SIZE, "pad").shape[0])


def _run_full_decode_loop(spec: dict) -> dict:
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(spec["workers"]) as pool:
        done = pool.map(_full_decode_file, spec["paths"], chunksize=4)
    return {"ok": len(done), "failed": 0}


RUNNERS = {"img2dataset": _run_img2dataset, "spark": _run_spark, "seed-pool": _run_seed_pool,
           "ceiling": _run_ceiling, "full-decode": _run_full_decode_loop}


# =====================================================================================
# The driver
# =====================================================================================

class ToolRun:
    """One run of one tool: wall seconds, images done, peak tree RSS, or an error."""

    def __init__(self, seconds: float, ok: int, failed: int, peak: int, error: str = ""):
        self.seconds, self.ok, self.failed, self.peak, self.error = seconds, ok, failed, peak, error


def _monitored(cmd: list[str], *, cwd: str | None = None, env: dict | None = None,
               timeout: float = 3600) -> tuple[float, int, str, str, int]:
    """Run ``cmd``; return (wall seconds, exit code, stdout, stderr, peak tree RSS bytes)."""
    from benchmarks._data import PeakTreeRSS

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=env)
        with PeakTreeRSS(proc.pid) as peak:
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return seconds, code, out.read(), err.read(), peak.peak


def _result_line(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise ValueError("no RESULT line")


def _tail(text: str, n: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])[-600:]


class Comparison:
    """State of one comparison: the sets, the server, the interpreters, the results."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="idigdask-compare-"))
        self.notes: list[str] = []
        self.results: dict[tuple[str, str], list[ToolRun]] = {}
        self.labels: dict[str, str] = {}
        self.spark_runner = "spark"
        self.i2d_python: str | None = None

    # -- tools ----------------------------------------------------------------------
    def run_tool(self, tool: str, set_name: str, urls_csv: str, paths: list[str]) -> ToolRun:
        out = self.work / f"{set_name}-{tool}-{time.time_ns()}"
        workers = self.args.workers
        try:
            if tool in ("idigdask", "idigdask-local"):
                return self._run_idigdask(urls_csv, out, local=tool == "idigdask-local")
            spec = {"csv": urls_csv, "out": str(out), "workers": workers, "paths": paths,
                    "per_shard": max(10, -(-len(paths) // (4 * workers)))}
            runner = {"spark": self.spark_runner}.get(tool, tool)
            python = self.i2d_python if tool == "img2dataset" else sys.executable
            return self._run_runner(runner, spec, python, inner_time=tool == "ceiling")
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def _run_idigdask(self, urls_csv: str, out: Path, local: bool) -> ToolRun:
        cmd = [sys.executable, "-m", "idigdask", "build", urls_csv, "-o", str(out),
               "--size", str(OUTPUT_SIZE), "--resize-mode", "pad", "--url-column", "url",
               "--threads", str(self.args.workers), "--no-progress", "--json",
               "--allow-private"]  # the media server is on 127.0.0.1
        if local:
            cmd.append("--allow-local")
        seconds, code, stdout, stderr, peak = _monitored(cmd)
        if code != 0:
            return ToolRun(seconds, 0, 0, peak, f"exit {code}: {_tail(stderr)}")
        summary = json.loads(stdout[stdout.index("{"):])
        status = summary["status"]
        # near-duplicates are fetched and decoded like any image, so they count as done
        return ToolRun(seconds, status["ok"] + status["duplicate"], status["failed"], peak)

    def _run_runner(self, runner: str, spec: dict, python: str, inner_time: bool) -> ToolRun:
        spec_path = self.work / f"spec-{time.time_ns()}.json"
        spec_path.write_text(json.dumps(spec))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])))
        cmd = [python, str(Path(__file__).resolve()), "--run", runner, str(spec_path)]
        seconds, code, stdout, stderr, peak = _monitored(cmd, env=env)
        if code != 0:
            return ToolRun(seconds, 0, 0, peak, f"exit {code}: {_tail(stderr)}")
        result = _result_line(stdout)
        return ToolRun(result["seconds"] if inner_time else seconds, result["ok"],
                       result["failed"], peak)

    # -- set-up ---------------------------------------------------------------------
    def prepare_tools(self, tools: list[str]) -> list[str]:
        ready = []
        for tool in tools:
            if tool == "img2dataset":
                self.i2d_python = img2dataset_python(self.args, self.notes)
            if tool == "spark":
                self.spark_runner, label = spark_runner(self.args.workers, self.notes)
                self.labels["spark"] = label
            ready.append(tool)
        return ready

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def img2dataset_python(args: argparse.Namespace, notes: list[str]) -> str:
    """An interpreter that imports img2dataset: given, this one, or a cached virtualenv."""
    import importlib.util

    if args.img2dataset_python:
        return args.img2dataset_python
    if importlib.util.find_spec("img2dataset") is not None:
        return sys.executable
    venv = cache_dir(args) / "venv-img2dataset"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        print(f"img2dataset does not import here (it pins pandas<3); installing "
              f"{IMG2DATASET_SPEC} into {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", IMG2DATASET_SPEC], check=True)
        (venv / ".installed").write_text(IMG2DATASET_SPEC)
    notes.append(f"img2dataset ran from its own virtualenv ({venv}): it requires pandas<3, "
                 "which conflicts with idigdask's stack.")
    return str(python)


def spark_runner(workers: int, notes: list[str]) -> tuple[str, str]:
    """``("spark", label)`` when a tiny Spark job runs here, else the pool fallback."""
    probe = ("from pyspark.sql import SparkSession\n"
             "s = SparkSession.builder.master('local[1]').config('spark.ui.enabled','false')"
             ".getOrCreate()\nassert s.range(3).count() == 3\ns.stop()\n")
    reason = ""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        reason = "no Java runtime (java not on PATH, JAVA_HOME unset)"
    else:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              env=dict(os.environ, PYSPARK_PYTHON=sys.executable))
        if done.returncode != 0:
            reason = f"a one-row Spark job failed: {_tail(done.stderr, 3)}"
    if not reason:
        return "spark", f"seed approach (PySpark local[{workers}])"
    notes.append(f"Spark cannot run here ({reason}); the seed's per-image work ran in a "
                 f"multiprocessing pool of {workers} instead.")
    return "seed-pool", f"seed approach (multiprocessing pool of {workers}; no Spark)"


def cache_dir(args: argparse.Namespace) -> Path:
    from benchmarks._data import cache_root

    return Path(args.cache) if args.cache else cache_root()


# =====================================================================================
# Reports
# =====================================================================================

def median_rates(runs: list[ToolRun], nbytes_per_image: float, startup: float = 0.0) -> dict:
    """Medians over the good runs; ``steady_s`` discounts ``startup`` seconds per run."""
    good = [r for r in runs if not r.error and r.seconds > 0]
    if not good:
        return {"error": next((r.error for r in runs if r.error), "no run")}
    rates = [r.ok / r.seconds for r in good]
    steady = [r.ok / (r.seconds - startup) for r in good if r.seconds > startup]
    return {"images_s": statistics.median(rates),
            "steady_s": statistics.median(steady) if steady else None, "startup": startup,
            "mb_s": statistics.median(r.ok * nbytes_per_image / 1e6 / r.seconds for r in good),
            "peak_mib": statistics.median(r.peak for r in good) / 2**20,
            "seconds": statistics.median(r.seconds for r in good),
            "ok": min(r.ok for r in good), "failed": max(r.failed for r in good),
            "runs": len(good), "errors": [r.error for r in runs if r.error]}


def machine_info() -> dict:
    import psutil

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform()}


def versions(i2d_python: str | None) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("idigdask", "pyspark", "pillow", "simplejpeg", "dask", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    if i2d_python:
        done = subprocess.run([i2d_python, "-c", "from importlib.metadata import version;"
                               "print(version('img2dataset'), version('opencv-python-headless'))"],
                              capture_output=True, text=True)
        parts = done.stdout.split()
        found["img2dataset"] = parts[0] if parts else "unknown"
        if len(parts) > 1:
            found["opencv (img2dataset)"] = parts[1]
    java = subprocess.run(["java", "-version"], capture_output=True, text=True) \
        if shutil.which("java") else None
    if java is not None and java.stderr:
        found["java"] = java.stderr.splitlines()[0]
    return found


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def table(set_name: str, rows: dict[str, dict], labels: dict[str, str], reference: str) -> str:
    """Markdown table of one set; ratios are ``reference`` ÷ tool (above 1: reference faster)."""
    ref = rows.get(reference, {})
    lines = [f"| tool | images/s | MB/s | peak memory (MiB) | wall s | start-up s | "
             f"steady images/s | images | {reference} ÷ tool | {reference} ÷ tool (steady) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for tool, row in rows.items():
        name = labels.get(tool, tool)
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error'][:200]} | | | | | | | | |")
            continue
        failed = f" ({row['failed']} failed)" if row["failed"] else ""
        lines.append(
            f"| {name} | {_fmt(row['images_s'])} | {_fmt(row['mb_s'])} | "
            f"{_fmt(row['peak_mib'], 0)} | {_fmt(row['seconds'], 2)} | {_fmt(row['startup'], 1)} | "
            f"{_fmt(row['steady_s'])} | {row['ok']}{failed} | "
            f"{_fmt(_ratio(ref.get('images_s'), row['images_s']), 2)} | "
            f"{_fmt(_ratio(ref.get('steady_s'), row['steady_s']), 2)} |")
    return "\n".join(lines)


def target_lines(summary: dict) -> list[str]:
    lines = []
    for set_name, tool, minimum in TARGETS:
        rows = summary.get(set_name, {})
        ours, theirs = rows.get("idigdask", {}), rows.get(tool, {})
        if "images_s" not in ours or "images_s" not in theirs:
            lines.append(f"- {set_name}: idigdask ≥ {minimum}x {tool}: not measured")
            continue
        wall = ours["images_s"] / theirs["images_s"]
        steady = _ratio(ours.get("steady_s"), theirs.get("steady_s"))
        verdict = "met" if wall >= minimum else "NOT met"
        lines.append(f"- {set_name}: idigdask ≥ {minimum}x {tool}: {wall:.2f}x wall, "
                     f"{_fmt(steady, 2)}x steady: **{verdict}** (judged on the whole process)")
    return lines


# =====================================================================================
# main
# =====================================================================================

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-full", type=int, default=200, help="full-size sheets (200)")
    p.add_argument("--n-web", type=int, default=1000, help="webview-size images (1000)")
    p.add_argument("--full-size", default="3000x4500", help="full-size sheet WxH (3000x4500)")
    p.add_argument("--workers", type=int, default=cores or 1,
                   help=f"processes of every tool (all cores: {cores})")
    p.add_argument("--repeat", type=int, default=3, help="runs of each tool; the median is kept")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"subset of {','.join(TOOLS)}")
    p.add_argument("--sets", default="full,web", help="image sets to run: full, web")
    p.add_argument("--out", default=None, help="Markdown report (benchmarks/results/compare-DATE.md)")
    p.add_argument("--cache", default=None, help="dataset cache (~/.cache/idigdask-bench)")
    p.add_argument("--img2dataset-python", default=None,
                   help="an interpreter that imports img2dataset (default: a cached venv)")
    p.add_argument("--local", action="store_true",
                   help="also: idigdask build of local files vs a full-decode-then-resize loop")
    p.add_argument("--memory-scaling", action="store_true",
                   help="also: peak memory of a 20,000-image build vs a 2,000-image build")
    p.add_argument("--scaling-size", default="200x300", help="image WxH of the scaling builds")
    p.add_argument("--no-startup", action="store_true",
                   help="skip the one-image runs that measure each tool's start-up")
    p.add_argument("--run", nargs=2, metavar=("RUNNER", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.tools.split(",")) - set(TOOLS)
    if unknown:
        p.error(f"--tools: unknown {', '.join(sorted(unknown))}; choose from {', '.join(TOOLS)}")
    if args.workers < 1 or args.repeat < 1:
        p.error("--workers and --repeat must be at least 1")
    return args


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def run_sets(cmp: Comparison, sets: dict, tools: list[str]) -> dict:
    """Round-robin over repeats, sets and tools; return the medians per set and tool.

    Every round also runs each tool on a one-image list: the median of those walls is
    the tool's fixed start-up cost (interpreter, cluster, JVM), subtracted for the
    "steady" images/s. The ceiling is timed inside a warm pool and needs none.
    """
    startup_csv = next(iter(sets.values()))[1]
    one = cmp.work / "startup.csv"
    one.write_text("\n".join(Path(startup_csv).read_text().split("\n")[:2]) + "\n")
    first_path = next(iter(sets.values()))[0].paths[:1]
    for r in range(cmp.args.repeat):
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for set_name, (sheets, csv) in [("startup", (None, str(one))), *sets.items()]:
            for tool in order:
                if set_name == "startup" and (tool == "ceiling" or cmp.args.no_startup):
                    continue
                paths = first_path if sheets is None else sheets.paths
                run = cmp.run_tool(tool, set_name, csv, paths)
                cmp.results.setdefault((set_name, tool), []).append(run)
                status = run.error or f"{run.ok} images in {run.seconds:.2f} s " \
                    f"({run.ok / run.seconds if run.seconds else 0:.1f}/s), peak {run.peak / 2**20:.0f} MiB"
                print(f"[round {r + 1}/{cmp.args.repeat}] {set_name:<7} {tool:<12} {status}",
                      flush=True)
    summary = {}
    for set_name, (sheets, _) in sets.items():
        per_image = sheets.nbytes / len(sheets.paths)
        summary[set_name] = {}
        for t in tools:
            startup = [r.seconds for r in cmp.results.get(("startup", t), []) if not r.error]
            summary[set_name][t] = median_rates(cmp.results[(set_name, t)], per_image,
                                                statistics.median(startup) if startup else 0.0)
    return summary


def memory_scaling(cmp: Comparison, served) -> dict:
    """Peak memory of builds of 2,000 and 20,000 small images (same workers)."""
    from benchmarks._data import sheet_set, write_url_csv

    sheets = sheet_set(20_000, _size(cmp.args.scaling_size), seed=23, root=cache_dir(cmp.args))
    out = {}
    for n in (2_000, 20_000):
        csv = write_url_csv(cmp.work / f"scaling-{n}.csv",
                            [served.url_for(p) for p in sheets.paths[:n]])
        store = cmp.work / f"scaling-{n}.zarr"
        cmd = [sys.executable, "-m", "idigdask", "build", csv, "-o", str(store), "--size",
               str(OUTPUT_SIZE), "--url-column", "url", "--threads", str(cmp.args.workers),
               "--no-progress", "--json", "--allow-private"]
        seconds, code, stdout, stderr, peak = _monitored(cmd)
        shutil.rmtree(store, ignore_errors=True)
        if code != 0:
            out[n] = {"error": _tail(stderr)}
            continue
        status = json.loads(stdout[stdout.index("{"):])["status"]
        out[n] = {"seconds": seconds, "peak_mib": peak / 2**20,
                  "images_s": (status["ok"] + status["duplicate"]) / seconds, "status": status}
        print(f"[memory scaling] {n} images: {seconds:.1f} s, peak {peak / 2**20:.0f} MiB", flush=True)
    return out


def report(cmp: Comparison, summary: dict, sets: dict, tools: list[str], argv: list[str],
           extra: dict) -> str:
    args = cmp.args
    info, vers = machine_info(), versions(cmp.i2d_python)
    now = _dt.datetime.now().astimezone()
    lines = [f"# idigdask vs img2dataset vs the seed's approach — {now:%Y-%m-%d %H:%M %Z}", "",
             f"Command: `python benchmarks/compare.py {' '.join(argv)}`".rstrip() + "", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {info['os']}",
             "", "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()), "",
             f"Every tool: {args.workers} processes (idigdask: {args.workers} threads of its "
             f"in-process Dask worker), output {OUTPUT_SIZE}x{OUTPUT_SIZE}; "
             f"median of {args.repeat} runs, tools round-robin. Images/s and MB/s over the wall "
             "time of the tool's process (start-up included; the ceiling is timed inside its "
             "warm pool). Peak memory: the largest summed RSS of the tool's process tree.", ""]
    for note in cmp.notes:
        lines += [f"Note: {note}", ""]
    for set_name, (sheets, _) in sets.items():
        w, h = sheets.size
        lines += [f"## {set_name}: {len(sheets.paths)} JPEGs of about {w}x{h} (q90), "
                  f"{sheets.nbytes / len(sheets.paths) / 1e6:.2f} MB each, over HTTP "
                  f"from one loopback server", "",
                  table(set_name, summary[set_name], cmp.labels, "idigdask"), ""]
    lines += ["## Targets", "", *target_lines(summary), ""]
    if "local" in extra:
        lines += ["## Local files: idigdask build vs a full-decode-then-resize loop", "",
                  extra["local"], ""]
    if "scaling" in extra:
        s = extra["scaling"]
        lines += ["## Memory scaling: builds of 2,000 and 20,000 images "
                  f"({args.scaling_size}), {args.workers} workers", "",
                  "| images | wall s | images/s | peak memory (MiB) |", "| ---: | ---: | ---: | ---: |"]
        for n, row in s.items():
            if "error" in row:
                lines.append(f"| {n} | failed: {row['error']} | | |")
            else:
                lines.append(f"| {n:,} | {row['seconds']:.1f} | {row['images_s']:.1f} | "
                             f"{row['peak_mib']:.0f} |")
        if all("peak_mib" in row for row in s.values()):
            ratio = s[20_000]["peak_mib"] / s[2_000]["peak_mib"]
            lines += ["", f"Peak at 20,000 ÷ peak at 2,000: {ratio:.2f} "
                      f"({'bounded' if ratio < 1.25 else 'GROWS with the catalog'})"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; print the tables, write the Markdown report, return the medians."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.run:
        result = RUNNERS[args.run[0]](json.loads(Path(args.run[1]).read_text()))
        print("RESULT " + json.dumps(result), flush=True)
        return result
    sys.path.insert(0, str(HERE))
    from benchmarks._data import ServedFolder, sheet_set, write_url_csv

    cache = cache_dir(args)
    cmp = Comparison(args)
    try:
        tools = cmp.prepare_tools([t for t in TOOLS if t in args.tools.split(",")])
        wanted = args.sets.split(",")
        print(f"generating or reusing image sets in {cache} ...", flush=True)
        made = {}
        if "full" in wanted:
            made["full"] = sheet_set(args.n_full, _size(args.full_size), seed=21, root=cache)
        if "web" in wanted:
            made["web"] = sheet_set(args.n_web, (600, 900), seed=22, root=cache)
        extra: dict = {}
        with ServedFolder(cache) as served:
            sets = {name: (sheets, write_url_csv(cmp.work / f"{name}.csv",
                                                 [served.url_for(p) for p in sheets.paths]))
                    for name, sheets in made.items()}
            summary = run_sets(cmp, sets, tools)
            if args.local and "full" in made:
                extra["local"] = local_baseline(cmp, made["full"])
            if args.memory_scaling:
                extra["scaling"] = memory_scaling(cmp, served)
        text = report(cmp, summary, sets, tools, argv, extra)
        print("\n" + text)
        out = Path(args.out) if args.out else \
            HERE / "results" / f"compare-{_dt.date.today().isoformat()}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"written: {out}")
        return {"summary": summary, "report": str(out), **extra}
    finally:
        cmp.close()


def local_baseline(cmp: Comparison, sheets) -> str:
    """idigdask build over local paths vs a pool doing a full decode then resize."""
    from benchmarks._data import write_url_csv

    csv = write_url_csv(cmp.work / "local.csv", sheets.paths)
    one = write_url_csv(cmp.work / "local-one.csv", sheets.paths[:1])
    tools = ["idigdask-local", "full-decode"]
    runs: dict[str, list[ToolRun]] = {t: [] for t in tools}
    startup: dict[str, list[float]] = {t: [] for t in tools}
    for r in range(cmp.args.repeat):
        for tool in (tools if r % 2 == 0 else tools[::-1]):
            first = cmp.run_tool(tool, "local", one, sheets.paths[:1])
            if not first.error:
                startup[tool].append(first.seconds)
            run = cmp.run_tool(tool, "local", csv, sheets.paths)
            runs[tool].append(run)
            print(f"[local {r + 1}/{cmp.args.repeat}] {tool:<14} "
                  f"{run.error or f'{run.ok / run.seconds:.1f} images/s'}", flush=True)
    per_image = sheets.nbytes / len(sheets.paths)
    rows = {t: median_rates(runs[t], per_image,
                            statistics.median(startup[t]) if startup[t] else 0.0) for t in tools}
    labels = {"idigdask-local": "idigdask build (local paths)",
              "full-decode": f"full decode + resize loop (pool of {cmp.args.workers})"}
    return table("local", rows, labels, "idigdask-local")


if __name__ == "__main__":
    main()
