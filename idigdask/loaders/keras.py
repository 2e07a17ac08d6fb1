"""A Keras ``PyDataset`` over an image store, its batches read ahead on Dask workers.

:class:`StoreFeed` cuts the selected images of a store into batches in the
chunk-aware order of :func:`idigdask.batches.epoch_order` and has each one read,
augmented and normalized by :func:`idigdask.batches.load_batch`, on the Dask workers
when there is a client and in a local thread pool otherwise, with a few batches in
flight ahead of the one being consumed. The training process only receives ready
``float32`` arrays; the workers never import Keras.

This module imports Keras when it is imported; ``import idigdask`` does not import it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

try:
    import keras
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("idigdask.loaders.keras needs Keras 3 and a backend: "
                      "pip install 'idigdask[train]'") from exc

from ..batches import FeedOptions, epoch_order, load_batch, open_store, read_images, store_location
from ..errors import UserError
from ..options import with_overrides
from ..store import input_shape, layout_of

__all__ = ["StoreFeed", "resolve_client"]


def resolve_client(client: Any):
    """The Dask client a feed reads on, by the feed's own rule, or None for threads.

    A :class:`distributed.Client` is used as it is; ``"auto"`` is the current client
    if there is one; None and False read in a local thread pool. Unlike the stages
    that run whole tasks (:func:`idigdask.get_client`), a feed never starts a cluster:
    reading batches in this process's threads is fast, and a cluster started for a
    feed would outlive the call that made it.

    Parameters
    ----------
    client : distributed.Client, "auto", None or False
        What a :class:`StoreFeed` was given as ``client``.

    Returns
    -------
    distributed.Client or None
        The client whose workers read the batches, or None for a local thread pool.

    Examples
    --------
    >>> resolve_client(None) is None, resolve_client(False) is None
    (True, True)
    >>> resolve_client("auto") is None                      # no client is current
    True
    >>> from distributed import Client
    >>> with Client(processes=False) as client:             # doctest: +SKIP
    ...     resolve_client("auto") is client
    True
    """
    if client is None or client is False:
        return None
    if isinstance(client, str) and client == "auto":
        from ..cluster import current_client

        return current_client()  # None when no client runs: read locally
    return client


class StoreFeed(keras.utils.PyDataset):
    """Batches of a Zarr image store for Keras, read ahead on Dask workers.

    Parameters
    ----------
    store : str, path or xarray.Dataset
        The image store (path or fsspec URL) or an opened Dataset. Workers open a
        store from its location; an in-memory Dataset is read in this process.
    indices : sequence of int, optional
        Images to feed (default: all).
    labels : sequence of int, optional
        Class index of each selected image; without it batches are ``(x,)``.
    options : FeedOptions or dict, optional
        Batch size, order, scaling, augmentation and read-ahead; defaults from the
        dask config ``idigdask.feed``.
    n_classes : int, optional
        Number of classes (for ``one_hot``); default ``max(labels) + 1``.
    client : distributed.Client, "auto" or None
        Where batches are read (see :func:`resolve_client`): this client's workers;
        ``"auto"``: the current client if there is one; None: a local thread pool.
    storage_options : dict, optional
        fsspec options of a remote store.
    **overrides
        Fields of :class:`~idigdask.batches.FeedOptions` (``batch_size=16``,
        ``augment=True``), over ``options``.

    Notes
    -----
    Pass ``shuffle=False`` to ``Model.fit``: the feed shuffles itself, and Keras' own
    batch shuffle would defeat the read-ahead.

    Examples
    --------
    >>> feed = StoreFeed("sheets.zarr", indices=[0, 1, 2, 3], labels=[0, 1, 0, 1],
    ...                  batch_size=2)                                # doctest: +SKIP
    >>> images, labels = feed[0]                                          # doctest: +SKIP
    >>> model.fit(feed, epochs=2)                                         # doctest: +SKIP
    """

    def __init__(self, store: Any, indices: Sequence[int] | None = None,
                 labels: Sequence[int] | None = None, options: FeedOptions | dict | None = None,
                 *, n_classes: int | None = None, client: Any = "auto",
                 storage_options: dict | None = None, **overrides: Any):
        options = with_overrides(FeedOptions, options, overrides)
        super().__init__(workers=options.workers, use_multiprocessing=options.use_multiprocessing,
                         max_queue_size=options.max_queue_size)
        self.options = options
        ds = open_store(store, storage_options)
        kind = layout_of(ds)
        if kind.array not in ds:
            raise UserError(f"{store}: the store has no '{kind.array}' variable")
        self.storage_options = storage_options
        location = store_location(ds)
        # Workers open the store themselves; an in-memory Dataset is read in-process.
        self.source = location if location is not None else ds[kind.array].variable
        n_images = ds.sizes[kind.dim]
        self.chunk_size = int(ds.attrs.get("chunk_size") or _dim_chunk(ds) or 64)
        self.image_shape = input_shape(ds)
        if indices is None:
            indices = np.arange(n_images)
        self.indices = np.asarray(indices, dtype=np.int64)
        if len(np.unique(self.indices)) != len(self.indices):
            raise UserError("StoreFeed indices must be unique")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n_images):
            raise UserError(f"StoreFeed indices out of range 0..{n_images - 1}")
        self._label_of = None
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != self.indices.shape:
                raise UserError("StoreFeed labels must have one entry per index")
            self._label_of = dict(zip(self.indices.tolist(), labels.tolist()))
            self.n_classes = int(n_classes or labels.max() + 1)
        self.one_hot = options.one_hot
        self.batch_size = options.batch_size
        self.shuffle, self.seed = options.shuffle, options.seed
        self.window_chunks = options.window_chunks
        self.normalize = options.normalize
        self.mean = list(options.mean) if options.mean is not None else ds.attrs.get("channel_mean")
        self.std = list(options.std) if options.std is not None else ds.attrs.get("channel_std")
        if self.normalize == "store" and (self.mean is None or self.std is None):
            raise UserError(f"{store}: no channel_mean/channel_std attributes for "
                            "normalize='store' (use normalize='unit')")
        self.augment = options.augment
        self.prefetch = options.prefetch
        self._client_arg = client
        self.epoch = 0
        self._order = self._compute_order()
        self._reset_runtime()

    # --- state that never travels to other processes -----------------------------
    def _reset_runtime(self) -> None:
        self._lock = threading.RLock()
        self._pending: dict[int, Any] = {}
        self._executor = None
        self._client = None
        self._client_resolved = False

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_lock", "_pending", "_executor", "_client", "_client_resolved"):
            state.pop(key, None)
        if isinstance(self._client_arg, str):
            state["_client_arg"] = self._client_arg
        else:  # a Client does not pickle: a copy in another process reads with threads
            state["_client_arg"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    # --- order -------------------------------------------------------------------
    def _compute_order(self) -> np.ndarray:
        return epoch_order(self.indices, self.chunk_size, seed=self.seed, epoch=self.epoch,
                           shuffle=self.shuffle, window_chunks=self.window_chunks)

    @property
    def order(self) -> np.ndarray:
        """The image indices in this epoch's order."""
        return self._order

    def batch_indices(self, i: int) -> np.ndarray:
        """Image indices of batch ``i`` of the current epoch."""
        return self._order[i * self.batch_size:(i + 1) * self.batch_size]

    def __len__(self) -> int:
        return -(-len(self._order) // self.batch_size)

    # --- reading -----------------------------------------------------------------
    @property
    def client(self):
        """The Dask client batches are read on, or None for the local thread pool."""
        if not self._client_resolved:
            self._client = resolve_client(self._client_arg)
            self._client_resolved = True
        return self._client

    def _submit(self, i: int):
        idx = self.batch_indices(i)
        kwargs = dict(chunk_size=self.chunk_size, normalize=self.normalize, mean=self.mean,
                      std=self.std, storage_options=self.storage_options,
                      augment_seed=(self.seed, self.epoch, i) if self.augment else None)
        client = self.client if isinstance(self.source, str) else None
        if client is not None:
            return client.submit(load_batch, self.source, idx, pure=False, **kwargs)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max(1, self.prefetch),
                                                thread_name_prefix="idigdask-feed")
        return self._executor.submit(load_batch, self.source, idx, **kwargs)

    def _labels_for(self, idx: np.ndarray) -> np.ndarray:
        y = np.fromiter((self._label_of[int(j)] for j in idx), dtype=np.int64, count=len(idx))
        if self.one_hot:
            return np.eye(self.n_classes, dtype=np.float32)[y]
        return y

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} out of range 0..{len(self) - 1}")
        with self._lock:
            future = self._pending.pop(i, None)
            if future is None:
                future = self._submit(i)
            # Keep the next batches in flight while this one is consumed.
            for j in range(i + 1, min(i + 1 + self.prefetch, len(self))):
                if j not in self._pending:
                    self._pending[j] = self._submit(j)
        x = future.result()
        if self._label_of is None:
            return (x,)
        return x, self._labels_for(self.batch_indices(i))

    def images(self, i: int) -> np.ndarray:
        """The raw ``uint8`` images of batch ``i`` (no augmentation or scaling)."""
        return read_images(self.source, self.batch_indices(i), self.chunk_size,
                           self.storage_options)

    def on_epoch_end(self) -> None:
        """Advance to the next epoch: a new order, and its first batches requested."""
        with self._lock:
            self._cancel_pending()
            self.epoch += 1
            self._order = self._compute_order()
            for j in range(min(self.prefetch, len(self))):
                self._pending[j] = self._submit(j)

    def set_epoch(self, epoch: int) -> None:
        """Jump to ``epoch`` (used when training resumes)."""
        with self._lock:
            self._cancel_pending()
            self.epoch = int(epoch)
            self._order = self._compute_order()

    def _cancel_pending(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    def close(self) -> None:
        """Cancel batches in flight and stop the local thread pool."""
        with self._lock:
            self._cancel_pending()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None


def _dim_chunk(ds) -> int | None:
    kind = layout_of(ds)
    encoding = ds[kind.array].encoding
    chunks = encoding.get("chunks") or encoding.get("preferred_chunks")
    if isinstance(chunks, dict):
        return chunks.get(kind.dim)
    return chunks[0] if chunks else None
