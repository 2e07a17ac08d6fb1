"""``idigdask catalog``: in-process and as a real command, good and bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from catalog_builders import guoda_row, write_guoda, write_table

from idigdask.catalog import read_catalog, summarize
from idigdask.cli import main
from idigdask.testing.search_api import SearchAPIServer, make_media_item

IDIGDASK = Path(sys.executable).parent / "idigdask"


@pytest.fixture
def dump(tmp_path):
    rows = [guoda_row(f"m{i}", f"http://a.org/{i}.jpg", records=[f"s{i}"], data={"dwc:catalogNumber": f"C{i}"})
            for i in range(40)]
    rows.append(guoda_row("m0", "http://a.org/dup.jpg"))
    rows.append(guoda_row("x", None))
    return write_guoda(tmp_path / "media.parquet", rows)


def _run(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 and "--json" in argv else None, captured.err


def test_writes_a_catalog_that_reads_back(tmp_path, dump, capsys):
    out = tmp_path / "out.parquet"
    code, summary, _ = _run(["catalog", str(dump), "-o", str(out), "--json"], capsys)
    assert code == 0
    assert summary == {"source": str(dump), "output": str(out), "rows": 42, "usable": 40,
                       "excluded": {"duplicate_media_uuid": 1, "no_uri": 1}}
    back = read_catalog(str(out))
    assert list(back.columns) == list(read_catalog(str(dump)).columns)
    again = back.compute()
    assert again["record_uuids"].tolist()[:2] == [["s0"], ["s1"]]
    assert summarize(back) == {k: summary[k] for k in ("rows", "usable", "excluded")}
    # a written catalog is a source like any other
    code, summary2, _ = _run(["catalog", str(out), "-o", str(tmp_path / "again.parquet"), "--json"], capsys)
    assert code == 0 and summary2["rows"] == 42


def test_labels_sample_cap_and_derivative(tmp_path, dump, capsys):
    labels = write_table(tmp_path / "labels.csv",
                         [{"catalogNumber": f"C{i}", "stained": i % 2} for i in range(40)])
    out = tmp_path / "out.parquet"
    code, summary, _ = _run(["catalog", str(dump), "-o", str(out), "--labels", str(labels),
                             "--label-column", "stained", "--join-on", "catalogNumber",
                             "--per-label-cap", "5", "--seed", "3", "--derivative", "thumbnail",
                             "--media-api", "http://api.test/v2", "--json"], capsys)
    assert code == 0
    back = read_catalog(str(out)).compute()
    usable = back[back["excluded"].isna()]
    assert usable["label"].value_counts().to_dict() == {"0": 5, "1": 5}
    assert usable["access_uri"].str.startswith("http://api.test/v2/media/").all()
    assert summary["rows"] == 12
    code, summary, _ = _run(["catalog", str(dump), "-o", str(out), "--sample", "0.5", "--seed", "45",
                             "--json"], capsys)
    assert code == 0 and 8 < summary["rows"] < 34


def test_search_source_on_the_command_line(tmp_path, capsys):
    items = [make_media_item(f"u{i}", f"https://img.example.org/{i}.jpg") for i in range(7)]
    with SearchAPIServer(items, failures=[500]) as api:
        source = "search:" + json.dumps({"base_url": api.base_url, "page_size": 3, "backoff": 0.01})
        code, summary, _ = _run(["catalog", source, "-o", str(tmp_path / "s.parquet"), "--json"], capsys)
    assert code == 0 and summary["usable"] == 7


def test_the_installed_command_prints_json(tmp_path, dump):
    table = write_table(tmp_path / "urls.tsv", [{"link": "http://a.org/1.jpg"}, {"link": "nope"}])
    result = subprocess.run([str(IDIGDASK), "catalog", str(table), "-o", str(tmp_path / "o.parquet"),
                             "--url-column", "link", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["excluded"] == {"malformed_uri": 1}


@pytest.mark.parametrize("make_args, message", [
    (lambda p: [str(p / "absent.parquet")], "no such file"),
    (lambda p: [str(p / "urls.csv"), "--url-column", "href"], "no column 'href'"),
    (lambda p: [str(p / "bad.jsonl")], "not valid JSON"),
    (lambda p: [str(p / "empty.csv")], "no rows"),
    (lambda p: [str(p / "urls.csv"), "--storage-options", "{oops"], "--storage-options"),
    (lambda p: [str(p / "urls.csv"), "--format", "excel"], "unknown catalog format"),
    (lambda p: [str(p / "urls.csv"), "--labels", str(p / "urls.csv"), "--label-column", "stained"],
     "no key column 'record_uuid'"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, make_args, message):
    write_table(tmp_path / "urls.csv", [{"url": "http://a.org/1.jpg"}])
    (tmp_path / "bad.jsonl").write_text("{not json}\n")
    (tmp_path / "empty.csv").write_text("url\n")
    code = main(["catalog", *make_args(tmp_path), "-o", str(tmp_path / "o.parquet")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_bad_input_as_a_real_command(tmp_path):
    result = subprocess.run([str(IDIGDASK), "catalog", str(tmp_path / "nope.csv"), "-o",
                             str(tmp_path / "o.parquet"), "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no such file" in result.stderr
    assert result.stdout == ""
