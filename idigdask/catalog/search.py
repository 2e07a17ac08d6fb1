"""iDigBio's search API (v2) as a catalog source, and URLs of iDigBio's media derivatives.

:func:`search_media` pages through ``/search/media`` with a stable sort (``uuid``) and
``offset``, at most 5000 items a page, retrying 5xx and 429 answers with exponential
backoff (a ``Retry-After`` header is honoured). It uses only the standard library, or a
``requests.Session``-like object passed as ``session``.

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

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Sequence

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
    """
    media_url("x", size, base_url)  # validate the size now, not inside a task
    if isinstance(df, pd.DataFrame):
        return _rewrite(df, size, base_url)
    return df.map_partitions(_rewrite, size, base_url, meta=df._meta)


# --- HTTP -------------------------------------------------------------------------

def _get_json(url: str, params: dict, session: Any, timeout: float) -> dict:
    """One GET; raises _Retry for answers worth retrying, UserError for the others."""
    if session is not None:
        resp = session.get(url, params=params, timeout=timeout)
        status, body, headers = resp.status_code, resp.content, resp.headers
    else:
        full = f"{url}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(full, timeout=timeout) as resp:
                status, body, headers = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            status, body, headers = exc.code, exc.read(), exc.headers
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise _Retry(getattr(exc, "reason", exc), None) from None
    if status in _RETRY_STATUS:
        raise _Retry(status, _retry_after(headers.get("Retry-After")))
    if status != 200:
        text = body[:200].decode("utf-8", errors="replace").replace("\n", " ")
        raise UserError(f"search API {url} answered HTTP {status}: {text}")
    try:
        return json.loads(body)
    except ValueError:
        raise UserError(f"search API {url} answered with something that is not JSON") from None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_WAIT)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _get_with_retries(url: str, params: dict, *, session, retries: int, backoff: float,
                      timeout: float) -> dict:
    for attempt in range(retries + 1):
        try:
            return _get_json(url, params, session, timeout)
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
                 timeout: float = 60.0, session: Any = None) -> list[dict]:
    """The raw items of a media search, all pages, in ``uuid`` order."""
    if not 1 <= page_size <= MAX_PAGE:
        raise UserError(f"page_size must be between 1 and {MAX_PAGE}, not {page_size}")
    url = f"{base_url.rstrip('/')}/search/media"
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
                                 timeout=timeout)
        batch = page.get("items", [])
        items += batch
        if len(batch) < size or len(items) >= page.get("itemCount", 0):
            break
    return items


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
                 backoff: float = 1.0, timeout: float = 60.0, raw: bool = False,
                 label_column: str | None = None, media_type: str | None = "images") -> pd.DataFrame:
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
        Retries of a request answered with 5xx or 429 (or a broken connection).
    session : requests.Session, optional
        Used for the requests when given (connection reuse, proxies); else urllib.
    backoff : float
        The first wait between tries in seconds, doubled each try, unless the answer
        has ``Retry-After``.
    timeout : float
        Seconds a request may take.
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
        On a 4xx answer, or 5xx/429 answers after every retry.
    """
    items = search_items(rq, mq, limit=limit, fields=fields, base_url=base_url, page_size=page_size,
                         retries=retries, backoff=backoff, timeout=timeout, session=session)
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
    allowed = {"rq", "mq", "limit", "fields", "base_url", "page_size", "retries", "backoff", "timeout"}
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
