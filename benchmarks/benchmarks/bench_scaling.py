"""Start-up, cost per image with scale, and how soon a big build starts: whole processes.

Each figure runs ``idigdask build`` as a subprocess, as a user runs it
(``benchmarks/scaling.py`` holds the measurements; this file gives them to asv).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._data import cache_root

BENCH = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _scaling():
    sys.path.insert(0, str(BENCH))
    import scaling

    return scaling


class StartupSuite:
    """A one-image build (a local 600x900 JPEG) from start to exit (target <= 1.2 s)."""

    number = 1
    repeat = (3, 10, 60.0)
    warmup_time = 0
    timeout = 300

    def setup_cache(self) -> str:
        import numpy as np
        import simplejpeg

        folder = cache_root() / "startup"
        folder.mkdir(parents=True, exist_ok=True)
        image, table = folder / "one.jpg", folder / "one.csv"
        if not table.exists():
            rng = np.random.default_rng(5)
            pixels = rng.integers(0, 256, (900, 600, 3), dtype=np.uint8)
            image.write_bytes(simplejpeg.encode_jpeg(pixels, quality=90))
            table.write_text(f"url\n{image}\n")
        return str(table)

    def _build(self, table: str) -> float:
        out = Path(tempfile.mkdtemp(prefix="idigdask-startup-"))
        try:
            t0 = time.perf_counter()
            subprocess.run([str(BIN / "idigdask"), "build", table, "-o", str(out / "s.zarr"),
                            "--url-column", "url", "--no-progress", "--json"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.perf_counter() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def time_one_image_build(self, table: str) -> None:
        self._build(table)

    def track_one_image_build_s(self, table: str) -> float:
        return self._build(table)

    track_one_image_build_s.unit = "s"


class FlatSuite:
    """Cost per image from the first to the last window of a build of tiny local images:
    the ratio of their seconds (target <= 1.1) and of the build process's RSS (<= 1.15).
    """

    number = 1
    repeat = 1
    warmup_time = 0
    timeout = 3600
    images = 100_000
    window = 10_000

    def setup_cache(self) -> dict:
        scaling = _scaling()
        args = argparse.Namespace(images=self.images, window=self.window, size=32,
                                  cache=str(cache_root()))
        return scaling.run_flat(args)

    def track_time_ratio(self, result: dict) -> float:
        return result["time_ratio"]

    track_time_ratio.unit = "ratio"

    def track_rss_ratio(self, result: dict) -> float:
        return result["rss_ratio"]

    track_rss_ratio.unit = "ratio"

    def track_images_per_s(self, result: dict) -> float:
        return result["images"] / result["wall_s"]

    track_images_per_s.unit = "images/s"


class PlanSuite:
    """Seconds from the start of a build over a GUODA-schema dump of ``rows`` rows to its
    first media request (target <= 10 s for 1,000,000 rows)."""

    number = 1
    repeat = 1
    warmup_time = 0
    timeout = 900
    rows = 1_000_000
    runs = 3

    def setup_cache(self) -> dict:
        scaling = _scaling()
        args = argparse.Namespace(rows=self.rows, repeat=self.runs, port=0,
                                  cache=str(cache_root()))
        return scaling.run_plan(args)

    def track_first_request_s(self, result: dict) -> float:
        return result["median_s"]

    track_first_request_s.unit = "s"
