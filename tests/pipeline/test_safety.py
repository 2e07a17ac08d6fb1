"""Safety of a build: which URLs may be fetched, secrets, bombs and hostile catalogs.

A catalog is untrusted input. A remote one must not make the build read local files;
credentials in URLs must not reach logs, the ledger, the store or error messages;
oversized images and bodies are refused; and malformed rows are excluded with a
reason while the rest of the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import uuid
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import idigdask
from idigdask.build import BuildOptions, build_dataset, process_batch
from idigdask.errors import UserError
from idigdask.fetch import FetchOptions
from idigdask.testing.media_server import MediaServer

from frames import catalog_frame
from idigdask.testing.search_api import SearchAPIServer, make_media_item

pytestmark = pytest.mark.timeout(60)

BIN = Path(sys.executable).parent
SIZE = 32
QUICK = dict(size=SIZE, timeout=1.0, retries=0, dedup=False, progress=False)


def outcomes(store: str) -> dict[str, tuple[str, str | None]]:
    """access_uri -> (status, reason) of a store's ledger."""
    ledger = idigdask.read_ledger(store)
    return {u: (s, None if pd.isna(r) else r)
            for u, s, r in zip(ledger["access_uri"], ledger["status"], ledger["reason"])}


@pytest.fixture(scope="module")
def site(tmp_path_factory, small_sheets):
    """A served folder: two sheets under images/, room for catalogs beside them."""
    root = tmp_path_factory.mktemp("site")
    (root / "images").mkdir()
    for i, path in enumerate(small_sheets.paths[:3]):
        shutil.copy(path, root / "images" / f"sheet{i}.jpg")
    return root


@pytest.fixture(scope="module")
def server(site):
    with MediaServer(site) as srv:
        yield srv


@pytest.fixture(scope="module")
def local_sheet(small_sheets) -> Path:
    """A sheet on the local disk, outside the served folder."""
    return Path(small_sheets.paths[5])


# ----------------------------------------------------------------------- scheme policy
HOSTILE = ["file:///etc/passwd", "ftp://127.0.0.1/sheet.jpg", "javascript:alert(1)",
           "data:image/png;base64,iVBORw0KGgo="]


def write_csv(path: Path, urls: list[str]) -> Path:
    pd.DataFrame({"url": urls, "id": [f"m{i:02d}" for i in range(len(urls))]}).to_csv(
        path, index=False)
    return path


def test_local_catalogs_may_list_local_files(tmp_path, local_sheet, dask_client):
    # a local CSV: file:// URIs are fetched
    csv = write_csv(tmp_path / "local.csv", [local_sheet.as_uri(), "ftp://x/y.jpg"])
    build_dataset(str(csv), str(tmp_path / "a.zarr"), client=dask_client,
                  catalog_options={"id_column": "id"}, **QUICK)
    assert outcomes(str(tmp_path / "a.zarr")) == {
        local_sheet.as_uri(): ("ok", None), "ftp://x/y.jpg": ("excluded", "unsupported_scheme:ftp")}
    # an in-memory catalog: plain paths too
    frame = catalog_frame([str(local_sheet), local_sheet.as_uri()])
    build_dataset(frame, str(tmp_path / "b.zarr"), client=dask_client, **QUICK)
    assert {s for s, _ in outcomes(str(tmp_path / "b.zarr")).values()} == {"ok"}
    # unless the caller says no
    build_dataset(frame, str(tmp_path / "c.zarr"), client=dask_client, allow_local=False,
                  **QUICK)
    assert set(outcomes(str(tmp_path / "c.zarr")).values()) == {
        ("excluded", "scheme_not_allowed:file")}


