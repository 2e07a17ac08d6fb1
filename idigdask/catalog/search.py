"""iDigBio's search API (v2) as a catalog source, and URLs of iDigBio's media derivatives.

:func:`search_media` pages through ``/search/media`` with a stable sort (``uuid``) and
``offset``, at most 5000 items a page, retrying 5xx and 429 answers, broken
connections, answers cut short and answers too slow with exponential backoff (a
``Retry-After`` header is honoured). Each request has a deadline for the whole answer
(``timeout``; a server that trickles bytes cannot hold it longer) and a byte cap
(``max_bytes``). It uses only the standard library, or a ``requests.Session``-like object
passed as ``session``. Whatever fails ends in one :class:`~idigdask.errors.UserError`
line.

For :func:`~idigdask.catalog.read_catalog` and the CLI a search is named by a source:

* a dict ``{"rq": {...}, "mq": {...}, "limit": N, "base_url": ..., "fields": [...]}``
  (with ``format="search"`` or on its own);
* the text ``"search:"`` followed by that dict as JSON, e.g.
  ``search:{"rq": {"family": "lycopodiaceae"}, "limit": 1000}``;
* a search URL, e.g. ``https://search.idigbio.org/v2/search/media?rq={"genus":"acer"}``
  (``rq``, ``mq``, ``limit`` are taken from the query string, the API root from the path).

iDigBio serves each media record's derivatives at ``/v2/media/<uuid>?size=...``, which
answers with a redirect to the stored object: :func:`media_url` builds those URLs and
:func:`use_derivative` points a catalog's ``access_uri`` at them.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Sequence

import pandas as pd

from ..errors import UserError
from . import schema as S
from .dedupe import mark_duplicates_pandas
from .guoda import label_source, map_media_records, occurrence_terms

SEARCH_URL = "https://search.idigbio.org/v2"
MEDIA_API_URL = "https://api.idigbio.org/v2"
MAX_PAGE = 5000
SIZES = ("thumbnail", "webview", "fullsize")
_RETRY_STATUS = {429, 500, 502, 503, 504}
_MAX_WAIT = 60.0
#: Largest answer accepted by default (a full page of 5000 items is some 25 MB).
MAX_BYTES = 256 * 2**20
_READ = 64 * 1024
_ERROR_BODY = 64 * 1024  # enough of an error answer to quote it


class _Retry(Exception):
    def __init__(self, status: int | str, wait: float | None):
        super().__init__(str(status))
        self.status, self.wait = status, wait


def media_url(uuid: str, size: str | None = "webview", base_url: str = MEDIA_API_URL) -> str:
    """The iDigBio media API URL of one media record, at a derivative size.

    Parameters
    ----------
    uuid : str
        The media record's uuid (or etag).
    size : {"webview", "thumbnail", "fullsize"} or None
        The derivative; None asks for the original file.
    base_url : str
        The API root.

    Returns
    -------
    str
        The URL of the media record's image at that size.

    Examples
    --------
    >>> media_url("0a1b", "thumbnail")
    'https://api.idigbio.org/v2/media/0a1b?size=thumbnail'
    """
    if size is not None and size not in SIZES:
        raise UserError(f"media size {size!r} is not one of {', '.join(SIZES)}")
    url = f"{base_url.rstrip('/')}/media/{urllib.parse.quote(str(uuid), safe='')}"
    return url if size is None else f"{url}?size={size}"


def _rewrite(frame: pd.DataFrame, size: str | None, base_url: str) -> pd.DataFrame:
    usable = frame[S.EXCLUDED].isna() & frame["media_uuid"].notna()
    if not usable.any():
        return frame
    frame = frame.copy()
    urls = [media_url(u, size, base_url) for u in frame.loc[usable, "media_uuid"]]
    frame.loc[usable, "access_uri"] = pd.array(urls, dtype=S.STRING)
    return frame


def use_derivative(df, size: str | None = "webview", base_url: str = MEDIA_API_URL):
    """Point the usable rows' ``access_uri`` at iDigBio's derivative of their media.

    Only meaningful where ``media_uuid`` is an iDigBio media uuid (GUODA and search
    sources). Excluded rows keep their URI so that the reason still reads true.

    Parameters
    ----------
    df : dask.dataframe.DataFrame or pandas.DataFrame
        A catalog.
    size : {"webview", "thumbnail", "fullsize"} or None
        See :func:`media_url`.
    base_url : str
        The media API root.

    Returns
    -------
    Same type as ``df``
        The catalog with the new URIs, lazily for a Dask frame; ``df`` itself is not
        changed.

    Raises
    ------
    UserError
        For a ``size`` that is not ``"thumbnail"``, ``"webview"``, ``"fullsize"`` or None.

    Examples
    --------
    >>> catalog = pd.DataFrame({
    ...     "media_uuid": ["0a1b", "0a1c"],
    ...     "access_uri": ["http://example.org/a.jpg", "ftp://example.org/b.jpg"],
    ...     "excluded": [None, "unsupported_scheme:ftp"]})
    >>> use_derivative(catalog, "thumbnail")["access_uri"].tolist()
    ['https://api.idigbio.org/v2/media/0a1b?size=thumbnail', 'ftp://example.org/b.jpg']
    """
    media_url("x", size, base_url)  # validate the size now, not inside a task
    if isinstance(df, pd.DataFrame):
        return _rewrite(df, size, base_url)
    return df.map_partitions(_rewrite, size, base_url, meta=df._meta)


# --- HTTP -------------------------------------------------------------------------

class _Deadline:
    """The end of one request's time: shuts its sockets down when it comes.

    urllib's timeout bounds each read of the socket, not the answer, so a server sending
    a byte now and then holds a request for ever; shutting the socket down makes the
    blocked read return at once, whichever phase (connect, headers, body) it is in.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> socket.socket:
        """Shut ``sock`` down at the deadline (at once if it has passed)."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def check(self) -> None:
        """Raise _Retry when the deadline has passed."""
        if self.expired:
            raise _Retry(f"no complete answer within {self.seconds:g} s", None)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed, or detached when TLS wrapped it (that socket is watched too)


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """A urllib opener (proxies and redirects as usual) whose sockets ``deadline`` watches."""

    def watched(cls: type) -> type:
        class Connection(cls):
            def __init__(self, *args: Any, **kwargs: Any):
                super().__init__(*args, **kwargs)
                self._create_connection = lambda *a, **k: deadline.watch(
                    socket.create_connection(*a, **k))

            def connect(self) -> None:
                super().connect()
                deadline.watch(self.sock)  # the TLS socket, when there is one

        return Connection

    plain, tls = watched(http.client.HTTPConnection), watched(http.client.HTTPSConnection)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(plain, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(tls, req, context=self._context)

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def _read_body(read1: Callable[[int], bytes], deadline: _Deadline, limit: int, url: str, *,
               declared: int | None = None, refuse: bool = True) -> bytes:
    """Read an answer's body in pieces, within the deadline and ``limit`` bytes.

    ``declared`` is its Content-Length; past ``limit`` a UserError when ``refuse``, else
    the first ``limit`` bytes.
    """
    if refuse and declared is not None and declared > limit:
        raise _too_large(url, limit)
    parts, size = [], 0
    while size <= limit:
        deadline.check()
        piece = read1(_READ)
        deadline.check()  # a shut-down socket reads as an early end of the answer
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
    if size > limit and refuse:
        raise _too_large(url, limit)
    body = b"".join(parts)[:limit]
    if declared is not None and size < declared:
        raise _Retry(f"answer cut short ({size} of {declared} bytes)", None)
    return body


def _too_large(url: str, limit: int) -> UserError:
    return UserError(f"search API {url} answered with more than {limit} bytes; ask for a "
                     f"smaller page_size or raise max_bytes")


def _urllib_get(full: str, url: str, deadline: _Deadline, timeout: float,
                max_bytes: int) -> tuple[int, bytes, Any]:
    """GET with urllib: (status, body, headers)."""
    try:
        try:
            resp = _opener(deadline).open(full, timeout=timeout)
        except urllib.error.HTTPError as exc:  # an answer all the same: read what it says
            with exc:
                return exc.code, _read_body(exc.read1, deadline, _ERROR_BODY, url,
                                            refuse=False), exc.headers
        with resp:
            body = _read_body(resp.read1, deadline, max_bytes, url,
                              declared=_length(resp.headers))
            return resp.status, body, resp.headers
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise UserError(f"search API {url}: the server's certificate is not trusted "
                            f"({exc.reason.verify_message})") from None
        deadline.check()
        raise _Retry(_describe(exc.reason), None) from None
    except (http.client.HTTPException, OSError) as exc:  # cut short, reset, timed out
        deadline.check()
        raise _Retry(_describe(exc), None) from None


def _session_get(session: Any, url: str, params: dict, deadline: _Deadline, timeout: float,
                 max_bytes: int) -> tuple[int, bytes, Any]:
    """GET with a requests-like session, its body streamed within the deadline.

    The session's own timeout bounds each read; the deadline is checked between reads.
    """
    try:
        resp = session.get(url, params=params, timeout=timeout, stream=True)
    except Exception as exc:  # noqa: BLE001 - any session's transport errors
        deadline.check()
        raise _Retry(_describe(exc), None) from None
    try:
        ok = resp.status_code == 200
        read1 = _session_reader(resp)
        body = _read_body(read1, deadline, max_bytes if ok else _ERROR_BODY, url,
                          declared=_length(resp.headers) if ok else None, refuse=ok)
    except (UserError, _Retry):
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. urllib3's ProtocolError
        deadline.check()
        raise _Retry(_describe(exc), None) from None
    finally:
        close = getattr(resp, "close", None)
        if close is not None:
            close()
    return resp.status_code, body, resp.headers


def _session_reader(resp: Any) -> Callable[[int], bytes]:
    """A read-what-has-arrived function over a session's response."""
    raw = getattr(resp, "raw", None)
    if hasattr(raw, "read1"):  # urllib3 2
        return lambda n: raw.read1(n, decode_content=True)
    if hasattr(resp, "iter_content"):
        chunks = resp.iter_content(_READ)
        return lambda n: next(chunks, b"")
    body = [resp.content]
    return lambda n: body.pop() if body else b""


