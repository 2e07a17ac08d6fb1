"""Plain URL tables: CSV, TSV, JSON lines, parquet; column choice and table errors."""

from __future__ import annotations

import gzip
import uuid

import pandas as pd
import pytest
from catalog_builders import write_table

from idigdask.catalog import read_catalog, summarize
from idigdask.catalog import schema as S
from idigdask.errors import UserError

ROWS = [
    {"url": "https://img.example.org/a.jpg", "catalogNumber": "US 1", "stained": 1, "family": "Lycopodiaceae"},
    {"url": "https://img.example.org/b.png", "catalogNumber": "US 2", "stained": 0, "family": "Selaginellaceae"},
]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_each_table_kind_reads_alike(tmp_path, suffix):
    path = str(write_table(tmp_path / f"urls{suffix}", ROWS))
    df = read_catalog(path, label_column="stained")
    assert list(df.columns) == [*S.BASE_COLUMNS, "label", "catalogNumber", "family", "excluded"]
    out = df.compute()
    assert out.dtypes.to_dict() == df.dtypes.to_dict()
    assert out["access_uri"].tolist() == [r["url"] for r in ROWS]
    assert out["label"].tolist() == ["1", "0"]
    assert out["format"].tolist() == ["image/jpeg", "image/png"]  # guessed from the extension
    assert out["media_uuid"].tolist() == [str(uuid.uuid5(uuid.NAMESPACE_URL, r["url"])) for r in ROWS]
    assert out["record_uuids"].tolist() == [[], []]
    assert out["excluded"].isna().all()


def test_url_column_defaults_and_options(tmp_path):
    path = str(write_table(tmp_path / "t.csv", [{"ac:accessURI": "http://a.org/1.jpg", "id": "m-1",
                                                 "link": "http://b.org/2.jpg", "records": "r1|r2"}]))
    out = read_catalog(path).compute()
    assert out["access_uri"].tolist() == ["http://a.org/1.jpg"]
    assert out["record_uuids"].tolist() == [["r1", "r2"]]
    out = read_catalog(path, url_column="link", id_column="id").compute()
    assert out[["access_uri", "media_uuid"]].values.tolist() == [["http://b.org/2.jpg", "m-1"]]


def test_missing_url_column_lists_the_columns_found(tmp_path):
    path = str(write_table(tmp_path / "t.csv", [{"link": "http://a.org/x.jpg", "name": "x"}]))
    with pytest.raises(UserError, match=r"t.csv: no URL column.*columns found: link, name"):
        read_catalog(path)
    with pytest.raises(UserError, match=r"no column 'href'.*link, name"):
        read_catalog(path, url_column="href")
    with pytest.raises(UserError, match=r"no column 'stain'"):
        read_catalog(path, url_column="link", label_column="stain")


