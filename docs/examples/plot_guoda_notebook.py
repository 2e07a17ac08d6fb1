"""
The GUODA notebook's job, done right
====================================

The GUODA project's notebook for the Smithsonian mercury study read iDigBio's media
dump (a parquet file of some 27 million media records) in Spark, took a 0.5 % sample
of it with ``df.sample(False, 0.005, seed=45)``, joined labels to it and downloaded
the images one by one. This example does the same job with idigdask, on a small
GUODA-schema dump of synthetic herbarium sheets served over HTTP, and shows what the
notebook could not: a store whose every image is traceable to its record, and a
ledger that says what became of every catalog row, including the ones that did not
give an image.
"""

# %%
# A GUODA-schema media dump, served over HTTP
# -------------------------------------------
# :func:`idigdask.make_sheets` draws synthetic herbarium sheets (half of them carry
# mercury-like stains) and writes, next to them, ``media.parquet`` in the layout of
# iDigBio's GUODA dump (top-level columns such as ``accessuri``, ``mediatype`` and
# ``records``, with the provider's record in a nested ``data`` struct) and
# ``labels.csv``, one row per *specimen* record. The sheets are served by a local
# web server on 127.0.0.1, so the catalog's ``accessuri`` values are real HTTP URLs.
import shutil
import tempfile
import uuid
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

import idigdask
from idigdask.synthetic import write_guoda
from idigdask.testing.media_server import MediaServer

tmp = Path(tempfile.mkdtemp(prefix="idigdask-guoda-"))
folder = tmp / "sheets"
folder.mkdir()
server = MediaServer(folder)  # serves the folder at http://127.0.0.1:<port>/
sheets = idigdask.make_sheets(folder, n=240, size=(300, 450), seed=45,
                              base_url=server.url)
print(f"{sheets.n} sheets, {sum(sheets.stained)} of them stained")
print(pd.read_csv(sheets.labels).head(3).to_string(index=False))

# %%
# A real dump is never clean. We add the kinds of rows a 27-million-row dump holds
# by the thousand: an image whose file has gone from the server, a file cut short in
# transfer, the same picture uploaded twice under two media records, a sound
# recording, a record without any URL and one whose URL uses a scheme no fetcher
# speaks. They are written with the same GUODA writer
# (:func:`idigdask.synthetic.write_guoda`), a few of each so that some survive the
# sample below.
rows = pq.read_table(sheets.catalog).to_pylist()
template = rows[0]
problems = {}
for i in range(8):  # the same picture uploaded again, under another media record
    shutil.copy(sheets.paths[i], folder / "images" / f"copy-{i}.jpg")
    problems[f"copy-{i}"] = dict(accessuri=server.url_for(f"images/copy-{i}.jpg"))
