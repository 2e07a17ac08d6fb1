"""Which images train, validate and test: splits by specimen or by recordset, and class weights.

A specimen (``record_uuid``) is often photographed more than once; a model tested on
another photograph of a sheet it trained on looks better than it is. So every split
here keeps the images of one specimen together. A model can also learn a
provider's scanner, lighting or mounting instead of the stain, score well on a random
split and fail on a new herbarium: :func:`split_by_recordset` holds whole recordsets
(institutions) out, so the test measures that. These are pure functions of the
store's coordinates, used by :func:`idigdask.train.train`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import UserError

__all__ = ["SPLITS", "SPLIT_BY", "class_weights", "missing_labels", "split_by_recordset",
           "split_by_specimen"]

SPLITS = ("train", "val", "test")
#: What a split keeps together: ``TrainOptions.split_by``.
SPLIT_BY = ("specimen", "recordset")


def missing_labels(labels: np.ndarray) -> np.ndarray:
    """Return a boolean mask of unlabelled entries (-1 for ints, "" or NaN otherwise)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        return labels < 0
    if labels.dtype.kind == "f":
        return np.isnan(labels) | (labels < 0)
    values = pd.Series(labels, dtype=object)
    return (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()


def split_by_specimen(record_uuid: Sequence[str], labels: Sequence[Any],
                      fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                      media_uuid: Sequence[str] | None = None) -> np.ndarray:
    """Assign each image to "train", "val" or "test", keeping specimens together.

    All images of one specimen (``record_uuid``) go to the same side, so that a model
    is never tested on another photograph of a sheet it trained on. Specimens are
    split within each label (stratified), in proportion to ``fractions``.

    Parameters
    ----------
    record_uuid : sequence of str
        Specimen of each image; an empty value makes the image its own group.
    labels : sequence
        Label of each image (a specimen takes its most common label).
    fractions : 3 floats
        Train, validation and test shares of the specimens of each label.
    seed : int
        Seed of the shuffle: the same seed gives the same split.
    media_uuid : sequence of str, optional
        Names the groups of images without a specimen (default: their position).

    Returns
    -------
    numpy.ndarray
        Strings ``"train"``, ``"val"`` or ``"test"``, one per image.

    Examples
    --------
    >>> split_by_specimen(["a", "a", "b", "c"], [0, 0, 1, 1], seed=1).shape
    (4,)
    """
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or (frac < 0).any() or frac.sum() <= 0:
        raise UserError(f"fractions must be three non-negative numbers, got {fractions!r}")
    frac = frac / frac.sum()
    records = pd.Series(record_uuid, dtype=object).fillna("").astype(str).to_numpy()
    n = len(records)
    fallback = (pd.Series(media_uuid, dtype=object).astype(str).to_numpy()
                if media_uuid is not None else np.arange(n).astype(str))
    empty = records == ""
    groups = np.where(empty, np.char.add("\0image:", fallback.astype(str)), records)
    table = pd.DataFrame({"group": groups, "label": pd.Series(labels, dtype=object).astype(str)})
    group_label = table.groupby("group", sort=True)["label"].agg(lambda s: s.value_counts().index[0])
    rng = np.random.default_rng(int(seed))
    assignment: dict[str, str] = {}
    for _, members in group_label.groupby(group_label, sort=True):
        names = rng.permutation(members.index.to_numpy())
        bounds = np.round(np.cumsum(frac) * len(names)).astype(int)
        for i, name in enumerate(names):
            assignment[name] = SPLITS[int(np.searchsorted(bounds, i, side="right"))]
    return np.array([assignment[g] for g in groups], dtype=object).astype(str)


def split_by_recordset(recordset: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                       seed: int = 0) -> np.ndarray:
    """Assign each image to "train", "val" or "test", keeping recordsets together.

    Every image of a recordset (a provider, in iDigBio an institution's collection)
    goes to the same side, so the test holds only providers the model never saw.
    Recordsets are dealt in a seeded random order, each to the split furthest below
    its share of the images; the validation and test splits get at least one
    recordset each when their share is above 0. Specimens never span recordsets, so
    they stay together too. Images without a recordset form one group.

    Parameters
    ----------
    recordset : sequence of str
        Recordset of each image ("" or None: unknown).
    fractions : 3 floats
        Train, validation and test shares of the images (reached as closely as whole
        recordsets allow).
    seed : int
        Seed of the order: the same seed gives the same split.

    Returns
    -------
    numpy.ndarray
        Strings ``"train"``, ``"val"`` or ``"test"``, one per image.

    Raises
    ------
    UserError
        With fewer recordsets than splits to fill.

    Examples
    --------
    >>> split = split_by_recordset(["a", "a", "b", "c", "d", "d"], seed=0)
    >>> sorted(set(split.tolist()))
    ['test', 'train', 'val']
    """
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or (frac < 0).any() or frac.sum() <= 0:
        raise UserError(f"fractions must be three non-negative numbers, got {fractions!r}")
    frac = frac / frac.sum()
    groups = pd.Series(recordset, dtype=object).fillna("").astype(str).to_numpy()
    names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    wanted = [i for i in range(3) if frac[i] > 0]
    if len(names) < len(wanted):
        raise UserError(f"split by recordset needs at least {len(wanted)} recordsets, the "
                        f"labelled images have {len(names)}")
    rng = np.random.default_rng(int(seed))
    order = rng.permutation(len(names))
    target = frac * len(groups)
    given = np.zeros(3)
    side = np.empty(len(names), dtype=np.int64)
    # the held-out splits first get one recordset each, then every split takes the
    # next recordset while it is the furthest below its share
    first = [i for i in (2, 1, 0) if i in wanted]
    for rank, g in enumerate(order):
        if rank < len(first):
            choice = first[rank]
        else:
            deficit = np.where(frac > 0, target - given, -np.inf)
            choice = int(np.argmax(deficit))
        side[g] = choice
        given[choice] += sizes[g]
    return np.asarray(SPLITS, dtype=object)[side[inverse.reshape(-1)]].astype(str)


def class_weights(labels: Sequence[Any]) -> dict[Any, float]:
    """Weights that give each class the same total weight in the loss.

    Parameters
    ----------
    labels : sequence
        Class of each training example.

    Returns
    -------
    dict
        ``{class: n / (k * count(class))}``, keys as they appear in ``labels``
        (as Python scalars).

    Examples
    --------
    >>> class_weights([0, 0, 0, 1])
    {0: 0.6666666666666666, 1: 2.0}
    >>> class_weights(["a", "b"])
    {'a': 1.0, 'b': 1.0}
    """
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    total, k = counts.sum(), len(values)
    return {v.item() if hasattr(v, "item") else v: float(total / (k * c))
            for v, c in zip(values, counts)}

