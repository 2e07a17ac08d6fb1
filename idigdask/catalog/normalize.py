"""Row-level normalization shared by every source: dtypes, identifiers, exclusions.

Each source maps its own fields onto the catalog's column names (see
:mod:`idigdask.catalog.schema`) and hands a pandas partition to ``finish_partition``,
which casts the dtypes, fills ``media_uuid`` and decides ``excluded`` for what can be
judged from the row alone. Duplicates need the whole catalog: see
:mod:`idigdask.catalog.dedupe`.

A URI is judged as the build stage will fetch it, by the scheme rules of
:mod:`idigdask.urls`: :data:`~idigdask.urls.REMOTE_SCHEMES` need a host (a bucket and
a key for ``s3``) and a port that is a number; :data:`~idigdask.urls.LOCAL_SCHEMES`
need a ``file:///`` URI, an absolute path or ``scheme://location``, and are kept here
(the build decides with ``allow_local``); any other scheme is excluded as
``unsupported_scheme:<scheme>``, so that a catalog's usable count is true before any
fetch.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

# the fetcher's own scheme rules, so a URI kept here is one the build will fetch
from ..urls import LOCAL_SCHEMES, REMOTE_SCHEMES, classify_scheme
from . import schema as S

# A local URI needs a scheme and a location, and no whitespace or control character
# inside (outer whitespace is stripped first: providers often leave a trailing space).
_URI = r"[A-Za-z][A-Za-z0-9+.\-]*://[^\x00-\x20\x7f/?#]+[^\x00-\x20\x7f]*"
_FILE_URI = r"file:///[^\x00-\x20\x7f]+"
# An absolute local path (a shared file system, generated test sheets) is usable too.
_LOCAL_PATH = r"/[^/\x00-\x20\x7f][^\x00-\x20\x7f]*"
_LOCAL_OK = re.compile(f"{_URI}|{_FILE_URI}|{_LOCAL_PATH}")
# The common well-formed shapes, matched for a whole partition at once (Arrow's regex
# engine); every other URI goes through uri_problem, which accepts all these too.
_LABEL = r"[A-Za-z0-9_-]{1,63}"
_PLAIN = (rf"^(?:[Hh][Tt][Tt][Pp][Ss]?://{_LABEL}(?:\.{_LABEL})*\.?(?::[1-9][0-9]{{0,3}})?"
          r"(?:[/?#][^\x00-\x20\x7f]*)?"
          r"|[Ss]3://[A-Za-z0-9._-]+/[^\x00-\x20\x7f?#][^\x00-\x20\x7f]*"
          rf"|{_FILE_URI}|{_LOCAL_PATH})$")
_BLANK_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_HOST_LABEL = re.compile(r"(?:[a-z0-9_-]|[^\x00-\x7f])+")
_BUCKET = re.compile(r"[A-Za-z0-9._-]+")
_MAX_SCHEME = 32  # a longer "scheme" is text with a colon, not a protocol
_SURROGATES = re.compile("[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"

#: Provider words for a kind of media -> iDigBio's ``mediatype`` words.
_MEDIA_KINDS = {
    "images": "images", "image": "images", "stillimage": "images", "still image": "images",
    "sounds": "sounds", "sound": "sounds", "audio": "sounds",
    "videos": "videos", "video": "videos", "movingimage": "videos", "moving image": "videos",
}
_MIME_KINDS = {"image": "images", "audio": "sounds", "video": "videos"}


def media_uuid_for_url(url: str) -> str:
    """A stable media identifier derived from a URL: ``uuid5(NAMESPACE_URL, url)``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, url))


def _clean_text(value: object) -> object:
    """One value to ``str`` (or NA); undecodable text keeps a U+FFFD marker for bad_text."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return pd.NA
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    text = value if isinstance(value, str) else str(value)
    # Lone surrogates (from surrogateescape decoding) cannot be stored as UTF-8.
    return _SURROGATES.sub(_REPLACEMENT, text)


def to_string(values: pd.Series | Sequence | None, index: pd.Index) -> pd.Series:
    """Cast anything to the catalog's string dtype, never failing on bad text."""
    if values is None:
        return pd.Series(pd.NA, index=index, dtype=S.STRING)
    series = values if isinstance(values, pd.Series) else pd.Series(values, index=index)
    if series.dtype == S.STRING:
        return series
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return series.astype(S.STRING)
    if pd.api.types.is_float_dtype(series.dtype):
        # 1.0 -> "1": numbers read as floats because of a missing value
        ints = series.dropna()
        if (ints == ints.round()).all():
            return series.astype("Int64").astype(S.STRING)
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_integer_dtype(series.dtype):
        return series.astype(S.STRING)
    return pd.Series([_clean_text(v) for v in series], index=series.index, dtype=S.STRING)


