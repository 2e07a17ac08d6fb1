"""Multi-class labels from specimen metadata: records tables, DwC-A cores, the search API."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from catalog_builders import DWC, guoda_row, write_dwca, write_guoda, write_table

from idigdask.catalog import attach_labels, read_catalog
from idigdask.catalog.labels import label_column
from idigdask.catalog.records import search_records
from idigdask.errors import UserError
from idigdask.testing.records_api import RecordsAPIServer, make_record_item

RECORDS = [("s1", "Lycopodiaceae", "Lycopodium", "Lycopodium clavatum L."),
           ("s2", "Selaginellaceae", "Selaginella", "Selaginella apoda (L.) Spring"),
           ("s3", "Selaginellaceae", "Selaginella", "Selaginella rupestris (L.) Spring"),
           ("s4", "Lycopodiaceae", "Huperzia", "Huperzia lucidula (Michx.) Trevis."),
           ("s5", "Selaginellaceae", "Selaginella", "Selaginella apoda (L.) Spring")]


@pytest.fixture
def catalog(tmp_path):
    rows = [guoda_row("m1", "http://a.org/1.jpg", records=["s1"]),
            guoda_row("m2", "http://a.org/2.jpg", records=["s2", "s3"]),  # two, one family
            guoda_row("m3", "http://a.org/3.jpg", records=["s4", "s5"]),  # two families
            guoda_row("m4", "http://a.org/4.jpg", records=["s9"]),        # unknown record
            guoda_row("m5", "http://a.org/5.jpg", records=["s3"])]
    return read_catalog(str(write_guoda(tmp_path / "m.parquet", rows)))


def _labels(frame) -> dict:
    out = frame.compute() if hasattr(frame, "compute") else frame
    return {m: (None if pd.isna(lab) else lab, None if pd.isna(ex) else ex)
            for m, lab, ex in zip(out["media_uuid"], out["label"], out["excluded"])}


def test_family_genus_and_species_from_a_records_table(tmp_path, catalog):
    table = write_table(tmp_path / "records.csv", [
        {"record_uuid": u, "family": f, "genus": g, "scientificName": s} for u, f, g, s in RECORDS])
    family = _labels(attach_labels(catalog, str(table), label="family"))  # on: record_uuid
    assert family == {"m1": ("Lycopodiaceae", None), "m2": ("Selaginellaceae", None),
                      "m3": (None, "conflicting_labels"), "m4": (None, None),
                      "m5": ("Selaginellaceae", None)}
    genus = _labels(attach_labels(catalog, str(table), label="genus"))
    assert genus["m3"] == (None, "conflicting_labels") and genus["m1"] == ("Lycopodium", None)
    # the term in iDigBio's lower case finds the table's scientificName
    species = _labels(attach_labels(catalog, str(table), label="scientificname", how="exclude"))
    assert species["m2"] == (None, "conflicting_labels")
    assert species["m4"] == (None, "no_label")
    assert species["m5"] == ("Selaginella rupestris (L.) Spring", None)


def test_family_from_a_dwca_core_named_as_a_darwin_core_term(tmp_path, catalog):
    core = write_dwca(tmp_path / "records.zip", [DWC + "family", DWC + "scientificName"],
                      [[u, f, s] for u, f, _, s in RECORDS],
                      ("http://rs.gbif.org/terms/1.0/Multimedia", "m.txt", [], []))
    for name in ("family", "dwc:family", DWC + "family", "Family"):
        out = _labels(attach_labels(catalog, str(core), label=name))
        assert out["m1"] == ("Lycopodiaceae", None) and out["m5"] == ("Selaginellaceae", None)


def test_label_column_spellings():
    columns = ["uuid", "family", "data.dwc:family", "scientificname"]
    assert label_column(columns, "family") == "family"
    assert label_column(columns, "dwc:family") == "data.dwc:family"  # the raw term
    assert label_column(["id", "family"], "dwc:family") == "family"  # a DwC-A core
    assert label_column(columns, "scientificName") == "scientificname"
    assert label_column(["data.dwc:genus"], "genus") == "data.dwc:genus"
    assert label_column(columns, "genus") is None


def _record_items():
    return [make_record_item(u, family=f, genus=g, scientific_name=s) for u, f, g, s in RECORDS]


def test_records_from_the_search_api_through_record_uuids(catalog):
    with RecordsAPIServer(records=_record_items(), failures=[503]) as api:
        url = f"{api.base_url}/search/records"
        out = _labels(attach_labels(catalog, url, label="family"))
        # the catalog's distinct record uuids in one request, tried again after the 503
        asked = [json.loads(r["rq"])["uuid"] for r in api.record_requests]
        provider = _labels(attach_labels(catalog, url, label="dwc:family"))
    assert asked == [["s1", "s2", "s3", "s4", "s5", "s9"]] * 2
    # iDigBio's index terms are lowercased; the provider's record keeps its spelling
    assert out == {"m1": ("lycopodiaceae", None), "m2": ("selaginellaceae", None),
                   "m3": (None, "conflicting_labels"), "m4": (None, None),
                   "m5": ("selaginellaceae", None)}
    assert provider["m1"] == ("Lycopodiaceae", None)


def test_search_records_in_batches_and_its_mistakes(catalog):
    with RecordsAPIServer(records=_record_items()) as api:
        frame = search_records(["s5", "s1", "s1", "", "s3", "nope"], base_url=api.base_url,
                               batch_size=2)
        assert len(api.record_requests) == 2  # s1 s3 | s5 nope
        assert sorted(frame["uuid"]) == ["s1", "s3", "s5"]
        assert set(frame.loc[frame["uuid"] == "s1", "genus"]) == {"lycopodium"}
        assert search_records([], base_url=api.base_url)["uuid"].tolist() == []
        with pytest.raises(UserError, match="joined on record_uuid"):
            attach_labels(catalog, f"{api.base_url}/search/records", on="catalogNumber",
                          label="family")
        with pytest.raises(UserError, match="no label column 'habitat'.*family"):
            attach_labels(catalog, f"{api.base_url}/search/records", label="habitat")
    with pytest.raises(UserError, match="batch_size"):
        search_records(["s1"], batch_size=0)
    with pytest.raises(UserError, match="not an http"):
        attach_labels(catalog, "ftp://x/v2/search/records", label="family")


def test_cli_catalog_with_family_labels_from_the_search_api(tmp_path, catalog, capsys):
    from idigdask.cli import main

    source = tmp_path / "m.parquet"  # the fixture's GUODA file
    with RecordsAPIServer(records=_record_items()) as api:
        code = main(["catalog", str(source), "-o", str(tmp_path / "labelled.parquet"),
                     "--labels", f"{api.base_url}/search/records", "--label-column", "family",
                     "--label-how", "exclude", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["excluded"] == {"conflicting_labels": 1, "no_label": 1}
    written = read_catalog(str(tmp_path / "labelled.parquet"), format="catalog").compute()
    assert sorted(written["label"].dropna()) == ["lycopodiaceae", "selaginellaceae",
                                                  "selaginellaceae"]
