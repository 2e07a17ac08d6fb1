"""The data-quality report: a real build with faults and duplicates, and a generated
ledger of 200,000 rows in 100 parts, reduced on a real Dask cluster."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import idigdask
from idigdask.cli import main
from idigdask.errors import UserError
from idigdask.quality import ledger_dataframe, quality_report, quality_summary
from idigdask.testing.media_server import MediaServer

from frames import catalog_frame

ROOT = Path(__file__).resolve().parents[2]


def _bench_quality():
    """benchmarks/benchmarks/bench_quality.py, whose generator writes the large ledger."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from benchmarks import bench_quality
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_quality


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_sheets, dask_client):
    """A store built from 12 good sheets, faults of two hosts and duplicates."""
    tmp = tmp_path_factory.mktemp("quality")
    root = Path(small_sheets.folder)
    files = sorted((root / "images").glob("*.jpg"))
    www = tmp / "www"
    www.mkdir()
    Image.open(files[0]).save(www / "copy.jpg", quality=70)   # a near duplicate
    with MediaServer(root) as server, MediaServer(www) as other:
        rel = [p.relative_to(root).as_posix() for p in files]
        uris = [server.url_for(r) for r in rel[:12]]
        uris += [server.url_for(rel[0]),                      # an exact duplicate
                 other.url_for("copy.jpg"),
                 server.url_for("fault/status/404/a.jpg"), server.url_for("fault/status/404/b.jpg"),
                 other.url_for("missing.jpg"), server.url_for("fault/html/page.jpg")]
        frame = catalog_frame(uris, labels=[i % 2 for i in range(len(uris))])
        frame["recordset"] = ["rs-a"] * 8 + ["rs-b"] * (len(uris) - 8)
        store = tmp / "s.zarr"
        idigdask.build_dataset(frame, str(store), size=48, chunk_size=4, batch_size=3,
                               timeout=5, retries=0, client=dask_client)
    return str(store), frame


def test_report_of_a_real_build(built, tmp_path, dask_client):
    store, frame = built
    report = quality_report(store, tmp_path / "q", client=dask_client)
    ledger = idigdask.read_ledger(store)
    # the Dask reductions agree with the ledger read whole by pandas
    assert report["rows"] == len(ledger) == len(frame)
    assert report["status"] == ledger["status"].value_counts().reindex(
        ["ok", "failed", "duplicate", "excluded"], fill_value=0).to_dict()
    assert report["reasons"]["duplicate: exact"] == 1 and report["reasons"]["duplicate: near"] == 1
    assert report["reasons"]["failed: http_404"] == 3
    by_host = {h["host"]: h for h in report["hosts"]}
    assert set(by_host) == {"127.0.0.1"} and by_host["127.0.0.1"]["failed"] == 4
    by_rs = {r["recordset"]: r for r in report["recordsets"]}
    assert by_rs["rs-a"]["failed"] == 0 and by_rs["rs-b"]["failed"] == 4
    assert by_rs["rs-b"]["failures"] == {"http_404": 3, "not_an_image": 1}
    assert sum(report["histograms"]["long_side"]["counts"]) == 14      # ok and duplicate rows
    assert report["cost"]["fetched_images"] >= 14 and report["cost"]["mean_bytes"] > 1000
    # one cluster: the first sheet, its exact and its near duplicate
    assert report["duplicates"]["clusters"] == 1 and report["duplicates"]["rows"] == 2
    assert report["duplicates"]["largest"] == [
        {"original": ledger["media_uuid"][0], "kind": "exact+near", "members": 2}]
    ds = idigdask.open_dataset(store)
    assert report["channels"]["mean"] == pytest.approx(ds.attrs["channel_mean"], abs=1e-3)
    folder = tmp_path / "q"
    page = (folder / "index.html").read_text()
    for name in ("status", "hosts", "recordsets", "source", "cost", "duplicates", "samples",
                 "channels"):
        data = (folder / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, name
        assert f'src="{name}.png"' in page
    assert json.loads((folder / "quality.json").read_text())["rows"] == len(frame)


def test_a_large_ledger_on_dask(tmp_path, dask_client):
    bench = _bench_quality()
    t0 = time.perf_counter()
    store = bench.write_ledger_store(tmp_path / "big.zarr", 200_000, rows_per_part=2000)
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = quality_summary(store, client=dask_client)
    seconds = time.perf_counter() - t0
    print(f"200,000 rows in 101 parts: written in {written:.1f} s, reduced in {seconds:.1f} s")
    ledger = idigdask.read_ledger(store)  # the pandas reference, on the driver
    assert summary["rows"] == len(ledger) == 200_000
    assert summary["ledger_parts"] == 101
    assert summary["status"] == ledger["status"].value_counts().to_dict()
    # the rows retried in a later run supersede their first, failed, rows
    assert summary["status"]["failed"] == int((ledger["status"] == "failed").sum())
    hosts = ledger.assign(host=ledger["access_uri"].str.split("/").str[2])
    failed = hosts[hosts["status"] == "failed"].groupby("host").size()
    assert summary["n_hosts"] == 60
    for row in summary["hosts"][:5]:
        assert row["failed"] == failed[row["host"]]
    assert summary["hosts"][0]["failure_rate"] > 0.25        # the failing hosts come first
    assert summary["n_recordsets"] == 40
    per_rs = ledger.groupby("recordset").size()
    assert all(r["rows"] == per_rs[r["recordset"]] for r in summary["recordsets"])
    dup = ledger[ledger["status"] == "duplicate"]
    assert summary["duplicates"]["rows"] == len(dup)
    assert summary["duplicates"]["clusters"] == dup["duplicate_of"].nunique()
    ok = ledger[ledger["nbytes"] > 0]
    assert summary["cost"]["bytes"] == int(ok["nbytes"].sum())
    # the Dask DataFrame of the ledger holds the same rows
    frame = ledger_dataframe(store, columns=("status",))
    assert frame.npartitions == 4
    assert set(frame["row_key"].compute()) == set(ledger["row_key"])


def test_cli_report(built, tmp_path, capsys):
    store, _ = built
    code = main(["report", store, "-o", str(tmp_path / "r"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert Path(summary["report"]).is_file() and summary["rows"] == 18
    code = main(["report", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not an idigdask store" in err
    with pytest.raises(UserError, match="no ledger column"):
        ledger_dataframe(store, columns=("nope",))
