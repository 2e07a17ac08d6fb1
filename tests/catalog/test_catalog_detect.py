"""Darwin Core Archives told by name: every zip and tar kind is read as a DwC-A, by
``read_catalog`` without ``format=`` and by ``attach_labels`` as a label table."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import fsspec
import pandas as pd
import pytest
from catalog_builders import CORE_TERMS, DC, guoda_row, write_dwca, write_guoda

from idigdask.catalog import attach_labels, read_catalog
from idigdask.catalog.labels import read_label_table
from idigdask.catalog.read import DWCA_SUFFIXES, detect_format
from idigdask.errors import UserError

#: Every tar kind an archive comes as, with the tarfile mode that writes it.
TAR_KINDS = {".tar": "w", ".tgz": "w:gz", ".tar.gz": "w:gz", ".tbz2": "w:bz2",
             ".tar.bz2": "w:bz2", ".txz": "w:xz", ".tar.xz": "w:xz"}
GBIF = "http://rs.gbif.org/terms/1.0/Multimedia"
CORE_ROWS = [["r1", "o1", "C1", "NY", "Lycopodium clavatum", "Lycopodiaceae"],
             ["r2", "o2", "C2", "NY", "Selaginella apoda", "Selaginellaceae"]]
MEDIA = (GBIF, "multimedia.txt", [DC + "identifier", DC + "format"],
         [["r1", "https://a.org/1.jpg", "image/jpeg"], ["r2", "https://a.org/2.jpg", "image/jpeg"]])


def as_tar(zip_path: Path, path: Path, mode: str) -> Path:
    """The members of a zip archive, unchanged, in a tar of the given kind."""
    with zipfile.ZipFile(zip_path) as z, tarfile.open(path, mode) as tar:
        for info in z.infolist():
            data = z.read(info)
            member = tarfile.TarInfo(info.filename)
            member.size, member.mode = len(data), 0o644
            tar.addfile(member, io.BytesIO(data))
    return path


@pytest.fixture
def dwca_zip(tmp_path) -> Path:
    return write_dwca(tmp_path / "records.zip", CORE_TERMS, CORE_ROWS, MEDIA)


# ------------------------------------------------------------------ detect_format
@pytest.mark.parametrize("name", ["a.zip", "A.ZIP", *(f"a{s}" for s in TAR_KINDS),
                                  *(f"dir/Export{s.upper()}" for s in TAR_KINDS)])
def test_archive_names_are_dwca(name):
    fs = fsspec.filesystem("file")
    assert detect_format(name, fs, name) == "dwca"


def test_every_tar_kind_is_an_archive_name():
    assert set(TAR_KINDS) | {".zip"} == set(DWCA_SUFFIXES)


@pytest.mark.parametrize("name, kind", [("a.csv.gz", "table"), ("a.tsv.bz2", "table"),
                                        ("a.jsonl.xz", "table"), ("a.csv", "table"),
                                        ("a.parquet", "parquet")])
def test_compressed_tables_stay_tables(name, kind):
    # A table compressed alone is no archive: only a tar inside the compression is.
    assert detect_format(name, fsspec.filesystem("file"), name) == kind


@pytest.mark.parametrize("name", ["a.gz", "a.bz2", "a.xz", "a.tar.zst", "a.7z"])
def test_other_names_are_refused_in_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(UserError, match="cannot tell the format from the name") as err:
        detect_format(str(path), fsspec.filesystem("file"), str(path))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ read_catalog
@pytest.mark.parametrize("suffix", list(TAR_KINDS))
def test_read_catalog_reads_every_tar_kind_by_name(tmp_path, dwca_zip, suffix):
    want = read_catalog(str(dwca_zip)).compute()
    path = as_tar(dwca_zip, tmp_path / f"records{suffix}", TAR_KINDS[suffix])
    got = read_catalog(str(path)).compute()  # no format=: told by the name
    assert got["access_uri"].tolist() == ["https://a.org/1.jpg", "https://a.org/2.jpg"]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))


# ------------------------------------------------------------------ label tables
@pytest.fixture
def catalog(tmp_path):
    rows = [guoda_row("m1", "http://a.org/1.jpg", records=["o1"]),
            guoda_row("m2", "http://a.org/2.jpg", records=["o2"]),
            guoda_row("m3", "http://a.org/3.jpg", records=["o9"])]
    return read_catalog(str(write_guoda(tmp_path / "m.parquet", rows)))


@pytest.mark.parametrize("suffix", list(TAR_KINDS))
def test_a_tar_label_table_is_read_as_a_dwca_core(tmp_path, dwca_zip, catalog, suffix):
    path = as_tar(dwca_zip, tmp_path / f"labels{suffix}", TAR_KINDS[suffix])
    frame, name = read_label_table(str(path))
    want, _ = read_label_table(str(dwca_zip))
    assert name == str(path)
    pd.testing.assert_frame_equal(frame, want)
    assert frame["occurrenceID"].tolist() == ["o1", "o2"]
    out = attach_labels(catalog, str(path), on="record_uuid", label="family").compute()
    labels = dict(zip(out["media_uuid"], out["label"]))
    assert labels["m1"] == "Lycopodiaceae" and labels["m2"] == "Selaginellaceae"
    assert pd.isna(labels["m3"])


def test_a_tar_label_table_joins_on_a_catalog_column(tmp_path, dwca_zip):
    media = read_catalog(str(dwca_zip))
    path = as_tar(dwca_zip, tmp_path / "labels.tar.gz", "w:gz")
    out = attach_labels(media, str(path), on="catalogNumber", label="scientificName").compute()
    assert out["label"].tolist() == ["Lycopodium clavatum", "Selaginella apoda"]


def test_a_broken_tar_label_table_is_one_user_error(tmp_path, catalog):
    path = tmp_path / "labels.tgz"
    path.write_bytes(b"not a tar at all")
    with pytest.raises(UserError) as err:
        attach_labels(catalog, str(path), on="record_uuid", label="family")
    assert "\n" not in str(err.value)


def test_plain_label_tables_are_unchanged(tmp_path, catalog):
    table = tmp_path / "labels.csv.gz"
    pd.DataFrame({"uuid": ["o1"], "stained": [1]}).to_csv(table, index=False, compression="gzip")
    out = attach_labels(catalog, str(table), on="record_uuid", label="stained").compute()
    assert dict(zip(out["media_uuid"], out["label"]))["m1"] == "1"

