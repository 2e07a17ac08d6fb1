"""
A store on S3 (Ceph), and where storage_options go
==================================================

iDigBio keeps its 120 TB of media in Ceph, whose RADOS Gateway speaks the S3 API;
many institutions keep theirs the same way, and a store of training images may live
in a bucket too, next to the cluster that trains from it. Every idigdask stage reads
and writes through fsspec, so an ``s3://`` URL works wherever a path does. What an
S3 gateway needs (its endpoint and the keys) goes in ``storage_options``, and this
example shows how those options reach the three places a build touches: the
catalog, the media and the store.

.. note::

   This example talks to a real Ceph gateway. It runs for real where one answers
   (the environment variables ``IDIGDASK_S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID`` and
   ``AWS_SECRET_ACCESS_KEY`` set, as ``bash ci/ceph.sh start`` prints them);
   elsewhere it prints the output and shows the figure of a recorded run against the
   project's gateway (``s3_ceph_recording.json`` and ``s3_ceph_recording.png`` next
   to this script). The first line of output below says which one this page shows.
"""

# %%
# Is there a gateway?
# -------------------
# :class:`~idigdask.testing.ceph.CephGateway` reads the endpoint and the keys from
# the environment; we ask the endpoint for an answer (any answer, even an S3 error
# document, means it is up).
import datetime
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import matplotlib.pyplot as plt

import idigdask
from idigdask.testing.ceph import CephGateway

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
RECORDING = HERE / "s3_ceph_recording.json"
FIGURE = HERE / "s3_ceph_recording.png"
RECORD = os.environ.get("IDIGDASK_EXAMPLE_RECORD") == "1"  # rewrite the recording


def answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


gateway = CephGateway.from_env()
LIVE = gateway is not None and answers(gateway.endpoint)

transcript: dict[str, str] = {}
_part = [""]


def part(name: str) -> None:
    """Start a part of the transcript (what one cell prints)."""
    _part[0] = name
    transcript[name] = ""


def say(*values) -> None:
    """print(), also kept in the transcript of a live run."""
    text = " ".join(str(v) for v in values)
    print(text)
    transcript[_part[0]] = transcript.get(_part[0], "") + text + "\n"


