"""A classical baseline beside the CNN: colour and texture features, a linear classifier.

What a scientist would try first, and what a CNN must beat: per image, a fixed vector
of features computed with scikit-image (:func:`image_features`), standardized, and a
linear classifier from dask-ml trained on the same split as the CNN
(:func:`idigdask.train.train` with ``model="baseline"``). The features:

- HSV histograms (12 hue, 8 saturation, 8 value bins): the grey to black of mercury
  residue is dark and unsaturated, plants are dark and green, paper is light;
- the histogram of uniform local binary patterns (P=8, R=1; 10 bins): the texture of
  speckles and halos against paper and leaves;
- dark-blob statistics: connected regions (``skimage.measure.label``) of pixels much
  darker than the sheet's paper and unsaturated, their count, share, largest and mean
  size; and the paper's brightness and the value's spread.

The features of a store are computed on the Dask workers, one task per few chunks
(:func:`store_features`). The classifier is dask-ml's ``LogisticRegression`` (one
per class against the rest for more than two classes), or, for stores whose features
do not fit in the workers' memory, a scikit-learn ``SGDClassifier`` wrapped in
dask-ml's ``Incremental``, which sees one block of features at a time. Both end as
the same few coefficients, saved in ``baseline.npz`` beside the usual ``config.json``
and ``split.parquet``: :class:`BaselineModel` scores images with NumPy alone, so
:func:`idigdask.evaluate` and :func:`idigdask.predict` take a baseline's model folder
as they take a CNN's, and no worker loads Keras for it.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import UserError

__all__ = ["BaselineModel", "FEATURE_NAMES", "features_block", "image_features",
           "store_features", "train_baseline"]

HSV_BINS = (12, 8, 8)
LBP_POINTS, LBP_RADIUS = 8, 1
#: Names of the features, in the order of :func:`image_features`.
FEATURE_NAMES = tuple(
    [f"hue_{i}" for i in range(HSV_BINS[0])] + [f"saturation_{i}" for i in range(HSV_BINS[1])]
    + [f"value_{i}" for i in range(HSV_BINS[2])] + [f"lbp_{i}" for i in range(LBP_POINTS + 2)]
    + ["dark_blobs_log", "dark_share", "largest_blob_log", "mean_blob_log", "paper_value",
       "value_std"])
#: The model file of a baseline's folder.
MODEL_FILE = "baseline.npz"
#: Chunks whose images one feature task reads.
CHUNKS_PER_TASK = 4


# ---------------------------------------------------------------------------------
# Features (pure functions, run on the workers)
# ---------------------------------------------------------------------------------
def image_features(image: np.ndarray) -> np.ndarray:
    """Colour and texture features of one image.

    Parameters
    ----------
    image : numpy.ndarray
        ``uint8`` pixels ``(h, w, 3)``.

    Returns
    -------
    numpy.ndarray
        ``float32`` vector of ``len(FEATURE_NAMES)`` values (histograms as shares).

    Examples
    --------
    >>> paper = np.full((64, 64, 3), 235, np.uint8)
    >>> stained = paper.copy(); stained[20:30, 20:30] = 40
    >>> f = dict(zip(FEATURE_NAMES, image_features(stained)))
    >>> round(float(f["dark_share"]), 3), round(float(np.expm1(f["dark_blobs_log"])))
    (0.024, 1)
    """
    from skimage.color import rgb2gray, rgb2hsv
    from skimage.feature import local_binary_pattern
    from skimage.measure import label

    rgb = np.asarray(image)[..., :3]
    hsv = rgb2hsv(rgb)
    parts = [np.histogram(hsv[..., c], bins=bins, range=(0.0, 1.0))[0] / hsv[..., c].size
             for c, bins in enumerate(HSV_BINS)]
    gray = np.round(rgb2gray(rgb) * 255).astype(np.uint8)
    lbp = local_binary_pattern(gray, LBP_POINTS, LBP_RADIUS, method="uniform").astype(np.int64)
    parts.append(np.bincount(lbp.ravel(), minlength=LBP_POINTS + 2)[:LBP_POINTS + 2] / lbp.size)
    value, saturation = hsv[..., 2], hsv[..., 1]
    paper = float(np.median(value))
    # mercury residue: much darker than the paper and nearly grey (plants are green)
    dark = (value < 0.6 * paper) & (saturation < 0.35)
    areas = np.bincount(label(dark, connectivity=2).ravel())[1:]
    blobs = areas[areas >= 3]
    parts.append([np.log1p(len(blobs)), dark.mean(),
                  np.log1p(blobs.max() if len(blobs) else 0.0),
                  np.log1p(blobs.mean() if len(blobs) else 0.0), paper, float(value.std())])
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]).astype(np.float32)


def features_block(images: np.ndarray) -> np.ndarray:
    """:func:`image_features` of each image of a block: ``(n, len(FEATURE_NAMES))``.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, h, w, 3)`` pixels: ``uint8``, or floats in 0..255 (rounded and clipped
        to ``uint8`` first).

    Returns
    -------
    numpy.ndarray
        ``float32`` ``(n, len(FEATURE_NAMES))``, one row per image.

    Examples
    --------
    >>> features = features_block(np.full((3, 32, 32, 3), 235, np.uint8))
    >>> features.shape == (3, len(FEATURE_NAMES)), features.dtype
    (True, dtype('float32'))
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:  # network input in 0..255 (predict's normalize=None)
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    out = np.empty((len(images), len(FEATURE_NAMES)), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = image_features(image)
    return out


def _features_task(source: Any, indices: np.ndarray, chunk_size: int,
                   storage_options: dict | None) -> np.ndarray:
    from .batches import read_images

    return features_block(read_images(source, indices, chunk_size, storage_options))


def store_features(source: Any, indices: Sequence[int], chunk_size: int, *,
                   storage_options: dict | None = None,
                   chunks_per_task: int = CHUNKS_PER_TASK):
    """The features of images of a store, as a lazy Dask array computed on the workers.

    Parameters
    ----------
    source : str or array-like
        A store path or URL (each worker opens it), or its ``images`` variable.
    indices : sequence of int
        The images, in the order of the result's rows (sort them for chunk-friendly
        tasks: one task reads ``chunks_per_task`` chunks).
    chunk_size : int
        Images per chunk of the store.
    storage_options : dict, optional
        fsspec options of a remote store.
    chunks_per_task : int
        Store chunks read by one task.

    Returns
    -------
    dask.array.Array
        ``float32`` ``(len(indices), len(FEATURE_NAMES))``, one block per task.

    Examples
    --------
    >>> images = np.full((3, 32, 32, 3), 235, np.uint8)
    >>> features = store_features(images, [0, 1, 2], chunk_size=2, chunks_per_task=1)
    >>> features.numblocks, features.compute().shape == (3, len(FEATURE_NAMES))
    ((2, 1), True)
    >>> store_features("sheets.zarr", range(1000), chunk_size=64)      # doctest: +SKIP
    dask.array<concatenate, shape=(1000, 44), dtype=float32, chunksize=(256, 44), ...>
    """
    import dask
    import dask.array as da

    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return da.zeros((0, len(FEATURE_NAMES)), dtype=np.float32, chunks=(1, len(FEATURE_NAMES)))
    group = indices // (chunk_size * max(1, int(chunks_per_task)))
    cuts = np.flatnonzero(np.diff(group)) + 1
    blocks = []
    for part in np.split(indices, cuts):
        task = dask.delayed(_features_task, pure=True)(source, part, chunk_size, storage_options)
        blocks.append(da.from_delayed(task, shape=(len(part), len(FEATURE_NAMES)),
                                      dtype=np.float32))
    return da.concatenate(blocks, axis=0)


# ---------------------------------------------------------------------------------
# The fitted model: standardization and linear coefficients, scored with NumPy
# ---------------------------------------------------------------------------------
@dataclass
class BaselineModel:
    """A fitted baseline: standardization, then a linear classifier.

    Attributes
    ----------
    classes : list
        Class labels, in the order of the scores' columns.
    mean, scale : numpy.ndarray
        Standardization of each feature.
    coef : numpy.ndarray
        ``(1, F)`` for two classes (the second class's log-odds), else ``(k, F)``
        (each class against the rest).
    intercept : numpy.ndarray
        ``(1,)`` or ``(k,)``.

    Examples
    --------
    >>> model = BaselineModel.load("model/baseline.npz")                # doctest: +SKIP
    >>> model.predict_proba(features_block(images))                   # doctest: +SKIP
    """

    classes: list
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    @property
    def output_shape(self) -> tuple[None, int]:
        """As a Keras model's: ``(None, number of classes)``."""
        return (None, len(self.classes))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, k)`` of feature rows."""
        x = (np.asarray(features, np.float64) - self.mean) / self.scale
        z = x @ np.atleast_2d(self.coef).T + self.intercept
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        if len(self.classes) == 2:
            return np.column_stack([1.0 - p[:, 0], p[:, 0]])
        return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of images in 0..255, as a Keras model's ``predict_on_batch``."""
        return self.predict_proba(features_block(images)).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write the model as an ``.npz`` of arrays (no pickle: safe to load anywhere)."""
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, scale=self.scale, coef=np.atleast_2d(self.coef),
                 intercept=np.atleast_1d(self.intercept),
                 classes=np.array(json.dumps(self.classes)),
                 features=np.array(json.dumps(list(FEATURE_NAMES))))
        Path(path).write_bytes(buffer.getvalue())
        return Path(path)

    @classmethod
    def from_bytes(cls, data: bytes) -> "BaselineModel":
        """The model saved by :meth:`save`, from the file's bytes."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if json.loads(str(npz["features"])) != list(FEATURE_NAMES):
                raise UserError("the baseline was trained on other features than this "
                                "version computes; train it again")
            return cls(json.loads(str(npz["classes"])), npz["mean"], npz["scale"],
                       npz["coef"], npz["intercept"])

    @classmethod
    def load(cls, path: str | Path) -> "BaselineModel":
        """The model saved at ``path``."""
        return cls.from_bytes(Path(path).read_bytes())


