"""Evaluate a trained model on its held-out specimens: metrics and plots.

The test split saved with the model (``split.parquet``) names the specimens the model
never saw in training or validation. :func:`evaluate` scores them and writes::

    REPORT_DIR/
        metrics.json          accuracy, precision / recall / F1 per class and macro,
                              ROC AUC, confusion matrix, the worst-classified images,
                              the metrics per recordset and per source size, and
                              those of the models compared with it
        by_recordset.png      accuracy per recordset (institution), each model
        by_source_size.png    accuracy per source size, each model
        compare.png           accuracy, macro F1 and ROC AUC side by side (compare=)
        history.png           loss and accuracy per epoch
        confusion.png         confusion matrix
        roc.png               ROC curve(s)
        worst.png             the worst-classified test images, titled with their
                              media uuid and score

The metric functions are plain NumPy and take class codes ``0..k-1``. The settings of
:func:`evaluate` are one :class:`EvaluateOptions`, whose defaults are the dask config's
``idigdask.evaluate``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import UserError
from .options import check, coerce_fields, setting, with_overrides
from .store import layout_of


@dataclass
class EvaluateOptions:
    """How :func:`evaluate` scores the held-out specimens.

    Every default is the dask config's ``idigdask.evaluate.<field>``
    (``idigdask.yaml``; ``DASK_IDIGDASK__EVALUATE__BATCH_SIZE=128``), see
    :mod:`idigdask.options`. The scaling of the images is the model's own, recorded in
    its ``config.json``.

    Parameters
    ----------
    batch_size : int
        Images per inference step.
    n_worst : int
        How many worst-classified test images to list and show (0: none).

    Examples
    --------
    >>> from idigdask import EvaluateOptions
    >>> EvaluateOptions(n_worst=8).n_worst
    8
    """

    batch_size: int = setting("evaluate.batch-size")
    n_worst: int = setting("evaluate.n-worst")

    def __post_init__(self) -> None:
        coerce_fields(self)
        check(self, {"batch_size": (lambda v: v >= 1, "at least 1"),
                     "n_worst": (lambda v: v >= 0, "0 or more")})


# ---------------------------------------------------------------------------------
# Metrics (pure functions)
# ---------------------------------------------------------------------------------
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs, shape ``(n_classes, n_classes)``."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def precision_recall_f1(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined)."""
    matrix = np.asarray(matrix, dtype=float)
    tp = np.diag(matrix)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(matrix.sum(0) > 0, tp / matrix.sum(0), 0.0)
        recall = np.where(matrix.sum(1) > 0, tp / matrix.sum(1), 0.0)
        f1 = np.where(precision + recall > 0,
                      2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def _average_ranks(values: np.ndarray) -> np.ndarray:
    # Ranks 1..n with ties sharing their mean rank, as the Mann-Whitney U statistic needs.
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inverse, ranks)
    return (sums / counts)[inverse]


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of a binary problem (NaN if one side is empty).

    Parameters
    ----------
    positive : numpy.ndarray of bool
        Whether each example is of the positive class.
    score : numpy.ndarray of float
        Score of the positive class.

    Returns
    -------
    float
        The probability that a random positive scores above a random negative (ties
        count one half).
    """
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(score, float))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    positive = np.asarray(positive, bool)
    order = np.argsort(-np.asarray(score, float), kind="mergesort")
    score_sorted, pos_sorted = np.asarray(score, float)[order], positive[order]
    # One point per distinct score: the last position of each run of equal scores.
    last = np.r_[np.nonzero(np.diff(score_sorted))[0], len(score_sorted) - 1]
    tps, fps = np.cumsum(pos_sorted)[last], np.cumsum(~pos_sorted)[last]
    tpr = np.r_[0.0, tps / max(1, positive.sum())]
    fpr = np.r_[0.0, fps / max(1, (~positive).sum())]
    return fpr, tpr


def classification_metrics(y_true: np.ndarray, scores: np.ndarray,
                           classes: list) -> dict[str, Any]:
    """Accuracy, per-class and macro precision / recall / F1, ROC AUC, confusion matrix.

    Parameters
    ----------
    y_true : numpy.ndarray of int
        True class codes ``0..k-1``.
    scores : numpy.ndarray
        Class probabilities ``(n, k)``.
    classes : list
        Class labels, in code order.

    Returns
    -------
    dict
        JSON-able metrics. ``roc_auc`` is the binary AUC of the second class for two
        classes, and the macro average of one-vs-rest AUCs otherwise.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    k = len(classes)
    y_pred = np.argmax(scores, axis=1)
    matrix = confusion_matrix(y_true, y_pred, k)
    precision, recall, f1 = precision_recall_f1(matrix)
    aucs = [roc_auc(y_true == c, scores[:, c]) for c in range(k)]
    auc = aucs[1] if k == 2 else float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else None
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else None,
        "per_class": {str(c): {"precision": float(precision[i]), "recall": float(recall[i]),
                               "f1": float(f1[i]), "support": int(matrix[i].sum()),
                               "roc_auc_ovr": _finite(aucs[i])}
                      for i, c in enumerate(classes)},
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                  "f1": float(f1.mean())},
        "roc_auc": _finite(auc),
        "confusion_matrix": {"classes": [str(c) for c in classes], "rows": "true",
                             "columns": "predicted", "matrix": matrix.tolist()},
    }


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


