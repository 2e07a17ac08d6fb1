"""Where the work runs: the caller's Dask client, an existing scheduler, batch jobs, or a local cluster.

idigdask respects the caller's cluster: if a :class:`distributed.Client` is current it is
used as is; ``scheduler=`` joins an existing scheduler; ``cluster="slurm"`` (or
``sge``, ``pbs``, ``lsf``, ``htcondor``...) starts workers as batch jobs through
dask-jobqueue (:mod:`idigdask.hpc`); otherwise a :class:`distributed.LocalCluster`
sized to the machine is started for the duration of the call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

log = logging.getLogger(__name__)

#: LocalClusters started here whose dashboard is not up, yet or at all (:func:`_dashboard_later`)
_PAGELESS: "weakref.WeakSet[Any]" = weakref.WeakSet()


def current_client() -> "Client | None":
    """Return the current :class:`distributed.Client`, or None when there is none.

    The current client is the one made last in this process and not closed, or the
    one of a ``with client.as_current():`` block (:func:`distributed.default_client`).
    Unlike distributed's, this never raises: no client is an answer.

    Returns
    -------
    distributed.Client or None
        The client that Dask computations would run on now.

    Examples
    --------
    >>> current_client() is None
    True
    >>> from distributed import Client
    >>> with Client(processes=False) as client:                       # doctest: +SKIP
    ...     current_client() is client
    True
    """
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def local_cluster_kwargs(n_workers: int | None = None, n_threads: int | None = None, *,
                         host: str = "127.0.0.1") -> dict[str, Any]:
    """Arguments of the LocalCluster idigdask starts when none is given.

    By default one worker with a thread per core, in this process: the per-image work
    (JPEG decode, resize, hashing, compression) runs in C code that releases the GIL,
    so threads use every core, start in a second instead of several, and hand pixels
    to the Zarr writes without copying. ``n_workers`` asks for that many
    single-threaded worker processes instead, each watched by a nanny that restarts
    it if it dies; ``n_threads`` sets the threads of the in-process worker.

    Everything listens on ``host`` only, 127.0.0.1 unless asked otherwise: the
    scheduler, the workers and nannies, and all their HTTP servers (dashboards,
    metrics). distributed would bind a worker's HTTP server to every interface. The
    workers' HTTP servers carry no bokeh pages (:class:`~idigdask._local_worker.PagelessWorker`):
    the scheduler's dashboard shows the workers.
    """
    from ._local_worker import PagelessNanny, PagelessWorker

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    http = _http_address(host)
    if n_workers:
        # worker processes bind their HTTP servers to the worker's own host
        return {"n_workers": n_workers, "threads_per_worker": 1, "processes": True,
                "dashboard_address": http, "host": host, "worker_class": PagelessNanny}
    # threads talk to the scheduler in-process (inproc://, no host to bind), but the
    # worker's HTTP server still listens on TCP: on every interface unless told
    return {"n_workers": 1, "threads_per_worker": n_threads or max(1, cores or 1),
            "processes": False, "dashboard_address": http, "worker_dashboard_address": http,
            "worker_class": PagelessWorker}


def _http_address(host: str) -> str | list[tuple[str, int]]:
    """An HTTP address on ``host`` and a free port, as distributed parses it."""
    host = host.strip("[]")
    # distributed splits "host:port" at every colon: an IPv6 host goes as a pair
    return [(host, 0)] if ":" in host else f"{host}:0"


def dashboard_link(client: "Client") -> str | None:
    """The link of the scheduler's dashboard, on the address that answers.

    distributed builds the link from the scheduler's address, which for an in-process
    cluster is the machine's network address, while the dashboard listens on
    127.0.0.1. When the scheduler runs in this process the link names the address its
    dashboard is bound to (unless that is every interface); otherwise distributed's.

    Parameters
    ----------
    client : distributed.Client
        A client of the scheduler.

    Returns
    -------
    str or None
        The dashboard's URL, as ``distributed.dashboard.link`` formats it; otherwise
        distributed's own answer (``client.dashboard_link``), which is empty or None
        when it knows no dashboard. None for a LocalCluster of :func:`get_client`
        whose dashboard has not come up (``idigdask.cluster.dashboard-after``).

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> with LocalCluster(**local_cluster_kwargs(n_threads=1)) as cluster:   # doctest: +SKIP
    ...     with Client(cluster) as client:
    ...         dashboard_link(client), client.dashboard_link
    ('http://127.0.0.1:40655/status', 'http://192.0.2.2:40655/status')
    """
    from distributed.utils import format_dashboard_link

    cluster = getattr(client, "cluster", None)
    if cluster is not None and cluster in _PAGELESS:
        return None  # its HTTP server answers, but not with a dashboard
    scheduler = getattr(cluster, "scheduler", None)
    server = getattr(scheduler, "http_server", None)
    address, port = getattr(server, "address", None), getattr(server, "port", None)
    if address and port and address not in ("0.0.0.0", "::", ""):
        return format_dashboard_link(f"[{address}]" if ":" in address else address, port)
    return client.dashboard_link


def _keep_large_buffers_out_of_the_heap(threshold: int = 2**20) -> bool:
    """Serve allocations of ``threshold`` bytes or more with mmap, freed straight back.

    Threads of an in-process worker allocate and free many buffers of a few MB
    (fetched bodies, batches of pixels). glibc's adaptive threshold soon puts them in
    its per-thread arenas, whose fragmentation grew a 20,000-image build's memory by
    a third over a 2,000-image one; dask tunes malloc of its worker processes for the
    same reason (``distributed.nanny.pre-spawn-environ``). A fixed threshold keeps
    the memory flat for the cost of a page-mapping per large buffer. glibc only;
    elsewhere nothing is changed.
    """
    import ctypes

    try:  # the symbols already loaded in this process: glibc's, on Linux
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    M_MMAP_THRESHOLD = -3
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))


@contextlib.contextmanager
def get_client(
    client: "Client | str | None" = None,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    n_threads: int | None = None,
    host: str | None = None,
    cluster: str | None = None,
    jobs: int | str | None = None,
    cluster_options: dict | None = None,
) -> Iterator["Client"]:
    """Yield a Dask client to run on, closing only what this call started.

    The one rule of every stage for where work runs: the given client (or the
    scheduler whose address is given), else the batch jobs of the given ``cluster``
    kind, else the current client, else what the dask config ``idigdask.cluster``
    says: a scheduler to join, a batch system (``kind``) or a LocalCluster of
    ``n-workers`` processes or ``n-threads`` threads on ``host``. The keywords
    override the config.

    Parameters
    ----------
    client : distributed.Client or str, optional
        Use this client, or join the scheduler at this address.
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``) to join
        (``idigdask.cluster.scheduler``).
    n_workers : int, optional
        Worker processes of the LocalCluster started when there is no client (default:
        one worker in this process with a thread per core; ``idigdask.cluster.n-workers``).
    n_threads : int, optional
        Threads of that in-process worker (default: one per core;
        ``idigdask.cluster.n-threads``).
    host : str, optional
        The address the started LocalCluster listens on, every server of it
        (scheduler, workers, nannies, dashboards); ``"0.0.0.0"`` opens it to the
        network. The logged dashboard link is one that answers. Default:
        ``idigdask.cluster.host``, 127.0.0.1. Its dashboard comes up once the work
        has run ``idigdask.cluster.dashboard-after`` (2 s; 0: at once, ``never``):
        a short command does not pay for importing bokeh.
    cluster : str, optional
        ``"local"``, or a batch system of dask-jobqueue whose jobs run the workers:
        ``"slurm"``, ``"sge"``, ``"pbs"``, ``"lsf"``, ``"htcondor"``, ``"oar"``,
        ``"moab"`` (``idigdask.cluster.kind``). A job's resources come from
        dask-jobqueue's configuration (``jobqueue.yaml``) and ``cluster_options``.
    jobs : int or str, optional
        Batch jobs to keep: ``N``, or ``"MIN:MAX"`` to follow the work between
        them (``idigdask.cluster.jobs``; ``idigdask.cluster.adapt`` makes ``N`` mean
        ``0:N``). Jobs that end are replaced. See :func:`idigdask.hpc.jobqueue_cluster`.
    cluster_options : dict, optional
        Keyword arguments of the dask-jobqueue cluster class (``queue``, ``walltime``,
        ``cores``, ``memory``, ``job_script_prologue``...), over ``jobqueue.yaml``.

    Yields
    ------
    distributed.Client

    Raises
    ------
    UserError
        When the scheduler does not answer, or the batch system is missing or refuses
        the jobs, or every job ends before its worker joins.

    Examples
    --------
    >>> with get_client(cluster="slurm", jobs="0:8") as client:  # doctest: +SKIP
    ...     idigdask.build_dataset("media.parquet", "sheets.zarr", client=client)
    """
    from . import config

    if isinstance(client, str):
        client, scheduler = None, client
    n_workers = _count(n_workers, "n-workers")
    n_threads = _count(n_threads, "n-threads")
    host = host or config.get("cluster.host") or "127.0.0.1"
    from distributed import Client, LocalCluster

    if client is not None:
        log.info("running on %s; dashboard %s", client.scheduler.address, dashboard_link(client))
        yield client
        return
    if scheduler:
        try:
            joined = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise UserError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        with joined:
            log.info("joined scheduler %s; dashboard %s", scheduler, dashboard_link(joined))
            yield joined
        return
    if cluster is None or str(cluster).strip().lower() in ("", "local"):
        existing = current_client()
        if existing is not None:
            log.info("running on the current client %s; dashboard %s",
                     existing.scheduler.address, dashboard_link(existing))
            yield existing
            return
        configured = config.get("cluster.scheduler")
        if configured:
            with get_client(str(configured)) as joined:
                yield joined
            return
        cluster = cluster or config.get("cluster.kind") or "local"
    kind = str(cluster).strip().lower()
    if kind != "local":
        with _batch_jobs(kind, jobs, cluster_options) as started:
            yield started
        return
    import dask

    kwargs = local_cluster_kwargs(n_workers, n_threads, host=host)
    if not kwargs["processes"]:
        _keep_large_buffers_out_of_the_heap()
    # distributed keeps the last `low-level-log-length` messages of every batched
    # comm for debugging (1000 by default); with a catalog's rows in the messages that
    # grew a 20,000-image build's memory by a third, so this cluster keeps a few; and
    # its dashboard link names the address the dashboard listens on
    settings = {"distributed.admin.low-level-log-length": 16, **_link_on(host)}
    after = _dashboard_after()
    if after != 0:  # bokeh is imported when the dashboard starts, not with the cluster
        kwargs["scheduler_kwargs"] = {"dashboard": False}
    with dask.config.set(settings), LocalCluster(**kwargs) as local, \
            Client(local) as started, _dashboard_later(local, started, after):
        what = (f"{kwargs['n_workers']} worker processes" if kwargs["processes"]
                else f"{kwargs['threads_per_worker']} threads")
        if after == 0:
            log.info("started a LocalCluster of %s; dashboard %s", what, dashboard_link(started))
        else:
            log.info("started a LocalCluster of %s%s", what, "" if after is None else
                     f"; its dashboard comes up if the work runs {after:g} s")
        yield started


def _dashboard_after() -> float | None:
    """Seconds of work before a started LocalCluster's dashboard (None: never)."""
    from dask.utils import parse_timedelta

    from . import config
    from .options import OptionError

    value = config.get("cluster.dashboard-after")
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "never")):
        return None
    try:
        seconds = float(parse_timedelta(value, default="s"))
    except (TypeError, ValueError, KeyError):  # KeyError: an unknown unit
        seconds = -1.0
    if seconds < 0:
        raise OptionError("dashboard_after", f"{value!r} is not a duration (2s, 0, never)")
    return seconds


