"""Label joins, reproducible samples and per-label caps."""

from __future__ import annotations

import pandas as pd
import pytest
from catalog_builders import DWC, guoda_row, write_dwca, write_guoda, write_guoda_parts, write_table

from idigdask.catalog import attach_labels, cap_per_label, read_catalog, sample, summarize
from idigdask.errors import UserError


@pytest.fixture
def catalog(tmp_path):
    rows = [
        guoda_row("m1", "http://a.org/1.jpg", records=["s1"], data={"dwc:catalogNumber": "C1"}),
        guoda_row("m2", "http://a.org/2.jpg", records=["s2", "s3"], data={"dwc:catalogNumber": "C2"}),
        guoda_row("m3", "http://a.org/3.jpg", records=["s4", "s5"], data={"dwc:catalogNumber": "C3"}),
        guoda_row("m4", "http://a.org/4.jpg", records=["s6", "s9"], data={"dwc:catalogNumber": "C4"}),
        guoda_row("m5", "http://a.org/5.jpg", records=[], data={"dwc:catalogNumber": "C5"}),
        guoda_row("m6", None, records=["s1"]),
    ]
    return read_catalog(str(write_guoda(tmp_path / "m.parquet", rows)))


def _labels(out: pd.DataFrame) -> dict:
    return {m: (None if pd.isna(lab) else lab, None if pd.isna(ex) else ex)
            for m, lab, ex in zip(out["media_uuid"], out["label"], out["excluded"])}


def test_join_through_record_uuids_with_several_specimens(tmp_path, catalog):
    table = write_table(tmp_path / "labels.csv", [
        {"uuid": "s1", "stained": 1}, {"uuid": "s2", "stained": 0}, {"uuid": "s3", "stained": 0},
        {"uuid": "s4", "stained": 1}, {"uuid": "s5", "stained": 0}, {"uuid": "s6", "stained": 1},
    ])
    out = attach_labels(catalog, str(table), on="record_uuid", label="stained").compute()
    assert list(out.columns).index("label") == 10
    assert _labels(out) == {
        "m1": ("1", None),                     # one specimen
        "m2": ("0", None),                     # two specimens that agree
        "m3": (None, "conflicting_labels"),    # two that disagree
        "m4": ("1", None),                     # s9 has no label: the labelled one decides
        "m5": (None, None),                    # no specimen: kept, unlabelled
        "m6": ("1", "no_uri"),                 # an earlier reason stays
    }


def test_join_on_a_catalog_column_and_how(tmp_path, catalog):
    frame = pd.DataFrame({"catalogNumber": ["C1", "C2", "C2", "C3", "C3"],
                          "stained": ["yes", "no", "no", "yes", "no"]})
    out = attach_labels(catalog, frame, on="catalogNumber", label="stained").compute()
    assert _labels(out)["m1"] == ("yes", None) and _labels(out)["m2"] == ("no", None)
    assert _labels(out)["m3"] == (None, "conflicting_labels")  # the table disagrees with itself
    excl = attach_labels(catalog, frame, on="catalogNumber", label="stained", how="exclude")
    assert summarize(excl)["excluded"] == {"conflicting_labels": 1, "no_label": 2, "no_uri": 1}
    inner = attach_labels(catalog, frame, on="catalogNumber", label="stained", how="inner").compute()
    assert inner["media_uuid"].tolist() == ["m1", "m2", "m3"]


def test_specimen_records_table_from_a_dwca_core(tmp_path, catalog):
    core = write_dwca(tmp_path / "records.zip", [DWC + "catalogNumber", DWC + "family"],
                      [["s1", "C1", "Lycopodiaceae"], ["s2", "C2", "Selaginellaceae"]],
                      ("http://rs.gbif.org/terms/1.0/Multimedia", "m.txt", [], []))
    out = attach_labels(catalog, str(core), on="record_uuid", label="family").compute()
    assert _labels(out)["m1"] == ("Lycopodiaceae", None)
    assert _labels(out)["m2"] == ("Selaginellaceae", None)  # s3 unlabelled
    records = tmp_path / "records.parquet"
    pd.DataFrame({"uuid": ["s4", "s5"], "family": ["A", "A"]}).to_parquet(records)
    assert _labels(attach_labels(catalog, str(records), on="record_uuid", label="family").compute())["m3"] == ("A", None)


def test_missing_columns_name_the_column_and_file(tmp_path, catalog):
    table = write_table(tmp_path / "labels.csv", [{"uuid": "s1", "stained": 1}])
    with pytest.raises(UserError, match=r"labels.csv: no label column 'contaminated'; columns found: uuid, stained"):
        attach_labels(catalog, str(table), on="record_uuid", label="contaminated")
    with pytest.raises(UserError, match=r"labels.csv: no key column 'catalogNumber'"):
        attach_labels(catalog, str(table), on="catalogNumber", label="stained")
    with pytest.raises(UserError, match=r"catalog has no column 'barcode'"):
        attach_labels(catalog, str(table), on="barcode", label="stained")
    with pytest.raises(UserError, match="no such label table"):
        attach_labels(catalog, str(tmp_path / "absent.csv"), on="record_uuid", label="stained")


def test_sample_is_reproducible_and_nested(tmp_path):
    rows = [guoda_row(f"m{i:04d}", f"http://a.org/{i}.jpg") for i in range(2000)]
    parts = read_catalog(str(write_guoda_parts(tmp_path / "parts", rows, 250)))
    whole = read_catalog(str(write_guoda(tmp_path / "one.parquet", rows)))
    a = sample(parts, 0.1, seed=45).compute()["media_uuid"].tolist()
    assert a == sample(parts, 0.1, seed=45).compute()["media_uuid"].tolist()
    assert a == sample(whole, 0.1, seed=45).compute()["media_uuid"].tolist()  # partitioning-free
    assert 140 < len(a) < 260
    assert a != sample(parts, 0.1, seed=46).compute()["media_uuid"].tolist()
    assert set(sample(parts, 0.02, seed=45).compute()["media_uuid"]) <= set(a)
    assert len(sample(parts, 0.0, 1).compute()) == 0 and len(sample(parts, 1.0, 1).compute()) == 2000
    with pytest.raises(UserError, match="between 0 and 1"):
        sample(parts, 1.5, 0)


def test_cap_per_label_balances_usable_rows(tmp_path):
    rows = [{"url": f"http://a.org/{i}.jpg", "stained": "1" if i % 4 == 0 else "0"} for i in range(400)]
    rows += [{"url": "bad uri", "stained": "1"}, {"url": "http://a.org/nolabel.jpg"}]
    path = str(write_table(tmp_path / "t.csv", rows))
    df = read_catalog(path, label_column="stained", blocksize=2000)
    assert df.npartitions > 3
    capped = cap_per_label(df, 30, seed=1).compute()
    usable = capped[capped["excluded"].isna() & capped["label"].notna()]
    assert usable["label"].value_counts().to_dict() == {"0": 30, "1": 30}
    assert (capped["excluded"] == "malformed_uri").sum() == 1  # excluded rows pass through
    assert capped["label"].isna().sum() == 1  # so do unlabelled ones
    again = cap_per_label(df, 30, seed=1).compute()
    assert again["media_uuid"].tolist() == capped["media_uuid"].tolist()
    few = cap_per_label(df, 1000, seed=1).compute()
    assert len(few) == len(rows)
    with pytest.raises(UserError, match="labelled catalog"):
        cap_per_label(read_catalog(path), 3)
