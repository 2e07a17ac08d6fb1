"""A local stand-in for iDigBio's search API, on a real HTTP server bound to 127.0.0.1.

It answers ``GET /v2/search/media`` in the API's response shape from the media items it
is given, honouring ``limit``, ``offset``, ``sort``, ``rq`` and ``mq`` (equality
filters: ``mq`` over an item's ``indexTerms``, ``rq`` over its ``recordTerms`` if it has
them, else its ``indexTerms``; a list value means "any of"). It can fail the first
requests on purpose (500, or 429 with ``Retry-After``) or misbehave in the ways a slow
or broken server does (``"trickle"``: the answer one byte at a time; ``"truncate"``: half
the body it declares, then the connection closed; ``"unsized"``: no Content-Length), and
answers ``GET /v2/media/<uuid>?size=...`` with a 302 redirect to a media server, as
iDigBio's media API does.

Examples
--------
>>> items = [make_media_item("3f0c...", "http://127.0.0.1:8000/a.jpg")]  # doctest: +SKIP
>>> with SearchAPIServer(items, failures=[500, 429]) as api:            # doctest: +SKIP
...     frame = search_media(base_url=api.base_url, backoff=0.01)
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

MAX_LIMIT = 5000
#: The misbehaviours ``failures`` may name besides HTTP statuses.
FAULTS = ("trickle", "truncate", "unsized")


def make_media_item(uuid: str, accessuri: str | None, *, records: Sequence[str] = (),
                    data: dict | None = None, recordset: str = "rs-0", mediatype: str = "images",
                    fmt: str | None = "image/jpeg", xpixels: int | None = None,
                    ypixels: int | None = None, record_terms: dict | None = None) -> dict:
    """One media item in the search API's shape (``uuid``, ``etag``, ``data``, ``indexTerms``).

    Parameters
    ----------
    uuid : str
        The media record's uuid; its etag is ``etag-<uuid>``.
    accessuri : str or None
        The media URL (``indexTerms.accessuri``); None leaves it out.
    records : sequence of str
        The uuids of the specimen records the media belongs to (``hasSpecimen`` is
        whether there are any).
    data : dict, optional
        The record's raw Audubon Core fields (``data``).
    recordset : str
        The recordset uuid.
    mediatype : str
        iDigBio's media type (``images``, ``sounds``...).
    fmt : str or None
        The MIME type (``indexTerms.format``); None leaves it out.
    xpixels, ypixels : int, optional
        The image's width and height, left out when None.
    record_terms : dict, optional
        ``recordTerms``: the specimen record's fields, which ``rq`` queries filter on.

    Returns
    -------
    dict
        The item, for :class:`SearchAPIServer`.

    Examples
    --------
    >>> item = make_media_item("m1", "http://127.0.0.1:8000/a.jpg", records=["r1"])
    >>> item["etag"], item["indexTerms"]["accessuri"], item["indexTerms"]["hasSpecimen"]
    ('etag-m1', 'http://127.0.0.1:8000/a.jpg', True)
    >>> "xpixels" in item["indexTerms"]
    False
    """
    index = {"uuid": uuid, "accessuri": accessuri, "format": fmt, "records": list(records),
             "recordset": recordset, "mediatype": mediatype, "xpixels": xpixels,
             "ypixels": ypixels, "hasSpecimen": bool(records), "etag": f"etag-{uuid}"}
    item = {"uuid": uuid, "type": "mediarecords", "etag": f"etag-{uuid}", "version": 1,
            "data": dict(data or {}), "recordIds": [],
            "indexTerms": {k: v for k, v in index.items() if v is not None}}
    if record_terms is not None:
        item["recordTerms"] = dict(record_terms)
    return item


def _matches(terms: dict, query: dict) -> bool:
    for key, wanted in query.items():
        value = terms.get(key)
        options = wanted if isinstance(wanted, list) else [wanted]
        norm = [o.lower() if isinstance(o, str) else o for o in options]
        if (value.lower() if isinstance(value, str) else value) not in norm:
            return False
    return True


def _sort_key(field: str):
    def key(item: dict) -> tuple:
        value = item.get(field, item["indexTerms"].get(field))
        return (value is None, str(value) if value is not None else "")
    return key


class SearchAPIServer:
    """iDigBio's search and media API, served locally from a list of media items.

    Parameters
    ----------
    items : sequence of dict
        Media items in the API's shape (see :func:`make_media_item`).
    failures : sequence of int or str
        How the first search requests are answered, in order, then it answers normally:
        an HTTP status (e.g. ``[500, 429]``), or one of :data:`FAULTS` with the true
        answer: ``"trickle"`` sends it (status line, headers, body) one byte every
        ``trickle_delay`` seconds, ``"truncate"`` sends the headers and half the body
        its Content-Length declares and closes the connection, ``"unsized"`` sends it
        without Content-Length and closes the connection to end it.
    retry_after : float or None
        The ``Retry-After`` header (seconds) sent with a 429.
    trickle_delay : float
        Seconds between two bytes of a ``"trickle"`` answer.
    media_base_url : str
        Where ``/v2/media/<uuid>`` redirects: ``{media_base_url}/<uuid>`` plus
        ``?size=...`` when a size was asked for.
    redirect : callable, optional
        ``redirect(uuid, size) -> url`` instead of ``media_base_url``.

    Attributes
    ----------
    base_url : str
        ``http://127.0.0.1:<port>/v2``, for ``search_media(base_url=...)`` and
        ``media_url(base_url=...)``.
    requests : list of dict
        The query parameters of every search request received, failed ones included.

    Raises
    ------
    ValueError
        When ``failures`` names something that is neither an HTTP status nor one of
        :data:`FAULTS`.

    Examples
    --------
    >>> import json, urllib.error, urllib.parse, urllib.request
    >>> items = [make_media_item("m1", "http://127.0.0.1:8000/a.jpg", recordset="rs-1"),
    ...          make_media_item("m2", "http://127.0.0.1:8000/b.jpg", recordset="rs-2")]
    >>> mq = urllib.parse.quote(json.dumps({"recordset": "rs-1"}))
    >>> with SearchAPIServer(items, failures=[503]) as api:
    ...     try:
    ...         urllib.request.urlopen(f"{api.base_url}/search/media?mq={mq}")
    ...     except urllib.error.HTTPError as error:
    ...         print("first request:", error.code)
    ...     with urllib.request.urlopen(f"{api.base_url}/search/media?mq={mq}") as answer:
    ...         body = json.load(answer)
    first request: 503
    >>> body["itemCount"], [item["uuid"] for item in body["items"]], len(api.requests)
    (1, ['m1'], 2)
    """

    def __init__(self, items: Sequence[dict] = (), *, failures: Sequence[int | str] = (),
                 retry_after: float | None = None, media_base_url: str = "http://127.0.0.1:9/media",
                 redirect: Callable[[str, str | None], str] | None = None,
                 trickle_delay: float = 0.05):
        unknown = [f for f in failures if not isinstance(f, int) and f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown failures {unknown}: use HTTP statuses or {FAULTS}")
        self.items = list(items)
        self.failures = list(failures)
        self.retry_after = retry_after
        self.trickle_delay = trickle_delay
        self.media_base_url = media_base_url.rstrip("/")
        self.redirect = redirect
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --
    def start(self) -> "SearchAPIServer":
        """Bind to a free port on 127.0.0.1 and serve in a background thread."""
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "SearchAPIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v2"

    # -- behaviour --
    def next_failure(self) -> int | str | None:
        with self._lock:
            return self.failures.pop(0) if self.failures else None

    def search(self, params: dict) -> tuple[int, dict]:
        """The status and body of a media search with these query parameters."""
        try:
            rq = json.loads(params.get("rq", "{}") or "{}")
            mq = json.loads(params.get("mq", "{}") or "{}")
            limit = int(params.get("limit", 100))
            offset = int(params.get("offset", 0))
        except ValueError as exc:
            return 400, {"error": f"bad query: {exc}"}
        if limit > MAX_LIMIT:
            return 400, {"error": f"limit must be at most {MAX_LIMIT}"}
        hits = [it for it in self.items
                if _matches(it.get("recordTerms", it["indexTerms"]), rq) and _matches(it["indexTerms"], mq)]
        sort = params.get("sort")
        if sort:
            try:
                spec = json.loads(sort)
            except ValueError:
                spec = sort
            fields = [next(iter(s)) if isinstance(s, dict) else s
                      for s in (spec if isinstance(spec, list) else [spec])]
            for field in reversed(fields):
                hits.sort(key=_sort_key(field))
        page = hits[offset: offset + limit]
        if "fields" in params:
            wanted = set(json.loads(params["fields"]))
            page = [{**it, "indexTerms": {k: v for k, v in it["indexTerms"].items() if k in wanted}}
                    for it in page]
        return 200, {"itemCount": len(hits), "lastModified": "2017-01-01T00:00:00Z",
                     "items": page, "attribution": []}

    def media_location(self, uuid: str, size: str | None) -> str:
        if self.redirect is not None:
            return self.redirect(uuid, size)
        url = f"{self.media_base_url}/{uuid}"
        return f"{url}?size={size}" if size else url


class _Handler(BaseHTTPRequestHandler):
    api: SearchAPIServer

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: dict | None = None, headers: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_faulty(self, fault: str, status: int, body: dict) -> None:
        """Send an answer the way a slow or broken server does (see FAULTS)."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Connection": "close"}
        if fault != "unsized":
            headers["Content-Length"] = str(len(data))
        lines = [f"HTTP/1.1 {status} {self.responses[status][0]}"]
        lines += [f"{key}: {value}" for key, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.close_connection = True
        try:
            if fault == "trickle":
                for byte in head + data:
                    self.wfile.write(bytes([byte]))
                    time.sleep(self.api.trickle_delay)
            else:
                self.wfile.write(head + (data[: len(data) // 2] if fault == "truncate" else data))
        except OSError:  # a broken pipe, a reset, a TLS end: the client gave up
            pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        parts = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(parts.query))
        if parts.path.rstrip("/") == "/v2/search/media":
            self.api.requests.append(params)
            failure = self.api.next_failure()
            if isinstance(failure, str):
                self._send_faulty(failure, *self.api.search(params))
                return
            if failure is not None:
                headers = {}
                if failure == 429 and self.api.retry_after is not None:
                    headers["Retry-After"] = f"{self.api.retry_after:g}"
                self._send(failure, {"error": "failing on purpose"}, headers)
                return
            self._send(*self.api.search(params))
        elif parts.path.startswith("/v2/media/"):
            uuid = urllib.parse.unquote(parts.path[len("/v2/media/"):])
            if not any(it["uuid"] == uuid or it.get("etag") == uuid for it in self.api.items):
                self._send(404, {"error": "no such media"})
                return
            self._send(302, None, {"Location": self.api.media_location(uuid, params.get("size"))})
        else:
            self._send(404, {"error": "not found"})
