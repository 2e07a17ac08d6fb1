"""Build a store from a catalog: the Dask wiring around the per-record core.

The work is cut into *batches* of catalog rows (one task each, never one task per
image) and batches into *waves*. A batch task fetches, decodes, resizes and hashes its
rows on a worker (:func:`process_batch`) and keeps the pixels there. The driving
process gathers only the small per-row metadata of a wave, decides duplicates and the
position of every new image in catalog order, and then the workers write their own
regions of the Zarr array. A wave ends by committing its ledger part; waves are
pipelined, so the next wave is being fetched while the current one is written.

Because positions depend only on catalog order and on what is already committed, a
build that is killed at any moment and then resumed writes exactly the bytes an
uninterrupted build would have written.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import __version__
from .audio import SoundOptions
from .decode import MAX_SIZE, MIN_SIZE, RESIZE_MODES
from .errors import UserError
from .fetch import FetchOptions
from .hashing import NearDuplicateIndex, phash_int
from .options import check, coerce_fields, setting, with_overrides
from .process import BATCH_COLUMNS, BatchResult, process_batch, text
from .urls import LOCAL_SCHEMES, REMOTE_SCHEMES, classify_scheme, redact
from .store import (FORMAT_VERSION, LEDGER_COLUMNS, MEDIA, ImageStore, _read_parts, channel_stats,
                    ledger_counts, read_ledger, row_keys, stats_of_histogram)

if TYPE_CHECKING:  # pragma: no cover
    import dask.dataframe as dd
    from distributed import Client

log = logging.getLogger(__name__)



@dataclass
class BuildOptions:
    """How a build fetches, turns into pixels, deduplicates and commits its images.

    Every default is the dask config's ``idigdask.build.<field>`` (``idigdask.yaml``;
    ``DASK_IDIGDASK__BUILD__SIZE=128``), see :mod:`idigdask.options`.

    Parameters
    ----------
    size : int
        Side of the square output image, in pixels (8 to 4096).
    resize_mode : {"pad", "crop", "stretch"}
        ``pad`` keeps the aspect ratio and letterboxes with ``pad_color``; ``crop``
        takes the centre square; ``stretch`` ignores the aspect ratio.
    pad_color : tuple of int
        RGB colour of the letterbox.
    max_pixels : int
        Decompression-bomb limit: images with more pixels are refused.
    max_decode_bytes : int
        Memory one decode may take, estimated from the header; larger images are
        refused (``too_large``) before they are decoded.
    verify_hashes : bool
        Check ``hash_value`` where the record gives one; a mismatch fails the row.
    allow_local : bool or None
        Fetch ``file://`` URLs, local paths and ``memory://`` too. None: only when the
        catalog itself is local or an in-memory DataFrame.
    chunk_size : int
        Images per Zarr chunk along ``image``.
    batch_size : int
        Catalog rows per task.
    wave_batches : int or None
        Batches per committed wave (None: four per worker thread).
    dedup : bool
        Mark exact byte duplicates, and near duplicates within ``phash_distance`` bits
        of pHash, ``duplicate`` of the first and do not store them.
    phash_distance : int
        Hamming distance of near duplicates; -1 looks for byte-identical ones only.
    keep_duplicates : bool
        Store duplicates too (they keep their ``duplicate_of``).
    retry_failed : bool
        On an existing store, fetch rows that failed before again.
    media : {"images", "sounds"}
        The kind of media built: the catalog's rows of that ``mediatype`` (the others
        are ``excluded``), turned into images or into the spectrograms of sound clips
        (``sound`` says how); ``size`` and the resize options are for images only.
    fetch : FetchOptions
        Timeouts, retries, concurrency, byte cap, address policy and storage options
        for the media.
    sound : SoundOptions
        Sample rate, clip windows, trimming and log-mel bands of a build of sounds.

    Examples
    --------
    >>> from idigdask import BuildOptions
    >>> options = BuildOptions(size=128, resize_mode="crop")
    >>> options.size, options.resize_mode
    (128, 'crop')
    >>> result = build_dataset(catalog, "sheets.zarr", options=options)    # doctest: +SKIP
    >>> calls = BuildOptions(media="sounds", sound={"sample_rate": 32000})
    >>> calls.media, calls.sound.sample_rate, calls.sound.clip_shape
    ('sounds', 32000, (64, 401))
    """

    size: int = setting("build.size")
    resize_mode: str = setting("build.resize-mode")
    pad_color: tuple[int, int, int] = setting("build.pad-color")
    max_pixels: int = setting("build.max-pixels")
    max_decode_bytes: int = setting("build.max-decode-bytes")
    verify_hashes: bool = setting("build.verify-hashes")
    allow_local: bool | None = setting("build.allow-local")
    chunk_size: int = setting("build.chunk-size")
    batch_size: int = setting("build.batch-size")
    wave_batches: int | None = setting("build.wave-batches")
    dedup: bool = setting("build.dedup")
    phash_distance: int = setting("build.phash-distance")
    keep_duplicates: bool = setting("build.keep-duplicates")
    retry_failed: bool = setting("build.retry-failed")
    media: str = setting("build.media")
    fetch: FetchOptions = field(default_factory=FetchOptions)
    sound: SoundOptions = field(default_factory=SoundOptions)

    def __post_init__(self) -> None:
        coerce_fields(self)
        if isinstance(self.fetch, dict):
            self.fetch = FetchOptions(**self.fetch)
        if isinstance(self.sound, dict):
            self.sound = SoundOptions(**self.sound)
        check(self, {
            "resize_mode": (lambda v: v in RESIZE_MODES, f"one of {', '.join(RESIZE_MODES)}"),
            "size": (lambda v: MIN_SIZE <= v <= MAX_SIZE, f"{MIN_SIZE} to {MAX_SIZE} pixels"),
            "pad_color": (lambda v: all(0 <= c <= 255 for c in v), "R,G,B from 0 to 255"),
            "max_pixels": (lambda v: v >= 1, "at least 1"),
            "max_decode_bytes": (lambda v: v >= 1, "at least 1"),
            "chunk_size": (lambda v: v >= 1, "at least 1"),
            "batch_size": (lambda v: v >= 1, "at least 1"),
            "wave_batches": (lambda v: v is None or v >= 1, "at least 1"),
            "phash_distance": (lambda v: v >= -1, "-1 or more"),
            "media": (lambda v: v in MEDIA, f"one of {', '.join(MEDIA)}"),
        })

    def scheme_allowed(self, scheme: str) -> bool:
        """Whether this build fetches URIs of ``scheme``."""
        return scheme in REMOTE_SCHEMES or (bool(self.allow_local) and scheme in LOCAL_SCHEMES)


def _first(values: Any) -> str:
    if values is None or isinstance(values, float):
        return ""
    values = list(values)
    return str(values[0]) if values else ""


# -- the driver ------------------------------------------------------------------------

@dataclass
class BuildResult:
    """Summary of a build: where the store is, and the ledger's counts.

    Attributes
    ----------
    store : str
        The store's location, as given to the build.
    counts : dict
        The ledger's counts (:func:`idigdask.store.ledger_counts`): ``rows``,
        ``status`` and ``reasons``.
    images : int
        Images the store holds.
    seconds : float
        Wall time of the build.
    processed : int
        Catalog rows this build worked on (not those a resumed build had done).
    cluster : dict
        Where the build ran (:func:`idigdask.cluster.cluster_summary`); empty if unknown.
    media : str
        ``images``, or ``sounds``: then ``images`` counts the clips, and the summary
        calls them ``clips``.

    Examples
    --------
    >>> result = BuildResult("sheets.zarr", {"rows": 3}, images=2, seconds=4.0, processed=3)
    >>> result.summary()
    {'store': 'sheets.zarr', 'images': 2, 'processed_rows': 3, 'seconds': 4.0, \
'rows_per_s': 0.75, 'rows': 3}
    >>> idigdask.build_dataset("media.parquet", "sheets.zarr").images  # doctest: +SKIP
    1000
    """

    store: str
    counts: dict[str, Any]
    images: int
    seconds: float
    processed: int
    #: where the build ran (:func:`idigdask.cluster.cluster_summary`)
    cluster: dict[str, Any] = field(default_factory=dict)
    media: str = "images"

    def summary(self) -> dict[str, Any]:
        rate = self.processed / self.seconds if self.seconds else 0.0
        entries = "clips" if self.media == "sounds" else "images"
        return {"store": redact(self.store), entries: self.images,
                "processed_rows": self.processed, "seconds": round(self.seconds, 2),
                "rows_per_s": round(rate, 2), **self.counts,
                **({"cluster": self.cluster} if self.cluster else {})}


def _ledger_of(result: BatchResult) -> pd.DataFrame:
    return result.ledger


class RecomputedBatchError(RuntimeError):
    """A batch done again (its worker was lost) whose images are not those placed."""


def _entry_shas(ledger: pd.DataFrame) -> dict[int, str]:
    """The SHA-256 of the record behind each entry of a batch's pixels (a recording's
    clips all carry their recording's)."""
    shas: dict[int, str] = {}
    samples = ledger["samples"] if "samples" in ledger else pd.Series(1, index=ledger.index)
    for first, count, sha in zip(ledger["pixel_index"], samples, ledger["sha256"]):
        if first >= 0:
            shas.update(dict.fromkeys(range(int(first), int(first) + max(int(count), 1)), sha))
    return shas


