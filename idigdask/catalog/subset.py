"""Reproducible subsets of a catalog: a Bernoulli sample and a per-label cap.

Both rank rows by a seeded 64-bit hash of ``media_uuid`` (``access_uri`` where it is
missing) instead of a random stream, so the rows chosen depend only on the seed and the
rows themselves: not on partitioning, order or the number of workers. A smaller
fraction with the same seed picks a subset of a larger one.
"""

from __future__ import annotations

import hashlib

import dask
import numpy as np
import pandas as pd

from ..errors import UserError
from . import schema as S


def uniform(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A number in [0, 1) per row, fixed by the row's media uuid and the seed."""
    key = hashlib.sha256(f"idigdask-{seed}".encode()).hexdigest()[:16]
    ids = frame["media_uuid"].fillna(frame["access_uri"]).fillna("")
    h = pd.util.hash_array(ids.to_numpy(dtype=object), hash_key=key, categorize=False)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _sample_partition(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    return frame[uniform(frame, seed) < fraction]


def sample(df, fraction: float, seed: int = 0):
    """Keep each row with probability ``fraction``, reproducibly (like Spark's
    ``df.sample(False, fraction, seed)``).

    Parameters
    ----------
    df : dask.dataframe.DataFrame or pandas.DataFrame
        A catalog.
    fraction : float
        Between 0 and 1.
    seed : int
        The same seed gives the same rows.

    Returns
    -------
    Same type as ``df``
        The sampled catalog, lazily for a Dask frame.

    Examples
    --------
    >>> small = sample(read_catalog("media.parquet"), 0.005, seed=45)  # doctest: +SKIP
    """
    if not 0.0 <= fraction <= 1.0:
        raise UserError(f"sample fraction must be between 0 and 1, not {fraction}")
    if isinstance(df, pd.DataFrame):
        return _sample_partition(df, fraction, seed)
    return df.map_partitions(_sample_partition, fraction, seed, meta=df._meta)


def _eligible(frame: pd.DataFrame) -> pd.Series:
    return frame[S.EXCLUDED].isna() & frame[S.LABEL].notna()


def _smallest(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The ``n`` smallest ranks of each label in one partition."""
    ok = _eligible(frame).to_numpy()
    ranks = pd.DataFrame({"label": frame[S.LABEL].to_numpy()[ok], "u": uniform(frame, seed)[ok]})
    return ranks.sort_values("u").groupby("label", sort=False).head(n)


def _thresholds(parts: list[pd.DataFrame], n: int) -> dict:
    ranks = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["label", "u"])
    top = ranks.sort_values("u").groupby("label", sort=False).head(n)
    return top.groupby("label")["u"].max().to_dict()


def _cap_partition(frame: pd.DataFrame, thresholds: dict, seed: int) -> pd.DataFrame:
    eligible = _eligible(frame)
    limit = frame[S.LABEL].map(thresholds).astype("float64").to_numpy()
    keep = ~eligible.to_numpy() | (uniform(frame, seed) <= limit)
    return frame[keep]


def cap_per_label(df, n: int, seed: int = 0):
    """Keep at most ``n`` usable rows of each label, chosen reproducibly, for balanced sets.

    Excluded rows and rows without a label pass through untouched (they are not
    training examples, and keeping them keeps the exclusion counts whole).

    Parameters
    ----------
    df : dask.dataframe.DataFrame or pandas.DataFrame
        A catalog with a ``label`` column.
    n : int
        The most rows kept per label.
    seed : int
        The same seed gives the same rows.

    Returns
    -------
    Same type as ``df``
        The capped catalog, lazily for a Dask frame.

    Raises
    ------
    UserError
        When ``df`` has no ``label`` column, or ``n`` is negative.

    Examples
    --------
    >>> catalog = pd.DataFrame({
    ...     "media_uuid": [f"m{i}" for i in range(6)],
    ...     "access_uri": [f"https://example.org/{i}.jpg" for i in range(6)],
    ...     "label": ["stained", "stained", "stained", "stained", "clean", None],
    ...     "excluded": [None, None, None, None, None, "no_label"]})
    >>> capped = cap_per_label(catalog, 2, seed=0)
    >>> capped["label"].value_counts().to_dict(), len(capped)   # the unlabelled row stays
    ({'stained': 2, 'clean': 1}, 4)
    """
    if S.LABEL not in df.columns:
        raise UserError("cap_per_label needs a labelled catalog (no 'label' column)")
    if n < 0:
        raise UserError(f"the per-label cap must be 0 or more, not {n}")
    if isinstance(df, pd.DataFrame):
        return _cap_partition(df, _thresholds([_smallest(df, n, seed)], n), seed)
    parts = [dask.delayed(_smallest)(p, n, seed) for p in df.to_delayed()]
    thresholds = dask.delayed(_thresholds)(parts, n)
    return df.map_partitions(_cap_partition, thresholds, seed, meta=df._meta)