@contextlib.contextmanager
def _dashboard_later(local: Any, client: "Client", after: float | None) -> Iterator[None]:
    """Start ``local``'s scheduler dashboard once the block has run ``after`` seconds.

    The dashboard's bokeh pages cost about 0.3 s of imports, more than a short command
    runs: it is started, and its link logged, only when the work lasts. Its HTTP
    server listens from the start, so the link is the same. ``after`` 0 or None:
    nothing to start (it started with the cluster, or never does).
    """
    if after == 0:
        yield
        return
    _PAGELESS.add(local)
    if after is None:
        yield
        return
    done = threading.Event()

    def start() -> None:
        if done.wait(after):
            return
        try:  # in this thread: the scheduler's loop goes on meanwhile
            import distributed.dashboard.scheduler as pages
        except ImportError:  # no bokeh: distributed has no dashboard either
            return

        def connect() -> None:  # on the scheduler's loop, as distributed does it
            if done.is_set():
                return
            scheduler = local.scheduler
            prefix = local.scheduler_spec["options"].get("http_prefix", "/")
            try:
                pages.connect(scheduler.http_application, scheduler.http_server, scheduler,
                              prefix=prefix)
            except Exception as exc:  # the work goes on without its dashboard
                log.warning("the dashboard did not start: %s", exc)
                return
            _PAGELESS.discard(local)
            log.info("dashboard %s", dashboard_link(client))

        local.loop.add_callback(connect)

    starter = threading.Thread(target=start, name="idigdask-dashboard", daemon=True)
    starter.start()
    try:
        yield
    finally:
        done.set()
        starter.join()


