"""Join a label table onto a catalog.

The rule for a media record that several specimen records point at (through
``record_uuids``): the labels of its labelled specimens are collected; if they all
agree the media record gets that label, if they differ it is excluded as
``conflicting_labels`` (and its label left missing). A key the label table itself gives
two different labels counts as a conflict too. With no labelled specimen the label is
missing and the row is kept (``how="exclude"`` marks it ``no_label`` instead, and
``how="inner"`` leaves it out).

Labels are stored as strings (``"0"``, ``"1"``, ``"stained"``), whatever the table's
type, so that every partition has the same dtype.

Multi-class labels come from specimen metadata the same way: a records table (a CSV or
parquet of records, a Darwin Core Archive's core, or the search API's records endpoint,
see :mod:`idigdask.catalog.records`) joined through ``record_uuids``, with ``label`` a
Darwin Core field such as ``family``, ``genus`` or ``scientificName``. A label named
as a Darwin Core term finds its column however the source spells it
(:func:`label_column`): ``scientificName``, ``scientificname`` (iDigBio's index),
``dwc:scientificName``, ``data.dwc:scientificName`` or the term's URI.
"""

from __future__ import annotations

import dask
import pandas as pd

from ..errors import UserError
from . import schema as S
from .normalize import to_string

#: ``on`` value that joins through the catalog's ``record_uuids`` lists.
RECORD_UUID = "record_uuid"

#: Table columns tried for specimen ids when ``on="record_uuid"`` (the first found).
RECORD_ID_COLUMNS = ("record_uuid", "uuid", "coreid", "occurrenceID", "id")

HOWS = ("left", "inner", "exclude")

_CONFLICT = object()


def read_label_table(table, *, storage_options: dict | None = None) -> tuple[pd.DataFrame, str]:
    """A label table (path, URL or frame) as a pandas frame of text, and its name for messages."""
    if isinstance(table, pd.DataFrame):
        return table, "label table"
    if hasattr(table, "compute") and hasattr(table, "columns"):
        return table.compute(), "label table"
    if not isinstance(table, str):
        raise UserError(f"a label table must be a path, URL or DataFrame, not {type(table).__name__}")
    import fsspec

    from .read import is_dwca_name
    from .tables import table_kind

    fs, path = fsspec.core.url_to_fs(table, **(storage_options or {}))
    if not fs.exists(path):
        raise UserError(f"{table}: no such label table")
    kind, compression = table_kind(path)
    # A tar's name also ends in a compression (.tar.gz): test for an archive first.
    if is_dwca_name(path) or (kind is None and fs.isdir(path) and fs.exists(path + "/meta.xml")):
        from .dwca import open_archive, read_datafile

        with open_archive(table, storage_options) as reader:
            return read_datafile(reader, reader.core_file.file_descriptor), table
    try:
        if kind == "parquet" or (kind is None and fs.isdir(path)):
            return pd.read_parquet(table, storage_options=storage_options), table
        with fs.open(path, "rb", compression=compression) as f:
            if kind == "jsonl":
                return pd.read_json(f, lines=True, dtype=False), table
            return pd.read_csv(f, sep="\t" if kind == "tsv" else ",", dtype=S.STRING,
                               keep_default_na=False, na_values=[""]), table
    except (ValueError, OSError) as exc:
        raise UserError(f"{table}: cannot read the label table ({str(exc).splitlines()[0]})") from None


#: Prefixes a source may put before a Darwin Core term's name.
_TERM_PREFIXES = ("data.", "raw.", "dwc:", "http://rs.tdwg.org/dwc/terms/")


def _local_name(column: str) -> str:
    name = str(column)
    for prefix in _TERM_PREFIXES:
        if name.lower().startswith(prefix):
            name = name[len(prefix):]
    return name.lower()


def label_column(columns, label: str) -> str | None:
    """The column of a table that holds ``label``, however the source spells the term.

    The column named exactly ``label`` first, then one named so in another case, then
    ``label`` behind a source's prefix (``data.dwc:family`` for ``dwc:family``), then
    one whose term is the same whatever the prefixes (``dwc:``, ``data.``, ``raw.``,
    the Darwin Core URI), in the table's order; None if there is none.

    Examples
    --------
    >>> label_column(["uuid", "scientificname", "data.dwc:scientificName"], "scientificName")
    'scientificname'
    >>> label_column(["uuid", "family", "data.dwc:family"], "dwc:family")
    'data.dwc:family'
    >>> label_column(["id", "dwc:family"], "family")
    'dwc:family'
    """
    columns = [str(c) for c in columns]
    if label in columns:
        return label
    lower = label.lower()
    for found in ([c for c in columns if c.lower() == lower],
                  [c for c in columns if c.lower() in ("data." + lower, "raw." + lower)]):
        if found:
            return found[0]
    wanted = _local_name(label)
    return next((c for c in columns if _local_name(c) == wanted), None)


def _records_table(catalog, source: str) -> tuple[pd.DataFrame, str]:
    """The specimen records of the catalog's record uuids, from the search API."""
    from .records import records_base_url, search_records

    base = records_base_url(source)
    uuids = catalog["record_uuids"].explode().dropna()
    if not isinstance(uuids, pd.Series):
        uuids = uuids.compute()
    return search_records(uuids.unique(), base_url=base), f"search API records at {base}"