for i in range(4):
    data = Path(sheets.paths[10 + i]).read_bytes()
    (folder / "images" / f"cut-{i}.jpg").write_bytes(data[: len(data) // 2])  # half a JPEG
    problems[f"cut-{i}"] = dict(accessuri=server.url_for(f"images/cut-{i}.jpg"))
    problems[f"gone-{i}"] = dict(accessuri=server.url_for(f"images/gone-{i}.jpg"))
    problems[f"sound-{i}"] = dict(accessuri=server.url_for(f"sounds/call-{i}.mp3"),
                                  mediatype="sounds", format="audio/mpeg")
    problems[f"nourl-{i}"] = dict(accessuri=None)
    problems[f"ftp-{i}"] = dict(accessuri=f"ftp://ftp.example.org/sheet-{i}.jpg")
extra = [{**template, "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
          "records": [f"record-{name}"], "etag": None,
          "data": {"dcterms:format": change.get("format", "image/jpeg")}, **change}
         for name, change in problems.items()]
dump = tmp / "media-dump.parquet"
write_guoda(dump, rows + extra)
print(f"{len(rows) + len(extra)} media records in {dump.name}")

# %%
# Read, sample, label
# -------------------
# :func:`idigdask.read_catalog` recognizes the GUODA schema, maps it to idigdask's
# one catalog schema and marks the rows that can never give an image as excluded,
# with a reason, before anything is fetched. The frame is a lazy Dask DataFrame: a
# real dump is read partition by partition, never whole.
catalog = idigdask.read_catalog(str(dump))
frame = catalog.compute()
print(frame[["media_uuid", "access_uri", "family", "excluded"]].tail(8).to_string(index=False))

# %%
# :func:`idigdask.sample` keeps each row with the given probability, reproducibly:
# rows are chosen by a seeded hash of their media uuid, so the same seed keeps the
# same rows whatever the partitioning or the number of workers, and a smaller
# fraction keeps a subset of a larger one. The notebook's 0.005 of 27 million rows
# is some 135,000 images; of our 268 rows it would keep one or none, so we take 0.5.
for fraction in (0.005, 0.1, 0.5):
    print(f"fraction {fraction:<5}: {len(idigdask.sample(catalog, fraction, seed=45))} rows")
sampled = idigdask.sample(catalog, 0.5, seed=45)

# %%
# Labels belong to specimens, not to images: the label table is keyed by the
# specimen record's uuid, which each media record lists in ``records``.
# :func:`idigdask.attach_labels` joins through those uuids (``on="record_uuid"``);
# media whose specimen has no label keep a missing label.
labelled = idigdask.attach_labels(sampled, sheets.labels, on="record_uuid",
                                  label="stained")
table = labelled.compute()
print(table["label"].value_counts(dropna=False).rename("rows").to_string())

# %%
# Build the store
# ---------------
# :func:`idigdask.build_dataset` fetches the images (many requests in flight, with
# retries), decodes them at reduced scale, resizes them to 96 x 96 pixels, hashes
# them to find duplicates, and writes them to a chunked Zarr store. The media server
# is on 127.0.0.1, an address that a catalog from a stranger must not make the
# workers read, so this build opts in with ``allow_private=True``.
store = str(tmp / "sheets.zarr")
result = idigdask.build_dataset(labelled, store, size=96, allow_private=True,
                                progress=False)
print(f"{result.images} images stored in {result.seconds:.1f} s")
print(result.counts["status"])

# %%
# A look at the images
# --------------------
# :func:`idigdask.open_dataset` opens the store as a lazy :class:`xarray.Dataset`:
# the ``images`` array and, per image, its media uuid, specimen uuid, URL, label,
# hashes and the size of the original.
ds = idigdask.open_dataset(store)
print(ds)

# %%
# The first sixteen sheets, titled with their label. Stained sheets show the dark
# halos near the plant that the CNN of the later example learns to find.
fig, axes = plt.subplots(2, 8, figsize=(12, 3.8))
for ax, i in zip(axes.flat, range(16)):
    ax.imshow(ds["images"][i].values)
    label = ds["label"].values[i]
    ax.set_title("stained" if label == "1" else "clean" if label == "0" else "no label",
                 fontsize=9)
    ax.axis("off")
fig.suptitle("The store's first 16 images (96 x 96 px)")
fig.tight_layout()

# %%
# The ledger
# ----------
# :func:`idigdask.read_ledger` gives one row per catalog row: ``ok`` with the
# position of its image, or ``failed``, ``duplicate`` or ``excluded`` with a reason.
# Its counts add up to the sampled catalog's rows: nothing goes missing silently.
ledger = idigdask.read_ledger(store)
assert len(ledger) == len(table)
by_reason = (ledger.assign(reason=ledger["reason"].fillna("-"))
             .groupby(["status", "reason"]).size().rename("rows"))
print(by_reason.to_string())

# %%
# The duplicates name the image they repeat, and the failures say what went wrong.
show = ledger[ledger["status"] != "ok"]
print(show[["media_uuid", "status", "reason", "duplicate_of"]]
      .assign(duplicate_of=show["duplicate_of"].str[:8])
      .to_string(index=False))

# %%
colours = {"ok": "tab:green", "duplicate": "tab:blue", "failed": "tab:red",
           "excluded": "tab:grey"}
fig, ax = plt.subplots(figsize=(7, 3.2))
labels = [f"{s}: {r}" for s, r in by_reason.index]
ax.barh(labels, by_reason.to_numpy(),
        color=[colours[s] for s, _ in by_reason.index])
ax.set_xscale("log")
ax.set_xlabel("catalog rows (log scale)")
ax.invert_yaxis()
for y, n in enumerate(by_reason.to_numpy()):
    ax.text(n, y, f" {n}", va="center", fontsize=9)
ax.set_title("What became of every sampled catalog row")
fig.tight_layout()

# %%
# Tidy up: stop the server and delete the temporary folder.
server.close()
ds.close()
shutil.rmtree(tmp)
