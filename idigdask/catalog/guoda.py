"""iDigBio media records: the GUODA parquet dump and search API items.

Both carry iDigBio's cleaned top-level fields (``uuid``, ``accessuri``, ``format``,
``xpixels``...) next to ``data``, the provider's raw record keyed by namespaced terms
(``ac:accessURI``, ``dcterms:format``...). In a flattened partition the raw fields are
columns named ``data.<term>``; ``map_media_records`` turns such a partition into
the catalog schema.

Where iDigBio's value is missing the provider's is used: the URI falls back to
``ac:accessURI``, then ``ac:bestQualityAccessURI``, then ``ac:goodQualityAccessURI``;
the format to ``dcterms:format`` then ``dc:format``; the size to ``exif:PixelXDimension``
and ``exif:PixelYDimension``; the licence is ``webstatement``, ``rights``, then the
provider's ``xmpRights:WebStatement``, ``dcterms:rights``, ``dc:rights``,
``dcterms:license``.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import pandas as pd

from ..errors import UserError
from . import parquet
from . import schema as S
from .normalize import finish_partition, first_present, media_uuids

#: Top-level fields read from a GUODA dump when present.
TOP_FIELDS = ("uuid", "accessuri", "format", "xpixels", "ypixels", "recordset", "mediatype",
              "rights", "webstatement", "records")

#: Raw ``data`` terms the catalog uses, in fallback order per catalog column.
DATA_FIELDS = {
    "access_uri": ("ac:accessURI", "ac:bestQualityAccessURI", "ac:goodQualityAccessURI"),
    "format": ("dcterms:format", "dc:format"),
    "license": ("xmpRights:WebStatement", "dcterms:rights", "dc:rights", "dcterms:license"),
    "hash_function": ("ac:hashFunction",),
    "hash_value": ("ac:hashValue",),
    "width": ("exif:PixelXDimension",),
    "height": ("exif:PixelYDimension",),
}

#: Fields needed to compute ``media_uuid`` (the identifier read for duplicate detection).
ID_FIELDS = ("uuid", "accessuri", *(f"data.{k}" for k in DATA_FIELDS["access_uri"]))


def is_guoda_schema(schema) -> bool:
    """Whether a parquet (arrow) schema is a GUODA media dump: ``accessuri`` + ``data`` struct."""
    import pyarrow as pa

    names = schema.names
    return "accessuri" in names and "data" in names and pa.types.is_struct(schema.field("data").type)


def occurrence_terms(keys: Sequence[str]) -> list[str]:
    """The Darwin Core occurrence fields available as ``dwc:<name>`` raw keys."""
    present = set(keys)
    return [f for f in S.OCCURRENCE_FIELDS if f"dwc:{f}" in present]


def label_source(label_column: str, top: Sequence[str], keys: Sequence[str]) -> str:
    """The flattened column holding the label: a top-level field or a ``data`` term."""
    if label_column in top:
        return label_column
    name = label_column.removeprefix("data.")
    if name in keys:
        return f"data.{name}"
    raise UserError(f"label column {label_column!r} is neither a field nor a data term "
                    f"of the media records")


def map_media_records(
    frame: pd.DataFrame,
    columns: Sequence[str],
    *,
    label: str | None = None,
    media_type: str | None = "images",
) -> pd.DataFrame:
    """Map a flattened partition of iDigBio media records onto the catalog schema.

    Parameters
    ----------
    frame : pandas.DataFrame
        iDigBio's top-level fields and ``data.<term>`` columns (any may be absent).
    columns : sequence of str
        The catalog columns to return.
    label : str, optional
        The flattened column holding the label.
    media_type : str or None
        See :func:`~idigdask.catalog.normalize.finish_partition`.
    """
    def get(*names: str) -> pd.Series | None:
        return first_present(frame, names)

    def data(col: str) -> tuple[str, ...]:
        return tuple(f"data.{k}" for k in DATA_FIELDS[col])

    mapped = pd.DataFrame(index=frame.index)
    found = {
        "media_uuid": get("uuid"),
        "access_uri": get("accessuri", *data("access_uri")),
        "format": get("format", *data("format")),
        "record_uuids": frame.get("records"),
        "width": _number(frame, "xpixels", data("width")),
        "height": _number(frame, "ypixels", data("height")),
        "license": get("webstatement", "rights", *data("license")),
        "hash_function": get(*data("hash_function")),
        "hash_value": get(*data("hash_value")),
        "recordset": get("recordset"),
    }
    for col, values in found.items():
        if values is not None:
            mapped[col] = values
    if label is not None and label in frame.columns:
        mapped[S.LABEL] = frame[label]
    for name in S.OCCURRENCE_FIELDS:
        if f"data.dwc:{name}" in frame.columns:
            mapped[name] = frame[f"data.dwc:{name}"]
    for col in columns:
        if col.startswith(S.RAW_PREFIX):
            key = "data." + col[len(S.RAW_PREFIX):]
            if key in frame.columns:
                mapped[col] = frame[key]
    return finish_partition(mapped, columns, media_type=media_type,
                            mediatype=frame["mediatype"] if "mediatype" in frame.columns else None)


def _number(frame: pd.DataFrame, top: str, terms: Sequence[str]) -> pd.Series | None:
    """iDigBio's integer pixel count, else the provider's text one."""
    from .normalize import to_int

    values = to_int(frame[top], frame.index) if top in frame.columns else None
    text = first_present(frame, terms)
    if text is not None:
        parsed = to_int(text, frame.index)
        values = parsed if values is None else values.fillna(parsed)
    return values


def record_ids(frame: pd.DataFrame) -> pd.Series:
    """Only the ``media_uuid`` of a flattened partition (for duplicate detection)."""
    uri = first_present(frame, ("accessuri", *(f"data.{k}" for k in DATA_FIELDS["access_uri"])))
    return media_uuids(first_present(frame, ("uuid",)), uri, frame.index)


def read_guoda(
    fs,
    files: Sequence[str],
    schema,
    *,
    label_column: str | None = None,
    raw: bool = False,
    media_type: str | None = "images",
    blocksize: int = 32 * 2**20,
):
    """Plan a lazy read of a GUODA media dump.

    Returns
    -------
    frame : dask.dataframe.DataFrame
        The catalog, before duplicate detection.
    ids : dask.dataframe.Series
        Its media uuids from a lighter read, partitioned alike.
    rows : int
        The number of rows, from the parquet footers.
    """
    top = [f for f in schema.names if f in TOP_FIELDS]
    keys = [f.name for f in schema.field("data").type]
    wanted = {k for ks in DATA_FIELDS.values() for k in ks}
    wanted |= {f"dwc:{f}" for f in occurrence_terms(keys)}
    label = label_source(label_column, schema.names, keys) if label_column else None
    data_cols = [f"data.{k}" for k in keys if raw or k in wanted]
    read_cols = top + data_cols
    if label and label not in read_cols:
        read_cols.append(label)
    columns = S.catalog_columns(label=label is not None, occurrence=occurrence_terms(keys),
                                raw=[S.RAW_PREFIX + k for k in keys] if raw else ())
    id_cols = [c for c in ID_FIELDS if c in read_cols]
    parts, rows = parquet.plan(fs, files, read_cols, blocksize)
    mapper = partial(map_media_records, columns=columns, label=label, media_type=media_type)
    frame, ids = parquet.lazy_frames(fs, parts, read_cols, id_cols, mapper, record_ids,
                                     S.empty_catalog(columns))
    return frame, ids, rows
