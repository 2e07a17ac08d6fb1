"""Store: writing and reading the Zarr image array (zstd-compressed 256x256 RGB chunks)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ._data import image_store, sheet_pixels


class StoreSuite:
    """Raw pixel MB/s through :func:`idigdask.store.write_images` and ``open_dataset``."""

    number = 1
    repeat = (1, 5, 10.0)
    warmup_time = 0
    timeout = 600
    n = 512
    size = 256
    chunk_size = 64

    def setup_cache(self) -> str:
        return image_store(self.n, size=self.size, chunk_size=self.chunk_size)

    def setup(self, store: str) -> None:
        base = sheet_pixels(min(self.n, 32), self.size)
        self.pixels = np.concatenate([base] * -(-self.n // len(base)))[:self.n]
        self.read_from = store
        self.tmp = Path(tempfile.mkdtemp(prefix="idigdask-bench-store-"))
        self.runs = 0

    def teardown(self, store: str) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _write(self) -> float:
        from idigdask.store import ImageStore, write_images

        self.runs += 1
        url = str(self.tmp / f"w{self.runs}.zarr")
        target = ImageStore(url)
        target.create(size=self.size, chunk_size=self.chunk_size, label_kind=None, attrs={})
        target.resize(len(self.pixels))
        t0 = time.perf_counter()
        write_images(url, None, 0, self.pixels)
        seconds = time.perf_counter() - t0
        shutil.rmtree(url, ignore_errors=True)
        return seconds

    def _read(self) -> float:
        from idigdask.store import open_dataset

        t0 = time.perf_counter()
        pixels = open_dataset(self.read_from)["images"].values
        seconds = time.perf_counter() - t0
        assert pixels.shape[0] == self.n
        return seconds

    def time_write(self, store: str) -> None:
        self._write()

    def time_read(self, store: str) -> None:
        self._read()

    def peakmem_write(self, store: str) -> None:
        self._write()

    def peakmem_read(self, store: str) -> None:
        self._read()

    def track_write_mb_per_s(self, store: str) -> float:
        return self.pixels.nbytes / 1e6 / self._write()

    track_write_mb_per_s.unit = "MB/s"

    def track_read_mb_per_s(self, store: str) -> float:
        return self.pixels.nbytes / 1e6 / self._read()

    track_read_mb_per_s.unit = "MB/s"
