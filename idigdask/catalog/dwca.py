"""Darwin Core Archives: media from a Multimedia extension or from ``associatedMedia``.

One catalog row per media item:

* GBIF Simple Multimedia extension (rowType ``http://rs.gbif.org/terms/1.0/Multimedia``):
  the URL is ``dcterms:identifier``; ``dcterms:format``, ``dcterms:license``.
* Audubon Media Description extension (``http://rs.tdwg.org/ac/terms/Multimedia``): the
  URL is ``ac:accessURI`` (then ``ac:bestQualityAccessURI``, ``ac:goodQualityAccessURI``);
  ``dc:format``, ``ac:hashFunction``, ``ac:hashValue``, ``exif:PixelXDimension``...
* Otherwise ``dwc:associatedMedia`` in the core, URLs separated by ``|``, ``;`` or ``,``.

``record_uuids`` is ``[occurrenceID]`` of the core row (its core id where
``occurrenceID`` is empty) and the core's Darwin Core occurrence fields come along.
``media_uuid`` is the ``idigbio:uuid`` term where the archive has it (iDigBio's own
downloads), else ``uuid5(NAMESPACE_URL, url)``. An archive is read whole in one process
(they are small next to the media they list); remote archives are downloaded first.

Columns of the archive's files are named by term: Darwin Core terms by their bare name
(``catalogNumber``), others with a prefix (``dcterms:format``, ``ac:accessURI``); the
core's id column is ``id`` and an extension's link to it ``coreid``.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
import zipfile
from xml.etree import ElementTree
from typing import Iterator

import pandas as pd

from ..errors import UserError
from . import schema as S
from .dedupe import mark_duplicates_pandas
from .normalize import finish_partition, first_present

GBIF_MULTIMEDIA = "http://rs.gbif.org/terms/1.0/Multimedia"
AC_MULTIMEDIA = "http://rs.tdwg.org/ac/terms/Multimedia"

#: Term namespace -> the prefix of its column names ("" for Darwin Core).
NAMESPACES = {
    "http://rs.tdwg.org/dwc/terms/": "",
    "http://purl.org/dc/terms/": "dcterms:",
    "http://purl.org/dc/elements/1.1/": "dc:",
    "http://rs.tdwg.org/ac/terms/": "ac:",
    "http://ns.adobe.com/exif/1.0/": "exif:",
    "http://ns.adobe.com/xap/1.0/rights/": "xmpRights:",
    "http://ns.adobe.com/xap/1.0/": "xmp:",
    "http://portal.idigbio.org/terms/": "idigbio:",
    "http://iptc.org/std/Iptc4xmpExt/2008-02-29/": "Iptc4xmpExt:",
}

#: Catalog column -> the terms that fill it, per media row type (the first found wins).
MEDIA_TERMS = {
    GBIF_MULTIMEDIA: {
        "access_uri": ("dcterms:identifier",),
        "format": ("dcterms:format", "dc:format"),
        "license": ("dcterms:license", "dcterms:rights", "xmpRights:WebStatement"),
    },
    AC_MULTIMEDIA: {
        "access_uri": ("ac:accessURI", "ac:bestQualityAccessURI", "ac:goodQualityAccessURI"),
        "format": ("dc:format", "dcterms:format"),
        "license": ("xmpRights:WebStatement", "dcterms:rights", "dc:rights", "dcterms:license",
                    "xmpRights:UsageTerms"),
        "hash_function": ("ac:hashFunction",),
        "hash_value": ("ac:hashValue",),
        "width": ("exif:PixelXDimension",),
        "height": ("exif:PixelYDimension",),
    },
}
MEDIA_TYPE_TERMS = ("dc:type", "dcterms:type")
ASSOCIATED_MEDIA_SEPARATORS = r"\s*\|\s*|\s*;\s*|\s*,\s*"

#: Limits on what a zipped archive may expand to, checked from its directory before a
#: byte is extracted: text compresses about 10-fold, a zip bomb a thousandfold.
MAX_EXPANDED_BYTES = 8 * 2**30
MAX_RATIO = 200


def term_name(term: str) -> str:
    """The column name of a term URI: ``catalogNumber``, ``dcterms:format``..."""
    for namespace, prefix in NAMESPACES.items():
        if term.startswith(namespace):
            return prefix + term[len(namespace):]
    return term.rstrip("/").rsplit("/", 1)[-1]


def _reader_class():
    try:
        from dwca.exceptions import InvalidArchive
        from dwca.read import DwCAReader
    except ImportError:
        raise UserError("reading Darwin Core Archives needs python-dwca-reader: "
                        "pip install idigdask[dwca]") from None
    return DwCAReader, InvalidArchive


def check_expansion(local: str, source: str) -> None:
    """Refuse a zip whose members would expand without bound (a zip bomb).

    Python's zipfile never writes more than a member's declared size, so the sizes in
    the central directory bound what extracting the archive can write.
    """
    from ..fetch import redact

    if not zipfile.is_zipfile(local):
        return  # a folder, or not a zip: python-dwca-reader reports it
    with zipfile.ZipFile(local) as archive:
        members = archive.infolist()
    total = sum(m.file_size for m in members)
    if total > MAX_EXPANDED_BYTES:
        raise UserError(f"{redact(source)}: the archive would expand to {total} bytes, over "
                        f"the limit of {MAX_EXPANDED_BYTES}")
    for m in members:
        if m.file_size > 2**20 and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise UserError(f"{redact(source)}: {m.filename} would expand "
                            f"{m.file_size // max(m.compress_size, 1)}-fold to {m.file_size} "
                            "bytes; refused as a zip bomb")


@contextlib.contextmanager
def open_archive(source: str, storage_options: dict | None = None) -> Iterator[object]:
    """Open a DwC-A (zip or folder, local or any fsspec URL) with python-dwca-reader."""
    import fsspec

    reader_class, InvalidArchive = _reader_class()
    fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    local = path if "file" in protocols else None
    with tempfile.TemporaryDirectory(prefix="idigdask-dwca-") as tmp:
        if local is None:
            local = os.path.join(tmp, "archive.zip")
            with fs.open(path, "rb") as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        check_expansion(local, source)
        try:
            # tmp_dir is not passed: python-dwca-reader would set tempfile.tempdir globally
            reader = reader_class(local, skip_metadata=True)
        except (zipfile.BadZipFile, OSError, ValueError, ElementTree.ParseError, InvalidArchive) as exc:
            raise UserError(f"{source}: not a readable Darwin Core Archive ({exc})") from None
        with reader:
            yield reader


def read_datafile(reader, descriptor) -> pd.DataFrame:
    """One data file of an archive as text columns named by term (plus ``id``/``coreid``)."""
    quote = descriptor.fields_enclosed_by
    path = reader.absolute_temporary_path(descriptor.file_location)
    try:
        table = pd.read_csv(
            path, sep=descriptor.fields_terminated_by, header=None, dtype=S.STRING,
            skiprows=descriptor.lines_to_ignore, encoding=descriptor.file_encoding or "utf-8",
            encoding_errors="replace", keep_default_na=False, na_values=[""], index_col=False,
            quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE, quotechar=quote or '"')
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise UserError(f"{reader.archive_path}: cannot parse {descriptor.file_location} "
                        f"({str(exc).splitlines()[0]})") from None
    out = pd.DataFrame(index=table.index)
    for index, name in ((descriptor.id_index, "id"), (descriptor.coreid_index, "coreid")):
        if index is not None and index in table.columns:
            out[name] = table[index]
    for field in descriptor.fields:
        name = term_name(field["term"])
        if field["index"] is not None and field["index"] in table.columns:
            out[name] = table[field["index"]]
        elif field["default"] is not None:
            out[name] = pd.Series(field["default"], index=table.index, dtype=S.STRING)
    return out


def _core_keys(core: pd.DataFrame) -> pd.DataFrame:
    """The core's id, its record id (occurrenceID, else id) and occurrence fields."""
    keys = pd.DataFrame(index=core.index)
    keys["id"] = core["id"] if "id" in core.columns else core.get("occurrenceID")
    record = first_present(core, ["occurrenceID", "id"])
    keys["record_uuid"] = record
    for name in S.OCCURRENCE_FIELDS:
        if name in core.columns:
            keys[name] = core[name]
    return keys


