"""The build's pure planning functions, without a cluster: placement, segments, keys."""

from __future__ import annotations

import numpy as np
import pandas as pd

from idigdask.build import (_held_images, _Dedup, _Plan, chunk_segments, orphaned_duplicates,
                            place_wave, reconcile)
from idigdask.store import row_key, row_keys


def wave(statuses, shas, uuids=None):
    n = len(statuses)
    return pd.DataFrame({
        "status": statuses, "reason": [None] * n, "message": [None] * n,
        "sha256": shas, "phash": ["0" * 16] * n, "media_uuid": uuids or [f"u{i}" for i in range(n)],
        "pixel_index": list(range(n)),
    })


def test_place_wave_in_catalog_order_and_marks_duplicates():
    ledger = wave(["ok", "failed", "ok", "ok"], ["a", "", "b", "a"])
    dedup = _Dedup(-1)
    selection = place_wave(ledger, np.array([0, 0, 1, 1]), 10, dedup, keep_duplicates=False)
    assert selection == [(0, 0), (1, 2)]
    assert ledger["image_index"].tolist() == [10, -1, 11, -1]
    assert ledger["status"].tolist() == ["ok", "failed", "ok", "duplicate"]
    assert ledger.at[3, "duplicate_of"] == "u0" and ledger.at[3, "reason"] == "exact"
    # the index remembers: the next wave's copy of "b" is a duplicate too
    later = wave(["ok"], ["b"], ["v"])
    assert place_wave(later, np.array([0]), 12, dedup, False) == []
    assert later.at[0, "duplicate_of"] == "u2"


def test_place_wave_keeps_duplicates_or_skips_the_search():
    ledger = wave(["ok", "ok"], ["a", "a"])
    assert place_wave(ledger, np.array([0, 0]), 0, _Dedup(-1), keep_duplicates=True) == [(0, 0), (0, 1)]
    assert ledger["duplicate_of"].tolist() == [None, "u0"]
    ledger = wave(["ok", "ok"], ["a", "a"])
    assert place_wave(ledger, np.array([0, 0]), 0, None, keep_duplicates=False) == [(0, 0), (0, 1)]
    assert ledger["status"].tolist() == ["ok", "ok"]


def test_chunk_segments_never_cross_a_chunk():
    assert chunk_segments(0, 7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert chunk_segments(4, 5, 3) == [(0, 2), (2, 5)]
    assert chunk_segments(6, 3, 3) == [(0, 3)]
    assert chunk_segments(5, 0, 3) == []
    for start in range(7):
        for count in range(9):
            segs = chunk_segments(start, count, 4)
            assert sum(e - b for b, e in segs) == count
            assert all((start + b) // 4 == (start + e - 1) // 4 for b, e in segs)


def test_keys_depend_on_content_only():
    seen: dict[str, int] = {}
    keys = row_keys(["a", "a", "", "", "a"], ["u1", "u2", "u3", "u3", "u1"], seen)
    assert len(set(keys)) == 5
    assert keys[0] == row_key("a", "u1") and keys[4] == row_key("a", "u1", 2)
    # other rows coming, going or moving leave a row's key alone
    again = row_keys(["", "a"], ["u3", "u2"], {})
    assert again == [keys[2], keys[1]]


def test_reconcile_retires_moves_and_brings_back():
    committed = pd.DataFrame({
        "row_key": ["k0", "k1", "k2"], "media_uuid": ["a", "b", "c"],
        "access_uri": ["x", "y", "z"], "status": ["ok", "ok", "failed"],
        "reason": [None, None, "http_404"], "message": [None] * 3, "duplicate_of": [None] * 3,
        "sha256": ["s0", "s1", ""], "image_index": [0, 1, -1], "catalog_row": [0, 1, 2],
        "retired": [False, False, True],
    })
    plan = _Plan(keys={"k1", "k2"}, moved={"k1": 0})
    part = reconcile(committed, plan)
    by_key = part.set_index("row_key")
    assert set(by_key.index) == {"k0", "k1", "k2"}
    assert by_key.at["k0", "retired"] and not by_key.at["k2", "retired"]
    assert by_key.at["k1", "catalog_row"] == 0
    assert len(reconcile(committed.assign(retired=[True, False, False]),
                         _Plan(keys={"k1", "k2"}, moved={}))) == 0


def test_a_duplicate_whose_original_left_the_catalog_is_an_orphan():
    ledger = pd.DataFrame({
        "row_key": ["k0", "k1", "k2", "k3", "k4"], "media_uuid": ["", "b", "c", "d", ""],
        "status": ["ok", "duplicate", "duplicate", "ok", "ok"],
        "duplicate_of": [None, "", "d", None, None], "retired": [True, False, False, False, False],
        "sha256": ["s0", "s0", "s3", "s3", "s4"], "phash": ["", "", "", "", ""],
        "image_index": [0, -1, -1, 1, 2],
    })
    # the image of k0 left with it, though a row of the same (empty) uuid still holds
    # another one; k2's original is still held
    assert orphaned_duplicates(ledger, _held_images(ledger, -1)) == ["k1"]
