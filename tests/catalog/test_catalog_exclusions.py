"""Every exclusion reason, and duplicate detection across partitions."""

from __future__ import annotations

import dask
import pandas as pd
import pytest
from catalog_builders import guoda_row, write_guoda, write_guoda_parts

from idigdask.catalog import read_catalog, summarize
from idigdask.catalog.dedupe import first_partitions, partition_hashes


def test_each_row_level_reason(tmp_path):
    path = tmp_path / "t.csv"
    lines = [
        b"url,id,width,height",
        b",no-uri,,",
        b"example.org/a.jpg,no-scheme,,",
        b"http://a.org/with space.jpg,space,,",
        b"http://a.org/tab\x01.jpg,control,,",
        b"http:///nohost.jpg,no-host,,",
        b"http://a.org/b.jpg,latin1-caf\xe9,,",
        b"http://a.org/c.jpg,negative,-5,10",
        b"http://a.org/d.jpg,huge,10,1000001",
        b"  http://a.org/e.jpg ,trimmed,1000000,0",
        b"s3://bucket/key.jpg,s3,,",
        b"file:///data/f.jpg,file,,",
        b"/data/sheets/g.jpg,local,,",
        b"data/sheets/g.jpg,relative,,",
        b"http://a.org/song.mp3,sound,,",
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = read_catalog(str(path), id_column="id").compute()
    reasons = dict(zip(out["media_uuid"].str.replace("\ufffd", "?"), out["excluded"]))
    assert reasons["no-uri"] == "no_uri"
    assert reasons["no-scheme"] == "malformed_uri"
    assert reasons["space"] == "malformed_uri"
    assert reasons["control"] == "malformed_uri"
    assert reasons["no-host"] == "malformed_uri"
    assert reasons["latin1-caf?"] == "bad_text"
    assert reasons["negative"] == "absurd_size"
    assert reasons["huge"] == "absurd_size"
    assert reasons["sound"] == "unsupported_media_type:sounds"
    assert reasons["relative"] == "malformed_uri"
    for ok in ("trimmed", "s3", "file", "local"):
        assert pd.isna(reasons[ok]), ok
    assert out.set_index("media_uuid").loc["trimmed", "access_uri"] == "http://a.org/e.jpg"
    counts = summarize(read_catalog(str(path), id_column="id"))
    assert counts["rows"] == 14 and counts["usable"] == 4
    assert counts["excluded"]["malformed_uri"] == 5


def test_undecodable_text_in_json_lines_is_bad_text(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"url": "http://a.org/1.jpg", "family": "Lyco\xff"}\n{"url": "http://a.org/2.jpg"}\n')
    assert read_catalog(str(path)).compute()["excluded"].tolist()[0] == "bad_text"


def test_duplicates_across_partitions_keep_the_first_in_catalog_order(tmp_path):
    rows = [guoda_row(f"m{i:03d}", f"http://a.org/{i}.jpg") for i in range(300)]
    rows[250] = guoda_row("m010", "http://a.org/dup-late.jpg")  # later partition, same uuid
    rows[120] = guoda_row("m010", "http://a.org/dup-mid.jpg")
    rows[11] = guoda_row("m010", "http://a.org/dup-same-part.jpg")  # same partition as m010
    rows[280] = guoda_row("m200", "http://a.org/dup-200.jpg")
    df = read_catalog(str(write_guoda_parts(tmp_path / "dump", rows, 30)), format="guoda")
    assert df.npartitions == 10
    out = df.compute().reset_index(drop=True)
    dup = out[out["excluded"] == "duplicate_media_uuid"]
    assert dup["access_uri"].tolist() == ["http://a.org/dup-same-part.jpg", "http://a.org/dup-mid.jpg",
                                         "http://a.org/dup-late.jpg", "http://a.org/dup-200.jpg"]
    kept = out[out["excluded"].isna()].set_index("media_uuid")
    assert kept.loc["m010", "access_uri"] == "http://a.org/10.jpg"
    assert kept.loc["m200", "access_uri"] == "http://a.org/200.jpg"
    assert summarize(df) == {"rows": 300, "usable": 296, "excluded": {"duplicate_media_uuid": 4}}


def test_duplicate_detection_stays_lazy_and_is_independent_of_the_scheduler(tmp_path):
    rows = [guoda_row(f"u{i % 40}", f"http://a.org/{i}.jpg") for i in range(120)]
    df = read_catalog(str(write_guoda_parts(tmp_path / "dump", rows, 20)))
    assert df.npartitions == 6
    with dask.config.set(scheduler="sync"):
        sync = df.compute()
    threaded = df.compute(scheduler="threads")
    pd.testing.assert_frame_equal(sync, threaded)
    assert (sync["excluded"] == "duplicate_media_uuid").sum() == 80
    assert sync[sync["excluded"].isna()]["access_uri"].tolist() == [f"http://a.org/{i}.jpg" for i in range(40)]


def test_an_earlier_exclusion_wins_over_duplicate(tmp_path):
    rows = [guoda_row("x", None), guoda_row("x", "http://a.org/x.jpg")]
    out = read_catalog(str(write_guoda(tmp_path / "m.parquet", rows))).compute()
    assert out["excluded"].tolist() == ["no_uri", "duplicate_media_uuid"]


def test_reduction_finds_first_partition_of_each_repeated_hash():
    parts = [partition_hashes(pd.Series(ids, dtype="string[pyarrow]"))
             for ids in (["a", "b", None], ["c", "b"], ["a", "d"], ["d"])]
    hashes, first = first_partitions(parts)
    by_hash = dict(zip(hashes.tolist(), first.tolist()))
    h = {k: partition_hashes(pd.Series([k], dtype="string[pyarrow]"))[0] for k in "abcd"}
    assert by_hash == {int(h["a"]): 0, int(h["b"]): 0, int(h["d"]): 2}


def test_a_catalog_without_any_id_or_uri(tmp_path):
    path = tmp_path / "noid.csv"
    path.write_text("url,x\n,1\n,2\n")
    frame = read_catalog(str(path), url_column="url").compute()
    assert frame["excluded"].tolist() == ["no_uri", "no_uri"]
    empty = [partition_hashes(pd.Series([None], dtype="string[pyarrow]"))] * 2
    assert [len(a) for a in first_partitions(empty)] == [0, 0]


@pytest.mark.parametrize("media_type", ["sounds", None])
def test_media_type_choice(tmp_path, media_type):
    rows = [guoda_row("s", "http://a.org/s.mp3", mediatype="sounds"), guoda_row("i", "http://a.org/i.jpg")]
    out = read_catalog(str(write_guoda(tmp_path / "m.parquet", rows)), media_type=media_type).compute()
    expected = {"sounds": [None, "unsupported_media_type:images"], None: [None, None]}[media_type]
    assert [None if pd.isna(v) else v for v in out["excluded"]] == expected
