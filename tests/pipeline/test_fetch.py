"""The fetch stage against a real loopback media server, local files and memory://."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import time
import uuid
import warnings
from urllib.parse import quote

import aiohttp
import fsspec
import fsspec.asyn
import pytest
import yarl

from idigdask.errors import UserError
from idigdask.fetch import (
    FetchOptions,
    FetchResult,
    classify_scheme,
    fetch_many,
    fetch_many_async,
    iter_fetch,
    redact,
)
from idigdask.testing.media_server import MediaServer

pytestmark = pytest.mark.timeout(30)

PAYLOAD = bytes(range(256)) * 40  # 10 KiB that no text decoder would mistake


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    (root / "sheet.jpg").write_bytes(PAYLOAD)
    (root / "nested").mkdir()
    (root / "nested" / "other sheet.jpg").write_bytes(PAYLOAD[:1000])
    return root


@pytest.fixture(scope="module")
def server(media_root):
    with MediaServer(media_root) as srv:
        yield srv


def quick(**kwargs) -> FetchOptions:
    """Small timeouts and pauses so that failing cases stay fast."""
    settings = dict(timeout=2.0, retries=3, backoff=0.02, concurrency=8, per_host=4)
    settings.update(kwargs)
    return FetchOptions(**settings)


def fetch_one(url: str, options: FetchOptions | None = None) -> FetchResult:
    (result,) = fetch_many([url], options or quick())
    return result


def unique(route: str) -> str:
    """A fault route with its own per-URL failure counter."""
    return f"{route}?n={uuid.uuid4().hex}"


# ----------------------------------------------------------------------------- success
def test_fetch_file_ok(server):
    result = fetch_one(server.url_for("sheet.jpg"))
    assert result.ok and result.status == "ok"
    assert result.data == PAYLOAD and result.nbytes == len(PAYLOAD)
    assert result.reason is None and result.attempts == 1 and result.seconds >= 0


def test_results_keep_input_order(server):
    paths = ["nested/other sheet.jpg", "fault/status/404/a", "sheet.jpg", "fault/slow/0.2/sheet.jpg",
             "fault/status/410/b"]
    results = fetch_many([server.url_for(p) for p in paths], quick(retries=0))
    assert [r.uri for r in results] == [server.url_for(p) for p in paths]
    assert [r.reason for r in results] == [None, "http_404", None, None, "http_410"]
    assert results[0].nbytes == 1000


def test_empty_input():
    assert fetch_many([]) == []
    assert list(iter_fetch([])) == []


def test_user_agent_names_the_package(server):
    url = server.url_for(unique("sheet.jpg"))
    assert fetch_one(url).ok
    agents = [h.get("User-Agent", "") for path, h in server.request_log if path == "/sheet.jpg"]
    assert agents and all("idigdask" in agent for agent in agents)


def test_storage_options_headers_are_sent(server):
    options = quick(storage_options={"headers": {"X-Project": "mercury"}})
    assert fetch_one(server.url_for("nested/other sheet.jpg"), options).ok
    sent = [h for path, h in server.request_log if path == "/nested/other sheet.jpg"]
    assert sent[-1].get("X-Project") == "mercury"


# ----------------------------------------------------------------------------- retries
def test_500_twice_then_success(server):
    result = fetch_one(server.url_for(unique("fault/fail/500/2/sheet.jpg")))
    assert result.ok and result.data == PAYLOAD and result.attempts == 3


def test_503_persistent_is_http_5xx_after_all_retries(server):
    result = fetch_one(server.url_for("fault/fail/503/always/sheet.jpg"), quick(retries=2))
    assert result.status == "failed" and result.reason == "http_5xx"
    assert result.attempts == 3 and result.data is None and result.nbytes == 0
    assert "503" in result.message


def test_429_retry_after_is_honoured(server):
    start = time.monotonic()
    result = fetch_one(server.url_for(unique("fault/throttle/1/sheet.jpg") + "&after=1"))
    assert result.ok and result.attempts == 2
    assert time.monotonic() - start >= 0.95


def test_429_persistent_reason(server):
    url = server.url_for("fault/throttle/always/sheet.jpg?after=0")
    result = fetch_one(url, quick(retries=1))
    assert result.reason == "http_429" and result.attempts == 2


def test_reset_mid_body_is_retried_until_ok(server):
    result = fetch_one(server.url_for(unique("fault/reset/2/sheet.jpg")))
    assert result.ok and result.data == PAYLOAD and result.attempts == 3


def test_reset_mid_body_persistent_is_truncated(server):
    result = fetch_one(server.url_for("fault/reset/always/sheet.jpg"), quick(retries=2))
    assert result.reason == "truncated" and result.attempts == 3


def test_short_body_is_truncated(server):
    result = fetch_one(server.url_for("fault/short/sheet.jpg"), quick(retries=1))
    assert result.reason == "truncated" and result.attempts == 2 and result.data is None


def test_slow_answer_past_timeout(server):
    start = time.monotonic()
    result = fetch_one(server.url_for("fault/slow/5/sheet.jpg"), quick(timeout=0.5, retries=1))
    assert result.reason == "timeout" and result.attempts == 2
    assert time.monotonic() - start < 3


def test_slow_answer_within_timeout_is_ok(server):
    assert fetch_one(server.url_for("fault/slow/0.2/sheet.jpg"), quick(timeout=2)).ok


def test_never_answering_server_times_out(server):
    result = fetch_one(server.url_for("fault/hang/x"), quick(timeout=0.5, retries=0))
    assert result.reason == "timeout" and result.attempts == 1


def test_connection_refused_is_connection():
    with MediaServer() as gone:
        url = gone.url_for("sheet.jpg")
    result = fetch_one(url, quick(retries=1))
    assert result.reason == "connection" and result.attempts == 2


# --------------------------------------------------------------------- no retry, status
@pytest.mark.parametrize("code", [404, 403, 410, 400])
def test_client_errors_are_not_retried(server, code):
    url = server.url_for(f"fault/status/{code}/x-{uuid.uuid4().hex}")
    result = fetch_one(url)
    assert result.status == "failed" and result.reason == f"http_{code}" and result.attempts == 1
    assert server.requests[urlpath(url)] == 1


def urlpath(url: str) -> str:
    return "/" + url.split("/", 3)[3].split("?")[0]


# --------------------------------------------------------------------------- redirects
def test_redirect_is_followed(server):
    result = fetch_one(server.url_for("fault/redirect/sheet.jpg"))
    assert result.ok and result.data == PAYLOAD


def test_redirect_chain_is_followed(server):
    result = fetch_one(server.url_for("fault/chain/5/nested/other sheet.jpg"))
    assert result.ok and result.nbytes == 1000


def test_redirect_chain_longer_than_allowed(server):
    result = fetch_one(server.url_for("fault/chain/5/sheet.jpg"), quick(max_redirects=3))
    assert result.reason == "redirect_loop"


def test_redirect_loop(server):
    result = fetch_one(server.url_for("fault/loop/x"))
    assert result.reason == "redirect_loop" and result.attempts == 1


def goto(srv: MediaServer, target: str, marker: str = "", code: int = 302) -> str:
    """A URL of ``srv`` that redirects to ``target``; ``marker`` names it in the log."""
    return f"{srv.url}/fault/goto/{code}/{marker}?to={quote(target, safe='')}"


def test_redirect_codes_and_relative_locations(server):
    for code in (301, 302, 303, 307, 308):
        result = fetch_one(server.url_for(f"fault/goto/{code}?to=/sheet.jpg&c={code}"))
        assert result.ok and result.data == PAYLOAD, code
    # a location relative to the current URL's folder, resolved as a browser would
    result = fetch_one(goto(server, "../../../nested/other%20sheet.jpg", "here"))
    assert result.ok and result.nbytes == 1000


def test_redirect_to_another_scheme_is_an_error(server):
    result = fetch_one(server.url_for("fault/goto/302?to=file:///etc/passwd"))
    assert result.reason == "error" and "not http(s)" in result.message


@pytest.fixture(scope="module")
def other(media_root):
    """A second server: another origin (same host, another port)."""
    with MediaServer(media_root) as srv:
        yield srv


with warnings.catch_warnings():  # aiohttp 3.14 deprecates BasicAuth; fsspec users pass it
    warnings.simplefilter("ignore", DeprecationWarning)
    READER = aiohttp.BasicAuth("reader", "auth-3")
CALLER = {"headers": {"X-Api-Key": "key-1", "Cookie": "sid=cookie-2", "X-Project": "p"},
          "auth": READER, "cookies": {"session": "jar-4"},
          "client_kwargs": {"headers": {"X-Session-Header": "session-5"}}}
CALLER_HEADERS = ("X-Api-Key", "Cookie", "X-Project", "Authorization", "X-Session-Header")


def sent_headers(srv: MediaServer, marker: str) -> list[dict[str, str]]:
    return [h for path, h in srv.request_log if marker in path]


def test_caller_headers_stay_with_the_first_origin(server, other):
    marker = uuid.uuid4().hex
    url = goto(server, other.url_for(f"fault/headers/{marker}"), marker)
    assert fetch_one(url, quick(storage_options=CALLER)).ok
    (first,) = sent_headers(server, marker)
    assert all(name in first for name in CALLER_HEADERS), first
    (hop,) = sent_headers(other, marker)
    assert not [name for name in CALLER_HEADERS if name in hop], hop
    assert "idigdask" in hop["User-Agent"]  # the fetcher's own headers stay


def test_caller_headers_follow_a_same_origin_redirect(server):
    marker = uuid.uuid4().hex
    url = goto(server, f"/fault/headers/{marker}", code=307)
    assert fetch_one(url, quick(storage_options=CALLER)).ok
    (hop,) = sent_headers(server, marker)
    assert all(name in hop for name in CALLER_HEADERS), hop


def test_caller_headers_do_not_come_back_after_leaving(server, other):
    marker = uuid.uuid4().hex
    url = goto(server, goto(other, server.url_for(f"fault/headers/{marker}")))
    assert fetch_one(url, quick(storage_options=CALLER)).ok
    (hop,) = sent_headers(server, marker)
    assert not [name for name in CALLER_HEADERS if name in hop], hop


def test_https_to_http_on_the_same_host_is_another_origin():
    from idigdask.fetch import _identity, _origin

    assert _origin(yarl.URL("https://h/a")) != _origin(yarl.URL("http://h/a"))
    assert _origin(yarl.URL("http://h/a")) == _origin(yarl.URL("http://u:p@H:80/b"))
    assert _origin(yarl.URL("http://h/a")) != _origin(yarl.URL("http://h:8080/a"))
    identity = _identity({"headers": {"A": "1"}, "cookies": {"c": "1"}}, {"headers": {"A": "2"}})
    assert identity == {"headers": {"A": "2"}, "cookies": {"c": "1"}}


# --------------------------------------------------------------------- what comes back
def test_html_page_with_200_is_ok_at_fetch(server):
    result = fetch_one(server.url_for("fault/html/x"))
    assert result.ok and result.data.lstrip().lower().startswith(b"<!doctype html")


def test_oversized_content_length(server):
    result = fetch_one(server.url_for(f"fault/huge/{100 * 2**20}"), quick(max_bytes=50_000))
    assert result.reason == "too_large" and result.attempts == 1


def test_oversized_endless_body(server):
    result = fetch_one(server.url_for("fault/endless/x"), quick(max_bytes=300_000))
    assert result.reason == "too_large" and result.attempts == 1


def test_body_at_the_limit_is_ok(server):
    assert fetch_one(server.url_for("sheet.jpg"), quick(max_bytes=len(PAYLOAD))).ok
    assert fetch_one(server.url_for("sheet.jpg"), quick(max_bytes=len(PAYLOAD) - 1)).reason == "too_large"


# ------------------------------------------------------------------------- concurrency
def test_per_host_limit_is_respected(media_root):
    # A server of its own: slow answers left over from other tests would count.
    with MediaServer(media_root) as own:
        urls = [own.url_for(f"fault/slow/0.1/sheet.jpg?i={i}") for i in range(12)]
        results = fetch_many(urls, quick(concurrency=16, per_host=2))
        assert all(r.ok for r in results)
        assert own.max_in_flight == 2


def test_concurrency_overlaps_requests(server):
    urls = [server.url_for(f"fault/slow/0.3/sheet.jpg?c={i}") for i in range(8)]
    start = time.monotonic()
    results = fetch_many(urls, quick(concurrency=8, per_host=8))
    assert all(r.ok for r in results)
    assert time.monotonic() - start < 1.5  # 8 x 0.3 s one after another would be 2.4 s


def test_iter_fetch_yields_every_index_once(server):
    urls = [server.url_for("fault/slow/0.4/sheet.jpg?first"), server.url_for("sheet.jpg"),
            server.url_for("fault/status/404/y")]
    seen = list(iter_fetch(urls, quick(retries=0)))
    assert sorted(i for i, _ in seen) == [0, 1, 2]
    assert seen[-1][0] == 0  # the slow one finishes last: results come as they complete
    assert {i: r.reason for i, r in seen} == {0: None, 1: None, 2: "http_404"}


def test_iter_fetch_bounds_requests_ahead_of_the_consumer(server):
    server.reset_stats()
    urls = [server.url_for(f"sheet.jpg?b={i}") for i in range(40)]
    it = iter_fetch(urls, quick(concurrency=2), buffer=2)
    first = next(it)
    time.sleep(0.3)  # the consumer is busy: at most concurrency + buffer fetches happen
    assert sum(server.requests.values()) <= 5
    rest = list(it)
    assert len(rest) == 39 and first[1].ok


def test_iter_fetch_closed_early_cancels(server):
    urls = [server.url_for("fault/hang/z")] * 3 + [server.url_for("sheet.jpg")]
    it = iter_fetch(urls, quick(timeout=20, concurrency=4))
    index, result = next(it)
    assert index == 3 and result.ok
    it.close()  # must not wait for the hanging requests


def test_fetch_many_from_worker_threads(server):
    urls = [server.url_for("sheet.jpg"), server.url_for("nested/other sheet.jpg")]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: fetch_many(urls, quick()), range(8)))
    assert all(r.ok for batch in batches for r in batch)


def test_fetch_many_async_from_another_loop(server):
    results = asyncio.run(fetch_many_async([server.url_for("sheet.jpg")], quick()))
    assert results[0].ok


def test_fetch_many_inside_a_running_loop(server):
    async def caller():
        return fetch_many([server.url_for("sheet.jpg")], quick())

    assert asyncio.run(caller())[0].ok


def test_iter_fetch_inside_a_running_loop(server):
    urls = [server.url_for("sheet.jpg"), server.url_for("fault/status/404/loop")]

    async def caller():
        return sorted((i, r.reason) for i, r in iter_fetch(urls, quick(retries=0)))

    assert asyncio.run(caller()) == [(0, None), (1, "http_404")]


def test_fetch_from_dask_worker_threads(server):
    distributed = pytest.importorskip("distributed")
    urls = [server.url_for("sheet.jpg"), server.url_for("nested/other sheet.jpg")]

    def work(_):
        streamed = sorted(r.nbytes for _, r in iter_fetch(urls, quick()))
        return streamed, [r.nbytes for r in fetch_many(urls, quick())]

    # in-process workers, as the default cluster: the worker threads share fsspec's loop
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        outputs = client.gather(client.map(work, range(4)))
    assert outputs == [([1000, len(PAYLOAD)], [len(PAYLOAD), 1000])] * 4


def wait_until(condition, seconds: float = 5.0) -> bool:
    """Whether ``condition()`` becomes true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_iter_fetch_closed_early_stops_what_is_in_flight(media_root):
    with MediaServer(media_root) as own:
        urls = [own.url_for("sheet.jpg")] + [own.url_for(f"fault/hang/{i}") for i in range(10)]
        it = iter_fetch(urls, quick(timeout=20, concurrency=3), buffer=1)
        index, result = next(it)
        assert index == 0 and result.ok
        assert wait_until(lambda: own.in_flight == 3)  # the window is full of hanging ones
        it.close()
        assert wait_until(lambda: own.in_flight == 0)  # their connections are closed
        time.sleep(0.2)
        assert sum(own.requests.values()) == 4  # and no other request started


