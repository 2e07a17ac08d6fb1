"""Feed: batches/s of :class:`idigdask.loaders.keras.StoreFeed` over a local store, with and
without a Dask client."""

from __future__ import annotations

import os
import time

from ._data import image_store, start_cluster

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


#: Empties a process's chunk cache, so that every epoch reads the store again. The feed
#: keeps decompressed chunks of a few windows; a store as small as this benchmark's
#: would otherwise be served from memory after the first epoch, which is not what
#: training on a real (larger than the cache) store sees. Source text, so that Dask
#: workers, which cannot import this module, can run it too.
FRESH_CHUNK_CACHE = ("from idigdask import batches\n"
                     "batches._CHUNKS = batches._ChunkCache(batches.CHUNK_CACHE_BYTES)\n")


class FeedSuite:
    """One epoch of shuffled, normalized ``float32`` batches of 32 images of 256x256."""

    params = (["threads", "dask"],)
    param_names = ["reader"]
    number = 1
    repeat = (1, 5, 10.0)
    warmup_time = 0
    #: Worker processes (False: threads in this process, for quick checks).
    processes = True
    timeout = 600
    n = 512
    batch_size = 32
    workers = 2

    def setup_cache(self) -> str:
        return image_store(self.n)

    def setup(self, store: str, reader: str) -> None:
        from idigdask.loaders.keras import StoreFeed

        self.client = self.cluster = None
        if reader == "dask":
            self.cluster, self.client = start_cluster(self.workers, self.processes)
        self.feed = StoreFeed(store, batch_size=self.batch_size, shuffle=True,
                              normalize="store", client=self.client, prefetch=4)

    def teardown(self, store: str, reader: str) -> None:
        self.feed.close()
        if self.client is not None:
            self.client.close()
            self.cluster.close()

    def _epoch(self) -> float:
        exec(FRESH_CHUNK_CACHE, {})
        if self.client is not None:
            self.client.run(exec, FRESH_CHUNK_CACHE, {})
        t0 = time.perf_counter()
        for i in range(len(self.feed)):
            self.feed[i]
        seconds = time.perf_counter() - t0
        self.feed.on_epoch_end()
        return seconds

    def time_epoch(self, store: str, reader: str) -> None:
        self._epoch()

    def peakmem_epoch(self, store: str, reader: str) -> None:
        self._epoch()

    def track_batches_per_s(self, store: str, reader: str) -> float:
        return len(self.feed) / self._epoch()

    track_batches_per_s.unit = "batches/s"

    def track_images_per_s(self, store: str, reader: str) -> float:
        return self.n / self._epoch()

    track_images_per_s.unit = "images/s"
