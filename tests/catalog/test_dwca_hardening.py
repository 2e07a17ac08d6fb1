"""Darwin Core Archives from strangers: unsafe members, escaping locations, publishers'
quirks, repeated core ids and list separators (issue 10, items 1, 2, 16, 17 and 18)."""

from __future__ import annotations

import io
import logging
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from idigdask.catalog import read_catalog
from idigdask.cli import main
from idigdask.errors import UserError

DWC = "http://rs.tdwg.org/dwc/terms/"
DC = "http://purl.org/dc/terms/"
GBIF = "http://rs.gbif.org/terms/1.0/Multimedia"
OCCURRENCE = DWC + "Occurrence"
TAB = 'fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" ignoreHeaderLines="1"'


# ------------------------------------------------------------------ builders
def section(tag: str, location: str | None, terms: list[str], *, key: str | None = "0",
            attrs: str = 'encoding="UTF-8" ' + TAB, row_type: str = OCCURRENCE) -> str:
    """A ``<core>`` or ``<extension>``: its id (``key``) in column 0, ``terms`` after it."""
    files = f"<files><location>{location}</location></files>" if location is not None else "<files/>"
    key_tag = "id" if tag == "core" else "coreid"
    ident = f'<{key_tag} index="{key}"/>' if key is not None else ""
    fields = "".join(f'<field index="{i + 1}" term="{t}"/>' for i, t in enumerate(terms))
    return f'<{tag} {attrs} rowType="{row_type}">{files}{ident}{fields}</{tag}>'


def meta(*sections: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<archive xmlns="http://rs.tdwg.org/dwc/text/">'
            + "".join(sections) + "</archive>")


def tsv(*rows: list[str], end: str = "\n") -> str:
    return "".join("\t".join(r) + end for r in rows)


