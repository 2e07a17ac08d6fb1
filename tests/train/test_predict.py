"""Prediction on Dask workers, from a store and from a catalog."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from idigdask.cli import main
from idigdask.errors import UserError
from idigdask.batches import normalize_images, open_store
from idigdask.predict import is_store, predict
from idigdask.testing.media_server import MediaServer


def _loads(client) -> dict:
    return client.run(lambda dask_worker: getattr(dask_worker, "idigdask_model_loads", 0))


def _local_scores(model_dir, store):
    import keras

    config = json.loads((model_dir / "config.json").read_text())
    model = keras.saving.load_model(model_dir / "model.keras", safe_mode=True)
    ds = open_store(store)
    x = normalize_images(ds["images"].values, config["normalize"], config["channel_mean"],
                         config["channel_std"])
    return model.predict(x, verbose=0)


def test_predict_store_on_workers_loads_the_model_once_each(trained_model, tiny_store,
                                                          dask_client, tmp_path):
    model_dir, _ = trained_model
    out = tmp_path / "p.parquet"
    before = _loads(dask_client)  # the session's workers may hold other tests' models
    table = predict(model_dir, tiny_store, out=out, client=dask_client, batch_size=8)
    assert len(table) == 64 and (table["status"] == "ok").all()
    assert list(table["media_uuid"]) == list(open_store(tiny_store)["media_uuid"].values)
    scores = table[["score_0", "score_1"]].to_numpy()
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores, _local_scores(model_dir, tiny_store), atol=1e-5)
    assert (table["predicted"].to_numpy() == scores.argmax(1)).all()
    pd.testing.assert_frame_equal(pd.read_parquet(out), table)
    # 8 chunk tasks ran on 2 workers, yet each worker loaded the model at most once;
    # a second call reuses the loaded models (a worker that ran none of the first
    # call's tasks loads it once then)
    predict(model_dir, tiny_store, out=None, client=dask_client, chunks_per_task=2)
    loads = _loads(dask_client)
    assert sum(loads.values()) >= 1
    assert max(loads[w] - before.get(w, 0) for w in loads) <= 1


def test_predict_catalog_agrees_with_store(trained_model, tiny_store, dask_client, tmp_path):
    model_dir, _ = trained_model
    ds = open_store(tiny_store)
    media = [str(m) for m in ds["media_uuid"].values[:12]]
    folder = tmp_path / "media"
    folder.mkdir()
    for i, uuid in enumerate(media):
        Image.fromarray(ds["images"].values[i]).save(folder / f"{uuid}.png")
    with MediaServer(folder) as server:
        rows = [{"id": uuid, "url": server.url_for(f"{uuid}.png")} for uuid in media]
        rows.append({"id": "gone-0000", "url": server.url_for("fault/status/404/x.png")})
        rows.append({"id": "nourl-0000", "url": ""})
        catalog = tmp_path / "catalog.csv"
        pd.DataFrame(rows).to_csv(catalog, index=False)
        table = predict(model_dir, str(catalog), out=tmp_path / "c.parquet",
                        client=dask_client, catalog_options={"id_column": "id"},
                        catalog_batch_size=5)
    by_id = table.set_index("media_uuid")
    assert by_id.loc["gone-0000", "status"] == "failed"
    assert by_id.loc["nourl-0000", "status"] == "excluded"
    assert pd.isna(by_id.loc["gone-0000", "score_0"]) and pd.isna(by_id.loc["gone-0000", "predicted"])
    from_store = predict(model_dir, tiny_store, out=None, client=dask_client).set_index("media_uuid")
    ok = by_id.loc[media]
    assert (ok["status"] == "ok").all()
    np.testing.assert_allclose(ok[["score_0", "score_1"]].to_numpy(),
                               from_store.loc[media, ["score_0", "score_1"]].to_numpy(), atol=1e-5)
    assert (ok["predicted"] == from_store.loc[media, "predicted"]).all()

    # a catalog of several partitions is read a partition at a time, in catalog order
    import dask.dataframe as dd

    from idigdask.catalog import read_catalog

    with MediaServer(folder) as server:
        rows = [{"id": uuid, "url": server.url_for(f"{uuid}.png")} for uuid in media]
        pd.DataFrame(rows).to_csv(catalog, index=False)
        frame = read_catalog(str(catalog), id_column="id").compute()
        parts = dd.from_pandas(frame, npartitions=3)
        assert parts.npartitions == 3
        table = predict(model_dir, parts, out=None, client=dask_client, catalog_batch_size=3)
    assert table["media_uuid"].tolist() == media and (table["status"] == "ok").all()
    np.testing.assert_allclose(table[["score_0", "score_1"]].to_numpy(),
                               from_store.loc[media, ["score_0", "score_1"]].to_numpy(), atol=1e-5)


def test_cli_predict_uses_the_current_client(trained_model, tiny_store, dask_client,
                                             tmp_path, capsys):
    model_dir, _ = trained_model
    out = tmp_path / "cli.parquet"
    assert main(["predict", str(model_dir), tiny_store, "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 64 and summary["status"] == {"ok": 64}
    assert len(pd.read_parquet(out)) == 64


def test_source_detection(tiny_store, tmp_path):
    assert is_store(tiny_store) and is_store(open_store(tiny_store))
    (tmp_path / "c.csv").write_text("url\nhttp://127.0.0.1/x.jpg\n")
    assert not is_store(str(tmp_path / "c.csv")) and not is_store(str(tmp_path / "none.zarr"))


def test_predict_needs_a_model_folder(tmp_path, tiny_store, capsys):
    with pytest.raises(UserError, match="not a model folder"):
        predict(tmp_path, tiny_store)
    assert main(["predict", str(tmp_path), tiny_store]) == 2
    assert capsys.readouterr().err.count("\n") == 1
