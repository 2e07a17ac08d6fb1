"""idigdask on a real Grid Engine (ci/sge.sh): a build whose workers are Grid Engine
jobs (one of them deleted with ``qdel`` mid-build), the job script, a queue that does
not exist."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import idigdask
from test_slurm import (N_SHEETS, TABLE, build_and_kill, run_cli, same_pixels_as_a_local_build,  # noqa: F401
                        server, sheets, url_table)

pytestmark = pytest.mark.sge

BIN = Path(sys.executable).parent


def qstat(name: str) -> dict[str, str]:
    """This user's jobs named ``name`` (qstat cuts names at 10 characters): id -> state."""
    out = subprocess.run(["qstat"], capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in out.splitlines()[2:]:
        fields = line.split()
        if len(fields) >= 5 and fields[0].isdigit() and name.startswith(fields[2]):
            jobs[fields[0]] = fields[4]
    return jobs


def test_build_on_grid_engine_survives_a_deleted_job(tmp_path, sge, jobqueue, server, sheets):
    settings, env = jobqueue("sge", "all.q")
    catalog = url_table(tmp_path / "media.csv", server, sheets, slow=0.4)
    store = tmp_path / "sge.zarr"

    def find():
        running = [i for i, s in qstat(settings["name"]).items() if s == "r"]
        return running[0] if len(running) == 2 else None

    victim, summary = build_and_kill(
        catalog, store, "sge", 2, env, find,
        lambda job: subprocess.run(["qdel", job], check=True, capture_output=True))
    assert summary["cluster"]["jobs"]["kind"] == "sge"
    assert victim not in summary["cluster"]["jobs"]["ids"]
    accounting = subprocess.run(["qacct", "-j", victim], capture_output=True, text=True)
    assert accounting.returncode == 0
    assert re.search(rf"^jobnumber\s+{victim}\s*$", accounting.stdout, re.M), accounting.stdout
    ledger = idigdask.read_ledger(str(store))
    assert len(ledger) == N_SHEETS and set(ledger["status"]) == {"ok"}

    assert same_pixels_as_a_local_build(store, tmp_path, server, sheets, env)


def test_grid_engine_job_script(tmp_path, sge, jobqueue):
    settings, env = jobqueue("sge", "all.q", **{"job-script-prologue": ["module load python"],
                                                "resource-spec": "h_vmem=3G"})
    done = run_cli(["predict", "model", "s.zarr", "--cluster", "sge", "--dry-run",
                    "--cluster-options", json.dumps({"walltime": "01:00:00"})], env)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    for directive in (f"#$ -N {settings['name']}", "#$ -q all.q", "#$ -l h_vmem=3G",
                      "#$ -l h_rt=01:00:00", "#$ -cwd", "#$ -j y"):
        assert directive in script, script
    assert "module load python" in script
    assert "--lifetime 3000s --lifetime-stagger 300s" in script
    # Grid Engine takes the script: qsub -verify checks it without queueing it
    path = tmp_path / "job.sh"
    path.write_text(script)
    checked = subprocess.run(["qsub", "-verify", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert not qstat(settings["name"])


def test_a_grid_engine_queue_that_does_not_exist_is_one_line(tmp_path, sge, jobqueue, server,
                                                             sheets):
    settings, env = jobqueue("sge", "nosuch.q")
    catalog = url_table(tmp_path / "media.csv", server, sheets, n=4)
    done = run_cli(["build", str(catalog), "-o", str(tmp_path / "s.zarr"), *TABLE,
                    "--cluster", "sge"], env)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("idigdask build: error: --cluster sge: the batch system refused")
    assert 'unknown queue "nosuch.q"' in last
    assert "Traceback" not in done.stderr
