"""Stain maps (Grad-CAM) on a real cluster, checked against the synthetic sheets' ground truth.

A smithsonian network is trained on synthetic sheets (half stained) through the real
route (GUODA catalog, labels, a 64 px store built by Dask), then explains held-out
sheets of another seed whose stain masks the generator wrote. Localization is
measured as the pointing game (the heatmap's maximum inside a true stain) and the IoU
of the Otsu-thresholded map with the mask, at the store's resolution.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

pytest.importorskip("keras")
pytest.importorskip("skimage")

from idigdask.decode import resize  # noqa: E402
from idigdask.explain import (REGION_COLUMNS, SheetGeometry, explain,  # noqa: E402
                              heatmap_regions, overlay)
from idigdask.synthetic import read_mask  # noqa: E402

SIZE = 64
SHEET = (200, 300)
#: Measured over runs of this fixture (pointing 0.87-0.97, IoU 0.37-0.43 on 30
#: held-out stained sheets, a random point hitting a stain 8% of the time): the
#: bounds leave room for the noise of a six-epoch training.
MIN_POINTING = 0.75
MIN_IOU = 0.25


def _store(folder, sheets, *, client, label: str = "stained", labels=None) -> str:
    import idigdask

    catalog = idigdask.read_catalog(sheets.catalog)
    catalog = idigdask.attach_labels(catalog, labels or sheets.labels, on="record_uuid",
                                     label=label)
    store = str(folder / "store.zarr")
    idigdask.build_dataset(catalog, store, size=SIZE, progress=False, client=client)
    return store


@pytest.fixture(scope="module")
def stain_task(tmp_path_factory, dask_client):
    """A stain model trained on 200 sheets, and a held-out store of 60 sheets with masks."""
    import idigdask
    from idigdask.synthetic import make_sheets

    root = tmp_path_factory.mktemp("stain-task")
    train_sheets = make_sheets(root / "train", n=200, size=SHEET, seed=21)
    store = _store(root / "train", train_sheets, client=dask_client)
    model = root / "model"
    idigdask.train(store, str(model), epochs=6, batch_size=32, learning_rate=1e-3,
                   bn_momentum=0.9, patience=0, augment=False, seed=0, verbose=0,
                   client=dask_client)
    held = make_sheets(root / "held", n=60, size=SHEET, seed=99, masks=True)
    return {"model": str(model), "store": _store(root / "held", held, client=dask_client),
            "sheets": held, "root": root}


@pytest.fixture(scope="module")
def explained(stain_task, dask_client):
    out = stain_task["root"] / "explain"
    return explain(stain_task["model"], stain_task["store"], out=str(out), client=dask_client,
                   overlays=True, grid=8)


def test_heatmaps_point_at_the_true_stains(stain_task, explained):
    sheets = stain_task["sheets"]
    images = explained.images.set_index("media_uuid")
    maps = xr.open_zarr(explained.heatmaps, consolidated=False)
    hits, ious, chance = [], [], []
    for path, mask_path in zip(sheets.paths, sheets.masks):
        if mask_path is None:
            continue
        mask = read_mask(mask_path)
        row = images.loc[os.path.basename(path)[:-4]]
        chance.append(mask.mean())  # a point drawn at random on the sheet
        x, y = row["peak_x"], row["peak_y"]
        hits.append(bool(np.isfinite(x) and mask[min(int(y), mask.shape[0] - 1),
                                                 min(int(x), mask.shape[1] - 1)]))
        truth = resize((mask * 255).astype(np.uint8), SIZE, "pad", pad_color=0)[..., 0] > 127
        heat = maps["heatmaps"][int(row["image_index"])].values.astype(np.float32)
        geometry = SheetGeometry(mask.shape[1], mask.shape[0], SIZE, "pad")
        threshold, _ = heatmap_regions(heat, geometry)
        x0, y0, x1, y1 = geometry.picture()
        found = np.zeros_like(truth)
        found[y0:y1, x0:x1] = heat[y0:y1, x0:x1] > threshold
        ious.append((found & truth).sum() / max(1, (found | truth).sum()))
    pointing, iou = float(np.mean(hits)), float(np.mean(ious))
    print(f"\nlocalization on {len(hits)} held-out stained sheets: pointing game {pointing:.3f} "
          f"(a random point {np.mean(chance):.3f}), IoU {iou:.3f} (median {np.median(ious):.3f})")
    assert len(hits) == 30
    assert pointing >= MIN_POINTING and pointing > 5 * np.mean(chance)
    assert iou >= MIN_IOU


def test_outputs_are_aligned_with_the_store(stain_task, explained):
    store = xr.open_zarr(stain_task["store"], consolidated=False)
    maps = xr.open_zarr(explained.heatmaps, consolidated=False)
    n = store.sizes["image"]
    assert maps["heatmaps"].shape == (n, SIZE, SIZE) and maps["heatmaps"].dtype == np.float16
    for name in ("media_uuid", "record_uuid", "source_width", "source_height"):
        assert maps[name].values.tolist() == store[name].values.tolist()
    values = maps["heatmaps"].values.astype(np.float32)
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert maps.attrs["resize_mode"] == "pad" and maps.attrs["size"] == SIZE

    images = pd.read_parquet(os.path.join(explained.out, "images.parquet"))
    assert len(images) == n and (images["status"] == "ok").all()
    assert np.allclose(maps["score"].values, images.sort_values("image_index")["score"])
    regions = pd.read_parquet(os.path.join(explained.out, "regions.parquet"))
    assert tuple(regions.columns) == REGION_COLUMNS and len(regions) > 0
    sizes = store[["source_width", "source_height"]].to_dataframe().reset_index(drop=True)
    size = sizes.iloc[regions["image_index"].to_numpy()].reset_index(drop=True)
    assert (regions["bbox_x0"] >= 0).all() and (regions["bbox_x1"] <= size["source_width"]).all()
    assert (regions["bbox_y0"] >= 0).all() and (regions["bbox_y1"] <= size["source_height"]).all()
    assert (regions["bbox_x0"] <= regions["centroid_x"]).all()
    assert (regions["centroid_x"] <= regions["bbox_x1"]).all()
    assert ((regions["mean_intensity"] > 0) & (regions["mean_intensity"] <= 1)).all()

    overlays = sorted(os.listdir(os.path.join(explained.out, "overlays")))
    assert len(overlays) == n and overlays[0].startswith("00000000_")
    assert explained.grid and os.path.getsize(explained.grid) > 10_000


def test_regions_come_back_to_the_sheets_pixels():
    """A dark box on a sheet, resized by each mode, is found where it is on the sheet."""
    for width, height in ((300, 450), (450, 300), (640, 480)):
        box = (int(width * 0.42), int(height * 0.40), int(width * 0.58), int(height * 0.55))
        sheet = np.full((height, width, 3), 255, np.uint8)
        sheet[box[1]:box[3], box[0]:box[2]] = 0
        for mode in ("pad", "crop", "stretch"):
            small = resize(sheet, SIZE, mode)
            heat = (255.0 - small[..., 0]) / 255.0
            geometry = SheetGeometry(width, height, SIZE, mode)
            _, regions = heatmap_regions(heat, geometry, min_area=1)
            assert len(regions) == 1, (width, height, mode)
            region = regions[0]
            kx, ky = geometry.scale()  # sheet pixels of one store pixel
            found = (region["bbox_x0"], region["bbox_y0"], region["bbox_x1"], region["bbox_y1"])
            for got, want, k in zip(found, box, (kx, ky, kx, ky)):
                assert abs(got - want) <= 1.5 * k, (mode, width, height, found, box)
            assert abs(region["centroid_x"] - (box[0] + box[2]) / 2) <= kx
            assert abs(region["centroid_y"] - (box[1] + box[3]) / 2) <= ky
            area = (box[2] - box[0]) * (box[3] - box[1])
            assert abs(region["area"] - area) <= 0.25 * area


def test_flat_and_small_heatmaps_have_no_regions():
    assert heatmap_regions(np.zeros((16, 16), np.float32))[1] == []
    speck = np.zeros((16, 16), np.float32)
    speck[3, 3] = 1.0
    assert heatmap_regions(speck, min_area=2)[1] == []
    assert len(heatmap_regions(speck, min_area=1)[1]) == 1
    assert overlay(np.zeros((16, 16, 3), np.uint8), speck).shape == (16, 16, 3)


def test_an_image_whose_map_fails_is_reported_not_fatal(stain_task, dask_client, tmp_path):
    """A model whose scaling makes every input NaN: each image says why, no crash."""
    broken = tmp_path / "model"
    shutil.copytree(stain_task["model"], broken)
    config = json.loads((broken / "config.json").read_text())
    config["channel_mean"] = [float("nan")] * 3
    (broken / "config.json").write_text(json.dumps(config))
    result = explain(str(broken), stain_task["store"], out=str(tmp_path / "out"),
                     client=dask_client, grid=4)
    assert len(result.images) == 60
    assert set(result.images["status"]) == {"failed"}
    assert set(result.images["reason"]) == {"not_finite"}
    assert result.regions.empty and result.grid is None


def test_cli_explain_and_its_mistakes(stain_task, dask_client, tmp_path, capsys):
    from idigdask.cli import main

    out = tmp_path / "maps"
    code = main(["explain", stain_task["model"], stain_task["store"], "-o", str(out),
                 "--scheduler", dask_client.scheduler.address, "--grid", "0", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["images"] == 60 and summary["status"] == {"ok": 60}
    assert summary["grid"] is None and (out / "regions.parquet").exists()

    not_a_store = tmp_path / "plain"
    not_a_store.mkdir()
    for argv, words in (
            (["explain", str(tmp_path / "nomodel"), stain_task["store"]], "not a model folder"),
            (["explain", stain_task["model"], str(not_a_store)], "not an image store"),
            (["explain", stain_task["model"], stain_task["store"], "--batch-size", "0"],
             "--batch-size"),
            (["explain", stain_task["model"], stain_task["store"], "--target", "mercury"],
             "--target"),
            (["explain", stain_task["model"], stain_task["store"], "--layer", "nosuch"],
             "no layer")):
        assert main([*argv, "-o", str(tmp_path / "x"), "--scheduler",
                     dask_client.scheduler.address]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (argv, err)


def test_a_store_of_another_size_is_refused(stain_task, tiny_store, tmp_path):
    from idigdask.errors import UserError

    with pytest.raises(UserError, match="32 px images"):
        explain(stain_task["model"], tiny_store, out=str(tmp_path / "x"), client=False)


def test_the_jax_backend_gives_the_same_maps(stain_task, explained, tmp_path):
    """The same Grad-CAM code on Keras's JAX backend, in a process of its own."""
    pytest.importorskip("jax")
    script = (
        "import sys, numpy as np, keras, xarray as xr\n"
        "from idigdask.explain import GradCam\n"
        "from idigdask.batches import normalize_images\n"
        "from idigdask.train import read_model_dir\n"
        "config = read_model_dir(sys.argv[1])\n"
        "images = xr.open_zarr(sys.argv[2], consolidated=False)['images'][:4].values\n"
        "x = normalize_images(images, config['normalize'], config['channel_mean'], config['channel_std'])\n"
        "cam = GradCam(keras.saving.load_model(config['model_path']))\n"
        "maps, probabilities, explained = cam(x, 1)\n"
        "np.save(sys.argv[3], maps)\n"
        "print(keras.backend.backend())\n")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", script, stain_task["model"], stain_task["store"],
                           str(tmp_path / "jax.npy")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "jax"
    jax_maps = np.load(tmp_path / "jax.npy")
    tf_maps = xr.open_zarr(explained.heatmaps, consolidated=False)["heatmaps"][:4].values
    # float16 storage: about 1e-3 apart
    assert np.abs(jax_maps - tf_maps.astype(np.float32)).max() < 5e-3


def test_options_defaults_are_the_yaml_section():
    import dataclasses

    import dask
    import yaml

    from idigdask.config import DEFAULTS_FILE
    from idigdask.explain import ExplainOptions
    from idigdask.options import OptionError

    written = yaml.safe_load(DEFAULTS_FILE.read_text())["idigdask"]["explain"]
    with dask.config.set({"idigdask.explain": written}):
        options = ExplainOptions()
    fields = {f.metadata["setting"].split(".", 1)[1]: f.name for f in dataclasses.fields(options)}
    assert set(fields) == set(written)
    assert all(getattr(options, name) == written[key] for key, name in fields.items())
    with dask.config.set({"idigdask.explain.grid": "4"}):  # as an environment variable gives it
        assert ExplainOptions().grid == 4
    with pytest.raises(OptionError, match="batch_size"):
        ExplainOptions(batch_size=0)