def test_fetch_many_async_cancelled_stops_its_requests(media_root):
    with MediaServer(media_root) as own:
        async def caller():
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(fetch_many_async([own.url_for("fault/hang/c")],
                                                        quick(timeout=20)), 0.5)

        asyncio.run(caller())
        assert wait_until(lambda: own.in_flight == 0)


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_iter_fetch_raises_a_user_error_after_the_results_before_it(server):
    it = iter_fetch([server.url_for("sheet.jpg"), "gcs://bucket/a.jpg"], quick(concurrency=1),
                    buffer=0)
    assert next(it)[1].ok
    with pytest.raises(UserError, match="gcs"):
        next(it)


def test_blocking_calls_refuse_to_block_fsspecs_own_loop(server):
    url = server.url_for("sheet.jpg")

    async def on_fsspec_loop():
        with pytest.raises(RuntimeError, match="fetch_many_async"):
            fetch_many([url], quick())
        with pytest.raises(RuntimeError, match="fetch_many_async"):
            next(iter_fetch([url], quick()))
        return await fetch_many_async([url], quick())  # awaited there, it runs in place

    (result,) = fsspec.asyn.sync(fsspec.asyn.get_loop(), on_fsspec_loop)
    assert result.ok


# ------------------------------------------------------------------- local and memory
def test_local_files_plain_and_file_url(media_root):
    plain = str(media_root / "sheet.jpg")
    # As everywhere in fsspec, file:// paths are taken literally (no percent-decoding).
    results = fetch_many([plain, "file://" + str(media_root / "nested" / "other sheet.jpg")], quick())
    assert results[0].data == PAYLOAD and results[1].nbytes == 1000


