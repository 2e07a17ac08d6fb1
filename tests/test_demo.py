"""The main job and the worked examples run end to end (small sizes; speed not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_writes_a_report(tmp_path):
    done = subprocess.run(
        [str(BIN / "idigdask"), "demo", "-o", str(tmp_path / "demo"), "-n", "40",
         "--epochs", "1", "--size", "64", "--sheet-size", "400x600", "--workers", "2",
         "--json"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    report = Path(summary["report"])
    assert summary["images"] == 40
    assert 0.0 <= summary["accuracy"] <= 1.0
    for name in ("index.html", "metrics.json", "summary.json"):
        assert (report / name).is_file(), name
    assert len(list(report.glob("*.png"))) >= 3
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["accuracy"] == summary["accuracy"]
    assert "[demo] 9/9" in done.stderr
    # the baseline beside the CNN, on the same test images
    baseline = metrics["compared"]["baseline"]
    assert baseline["same_test_images"] and baseline["accuracy"] == summary["baseline_accuracy"]
    # the metrics per recordset: the demo deals its sheets to four synthetic herbaria
    assert set(metrics["by_recordset"]) <= {f"synthetic-herbarium-{i}" for i in range(1, 5)}
    for name in ("compare.png", "by_recordset.png", "by_source_size.png"):
        assert (report / name).is_file(), name
    # the data-quality page, linked from the index
    quality = json.loads((report / "quality" / "quality.json").read_text())
    assert quality["rows"] == 40 and quality["n_recordsets"] == 4
    assert (report / "quality" / "index.html").is_file()
    assert "quality/index.html" in (report / "index.html").read_text()
    # where the CNN looks, and the three-family task from specimen records
    assert (report / "stain-maps.png").is_file() or summary["stain_regions"] == 0
    assert Path(summary["stain_maps"], "regions.parquet").is_file()
    assert sorted(summary["family_classes"]) == ["Asteraceae", "Dryopteridaceae", "Lycopodiaceae"]
    assert 0.0 <= summary["family_accuracy"] <= 1.0
    assert (report / "families" / "confusion.png").is_file()


@pytest.mark.slow
def test_sound_demo_tells_the_calls_apart(tmp_path):
    """The sound demo as a user runs it, with its defaults: held-out recordings >= 0.9."""
    done = subprocess.run([str(BIN / "idigdask"), "demo", "--media", "sounds",
                           "-o", str(tmp_path / "demo"), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    report = Path(summary["report"])
    assert summary["recording_accuracy"] >= 0.9, summary
    assert summary["recording_n"] >= 30
    # the broken files are ledgered with their reasons, not lost
    assert summary["failed"] == {"not_audio": 1, "empty": 1, "silent": 1,
                                 "bad_sample_rate": 1, "not_found": 1}
    assert summary["predicted_recordings"] == summary["recordings"]
    for name in ("index.html", "metrics.json", "spectrograms.png", "confusion.png",
                 "worst.png", "history.png", "predictions.parquet"):
        assert (report / name).is_file(), name
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["recordings"]["accuracy"] == summary["recording_accuracy"]
    assert set(metrics["per_class"]) == {"trill", "whistle"}
    assert "[demo] 5/5" in done.stderr


def test_demo_rejects_bad_options(tmp_path):
    for argv in (["-n", "3"], ["--sheet-size", "huge"], ["--epochs", "0"],
                 ["--media", "sounds", "-n", "5"], ["--media", "sounds", "--epochs", "0"]):
        done = subprocess.run([str(BIN / "idigdask"), "demo", "-o", str(tmp_path), *argv],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1


def test_faulty_server_example_accounts_for_every_row():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "faulty_server.py")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "http_404" in done.stdout and "not_an_image" in done.stdout
    assert "'rows': 6" in done.stdout
