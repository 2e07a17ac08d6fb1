"""The benchmark code runs: every asv suite once on tiny data, and compare.py's main.

No assertion on speed: these tests only keep the benchmarks from rotting as the
package changes. Datasets go to a temporary cache folder.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
TINY = (120, 180)


@pytest.fixture(scope="module", autouse=True)
def bench_cache(tmp_path_factory):
    """A cache folder of this module's own, and the suite importable as ``benchmarks``."""
    cache = tmp_path_factory.mktemp("bench-cache")
    old = os.environ.get("IDIGDASK_BENCH_CACHE")
    os.environ["IDIGDASK_BENCH_CACHE"] = str(cache)
    sys.path.insert(0, str(BENCH))
    yield cache
    sys.path.remove(str(BENCH))
    if old is None:
        os.environ.pop("IDIGDASK_BENCH_CACHE", None)
    else:
        os.environ["IDIGDASK_BENCH_CACHE"] = old


def run_once(suite, *params, methods=()):
    """What asv does for one parameter combination: setup_cache, setup, methods, teardown."""
    cached = suite.setup_cache()
    args = (cached, *params)
    suite.setup(*args) if hasattr(suite, "setup") else None
    try:
        return {name: getattr(suite, name)(*args) for name in methods}
    finally:
        suite.teardown(*args) if hasattr(suite, "teardown") else None


def test_catalog_suite_reads_a_guoda_dump():
    from benchmarks.bench_catalog import CatalogSuite

    suite = CatalogSuite()
    suite.rows = 3000
    out = run_once(suite, methods=("time_read_summarize", "track_rows_per_s",
                                   "track_peak_rss_mib"))
    assert out["track_rows_per_s"] > 0
    assert 0 < out["track_peak_rss_mib"] < 4096


def test_guoda_dump_has_the_nested_data_struct():
    import pyarrow.parquet as pq

    from benchmarks._data import guoda_parquet

    schema = pq.read_schema(guoda_parquet(500, row_group=200))
    assert "ac:accessURI" in schema.field("data").type.names
    assert {"accessuri", "uuid", "mediatype", "xpixels"} <= set(schema.names)


def test_fetch_suite_fetches_over_http():
    from benchmarks.bench_fetch import FetchSuite

    suite = FetchSuite()
    suite.counts = {"webview": 3, "fullsize": 2}
    suite.sizes = {"webview": TINY, "fullsize": (300, 450)}
    out = run_once(suite, "fullsize", methods=("time_fetch", "track_mb_per_s"))
    assert out["track_mb_per_s"] > 0


@pytest.mark.parametrize("method", ["reduced", "full"])
def test_decode_suite_decodes(method):
    from benchmarks.bench_decode import DecodeSuite

    suite = DecodeSuite()
    suite.sizes = {"600x900": (TINY, 2)}
    out = run_once(suite, "600x900", method, methods=("time_decode_resize", "track_images_per_s"))
    assert out["track_images_per_s"] > 0


def test_build_suite_builds_a_store():
    from benchmarks.bench_build import BuildSuite

    suite = BuildSuite()
    suite.counts = {"webview": 3}
    suite.sizes = {"webview": TINY}
    suite.size = 32
    suite.processes = False
    out = run_once(suite, "webview", 1, methods=("time_build", "track_images_per_s"))
    assert out["track_images_per_s"] > 0


def test_store_suite_writes_and_reads():
    from benchmarks.bench_store import StoreSuite

    suite = StoreSuite()
    suite.n, suite.size, suite.chunk_size = 8, 32, 4
    out = run_once(suite, methods=("time_write", "time_read", "track_read_mb_per_s"))
    assert out["track_read_mb_per_s"] > 0


def test_feed_suite_feeds_an_epoch():
    pytest.importorskip("keras")
    from benchmarks.bench_feed import FeedSuite

    suite = FeedSuite()
    suite.n, suite.batch_size = 8, 4
    out = run_once(suite, "threads", methods=("time_epoch", "track_batches_per_s"))
    assert out["track_batches_per_s"] > 0