def test_local_missing_and_too_large(media_root):
    missing, big = fetch_many([str(media_root / "absent.jpg"), str(media_root / "sheet.jpg")],
                              quick(max_bytes=100))
    assert missing.reason == "not_found" and missing.attempts == 1
    assert big.reason == "too_large"


def test_local_folder_is_an_error(media_root):
    assert fetch_one(str(media_root / "nested")).reason == "error"


def test_memory_urls():
    name = f"memory://fetch-test-{uuid.uuid4().hex}"
    with fsspec.open(f"{name}/a.jpg", "wb") as f:
        f.write(b"memory bytes")
    ok, missing = fetch_many([f"{name}/a.jpg", f"{name}/none.jpg"], quick())
    assert ok.data == b"memory bytes"
    assert missing.reason == "not_found"


def test_unknown_protocol_is_a_per_record_error():
    result = fetch_one("nosuchproto://x/y.jpg")
    assert result.status == "failed" and result.reason == "error"


def test_protocol_without_its_package_is_a_user_error():
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed")
    with pytest.raises(UserError, match="gcs"):
        fetch_many(["gcs://bucket/a.jpg"], quick())
    with pytest.raises(UserError, match="gcs"):
        list(iter_fetch(["gcs://bucket/a.jpg"], quick()))


