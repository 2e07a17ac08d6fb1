"""The store and its ledger on their own: no Dask cluster, no HTTP, only local files.

The promises a whole build keeps (one ledger row per catalog row, crash-safe resumes)
are tested through real builds in ``test_ledger.py``; the keys' independence from
other rows in ``test_build_plan.py``. Here each piece of :mod:`idigdask.store` is
driven directly, as the build's driver and its workers call it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import zarr

from idigdask.errors import UserError
from idigdask.store import (
    COORDS,
    FORMAT_VERSION,
    HISTOGRAM_KEY,
    LEDGER_COLUMNS,
    STATUSES,
    ImageStore,
    channel_histograms,
    channel_stats,
    ledger_counts,
    open_dataset,
    read_ledger,
    row_key,
    row_keys,
    stats_of_histogram,
    write_images,
    zarr_storage_options,
)

SIZE = 8     # side of the stored images
CHUNK = 3    # images per chunk: lengths of 4 and 5 end inside the second chunk


def new_store(tmp_path: Path, name: str = "s.zarr", *, label_kind: str | None = None) -> ImageStore:
    store = ImageStore(str(tmp_path / name))
    store.create(size=SIZE, chunk_size=CHUNK, label_kind=label_kind,
                 attrs={"idigdask_version": "test", "resize_mode": "pad"})
    return store


def images(n: int, first: int = 1) -> np.ndarray:
    """``n`` images, image ``i`` filled with the value ``first + i`` (never the fill 0)."""
    return np.stack([np.full((SIZE, SIZE, 3), first + i, np.uint8) for i in range(n)])


def append(store: ImageStore, pixels: np.ndarray, uuids: list[str]) -> None:
    """Append images and their media uuids, as a build's wave does."""
    start = store.length()
    store.resize(start + len(pixels))
    write_images(store.url, None, start, pixels)
    store.write_coords(start, {"media_uuid": np.array(uuids, dtype=object)})


def ledger_part(keys, statuses=None, *, rows=None, reasons=None, retired=None,
                older: bool = False) -> pd.DataFrame:
    """A ledger part with the given keys; ``older`` drops the columns version 1 lacked."""
    n = len(keys)
    part = pd.DataFrame({c: [None] * n for c in LEDGER_COLUMNS})
    part["row_key"] = list(keys)
    part["media_uuid"] = [k.split("@")[0] for k in keys]
    part["access_uri"] = [f"https://a.org/{k}.jpg" for k in keys]
    part["status"] = list(statuses or ["ok"] * n)
    part["reason"] = list(reasons or [None] * n)
    part["attempts"] = 1
    part["image_index"] = list(range(n))
    part["catalog_row"] = list(rows if rows is not None else range(n))
    part["run"], part["wave"] = 0, 0
    part["retired"] = list(retired or [False] * n)
    return part.drop(columns=["warnings", "retired"]) if older else part


def flat_histogram(value: int, count: int) -> np.ndarray:
    histogram = np.zeros((3, 256), "int64")
    histogram[:, value] = count
    return histogram


