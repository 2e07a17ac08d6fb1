"""Catalogs from strangers: odd line ends, odd URIs, and a search API that misbehaves.

Every fixture is made here: text tables in ``tmp_path``, the project's fake search API
and a one-answer HTTP server, both on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idigdask.catalog import read_catalog, search_media, summarize
from idigdask.catalog import normalize, tables
from idigdask.catalog import schema as S
from idigdask.cli import main
from idigdask.errors import UserError
from idigdask.testing.search_api import SearchAPIServer, make_media_item

URLS = [f"http://a.org/{i}.jpg" for i in range(300)]


def _table(path, lines: list[bytes], end: bytes, header_end: bytes | None = None) -> str:
    head, *rows = lines
    path.write_bytes(head + (end if header_end is None else header_end) + end.join(rows) + end)
    return str(path)


def _rows(sep: bytes) -> list[bytes]:
    return [sep.join([b"url", b"id"])] + [sep.join([u.encode(), f"m{i}".encode()])
                                          for i, u in enumerate(URLS)]


# --- item 16: URL tables whose lines end in a bare CR ----------------------------------

@pytest.mark.parametrize("suffix, sep", [(".csv", b","), (".tsv", b"\t")])
@pytest.mark.parametrize("end, header_end", [(b"\n", b"\r"), (b"\r", None), (b"\r\n", b"\r"),
                                             (b"\r\n", None)])
@pytest.mark.parametrize("blocksize", [10**6, 700])
def test_bare_cr_line_ends_are_read_right(tmp_path, suffix, sep, end, header_end, blocksize):
    path = _table(tmp_path / f"t{suffix}", _rows(sep), end, header_end)
    df = read_catalog(path, id_column="id", blocksize=blocksize)
    if blocksize < 10**6:
        assert df.npartitions > 5  # the header goes in front of every later block
    out = df.compute()
    assert out["access_uri"].tolist() == URLS
    assert out["media_uuid"].tolist() == [f"m{i}" for i in range(len(URLS))]
    assert out["excluded"].isna().all()


def test_cr_only_json_lines_are_read_right(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\r".join(json.dumps({"url": u}).encode() for u in URLS) + b"\r")
    out = read_catalog(str(path), blocksize=2000).compute()
    assert out["access_uri"].tolist() == URLS


def test_a_quoted_line_end_in_the_header_stays_in_its_name(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'url,"cat\ralog"\rhttp://a.org/1.jpg,x\rhttp://a.org/2.jpg,y\r')
    out = read_catalog(str(path), raw=True).compute()
    assert out["access_uri"].tolist() == ["http://a.org/1.jpg", "http://a.org/2.jpg"]
    assert out["raw.cat\ralog"].tolist() == ["x", "y"]


def test_json_line_values_that_are_not_lists_are_one_record_id(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"url": "http://a.org/1.jpg", "records": 5}\n'
                    '{"url": "http://a.org/2.jpg", "records": [1, null, "r"]}\n'
                    '{"url": "http://a.org/3.jpg", "records": true}\n')
    out = read_catalog(str(path)).compute()
    assert out["record_uuids"].tolist() == [["5"], ["1", "r"], ["True"]]


def test_a_library_error_while_reading_a_table_is_one_user_error(tmp_path, monkeypatch):
    import pyarrow as pa

    path = _table(tmp_path / "t.csv", _rows(b","), b"\n")

    def broken(*args, **kwargs):
        raise pa.ArrowNotImplementedError("cannot cast this column\nsecond line")

    monkeypatch.setattr(tables, "map_table", broken)
    with pytest.raises(UserError, match=r"t.csv: cannot read the table near byte 0 "
                                         r"\(ArrowNotImplementedError: cannot cast this column\)$"):
        read_catalog(path).compute(scheduler="sync")


def test_a_header_without_a_line_end_is_a_user_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"url," + b"x" * (1 << 17))
    with pytest.raises(UserError, match="no line end in the first 65536 bytes"):
        read_catalog(str(path))


def test_cli_reads_a_bare_cr_header(tmp_path, capsys):
    path = _table(tmp_path / "t.csv", _rows(b","), b"\n", b"\r")
    assert main(["catalog", path, "-o", str(tmp_path / "c.parquet"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["usable"] == len(URLS)


# --- item 19: malformed URIs and unsupported schemes are excluded when read ------------

URI_REASONS = {
    "http://[::1:bad": "malformed_uri",
    "http://[::1:bad/a.jpg": "malformed_uri",
    "http://[not-v6]/a.jpg": "malformed_uri",
    "http://host:notaport/x": "malformed_uri",
    "http://host:99999/x": "malformed_uri",
    "http://host:0/x": "malformed_uri",
    "http:///x": "malformed_uri",
    "http://:80/x": "malformed_uri",
    "http://user@/x": "malformed_uri",
    "http:/one-slash.org/x": "malformed_uri",
    "http://a..b/x": "malformed_uri",
    "http://ex<ample.org/x": "malformed_uri",
    "https://" + "x" * 64 + ".org/a.jpg": "malformed_uri",
    "s3://bucket": "malformed_uri",
    "s3://bucket/": "malformed_uri",
    "s3://bu:ck/et": "malformed_uri",
    "localhost:8080/a.jpg": "malformed_uri",
    "ftp://example.org/a.jpg": "unsupported_scheme:ftp",
    "FTP://example.org/a.jpg": "unsupported_scheme:ftp",
    "javascript:alert(1)": "unsupported_scheme:javascript",
    "data:image/png;base64,iVBORw0KGgo=": "unsupported_scheme:data",
    "mailto:curator@example.org": "unsupported_scheme:mailto",
    "s3a://bucket/a.jpg": "unsupported_scheme:s3a",
    "gopher://example.org/a.jpg": "unsupported_scheme:gopher",
    "simplecache::s3://bucket/a.jpg": "unsupported_scheme:simplecache",
    "a" * 40 + ":b": "malformed_uri",
    # usable
    "http://[::1]:8080/a.jpg": None,
    "http://[fe80::1%25eth0]/a.jpg": None,
    "https://bücher.example/a.jpg": None,
    "HTTPS://IMG.EXAMPLE.ORG/A.JPG": None,
    "http://user:p@ss@example.org/a.jpg": None,
    "http://example.org:/a.jpg": None,
    "http://example.org.:65535/a.jpg?x=1#y": None,
    "https://iiif.example.org/iiif/2/abc/full/1024,/0/default.jpg": None,
    "http://my_host/a.jpg": None,
    "s3://bucket/key.jpg": None,
    "s3://bucket//key.jpg": None,
    "file:///data/a.jpg": None,
    "/data/a.jpg": None,
    "memory://sheets/a.jpg": None,
}


def test_uri_reasons_at_the_catalog_stage(tmp_path):
    uris = list(URI_REASONS)
    path = tmp_path / "t.csv"
    pd.DataFrame({"url": uris, "id": [f"m{i}" for i in range(len(uris))]}).to_csv(path, index=False)
    df = read_catalog(str(path), id_column="id")
    got = dict(zip(df["access_uri"].compute(), df["excluded"].compute()))
    for uri, reason in URI_REASONS.items():
        assert (None if pd.isna(got[uri]) else got[uri]) == reason, uri
    usable = sum(r is None for r in URI_REASONS.values())
    assert summarize(df)["usable"] == usable


@pytest.mark.parametrize("uri, reason", list(URI_REASONS.items()))
def test_uri_problem(uri, reason):
    assert normalize.uri_problem(uri) == reason
    vector = normalize.uri_exclusions(pd.Series([uri, None], dtype=S.STRING))
    assert [None if pd.isna(v) else v for v in vector] == [reason, None]


URI_PARTS = st.sampled_from(["http", "https", "s3", "ftp", "file", "HTTP", "://", ":", "/", "//",
                             "a", "b.org", ".", "..", "-", "_", "[", "]", "::1", "@", ":80",
                             ":0", ":65536", "?", "#", "%20", " ", "\x01", "ü", "x" * 63, "0"])


@settings(max_examples=400, deadline=None)
@given(st.lists(URI_PARTS, min_size=1, max_size=12).map("".join))
def test_the_fast_path_accepts_nothing_the_full_check_refuses(uri):
    vector = normalize.uri_exclusions(pd.Series([uri], dtype=S.STRING))
    expected = normalize.uri_problem(uri)
    assert (None if pd.isna(vector.iloc[0]) else vector.iloc[0]) == expected


def test_the_catalog_accepts_the_schemes_the_build_fetches():
    from idigdask import urls  # the scheme rules the build and the fetcher use

    assert set(normalize.REMOTE_SCHEMES) == set(urls.REMOTE_SCHEMES)
    assert set(normalize.LOCAL_SCHEMES) == set(urls.LOCAL_SCHEMES)


def test_search_results_with_odd_uris_are_excluded_when_read():
    items = [make_media_item("u1", "ftp://p.org/1.jpg"), make_media_item("u2", "http://[::1:bad/2.jpg"),
             make_media_item("u3", "https://p.org/3.jpg")]
    with SearchAPIServer(items) as api:
        out = search_media(base_url=api.base_url)
    assert dict(zip(out["media_uuid"], out["excluded"].astype(object).where(out["excluded"].notna(), None))) \
        == {"u1": "unsupported_scheme:ftp", "u2": "malformed_uri", "u3": None}


# --- item 20: the search API reader within a deadline and a byte cap -------------------

def _items(n: int = 2) -> list[dict]:
    return [make_media_item(f"u{i}", f"https://p.org/{i}.jpg") for i in range(n)]


def test_a_trickling_server_is_cut_at_the_deadline():
    # the answer takes some 16 s at a byte every 20 ms: each try must end after 0.5 s
    with SearchAPIServer(_items(), failures=["trickle"] * 3, trickle_delay=0.02) as api:
        start = time.monotonic()
        with pytest.raises(UserError, match=r"still failing after 2 tries \(last: no complete "
                                            r"answer within 0.5 s\)$"):
            search_media(base_url=api.base_url, retries=1, backoff=0.01, timeout=0.5)
        assert time.monotonic() - start < 3
        assert len(api.requests) == 2


def test_a_trickled_try_is_retried_and_the_next_answer_used():
    with SearchAPIServer(_items(), failures=["trickle"], trickle_delay=0.02) as api:
        start = time.monotonic()
        out = search_media(base_url=api.base_url, backoff=0.01, timeout=0.5)
        assert time.monotonic() - start < 3
    assert out["media_uuid"].tolist() == ["u0", "u1"]


def test_an_answer_cut_short_is_retried_then_one_line():
    with SearchAPIServer(_items(), failures=["truncate"]) as api:
        assert len(search_media(base_url=api.base_url, backoff=0.01)) == 2
        assert len(api.requests) == 2
    with SearchAPIServer(_items(), failures=["truncate"] * 3) as api:
        with pytest.raises(UserError, match=r"still failing after 2 tries \(last: answer cut short"):
            search_media(base_url=api.base_url, retries=1, backoff=0.01)


@pytest.mark.parametrize("failures", [[], ["unsized"]])
@pytest.mark.parametrize("with_session", [False, True])
def test_answers_past_the_byte_cap_are_refused(failures, with_session):
    requests = pytest.importorskip("requests")
    with SearchAPIServer(_items(), failures=failures) as api, requests.Session() as session:
        with pytest.raises(UserError, match="answered with more than 100 bytes"):
            search_media(base_url=api.base_url, max_bytes=100, backoff=0.01,
                         session=session if with_session else None)
        assert len(api.requests) == 1  # the same answer again would be as large: no retry
        assert len(search_media(base_url=api.base_url, session=session if with_session else None)) == 2


def test_a_session_reads_within_the_deadline_too():
    requests = pytest.importorskip("requests")
    with SearchAPIServer(_items(), failures=["trickle", "truncate"], trickle_delay=0.01) as api, \
            requests.Session() as session:
        start = time.monotonic()
        out = search_media(base_url=api.base_url, session=session, backoff=0.01, timeout=0.5)
        # the session's own timeout bounds each read of the headers (~1.5 s of them)
        assert time.monotonic() - start < 6
        assert len(out) == 2 and len(api.requests) == 3
    with SearchAPIServer(_items(), failures=["truncate"] * 2) as api, requests.Session() as session:
        with pytest.raises(UserError, match="still failing after 2 tries"):
            search_media(base_url=api.base_url, session=session, retries=1, backoff=0.01)


class _Fixed(BaseHTTPRequestHandler):
    body = b""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@pytest.fixture
def fixed_answer():
    """A server on 127.0.0.1 that answers every GET with ``set(body)``."""
    handler = type("Handler", (_Fixed,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def answer(body: object) -> str:
        handler.body = json.dumps(body).encode()
        return f"http://127.0.0.1:{server.server_address[1]}/v2"

    yield answer
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("body", [[1, 2], {"items": "x"}, {"items": [1]},
                                  {"items": [{"indexTerms": "x"}]}, {"items": [], "itemCount": "9"}])
def test_pages_not_in_the_api_shape_are_one_user_error(fixed_answer, body):
    with pytest.raises(UserError, match="search API .* answered"):
        search_media(base_url=fixed_answer(body), backoff=0.01)


@pytest.mark.parametrize("spec, message", [
    ({"timeout": "1"}, "timeout must be"), ({"timeout": 0}, "timeout must be"),
    ({"retries": -1}, "retries must be"), ({"backoff": "x"}, "backoff must be"),
    ({"page_size": "10"}, "page_size must be"), ({"limit": "10"}, "limit must be"),
    ({"max_bytes": 0}, "max_bytes must be"), ({"fields": 3}, "fields must be"),
    ({"base_url": "ftp://x/v2"}, "not an http"), ({"base_url": "http://h:port/v2"}, "not an http"),
])
def test_search_options_from_a_source_are_checked(spec, message):
    with pytest.raises(UserError, match=message):
        read_catalog({"rq": {}, **spec})
