"""Fixtures of the training tests: tiny image stores written to the store spec, a real
Dask LocalCluster, and a tiny trained model."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import xarray as xr

SIZE = 32
CHUNK = 8


def make_store(path, *, n: int = 64, size: int = SIZE, chunk_size: int = CHUNK,
               labels: str | None = "int", seed: int = 0, unlabelled: int = 4) -> str:
    """Write an image store following the store spec, with a learnable signal.

    Label 1 (or "Lycopodiaceae") images carry a dark blob on light paper; label 0
    images are paper only. Images come in specimens of one or two sheets, and a few
    have no specimen (empty ``record_uuid``).
    """
    rng = np.random.default_rng(seed)
    codes = np.arange(n) % 2
    images = rng.integers(200, 245, size=(n, size, size, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in np.nonzero(codes == 1)[0]:
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 5) ** 2
        images[i][blob] = rng.integers(20, 60)
    # Specimens: pairs of sheets of the same class (i, i + 2), some sheets alone.
    records = np.array([f"rec-{(i // 4) * 2 + i % 2:04d}" for i in range(n)], dtype=object)
    records[n - 3:] = ""
    coords = {
        "media_uuid": ("image", np.array([f"{i:08d}-med-{seed}" for i in range(n)], dtype=object)),
        "record_uuid": ("image", records),
        "access_uri": ("image", np.array([f"http://127.0.0.1/m/{i}.jpg" for i in range(n)],
                                         dtype=object)),
        "sha256": ("image", np.array([f"{i:064x}" for i in range(n)], dtype=object)),
        "phash": ("image", np.array([f"{i:016x}" for i in range(n)], dtype=object)),
        "source_width": ("image", np.full(n, 2000, dtype=np.int64)),
        "source_height": ("image", np.full(n, 3000, dtype=np.int64)),
    }
    if labels == "int":
        values = codes.astype(np.int64)
        values[:unlabelled] = -1
        coords["label"] = ("image", values)
    elif labels == "str":
        values = np.array(["Lycopodiaceae" if c else "Selaginellaceae" for c in codes],
                          dtype=object)
        values[:unlabelled] = ""
        coords["label"] = ("image", values)
    elif labels == "single":
        coords["label"] = ("image", np.zeros(n, dtype=np.int64))
    ds = xr.Dataset({"images": (("image", "y", "x", "channel"), images)}, coords=coords)
    ds.attrs.update(
        size=size, resize_mode="pad", catalog_source="tests", created="2026-01-01T00:00:00Z",
        idigdask_version="0.1.0", chunk_size=chunk_size,
        channel_mean=[float(v) for v in images.reshape(-1, 3).mean(0)],
        channel_std=[float(v) for v in images.reshape(-1, 3).std(0)],
    )
    ds["images"].encoding["chunks"] = (chunk_size, size, size, 3)
    ds.to_zarr(str(path), mode="w", consolidated=False, zarr_format=3)
    return str(path)


@pytest.fixture(scope="session")
def store_factory():
    """:func:`make_store`, for tests that need a store of their own."""
    return make_store


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> str:
    """64 images of 32x32 in chunks of 8, int labels 0/1 (4 unlabelled)."""
    return make_store(tmp_path_factory.mktemp("stores") / "tiny.zarr")


@pytest.fixture(scope="session")
def str_store(tmp_path_factory) -> str:
    """Like ``tiny_store`` with family names as labels ("" for unlabelled)."""
    return make_store(tmp_path_factory.mktemp("stores") / "families.zarr", labels="str", seed=1)


@pytest.fixture(scope="session")
def unlabelled_store(tmp_path_factory) -> str:
    """A store without a label coordinate."""
    return make_store(tmp_path_factory.mktemp("stores") / "nolabel.zarr", labels=None, n=16)


@pytest.fixture(scope="session")
def trained_model(tiny_store, tmp_path_factory):
    """A Smithsonian network trained two epochs on ``tiny_store``."""
    from idigdask.train import train

    out = tmp_path_factory.mktemp("models") / "tiny"
    result = train(tiny_store, epochs=2, batch_size=16, out=out, seed=0,
                   learning_rate=1e-3, client=False, verbose=0)
    return out, result