def test_remote_catalog_may_not_list_local_files(tmp_path, site, server, local_sheet,
                                                 dask_client):
    urls = [server.url_for("images/sheet0.jpg"), local_sheet.as_uri(), *HOSTILE]
    write_csv(site / "remote.csv", urls)
    catalog = server.url_for("remote.csv")
    store = str(tmp_path / "r.zarr")
    result = build_dataset(catalog, store, client=dask_client,
                           catalog_options={"id_column": "id"}, **QUICK)
    got = outcomes(store)
    assert got[urls[0]] == ("ok", None)
    assert got[local_sheet.as_uri()] == ("excluded", "scheme_not_allowed:file")
    assert got["file:///etc/passwd"] == ("excluded", "scheme_not_allowed:file")
    # a scheme idigdask never fetches is excluded at the catalog stage
    assert got["ftp://127.0.0.1/sheet.jpg"] == ("excluded", "unsupported_scheme:ftp")
    for uri in HOSTILE[2:]:  # no "//": the catalog already refuses them
        assert got[uri] == ("excluded", f"unsupported_scheme:{uri.split(':')[0]}"), uri
    ledger = idigdask.read_ledger(store)
    assert ledger.loc[ledger["status"] == "excluded", "nbytes"].eq(0).all()  # nothing read
    assert result.counts["rows"] == len(urls) and result.images == 1

    # the caller may allow local media explicitly
    allowed = str(tmp_path / "allowed.zarr")
    build_dataset(catalog, allowed, client=dask_client, allow_local=True,
                  catalog_options={"id_column": "id"}, **QUICK)
    assert outcomes(allowed)[local_sheet.as_uri()] == ("ok", None)


def test_cli_allow_local_with_a_remote_catalog(tmp_path, site, server, local_sheet,
                                               dask_client):
    urls = [server.url_for("images/sheet1.jpg"), local_sheet.as_uri()]
    write_csv(site / "cli.csv", urls)
    runs = {}
    for flag in ([], ["--allow-local"]):
        store = tmp_path / f"cli{len(flag)}.zarr"
        runs[bool(flag)] = subprocess.Popen(
            [str(BIN / "idigdask"), "build", server.url_for("cli.csv"), "-o", str(store),
             "--size", str(SIZE), "--scheduler", dask_client.scheduler.address,
             "--no-progress", "--json", *flag],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), store
    for allowed, (proc, store) in runs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out)["images"] == (2 if allowed else 1)
        expected = ("ok", None) if allowed else ("excluded", "scheme_not_allowed:file")
        assert outcomes(str(store))[local_sheet.as_uri()] == expected


@pytest.mark.parametrize("uri", HOSTILE)
def test_hostile_schemes_in_an_in_memory_catalog_are_excluded_without_local_media(uri):
    ledger = process_batch(catalog_frame([uri]), BuildOptions(size=SIZE, allow_local=False)).ledger
    assert ledger.loc[0, "status"] == "excluded"
    assert ledger.loc[0, "reason"].startswith("scheme_not_allowed:")
    assert ledger.loc[0, "nbytes"] == 0


@pytest.mark.parametrize("uri", HOSTILE[2:])
def test_opaque_schemes_are_never_read_as_local_paths(uri):
    ledger = process_batch(catalog_frame([uri]), BuildOptions(size=SIZE, allow_local=True)).ledger
    assert ledger.loc[0, "status"] == "excluded"
    assert ledger.loc[0, "reason"] == f"scheme_not_allowed:{uri.split(':')[0]}"


@pytest.fixture(scope="module")
def search_api(server, local_sheet):
    """iDigBio's search API, answering with a served image and two local files."""
    items = [make_media_item(str(uuid.UUID(int=1)), server.url_for("images/sheet2.jpg"),
                             records=["r1"]),
             make_media_item(str(uuid.UUID(int=2)), local_sheet.as_uri(), records=["r2"]),
             make_media_item(str(uuid.UUID(int=3)), "file:///etc/passwd", records=["r3"])]
    with SearchAPIServer(items) as api:
        yield api


@pytest.mark.parametrize("kind", ["text", "dict"])
def test_search_results_may_not_list_local_files(kind, search_api, tmp_path, dask_client):
    query = {"rq": {}, "base_url": search_api.base_url}
    source = "search:" + json.dumps(query) if kind == "text" else query
    store = str(tmp_path / "search.zarr")
    build_dataset(source, store, client=dask_client, **QUICK)
    ledger = idigdask.read_ledger(store)
    local = ledger[ledger["access_uri"].str.startswith("file:")]
    assert len(local) == 2
    assert set(local["reason"]) == {"scheme_not_allowed:file"}
    assert local["nbytes"].eq(0).all()


# -------------------------------------------------------------------------- credentials
SECRETS = ("s3cr3t-pass", "deadbeefsig0123", "AKIASECRETCRED", "tok-secret-value",
           "apikey-secret-1", "jwt-secret-2", "session-secret-3", "pwd-secret-4")


