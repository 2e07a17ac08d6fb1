"""Training: the model folder, resume, labels as names, and user mistakes."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from idigdask.cli import main
from idigdask.errors import UserError
from idigdask.train import read_model_dir, train


def test_train_writes_a_model_folder(trained_model, tiny_store):
    out, result = trained_model
    for name in ("model.keras", "config.json", "split.parquet", "history.json", "history.csv",
                 "checkpoints/last.keras", "checkpoints/best.keras", "checkpoints/state.json"):
        assert (out / name).is_file(), name
    assert result.epochs == 2 and result.classes == [0, 1]
    assert 1 <= result.best_epoch <= 2
    config = read_model_dir(out)
    assert config["label"] == "label" and config["classes"] == [0, 1]
    assert config["store"] == tiny_store and config["size"] == 32
    assert config["normalize"] == "store" and len(config["channel_mean"]) == 3
    assert config["versions"]["keras_backend"] == "tensorflow"
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2] and len(history["val_loss"]) == 2
    assert len(pd.read_csv(out / "history.csv")) == 2
    split = pd.read_parquet(out / "split.parquet")
    assert list(split.columns[:4]) == ["media_uuid", "record_uuid", "label", "split"]
    assert len(split) == 60  # the 4 unlabelled images are left out
    specimens = split[split["record_uuid"] != ""].groupby("record_uuid")["split"].nunique()
    assert (specimens == 1).all()
    assert set(split["split"]) == {"train", "val", "test"}
    assert result.split_counts == split["split"].value_counts().to_dict()


def test_resume_continues_at_the_next_epoch(trained_model, tmp_path, dask_client):
    out, _ = trained_model
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    before = pd.read_parquet(copy / "split.parquet")
    result = train(json.loads((copy / "config.json").read_text())["store"], epochs=3,
                   batch_size=16, out=copy, resume=True, client=dask_client, verbose=0)
    assert result.epochs == 3
    history = json.loads((copy / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3]
    pd.testing.assert_frame_equal(pd.read_parquet(copy / "split.parquet"), before)
    state = json.loads((copy / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == 3


def test_resume_without_checkpoint_is_a_user_error(tiny_store, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        train(tiny_store, out=tmp_path / "none", resume=True, client=False, verbose=0)


def test_cli_trains_on_named_labels(str_store, tmp_path, capsys):
    code = main(["train", str_store, "-o", str(tmp_path / "fam"), "--epochs", "1",
                 "--batch-size", "16", "--quiet", "--json", "--patience", "0"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == ["Lycopodiaceae", "Selaginellaceae"]
    assert summary["epochs"] == 1
    split = pd.read_parquet(tmp_path / "fam" / "split.parquet")
    assert "" not in set(split["label"])


def test_store_without_labels(unlabelled_store, tmp_path):
    with pytest.raises(UserError, match="no label column 'label'"):
        train(unlabelled_store, out=tmp_path / "m", client=False, verbose=0)


def test_unknown_label_column(tiny_store, tmp_path, capsys):
    with pytest.raises(UserError, match="'family'"):
        train(tiny_store, label="family", out=tmp_path / "m", client=False, verbose=0)
    code = main(["train", tiny_store, "-o", str(tmp_path / "m"), "--label", "family"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "'family'" in err


def test_single_class_is_a_user_error(tmp_path, store_factory):
    store = store_factory(tmp_path / "one.zarr", labels="single", n=16)
    with pytest.raises(UserError, match="at least two"):
        train(store, out=tmp_path / "m", client=False, verbose=0)
