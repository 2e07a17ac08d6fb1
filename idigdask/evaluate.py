"""Evaluate a trained model on its held-out specimens: metrics and plots.

The test split saved with the model (``split.parquet``) names the specimens the model
never saw in training or validation. :func:`evaluate` scores them and writes::

    REPORT_DIR/
        metrics.json          accuracy, precision / recall / F1 per class and macro,
                              ROC AUC, confusion matrix, the worst-classified images
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


# ---------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------
def _test_images(model_dir: Path, ds, classes: list) -> tuple[np.ndarray, np.ndarray, int]:
    table = pd.read_parquet(model_dir / "split.parquet")
    test = table[table["split"] == "test"]
    if test.empty:
        raise UserError(f"{model_dir}/split.parquet: the model has no test split")
    position = pd.Index(np.asarray(ds["media_uuid"].values).astype(object).astype(str))
    found = position.get_indexer(test["media_uuid"].astype(str))
    code_of = {str(c): i for i, c in enumerate(classes)}
    codes = test["label"].astype(str).map(code_of)
    keep = (found >= 0) & codes.notna().to_numpy()
    if not keep.any():
        raise UserError(f"none of the {len(test)} test images of {model_dir} are in the store")
    return found[keep].astype(np.int64), codes[keep].to_numpy(np.int64), int((~keep).sum())


def evaluate(model_dir: str | os.PathLike, store: Any = None,
             options: EvaluateOptions | dict | None = None, *,
             out: str | os.PathLike | None = None, storage_options: dict | None = None,
             client: Any = None, cluster: str | None = None, jobs: int | str | None = None,
             cluster_options: dict | None = None, **overrides: Any) -> dict[str, Any]:
    """Score a model on its held-out test specimens; write metrics.json and plots.

    Parameters
    ----------
    model_dir : str or path
        A folder written by :func:`idigdask.train`.
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
        The metrics written to ``metrics.json``, with ``report_dir`` and ``plots``.

    Raises
    ------
    UserError
        If ``model_dir`` is not a model folder or the store holds none of its test
        images.
    OptionError
        For an option out of range or unknown, naming it.
    """
    if cluster is not None and str(cluster).lower() != "local":
        from .cluster import get_client

        with get_client(cluster=cluster, jobs=jobs, cluster_options=cluster_options) as started:
            return evaluate(model_dir, store, options, out=out, storage_options=storage_options,
                            client=started, **overrides)
    options = with_overrides(EvaluateOptions, options, overrides)
    import keras

    from .batches import open_store, read_images
    from .loaders.keras import StoreFeed
    from .report import plot_confusion, plot_history, plot_image_grid, plot_roc
    from .train import read_model_dir

    config = read_model_dir(model_dir)
    folder = Path(model_dir)
    store = store if store is not None else config.get("store")
    if store is None:
        raise UserError(f"{folder}: no store recorded in config.json; pass the store")
    ds = open_store(store, storage_options)
    classes = config["classes"]
    indices, y_true, missing = _test_images(folder, ds, classes)

    model = keras.saving.load_model(config["model_path"], safe_mode=True)
    feed = StoreFeed(ds, indices, batch_size=options.batch_size, shuffle=False, augment=False,
                     one_hot=False, normalize=config["normalize"], mean=config["channel_mean"],
                     std=config["channel_std"], client="auto" if client is None else client,
                     storage_options=storage_options)
    try:
        scores = np.asarray(model.predict(feed, verbose=0), dtype=np.float64)
    finally:
        feed.close()
    # The feed visits images in store order: put the labels in that order too.
    label_of = dict(zip(indices.tolist(), y_true.tolist()))
    order = feed.order
    y_true = np.array([label_of[int(i)] for i in order], dtype=np.int64)

    metrics = classification_metrics(y_true, scores, classes)
    metrics["test_images_missing_from_store"] = missing
    report_dir = Path(out) if out is not None else folder / "evaluation"
    report_dir.mkdir(parents=True, exist_ok=True)

    media = np.asarray(ds["media_uuid"].values).astype(object).astype(str)[order]
    p_true = scores[np.arange(len(order)), y_true]
    worst = np.argsort(p_true, kind="mergesort")[:options.n_worst]
    metrics["worst"] = [{"media_uuid": media[i], "true": str(classes[y_true[i]]),
                         "predicted": str(classes[int(np.argmax(scores[i]))]),
                         "score_true": float(p_true[i])} for i in worst]

    plots = {"confusion": plot_confusion(np.array(metrics["confusion_matrix"]["matrix"]),
                                         classes, report_dir / "confusion.png")}
    history_path = folder / "history.json"
    if history_path.is_file():
        plots["history"] = plot_history(json.loads(history_path.read_text()),
                                        report_dir / "history.png")
    curves = {}
    for c in (range(1, 2) if len(classes) == 2 else range(len(classes))):
        positive = y_true == c
        if positive.any() and (~positive).any():
            fpr, tpr = roc_curve(positive, scores[:, c])
            curves[str(classes[c])] = (fpr, tpr, roc_auc(positive, scores[:, c]))
    if curves:
        plots["roc"] = plot_roc(curves, report_dir / "roc.png")
    if len(worst):
        source = feed.source
        images = read_images(source, order[worst], feed.chunk_size, storage_options)
        # Shown in the order of the grid, worst first.
        titles = [f"{m['media_uuid'][:8]}\ntrue {m['true']}, predicted {m['predicted']}\n"
                  f"p(true) = {m['score_true']:.2f}" for m in metrics["worst"]]
        plots["worst"] = plot_image_grid(images, titles, report_dir / "worst.png")
    metrics["report_dir"] = str(report_dir)
    metrics["plots"] = plots
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
