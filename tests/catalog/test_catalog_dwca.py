"""Darwin Core Archives: GBIF and Audubon multimedia extensions, associatedMedia only."""

from __future__ import annotations

import fsspec
import pandas as pd
import pytest
from catalog_builders import AC, CORE_TERMS, DC, DCE, DWC, write_dwca

from idigdask.catalog import read_catalog, summarize
from idigdask.errors import UserError

CORE_ROWS = [
    ["occ-1", "urn:occ:1", "US 101", "US", "Lycopodium clavatum", "Lycopodiaceae"],
    ["occ-2", "", "US 102", "US", "Selaginella rupestris", "Selaginellaceae"],
]
GBIF = "http://rs.gbif.org/terms/1.0/Multimedia"
AC_TYPE = "http://rs.tdwg.org/ac/terms/Multimedia"


def test_gbif_simple_multimedia(tmp_path):
    ext = (GBIF, "multimedia.txt", [DC + "identifier", DC + "format", DC + "license", DC + "type"], [
        ["occ-1", "https://img.example.org/1a.jpg", "image/jpeg", "CC0", "StillImage"],
        ["occ-1", "https://img.example.org/1b.jpg", "image/jpeg", "CC BY", "StillImage"],
        ["occ-2", "https://img.example.org/2.mp3", "audio/mpeg", "CC0", "Sound"],
    ])
    path = write_dwca(tmp_path / "gbif.zip", CORE_TERMS, CORE_ROWS, ext)
    df = read_catalog(str(path))
    assert list(df.columns)[-6:] == ["occurrenceID", "catalogNumber", "institutionCode",
                                     "scientificName", "family", "excluded"]
    out = df.compute()
    assert out["access_uri"].tolist()[:2] == ["https://img.example.org/1a.jpg", "https://img.example.org/1b.jpg"]
    assert out["record_uuids"].tolist() == [["urn:occ:1"], ["urn:occ:1"], ["occ-2"]]
    assert out["license"].tolist() == ["CC0", "CC BY", "CC0"]
    assert out["catalogNumber"].tolist() == ["US 101", "US 101", "US 102"]
    assert out["excluded"].tolist()[2] == "unsupported_media_type:sounds"
    assert out["media_uuid"].nunique() == 3


def test_audubon_media_description(tmp_path):
    terms = [AC + "accessURI", DCE + "format", AC + "hashFunction", AC + "hashValue",
             "http://ns.adobe.com/exif/1.0/PixelXDimension", DCE + "type",
             "http://portal.idigbio.org/terms/uuid"]
    ext = (AC_TYPE, "media.txt", terms, [
        ["occ-1", "https://img.example.org/a.jpg", "image/jpeg", "MD5", "abc", "3900",
         "http://purl.org/dc/dcmitype/StillImage", "5e3a-uuid"],
        ["occ-2", "", "image/jpeg", "", "", "", "StillImage", ""],
    ])
    path = write_dwca(tmp_path / "ac.zip", CORE_TERMS, CORE_ROWS, ext)
    out = read_catalog(str(path), raw=True).compute()
    first = out.iloc[0]
    assert (first.media_uuid, first.hash_function, first.hash_value, first.width) == ("5e3a-uuid", "MD5", "abc", 3900)
    assert pd.isna(first.excluded) and first["raw.ac:hashValue"] == "abc"
    assert first["raw.family"] == "Lycopodiaceae"
    assert out["excluded"].tolist()[1] == "no_uri"


@pytest.mark.parametrize("sep", [" | ", "|", ";", ", "])
def test_associated_media_only(tmp_path, sep):
    rows = [["o1", "https://a.org/1.jpg" + sep + "https://a.org/2.jpg", "C1"],
            ["o2", "https://a.org/3.jpg", "C2"], ["o3", "", "C3"]]
    path = write_dwca(tmp_path / "am.zip", [DWC + "associatedMedia", DWC + "catalogNumber"], rows)
    out = read_catalog(str(path)).compute()
    assert out["access_uri"].tolist() == ["https://a.org/1.jpg", "https://a.org/2.jpg", "https://a.org/3.jpg"]
    assert out["record_uuids"].tolist() == [["o1"], ["o1"], ["o2"]]
    assert out["catalogNumber"].tolist() == ["C1", "C1", "C2"]


def test_remote_archive_and_label_column(tmp_path):
    ext = (GBIF, "multimedia.txt", [DC + "identifier"], [["occ-1", "https://a.org/x.jpg"]])
    path = write_dwca(tmp_path / "g.zip", CORE_TERMS, CORE_ROWS, ext)
    fsspec.filesystem("memory").pipe("/dwca/g.zip", path.read_bytes())
    df = read_catalog("memory://dwca/g.zip", label_column="family")
    assert df.compute()["label"].tolist() == ["Lycopodiaceae"]
    assert summarize(df)["usable"] == 1


def test_archives_without_media_or_broken_are_user_errors(tmp_path):
    path = write_dwca(tmp_path / "none.zip", [DWC + "catalogNumber"], [["o1", "C1"]])
    with pytest.raises(UserError, match="lists no media"):
        read_catalog(str(path))
    (tmp_path / "bad.zip").write_bytes(b"PK not really a zip")
    with pytest.raises(UserError, match="bad.zip: not a readable Darwin Core Archive"):
        read_catalog(str(tmp_path / "bad.zip"))
    with pytest.raises(UserError, match="no column 'stained'"):
        read_catalog(str(write_dwca(tmp_path / "am.zip", [DWC + "associatedMedia"], [["o1", "http://a.org/1.jpg"]])),
                     label_column="stained")
