"""PNG plots of a training run, its evaluation and the data-quality report.

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

    Examples
    --------
    >>> history = {"loss": [0.9, 0.6, 0.4], "val_loss": [1.0, 0.7, 0.6],
    ...            "accuracy": [0.6, 0.75, 0.85], "val_accuracy": [0.55, 0.7, 0.78]}
    >>> plot_history(history, "history.png")                             # doctest: +SKIP
    'history.png'
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

    Examples
    --------
    >>> import numpy as np
    >>> plot_confusion(np.array([[40, 3], [5, 52]]), ["clean", "stained"],
    ...                "confusion.png")                                  # doctest: +SKIP
    'confusion.png'
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

    Examples
    --------
    >>> import numpy as np
    >>> curve = (np.array([0.0, 0.1, 1.0]), np.array([0.0, 0.8, 1.0]), 0.85)
    >>> plot_roc({"cnn": curve}, "roc.png")                              # doctest: +SKIP
    'roc.png'
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
        ``uint8`` images ``(n, h, w, 3)``, or spectrograms ``(n, mel, time)``.
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

    Examples
    --------
    >>> import numpy as np
    >>> images = np.zeros((6, 64, 64, 3), np.uint8)
    >>> titles = [f"sheet {i}" for i in range(6)]
    >>> plot_image_grid(images, titles, "grid.png", ncols=3)             # doctest: +SKIP
    'grid.png'
    """
    n = max(1, len(images))
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = _figure(2.6 * ncols, 2.8 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, title in zip(axes, images, titles):
        if image.ndim == 2:  # a spectrogram (mel, time): low frequencies at the bottom
            ax.imshow(image, origin="lower", aspect="auto", cmap="magma")
        else:
            ax.imshow(image)
        ax.set_title(title, fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------------------------
# Figures of the data-quality report (idigdask.quality) and of the breakdowns
# ---------------------------------------------------------------------------------
#: Colours of the ledger statuses, the same in every figure.
STATUS_COLOURS = {"ok": "#4c9a2a", "failed": "#c0392b", "duplicate": "#e6a817",
                  "excluded": "#7f8c8d"}


def plot_counts(counts: dict[str, int], path: str | os.PathLike, title: str = "") -> str:
    """Plot counts as horizontal bars, one per key, largest on top.

    Parameters
    ----------
    counts : dict
        Name -> count (``"failed: http_404"``; the text before ``:`` picks the colour
        when it is a ledger status).
    path : str or path
        The PNG to write.
    title : str
        The figure's title.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> counts = {"ok": 950, "failed: http_404": 30, "failed: timeout": 20}
    >>> plot_counts(counts, "reasons.png", title="rows by reason")       # doctest: +SKIP
    'reasons.png'
    """
    items = sorted(counts.items(), key=lambda kv: kv[1])[-30:]
    fig = _figure(8, 1.2 + 0.3 * max(1, len(items)))
    ax = fig.subplots()
    names = [k for k, _ in items]
    values = [v for _, v in items]
    colours = [STATUS_COLOURS.get(k.split(":")[0].strip(), "#34495e") for k in names]
    ax.barh(range(len(items)), values, color=colours)
    ax.set_yticks(range(len(items)), names, fontsize=8)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,}", va="center", fontsize=7)
    ax.set_xlabel("rows")
    ax.set_title(title)
    ax.margins(x=0.15)
    return _save(fig, path)


def plot_status_table(rows: Sequence[dict[str, Any]], name: str, path: str | os.PathLike) -> str:
    """Plot rows by status per host or recordset as stacked horizontal bars.

    Parameters
    ----------
    rows : sequence of dict
        One per host (or recordset): its ``name`` and a count per ledger status.
    name : str
        The key of each row's label (``"host"``, ``"recordset"``).
    path : str or path
        The PNG to write.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> rows = [{"host": "example.org", "ok": 90, "failed": 10, "failure_rate": 0.1}]
    >>> plot_status_table(rows, "host", "hosts.png")                     # doctest: +SKIP
    'hosts.png'
    """
    rows = list(rows)[::-1]
    fig = _figure(9, 1.2 + 0.32 * max(1, len(rows)))
    ax = fig.subplots()
    left = np.zeros(len(rows))
    for status, colour in STATUS_COLOURS.items():
        values = np.array([r.get(status, 0) for r in rows], dtype=float)
        ax.barh(range(len(rows)), values, left=left, color=colour, label=status)
        left += values
    labels = [str(r[name])[:40] for r in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    for y, r in enumerate(rows):
        ax.text(left[y], y, f" {r.get('failure_rate', 0):.0%} failed", va="center", fontsize=7)
    ax.set_xlabel("rows")
    ax.set_title(f"rows by status per {name} (the most failing)")
    ax.margins(x=0.2)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_histograms(histograms: dict[str, dict[str, Sequence[float]]],
                    path: str | os.PathLike) -> str:
    """Plot precomputed histograms side by side, on logarithmic bins.

    Parameters
    ----------
    histograms : dict
        Title -> ``{"edges": [...], "counts": [...]}`` (``len(edges) == len(counts) + 1``).
    path : str or path
        The PNG to write.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> sizes = {"edges": [100, 1000, 10000], "counts": [3, 7]}
    >>> plot_histograms({"source width (px)": sizes}, "sizes.png")      # doctest: +SKIP
    'sizes.png'
    """
    fig = _figure(4.5 * max(1, len(histograms)), 3.4)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(histograms))))
    for ax, (title, hist) in zip(axes, histograms.items()):
        edges, counts = np.asarray(hist["edges"], float), np.asarray(hist["counts"], float)
        ax.stairs(counts, edges, fill=True, color="#2e86c1")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("images")
        if not counts.any():
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center")
    return _save(fig, path)