#: Bins of the source images' longer side for :func:`breakdown` by source size (px).
SIZE_BINS = (1000, 2000, 4000)


def size_groups(width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """The source-size group of each image, by its longer side (``SIZE_BINS``).

    Examples
    --------
    >>> size_groups(np.array([600, 3000, 0]), np.array([900, 4500, 0])).tolist()
    ['<1000 px', '>=4000 px', 'unknown']
    """
    side = np.maximum(np.asarray(width, np.int64), np.asarray(height, np.int64))
    edges = (0, *SIZE_BINS)
    names = [f"<{SIZE_BINS[0]} px"] + [f"{a}-{b - 1} px" for a, b in zip(SIZE_BINS, SIZE_BINS[1:])] \
        + [f">={SIZE_BINS[-1]} px"]
    group = np.asarray(names, dtype=object)[np.searchsorted(edges, side, side="right") - 1]
    group[side <= 0] = "unknown"
    return group.astype(str)


def breakdown(y_true: np.ndarray, scores: np.ndarray, classes: list,
              groups: np.ndarray) -> dict[str, dict[str, Any]]:
    """Held-out metrics within each group of images (recordset, source size...).

    A model that learnt a provider's scanner rather than the stain scores well on
    the providers it saw and badly on the others: the metrics per recordset show it,
    the overall figure hides it.

    Parameters
    ----------
    y_true : numpy.ndarray of int
        True class codes.
    scores : numpy.ndarray
        Class probabilities ``(n, k)``.
    classes : list
        Class labels, in code order.
    groups : numpy.ndarray
        The group of each image.

    Returns
    -------
    dict
        Group -> ``n``, ``accuracy``, ``macro_f1``, ``roc_auc`` (None where one class
        is missing) and ``support`` per class; the largest groups first.

    Examples
    --------
    >>> scores = np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7]])
    >>> breakdown(np.array([0, 1, 1, 1]), scores, [0, 1], np.array(["a", "a", "b", "b"]))["b"]["accuracy"]
    0.5
    """
    y_true = np.asarray(y_true, np.int64)
    groups = np.asarray(groups).astype(str)
    out: dict[str, dict[str, Any]] = {}
    names, counts = np.unique(groups, return_counts=True)
    for name in names[np.argsort(-counts, kind="stable")]:
        where = groups == name
        m = classification_metrics(y_true[where], scores[where], classes)
        out[str(name)] = {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"],
                          "roc_auc": m["roc_auc"],
                          "support": {c: v["support"] for c, v in m["per_class"].items()}}
    return out


# ---------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------
def _test_images(model_dir: Path, ds, classes: list) -> tuple[np.ndarray, np.ndarray, int]:
    table = pd.read_parquet(model_dir / "split.parquet")
    test = table[table["split"] == "test"]
    if test.empty:
        raise UserError(f"{model_dir}/split.parquet: the model has no test split")
    position = pd.Index(_entry_keys(ds["media_uuid"].values,
                                    ds["offset"].values if "offset" in ds.coords else None))
    found = position.get_indexer(_entry_keys(test["media_uuid"],
                                             test["offset"] if "offset" in test else None))
    code_of = {str(c): i for i, c in enumerate(classes)}
    codes = test["label"].astype(str).map(code_of)
    keep = (found >= 0) & codes.notna().to_numpy()
    if not keep.any():
        raise UserError(f"none of the {len(test)} test images of {model_dir} are in the store")
    return found[keep].astype(np.int64), codes[keep].to_numpy(np.int64), int((~keep).sum())


def _entry_keys(media: Any, offsets: Any = None) -> np.ndarray:
    """Keys of a store's entries: an image's media uuid; a clip's, with its offset."""
    keys = np.asarray(media).astype(object).astype(str)
    if offsets is None:
        return keys
    return np.array([f"{k}@{float(t):.4f}" for k, t in zip(keys, np.asarray(offsets))], object)


def _recording_metrics(ds, scored: dict[str, Any], classes: list) -> dict[str, Any]:
    """Held-out metrics of whole recordings: each scored by the mean of its clips."""
    from .predict import recording_scores

    media = np.asarray(ds["media_uuid"].values).astype(object).astype(str)[scored["order"]]
    frame = pd.DataFrame({"media": media, "y": scored["y_true"]})
    frame["at"] = np.arange(len(frame))
    frame = frame.sort_values(["media", "at"], kind="stable")
    starts = np.flatnonzero(np.r_[True, frame["media"].to_numpy()[1:]
                                  != frame["media"].to_numpy()[:-1]])
    counts = np.diff(np.r_[starts, len(frame)])
    scores = scored["scores"][frame["at"].to_numpy()]
    mean = recording_scores(scores, starts, counts).astype(np.float64)
    return classification_metrics(frame["y"].to_numpy()[starts], mean, classes)


def _score_model(folder: Path, config: dict[str, Any], ds, options: EvaluateOptions,
                 client: Any, storage_options: dict | None) -> dict[str, Any]:
    """The scores of a model folder's test images, in store order."""
    from .batches import store_location

    classes = config["classes"]
    indices, y_true, missing = _test_images(folder, ds, classes)
    location = store_location(ds)
    source = location if location is not None else ds[layout_of(ds).array].variable
    chunk_size = int(ds.attrs.get("chunk_size") or 64)
    label_of = dict(zip(indices.tolist(), y_true.tolist()))
    if config.get("model") == "baseline":
        from .baseline import score_images

        order = np.unique(indices)  # store order: chunk-friendly feature tasks
        scores = score_images(config, source, order, chunk_size,
                              client=None if client == "auto" else client,
                              storage_options=storage_options)
    else:
        import keras

        from .loaders.keras import StoreFeed

        model = keras.saving.load_model(config["model_path"], safe_mode=True)
        feed = StoreFeed(ds, indices, batch_size=options.batch_size, shuffle=False,
                         augment=False, one_hot=False, normalize=config["normalize"],
                         mean=config["channel_mean"], std=config["channel_std"],
                         client=client, storage_options=storage_options)
        try:
            scores = np.asarray(model.predict(feed, verbose=0), dtype=np.float64)
        finally:
            feed.close()
        order, source, chunk_size = feed.order, feed.source, feed.chunk_size
    # the images are scored in store order: put the labels in that order too
    y_true = np.array([label_of[int(i)] for i in order], dtype=np.int64)
    return {"order": np.asarray(order, np.int64), "y_true": y_true,
            "scores": np.asarray(scores, np.float64), "missing": missing, "source": source,
            "chunk_size": chunk_size}


def _coordinate_at(ds, name: str, order: np.ndarray, default: Any = "") -> np.ndarray:
    if name not in ds.coords:
        return np.full(len(order), default, dtype=object)
    return np.asarray(ds[name].values)[order]


def _breakdowns(ds, scored: dict[str, Any], classes: list) -> dict[str, Any]:
    order = scored["order"]
    recordsets = pd.Series(_coordinate_at(ds, "recordset", order), dtype=object)
    recordsets = recordsets.fillna("").astype(str).replace("", "(none)").to_numpy()
    sizes = size_groups(_coordinate_at(ds, "source_width", order, 0).astype(np.int64),
                        _coordinate_at(ds, "source_height", order, 0).astype(np.int64))
    return {"by_recordset": breakdown(scored["y_true"], scored["scores"], classes, recordsets),
            "by_source_size": breakdown(scored["y_true"], scored["scores"], classes, sizes)}


def _model_name(config: dict[str, Any], folder: Path, taken: set) -> str:
    name = str(config.get("model") or folder.name)
    return name if name not in taken else f"{name} ({folder.name})"


def evaluate(model_dir: str | os.PathLike, store: Any = None,
             options: EvaluateOptions | dict | None = None, *,
             out: str | os.PathLike | None = None, storage_options: dict | None = None,
             compare: str | os.PathLike | list | tuple | None = None,
             client: Any = None, cluster: str | None = None, jobs: int | str | None = None,
             cluster_options: dict | None = None, **overrides: Any) -> dict[str, Any]:
    """Score a model on its held-out test specimens; write metrics.json and plots.

    The metrics are given overall, per recordset (the provider: a model that learnt a
    scanner's look instead of the stain does well on the recordsets it saw and badly
    on new ones) and per source size (the longer side of the original image). Other
    model folders (``compare``, e.g. the classical baseline of ``idigdask train
    --model baseline`` trained on the same split) are scored on their own test
    images beside it: their metrics, breakdowns and ROC curves go in the same report.

    Parameters
    ----------
    model_dir : str or path
        A folder written by :func:`idigdask.train` (a CNN's or a baseline's).
    store : str, path or xarray.Dataset, optional
        The image store holding the test images (default: the store the model was
        trained on, as recorded in its ``config.json``).
    options : EvaluateOptions or dict, optional
        Batch size and the number of worst images shown; defaults from the dask config
        ``idigdask.evaluate``.
    out : str or path, optional
        The report folder (default ``MODEL_DIR/evaluation``).
    storage_options : dict, optional
        fsspec options for a remote store.
    compare : str, path or sequence of them, optional
        Other model folders to score on the same store, side by side.
    client : distributed.Client, optional
        Read batches on this client's workers; None: the current client if there is
        one, else a local thread pool; False: the thread pool (the feed's rule, see
        :func:`idigdask.loaders.keras.resolve_client`).
    cluster, jobs, cluster_options : optional
        Read batches on workers in batch jobs of this kind (``"slurm"``, ``"sge"``...),
        started for the call as :func:`idigdask.get_client` takes them.
    **overrides
        Fields of :class:`EvaluateOptions` (``batch_size=32``), over ``options``.

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` (with ``by_recordset``,
        ``by_source_size`` and, given ``compare``, ``compared``: each other model's
        metrics and breakdowns, and whether its test images are the same), with
        ``report_dir`` and ``plots``.

    Raises
    ------
    UserError
        If ``model_dir`` (or a ``compare`` folder) is not a model folder or the store
        holds none of its test images.
    OptionError
        For an option out of range or unknown, naming it.

    Examples
    --------
    >>> m = idigdask.evaluate("model", "sheets.zarr", out="report",
    ...                       compare=["baseline"])                  # doctest: +SKIP
    >>> m["accuracy"], m["compared"]["baseline"]["accuracy"]         # doctest: +SKIP
    """
    if cluster is not None and str(cluster).lower() != "local":
        from .cluster import get_client

        with get_client(cluster=cluster, jobs=jobs, cluster_options=cluster_options) as started:
            return evaluate(model_dir, store, options, out=out, storage_options=storage_options,
                            compare=compare, client=started, **overrides)
    options = with_overrides(EvaluateOptions, options, overrides)
    from .batches import open_store, read_images
    from .report import plot_confusion, plot_groups, plot_history, plot_image_grid, plot_roc
    from .train import read_model_dir

    config = read_model_dir(model_dir)
    folder = Path(model_dir)
    others = [Path(c) for c in ([compare] if isinstance(compare, (str, os.PathLike))
                                else list(compare or []))]
    other_configs = [read_model_dir(c) for c in others]  # a bad folder: before any scoring
    store = store if store is not None else config.get("store")
    if store is None:
        raise UserError(f"{folder}: no store recorded in config.json; pass the store")
    ds = open_store(store, storage_options)
    classes = config["classes"]
    reader = "auto" if client is None else client
    scored = _score_model(folder, config, ds, options, reader, storage_options)
    order, y_true, scores = scored["order"], scored["y_true"], scored["scores"]

    metrics = classification_metrics(y_true, scores, classes)
    metrics["model"] = config.get("model")
    metrics["test_images_missing_from_store"] = scored["missing"]
    metrics.update(_breakdowns(ds, scored, classes))
    if layout_of(ds).media == "sounds":  # the clips' metrics above; the recordings' here
        metrics["recordings"] = _recording_metrics(ds, scored, classes)
    report_dir = Path(out) if out is not None else folder / "evaluation"
    report_dir.mkdir(parents=True, exist_ok=True)

    media = np.asarray(ds["media_uuid"].values).astype(object).astype(str)[order]
    p_true = scores[np.arange(len(order)), y_true]
    worst = np.argsort(p_true, kind="mergesort")[:options.n_worst]
    metrics["worst"] = [{"media_uuid": media[i], "true": str(classes[y_true[i]]),
                         "predicted": str(classes[int(np.argmax(scores[i]))]),
                         "score_true": float(p_true[i])} for i in worst]

    main_name = _model_name(config, folder, set())
    curves = {}
    for c in (range(1, 2) if len(classes) == 2 else range(len(classes))):
        positive = y_true == c
        if positive.any() and (~positive).any():
            fpr, tpr = roc_curve(positive, scores[:, c])
            key = str(classes[c]) if not others else f"{main_name}: {classes[c]}"
            curves[key] = (fpr, tpr, roc_auc(positive, scores[:, c]))
    compared: dict[str, Any] = {}
    test_set = set(order.tolist())
    for other, other_config in zip(others, other_configs):
        name = _model_name(other_config, other, {main_name, *compared})
        got = _score_model(other, other_config, ds, options, reader, storage_options)
        m = classification_metrics(got["y_true"], got["scores"], other_config["classes"])
        compared[name] = {"model_dir": str(other), "model": other_config.get("model"),
                          "n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"],
                          "roc_auc": m["roc_auc"], "confusion_matrix": m["confusion_matrix"],
                          "same_test_images": set(got["order"].tolist()) == test_set,
                          **_breakdowns(ds, got, other_config["classes"])}
        if len(other_config["classes"]) == 2:
            positive = got["y_true"] == 1
            if positive.any() and (~positive).any():
                fpr, tpr = roc_curve(positive, got["scores"][:, 1])
                curves[f"{name}: {other_config['classes'][1]}"] = (
                    fpr, tpr, roc_auc(positive, got["scores"][:, 1]))
    if compared:
        metrics["compared"] = compared

    plots = {"confusion": plot_confusion(np.array(metrics["confusion_matrix"]["matrix"]),
                                         classes, report_dir / "confusion.png")}
    history_path = folder / "history.json"
    if history_path.is_file():
        plots["history"] = plot_history(json.loads(history_path.read_text()),
                                        report_dir / "history.png")
    if curves:
        plots["roc"] = plot_roc(curves, report_dir / "roc.png")
    for key, title in (("by_recordset", "held-out accuracy per recordset"),
                       ("by_source_size", "held-out accuracy per source size (longer side)")):
        per_model = {main_name: metrics[key], **{n: c[key] for n, c in compared.items()}}
        plots[key] = plot_groups(per_model, report_dir / f"{key}.png", title)
    if compared:
        headline = {n: {"accuracy": {"value": m["accuracy"], "n": m["n"]},
                        "macro F1": {"value": m["macro_f1"], "n": m["n"]},
                        "ROC AUC": {"value": m["roc_auc"], "n": m["n"]}}
                    for n, m in {main_name: {"accuracy": metrics["accuracy"],
                                             "macro_f1": metrics["macro"]["f1"],
                                             "roc_auc": metrics["roc_auc"], "n": metrics["n"]},
                                 **compared}.items()}
        plots["compare"] = plot_groups(headline, report_dir / "compare.png",
                                       "held-out metrics side by side", metric="value")
    if len(worst):
        images = read_images(scored["source"], order[worst], scored["chunk_size"],
                             storage_options)
        # Shown in the order of the grid, worst first.
        titles = [f"{m['media_uuid'][:8]}\ntrue {m['true']}, predicted {m['predicted']}\n"
                  f"p(true) = {m['score_true']:.2f}" for m in metrics["worst"]]
        plots["worst"] = plot_image_grid(images, titles, report_dir / "worst.png")
    metrics["report_dir"] = str(report_dir)
    metrics["plots"] = plots
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