def test_mixed_protocols_in_one_call(server, media_root):
    urls = [str(media_root / "sheet.jpg"), server.url_for("sheet.jpg"), "memory://nothing/here.jpg"]
    results = fetch_many(urls, quick())
    assert [r.reason for r in results] == [None, None, "not_found"]


# ----------------------------------------------------------------------------- helpers
def test_redaction_in_messages(server):
    assert redact("http://user:pass@host/x?X-Amz-Signature=abc") == (
        "http://***@host/x?X-Amz-Signature=REDACTED"
    )
    host = server.url.split("//")[1]
    url = f"http://user:pass@{host}/fault/status/404/x?X-Amz-Signature=abc&size=webview"
    result = fetch_one(url)
    assert result.reason == "http_404"
    assert "pass" not in result.message and "abc" not in result.message
    assert "size=webview" in result.message


def test_redaction_of_other_secrets():
    text = ("GET https://h/o?AWSAccessKeyId=AKIA1&Signature=s1g&Expires=9&token=t0k "
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=ff\n"
            "{'secret': 'hunter22', 'endpoint_url': 'http://ceph'}")
    out = redact(text)
    for secret in ("AKIA1", "s1g", "t0k", "ff", "hunter22", "AKIA/x"):
        assert secret not in out
    assert "Expires=9" in out and "http://ceph" in out
    assert redact("key id is sup3rsecret!", secrets=["sup3rsecret!"]) == "key id is REDACTED"


