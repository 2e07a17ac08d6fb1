"""iDigBio's search API against the local SearchAPIServer: paging, retries, derivatives."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from idigdask.catalog import media_url, read_catalog, search_media, summarize, use_derivative
from idigdask.errors import UserError
from idigdask.testing.search_api import SearchAPIServer, make_media_item


def _items(n: int) -> list[dict]:
    items = [make_media_item(f"{i:08d}-0000-4000-8000-000000000000", f"https://img.example.org/{i}.jpg",
                             records=[f"rec-{i}"], xpixels=600, ypixels=800,
                             data={"ac:hashValue": f"h{i}", "dwc:catalogNumber": f"US {i}"},
                             record_terms={"family": "lycopodiaceae" if i % 2 else "selaginellaceae"})
             for i in range(n)]
    return items[::-1]  # the server sorts them


def test_pages_through_every_item_in_uuid_order():
    with SearchAPIServer(_items(11)) as api:
        out = search_media(base_url=api.base_url, page_size=4)
        assert [r["offset"] for r in api.requests] == ["0", "4", "8"]
        assert {r["limit"] for r in api.requests} == {"4"} and api.requests[0]["sort"] == "uuid"
    assert out["media_uuid"].tolist() == sorted(out["media_uuid"])
    assert len(out) == 11 and out["excluded"].isna().all()
    first = out.iloc[0]
    assert (first.access_uri, first.record_uuids, first.width, first.hash_value, first.catalogNumber) == (
        "https://img.example.org/0.jpg", ["rec-0"], 600, "h0", "US 0")


def test_limit_and_queries():
    with SearchAPIServer(_items(10)) as api:
        assert len(search_media(base_url=api.base_url, limit=3, page_size=2)) == 3
        assert api.requests[-1]["limit"] == "1"
        out = search_media({"family": "lycopodiaceae"}, base_url=api.base_url)
        assert len(out) == 5
        assert json.loads(api.requests[-1]["rq"]) == {"family": "lycopodiaceae"}
        assert len(search_media(mq={"uuid": out["media_uuid"].iloc[0]}, base_url=api.base_url)) == 1


def test_retries_500_and_429_honouring_retry_after():
    with SearchAPIServer(_items(3), failures=[500, 429], retry_after=1) as api:
        start = time.monotonic()
        out = search_media(base_url=api.base_url, backoff=0.01)
        took = time.monotonic() - start
        assert len(out) == 3 and len(api.requests) == 3
    assert took >= 1.0  # the 429's Retry-After was waited for


def test_retries_with_a_requests_session():
    requests = pytest.importorskip("requests")
    with SearchAPIServer(_items(5), failures=[503, 503]) as api, requests.Session() as session:
        out = search_media(base_url=api.base_url, session=session, backoff=0.01, page_size=2)
        assert len(out) == 5


def test_gives_up_after_the_retries_with_a_user_error():
    with SearchAPIServer(_items(3), failures=[500] * 10) as api:
        with pytest.raises(UserError, match="still failing after 3 tries"):
            search_media(base_url=api.base_url, retries=2, backoff=0.01)
    with SearchAPIServer(_items(3)) as api:
        with pytest.raises(UserError, match="HTTP 404"):  # a 4xx is not retried
            search_media(base_url=api.base_url + "/nope", backoff=10)
        assert api.requests == []


def test_page_size_is_bounded():
    with pytest.raises(UserError, match="page_size"):
        search_media(page_size=6000)


def test_media_url_and_redirect():
    assert media_url("abc") == "https://api.idigbio.org/v2/media/abc?size=webview"
    assert media_url("abc", "thumbnail").endswith("/v2/media/abc?size=thumbnail")
    assert media_url("abc", None) == "https://api.idigbio.org/v2/media/abc"
    with pytest.raises(UserError, match="size"):
        media_url("abc", "huge")
    items = _items(1)
    uuid = items[0]["uuid"]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    with SearchAPIServer(items, media_base_url="http://127.0.0.1:1/store") as api:
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(media_url(uuid, "webview", api.base_url))
        assert err.value.code == 302
        assert err.value.headers["Location"] == f"http://127.0.0.1:1/store/{uuid}?size=webview"
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(media_url("unknown", "webview", api.base_url))
        assert err.value.code == 404


def test_read_catalog_from_search_sources_and_derivatives():
    with SearchAPIServer(_items(6)) as api:
        spec = {"rq": {"family": "selaginellaceae"}, "base_url": api.base_url, "page_size": 2}
        df = read_catalog(spec)
        assert summarize(df) == {"rows": 3, "usable": 3, "excluded": {}}
        assert len(read_catalog("search:" + json.dumps(spec)).compute()) == 3
        url = api.base_url + '/search/media?rq={"family":"lycopodiaceae"}&limit=2'
        assert len(read_catalog(url).compute()) == 2
        with pytest.raises(UserError, match="found no media"):
            read_catalog({"rq": {"family": "none"}, "base_url": api.base_url})
    with pytest.raises(UserError, match="unknown keys"):
        read_catalog({"query": {}})
    with pytest.raises(UserError, match="not valid JSON"):
        read_catalog("search:{oops")
    rewritten = use_derivative(df, "thumbnail", "http://api.test/v2").compute()
    assert all(u == f"http://api.test/v2/media/{m}?size=thumbnail"
               for u, m in zip(rewritten["access_uri"], rewritten["media_uuid"]))


def test_raw_data_and_missing_accessuri_fallback():
    items = [make_media_item("u1", None, data={"ac:accessURI": "https://p.org/1.jpg", "dcterms:title": "t"}),
             make_media_item("u2", "https://i.org/2.mp3", mediatype="sounds", fmt="audio/mpeg")]
    with SearchAPIServer(items) as api:
        out = search_media(base_url=api.base_url, raw=True)
    assert out["access_uri"].tolist() == ["https://p.org/1.jpg", "https://i.org/2.mp3"]
    assert out["raw.dcterms:title"].tolist()[0] == "t"
    assert out["excluded"].tolist()[1] == "unsupported_media_type:sounds"