def _write_segment(store: str, storage_options: dict | None, start: int,
                   selection: list[tuple[int, int, str]], *results: BatchResult,
                   array: str = "images", channels: int = 3) -> np.ndarray:
    """Write the pixels of one chunk-aligned segment; return their (channels, 256) histogram.

    ``selection`` holds (batch, pixel index, sha256) of each image. A batch whose
    worker was lost is computed again, fetching again: its pixels are written only if
    they are the images the driver placed (the same SHA-256), never another row's.
    """
    from .store import channel_histograms, write_images

    shas = [_entry_shas(r.ledger) for r in results]
    wrong = [(b, p) for b, p, sha in selection if shas[b].get(p) != sha]
    if wrong:
        raise RecomputedBatchError(
            f"{len(wrong)} image(s) of a batch done again after its worker was lost differ "
            "from the first fetch (the server answered differently); the wave is not "
            "committed: run the build again to resume")
    pixels = np.stack([results[b].pixels[p] for b, p, _ in selection])
    write_images(store, storage_options, start, pixels, array)
    return channel_histograms(pixels, channels)


@dataclass
class _Dedup:
    """Exact (sha256) and near (pHash) duplicate index over the committed images."""

    distance: int
    exact: dict[str, str] = field(default_factory=dict)
    near: NearDuplicateIndex | None = None

    def __post_init__(self) -> None:
        self.near = NearDuplicateIndex(self.distance) if self.distance >= 0 else None

    def find(self, sha: str, phash: str) -> tuple[str, str] | None:
        if sha in self.exact:
            return self.exact[sha], "exact"
        if self.near is not None and phash:
            key = self.near.find(phash_int(phash))
            if key is not None:
                return key, "near"
        return None

    def add(self, sha: str, phash: str, uuid: str) -> None:
        self.exact.setdefault(sha, uuid)
        if self.near is not None and phash:
            self.near.add(phash_int(phash), uuid)


