"""The Keras feed: batches of a store in threads or on Dask workers, pickling, checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from idigdask.batches import normalize_images, open_store
from idigdask.errors import UserError

CHUNK = 8  # images per chunk of the stores of conftest.py


# --- StoreFeed ----------------------------------------------------------------------
def _feed(store, **kwargs):
    from idigdask.loaders.keras import StoreFeed

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
    from idigdask.loaders.keras import StoreFeed

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
        opened = dask_client.run(lambda: len(__import__("idigdask.batches").batches._ARRAYS))
        assert sum(opened.values()) >= 1
        on_dask.on_epoch_end()
        local.on_epoch_end()
        np.testing.assert_allclose(on_dask[0][0], local[0][0])
    finally:
        on_dask.close()
        local.close()


def test_feed_checks_its_input(tiny_store, unlabelled_store):
    from idigdask.loaders.keras import StoreFeed

    with pytest.raises(UserError, match="out of range"):
        StoreFeed(tiny_store, [0, 999], client=None)
    with pytest.raises(UserError, match="one entry per index"):
        StoreFeed(tiny_store, [0, 1], [0], client=None)
    with pytest.raises(UserError, match="not an idigdask store|not an image store"):
        StoreFeed(str(unlabelled_store) + "-missing", client=None)


def test_feed_reads_an_in_memory_dataset(tiny_store):
    from idigdask.loaders.keras import StoreFeed

    ds = open_store(tiny_store).load()
    ds.encoding.pop("source", None)  # as if built in memory: nothing for workers to open
    feed = StoreFeed(ds, [9, 1, 30], shuffle=False, batch_size=3, normalize=None, client="auto")
    assert feed.client is None or not isinstance(feed.source, str)
    np.testing.assert_array_equal(feed[0][0], ds["images"].values[[1, 9, 30]].astype(np.float32))
    feed.close()


def test_without_keras_the_import_says_what_to_install():
    import subprocess
    import sys

    code = ("import sys; sys.modules['keras'] = None\n"
            "try:\n    import idigdask.loaders.keras\n"
            "except ImportError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pip install 'idigdask[train]'" in done.stdout
