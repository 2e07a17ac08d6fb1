"""The classical baseline: scikit-image features on the workers, dask-ml classifiers, and
its model folder read by evaluate and predict, beside the CNN's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from idigdask.baseline import FEATURE_NAMES, BaselineModel, features_block, image_features
from idigdask.cli import main
from idigdask.evaluate import evaluate
from idigdask.predict import predict
from idigdask.train import read_model_dir, train


@pytest.fixture(scope="module")
def baseline_model(tiny_store, tmp_path_factory, dask_client):
    """The baseline trained on ``tiny_store`` on the Dask cluster, seed 0 (the CNN's split)."""
    out = tmp_path_factory.mktemp("models") / "baseline"
    result = train(tiny_store, out, model="baseline", seed=0, client=dask_client)
    return out, result


@pytest.fixture(scope="module")
def recordset_store(store_factory, tmp_path_factory):
    """96 images from six recordsets, in recordset order."""
    tmp = tmp_path_factory.mktemp("stores")
    ds = xr.open_zarr(store_factory(tmp / "plain.zarr", n=96), consolidated=False).load()
    ds = ds.assign_coords(recordset=("image", np.array([f"rs-{i // 16}" for i in range(96)],
                                                        dtype=object)))
    ds.to_zarr(str(tmp / "rs.zarr"), mode="w", consolidated=False, zarr_format=3)
    return str(tmp / "rs.zarr")


def test_features_see_dark_blobs_and_take_network_input():
    rng = np.random.default_rng(0)
    paper = rng.integers(225, 240, (64, 64, 3)).astype(np.uint8)
    stained = paper.copy()
    stained[10:18, 10:18] = 50
    stained[40:44, 30:50] = 60
    clean, dirty = image_features(paper), image_features(stained)
    assert clean.shape == (len(FEATURE_NAMES),) and clean.dtype == np.float32
    named = dict(zip(FEATURE_NAMES, dirty))
    assert round(float(np.expm1(named["dark_blobs_log"]))) == 2
    assert named["dark_share"] == pytest.approx((64 + 80) / 64**2)
    assert dict(zip(FEATURE_NAMES, clean))["dark_share"] == 0
    hsv = [n for n in FEATURE_NAMES if n.split("_")[0] in ("hue", "saturation", "value")
           and n.split("_")[1].isdigit()]
    assert sum(named[n] for n in hsv) == pytest.approx(3.0)   # three histograms of shares
    both = np.stack([paper, stained])
    np.testing.assert_array_equal(features_block(both), features_block(both.astype(np.float32)))


def test_baseline_model_folder(baseline_model, trained_model, tiny_store, dask_client, tmp_path):
    out, result = baseline_model
    config = read_model_dir(out)
    assert config["model"] == "baseline" and config["model_file"] == "baseline.npz"
    assert not (out / "model.keras").exists() and result.best_val_accuracy >= 0.8
    # the same specimen-level split as the CNN trained with the same seed
    cnn_dir, _ = trained_model
    assert pd.read_parquet(out / "split.parquet").equals(pd.read_parquet(cnn_dir / "split.parquet"))
    model = BaselineModel.load(out / "baseline.npz")
    assert model.coef.shape == (1, len(FEATURE_NAMES)) and model.classes == [0, 1]

    metrics = evaluate(out, out=tmp_path / "report", client=dask_client)
    assert metrics["accuracy"] >= 0.8 and metrics["model"] == "baseline"
    assert (tmp_path / "report" / "history.png").is_file()

    # on a cluster of its own: the session's workers count the CNN's loads (test_predict)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as own:
        scores = predict(out, tiny_store, out=tmp_path / "p.parquet", client=own)
    test = pd.read_parquet(out / "split.parquet").query("split == 'test'")
    ok = scores.set_index("image_index").loc[test["image_index"]]
    assert (ok["predicted"].to_numpy() == test["label"].to_numpy()).mean() == metrics["accuracy"]
    assert np.allclose(scores[["score_0", "score_1"]].sum(axis=1), 1.0, atol=1e-5)


def test_sgd_classifier_keeps_its_best_epoch(tiny_store, tmp_path):
    result = train(tiny_store, tmp_path / "sgd", model="baseline", classifier="sgd", epochs=3,
                   client=False)
    assert result.history["epoch"] == [1, 2, 3]
    assert result.best_val_loss == min(result.history["val_loss"])
    assert read_model_dir(tmp_path / "sgd")["classifier"] == "sgd"


def test_evaluate_puts_the_baseline_beside_the_cnn(trained_model, baseline_model, tmp_path):
    cnn_dir, _ = trained_model
    base_dir, _ = baseline_model
    metrics = evaluate(cnn_dir, out=tmp_path / "r", compare=[base_dir], client=False)
    other = metrics["compared"]["baseline"]
    assert other["same_test_images"] and other["n"] == metrics["n"]
    assert set(other["by_source_size"]) == {"2000-3999 px"} == set(metrics["by_source_size"])
    assert metrics["by_recordset"]["(none)"]["n"] == metrics["n"]
    for name in ("compare.png", "by_recordset.png", "by_source_size.png", "roc.png"):
        assert (tmp_path / "r" / name).read_bytes()[:4] == b"\x89PNG", name
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["compared"]["baseline"]["accuracy"] == other["accuracy"]


def test_split_by_recordset_trains_on_other_providers(recordset_store, tmp_path, capsys):
    out = tmp_path / "rs"
    assert main(["train", recordset_store, "-o", str(out), "--model", "baseline",
                 "--split-by", "recordset", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    table = pd.read_parquet(out / "split.parquet")
    sides = table.groupby("recordset")["split"].nunique()
    assert (sides == 1).all() and set(table["split"]) == {"train", "val", "test"}
    assert summary["split_counts"]["test"] == int((table["split"] == "test").sum())
    assert main(["evaluate", str(out), "-o", str(tmp_path / "e"), "--json"]) == 0
    per_recordset = json.loads(capsys.readouterr().out)["by_recordset"]
    assert set(per_recordset) == set(table.loc[table["split"] == "test", "recordset"])


def test_split_by_recordset_needs_recordsets(tiny_store, tmp_path, capsys):
    code = main(["train", tiny_store, "-o", str(tmp_path / "x"), "--model", "baseline",
                 "--split-by", "recordset"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no image has a recordset" in err
    code = main(["train", tiny_store, "-o", str(tmp_path / "x"), "--split-by", "institution"])
    assert code == 2 and "--split-by" in capsys.readouterr().err