def place_wave(ledger: pd.DataFrame, batch_of: np.ndarray, n_images: int,
               dedup: _Dedup | None, keep_duplicates: bool) -> list[tuple[int, int]]:
    """Decide each ``ok`` row of a wave: a duplicate, or the next image of the store.

    Rows are taken in catalog order, so positions depend only on the catalog and on
    what is committed. ``ledger`` (the wave's rows, ``pixel_index`` into its batch's
    pixels, ``batch_of`` its batch) gains ``duplicate_of`` and ``image_index``; a
    duplicate row becomes ``duplicate`` unless ``keep_duplicates``; ``dedup`` (None:
    no search) learns the images placed.

    A row whose ``samples`` is more than one (a recording's clips) takes that many
    consecutive entries, ``image_index`` pointing at the first.

    Returns
    -------
    list of (int, int)
        (batch, pixel index) of each new image, in store order from ``n_images``.
    """
    ledger["duplicate_of"] = None
    image_index = np.full(len(ledger), -1, dtype="int64")
    selection: list[tuple[int, int]] = []
    samples = ledger["samples"].to_numpy() if "samples" in ledger else np.ones(len(ledger), int)
    for i in np.flatnonzero(ledger["status"].to_numpy() == "ok"):
        sha, ph, uuid = ledger.at[i, "sha256"], ledger.at[i, "phash"], ledger.at[i, "media_uuid"]
        found = dedup.find(sha, ph) if dedup is not None else None
        if found is not None:
            ledger.at[i, "duplicate_of"] = found[0]
            if not keep_duplicates:
                ledger.at[i, "status"] = "duplicate"
                ledger.at[i, "reason"] = found[1]
                ledger.at[i, "message"] = f"{found[1]} duplicate of {found[0]}"
                continue
        if dedup is not None:
            dedup.add(sha, ph, uuid)
        image_index[i] = n_images + len(selection)
        first = int(ledger.at[i, "pixel_index"])
        selection.extend((int(batch_of[i]), first + j) for j in range(max(int(samples[i]), 1)))
    ledger["image_index"] = image_index
    return selection


