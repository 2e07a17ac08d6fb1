"""``read_catalog``: any media source to one lazy, normalized catalog; ``summarize``."""

from __future__ import annotations

import math
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd

from ..errors import UserError
from . import schema as S
from .dedupe import mark_duplicates

#: Source kinds ``read_catalog`` knows (``format=``).
FORMATS = ("guoda", "table", "dwca", "search", "catalog")

#: Names of Darwin Core Archive files: a zip, or a tar plain or compressed (what
#: :func:`idigdask.catalog.archive.unpack` opens).
DWCA_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz")

#: Default bytes a partition: of text tables, and of the (uncompressed) parquet columns read.
TEXT_BLOCKSIZE = 64 * 2**20
PARQUET_BLOCKSIZE = 16 * 2**20

#: Rows a partition of an in-memory source (DwC-A, search results).
PANDAS_PARTITION_ROWS = 100_000


def from_pandas(frame: pd.DataFrame) -> dd.DataFrame:
    """A pandas catalog as a Dask one, keeping ``record_uuids`` as Python lists."""
    parts = max(1, math.ceil(len(frame) / PANDAS_PARTITION_ROWS))
    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_pandas(frame.reset_index(drop=True), npartitions=parts, sort=False)


def detect_format(source: str, fs, path: str) -> str:
    """Which kind of file source this is, from its name (``parquet`` when a parquet file).

    Search sources are recognised before; a parquet's schema decides later between a
    GUODA dump, a URL table and a written catalog.
    """
    from .tables import table_kind

    kind, _ = table_kind(path)
    if is_dwca_name(path):
        return "dwca"
    if kind in ("csv", "tsv", "jsonl"):
        return "table"
    if kind == "parquet":
        return "parquet"
    if _is_dir(fs, path):
        return "dwca" if fs.exists(f"{path.rstrip('/')}/meta.xml") else "parquet"
    raise UserError(f"{source}: cannot tell the format from the name; pass format= "
                    f"(one of {', '.join(FORMATS)}) or use a .parquet, .csv, .tsv, .jsonl, .zip "
                    "or .tar.gz name")


def is_dwca_name(path: str) -> bool:
    """Whether a file name is that of a Darwin Core Archive (:data:`DWCA_SUFFIXES`)."""
    return path.lower().endswith(DWCA_SUFFIXES)


def _is_dir(fs, path: str) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    if any(p in ("http", "https") for p in protocols):
        return False  # HTTP has no folders; isdir would scrape a page
    return fs.isdir(path)