def test_secrets_from_storage_options_never_in_messages(media_root):
    secret = "very-secret-value"
    options = quick(storage_options={"file": {"secret": secret}})
    result = fetch_one(str(media_root / f"{secret}.jpg"), options)
    assert result.reason == "not_found" and secret not in result.message


@pytest.mark.parametrize("uri, scheme", [
    ("https://api.idigbio.org/v2/media/x", "https"),
    ("HTTP://example.org/a.jpg", "http"),
    ("s3://bucket/key.jpg", "s3"),
    ("file:///tmp/a.jpg", "file"),
    ("memory://a/b", "memory"),
    ("/tmp/a.jpg", "file"),
    ("relative/a.jpg", "file"),
    ("simplecache::s3://b/k", "simplecache"),
])
def test_classify_scheme(uri, scheme):
    assert classify_scheme(uri) == scheme


def test_options_per_protocol():
    options = FetchOptions(storage_options={"s3": {"key": "k"}, "https": {"headers": {"A": "1"}}})
    assert options.options_for("s3") == {"key": "k"}
    assert options.options_for("https") == {"headers": {"A": "1"}}
    assert options.options_for("http") == {}
    flat = FetchOptions(storage_options={"key": "k"})
    assert flat.options_for("s3") == {"key": "k"}


