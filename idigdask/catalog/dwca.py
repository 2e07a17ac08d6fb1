"""Darwin Core Archives: media from a Multimedia extension or from ``associatedMedia``.

One catalog row per media item:

* GBIF Simple Multimedia extension (rowType ``http://rs.gbif.org/terms/1.0/Multimedia``):
  the URL is ``dcterms:identifier``; ``dcterms:format``, ``dcterms:license``.
* Audubon Media Description extension (``http://rs.tdwg.org/ac/terms/Multimedia``): the
  URL is ``ac:accessURI`` (then ``ac:bestQualityAccessURI``, ``ac:goodQualityAccessURI``);
  ``dc:format``, ``ac:hashFunction``, ``ac:hashValue``, ``exif:PixelXDimension``...
* Otherwise ``dwc:associatedMedia`` in the core. Darwin Core recommends `` | `` between
  the values of a list: values are split at ``|`` (spaces around it or not), and at
  whitespace, ``,`` or ``;`` only where a new URL (``scheme://``) starts right after, so
  that a comma or semicolon inside a URL (IIIF's ``/full/1024,/0/default.jpg``) stays.

``record_uuids`` is ``[occurrenceID]`` of the core row (its core id where
``occurrenceID`` is empty) and the core's Darwin Core occurrence fields come along.
``media_uuid`` is the ``idigbio:uuid`` term where the archive has it (iDigBio's own
downloads), else ``uuid5(NAMESPACE_URL, url)``. An archive is read whole in one process
(they are small next to the media they list); remote archives are downloaded first.

A media row is always exactly one catalog row. Extension rows find their core row by
core id; core rows that repeat an id with the same content count as one. When a core id
names several different core rows, the media row cannot be told which specimen it shows:
it is kept once, without specimen fields, record ids or label, excluded as
``ambiguous_core_id`` (after the row-level reasons, before ``duplicate_media_uuid``),
and a warning is logged. ``associatedMedia`` rows keep the core row they came from.

Columns of the archive's files are named by term: Darwin Core terms by their bare name
(``catalogNumber``), others with a prefix (``dcterms:format``, ``ac:accessURI``); the
core's id column is ``id`` and an extension's link to it ``coreid``.

An archive is untrusted input: zips and tars (``.tgz``, ``.tar.gz``...) are unpacked by
:mod:`idigdask.catalog.archive`, which refuses unsafe members and bombs; ``meta.xml`` is
read here following the Darwin Core text guide (attributes default to UTF-8, ``,``,
``"`` and no header line), and a data file location that is absolute, climbs out with
``..``, is a URL or resolves through a link to outside the archive is refused. An archive
without ``meta.xml`` is read as Simple Darwin Core: one data file with a header of terms.
Whatever goes wrong reading an archive ends in one :class:`~idigdask.errors.UserError`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import logging
import os
import re
import tempfile
from typing import Iterator, Sequence
from xml.etree import ElementTree

import numpy as np
import pandas as pd

from ..errors import UserError
from . import archive as _archive
from . import schema as S
from .archive import MAX_EXPANDED_BYTES, MAX_RATIO, check_expansion, unpack, unsafe_name
from .dedupe import mark_duplicates_pandas
from .normalize import finish_partition, first_present, to_string

__all__ = [
    "AMBIGUOUS_CORE_ID", "MAX_EXPANDED_BYTES", "MAX_RATIO", "Archive", "DataFile",
    "check_expansion", "open_archive", "parse_meta", "read_datafile", "read_dwca_pandas",
    "split_associated_media", "term_name",
]

log = logging.getLogger(__name__)

GBIF_MULTIMEDIA = "http://rs.gbif.org/terms/1.0/Multimedia"
AC_MULTIMEDIA = "http://rs.tdwg.org/ac/terms/Multimedia"

#: Exclusion reason of a media row whose core id names several different core rows.
AMBIGUOUS_CORE_ID = "ambiguous_core_id"

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

#: Where an ``associatedMedia`` list is split: at ``|``, or at whitespace, ``,`` or ``;``
#: followed by the start of a URL (never inside one).
ASSOCIATED_MEDIA_SEPARATORS = r"\s*\|\s*|[\s,;]+(?=[A-Za-z][A-Za-z0-9+.\-]*://)"
_SEPARATORS = re.compile(ASSOCIATED_MEDIA_SEPARATORS)

#: meta.xml is a few kilobytes; anything past this is not a descriptor.
MAX_META_BYTES = 16 * 2**20
#: Bytes of a Simple Darwin Core file read to find its header line.
_HEADER_BYTES = 1 << 16
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def _redact(text: object) -> str:
    from ..fetch import redact

    return redact(text)


def term_name(term: str) -> str:
    """The column name of a term URI: ``catalogNumber``, ``dcterms:format``..."""
    for namespace, prefix in NAMESPACES.items():
        if term.startswith(namespace):
            return prefix + term[len(namespace):]
    if term.startswith("dwc:"):  # Simple Darwin Core headers sometimes carry the prefix
        return term[4:]
    return term.rstrip("/").rsplit("/", 1)[-1]


def split_associated_media(value: object) -> list[str]:
    """The URLs of one ``associatedMedia`` value (see :data:`ASSOCIATED_MEDIA_SEPARATORS`).

    Examples
    --------
    >>> split_associated_media("https://x/iiif/a/full/1024,/0/default.jpg | https://x/b.jpg")
    ['https://x/iiif/a/full/1024,/0/default.jpg', 'https://x/b.jpg']
    """
    if not isinstance(value, str):
        return []
    return [p.strip() for p in _SEPARATORS.split(value) if p and p.strip()]


# ------------------------------------------------------------------ the boundary
def _brief(exc: BaseException) -> str:
    """One short, redacted line describing an exception."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return _redact(line[:200])


