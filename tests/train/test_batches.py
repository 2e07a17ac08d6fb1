"""Batches of a store: chunk-aware order, scaling, augmentation, reads and caches."""

from __future__ import annotations

import numpy as np
import pytest

from idigdask.batches import (_ChunkCache, augment_images, batch_mixing, epoch_order,
                              load_batch, normalize_images, open_store)
from idigdask.errors import UserError

CHUNK = 8  # images per chunk of the stores of conftest.py


# --- order --------------------------------------------------------------------------
def test_epoch_order_visits_each_image_once_chunk_by_chunk():
    indices = np.arange(5, 200)
    a = epoch_order(indices, 16, seed=1, epoch=0, window_chunks=2)
    b = epoch_order(indices, 16, seed=1, epoch=0, window_chunks=2)
    c = epoch_order(indices, 16, seed=1, epoch=1, window_chunks=2)
    assert sorted(a) == list(indices)
    assert (a == b).all()
    assert (a != c).any() and sorted(c) == list(indices)
    # A batch of 16 touches at most the two windows it straddles: 4 chunks.
    for start in range(0, len(a), 16):
        assert len(np.unique(a[start:start + 16] // 16)) <= 4
    assert (epoch_order(indices, 16, shuffle=False) == indices).all()


def test_batch_mixing_counts_the_groups_of_each_batch():
    groups = np.repeat(list("abcd"), 8)                  # four providers, in store order
    assert batch_mixing(np.arange(32), groups, 8) == 1.0
    dealt = np.arange(32).reshape(4, 8).T.ravel()        # a, b, c, d, a, b, ...
    assert batch_mixing(dealt, groups, 8) == 4.0
    assert batch_mixing(np.arange(4, 16), groups, 8) == 1.5  # 2 groups, then a short batch of 1
    assert batch_mixing(np.array([], dtype=int), groups, 8) == 0.0


def test_epoch_order_mixes_a_store_written_in_recordset_order():
    # a GUODA dump is ordered by recordset: 20 providers of 1,000 images, chunks of 64
    groups = np.repeat(np.arange(20), 1000)
    idx = np.arange(len(groups))
    random = batch_mixing(np.random.default_rng(0).permutation(idx), groups, 32)
    order = epoch_order(idx, 64, seed=0, window_chunks=16)
    assert sorted(order.tolist()) == idx.tolist()
    assert batch_mixing(order, groups, 32) >= 0.85 * random   # about 14.5 against 16.1
    # still chunk by chunk: each chunk is read in one window of at most 16 chunks
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    chunks = idx // 64
    spans = [np.ptp(position[chunks == c]) for c in range(0, chunks.max() + 1, 7)]
    assert max(spans) < 16 * 64
    for start in range(0, len(order), 32):
        assert len(np.unique(order[start:start + 32] // 64)) <= 32


def test_chunk_cache_loads_a_chunk_once_for_threads_asking_at_once():
    import threading
    import time

    cache = _ChunkCache(2**20)
    loads = []

    def load():
        loads.append(1)
        time.sleep(0.05)  # a slow decompression: the other threads ask meanwhile
        return np.zeros(10, np.uint8)

    threads = [threading.Thread(target=cache.get_or_load, args=(("k",), load)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    assert cache.get(("k",)) is not None


# --- scaling and augmentation --------------------------------------------------------
def test_normalize_modes():
    images = np.full((1, 2, 2, 3), [10, 20, 30], dtype=np.uint8)
    store = normalize_images(images, "store", [10, 10, 10], [5, 10, 20])
    assert store.dtype == np.float32
    np.testing.assert_allclose(store[0, 0, 0], [0.0, 1.0, 1.0])
    np.testing.assert_allclose(normalize_images(images, "unit")[0, 0, 0], [10 / 255, 20 / 255, 30 / 255])
    np.testing.assert_allclose(normalize_images(images, None)[0, 0, 0], [10, 20, 30])
    with pytest.raises(UserError):
        normalize_images(images, "zscore")


def test_augment_is_seeded_and_keeps_range():
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    a = augment_images(images, np.random.default_rng(1))
    b = augment_images(images, np.random.default_rng(1))
    assert a.shape == images.shape and (a == b).all()
    assert a.min() >= 0 and a.max() <= 255
    assert not np.allclose(a, images)


def test_load_batch_reads_in_order_and_augments_only_on_request(tiny_store):
    ds = open_store(tiny_store)
    idx = np.array([17, 3, 40, 4])
    plain = load_batch(tiny_store, idx, chunk_size=CHUNK, normalize=None)
    np.testing.assert_array_equal(plain, ds["images"].values[idx].astype(np.float32))
    again = load_batch(tiny_store, idx, chunk_size=CHUNK, normalize=None)
    np.testing.assert_array_equal(plain, again)
    augmented = load_batch(tiny_store, idx, chunk_size=CHUNK, normalize=None, augment_seed=(0, 0, 0))
    assert not np.array_equal(plain, augmented)


# --- a store rebuilt or extended while the process lives ----------------------------
def _append(store: str, extra: str) -> None:
    """Append the images of store ``extra`` to ``store`` (as a resumed build does)."""
    import xarray as xr

    more = xr.open_zarr(extra, consolidated=False).load()
    more.attrs = {}
    for name in more.variables:
        more[name].encoding = {}
    more.to_zarr(store, append_dim="image", consolidated=False, zarr_format=3)


def test_read_images_sees_a_store_rebuilt_in_place(tmp_path, store_factory):
    import shutil

    from idigdask.loaders.keras import StoreFeed

    path = str(tmp_path / "again.zarr")

    def stored(idx):
        return open_store(path)["images"].values[idx]

    store_factory(path, n=16, seed=1)
    idx = np.array([0, 9, 15])
    np.testing.assert_array_equal(load_batch(path, idx, chunk_size=CHUNK).astype(np.uint8),
                                  stored(idx))

    # rebuilt in place with other images, then with fewer images
    shutil.rmtree(path)
    store_factory(path, n=16, seed=2)
    np.testing.assert_array_equal(load_batch(path, idx, chunk_size=CHUNK).astype(np.uint8),
                                  stored(idx))
    shutil.rmtree(path)
    store_factory(path, n=12, seed=3)
    fewer = np.array([0, 9, 11])
    np.testing.assert_array_equal(load_batch(path, fewer, chunk_size=CHUNK).astype(np.uint8),
                                  stored(fewer))

    # extended in place: the new images are read, the old ones still match
    _append(path, store_factory(tmp_path / "extra.zarr", n=10, seed=4))
    more = np.array([3, 11, 12, 15, 21])
    np.testing.assert_array_equal(load_batch(path, more, chunk_size=CHUNK).astype(np.uint8),
                                  stored(more))
    feed = StoreFeed(path, shuffle=False, batch_size=22, normalize=None, client=None)
    try:
        np.testing.assert_array_equal(feed.images(0), stored(np.arange(22)))
    finally:
        feed.close()


def test_workers_see_a_store_rebuilt_in_place(tmp_path, store_factory, dask_client):
    import shutil

    path = str(tmp_path / "shared.zarr")
    idx = np.arange(12)
    for seed, n in ((5, 12), (6, 16), (7, 12)):
        if seed != 5:
            shutil.rmtree(path)
        store_factory(path, n=n, seed=seed)
        expected = open_store(path)["images"].values[idx]
        # every worker reads the batch (each keeps its own caches)
        for worker in dask_client.scheduler_info()["workers"]:
            got = dask_client.submit(load_batch, path, idx, chunk_size=CHUNK, pure=False,
                                     workers=[worker]).result()
            np.testing.assert_array_equal(got.astype(np.uint8), expected)
