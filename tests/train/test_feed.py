"""The training feed: splits, chunk-aware order, scaling, augmentation, Dask reads."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from idigdask.errors import UserError
from idigdask.feed import (augment_images, class_weights, epoch_order, load_batch,
                           normalize_images, open_store, split_by_specimen)

CHUNK = 8  # images per chunk of the stores of conftest.py


# --- split --------------------------------------------------------------------------
def test_split_keeps_specimens_together_and_stratifies():
    records = np.array([f"r{i // 3}" for i in range(300)], dtype=object)
    labels = np.array([(i // 3) % 2 for i in range(300)])
    records[::17] = ""  # sheets without a specimen are groups of their own
    media = np.array([f"m{i}" for i in range(300)])
    split = split_by_specimen(records, labels, seed=5, media_uuid=media)
    assert set(split) == {"train", "val", "test"}
    for record in set(records) - {""}:
        assert len(set(split[records == record])) == 1, record
    for label in (0, 1):
        share = {s: np.mean(split[labels == label] == s) for s in ("train", "val", "test")}
        assert share["train"] == pytest.approx(0.7, abs=0.08)
        assert share["test"] == pytest.approx(0.15, abs=0.06)
    again = split_by_specimen(records, labels, seed=5, media_uuid=media)
    assert (again == split).all()
    other = split_by_specimen(records, labels, seed=6, media_uuid=media)
    assert (other != split).any()


def test_split_rejects_bad_fractions():
    with pytest.raises(UserError, match="fractions"):
        split_by_specimen(["a"], [0], fractions=(0.5, -0.1, 0.6))


def test_class_weights_balance_the_classes():
    weights = class_weights([0, 0, 0, 1])
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert 3 * weights[0] == pytest.approx(1 * weights[1])


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


# --- StoreFeed ----------------------------------------------------------------------
def _feed(store, **kwargs):
    from idigdask.feed import StoreFeed

    ds = open_store(store)
    labels = ds["label"].values
    idx = np.nonzero(labels >= 0)[0]
    return StoreFeed(store, idx, labels[idx], **kwargs), ds, idx


def test_feed_without_client_yields_normalized_batches(tiny_store):
    feed, ds, idx = _feed(tiny_store, batch_size=16, client=None, seed=2)
    try:
        assert len(feed) == -(-len(idx) // 16)
        seen = []
        for i in range(len(feed)):
            x, y = feed[i]
            assert x.dtype == np.float32 and x.shape[1:] == (32, 32, 3)
            batch = feed.batch_indices(i)
            seen.extend(batch)
            np.testing.assert_array_equal(y, ds["label"].values[batch])
            expected = normalize_images(ds["images"].values[batch], "store",
                                        ds.attrs["channel_mean"], ds.attrs["channel_std"])
            np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
            assert len(np.unique(batch // CHUNK)) <= 2 * feed.window_chunks
        assert sorted(seen) == sorted(idx)
        first = feed.order.copy()
        feed.on_epoch_end()
        assert feed.epoch == 1 and (feed.order != first).any()
        assert sorted(feed.order) == sorted(idx)
    finally:
        feed.close()


def test_feed_one_hot_and_unlabelled(tiny_store):
    from idigdask.feed import StoreFeed

    feed, _, _ = _feed(tiny_store, batch_size=8, client=None, one_hot=True, n_classes=2)
    x, y = feed[0]
    assert y.shape == (8, 2) and (y.sum(1) == 1).all()
    feed.close()
    plain = StoreFeed(tiny_store, [0, 1, 2], batch_size=2, shuffle=False, normalize="unit",
                      client=None)
    assert len(plain[1]) == 1 and plain[1][0].shape == (1, 32, 32, 3)
    plain.close()


def test_feed_survives_pickling_for_keras_processes(tiny_store, dask_client):
    feed, _, _ = _feed(tiny_store, batch_size=8, client=dask_client)
    copy = pickle.loads(pickle.dumps(feed))
    assert copy.client is None  # a client does not travel; the copy reads with threads
    np.testing.assert_array_equal(copy[0][0], feed[0][0])
    feed.close()
    copy.close()


def test_feed_reads_on_dask_workers_like_threads(tiny_store, dask_client):
    on_dask, _, _ = _feed(tiny_store, batch_size=16, client=dask_client, augment=True, seed=4)
    local, _, _ = _feed(tiny_store, batch_size=16, client=None, augment=True, seed=4)
    try:
        assert on_dask.client is dask_client
        for i in range(len(on_dask)):
            xd, yd = on_dask[i]
            xl, yl = local[i]
            np.testing.assert_allclose(xd, xl)  # same seed: same batch on any worker
            np.testing.assert_array_equal(yd, yl)
        # The batches were computed on the workers, who opened the store themselves.
        opened = dask_client.run(lambda: len(__import__("idigdask.feed").feed._ARRAYS))
        assert sum(opened.values()) >= 1
        on_dask.on_epoch_end()
        local.on_epoch_end()
        np.testing.assert_allclose(on_dask[0][0], local[0][0])
    finally:
        on_dask.close()
        local.close()


def test_feed_checks_its_input(tiny_store, unlabelled_store):
    from idigdask.feed import StoreFeed

    with pytest.raises(UserError, match="out of range"):
        StoreFeed(tiny_store, [0, 999], client=None)
    with pytest.raises(UserError, match="one entry per index"):
        StoreFeed(tiny_store, [0, 1], [0], client=None)
    with pytest.raises(UserError, match="not an idigdask store|not an image store"):
        StoreFeed(str(unlabelled_store) + "-missing", client=None)


def test_feed_reads_an_in_memory_dataset(tiny_store):
    from idigdask.feed import StoreFeed

    ds = open_store(tiny_store).load()
    ds.encoding.pop("source", None)  # as if built in memory: nothing for workers to open
    feed = StoreFeed(ds, [9, 1, 30], shuffle=False, batch_size=3, normalize=None, client="auto")
    assert feed.client is None or not isinstance(feed.source, str)
    np.testing.assert_array_equal(feed[0][0], ds["images"].values[[1, 9, 30]].astype(np.float32))
    feed.close()


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

    from idigdask.feed import StoreFeed

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
