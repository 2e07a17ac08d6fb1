"""The ledger's promise through real builds: one row per catalog row, every ``ok`` row
pointing at its own pixels, whatever happens to the catalog or the process between runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

import idigdask
from idigdask.build import build_dataset
from idigdask.decode import decode_image
from idigdask.errors import UserError
from idigdask.store import ledger_counts
from idigdask.testing.media_server import MediaServer

from frames import catalog_frame

BIN = Path(sys.executable).parent
SIZE = 32


@pytest.fixture(scope="module")
def server(small_sheets):
    with MediaServer(small_sheets.folder) as srv:
        yield srv


@pytest.fixture(scope="module")
def urls(server, small_sheets):
    root = Path(small_sheets.folder)
    files = sorted((root / "images").glob("*.jpg"))
    return {server.url_for(p.relative_to(root).as_posix()): p.read_bytes() for p in files}


def assert_ok_rows_hold_their_own_pixels(store: str, body: dict[str, bytes]) -> None:
    ledger = idigdask.read_ledger(store)
    ds = idigdask.open_dataset(store)
    ok = ledger[ledger["status"] == "ok"]
    assert ok["image_index"].is_unique
    for uri, index in zip(ok["access_uri"], ok["image_index"]):
        expected = decode_image(body[uri], SIZE).pixels
        np.testing.assert_array_equal(ds.images.values[index], expected, err_msg=uri)
        assert ds.access_uri.values[index] == uri


def assert_accounts_for(store: str, catalog: pd.DataFrame) -> pd.DataFrame:
    ledger = idigdask.read_ledger(store)
    assert len(ledger) == len(catalog)
    assert ledger["catalog_row"].tolist() == list(range(len(catalog)))
    assert ledger["row_key"].is_unique
    assert idigdask.open_dataset(store).attrs["ledger_rows"] == len(ledger)
    return ledger


def test_repeated_id_with_an_excluded_row_keeps_both_rows(tmp_path, urls, dask_client):
    """Item 7: an id repeated on a row excluded for another reason is its own ledger row."""
    uri = list(urls)[:2]
    frame = catalog_frame([uri[0], None, uri[1]], uuids=["same", "same", "other"])
    frame.loc[1, "excluded"] = "no_uri"
    store = str(tmp_path / "s.zarr")
    build_dataset(frame, store, size=SIZE, client=dask_client)
    ledger = assert_accounts_for(store, frame)
    assert ledger["status"].tolist() == ["ok", "excluded", "ok"]

    # the same rows in another order: the ok row still points at its own pixels
    swapped = frame.iloc[[1, 0, 2]].reset_index(drop=True)
    build_dataset(swapped, store, size=SIZE, client=dask_client)
    ledger = assert_accounts_for(store, swapped)
    assert ledger["status"].tolist() == ["excluded", "ok", "ok"]
    assert_ok_rows_hold_their_own_pixels(store, urls)


def test_catalog_changed_between_runs(tmp_path, server, urls, dask_client):
    """Item 8: rows inserted, removed and reordered; rows without an id keyed by content."""
    uri = list(urls)
    first = catalog_frame(uri[:6], uuids=["a", None, "c", None, "e", "f"])
    store = str(tmp_path / "c.zarr")
    build_dataset(first, store, size=SIZE, dedup=False, client=dask_client)
    assert_accounts_for(store, first)

    # insert one new row at the front, remove "c" and one id-less row, reverse the rest
    rest = first.drop(index=[2, 3]).iloc[::-1]
    new = catalog_frame([uri[6]], uuids=[None])
    second = pd.concat([new, rest], ignore_index=True)
    seen = dict(server.requests)
    build_dataset(second, store, size=SIZE, dedup=False, client=dask_client)
    fetched = {k for k in server.requests if server.requests[k] != seen.get(k, 0)}
    assert fetched == {"/" + uri[6].split("/", 3)[3]}      # only the new row
    ledger = assert_accounts_for(store, second)
    assert ledger["access_uri"].tolist() == second["access_uri"].tolist()
    assert set(ledger["status"]) == {"ok"}
    assert_ok_rows_hold_their_own_pixels(store, urls)

    every = idigdask.read_ledger(store, retired=True)
    gone = every[every["retired"]]
    assert sorted(gone["access_uri"]) == sorted([uri[2], uri[3]])
    assert ledger_counts(idigdask.read_ledger(store))["rows"] == len(second)

    # a removed row that comes back is not fetched again, and counts again
    seen = dict(server.requests)
    build_dataset(first, store, size=SIZE, dedup=False, client=dask_client)
    assert dict(server.requests) == seen
    assert_accounts_for(store, first)
    assert_ok_rows_hold_their_own_pixels(store, urls)


def test_a_duplicate_of_an_image_that_left_the_catalog_is_stored(tmp_path, server, urls,
                                                                 dask_client):
    """A record at another URL, or another record with the same bytes: its own ok row."""
    uri = list(urls)
    store = str(tmp_path / "m.zarr")
    build_dataset(catalog_frame(uri[:2], uuids=["a", "b"]), store, size=SIZE, client=dask_client)
    moved = uri[1].replace("/images/", "/images/./")          # another URL, the same bytes
    urls_moved = {**urls, moved: urls[uri[1]]}
    second = catalog_frame([uri[0], moved], uuids=["a", "b"])
    build_dataset(second, store, size=SIZE, client=dask_client)
    ledger = assert_accounts_for(store, second)
    assert ledger["status"].tolist() == ["ok", "ok"]
    assert idigdask.open_dataset(store).sizes["image"] == 3   # images are only appended
    assert_ok_rows_hold_their_own_pixels(store, urls_moved)
    # another record with bytes a retired row held: stored with its own provenance
    third = catalog_frame([uri[0]], uuids=["z"])
    build_dataset(third, store, size=SIZE, client=dask_client)
    ledger = assert_accounts_for(store, third)
    assert ledger["status"].tolist() == ["ok"]
    ds = idigdask.open_dataset(store)
    assert ds.media_uuid.values[ledger.at[0, "image_index"]] == "z"
    assert_ok_rows_hold_their_own_pixels(store, urls)


def _store_files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in store.rglob("*")
            if p.is_file() and "ledger" not in p.parts and p.relative_to(store).as_posix() != "zarr.json"}


_KILL_AT_STEP = textwrap.dedent("""
    import os, sys
    from zarr.storage import LocalStore
    from idigdask.store import ImageStore

    store, n, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    done = [0]
    for name in ("set", "delete", "set_if_not_exists"):
        original = getattr(LocalStore, name)
        async def counted(self, *args, _original=original, **kwargs):
            done[0] += 1
            if done[0] == step:
                os._exit(9)                       # killed before this store operation
            return await _original(self, *args, **kwargs)
        setattr(LocalStore, name, counted)
    ImageStore(store).truncate(n)
    print(done[0])
