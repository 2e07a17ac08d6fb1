"""Decode and resize: reduced-scale JPEG decode against a full decode, per image size."""

from __future__ import annotations

import io
import time

from ._data import sheet_set

#: Image sizes (width x height) and how many distinct images of each are decoded per call.
SIZES = {"600x900": ((600, 900), 32), "2000x3000": ((2000, 3000), 6),
         "4000x6000": ((4000, 6000), 2)}
#: Output side, as in a build.
OUTPUT = 256


def full_decode_resize(data: bytes, size: int = OUTPUT):
    """The usual way: decode every pixel with Pillow, then resize (the same resize)."""
    from PIL import Image

    from idigdask.decode import resize

    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
    return resize(rgb, size, "pad")


def reduced_decode_resize(data: bytes, size: int = OUTPUT):
    """idigdask's way: decode at the smallest DCT scale that covers ``size``, then resize."""
    from idigdask.decode import decode_image

    return decode_image(data, size, resize_mode="pad").pixels


METHODS = {"reduced": reduced_decode_resize, "full": full_decode_resize}


class DecodeSuite:
    """One image's bytes in memory to a 256x256 padded RGB array, on one core."""

    params = (list(SIZES), list(METHODS))
    param_names = ["image_size", "method"]
    number = 1
    repeat = (1, 5, 10.0)
    warmup_time = 0
    timeout = 900
    sizes = SIZES

    def setup_cache(self) -> dict:
        return {name: sheet_set(n, size, seed=11).folder for name, (size, n) in self.sizes.items()}

    def setup(self, cached: dict, image_size: str, method: str) -> None:
        size, n = self.sizes[image_size]
        sheets = sheet_set(n, size, seed=11)
        self.blobs = sheets.read_bytes()
        self.nbytes = sheets.nbytes
        self.decode = METHODS[method]
        self.decode(self.blobs[0])  # imports and first-call set-up are not measured

    def _run(self) -> float:
        t0 = time.perf_counter()
        for data in self.blobs:
            self.decode(data)
        return time.perf_counter() - t0

    def time_decode_resize(self, cached: dict, image_size: str, method: str) -> None:
        self._run()

    def peakmem_decode_resize(self, cached: dict, image_size: str, method: str) -> None:
        self._run()

    def track_images_per_s(self, cached: dict, image_size: str, method: str) -> float:
        return len(self.blobs) / self._run()

    track_images_per_s.unit = "images/s"

    def track_mb_per_s(self, cached: dict, image_size: str, method: str) -> float:
        return self.nbytes / 1e6 / self._run()

    track_mb_per_s.unit = "MB/s"