def test_predict_suite_scores_a_store():
    pytest.importorskip("keras")
    from benchmarks.bench_predict import PredictSuite

    suite = PredictSuite()
    suite.n, suite.train_n, suite.input_size, suite.workers = 8, 16, 16, 1
    suite.processes = False
    out = run_once(suite, methods=("time_predict", "track_images_per_s"))
    assert out["track_images_per_s"] > 0


def load_compare():
    spec = importlib.util.spec_from_file_location("idigdask_bench_compare", BENCH / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_compare_runs_and_writes_a_report(tmp_path):
    compare = load_compare()
    out = tmp_path / "compare.md"
    result = compare.main(["--n-full", "2", "--n-web", "4", "--repeat", "1",
                           "--tools", "idigdask,ceiling", "--full-size", "400x600",
                           "--workers", "1", "--no-startup", "--out", str(out)])
    text = out.read_text()
    assert "| idigdask |" in text and "| ceiling |" in text
    for set_name in ("full", "web"):
        for tool in ("idigdask", "ceiling"):
            row = result["summary"][set_name][tool]
            assert "error" not in row, row
            assert row["ok"] == (2 if set_name == "full" else 4)


def test_compare_rejects_an_unknown_tool():
    compare = load_compare()
    with pytest.raises(SystemExit):
        compare.parse_args(["--tools", "idigdask,nope"])


def test_scaling_suites_run_whole_builds():
    from benchmarks.bench_scaling import FlatSuite, PlanSuite, StartupSuite

    startup = StartupSuite()
    assert run_once(startup, methods=("track_one_image_build_s",))["track_one_image_build_s"] > 0
    flat = FlatSuite()
    flat.images, flat.window = 1500, 600  # waves of 256 rows
    out = run_once(flat, methods=("track_time_ratio", "track_rss_ratio"))
    assert out["track_time_ratio"] > 0 and out["track_rss_ratio"] > 0
    plan = PlanSuite()
    plan.rows, plan.runs = 2000, 1
    assert 0 < run_once(plan, methods=("track_first_request_s",))["track_first_request_s"] < 120


def test_feed_ratio_suite_runs():
    from benchmarks.bench_feed import FeedRatioSuite

    suite = FeedRatioSuite()
    suite.n, suite.rounds = 128, 1
    assert run_once(suite, False, methods=("track_feed_over_numpy",))["track_feed_over_numpy"] > 0


def test_sounds_script_and_suites_run(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("idigdask_bench_sounds", BENCH / "sounds.py")
    sounds = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, sounds)  # its dataclasses look it up
    spec.loader.exec_module(sounds)
    out = tmp_path / "sounds.md"
    result = sounds.main(["--n", "6", "--duration", "2", "--repeat", "1", "--no-startup",
                          "--cache", str(tmp_path / "cache"), "--out", str(out)])
    text = out.read_text()
    for tool, label in sounds.labels(result["processes"]).items():
        row = result["rows"][tool]
        assert "error" not in row, row
        assert row["recordings"] == 6 and row["clips"] >= 6 and row["clips_s"] > 0
        assert f"| {label} |" in text
    assert result["ratios"]["librosa"]["wall"] > 0 and f"{result['cores']} cores" in text
    # a tool that fails is a row of the report, not a crash
    failed = {**result, "rows": {**result["rows"], "librosa": sounds.summarize(
        [sounds.ToolRun(1.0, error="exit 1: boom")])}}
    assert "| librosa loop (1 process) | error: exit 1: boom |" in sounds.table(failed)

    from benchmarks.bench_sounds import SoundsRatioSuite, SoundsSuite

    suite = SoundsSuite()
    suite.n, suite.rounds, suite.tools, suite.startup = 3, 1, ("idigdask", "librosa"), False
    cached = suite.setup_cache()  # no setup or teardown: asv calls this, then each track_
    assert suite.track_clips_per_s(cached, "idigdask") > 0
    assert suite.track_clips_per_s(cached, "librosa") > 0
    assert SoundsRatioSuite().track_ratio(cached, "librosa") > 0