def chunk_segments(start: int, count: int, chunk: int) -> list[tuple[int, int]]:
    """Cut images ``start .. start + count`` at chunk boundaries.

    Returns ``(begin, end)`` offsets from ``start``: each segment lies in one chunk,
    so the tasks that write them never write one chunk at once.
    """
    segments, pos = [], 0
    while pos < count:
        end = min(count, ((start + pos) // chunk + 1) * chunk - start)
        segments.append((pos, end))
        pos = end
    return segments


def _row_keys(part: pd.DataFrame, seen: dict[str, int]) -> list[str]:
    """Ledger keys of a partition's rows, by content (see :func:`idigdask.store.row_key`).

    ``seen`` counts the keys of the partitions before, so that the n-th exact repeat
    of a row gets its own key whatever else is wrong with it (excluded or not).
    """
    uuids = [text(u) or "" for u in part["media_uuid"]]
    uris = [redact(text(u) or "") for u in part["access_uri"]]
    return row_keys(uuids, uris, seen)


def _label_kind(catalog: "dd.DataFrame") -> str | None:
    if "label" not in catalog.columns:
        return None
    dtype = catalog["label"].dtype
    return "int" if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype) \
        else "str"


def _label_values(values: pd.Series, kind: str) -> np.ndarray:
    if kind == "int":
        return pd.to_numeric(values, errors="coerce").fillna(-1).astype("int64").to_numpy()
    return np.array([text(v) or "" for v in values], dtype=object)


class _Builder:
    """State of one build run: the store, the committed count, the dedup index."""

    def __init__(self, client: "Client", store: ImageStore, options: BuildOptions, *,
                 label_kind: str | None, run: int, committed: pd.DataFrame, progress,
                 chunk_size: int, n_images: int):
        self.client, self.store, self.options = client, store, options
        self.layout = store.layout
        # the store's own chunking wins over the options' on a resume
        self.batch_size, self.chunk_size = options.batch_size, chunk_size
        self.label_kind = label_kind
        self.dedup_enabled, self.keep_duplicates = options.dedup, options.keep_duplicates
        self.dedup = _Dedup(options.phash_distance if options.dedup else -1)
        self.run, self.wave = run, 0
        self.progress = progress
        self.n_images = n_images  # images are only appended, also past superseded rows
        if options.dedup:
            self.dedup = _held_images(committed, options.phash_distance, retired=True)
        self.processed = 0
        self.pending: deque = deque()
        self.last_write = None

    def submit(self, rows: pd.DataFrame) -> list:
        """Start the batch tasks of a wave; pixels stay on the workers."""
        from dask.base import tokenize

        futures = []
        # a wave is cut into a multiple of the worker threads' count of equal batches
        # (at most batch_size rows each), so that no thread idles while another
        # finishes a wave's last batch; a short wave gives every thread two
        threads = sum(self.client.nthreads().values()) or 1
        n_batches = max(2 * threads, -(-len(rows) // self.batch_size))
        n_batches = -(-n_batches // threads) * threads
        batch = max(1, -(-len(rows) // n_batches))
        # a task carries only the columns process_batch reads: every message is
        # smaller, and so is what distributed keeps of recent messages
        columns = [c for c in BATCH_COLUMNS if c in rows]
        for start in range(0, len(rows), batch):
            chunk = rows.iloc[start:start + batch][columns]
            key = f"process_batch-{tokenize(chunk, self.options)}"
            futures.append(self.client.submit(process_batch, chunk, self.options,
                                              key=key, pure=False))
        return futures

    def commit(self, rows: pd.DataFrame, futures: list) -> None:
        """Gather a wave's metadata, place its new images and start writing them.

        The wave's ledger part is committed by :meth:`flush` once its writes are done;
        meanwhile the driver goes on with the next wave.
        """
        # metadata and writes go before the next wave's batches queued on the workers
        metas = self.client.gather([self.client.submit(_ledger_of, f, priority=10)
                                    for f in futures])
        ledger = pd.concat(metas, ignore_index=True)
        batch_of = np.repeat(np.arange(len(metas)), [len(m) for m in metas])
        selection = place_wave(ledger, batch_of, self.n_images,
                               self.dedup if self.dedup_enabled else None, self.keep_duplicates)
        ledger["row_key"] = rows["_row_key"].to_numpy()
        ledger["catalog_row"] = rows["_catalog_row"].to_numpy()
        ledger["run"], ledger["wave"] = self.run, self.wave
        ledger["retired"] = False
        # the provider of each row, for reports by recordset (institution)
        ledger["recordset"] = (rows["recordset"].astype(object).where(rows["recordset"].notna(), None)
                               .to_numpy() if "recordset" in rows else None)
        writes = self._write(rows, ledger, selection, futures)
        span = (self.n_images, self.n_images + len(selection))
        self.pending.append((ledger[LEDGER_COLUMNS], self.wave, writes, futures, span))
        self.n_images += len(selection)
        self.wave += 1
        self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        """Commit, in order, the ledger parts of waves whose pixels are written."""
        while self.pending:
            ledger, wave, writes, futures, span = self.pending[0]
            if not wait and not all(w.done() for w in writes):
                return
            # raises if a write failed: the wave is not committed
            histogram = sum(self.client.gather(writes),
                            np.zeros((self.layout.channels, 256), "int64"))
            self.store.sync(*span)
            self.store.write_ledger(ledger, self.run, wave, histogram)
            self.pending.popleft()  # releases the wave's pixels on the workers
            self.processed += len(ledger)
            self.progress.update(len(ledger))

    def reconcile(self, plan: _Plan, ddf: "dd.DataFrame") -> None:
        """Commit the part that makes the ledger describe this build's catalog, then
        store the duplicates whose original left it (:func:`orphaned_duplicates`)."""
        committed = read_ledger(self.store.url, self.store.storage_options, retired=True)
        part = reconcile(committed, plan)
        if len(part):
            self.store.write_ledger(part[LEDGER_COLUMNS], self.run, self.wave,
                                    np.zeros((self.layout.channels, 256), "int64"))
            self.wave += 1
        if not self.dedup_enabled or self.keep_duplicates:
            return
        ledger = pd.concat([committed, part]).drop_duplicates("row_key", keep="last")
        # the duplicate search of this pass knows only the images the catalog holds now
        held = _held_images(ledger, self.options.phash_distance)
        orphans = orphaned_duplicates(ledger, held)
        if not orphans:
            return
        log.info("%d duplicates of images that left the catalog are stored", len(orphans))
        rows = _rows_with_keys(self.client, ddf, set(orphans))
        self.dedup = held
        self.commit(rows, self.submit(rows))
        self.flush()

    def _write(self, rows: pd.DataFrame, ledger: pd.DataFrame,
               selection: list[tuple[int, int]], futures: list) -> list:
        """Resize the arrays, start the pixel writes on the workers, write the coordinates."""
        from distributed import wait

        if not selection:
            return []
        start, k = self.n_images, len(selection)
        self.store.resize(start + k)
        ok = ledger["image_index"].to_numpy() >= 0
        # entries per placed row: one image, or a recording's clips
        repeat = ledger.loc[ok, "samples"].clip(lower=1).to_numpy()
        shas = np.repeat(ledger.loc[ok, "sha256"].to_numpy(dtype=object), repeat).tolist()
        writes = []
        for pos, end in chunk_segments(start, k, self.chunk_size):
            # one task per chunk-aligned segment, so no two tasks write one chunk at once;
            # a segment that completes a chunk begun by the previous wave waits for it
            seg = selection[pos:end]
            used = sorted({b for b, _ in seg})
            remap = {b: n for n, b in enumerate(used)}
            if pos == 0 and start % self.chunk_size and self.last_write is not None:
                wait(self.last_write)
            writes.append(self.client.submit(
                _write_segment, self.store.url, self.store.storage_options, start + pos,
                [(remap[b], p, sha) for (b, p), sha in zip(seg, shas[pos:end])],
                *[futures[b] for b in used], array=self.layout.array,
                channels=self.layout.channels, pure=False, priority=10))
        self.last_write = writes[-1]
        chosen = rows.iloc[np.flatnonzero(ok)]
        placed = ledger.loc[ok]
        n = len(chosen)
        coords = {
            "media_uuid": placed["media_uuid"].to_numpy(dtype=object),
            "record_uuid": np.array([_first(v) for v in chosen["record_uuids"]], dtype=object)
            if "record_uuids" in chosen else np.array([""] * n, dtype=object),
            "access_uri": placed["access_uri"].to_numpy(dtype=object),
            "sha256": placed["sha256"].to_numpy(dtype=object),
            "recordset": np.array([text(v) or "" for v in chosen["recordset"]], dtype=object)
            if "recordset" in chosen else np.array([""] * n, dtype=object),
        }
        if self.layout.media == "sounds":
            coords["duration"] = placed["duration"].to_numpy(dtype="float64")
            coords["source_rate"] = placed["source_rate"].to_numpy(dtype="int64")
        else:
            for name in ("phash", "source_width", "source_height"):
                coords[name] = placed[name].to_numpy(dtype=object if name == "phash" else "int64")
        if self.label_kind:
            coords["label"] = _label_values(chosen["label"], self.label_kind)
        # a recording's values go to each of its clips, with the clip's own offset
        coords = {name: np.repeat(values, repeat) for name, values in coords.items()}
        if self.layout.media == "sounds":
            coords["offset"] = np.concatenate([np.asarray(v, "float64")
                                               for v in placed["offsets"]])
        self.store.write_coords(start, coords)
        return writes


#: Sound options that only bound what is accepted: a resume may change them.
_SOUND_LIMITS = {"max_duration", "min_duration", "max_channels", "min_rate", "max_rate",
                 "silence_dbfs"}


def _sound_attrs(sound: SoundOptions) -> dict[str, Any]:
    """The sound options that shape the stored spectrograms (a store's ``sound`` attribute)."""
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(sound).items() if k not in _SOUND_LIMITS}


def _changed_sound(before: dict | None, now: dict) -> str:
    """The sound options that differ from a store's, as ``name: before -> now``."""
    before = before or {}
    return ", ".join(f"{k}: {before.get(k)!r} -> {v!r}" for k, v in now.items()
                     if before.get(k) != v) or "unknown"


def _prepare_location(target: ImageStore) -> None:
    """Refuse a location that holds something else; start a half-created store again."""
    state = target.state()
    if state == "foreign":
        raise UserError(f"{redact(target.url)} exists and is not an idigdask store; "
                        "build into a new path or an empty folder")
    if state == "partial":
        log.warning("%s: a store whose creation was cut short; creating it again",
                    redact(target.url))
        target.remove()
    target.check_writable()


def build_dataset(
    catalog: Any,
    store: str,
    options: BuildOptions | dict | None = None,
    *,
    storage_options: dict | None = None,
    media_storage_options: dict | None = None,
    catalog_storage_options: dict | None = None,
    catalog_options: dict[str, Any] | None = None,
    client: "Client | str | None" = None,
    cluster: str | None = None,
    jobs: int | str | None = None,
    cluster_options: dict | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> BuildResult:
    """Build (or resume, or extend) a chunked Zarr image store from a media catalog.

    Parameters
    ----------
    catalog : str or DataFrame
        Anything :func:`idigdask.read_catalog` takes, or a normalized catalog as a
        pandas or Dask DataFrame.
    store : str
        Local path or fsspec URL of the store (``s3://bucket/x.zarr``). An existing
        store is resumed: rows already ``ok`` or ``duplicate`` are not fetched again,
        new rows are appended, and rows that left the catalog are retired.
    options : BuildOptions or dict, optional
        How to fetch, decode, deduplicate and commit; defaults from the dask config.
    storage_options : dict, optional
        fsspec options for the store (none are needed, and none are passed, for a
        plain local path); also for the media unless ``media_storage_options`` is
        given, and for a catalog on the store's protocol unless
        ``catalog_storage_options`` is given.
    media_storage_options : dict, optional
        fsspec options for fetching the media (``options.fetch.storage_options``).
    catalog_storage_options : dict, optional
        fsspec options for reading the catalog.
    catalog_options : dict, optional
        Extra keyword arguments of :func:`~idigdask.read_catalog` (``url_column``,
        ``id_column``, ``label_column``, ``format``) when ``catalog`` is a source.
    client : distributed.Client or str, optional
        Where to run: this client, or the address of a scheduler to join; else the
        current client; else what the config ``idigdask.cluster`` says (see
        :func:`idigdask.get_client`).
    cluster, jobs, cluster_options : optional
        Run on workers in batch jobs of this kind (``"slurm"``, ``"sge"``...), as
        :func:`idigdask.get_client` takes them. A job killed mid-build is replaced
        and its batches are done again: the ledger and the pixels are those of a
        build without the kill.
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    **overrides
        Any field of :class:`BuildOptions` or of its
        :class:`~idigdask.fetch.FetchOptions` (``size=128``, ``timeout=5``), over
        ``options``.

    Returns
    -------
    BuildResult
        ``counts`` are the ledger's, adding up to the catalog's rows.

    Examples
    --------
    >>> idigdask.build_dataset("media.parquet", "sheets.zarr", size=128)   # doctest: +SKIP
    """
    import dataclasses
    import sys

    from tqdm.auto import tqdm

    from .catalog.read import open_catalog  # dask.dataframe: only when a build runs
    from .cluster import cluster_summary, get_client

    started = time.perf_counter()
    options = with_overrides(BuildOptions, options, overrides,
                             nested={"fetch": FetchOptions, "sound": SoundOptions})
    # without options of its own, the catalog takes the store's only on the store's
    # protocol: an s3 endpoint_url would break an HTTP catalog
    if catalog_storage_options is None and \
            classify_scheme(str(catalog)) == classify_scheme(str(store)):
        catalog_storage_options = storage_options
    # the catalog keeps the rows of the media kind built; the others are excluded
    catalog_options = {"media_type": options.media, **(catalog_options or {})}
    ddf, source, local_catalog = open_catalog(catalog, catalog_storage_options,
                                              **catalog_options)
    media = media_storage_options if media_storage_options is not None else storage_options
    if options.fetch.storage_options is None and media is not None:
        options = dataclasses.replace(
            options, fetch=dataclasses.replace(options.fetch, storage_options=media))
    if options.allow_local is None:
        options = dataclasses.replace(options, allow_local=local_catalog)
    size, resize_mode, chunk_size = options.size, options.resize_mode, options.chunk_size

    target = ImageStore(str(store), storage_options, media=options.media)
    _prepare_location(target)
    label_kind = _label_kind(ddf)
    sounds = options.media == "sounds"
    made = {"sound": _sound_attrs(options.sound)} if sounds else \
        {"size": size, "resize_mode": resize_mode}
    if target.exists():
        attrs = target.attrs
        if attrs.get("format_version", 1) != FORMAT_VERSION:
            raise UserError(f"{redact(str(store))} was written by an older idigdask (store format "
                            f"{attrs.get('format_version', 1)}, now {FORMAT_VERSION}); it can be "
                            "read, not extended: build into a new store")
        if (attrs.get("media") or "images") != options.media:
            raise UserError(f"{redact(str(store))} is a store of {attrs.get('media') or 'images'}, "
                            f"not of {options.media}: build into a new store")
        changed = [k for k, v in made.items() if attrs.get(k) != v]
        if changed and sounds:
            raise UserError(f"{redact(str(store))} was built with other sound options "
                            f"({_changed_sound(attrs.get('sound'), made['sound'])}); build into "
                            "a new store to change them")
        if changed:
            raise UserError(f"{redact(str(store))} was built with size {attrs.get('size')} "
                            f"and resize mode {attrs.get('resize_mode')!r}; build into a new "
                            "store to change them")
        chunk_size = int(attrs.get("chunk_size", chunk_size))
        label_kind = label_kind if "label" in target.array_names() else None
    else:
        extra = ({"sound": made["sound"], "clip_shape": list(options.sound.clip_shape)}
                 if sounds else {"resize_mode": resize_mode, "pad_color": list(options.pad_color)})
        target.create(size=options.sound.n_mels if sounds else size, chunk_size=chunk_size,
                      label_kind=label_kind,
                      sample_shape=options.sound.clip_shape if sounds else None,
                      attrs={**extra, "catalog_source": source, "idigdask_version": __version__})
    committed, _, n_committed = _read_parts(str(store), storage_options)
    done_status = {"ok", "duplicate"} | (set() if options.retry_failed else {"failed"})
    done_rows = committed[committed["status"].isin(done_status)]
    done = dict(zip(done_rows["row_key"], done_rows["catalog_row"].astype("int64")))
    if target.needs_truncate(n_committed):
        log.info("store holds images past the last commit; truncating to %d", n_committed)
        target.truncate(n_committed)

    show = sys.stderr.isatty() if progress is None else progress
    plan = _Plan()
    with get_client(client, cluster=cluster, jobs=jobs, cluster_options=cluster_options) \
            as dask_client, tqdm(desc="build", unit="row", disable=not show) as bar:
        builder = _Builder(dask_client, target, options, label_kind=label_kind,
                           run=target.next_run(), committed=committed, progress=bar,
                           chunk_size=chunk_size, n_images=n_committed)

        def wave_rows() -> int:  # of the threads now: batch jobs join and leave
            threads = sum(dask_client.nthreads().values()) or 1
            return options.batch_size * (options.wave_batches or 4 * threads)

        in_flight: deque = deque()
        for rows in _waves(dask_client, ddf, done, wave_rows, bar, plan):
            in_flight.append((rows, builder.submit(rows)))
            if len(in_flight) > 1:  # keep one wave fetching while the previous is written
                builder.commit(*in_flight.popleft())
        while in_flight:
            builder.commit(*in_flight.popleft())
        builder.flush()
        builder.reconcile(plan, ddf)
        ledger, histogram, _ = _read_parts(str(store), storage_options, histograms=True)
        mean, std = (stats_of_histogram(histogram) if histogram is not None
                     else channel_stats(str(store), storage_options))
        where = cluster_summary(dask_client)
    ledger = ledger[~ledger["retired"]]
    counts = ledger_counts(ledger)
    target.update_attrs({"channel_mean": mean, "channel_std": std,
                         "images": builder.n_images, "ledger_rows": counts["rows"]})
    return BuildResult(store=str(store), counts=counts, images=builder.n_images,
                       seconds=time.perf_counter() - started, processed=builder.processed,
                       cluster=where, media=options.media)


@dataclass
class _Plan:
    """What the enumeration of the catalog learnt: every key it holds, and where the
    rows not processed again (done before) now stand."""

    keys: set = field(default_factory=set)
    moved: dict = field(default_factory=dict)  # key -> catalog row, for rows skipped


def _waves(client: "Client", ddf: "dd.DataFrame", done: dict, wave_rows, bar,
           plan: _Plan):
    """Yield waves of catalog rows still to do, in catalog order.

    ``wave_rows`` is a count of rows, or a function of none giving it anew for each
    wave.

    Catalog partitions are read one at a time (the next one is already being read on
    the cluster), so a catalog of millions of rows never sits in one process.
    ``done`` maps the keys that need no new try to their committed catalog row.
    """
    size = wave_rows if callable(wave_rows) else (lambda: wave_rows)
    buffer: list[pd.DataFrame] = []
    buffered, target = 0, size()
    for part in _keyed_partitions(client, ddf):
        plan.keys.update(part["_row_key"])
        # a row the catalog now excludes is done again (no fetch): its reason may be new
        usable = part["excluded"].isna() | part["excluded"].astype(str).eq("")
        skip = (part["_row_key"].isin(done.keys()) & usable).to_numpy()
        for key, row in zip(part["_row_key"][skip], part["_catalog_row"][skip]):
            if done[key] != row:
                plan.moved[key] = int(row)
        todo = part[~skip]
        bar.update(len(part) - len(todo))
        while len(todo):
            take = todo.iloc[:max(1, target - buffered)]
            todo = todo.iloc[len(take):]
            buffer.append(take)
            buffered += len(take)
            if buffered >= target:
                yield pd.concat(buffer)
                buffer, buffered, target = [], 0, size()
    if buffer:
        yield pd.concat(buffer)


def reconcile(committed: pd.DataFrame, plan: _Plan) -> pd.DataFrame:
    """The ledger rows a build must commit so the ledger describes its catalog.

    ``committed`` is the whole ledger after the build's waves (retired rows too).
    Rows whose key the catalog no longer holds are retired (kept, never counted);
    rows the catalog still holds but that were not processed again take their new
    catalog position; a retired row comes back when its key does.
    """
    ledger = committed.set_index("row_key", drop=False)
    in_catalog = ledger.index.isin(list(plan.keys))
    changed = in_catalog == ledger["retired"].to_numpy()  # retire, or bring back
    ledger["retired"] = ~in_catalog
    moved = pd.Series(plan.moved, dtype="int64")
    moved = moved[moved.index.isin(ledger.index)]
    changed |= ledger.index.isin(moved.index)
    ledger.loc[moved.index, "catalog_row"] = moved.to_numpy()
    return ledger[changed].reset_index(drop=True)


def orphaned_duplicates(ledger: pd.DataFrame, dedup: _Dedup) -> list[str]:
    """Keys of the catalog's ``duplicate`` rows whose original is no longer in it.

    A row is found to duplicate an image before the build knows which rows have left
    the catalog; when no row of the catalog holds such an image any more (``dedup``
    indexes the images its ``ok`` rows hold), the duplicate is stored after all (its
    record, label and URI are its own), so that every image of the catalog is held by
    one of its rows.
    """
    current = ledger[~ledger["retired"] & (ledger["status"] == "duplicate")]
    return [key for key, sha, ph in zip(current["row_key"], current["sha256"], current["phash"])
            if dedup.find(sha, ph) is None]


def _held_images(ledger: pd.DataFrame, distance: int, retired: bool = False) -> _Dedup:
    """The duplicate index of the images the ledger's ``ok`` rows hold (those of rows
    that left the catalog too when ``retired``)."""
    dedup = _Dedup(distance)
    ok = ledger[(ledger["status"] == "ok") & (retired | ~ledger["retired"])]
    ok = ok.sort_values("image_index")
    for sha, ph, uuid in zip(ok["sha256"], ok["phash"], ok["media_uuid"]):
        dedup.add(sha, ph, uuid)
    return dedup


def _keyed_partitions(client: "Client", ddf: "dd.DataFrame"):
    """The catalog's partitions with each row's ledger key and catalog position."""
    from .catalog.read import iter_partitions

    seen: dict[str, int] = {}
    offset = 0
    for part in iter_partitions(client, ddf):
        if "excluded" not in part:
            part = part.assign(excluded=None)
        part = part.assign(_row_key=_row_keys(part, seen),
                           _catalog_row=np.arange(offset, offset + len(part)))
        offset += len(part)
        yield part


def _rows_with_keys(client: "Client", ddf: "dd.DataFrame", keys: set) -> pd.DataFrame:
    """The catalog rows with these keys (a second pass over the catalog), in order."""
    found = [part[part["_row_key"].isin(keys)] for part in _keyed_partitions(client, ddf)]
    return pd.concat(found) if found else pd.DataFrame()