def to_int(values: pd.Series | None, index: pd.Index) -> pd.Series:
    """Pixel counts to Int64; text that is not a number becomes NA."""
    if values is None:
        return pd.Series(pd.NA, index=index, dtype=S.INT)
    if pd.api.types.is_signed_integer_dtype(values.dtype):  # uint64 may not fit: below
        return values.astype(S.INT)
    numbers = pd.to_numeric(values.astype(object).where(values.notna(), None), errors="coerce")
    # A size past int64 (1e30, inf) is absurd, not fatal: clip it so that the row is
    # excluded as absurd_size instead of failing the whole partition.
    numbers = numbers.astype("float64").clip(-(2.0**62), 2.0**62)
    return np.floor(numbers).astype(S.INT)


def to_list(value: object) -> list:
    """A ``record_uuids`` cell: a list of strings (empty when there is none)."""
    if type(value) is list and all(type(v) is str for v in value):
        return value  # already clean, as pyarrow gives them
    if value is None or value is pd.NA:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, float) and np.isnan(value):
        return []
    if isinstance(value, dict) or not isinstance(value, (list, tuple, np.ndarray)):
        # a JSON line's number, true or object: one id, not something to iterate
        return [_clean_text(value)]
    cleaned = (_clean_text(v) for v in value)
    return [v for v in cleaned if v is not pd.NA]


def first_present(frame: pd.DataFrame, names: Sequence[str]) -> pd.Series | None:
    """Coalesce the columns of ``frame`` named in ``names``: the first non-empty value wins."""
    out = None
    for name in names:
        if name not in frame.columns:
            continue
        col = to_string(frame[name], frame.index).str.strip()
        col = col.mask(col == "")
        out = col if out is None else out.fillna(col)
    return out


def _kind_of(word: object, table: dict) -> object:
    if not isinstance(word, str) or not word.strip():
        return None
    word = word.strip().lower().rstrip("/").rsplit("/", 1)[-1]  # dcmitype URIs too
    return table.get(word, word)


def media_kind(mediatype: pd.Series, fmt: pd.Series) -> pd.Series:
    """What kind of media each row is (``images``, ``sounds``...), NA when unknown.

    The provider's declared type wins; the MIME type's top level fills the gaps.
    """
    codes, words = pd.factorize(mediatype)  # a handful of distinct words: map those only
    kinds = np.array([_kind_of(w, _MEDIA_KINDS) for w in words] + [None], dtype=object)
    declared = kinds[codes]
    missing = pd.isna(declared)
    if missing.any():
        top = fmt.str.split("/", n=1).str[0]
        codes, words = pd.factorize(top)
        mime = np.array([_MIME_KINDS.get(w) for w in words] + [None], dtype=object)
        declared[missing] = mime[codes][missing]
    return pd.Series(declared, index=mediatype.index, dtype=object)


def uri_problem(uri: str) -> str | None:
    """Why the build stage could not fetch ``uri``: an exclusion reason, or None.

    Parameters
    ----------
    uri : str
        An ``access_uri``, outer whitespace already stripped.

    Returns
    -------
    str or None
        ``malformed_uri``, ``unsupported_scheme:<scheme>``, or None when it is usable.

    Examples
    --------
    >>> uri_problem("https://example.org:8080/a.jpg") is None
    True
    >>> uri_problem("http://[::1:bad/a.jpg"), uri_problem("ftp://example.org/a.jpg")
    ('malformed_uri', 'unsupported_scheme:ftp')
    """
    scheme = classify_scheme(uri)
    if scheme in REMOTE_SCHEMES:
        return None if _remote_ok(uri, scheme) else S.MALFORMED_URI
    if scheme in LOCAL_SCHEMES:
        return None if _LOCAL_OK.fullmatch(uri) else S.MALFORMED_URI
    if len(scheme) > _MAX_SCHEME or uri[len(scheme) + 1:][:1].isdigit():
        return S.MALFORMED_URI  # text with a colon, or "host:port/..." without a scheme
    return f"{S.UNSUPPORTED_SCHEME}:{scheme}"


def _remote_ok(uri: str, scheme: str) -> bool:
    """Whether an http(s) or s3 URI has what a request needs: host, port, bucket, key."""
    if _BLANK_OR_CONTROL.search(uri) or uri[len(scheme):len(scheme) + 3] != "://":
        return False  # "http:/x", "http:x", spaces or control characters
    try:
        parts = urlsplit(uri)
        port = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError:  # e.g. an unbalanced "[" of an IPv6 address
        return False
    if port == 0:
        return False
    if scheme == "s3":
        return _BUCKET.fullmatch(parts.netloc) is not None and len(parts.path) > 1
    return _host_ok(parts.netloc.rpartition("@")[2], parts.hostname)


def _host_ok(host: str, hostname: str | None) -> bool:
    """Whether the host part of a URL names a host: an IPv6 literal or DNS labels."""
    if host.startswith("["):
        address = host[1:].partition("]")[0].partition("%")[0]  # a zone id may follow
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return False
        return True
    if not hostname:
        return False
    labels = hostname.removesuffix(".").split(".")
    return all(_label_ok(label) for label in labels)


