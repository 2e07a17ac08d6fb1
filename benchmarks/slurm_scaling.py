"""The same build on 1 and 2 Slurm jobs, side by side: images/s and job start-up, as ratios.

Needs a running Slurm whose clients answer (``eval "$(bash ci/slurm.sh start)"``).
Each round runs, in turn, ``idigdask build --cluster slurm --jobs 1`` and ``--jobs 2``
as whole processes over the same images (a folder of synthetic sheets served by a
loopback HTTP server in a process of its own), so that a slower moment of a shared
machine falls on both. Reported per job count, as medians over the rounds:

- whole-process seconds (start, submission, the workers' start-up, the build, exit);
- images per second of the build itself (the summary's ``rows_per_s``, from the
  catalog read to the last commit; the jobs' start-up included, as a user waits for it),
  and once the jobs run (the build's seconds less the start-up measured apart);
- the start-up of the jobs: from submission to all workers joined, measured apart
  with ``idigdask.get_client(cluster="slurm", jobs=N)`` in this process;

and the ratios of 2 jobs to 1.

Usage::

    python benchmarks/slurm_scaling.py [--images 400] [--size 600x900] [--rounds 3]
        [--cores 1] [--out benchmarks/results/slurm-scaling-DATE.md]
"""

from __future__ import annotations

import argparse
import datetime
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
sys.path.insert(0, str(HERE))

from benchmarks._data import ServedFolder, sheet_set, write_url_csv  # noqa: E402

BIN = Path(sys.executable).parent


def jobqueue_env(folder: Path, cores: int, logs: Path) -> dict[str, str]:
    """dask-jobqueue's configuration as a user writes it: a jobqueue.yaml in DASK_CONFIG."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    settings = {"jobqueue": {"slurm": {
        "name": "idigdask-bench", "cores": cores, "memory": "3GB", "processes": 1,
        "walltime": "00:30:00", "queue": os.environ.get("IDIGDASK_BENCH_QUEUE", "debug"),
        "interface": "lo", "python": sys.executable, "log-directory": str(logs)}}}
    (folder / "jobqueue.yaml").write_text(yaml.safe_dump(settings))
    return {**os.environ, "DASK_CONFIG": str(folder),
            "DASK_IDIGDASK__FETCH__ALLOW_PRIVATE": "true"}


def one_build(catalog: str, jobs: int, env: dict, work: Path) -> dict:
    store = work / f"s{jobs}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "idigdask"), "build", catalog, "-o", str(store),
                           "--url-column", "url", "--cluster", "slurm", "--jobs", str(jobs),
                           "--json", "--no-progress"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"build on {jobs} job(s) failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    assert summary["status"]["ok"] == summary["rows"], summary["status"]
    return {"wall": wall, "rows_per_s": summary["rows_per_s"], "images": summary["images"]}


def start_up(jobs: int, env: dict) -> float:
    """Seconds from submitting ``jobs`` jobs to all their workers joined."""
    code = (
        "import time, idigdask\n"
        "t = time.perf_counter()\n"
        f"with idigdask.get_client(cluster='slurm', jobs={jobs}) as c:\n"
        f"    c.wait_for_workers({jobs}, timeout=300)\n"
        "    print(time.perf_counter() - t)\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"start-up of {jobs} job(s) failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", default="600x900", help="nominal WxH of the sheets")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cores", type=int, default=1, help="cores (threads) of one job")
    parser.add_argument("--out", default=None, help="write the report here (markdown)")
    args = parser.parse_args(argv)
    if shutil.which("sbatch") is None or subprocess.run(["sinfo", "-h"], capture_output=True
                                                         ).returncode != 0:
        raise SystemExit("no Slurm answers: eval \"$(bash ci/slurm.sh start)\" first")
    width, height = (int(v) for v in args.size.split("x"))
    sheets = sheet_set(args.images, (width, height))
    runs: dict[int, list[dict]] = {1: [], 2: []}
    starts: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="idigdask-slurm-bench-") as tmp, \
            ServedFolder(sheets.folder) as served:
        work = Path(tmp)
        env = jobqueue_env(work / "dask", args.cores, work / "logs")
        catalog = write_url_csv(work / "urls.csv", [served.url_for(p) for p in sheets.paths])
        one_build(catalog, 1, env, work)  # warm: the page cache, Python's bytecode
        for r in range(args.rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)  # round robin, alternating
            for jobs in order:
                runs[jobs].append(one_build(catalog, jobs, env, work))
                starts[jobs].append(start_up(jobs, env))
                print(f"round {r + 1} jobs {jobs}: {runs[jobs][-1]} start-up "
                      f"{starts[jobs][-1]:.2f} s", file=sys.stderr)

    for j in (1, 2):  # the build's own rate: its seconds less the jobs' start-up
        for run, start in zip(runs[j], starts[j]):
            seconds = run["images"] / run["rows_per_s"]
            run["after_start_per_s"] = round(run["images"] / max(seconds - start, 1e-9), 2)
    med = {j: {"wall": statistics.median(x["wall"] for x in runs[j]),
               "rows_per_s": statistics.median(x["rows_per_s"] for x in runs[j]),
               "after": statistics.median(x["after_start_per_s"] for x in runs[j]),
               "start_up": statistics.median(starts[j])} for j in (1, 2)}
    lines = [
        f"# The same build on 1 and 2 Slurm jobs ({datetime.date.today().isoformat()})",
        "",
        f"- Command: `python benchmarks/slurm_scaling.py --images {args.images} --size "
        f"{args.size} --rounds {args.rounds} --cores {args.cores}`",
        f"- Machine: {os.cpu_count()} cores, {platform.platform()}; Slurm from `ci/slurm.sh` "
        "(one node, this machine); media over a loopback HTTP server in its own process",
        f"- {args.images} synthetic sheets of {args.size} px, {sheets.nbytes / 1e6:.1f} MB; "
        f"each job {args.cores} core(s), one worker; medians of {args.rounds} rounds",
        "",
        "| jobs | whole process (s) | images/s of the build | images/s once the jobs run "
        "| jobs' start-up (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for j in (1, 2):
        lines.append(f"| {j} | {med[j]['wall']:.2f} | {med[j]['rows_per_s']:.1f} | "
                     f"{med[j]['after']:.1f} | {med[j]['start_up']:.2f} |")
    lines += [
        "",
        f"Ratios, 2 jobs to 1: images/s {med[2]['rows_per_s'] / med[1]['rows_per_s']:.2f}x "
        f"({med[2]['after'] / med[1]['after']:.2f}x once the jobs run), "
        f"whole process {med[1]['wall'] / med[2]['wall']:.2f}x faster, start-up "
        f"{med[2]['start_up'] / med[1]['start_up']:.2f}x as long.",
        "",
        "Every run: " + json.dumps({j: runs[j] for j in runs}) + "; start-ups: "
        + json.dumps(starts),
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
