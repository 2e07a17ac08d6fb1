"""Build end to end: catalog of URLs -> fetch -> decode -> Zarr store, per worker count."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from ._data import (FULL_SIZE, WEB_SIZE, PeakTreeRSS, ServedFolder, sheet_set, start_cluster,
                    write_url_csv)

COUNTS = {"webview": 128, "fullsize": 16}
SIZES = {"webview": WEB_SIZE, "fullsize": FULL_SIZE}


class BuildSuite:
    """``build_dataset`` on a LocalCluster of 1 or 2 single-threaded workers.

    The cluster is started in ``setup`` (not timed); every call builds a new store.
    """

    params = (["webview", "fullsize"], [1, 2])
    param_names = ["images", "workers"]
    number = 1
    repeat = (1, 3, 20.0)
    warmup_time = 0
    #: Worker processes (False: threads in this process, for quick checks).
    processes = True
    timeout = 900
    counts = COUNTS
    sizes = SIZES
    size = 256

    def setup_cache(self) -> dict:
        return {kind: sheet_set(n, self.sizes[kind]).folder for kind, n in self.counts.items()}

    def setup(self, cached: dict, kind: str, workers: int) -> None:
        sheets = sheet_set(self.counts[kind], self.sizes[kind])
        self.nbytes = sheets.nbytes
        self.tmp = Path(tempfile.mkdtemp(prefix="idigdask-bench-build-"))
        self.server = ServedFolder(cached[kind])
        self.csv = write_url_csv(self.tmp / "urls.csv",
                                 [self.server.url_for(p) for p in sheets.paths])
        self.n = len(sheets.paths)
        self.cluster, self.client = start_cluster(workers, self.processes)
        self.runs = 0
        # workers import the decode and fetch stack on their first task: not measured
        warm = write_url_csv(self.tmp / "warm.csv", [self.server.url_for(sheets.paths[0])])
        self._build(warm, expect=1)

    def teardown(self, cached: dict, kind: str, workers: int) -> None:
        self.client.close()
        self.cluster.close()
        self.server.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _build(self, csv: str | None = None, expect: int | None = None) -> float:
        from idigdask.build import build_dataset

        csv, expect = csv or self.csv, expect or self.n
        self.runs += 1
        store = self.tmp / f"run-{self.runs}.zarr"
        t0 = time.perf_counter()
        result = build_dataset(csv, str(store), size=self.size, client=self.client,
                               progress=False, catalog_options={"url_column": "url"},
                               allow_private=True)  # the media server is on 127.0.0.1
        seconds = time.perf_counter() - t0
        shutil.rmtree(store, ignore_errors=True)
        status = result.counts["status"]
        if status["ok"] + status["duplicate"] != expect:  # near-duplicates are decoded too
            raise RuntimeError(f"{status['ok']} of {expect} images stored: {result.counts}")
        return seconds

    def time_build(self, cached: dict, kind: str, workers: int) -> None:
        self._build()

    def peakmem_build(self, cached: dict, kind: str, workers: int) -> None:
        """Peak RSS of the driving process only (workers are processes of their own)."""
        self._build()

    def track_images_per_s(self, cached: dict, kind: str, workers: int) -> float:
        return self.n / self._build()

    track_images_per_s.unit = "images/s"

    def track_peak_tree_rss_mib(self, cached: dict, kind: str, workers: int) -> float:
        """Peak summed RSS of the driver, the scheduler and the workers during a build."""
        with PeakTreeRSS() as peak:
            self._build()
        return peak.peak / 2**20

    track_peak_tree_rss_mib.unit = "MiB"