def _label_ok(label: str) -> bool:
    if not _HOST_LABEL.fullmatch(label):
        return False
    if label.isascii():
        return len(label) <= 63
    try:
        return len(label.encode("idna")) <= 63  # an internationalized name
    except UnicodeError:
        return False


def uri_exclusions(uri: pd.Series) -> pd.Series:
    """The URI reason of each row (see :func:`uri_problem`); NA where usable or missing."""
    plain = uri.str.match(_PLAIN).fillna(True).astype(bool).to_numpy()
    values = np.full(len(uri), None, dtype=object)
    odd = np.flatnonzero(~plain)
    if len(odd):
        texts = uri.iloc[odd]
        found = {u: uri_problem(u) for u in texts.unique()}
        values[odd] = [found[u] for u in texts]
    return pd.Series(values, index=uri.index, dtype=S.STRING)


def _set_reason(excluded: pd.Series, mask: pd.Series, reason: str | pd.Series) -> pd.Series:
    """Give ``reason`` to rows in ``mask`` that have no reason yet (the first wins)."""
    mask = mask.fillna(False).astype(bool) & excluded.isna()
    if not mask.any():
        return excluded
    return excluded.mask(mask, reason)


def row_exclusions(frame: pd.DataFrame, kind: pd.Series, media_type: str | None) -> pd.Series:
    """The ``excluded`` reasons that each row earns on its own."""
    excluded = to_string(frame.get(S.EXCLUDED), frame.index)
    uri = frame["access_uri"]
    excluded = _set_reason(excluded, uri.isna(), S.NO_URI)
    reasons = uri_exclusions(uri)
    excluded = _set_reason(excluded, reasons.notna(), reasons)
    text = [c for c in frame.columns if frame[c].dtype == S.STRING and c != S.EXCLUDED]
    bad = pd.Series(False, index=frame.index)
    for c in text:
        bad |= frame[c].str.contains(_REPLACEMENT, regex=False).fillna(False).astype(bool)
    excluded = _set_reason(excluded, bad, S.BAD_TEXT)
    if media_type is not None:
        other = kind.notna() & (kind != media_type)
        if other.any():
            reasons = (S.UNSUPPORTED_MEDIA_TYPE + ":" + kind[other]).astype(S.STRING)
            excluded = _set_reason(excluded, other, reasons.reindex(kind.index))
    absurd = pd.Series(False, index=frame.index)
    for c in ("width", "height"):
        absurd |= ((frame[c] < 0) | (frame[c] > S.MAX_SIDE)).fillna(False).astype(bool)
    return _set_reason(excluded, absurd, S.ABSURD_SIZE)


def finish_partition(
    frame: pd.DataFrame,
    columns: Sequence[str],
    *,
    media_type: str | None = "images",
    mediatype: pd.Series | None = None,
) -> pd.DataFrame:
    """Cast a source's mapped partition to the catalog schema and decide row exclusions.

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns named as in the catalog (any missing one becomes NA); may already hold an
        ``excluded`` column whose reasons are kept.
    columns : sequence of str
        The catalog columns to return, in order (see :func:`schema.catalog_columns`).
    media_type : str or None
        The kind of media wanted (``"images"``); rows of another declared kind are
        excluded. None accepts every kind.
    mediatype : pandas.Series, optional
        The provider's declared kind per row; the MIME type is used where it is NA.

    Returns
    -------
    pandas.DataFrame
        The partition in the catalog schema.
    """
    index = frame.index
    out = {}
    for col in columns:
        if col == "record_uuids":
            values = frame["record_uuids"] if col in frame.columns else [None] * len(frame)
            out[col] = pd.Series([to_list(v) for v in values], index=index, dtype=object)
        elif col in ("width", "height"):
            out[col] = to_int(frame.get(col), index)
        else:
            out[col] = to_string(frame.get(col), index)
    result = pd.DataFrame(out, index=index)
    uri = result["access_uri"].str.strip()
    result["access_uri"] = uri.mask(uri == "")
    result["format"] = result["format"].str.strip().str.lower()
    result["media_uuid"] = _fill_media_uuid(result["media_uuid"], result["access_uri"])
    declared = to_string(mediatype, index)
    kind = media_kind(declared, result["format"])
    result[S.EXCLUDED] = row_exclusions(result, kind, media_type)
    return result[list(columns)]


def media_uuids(ids: pd.Series | None, uri: pd.Series | None, index: pd.Index) -> pd.Series:
    """The ``media_uuid`` column: ``ids`` where given, else ``uuid5`` of the stripped URI."""
    ids = to_string(ids, index)
    uri = to_string(uri, index).str.strip()
    return _fill_media_uuid(ids, uri.mask(uri == ""))


def _fill_media_uuid(ids: pd.Series, uri: pd.Series) -> pd.Series:
    ids = ids.str.strip()
    ids = ids.mask(ids == "")
    missing = ids.isna() & uri.notna()
    if missing.any():
        derived = [media_uuid_for_url(u) for u in uri[missing]]
        ids = ids.copy()
        ids[missing] = derived
    return ids
