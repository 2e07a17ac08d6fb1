"""Evaluation: NumPy metrics against hand-worked values, and the report folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from idigdask.cli import main
from idigdask.errors import UserError
from idigdask.evaluate import (classification_metrics, confusion_matrix, evaluate, roc_auc,
                               roc_curve)


def test_confusion_and_scores_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    scores = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1],
                       [.1, .8, .1], [.5, .4, .1], [.1, .1, .8]])
    m = classification_metrics(y_true, scores, ["a", "b", "c"])
    assert m["confusion_matrix"]["matrix"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1 / 2)
    assert m["per_class"]["c"]["f1"] == pytest.approx(1.0)
    assert m["macro"]["f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert 0 <= m["roc_auc"] <= 1
    assert confusion_matrix([1], [0], 2).tolist() == [[0, 0], [1, 0]]


def test_roc_auc_with_ties_and_curve():
    positive = np.array([1, 1, 0, 0, 1, 0], bool)
    score = np.array([.9, .5, .5, .1, .8, .3])
    # Pairs (pos, neg): 9 in all; ties count one half: (0.5, 0.5) -> 8.5 / 9.
    assert roc_auc(positive, score) == pytest.approx(8.5 / 9)
    fpr, tpr = roc_curve(positive, score)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(8.5 / 9)
    assert np.isnan(roc_auc(np.ones(3, bool), score[:3]))


def test_evaluate_writes_metrics_and_plots(trained_model, tmp_path):
    model_dir, _ = trained_model
    report = tmp_path / "report"
    metrics = evaluate(model_dir, out=report, client=False)
    saved = json.loads((report / "metrics.json").read_text())
    assert saved["n"] == metrics["n"] > 0
    assert 0 <= saved["accuracy"] <= 1
    assert set(saved["per_class"]) == {"0", "1"}
    assert sum(map(sum, saved["confusion_matrix"]["matrix"])) == saved["n"]
    assert saved["worst"] and saved["worst"][0]["score_true"] <= saved["worst"][-1]["score_true"]
    for name in ("history.png", "confusion.png", "roc.png", "worst.png"):
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, name
    # Only held-out specimens are scored.
    import pandas as pd

    split = pd.read_parquet(model_dir / "split.parquet")
    test_media = set(split.loc[split["split"] == "test", "media_uuid"])
    assert {w["media_uuid"] for w in saved["worst"]} <= test_media


def test_cli_evaluate(trained_model, tiny_store, tmp_path, capsys):
    model_dir, _ = trained_model
    code = main(["evaluate", str(model_dir), tiny_store, "-o", str(tmp_path / "r"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert (tmp_path / "r" / "metrics.json").is_file() and "accuracy" in summary


def test_not_a_model_folder(tmp_path, tiny_store, capsys):
    with pytest.raises(UserError, match="not a model folder"):
        evaluate(tmp_path, tiny_store)
    code = main(["evaluate", str(tmp_path), tiny_store])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a model folder" in err
