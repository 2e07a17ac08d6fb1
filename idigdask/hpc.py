"""Batch systems: Dask workers as Slurm, Grid Engine, PBS, LSF or HTCondor jobs.

dask-jobqueue does the work (the ``hpc`` extra). A job's resources (queue, account,
walltime, cores, memory, the prologue that loads modules or activates an
environment) come from dask-jobqueue's own configuration,
``~/.config/dask/jobqueue.yaml`` or ``DASK_JOBQUEUE__SLURM__QUEUE=gpu``, and from
``cluster_options``, the keyword arguments of its cluster class. idigdask adds three
things:

- the jobs are always managed by :class:`~distributed.deploy.Adaptive` between a
  minimum and a maximum (equal for a fixed count), so a job that the batch system
  cancels, pre-empts or kills is replaced by a new one, as dask-jobqueue advises for
  walltime kills;
- workers retire on their own before the walltime (``--lifetime`` and
  ``--lifetime-stagger``), handing their results to the others, so a build longer
  than an allocation goes on in new jobs;
- mistakes end in one line: a batch system that is not installed, a job script the
  batch system refuses (no such queue), jobs that end before their worker joins.

The per-system queries (:func:`job_states`) read Slurm's ``squeue`` and Grid
Engine's ``qstat``; for the other systems a job counts as pending until its worker
joins the scheduler.
"""

from __future__ import annotations

import getpass
import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client
    from dask_jobqueue import JobQueueCluster

log = logging.getLogger(__name__)

__all__ = ["JOBQUEUE_CLASSES", "Jobs", "parse_jobs", "lifetime_args", "batch_system",
           "jobqueue_cluster",
           "keep_jobs", "job_script", "job_states", "queue_jobs", "wait_for_workers",
           "jobs_summary"]

#: The batch systems of dask-jobqueue, by the name ``--cluster`` takes.
JOBQUEUE_CLASSES = {"slurm": "SLURMCluster", "sge": "SGECluster", "pbs": "PBSCluster",
                    "lsf": "LSFCluster", "htcondor": "HTCondorCluster",
                    "oar": "OARCluster", "moab": "MoabCluster"}

#: Batch-system job states, as idigdask counts them.
PENDING, RUNNING, ENDED = "pending", "running", "ended"


@dataclass(frozen=True)
class Jobs:
    """How many batch jobs to keep: between ``minimum`` and ``maximum``.

    Made from ``--jobs`` by :func:`parse_jobs`, which checks the range.

    Parameters
    ----------
    minimum : int
        The fewest jobs kept, 0 or more.
    maximum : int
        The most jobs kept; equal to ``minimum`` for a fixed count.

    Examples
    --------
    >>> Jobs(2, 2).adaptive, Jobs(0, 8).adaptive
    (False, True)
    >>> parse_jobs("0:8") == Jobs(minimum=0, maximum=8)
    True
    """

    minimum: int
    maximum: int

    @property
    def adaptive(self) -> bool:
        """True when the count follows the work instead of staying fixed."""
        return self.minimum != self.maximum


def parse_jobs(value: Any, adapt: bool = False) -> Jobs:
    """``--jobs N`` (a fixed count) or ``--jobs MIN:MAX`` (adaptive between them).

    With ``adapt``, a single count ``N`` means between 0 and N jobs.

    Examples
    --------
    >>> parse_jobs("2"), parse_jobs("0:8"), parse_jobs(4, adapt=True)
    (Jobs(minimum=2, maximum=2), Jobs(minimum=0, maximum=8), Jobs(minimum=0, maximum=4))
    """
    from .options import OptionError

    text = str(1 if value is None else value).strip()
    parts = text.split(":")
    try:
        if len(parts) == 1:
            low = high = int(parts[0])
            if adapt:
                low = 0
        elif len(parts) == 2:
            low, high = int(parts[0] or 0), int(parts[1])
        else:
            raise ValueError(text)
    except ValueError:
        raise OptionError("jobs", f"{text!r} is not a job count N or a range MIN:MAX") from None
    if low < 0 or high < 1 or low > high:
        raise OptionError("jobs", f"{text!r}: need 0 <= MIN <= MAX and MAX >= 1")
    return Jobs(low, high)


