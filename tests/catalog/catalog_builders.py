"""Builders of catalog sources for the tests: GUODA parquet, DwC-A zips, URL tables."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Sequence

from idigdask import synthetic

#: ``data`` struct keys of the test GUODA dumps (colons as in the real dump).
DATA_KEYS = (
    "ac:accessURI", "ac:bestQualityAccessURI", "ac:goodQualityAccessURI", "ac:hashFunction",
    "ac:hashValue", "dcterms:format", "dc:format", "dcterms:rights", "exif:PixelXDimension",
    "exif:PixelYDimension", "dwc:catalogNumber", "dwc:scientificName", "coreid",
)
#: Top-level columns of the test GUODA dumps, in the order written (``data`` follows).
TOP = ("uuid", "accessuri", "format", "xpixels", "ypixels", "recordset", "mediatype", "rights",
       "webstatement", "etag", "type")


def guoda_row(uuid: str, accessuri: str | None = None, *, data: dict | None = None,
              records: Sequence[str] | None = None, mediatype: str = "images",
              fmt: str | None = "image/jpeg", x: int | None = 100, y: int | None = 200) -> dict:
    """One GUODA media row."""
    return {"uuid": uuid, "accessuri": accessuri, "format": fmt, "xpixels": x, "ypixels": y,
            "recordset": "rs-1", "mediatype": mediatype, "rights": "CC0",
            "webstatement": "https://creativecommons.org/publicdomain/zero/1.0/",
            "etag": f"e-{uuid}", "type": "stillimage", "data": data or {},
            "records": None if records is None else list(records)}


def write_guoda(path: Path, rows: Sequence[dict], *, with_records: bool = True,
                row_group_size: int | None = None) -> Path:
    """Write GUODA-schema parquet: top-level fields, ``data`` struct, maybe ``records``.

    The package's own writer (:func:`idigdask.synthetic.write_guoda`), with the columns
    and ``data`` keys of the test dumps and one row group unless told otherwise.
    """
    columns = (*TOP, "data", *(("records",) if with_records else ()))
    return synthetic.write_guoda(path, rows, data_keys=DATA_KEYS, columns=columns,
                                 row_group_size=row_group_size or max(len(rows), 1))


def write_guoda_parts(folder: Path, rows: Sequence[dict], per_file: int) -> Path:
    """A folder of GUODA part files (Spark's layout); read, it has one partition a file."""
    folder.mkdir()
    for n, start in enumerate(range(0, len(rows), per_file)):
        write_guoda(folder / f"part-{n:05d}.parquet", rows[start:start + per_file])
    (folder / "_SUCCESS").write_text("")
    return folder


def write_table(path: Path, rows: Sequence[dict]) -> Path:
    """A URL table in the format of the path's extension (csv, tsv, jsonl, parquet)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(suffix)
    return path


DWC = "http://rs.tdwg.org/dwc/terms/"
DC = "http://purl.org/dc/terms/"
DCE = "http://purl.org/dc/elements/1.1/"
AC = "http://rs.tdwg.org/ac/terms/"


def _meta(core_terms: Sequence[str], ext: tuple[str, str, Sequence[str]] | None) -> str:
    fields = "".join(f'<field index="{i + 1}" term="{t}"/>' for i, t in enumerate(core_terms))
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
           '<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="eml.xml">'
           '<core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" '
           'fieldsEnclosedBy="" ignoreHeaderLines="1" rowType="http://rs.tdwg.org/dwc/terms/Occurrence">'
           f'<files><location>occurrence.txt</location></files><id index="0"/>{fields}</core>')
    if ext:
        row_type, location, terms = ext
        efields = "".join(f'<field index="{i + 1}" term="{t}"/>' for i, t in enumerate(terms))
        xml += ('<extension encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" '
                f'fieldsEnclosedBy="" ignoreHeaderLines="1" rowType="{row_type}">'
                f'<files><location>{location}</location></files><coreid index="0"/>{efields}</extension>')
    return xml + "</archive>"


def _tsv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join("\t".join(r) for r in [list(header), *rows]) + "\n"


def write_dwca(path: Path, core_terms: Sequence[str], core_rows: Sequence[Sequence[str]],
               ext: tuple[str, str, Sequence[str], Sequence[Sequence[str]]] | None = None) -> Path:
    """A DwC-A zip: ``occurrence.txt`` (id first, then ``core_terms``) and an extension.

    ``ext`` is ``(rowType, file name, terms, rows)``, each row starting with the core id.
    """
    short = lambda t: t.rstrip("/").rsplit("/", 1)[-1]  # noqa: E731
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta.xml", _meta(core_terms, ext and ext[:3]))
        z.writestr("occurrence.txt", _tsv(["id", *map(short, core_terms)], core_rows))
        if ext:
            row_type, location, terms, rows = ext
            z.writestr(location, _tsv(["coreid", *map(short, terms)], rows))
    return path


CORE_TERMS = [DWC + "occurrenceID", DWC + "catalogNumber", DWC + "institutionCode",
              DWC + "scientificName", DWC + "family"]