def label_mapping(frame: pd.DataFrame, key: str, label: str, name: str) -> dict:
    """Key -> label (text), or a conflict marker where the table disagrees with itself."""
    for col, what in ((key, "key"), (label, "label")):
        if col not in frame.columns:
            raise UserError(f"{name}: no {what} column {col!r}; columns found: "
                            f"{', '.join(map(str, frame.columns))}")
    keys = to_string(frame[key], frame.index).str.strip()
    labels = to_string(frame[label], frame.index).str.strip()
    ok = keys.notna() & (keys != "") & labels.notna() & (labels != "")
    pairs = pd.DataFrame({"k": keys[ok], "v": labels[ok]}).drop_duplicates()
    counts = pairs["k"].value_counts()
    mapping = dict(zip(pairs["k"], pairs["v"]))
    for k in counts.index[counts > 1]:
        mapping[k] = _CONFLICT
    return mapping


def _resolve(keys: list, mapping: dict) -> object:
    found = {mapping[k] for k in keys if k in mapping}
    if not found:
        return None
    if len(found) == 1 and _CONFLICT not in found:
        return found.pop()
    return _CONFLICT


def _apply(frame: pd.DataFrame, mapping: dict, on: str, how: str, columns: list[str]) -> pd.DataFrame:
    if on == RECORD_UUID:
        resolved = [_resolve(keys, mapping) for keys in frame["record_uuids"]]
    else:
        resolved = [_resolve([k], mapping) if isinstance(k, str) else None for k in frame[on]]
    conflict = pd.Series([r is _CONFLICT for r in resolved], index=frame.index)
    labels = pd.Series([r if isinstance(r, str) else None for r in resolved],
                       index=frame.index, dtype=S.STRING)
    out = frame.assign(**{S.LABEL: labels})
    free = out[S.EXCLUDED].isna()
    out[S.EXCLUDED] = out[S.EXCLUDED].mask(free & conflict, S.CONFLICTING_LABELS)
    unlabelled = labels.isna() & ~conflict
    if how == "exclude":
        out[S.EXCLUDED] = out[S.EXCLUDED].mask(out[S.EXCLUDED].isna() & unlabelled, S.NO_LABEL)
    elif how == "inner":
        out = out[~unlabelled]
    return out[columns]


def attach_labels(catalog, table, *, on: str = RECORD_UUID, label: str, how: str = "left",
                  table_on: str | None = None, storage_options: dict | None = None):
    """Add a ``label`` column to a catalog from a label table.

    Parameters
    ----------
    catalog : dask.dataframe.DataFrame or pandas.DataFrame
        A catalog; an existing ``label`` column is replaced.
    table : str or DataFrame
        The label table: a path or fsspec URL (CSV, TSV, JSON lines, parquet, or a
        Darwin Core Archive, zip, tar or folder, whose core is read), or a pandas/Dask
        frame. A specimen records table (a DwC-A core, a records parquet) works as well
        as a two-column one. The search API's records endpoint
        (``https://search.idigbio.org/v2/search/records``, or ``"search:records"``)
        looks up the records of the catalog's ``record_uuids``
        (:func:`idigdask.catalog.records.search_records`).
    on : str, default "record_uuid"
        ``"record_uuid"`` to join the table's specimen ids to each media record's
        ``record_uuids``, or a catalog column such as ``"catalogNumber"``.
    label : str
        The table's label column, e.g. ``"stained"``, or a Darwin Core field of a
        records table (``"family"``, ``"genus"``, ``"scientificName"``), found however
        the table spells it (:func:`label_column`).
    how : {"left", "inner", "exclude"}
        Keep unlabelled rows with a missing label, leave them out, or keep them
        excluded as ``no_label``.
    table_on : str, optional
        The table's key column when it is not named like ``on``; for
        ``on="record_uuid"`` the first of ``record_uuid``, ``uuid``, ``coreid``,
        ``occurrenceID``, ``id`` found.
    storage_options : dict, optional
        fsspec options for reading ``table``.

    Returns
    -------
    Same type as ``catalog``
        The labelled catalog (see the module documentation for several specimens).

    Raises
    ------
    UserError
        A missing table, an unknown ``how``, or a missing ``on``/``label`` column.

    Examples
    --------
    >>> df = attach_labels(df, "stained.csv", on="catalogNumber", label="stained")  # doctest: +SKIP
    >>> df = attach_labels(df, "records.csv", label="family")                       # doctest: +SKIP
    >>> df = attach_labels(df, "https://search.idigbio.org/v2/search/records",
    ...                    label="family")                                          # doctest: +SKIP
    """
    if how not in HOWS:
        raise UserError(f"how must be one of {', '.join(HOWS)}, not {how!r}")
    if on != RECORD_UUID and on not in catalog.columns:
        raise UserError(f"the catalog has no column {on!r} to join labels on; columns: "
                        f"{', '.join(catalog.columns)}")
    from .records import is_records_source

    if is_records_source(table):
        if on != RECORD_UUID:
            raise UserError("the search API's records are joined on record_uuid, not "
                            f"{on!r}")
        frame, name = _records_table(catalog, table)
    else:
        frame, name = read_label_table(table, storage_options=storage_options)
    key = table_on or on
    if table_on is None and on == RECORD_UUID:
        key = next((c for c in RECORD_ID_COLUMNS if c in frame.columns), RECORD_UUID)
    if is_records_source(table) and frame.empty:
        mapping = {}  # the API knows none of the records: every row is unlabelled
    else:
        mapping = label_mapping(frame, key, label_column(frame.columns, label) or label, name)
    occurrence = [f for f in S.OCCURRENCE_FIELDS if f in catalog.columns]
    raw = [c for c in catalog.columns if c.startswith(S.RAW_PREFIX)]
    columns = S.catalog_columns(label=True, occurrence=occurrence, raw=raw)
    if isinstance(catalog, pd.DataFrame):
        return _apply(catalog, mapping, on, how, columns)
    meta = S.empty_catalog(columns)
    return catalog.map_partitions(_apply, dask.delayed(mapping), on, how, columns, meta=meta)
