"""Builds against a real Ceph RADOS Gateway: media and stores in buckets, outages.

The media of iDigBio live in Ceph and are served both through its S3 API and as plain
HTTP; stores may be written to a bucket too. These tests build from and into the
gateway that ``ci/ceph.sh`` runs, stop it in the middle of a build, and check that
nothing is lost: every catalog row ends ``ok`` once the gateway is back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import idigdask
from idigdask.build import build_dataset
from idigdask.decode import decode_image
from idigdask.errors import UserError
from idigdask.testing.ceph import CephGateway
from idigdask.testing.media_server import MediaServer

pytestmark = [pytest.mark.ceph, pytest.mark.timeout(120)]

BIN = Path(sys.executable).parent
SIZE = 32
N_MEDIA = 8  # sheets uploaded to the media bucket


def catalog_frame(uris: list[str], uuids: list[str], labels: list[int] | None = None,
                  ) -> pd.DataFrame:
    """A catalog in the normalized media schema (the columns a build reads)."""
    n = len(uris)
    frame = pd.DataFrame({
        "media_uuid": uuids,
        "access_uri": uris,
        "format": ["image/jpeg"] * n,
        "record_uuids": [[f"rec-{u}"] for u in uuids],
        "hash_function": [None] * n,
        "hash_value": [None] * n,
        "excluded": [None] * n,
    })
    if labels is not None:
        frame["label"] = labels
    return frame


def expected_pixels(path: str | Path) -> np.ndarray:
    return decode_image(Path(path).read_bytes(), SIZE, resize_mode="pad").pixels


@pytest.fixture(scope="module")
def sheets(small_sheets) -> list[Path]:
    return [Path(p) for p in small_sheets.paths]


@pytest.fixture(scope="module")
def media_bucket(ceph: CephGateway, sheets, tmp_path_factory):
    """A public-read bucket holding the first N_MEDIA sheets as ``images/<name>``."""
    folder = tmp_path_factory.mktemp("upload")
    for path in sheets[:N_MEDIA]:
        shutil.copy(path, folder / path.name)
    name = ceph.make_bucket(f"media-{uuid.uuid4().hex[:12]}", public_read=True)
    ceph.upload_folder(folder, name, "images")
    yield name
    ceph.remove_bucket(name)


@pytest.fixture(scope="module")
def server(small_sheets):
    with MediaServer(Path(small_sheets.folder)) as srv:
        yield srv


def http_rel(path: Path) -> str:
    return f"images/{path.name}"


def ledger_statuses(store: str, storage_options: dict | None = None) -> dict[str, int]:
    return idigdask.read_ledger(store, storage_options)["status"].value_counts().to_dict()


# --------------------------------------------------------------- media in a bucket
def test_media_over_s3_and_public_http_give_the_same_pixels(ceph, media_bucket, sheets,
                                                            dask_client, tmp_path):
    names = [p.name for p in sheets[:N_MEDIA]]
    uuids = [f"m{i:02d}" for i in range(N_MEDIA)]
    s3_uris = [f"s3://{media_bucket}/images/{n}" for n in names]
    http_uris = [ceph.public_url(media_bucket, f"images/{n}") for n in names]
    missing = ["s3://" + media_bucket + "/images/missing.jpg",
               ceph.public_url(media_bucket, "images/missing.jpg")]

    via_s3 = build_dataset(catalog_frame(s3_uris + missing[:1], uuids + ["gone"]),
                           str(tmp_path / "s3.zarr"), size=SIZE, chunk_size=4, batch_size=3,
                           media_storage_options=ceph.storage_options, retries=1,
                           dedup=False, client=dask_client, progress=False)
    via_http = build_dataset(catalog_frame(http_uris + missing[1:], uuids + ["gone"]),
                             str(tmp_path / "http.zarr"), size=SIZE, chunk_size=4,
                             batch_size=3, retries=1, dedup=False, client=dask_client,
                             progress=False)

    assert via_s3.images == via_http.images == N_MEDIA
    a = idigdask.open_dataset(str(tmp_path / "s3.zarr"))
    b = idigdask.open_dataset(str(tmp_path / "http.zarr"))
    assert list(a.media_uuid.values) == list(b.media_uuid.values) == uuids
    np.testing.assert_array_equal(a.images.values, b.images.values)
    np.testing.assert_array_equal(a.images.values[2], expected_pixels(sheets[2]))
    assert list(a.sha256.values) == list(b.sha256.values)
    assert list(a.access_uri.values) == s3_uris
    gone_s3 = idigdask.read_ledger(str(tmp_path / "s3.zarr")).set_index("media_uuid").loc["gone"]
    gone_http = idigdask.read_ledger(str(tmp_path / "http.zarr")).set_index("media_uuid").loc["gone"]
    assert (gone_s3["status"], gone_s3["reason"]) == ("failed", "not_found")
    assert gone_http["status"] == "failed"
    assert gone_http["reason"] in ("http_404", "http_403")
    assert ceph.secret not in " ".join(map(str, gone_s3.values))


def test_private_bucket_needs_credentials(ceph, bucket, sheets, dask_client, tmp_path):
    """Over plain HTTP a private object is refused (403); through s3fs it is read."""
    ceph.filesystem().put(str(sheets[0]), f"{bucket}/a.jpg")
    frame = catalog_frame([ceph.public_url(bucket, "a.jpg"), f"s3://{bucket}/a.jpg"],
                          ["plain", "signed"])
    build_dataset(frame, str(tmp_path / "p.zarr"), size=SIZE, retries=0, dedup=False,
                  media_storage_options={"s3": ceph.storage_options},
                  client=dask_client, progress=False)
    ledger = idigdask.read_ledger(str(tmp_path / "p.zarr")).set_index("media_uuid")
    assert (ledger.loc["plain", "status"], ledger.loc["plain", "reason"]) == ("failed", "http_403")
    assert ledger.loc["plain", "attempts"] == 1
    assert ledger.loc["signed", "status"] == "ok"


# ------------------------------------------------------------------ store in a bucket
def test_store_in_a_bucket_reopens_and_resumes(ceph, bucket, server, sheets, dask_client,
                                                tmp_path, s3):
    uris = [server.url_for(http_rel(p)) for p in sheets[:6]] + \
        [server.url_for("fault/status/404/nothing.jpg")]
    uuids = [f"m{i:02d}" for i in range(len(uris))]
    frame = catalog_frame(uris, uuids, labels=[i % 2 for i in range(len(uris))])
    url = f"s3://{bucket}/sheets.zarr"
    options = ceph.storage_options
    local = str(tmp_path / "local.zarr")
    kwargs = dict(size=SIZE, chunk_size=4, batch_size=2, retries=0, dedup=False,
                  client=dask_client, progress=False)

    # the store's storage options also reach the HTTP media: they must do no harm there
    result = build_dataset(frame, url, storage_options=options, **kwargs)
    build_dataset(frame, local, **kwargs)
    assert result.images == 6 and result.counts["rows"] == 7
    assert result.summary()["store"] == url

    ds = idigdask.open_dataset(url, storage_options=options)
    ref = idigdask.open_dataset(local)
    assert ds.images.shape == (6, SIZE, SIZE, 3)
    assert ds.images.data.chunks[0] == (4, 2)       # lazy, chunked like the store
    np.testing.assert_array_equal(ds.images.values, ref.images.values)
    for name in ("media_uuid", "access_uri", "sha256", "label", "source_width"):
        assert list(ds[name].values) == list(ref[name].values), name
    assert ds.attrs["channel_mean"] == ref.attrs["channel_mean"]
    ledger = idigdask.read_ledger(url, options)
    assert len(ledger) == 7 and ledger_statuses(url, options) == {"ok": 6, "failed": 1}
    s3.invalidate_cache()
    leftovers = [k for k in s3.find(bucket) if k.endswith((".tmp", ".idigdask-write-check"))]
    assert leftovers == []

    # resume with the same catalog: nothing is fetched but the failed row
    before = server.requests
    again = build_dataset(frame, url, storage_options=options, **kwargs)
    fetched = {k: v - before.get(k, 0) for k, v in server.requests.items()
               if v != before.get(k, 0)}
    assert fetched == {"/fault/status/404/nothing.jpg": 1}
    assert again.images == 6 and again.processed == 1

    # the ledger command reads the store in the bucket, and shows no secret
    done = subprocess.run([str(BIN / "idigdask"), "ledger", url, "--json", "--storage-options",
                           json.dumps(options)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == {"ok": 6, "failed": 1, "duplicate": 0,
                                                 "excluded": 0}
    assert ceph.secret not in done.stdout + done.stderr


@pytest.mark.slow
def test_train_and_predict_from_a_store_in_a_bucket(ceph, bucket, server, small_sheets,
                                                    sheets, dask_client, tmp_path):
    pytest.importorskip("keras")
    from idigdask.predict import predict
    from idigdask.train import train

    url = f"s3://{bucket}/train.zarr"
    catalog = tmp_path / "labelled.csv"
    pd.DataFrame({"url": [server.url_for(http_rel(p)) for p in sheets],
                  "id": [f"s{i:02d}" for i in range(len(sheets))],
                  "record_uuid": [f"rec-{i:02d}" for i in range(len(sheets))],
                  "stained": list(small_sheets.stained)}).to_csv(catalog, index=False)
    build_dataset(str(catalog), url, storage_options=ceph.storage_options, size=SIZE,
                  chunk_size=8, dedup=False, client=dask_client, progress=False,
                  catalog_options={"id_column": "id", "label_column": "stained"})
    result = train(url, storage_options=ceph.storage_options, epochs=1, batch_size=8,
                   out=tmp_path / "model", client=False, verbose=0, augment=False)
    assert result.epochs == 1 and sorted(map(str, result.classes)) == ["0", "1"]
    # scored in this process, where Keras is already loaded
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        table = predict(tmp_path / "model", url, storage_options=ceph.storage_options,
                        out=None, client=client)
    assert len(table) == len(sheets)
    assert set(table["status"]) == {"ok"}
    scores = table[[c for c in table.columns if c.startswith("score_")]].to_numpy()
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert ceph.secret not in (tmp_path / "model" / "config.json").read_text()


def test_remote_catalog_into_a_store_in_a_bucket(ceph, bucket, server, sheets, tmp_path,
                                                  dask_client):
    (tmp_path / "site").mkdir()
    pd.DataFrame({"url": [server.url_for(http_rel(p)) for p in sheets[:2]]}).to_csv(
        tmp_path / "site" / "catalog.csv", index=False)
    url = f"s3://{bucket}/remote.zarr"
    with MediaServer(tmp_path / "site") as site:
        result = build_dataset(site.url_for("catalog.csv"), url, size=SIZE, dedup=False,
                               storage_options=ceph.storage_options, client=dask_client,
                               progress=False)
    assert result.images == 2


# ------------------------------------------------------------------- gateway outages
class Outage:
    """Stop the gateway once ``started()`` is true, start it ``down_s`` later."""

    def __init__(self, ceph: CephGateway, started, down_s: float = 3.0):
        self.ceph, self.started, self.down_s = ceph, started, down_s
        self.stopped_at = self.restarted_at = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="gateway-outage", daemon=True)

    def _run(self) -> None:
        try:
            deadline = time.monotonic() + 60
            while not self.started() and time.monotonic() < deadline:
                time.sleep(0.02)
            self.ceph.stop_gateway()
            self.stopped_at = time.monotonic()
            time.sleep(self.down_s)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.ceph.start_gateway()
            self.restarted_at = time.monotonic()

    def __enter__(self) -> Outage:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(90)
        assert not self.thread.is_alive(), "the gateway did not come back"
        assert self.error is None, self.error


def build_through(outage_ready, ceph, frame, store, **kwargs):
    """Build while the gateway goes down and up; resume once if the build gave up.

    Returns (first error or None, time the first build ended, the final result).
    """
    error = None
    with Outage(ceph, outage_ready) as outage:
        try:
            build_dataset(frame, store, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the resume below must repair it
            error = exc
        ended = time.monotonic()
    assert outage.stopped_at is not None and outage.stopped_at < ended, \
        "the build ended before the gateway went down"
    result = build_dataset(frame, store, **kwargs)  # a resume: fetches what is missing
    return error, result


def test_gateway_restart_while_reading_media(ceph, media_bucket, server, sheets, dask_client,
                                             tmp_path):
    """Media on s3 while the gateway stops and starts; a slow HTTP row paces each wave."""
    uris, paths = [], []
    for i, path in enumerate(sheets[:N_MEDIA]):
        uris.append(f"s3://{media_bucket}/images/{path.name}")
        paths.append(path)
        uris.append(server.url_for(f"fault/slow/0.5/{http_rel(sheets[N_MEDIA + i])}"))
        paths.append(sheets[N_MEDIA + i])
    uuids = [f"r{i:03d}" for i in range(len(uris))]
    frame = catalog_frame(uris, uuids)
    store = str(tmp_path / "media-outage.zarr")
    ledger_dir = Path(store, "ledger")

    error, result = build_through(
        lambda: any(ledger_dir.glob("part-*.parquet")), ceph, frame, store,
        size=SIZE, chunk_size=4, batch_size=2, wave_batches=1, retries=4, timeout=10,
        dedup=False, media_storage_options={"s3": ceph.storage_options},
        client=dask_client, progress=False)
    assert error is None                       # media failures never stop a build
    ledger = idigdask.read_ledger(store)
    assert len(ledger) == len(frame) == result.counts["rows"]
    assert ledger_statuses(store) == {"ok": len(frame)}
    ds = idigdask.open_dataset(store)
    assert list(ds.media_uuid.values) == uuids
    for i in (0, 1, len(uris) // 2, len(uris) - 1):
        np.testing.assert_array_equal(ds.images.values[i], expected_pixels(paths[i]))


@pytest.mark.slow
def test_gateway_restart_while_writing_the_store(ceph, bucket, server, sheets, dask_client,
                                                 tmp_path, s3):
    """The store is on s3 when the gateway stops: the build (or its resume) completes
    with exactly the arrays of an uninterrupted build."""
    uris = [server.url_for(f"fault/slow/0.2/{http_rel(p)}") for p in sheets[:8]]
    uuids = [f"w{i:03d}" for i in range(len(uris))]
    frame = catalog_frame(uris, uuids)
    url = f"s3://{bucket}/outage.zarr"
    kwargs = dict(size=SIZE, chunk_size=4, batch_size=2, wave_batches=1, retries=2,
                  dedup=False, client=dask_client, progress=False)
    reference = str(tmp_path / "reference.zarr")
    build_dataset(frame, reference, **kwargs)

    def committed() -> bool:
        return bool(s3.glob(f"{bucket}/outage.zarr/ledger/part-*.parquet", refresh=True))

    error, result = build_through(committed, ceph, frame, url,
                                  storage_options=ceph.storage_options, **kwargs)
    if error is not None:
        assert ceph.secret not in str(error)
    ledger = idigdask.read_ledger(url, ceph.storage_options)
    assert len(ledger) == len(frame) == result.counts["rows"]
    assert ledger_statuses(url, ceph.storage_options) == {"ok": len(frame)}
    ds = idigdask.open_dataset(url, storage_options=ceph.storage_options)
    ref = idigdask.open_dataset(reference)
    assert list(ds.media_uuid.values) == list(ref.media_uuid.values) == uuids
    np.testing.assert_array_equal(ds.images.values, ref.images.values)


# --------------------------------------------------------------------- storage errors
@pytest.fixture
def one_row_catalog(tmp_path, server, sheets):
    path = tmp_path / "catalog.csv"
    pd.DataFrame({"url": [server.url_for(http_rel(sheets[0]))]}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("problem", ["missing_bucket", "wrong_secret", "wrong_key"])
def test_unwritable_bucket_is_one_user_error_before_fetching(problem, ceph, bucket, server,
                                                             one_row_catalog, s3):
    options = ceph.storage_options
    target = f"s3://{bucket}/x.zarr"
    if problem == "missing_bucket":
        target = f"s3://missing-{uuid.uuid4().hex[:12]}/x.zarr"
    elif problem == "wrong_secret":
        options = {**options, "secret": "wrong-secret-0123456789"}
    else:
        options = {**options, "key": "NOSUCHACCESSKEY000000"}
    before = sum(server.requests.values())
    with pytest.raises(UserError, match="cannot write the store") as info:
        build_dataset(str(one_row_catalog), target, storage_options=options, size=SIZE)
    message = str(info.value)
    assert "\n" not in message
    assert ceph.secret not in message and "wrong-secret-0123456789" not in message
    assert sum(server.requests.values()) == before
    s3.invalidate_cache()
    if problem == "missing_bucket":
        assert not s3.exists(target[len("s3://"):].split("/")[0])   # no bucket was made
    else:
        assert s3.find(bucket) == []


def test_cli_unwritable_bucket_exits_2(ceph, bucket, server, one_row_catalog):
    wrong = "wrong-secret-0123456789"
    cases = {"missing_bucket": (f"s3://missing-{uuid.uuid4().hex[:12]}/x.zarr",
                                ceph.storage_options),
             "wrong_secret": (f"s3://{bucket}/x.zarr", {**ceph.storage_options, "secret": wrong})}
    before = sum(server.requests.values())
    procs = {name: subprocess.Popen(
        [str(BIN / "idigdask"), "build", str(one_row_catalog), "-o", target,
         "--storage-options", json.dumps(options), "--size", str(SIZE), "--workers", "1",
         "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (target, options) in cases.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (name, err)
        assert lines[0].startswith("idigdask build: error: cannot write the store"), name
        assert ceph.secret not in out + err and wrong not in out + err, name
    assert sum(server.requests.values()) == before
