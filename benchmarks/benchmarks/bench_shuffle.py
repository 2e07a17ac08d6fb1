"""Shuffle: how well the feed's epoch order mixes the providers of a store written in
catalog order, and what the order costs to compute.

A GUODA dump is ordered by recordset, and a store is written in catalog order, so a
shuffle that mixes images only within a few neighbouring chunks gives batches from
one or two institutions. The figure tracked is
:func:`idigdask.batches.batch_mixing`: the mean number of distinct recordsets in a
batch of 32, against the same figure for a random permutation of the images.
"""

from __future__ import annotations

import numpy as np

#: Recordsets of the store, in catalog order, of unequal sizes (seeded).
SIZES = np.random.default_rng(1).integers(100, 5000, 40)
CHUNK = 64
BATCH = 32


def _groups() -> np.ndarray:
    return np.repeat(np.arange(len(SIZES)), SIZES)


class ShuffleSuite:
    """Mixing of ``epoch_order`` over 40 recordsets (about 100,000 images)."""

    params = ([1, 4, 16, 32],)
    param_names = ["window_chunks"]

    def setup(self, window_chunks: int) -> None:
        self.groups = _groups()
        self.indices = np.arange(len(self.groups))

    def track_recordsets_per_batch(self, window_chunks: int) -> float:
        from idigdask.batches import batch_mixing, epoch_order

        order = epoch_order(self.indices, CHUNK, seed=0, window_chunks=window_chunks)
        return batch_mixing(order, self.groups, BATCH)

    track_recordsets_per_batch.unit = "recordsets"

    def track_share_of_random(self, window_chunks: int) -> float:
        """The mixing as a share of a random permutation's (1.0: as good)."""
        from idigdask.batches import batch_mixing

        random = batch_mixing(np.random.default_rng(0).permutation(self.indices), self.groups,
                              BATCH)
        return self.track_recordsets_per_batch(window_chunks) / random

    track_share_of_random.unit = "ratio"

    def track_chunks_per_batch(self, window_chunks: int) -> float:
        """Distinct chunks a batch reads: the cost side of the mixing."""
        from idigdask.batches import batch_mixing, epoch_order

        order = epoch_order(self.indices, CHUNK, seed=0, window_chunks=window_chunks)
        return batch_mixing(order, self.indices // CHUNK, BATCH)

    track_chunks_per_batch.unit = "chunks"


class RandomSuite:
    """The reference: a random permutation of the same images."""

    def setup(self) -> None:
        self.groups = _groups()

    def track_recordsets_per_batch(self) -> float:
        from idigdask.batches import batch_mixing

        order = np.random.default_rng(0).permutation(len(self.groups))
        return batch_mixing(order, self.groups, BATCH)

    track_recordsets_per_batch.unit = "recordsets"


class OrderSuite:
    """Time to compute one epoch's order of a million images."""

    params = ([4, 16],)
    param_names = ["window_chunks"]

    def setup(self, window_chunks: int) -> None:
        self.indices = np.arange(1_000_000)

    def time_epoch_order(self, window_chunks: int) -> None:
        from idigdask.batches import epoch_order

        epoch_order(self.indices, CHUNK, seed=0, window_chunks=window_chunks)
