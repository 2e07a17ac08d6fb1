"""The worker classes of the LocalCluster that idigdask starts (:mod:`idigdask.cluster`).

A module of its own so that distributed, which it imports, loads only when a cluster
starts, and so that worker processes find their class by name.
"""

from __future__ import annotations

from typing import Any

from distributed import Nanny, Worker


class PagelessWorker(Worker):
    """A :class:`distributed.Worker` without the bokeh pages of its HTTP server.

    Importing bokeh for a worker's own status pages takes about 0.3 s of every worker
    start-up; the scheduler's dashboard shows the same workers. The HTTP server, its
    health and metrics routes, still listen where they are told.
    """

    def __init__(self, *args: Any, dashboard: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, dashboard=False, **kwargs)


class PagelessNanny(Nanny):
    """A :class:`distributed.Nanny` whose worker process is a :class:`PagelessWorker`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("worker_class", None)
        super().__init__(*args, worker_class=PagelessWorker, **kwargs)
