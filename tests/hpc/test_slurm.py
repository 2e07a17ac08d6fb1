"""idigdask on a real Slurm (ci/slurm.sh): builds, training and prediction whose workers
are Slurm jobs, a job cancelled mid-build, job scripts, mistakes.

Every worker here is a ``dask worker`` process that Slurm started for a job submitted
with ``sbatch``; the jobs are checked with ``squeue`` and ``scontrol``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

import idigdask
from idigdask.synthetic import make_sheets
from idigdask.testing.media_server import MediaServer

pytestmark = pytest.mark.slurm

BIN = Path(sys.executable).parent
N_SHEETS = 240


@pytest.fixture(scope="module")
def sheets(tmp_path_factory):
    """Small synthetic sheets, half stained: distinct images, so none is a duplicate."""
    return make_sheets(tmp_path_factory.mktemp("slurm-sheets"), n=N_SHEETS, size=(160, 240),
                       seed=11)


@pytest.fixture(scope="module")
def server(sheets):
    with MediaServer(sheets.folder) as srv:
        yield srv


def url_table(path: Path, server, sheets, n: int = N_SHEETS, slow: float = 0.0) -> Path:
    """A URL table of the sheets; ``slow`` seconds before each answer."""
    root = Path(sheets.folder)
    prefix = f"fault/slow/{slow}/" if slow else ""
    rows = [{"id": Path(p).stem, "url": server.url_for(prefix + Path(p).relative_to(root).as_posix()),
             "label": int(flag)} for p, flag in zip(sheets.paths[:n], sheets.stained[:n])]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


TABLE = ["--url-column", "url", "--id-column", "id", "--label-column", "label"]


def squeue(name: str) -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def job_record(job_id: str) -> str:
    """What Slurm knows of a job: ``scontrol show job`` while it is listed, else the
    job completion log ci/slurm.sh keeps."""
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
    if shown.returncode == 0 and shown.stdout.strip():
        return shown.stdout
    log = Path(os.environ["IDIGDASK_SLURM_DIR"]) / "log" / "jobcomp.txt"
    return "\n".join(line for line in log.read_text().splitlines() if f"JobId={job_id} " in line)


def pixels(store: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(store / "images"), mode="r")[:])


def run_cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "idigdask"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def build_and_kill(catalog: Path, store: Path, kind: str, jobs: int, env: dict, find, kill,
                   timeout: float = 120) -> tuple:
    """Run ``idigdask build --cluster KIND --jobs N``; once a wave is committed and
    ``find()`` names a victim, ``kill(victim)``. Return the victim and the summary."""
    build = subprocess.Popen(
        [str(BIN / "idigdask"), "build", str(catalog), "-o", str(store), *TABLE,
         "--size", "64", "--chunk-size", "16", "--batch-size", "8", "--per-host", "4",
         "--cluster", kind, "--jobs", str(jobs), "--json", "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            committed = list((store / "ledger").glob("part-*.parquet")) if store.exists() else []
            victim = find() if committed else None
            if victim:
                break
            assert build.poll() is None, build.communicate()
            if time.monotonic() > deadline:
                pytest.fail("no victim while a build ran with a committed wave")
            time.sleep(0.2)
        kill(victim)
        out, err = build.communicate(timeout=300)
    finally:
        if build.poll() is None:
            build.kill()
    assert build.returncode == 0, err
    return victim, json.loads(out)


def same_pixels_as_a_local_build(store: Path, tmp_path: Path, server, sheets, env: dict,
                                 n: int = N_SHEETS) -> bool:
    """Whether ``store`` holds the pixels of the same catalog built locally, no delay."""
    plain = tmp_path / "plain.zarr"
    done = run_cli(["build", str(url_table(tmp_path / "plain.csv", server, sheets, n=n)),
                    "-o", str(plain), *TABLE, "--size", "64", "--chunk-size", "16",
                    "--batch-size", "8", "--no-progress"], env)
    assert done.returncode == 0, done.stderr
    return np.array_equal(pixels(store), pixels(plain))


def running_jobs(name: str) -> list[str]:
    return [i for i, s in squeue(name).items() if s == "RUNNING"]


def test_build_survives_a_cancelled_job(tmp_path, slurm, jobqueue, server, sheets):
    """`--cluster slurm --jobs 2`, one job scancel'ed mid-build: the build ends with every
    row in the ledger and the pixels byte-identical to a build without Slurm."""
    settings, env = jobqueue("slurm", "debug")
    catalog = url_table(tmp_path / "media.csv", server, sheets, slow=0.4)
    store = tmp_path / "slurm.zarr"
    # both jobs run, and a wave is committed
    victim, summary = build_and_kill(
        catalog, store, "slurm", 2, env,
        lambda: (lambda r: r[0] if len(r) == 2 else None)(running_jobs(settings["name"])),
        lambda job: subprocess.run(["scancel", job], check=True))

    assert "JobState=CANCELLED" in job_record(victim)
    jobs = summary["cluster"]["jobs"]
    assert jobs["kind"] == "slurm"
    assert victim not in jobs["ids"]  # replaced by a new job
    ledger = idigdask.read_ledger(str(store))
    assert len(ledger) == N_SHEETS
    assert set(ledger["status"]) == {"ok"}
    assert summary["images"] == N_SHEETS

    # the same catalog without Slurm (and without the delay): the same pixels, in order
    assert same_pixels_as_a_local_build(store, tmp_path, server, sheets, env)
    plain = tmp_path / "plain.zarr"
    ds, ref = idigdask.open_dataset(str(store)), idigdask.open_dataset(str(plain))
    assert list(ds["media_uuid"].values) == list(ref["media_uuid"].values)
    assert list(ds["sha256"].values) == list(ref["sha256"].values)


def worker_processes(job_id: str) -> list[int]:
    """The dask worker processes (not their nannies) of a Slurm job."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        # the nanny spawns the worker through multiprocessing
        if f"SLURM_JOB_ID={job_id}".encode() in environ and b"multiprocessing" in cmdline:
            found.append(int(proc.name))
    return found