def _length(headers: Any) -> int | None:
    """The Content-Length of an answer, None when absent, compressed or not a number."""
    value = headers.get("Content-Length") if headers is not None else None
    encoding = (headers.get("Content-Encoding") or "identity") if headers is not None else ""
    if value is None or encoding.lower() != "identity":
        return None  # a decoded body is longer than the compressed length
    try:
        return int(value)
    except ValueError:
        return None


def _describe(exc: Any) -> str:
    """One line naming a transport failure."""
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    name = type(exc).__name__ if isinstance(exc, BaseException) else ""
    return f"{name}: {text}" if name and text else (name or text or "connection failed")


def _get_json(url: str, params: dict, session: Any, timeout: float,
              max_bytes: int = MAX_BYTES) -> dict:
    """One GET; raises _Retry for answers worth retrying, UserError for the others."""
    with _Deadline(timeout) as deadline:
        if session is not None:
            status, body, headers = _session_get(session, url, params, deadline, timeout,
                                                 max_bytes)
        else:
            full = f"{url}?{urllib.parse.urlencode(params)}"
            status, body, headers = _urllib_get(full, url, deadline, timeout, max_bytes)
    if status in _RETRY_STATUS:
        raise _Retry(status, _retry_after(headers.get("Retry-After")))
    if status != 200:
        text = body[:200].decode("utf-8", errors="replace").replace("\n", " ")
        raise UserError(f"search API {url} answered HTTP {status}: {text}")
    try:
        page = json.loads(body)
    except ValueError:
        raise UserError(f"search API {url} answered with something that is not JSON") from None
    return _checked_page(page, url)


