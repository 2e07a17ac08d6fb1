"""GUODA media parquet: schema detection, fallbacks, records present or absent, streaming."""

from __future__ import annotations

import dask
import fsspec
import pandas as pd
import pytest
from catalog_builders import guoda_row, write_guoda

from idigdask.catalog import read_catalog, summarize
from idigdask.catalog import parquet as pq_parts
from idigdask.catalog import schema as S
from idigdask.errors import UserError

BASE = list(S.BASE_COLUMNS)


def test_reads_guoda_into_the_normalized_schema(tmp_path):
    rows = [guoda_row("m1", "https://img.example.org/1.jpg", records=["r1", "r2"],
                      data={"ac:hashFunction": "MD5", "ac:hashValue": "abc",
                            "dwc:catalogNumber": "US 1", "dwc:scientificName": "Lycopodium sp."}),
            guoda_row("m2", "https://img.example.org/2.jpg", records=[])]
    df = read_catalog(str(write_guoda(tmp_path / "media.parquet", rows)))
    assert list(df.columns) == BASE + ["catalogNumber", "scientificName", "excluded"]
    assert df.dtypes["media_uuid"] == S.STRING and df.dtypes["width"] == "Int64"
    out = df.compute()
    assert out.dtypes.to_dict() == df.dtypes.to_dict()
    assert out["record_uuids"].tolist() == [["r1", "r2"], []]
    assert isinstance(out["record_uuids"].iloc[0], list)
    first = out.iloc[0]
    assert (first.media_uuid, first.format, first.width, first.height) == ("m1", "image/jpeg", 100, 200)
    assert (first.hash_function, first.hash_value, first.recordset) == ("MD5", "abc", "rs-1")
    assert first.license == "https://creativecommons.org/publicdomain/zero/1.0/"
    assert first.catalogNumber == "US 1"
    assert out["excluded"].isna().all()


def test_records_column_may_be_absent(tmp_path):
    path = write_guoda(tmp_path / "m.parquet", [guoda_row("m1", "http://a.org/x.jpg")], with_records=False)
    out = read_catalog(str(path)).compute()
    assert out["record_uuids"].tolist() == [[]]


def test_uri_format_and_size_fall_back_to_the_provider_record(tmp_path):
    rows = [
        guoda_row("a", None, data={"ac:accessURI": "http://p.org/a.jpg"}),
        guoda_row("b", "", data={"ac:bestQualityAccessURI": "http://p.org/b.jpg"}),
        guoda_row("c", None, data={"ac:goodQualityAccessURI": "http://p.org/c.jpg"}),
        guoda_row("d", "http://idigbio.org/d.jpg", data={"ac:accessURI": "http://p.org/other.jpg"}),
        guoda_row("e", "http://p.org/e", fmt=None, x=None, y=None,
                  data={"dcterms:format": "IMAGE/PNG", "exif:PixelXDimension": "3900",
                        "exif:PixelYDimension": "not a number"}),
        guoda_row("f", None, data={}),
    ]
    out = read_catalog(str(write_guoda(tmp_path / "m.parquet", rows))).compute().set_index("media_uuid")
    assert out.loc["a", "access_uri"] == "http://p.org/a.jpg"
    assert out.loc["b", "access_uri"] == "http://p.org/b.jpg"
    assert out.loc["c", "access_uri"] == "http://p.org/c.jpg"
    assert out.loc["d", "access_uri"] == "http://idigbio.org/d.jpg"  # iDigBio's value first
    assert out.loc["e", "format"] == "image/png"
    assert out.loc["e", "width"] == 3900 and pd.isna(out.loc["e", "height"])
    assert out.loc["f", "excluded"] == "no_uri"


def test_other_media_types_are_excluded(tmp_path):
    rows = [guoda_row("s", "http://a.org/s.mp3", mediatype="sounds", fmt="audio/mpeg"),
            guoda_row("i", "http://a.org/i.jpg")]
    path = str(write_guoda(tmp_path / "m.parquet", rows))
    out = read_catalog(path).compute()
    assert out["excluded"].tolist()[0] == "unsupported_media_type:sounds"
    assert pd.isna(out["excluded"].iloc[1])
    assert read_catalog(path, media_type=None).compute()["excluded"].isna().all()