@contextlib.contextmanager
def _as_user_error(source: str, what: str = "not a readable Darwin Core Archive") -> Iterator[None]:
    """Turn any exception but a UserError into one line: ``source: what (cause)``.

    Archives come from strangers and third-party parsers raise anything; none of it may
    reach the user as a traceback.
    """
    try:
        yield
    except (UserError, MemoryError):
        raise
    except Exception as exc:
        raise UserError(f"{_redact(source)}: {what} ({_brief(exc)})") from None


# ------------------------------------------------------------------ descriptors
@dataclasses.dataclass
class DataFile:
    """How to read one data file of an archive (the ``<core>`` or an ``<extension>``).

    The attribute names follow python-dwca-reader's ``DataFileDescriptor``.
    """

    type: str | None
    locations: tuple[str, ...]
    file_encoding: str
    id_index: int | None
    coreid_index: int | None
    fields: list[dict]
    fields_terminated_by: str | None  # None: not given (see _default_separator)
    fields_enclosed_by: str
    lines_terminated_by: str
    lines_to_ignore: int
    represents_corefile: bool

    @property
    def file_location(self) -> str:
        """The first (usually only) location of the file, relative to the archive root."""
        return self.locations[0]

    @property
    def file_descriptor(self) -> "DataFile":
        """This descriptor (python-dwca-reader's ``CSVDataFile.file_descriptor``)."""
        return self


@dataclasses.dataclass
class Archive:
    """An archive's content folder and its descriptors, as :func:`open_archive` yields."""

    root: str
    source: str
    core: DataFile | None
    extensions: list[DataFile]

    @property
    def core_file(self) -> DataFile:
        """The core's descriptor (``core_file.file_descriptor`` as in python-dwca-reader)."""
        if self.core is None:
            raise UserError(f"{_redact(self.source)}: meta.xml has no <core> section")
        return self.core

    @property
    def extension_files(self) -> list[DataFile]:
        """The extensions' descriptors."""
        return self.extensions

    def path_of(self, location: str) -> str:
        """The local path of a data file, refused unless it lies inside the archive."""
        _check_location(location, self.source)
        root = os.path.realpath(self.root)
        full = os.path.realpath(os.path.join(root, location))
        if os.path.commonpath([root, full]) != root:
            raise UserError(f"{_redact(self.source)}: the data file {location!r} is a link to "
                            "outside the archive; refused")
        if not os.path.isfile(full):
            raise UserError(f"{_redact(self.source)}: meta.xml names the data file "
                            f"{location!r}, which the archive does not hold")
        return full


