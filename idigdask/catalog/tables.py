"""Plain URL tables (CSV, TSV, JSON lines, parquet) and written catalogs.

Text tables are split into byte blocks at line ends and parsed block by block, so a
large table streams; every column is read as text (the catalog casts what it needs).
Bytes that are not UTF-8 become U+FFFD, and the row is excluded as ``bad_text``.
Compressed text (``.gz``, ``.bz2``, ``.xz``, ``.zst``) is one block. Lines may end in
LF, CRLF or a bare CR (old spreadsheet exports), the header's own ending included.
Whatever the libraries below raise while a table is read (pandas, pyarrow, the file
system) reaches the caller as one :class:`~idigdask.errors.UserError` line.

Column roles are found by name (see :data:`ALIASES`); ``url_column``, ``id_column`` and
``label_column`` override them. Without an id column, ``media_uuid`` is
``uuid5(NAMESPACE_URL, url)``, stable from one read to the next. A missing format is
guessed from the URL's file extension (``.jpg`` -> ``image/jpeg``).
"""

from __future__ import annotations

import csv
import io
import json
import mimetypes
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Iterator, Sequence

import pandas as pd

from ..errors import UserError
from . import parquet
from . import schema as S
from .normalize import finish_partition, first_present, media_uuids, to_string

#: Default URL columns, the first found wins.
URL_COLUMNS = ("url", "access_uri", "accessuri", "ac:accessURI", "identifier")

#: Column names that fill each catalog column, the first found wins.
ALIASES = {
    "format": ("format", "dcterms:format", "dc:format", "mimetype", "mime_type"),
    "record_uuids": ("record_uuids", "records", "record_uuid", "coreid"),
    "width": ("width", "xpixels", "exif:PixelXDimension"),
    "height": ("height", "ypixels", "exif:PixelYDimension"),
    "license": ("license", "dcterms:license", "webstatement", "rights", "dcterms:rights"),
    "hash_function": ("hash_function", "ac:hashFunction"),
    "hash_value": ("hash_value", "ac:hashValue"),
    "recordset": ("recordset",),
}
MEDIATYPE_COLUMNS = ("mediatype", "dc:type", "dcterms:type")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
KINDS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
         ".json": "jsonl", ".parquet": "parquet", ".parq": "parquet", ".pq": "parquet"}
_HEAD_BYTES = 1 << 16
_BOM = b"\xef\xbb\xbf"
# A quote or a line end: what decides where a CSV record ends.
_RECORD_MARKS = re.compile(rb'["\r\n]')


def table_kind(path: str) -> tuple[str | None, str | None]:
    """The table kind (``csv``, ``tsv``, ``jsonl``, ``parquet``) and compression of a path."""
    name = path.lower().split("?", 1)[0]
    compression = None
    for ext, comp in COMPRESSIONS.items():
        if name.endswith(ext):
            name, compression = name[: -len(ext)], comp
    for ext, kind in KINDS.items():
        if name.endswith(ext):
            return kind, compression
    return None, compression


@dataclass(frozen=True)
class Block:
    """Bytes ``[offset, offset + length)`` of a text table, cut at line ends."""

    path: str
    offset: int
    length: int | None  # None: the whole (compressed) file
    header: bytes = b""
    delimiter: bytes = b"\n"  # the line end blocks are cut at (b"\r" for CR-only text)


@dataclass(frozen=True)
class Roles:
    """Which source column fills which catalog column."""

    columns: tuple[str, ...]  # the catalog columns produced
    sources: tuple[tuple[str, str], ...]  # (catalog column, source column)
    mediatype: str | None
    id_column: str | None


# --- choosing columns -------------------------------------------------------------