def record_fsyncs(monkeypatch) -> list[str]:
    """Paths handed to ``os.fsync`` from now on."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


# ----------------------------------------------------------------------------- keys
def test_row_key_is_the_uuid_and_a_digest_of_the_uri():
    key = row_key("m1", "https://a.org/1.jpg")
    uuid, digest = key.split("@")
    assert uuid == "m1" and len(digest) == 16 and int(digest, 16) >= 0
    assert row_key("m1", "https://a.org/1.jpg", 1) == key == row_key("m1", "https://a.org/1.jpg", 0)
    assert row_key("m1", "https://a.org/1.jpg", 3) == f"{key}#3"
    assert row_key("m1", "https://a.org/2.jpg") != key != row_key("m2", "https://a.org/1.jpg")
    assert row_key("", "https://a.org/1.jpg").startswith("@")   # rows without an id
    # a URI that is not valid UTF-8 text (a lone surrogate) still has a key
    assert row_key("m1", "https://a.org/\udcff.jpg") != key


def test_row_keys_carry_the_occurrence_count_across_calls():
    seen: dict[str, int] = {}
    first = row_keys(["a", "b"], ["u", "u"], seen)
    second = row_keys(["a", "a"], ["u", "u"], seen)             # the next batch of rows
    assert first == [row_key("a", "u"), row_key("b", "u")]
    assert second == [row_key("a", "u", 2), row_key("a", "u", 3)]
    assert seen == {row_key("a", "u"): 3, row_key("b", "u"): 1}
    assert row_keys([], [], seen) == []


# ------------------------------------------------------------------ storage options
@pytest.mark.parametrize("url, passed", [
    ("/data/sheets.zarr", False), ("sheets.zarr", False), ("s3://bucket/sheets.zarr", True),
    ("file:///data/sheets.zarr", True), ("simplecache::s3://bucket/sheets.zarr", True),
])
def test_zarr_storage_options_only_for_urls(url, passed):
    options = {"anon": True}
    assert zarr_storage_options(url, options) is (options if passed else None)
    assert zarr_storage_options(url, None) is None


# ----------------------------------------------------------------- create and state
def test_create_makes_the_empty_arrays_and_the_attributes(tmp_path):
    store = new_store(tmp_path, label_kind="int")
    assert store.exists() and store.state() == "store"
    attrs = store.attrs
    assert attrs["size"] == SIZE and attrs["chunk_size"] == CHUNK
    assert attrs["format_version"] == FORMAT_VERSION and attrs["idigdask_version"] == "test"
    assert attrs["resize_mode"] == "pad" and "created" in attrs
    assert set(store.array_names()) == {"images", "label", *COORDS}
    assert store.length() == 0
    group = zarr.open_group(store.url, mode="r")
    assert group["images"].shape == (0, SIZE, SIZE, 3) and group["images"].dtype == np.uint8
    assert group["images"].chunks == (CHUNK, SIZE, SIZE, 3)
    assert group["label"].fill_value == -1 and group["source_width"].dtype == np.int64
    assert group["ledger"].attrs["description"] == "idigdask build ledger"
    assert read_ledger(store.url).empty and store.next_run() == 0

    assert "label" in new_store(tmp_path, "str.zarr", label_kind="str").array_names()
    assert "label" not in new_store(tmp_path, "none.zarr").array_names()


def test_state_tells_a_store_from_nothing_a_half_store_and_a_stranger(tmp_path):
    def state(path: Path) -> str:
        return ImageStore(str(path)).state()

    assert state(tmp_path / "nothing") == "absent"
    (tmp_path / "empty").mkdir()
    assert state(tmp_path / "empty") == "absent"
    (tmp_path / "checked").mkdir()
    (tmp_path / "checked" / ".idigdask-write-check").write_bytes(b"ok")  # a check cut short
    assert state(tmp_path / "checked") == "absent"
    (tmp_path / "file").write_bytes(b"mine")
    assert state(tmp_path / "file") == "foreign"
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"mine")
    assert state(tmp_path / "photos") == "foreign"

    # a creation cut short: the group, maybe some arrays, no size and no ledger part
    half = zarr.open_group(str(tmp_path / "half.zarr"), mode="w", zarr_format=3)
    assert state(tmp_path / "half.zarr") == "partial"
    half.attrs["idigdask_version"] = "test"
    half.create_array("images", shape=(0, SIZE, SIZE, 3), dtype="uint8")
    assert state(tmp_path / "half.zarr") == "partial"
    ImageStore(str(tmp_path / "half.zarr")).remove()
    assert state(tmp_path / "half.zarr") == "absent"

    theirs = zarr.open_group(str(tmp_path / "theirs.zarr"), mode="w", zarr_format=3)
    theirs.attrs["project"] = "another tool"
    assert state(tmp_path / "theirs.zarr") == "foreign"
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    other.create_array("temperature", shape=(3,), dtype="float32")
    assert state(tmp_path / "other.zarr") == "foreign"


def test_a_half_store_with_a_committed_part_is_not_partial(tmp_path):
    store = new_store(tmp_path)
    store.write_ledger(ledger_part(["a@1"]), 0, 0, flat_histogram(1, 0))
    meta = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())
    del meta["attributes"]["size"]                    # no longer complete ...
    (tmp_path / "s.zarr" / "zarr.json").write_text(json.dumps(meta))
    assert store.state() == "foreign"                 # ... but never recreated over its ledger


def test_check_writable_fails_in_one_line(tmp_path):
    new_store(tmp_path).check_writable()
    ImageStore(str(tmp_path / "new" / "s.zarr")).check_writable()   # folders are made
    assert not list((tmp_path / "new" / "s.zarr").iterdir())        # and the check removed
    (tmp_path / "blocker").write_bytes(b"a file, not a folder")
    with pytest.raises(UserError, match="cannot write the store") as info:
        ImageStore(str(tmp_path / "blocker" / "s.zarr")).check_writable()
    assert "\n" not in str(info.value)


def test_open_dataset_reads_what_was_written_and_refuses_other_folders(tmp_path):
    store = new_store(tmp_path)
    append(store, images(4), ["a", "b", "c", "d"])
    store.update_attrs({"ledger_rows": 4})
    ds = open_dataset(store.url)
    assert ds.images.shape == (4, SIZE, SIZE, 3) and ds.attrs["ledger_rows"] == 4
    np.testing.assert_array_equal(ds.images.values, images(4))
    assert list(ds.media_uuid.values) == ["a", "b", "c", "d"]
    assert list(ds.sha256.values) == [""] * 4                        # unwritten: the fill

    with pytest.raises(UserError, match="no zarr.json"):
        open_dataset(str(tmp_path / "nothing"))
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    with pytest.raises(UserError, match="no 'images' array"):
        open_dataset(str(tmp_path / "g.zarr"))


# ------------------------------------------------------------ truncate and sync
def test_truncate_undoes_appends_past_the_last_commit(tmp_path):
    store = new_store(tmp_path)
    append(store, images(5), ["a", "b", "c", "d", "e"])
    assert not store.needs_truncate(5) and store.needs_truncate(4)
    store.truncate(4)                                 # the cut is inside chunk 1
    assert store.length() == 4 and not store.needs_truncate(4)
    group = zarr.open_group(store.url, mode="r")
    assert all(arr.shape[0] == 4 for _, arr in group.arrays())
    np.testing.assert_array_equal(group["images"][:], images(4))
    # appending again finds the fill value, exactly as if image 4 had never been written
    store.resize(6)
    np.testing.assert_array_equal(group["images"][4:], 0)
    assert list(zarr.open_group(store.url, mode="r")["media_uuid"][4:]) == ["", ""]

    store.truncate(2)                                 # chunk 1 lies wholly past the cut
    assert not (tmp_path / "s.zarr" / "images" / "c" / "1" / "0" / "0" / "0").exists()
    np.testing.assert_array_equal(zarr.open_group(store.url, mode="r")["images"][:], images(2))
    store.truncate(3)                                 # never longer: nothing to do
    assert store.length() == 2


def test_sync_flushes_the_chunks_of_the_images_and_the_metadata(tmp_path, monkeypatch):
    store = new_store(tmp_path)
    append(store, images(5), list("abcde"))
    root = Path(os.path.realpath(tmp_path / "s.zarr"))
    synced = record_fsyncs(monkeypatch)
    store.sync(3, 5)                                  # images 3 and 4: chunk 1 only
    assert str(root / "images" / "c" / "1" / "0" / "0" / "0") in synced
    assert str(root / "media_uuid" / "c" / "1") in synced
    assert str(root / "images" / "c" / "0" / "0" / "0" / "0") not in synced
    assert {str(root / "zarr.json"), str(root / "images" / "zarr.json"), str(root)} <= set(synced)
    assert str(root / "sha256" / "c" / "1") not in synced  # never written: no file to flush

    synced.clear()
    store.sync(0, 5, only_metadata=True)
    assert not [p for p in synced if f"{os.sep}c{os.sep}" in p]
    assert str(root / "images" / "zarr.json") in synced

    synced.clear()
    ImageStore("memory://nowhere.zarr").sync(0, 5)    # an object store: nothing to flush
    assert synced == []


# ------------------------------------------------------------------------ ledger
def test_write_ledger_commits_a_named_part_with_its_histogram(tmp_path, monkeypatch):
    store = new_store(tmp_path)
    ledger = Path(os.path.realpath(tmp_path / "s.zarr" / "ledger"))
    synced = record_fsyncs(monkeypatch)
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        synced.append(f"rename -> {dst}")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    store.write_ledger(ledger_part(["a@1", "b@2"]), 3, 12, flat_histogram(7, 128))
    part = ledger / "part-0003-000012.parquet"
    assert sorted(p.name for p in ledger.iterdir()) == [part.name, "zarr.json"]
    # the part is on disk before its rename, and the rename before the commit returns
    renamed = synced.index(f"rename -> {part}")
    assert f"{part}.tmp" in synced[:renamed] and str(ledger) in synced[renamed + 1:]
    meta = pq.read_schema(ledger / "part-0003-000012.parquet").metadata
    assert np.array_equal(json.loads(meta[HISTOGRAM_KEY]), flat_histogram(7, 128))
    assert store.next_run() == 4


def test_pixel_histogram_sums_the_parts_or_is_none_for_an_older_part(tmp_path):
    store = new_store(tmp_path)
    assert np.array_equal(store.pixel_histogram(), np.zeros((3, 256)))
    store.write_ledger(ledger_part(["a@1"]), 0, 0, flat_histogram(5, 64))
    store.write_ledger(ledger_part(["b@2"]), 0, 1, flat_histogram(5, 36) + flat_histogram(9, 1))
    total = store.pixel_histogram()
    assert total.shape == (3, 256) and total.dtype == np.int64
    assert total[:, 5].tolist() == [100] * 3 and total[:, 9].tolist() == [1] * 3
    assert total.sum() == 3 * 101
    # a part written before parts carried a histogram: the pixels must be read instead
    ledger_part(["c@3"]).to_parquet(tmp_path / "s.zarr" / "ledger" / "part-0001-000000.parquet")
    assert store.pixel_histogram() is None


def test_read_ledger_keeps_the_latest_row_of_a_key_in_catalog_order(tmp_path):
    store = new_store(tmp_path)
    store.write_ledger(ledger_part(["a@1", "b@2", "c@3"], ["ok", "failed", "ok"],
                                   reasons=[None, "http_503", None]), 0, 0, flat_histogram(1, 0))
    # the next run retries b, which now comes first, and retires c, gone from the catalog
    store.write_ledger(ledger_part(["b@2", "a@1", "c@3"], rows=[0, 1, 2],
                                   retired=[False, False, True]), 1, 0, flat_histogram(1, 0))
    ledger = read_ledger(store.url)
    assert ledger["row_key"].tolist() == ["b@2", "a@1"]
    assert ledger["status"].tolist() == ["ok", "ok"] and ledger["reason"].isna().all()
    assert list(ledger.index) == [0, 1]
    every = read_ledger(store.url, retired=True)
    assert every["row_key"].tolist() == ["b@2", "a@1", "c@3"]
    assert every["retired"].tolist() == [False, False, True]
    with pytest.raises(UserError, match="no zarr.json"):
        read_ledger(str(tmp_path / "nothing"))


def test_read_ledger_fills_the_columns_older_parts_lack(tmp_path):
    store = new_store(tmp_path)
    folder = tmp_path / "s.zarr" / "ledger"
    ledger_part(["a@1", "b@2"], older=True).to_parquet(folder / "part-0000-000000.parquet")
    only_old = read_ledger(store.url)
    assert only_old["retired"].dtype == bool and not only_old["retired"].any()
    assert only_old["warnings"].isna().all() and len(only_old) == 2

    # a newer part beside it: the older rows' missing values are filled, not NaN
    store.write_ledger(ledger_part(["c@3"], rows=[2], retired=[True]), 1, 0, flat_histogram(1, 0))
    every = read_ledger(store.url, retired=True)
    assert every["row_key"].tolist() == ["a@1", "b@2", "c@3"]
    assert every["retired"].dtype == bool and every["retired"].tolist() == [False, False, True]
    assert read_ledger(store.url)["row_key"].tolist() == ["a@1", "b@2"]


def test_read_ledger_of_a_store_without_parts_has_the_columns(tmp_path):
    ledger = read_ledger(new_store(tmp_path).url, retired=True)
    assert list(ledger.columns) == LEDGER_COLUMNS and ledger.empty
    assert ledger["retired"].dtype == bool


def test_ledger_counts_add_up():
    ledger = ledger_part(["a", "b", "c", "d", "e"], ["ok", "failed", "failed", "duplicate", "ok"],
                         reasons=[None, "http_404", "http_404", "exact", ""])
    counts = ledger_counts(ledger)
    assert counts["rows"] == 5
    assert counts["status"] == {"ok": 2, "failed": 2, "duplicate": 1, "excluded": 0}
    assert list(counts["status"]) == list(STATUSES)
    assert counts["reasons"] == {"duplicate: exact": 1, "failed: http_404": 2, "ok": 2}
    assert sum(counts["reasons"].values()) == counts["rows"] == sum(counts["status"].values())
    empty = ledger_counts(ledger.iloc[:0])
    assert empty == {"rows": 0, "status": dict.fromkeys(STATUSES, 0), "reasons": {}}


# --------------------------------------------------------------------- statistics
def _reference_histogram(block: np.ndarray) -> np.ndarray:
    flat = block.reshape(-1, 3)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(3)])


def test_channel_histograms_count_every_value_of_every_channel():
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (5, 7, 6, 3), dtype=np.uint8)
    got = channel_histograms(block)
    assert got.shape == (3, 256) and got.dtype == np.int64
    np.testing.assert_array_equal(got, _reference_histogram(block))
    np.testing.assert_array_equal(channel_histograms(block[0]), _reference_histogram(block[0]))
    strided = block[::2, :, ::-1]                      # not contiguous in memory
    np.testing.assert_array_equal(channel_histograms(strided), _reference_histogram(strided))
    wide = block.astype(np.int64)                      # another dtype: the numpy path
    np.testing.assert_array_equal(channel_histograms(wide), _reference_histogram(block))
    np.testing.assert_array_equal(channel_histograms(block[:0]), np.zeros((3, 256)))


def test_stats_of_histogram_are_the_pixels_mean_and_std():
    rng = np.random.default_rng(1)
    block = rng.integers(0, 256, (4, 9, 9, 3), dtype=np.uint8)
    mean, std = stats_of_histogram(channel_histograms(block))
    flat = block.reshape(-1, 3).astype("float64")
    np.testing.assert_allclose(mean, flat.mean(axis=0), atol=5e-5)
    np.testing.assert_allclose(std, flat.std(axis=0), atol=5e-5)
    assert all(round(v, 4) == v for v in mean + std)
    assert stats_of_histogram(flat_histogram(200, 10)) == ([200.0] * 3, [0.0] * 3)
    assert stats_of_histogram(np.zeros((3, 256))) == ([0.0] * 3, [0.0] * 3)
    one_empty = flat_histogram(10, 4)
    one_empty[2] = 0
    assert stats_of_histogram(one_empty) == ([0.0] * 3, [0.0] * 3)


def test_channel_stats_of_the_pixels_match_the_parts_histograms(tmp_path):
    import dask

    store = new_store(tmp_path)
    assert channel_stats(store.url) == ([0.0] * 3, [0.0] * 3)
    pixels = np.random.default_rng(2).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    append(store, pixels, list("abcde"))
    store.write_ledger(ledger_part(list("abcde")), 0, 0, channel_histograms(pixels))
    with dask.config.set(scheduler="sync"):           # a reduction, not a cluster
        read = channel_stats(store.url)
    assert read == stats_of_histogram(store.pixel_histogram())
