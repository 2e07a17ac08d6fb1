"""
Training the reference CNN, its evaluation, and predictions for a new catalog
=============================================================================

Schuettpelz et al. (2017) trained a small convolutional network to tell herbarium
sheets treated with mercury (which leaves dark stains) from clean ones. idigdask
ships that network as the model ``"smithsonian"``. This example trains it on a store
of synthetic sheets, with batches prepared on Dask workers, reads the evaluation
report that :func:`idigdask.evaluate` writes (training curves, confusion matrix, ROC
curve, the worst-classified sheets), and scores the images of another collection's
catalog with :func:`idigdask.predict`, writing the scores back next to its records.

The run is kept short for the documentation: 320 small sheets at 64 x 64 pixels and
six epochs, half a minute on two cores. The published study used 10,000 sheets at
256 px; ``make demo`` trains on 1,200 sheets at 128 px for up to 24 epochs.
"""

# %%
# The store
# ---------
# A labelled store, built as in :doc:`plot_guoda_notebook`: synthetic sheets served
# over HTTP on 127.0.0.1, their GUODA-schema catalog, labels joined by specimen.
# A second set of 40 sheets, with its own catalog, plays the new collection whose
# sheets we want scored.
import contextlib
import shutil
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import idigdask
from idigdask.testing.media_server import MediaServer

tmp = Path(tempfile.mkdtemp(prefix="idigdask-train-"))
(tmp / "training").mkdir()
(tmp / "new").mkdir()
server = MediaServer(tmp)
training = idigdask.make_sheets(tmp / "training", n=320, size=(300, 450), seed=11,
                                base_url=server.url + "/training")
new = idigdask.make_sheets(tmp / "new", n=40, size=(300, 450), seed=12,
                           base_url=server.url + "/new")

# %%
# One Dask cluster for every stage: :func:`idigdask.get_client` starts what the
# configuration says (here a local cluster on 127.0.0.1, one worker with a thread per
# core) and closes it at the end. Every stage below runs on it.
stack = contextlib.ExitStack()
client = stack.enter_context(idigdask.get_client())
print(client)

catalog = idigdask.attach_labels(idigdask.read_catalog(training.catalog), training.labels,
                                 on="record_uuid", label="stained")
store = str(tmp / "sheets.zarr")
built = idigdask.build_dataset(catalog, store, size=64, allow_private=True, progress=False)
print(built.counts["status"])

# %%
# Training
# --------
# :func:`idigdask.train` splits the *specimens* into training, validation and test
# sets (70/15/15 %, so that two images of one specimen never sit on both sides),
# feeds the network with batches read, augmented and normalized on the Dask workers
# (:class:`idigdask.StoreFeed`), keeps the weights of the epoch with the best
# validation loss and writes a model folder. ``patience=0`` trains all six epochs;
# ``bn_momentum=0.9`` lets the batch-norm statistics keep up with so short a run.
trained = idigdask.train(store, out=str(tmp / "model"), label="label", model="smithsonian",
                         epochs=6, batch_size=16, patience=0, bn_momentum=0.9, seed=0,
                         client=client)
for key, value in trained.summary().items():
    print(f"{key:18} {value}")

# %%
# Evaluation on the held-out specimens
# ------------------------------------
# :func:`idigdask.evaluate` scores the test specimens (never seen in training) and
# writes ``metrics.json`` and four figures into the report folder.
metrics = idigdask.evaluate(str(tmp / "model"), store, out=str(tmp / "report"),
                            client=client)
print(f"test images: {metrics['n']}, accuracy {metrics['accuracy']:.3f}, "
      f"ROC AUC {metrics['roc_auc']:.3f}")
print(pd.DataFrame(metrics["per_class"]).T.round(3))
print(sorted(p.name for p in (tmp / "report").iterdir()))


def show(png: str, title: str, size=(6.5, 4.2)) -> None:
    fig, ax = plt.subplots(figsize=size)
    ax.imshow(plt.imread(png))
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()


# %%
# The training curves: loss and accuracy per epoch, on the training batches
# (augmented) and on the validation specimens.
show(metrics["plots"]["history"], "history.png")

# %%
# The confusion matrix of the test specimens: rows are the true class (0 clean,
# 1 stained), columns the predicted one.
show(metrics["plots"]["confusion"], "confusion.png", size=(5, 4.2))

# %%
# The ROC curve of the "stained" score: how many stained sheets are found (true
# positive rate) for how many clean sheets flagged (false positive rate), over every
# threshold.
show(metrics["plots"]["roc"], "roc.png", size=(5, 4.2))

# %%
# The test sheets the model got most wrong, with the probability it gave their true
# class: the first place to look when a model disappoints (a mislabelled specimen, a
# confounder such as a dark plant part or an ink stamp).
show(metrics["plots"]["worst"], "worst.png", size=(8, 8))

# %%
# Predictions written back to a catalog
# -------------------------------------
# :func:`idigdask.predict` takes a store or, as here, any catalog source: it fetches
# and decodes the images on the workers exactly as a build would (the same size and
# resize mode as the model's store), scores them there, and returns one row per
# catalog row with a score per class and the predicted class; ``out`` writes the
# same table as parquet. The model travels to the workers once; Dask warns about the
# size of the task graph that carries it, which we silence here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Sending large graph")
    scores = idigdask.predict(str(tmp / "model"), new.catalog, client=client,
                              out=str(tmp / "predictions.parquet"), allow_private=True)
print(scores.drop(columns=["access_uri", "message"]).head().to_string(index=False))

# %%
# Joined back to the new collection's catalog by ``media_uuid``, the scores sit next
# to each specimen's catalog number and name, ready for a curator's list of sheets to
# check first. These sheets are synthetic, so their true labels are known too.
records = idigdask.read_catalog(new.catalog).compute()
truth = idigdask.attach_labels(records, new.labels, on="record_uuid", label="stained")
scored = truth.merge(pd.read_parquet(tmp / "predictions.parquet"), on="media_uuid",
                     suffixes=("", "_prediction"))
scored = scored.sort_values("score_1", ascending=False)
scored.to_parquet(tmp / "new-with-predictions.parquet", index=False)
print(scored[["catalogNumber", "scientificName", "score_1", "predicted", "label"]]
      .head(10).to_string(index=False))
print(f"agreement with the true labels: {(scored['predicted'] == scored['label']).mean():.2f}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.2))
for label, colour, name in (("0", "tab:green", "clean"), ("1", "tab:red", "stained")):
    ax.hist(scored.loc[scored["label"] == label, "score_1"], bins=20, range=(0, 1),
            alpha=0.6, color=colour, label=f"truly {name}")
ax.set_xlabel('score of "stained" (score_1)')
ax.set_ylabel("sheets")
ax.legend()
ax.set_title("The new collection's 40 sheets, by their true label")
fig.tight_layout()

# %%
# Tidy up: close the cluster, stop the server, delete the temporary folder.
stack.close()
server.close()
shutil.rmtree(tmp)
