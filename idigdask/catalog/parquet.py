"""Parquet partitions read lazily through fsspec and pyarrow, with nested-field projection.

Shared by the GUODA reader, parquet URL tables and written catalogs. A partition is a
set of small row groups, or a slice of one large row group (read with ``iter_batches``
so that a huge row group never has to be decoded whole). Only the requested columns,
and only the requested fields of a struct column (``"data.ac:accessURI"``), are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import pandas as pd

from ..errors import UserError
from . import schema as S


@dataclass(frozen=True)
class ParquetPart:
    """One partition: row groups of one file, or rows ``[start, stop)`` of one row group."""

    path: str
    row_groups: tuple[int, ...]
    rows: tuple[int, int] | None = None


def list_files(fs, path: str) -> list[str]:
    """The parquet files of a file or a folder (Spark's ``part-*`` layout), in order."""
    if fs.isdir(path):
        files = sorted(
            p for p in fs.find(path)
            if not p.rsplit("/", 1)[-1].startswith(("_", ".")) and p.endswith((".parquet", ".parq", ".pq"))
        )
        if not files:
            raise UserError(f"{path}: folder holds no .parquet files")
        return files
    return [path]


def open_file(fs, path: str, *, streaming: bool = False):
    """A :class:`pyarrow.parquet.ParquetFile`, turning garbage into a UserError.

    ``streaming`` reads column chunks in small buffers instead of whole: for slices of
    a large row group, whose chunks would otherwise be held in memory entire.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    options = dict(pre_buffer=False, buffer_size=4 * 2**20) if streaming else {}
    try:
        return pq.ParquetFile(fs.open(path, "rb"), **options)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file ({exc})") from None


def arrow_schema(fs, files: Sequence[str]):
    """The arrow schema of the first file (the files of one dataset share it)."""
    return open_file(fs, files[0]).schema_arrow


def _column_bytes(rg, columns: Sequence[str]) -> int:
    size = 0
    for i in range(rg.num_columns):
        col = rg.column(i)
        path = col.path_in_schema
        if any(path == c or path.startswith(c + ".") for c in columns):
            size += col.total_uncompressed_size
    return size


def plan(fs, files: Sequence[str], columns: Sequence[str], blocksize: int) -> tuple[list[ParquetPart], int]:
    """Split files into partitions of about ``blocksize`` uncompressed bytes.

    Returns the partitions and the total number of rows.
    """
    parts: list[ParquetPart] = []
    total = 0
    for path in files:
        meta = open_file(fs, path).metadata
        group: list[int] = []
        group_bytes = 0
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            total += rg.num_rows
            size = _column_bytes(rg, columns)
            if size > blocksize and rg.num_rows > 1:
                if group:
                    parts.append(ParquetPart(path, tuple(group)))
                    group, group_bytes = [], 0
                pieces = min(rg.num_rows, -(-size // blocksize))
                step = -(-rg.num_rows // pieces)
                for start in range(0, rg.num_rows, step):
                    parts.append(ParquetPart(path, (i,), (start, min(start + step, rg.num_rows))))
                continue
            if group and group_bytes + size > blocksize:
                parts.append(ParquetPart(path, tuple(group)))
                group, group_bytes = [], 0
            group.append(i)
            group_bytes += size
        if group:
            parts.append(ParquetPart(path, tuple(group)))
    return parts, total


def read_table(fs, part: ParquetPart, columns: Sequence[str]):
    """Read one partition's columns (dotted names select struct fields) as an arrow table.

    A file whose footer read but whose pages are damaged is the catalog's fault: one
    :class:`~idigdask.errors.UserError` line, never pyarrow's traceback.
    """
    import pyarrow as pa

    from ..fetch import redact

    try:
        return _read_table(fs, part, columns)
    except (OSError, pa.ArrowException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{redact(part.path)}: row groups {list(part.row_groups)} cannot be "
                        f"read ({type(exc).__name__}: {redact(first)})") from None


def _read_table(fs, part: ParquetPart, columns: Sequence[str]):
    import pyarrow as pa

    pf = open_file(fs, part.path, streaming=part.rows is not None)
    if part.rows is None:
        return pf.read_row_groups(list(part.row_groups), columns=list(columns))
    start, stop = part.rows
    batches, offset = [], 0
    for batch in pf.iter_batches(batch_size=stop - start, row_groups=list(part.row_groups),
                                 columns=list(columns)):
        end = offset + batch.num_rows
        if end > start and offset < stop:
            batches.append(batch.slice(max(start - offset, 0), min(stop, end) - max(start, offset)))
        offset = end
        if offset >= stop:
            break
    schema = batches[0].schema if batches else pf.schema_arrow
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


def to_pandas(table) -> pd.DataFrame:
    """Flatten struct columns to ``struct.field`` columns; strings to the catalog dtype."""
    import pyarrow as pa

    columns = {}
    for name, col in zip(table.column_names, table.columns):
        if pa.types.is_struct(col.type):
            for field in col.type:
                child = pa.chunked_array([c.field(field.name) for c in col.chunks], type=field.type)
                columns[f"{name}.{field.name}"] = _column_to_pandas(child)
        else:
            columns[name] = _column_to_pandas(col)
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))


def _column_to_pandas(col) -> pd.Series:
    import pyarrow as pa

    t = col.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pd.Series(col.to_pylist(), dtype=object)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.to_pandas(types_mapper=lambda _: S.STRING)
    if pa.types.is_integer(t):
        return col.to_pandas(types_mapper=lambda _: pd.Int64Dtype())
    return col.to_pandas()


def lazy_frames(fs, parts: Sequence[ParquetPart], columns: Sequence[str], id_columns: Sequence[str],
                to_catalog, to_ids, meta: pd.DataFrame):
    """A lazy catalog and, from a lighter read of ``id_columns``, its media uuids.

    ``to_catalog`` maps a flattened pandas partition to the catalog schema and
    ``to_ids`` maps one holding only ``id_columns`` to its media uuids; both frames are
    partitioned alike (one partition per :class:`ParquetPart`).
    """
    import dask
    import dask.dataframe as dd

    # Keep record_uuids as Python lists: Dask would otherwise turn object columns to text.
    with dask.config.set({"dataframe.convert-string": False}):
        frame = dd.from_map(partial(_load, fs, tuple(columns), to_catalog), list(parts),
                            meta=meta, enforce_metadata=False, label="read-catalog")
        ids = dd.from_map(partial(_load_ids, fs, tuple(id_columns), to_ids), list(parts),
                          meta=meta["media_uuid"], enforce_metadata=False, label="read-media-uuids")
    return frame, ids


def _load(fs, columns, to_catalog, part: ParquetPart) -> pd.DataFrame:
    return to_catalog(to_pandas(read_table(fs, part, columns)))


def _load_ids(fs, columns, to_ids, part: ParquetPart) -> pd.Series:
    return to_ids(to_pandas(read_table(fs, part, columns))).rename("media_uuid")