def resolve_roles(found: Sequence[str], path: str, *, url_column=None, id_column=None,
                  label_column=None, raw=False) -> Roles:
    """Decide the source column of every catalog column, or raise a UserError."""
    listed = ", ".join(found) or "none"

    def need(col: str, option: str) -> str:
        if col not in found:
            raise UserError(f"{path}: no column {col!r} ({option}); columns found: {listed}")
        return col

    if url_column is not None:
        url = need(url_column, "--url-column")
    else:
        url = next((c for c in URL_COLUMNS if c in found), None)
        if url is None:
            raise UserError(f"{path}: no URL column (looked for {', '.join(URL_COLUMNS)}; "
                            f"pass url_column); columns found: {listed}")
    sources = [("access_uri", url)]
    if id_column is not None:
        sources.append(("media_uuid", need(id_column, "--id-column")))
    taken = {url, id_column, label_column}
    for col, names in ALIASES.items():
        hit = next((n for n in names if n in found and n not in taken), None)
        if hit:
            sources.append((col, hit))
    if label_column is not None:
        sources.append((S.LABEL, need(label_column, "--label-column")))
    lower = {c.lower().removeprefix("dwc:"): c for c in found}
    occurrence = [f for f in S.OCCURRENCE_FIELDS if f.lower() in lower]
    sources += [(f, lower[f.lower()]) for f in occurrence]
    raw_cols = [S.RAW_PREFIX + c for c in found] if raw else []
    sources += [(S.RAW_PREFIX + c, c) for c in found] if raw else []
    columns = S.catalog_columns(label=label_column is not None, occurrence=occurrence, raw=raw_cols)
    mediatype = next((c for c in MEDIATYPE_COLUMNS if c in found), None)
    return Roles(tuple(columns), tuple(sources), mediatype, id_column)


def guess_format(uri: pd.Series) -> pd.Series:
    """MIME types guessed from the URLs' file extensions (NA when unknown)."""
    ext = uri.str.extract(r"\.([A-Za-z0-9]{2,5})(?:[?#]|$)", expand=False).str.lower()
    table = {e: mimetypes.types_map.get("." + e) for e in ext.dropna().unique()}
    return ext.map(lambda e: table.get(e) if isinstance(e, str) else None).astype(S.STRING)


def map_table(frame: pd.DataFrame, roles: Roles, media_type: str | None = "images") -> pd.DataFrame:
    """Map one partition of a URL table onto the catalog schema."""
    mapped = pd.DataFrame(index=frame.index)
    for col, src in roles.sources:
        if src in frame.columns:
            mapped[col] = frame[src]
    if "record_uuids" in mapped.columns:
        mapped["record_uuids"] = [_split_ids(v) for v in mapped["record_uuids"]]
    uri = first_present(mapped, ["access_uri"])
    if uri is not None:
        fmt = first_present(mapped, ["format"])
        guessed = guess_format(uri)
        mapped["format"] = guessed if fmt is None else fmt.fillna(guessed)
    declared = frame[roles.mediatype] if roles.mediatype in frame.columns else None
    return finish_partition(mapped, roles.columns, media_type=media_type, mediatype=declared)


def table_ids(frame: pd.DataFrame, roles: Roles) -> pd.Series:
    """Only the ``media_uuid`` of a table partition (for duplicate detection)."""
    source = dict(roles.sources)
    ids = frame.get(source.get("media_uuid"))
    return media_uuids(ids, frame.get(source["access_uri"]), frame.index)


def _split_ids(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split("|") if v.strip()]
    return value


# --- text tables ----------------------------------------------------------------