def write_zip(path: Path, files: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


AM_META = meta(section("core", "occurrence.txt", [DWC + "associatedMedia", DWC + "catalogNumber"]))
AM_ROWS = tsv(["id", "associatedMedia", "catalogNumber"], ["o1", "https://a.org/1.jpg", "C1"],
              ["o2", "https://a.org/2.jpg", "C2"])
GOOD = {"meta.xml": AM_META, "occurrence.txt": AM_ROWS}


def tar_info(name: str, data: bytes = b"", **attrs) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def good_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [tar_info(name, data.encode()) for name, data in GOOD.items()]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The temporary folder every extraction goes to (so an escape lands in tmp_path)."""
    folder = tmp_path / "scratch" / "tmp"
    folder.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def written_outside(tmp_path: Path, name: str) -> list[Path]:
    return list(tmp_path.rglob(name))


# ------------------------------------------------------------------ 1. unsafe members
@pytest.mark.parametrize("suffix, mode", [(".tgz", "w:gz"), (".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"),
                                          (".tar.xz", "w:xz"), (".tar", "w")])
def test_tar_archives_are_read(tmp_path, suffix, mode):
    path = write_tar(tmp_path / f"dwca{suffix}", good_members(), mode)
    # every tar kind is told by name too (test_catalog_detect.py); format= names it here
    out = read_catalog(str(path), format="dwca").compute()
    assert out["access_uri"].tolist() == ["https://a.org/1.jpg", "https://a.org/2.jpg"]
    assert out["catalogNumber"].tolist() == ["C1", "C2"]


def test_a_tar_wrapping_one_folder_is_read(tmp_path):
    members = [tar_info("export", type=tarfile.DIRTYPE, mode=0o755)]
    members += [tar_info(f"export/{n}", d.encode()) for n, d in GOOD.items()]
    assert len(read_catalog(str(write_tar(tmp_path / "wrapped.tgz", members))).compute()) == 2


def _unsafe_tar_members(tmp_path: Path) -> dict[str, list]:
    outside = tmp_path / "outside"
    return {
        "parent": [tar_info("../../escape.txt", b"x")],
        "absolute": [tar_info(str(tmp_path / "escape.txt"), b"x")],
        "symlink-out": [tar_info("link", type=tarfile.SYMTYPE, linkname=str(outside)),
                        tar_info("link/escape.txt", b"x")],
        "symlink-up": [tar_info("up", type=tarfile.SYMTYPE, linkname="../../.."),
                       tar_info("up/escape.txt", b"x")],
        "hardlink-out": [tar_info("hard.txt", type=tarfile.LNKTYPE, linkname="../../outside/f")],
        "device": [tar_info("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)],
        "fifo": [tar_info("pipe", type=tarfile.FIFOTYPE)],
    }


@pytest.mark.parametrize("case", ["parent", "absolute", "symlink-out", "symlink-up", "hardlink-out",
                                  "device", "fifo"])
def test_unsafe_tar_members_are_refused_and_nothing_escapes(tmp_path, scratch, case):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_text("private")
    members = _unsafe_tar_members(tmp_path)[case]
    path = write_tar(tmp_path / "evil.tgz", good_members() + members)
    with pytest.raises(UserError, match=r"evil\.tgz: refused the archive member .*\(") as err:
        read_catalog(str(path))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "outside" / "escape.txt").exists()
    assert [p.name for p in (tmp_path / "outside").iterdir()] == ["f"]
    assert not any(scratch.iterdir())


def test_links_inside_a_tar_are_kept(tmp_path):
    members = good_members() + [tar_info("copy.txt", type=tarfile.SYMTYPE, linkname="occurrence.txt")]
    assert len(read_catalog(str(write_tar(tmp_path / "links.tgz", members))).compute()) == 2


def _zip_with(path: Path, name: str, data: bytes = b"x", mode: int | None = None) -> Path:
    write_zip(path, GOOD)
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.create_system, info.external_attr = 3, mode << 16
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(info, data)
    return path


@pytest.mark.parametrize("name, mode, why", [
    ("../../escape.txt", None, "climbs out"),
    ("/etc/escape.txt", None, "absolute path"),
    ("..\\..\\escape.txt", None, "climbs out"),
    ("C:/escape.txt", None, "absolute path"),
    ("link", stat.S_IFLNK | 0o777, "symbolic link"),
    ("dev", stat.S_IFCHR | 0o644, "device"),
])
def test_unsafe_zip_members_are_refused(tmp_path, scratch, name, mode, why):
    path = _zip_with(tmp_path / "evil.zip", name, b"/etc/passwd", mode)
    with pytest.raises(UserError, match=f"refused the archive member .*{why}"):
        read_catalog(str(path))
    assert not written_outside(tmp_path, "escape.txt")
    assert not any(scratch.iterdir())


class Zeros(io.RawIOBase):
    """``size`` zero bytes, read in pieces (a bomb is made without holding it)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_a_tar_bomb_is_refused_from_its_headers(tmp_path, monkeypatch):
    size = 64 * 2**20  # about 64 KB compressed: a 1000-fold expansion
    info = tarfile.TarInfo("occurrence.txt")
    info.size = size
    path = tmp_path / "bomb.tgz"
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("meta.xml"), io.BytesIO(b""))
        tar.addfile(info, io.BufferedReader(Zeros(size)))
    assert path.stat().st_size < 1_000_000
    extracted = []
    monkeypatch.setattr(tarfile.TarFile, "extractall", lambda *a, **k: extracted.append(a))
    with pytest.raises(UserError, match=r"bomb\.tgz: the archive would expand \d+-fold"):
        read_catalog(str(path))
    assert not extracted


def test_the_absolute_expansion_limit_applies_to_tars(tmp_path, monkeypatch):
    from idigdask.catalog import archive

    monkeypatch.setattr(archive, "MAX_EXPANDED_BYTES", 1000)
    members = good_members() + [tar_info("big.bin", bytes(range(256)) * 8)]
    with pytest.raises(UserError, match="would expand to .* over the limit of 1000"):
        read_catalog(str(write_tar(tmp_path / "big.tgz", members)))