def _check_location(location: str, source: str) -> None:
    why = "a URL" if "://" in location else unsafe_name(location)
    if why:
        raise UserError(f"{_redact(source)}: meta.xml names the data file {location!r} outside "
                        f"the archive ({why}); refused")


def _local(tag: object) -> str:
    """An element's name without its namespace (meta.xml's namespace varies)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in element if _local(child.tag) == name]


def _unescape(value: str | None, default: str) -> str:
    """A separator attribute: ``\\t`` and friends as written in meta.xml, else ``default``."""
    if value is None:
        return default
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), value)


def _index(element: ElementTree.Element | None, source: str, what: str) -> int | None:
    value = None if element is None else element.get("index")
    if value is None or not value.strip():
        return None
    try:
        index = int(value)
    except ValueError:
        index = -1
    if index < 0:
        raise UserError(f"{_redact(source)}: meta.xml gives {what} the index {value!r}, not a "
                        "column number")
    return index


def _encoding(name: str | None, source: str) -> str:
    """The codec of a data file: UTF-8 by default (and with its BOM skipped)."""
    try:
        codec = codecs.lookup((name or "utf-8").strip()).name
    except LookupError:
        log.warning("%s: unknown encoding %r in meta.xml; reading the data as UTF-8",
                    _redact(source), name)
        codec = "utf-8"
    return "utf-8-sig" if codec in ("utf-8", "utf-8-sig") else codec


def _fields(section: ElementTree.Element, source: str) -> list[dict]:
    fields = []
    for field in _children(section, "field"):
        term, default = field.get("term"), field.get("default")
        index = _index(field, source, f"the field {term!r}")
        if term and (index is not None or default is not None):
            fields.append({"term": term.strip(), "index": index, "default": default})
    return fields


def _section(section: ElementTree.Element, source: str) -> DataFile | None:
    """The descriptor of a ``<core>`` or ``<extension>``; None for an extension without file."""
    core = _local(section.tag) == "core"
    locations = tuple(loc.text.strip() for files in _children(section, "files")
                      for loc in _children(files, "location") if loc.text and loc.text.strip())
    if not locations:
        if core:
            raise UserError(f"{_redact(source)}: the core in meta.xml names no data file "
                            "(<files><location>)")
        log.warning("%s: an extension (%s) in meta.xml names no data file; skipped",
                    _redact(source), section.get("rowType"))
        return None
    for location in locations:
        _check_location(location, source)
    key = _children(section, "id" if core else "coreid")
    header = section.get("ignoreHeaderLines", "0").strip() or "0"
    if not header.isdigit():
        raise UserError(f"{_redact(source)}: meta.xml gives ignoreHeaderLines={header!r}, not "
                        "a number")
    return DataFile(
        type=(section.get("rowType") or "").strip() or None, locations=locations,
        file_encoding=_encoding(section.get("encoding"), source),
        id_index=_index(key[0], source, "<id>") if core and key else None,
        coreid_index=_index(key[0], source, "<coreid>") if not core and key else None,
        fields=_fields(section, source),
        # absent: the guide's "," unless the data file is plainly tab-separated
        # (what python-dwca-reader assumes, and what such archives usually hold)
        fields_terminated_by=(_unescape(section.get("fieldsTerminatedBy"), ",") or ","
                              if section.get("fieldsTerminatedBy") is not None else None),
        fields_enclosed_by=_unescape(section.get("fieldsEnclosedBy"), '"'),
        lines_terminated_by=_unescape(section.get("linesTerminatedBy"), "\n") or "\n",
        lines_to_ignore=int(header), represents_corefile=core)


def parse_meta(data: bytes, source: str) -> tuple[DataFile | None, list[DataFile]]:
    """The core and extension descriptors of a ``meta.xml``.

    Parameters
    ----------
    data : bytes
        The file's content.
    source : str
        The archive's name for messages.

    Returns
    -------
    tuple
        The core's :class:`DataFile` (None when meta.xml has no ``<core>``) and the
        extensions' (those without a data file are skipped with a warning).
    """
    # Leading blanks before the XML declaration are a known publisher slip.
    text = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    try:
        root = ElementTree.fromstring(text.lstrip())
    except ElementTree.ParseError as exc:
        raise UserError(f"{_redact(source)}: meta.xml is not well-formed XML ({exc})") from None
    if _local(root.tag) != "archive":
        raise UserError(f"{_redact(source)}: meta.xml is not a Darwin Core <archive> "
                        f"(its root is <{_local(root.tag)}>)")
    cores = _children(root, "core")
    if len(cores) > 1:
        log.warning("%s: meta.xml has %d <core> sections; reading the first",
                    _redact(source), len(cores))
    extensions = [_section(e, source) for e in _children(root, "extension")]
    return (_section(cores[0], source) if cores else None), [e for e in extensions if e]


def _find(folder: str, name: str) -> str | None:
    """The entry of ``folder`` named ``name`` whatever its case, else None."""
    for entry in sorted(os.listdir(folder)):
        if entry.lower() == name.lower():
            return entry
    return None


def _simple_core(root: str, source: str) -> DataFile:
    """The descriptor of a Simple Darwin Core archive: one data file with a header of terms."""
    files = [e for e in sorted(os.listdir(root))
             if os.path.isfile(os.path.join(root, e)) and not e.lower().endswith(".xml")]
    if len(files) != 1:
        raise UserError(f"{_redact(source)}: no meta.xml, and not a single data file to read "
                        f"as Simple Darwin Core ({len(files)} files)")
    with open(os.path.join(root, files[0]), "rb") as f:
        head = f.read(_HEADER_BYTES).decode("utf-8-sig", errors="replace")
    header = re.split(r"\r\n|\r|\n", head, maxsplit=1)[0]  # any line ending, a bare CR too
    sep = next((c for c in "\t,;|" if c in header), ",")
    names = next(csv.reader([header], delimiter=sep), [])
    fields = [{"term": n.strip(), "index": i, "default": None} for i, n in enumerate(names) if n.strip()]
    return DataFile(type=None, locations=(files[0],), file_encoding="utf-8-sig", id_index=None,
                    coreid_index=None, fields=fields, fields_terminated_by=sep,
                    fields_enclosed_by='"', lines_terminated_by="\n", lines_to_ignore=1,
                    represents_corefile=True)


def _read_archive(root: str, source: str) -> Archive:
    meta = _find(root, "meta.xml")
    if meta is None:
        return Archive(root, source, _simple_core(root, source), [])
    archive = Archive(root, source, None, [])
    path = archive.path_of(meta)
    if os.path.getsize(path) > MAX_META_BYTES:
        raise UserError(f"{_redact(source)}: meta.xml is over {MAX_META_BYTES} bytes; refused")
    with open(path, "rb") as f:
        archive.core, archive.extensions = parse_meta(f.read(), source)
    return archive


# ------------------------------------------------------------------ opening
def _download(fs, path: str, local: str, source: str) -> None:
    """Copy a remote archive here, refusing one past the expansion limit."""
    limit, copied = _archive.MAX_EXPANDED_BYTES, 0
    with fs.open(path, "rb") as src, open(local, "wb") as dst:
        while chunk := src.read(1 << 20):
            copied += len(chunk)
            if copied > limit:
                raise UserError(f"{_redact(source)}: the archive is over {limit} bytes; refused")
            dst.write(chunk)


def _content_folder(source: str, storage_options: dict | None, tmp: str) -> str:
    """A local folder with the archive's content: the source itself, or unpacked in ``tmp``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(source, **(storage_options or {}))
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    if "file" in protocols:
        if os.path.isdir(path):
            return path
        if not os.path.exists(path):
            raise UserError(f"{_redact(source)}: no such Darwin Core Archive")
        local = path
    else:
        local = os.path.join(tmp, "archive")
        _download(fs, path, local, source)
    dest = os.path.join(tmp, "content")
    os.mkdir(dest)
    return unpack(local, dest, source)