def _checked_page(page: Any, url: str) -> dict:
    """The page if it has the search API's shape (items: a list of objects), else a UserError."""
    items = page.get("items", []) if isinstance(page, dict) else None
    if not isinstance(items, list) or not all(map(_is_item, items)):
        raise UserError(f"search API {url} answered JSON that is not a page of media items")
    count = page.get("itemCount", 0)
    if not isinstance(count, int) or isinstance(count, bool):
        raise UserError(f"search API {url} answered an itemCount that is not a number")
    return page


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_WAIT)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _get_with_retries(url: str, params: dict, *, session, retries: int, backoff: float,
                      timeout: float, max_bytes: int = MAX_BYTES) -> dict:
    for attempt in range(retries + 1):
        try:
            return _get_json(url, params, session, timeout, max_bytes)
        except _Retry as exc:
            if attempt == retries:
                raise UserError(f"search API {url} still failing after {retries + 1} tries "
                                f"(last: {exc.status})") from None
            wait = exc.wait if exc.wait is not None else min(backoff * 2 ** attempt, _MAX_WAIT)
            time.sleep(wait)
    raise AssertionError("unreachable")


# --- paging and mapping -------------------------------------------------------------

def search_items(rq: dict | None = None, mq: dict | None = None, *, limit: int | None = None,
                 fields: Sequence[str] | None = None, base_url: str = SEARCH_URL,
                 page_size: int = MAX_PAGE, retries: int = 5, backoff: float = 1.0,
                 timeout: float = 60.0, session: Any = None,
                 max_bytes: int = MAX_BYTES) -> list[dict]:
    """The raw items of a media search, all pages, in ``uuid`` order."""
    _check_options(limit=limit, page_size=page_size, retries=retries, backoff=backoff,
                   timeout=timeout, max_bytes=max_bytes, fields=fields)
    url = f"{_checked_base_url(base_url).rstrip('/')}/search/media"
    items: list[dict] = []
    while limit is None or len(items) < limit:
        size = page_size if limit is None else min(page_size, limit - len(items))
        params = {"limit": size, "offset": len(items), "sort": "uuid"}
        if rq:
            params["rq"] = json.dumps(rq)
        if mq:
            params["mq"] = json.dumps(mq)
        if fields:
            params["fields"] = json.dumps(list(fields))
        page = _get_with_retries(url, params, session=session, retries=retries, backoff=backoff,
                                 timeout=timeout, max_bytes=max_bytes)
        batch = page.get("items", [])[:size]  # a server may send more than asked
        items += batch
        if len(batch) < size or len(items) >= page.get("itemCount", 0):
            break
    return items