def test_remote_tars_are_read_and_downloads_are_capped(tmp_path, monkeypatch):
    import fsspec

    from idigdask.catalog import archive

    path = write_tar(tmp_path / "remote.tgz", good_members())
    fsspec.filesystem("memory").pipe("/hardening/remote.tgz", path.read_bytes())
    assert len(read_catalog("memory://hardening/remote.tgz").compute()) == 2
    monkeypatch.setattr(archive, "MAX_EXPANDED_BYTES", 100)
    with pytest.raises(UserError, match="remote.tgz: the archive is over 100 bytes; refused"):
        read_catalog("memory://hardening/remote.tgz")


def test_a_file_that_is_no_archive_is_one_line(tmp_path):
    (tmp_path / "junk.tgz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match="junk.tgz: not a readable Darwin Core Archive"):
        read_catalog(str(tmp_path / "junk.tgz"))


# ------------------------------------------------------------------ 2. escaping locations
@pytest.fixture
def secret(scratch):
    """A file outside the archive holding what would pass for a core with media."""
    text = tsv(["id", "associatedMedia", "catalogNumber"], ["s1", "https://secret.org/s.jpg", "S1"])
    for folder in (scratch, scratch.parent):  # where ../ and ../../ lead from an extraction
        (folder / "secret.txt").write_text(text)
    return scratch / "secret.txt"


@pytest.mark.parametrize("location, why", [
    ("ABSOLUTE", "absolute path"), ("../secret.txt", "climbs out"), ("../../secret.txt", "climbs out"),
    ("data/../../secret.txt", "climbs out"), ("..\\secret.txt", "climbs out"),
    ("file:///etc/passwd", "a URL"), ("https://evil.org/core.txt", "a URL"),
])
def test_a_location_outside_the_archive_is_refused_never_read(tmp_path, secret, location, why):
    location = str(secret) if location == "ABSOLUTE" else location
    files = {"meta.xml": meta(section("core", location, [DWC + "associatedMedia", DWC + "catalogNumber"])),
             "occurrence.txt": AM_ROWS}
    path = write_zip(tmp_path / "escape.zip", files)
    with pytest.raises(UserError, match=f"escape.zip: meta.xml names the data file .* outside the "
                                        f"archive \\(.*{why}.*\\); refused"):
        read_catalog(str(path))


def test_an_extension_location_outside_is_refused(tmp_path, secret):
    files = {"meta.xml": meta(section("core", "occurrence.txt", [DWC + "catalogNumber"]),
                              section("extension", "/etc/passwd", [DC + "identifier"], row_type=GBIF)),
             "occurrence.txt": tsv(["id", "catalogNumber"], ["o1", "C1"])}
    with pytest.raises(UserError, match="'/etc/passwd' outside the archive"):
        read_catalog(str(write_zip(tmp_path / "ext.zip", files)))


def test_a_folder_archive_whose_data_file_links_outside_is_refused(tmp_path, secret):
    folder = tmp_path / "fixture"
    folder.mkdir()
    (folder / "meta.xml").write_text(AM_META)
    (folder / "occurrence.txt").symlink_to(secret)
    with pytest.raises(UserError, match="'occurrence.txt' is a link to outside the archive; refused"):
        read_catalog(str(folder))


# ------------------------------------------------------------------ 16. publishers' quirks
def test_a_section_without_encoding_is_read_as_utf8(tmp_path):
    attrs = TAB  # no encoding attribute anywhere
    files = {"meta.xml": meta(section("core", "occurrence.txt", [DWC + "associatedMedia", DWC + "recordedBy",
                                                                  DWC + "catalogNumber"], attrs=attrs)),
             "occurrence.txt": tsv(["id", "am", "by", "cat"],
                                   ["o1", "https://a.org/1.jpg", "Müller", "Čř-1"]).encode()}
    out = read_catalog(str(write_zip(tmp_path / "noenc.zip", files)), raw=True).compute()
    assert out["catalogNumber"].tolist() == ["Čř-1"]
    assert out["raw.recordedBy"].tolist() == ["Müller"]
    assert out["excluded"].isna().all()


def test_missing_attributes_take_the_text_guide_defaults(tmp_path):
    """Darwin Core text guide: ``,`` between fields, ``"`` around them, no header line."""
    files = {"meta.xml": meta(section("core", "occurrence.csv", [DWC + "associatedMedia", DWC + "locality"],
                                      attrs="")),
             "occurrence.csv": 'o1,https://a.org/1.jpg,"Pine Hill, north slope"\n'}
    out = read_catalog(str(write_zip(tmp_path / "defaults.zip", files)), raw=True).compute()
    assert out["access_uri"].tolist() == ["https://a.org/1.jpg"]
    assert out["raw.locality"].tolist() == ["Pine Hill, north slope"]


def test_an_unknown_encoding_is_read_as_utf8_with_a_warning(tmp_path, caplog):
    attrs = 'encoding="x-publisher-8" ' + TAB
    files = {"meta.xml": meta(section("core", "occurrence.txt", [DWC + "associatedMedia"], attrs=attrs)),
             "occurrence.txt": AM_ROWS}
    with caplog.at_level(logging.WARNING, logger="idigdask"):
        assert len(read_catalog(str(write_zip(tmp_path / "enc.zip", files))).compute()) == 2
    assert "unknown encoding 'x-publisher-8'" in caplog.text


def test_a_core_without_id_is_read(tmp_path):
    terms = [DWC + "occurrenceID", DWC + "associatedMedia", DWC + "catalogNumber"]
    files = {"meta.xml": meta(section("core", "occurrence.txt", terms, key=None)),
             "occurrence.txt": tsv(["x", "occurrenceID", "am", "cat"],
                                   ["1", "urn:o:1", "https://a.org/1.jpg", "C1"])}
    out = read_catalog(str(write_zip(tmp_path / "noid.zip", files))).compute()
    assert out["record_uuids"].tolist() == [["urn:o:1"]]
    assert out["catalogNumber"].tolist() == ["C1"]


def test_a_core_without_id_links_extensions_by_occurrence_id(tmp_path):
    files = {"meta.xml": meta(section("core", "occurrence.txt", [DWC + "occurrenceID", DWC + "catalogNumber"],
                                      key=None),
                              section("extension", "media.txt", [DC + "identifier"], row_type=GBIF)),
             "occurrence.txt": tsv(["x", "occurrenceID", "cat"], ["1", "urn:o:1", "C1"]),
             "media.txt": tsv(["coreid", "identifier"], ["urn:o:1", "https://a.org/1.jpg"],
                              ["urn:o:9", "https://a.org/9.jpg"])}
    out = read_catalog(str(write_zip(tmp_path / "noid.zip", files))).compute()
    assert out["catalogNumber"].tolist()[0] == "C1" and pd.isna(out["catalogNumber"].tolist()[1])
    assert out["record_uuids"].tolist() == [["urn:o:1"], []]


def test_a_core_without_location_is_one_line(tmp_path, capsys):
    files = {"meta.xml": meta(section("core", None, [DWC + "associatedMedia"])), "occurrence.txt": AM_ROWS}
    path = write_zip(tmp_path / "noloc.zip", files)
    with pytest.raises(UserError, match=r"noloc.zip: the core in meta.xml names no data file"):
        read_catalog(str(path))
    assert main(["catalog", str(path), "-o", str(tmp_path / "out.parquet")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_media_extension_without_location_is_skipped(tmp_path, caplog):
    files = {"meta.xml": meta(section("core", "occurrence.txt", [DWC + "associatedMedia", DWC + "catalogNumber"]),
                              section("extension", None, [DC + "identifier"], row_type=GBIF)),
             "occurrence.txt": AM_ROWS}
    with caplog.at_level(logging.WARNING, logger="idigdask"):
        out = read_catalog(str(write_zip(tmp_path / "extnoloc.zip", files))).compute()
    assert out["access_uri"].tolist() == ["https://a.org/1.jpg", "https://a.org/2.jpg"]
    assert "names no data file; skipped" in caplog.text


def test_meta_without_core(tmp_path, caplog):
    ext = section("extension", "media.txt", [DC + "identifier"], row_type=GBIF)
    files = {"meta.xml": meta(ext), "media.txt": tsv(["coreid", "identifier"], ["o1", "https://a.org/1.jpg"])}
    with caplog.at_level(logging.WARNING, logger="idigdask"):
        out = read_catalog(str(write_zip(tmp_path / "nocore.zip", files))).compute()
    assert out["access_uri"].tolist() == ["https://a.org/1.jpg"] and out["excluded"].isna().all()
    assert "no <core> section" in caplog.text
    empty = write_zip(tmp_path / "empty.zip", {"meta.xml": meta(), "occurrence.txt": AM_ROWS})
    with pytest.raises(UserError, match="empty.zip: meta.xml has no <core> section"):
        read_catalog(str(empty))


@pytest.mark.parametrize("meta_xml, match", [
    ("<archive><core", "meta.xml is not well-formed XML"),
    ("<html><body>Not found</body></html>", r"not a Darwin Core <archive> \(its root is <html>\)"),
    (meta(section("core", "occurrence.txt", [DWC + "associatedMedia"], key="first")),
     "gives <id> the index 'first', not a column number"),
    (meta(section("core", "missing.txt", [DWC + "associatedMedia"])),
     "names the data file 'missing.txt', which the archive does not hold"),
])
def test_broken_descriptors_are_one_line(tmp_path, meta_xml, match):
    path = write_zip(tmp_path / "broken.zip", {"meta.xml": meta_xml, "occurrence.txt": AM_ROWS})
    with pytest.raises(UserError, match=match) as err:
        read_catalog(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("header_end, row_end", [("\r", "\n"), ("\r", "\r"), ("\r\n", "\r\n")])
def test_cr_line_endings_are_read(tmp_path, header_end, row_end):
    header = "\t".join(["id", "associatedMedia", "catalogNumber"]) + header_end
    rows = tsv(["o1", "https://a.org/1.jpg", "C1"], ["o2", "https://a.org/2.jpg", "C2"], end=row_end)
    with_meta = write_zip(tmp_path / "cr.zip", {"meta.xml": AM_META, "occurrence.txt": header + rows})
    simple = write_zip(tmp_path / "cr-simple.zip", {"occurrence.txt": header + rows})
    for path in (with_meta, simple):
        out = read_catalog(str(path)).compute()
        assert out["access_uri"].tolist() == ["https://a.org/1.jpg", "https://a.org/2.jpg"], path
        assert out["catalogNumber"].tolist() == ["C1", "C2"]


def test_simple_darwin_core_without_meta(tmp_path):
    data = "\ufeffdwc:occurrenceID,associatedMedia,catalogNumber\r\nurn:1,https://a.org/1.jpg,\"C, 1\"\r\n"
    path = write_zip(tmp_path / "simple.zip", {"occurrence.csv": data, "eml.xml": "<eml/>"})
    out = read_catalog(str(path)).compute()
    assert out["record_uuids"].tolist() == [["urn:1"]] and out["catalogNumber"].tolist() == ["C, 1"]
    two = write_zip(tmp_path / "two.zip", {"a.txt": "x\n", "b.txt": "y\n"})
    with pytest.raises(UserError, match="no meta.xml, and not a single data file"):
        read_catalog(str(two))


def test_no_third_party_exception_reaches_the_user(tmp_path, monkeypatch):
    from idigdask.catalog import dwca

    def boom(*args, **kwargs):
        raise RuntimeError("parser exploded at http://user:hunter2@host/x?token=abc\nsecond line")

    monkeypatch.setattr(dwca.pd, "read_csv", boom)
    with pytest.raises(UserError) as err:
        read_catalog(str(write_zip(tmp_path / "any.zip", GOOD)))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'any.zip'}: cannot parse occurrence.txt (RuntimeError:")
    assert "hunter2" not in message and "abc" not in message and "\n" not in message


def test_an_empty_data_file_lists_no_media(tmp_path):
    path = write_zip(tmp_path / "empty.zip", {"meta.xml": AM_META, "occurrence.txt": ""})
    with pytest.raises(UserError, match="lists no media"):
        read_catalog(str(path))


# ------------------------------------------------------------------ 17. repeated core ids
def _repeated_ids_archive(tmp_path: Path) -> Path:
    core = tsv(["id", "catalogNumber", "family"],
               ["o1", "C1", "Pinaceae"], ["o1", "C1-other", "Fagaceae"],  # one id, two specimens
               ["o2", "C2", "Poaceae"],
               ["o3", "C3", "Rosaceae"], ["o3", "C3", "Rosaceae"])  # the same record twice
    media = tsv(["coreid", "identifier"], ["o1", "https://a.org/1a.jpg"], ["o1", "https://a.org/1b.jpg"],
                ["o2", "https://a.org/2.jpg"], ["o3", "https://a.org/3.jpg"], ["o4", "https://a.org/4.jpg"])
    files = {"meta.xml": meta(section("core", "occurrence.txt", [DWC + "catalogNumber", DWC + "family"]),
                              section("extension", "media.txt", [DC + "identifier"], row_type=GBIF)),
             "occurrence.txt": core, "media.txt": media}
    return write_zip(tmp_path / "repeated.zip", files)


def test_repeated_core_ids_never_multiply_media_rows(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="idigdask"):
        out = read_catalog(str(_repeated_ids_archive(tmp_path)), label_column="family", raw=True).compute()
    assert out["access_uri"].tolist() == [f"https://a.org/{n}.jpg" for n in ("1a", "1b", "2", "3", "4")]
    assert out["excluded"].tolist()[:2] == ["ambiguous_core_id"] * 2
    assert out["excluded"].iloc[2:4].isna().all()
    assert out["record_uuids"].tolist() == [[], [], ["o2"], ["o3"], []]
    assert out["catalogNumber"].tolist()[2:4] == ["C2", "C3"]
    assert out.iloc[:2][["catalogNumber", "label", "raw.family"]].isna().all().all()
    assert out["label"].tolist()[2:4] == ["Poaceae", "Rosaceae"]
    assert "2 media rows link to core ids that name several different core rows" in caplog.text


def test_eight_media_on_one_repeated_id_stay_eight_rows(tmp_path):
    core = tsv(["id", "catalogNumber"], *[["o1", f"C{i}"] for i in range(8)])
    media = tsv(["coreid", "identifier"], *[["o1", f"https://a.org/{i}.jpg"] for i in range(8)])
    files = {"meta.xml": meta(section("core", "occurrence.txt", [DWC + "catalogNumber"]),
                              section("extension", "media.txt", [DC + "identifier"], row_type=GBIF)),
             "occurrence.txt": core, "media.txt": media}
    out = read_catalog(str(write_zip(tmp_path / "eight.zip", files))).compute()
    assert len(out) == 8 and set(out["excluded"]) == {"ambiguous_core_id"}


def test_associated_media_keep_their_own_core_row_whatever_the_ids(tmp_path):
    rows = tsv(["id", "associatedMedia", "catalogNumber"], ["o1", "https://a.org/1.jpg", "C1"],
               ["o1", "https://a.org/2.jpg | https://a.org/3.jpg", "C2"])
    path = write_zip(tmp_path / "am.zip", {"meta.xml": AM_META, "occurrence.txt": rows})
    out = read_catalog(str(path)).compute()
    assert out["access_uri"].tolist() == ["https://a.org/1.jpg", "https://a.org/2.jpg", "https://a.org/3.jpg"]
    assert out["catalogNumber"].tolist() == ["C1", "C2", "C2"]
    assert out["excluded"].isna().all()


# ------------------------------------------------------------------ 18. list separators
IIIF = "https://iiif.example.org/iiif/abc/full/1024,/0/default.jpg"
SESSION = "https://a.org/media;jsessionid=F00?id=7"


@pytest.mark.parametrize("value, urls", [
    (IIIF, [IIIF]),
    (f"{IIIF} | {IIIF.replace('abc', 'def')}", [IIIF, IIIF.replace("abc", "def")]),
    (f"{IIIF}|https://a.org/2.jpg", [IIIF, "https://a.org/2.jpg"]),
    (f"{IIIF} https://a.org/2.jpg\nhttps://a.org/3.jpg", [IIIF, "https://a.org/2.jpg", "https://a.org/3.jpg"]),
    (f"{IIIF}, https://a.org/2.jpg", [IIIF, "https://a.org/2.jpg"]),
    (f"{SESSION}; https://a.org/2.jpg", [SESSION, "https://a.org/2.jpg"]),
    ("https://a.org/x.jpg?crop=0,0,10,10", ["https://a.org/x.jpg?crop=0,0,10,10"]),
    (" | https://a.org/1.jpg | ", ["https://a.org/1.jpg"]),
    ("", []),
])
def test_associated_media_split_only_between_urls(value, urls):
    from idigdask.catalog.dwca import split_associated_media

    assert split_associated_media(value) == urls


def test_iiif_urls_in_associated_media_stay_whole(tmp_path):
    rows = tsv(["id", "associatedMedia", "catalogNumber"], ["o1", f"{IIIF} | https://a.org/2.jpg", "C1"],
               ["o2", "https://iiif.example.org/iiif/x/0,0,512,512/256,/0/default.jpg", "C2"])
    path = write_zip(tmp_path / "iiif.zip", {"meta.xml": AM_META, "occurrence.txt": rows})
    out = read_catalog(str(path)).compute()
    assert out["access_uri"].tolist() == [IIIF, "https://a.org/2.jpg",
                                          "https://iiif.example.org/iiif/x/0,0,512,512/256,/0/default.jpg"]
    assert out["excluded"].isna().all()


def test_a_field_default_fills_the_rows_without_a_value(tmp_path):
    """The text guide: ``default`` is the value of a row that supplies none (also when indexed)."""
    fields = ('<field index="1" term="http://rs.tdwg.org/dwc/terms/associatedMedia"/>'
              '<field index="2" term="http://rs.tdwg.org/dwc/terms/country" default="Belgium"/>')
    core = (f'<core encoding="UTF-8" {TAB} rowType="{OCCURRENCE}"><files><location>occ.txt'
            f'</location></files><id index="0"/>{fields}</core>')
    files = {"meta.xml": meta(core),
             "occ.txt": tsv(["id", "am", "country"], ["o1", "https://a.org/1.jpg", "France"],
                            ["o2", "https://a.org/2.jpg", ""])}
    out = read_catalog(str(write_zip(tmp_path / "default.zip", files)), raw=True).compute()
    assert out["raw.country"].tolist() == ["France", "Belgium"]


def test_a_tab_separated_file_without_a_separator_attribute(tmp_path):
    """No ``fieldsTerminatedBy``: the guide's comma, unless the data file is plainly tabbed."""
    attrs = 'encoding="UTF-8" ignoreHeaderLines="1"'
    files = {"meta.xml": meta(section("core", "occ.txt", [DWC + "associatedMedia", DWC + "locality"],
                                      attrs=attrs)),
             "occ.txt": tsv(["id", "am", "locality"], ["o1", "https://a.org/1.jpg", "Pine Hill, north"])}
    out = read_catalog(str(write_zip(tmp_path / "tabs.zip", files)), raw=True).compute()
    assert out["access_uri"].tolist() == ["https://a.org/1.jpg"]
    assert out["raw.locality"].tolist() == ["Pine Hill, north"]