@contextlib.contextmanager
def open_archive(source: str, storage_options: dict | None = None) -> Iterator[Archive]:
    """Open a DwC-A (zip, tar or folder, local or any fsspec URL) for reading.

    Parameters
    ----------
    source : str
        Path or URL of the archive.
    storage_options : dict, optional
        fsspec options for the source's file system.

    Yields
    ------
    Archive
        The content folder (a temporary one for a zip or tar, removed on exit) and the
        descriptors of its data files.

    Raises
    ------
    UserError
        Whatever keeps the archive from being read, in one line.
    """
    with tempfile.TemporaryDirectory(prefix="idigdask-dwca-") as tmp:
        with _as_user_error(source):
            archive = _read_archive(_content_folder(source, storage_options, tmp), source)
        yield archive


# ------------------------------------------------------------------ data files
def _default_separator(path: str, encoding: str) -> str:
    """The separator of a data file whose meta.xml names none: "," (the text guide's
    default), or a tab when the first line has tabs and no comma."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    first = head.decode(encoding or "utf-8", "replace").splitlines()[:1]
    return "\t" if first and "\t" in first[0] and "," not in first[0] else ","


def _read_table(path: str, descriptor: DataFile) -> pd.DataFrame:
    """A data file's cells as text, columns numbered from 0 (no header)."""
    quote, sep = descriptor.fields_enclosed_by, descriptor.fields_terminated_by
    sep = sep or _default_separator(path, descriptor.file_encoding)
    options = {}
    if len(sep) > 1:  # pandas takes a longer separator as a regular expression
        sep, options["engine"] = re.escape(sep), "python"
    line_end = descriptor.lines_terminated_by
    if len(line_end) == 1 and line_end not in "\r\n" and "engine" not in options:
        options["lineterminator"] = line_end  # \n, \r\n and a bare \r are all understood
    try:
        return pd.read_csv(
            path, sep=sep, header=None, dtype=S.STRING, skiprows=descriptor.lines_to_ignore,
            encoding=descriptor.file_encoding, encoding_errors="replace", keep_default_na=False,
            na_values=[""], index_col=False, quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
            quotechar=quote[:1] or '"', **options)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def read_datafile(archive: Archive, descriptor: DataFile) -> pd.DataFrame:
    """One data file of an archive as text columns named by term (plus ``id``/``coreid``).

    Raises
    ------
    UserError
        When the file lies outside the archive, is missing or cannot be parsed.
    """
    tables = []
    for location in descriptor.locations:
        path = archive.path_of(location)
        with _as_user_error(archive.source, f"cannot parse {location}"):
            tables.append(_read_table(path, descriptor))
    table = tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)
    out = pd.DataFrame(index=table.index)
    for index, name in ((descriptor.id_index, "id"), (descriptor.coreid_index, "coreid")):
        if index is not None and index in table.columns:
            out[name] = table[index]
    for field in descriptor.fields:
        name = term_name(field["term"])
        if field["index"] is not None and field["index"] in table.columns:
            out[name] = table[field["index"]]
            if field["default"] is not None:  # the text guide: the value of a row without one
                out[name] = out[name].fillna(field["default"])
        elif field["default"] is not None:
            out[name] = pd.Series(field["default"], index=table.index, dtype=S.STRING)
    return out


