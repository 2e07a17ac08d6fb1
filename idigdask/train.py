"""Train a classifier on a labelled image store, with checkpoints and resume.

:func:`train` splits the labelled images by specimen (see
:func:`idigdask.splits.split_by_specimen`) or by recordset, feeds them through
:class:`idigdask.loaders.keras.StoreFeed` (read ahead on the Dask workers when a client
is there), and writes a *model folder*::

    MODEL_DIR/
        model.keras           the best weights (lowest validation loss)
        config.json           label, classes, store, normalization, size, versions
        split.parquet         media_uuid, record_uuid, label, split (train/val/test),
                              image_index, recordset
        history.json, .csv    one entry per epoch
        checkpoints/
            last.keras        after every epoch (what ``resume=True`` continues from)
            best.keras        the best epoch so far
            state.json        epochs done, best validation loss, patience count

``model="baseline"`` writes the same folder with ``baseline.npz`` (the classical
baseline's coefficients, :mod:`idigdask.baseline`) instead of the Keras files.

Training stops early when the validation loss has not improved for ``patience``
epochs, and the saved model holds the best epoch's weights. Its settings are one
:class:`TrainOptions`, whose defaults are the dask config's ``idigdask.train`` (and
``idigdask.feed`` for its batches).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .batches import FeedOptions, open_store, store_location
from .errors import UserError
from .models import MODELS
from .options import check, coerce_fields, setting, with_overrides
from .splits import SPLIT_BY, class_weights, missing_labels, split_by_recordset, split_by_specimen
from .store import input_shape, layout_of

CONFIG_FORMAT = "idigdask-model/1"


@dataclass
class TrainOptions:
    """How :func:`train` trains: the network, the epochs, the split and the batches.

    Every default is the dask config's ``idigdask.train.<field>`` (``idigdask.yaml``;
    ``DASK_IDIGDASK__TRAIN__EPOCHS=20``), and ``idigdask.feed.<field>`` for ``feed``;
    see :mod:`idigdask.options`.

    Parameters
    ----------
    label : str
        The store's label coordinate; -1 or "" mark unlabelled images (left out).
    model : str or None
        A name of :data:`idigdask.models.MODELS`, or ``"baseline"``: the classical
        baseline of :mod:`idigdask.baseline` (colour and texture features, a dask-ml
        linear classifier; no Keras). None: by the store, ``smithsonian`` for images
        and ``calls`` (:func:`~idigdask.models.calls_cnn`) for the spectrograms of a
        store of sounds.
    classifier : {"logistic", "sgd"}
        The baseline's classifier: dask-ml's ``LogisticRegression`` (the features of
        the training images in the workers' memory), or an ``SGDClassifier`` wrapped
        in dask-ml's ``Incremental``, one block of features at a time, ``epochs``
        passes (for stores whose features do not fit). CNNs ignore it.
    weights : str, optional
        Local weights file of a backbone (see :func:`idigdask.models.backbone`);
        None: random initial weights.
    epochs : int
        The last epoch to train (counting epochs done before a resume).
    learning_rate : float, optional
        Adam's learning rate; None: :data:`idigdask.models.DEFAULT_LEARNING_RATE`
        (1e-4, the Smithsonian study's).
    input_size : int, optional
        Train the network at this square size (resized inside the model); None: the
        store's size.
    patience : int
        Epochs without a better validation loss before stopping (0: never stop early).
    lr_patience : int
        Halve the learning rate when the validation loss has not improved for this
        many epochs (0: a constant learning rate). It calms the epoch-to-epoch swings
        of a small network trained with dropout, so that early stopping does not end
        on one of them.
    bn_momentum : float, optional
        Batch-norm momentum of the smithsonian network (None: Keras' 0.99); 0.9 suits
        short runs of a few hundred steps (see :func:`idigdask.models.smithsonian_cnn`).
        Backbones ignore it.
    fractions : tuple of 3 floats
        Train, validation and test shares of the specimens (of the images, when
        splitting by recordset).
    split_by : {"specimen", "recordset"}
        What the split keeps together: the images of a specimen
        (:func:`~idigdask.splits.split_by_specimen`, stratified by label), or whole
        recordsets, so that the validation and test images come from providers the
        model never saw (:func:`~idigdask.splits.split_by_recordset`).
    seed : int
        Seed of the split, the order of the images, the augmentation and the initial
        weights (it is the seed of both feeds).
    augment : bool
        Random flips, quarter turns, small translations, brightness and contrast on
        the training batches (see :func:`idigdask.batches.augment_images`); the
        validation batches are never augmented.
    resume : bool
        Continue from ``out/checkpoints/last.keras`` at the next epoch.
    verbose : int
        0: silent; 1: one line per epoch.
    feed : FeedOptions
        The batches: ``batch_size`` (images per training step), ``window_chunks``,
        ``prefetch`` and the ``keras.utils.PyDataset`` settings. Its ``shuffle``,
        ``augment``, ``seed``, ``one_hot`` and normalization are set by training
        itself: the training split is shuffled and augmented (``augment``), the
        validation split is not, both use ``seed``, and the scaling is the one the
        model expects (:func:`idigdask.models.input_scaling`) with the store's
        channel statistics.

    Examples
    --------
    >>> from idigdask import TrainOptions
    >>> TrainOptions(epochs=5, label="label").epochs
    5
    >>> idigdask.train("sheets.zarr", out="model", options=TrainOptions(epochs=5))  # doctest: +SKIP
    """

    label: str = setting("train.label")
    model: str | None = setting("train.model")
    classifier: str = setting("train.classifier")
    weights: str | None = setting("train.weights")
    epochs: int = setting("train.epochs")
    learning_rate: float | None = setting("train.learning-rate")
    input_size: int | None = setting("train.input-size")
    patience: int = setting("train.patience")
    lr_patience: int = setting("train.lr-patience")
    bn_momentum: float | None = setting("train.bn-momentum")
    fractions: tuple[float, float, float] = setting("train.fractions")
    split_by: str = setting("train.split-by")
    seed: int = setting("train.seed")
    augment: bool = setting("train.augment")
    resume: bool = setting("train.resume")
    verbose: int = setting("train.verbose")
    feed: FeedOptions = field(default_factory=FeedOptions)

    def __post_init__(self) -> None:
        if isinstance(self.weights, os.PathLike):
            self.weights = os.fspath(self.weights)
        if isinstance(self.feed, dict):
            self.feed = FeedOptions(**self.feed)
        coerce_fields(self)
        if not isinstance(self.feed, FeedOptions):
            raise UserError(f"feed must be a FeedOptions, not {type(self.feed).__name__}")
        check(self, {
            "model": (lambda v: v is None or v.lower() in MODELS or v.lower() == "baseline",
                      f"one of {', '.join(MODELS)}, baseline"),
            "classifier": (lambda v: v in ("logistic", "sgd"), "logistic or sgd"),
            "split_by": (lambda v: v in SPLIT_BY, " or ".join(SPLIT_BY)),
            "epochs": (lambda v: v >= 1, "at least 1"),
            "learning_rate": (lambda v: v is None or v > 0, "above 0"),
            "input_size": (lambda v: v is None or v >= 1, "at least 1 pixel"),
            "patience": (lambda v: v >= 0, "0 or more"),
            "lr_patience": (lambda v: v >= 0, "0 or more"),
            "bn_momentum": (lambda v: v is None or 0 <= v <= 1, "from 0 to 1"),
            "fractions": (lambda v: all(f >= 0 for f in v) and sum(v) > 0,
                          "three non-negative shares, not all 0"),
            "verbose": (lambda v: v >= 0, "0 or more"),
        })


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes
    ----------
    model_dir : str
        The model folder.
    classes : list
        Class labels, in the order of the model's outputs.
    epochs : int
        Epochs completed in total (including those before a resume).
    best_epoch : int
        The epoch (1-based) whose weights were saved.
    best_val_loss, best_val_accuracy : float
        Validation loss and accuracy of that epoch.
    stopped_early : bool
        Whether early stopping ended training.
    split_counts : dict
        Images per split.
    seconds : float
        Wall time of this call.
    history : dict
        Metric name -> one value per epoch.
    """

    model_dir: str
    classes: list
    epochs: int
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float | None
    stopped_early: bool
    split_counts: dict
    seconds: float
    history: dict = field(repr=False, default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary without the per-epoch history."""
        out = asdict(self)
        out.pop("history")
        return out


# ---------------------------------------------------------------------------------
# Model folders
# ---------------------------------------------------------------------------------
def read_model_dir(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check a model folder's ``config.json``.

    Parameters
    ----------
    model_dir : str or path
        A folder written by :func:`train`.

    Returns
    -------
    dict
        The configuration, with ``model_path`` and ``model_dir`` added.

    Raises
    ------
    UserError
        If the folder is not a model folder.
    """
    folder = Path(model_dir)
    config_path = folder / "config.json"
    if not folder.is_dir() or not config_path.is_file():
        raise UserError(f"{folder}: not a model folder (no config.json and model.keras; "
                        "create one with 'idigdask train')")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{config_path}: not valid JSON ({exc.msg})") from None
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise UserError(f"{config_path}: not an idigdask model configuration")
    # a CNN's weights are model.keras; the baseline's coefficients baseline.npz
    model_path = folder / str(config.get("model_file") or "model.keras")
    if not model_path.is_file():
        raise UserError(f"{folder}: not a model folder (no {model_path.name}; "
                        "create one with 'idigdask train')")
    config["model_dir"] = str(folder)
    config["model_path"] = str(model_path)
    return config


def _write_json(path: Path, value: Any) -> None:
    # Write then rename, so an interrupted run never leaves half a file behind.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _versions() -> dict[str, str]:
    import keras

    from . import __version__

    return {"idigdask": __version__, "keras": keras.__version__,
            "keras_backend": keras.backend.backend(), "numpy": np.__version__,
            "python": platform.python_version()}


# ---------------------------------------------------------------------------------
# Labels and split
# ---------------------------------------------------------------------------------
def labelled_images(ds, label: str, store: Any = None) -> tuple[np.ndarray, np.ndarray, list]:
    """Return the indices, class codes and classes of the labelled images of a store.

    Raises
    ------
    UserError
        If the store has no such label, or fewer than two classes.
    """
    where = store if store is not None else "the store"
    if label not in ds.coords and label not in ds.data_vars:
        names = [n for n in ds.coords if ds[n].dims == (layout_of(ds).dim,)]
        raise UserError(f"{where}: no label column {label!r} in the store "
                        f"(image coordinates: {', '.join(map(str, names))})")
    raw = np.asarray(ds[label].values)
    if raw.dtype.kind not in "iuf":
        raw = raw.astype(object)
    keep = np.nonzero(~missing_labels(raw))[0]
    values = raw[keep]
    if values.dtype.kind == "f":
        values = values.astype(np.int64)
    elif values.dtype.kind not in "iu":
        values = values.astype(str)
    classes = np.unique(values)
    if len(classes) < 2:
        raise UserError(f"{where}: label {label!r} has {len(classes)} class(es) among "
                        f"{len(keep)} labelled images; training needs at least two")
    codes = np.searchsorted(classes, values)
    return keep, codes.astype(np.int64), [c.item() if hasattr(c, "item") else c for c in classes]


def _coordinate(ds, name: str, default: str = "") -> np.ndarray:
    if name in ds.coords:
        return np.asarray(ds[name].values).astype(object).astype(str)
    return np.full(ds.sizes[layout_of(ds).dim], default, dtype=object).astype(str)


def _make_split(ds, keep, codes, classes, seed, fractions,
                split_by: str = "specimen", store: Any = None) -> pd.DataFrame:
    media = _coordinate(ds, "media_uuid")
    if not media.any():
        media = np.arange(ds.sizes[layout_of(ds).dim]).astype(str)
    records = _coordinate(ds, "record_uuid")
    recordsets = _coordinate(ds, "recordset")
    if split_by == "recordset":
        if not recordsets[keep].any():
            raise UserError(f"{store if store is not None else 'the store'}: no image has a "
                            "recordset; --split-by recordset needs a store built from a "
                            "catalog with recordsets")
        split = split_by_recordset(recordsets[keep], fractions, seed=seed)
    else:
        split = split_by_specimen(records[keep], codes, fractions, seed=seed,
                                  media_uuid=media[keep])
    table = pd.DataFrame({"media_uuid": media[keep], "record_uuid": records[keep],
                          "label": [classes[c] for c in codes], "split": split,
                          "image_index": keep.astype(np.int64), "recordset": recordsets[keep]})
    if "offset" in ds.coords:  # a recording's clips: each found again by its offset
        table["offset"] = np.asarray(ds["offset"].values, "float64")[keep]
    return table


def _check_split(table: pd.DataFrame) -> None:
    counts = table["split"].value_counts()
    for name in ("train", "val"):
        if counts.get(name, 0) == 0:
            raise UserError(f"too few labelled specimens ({table['record_uuid'].nunique()}) "
                            f"for a {name!r} split")


# ---------------------------------------------------------------------------------
# The epoch bookkeeping callback
# ---------------------------------------------------------------------------------
def _make_callback(model_dir: Path, state: dict, history: dict, patience: int, verbose: int):
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        """Saves the last and best checkpoints, the history and the resume state each
        epoch, and stops when the validation loss stops improving."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = dict(logs or {})
            for key, value in logs.items():
                history.setdefault(key, []).append(float(value))
            history.setdefault("epoch", []).append(epoch + 1)
            ckpt = model_dir / "checkpoints"
            self.model.save(ckpt / "last.keras")
            val_loss = float(logs.get("val_loss", logs.get("loss", np.inf)))
            if val_loss < state["best_val_loss"]:
                state.update(best_val_loss=val_loss, best_epoch=epoch + 1, wait=0,
                             best_val_accuracy=logs.get("val_accuracy"))
                shutil.copyfile(ckpt / "last.keras", ckpt / "best.keras")
            else:
                state["wait"] += 1
            state["epochs_done"] = epoch + 1
            if patience and state["wait"] >= patience:
                state["stopped_early"] = True
                self.model.stop_training = True
                if verbose:
                    print(f"early stop: no better val_loss for {patience} epochs "
                          f"(best epoch {state['best_epoch']})", flush=True)
            _write_json(model_dir / "history.json", history)
            pd.DataFrame(history).to_csv(model_dir / "history.csv", index=False)
            _write_json(ckpt / "state.json", state)

    return EpochRecorder()


# ---------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------
def train(store: Any, out: str | os.PathLike = "model",
          options: TrainOptions | dict | None = None, *, client: Any = None,
          cluster: str | None = None, jobs: int | str | None = None,
          cluster_options: dict | None = None,
          storage_options: dict | None = None, **overrides: Any) -> TrainResult:
    """Train a classifier on the labelled images of a store.

    Parameters
    ----------
    store : str, path or xarray.Dataset
        The image store (local path or fsspec URL) built by ``idigdask build``.
    out : str or path
        The model folder to write (replaced unless ``resume``).
    options : TrainOptions or dict, optional
        The network, epochs, split and batches; defaults from the dask config
        ``idigdask.train`` and ``idigdask.feed``.
    client : distributed.Client, optional
        Read batches on this client's workers; None uses the current client if there
        is one and a local thread pool otherwise; False forces the thread pool (the
        feed's rule, :func:`idigdask.loaders.keras.resolve_client`: training never
        starts a cluster of its own).
    cluster, jobs, cluster_options : optional
        Read batches on workers in batch jobs of this kind (``"slurm"``, ``"sge"``...),
        started for the call as :func:`idigdask.get_client` takes them; the network
        trains in this process.
    storage_options : dict, optional
        fsspec options for a remote store (never saved).
    **overrides
        Fields of :class:`TrainOptions` or of its :class:`~idigdask.batches.FeedOptions`
        (``epochs=2``, ``batch_size=16``), over ``options``.

    Returns
    -------
    TrainResult

    Raises
    ------
    UserError
        If the store has no such label, fewer than two classes, too few specimens for
        the split, or ``resume`` finds no checkpoint.
    OptionError
        For an option out of range or unknown, naming it.

    Examples
    --------
    >>> idigdask.train("sheets.zarr", "model", epochs=20, batch_size=16)  # doctest: +SKIP
    """
    if cluster is not None and str(cluster).lower() != "local":
        from .cluster import get_client

        with get_client(cluster=cluster, jobs=jobs, cluster_options=cluster_options) as started:
            return train(store, out, options, client=started,
                         storage_options=storage_options, **overrides)
    # checked before Keras loads, so that a bad option is one line with no TensorFlow log
    options = with_overrides(TrainOptions, options, overrides, nested={"feed": FeedOptions})
    if (options.model or "").lower() == "baseline":
        from .baseline import train_baseline

        return train_baseline(store, out, options, client=client,
                              storage_options=storage_options)
    label, model, seed = options.label, options.model, options.seed
    epochs, patience, lr_patience = options.epochs, options.patience, options.lr_patience
    resume, verbose, augment = options.resume, options.verbose, options.augment
    batch_size = options.feed.batch_size

    import keras

    from .loaders.keras import StoreFeed
    from .models import build_model, compile_model, input_scaling

    started = time.perf_counter()
    model_dir = Path(out)
    ds = open_store(store, storage_options)
    kind = layout_of(ds)
    if kind.array not in ds:
        raise UserError(f"{store}: not an image store (no '{kind.array}' variable)")
    model = model or ("calls" if kind.media == "sounds" else "smithsonian")
    keep, codes, classes = labelled_images(ds, label, store)
    state_path = model_dir / "checkpoints" / "state.json"
    if resume:
        if not state_path.is_file() or not (model_dir / "checkpoints" / "last.keras").is_file():
            raise UserError(f"{model_dir}: nothing to resume (no checkpoints/last.keras)")
        state = json.loads(state_path.read_text())
        history = json.loads((model_dir / "history.json").read_text())
        table = pd.read_parquet(model_dir / "split.parquet")
    else:
        _clear_model_dir(model_dir)
        state = {"epochs_done": 0, "best_val_loss": float("inf"), "best_epoch": 0,
                 "best_val_accuracy": None, "wait": 0, "stopped_early": False}
        history = {}
        table = _make_split(ds, keep, codes, classes, seed, options.fractions,
                            options.split_by, store)
        _check_split(table)
        table.to_parquet(model_dir / "split.parquet", index=False)
    code_of = {c: i for i, c in enumerate(classes)}

    normalize = input_scaling(model)
    mean, std = ds.attrs.get("channel_mean"), ds.attrs.get("channel_std")
    if normalize == "store" and (mean is None or std is None):
        normalize = "unit"  # a store without statistics: scale to [0, 1] instead
    image_shape = input_shape(ds)
    config = {
        "format": CONFIG_FORMAT, "label": label, "classes": classes, "model": model,
        "store": store_location(ds), "media": kind.media, "sound": ds.attrs.get("sound"),
        "size": int(ds.attrs.get("size", image_shape[0])),
        "image_shape": list(image_shape), "resize_mode": ds.attrs.get("resize_mode"),
        "input_size": options.input_size, "normalize": normalize,
        "channel_mean": mean, "channel_std": std, "seed": seed, "batch_size": batch_size,
        "epochs": epochs, "learning_rate": options.learning_rate, "patience": patience,
        "augment": augment, "fractions": list(options.fractions),
        "split_by": options.split_by,
        # backbones keep their own batch-norm settings (see build_model)
        "bn_momentum": options.bn_momentum if model.lower() == "smithsonian" else None,
        "lr_patience": lr_patience,
        "catalog_source": ds.attrs.get("catalog_source"),
        "store_created": ds.attrs.get("created"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }

    keras.utils.set_random_seed(seed + state["epochs_done"])
    if resume:
        net = keras.saving.load_model(model_dir / "checkpoints" / "last.keras", safe_mode=True)
    else:
        net = compile_model(build_model(model, image_shape, len(classes),
                                        weights=options.weights, input_size=options.input_size,
                                        bn_momentum=options.bn_momentum),
                            options.learning_rate)

    def feed(part: str, **settings):
        rows = table[table["split"] == part]
        # the scaling the model expects, with the store's statistics (see TrainOptions.feed)
        feed_options = replace(options.feed, seed=seed, normalize=normalize, one_hot=False,
                               mean=mean, std=std, **settings)
        return StoreFeed(ds, rows["image_index"].to_numpy(),
                         rows["label"].map(code_of).to_numpy(), feed_options,
                         n_classes=len(classes), client="auto" if client is None else client,
                         storage_options=storage_options)

    train_feed = feed("train", shuffle=True, augment=augment)
    val_feed = feed("val", shuffle=False, augment=False)
    train_feed.set_epoch(state["epochs_done"])
    train_codes = table.loc[table["split"] == "train", "label"].map(code_of)
    try:
        if state["epochs_done"] < epochs and not (resume and state["stopped_early"]):
            net.fit(train_feed, validation_data=val_feed, epochs=epochs,
                    initial_epoch=state["epochs_done"], shuffle=False,
                    class_weight=class_weights(train_codes.to_numpy()),
                    callbacks=_callbacks(model_dir, state, history, patience, lr_patience,
                                         verbose),
                    verbose=2 if verbose else 0)
    finally:
        train_feed.close()
        val_feed.close()

    best = model_dir / "checkpoints" / "best.keras"
    if best.is_file():
        net.load_weights(best)
    net.save(model_dir / "model.keras")
    _write_json(model_dir / "config.json", config)
    return TrainResult(
        model_dir=str(model_dir), classes=classes, epochs=state["epochs_done"],
        best_epoch=state["best_epoch"], best_val_loss=state["best_val_loss"],
        best_val_accuracy=state["best_val_accuracy"], stopped_early=state["stopped_early"],
        split_counts={k: int(v) for k, v in table["split"].value_counts().items()},
        seconds=round(time.perf_counter() - started, 2), history=history)


def _callbacks(model_dir: Path, state: dict, history: dict, patience: int, lr_patience: int,
               verbose: int) -> list:
    import keras

    callbacks = [_make_callback(model_dir, state, history, patience, verbose)]
    if lr_patience and lr_patience > 0:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=int(lr_patience), min_lr=1e-6,
            verbose=1 if verbose else 0))
    return callbacks


def _clear_model_dir(model_dir: Path) -> None:
    # A fresh run must not resume from, or keep the best weights of, an older one.
    for name in ("model.keras", "baseline.npz", "config.json", "history.json", "history.csv",
                 "split.parquet"):
        (model_dir / name).unlink(missing_ok=True)
    shutil.rmtree(model_dir / "checkpoints", ignore_errors=True)
    (model_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