@pytest.mark.parametrize("bad", [{"timeout": 0}, {"retries": -1}, {"concurrency": 0},
                                 {"per_host": 0}, {"max_bytes": 0}])
def test_bad_options_are_user_errors(bad):
    with pytest.raises(UserError, match=next(iter(bad))):
        FetchOptions(**bad)


def test_s3_error_classification():
    botocore = pytest.importorskip("botocore.exceptions")
    s3errors = pytest.importorskip("s3fs.errors")
    from idigdask.fetch import _classify_store_error

    def boto(code: str, status: int) -> BaseException:
        error = botocore.ClientError(
            {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
            "GetObject",
        )
        return s3errors.translate_boto_error(error)

    cases = {("SlowDown", 503): ("http_5xx", True), ("InternalError", 500): ("http_5xx", True),
             ("SignatureDoesNotMatch", 403): ("access_denied", False),
             ("NoSuchKey", 404): ("not_found", False), ("InvalidRange", 416): ("http_416", False)}
    for (code, status), (reason, transient) in cases.items():
        failure = _classify_store_error(boto(code, status), "s3://b/k")
        assert (failure.reason, failure.transient) == (reason, transient), code
    failure = _classify_store_error(botocore.EndpointConnectionError(endpoint_url="http://x"), "s3://b/k")
    assert (failure.reason, failure.transient) == ("connection", True)
    failure = _classify_store_error(botocore.ReadTimeoutError(endpoint_url="http://x"), "s3://b/k")
    assert failure.reason == "timeout"