@contextlib.contextmanager
def _batch_jobs(kind: str, jobs: int | str | None,
                cluster_options: dict | None) -> Iterator["Client"]:
    """A client of workers in batch jobs, once the first has joined; jobs cancelled after."""
    from distributed import Client

    from . import config, hpc

    import dask

    spec = hpc.parse_jobs(config.get("cluster.jobs") if jobs is None else jobs,
                          adapt=config.get_bool("cluster.adapt"))
    # batch systems end workers as a matter of course (pre-emption, walltime, memory):
    # a task is given up after more lost workers than distributed's default 3
    failures = max(10, int(dask.config.get("distributed.scheduler.allowed-failures")))
    with dask.config.set({"distributed.scheduler.allowed-failures": failures}):
        started = hpc.jobqueue_cluster(kind, spec, cluster_options,
                                       lifetime=config.get_bool("cluster.lifetime"))
    try:
        with Client(started) as client:
            log.info("scheduler %s; dashboard %s; waiting for the first worker",
                     client.scheduler.address, dashboard_link(client))
            hpc.wait_for_workers(client, started)
            hpc.keep_jobs(started, spec)
            yield client
    finally:
        started.close()  # cancels the jobs


def cluster_summary(client: "Client") -> dict[str, Any]:
    """Where the work ran: the scheduler, its dashboard, the workers and any batch jobs.

    The ``cluster`` section of every command's summary (``--json``) and of
    ``idigdask cluster-info``.

    Parameters
    ----------
    client : distributed.Client
        The client the work ran through.

    Returns
    -------
    dict
        ``scheduler``, ``dashboard``, ``workers``, ``threads`` and, on a batch system,
        ``jobs`` (kind, pending, running, ended, ids).

    Examples
    --------
    >>> from distributed import Client, LocalCluster
    >>> with LocalCluster(n_workers=1, processes=False) as cluster, Client(cluster) as client:
    ...     sorted(cluster_summary(client))                               # doctest: +SKIP
    ['dashboard', 'scheduler', 'threads', 'workers']
    """
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    summary: dict[str, Any] = {
        "scheduler": client.scheduler.address,
        "dashboard": dashboard_link(client),
        "workers": len(workers),
        "threads": sum(int(w.get("nthreads", 0)) for w in workers.values()),
    }
    cluster = getattr(client, "cluster", None)
    from . import hpc

    if type(cluster).__name__ in hpc.JOBQUEUE_CLASSES.values():
        summary["jobs"] = hpc.jobs_summary(cluster)
    return summary


def _count(value: int | None, key: str) -> int | None:
    """A worker or thread count: the keyword, else the config ``idigdask.cluster.<key>``."""
    from . import config
    from .options import OptionError

    value = config.get(f"cluster.{key}") if value is None else value
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise OptionError(key.replace("-", "_"), f"{value!r} is not a count of at least 1")
    return count


_DEFAULT_LINK = "{scheme}://{host}:{port}/status"


def _link_on(host: str) -> dict[str, str]:
    """Settings so that ``Client.dashboard_link`` names ``host`` too.

    distributed builds the link from the scheduler's address, for an in-process
    cluster the machine's network address, where the dashboard does not listen. A
    template of the user's own (a proxy's path) and a wildcard host are left alone.
    """
    import dask

    host = host.strip("[]")
    if dask.config.get("distributed.dashboard.link") != _DEFAULT_LINK or \
            host in ("", "0.0.0.0", "::"):
        return {}
    shown = f"[{host}]" if ":" in host else host
    return {"distributed.dashboard.link": "{scheme}://" + shown + ":{port}/status"}