def test_raw_fields_and_label_from_a_data_term(tmp_path):
    rows = [guoda_row("m1", "http://a.org/1.jpg", data={"coreid": "stained", "ac:hashValue": "h"})]
    path = str(write_guoda(tmp_path / "m.parquet", rows))
    df = read_catalog(path, raw=True, label_column="coreid")
    out = df.compute()
    assert out["label"].tolist() == ["stained"]
    assert "raw.ac:hashValue" in df.columns and out["raw.ac:hashValue"].tolist() == ["h"]
    assert list(df.columns).index("label") == len(BASE)
    assert list(df.columns)[-len([c for c in df.columns if c.startswith("raw.")]) - 1] == "excluded"
    with pytest.raises(UserError, match="nope"):
        read_catalog(path, label_column="nope")


def test_many_row_groups_stream_as_partitions_and_a_big_group_is_sliced(tmp_path):
    rows = [guoda_row(f"m{i:04d}", f"http://a.org/{i}.jpg", records=[f"r{i}"]) for i in range(500)]
    grouped = str(write_guoda(tmp_path / "groups.parquet", rows, row_group_size=50))
    single = str(write_guoda(tmp_path / "single.parquet", rows))
    whole = read_catalog(grouped).compute()
    for path in (grouped, single):
        df = read_catalog(path, blocksize=4000)
        assert df.npartitions > 5
        out = df.compute().reset_index(drop=True)
        pd.testing.assert_frame_equal(out, whole.reset_index(drop=True))
    assert whole["media_uuid"].tolist() == [f"m{i:04d}" for i in range(500)]


def test_slices_of_a_row_group_cover_it_exactly(tmp_path):
    rows = [guoda_row(f"m{i}", f"http://a.org/{i}.jpg") for i in range(97)]
    path = str(write_guoda(tmp_path / "m.parquet", rows))
    fs = fsspec.filesystem("file")
    parts, total = pq_parts.plan(fs, [path], ["uuid"], blocksize=100)
    assert total == 97 and len(parts) > 3 and all(p.rows for p in parts)
    got = [u for p in parts for u in pq_parts.read_table(fs, p, ["uuid"]).column("uuid").to_pylist()]
    assert got == [f"m{i}" for i in range(97)]


def test_folder_of_part_files_and_memory_urls(tmp_path):
    folder = tmp_path / "dump.parquet"
    folder.mkdir()
    write_guoda(folder / "part-00000.parquet", [guoda_row("a", "http://a.org/a.jpg")])
    write_guoda(folder / "part-00001.parquet", [guoda_row("b", "http://a.org/b.jpg")])
    (folder / "_SUCCESS").write_text("")
    assert read_catalog(str(folder)).compute()["media_uuid"].tolist() == ["a", "b"]
    mem = fsspec.filesystem("memory")
    mem.pipe("/guoda/m.parquet", (folder / "part-00001.parquet").read_bytes())
    # memory:// lives in this process: not on the worker processes of a session client
    with dask.config.set({"scheduler": "threads", "dataframe.shuffle.method": "tasks"}):
        summary = summarize(read_catalog("memory://guoda/m.parquet"))
    assert summary == {"rows": 1, "usable": 1, "excluded": {}}


def test_guoda_format_on_a_plain_parquet_is_a_user_error(tmp_path):
    path = tmp_path / "plain.parquet"
    pd.DataFrame({"url": ["http://a.org/x.jpg"]}).to_parquet(path)
    with pytest.raises(UserError, match="not a GUODA media parquet.*url"):
        read_catalog(str(path), format="guoda")


def test_empty_dump_is_a_user_error(tmp_path):
    path = write_guoda(tmp_path / "empty.parquet", [])
    with pytest.raises(UserError, match="empty"):
        read_catalog(str(path))


def test_damaged_pages_are_one_user_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq


    path = tmp_path / "damaged.parquet"
    pq.write_table(pa.table({"accessuri": [f"http://h/{i}.jpg" for i in range(2000)],
                             "uuid": [f"u{i}" for i in range(2000)]}), path, row_group_size=200)
    data = bytearray(path.read_bytes())
    data[300:4000] = bytes(3700)                     # the footer reads, the pages do not
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="cannot be read"):
        read_catalog(str(path)).compute()
