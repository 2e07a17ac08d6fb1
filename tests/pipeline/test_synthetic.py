"""Synthetic herbarium sheets: determinism, stains, the GUODA-schema catalog, the CLI."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

import idigdask.synthetic as synthetic
from idigdask.cli import main
from idigdask.errors import UserError
from idigdask.synthetic import make_sheets, render_sheet

SMALL = (240, 360)


def test_render_is_deterministic_and_sized():
    a = render_sheet(5, seed=3, size=SMALL, stained=True)
    assert a.shape == (360, 240, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_sheet(5, seed=3, size=SMALL, stained=True))
    assert not np.array_equal(a, render_sheet(6, seed=3, size=SMALL, stained=True))
    assert not np.array_equal(a, render_sheet(5, seed=4, size=SMALL, stained=True))


def test_sheet_looks_like_paper():
    a = render_sheet(0, size=SMALL, stained=False).astype(int)
    median = np.median(a.reshape(-1, 3), axis=0)
    assert 200 < median[0] < 255 and median[2] < median[0]  # cream: warm and light
    assert a.std() > 5


def _plant_box(clean: np.ndarray) -> tuple[int, int, int, int]:
    r, g, b = (clean[..., i].astype(int) for i in range(3))
    ys, xs = np.nonzero((g > r + 8) & (g > b + 25))
    return xs.min(), xs.max(), ys.min(), ys.max()


@pytest.mark.parametrize("index", range(6))
def test_stains_darken_the_sheet_near_the_plant_only(index):
    size = (400, 600)
    clean = render_sheet(index, size=size, stained=False)
    stained = render_sheet(index, size=size, stained=True)
    delta = stained.astype(int).sum(-1) - clean.astype(int).sum(-1)
    changed = delta != 0
    assert 0.002 < changed.mean() < 0.6  # faint halo edges included
    assert 0.01 < (delta < -60).mean() < 0.2  # clearly darker: the stain cores
    assert (delta[changed] < 0).mean() > 0.8  # stains are dark
    x0, x1, y0, y1 = _plant_box(clean)
    pad = 0.2 * size[0]
    ys, xs = np.nonzero(changed)
    near = (xs >= x0 - pad) & (xs <= x1 + pad) & (ys >= y0 - pad) & (ys <= y1 + pad)
    assert near.mean() > 0.9


def test_stains_survive_a_downscale_to_256():
    """Mean darkening of the stained twin stays visible at the training resolution."""
    from idigdask.decode import resize

    visible = 0
    for index in range(8):
        clean = resize(render_sheet(index, size=(800, 1200), stained=False), 256).astype(int)
        stained = resize(render_sheet(index, size=(800, 1200), stained=True), 256).astype(int)
        darker = (clean.sum(-1) - stained.sum(-1)) > 60  # a clearly darker pixel at 256 px
        visible += darker.sum() >= 12
    assert visible >= 7


def test_render_rejects_bad_sizes():
    for size in [(0, 10), (10, 30000), ("a", 3), (5,)]:
        with pytest.raises(UserError):
            render_sheet(0, size=size, stained=False)


@pytest.fixture(scope="module")
def sheet_set(tmp_path_factory):
    return make_sheets(tmp_path_factory.mktemp("synth"), n=6, size=SMALL, stained_fraction=0.5, seed=11)


def test_make_sheets_writes_images_catalog_labels(sheet_set):
    assert sheet_set.n == 6 and len(sheet_set.paths) == 6
    assert sum(sheet_set.stained) == 3
    folder = Path(sheet_set.folder)
    assert sheet_set.catalog == str(folder / "media.parquet")
    assert sheet_set.labels == str(folder / "labels.csv")
    for path in sheet_set.paths:
        p = Path(path)
        assert p.parent == folder / "images" and p.suffix == ".jpg"
        img = Image.open(p)
        assert img.format == "JPEG" and img.mode == "RGB"
        assert SMALL[0] * 0.9 - 1 <= img.width <= SMALL[0] and SMALL[1] * 0.9 - 1 <= img.height <= SMALL[1]


def test_catalog_has_the_guoda_schema(sheet_set):
    schema = pq.read_schema(sheet_set.catalog)
    for column in ("accessuri", "uuid", "format", "mediatype", "type", "recordset", "xpixels",
                   "ypixels", "etag", "rights", "webstatement", "records", "datemodified",
                   "hasSpecimen", "data"):
        assert column in schema.names, column
    data_type = schema.field("data").type
    keys = {data_type.field(i).name for i in range(data_type.num_fields)}
    assert {"ac:accessURI", "dcterms:format", "ac:hashFunction", "ac:hashValue",
            "dwc:catalogNumber", "dwc:scientificName", "coreid"} <= keys
    assert str(schema.field("records").type) == "list<element: string>"
    assert str(schema.field("datemodified").type).startswith("timestamp")


def test_write_guoda_fills_what_rows_lack_and_reads_back_as_a_catalog(tmp_path):
    """The one GUODA writer: missing columns and ``data`` keys are null, others dropped."""
    from idigdask.catalog import read_catalog

    rows = [{"uuid": "m1", "accessuri": "https://a.org/1.jpg", "records": ["r1"],
             "data": {"dwc:catalogNumber": "C1", "not:written": "x"}},
            {"uuid": "m2", "accessuri": None, "data": None}]
    path = synthetic.write_guoda(tmp_path / "m.parquet", rows, row_group_size=1)
    table = pq.read_table(path)
    assert table.schema.names == list(synthetic.GUODA_COLUMNS)
    assert pq.ParquetFile(path).metadata.num_row_groups == 2
    got = table.to_pylist()
    assert got[0]["data"] == {**dict.fromkeys(synthetic.DATA_KEYS), "dwc:catalogNumber": "C1"}
    assert got[1]["data"] == dict.fromkeys(synthetic.DATA_KEYS) and got[1]["xpixels"] is None
    catalog = read_catalog(str(path)).compute()
    assert catalog["media_uuid"].tolist() == ["m1", "m2"]
    assert catalog["excluded"].isna().tolist() == [True, False]

    some = synthetic.write_guoda(tmp_path / "s.parquet", rows, data_keys=["coreid"],
                                 columns=["uuid", "data"])
    schema = pq.read_schema(some)
    assert schema.names == ["uuid", "data"] and schema.field("data").type.num_fields == 1
    with pytest.raises(ValueError, match="not a GUODA media column"):
        synthetic.write_guoda(tmp_path / "x.parquet", rows, columns=["uuid", "colour"])


def test_catalog_rows_describe_the_files(sheet_set):
    rows = pq.read_table(sheet_set.catalog).to_pylist()
    labels = pd.read_csv(sheet_set.labels)
    assert list(labels.columns) == ["record_uuid", "catalogNumber", "stained"]
    assert len(rows) == len(labels) == 6
    assert labels["stained"].tolist() == list(sheet_set.stained)
    for row, path, (_, label) in zip(rows, sheet_set.paths, labels.iterrows()):
        data = Path(path).read_bytes()
        assert row["accessuri"] == path and Path(path).is_absolute()
        assert Path(path).stem == row["uuid"]
        assert (row["format"], row["mediatype"], row["type"]) == ("image/jpeg", "images", "stillimage")
        assert row["data"]["ac:hashFunction"] == "SHA-256"
        assert row["data"]["ac:hashValue"] == hashlib.sha256(data).hexdigest()
        assert row["data"]["ac:accessURI"] == path
        assert row["data"]["dcterms:format"] == "image/jpeg"
        assert row["etag"] == hashlib.sha1(data).hexdigest()
        assert (row["xpixels"], row["ypixels"]) == Image.open(io.BytesIO(data)).size
        assert row["records"] == [label["record_uuid"]]
        assert row["data"]["dwc:catalogNumber"] == label["catalogNumber"]
        assert row["hasSpecimen"] is True


def test_same_seed_writes_identical_bytes(sheet_set, tmp_path):
    again = make_sheets(tmp_path, n=6, size=SMALL, stained_fraction=0.5, seed=11)
    assert [Path(p).name for p in again.paths] == [Path(p).name for p in sheet_set.paths]
    for a, b in zip(again.paths, sheet_set.paths):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert Path(again.labels).read_bytes() == Path(sheet_set.labels).read_bytes()
    other = make_sheets(tmp_path / "other", n=2, size=SMALL, seed=12)
    assert Path(other.paths[0]).name != Path(sheet_set.paths[0]).name


def test_parallel_processes_write_the_same_bytes(sheet_set, tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "_PARALLEL_MIN_SHEETS", 1)
    monkeypatch.setattr(synthetic, "_PARALLEL_MIN_PIXELS", 0)
    parallel = make_sheets(tmp_path, n=6, size=SMALL, stained_fraction=0.5, seed=11, n_jobs=2)
    for a, b in zip(parallel.paths, sheet_set.paths):
        assert Path(a).read_bytes() == Path(b).read_bytes()


def test_base_url_gives_http_access_uris(tmp_path):
    result = make_sheets(tmp_path, n=2, size=SMALL, seed=1, base_url="http://127.0.0.1:8000/sheets/")
    table = pq.read_table(result.catalog).to_pylist()
    for row in table:
        expected = f"http://127.0.0.1:8000/sheets/images/{row['uuid']}.jpg"
        assert row["accessuri"] == expected and row["data"]["ac:accessURI"] == expected


def test_stained_fraction_extremes(tmp_path):
    assert sum(make_sheets(tmp_path / "a", n=3, size=SMALL, stained_fraction=0.0).stained) == 0
    assert sum(make_sheets(tmp_path / "b", n=3, size=SMALL, stained_fraction=1.0).stained) == 3


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"stained_fraction": 1.5}, {"quality": 0},
                                    {"size": (10, 10)}, {"seed": -1}])
def test_make_sheets_rejects_bad_arguments(tmp_path, kwargs):
    args = {"n": 2, "size": SMALL} | kwargs
    with pytest.raises(UserError):
        make_sheets(tmp_path, **args)


def test_cli_synth_writes_a_set(tmp_path, capsys):
    code = main(["synth", str(tmp_path / "out"), "-n", "4", "--size", "120x180", "--seed", "2",
                 "--stained-fraction", "0.25", "--base-url", "http://127.0.0.1:9/x", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 4 and summary["stained"] == 1 and summary["clean"] == 3
    assert Path(summary["catalog"]).exists() and Path(summary["labels"]).exists()
    assert len(list((tmp_path / "out" / "images").glob("*.jpg"))) == 4


@pytest.mark.parametrize("size", ["abc", "0x10", "30000x100", "100x", "12x12"])
def test_cli_synth_bad_size_is_one_line_exit_2(tmp_path, capsys, size):
    code = main(["synth", str(tmp_path), "-n", "1", "--size", size])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--size" in err
