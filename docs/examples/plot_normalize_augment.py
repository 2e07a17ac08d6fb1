"""
Channel statistics, normalization and augmentation, in pictures
===============================================================

A network does not see a store's pixels as they are. Each batch is *normalized*
(centred and scaled per colour channel with the store's own statistics) and, for
training, *augmented*: flipped, turned, shifted, made a little brighter or duller, so
that the network learns what a stain looks like rather than where the stains of its
training sheets happened to be. This example shows where the statistics come from,
and what a batch looks like before and after each step.
"""

# %%
# A store and its channel statistics
# ----------------------------------
# Every build records, with each committed wave, a histogram of the pixel values of
# each colour channel; from them it writes the store's ``channel_mean`` and
# ``channel_std`` attributes, so no second pass over the images is needed. Here a
# store of 128 synthetic sheets at 96 x 96 pixels, in chunks of 32 images.
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import idigdask
from idigdask.batches import epoch_order, normalize_images

tmp = Path(tempfile.mkdtemp(prefix="idigdask-feed-"))
sheets = idigdask.make_sheets(tmp / "sheets", n=128, size=(300, 450), seed=5)
catalog = idigdask.attach_labels(idigdask.read_catalog(sheets.catalog), sheets.labels,
                                 on="record_uuid", label="stained")
store = str(tmp / "sheets.zarr")
idigdask.build_dataset(catalog, store, size=96, chunk_size=32, progress=False)
ds = idigdask.open_dataset(store)
print("channel_mean", ds.attrs["channel_mean"])
print("channel_std ", ds.attrs["channel_std"])

# %%
# The same numbers computed directly from all the pixels (fine for 128 images, not
# for a million): the attributes are exact, not estimates.
pixels = ds["images"].values.reshape(-1, 3).astype(np.float64)
print("numpy mean  ", pixels.mean(axis=0).round(4).tolist())
print("numpy std   ", pixels.std(axis=0).round(4).tolist())

# %%
# Herbarium sheets are mostly cream paper, so the histograms pile up near the top
# of the range, blue lowest; the white letterbox of ``resize_mode="pad"`` adds the
# spike at 255. The mean is high and the spread wide, which is why normalizing with
# the store's own statistics beats dividing by 255.
fig, ax = plt.subplots(figsize=(7, 3))
for c, colour in enumerate(("red", "green", "blue")):
    counts = np.bincount(ds["images"].values[..., c].ravel(), minlength=256)
    ax.plot(np.arange(256), counts, color=colour, lw=1)
    ax.axvline(ds.attrs["channel_mean"][c], color=colour, ls="--", lw=0.8)
ax.set_yscale("log")
ax.set_xlabel("pixel value")
ax.set_ylabel("pixels (log scale)")
ax.set_title("Channel histograms of the store; dashed: channel_mean")
fig.tight_layout()

# %%
# Normalization
# -------------
# :func:`idigdask.batches.normalize_images` turns a batch into the network's
# ``float32`` input. ``"store"`` (the default of :class:`idigdask.FeedOptions`)
# subtracts ``channel_mean`` and divides by ``channel_std``; ``"unit"`` divides by
# 255; ``None`` leaves the raw values for networks that carry their own
# preprocessing, as the ``keras.applications`` backbones do.
batch = ds["images"][:8].values
mean, std = ds.attrs["channel_mean"], ds.attrs["channel_std"]
for mode in ("store", "unit", None):
    x = normalize_images(batch, mode, mean, std)
    print(f"normalize={mode!s:6} dtype {x.dtype}, per-channel mean "
          f"{x.mean(axis=(0, 1, 2)).round(2)}, std {x.std(axis=(0, 1, 2)).round(2)}")