def test_malformed_json_lines_are_a_user_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"url": "http://a.org/1.jpg"}\n{"url": broken\n')
    with pytest.raises(UserError, match=r"t.jsonl: line 2 is not valid JSON"):
        read_catalog(str(path))
    # a bad line beyond the first block is reported when that block is read
    good = "".join(f'{{"url": "http://a.org/{i}.jpg"}}\n' for i in range(5000))
    path.write_text(good + "not json\n")
    df = read_catalog(str(path), blocksize=20_000)
    with pytest.raises(UserError, match=r"t.jsonl: line \d+ of the block at byte \d+ is not valid JSON"):
        df.compute()


def test_empty_missing_and_unknown_tables(tmp_path):
    (tmp_path / "empty.csv").write_text("url\n")
    with pytest.raises(UserError, match="no rows"):
        read_catalog(str(tmp_path / "empty.csv"))
    with pytest.raises(UserError, match="no such file"):
        read_catalog(str(tmp_path / "absent.csv"))
    (tmp_path / "x.xlsx").write_text("?")
    with pytest.raises(UserError, match="cannot tell the format"):
        read_catalog(str(tmp_path / "x.xlsx"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="junk.parquet: not a readable parquet file"):
        read_catalog(str(tmp_path / "junk.parquet"))
    with pytest.raises(UserError, match="unknown catalog format"):
        read_catalog(str(tmp_path / "empty.csv"), format="excel")


def test_compressed_csv_and_format_table_for_odd_names(tmp_path):
    data = "url,label\nhttp://a.org/1.jpg,x\nhttp://a.org/2.jpg,y\n"
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        f.write(data)
    assert summarize(read_catalog(str(tmp_path / "t.csv.gz")))["usable"] == 2
    (tmp_path / "urls.txt").write_text(data)
    assert read_catalog(str(tmp_path / "urls.txt"), format="table").compute()["access_uri"].tolist() == [
        "http://a.org/1.jpg", "http://a.org/2.jpg"]


def test_a_large_csv_streams_in_blocks_with_the_header_each_time(tmp_path):
    rows = [{"url": f"http://a.org/{i}.jpg", "catalogNumber": f"C{i}"} for i in range(3000)]
    path = str(write_table(tmp_path / "big.csv", rows))
    df = read_catalog(path, blocksize=10_000)
    assert df.npartitions > 5
    out = df.compute()
    assert out["catalogNumber"].tolist() == [r["catalogNumber"] for r in rows]
    assert out["excluded"].isna().all()


def test_written_parquet_of_urls_with_lists(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"access_uri": ["http://a.org/1.jpg"], "records": [["r1", "r2"]],
                  "width": [10], "height": [2_000_000]}).to_parquet(path)
    out = read_catalog(str(path)).compute()
    assert out["record_uuids"].tolist() == [["r1", "r2"]]
    assert out["excluded"].tolist() == ["absurd_size"]


@pytest.fixture
def http_folder(tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("name", ["urls.csv", "urls.parquet"])
def test_tables_over_http(http_folder, name):
    folder, base = http_folder
    write_table(folder / name, ROWS)
    assert summarize(read_catalog(f"{base}/{name}")) == {"rows": 2, "usable": 2, "excluded": {}}


def test_written_catalog_keeps_list_types_when_a_partition_has_only_empty_lists(tmp_path):
    from idigdask.catalog import write_catalog

    rows = [{"url": f"http://a.org/{i}.jpg", "records": "r1|r2" if i >= 50 else ""} for i in range(100)]
    df = read_catalog(str(write_table(tmp_path / "t.csv", rows)), blocksize=800)
    assert df.npartitions > 2
    write_catalog(df, str(tmp_path / "cat.parquet"))
    back = read_catalog(str(tmp_path / "cat.parquet")).compute()
    assert back["record_uuids"].tolist() == [[]] * 50 + [["r1", "r2"]] * 50
    assert back.dtypes.to_dict() == df.dtypes.to_dict()


def test_partitions_read_one_by_one_check_the_whole_catalog_once(tmp_path):
    """The duplicate uuid check over every partition runs once, not once a partition."""
    from distributed import Client, get_task_stream

    from idigdask.catalog.read import iter_partitions

    n = 4000
    ids = [f"u{i % 3500}" for i in range(n)]       # the last 500 rows repeat earlier uuids
    pd.DataFrame({"id": ids, "url": [f"https://example.org/{i}.jpg" for i in range(n)]}
                 ).to_csv(tmp_path / "t.csv", index=False)
    ddf = read_catalog(str(tmp_path / "t.csv"), id_column="id", blocksize=20_000)
    assert ddf.npartitions >= 4
    with Client(processes=False, n_workers=1, threads_per_worker=2,
                dashboard_address=None) as client, get_task_stream(client) as stream:
        parts = list(iter_partitions(client, ddf))
    frame = pd.concat(parts)
    assert (frame["excluded"] == S.DUPLICATE_MEDIA_UUID).sum() == 500
    assert frame["excluded"].iloc[:3500].isna().all()
    names = [t["key"][0] if isinstance(t["key"], tuple) else t["key"] for t in stream.data]
    hashed = [name for name in names if name.startswith("partition_hashes")]
    assert len(hashed) == ddf.npartitions