def secret_urls(server: MediaServer) -> list[str]:
    base = server.url                                    # http://127.0.0.1:PORT
    # a password holding "@": the user information ends at the last "@" before the host
    with_user = base.replace("http://", "http://reader:p@s3cr3t-pass@")
    named = "api-key=apikey-secret-1&jwt=jwt-secret-2&session=session-secret-3&pwd=pwd-secret-4"
    signed = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIASECRETCRED%2F20260101"
              "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z"
              "&X-Amz-Expires=900&X-Amz-Signature=deadbeefsig0123")
    return [
        f"{with_user}/images/sheet0.jpg",                         # ok
        f"{base}/images/sheet1.jpg?{signed}",                     # ok
        f"{with_user}/fault/status/404/a.jpg",                    # http_404
        f"{base}/fault/status/403/b.jpg?{signed}",                # http_403
        f"{with_user}/fault/hang/c.jpg?{signed}",                 # timeout
        f"{base}/fault/html/d.jpg?token=tok-secret-value&{named}",  # not_an_image
        f"{base}/fault/loop/e.jpg?{signed}",                      # redirect_loop
        "http://reader:s3cr3t-pass@127.0.0.1:9/f.jpg",            # connection refused
    ]


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}"


def test_credentials_stay_out_of_ledger_store_and_logs(tmp_path, server, caplog):
    from distributed import Client, LocalCluster

    urls = secret_urls(server)
    frame = catalog_frame(urls)
    store = str(tmp_path / "secret.zarr")
    caplog.set_level(logging.DEBUG)
    # workers in this process, so that their log records are captured too
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        result = build_dataset(frame, store, client=client, **QUICK)
    ledger = idigdask.read_ledger(store)
    statuses = dict(zip(ledger["media_uuid"], zip(ledger["status"], ledger["reason"])))
    assert [statuses[f"row-{i:02d}"][0] for i in range(2)] == ["ok", "ok"]
    assert [statuses[f"row-{i:02d}"][1] for i in range(2, 8)] == [
        "http_404", "http_403", "timeout", "not_an_image", "redirect_loop", "connection"]

    assert_no_secret(ledger.astype(str).to_csv(), "the ledger")
    assert ledger["access_uri"].str.contains("REDACTED|\\*\\*\\*").sum() == len(urls)
    ds = idigdask.open_dataset(store)
    assert_no_secret(" ".join(map(str, ds.access_uri.values)), "the access_uri coordinate")
    assert_no_secret(json.dumps(ds.attrs, default=str), "the store's attributes")
    for path in Path(store).rglob("*.json"):
        assert_no_secret(path.read_text(), str(path))
    assert_no_secret(json.dumps(result.summary(), default=str), "the build summary")
    assert_no_secret(caplog.text, "the log")


