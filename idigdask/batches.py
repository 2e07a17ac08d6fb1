"""Batches of a Zarr image store: the feed's options and the work done on the workers.

The store (see :mod:`idigdask.store`) is chunked along ``image`` only, so reading one
image costs a whole compressed chunk. A feed therefore visits chunks, not images: each
epoch it deals the chunks into windows that span the whole store and shuffles the
images inside each window (:func:`epoch_order`), so every chunk is decompressed about
once per epoch and process, every selected image is seen exactly once, and a batch
still mixes the providers of a store written in catalog order (:func:`batch_mixing`
measures it).

Reading, augmenting and normalizing a batch are pure functions (:func:`load_batch`)
that run on the Dask workers, which therefore never import Keras: the Keras
``PyDataset`` that submits them lives in :mod:`idigdask.loaders.keras`. Each process
keeps its open ``images`` arrays and a small cache of decompressed chunks, keyed by
the store's state.

:class:`FeedOptions` holds a feed's settings (batch size, order, scaling,
augmentation, read-ahead); their defaults are the dask config's ``idigdask.feed``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import UserError
from .options import check, coerce_fields, setting
from .store import layout_of, zarr_storage_options

__all__ = ["FeedOptions", "NORMALIZE_MODES", "augment_images", "augment_spectrograms",
           "batch_mixing", "epoch_order", "images_array", "load_batch", "normalize_images",
           "open_store", "read_images", "store_location"]

#: Bytes of decompressed chunks kept per process, so that the batches of one window
#: decompress each chunk about once: a window of ``window_chunks`` chunks should fit.
CHUNK_CACHE_BYTES = 256 * 2**20

#: How a feed turns pixels into network input (see :func:`normalize_images`).
NORMALIZE_MODES = ("store", "unit", None)


# ---------------------------------------------------------------------------------
# The feed's options
# ---------------------------------------------------------------------------------
@dataclass
class FeedOptions:
    """How a feed cuts, orders, scales and reads ahead the batches of a store.

    Every default is the dask config's ``idigdask.feed.<field>`` (``idigdask.yaml``;
    ``DASK_IDIGDASK__FEED__BATCH_SIZE=64``), see :mod:`idigdask.options`.

    Parameters
    ----------
    batch_size : int
        Images per batch.
    shuffle : bool
        Chunk-aware shuffle each epoch (see :func:`epoch_order`); False: store order.
    seed : int
        Seed of the order and of the augmentation: the same seed gives the same
        batches on any worker.
    window_chunks : int
        Chunks whose images the shuffle mixes together; more mixes better and costs
        more chunk reads per batch.
    normalize : {"store", "unit", None}
        ``"store"``: per-channel ``(x - mean) / std``; ``"unit"``: ``x / 255``; None:
        the raw 0..255 values (see :func:`normalize_images`).
    mean, std : tuple of float, optional
        Channel statistics for ``"store"``, in pixel units; None: the store's
        ``channel_mean`` and ``channel_std`` attributes.
    augment : bool
        Random flips, quarter turns, small translations, brightness and contrast
        (training only; see :func:`augment_images`).
    one_hot : bool
        Yield one-hot ``float32`` labels instead of class indices.
    prefetch : int
        Batches requested ahead of the one being consumed (0: none).
    workers : int
        Threads (or processes) Keras itself uses to call the feed
        (:class:`keras.utils.PyDataset`); the reads are already parallel, so 1 suffices.
    use_multiprocessing : bool
        Let Keras call the feed from worker processes (:class:`keras.utils.PyDataset`).
    max_queue_size : int
        Batches Keras queues when ``workers`` > 1 (:class:`keras.utils.PyDataset`).

    Examples
    --------
    >>> from idigdask import FeedOptions
    >>> FeedOptions(batch_size=16, augment=True).batch_size
    16
    """

    batch_size: int = setting("feed.batch-size")
    shuffle: bool = setting("feed.shuffle")
    seed: int = setting("feed.seed")
    window_chunks: int = setting("feed.window-chunks")
    normalize: str | None = setting("feed.normalize")
    mean: tuple[float, ...] | None = setting("feed.mean")
    std: tuple[float, ...] | None = setting("feed.std")
    augment: bool = setting("feed.augment")
    one_hot: bool = setting("feed.one-hot")
    prefetch: int = setting("feed.prefetch")
    workers: int = setting("feed.workers")
    use_multiprocessing: bool = setting("feed.use-multiprocessing")
    max_queue_size: int = setting("feed.max-queue-size")

    def __post_init__(self) -> None:
        coerce_fields(self)
        check(self, {
            "batch_size": (lambda v: v >= 1, "at least 1"),
            "window_chunks": (lambda v: v >= 1, "at least 1"),
            "normalize": (lambda v: v in NORMALIZE_MODES, "'store', 'unit' or None"),
            "mean": (lambda v: v is None or len(v) >= 1, "one value per channel"),
            "std": (lambda v: v is None or len(v) >= 1, "one value per channel"),
            "prefetch": (lambda v: v >= 0, "0 or more"),
            "workers": (lambda v: v >= 1, "at least 1"),
            "max_queue_size": (lambda v: v >= 1, "at least 1"),
        })


# ---------------------------------------------------------------------------------
# Opening the store
# ---------------------------------------------------------------------------------
def open_store(store: Any, storage_options: dict | None = None):
    """An image store as a lazy :class:`xarray.Dataset`; an opened Dataset as it is.

    Parameters
    ----------
    store : str, path or xarray.Dataset
        A local path or fsspec URL of a store (opened with
        :func:`idigdask.store.open_dataset`), or an already opened Dataset.
    storage_options : dict, optional
        fsspec options for a remote store.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    UserError
        If ``store`` is not an image store.
    """
    import xarray as xr

    from .store import open_dataset

    if isinstance(store, xr.Dataset):
        return store
    try:
        return open_dataset(str(store), storage_options=storage_options)
    except (FileNotFoundError, KeyError) as exc:  # a store whose metadata is broken
        raise UserError(f"{store}: not an image store ({exc.__class__.__name__})") from None


def store_location(ds) -> str | None:
    """Return the path or URL a Dataset was opened from, or None for an in-memory one."""
    source = ds.encoding.get("source")
    return str(source) if source else None


# ---------------------------------------------------------------------------------
# Per-process caches of open arrays and decompressed chunks
# ---------------------------------------------------------------------------------
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


def images_array(store: str, storage_options: dict | None) -> tuple[Any, tuple]:
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
        arr = group[layout_of(group.attrs).array]
        _ARRAYS[key] = (stamp, arr)
    return arr, (key, stamp)


class _ChunkCache:
    """A small per-process LRU of decompressed chunks, bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Event] = {}

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

    def claim(self, key: tuple) -> tuple[str, Any]:
        """``("hit", chunk)``; ``("busy", event)`` while another thread loads it; or
        ``("mine", event)``: the caller loads it and calls :meth:`loaded`."""
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                return "hit", value
            event = self._loading.get(key)
            if event is not None:
                return "busy", event
            event = self._loading[key] = threading.Event()
            return "mine", event

    def loaded(self, key: tuple, value: np.ndarray | None, event: threading.Event) -> None:
        """End a claim: cache ``value`` (None: the load failed) and wake the waiters."""
        if value is not None:
            self.put(key, value)
        with self._lock:
            self._loading.pop(key, None)
        event.set()

    def get_or_load(self, key: tuple, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached chunk, or ``load()`` once however many threads ask for it at once."""
        while True:
            state, value = self.claim(key)
            if state == "hit":
                return value
            if state == "busy":
                value.wait()  # then look again: cached, or the load failed
                continue
            block = None
            try:
                block = load()
                return block
            finally:
                self.loaded(key, block, value)

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

    Examples
    --------
    >>> import numpy as np
    >>> images = np.arange(6 * 2 * 2 * 3, dtype=np.uint8).reshape(6, 2, 2, 3)
    >>> batch = read_images(images, np.array([4, 0, 5]), chunk_size=2)
    >>> batch.shape, batch.dtype, batch[:, 0, 0, 0].tolist()
    ((3, 2, 2, 3), dtype('uint8'), [48, 0, 60])
    >>> read_images("sheets.zarr", np.arange(32), chunk_size=64).shape  # doctest: +SKIP
    (32, 256, 256, 3)
    """
    indices = np.asarray(indices, dtype=np.int64)
    if isinstance(source, str):
        arr, key0 = images_array(source, storage_options)
    else:
        arr, key0 = source, id(source)
    n = arr.shape[0]
    chunk_ids = indices // chunk_size
    out = None

    def place(cid: int, block: np.ndarray) -> None:
        nonlocal out
        if out is None:
            out = np.empty((len(indices),) + block.shape[1:], dtype=block.dtype)
        where = np.nonzero(chunk_ids == cid)[0]
        out[where] = block[indices[where] - cid * chunk_size]

    remaining = [int(c) for c in np.unique(chunk_ids)]
    if not isinstance(source, str):
        for cid in remaining:
            place(cid, np.asarray(arr[cid * chunk_size:min((cid + 1) * chunk_size, n)]))
        remaining = []
    # the threads reading the first batches of a window share its chunks: each takes
    # one that nobody is loading yet, and waits only when all it lacks are in hand
    while remaining:
        busy = None
        for cid in list(remaining):
            start, stop = cid * chunk_size, min((cid + 1) * chunk_size, n)
            key = (key0, start, stop)
            state, value = _CHUNKS.claim(key)
            if state == "hit":
                place(cid, value)
                remaining.remove(cid)
            elif state == "busy":
                busy = busy or value
            else:
                block = None
                try:
                    block = np.asarray(arr[start:stop])
                finally:
                    _CHUNKS.loaded(key, block, value)
                place(cid, block)
                remaining.remove(cid)
                break  # look again: others may have loaded chunks meanwhile
        else:
            if busy is not None:
                busy.wait()
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

    Raises
    ------
    UserError
        For ``"store"`` without ``mean`` and ``std``, or an unknown ``mode``.

    Examples
    --------
    >>> import numpy as np
    >>> pixels = np.array([[[[10, 51, 255]]]], np.uint8)
    >>> normalize_images(pixels, "unit")
    array([[[[0.03921569, 0.2       , 1.        ]]]], dtype=float32)
    >>> normalize_images(pixels, "store", mean=[10, 11, 15], std=[5, 5, 60])
    array([[[[0., 8., 4.]]]], dtype=float32)
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

    Examples
    --------
    >>> import numpy as np
    >>> images = np.full((2, 8, 8, 3), 128, np.uint8)
    >>> out = augment_images(images, np.random.default_rng(0))
    >>> out.shape, out.dtype
    ((2, 8, 8, 3), dtype('float32'))
    >>> bool(out.min() >= 0 and out.max() <= 255)
    True
    """
    n, h, w, c = images.shape
    out = np.empty(images.shape, np.float32)
    square = h == w
    # each image is moved into its slot of ``out`` once and then changed in place: the
    # feed's cost is a few passes over the batch, not a new array for every step
    for i in range(n):
        img = images[i]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        if rng.random() < 0.5:
            img = img[::-1]
        if square:
            img = np.rot90(img, k=int(rng.integers(4)))
        _place(out[i], img, rng, shift)
        o = out[i]
        factor = 1.0 + rng.uniform(-contrast, contrast)
        mean = o.mean()
        # (x - mean) * factor + mean + b, as one multiply and one add
        offset = mean - factor * mean + rng.uniform(-brightness, brightness) * 255.0
        np.multiply(o, np.float32(factor), out=o)
        o += np.float32(offset)
        np.clip(o, 0.0, 255.0, out=o)
    return out


def augment_spectrograms(specs: np.ndarray, rng: np.random.Generator, shift: float = 0.25,
                         gain: float = 0.1, mask: float = 0.1) -> np.ndarray:
    """Randomly shift, rescale and mask the spectrograms of sound clips.

    A spectrogram's axes mean frequency and time, so the changes of an image (flips,
    turns) would change a call into another: a call may begin anywhere in a clip
    (time shifts, the uncovered frames filled with the clip's quietest level), be
    louder or fainter (a gain, in the quantized dB), and be partly masked by noise or
    overlap (one band of mel bins and one stretch of frames set to the clip's mean,
    as SpecAugment does).

    Parameters
    ----------
    specs : numpy.ndarray
        ``(n, mel, time, 1)`` values in 0..255 (quantized dB).
    rng : numpy.random.Generator
        The source of randomness.
    shift : float
        Largest time shift, as a fraction of the clip.
    gain : float
        Largest level change, as a fraction of 255 (of the dB range).
    mask : float
        Largest masked band and stretch, as fractions of the mel bins and frames.

    Returns
    -------
    numpy.ndarray
        ``float32`` values in 0..255, same shape.

    Examples
    --------
    >>> import numpy as np
    >>> specs = np.full((2, 8, 20, 1), 100, np.uint8)
    >>> out = augment_spectrograms(specs, np.random.default_rng(0))
    >>> out.shape, out.dtype, bool(out.min() >= 0 and out.max() <= 255)
    ((2, 8, 20, 1), dtype('float32'), True)
    """
    n, bins, frames = specs.shape[:3]
    out = np.empty(specs.shape, np.float32)
    for i in range(n):
        spec, o = specs[i], out[i]
        d = int(rng.integers(-int(shift * frames), int(shift * frames) + 1)) if shift > 0 else 0
        floor = float(spec.min())
        o[...] = floor
        if d >= 0:
            o[:, d:] = spec[:, :frames - d]
        else:
            o[:, :d] = spec[:, -d:]
        o += np.float32(rng.uniform(-gain, gain) * 255.0)
        if mask > 0:
            level = o.mean()
            h = int(rng.integers(0, int(mask * bins) + 1))
            y = int(rng.integers(0, bins - h + 1))
            o[y:y + h] = level
            w = int(rng.integers(0, int(mask * frames) + 1))
            x = int(rng.integers(0, frames - w + 1))
            o[:, x:x + w] = level
        np.clip(o, 0.0, 255.0, out=o)
    return out


def _place(dest: np.ndarray, img: np.ndarray, rng: np.random.Generator, shift: float) -> None:
    """Write ``(h, w, c)`` pixels into ``dest`` moved by a random whole number of pixels
    along each axis (at most ``shift`` of the side), the uncovered strips filled."""
    h, w = img.shape[:2]
    dy = dx = 0
    if shift > 0:
        dy = int(rng.integers(-int(shift * h), int(shift * h) + 1))
        dx = int(rng.integers(-int(shift * w), int(shift * w) + 1))
    if dy == 0 and dx == 0:
        dest[...] = img
        return
    # the median of a sparse grid of pixels: the paper colour, at a fraction of the cost
    fill = np.median(img[::4, ::4].reshape(-1, img.shape[-1]), axis=0)
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    dest[:dst_y.start], dest[dst_y.stop:] = fill, fill
    dest[:, :dst_x.start], dest[:, dst_x.stop:] = fill, fill
    dest[dst_y, dst_x] = img[src_y, src_x]


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

    Raises
    ------
    UserError
        From :func:`normalize_images`: ``"store"`` without statistics, or an unknown
        mode.

    Examples
    --------
    >>> import numpy as np
    >>> images = np.full((6, 2, 2, 3), 51, np.uint8)
    >>> batch = load_batch(images, np.array([1, 2]), chunk_size=2, normalize="unit")
    >>> batch.shape, batch.dtype, round(float(batch.max()), 4)
    ((2, 2, 2, 3), dtype('float32'), 0.2)
    >>> augmented = load_batch(images, np.array([1, 2]), chunk_size=2, augment_seed=(0, 0, 1))
    >>> augmented.shape, augmented.dtype
    ((2, 2, 2, 3), dtype('float32'))
    """
    images = read_images(source, indices, chunk_size, storage_options)
    if images.ndim == 3:  # spectrograms (clip, mel, time): one channel, and their own changes
        images = images[..., None]
        if augment_seed is not None:
            images = augment_spectrograms(images, np.random.default_rng(list(augment_seed)))
    elif augment_seed is not None:
        images = augment_images(images, np.random.default_rng(list(augment_seed)))
    return normalize_images(images, normalize, mean, std)


# ---------------------------------------------------------------------------------
# Order of the images in an epoch
# ---------------------------------------------------------------------------------
def epoch_order(indices: np.ndarray, chunk_size: int, *, seed: int = 0, epoch: int = 0,
                shuffle: bool = True, window_chunks: int = 16) -> np.ndarray:
    """Return the order in which an epoch visits the selected images.

    The chunks are cut into windows of ``window_chunks`` chunks, and each window's
    images are visited in a random order before the next window's. A window does not
    take neighbouring chunks: the chunks are dealt into the windows like cards, one
    from each run of consecutive chunks, so a window holds chunks from all over the
    store; and a window's images are visited in rounds, one random image of each of
    its chunks per round, so that a batch draws on as many of them as it can.

    A store is written in catalog order and a catalog is often ordered by
    provider (a GUODA dump is ordered by recordset), so windows of neighbouring, or
    of few, chunks give batches from one or two institutions; spread windows give
    batches that mix nearly as well as a random permutation (see
    :func:`batch_mixing`), while every chunk is still read in one window only.

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
        Chunks whose images are mixed together; larger mixes better and needs that
        many decompressed chunks in each reading process's chunk cache
        (:data:`CHUNK_CACHE_BYTES`; 16 chunks of 64 images of 256 px fit).

    Returns
    -------
    numpy.ndarray
        A permutation of ``indices``.

    Examples
    --------
    >>> order = epoch_order(np.arange(256), 16, seed=1, window_chunks=4)
    >>> sorted(order.tolist()) == list(range(256))
    True
    >>> len(np.unique(order[:64] // 16))   # the first window: 4 chunks...
    4
    """
    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if not shuffle or len(indices) == 0:
        return indices
    rng = np.random.default_rng([int(seed), int(epoch)])
    chunk_ids = indices // chunk_size
    chunks = np.unique(chunk_ids)  # in store order
    window = max(1, int(window_chunks))
    n_windows = -(-len(chunks) // window)
    # deal the chunks: run r of n_windows consecutive chunks gives one chunk to each
    # window, in a random order, so that every window spans the whole store
    seat = np.empty(len(chunks), dtype=np.int64)
    for start in range(0, len(chunks), n_windows):
        stop = min(start + n_windows, len(chunks))
        seat[start:stop] = rng.permutation(n_windows)[:stop - start]
    window_of = seat[np.searchsorted(chunks, chunk_ids)]
    by_window = np.argsort(window_of, kind="stable")
    bounds = np.searchsorted(window_of[by_window], np.arange(n_windows + 1))
    parts = [_interleave(indices[by_window[bounds[w]:bounds[w + 1]]], chunk_size, rng)
             for w in rng.permutation(n_windows)]
    return np.concatenate(parts)


def _interleave(members: np.ndarray, chunk_size: int, rng: np.random.Generator) -> np.ndarray:
    """A window's images in rounds: one random image of each chunk per round, the
    chunks in a random order, so that consecutive images come from different chunks."""
    members = rng.permutation(members)
    chunk_ids = members // chunk_size
    by_chunk = np.argsort(chunk_ids, kind="stable")
    sorted_ids = chunk_ids[by_chunk]
    uniq, first, inverse = np.unique(sorted_ids, return_index=True, return_inverse=True)
    rank = np.empty(len(members), dtype=np.int64)
    rank[by_chunk] = np.arange(len(members)) - first[inverse]  # round of each image
    position = rng.permutation(len(uniq))[np.searchsorted(uniq, chunk_ids)]
    return members[np.lexsort((position, rank))]


def batch_mixing(order: np.ndarray, groups: Sequence[Any], batch_size: int) -> float:
    """Mean number of distinct groups (recordsets, labels...) per batch of an order.

    Parameters
    ----------
    order : numpy.ndarray of int
        Image indices in the order an epoch visits them (:func:`epoch_order`).
    groups : sequence
        The group of every image of the store, indexed by image index.
    batch_size : int
        Images per batch; a last, shorter batch counts too.

    Returns
    -------
    float
        The mean over the batches of the number of distinct groups they hold: 1.0
        when every batch comes from one group; a random permutation of images from
        ``g`` equal groups gives about ``g * (1 - (1 - 1/g) ** batch_size)``.

    Examples
    --------
    >>> groups = np.repeat(["a", "b", "c", "d"], 64)     # four providers, in order
    >>> batch_mixing(np.arange(256), groups, 32)          # store order
    1.0
    >>> batch_mixing(np.random.default_rng(0).permutation(256), groups, 32) > 3.5
    True
    """
    order = np.asarray(order, dtype=np.int64)
    if len(order) == 0:
        return 0.0
    _, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    codes = codes.reshape(-1)[order]
    batch = np.arange(len(order)) // max(1, int(batch_size))
    pairs = np.unique(batch * (int(codes.max()) + 1) + codes)  # distinct (batch, group)
    return float(len(pairs) / (batch[-1] + 1))
