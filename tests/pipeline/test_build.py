"""The build stage end to end: a real HTTP server, a real LocalCluster, a real Zarr store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import idigdask
from idigdask.build import build_dataset
from idigdask.decode import decode_image
from idigdask.errors import UserError
from idigdask.store import ImageStore, channel_histograms, channel_stats
from idigdask.testing.media_server import MediaServer

from frames import catalog_frame

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(small_sheets):
    with MediaServer(small_sheets.folder) as srv:
        yield srv


@pytest.fixture(scope="module")
def sheet_files(small_sheets):
    return sorted((Path(small_sheets.folder) / "images").glob("*.jpg"))


def rel(path: Path, root) -> str:
    return path.relative_to(root).as_posix()


def test_build_accounts_for_every_row(tmp_path, server, sheet_files, small_sheets, dask_client):
    root = Path(small_sheets.folder)
    good = [server.url_for(rel(p, root)) for p in sheet_files[:6]]
    faults = {
        "transient_503": server.url_for(f"fault/fail/503/2/{rel(sheet_files[6], root)}"),
        "throttled": server.url_for(f"fault/throttle/1/{rel(sheet_files[7], root)}?after=0"),
        "redirected": server.url_for(f"fault/chain/2/{rel(sheet_files[8], root)}"),
        "missing": server.url_for("fault/status/404/x.jpg"),
        "html": server.url_for("fault/html/page.jpg"),
        "short": server.url_for(f"fault/short/{rel(sheet_files[9], root)}"),
        "huge": server.url_for(f"fault/huge/{5 * 2**20}"),
        "ftp": "ftp://example.org/sheet.jpg",
    }
    uris = good + list(faults.values())
    frame = catalog_frame(uris, labels=[i % 2 for i in range(len(uris))])
    frame["recordset"] = [f"rs-{i % 3}" for i in range(len(frame))]
    frame.loc[len(frame)] = frame.iloc[0]          # a repeated media uuid from the catalog
    frame.loc[len(frame) - 1, "excluded"] = "duplicate_media_uuid"
    store = tmp_path / "s.zarr"

    result = build_dataset(frame, str(store), size=64, chunk_size=4, batch_size=3,
                           timeout=5, retries=3, max_bytes=2**20, client=dask_client)

    ledger = idigdask.read_ledger(str(store))
    assert len(ledger) == len(frame)
    assert sum(result.counts["status"].values()) == len(frame)
    firsts = ledger[ledger["reason"] != "duplicate_media_uuid"]
    by_uri = dict(zip(firsts["access_uri"], zip(firsts["status"], firsts["reason"])))
    for url in good + [faults["transient_503"], faults["throttled"], faults["redirected"]]:
        assert by_uri[url][0] == "ok", url
    assert by_uri[faults["missing"]] == ("failed", "http_404")
    assert by_uri[faults["html"]] == ("failed", "not_an_image")
    assert by_uri[faults["short"]] == ("failed", "truncated")
    assert by_uri[faults["huge"]] == ("failed", "too_large")
    assert by_uri[faults["ftp"]] == ("excluded", "scheme_not_allowed:ftp")
    assert (ledger["reason"] == "duplicate_media_uuid").sum() == 1
    transient = ledger.set_index("access_uri").loc[faults["transient_503"]]
    assert transient["attempts"] == 3

    ds = idigdask.open_dataset(str(store))
    assert ds.images.shape == (9, 64, 64, 3) and ds.images.dtype == np.uint8
    assert ds.images.data.chunks[0][0] == 4
    assert list(ds.media_uuid.values) == list(ledger.loc[ledger.status == "ok", "media_uuid"])
    assert set(ds.label.values) <= {0, 1}
    # the provider of every row, in the ledger and beside each image
    assert list(ledger["recordset"]) == list(frame["recordset"])
    assert list(ds.recordset.values) == list(ledger.loc[ledger.status == "ok", "recordset"])
    for i, url in enumerate(ds.access_uri.values[:6]):
        with Image.open(sheet_files[good.index(url)]) as img:
            assert (ds.source_width.values[i], ds.source_height.values[i]) == img.size
    assert len(ds.attrs["channel_mean"]) == 3 and ds.attrs["size"] == 64
    pix = ds.images.values.astype(float)
    assert np.allclose(ds.attrs["channel_mean"], pix.mean(axis=(0, 1, 2)), atol=0.01)
    assert np.allclose(ds.attrs["channel_std"], pix.std(axis=(0, 1, 2)), atol=0.01)
    # the build's figures (from its write tasks) are those of a full read of the store
    assert (ds.attrs["channel_mean"], ds.attrs["channel_std"]) == channel_stats(str(store))

    # the pixels of a known image are its expected resize
    first = ledger.loc[ledger.access_uri == good[0]].iloc[0]
    expected = decode_image(sheet_files[0].read_bytes(), 64, resize_mode="pad").pixels
    np.testing.assert_array_equal(ds.images.values[first.image_index], expected)


def test_duplicates_are_not_stored_twice(tmp_path, server, sheet_files, small_sheets, dask_client):
    root = Path(small_sheets.folder)
    original = sheet_files[0]
    reencoded = tmp_path / "www" / "copy.jpg"
    reencoded.parent.mkdir()
    Image.open(original).save(reencoded, quality=70)     # same picture, other bytes
    with MediaServer(tmp_path / "www") as other:
        uris = [server.url_for(rel(original, root)), server.url_for(rel(original, root)),
                other.url_for("copy.jpg"), server.url_for(rel(sheet_files[1], root))]
        frame = catalog_frame(uris)
        build_dataset(frame, str(tmp_path / "d.zarr"), size=64, client=dask_client)
        kept = build_dataset(frame, str(tmp_path / "k.zarr"), size=64, keep_duplicates=True,
                             client=dask_client)
    ledger = idigdask.read_ledger(str(tmp_path / "d.zarr"))
    assert list(ledger["status"]) == ["ok", "duplicate", "duplicate", "ok"]
    assert list(ledger["reason"][1:3]) == ["exact", "near"]
    assert set(ledger["duplicate_of"][1:3]) == {ledger["media_uuid"][0]}
    assert idigdask.open_dataset(str(tmp_path / "d.zarr")).sizes["image"] == 2
    assert kept.images == 4


def test_hash_mismatch_and_local_policy(tmp_path, sheet_files, dask_client):
    import hashlib

    good = sheet_files[0]
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    frame = catalog_frame([str(good), str(good), good.as_uri()],
                          hashes=[("SHA-256", digest), ("SHA-256", "0" * 64), None])
    frame["media_uuid"] = ["a", "b", "c"]
    store = tmp_path / "h.zarr"
    build_dataset(frame, str(store), size=32, dedup=False, client=dask_client)
    ledger = idigdask.read_ledger(str(store)).set_index("media_uuid")
    assert ledger.loc["a", "status"] == "ok" and ledger.loc["c", "status"] == "ok"
    assert (ledger.loc["b", "status"], ledger.loc["b", "reason"]) == ("failed", "hash_mismatch")

    build_dataset(frame, str(tmp_path / "n.zarr"), size=32, allow_local=False,
                  client=dask_client)
    refused = idigdask.read_ledger(str(tmp_path / "n.zarr"))
    assert set(refused["status"]) == {"excluded"}
    assert set(refused["reason"]) == {"scheme_not_allowed:file"}


def test_resume_fetches_only_what_is_missing(tmp_path, server, sheet_files, small_sheets,
                                            dask_client):
    root = Path(small_sheets.folder)
    flaky = f"fault/fail/500/always/{rel(sheet_files[3], root)}"
    uris = [server.url_for(rel(p, root)) for p in sheet_files[:3]] + [server.url_for(flaky)]
    frame = catalog_frame(uris)
    store = str(tmp_path / "r.zarr")
    build_dataset(frame, store, size=32, retries=0, client=dask_client)
    assert idigdask.read_ledger(store)["status"].tolist() == ["ok", "ok", "ok", "failed"]
    seen = dict(server.requests)

    # same catalog again: only the failed row is fetched again
    build_dataset(frame, store, size=32, retries=0, client=dask_client)
    fetched = {k: server.requests[k] - seen.get(k, 0) for k in server.requests}
    assert {k for k, v in fetched.items() if v} == {"/" + flaky}
    # --no-retry-failed: nothing at all
    seen = dict(server.requests)
    build_dataset(frame, store, size=32, retry_failed=False, client=dask_client)
    assert dict(server.requests) == seen

    # new rows are appended without refetching the rest
    more = catalog_frame(uris + [server.url_for(rel(sheet_files[4], root))],
                         uuids=list(frame["media_uuid"]) + ["new-row"])
    result = build_dataset(more, store, size=32, retries=0, client=dask_client)
    ds = idigdask.open_dataset(store)
    assert ds.sizes["image"] == 4 and ds.media_uuid.values[-1] == "new-row"
    assert result.counts["rows"] == 5
    # the channel statistics add the new images to the committed parts' histograms
    stats = (ds.attrs["channel_mean"], ds.attrs["channel_std"])
    assert stats == channel_stats(store)
    np.testing.assert_array_equal(ImageStore(store).pixel_histogram(),
                                  channel_histograms(ds.images.values))


def test_stats_of_a_store_whose_ledger_has_no_histograms(tmp_path, sheet_files, dask_client):
    store = str(tmp_path / "old.zarr")
    build_dataset(catalog_frame([str(p) for p in sheet_files[:3]]), store, size=32,
                  dedup=False, client=dask_client)
    for part in (tmp_path / "old.zarr" / "ledger").glob("part-*.parquet"):
        pd.read_parquet(part).to_parquet(part, index=False)   # as parts were written before
    assert ImageStore(store).pixel_histogram() is None
    more = catalog_frame([str(p) for p in sheet_files[:5]])
    build_dataset(more, store, size=32, dedup=False, client=dask_client)  # reads the pixels
    ds = idigdask.open_dataset(store)
    assert ds.sizes["image"] == 5
    assert (ds.attrs["channel_mean"], ds.attrs["channel_std"]) == channel_stats(store)


def test_unwritable_store_fails_before_fetching(tmp_path, server, sheet_files, small_sheets):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    frame = catalog_frame([server.url_for(rel(sheet_files[0], Path(small_sheets.folder)))])
    before = sum(server.requests.values())
    with pytest.raises(UserError, match="cannot write the store"):
        build_dataset(frame, str(blocker / "s.zarr"), size=32)
    assert sum(server.requests.values()) == before


def test_mismatched_resume_is_a_user_error(tmp_path, sheet_files, dask_client):
    frame = catalog_frame([str(sheet_files[0])])
    build_dataset(frame, str(tmp_path / "m.zarr"), size=32, client=dask_client)
    with pytest.raises(UserError, match="size 32"):
        build_dataset(frame, str(tmp_path / "m.zarr"), size=64, client=dask_client)


def test_worker_killed_during_build(tmp_path, server, sheet_files, small_sheets):
    """A worker dies mid-build; its nanny restarts it and nothing is lost or doubled."""
    from distributed import Client, LocalCluster

    root = Path(small_sheets.folder)
    uris = [server.url_for(f"fault/slow/0.15/{rel(p, root)}") for p in sheet_files] * 2
    frame = catalog_frame(uris)
    store = str(tmp_path / "w.zarr")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.setdefault("r", build_dataset(
            frame, store, size=32, batch_size=2, wave_batches=2, dedup=False,
            client=client)))
        thread.start()
        deadline = time.time() + 30
        while not list(Path(store, "ledger").glob("part-*.parquet")) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(pids[0], signal.SIGKILL)
        thread.join(120)
    ledger = idigdask.read_ledger(store)
    assert len(ledger) == len(frame) and set(ledger["status"]) == {"ok"}
    ds = idigdask.open_dataset(store)
    assert ds.sizes["image"] == len(frame)
    assert sorted(ds.media_uuid.values) == sorted(frame["media_uuid"])


def _store_files(store: Path) -> dict[str, bytes]:
    skip = {"zarr.json"}  # the root's attributes carry the creation time
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in store.rglob("*")
            if p.is_file() and "ledger" not in p.parts and p.relative_to(store).as_posix() not in skip}


@pytest.mark.slow
def test_killed_build_resumes_to_identical_bytes(tmp_path, server, sheet_files, small_sheets):
    root = Path(small_sheets.folder)
    uris = [server.url_for(f"fault/slow/0.05/{rel(p, root)}") for p in sheet_files]
    catalog = tmp_path / "catalog.csv"
    pd.DataFrame({"url": uris, "id": [f"m{i:03d}" for i in range(len(uris))]}).to_csv(
        catalog, index=False)
    args = [str(BIN / "idigdask"), "build", str(catalog), "--url-column", "url",
            "--id-column", "id", "--size", "48", "--chunk-size", "3", "--batch-size", "2",
            "--wave-batches", "1", "--workers", "2", "--no-progress", "--no-dedup"]
    subprocess.run(args + ["-o", str(tmp_path / "whole.zarr")], check=True,
                   capture_output=True, timeout=180)

    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen(args + ["-o", str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while len(list((killed / "ledger").glob("part-*.parquet"))) < 3 and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)        # the build and its workers, at once
    proc.wait(30)
    assert len(list((killed / "ledger").glob("part-*.parquet"))) < len(uris) / 2
    subprocess.run(args + ["-o", str(killed)], check=True, capture_output=True, timeout=180)

    whole, resumed = _store_files(tmp_path / "whole.zarr"), _store_files(killed)
    assert whole.keys() == resumed.keys()
    assert [k for k in whole if whole[k] != resumed[k]] == []
    ledger = idigdask.read_ledger(str(killed))
    assert len(ledger) == len(uris) and set(ledger["status"]) == {"ok"}


def test_cli_build_and_ledger(tmp_path, server, sheet_files, small_sheets, dask_client):
    root = Path(small_sheets.folder)
    catalog = tmp_path / "urls.csv"
    urls = [server.url_for(rel(p, root)) for p in sheet_files[:4]] + \
        [server.url_for("fault/status/410/gone.jpg")]
    pd.DataFrame({"url": urls}).to_csv(catalog, index=False)
    store = tmp_path / "cli.zarr"
    done = subprocess.run([str(BIN / "idigdask"), "build", str(catalog), "-o", str(store),
                           "--size", "32", "--json", "--scheduler",
                           dask_client.scheduler.address],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["images"] == 4 and summary["rows"] == 5
    assert "dashboard" in done.stderr and dask_client.scheduler.address in done.stderr
    shown = subprocess.run([str(BIN / "idigdask"), "ledger", str(store), "--json"],
                           capture_output=True, text=True, timeout=60)
    counts = json.loads(shown.stdout)
    assert counts["status"] == {"ok": 4, "failed": 1, "duplicate": 0, "excluded": 0}
    assert counts["reasons"]["failed: http_410"] == 1
    assert sum(counts["status"].values()) == counts["rows"] == 5


def test_cli_user_mistakes_exit_2(tmp_path):
    for argv in (["build", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "x.zarr")],
                 ["build", "x.csv", "-o", "y.zarr", "--resize-mode", "squash"],
                 ["build", "x.csv", "-o", "y.zarr", "--storage-options", "{bad"],
                 ["ledger", str(tmp_path)]):
        done = subprocess.run([str(BIN / "idigdask"), *argv], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2, (argv, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_channel_histograms_count_every_value():
    block = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    expected = np.stack([np.bincount(block[..., c].ravel(), minlength=256) for c in range(3)])
    np.testing.assert_array_equal(channel_histograms(block), expected)
    strided = block[:, ::2]                    # not contiguous: counted all the same
    np.testing.assert_array_equal(channel_histograms(strided), np.stack(
        [np.bincount(strided[..., c].ravel(), minlength=256) for c in range(3)]))


def test_catalog_store_and_media_each_get_their_own_storage_options(
        tmp_path, server, sheet_files, small_sheets, dask_client):
    root = Path(small_sheets.folder)
    pd.DataFrame({"url": [server.url_for(rel(p, root)) for p in sheet_files[:2]]}).to_csv(
        root / "catalog-options.csv", index=False)
    store = str(tmp_path / "local.zarr")
    # options for a remote store given with a plain local one: they apply to nothing
    # there, and zarr (which refuses options with a path) never sees them
    result = build_dataset(
        server.url_for("catalog-options.csv"), store, size=32, client=dask_client,
        catalog_options={"url_column": "url"}, storage_options={"anon": True},
        catalog_storage_options={"headers": {"X-Catalog": "yes"}},
        media_storage_options={"headers": {"X-Media": "yes"}})
    assert result.counts["status"]["ok"] == 2
    log = [(path, {k.lower(): v for k, v in headers.items()}) for path, headers in server.request_log]
    catalog = [h for path, h in log if path.endswith("catalog-options.csv")]
    media = [h for path, h in log if path.endswith(".jpg") and "x-media" in h]
    assert catalog and all(h.get("x-catalog") == "yes" and "x-media" not in h for h in catalog)
    assert len(media) >= 2 and all("x-catalog" not in h for h in media)
    assert idigdask.open_dataset(store, storage_options={"anon": True}).sizes["image"] == 2
    assert len(idigdask.read_ledger(store, storage_options={"anon": True})) == 2
    assert channel_stats(store, {"anon": True}) == tuple(
        idigdask.open_dataset(store).attrs[k] for k in ("channel_mean", "channel_std"))


def test_cli_catalog_storage_options(tmp_path):
    done = subprocess.run([str(BIN / "idigdask"), "build", "x.csv", "-o", str(tmp_path / "y.zarr"),
                           "--catalog-storage-options", "[1]"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--catalog-storage-options must be a JSON object" in done.stderr


def test_decode_warnings_and_memory_errors_are_ledger_rows(tmp_path, sheet_files, dask_client,
                                                           monkeypatch):
    from imagecases import jpeg_insert

    from idigdask import process
    from idigdask.build import BuildOptions

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(jpeg_insert(sheet_files[0].read_bytes(), 0xDB, b"\x00junk"))
    frame = catalog_frame([str(junk), str(sheet_files[1])])
    store = str(tmp_path / "warn.zarr")
    build_dataset(frame, store, size=32, client=dask_client)
    ledger = idigdask.read_ledger(store)
    assert ledger["status"].tolist() == ["ok", "ok"]
    assert ledger.at[0, "warnings"] == "jpeg_extraneous_bytes" and pd.isna(ledger.at[1, "warnings"])

    # an image too big for the worker's memory is a failed row; the build goes on
    real = process.decode_image

    def short_of_memory(data, *args, **kwargs):
        if data == sheet_files[2].read_bytes():
            raise MemoryError
        return real(data, *args, **kwargs)

    monkeypatch.setattr(process, "decode_image", short_of_memory)
    result = process.process_batch(catalog_frame([str(sheet_files[2]), str(sheet_files[3])]),
                                   BuildOptions(size=32, allow_local=True))
    assert result.ledger["status"].tolist() == ["failed", "ok"]
    assert result.ledger["reason"].tolist()[0] == "out_of_memory"