def test_a_worker_killed_in_its_job_is_restarted(tmp_path, slurm, jobqueue, server, sheets):
    """A worker process killed with SIGKILL inside its job, as the kernel's OOM killer
    does when a job outgrows its memory: the job's nanny starts a new worker, the
    batches are done again, the build loses nothing."""
    import signal

    settings, env = jobqueue("slurm", "debug")
    catalog = url_table(tmp_path / "media.csv", server, sheets, n=120, slow=0.4)
    store = tmp_path / "s.zarr"

    def find():
        running = running_jobs(settings["name"])
        victims = worker_processes(running[0]) if running else []
        return (running, victims) if victims else None

    def kill(found):
        for pid in found[1]:
            os.kill(pid, signal.SIGKILL)

    (running, _), summary = build_and_kill(catalog, store, "slurm", 1, env, find, kill)
    assert summary["cluster"]["jobs"]["ids"] == running  # the same job, a new worker
    assert summary["rows"] == 120 and summary["status"]["ok"] == 120
    assert same_pixels_as_a_local_build(store, tmp_path, server, sheets, env, n=120)


def test_workers_retire_before_the_walltime(tmp_path, slurm, jobqueue, server, sheets):
    """Workers that leave on their own (``--lifetime``, as before a walltime) are
    replaced by new jobs, and the build loses nothing."""
    settings, _ = jobqueue("slurm", "debug",
                           **{"worker-extra-args": ["--lifetime", "10s",
                                                    "--lifetime-stagger", "5s"]})
    # 64 images of 2 s each, 8 at a time: the build outlasts the longest lifetime (15 s)
    catalog = url_table(tmp_path / "media.csv", server, sheets, n=64, slow=2.0)
    store = tmp_path / "s.zarr"
    import dask

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}):
        result = idigdask.build_dataset(
            str(catalog), str(store), size=64, chunk_size=16, batch_size=8, per_host=4,
            catalog_options={"url_column": "url", "id_column": "id", "label_column": "label"},
            cluster="slurm", jobs=2, progress=False)
    assert result.counts["rows"] == 64
    assert result.counts["status"]["ok"] == 64
    # more jobs than two ran: the first ones retired and new ones took over
    log = (Path(os.environ["IDIGDASK_SLURM_DIR"]) / "log" / "jobcomp.txt").read_text()
    ran = [line for line in log.splitlines() if f"Name={settings['name']} " in line]
    assert len(ran) > 2, log
    plain = idigdask.build_dataset(
        str(url_table(tmp_path / "plain.csv", server, sheets, n=64)), str(tmp_path / "p.zarr"),
        size=64, chunk_size=16, batch_size=8,
        catalog_options={"url_column": "url", "id_column": "id", "label_column": "label"},
        progress=False)
    assert plain.images == result.images
    assert np.array_equal(pixels(store), pixels(tmp_path / "p.zarr"))