def _media_from_extension(media: pd.DataFrame, row_type: str) -> pd.DataFrame:
    mapped = pd.DataFrame(index=media.index)
    for col, terms in MEDIA_TERMS[row_type].items():
        mapped[col] = first_present(media, terms)
    mapped["media_uuid"] = first_present(media, ["idigbio:uuid"])
    mapped["_mediatype"] = first_present(media, MEDIA_TYPE_TERMS)
    mapped["coreid"] = media.get("coreid")
    return mapped


def _media_from_associated(core: pd.DataFrame) -> pd.DataFrame:
    urls = core["associatedMedia"].str.split(ASSOCIATED_MEDIA_SEPARATORS, regex=True)
    exploded = pd.DataFrame({"coreid": core.get("id", core.get("occurrenceID")),
                             "access_uri": urls}).explode("access_uri", ignore_index=True)
    exploded = exploded[exploded["access_uri"].notna() & (exploded["access_uri"] != "")]
    return exploded.reset_index(drop=True)


def _label_from(tables: list[pd.DataFrame], label_column: str, source: str) -> pd.Series:
    for table in tables:
        if label_column in table.columns:
            return table[label_column]
    found = sorted({c for t in tables for c in t.columns})
    raise UserError(f"{source}: no column {label_column!r} (--label-column) in the archive; "
                    f"columns found: {', '.join(found)}")