def read_catalog(
    source: Any,
    *,
    format: str | None = None,
    storage_options: dict | None = None,
    url_column: str | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    raw: bool = False,
    media_type: str | None = "images",
    blocksize: int | str | None = None,
) -> dd.DataFrame:
    """Read a media catalog, lazily, in the one normalized schema.

    Parameters
    ----------
    source : str or dict
        A path or fsspec URL (local, ``http(s)://``, ``s3://``, ``memory://``...) of a
        GUODA media parquet (file or folder), a URL table (``.csv``, ``.tsv``, ``.jsonl``,
        ``.parquet``, optionally compressed), a Darwin Core Archive (``.zip``, a tar such
        as ``.tgz``, ``.tar.bz2`` or ``.tar.xz``, or a folder with ``meta.xml``), or a
        catalog written by ``idigdask catalog``; or a search of iDigBio's API (a dict,
        ``"search:{json}"`` or a ``.../search/media?rq=...`` URL, see
        :mod:`idigdask.catalog.search`).
    format : {"guoda", "table", "dwca", "search", "catalog"}, optional
        The kind of source; detected from the name (and a parquet's schema) by default.
    storage_options : dict, optional
        Passed to fsspec for the source.
    url_column, id_column : str, optional
        For URL tables: the column holding the media URL (default: the first of
        ``url``, ``access_uri``, ``accessuri``, ``ac:accessURI``, ``identifier``) and
        one holding a media identifier (default: ``uuid5`` of the URL).
    label_column : str, optional
        A column of the source (for GUODA and search also a ``data`` term) to carry as
        ``label``.
    raw : bool
        Add the source's own fields as ``raw.<name>`` columns.
    media_type : str or None
        The kind of media wanted (iDigBio's ``mediatype`` words: ``images``, ``sounds``,
        ``videos``); rows of another kind are excluded. None keeps every kind.
    blocksize : int or str, optional
        About how many bytes of source a partition holds: of text for CSV/TSV/JSONL
        (default ``"64MiB"``), of the columns read, uncompressed, for parquet (default
        ``"16MiB"``, some 50,000 GUODA rows and about 100 MiB of working memory).

    Returns
    -------
    dask.dataframe.DataFrame
        The catalog (see :mod:`idigdask.catalog.schema`): one row per media record of
        the source, unusable ones marked in ``excluded``; nothing is computed beyond
        reading the source's metadata. The source is not stored on the frame: keep the
        ``source`` you passed if you need it later.

    Raises
    ------
    UserError
        A missing file, an unknown or unreadable format, a missing column, malformed
        JSON lines, or a source without rows.

    Examples
    --------
    >>> df = read_catalog("media.parquet")                          # doctest: +SKIP
    >>> df = read_catalog("urls.csv", url_column="link", label_column="stained")  # doctest: +SKIP
    >>> df = read_catalog({"rq": {"family": "lycopodiaceae"}}, format="search")   # doctest: +SKIP
    """
    if format is not None and format not in FORMATS:
        raise UserError(f"unknown catalog format {format!r}; use one of {', '.join(FORMATS)}")
    if isinstance(blocksize, str):
        blocksize = dask.utils.parse_bytes(blocksize)
    if blocksize is not None and blocksize < 1:
        raise UserError(f"blocksize must be positive, not {blocksize}")
    options = dict(media_type=media_type, raw=raw, label_column=label_column)
    if format == "search" or (format is None and _looks_like_search(source)):
        return _read_search(source, **options)
    if not isinstance(source, str):
        raise UserError(f"a catalog source must be a path or URL, not {type(source).__name__}")
    import fsspec

    from ..fetch import redact

    fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
    if not fs.exists(path):
        raise UserError(f"{redact(source)}: no such file or folder")
    kind = format or detect_format(source, fs, path)
    if kind == "dwca":
        from .dwca import read_dwca_pandas

        return from_pandas(read_dwca_pandas(source, storage_options=storage_options, **options))
    table = dict(url_column=url_column, id_column=id_column)
    return _read_files(source, fs, path, kind, blocksize=blocksize, table=table, **options)


def open_catalog(catalog: Any, storage_options: dict | None = None,
                 **options: Any) -> tuple[dd.DataFrame, str, bool]:
    """Any catalog a stage is given, as a lazy normalized catalog.

    The one way build and predict take their catalog: a normalized pandas or Dask
    DataFrame as it is, a search query (a dict), or any source :func:`read_catalog`
    reads, with its ``options`` (``url_column``, ``format`` ...; None values left out).

    Returns
    -------
    (dask.dataframe.DataFrame, str, bool)
        The catalog, a description of its source fit for logs and store attributes
        (secrets redacted), and whether it is local (a local file or folder, or an
        in-memory frame): local media are fetched by default only for local catalogs.
    """
    from ..urls import classify_scheme, redact

    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(catalog, pd.DataFrame):
        return from_pandas(catalog), "<pandas.DataFrame>", True
    if isinstance(catalog, dd.DataFrame):
        return catalog, "<dask.DataFrame>", True
    if isinstance(catalog, dict):  # a search of iDigBio's API: never a local catalog
        return read_catalog(catalog, **options), "<search>", False
    source = str(catalog)
    ddf = read_catalog(source, storage_options=storage_options, **options)
    # "search:{...}" is classified "search" and search URLs "http(s)": both remote
    return ddf, redact(source), classify_scheme(source) in ("file", "local")


def iter_partitions(client: Any, ddf: dd.DataFrame):
    """Yield a catalog's partitions as pandas, in order, each read on the cluster.

    The next partition is being read while the caller works on this one, and the
    caller's process holds one partition at a time, never the whole catalog. What
    all partitions need (the duplicate uuid check) is computed once and held.
    """
    from .dedupe import shared_reductions

    pending = client.compute(ddf.get_partition(0)) if ddf.npartitions else None
    # after the first partition, which needs none of it
    held = client.compute(shared_reductions(ddf), priority=-10) \
        if ddf.npartitions > 1 else []  # noqa: F841
    for index in range(ddf.npartitions):
        part = pending.result()
        pending = client.compute(ddf.get_partition(index + 1)) \
            if index + 1 < ddf.npartitions else None
        yield part