# ------------------------------------------------------------------ linking
def _core_ids(core: pd.DataFrame) -> pd.Series | None:
    """The core's id column (``occurrenceID`` where meta.xml declares no ``<id>``)."""
    for name in ("id", "occurrenceID"):
        if name in core.columns:
            return to_string(core[name], core.index).str.strip()
    return None


def _core_keys(core_rows: pd.DataFrame) -> pd.DataFrame:
    """The record id (occurrenceID, else id) and occurrence fields of aligned core rows."""
    keys = pd.DataFrame(index=core_rows.index)
    keys["record_uuid"] = first_present(core_rows, ["occurrenceID", "id"])
    for name in S.OCCURRENCE_FIELDS:
        if name in core_rows.columns:
            keys[name] = core_rows[name]
    return keys


def _link(coreids: pd.Series | None, core: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The core row position of each media row (-1 for none) and whether it is ambiguous.

    Core rows repeating an id with identical content are one record; an id naming several
    different rows is ambiguous and links to none of them.
    """
    n = 0 if coreids is None else len(coreids)
    ids = _core_ids(core)
    if coreids is None or ids is None:
        if n and len(core):
            log.warning("%s: the media rows cannot be linked to the core (no core id); "
                        "they are read without specimen fields", _redact(source))
        return np.full(n, -1), np.zeros(n, bool)
    usable = ids.notna() & (ids != "")
    distinct = core[usable].drop_duplicates()
    counts = ids[distinct.index].value_counts()
    ambiguous = set(counts.index[counts > 1])
    first: dict[str, int] = {}
    for position, key in zip(distinct.index, ids[distinct.index]):
        first.setdefault(key, position)
    keys = to_string(coreids, coreids.index).str.strip()
    amb = np.array([isinstance(k, str) and k in ambiguous for k in keys], bool)
    positions = np.array([first.get(k, -1) if isinstance(k, str) else -1 for k in keys], np.int64)
    positions[amb] = -1
    if amb.any():
        log.warning("%s: %d media rows link to core ids that name several different core rows "
                    "(%d ids, e.g. %r); they are excluded as %s", _redact(source),
                    int(amb.sum()), len(ambiguous), sorted(ambiguous)[0], AMBIGUOUS_CORE_ID)
    return positions, amb


def _aligned(core: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """The core row of each media row (all NA where the position is -1)."""
    return core.reset_index(drop=True).reindex(positions).reset_index(drop=True)


# ------------------------------------------------------------------ media
def _media_from_extension(media: pd.DataFrame, row_type: str) -> pd.DataFrame:
    mapped = pd.DataFrame(index=media.index)
    for col, terms in MEDIA_TERMS[row_type].items():
        mapped[col] = first_present(media, terms)
    mapped["media_uuid"] = first_present(media, ["idigbio:uuid"])
    mapped["_mediatype"] = first_present(media, MEDIA_TYPE_TERMS)
    mapped["coreid"] = media.get("coreid")
    return mapped


def _media_from_associated(core: pd.DataFrame) -> pd.DataFrame:
    """One row per URL of ``associatedMedia``, with the position of its core row."""
    frame = pd.DataFrame({
        "coreid": _core_ids(core),
        "access_uri": [split_associated_media(v) for v in core["associatedMedia"]],
        "_core_pos": np.arange(len(core)),
    })
    exploded = frame.explode("access_uri", ignore_index=True)
    return exploded[exploded["access_uri"].notna()].reset_index(drop=True)


def _label_from(tables: list[pd.DataFrame], label_column: str, source: str) -> pd.Series:
    for table in tables:
        if label_column in table.columns:
            return table[label_column]
    found = sorted({c for t in tables for c in t.columns})
    raise UserError(f"{_redact(source)}: no column {label_column!r} (--label-column) in the archive; "
                    f"columns found: {', '.join(found)}")


def _read_tables(source: str, storage_options: dict | None):
    """The core (empty when meta.xml has none) and the media extensions of an archive."""
    with open_archive(source, storage_options) as archive:
        extensions = [(d.type, read_datafile(archive, d)) for d in archive.extensions
                      if d.type in MEDIA_TERMS]
        if archive.core is not None:
            return read_datafile(archive, archive.core), extensions
        if not extensions:
            raise UserError(f"{_redact(source)}: meta.xml has no <core> section")
        log.warning("%s: meta.xml has no <core> section; media rows are read without specimen "
                    "fields", _redact(source))
        return pd.DataFrame(), extensions


def _media_rows(core: pd.DataFrame, extensions: list, source: str):
    """The mapped media rows, their source rows, core positions and ambiguity flags."""
    if extensions:
        parts = [(m, _media_from_extension(m, t)) for t, m in extensions]
        source_rows = pd.concat([m for m, _ in parts], ignore_index=True)
        mapped = pd.concat([p for _, p in parts], ignore_index=True)
        positions, ambiguous = _link(mapped.get("coreid"), core, source)
        return mapped, source_rows, positions, ambiguous
    if "associatedMedia" in core.columns:
        mapped = _media_from_associated(core)
        positions = mapped.pop("_core_pos").to_numpy(np.int64)
        return mapped, mapped[["coreid"]].copy(), positions, np.zeros(len(mapped), bool)
    raise UserError(f"{_redact(source)}: the archive lists no media (no Multimedia extension and "
                    f"no associatedMedia in its core)")


def _raw_columns(joined: pd.DataFrame, tables: Sequence[pd.DataFrame]) -> list[str]:
    names: list[str] = []
    for table in tables:
        for col in table.columns:
            name = S.RAW_PREFIX + col
            if name not in joined.columns:
                joined[name] = table[col].to_numpy()
                names.append(name)
    return names


def read_dwca_pandas(source: str, *, storage_options: dict | None = None,
                     label_column: str | None = None, raw: bool = False,
                     media_type: str | None = "images") -> pd.DataFrame:
    """Read a Darwin Core Archive into a pandas catalog (duplicates marked).

    See the module documentation for how media, records and fields are found.

    Raises
    ------
    UserError
        Whatever keeps the archive from being read, in one line.
    """
    with _as_user_error(source):
        core, extensions = _read_tables(source, storage_options)
        mapped, source_rows, positions, ambiguous = _media_rows(core, extensions, source)
        if mapped.empty:
            raise UserError(f"{_redact(source)}: the archive lists no media (zero media rows)")
        return _catalog(mapped, source_rows, _aligned(core, positions), ambiguous, source,
                        label_column=label_column, raw=raw, media_type=media_type)


def _catalog(mapped: pd.DataFrame, source_rows: pd.DataFrame, core_rows: pd.DataFrame,
             ambiguous: np.ndarray, source: str, *, label_column: str | None, raw: bool,
             media_type: str | None) -> pd.DataFrame:
    """The catalog of media rows, each beside its own core row (aligned, NA for none)."""
    keys = _core_keys(core_rows)
    joined = pd.concat([mapped.reset_index(drop=True), keys], axis=1)
    joined["record_uuids"] = [[r] if isinstance(r, str) and r else [] for r in joined["record_uuid"]]
    if "coreid" not in core_rows.columns:
        core_rows.insert(0, "coreid", source_rows["coreid"].to_numpy()
                         if "coreid" in source_rows.columns else None)
    if label_column is not None:
        joined[S.LABEL] = _label_from([source_rows, core_rows], label_column, source).to_numpy()
    raw_cols = _raw_columns(joined, (core_rows, source_rows)) if raw else []
    occurrence = [f for f in S.OCCURRENCE_FIELDS if f in keys.columns]
    columns = S.catalog_columns(label=label_column is not None, occurrence=occurrence, raw=raw_cols)
    catalog = finish_partition(joined, columns, media_type=media_type, mediatype=joined.get("_mediatype"))
    free = catalog[S.EXCLUDED].isna().to_numpy()
    if (ambiguous & free).any():
        catalog[S.EXCLUDED] = catalog[S.EXCLUDED].mask(ambiguous & free, AMBIGUOUS_CORE_ID)
    return mark_duplicates_pandas(catalog)