def plot_image_rows(rows: Sequence[Sequence[tuple[np.ndarray | None, str]]],
                    path: str | os.PathLike) -> str:
    """Plot rows of images side by side (a duplicate cluster per row).

    Parameters
    ----------
    rows : sequence of sequences of (image or None, caption)
        ``uint8`` images ``(h, w, 3)``; None draws an empty panel with its caption
        (an image the store does not hold).
    path : str or path
        The PNG to write.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((64, 64, 3), np.uint8)
    >>> rows = [[(image, "kept"), (image, "duplicate")], [(image, "kept"), (None, "missing")]]
    >>> plot_image_rows(rows, "duplicates.png")                          # doctest: +SKIP
    'duplicates.png'
    """
    nrows = max(1, len(rows))
    ncols = max([1, *(len(r) for r in rows)])
    fig = _figure(2.4 * ncols, 2.7 * nrows)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    for r, line in enumerate(rows):
        for c, (image, caption) in enumerate(line):
            ax = axes[r, c]
            if image is not None:
                ax.imshow(image)
            else:
                ax.text(0.5, 0.5, "not stored", ha="center", va="center", color="grey",
                        transform=ax.transAxes)
            ax.set_title(caption, fontsize=7)
    return _save(fig, path)


def plot_channels(histogram: np.ndarray, mean: Sequence[float], std: Sequence[float],
                  path: str | os.PathLike) -> str:
    """Plot the distribution of 8-bit values of each channel, with mean and deviation.

    Parameters
    ----------
    histogram : numpy.ndarray
        Counts ``(3, 256)`` of each value per channel.
    mean, std : sequence of 3 floats
        Per-channel mean and standard deviation.
    path : str or path
        The PNG to write.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> import numpy as np
    >>> histogram = np.ones((3, 256))
    >>> plot_channels(histogram, [127.5] * 3, [73.9] * 3, "channels.png")  # doctest: +SKIP
    'channels.png'
    """
    histogram = np.asarray(histogram, dtype=float)
    fig = _figure(7, 3.2)
    ax = fig.subplots()
    for c, (colour, name) in enumerate(zip(("#c0392b", "#27ae60", "#2e86c1"), "RGB")):
        total = histogram[c].sum() or 1.0
        ax.plot(np.arange(256), histogram[c] / total, color=colour,
                label=f"{name}: mean {mean[c]:.1f}, std {std[c]:.1f}")
    ax.set_yscale("log")
    ax.set_xlim(0, 255)
    ax.set_xlabel("pixel value")
    ax.set_ylabel("share of pixels")
    ax.legend(fontsize=8)
    ax.set_title("channel statistics of the stored pixels")
    return _save(fig, path)


def plot_groups(groups: dict[str, dict[str, dict[str, Any]]], path: str | os.PathLike,
                title: str, metric: str = "accuracy") -> str:
    """Plot a metric per group (recordset, source size), one bar per model.

    Parameters
    ----------
    groups : dict
        Model name -> group -> metrics (``metric`` and ``n``).
    path : str or path
        The PNG to write.
    title : str
        The figure's title.
    metric : str
        The metric drawn.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> groups = {"cnn": {"rs-1": {"accuracy": 0.91, "n": 120},
    ...                   "rs-2": {"accuracy": 0.84, "n": 45}}}
    >>> plot_groups(groups, "groups.png", "accuracy per recordset")      # doctest: +SKIP
    'groups.png'
    """
    names = list(dict.fromkeys(g for per_model in groups.values() for g in per_model))
    fig = _figure(max(5.0, 1.2 + 0.9 * len(names) * max(1, len(groups))), 3.6)
    ax = fig.subplots()
    width = 0.8 / max(1, len(groups))
    for m, (model, per_group) in enumerate(groups.items()):
        values = [per_group.get(g, {}).get(metric) for g in names]
        x = np.arange(len(names)) + m * width
        ax.bar(x, [v if v is not None else 0 for v in values], width, label=model)
        for xi, g in zip(x, names):
            n = per_group.get(g, {}).get("n")
            if n is not None:
                ax.text(xi, 0.02, f"n={n}", rotation=90, fontsize=7, ha="center", va="bottom",
                        color="white")
    ax.set_xticks(np.arange(len(names)) + width * (len(groups) - 1) / 2,
                  [str(g)[:18] for g in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