# ---------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _scheduler(client: Any):
    """Run Dask work on ``client``; None or False: the current client if any, else threads.

    False does not force threads while a client is current: dask-glm (under dask-ml's
    LogisticRegression) sends its coefficients to the current client whatever the
    scheduler, and work split between the two fails.
    """
    import dask

    from .cluster import current_client

    chosen = client if client else current_client()
    with dask.config.set(scheduler=chosen if chosen is not None else "threads"):
        yield chosen


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))


def _fit_logistic(x_train, y_train: np.ndarray, k: int, seed: int,
                  varying: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dask-ml's LogisticRegression: binary, or one per class against the rest."""
    import dask.array as da
    from dask_ml.linear_model import LogisticRegression

    chunks = x_train.chunks[0]
    # a feature constant over the training images (a hue no sheet has) carries nothing,
    # and dask-glm refuses more than one: such features get a coefficient of 0
    varies = np.flatnonzero(np.asarray(varying))
    coefs, intercepts = [], []
    for c in ([1] if k == 2 else range(k)):
        target = da.from_array((y_train == c).astype(np.int64), chunks=(chunks,))
        with warnings.catch_warnings():  # dask-ml and dask-glm use renamed settings
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # dask-glm calling SciPy
            fitted = LogisticRegression(solver="lbfgs", C=1.0, max_iter=200,
                                        random_state=seed).fit(x_train[:, varies], target)
        coef = np.zeros(x_train.shape[1])
        coef[varies] = np.ravel(np.asarray(fitted.coef_))
        coefs.append(coef)
        intercepts.append(float(np.ravel(np.asarray(fitted.intercept_))[0]))
    return np.vstack(coefs), np.asarray(intercepts)


def train_baseline(store: Any, out: str | Path, options: Any, *, client: Any = None,
                   storage_options: dict | None = None):
    """Train the classical baseline; write a model folder as :func:`idigdask.train` does.

    Called by :func:`idigdask.train` for ``model="baseline"``: the same split
    (``split_by``, ``fractions``, ``seed``), labels and model folder layout, with
    ``baseline.npz`` for ``model.keras``. ``classifier`` picks dask-ml's
    ``LogisticRegression`` or an ``Incremental`` ``SGDClassifier`` (``epochs``
    passes, the best by validation loss kept); the feed's options, the learning
    rate and augmentation do not apply. ``resume`` trains again from the start (a
    fit takes seconds).

    Parameters
    ----------
    store : str, path or xarray.Dataset
        The image store.
    out : str or path
        The model folder to write (replaced).
    options : TrainOptions
        The training options.
    client : distributed.Client, optional
        Where the features are computed and the classifier fitted; None or False:
        the current client if there is one, else a local thread pool (training
        never starts a cluster of its own).
    storage_options : dict, optional
        fsspec options of a remote store.

    Returns
    -------
    idigdask.train.TrainResult
        As :func:`idigdask.train` returns it: the model folder, the classes, the
        chosen epoch's validation loss and accuracy, the images per split.

    Raises
    ------
    UserError
        If ``store`` is not an image store, lacks the label column or has fewer than
        two classes in it, or the split leaves too few labelled specimens.

    Examples
    --------
    >>> from idigdask.train import TrainOptions
    >>> options = TrainOptions(model="baseline", label="stained")      # doctest: +SKIP
    >>> result = train_baseline("sheets.zarr", "baseline-model", options)  # doctest: +SKIP
    >>> idigdask.train("sheets.zarr", "baseline-model", model="baseline")  # doctest: +SKIP
    """
    import dask

    from . import __version__
    from .batches import open_store, store_location
    from .train import (CONFIG_FORMAT, TrainResult, _check_split, _clear_model_dir, _make_split,
                        _write_json, labelled_images)

    started = time.perf_counter()
    model_dir = Path(out)
    ds = open_store(store, storage_options)
    if "images" not in ds:
        raise UserError(f"{store}: not an image store (no 'images' variable)")
    keep, codes, classes = labelled_images(ds, options.label, store)
    _clear_model_dir(model_dir)
    table = _make_split(ds, keep, codes, classes, options.seed, options.fractions,
                        options.split_by, store)
    _check_split(table)
    table.to_parquet(model_dir / "split.parquet", index=False)
    code_of = {c: i for i, c in enumerate(classes)}
    location = store_location(ds)
    source = location if location is not None else ds["images"].variable
    chunk = int(ds.attrs.get("chunk_size") or 64)
    k = len(classes)

    def part(name: str):
        rows = table[table["split"] == name].sort_values("image_index")
        return (store_features(source, rows["image_index"].to_numpy(), chunk,
                               storage_options=storage_options),
                rows["label"].map(code_of).to_numpy(np.int64))

    with _scheduler(client):
        (x_train, y_train), (x_val, y_val) = part("train"), part("val")
        x_train, x_val = dask.persist(x_train, x_val)
        mean, std = dask.compute(x_train.mean(axis=0), x_train.std(axis=0))
        scale = np.where(std > 1e-9, std, 1.0)
        x_scaled = (x_train - mean) / scale
        val_features = np.asarray(x_val.compute())
        train_features = np.asarray(x_train.compute())
        history: dict[str, list] = {}
        best: tuple[float, int, BaselineModel] | None = None
        if options.classifier == "logistic":
            coef, intercept = _fit_logistic(x_scaled, y_train, k, options.seed, std > 1e-9)
            fits = [(1, BaselineModel(classes, mean, scale, coef, intercept))]
        else:
            fits = _fit_sgd(x_scaled, y_train, classes, mean, scale, options)
        for epoch, model in fits:
            p_train = model.predict_proba(train_features)
            p_val = model.predict_proba(val_features)
            entry = {"epoch": epoch, "loss": _log_loss(y_train, p_train),
                     "accuracy": float((p_train.argmax(1) == y_train).mean()),
                     "val_loss": _log_loss(y_val, p_val),
                     "val_accuracy": float((p_val.argmax(1) == y_val).mean()) if len(y_val) else None}
            for key, value in entry.items():
                history.setdefault(key, []).append(value)
            if best is None or entry["val_loss"] < best[0]:
                best = (entry["val_loss"], epoch, model)
    assert best is not None
    best_loss, best_epoch, model = best
    model.save(model_dir / MODEL_FILE)
    _write_json(model_dir / "history.json", history)
    pd.DataFrame(history).to_csv(model_dir / "history.csv", index=False)
    image_shape = [int(s) for s in ds["images"].shape[1:]]
    import dask_ml
    import skimage
    import sklearn

    config = {
        "format": CONFIG_FORMAT, "label": options.label, "classes": classes, "model": "baseline",
        "model_file": MODEL_FILE, "classifier": options.classifier,
        "features": list(FEATURE_NAMES), "store": store_location(ds),
        "size": int(ds.attrs.get("size", image_shape[0])), "image_shape": image_shape,
        "resize_mode": ds.attrs.get("resize_mode"), "input_size": None,
        # the features take the stored 0..255 pixels as they are
        "normalize": None, "channel_mean": None, "channel_std": None,
        "seed": options.seed, "epochs": options.epochs if options.classifier == "sgd" else 1,
        "fractions": list(options.fractions), "split_by": options.split_by,
        "catalog_source": ds.attrs.get("catalog_source"), "store_created": ds.attrs.get("created"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"idigdask": __version__, "numpy": np.__version__,
                     "dask_ml": dask_ml.__version__, "scikit_learn": sklearn.__version__,
                     "scikit_image": skimage.__version__, "python": platform.python_version()},
    }
    _write_json(model_dir / "config.json", config)
    return TrainResult(
        model_dir=str(model_dir), classes=classes, epochs=len(history["epoch"]),
        best_epoch=best_epoch, best_val_loss=best_loss,
        best_val_accuracy=history["val_accuracy"][history["epoch"].index(best_epoch)],
        stopped_early=False,
        split_counts={k_: int(v) for k_, v in table["split"].value_counts().items()},
        seconds=round(time.perf_counter() - started, 2), history=history)


def _fit_sgd(x_scaled, y_train: np.ndarray, classes: list, mean: np.ndarray, scale: np.ndarray,
             options: Any) -> list[tuple[int, BaselineModel]]:
    """dask-ml's Incremental over an SGDClassifier: one pass over the blocks an epoch."""
    import dask.array as da
    from dask_ml.wrappers import Incremental
    from sklearn.linear_model import SGDClassifier

    from .splits import class_weights

    k = len(classes)
    weights = class_weights(y_train)
    estimator = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=options.seed,
                              class_weight={int(c): w for c, w in weights.items()})
    incremental = Incremental(estimator, shuffle_blocks=True, random_state=options.seed)
    y = da.from_array(y_train, chunks=(x_scaled.chunks[0],))
    fits = []
    for epoch in range(1, options.epochs + 1):
        incremental.partial_fit(x_scaled, y, classes=np.arange(k))
        fitted = incremental.estimator_
        fits.append((epoch, BaselineModel(classes, mean, scale, np.array(fitted.coef_, copy=True),
                                          np.array(fitted.intercept_, copy=True))))
    return fits


def score_images(model_dir_config: dict[str, Any], source: Any, indices: np.ndarray,
                 chunk_size: int, *, client: Any = None,
                 storage_options: dict | None = None) -> np.ndarray:
    """Class probabilities of store images with a baseline's model folder.

    The features are computed on the workers (:func:`store_features`), the
    probabilities from them here (a few numbers per image).

    Parameters
    ----------
    model_dir_config : dict
        :func:`idigdask.train.read_model_dir` of a baseline's folder.
    source : str or array-like
        The store's location, or its ``images`` variable.
    indices : numpy.ndarray of int
        The images, in the order of the result's rows.
    chunk_size : int
        Images per chunk.
    client : distributed.Client, optional
        As for :func:`train_baseline`.
    storage_options : dict, optional
        fsspec options of a remote store.

    Returns
    -------
    numpy.ndarray
        ``(len(indices), k)`` probabilities.
    """
    model = BaselineModel.load(model_dir_config["model_path"])
    with _scheduler(client):
        features = np.asarray(store_features(source, indices, chunk_size,
                                             storage_options=storage_options).compute())
    return model.predict_proba(features)
