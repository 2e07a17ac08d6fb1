"""Feed a Zarr image store to Keras: chunk-aware order, splits, reads on Dask workers.

The store (see :mod:`idigdask.store`) is chunked along ``image`` only, so reading one
image costs a whole compressed chunk. The feed therefore visits chunks, not images:
each epoch it shuffles the order of the chunks and then the images inside a window of
a few chunks, so a batch touches only a handful of chunks while every selected image is
still seen exactly once per epoch.

Reading, normalizing and augmenting a batch are pure functions (:func:`load_batch`)
that run on the Dask workers when a :class:`distributed.Client` is there, with a
bounded number of batches in flight, and in a local thread pool otherwise. The training
process only receives ready ``float32`` arrays.

``StoreFeed`` subclasses :class:`keras.utils.PyDataset`; it is built on first access so
that the Dask workers, which only run :func:`load_batch`, never import Keras.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .errors import UserError
from .store import open_dataset, zarr_storage_options

#: Bytes of decompressed chunks kept per process, so that the batches of one window
#: decompress each chunk about once.
CHUNK_CACHE_BYTES = 256 * 2**20

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------
# Opening the store
# ---------------------------------------------------------------------------------
def open_store(store: Any, storage_options: dict | None = None):
    """Open an image store lazily as an :class:`xarray.Dataset`.

    Parameters
    ----------
    store : str, path or xarray.Dataset
        A local path or fsspec URL of a Zarr store, or an already opened Dataset
        (returned unchanged).
    storage_options : dict, optional
        fsspec options for a remote store.

    Returns
    -------
    xarray.Dataset
    """
    import xarray as xr

    if isinstance(store, xr.Dataset):
        return store
    try:
        return open_dataset(str(store), storage_options=storage_options)
    except (FileNotFoundError, KeyError) as exc:
        raise UserError(f"{store}: not an image store ({exc.__class__.__name__})") from None


def store_location(ds) -> str | None:
    """Return the path or URL a Dataset was opened from, or None for an in-memory one."""
    source = ds.encoding.get("source")
    return str(source) if source else None


#: Open ``images`` arrays, per store and options: ``key -> (stamp, array)``.
_ARRAYS: dict[str, tuple[tuple, Any]] = {}
_ARRAYS_LOCK = threading.Lock()

#: Fields of :meth:`fsspec.AbstractFileSystem.info` that change when a file is
#: rewritten: local inode and times, object-store tags, versions and times.
_STAMP_FIELDS = ("ino", "mtime", "created", "size", "ETag", "etag", "LastModified",
                 "last_modified", "VersionId", "version_id", "generation", "md5Hash",
                 "mtime_ns", "updated")


def _store_stamp(store: str, storage_options: dict | None) -> tuple:
    """A cheap token of the store's current state: the stat of ``images/zarr.json``.

    The array's metadata file is written when the store is created and rewritten on
    every resize (a build appends by resizing before it writes any pixels), so a store
    deleted and rebuilt at the same path, or extended, gets another token. It costs one
    ``stat`` (a HEAD on object stores) per batch; a file system whose listing gives no
    such fields falls back to the file's content (the shape).
    """
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(store, **(storage_options or {}))
    meta = path.rstrip("/") + "/images/zarr.json"
    fs.invalidate_cache(meta)  # a listing cached by the file system would be stale
    try:
        info = fs.info(meta)
    except FileNotFoundError:
        return ("missing",)
    stamp = tuple((k, str(info[k])) for k in _STAMP_FIELDS if info.get(k) is not None)
    if not any(k != "size" for k, _ in stamp):
        stamp += (("content", fs.cat_file(meta)),)
    return stamp


def _images_array(store: str, storage_options: dict | None) -> tuple[Any, tuple]:
    """Return the ``images`` Zarr array of a store and the key of its cached chunks.

    The array is opened once per process and state of the store: when the store's
    stamp (see :func:`_store_stamp`) changes, it is opened again (a Zarr array keeps
    the shape it was opened with) and the chunks cached for the old state are dropped.
    """
    import zarr

    key = store + "\0" + json.dumps(storage_options or {}, sort_keys=True, default=str)
    # stamped before opening: a change in between only costs one more open later
    stamp = _store_stamp(store, storage_options)
    with _ARRAYS_LOCK:
        cached = _ARRAYS.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1], (key, stamp)
        if cached is not None:
            _CHUNKS.drop(lambda k: k[0][0] == key)
        group = zarr.open_group(store, mode="r",
                                storage_options=zarr_storage_options(store, storage_options or None))
        arr = group["images"]
        _ARRAYS[key] = (stamp, arr)
    return arr, (key, stamp)


class _ChunkCache:
    """A small per-process LRU of decompressed chunks, bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple, value: np.ndarray) -> None:
        with self._lock:
            if key in self._data:
                return
            self._data[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and len(self._data) > 1:
                _, old = self._data.popitem(last=False)
                self._bytes -= old.nbytes

    def drop(self, stale: Callable[[tuple], bool]) -> None:
        """Forget the entries whose key satisfies ``stale(key)``."""
        with self._lock:
            for key in [k for k in self._data if stale(k)]:
                self._bytes -= self._data.pop(key).nbytes


_CHUNKS = _ChunkCache(CHUNK_CACHE_BYTES)


# ---------------------------------------------------------------------------------
# Pure per-batch functions (they run on the workers)
# ---------------------------------------------------------------------------------
def read_images(source: Any, indices: np.ndarray, chunk_size: int,
                storage_options: dict | None = None) -> np.ndarray:
    """Read images by index, one read per chunk touched.

    Parameters
    ----------
    source : str or array-like
        A store path/URL (its ``images`` array is opened lazily, once per process), or
        anything sliceable along the first axis (a Zarr or xarray array).
    indices : numpy.ndarray of int
        Image indices, in the order wanted.
    chunk_size : int
        Images per chunk of the store.
    storage_options : dict, optional
        fsspec options for a remote store.

    Returns
    -------
    numpy.ndarray
        ``uint8`` images of shape ``(len(indices), size, size, 3)`` in that order.

    Notes
    -----
    Every chunk touched is read whole (Zarr decompresses whole chunks anyway) and kept
    in a small per-process cache, so the other batches of the same window find it.
    The cache is keyed by the store's state, checked at every call with one ``stat``
    of the array's metadata: a store rebuilt at the same path, or extended, is read
    afresh. Pixels rewritten in place without a resize (a Zarr region write) are not
    noticed.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if isinstance(source, str):
        arr, key0 = _images_array(source, storage_options)
    else:
        arr, key0 = source, id(source)
    n = arr.shape[0]
    out = None
    chunk_ids = indices // chunk_size
    for cid in np.unique(chunk_ids):
        start, stop = int(cid) * chunk_size, min(int(cid + 1) * chunk_size, n)
        block = _CHUNKS.get((key0, start, stop)) if isinstance(source, str) else None
        if block is None:
            block = np.asarray(arr[start:stop])
            if isinstance(source, str):
                _CHUNKS.put((key0, start, stop), block)
        if out is None:
            out = np.empty((len(indices),) + block.shape[1:], dtype=block.dtype)
        where = np.nonzero(chunk_ids == cid)[0]
        out[where] = block[indices[where] - start]
    if out is None:
        out = np.empty((0,) + tuple(arr.shape[1:]), dtype=np.uint8)
    return out


def normalize_images(images: np.ndarray, mode: str | None,
                     mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None) -> np.ndarray:
    """Turn images into ``float32`` network input.

    Parameters
    ----------
    images : numpy.ndarray
        Pixels in 0..255 (uint8 or float), channels last.
    mode : {"store", "unit", None}
        ``"store"``: ``(x - mean) / std`` per channel with the store's statistics;
        ``"unit"``: ``x / 255``; None: the raw 0..255 values as float32 (for networks
        that carry their own preprocessing).
    mean, std : sequence of 3 floats, optional
        Channel statistics in pixel units, needed for ``"store"``.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of the same shape.
    """
    x = images.astype(np.float32, copy=True)
    if mode == "store":
        if mean is None or std is None:
            raise UserError("normalize='store' needs channel_mean and channel_std")
        x -= np.asarray(mean, dtype=np.float32)
        x /= np.maximum(np.asarray(std, dtype=np.float32), 1e-6)
    elif mode == "unit":
        x /= 255.0
    elif mode is not None:
        raise UserError(f"unknown normalize mode {mode!r}: use 'store', 'unit' or None")
    return x


def augment_images(images: np.ndarray, rng: np.random.Generator,
                   brightness: float = 0.1, contrast: float = 0.1,
                   shift: float = 0.125) -> np.ndarray:
    """Randomly flip, rotate, shift and change the brightness and contrast of each image.

    Herbarium sheets have no preferred orientation or position for the features that
    matter (stains, leaves), so flips, quarter turns (square images only) and small
    translations keep the label. The translations matter most for networks that
    flatten their feature maps into dense layers: without them such a network learns
    where the stains of its training sheets were rather than what a stain looks like.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, h, w, c)`` pixels in 0..255.
    rng : numpy.random.Generator
        The source of randomness (seed it for reproducible batches).
    brightness : float
        Largest shift, as a fraction of 255.
    contrast : float
        Largest relative change of contrast around each image's mean.
    shift : float
        Largest translation along each axis, as a fraction of the side; the uncovered
        strip is filled with the image's median colour (the paper, on most sheets).
        0 turns translations off.

    Returns
    -------
    numpy.ndarray
        ``float32`` images in 0..255, same shape.
    """
    out = images.astype(np.float32, copy=True)
    square = out.shape[1] == out.shape[2]
    for i in range(out.shape[0]):
        img = out[i]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        if rng.random() < 0.5:
            img = img[::-1]
        if square:
            img = np.rot90(img, k=int(rng.integers(4)))
        if shift > 0:
            img = _translate(img, rng, shift)
        factor = 1.0 + rng.uniform(-contrast, contrast)
        mean = img.mean()
        img = (img - mean) * factor + mean + rng.uniform(-brightness, brightness) * 255.0
        out[i] = np.clip(img, 0.0, 255.0)
    return out


def _translate(img: np.ndarray, rng: np.random.Generator, shift: float) -> np.ndarray:
    """Move ``(h, w, c)`` pixels by a random whole number of pixels along each axis."""
    h, w = img.shape[:2]
    dy = int(rng.integers(-int(shift * h), int(shift * h) + 1))
    dx = int(rng.integers(-int(shift * w), int(shift * w) + 1))
    if dy == 0 and dx == 0:
        return img
    moved = np.empty_like(img)
    # the median of a sparse grid of pixels: the paper colour, at a fraction of the cost
    moved[...] = np.median(img[::4, ::4].reshape(-1, img.shape[-1]), axis=0)
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    moved[dst_y, dst_x] = img[src_y, src_x]
    return moved


def load_batch(source: Any, indices: np.ndarray, *, chunk_size: int,
               normalize: str | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, augment_seed: Sequence[int] | None = None,
               storage_options: dict | None = None) -> np.ndarray:
    """Read, augment (when ``augment_seed`` is given) and normalize one batch.

    Parameters
    ----------
    source : str or array-like
        See :func:`read_images`.
    indices : numpy.ndarray of int
        Image indices of the batch.
    chunk_size : int
        Images per chunk.
    normalize, mean, std
        See :func:`normalize_images`.
    augment_seed : sequence of int, optional
        Seed of the batch's augmentation (e.g. ``(seed, epoch, batch)``), so that a
        batch is the same whichever worker computes it; None: no augmentation.
    storage_options : dict, optional
        fsspec options for a remote store.

    Returns
    -------
    numpy.ndarray
        ``float32`` batch ``(len(indices), size, size, 3)``.
    """
    images = read_images(source, indices, chunk_size, storage_options)
    if augment_seed is not None:
        images = augment_images(images, np.random.default_rng(list(augment_seed)))
    return normalize_images(images, normalize, mean, std)


# ---------------------------------------------------------------------------------
# Order of the images in an epoch
# ---------------------------------------------------------------------------------
def epoch_order(indices: np.ndarray, chunk_size: int, *, seed: int = 0, epoch: int = 0,
                shuffle: bool = True, window_chunks: int = 4) -> np.ndarray:
    """Return the order in which an epoch visits the selected images.

    Parameters
    ----------
    indices : numpy.ndarray of int
        The selected image indices (each once).
    chunk_size : int
        Images per chunk of the store.
    seed, epoch : int
        The order is a function of both: the same pair gives the same order.
    shuffle : bool
        False: the indices in store order.
    window_chunks : int
        Chunks whose images are mixed together; larger mixes better, costs more
        chunk reads per batch.

    Returns
    -------
    numpy.ndarray
        A permutation of ``indices``.
    """
    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if not shuffle or len(indices) == 0:
        return indices
    rng = np.random.default_rng([int(seed), int(epoch)])
    chunk_ids = indices // chunk_size
    chunks = rng.permutation(np.unique(chunk_ids))
    parts = []
    for w in range(0, len(chunks), max(1, window_chunks)):
        window = indices[np.isin(chunk_ids, chunks[w:w + window_chunks])]
        parts.append(rng.permutation(window))
    return np.concatenate(parts)


# ---------------------------------------------------------------------------------
# Splits and class weights
# ---------------------------------------------------------------------------------
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
    """
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    total, k = counts.sum(), len(values)
    return {v.item() if hasattr(v, "item") else v: float(total / (k * c))
            for v, c in zip(values, counts)}


