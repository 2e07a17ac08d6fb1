"""A batch done again after its worker was lost must give the images the driver placed.

The driver places a wave's images from the metadata of the first run of each batch;
when a worker dies, Dask runs its batches again elsewhere and the writes read the new
results. So a batch's pixel layout must not depend on the order its fetches finish,
and a write must refuse pixels that are not the ones placed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idigdask.build import BuildOptions, RecomputedBatchError, _write_segment
from idigdask.fetch import FetchOptions
from idigdask.process import process_batch
from idigdask.store import ImageStore
from idigdask.testing.media_server import MediaServer

from frames import catalog_frame


@pytest.fixture(scope="module")
def server(small_sheets):
    with MediaServer(small_sheets.folder) as srv:
        yield srv


def urls(server, small_sheets, slow_first: float):
    root = Path(small_sheets.folder)
    rel = [Path(p).relative_to(root).as_posix() for p in small_sheets.paths[:4]]
    # the first row answers last when slowed: completion order is not row order
    return [server.url_for(f"fault/slow/{slow_first}/{rel[0]}" if slow_first else rel[0]),
            server.url_for("fault/status/404/gone.jpg"), *map(server.url_for, rel[1:])]


def test_pixels_are_in_row_order_whatever_the_fetch_order(server, small_sheets):
    options = BuildOptions(size=32, fetch=FetchOptions(concurrency=8, per_host=8))
    fast = process_batch(catalog_frame(urls(server, small_sheets, 0)), options)
    slow = process_batch(catalog_frame(urls(server, small_sheets, 0.5)), options)
    assert list(slow.ledger["status"]) == ["ok", "failed", "ok", "ok", "ok"]
    assert list(slow.ledger["pixel_index"]) == [0, -1, 1, 2, 3]
    assert list(fast.ledger["pixel_index"]) == [0, -1, 1, 2, 3]
    assert np.array_equal(fast.pixels, slow.pixels)
    assert list(fast.ledger["sha256"]) == list(slow.ledger["sha256"])


def test_a_write_refuses_pixels_that_were_not_placed(tmp_path, server, small_sheets):
    options = BuildOptions(size=32)
    result = process_batch(catalog_frame(urls(server, small_sheets, 0)), options)
    store = ImageStore(str(tmp_path / "s.zarr"))
    store.create(size=32, chunk_size=4, label_kind=None, attrs={})
    store.resize(4)
    shas = result.ledger.loc[result.ledger["pixel_index"] >= 0, "sha256"].tolist()
    placed = [(0, p, sha) for p, sha in enumerate(shas)]
    histogram = _write_segment(store.url, None, 0, placed, result)
    assert histogram.sum() == 3 * 4 * 32 * 32
    swapped = [(0, 1, shas[0]), (0, 0, shas[1])]  # what a reordered recompute would give
    with pytest.raises(RecomputedBatchError, match="run the build again"):
        _write_segment(store.url, None, 0, swapped, result)
