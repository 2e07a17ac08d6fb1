"""PNG plots of a training run and its evaluation.

Figures are drawn with Matplotlib's object API on the Agg canvas, so nothing here
changes the caller's Matplotlib backend or needs a display; Matplotlib itself is
imported only when a plot is drawn.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> str:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return str(path)


def plot_history(history: dict[str, Sequence[float]], path: str | os.PathLike) -> str:
    """Plot loss and accuracy per epoch, training and validation.

    Parameters
    ----------
    history : dict
        Metric name -> one value per epoch (``loss``, ``val_loss``, ``accuracy``,
        ``val_accuracy``; an ``epoch`` list gives the x axis).
    path : str or path
        The PNG to write.

    Returns
    -------
    str
        ``path``.
    """
    from matplotlib.ticker import MaxNLocator

    fig = _figure(9, 3.5)
    n = max((len(v) for k, v in history.items() if k != "epoch"), default=0)
    epochs = history.get("epoch") or list(range(1, n + 1))
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            if history.get(key):
                ax.plot(epochs[:len(history[key])], history[key], style, label=key, ms=3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[Any], path: str | os.PathLike) -> str:
    """Plot a confusion matrix (rows: true class, columns: predicted class).

    Parameters
    ----------
    matrix : numpy.ndarray
        Counts, ``(k, k)``.
    classes : sequence
        Class names, in the order of the matrix.
    path : str or path
        The PNG to write.

    Returns
    -------
    str
        ``path``.
    """
    matrix = np.asarray(matrix)
    k = len(classes)
    fig = _figure(1.2 + 0.7 * k + 2, 1.0 + 0.7 * k + 1.5)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    names = [str(c) for c in classes]
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if matrix[i, j] > threshold else "black")
    ax.set_title("confusion matrix")
    return _save(fig, path)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]],
             path: str | os.PathLike) -> str:
    """Plot ROC curves.

    Parameters
    ----------
    curves : dict
        Name -> ``(false_positive_rate, true_positive_rate, auc)``.
    path : str or path
        The PNG to write.

    Returns
    -------
    str
        ``path``.
    """
    fig = _figure(4.5, 4.5)
    ax = fig.subplots()
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_image_grid(images: np.ndarray, titles: Sequence[str], path: str | os.PathLike,
                    ncols: int = 4) -> str:
    """Plot images in a grid, each with a title.

    Parameters
    ----------
    images : numpy.ndarray
        ``uint8`` images ``(n, h, w, 3)``.
    titles : sequence of str
        One title per image.
    path : str or path
        The PNG to write.
    ncols : int
        Images per row.

    Returns
    -------
    str
        ``path``.
    """
    n = max(1, len(images))
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = _figure(2.6 * ncols, 2.8 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, title in zip(axes, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    return _save(fig, path)
