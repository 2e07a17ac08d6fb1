"""Duplicate ``media_uuid`` detection across the partitions of a lazy catalog.

The first row of a ``media_uuid`` in catalog order is kept; every later one is excluded
as ``duplicate_media_uuid``. Within a partition that is ``Series.duplicated``. Across
partitions, a small reduction runs over 64-bit hashes of the identifiers: each partition
gives its sorted unique hashes, one task finds the hashes seen in more than one
partition together with the first partition that holds them, and that small result
goes to every partition of the catalog as a delayed argument. Only hashes travel, so
memory stays near 20 bytes a row in the one combining task.

The identifiers come from a separate, lighter read of the source (only the id and URL
columns), so that the catalog's own partitions still stream one by one instead of
being held in memory until the reduction is done.
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from . import schema as S


def _hashes(ids: pd.Series) -> np.ndarray:
    values = ids.dropna().to_numpy(dtype=object)
    return pd.util.hash_array(values, categorize=False).astype(np.uint64)


def partition_hashes(ids: pd.Series) -> np.ndarray:
    """The sorted unique uint64 hashes of one partition's media uuids."""
    return np.unique(_hashes(ids))


def first_partitions(per_partition: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes found in more than one partition, sorted, with the first partition of each."""
    hashes = np.concatenate(per_partition) if per_partition else np.array([], np.uint64)
    if not len(hashes):  # no partition has an id
        return np.array([], np.uint64), np.array([], np.int64)
    parts = np.concatenate([np.full(len(h), i, np.int64) for i, h in enumerate(per_partition)])
    order = np.lexsort((parts, hashes))
    hashes, parts = hashes[order], parts[order]
    starts = np.r_[True, hashes[1:] != hashes[:-1]]
    repeated = np.r_[~starts[1:], False] & starts  # a group start followed by a repeat
    return hashes[repeated], parts[repeated]


#: Key prefix of the one reduction that every partition but the first needs.
REDUCTION = "catalog-repeated-uuids"

_NONE_SEEN = (np.array([], np.uint64), np.array([], np.int64))


def mark_partition(
    frame: pd.DataFrame, first: tuple[np.ndarray, np.ndarray], offset: int = 0,
    partition_info: dict | None = None
) -> pd.DataFrame:
    """Exclude the rows of one partition whose uuid was seen earlier in the catalog.

    The partition's number in the catalog is ``offset`` plus its number in the frame
    it belongs to (``partition_info``).
    """
    number = offset + (partition_info["number"] if partition_info else 0)
    ids = frame["media_uuid"]
    dup = ids.duplicated(keep="first") & ids.notna()
    known_hashes, known_parts = first
    if len(known_hashes):
        present = ids.notna().to_numpy()
        h = _hashes(ids)
        pos = np.searchsorted(known_hashes, h).clip(0, len(known_hashes) - 1)
        earlier = (known_hashes[pos] == h) & (known_parts[pos] < number)
        mask = np.zeros(len(frame), bool)
        mask[present] = earlier
        dup |= mask
    if not dup.any():
        return frame
    frame = frame.copy()
    free = frame[S.EXCLUDED].isna()
    frame[S.EXCLUDED] = frame[S.EXCLUDED].mask(dup & free, S.DUPLICATE_MEDIA_UUID)
    return frame


def mark_duplicates(frame: dd.DataFrame, ids: dd.Series | None = None) -> dd.DataFrame:
    """Mark later occurrences of each ``media_uuid`` as ``duplicate_media_uuid``, lazily.

    Parameters
    ----------
    frame : dask.dataframe.DataFrame
        A catalog (schema of :mod:`idigdask.catalog.schema`).
    ids : dask.dataframe.Series, optional
        The same media uuids, partitioned exactly like ``frame`` but computed from an
        independent (cheaper) read; defaults to ``frame["media_uuid"]``.

    Returns
    -------
    dask.dataframe.DataFrame
        ``frame`` with duplicates excluded; nothing is computed.
    """
    ids = frame["media_uuid"] if ids is None else ids
    if ids.npartitions != frame.npartitions:
        raise ValueError("ids must be partitioned like the catalog")
    from dask.base import tokenize

    per_partition = [dask.delayed(partition_hashes)(p) for p in ids.to_delayed()]
    first = dask.delayed(first_partitions)(per_partition,
                                           dask_key_name=f"{REDUCTION}-{tokenize(ids)}")
    if frame.npartitions == 1:
        return frame.map_partitions(mark_partition, _NONE_SEEN, meta=frame._meta)
    # the first partition has no earlier one: it needs no pass over the catalog, so a
    # build over millions of rows starts fetching while the others are being checked
    head = frame.partitions[0].map_partitions(mark_partition, _NONE_SEEN, meta=frame._meta)
    rest = frame.partitions[1:].map_partitions(mark_partition, first, 1, meta=frame._meta)
    return dd.concat([head, rest])


def mark_duplicates_pandas(frame: pd.DataFrame) -> pd.DataFrame:
    """The in-memory version of :func:`mark_duplicates` for a pandas catalog."""
    return mark_partition(frame, _NONE_SEEN)


def shared_reductions(frame: dd.DataFrame) -> list:
    """The reductions over the whole catalog that its partitions share, as Delayed.

    A caller reading the partitions one by one computes these once and holds them
    (:func:`idigdask.catalog.read.iter_partitions`): otherwise every partition's own
    computation would read the identifiers of the whole catalog again.
    """
    from dask.delayed import Delayed

    graph = frame.__dask_graph__()
    # dask-expr names a delayed argument (name, 0)
    return [Delayed(key, graph) for key in graph
            if str(key[0] if isinstance(key, tuple) else key).startswith(REDUCTION)]
