"""
Catalog sources side by side
============================

Media records reach a researcher in several shapes: answers of iDigBio's search API,
a Darwin Core Archive downloaded from a collection's IPT or from GBIF, or a plain
table of URLs a colleague made in a spreadsheet. :func:`idigdask.read_catalog` turns
each of them into the same catalog: one row per media record, with the same columns
(``media_uuid``, ``access_uri``, ``record_uuids``, the specimen's Darwin Core fields,
an optional ``label``) and an ``excluded`` reason on every row that can never give an
image. This example describes one set of synthetic sheets in the three shapes, reads
them, and builds a store from each: the same images come out whatever the source.
"""

# %%
# One set of sheets, three descriptions
# -------------------------------------
# Twenty-four synthetic sheets served over HTTP on 127.0.0.1. Their GUODA parquet
# (written by :func:`idigdask.make_sheets`) is where the three descriptions below
# take their URLs, uuids and specimen fields from.
import csv
import io
import shutil
import tempfile
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

import idigdask
from idigdask.catalog import summarize
from idigdask.testing.media_server import MediaServer
from idigdask.testing.search_api import SearchAPIServer, make_media_item

tmp = Path(tempfile.mkdtemp(prefix="idigdask-sources-"))
(tmp / "sheets").mkdir()
server = MediaServer(tmp / "sheets")
sheets = idigdask.make_sheets(tmp / "sheets", n=24, size=(300, 450), seed=7,
                              base_url=server.url)
records = pq.read_table(sheets.catalog).to_pylist()
labels = pd.read_csv(sheets.labels)
stained = dict(zip(labels["record_uuid"], labels["stained"]))
print(pd.DataFrame([{"uuid": r["uuid"][:8], "family": r["data"]["dwc:family"],
                     "scientificName": r["data"]["dwc:scientificName"]}
                    for r in records]).head(6).to_string(index=False))

# %%
# 1. iDigBio's search API
# -----------------------
# The search API answers ``/v2/search/media`` with pages of media items: the media
# record's ``indexTerms`` (uuid, ``accessuri``, the specimen ``records`` it shows)
# and the provider's ``data``; ``rq`` filters on the specimen records' fields. Here
# the project's local stand-in of the API (:mod:`idigdask.testing.search_api`)
# serves the sheets' media records, plus one whose URL the provider never filled in,
# as iDigBio holds many. We ask for the club mosses, ``rq={"family":
# "lycopodiaceae"}``, exactly as one would ask ``search.idigbio.org``; only the
# ``base_url`` differs.
items = [make_media_item(r["uuid"], r["accessuri"], records=r["records"], data=r["data"],
                         xpixels=r["xpixels"], ypixels=r["ypixels"],
                         record_terms={"family": r["data"]["dwc:family"].lower(),
                                       "catalognumber": r["data"]["dwc:catalogNumber"]})
         for r in records]
items.append(make_media_item("5bd3c1a7-0000-4000-8000-000000000001", None,
                             records=["no-such-record"],
                             record_terms={"family": "lycopodiaceae"}))
api = SearchAPIServer(items).start()
query = {"rq": {"family": "lycopodiaceae"}, "base_url": api.base_url}
from_search = idigdask.read_catalog(query, format="search")
print(f"the API at {api.base_url} answered {len(api.requests)} request(s)")
print(from_search.compute()[["media_uuid", "access_uri", "record_uuids", "family",
                             "excluded"]].head().to_string(index=False))

# %%
# The same search can be written as text, which is what the command line takes
# (``idigdask catalog 'search:{"rq": ...}'``), or as a search URL copied from a
# browser. :func:`idigdask.search_media` returns the same rows as a pandas frame.
import json

as_text = "search:" + json.dumps(query)
print(as_text.replace(api.base_url, "<api>"))
print(len(idigdask.read_catalog(as_text)), "rows from the text form,",
      len(idigdask.search_media(query["rq"], base_url=api.base_url)), "from search_media")

# %%
# 2. A Darwin Core Archive
# ------------------------
# An archive is a zip of tab-separated files and a ``meta.xml`` that says which file
# is the core (here one row per specimen occurrence) and which are extensions (here
# GBIF's Simple Multimedia extension, one row per image, linked to its specimen by
# ``coreid``; its ``type`` says what kind of media each row is). One specimen has a
# scanned field-book page as well, a PDF of type ``Text``, which the catalog excludes
# as not an image; another lists a second image.
DWC, DC = "http://rs.tdwg.org/dwc/terms/", "http://purl.org/dc/terms/"
core_terms = ["occurrenceID", "catalogNumber", "scientificName", "family"]
media_terms = ["type", "identifier", "format", "license"]


def meta_xml() -> str:
    def fields(terms, ns):
        return "".join(f'<field index="{i + 1}" term="{ns}{t}"/>' for i, t in enumerate(terms))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<archive xmlns="http://rs.tdwg.org/dwc/text/">\n'
        ' <core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n"'
        ' fieldsEnclosedBy="" ignoreHeaderLines="1" rowType="http://rs.tdwg.org/dwc/terms/Occurrence">\n'
        f'  <files><location>occurrence.txt</location></files><id index="0"/>{fields(core_terms, DWC)}\n'
        ' </core>\n'
        ' <extension encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n"'
        ' fieldsEnclosedBy="" ignoreHeaderLines="1" rowType="http://rs.gbif.org/terms/1.0/Multimedia">\n'
        f'  <files><location>multimedia.txt</location></files><coreid index="0"/>{fields(media_terms, DC)}\n'
        ' </extension>\n'
        '</archive>\n')