# ---------------------------------------------------------------------------------
# The Keras PyDataset
# ---------------------------------------------------------------------------------
def resolve_client(client: Any):
    """Return the Dask client to use: the given one, the current one for ``"auto"``."""
    if client is None or client is False:
        return None
    if isinstance(client, str) and client == "auto":
        try:
            from distributed import get_client
            return get_client()
        except (ImportError, ValueError):  # no client running: read locally
            return None
    return client


class _StoreFeedMixin:
    """The body of :class:`StoreFeed`, kept free of Keras so it can be imported cheaply."""

    def __init__(self, store: Any, indices: Sequence[int] | None = None,
                 labels: Sequence[int] | None = None, *, n_classes: int | None = None,
                 one_hot: bool = False, batch_size: int = 32, shuffle: bool = True,
                 seed: int = 0, window_chunks: int = 4, normalize: str | None = "store",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 augment: bool = False, client: Any = "auto", prefetch: int = 4,
                 storage_options: dict | None = None, workers: int = 1,
                 use_multiprocessing: bool = False, max_queue_size: int = 10):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        ds = open_store(store, storage_options)
        if "images" not in ds:
            raise UserError(f"{store}: the store has no 'images' variable")
        self.storage_options = storage_options
        location = store_location(ds)
        # Workers open the store themselves; an in-memory Dataset is read in-process.
        self.source = location if location is not None else ds["images"].variable
        n_images = ds.sizes["image"]
        self.chunk_size = int(ds.attrs.get("chunk_size") or _dim_chunk(ds) or 64)
        self.image_shape = tuple(int(s) for s in ds["images"].shape[1:])
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
        self.one_hot = one_hot
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.window_chunks = shuffle, int(seed), int(window_chunks)
        self.normalize = normalize
        self.mean = list(mean) if mean is not None else ds.attrs.get("channel_mean")
        self.std = list(std) if std is not None else ds.attrs.get("channel_std")
        if normalize == "store" and (self.mean is None or self.std is None):
            raise UserError(f"{store}: no channel_mean/channel_std attributes for "
                            "normalize='store' (use normalize='unit')")
        self.augment = bool(augment)
        self.prefetch = max(0, int(prefetch))
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
    chunks = ds["images"].encoding.get("chunks") or ds["images"].encoding.get("preferred_chunks")
    if isinstance(chunks, dict):
        return chunks.get("image")
    return chunks[0] if chunks else None