def test_cli_output_has_no_credentials(tmp_path, server):
    urls = secret_urls(server)
    catalog = tmp_path / "secret.csv"
    pd.DataFrame({"url": urls}).to_csv(catalog, index=False)
    store = tmp_path / "cli-secret.zarr"
    build = subprocess.run(
        [str(BIN / "idigdask"), "build", str(catalog), "-o", str(store), "--size", str(SIZE),
         "--timeout", "1", "--retries", "0", "--workers", "1", "--no-progress", "--json"],
        capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    assert json.loads(build.stdout)["rows"] == len(urls)
    shown = subprocess.run([str(BIN / "idigdask"), "ledger", str(store), "--failed", "20"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "http_404" in shown.stdout
    for name, text in (("build stdout", build.stdout), ("build stderr", build.stderr),
                       ("ledger output", shown.stdout + shown.stderr)):
        assert_no_secret(text, name)


def test_errors_about_a_catalog_url_have_no_credentials(tmp_path, server):
    sources = [server.url.replace("http://", "http://reader:s3cr3t-pass@") + "/missing.csv",
               server.url_for("missing.csv") + "?X-Amz-Signature=deadbeefsig0123"]
    for source in sources:
        with pytest.raises(UserError) as info:
            idigdask.read_catalog(source)
        assert_no_secret(str(info.value), "the UserError")
        done = subprocess.run([str(BIN / "idigdask"), "build", source, "-o",
                               str(tmp_path / "x.zarr")], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2
        assert_no_secret(done.stdout + done.stderr, "the CLI's error")


# ------------------------------------------------------------------- bombs and caps
def png_bomb(side: int) -> bytes:
    """A valid 1-bit greyscale PNG of side x side white pixels: tiny on the wire."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    rows = 1024
    body = b"".join(comp.compress(row * rows) for _ in range(side // rows))
    body += comp.compress(row * (side % rows)) + comp.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + \
        chunk(b"IEND", b"")


def test_bombs_and_oversized_bodies_are_refused(tmp_path, site, server, local_sheet,
                                                dask_client):
    bomb = png_bomb(20_000)                         # 400 megapixels in a few hundred KB
    assert len(bomb) < 2**20
    (site / "images" / "bomb.png").write_bytes(bomb)
    big = site / "images" / "big.jpg"
    big.write_bytes(Path(local_sheet).read_bytes() + bytes(300_000))  # a JPEG with a tail
    uris = [server.url_for("images/bomb.png"),            # default max_pixels: bomb
            server.url_for("images/big.jpg"),              # Content-Length over the cap
            server.url_for("fault/huge/50000000"),         # 50 MB announced
            server.url_for("fault/endless/x.jpg"),         # no length, never ends
            big.as_uri(),                                  # a local file over the cap
            server.url_for("images/sheet0.jpg")]           # fine
    store = str(tmp_path / "bombs.zarr")
    build_dataset(catalog_frame(uris), store, client=dask_client, max_bytes=250_000,
                  **QUICK)
    ledger = idigdask.read_ledger(store)
    got = [(s, None if pd.isna(r) else r) for s, r in zip(ledger["status"], ledger["reason"])]
    assert got == [("failed", "bomb"), ("failed", "too_large"), ("failed", "too_large"),
                   ("failed", "too_large"), ("failed", "too_large"), ("ok", None)]
    assert "400000000 pixels" in ledger.loc[0, "message"]
    assert ledger.loc[0, "seconds"] < 5                     # judged from the header
    assert (ledger.loc[1:4, "nbytes"] == 0).all()

    # a small max_pixels refuses ordinary sheets (600 x 900 and so on) the same way
    small = str(tmp_path / "small.zarr")
    build_dataset(catalog_frame(uris[-1:]), small, client=dask_client, max_pixels=100_000,
                  **QUICK)
    assert outcomes(small)[uris[-1]] == ("failed", "bomb")


# ------------------------------------------------------------------- hostile catalogs
CSV_ROWS = [
    (b"http://HOST/images/sheet0.jpg", b"600", None),
    (b"not a url", b"10", "malformed_uri"),
    (b"http//HOST/x.jpg", b"10", "malformed_uri"),
    (b"http://HOST/a b.jpg", b"10", "malformed_uri"),
    (b"http://HOST/images/\xff\xfe.jpg", b"10", "bad_text"),
    (b"http://HOST/images/sheet1.jpg", b"99999999999", "absurd_size"),
    (b"http://HOST/images/sheet1.jpg?v=2", b"-5", "absurd_size"),
    (b"http://HOST/images/sheet2.jpg", b"not a number", None),
    (b"", b"10", "no_uri"),
]


def hostile_csv(path: Path, host: str, extra: list[tuple[bytes, bytes]] = ()) -> Path:
    lines = [b"url,width,height"]
    for url, width in [(u, w) for u, w, _ in CSV_ROWS] + list(extra):
        lines.append(b'"' + url.replace(b"HOST", host.encode()) + b'",' + width + b",900")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_hostile_csv_rows_are_excluded_and_the_run_goes_on(tmp_path, server, dask_client):
    host = server.url.split("//")[1]
    csv = hostile_csv(tmp_path / "hostile.csv", host)
    catalog = idigdask.read_catalog(str(csv)).compute()
    assert len(catalog) == len(CSV_ROWS)
    assert [None if pd.isna(r) else r for r in catalog["excluded"]] == \
        [r for _, _, r in CSV_ROWS]

    store = str(tmp_path / "hostile.zarr")
    result = build_dataset(str(csv), store, client=dask_client, **QUICK)
    ledger = idigdask.read_ledger(store)
    assert len(ledger) == result.counts["rows"] == len(CSV_ROWS)
    assert list(ledger["status"]) == ["excluded" if r else "ok" for _, _, r in CSV_ROWS]
    assert list(ledger.loc[ledger["status"] == "excluded", "reason"]) == \
        [r for _, _, r in CSV_ROWS if r]
    assert result.images == 2


def test_hostile_parquet_rows_are_excluded(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "url": pa.array([b"http://h/a.jpg", b"not a url", b"http://h/\xff\xfe.jpg",
                         b"http://h/b.jpg", b"http://h/c.jpg", b"http://h/d.jpg"], pa.binary()),
        "width": pa.array([600, 10, 10, 2**62, -3, None], pa.int64()),
    })
    pq.write_table(table, tmp_path / "hostile.parquet")
    catalog = idigdask.read_catalog(str(tmp_path / "hostile.parquet")).compute()
    assert [None if pd.isna(r) else r for r in catalog["excluded"]] == [
        None, "malformed_uri", "bad_text", "absurd_size", "absurd_size", None]


@pytest.mark.parametrize("width", [b"99999999999999999999999", b"1e400", b"-inf"])
def test_sizes_past_int64_exclude_only_their_row(width, tmp_path):
    csv = hostile_csv(tmp_path / "huge.csv", "h", extra=[(b"http://h/z.jpg", width)])
    catalog = idigdask.read_catalog(str(csv)).compute()
    assert len(catalog) == len(CSV_ROWS) + 1
    assert catalog["excluded"].iloc[-1] == "absurd_size"


# --------------------------------------------------------------------- archive bombs
DWCA_META = b"""<archive xmlns="http://rs.tdwg.org/dwc/text/">
<core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy=""
      ignoreHeaderLines="1" rowType="http://rs.tdwg.org/dwc/terms/Occurrence">
<files><location>occurrence.txt</location></files>
<id index="0"/>
<field index="0" term="http://rs.tdwg.org/dwc/terms/occurrenceID"/>
<field index="1" term="http://rs.tdwg.org/dwc/terms/associatedMedia"/>
</core></archive>"""


def zip_bomb_dwca(path: Path, expanded_mib: int = 1024) -> Path:
    """A Darwin Core Archive whose core file is ``expanded_mib`` MiB of zeros (~1 MB zipped).

    The deflate stream is one flushed block of compressed zeros repeated, so making it
    takes a fraction of a second and never holds the expanded bytes.
    """
    head = b"occurrenceID\tassociatedMedia\nocc-1\thttp://h/a.jpg\n"
    block = bytes(1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)
    segment = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    data = first + segment * expanded_mib + comp.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    for _ in range(expanded_mib):
        crc = zlib.crc32(block, crc)
    entries = [("meta.xml", DWCA_META, zlib.crc32(DWCA_META), len(DWCA_META), 0),
               ("occurrence.txt", data, crc, len(head) + expanded_mib * len(block), 8)]
    out, central = bytearray(), bytearray()
    for name, payload, checksum, size, method in entries:
        encoded, offset = name.encode(), len(out)
        fields = (20, 0, method, 0, 0x21, checksum, len(payload), size, len(encoded), 0)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + encoded + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0,
                               offset) + encoded
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries),
                                 len(central), len(out), 0)
    path.write_bytes(bytes(out))
    return path


def test_the_zip_bomb_helper_makes_a_valid_archive(tmp_path):
    import zipfile

    path = zip_bomb_dwca(tmp_path / "small.zip", expanded_mib=2)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert zf.getinfo("occurrence.txt").file_size == 2 * 2**20 + 50
    assert path.stat().st_size < 20_000
    big = zip_bomb_dwca(tmp_path / "big.zip")
    assert big.stat().st_size < 1_200_000


PROBE = textwrap.dedent("""
    import json, sys, time
    import idigdask
    started = time.perf_counter()
    try:
        idigdask.read_catalog(sys.argv[1]).compute()
        outcome = {"error": None, "message": ""}
    except Exception as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    outcome["seconds"] = time.perf_counter() - started
    print(json.dumps(outcome))
""")


def test_zip_bomb_archive_is_refused_before_extraction(tmp_path):
    """Run in a child process whose files may not grow past 64 MiB: the archive must be
    refused from its directory before a byte is extracted, not read into memory."""
    import resource
    import signal

    bomb = zip_bomb_dwca(tmp_path / "bomb.zip")
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def limits() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 2**20, 64 * 2**20))

    done = subprocess.run([sys.executable, "-c", PROBE, str(bomb)], capture_output=True,
                          text=True, timeout=50, preexec_fn=limits,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "UserError"
    assert "expand" in outcome["message"] and str(bomb) in outcome["message"]
    assert outcome["seconds"] < 10
    assert not any(p.is_file() for p in scratch.rglob("*"))
