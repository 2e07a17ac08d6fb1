"""The sound build against a plain librosa loop: whole processes on the same recordings.

Each figure runs ``idigdask build --media sounds`` and the librosa loop of
``benchmarks/sounds.py`` (which holds the measurement; this file gives it to asv) as
subprocesses, as a user runs them, alternated over ``rounds`` rounds in ``setup_cache``;
the ``track_`` methods read the medians. Both classes share that one measurement
(asv keys a cache by its ``setup_cache`` function).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._data import cache_root

BENCH = Path(__file__).resolve().parents[1]


def _sounds():
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import sounds

    return sounds


class _Measured:
    """Writes (or reuses) ``n`` recordings and times every tool on them, round-robin."""

    number = 1
    repeat = 1
    warmup_time = 0
    timeout = 900
    #: Recordings of about 6 s, rounds of the round-robin, tools and start-up runs.
    n = 40
    rounds = 3
    tools = ("idigdask", "librosa", "librosa-pool")
    startup = True

    def setup_cache(self) -> dict:
        sounds = _sounds()
        return sounds.compare(self.n, repeat=self.rounds, tools=self.tools, cache=cache_root(),
                              startup=self.startup, log=lambda line: None)


def _row(result: dict, tool: str) -> dict:
    row = result["rows"][tool]
    if "error" in row:
        raise RuntimeError(f"{tool} failed: {row['error']}")
    return row


class SoundsSuite(_Measured):
    """Clips/s of each tool over the whole process (start-up included), and once running."""

    params = (["idigdask", "librosa", "librosa-pool"],)
    param_names = ["tool"]

    def track_clips_per_s(self, result: dict, tool: str) -> float:
        return _row(result, tool)["clips_s"]

    track_clips_per_s.unit = "clips/s"

    def track_steady_clips_per_s(self, result: dict, tool: str) -> float:
        """(clips - clips of one recording) / (wall - wall of one recording)."""
        steady = _row(result, tool)["steady_clips_s"]
        return float("nan") if steady is None else steady

    track_steady_clips_per_s.unit = "clips/s"

    def track_startup_s(self, result: dict, tool: str) -> float:
        """Wall time of the tool on one recording."""
        startup = _row(result, tool)["startup_s"]
        return float("nan") if startup is None else startup

    track_startup_s.unit = "s"

    def track_peak_tree_rss_mib(self, result: dict, tool: str) -> float:
        return _row(result, tool)["peak_mib"]

    track_peak_tree_rss_mib.unit = "MiB"


class SoundsRatioSuite(_Measured):
    """idigdask's clips/s ÷ the librosa loop's (one process; a Pool of all cores)."""

    params = (["librosa", "librosa-pool"],)
    param_names = ["against"]

    def track_ratio(self, result: dict, against: str) -> float:
        _row(result, "idigdask"), _row(result, against)
        return result["ratios"][against]["wall"]

    track_ratio.unit = "ratio"

    def track_steady_ratio(self, result: dict, against: str) -> float:
        _row(result, "idigdask"), _row(result, against)
        steady = result["ratios"][against]["steady"]
        return float("nan") if steady is None else steady

    track_steady_ratio.unit = "ratio"
