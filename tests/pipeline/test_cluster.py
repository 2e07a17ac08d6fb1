"""Where idigdask runs: the default in-process LocalCluster, in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys

from idigdask.cluster import local_cluster_kwargs

PROBE = """
import json, os, dask
from idigdask.cluster import _keep_large_buffers_out_of_the_heap, current_client, get_client
seen = {"mallopt": _keep_large_buffers_out_of_the_heap()}
with get_client(n_threads=2) as client:
    seen["current"] = current_client() is client
    seen["threads"] = sum(client.nthreads().values())
    seen["workers"] = len(client.nthreads())
    seen["log_length"] = dask.config.get("distributed.admin.low-level-log-length")
    seen["pid"] = client.run(os.getpid, workers=list(client.nthreads()))
seen["after"] = dask.config.get("distributed.admin.low-level-log-length")
seen["closed"] = current_client() is None
seen["pid"] = list(seen["pid"].values()) == [os.getpid()]
print(json.dumps(seen))
"""


def test_default_cluster_is_threads_in_this_process():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["current"] and seen["pid"] and seen["closed"]
    if sys.platform == "linux":  # glibc's mallopt took the mmap threshold
        assert seen["mallopt"] is True
    assert (seen["workers"], seen["threads"]) == (1, 2)
    # the cluster it starts keeps few messages for debugging; the setting is restored
    assert seen["log_length"] == 16 and seen["after"] == 1000


def test_local_cluster_kwargs():
    assert local_cluster_kwargs()["processes"] is False
    assert local_cluster_kwargs(n_threads=3)["threads_per_worker"] == 3
    procs = local_cluster_kwargs(n_workers=2)
    assert procs["processes"] is True and procs["n_workers"] == 2