@contextmanager
def _reading(path: str, offset: int = 0) -> Iterator[None]:
    """Turn any error of the libraries reading a table into one UserError line."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - third-party code: never a traceback
        from ..fetch import redact

        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{redact(path)}: cannot read the table near byte {offset} "
                        f"({type(exc).__name__}: {detail})") from None


def _head(fs, path: str, compression: str | None) -> bytes:
    with fs.open(path, "rb", compression=compression) as f:
        return f.read(_HEAD_BYTES)


def _record_end(text: bytes) -> tuple[int, int] | None:
    """Where the first CSV record of ``text`` ends: (end of its bytes, start of the next).

    Line ends inside quotes belong to the record; CRLF, LF and a bare CR all end it.
    None when no line end is found.
    """
    quoted = False
    for mark in _RECORD_MARKS.finditer(text):
        if mark.group() == b'"':
            quoted = not quoted
        elif not quoted:
            end = mark.start()
            crlf = text[end:end + 2] == b"\r\n"
            return end, end + (2 if crlf else 1)
    return None


def _line_delimiter(text: bytes) -> bytes:
    """The byte that ends lines: LF (also for CRLF text), or CR when text has no LF."""
    return b"\r" if b"\r" in text and b"\n" not in text else b"\n"


def text_columns(fs, path: str, kind: str,
                 compression: str | None) -> tuple[list[str], bytes, bytes]:
    """The column names of a text table, after cheap checks.

    Returns
    -------
    names : list of str
    header : bytes
        The header line with an LF ending (CSV/TSV), prepended to every later block.
    delimiter : bytes
        The line end blocks are cut at (see :func:`plan_blocks`).
    """
    with _reading(path):
        head = _head(fs, path, compression)
    full = len(head) == _HEAD_BYTES
    if kind == "jsonl":
        lines = head.splitlines()  # JSON text never holds a raw CR or LF
        return _json_columns(lines[:-1] if full else lines, path), b"", _line_delimiter(head)
    head = head.removeprefix(_BOM)
    end = _record_end(head)
    if end is None and full:
        raise UserError(f"{path}: no line end in the first {_HEAD_BYTES} bytes (not a table?)")
    if end is None and head.count(b'"') % 2:
        raise UserError(f"{path}: the header line has a quote that is never closed")
    rest = b"" if end is None else head[end[1]:]
    if not rest.strip():
        raise UserError(f"{path}: the table has no rows (only a header or nothing)")
    header = head[:end[0]]
    sep = "\t" if kind == "tsv" else ","
    text = header.decode("utf-8", errors="replace")
    try:
        names = next(csv.reader(io.StringIO(text, newline=""), delimiter=sep), [])
    except csv.Error as exc:
        raise UserError(f"{path}: cannot read the header line ({exc})") from None
    return names, header + b"\n", _line_delimiter(rest)


def _json_columns(lines: list[bytes], path: str) -> list[str]:
    names: dict[str, None] = {}
    rows = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8", errors="replace"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}: line {number} is not a JSON object")
        names.update(dict.fromkeys(row))
        rows += 1
    if rows == 0:
        raise UserError(f"{path}: the table has no rows")
    return list(names)


def plan_blocks(fs, path: str, compression: str | None, header: bytes, blocksize: int,
                delimiter: bytes = b"\n") -> list[Block]:
    """Byte blocks of a text table, cut at ``delimiter`` (one block when compressed)."""
    if compression is not None:
        return [Block(path, 0, None, header, delimiter)]
    with _reading(path):
        size = fs.size(path)
    return [Block(path, off, min(blocksize, size - off), header, delimiter)
            for off in range(0, size, blocksize)] or [Block(path, 0, 0, header, delimiter)]


def read_block(fs, kind: str, compression: str | None, block: Block) -> pd.DataFrame:
    """Parse one block of a CSV/TSV/JSONL table; every column as text."""
    from fsspec.utils import read_block as cut

    with fs.open(block.path, "rb", compression=compression) as f:
        data = f.read() if block.length is None else cut(f, block.offset, block.length,
                                                         block.delimiter)
    if kind == "jsonl":
        return _parse_jsonl(data, block)
    if block.offset > 0:
        data = block.header + data
    else:
        data = data.removeprefix(_BOM)
    try:
        return pd.read_csv(io.BytesIO(data), sep="\t" if kind == "tsv" else ",", dtype=S.STRING,
                           encoding="utf-8", encoding_errors="replace",
                           keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, ValueError) as exc:
        raise UserError(f"{block.path}: cannot parse the table near byte {block.offset} "
                        f"({str(exc).splitlines()[0]})") from None


def _parse_jsonl(data: bytes, block: Block) -> pd.DataFrame:
    rows = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8", errors="replace"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{block.path}: line {number} of the block at byte {block.offset} "
                            f"is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{block.path}: a line at byte {block.offset} is not a JSON object")
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        if col not in ("records", "record_uuids"):
            frame[col] = to_string(frame[col], frame.index)
    return frame


def _load_text(fs, kind, compression, roles, media_type, block) -> pd.DataFrame:
    with _reading(block.path, block.offset):
        return map_table(read_block(fs, kind, compression, block), roles, media_type)


def _load_text_ids(fs, kind, compression, roles, block) -> pd.Series:
    with _reading(block.path, block.offset):
        return table_ids(read_block(fs, kind, compression, block), roles)


def read_text_table(fs, path: str, kind: str, compression: str | None, *, url_column=None,
                    id_column=None, label_column=None, raw=False, media_type="images",
                    blocksize: int = 64 * 2**20):
    """Plan a lazy read of a CSV/TSV/JSONL URL table: (catalog, media uuids)."""
    import dask
    import dask.dataframe as dd

    found, header, delimiter = text_columns(fs, path, kind, compression)
    roles = resolve_roles(found, path, url_column=url_column, id_column=id_column,
                          label_column=label_column, raw=raw)
    blocks = plan_blocks(fs, path, compression, header, blocksize, delimiter)
    meta = S.empty_catalog(roles.columns)
    with dask.config.set({"dataframe.convert-string": False}):
        frame = dd.from_map(partial(_load_text, fs, kind, compression, roles, media_type), blocks,
                            meta=meta, enforce_metadata=False, label="read-catalog")
        ids = dd.from_map(partial(_load_text_ids, fs, kind, compression, roles), blocks,
                          meta=meta["media_uuid"], enforce_metadata=False, label="read-media-uuids")
    return frame, ids


# --- parquet tables and written catalogs ------------------------------------------

def read_parquet_table(fs, files: Sequence[str], schema, *, url_column=None, id_column=None,
                       label_column=None, raw=False, media_type="images",
                       blocksize: int = 32 * 2**20):
    """Plan a lazy read of a parquet URL table: (catalog, media uuids, rows)."""
    found = list(schema.names)
    roles = resolve_roles(found, files[0], url_column=url_column, id_column=id_column,
                          label_column=label_column, raw=raw)
    read_cols = list(dict.fromkeys(src for _, src in roles.sources))
    if roles.mediatype:
        read_cols.append(roles.mediatype)
    id_cols = [src for col, src in roles.sources if col in ("access_uri", "media_uuid")]
    parts, rows = parquet.plan(fs, files, read_cols, blocksize)
    mapper = partial(_map_parquet, path=files[0], roles=roles, media_type=media_type)
    frame, ids = parquet.lazy_frames(fs, parts, read_cols, id_cols, mapper,
                                     partial(_parquet_ids, path=files[0], roles=roles),
                                     S.empty_catalog(roles.columns))
    return frame, ids, rows


def _map_parquet(frame: pd.DataFrame, path: str, roles: Roles, media_type: str | None) -> pd.DataFrame:
    with _reading(path):
        return map_table(frame, roles, media_type)


def _parquet_ids(frame: pd.DataFrame, path: str, roles: Roles) -> pd.Series:
    with _reading(path):
        return table_ids(frame, roles)


def _as_catalog(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    return finish_partition(frame, columns, media_type=None)


def _written_ids(frame: pd.DataFrame) -> pd.Series:
    return frame["media_uuid"]


def read_written_catalog(fs, files: Sequence[str], schema, *, blocksize: int = 32 * 2**20):
    """Plan a lazy read of a catalog written by ``idigdask catalog``: (catalog, rows).

    Its exclusions (duplicates included) are taken as written.
    """
    names = list(schema.names)
    occurrence = [f for f in S.OCCURRENCE_FIELDS if f in names]
    raw = [c for c in names if c.startswith(S.RAW_PREFIX)]
    columns = S.catalog_columns(label=S.LABEL in names, occurrence=occurrence, raw=raw)
    parts, rows = parquet.plan(fs, files, columns, blocksize)
    frame, _ = parquet.lazy_frames(fs, parts, columns, ["media_uuid"], partial(_as_catalog, columns=columns),
                                   _written_ids, S.empty_catalog(columns))
    return frame, rows
