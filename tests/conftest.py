"""Fixtures shared by the whole suite: a real Dask cluster and synthetic sheets.

Every server of the suite listens on 127.0.0.1, an address that idigdask refuses to
fetch media from by default (``allow_private``): the whole session opts in, through the
environment before dask is imported (so CLI subprocesses and worker processes inherit
it) and through ``dask.config`` (in case a plugin imported dask first).
``tests/pipeline/test_ssrf.py`` switches it off to test the refusal.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["DASK_IDIGDASK__FETCH__ALLOW_PRIVATE"] = "true"


@pytest.fixture(scope="session", autouse=True)
def allow_private_addresses():
    """Let the session fetch from its loopback servers."""
    import dask

    with dask.config.set({"idigdask.fetch.allow-private": True}):
        yield


@pytest.fixture(scope="session")
def dask_client():
    """A real LocalCluster of two single-threaded worker processes on 127.0.0.1."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", host="127.0.0.1") as cluster, \
            Client(cluster) as client:
        yield client


@pytest.fixture(scope="session")
def small_sheets(tmp_path_factory):
    """Twenty synthetic herbarium sheets (600x900 px JPEG), half of them stained."""
    from idigdask.synthetic import make_sheets

    folder = tmp_path_factory.mktemp("sheets")
    return make_sheets(folder, n=20, size=(600, 900), stained_fraction=0.5, seed=7)