def test_adaptive_jobs_build(tmp_path, slurm, jobqueue, server, sheets):
    """``--jobs 0:2``: jobs follow the work; the build completes."""
    _, env = jobqueue("slurm", "batch")
    catalog = url_table(tmp_path / "media.csv", server, sheets, n=60)
    done = run_cli(["build", str(catalog), "-o", str(tmp_path / "s.zarr"), *TABLE,
                    "--size", "32", "--cluster", "slurm", "--jobs", "0:2", "--json",
                    "--no-progress"], env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows"] == 60 and summary["status"]["ok"] == 60
    assert summary["cluster"]["jobs"]["kind"] == "slurm"
    assert summary["cluster"]["scheduler"].startswith("tcp://127.0.0.1:")


@pytest.fixture(scope="module")
def slurm_store(tmp_path_factory, server, sheets):
    """A store of the sheets, built locally, for training and prediction."""
    folder = tmp_path_factory.mktemp("slurm-store")
    catalog = url_table(folder / "media.csv", server, sheets, n=120)
    idigdask.build_dataset(str(catalog), str(folder / "s.zarr"), size=32, chunk_size=16,
                           catalog_options={"url_column": "url", "id_column": "id",
                                            "label_column": "label"}, progress=False)
    return folder / "s.zarr"


def test_train_evaluate_predict_on_slurm_workers(tmp_path, slurm, jobqueue, slurm_store):
    """The network trains in the driver while its feed reads on a Slurm job's worker;
    evaluation and prediction run on Slurm workers, the model shipped once per worker."""
    settings, env = jobqueue("slurm", "debug")
    model = tmp_path / "model"
    trained = run_cli(["train", str(slurm_store), "-o", str(model), "--epochs", "1",
                       "--batch-size", "16", "--quiet", "--cluster", "slurm", "--json"], env)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["cluster"]["jobs"]["kind"] == "slurm"
    assert summary["cluster"]["workers"] == 1
    assert (model / "model.keras").exists()

    evaluated = run_cli(["evaluate", str(model), "--cluster", "slurm", "--json"], env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["test_images"] > 0

    out = tmp_path / "predictions.parquet"
    predicted = run_cli(["predict", str(model), str(slurm_store), "-o", str(out),
                         "--chunks-per-task", "1", "--cluster", "slurm", "--jobs", "2",
                         "--json"], env)
    assert predicted.returncode == 0, predicted.stderr
    summary = json.loads(predicted.stdout)
    assert summary["images"] == 120 and summary["status"] == {"ok": 120}  # predict's own counts
    assert summary["cluster"]["jobs"]["kind"] == "slurm"
    table = pd.read_parquet(out)
    assert table["score_1"].between(0, 1).all()


def test_prediction_loads_the_model_once_per_worker(tmp_path, slurm, jobqueue, slurm_store):
    """In-process API: ``predict(..., cluster="slurm", jobs=2)``; each Slurm worker
    loads the model once however many tasks it runs, from the bytes it was sent."""
    from distributed import Client

    from idigdask.cluster import get_client

    jobqueue("slurm", "debug")
    model = tmp_path / "model"
    idigdask.train(str(slurm_store), str(model), epochs=1, batch_size=16, verbose=0,
                   client=False)
    with get_client(cluster="slurm", jobs=2) as client:
        assert isinstance(client, Client)
        client.wait_for_workers(2, timeout=120)
        table = idigdask.predict(str(model), str(slurm_store), out=None, chunks_per_task=1,
                                 client=client)
        loads = client.run(lambda dask_worker: getattr(dask_worker, "idigdask_model_loads", 0))
    assert len(table) == 120
    assert sorted(loads.values()) in ([1, 1], [0, 1])  # a worker may have had no task
    assert sum(loads.values()) >= 1
    assert table.attrs["cluster"]["jobs"]["kind"] == "slurm"


def test_dry_run_prints_the_job_script(tmp_path, slurm, jobqueue):
    settings, env = jobqueue("slurm", "debug", **{"job-script-prologue": ["module load python/3.11"],
                                                  "account": "herbaria"})
    done = run_cli(["build", "media.csv", "-o", str(tmp_path / "s.zarr"), "--cluster", "slurm",
                    "--dry-run", "--cluster-options", json.dumps({"walltime": "02:00:00",
                                                                  "queue": "batch"})], env)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    assert script.startswith("#!/usr/bin/env bash")
    for directive in (f"#SBATCH -J {settings['name']}", "#SBATCH -p batch", "#SBATCH -A herbaria",
                      "#SBATCH -n 1", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=3G",
                      "#SBATCH -t 02:00:00"):
        assert directive in script, script
    assert "module load python/3.11" in script
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script
    # two hours: workers leave between 1:50 and 1:55, before the walltime
    assert "--lifetime 6600s --lifetime-stagger 300s" in script
    assert not squeue(settings["name"])  # nothing was submitted
    # the script is what sbatch takes: submitted as is, it is a valid job
    as_json = json.loads(run_cli(["train", "s.zarr", "-o", "m", "--cluster", "slurm",
                                  "--dry-run", "--json"], env).stdout)
    assert as_json["cluster"] == "slurm" and "#SBATCH" in as_json["job_script"]


def test_a_queue_that_does_not_exist_is_one_line(tmp_path, slurm, jobqueue, server, sheets):
    settings, env = jobqueue("slurm", "nosuch")
    catalog = url_table(tmp_path / "media.csv", server, sheets, n=4)
    done = run_cli(["build", str(catalog), "-o", str(tmp_path / "s.zarr"), *TABLE,
                    "--cluster", "slurm"], env)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("idigdask build: error: --cluster slurm: the batch system refused")
    assert "invalid partition" in last
    assert "Traceback" not in done.stderr
    assert not squeue(settings["name"])


def test_jobs_that_die_before_their_worker_joins_are_one_line(tmp_path, slurm, jobqueue,
                                                              server, sheets):
    """A job script that fails on the node (a Python that is not there)."""
    settings, env = jobqueue("slurm", "debug", python="/nonexistent/bin/python3")
    catalog = url_table(tmp_path / "media.csv", server, sheets, n=4)
    done = run_cli(["build", str(catalog), "-o", str(tmp_path / "s.zarr"), *TABLE,
                    "--cluster", "slurm"], env, timeout=120)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "ended before a worker joined" in last and str(tmp_path / "job-logs") in last
    assert "Traceback" not in done.stderr


def test_cluster_info_lists_the_jobs(tmp_path, slurm, jobqueue):
    """`idigdask cluster-info` while idigdask's jobs run: the batch system's view and
    the scheduler's."""
    from idigdask.cluster import get_client

    settings, env = jobqueue("slurm", "debug")
    with get_client(cluster="slurm", jobs=1) as client:
        info = run_cli(["cluster-info", "--cluster", "slurm", "--json"], env)
        assert info.returncode == 0, info.stderr
        listed = json.loads(info.stdout)
        assert listed["job_name"] == settings["name"]
        assert listed["running"] == 1 and listed["pending"] == 0
        joined = run_cli(["cluster-info", "--scheduler", client.scheduler.address, "--json"], env)
        assert joined.returncode == 0, joined.stderr
        seen = json.loads(joined.stdout)
        assert seen["workers"] == 1 and seen["dashboard"].startswith("http")
        running = set(squeue(settings["name"]))
        assert set(listed["ids"]["running"]) == running
    deadline = time.monotonic() + 30  # closing the cluster cancels its jobs
    while squeue(settings["name"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not {i: s for i, s in squeue(settings["name"]).items() if s in ("RUNNING", "PENDING")}
