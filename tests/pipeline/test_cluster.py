"""Where idigdask runs: the default in-process LocalCluster, in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


LISTENING = r"""
import json, logging, re, sys, time, urllib.request
import psutil  # a dependency of distributed
from idigdask.cluster import get_client


def listening():
    # (ip, port) of every listening TCP socket of this process and its children
    me = psutil.Process()
    return [(conn.laddr.ip, conn.laddr.port)
            for proc in [me, *me.children(recursive=True)]
            for conn in proc.net_connections(kind="inet") if conn.status == psutil.CONN_LISTEN]


class Links(logging.Handler):
    seen = []

    def emit(self, record):
        self.seen.append(record.getMessage())


logging.getLogger("idigdask.cluster").addHandler(Links())
logging.getLogger("idigdask.cluster").setLevel(logging.INFO)
if __name__ == "__main__":
    with get_client(**json.loads(sys.argv[1])) as client:
        client.wait_for_workers(len(client.nthreads()) or 1, timeout=60)
        deadline = time.monotonic() + 60  # the dashboard comes up after 2 s of work
        while not re.findall(r"dashboard (http\S+)", " ".join(Links.seen)) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        (link,) = re.findall(r"dashboard (http\S+)", " ".join(Links.seen))
        seen = {"sockets": listening(), "link": link, "client_link": client.dashboard_link}
        for name in ("link", "client_link"):
            try:
                seen[name + "_status"] = urllib.request.urlopen(seen[name], timeout=20).status
            except OSError as err:
                seen[name + "_status"] = repr(err)
    print(json.dumps(seen))
"""


@pytest.mark.parametrize("kwargs", [{"n_threads": 2}, {"n_workers": 2}],
                         ids=["threads", "processes"])
def test_local_cluster_listens_on_loopback_only(tmp_path, kwargs):
    pytest.importorskip("bokeh")  # the dashboard needs it
    script = tmp_path / "listening.py"
    script.write_text(LISTENING)
    done = subprocess.run([sys.executable, str(script), json.dumps(kwargs)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # scheduler, worker(s), nannies, their dashboards and HTTP servers
    assert len(seen["sockets"]) >= (2 if "n_threads" in kwargs else 8), seen
    assert {ip for ip, _ in seen["sockets"]} == {"127.0.0.1"}, seen["sockets"]
    # the link printed is the one that answers, and the client's own agrees
    assert seen["link"].startswith("http://127.0.0.1:") and seen["link_status"] == 200, seen
    assert seen["client_link"] == seen["link"] and seen["client_link_status"] == 200, seen


SHORT = r"""
import json, sys
import dask
from idigdask.cluster import cluster_summary, dashboard_link, get_client

with dask.config.set({"idigdask.cluster.dashboard-after": sys.argv[1]}):
    with get_client(n_threads=1) as client:
        link = dashboard_link(client)
        summary = cluster_summary(client)
        worker = type(next(iter(client.cluster.workers.values()))).__name__
print(json.dumps({"link": link, "summary": summary["dashboard"], "worker": worker,
                  "bokeh": "bokeh" in sys.modules}))
"""


@pytest.mark.parametrize("after", ["30s", "never", "0"])
def test_the_dashboard_waits_for_work_that_lasts(tmp_path, after):
    pytest.importorskip("bokeh")
    script = tmp_path / "short.py"
    script.write_text(SHORT)
    done = subprocess.run([sys.executable, str(script), after],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # a worker's own HTTP server never carries bokeh pages
    assert seen["worker"] == "PagelessWorker"
    if after == "0":  # at once, as distributed starts it
        assert seen["bokeh"] and seen["link"].startswith("http://127.0.0.1:")
        assert seen["summary"] == seen["link"]
    else:  # a block shorter than the wait never imports bokeh, nor names a link
        assert not seen["bokeh"] and seen["link"] is None and seen["summary"] is None
        assert "dashboard" not in done.stderr or "comes up if" in done.stderr


def test_dashboard_after_must_be_a_duration():
    import dask

    from idigdask.cluster import _dashboard_after
    from idigdask.options import OptionError

    for value, seconds in [("2s", 2.0), (0, 0.0), ("500ms", 0.5), ("never", None), (None, None)]:
        with dask.config.set({"idigdask.cluster.dashboard-after": value}):
            assert _dashboard_after() == seconds
    with dask.config.set({"idigdask.cluster.dashboard-after": "soon"}), \
            pytest.raises(OptionError, match="dashboard_after"):
        _dashboard_after()


def test_host_reaches_every_server():
    kwargs = local_cluster_kwargs(host="::1")
    assert kwargs["dashboard_address"] == kwargs["worker_dashboard_address"] == [("::1", 0)]
    procs = local_cluster_kwargs(n_workers=2, host="0.0.0.0")
    assert procs["host"] == "0.0.0.0" and procs["dashboard_address"] == "0.0.0.0:0"
    assert local_cluster_kwargs()["worker_dashboard_address"] == "127.0.0.1:0"
