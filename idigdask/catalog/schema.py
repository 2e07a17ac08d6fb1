"""The one normalized schema every catalog source is read into.

A catalog is a :class:`dask.dataframe.DataFrame` with these columns, in this order:

==================  ==============  ====================================================
column              dtype           meaning
==================  ==============  ====================================================
``media_uuid``      string          the media record's identifier (iDigBio uuid, the
                                    source's id column, or ``uuid5(NAMESPACE_URL, url)``)
``access_uri``      string          the URL to fetch (``scheme://host/...``,
                                    ``file:///...`` or an absolute local path)
``format``          string          MIME type, lower case (``image/jpeg``), may be NA
``record_uuids``    object          a Python ``list`` of specimen record ids (maybe empty)
``width``           Int64           pixels, as the provider claims (may be NA)
``height``          Int64           pixels, as the provider claims (may be NA)
``license``         string          licence URL or statement
``hash_function``   string          e.g. ``MD5``, as the provider claims
``hash_value``      string          the provider's hash of the file
``recordset``       string          iDigBio recordset uuid
``label``           string          only when a label column was given or joined
occurrence fields   string          Darwin Core names (``catalogNumber``, ``family``...),
                                    only those the source carries
``excluded``        string          NA when the row is usable, else a reason
``raw.<field>``     string          the provider's fields, only with ``raw=True``
==================  ==============  ====================================================

``string`` is :data:`STRING`, pandas' Arrow-backed string dtype with ``pd.NA`` for
missing values. Labels are strings too (``"0"``/``"1"`` for a 0/1 table), so that every
partition of every source has the same dtype whatever values it happens to hold.

Exclusion reasons (``excluded``), the first that applies wins, in this order:
``no_uri``, ``malformed_uri`` or ``unsupported_scheme:<scheme>`` (the URI as the build
stage would fetch it: a host, a port that is a number, a bucket and key for ``s3``; a
scheme other than ``http``, ``https``, ``s3`` or a local one), ``bad_text``,
``unsupported_media_type:<type>``, ``absurd_size``, ``conflicting_labels``,
``no_label``, ``duplicate_media_uuid``.
Rows are never dropped by reading: every record of the source is a row.

The source a catalog came from is not stored on the frame (Dask collections do not keep
``attrs`` through operations): callers keep the source string they passed.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

#: Arrow-backed string dtype with ``pd.NA`` as the missing value.
STRING = pd.StringDtype("pyarrow")

#: Nullable integer dtype of ``width`` and ``height``.
INT = pd.Int64Dtype()

#: The columns every catalog has, in order, with their dtypes.
BASE_COLUMNS: dict[str, object] = {
    "media_uuid": STRING,
    "access_uri": STRING,
    "format": STRING,
    "record_uuids": np.dtype(object),
    "width": INT,
    "height": INT,
    "license": STRING,
    "hash_function": STRING,
    "hash_value": STRING,
    "recordset": STRING,
}

LABEL = "label"
EXCLUDED = "excluded"
RAW_PREFIX = "raw."

#: Darwin Core occurrence terms carried along when a source has them, in this order.
OCCURRENCE_FIELDS: tuple[str, ...] = (
    "occurrenceID",
    "catalogNumber",
    "institutionCode",
    "collectionCode",
    "scientificName",
    "family",
    "genus",
    "country",
    "basisOfRecord",
)

# Exclusion reasons.
NO_URI = "no_uri"
MALFORMED_URI = "malformed_uri"
UNSUPPORTED_SCHEME = "unsupported_scheme"  # + ":<scheme>"
BAD_TEXT = "bad_text"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
ABSURD_SIZE = "absurd_size"
CONFLICTING_LABELS = "conflicting_labels"
NO_LABEL = "no_label"
DUPLICATE_MEDIA_UUID = "duplicate_media_uuid"

#: Width or height above this many pixels is not believed.
MAX_SIDE = 1_000_000


def catalog_columns(
    *, label: bool = False, occurrence: Iterable[str] = (), raw: Iterable[str] = ()
) -> list[str]:
    """Return the ordered column names of a catalog with these optional parts.

    Parameters
    ----------
    label : bool
        Whether the catalog has a ``label`` column.
    occurrence : iterable of str
        Occurrence fields present; put in :data:`OCCURRENCE_FIELDS` order.
    raw : iterable of str
        Raw column names, already prefixed with ``raw.``, kept in the order given.
    """
    present = set(occurrence)
    cols = list(BASE_COLUMNS)
    if label:
        cols.append(LABEL)
    cols += [f for f in OCCURRENCE_FIELDS if f in present]
    cols.append(EXCLUDED)
    cols += list(raw)
    return cols


def dtype_of(column: str) -> object:
    """The dtype of a catalog column (everything but the base numeric/list ones is string)."""
    return BASE_COLUMNS.get(column, STRING)


def empty_catalog(columns: Sequence[str]) -> pd.DataFrame:
    """An empty pandas frame with the catalog dtypes: the ``meta`` of a catalog."""
    return pd.DataFrame({c: pd.Series([], dtype=dtype_of(c)) for c in columns})


def is_catalog_columns(names: Iterable[str]) -> bool:
    """Whether a table with these column names is already a normalized catalog."""
    names = set(names)
    return set(BASE_COLUMNS) <= names and EXCLUDED in names


def arrow_schema(columns: Sequence[str]):
    """The pyarrow schema a catalog with these columns is written to parquet with."""
    import pyarrow as pa

    def field(c: str) -> "pa.Field":
        if c == "record_uuids":
            return pa.field(c, pa.list_(pa.string()))
        if dtype_of(c) == INT:
            return pa.field(c, pa.int64())
        return pa.field(c, pa.string())

    return pa.schema([field(c) for c in columns])