def _looks_like_search(source: Any) -> bool:
    if isinstance(source, dict):
        return True
    return isinstance(source, str) and (source.startswith("search:") or "/search/media" in source)


def _read_search(source: Any, **options) -> dd.DataFrame:
    from .search import parse_search_source, search_media

    spec = parse_search_source(source)
    frame = search_media(**spec, **options)
    if frame.empty:
        raise UserError(f"the search {spec} found no media records")
    return from_pandas(frame)


def _read_files(source: str, fs, path: str, kind: str, *, blocksize: int | None, table: dict,
                **options) -> dd.DataFrame:
    from . import guoda, parquet, tables

    text_kind, compression = tables.table_kind(path)
    if kind == "table" and text_kind in (None, "csv", "tsv", "jsonl"):
        frame, ids = tables.read_text_table(fs, path, text_kind or "csv", compression,
                                            blocksize=blocksize or TEXT_BLOCKSIZE, **table, **options)
        return mark_duplicates(frame, ids)
    blocksize = blocksize or PARQUET_BLOCKSIZE
    if kind == "table" and text_kind != "parquet" and not _is_dir(fs, path):
        raise UserError(f"{source}: not a table this reader knows")
    files = parquet.list_files(fs, path)
    schema = parquet.arrow_schema(fs, files)
    found = ", ".join(schema.names)
    if kind == "catalog" or (kind == "parquet" and S.is_catalog_columns(schema.names)):
        if not S.is_catalog_columns(schema.names):
            raise UserError(f"{source}: not a written catalog (columns found: {found})")
        frame, rows = tables.read_written_catalog(fs, files, schema, blocksize=blocksize)
        _check_rows(source, rows)
        return frame
    if kind == "guoda" or (kind == "parquet" and guoda.is_guoda_schema(schema)):
        if not guoda.is_guoda_schema(schema):
            raise UserError(f"{source}: not a GUODA media parquet (needs accessuri and a data "
                            f"struct); columns found: {found}")
        frame, ids, rows = guoda.read_guoda(fs, files, schema, blocksize=blocksize, **options)
    else:
        frame, ids, rows = tables.read_parquet_table(fs, files, schema, blocksize=blocksize,
                                                     **table, **options)
    _check_rows(source, rows)
    return mark_duplicates(frame, ids)


def _check_rows(source: str, rows: int) -> None:
    if rows == 0:
        raise UserError(f"{source}: the catalog is empty (zero rows)")


def summarize(df) -> dict:
    """Count a catalog's rows, usable rows and exclusions by reason, in one pass.

    Parameters
    ----------
    df : dask.dataframe.DataFrame or pandas.DataFrame
        A catalog.

    Returns
    -------
    dict
        ``{"rows": N, "usable": U, "excluded": {reason: count}}``, reasons sorted.

    Raises
    ------
    UserError
        When ``df`` has no ``excluded`` column.

    Examples
    --------
    >>> catalog = pd.DataFrame({
    ...     "access_uri": ["https://example.org/a.jpg", "ftp://example.org/b.jpg", None],
    ...     "excluded": [None, "unsupported_scheme:ftp", "no_uri"]})
    >>> summarize(catalog)
    {'rows': 3, 'usable': 1, 'excluded': {'no_uri': 1, 'unsupported_scheme:ftp': 1}}
    >>> summarize(read_catalog("media.parquet"))                        # doctest: +SKIP
    """
    if S.EXCLUDED not in df.columns:
        raise UserError("not a catalog: no 'excluded' column")
    counts = df[S.EXCLUDED].fillna("").value_counts()
    if not isinstance(counts, pd.Series):
        counts = counts.compute()
    counts = {str(k): int(v) for k, v in counts.items()}
    usable = counts.pop("", 0)
    return {"rows": usable + sum(counts.values()), "usable": usable,
            "excluded": dict(sorted(counts.items()))}