def tsv(header, rows) -> str:
    return "".join("\t".join(map(str, row)) + "\n" for row in [header, *rows])


occurrences, media = [], []
for r in records:
    d, record = r["data"], r["records"][0]
    occurrences.append([record, record, d["dwc:catalogNumber"], d["dwc:scientificName"],
                        d["dwc:family"]])
    media.append([record, "StillImage", r["accessuri"], "image/jpeg", d["dcterms:rights"]])
media.append([records[0]["records"][0], "Text", server.url_for("fieldbooks/p17.pdf"),
              "application/pdf", "CC0"])
media.append([records[1]["records"][0], "StillImage", records[2]["accessuri"], "image/jpeg",
              "CC0"])
archive = tmp / "dwca.zip"
with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("meta.xml", meta_xml())
    z.writestr("occurrence.txt", tsv(["id", *core_terms], occurrences))
    z.writestr("multimedia.txt", tsv(["coreid", *media_terms], media))
print(meta_xml())
from_dwca = idigdask.read_catalog(str(archive))
print(from_dwca.compute()[["media_uuid", "access_uri", "catalogNumber", "format",
                           "excluded"]].tail(4).to_string(index=False))

# %%
# Media records found in an archive have no iDigBio uuid, so ``media_uuid`` is a
# uuid5 of the URL: the same URL gets the same uuid in every run and every archive.
# The second image listed for specimen SYN007-0000001 is the URL of another
# specimen's image, so it has that image's uuid too, and the catalog excludes it as
# ``duplicate_media_uuid``: one media record, one row of the store.
#
# 3. A table of URLs
# ------------------
# The plainest source: a CSV with a column of URLs and, here, a column of labels.
# ``url_column`` and ``label_column`` name them (the usual names, such as ``url``
# or ``accessURI``, are found without being named). One link was typed by hand and
# lost its colon; one cell is empty.
table = tmp / "urls.csv"
with open(table, "w", newline="") as fh:
    writer = csv.writer(fh)
    writer.writerow(["link", "stained", "note"])
    for r in records[:12]:
        writer.writerow([r["accessuri"], stained[r["records"][0]], "from the loan list"])
    writer.writerow(["http//127.0.0.1/typed-by-hand.jpg", 0, "typo"])
    writer.writerow(["", 1, "link missing"])
from_table = idigdask.read_catalog(str(table), url_column="link", label_column="stained")
print(from_table.compute()[["media_uuid", "access_uri", "label", "excluded"]]
      .tail(4).to_string(index=False))

# %%
# The counts
# ----------
# ``idigdask.catalog.summarize`` counts a catalog's rows, its usable rows and its
# exclusions by reason in one pass, before anything is fetched: the true number of
# images a build can give is known up front.
sources = {"search API": from_search, "Darwin Core Archive": from_dwca,
           "URL table": from_table}
summaries = {name: summarize(cat) for name, cat in sources.items()}
for name, s in summaries.items():
    print(f"{name:20} rows {s['rows']:3}  usable {s['usable']:3}  excluded {s['excluded']}")

# %%
# Same images, whatever the source
# --------------------------------
# Each catalog is built into its own store. The media server is on 127.0.0.1, so the
# builds opt in to private addresses with ``allow_private=True``.
results, stores = {}, {}
for name, cat in sources.items():
    stores[name] = str(tmp / (name.replace(" ", "-") + ".zarr"))
    results[name] = idigdask.build_dataset(cat, stores[name], size=64, allow_private=True,
                                           progress=False)
    print(f"{name:20} {results[name].counts['status']}")
hashes = {name: set(idigdask.open_dataset(s)["sha256"].values) for name, s in stores.items()}
print("images of the search that the archive also gave:",
      len(hashes["search API"] & hashes["Darwin Core Archive"]), "of",
      len(hashes["search API"]))
print("the URL table's images all in the archive's store:",
      hashes["URL table"] <= hashes["Darwin Core Archive"])

# %%
# Rows by what became of them, per source: the catalog's exclusions (known before
# any fetch) and the build's ledger (``ok``, ``failed``, ``duplicate``).
statuses = ["ok", "failed", "duplicate", "excluded"]
counts = pd.DataFrame({name: [r.counts["status"][s] for s in statuses]
                       for name, r in results.items()}, index=statuses).T
print(counts)
ax = counts.plot.barh(stacked=True, figsize=(7, 2.8),
                      color=["tab:green", "tab:red", "tab:blue", "tab:grey"])
ax.set_xlabel("catalog rows")
ax.invert_yaxis()
ax.set_title("Three sources, one ledger")
plt.tight_layout()

# %%
# Tidy up.
api.stop()
server.close()
shutil.rmtree(tmp)
