"""Fetch: images/s and MB/s from a loopback media server, webview and full-size sheets."""

from __future__ import annotations

import time

from ._data import FULL_SIZE, WEB_SIZE, ServedFolder, sheet_set

#: Images fetched per call, per kind: enough to fill the requests in flight.
COUNTS = {"webview": 128, "fullsize": 16}
SIZES = {"webview": WEB_SIZE, "fullsize": FULL_SIZE}


class FetchSuite:
    """``fetch_many`` over HTTP/1.1 keep-alive from a :class:`MediaServer` on 127.0.0.1."""

    params = (["webview", "fullsize"],)
    param_names = ["images"]
    number = 1
    repeat = (1, 5, 10.0)
    warmup_time = 0
    timeout = 900
    counts = COUNTS
    sizes = SIZES

    def setup_cache(self) -> dict:
        return {kind: sheet_set(n, self.sizes[kind]).folder for kind, n in self.counts.items()}

    def setup(self, cached: dict, kind: str) -> None:
        from idigdask.fetch import FetchOptions, fetch_many

        sheets = sheet_set(self.counts[kind], self.sizes[kind])
        self.server = ServedFolder(cached[kind])
        self.urls = [self.server.url_for(p) for p in sheets.paths]
        self.nbytes = sheets.nbytes
        self.options = FetchOptions(timeout=60, retries=0, allow_private=True)  # on 127.0.0.1
        fetch_many(self.urls[:1], self.options)  # start fsspec's IO loop before timing

    def teardown(self, cached: dict, kind: str) -> None:
        self.server.close()

    def _fetch(self) -> float:
        from idigdask.fetch import fetch_many

        t0 = time.perf_counter()
        results = fetch_many(self.urls, self.options)
        seconds = time.perf_counter() - t0
        failed = [r.reason for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} fetches failed: {sorted(set(failed))}")
        return seconds

    def time_fetch(self, cached: dict, kind: str) -> None:
        self._fetch()

    def peakmem_fetch(self, cached: dict, kind: str) -> None:
        self._fetch()

    def track_images_per_s(self, cached: dict, kind: str) -> float:
        return len(self.urls) / self._fetch()

    track_images_per_s.unit = "images/s"

    def track_mb_per_s(self, cached: dict, kind: str) -> float:
        return self.nbytes / 1e6 / self._fetch()

    track_mb_per_s.unit = "MB/s"