def walltime_seconds(walltime: Any, kind: str) -> int | None:
    """Seconds of a walltime as the batch system ``kind`` writes it, or None.

    Slurm takes ``MM``, ``MM:SS``, ``HH:MM:SS`` and ``D-HH[:MM[:SS]]``; LSF takes
    ``[HH:]MM``; the others ``HH:MM:SS`` (or seconds).
    """
    if walltime is None:
        return None
    text = str(walltime).strip()
    days = 0
    if "-" in text:
        head, _, text = text.partition("-")
        if not head.isdigit():
            return None
        days = int(head)
    fields = text.split(":")
    if not all(f.isdigit() for f in fields) or not 1 <= len(fields) <= 3:
        return None
    values = [int(f) for f in fields]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        values += [0] * (3 - len(values))
        h, m, s = values
    elif len(values) == 3:
        h, m, s = values
    elif len(values) == 2:
        (h, m), s = ((values[0], values[1]), 0) if kind == "lsf" else ((0, values[0]), values[1])
    else:  # one number: minutes for Slurm and LSF, seconds for PBS and Grid Engine
        h, m, s = (0, values[0], 0) if kind in ("slurm", "lsf") else (0, 0, values[0])
    return ((days * 24 + h) * 60 + m) * 60 + s


def lifetime_args(walltime: Any, kind: str) -> list[str]:
    """``dask worker`` arguments that retire a worker before its job's walltime.

    A tenth of the walltime (at most 5 minutes, at least 10 s) is the stagger, so the
    workers of jobs started together do not all leave at once; the lifetime ends two
    staggers before the walltime, leaving time to hand results over. An unreadable or
    very short walltime (under a minute) gives no arguments.

    Parameters
    ----------
    walltime : str, int or None
        The job's walltime as the batch system writes it (``"01:00:00"``; Slurm also
        ``"2-00"`` and minutes, LSF ``[HH:]MM``, the others seconds); None for none.
    kind : str
        The batch system (``slurm``, ``sge``, ``pbs``, ``lsf``...), which decides how
        a bare number reads.

    Returns
    -------
    list of str
        ``["--lifetime", "<s>s", "--lifetime-stagger", "<s>s"]``, or an empty list.

    Examples
    --------
    >>> lifetime_args("01:00:00", "slurm")
    ['--lifetime', '3000s', '--lifetime-stagger', '300s']
    >>> lifetime_args("30", "slurm"), lifetime_args("30", "pbs")   # minutes, seconds
    (['--lifetime', '1440s', '--lifetime-stagger', '180s'], [])
    >>> lifetime_args(None, "sge")
    []
    """
    seconds = walltime_seconds(walltime, kind)
    if not seconds or seconds < 60:
        return []
    stagger = max(10, min(300, seconds // 10))
    return ["--lifetime", f"{seconds - 2 * stagger}s", "--lifetime-stagger", f"{stagger}s"]


def batch_system(kind: str):
    """The dask-jobqueue cluster class of ``kind``, once its submit command is found.

    Parameters
    ----------
    kind : str
        A key of :data:`JOBQUEUE_CLASSES` (``slurm``, ``sge``, ``pbs``...).

    Returns
    -------
    type
        The :class:`dask_jobqueue.JobQueueCluster` subclass, e.g.
        ``dask_jobqueue.SLURMCluster``.

    Raises
    ------
    OptionError
        When ``kind`` is unknown (``option`` is ``"cluster"``).
    UserError
        When dask-jobqueue is not installed, or the batch system's submit command
        (``sbatch``, ``qsub``...) is not on ``PATH``.

    Examples
    --------
    >>> batch_system("slurm")                                   # doctest: +SKIP
    <class 'dask_jobqueue.slurm.SLURMCluster'>
    >>> batch_system("torque")                                # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    idigdask.options.OptionError: cluster: 'torque' is not local or one of slurm, sge, ...
    """
    _check_kind(kind)
    try:
        import dask_jobqueue
    except ImportError:
        raise UserError(f"--cluster {kind} needs dask-jobqueue: pip install 'idigdask[hpc]'") \
            from None
    cls = getattr(dask_jobqueue, JOBQUEUE_CLASSES[kind])
    command = cls.job_cls.submit_command.split()[0]
    if shutil.which(command) is None:
        raise UserError(f"--cluster {kind}: {command} is not on PATH; run on a machine "
                        f"that submits {kind} jobs (a login node)")
    return cls


def _check_kind(kind: str) -> None:
    if kind not in JOBQUEUE_CLASSES:
        from .options import OptionError

        raise OptionError("cluster", f"{kind!r} is not local or one of "
                          f"{', '.join(JOBQUEUE_CLASSES)}")


def _make(kind: str, cluster_options: dict | None, lifetime: bool):
    """The cluster object, no job submitted yet; mistakes as one-line UserErrors."""
    import dask

    cls = batch_system(kind)
    kwargs = dict(cluster_options or {})
    if lifetime:
        extra = kwargs.get("worker_extra_args")
        if extra is None:
            extra = dask.config.get(f"jobqueue.{kind}.worker-extra-args", None) or []
        if "--lifetime" not in extra:
            walltime = kwargs.get("walltime") or dask.config.get(f"jobqueue.{kind}.walltime",
                                                                 None)
            kwargs["worker_extra_args"] = [*extra, *lifetime_args(walltime, kind)]
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = re.sub(r",? for example:?$", "", first.rstrip(":"))
        hint = ""
        if "cores and memory" in str(exc):
            hint = (f"; set them in ~/.config/dask/jobqueue.yaml (jobqueue.{kind}.cores, "
                    f"jobqueue.{kind}.memory) or --cluster-options "
                    "'{\"cores\": 4, \"memory\": \"16GB\"}'")
        raise UserError(f"--cluster {kind}: {first}{hint}") from None


def job_script(kind: str, cluster_options: dict | None = None, *, lifetime: bool = True) -> str:
    """The job script a ``kind`` cluster would submit, without submitting it.

    It names the scheduler this process would start, so its address is the one of a
    run started now. Show it to your HPC support, or check the directives.

    Parameters
    ----------
    kind : str
        The batch system, as ``--cluster`` names it (``slurm``, ``sge``...).
    cluster_options : dict, optional
        Keyword arguments of dask-jobqueue's cluster class, over its configuration.
    lifetime : bool
        Whether workers retire before the walltime.

    Returns
    -------
    str
        The job script a worker's job would run (``--dry-run``).

    Examples
    --------
    >>> print(job_script("slurm", {"cores": 1, "memory": "2GB"}))          # doctest: +SKIP
    """
    cluster = _make(kind, cluster_options, lifetime)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def jobqueue_cluster(kind: str, jobs: Jobs, cluster_options: dict | None = None, *,
                     lifetime: bool = True) -> "JobQueueCluster":
    """Start a dask-jobqueue cluster of ``kind`` and submit its first jobs.

    The first ``max(jobs.minimum, 1)`` jobs are submitted at once, so that a job
    script the batch system refuses ends here, with the batch system's own message;
    then :func:`keep_jobs` hands them to :class:`distributed.deploy.Adaptive`, once
    a worker has joined (:func:`wait_for_workers`).

    Parameters
    ----------
    kind : str
        A key of :data:`JOBQUEUE_CLASSES`.
    jobs : Jobs
        The range of job counts.
    cluster_options : dict, optional
        Keyword arguments of the dask-jobqueue class (``queue``, ``walltime``,
        ``cores``, ``memory``, ``job_script_prologue``...), over its configuration.
    lifetime : bool
        Retire workers before the walltime (:func:`lifetime_args`), unless
        ``worker_extra_args`` already holds ``--lifetime``.

    Returns
    -------
    dask_jobqueue.JobQueueCluster
        Close it to cancel its jobs.

    Raises
    ------
    UserError
        When dask-jobqueue or the batch system is missing, the options are wrong, or
        the batch system refuses the job.

    Examples
    --------
    >>> cluster = jobqueue_cluster("slurm", parse_jobs("2"))              # doctest: +SKIP
    >>> client = distributed.Client(cluster)                              # doctest: +SKIP
    """
    cluster = _make(kind, cluster_options, lifetime)
    try:
        # what SpecCluster does for the workers given to its constructor: add them to
        # the spec and wait for their start, here the submissions, which raise with the
        # submit command's output when refused (scale() would only log that)
        while len(cluster.worker_spec) < max(jobs.minimum, 1):
            cluster.worker_spec.update(cluster.new_worker_spec())
        cluster.sync(cluster._correct_state)
    except RuntimeError as exc:
        from distributed.core import Status

        # a job never submitted has nothing to cancel; marked failed, as SpecCluster's
        # close expects of every worker it created
        for job in cluster._created:
            if not getattr(job, "job_id", None):
                job.status = Status.failed
        cluster.close()
        raise UserError(f"--cluster {kind}: the batch system refused the job: "
                        f"{_refusal(str(exc))}") from None
    log.info("submitted %d %s job(s)", max(jobs.minimum, 1), kind)
    return cluster


def keep_jobs(cluster: "JobQueueCluster", jobs: Jobs) -> None:
    """Keep between ``jobs.minimum`` and ``jobs.maximum`` jobs from now on.

    :class:`distributed.deploy.Adaptive` replaces jobs that end (cancelled,
    pre-empted, killed, retired before the walltime) and, when the two differ,
    follows the work. Called once a worker has joined: with a minimum of 0 and no
    task yet, Adaptive would cancel the first jobs before their workers start.

    Parameters
    ----------
    cluster : dask_jobqueue.JobQueueCluster
        A cluster from :func:`jobqueue_cluster`.
    jobs : Jobs
        The range of job counts to keep.

    Examples
    --------
    >>> cluster = jobqueue_cluster("slurm", parse_jobs("0:8"))          # doctest: +SKIP
    >>> with distributed.Client(cluster) as client:                     # doctest: +SKIP
    ...     wait_for_workers(client, cluster)
    ...     keep_jobs(cluster, parse_jobs("0:8"))
    """
    cluster.adapt(minimum_jobs=jobs.minimum, maximum_jobs=jobs.maximum)
    log.info("keeping between %d and %d %s job(s)", jobs.minimum, jobs.maximum,
             _kind_of(cluster))


def _refusal(message: str) -> str:
    """The telling line of dask-jobqueue's RuntimeError: the command's stderr."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if "stderr:" in lines:
        after = lines[lines.index("stderr:") + 1:]
        if after:
            return " ".join(after)
    return lines[-1] if lines else message


# ---------------------------------------------------------------------------------
# What the batch system says
# ---------------------------------------------------------------------------------
_SLURM_STATES = {"PENDING": PENDING, "CONFIGURING": PENDING, "REQUEUED": PENDING,
                 "RESV_DEL_HOLD": PENDING, "REQUEUE_HOLD": PENDING, "SUSPENDED": PENDING,
                 "RUNNING": RUNNING, "COMPLETING": RUNNING, "STAGE_OUT": RUNNING,
                 "SIGNALING": RUNNING, "RESIZING": RUNNING}


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _sge_state(code: str) -> str:
    # qstat's state letters: E error, r/t running or moving, d deleted, h/q/w waiting
    if "E" in code or "d" in code:
        return ENDED
    if "r" in code or "t" in code or "s" in code.lower():
        return RUNNING
    return PENDING


def queue_jobs(kind: str, name: str | None = None, ids: list[str] | None = None
               ) -> dict[str, str] | None:
    """The batch system's jobs of this user, ``{job id: pending|running|ended}``.

    Only the jobs named ``name`` (dask-jobqueue's job name) or whose ids are ``ids``.
    Slurm (``squeue``) and Grid Engine (``qstat``) are asked; for the other systems,
    or when the command fails, the answer is None (not known). A job the batch
    system no longer lists is not in the answer.

    Parameters
    ----------
    kind : str
        The batch system (``slurm``, ``sge``...).
    name : str, optional
        Only the jobs of this name (all of the user's jobs by default).
    ids : list of str, optional
        Only the jobs of these ids; when given, ``name`` is not looked at.

    Returns
    -------
    dict or None
        ``{job id: "pending" | "running" | "ended"}``, or None when the batch system
        cannot be asked.

    Examples
    --------
    >>> queue_jobs("slurm", name="dask-worker")                         # doctest: +SKIP
    {'4242': 'running', '4243': 'pending'}
    >>> queue_jobs("pbs") is None                                       # not asked
    True
    """
    user = getpass.getuser()
    if kind == "slurm":
        out = _run(["squeue", "-h", "-u", user, "-o", "%i|%j|%T"])
        if out is None:
            return None
        rows = [line.split("|") for line in out.splitlines() if line.count("|") == 2]
        return {i: _SLURM_STATES.get(state, ENDED) for i, j, state in rows
                if (ids is not None and i in ids) or (ids is None and (name is None or j == name))}
    if kind == "sge":
        out = _run(["qstat", "-u", user])
        if out is None:
            return None
        jobs = {}
        for line in out.splitlines()[2:]:  # two header lines
            fields = line.split()
            if len(fields) < 5 or not fields[0].isdigit():
                continue
            job_id, job_name, state = fields[0], fields[2], fields[4]
            # qstat cuts names at 10 characters
            if (ids is not None and job_id in ids) or \
                    (ids is None and (name is None or name.startswith(job_name))):
                jobs[job_id] = _sge_state(state)
        return jobs
    return None


def job_states(cluster: "JobQueueCluster") -> dict[str, str]:
    """The state of each job of ``cluster``, by job id.

    A job whose worker has joined the scheduler is running. For the others the batch
    system is asked where it can be (:func:`queue_jobs`); a job it no longer lists has
    ended. Where it cannot be asked, a job without a worker is pending.

    Parameters
    ----------
    cluster : dask_jobqueue.JobQueueCluster
        A cluster from :func:`jobqueue_cluster`.

    Returns
    -------
    dict
        ``{job id: "pending" | "running" | "ended"}`` for every job submitted.

    Examples
    --------
    >>> cluster = jobqueue_cluster("slurm", parse_jobs("2"))            # doctest: +SKIP
    >>> job_states(cluster)                                             # doctest: +SKIP
    {'4242': 'running', '4243': 'pending'}
    """
    kind = _kind_of(cluster)
    jobs = {name: job for name, job in dict(cluster.workers).items()
            if getattr(job, "job_id", None)}
    joined = {w.get("name") for w in cluster.scheduler_info.get("workers", {}).values()}
    # a job of several processes has workers named "<job name>-<n>"
    def has_worker(name: str) -> bool:
        return name in joined or any(str(j).startswith(f"{name}-") for j in joined)

    waiting = [job.job_id for name, job in jobs.items() if not has_worker(name)]
    listed = queue_jobs(kind, ids=waiting) if waiting else {}
    states = {}
    for name, job in jobs.items():
        if has_worker(name):
            states[job.job_id] = RUNNING
        elif listed is None:
            states[job.job_id] = PENDING
        else:
            states[job.job_id] = listed.get(job.job_id, ENDED)
    return states


def _kind_of(cluster: Any) -> str:
    name = type(cluster).__name__
    return next((k for k, v in JOBQUEUE_CLASSES.items() if v == name), name.lower())


def jobs_summary(cluster: "JobQueueCluster") -> dict[str, Any]:
    """Counts of the cluster's jobs by state, and their ids.

    Parameters
    ----------
    cluster : dask_jobqueue.JobQueueCluster
        A cluster from :func:`jobqueue_cluster`.

    Returns
    -------
    dict
        ``kind`` (the batch system), the ``pending``, ``running`` and ``ended`` job
        counts (:func:`job_states`) and ``ids``, the sorted job ids.

    Examples
    --------
    >>> cluster = jobqueue_cluster("slurm", parse_jobs("2"))            # doctest: +SKIP
    >>> jobs_summary(cluster)                                           # doctest: +SKIP
    {'kind': 'slurm', 'pending': 1, 'running': 1, 'ended': 0, 'ids': ['4242', '4243']}
    """
    states = job_states(cluster)
    counts = {state: sum(1 for s in states.values() if s == state)
              for state in (PENDING, RUNNING, ENDED)}
    return {"kind": _kind_of(cluster), **counts, "ids": sorted(states)}


def wait_for_workers(client: "Client", cluster: "JobQueueCluster", *, poll: float = 2.0,
                     report_every: float = 30.0, timeout: float | None = None) -> None:
    """Wait until a worker of ``cluster`` has joined, saying what the jobs are doing.

    Jobs may wait in the queue for long: this waits as long as one of them is
    pending or running (or ``timeout`` seconds), logging their states every
    ``report_every`` seconds.

    Parameters
    ----------
    client : distributed.Client
        A client of the cluster's scheduler.
    cluster : dask_jobqueue.JobQueueCluster
        The cluster whose jobs are waited for.
    poll : float
        Seconds between two looks at the scheduler and the jobs.
    report_every : float
        Seconds between two log lines on the jobs' states.
    timeout : float, optional
        Give up after this many seconds; by default wait as long as a job may still
        start a worker.

    Raises
    ------
    UserError
        When every job ended before a worker joined (a job script that fails on the
        compute node: a wrong ``python``, a prologue that fails), or on ``timeout``.

    Examples
    --------
    >>> cluster = jobqueue_cluster("slurm", parse_jobs("2"))            # doctest: +SKIP
    >>> with distributed.Client(cluster) as client:                     # doctest: +SKIP
    ...     wait_for_workers(client, cluster, timeout=3600)
    """
    started = last = time.monotonic()
    while not client.scheduler_info(n_workers=-1).get("workers"):
        states = job_states(cluster)
        if states and all(s == ENDED for s in states.values()):
            where = getattr(cluster, "_dummy_job", None)
            logs = getattr(where, "log_directory", None) or "the folder the jobs were submitted from"
            raise UserError(f"--cluster {_kind_of(cluster)}: job(s) "
                            f"{', '.join(sorted(states))} ended before a worker joined the "
                            f"scheduler; their output is in {logs}")
        now = time.monotonic()
        if timeout is not None and now - started > timeout:
            raise UserError(f"--cluster {_kind_of(cluster)}: no worker joined within "
                            f"{timeout:g} s ({_describe(states)})")
        if now - last >= report_every:
            log.info("waiting for a worker: %s", _describe(states))
            last = now
        time.sleep(poll)


def _describe(states: dict[str, str]) -> str:
    if not states:
        return "no job submitted yet"
    return ", ".join(f"job {i} {s}" for i, s in sorted(states.items()))


def job_name(kind: str, cluster_options: dict | None = None) -> str:
    """The name dask-jobqueue gives the jobs of ``kind`` (``dask-worker`` by default)."""
    import dask

    _check_kind(kind)
    return str((cluster_options or {}).get("name")
               or dask.config.get(f"jobqueue.{kind}.name", None) or "dask-worker")

