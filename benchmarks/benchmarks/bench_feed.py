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


def numpy_epoch(store: str, batch_size: int) -> int:
    """The same store read chunk by chunk with zarr, each batch normalized with numpy:
    what a hand-written loop over the array gives; returns the images read."""
    import numpy as np
    import zarr

    group = zarr.open_group(store, mode="r")
    arr = group["images"]
    mean = np.asarray(group.attrs["channel_mean"], np.float32)
    std = np.asarray(group.attrs["channel_std"], np.float32)
    chunk, n, seen = arr.chunks[0], arr.shape[0], 0
    for start in range(0, n, chunk):
        block = arr[start:start + chunk]
        for i in range(0, len(block), batch_size):
            batch = (block[i:i + batch_size].astype(np.float32) - mean) / std
            seen += len(batch)
    return seen


class FeedRatioSuite:
    """The feed (threads, shuffled, normalized, augmented or not) against
    :func:`numpy_epoch` over the same store, alternated in one run: the ratio of images/s
    (target >= 0.8)."""

    params = ([False, True],)
    param_names = ["augment"]
    number = 1
    repeat = 1
    warmup_time = 0
    timeout = 900
    n = 2048
    batch_size = 32
    rounds = 3

    def setup_cache(self) -> str:
        return image_store(self.n)

    def setup(self, store: str, augment: bool) -> None:
        from idigdask.loaders.keras import StoreFeed

        self.feed = StoreFeed(store, batch_size=self.batch_size, shuffle=True,
                              normalize="store", augment=augment, client=None, prefetch=4)

    def teardown(self, store: str, augment: bool) -> None:
        self.feed.close()

    def _feed_rate(self) -> float:
        exec(FRESH_CHUNK_CACHE, {})
        t0 = time.perf_counter()
        images = sum(len(self.feed[i][0]) for i in range(len(self.feed)))
        rate = images / (time.perf_counter() - t0)
        self.feed.on_epoch_end()
        return rate

    def _numpy_rate(self, store: str) -> float:
        t0 = time.perf_counter()
        return numpy_epoch(store, self.batch_size) / (time.perf_counter() - t0)

    def track_feed_over_numpy(self, store: str, augment: bool) -> float:
        import statistics

        feed, plain = [], []
        for _ in range(self.rounds):
            feed.append(self._feed_rate())
            plain.append(self._numpy_rate(store))
        return statistics.median(feed) / statistics.median(plain)

    track_feed_over_numpy.unit = "ratio"
