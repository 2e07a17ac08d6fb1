"""``idigdask cluster-info``: where work would run, and what runs there now.

With ``--scheduler``: the scheduler's address, its dashboard and its workers. With
``--cluster slurm`` (or ``sge``): the batch system's dask-jobqueue jobs of this user,
pending and running. Without either, what the dask config ``idigdask.cluster`` names.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import _cluster_kind, add_cluster_kind, json_object_arg


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("cluster-info", help="the scheduler, its dashboard, workers and batch jobs",
                       description=__doc__)
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="ask this Dask scheduler (tcp://host:8786)")
    add_cluster_kind(p, "list this batch system's Dask worker jobs: ")
    p.add_argument("--cluster-options", default=None, metavar="JSON",
                   help="the dask-jobqueue options; their 'name' is the job name looked for")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .. import config
    from ..cluster import cluster_summary, get_client, local_cluster_kwargs

    scheduler = args.scheduler or config.get("cluster.scheduler")
    if scheduler:
        with get_client(str(scheduler)) as client:
            return {"kind": "scheduler", **cluster_summary(client)}
    kind = _cluster_kind(args)
    if kind == "local":
        kwargs = local_cluster_kwargs(config.get("cluster.n-workers"),
                                      config.get("cluster.n-threads"),
                                      host=config.get("cluster.host") or "127.0.0.1")
        return {"kind": "local", "running": "no scheduler; each command starts its own",
                "would_start": {"workers": kwargs["n_workers"],
                                "threads_per_worker": kwargs["threads_per_worker"],
                                "processes": kwargs["processes"]}}
    from ..hpc import batch_system, job_name, queue_jobs

    batch_system(kind)
    name = job_name(kind, json_object_arg(args.cluster_options, "--cluster-options"))
    jobs = queue_jobs(kind, name=name)
    if jobs is None:
        return {"kind": kind, "job_name": name,
                "jobs": "not listed: idigdask asks only squeue (slurm) and qstat (sge)"}
    counts = {state: sorted(i for i, s in jobs.items() if s == state)
              for state in ("pending", "running")}
    return {"kind": kind, "job_name": name, "pending": len(counts["pending"]),
            "running": len(counts["running"]), "ids": counts}