def read_dwca_pandas(source: str, *, storage_options: dict | None = None,
                     label_column: str | None = None, raw: bool = False,
                     media_type: str | None = "images") -> pd.DataFrame:
    """Read a Darwin Core Archive into a pandas catalog (duplicates marked).

    See the module documentation for how media, records and fields are found.
    """
    with open_archive(source, storage_options) as reader:
        core = read_datafile(reader, reader.core_file.file_descriptor)
        extensions = [(f.file_descriptor.type, read_datafile(reader, f.file_descriptor))
                      for f in reader.extension_files
                      if f.file_descriptor.type in MEDIA_TERMS]
    keys = _core_keys(core)
    if extensions:
        parts = [(t, m, _media_from_extension(m, t)) for t, m in extensions]
        source_rows = pd.concat([m for _, m, _ in parts], ignore_index=True)
        mapped = pd.concat([p for _, _, p in parts], ignore_index=True)
    elif "associatedMedia" in core.columns:
        mapped = _media_from_associated(core)
        source_rows = mapped[["coreid"]].copy()
    else:
        raise UserError(f"{source}: the archive lists no media (no Multimedia extension and "
                        f"no associatedMedia in its core)")
    if mapped.empty:
        raise UserError(f"{source}: the archive lists no media (zero media rows)")
    joined = mapped.merge(keys, how="left", left_on="coreid", right_on="id", suffixes=("", "_core"))
    joined["record_uuids"] = [[r] if isinstance(r, str) and r else [] for r in joined["record_uuid"]]
    core_rows = source_rows[["coreid"]].merge(core, how="left", left_on="coreid", right_on="id")
    if label_column is not None:
        joined[S.LABEL] = _label_from([source_rows, core_rows], label_column, source).to_numpy()
    raw_cols: list[str] = []
    if raw:
        for table in (core_rows, source_rows):
            for col in table.columns:
                name = S.RAW_PREFIX + col
                if name not in joined.columns:
                    joined[name] = table[col].to_numpy()
                    raw_cols.append(name)
    occurrence = [f for f in S.OCCURRENCE_FIELDS if f in keys.columns]
    columns = S.catalog_columns(label=label_column is not None, occurrence=occurrence, raw=raw_cols)
    catalog = finish_partition(joined, columns, media_type=media_type, mediatype=joined.get("_mediatype"))
    return mark_duplicates_pandas(catalog)