_STORE_FEED = None


def _store_feed_class():
    global _STORE_FEED
    if _STORE_FEED is None:
        import keras

        class StoreFeed(_StoreFeedMixin, keras.utils.PyDataset):
            """Batches of a Zarr image store for Keras, read ahead on Dask workers.

            Parameters
            ----------
            store : str, path or xarray.Dataset
                The image store (path or fsspec URL) or an opened Dataset.
            indices : sequence of int, optional
                Images to feed (default: all).
            labels : sequence of int, optional
                Class index of each selected image; without it batches are ``(x,)``.
            n_classes : int, optional
                Number of classes (for ``one_hot``); default ``max(labels) + 1``.
            one_hot : bool
                Yield one-hot ``float32`` labels instead of class indices.
            batch_size : int
                Images per batch.
            shuffle : bool
                Chunk-aware shuffle each epoch (see :func:`epoch_order`).
            seed : int
                Seed of the order and of the augmentation.
            window_chunks : int
                Chunks mixed together by the shuffle.
            normalize : {"store", "unit", None}
                See :func:`normalize_images`.
            mean, std : sequence of float, optional
                Channel statistics (default: the store's attributes).
            augment : bool
                Random flips, quarter turns, small translations, brightness and
                contrast (training only; see :func:`augment_images`).
            client : distributed.Client, "auto" or None
                Read batches on this client's workers; ``"auto"`` uses the current
                client if there is one; None reads in a local thread pool.
            prefetch : int
                Batches requested ahead of the one being consumed.
            storage_options : dict, optional
                fsspec options of a remote store.
            workers, use_multiprocessing, max_queue_size
                Passed to :class:`keras.utils.PyDataset`.

            Notes
            -----
            Pass ``shuffle=False`` to ``Model.fit``: the feed shuffles itself, and
            Keras' own batch shuffle would defeat the read-ahead.
            """

        StoreFeed.__module__ = __name__
        StoreFeed.__qualname__ = "StoreFeed"
        _STORE_FEED = StoreFeed
    return _STORE_FEED


def __getattr__(name: str) -> Any:
    if name == "StoreFeed":
        return _store_feed_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