""")


@pytest.mark.slow
def test_a_kill_at_every_step_of_truncate_loses_nothing(tmp_path, urls, dask_client):
    """Item 9: a resume after a kill anywhere in truncate is byte-identical to no kill."""
    frame = catalog_frame(list(urls)[:8])
    options = dict(size=SIZE, chunk_size=3, batch_size=1, wave_batches=2, dedup=False,
                   client=dask_client)
    whole = tmp_path / "whole.zarr"
    build_dataset(frame, str(whole), **options)
    crashed = tmp_path / "crashed.zarr"
    shutil.copytree(whole, crashed)
    parts = sorted((crashed / "ledger").glob("part-*.parquet"))
    for part in parts[2:]:              # the writes happened, their commits did not
        part.unlink()
    committed = len(idigdask.read_ledger(str(crashed)))
    assert committed == 4 and committed % 3                   # the cut is inside a chunk

    step = 1
    while True:
        trial = tmp_path / f"trial-{step}.zarr"
        shutil.copytree(crashed, trial)
        done = subprocess.run([sys.executable, "-c", _KILL_AT_STEP, str(trial), str(committed),
                               str(step)], capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 9), done.stderr
        # whatever was left, the committed images are intact ...
        images = zarr.open_group(str(trial), mode="r")["images"]
        np.testing.assert_array_equal(images[:committed],
                                      zarr.open_group(str(whole), mode="r")["images"][:committed])
        # ... and a resume writes exactly what an uninterrupted build wrote
        build_dataset(frame, str(trial), **options)
        resumed, reference = _store_files(trial), _store_files(whole)
        assert resumed.keys() == reference.keys(), step
        assert [k for k in reference if reference[k] != resumed[k]] == [], step
        assert_accounts_for(str(trial), frame)
        if done.returncode == 0:
            assert int(done.stdout) < step
            break
        step += 1
    assert step > 5                                           # every array's steps were tried


def test_commits_are_flushed_before_the_rename(tmp_path, urls, dask_client, monkeypatch):
    """Item 10: a part is renamed into place only after its pixels and itself are on disk."""
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst, *args, **kwargs):
        events.append(("rename", str(dst)))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    store = tmp_path / "f.zarr"
    build_dataset(catalog_frame(list(urls)[:4]), str(store), size=SIZE, chunk_size=2,
                  batch_size=1, wave_batches=2, dedup=False, client=dask_client)
    renames = [i for i, (kind, path) in enumerate(events)
               if kind == "rename" and path.endswith(".parquet")]
    assert len(renames) >= 2
    synced = [path for kind, path in events if kind == "fsync"]
    for i in renames:
        before = {path for kind, path in events[:i] if kind == "fsync"}
        assert events[i][1] + ".tmp" in before
    ledger = idigdask.read_ledger(str(store))
    for index in ledger["image_index"]:
        chunk = store / "images" / "c" / str(index // 2) / "0" / "0" / "0"
        assert str(chunk) in synced
    assert str(store / "ledger") in synced


def test_a_folder_that_is_not_a_store_is_refused(tmp_path, urls, dask_client):
    """Item 11: -o DIR holding other files is refused in one line, and nothing is written."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(UserError, match="not an idigdask store"):
        build_dataset(catalog_frame(list(urls)[:1]), str(folder), size=SIZE, client=dask_client)
    assert [p.name for p in folder.iterdir()] == ["holiday.jpg"]

    catalog = tmp_path / "urls.csv"
    pd.DataFrame({"url": list(urls)[:1]}).to_csv(catalog, index=False)
    done = subprocess.run([str(BIN / "idigdask"), "build", str(catalog), "-o", str(folder),
                           "--size", "32"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "not an idigdask store" in done.stderr
    # an empty folder is fine
    (tmp_path / "empty").mkdir()
    build_dataset(catalog_frame(list(urls)[:1]), str(tmp_path / "empty"), size=SIZE,
                  client=dask_client)


@pytest.mark.parametrize("cut", ["group", "arrays"])
def test_a_half_created_store_is_created_again(tmp_path, urls, dask_client, cut):
    """Item 11: a store whose creation was cut short is started again, not stuck."""
    store = tmp_path / "half.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=3)
    if cut == "arrays":
        group.create_array("images", shape=(0, SIZE, SIZE, 3), chunks=(4, SIZE, SIZE, 3),
                           dtype="uint8")
    frame = catalog_frame(list(urls)[:3])
    build_dataset(frame, str(store), size=SIZE, client=dask_client)
    assert_accounts_for(str(store), frame)
    assert_ok_rows_hold_their_own_pixels(str(store), urls)


def test_a_zarr_group_of_someone_else_is_refused(tmp_path, urls, dask_client):
    store = tmp_path / "theirs.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=3)
    group.attrs["project"] = "another tool"
    group.create_array("temperature", shape=(3,), dtype="float32")
    with pytest.raises(UserError, match="not an idigdask store"):
        build_dataset(catalog_frame(list(urls)[:1]), str(store), size=SIZE, client=dask_client)
    assert "temperature" in [name for name, _ in zarr.open_group(str(store), mode="r").arrays()]


def test_a_store_of_an_older_format_is_read_not_extended(tmp_path, server, urls, dask_client):
    """A store whose keys and pixels an older version made: read as it is, resume refused."""
    frame = catalog_frame(list(urls)[:3], uuids=["a", None, "c"])
    store = tmp_path / "old.zarr"
    build_dataset(frame, str(store), size=SIZE, client=dask_client)
    for part in (store / "ledger").glob("part-*.parquet"):     # as version 1 wrote them
        old = pd.read_parquet(part)
        old["row_key"] = [u if u else f"row#{r}" for u, r in zip(old["media_uuid"], old["catalog_row"])]
        old.drop(columns=["warnings", "retired"]).to_parquet(part, index=False)
    meta = json.loads((store / "zarr.json").read_text())
    del meta["attributes"]["format_version"]
    (store / "zarr.json").write_text(json.dumps(meta))

    ledger = idigdask.read_ledger(str(store))
    assert len(ledger) == 3 and not ledger["retired"].any() and ledger["warnings"].isna().all()
    assert idigdask.open_dataset(str(store)).sizes["image"] == 3
    seen = dict(server.requests)
    with pytest.raises(UserError, match="older idigdask .store format 1, now 2.*new store"):
        build_dataset(frame, str(store), size=SIZE, client=dask_client)
    assert dict(server.requests) == seen
