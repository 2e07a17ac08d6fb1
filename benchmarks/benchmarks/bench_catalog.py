"""Catalog: reading a GUODA media dump of a million rows, lazily, in bounded memory."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

from ._data import guoda_parquet

#: Rows of the GUODA-schema parquet read by every benchmark here.
ROWS = 1_000_000

_CHILD = """
import json, sys, time
from idigdask.catalog import read_catalog, summarize
t0 = time.perf_counter()
summary = summarize(read_catalog(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": summary["rows"]}))
"""


def measure_in_subprocess(path: str) -> dict:
    """Read and summarize ``path`` in a fresh interpreter; its time, rows and peak RSS.

    The peak comes from ``getrusage(RUSAGE_CHILDREN)`` after the child is reaped: the
    largest resident set of any child of this process so far, which is this child
    when it is the first (each asv benchmark runs in a process of its own).
    """
    done = subprocess.run([sys.executable, "-c", _CHILD, path], check=True,
                          capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


class CatalogSuite:
    """``summarize(read_catalog(parquet))`` over a GUODA dump: every row is read once."""

    number = 1
    repeat = 1
    rounds = 1
    warmup_time = 0
    timeout = 900
    rows = ROWS

    def setup_cache(self) -> dict:
        path = guoda_parquet(self.rows)
        return {"path": path, **measure_in_subprocess(path)}

    def time_read_summarize(self, cached: dict) -> None:
        from idigdask.catalog import read_catalog, summarize

        summarize(read_catalog(cached["path"]))

    def peakmem_read_summarize(self, cached: dict) -> None:
        from idigdask.catalog import read_catalog, summarize

        summarize(read_catalog(cached["path"]))

    def track_rows_per_s(self, cached: dict) -> float:
        return cached["rows"] / cached["seconds"]

    track_rows_per_s.unit = "rows/s"

    def track_peak_rss_mib(self, cached: dict) -> float:
        """Peak RSS of a fresh process that reads the whole catalog (target: < 1024)."""
        return cached["peak_rss_mib"]

    track_peak_rss_mib.unit = "MiB"

