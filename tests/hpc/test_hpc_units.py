"""The pure parts of idigdask.hpc: job counts, walltimes, lifetimes, refusals, flags."""

from __future__ import annotations

import pytest

from idigdask.cli import main
from idigdask.errors import UserError
from idigdask.hpc import (Jobs, _refusal, _sge_state, lifetime_args, parse_jobs,
                          walltime_seconds)
from idigdask.options import OptionError


@pytest.mark.parametrize("value, adapt, expected", [
    ("2", False, Jobs(2, 2)), (3, False, Jobs(3, 3)), (None, False, Jobs(1, 1)),
    ("0:8", False, Jobs(0, 8)), (":4", False, Jobs(0, 4)), ("2:2", False, Jobs(2, 2)),
    ("4", True, Jobs(0, 4)), ("1:3", True, Jobs(1, 3)),
])
def test_parse_jobs(value, adapt, expected):
    assert parse_jobs(value, adapt=adapt) == expected
    assert expected.adaptive == (expected.minimum != expected.maximum)


@pytest.mark.parametrize("value", ["0", "-1", "3:2", "a", "1:2:3", "2.5", "0:0"])
def test_parse_jobs_refuses(value):
    with pytest.raises(OptionError) as info:
        parse_jobs(value)
    assert info.value.option == "jobs"


@pytest.mark.parametrize("walltime, kind, seconds", [
    ("01:00:00", "slurm", 3600), ("00:30:00", "sge", 1800), ("30", "slurm", 1800),
    ("10:30", "slurm", 630), ("2-00:00:00", "slurm", 172800), ("1-12", "slurm", 129600),
    ("1-02:30", "slurm", 95400), ("02:00", "lsf", 7200), ("45", "lsf", 2700),
    ("3600", "pbs", 3600), ("36:00:00", "pbs", 129600),
    (None, "slurm", None), ("", "slurm", None), ("one hour", "slurm", None),
    ("1:2:3:4", "slurm", None), ("x-01:00:00", "slurm", None),
])
def test_walltime_seconds(walltime, kind, seconds):
    assert walltime_seconds(walltime, kind) == seconds


def test_lifetime_ends_before_the_walltime():
    args = lifetime_args("01:00:00", "slurm")
    assert args == ["--lifetime", "3000s", "--lifetime-stagger", "300s"]
    for walltime in ("00:02:00", "00:10:00", "04:00:00", "7-00:00:00"):
        lifetime, stagger = (int(v[:-1]) for v in lifetime_args(walltime, "slurm")[1::2])
        # the latest a worker leaves is lifetime + stagger: before the walltime, with time
        # to hand its results over
        assert 10 <= stagger <= 300
        assert lifetime + stagger < walltime_seconds(walltime, "slurm")
        assert lifetime > 0
    assert lifetime_args("00:00:30", "slurm") == []  # too short to retire in
    assert lifetime_args(None, "slurm") == []


def test_refusal_is_the_commands_stderr():
    message = ("Command exited with non-zero exit code.\nExit code: 1\nCommand:\n"
               "sbatch /tmp/x.sh\nstdout:\n\nstderr:\nsbatch: error: invalid partition "
               "specified: nosuch\nsbatch: error: Batch job submission failed\n\n")
    assert _refusal(message) == ("sbatch: error: invalid partition specified: nosuch "
                                 "sbatch: error: Batch job submission failed")
    assert _refusal("just one line") == "just one line"


@pytest.mark.parametrize("code, state", [("qw", "pending"), ("hqw", "pending"),
                                         ("r", "running"), ("t", "running"),
                                         ("Eqw", "ended"), ("dr", "ended")])
def test_sge_states(code, state):
    assert _sge_state(code) == state


def test_unknown_cluster_kind_is_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:  # argparse's choices
        main(["build", "x.csv", "-o", str(tmp_path / "s.zarr"), "--cluster", "nosuch"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cluster" in err and "nosuch" in err


def test_dry_run_needs_a_batch_system(capsys, tmp_path):
    assert main(["build", "x.csv", "-o", str(tmp_path / "s.zarr"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dry-run" in err and "--cluster slurm" in err


def test_bad_jobs_is_one_line_naming_the_flag(capsys, tmp_path, monkeypatch):
    import dask

    from idigdask.cluster import get_client

    with pytest.raises(OptionError, match="jobs"):
        with get_client(cluster="slurm", jobs="3:1"):
            pass
    # from the config too, when no client is current
    from distributed import default_client

    try:
        default_client()
        return  # a session client is current: the config's kind does not apply
    except ValueError:
        pass
    with pytest.raises(OptionError, match="jobs"):
        with dask.config.set({"idigdask.cluster.kind": "slurm", "idigdask.cluster.jobs": "x"}), \
                get_client():
            pass


def test_cluster_options_must_be_a_json_object(capsys, tmp_path):
    code = main(["build", "x.csv", "-o", str(tmp_path / "s.zarr"), "--cluster", "slurm",
                 "--dry-run", "--cluster-options", "[1, 2]"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cluster-options must be a JSON object" in err


def test_missing_batch_system_is_one_line(capsys, tmp_path, monkeypatch):
    """No sbatch on PATH (not a login node): one line, exit 2, before any catalog read."""
    monkeypatch.setenv("PATH", str(tmp_path))
    code = main(["build", "x.csv", "-o", str(tmp_path / "s.zarr"), "--cluster", "slurm",
                 "--dry-run"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sbatch is not on PATH" in err
    with pytest.raises(UserError, match="sbatch is not on PATH"):
        from idigdask.hpc import job_script

        job_script("slurm", {"cores": 1, "memory": "1GB"})


def test_missing_resources_name_the_settings(capsys, tmp_path):
    import shutil

    if shutil.which("qsub") is None:  # Grid Engine's client, installed by ci/sge.sh
        from conftest import unavailable

        unavailable("qsub", "not on PATH")
    code = main(["build", "x.csv", "-o", str(tmp_path / "s.zarr"), "--cluster", "sge",
                 "--dry-run"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "jobqueue.sge.cores" in err and "--cluster-options" in err


def test_cluster_flags_become_the_dask_config():
    """--cluster, --jobs, --adapt, --workers, --threads set idigdask.cluster for the call."""
    import argparse

    import dask

    from idigdask import config
    from idigdask.cli import cluster_settings

    args = argparse.Namespace(workers=None, threads=3, cluster="slurm", jobs="4", adapt=True)
    with cluster_settings(args):
        assert config.get("cluster.kind") == "slurm"
        assert parse_jobs(config.get("cluster.jobs"), adapt=config.get_bool("cluster.adapt")) \
            == Jobs(0, 4)
        assert config.get("cluster.n-threads") == 3
    assert config.get("cluster.kind") == "local" and dask.config.get("idigdask.cluster.jobs") == 1