if LIVE:
    recorded = None
    part("where")
    say(f"ran against the Ceph gateway at {gateway.endpoint}, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
else:
    recorded = json.loads(RECORDING.read_text())
    print(f"no gateway here: the output below is the recorded run of {recorded['date']} "
          f"against the Ceph gateway at {recorded['endpoint']}")


def replay(name: str) -> None:
    """Print what this cell printed in the recorded run."""
    print(recorded["parts"][name], end="")


# %%
# Buckets, media and a catalog in Ceph
# ------------------------------------
# Two buckets: one for the media and their catalog, as a collection would keep
# them, and one for the store. Thirty-two synthetic sheets are written with
# ``base_url="s3://<media bucket>"``, so their GUODA-schema catalog lists
# ``s3://`` URLs, and everything is uploaded with s3fs. ``storage_options`` is the
# dict fsspec gives s3fs: the keys and ``client_kwargs={"endpoint_url": ...}``.
if LIVE:
    part("upload")
    tmp = Path(tempfile.mkdtemp(prefix="idigdask-s3-"))
    s3 = gateway.filesystem()
    storage_options = gateway.storage_options
    media_bucket = f"idigdask-media-{uuid.uuid4().hex[:8]}"
    store_bucket = f"idigdask-stores-{uuid.uuid4().hex[:8]}"
    for bucket in (media_bucket, store_bucket):
        s3.mkdir(bucket)
    sheets = idigdask.make_sheets(tmp / "sheets", n=32, size=(300, 450), seed=9,
                                  base_url=f"s3://{media_bucket}")
    s3.put(str(tmp / "sheets" / "images"), f"{media_bucket}/images", recursive=True)
    s3.put(sheets.catalog, f"{media_bucket}/catalog/media.parquet")
    s3.put(sheets.labels, f"{media_bucket}/catalog/labels.csv")
    say("storage_options keys:", sorted(storage_options),
        "client_kwargs:", storage_options["client_kwargs"])
    say(f"{len(s3.ls(f'{media_bucket}/images'))} images in s3://{media_bucket}/images/")
    say("catalog:", s3.ls(f"{media_bucket}/catalog"))
else:
    replay("upload")

# %%
# Catalog and labels from the bucket
# ----------------------------------
# :func:`idigdask.read_catalog` and :func:`idigdask.attach_labels` take
# ``storage_options`` for the files they read. (The build below is given the
# catalog's URL and reads it itself.)
if LIVE:
    part("catalog")
    catalog_url = f"s3://{media_bucket}/catalog/media.parquet"
    catalog = idigdask.read_catalog(catalog_url, storage_options=storage_options)
    labelled = idigdask.attach_labels(catalog, f"s3://{media_bucket}/catalog/labels.csv",
                                      on="record_uuid", label="stained",
                                      storage_options=storage_options)
    frame = labelled.compute()
    say(frame[["media_uuid", "access_uri", "label"]].head(4).to_string(index=False))
else:
    replay("catalog")

# %%
# One set of options for everything
# ---------------------------------
# When the catalog, the media and the store all sit behind one gateway,
# :func:`idigdask.build_dataset` needs ``storage_options`` once: it goes to the
# store, to the media (unless ``media_storage_options`` is given) and to a catalog
# on the store's protocol (unless ``catalog_storage_options`` is given). ``s3://``
# media are fetched with s3fs, whose endpoint is the caller's own choice, so no
# ``allow_private`` is needed even though the gateway listens on 127.0.0.1.
if LIVE:
    part("build")
    store = f"s3://{store_bucket}/sheets.zarr"
    result = idigdask.build_dataset(catalog_url, store, storage_options=storage_options,
                                    size=64, progress=False)
    say(result.counts["status"])
    say("the store's top level:", sorted(p.rsplit("/", 1)[-1] for p in s3.ls(store, refresh=True)))
else:
    replay("build")

# %%
# Reading it back
# ---------------
# :func:`idigdask.open_dataset` and :func:`idigdask.read_ledger` take the same
# ``storage_options``; the Dataset is lazy, and only the chunks looked at travel.
if LIVE:
    part("read")
    ds = idigdask.open_dataset(store, storage_options=storage_options)
    ledger = idigdask.read_ledger(store, storage_options=storage_options)
    say(ds)
    say(ledger[["media_uuid", "access_uri", "status", "image_index"]].head(3).to_string(index=False))
else:
    replay("read")

# %%
# The first twelve images, read from the bucket.
if LIVE:
    fig, axes = plt.subplots(2, 6, figsize=(9, 3.6))
    for i, ax in enumerate(axes.flat):
        ax.imshow(ds["images"][i].values)
        ax.set_title(f"{ds['media_uuid'].values[i][:8]}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"s3://{store_bucket}/sheets.zarr")
    fig.tight_layout()
    if RECORD:
        fig.savefig(FIGURE, dpi=60)
else:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.imshow(plt.imread(FIGURE))
    ax.axis("off")
    ax.set_title(f"recorded run of {recorded['date']}", fontsize=9)
    fig.tight_layout()

# %%
# Options for each role
# ---------------------
# The options can differ by role: here the catalog is a local file, the media come
# from the bucket (``media_storage_options``) and the store is written locally,
# without any. A dict keyed by protocol, ``{"s3": {...}, "https": {...}}``, gives each
# protocol its own, for a catalog that mixes them.
if LIVE:
    part("roles")
    local_store = str(tmp / "local.zarr")
    mixed = idigdask.build_dataset(sheets.catalog, local_store,
                                   media_storage_options={"s3": storage_options},
                                   size=64, progress=False)
    say(mixed.counts["status"])
    same = idigdask.open_dataset(local_store)
    say("same pixels as the store in the bucket:",
        bool((same["images"].values == ds["images"].values).all()))
else:
    replay("roles")

# %%
# And without credentials, the media cannot be read: each row fails with a reason
# (``access_denied``), the build itself does not stop.
if LIVE:
    part("denied")
    anonymous = {"anon": True, "client_kwargs": {"endpoint_url": gateway.endpoint}}
    denied = idigdask.build_dataset(sheets.catalog, str(tmp / "denied.zarr"),
                                    media_storage_options=anonymous, size=64, retries=0,
                                    progress=False)
    say(denied.counts["reasons"])
else:
    replay("denied")

# %%
# Tidy up: the buckets, their objects and the temporary folder go.
if LIVE:
    for bucket in (media_bucket, store_bucket):
        gateway.remove_bucket(bucket)
    shutil.rmtree(tmp)
    if RECORD:
        RECORDING.write_text(json.dumps({
            "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}",
            "endpoint": gateway.endpoint, "python": sys.version.split()[0],
            "idigdask": idigdask.__version__, "parts": transcript}, indent=1) + "\n")