def _checked_base_url(base_url: Any) -> str:
    """The API root if it is an http(s) URL with a host and a numeric port, else a UserError."""
    try:
        parts = urllib.parse.urlsplit(base_url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except (ValueError, TypeError, AttributeError):
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UserError(f"the search API root {base_url!r} is not an http(s) URL with a host")
    return base_url


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_item(item: Any) -> bool:
    """Whether a search item is an object whose ``indexTerms`` and ``data`` are objects."""
    return isinstance(item, dict) and all(
        isinstance(item.get(key) or {}, dict) for key in ("indexTerms", "data"))


def _check_options(*, limit: Any, page_size: Any, retries: Any, backoff: Any, timeout: Any,
                   max_bytes: Any, fields: Any) -> None:
    """Refuse options that would fail deep inside or hang (a search source's JSON gives them)."""
    def seconds(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and 0 <= value < float("inf")

    if limit is not None and not _whole(limit):
        raise UserError(f"limit must be a whole number, not {limit!r}")
    if not (_whole(page_size) and 1 <= page_size <= MAX_PAGE):
        raise UserError(f"page_size must be between 1 and {MAX_PAGE}, not {page_size!r}")
    if not (_whole(retries) and retries >= 0):
        raise UserError(f"retries must be a whole number of 0 or more, not {retries!r}")
    if not seconds(backoff):
        raise UserError(f"backoff must be a number of seconds, not {backoff!r}")
    if not (seconds(timeout) and timeout > 0):
        raise UserError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if not (_whole(max_bytes) and max_bytes > 0):
        raise UserError(f"max_bytes must be a positive whole number, not {max_bytes!r}")
    if fields is not None and not (isinstance(fields, (list, tuple))
                                   and all(isinstance(f, str) for f in fields)):
        raise UserError(f"fields must be a list of field names, not {fields!r}")


def items_frame(items: Sequence[dict]) -> pd.DataFrame:
    """Flatten search items: ``indexTerms`` fields as columns, raw ``data`` as ``data.<term>``."""
    rows = []
    for item in items:
        row = dict(item.get("indexTerms") or {})
        row.setdefault("uuid", item.get("uuid"))
        row.update({f"data.{k}": v for k, v in (item.get("data") or {}).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        if col != "records":
            frame[col] = frame[col].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    return frame


def search_media(rq: dict | None = None, mq: dict | None = None, *, limit: int | None = None,
                 fields: Sequence[str] | None = None, base_url: str = SEARCH_URL,
                 page_size: int = MAX_PAGE, retries: int = 5, session: Any = None,
                 backoff: float = 1.0, timeout: float = 60.0, max_bytes: int = MAX_BYTES,
                 raw: bool = False, label_column: str | None = None,
                 media_type: str | None = "images") -> pd.DataFrame:
    """Search iDigBio's media records and return them as a (pandas) catalog.

    Parameters
    ----------
    rq, mq : dict, optional
        iDigBio queries over specimen record fields and media record fields, e.g.
        ``{"family": "lycopodiaceae", "hasImage": True}``.
    limit : int, optional
        The most media records to return (default: all).
    fields : sequence of str, optional
        Fields the API should return (default: all).
    base_url : str
        The search API root, ``https://search.idigbio.org/v2``.
    page_size : int
        Items a request, at most 5000.
    retries : int
        Retries of a request answered with 5xx or 429, or whose connection broke, whose
        answer was cut short or did not come in time.
    session : requests.Session, optional
        Used for the requests when given (connection reuse, proxies); else urllib.
    backoff : float
        The first wait between tries in seconds, doubled each try, unless the answer
        has ``Retry-After``.
    timeout : float
        Seconds a request may take, from connecting to the answer's last byte (with a
        ``session``, its own timeout bounds each read and this deadline is checked
        between reads of the body).
    max_bytes : int
        The largest answer accepted; a bigger one is a UserError (ask for a smaller
        ``page_size``).
    raw : bool
        Add the provider's ``data`` terms as ``raw.<term>`` columns.
    label_column : str, optional
        An ``indexTerms`` field or ``data`` term holding a label.
    media_type : str or None
        The media kind wanted; others are excluded (``unsupported_media_type:...``).

    Returns
    -------
    pandas.DataFrame
        The catalog schema of :mod:`idigdask.catalog.schema`, duplicates marked.

    Raises
    ------
    UserError
        On a 4xx answer, an answer too large or not a page of items, or failures worth
        retrying after every retry.

    Examples
    --------
    >>> frame = search_media({"family": "lycopodiaceae"}, limit=100)      # doctest: +SKIP
    >>> frame[["media_uuid", "url"]].head()                               # doctest: +SKIP
    """
    items = search_items(rq, mq, limit=limit, fields=fields, base_url=base_url, page_size=page_size,
                         retries=retries, backoff=backoff, timeout=timeout, session=session,
                         max_bytes=max_bytes)
    frame = items_frame(items)
    keys = [c[len("data."):] for c in frame.columns if c.startswith("data.")]
    label = label_source(label_column, list(frame.columns), keys) if label_column else None
    columns = S.catalog_columns(label=label is not None, occurrence=occurrence_terms(keys),
                                raw=[S.RAW_PREFIX + k for k in keys] if raw else ())
    if frame.empty:
        return S.empty_catalog(columns)
    catalog = map_media_records(frame, columns, label=label, media_type=media_type)
    return mark_duplicates_pandas(catalog)


def parse_search_source(source: Any) -> dict:
    """The search parameters named by a search source (dict, ``search:`` JSON or URL)."""
    if isinstance(source, dict):
        spec = dict(source)
    elif isinstance(source, str) and source.startswith("search:") and not source.startswith("search://"):
        try:
            spec = json.loads(source[len("search:"):] or "{}")
        except ValueError as exc:
            raise UserError(f"search source is not valid JSON after 'search:' ({exc})") from None
    elif isinstance(source, str) and "/search/media" in source:
        spec = _spec_from_url(source)
    else:
        raise UserError(f"{source!r} is not a search source (a dict, 'search:{{...}}' or a "
                        f".../search/media URL)")
    if not isinstance(spec, dict):
        raise UserError("a search source must be a JSON object such as {\"rq\": {...}}")
    allowed = {"rq", "mq", "limit", "fields", "base_url", "page_size", "retries", "backoff", "timeout",
               "max_bytes"}
    unknown = set(spec) - allowed
    if unknown:
        raise UserError(f"search source has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return spec


def _spec_from_url(url: str) -> dict:
    parts = urllib.parse.urlsplit(url)
    root = parts.path.split("/search/media", 1)[0]
    spec: dict[str, Any] = {"base_url": urllib.parse.urlunsplit((parts.scheme, parts.netloc, root, "", ""))}
    for key, value in urllib.parse.parse_qsl(parts.query):
        if key in ("rq", "mq"):
            try:
                spec[key] = json.loads(value)
            except ValueError as exc:
                raise UserError(f"{key} in {url} is not valid JSON ({exc})") from None
        elif key == "limit":
            if not value.isdigit():
                raise UserError(f"limit in {url} is not a whole number: {value!r}")
            spec[key] = int(value)
    return spec
