"""Fixtures for tests against real batch systems: a Slurm (ci/slurm.sh), a Grid Engine (ci/sge.sh).

``slurm`` and ``sge`` (session) are the environment of a running batch system: from
the environment when its clients already answer, else from a cluster that the script
already runs, else one this session starts (and stops at the end). When none can be
had the tests skip, except under ``CI=true``, where they fail: CI must never pass by
skipping.

``jobqueue`` writes dask-jobqueue's own configuration, a ``jobqueue.yaml`` in a fresh
``DASK_CONFIG`` folder, as a user would, and gives the environment a CLI process
needs to read it; in-process tests get the same settings through ``dask.config``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from idigdask.testing.ceph import parse_exports

ROOT = Path(__file__).resolve().parents[2]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(what: str, reason: str) -> None:
    if in_ci():
        pytest.fail(f"{what} unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"{what} unavailable: {reason}")


def _answers(check: list[str], env: dict[str, str]) -> bool:
    if shutil.which(check[0]) is None:
        return False
    done = subprocess.run(check, env={**os.environ, **env}, capture_output=True, timeout=30)
    return done.returncode == 0


def _batch_system(script: str, marker: str, check: list[str]):
    """The environment of a running batch system, starting it if needed."""
    if os.environ.get(marker) and _answers(check, {}):
        yield {}
        return
    run = ["bash", str(ROOT / "ci" / script)]
    found = subprocess.run([*run, "env"], capture_output=True, text=True, timeout=60)
    if found.returncode == 0 and _answers(check, parse_exports(found.stdout)):
        yield parse_exports(found.stdout)
        return
    started = subprocess.run([*run, "start"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        unavailable(script, started.stderr.strip().splitlines()[-1] if started.stderr.strip()
                    else f"exit {started.returncode}")
    try:
        yield parse_exports(started.stdout)
    finally:
        subprocess.run([*run, "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def slurm():
    """The environment of a running Slurm (``SLURM_CONF``...), set in ``os.environ`` too."""
    yield from _with_env(_batch_system("slurm.sh", "SLURM_CONF", ["sinfo", "-h"]))


@pytest.fixture(scope="session")
def sge():
    """The environment of a running Grid Engine (``SGE_ROOT``, ``SGE_CELL``...)."""
    yield from _with_env(_batch_system("sge.sh", "SGE_ROOT", ["qstat", "-f"]))


def _with_env(source):
    env = next(source)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # dask-jobqueue runs the clients in this process's environment
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for _ in source:  # stop what the fixture started
            pass


def jobqueue_settings(kind: str, queue: str, logs: Path, **extra) -> dict:
    """A job of one core and 3 GB (TensorFlow on a worker needs more than 1 GB), this
    venv's Python, the loopback interface (the whole test cluster is this machine)."""
    return {"name": f"idg-{uuid.uuid4().hex[:6]}", "cores": 1, "memory": "3GB",
            "processes": 1, "walltime": "00:30:00", "queue": queue, "interface": "lo",
            "python": sys.executable, "log-directory": str(logs), **extra}


@pytest.fixture
def jobqueue(tmp_path):
    """Write ``jobqueue.yaml`` for a kind; return the settings and a CLI environment."""
    import dask
    # their defaults first: leaving a dask.config.set of keys whose parent was missing
    # removes the whole parent, defaults registered meanwhile included
    import dask_jobqueue  # noqa: F401
    import distributed  # noqa: F401

    folder = tmp_path / "dask-config"
    folder.mkdir()
    stack = []

    def write(kind: str, queue: str, **extra):
        settings = jobqueue_settings(kind, queue, tmp_path / "job-logs", **extra)
        (tmp_path / "job-logs").mkdir(exist_ok=True)
        (folder / "jobqueue.yaml").write_text(yaml.safe_dump({"jobqueue": {kind: settings}}))
        ctx = dask.config.set({f"jobqueue.{kind}.{k}": v for k, v in settings.items()})
        ctx.__enter__()
        stack.append(ctx)
        env = {**os.environ, "DASK_CONFIG": str(folder),
               # a job whose worker died is given up after 2 s, not 15: replaced sooner
               "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "2s"}
        return settings, env

    yield write
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)