# %%
# The same eight sheets, raw and normalized with the store's statistics (shown with
# -2..2 standard deviations mapped to black..white): the paper becomes mid grey, and
# the plant, the label's ink and the stains stand out as strong negative values.
def grid(images, title, value_range=(0, 255), labels=None):
    fig, axes = plt.subplots(1, len(images), figsize=(1.4 * len(images), 2.1))
    lo, hi = value_range
    for i, (ax, img) in enumerate(zip(axes, images)):
        ax.imshow(np.clip((img - lo) / (hi - lo), 0, 1))
        ax.axis("off")
        if labels is not None:
            ax.set_title(labels[i], fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()


names = ["stained" if v == "1" else "clean" for v in ds["label"].values[:8]]
grid(batch, "raw pixels", labels=names)
grid(normalize_images(batch, "store", mean, std), 'normalize="store"', (-2, 2), names)

# %%
# Augmentation, as the training feed does it
# ------------------------------------------
# :class:`idigdask.StoreFeed` is the Keras ``PyDataset`` that :func:`idigdask.train`
# uses: each batch is read, augmented and normalized by a task on the Dask workers,
# a few batches ahead of the one the network consumes. We open one on a local
# cluster with :class:`idigdask.FeedOptions` fields (``augment=True``, no
# normalization so the pictures keep their colours, store order so the batch holds
# the same sheets as above) and look at its first batch in three epochs. The seed
# of a batch's augmentation is ``(seed, epoch, batch)``: the same batch is the same
# on any worker and in any rerun, and different in every epoch.
from idigdask import FeedOptions, StoreFeed

options = FeedOptions(batch_size=8, shuffle=False, augment=True, normalize=None, seed=0)
with idigdask.get_client() as client:
    feed = StoreFeed(store, options=options, client=client)
    print(f"{len(feed)} batches of {feed.batch_size}; reads on {feed.client}")
    epochs = []
    for epoch in range(3):
        (x,) = feed[0]
        epochs.append(x)
        feed.on_epoch_end()
    feed.set_epoch(0)
    (again,) = feed[0]
    feed.close()
print("batch 0 of epoch 0 read twice is the same:", np.array_equal(again, epochs[0]))
print("and differs in epoch 1:", not np.array_equal(epochs[0], epochs[1]))
grid(feed.images(0), "the batch, unaugmented", labels=names)
for epoch, x in enumerate(epochs):
    grid(x, f"augmented, epoch {epoch}", labels=names)

# %%
# Flips and quarter turns leave a sheet's label alone, as stains have no preferred
# side; shifts (up to 1/8 of the side, the uncovered strip filled with the paper's
# colour) stop a network that flattens its feature maps, like the reference CNN,
# from learning *where* the stains were; the brightness and contrast changes stand
# for different scanners and lamps.
#
# The order of an epoch
# ---------------------
# With ``shuffle=True`` (the training default) the feed shuffles chunk-aware
# (:func:`idigdask.batches.epoch_order`): the chunks are dealt into windows of
# ``window_chunks`` chunks taken from all over the store, and a window's images are
# visited in rounds, one image of each of its chunks per round. A batch then mixes
# images of distant parts of the store (of many providers, in a store written in
# recordset order) while every chunk is still read in one window only. Each epoch has
# its own order, a function of the seed and the epoch.
indices = np.arange(ds.sizes["image"])
fig, ax = plt.subplots(figsize=(7, 3))
for epoch, marker in ((0, "o"), (1, "x")):
    order = epoch_order(indices, 32, seed=0, epoch=epoch, window_chunks=2)
    ax.plot(np.arange(len(order)), order, marker, ms=3, label=f"epoch {epoch}")
ax.set_xlabel("position in the epoch")
ax.set_ylabel("image index (chunks of 32)")
ax.set_yticks(range(0, 129, 32))
ax.grid(axis="y")
ax.legend()
ax.set_title("Chunk-aware shuffle: windows of 2 chunks dealt from the store")
fig.tight_layout()

# %%
# Tidy up.
ds.close()
shutil.rmtree(tmp)
