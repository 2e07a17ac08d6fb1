"""Fixtures shared by the whole suite: a real Dask cluster and synthetic sheets."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
