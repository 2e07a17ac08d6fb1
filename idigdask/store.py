"""The image store: an xarray Dataset in Zarr v3, and the ledger kept beside the pixels.

Layout of a store (a folder or any fsspec URL such as ``s3://bucket/sheets.zarr``)::

    zarr.json            group; attributes say how the store was made (``media``)
    images/              uint8 (image, y, x, channel), chunked along image, zstd
    media_uuid/ ...      1-D coordinates along image (provenance of every image)
    ledger/zarr.json     an empty sub-group that marks the ledger's folder
    ledger/part-R-W.parquet   one part per committed wave W of build run R

The ledger holds one row per catalog row processed; a later row for the same key
supersedes an earlier one (a resumed build retries what failed). A row's key is a
function of its own content (:func:`row_keys`: the media uuid, the redacted access
URI and, for an exact repeat, its occurrence), never of its position, so rows that
are inserted, removed or reordered between runs keep their keys. Rows that have left
the catalog are kept, marked ``retired``, and :func:`read_ledger` leaves them out.
The ledger is the source of truth for what is committed: the arrays may hold images
past the last committed wave after a crash, and :meth:`ImageStore.truncate` removes
them before a resume without ever destroying a committed image. On local file
systems the pixels and coordinates a part commits are flushed to disk before the
part is renamed into place.
Each part also carries, in its parquet metadata, the per-channel histogram of the
pixels its wave wrote, so the channel statistics of a store are the sum over its
committed parts and an incremental build never re-reads the images already stored.

A store of sound recordings (``media: sounds``, see :data:`LAYOUTS`) is laid out the
same way, with ``spectrograms/`` uint8 (clip, mel, time) in place of ``images/``: a
recording gives one or more clips, its ledger row pointing at the first
(``image_index``) and counting them (``samples``), and each clip keeps its media
uuid and its ``offset`` in seconds as coordinates along ``clip``.
"""

from __future__ import annotations

import datetime as _dt
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from .errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

#: Coordinates along ``image``: name -> (zarr dtype, fill value).
COORDS: dict[str, tuple[Any, Any]] = {
    "media_uuid": (str, ""),
    "record_uuid": (str, ""),
    "access_uri": (str, ""),
    "sha256": (str, ""),
    "phash": (str, ""),
    "source_width": ("int64", 0),
    "source_height": ("int64", 0),
    "recordset": (str, ""),
}

#: Coordinates along ``clip`` of a store of sounds: ``offset`` is where the clip starts
#: in its recording (seconds), ``duration`` the recording's length, ``source_rate`` its
#: sample rate before resampling.
SOUND_COORDS: dict[str, tuple[Any, Any]] = {
    "media_uuid": (str, ""),
    "record_uuid": (str, ""),
    "access_uri": (str, ""),
    "sha256": (str, ""),
    "offset": ("float64", 0.0),
    "duration": ("float64", 0.0),
    "source_rate": ("int64", 0),
    "recordset": (str, ""),
}


@dataclass(frozen=True)
class Layout:
    """How the samples of one media kind lie in a store.

    Attributes
    ----------
    media : str
        ``images`` or ``sounds``, the store's ``media`` attribute.
    array : str
        The name of the data array (``images``, ``spectrograms``).
    dim : str
        Its first dimension, along which the coordinates lie (``image``, ``clip``).
    axes : tuple of str
        The names of its other dimensions.
    coords : dict
        The coordinates along ``dim``: name -> (zarr dtype, fill value).
    channels : int
        The channels its histograms count (the last axis of an image, one for a
        spectrogram).

    Examples
    --------
    >>> LAYOUTS["sounds"].array, LAYOUTS["sounds"].dim, LAYOUTS["sounds"].axes
    ('spectrograms', 'clip', ('mel', 'time'))
    """

    media: str
    array: str
    dim: str
    axes: tuple[str, ...]
    coords: dict[str, tuple[Any, Any]]
    channels: int


#: The layout of each media kind a store can hold.
LAYOUTS: dict[str, Layout] = {
    "images": Layout("images", "images", "image", ("y", "x", "channel"), COORDS, 3),
    "sounds": Layout("sounds", "spectrograms", "clip", ("mel", "time"), SOUND_COORDS, 1),
}
MEDIA = tuple(LAYOUTS)


def layout_of(attrs: Any) -> Layout:
    """The layout of a store from its attributes (or an xarray Dataset's ``attrs``).

    Stores written before sounds existed have no ``media`` attribute: images.

    Examples
    --------
    >>> layout_of({"media": "sounds"}).array, layout_of({}).array
    ('spectrograms', 'images')
    """
    attrs = getattr(attrs, "attrs", attrs)
    return LAYOUTS[attrs.get("media") or "images"]


def input_shape(ds: Any) -> tuple[int, ...]:
    """The shape of one network input from a store's Dataset: an image's (y, x, channel),
    a spectrogram's (mel, time, 1) (the feed gives spectrograms a channel axis).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"spectrograms": (("clip", "mel", "time"), np.zeros((2, 64, 201)))},
    ...                 attrs={"media": "sounds"})
    >>> input_shape(ds)
    (64, 201, 1)
    """
    kind = layout_of(ds)
    shape = tuple(int(s) for s in ds[kind.array].shape[1:])
    return shape + (1,) if len(shape) == 2 else shape


LEDGER_COLUMNS = [
    "row_key", "media_uuid", "access_uri", "status", "reason", "message", "duplicate_of",
    "attempts", "nbytes", "seconds", "sha256", "phash", "source_width", "source_height",
    "image_index", "catalog_row", "run", "wave", "warnings", "retired", "recordset",
    "samples", "duration",
]
#: Text columns whose missing values read back as None, whatever their part's types.
_TEXT_COLUMNS = ("reason", "message", "duplicate_of", "warnings", "recordset")
#: Values of columns that parts written by older versions lack (``samples``: the
#: entries of the data array a row wrote, one image; ``duration``: of a recording).
_LEDGER_DEFAULTS = {"warnings": None, "retired": False, "recordset": None,
                    "samples": 1, "duration": float("nan")}
#: The store format: the ``format_version`` attribute of the stores this version writes.
#: Version 2 keys ledger rows by content (:func:`row_keys`) and decodes JPEGs from their
#: exact picture box. Older stores are read as they are; a build does not add to them,
#: since its images and keys would not be those the store's own version made.
FORMAT_VERSION = 2
STATUSES = ("ok", "failed", "duplicate", "excluded")
#: Parquet metadata key of a ledger part's pixel histogram (JSON, 3 x 256 counts).
HISTOGRAM_KEY = b"idigdask.pixel_histogram"


def _join(store: str, *parts: str) -> str:
    return posixpath.join(str(store).rstrip("/"), *parts)


def _fs(store: str, storage_options: dict | None):
    from fsspec.core import url_to_fs

    return url_to_fs(str(store), **(storage_options or {}))


def row_key(media_uuid: str, access_uri: str, occurrence: int = 1) -> str:
    """The ledger key of a catalog row: its uuid and a digest of its (redacted) URI.

    ``occurrence`` counts the rows with this same uuid and URI so far in catalog
    order: only an exact repeat gets a ``#n`` suffix, so the key of a row changes
    when its own content changes and never when other rows come, go or move.

    Parameters
    ----------
    media_uuid : str
        The row's media uuid.
    access_uri : str
        The row's (redacted) access URI; only its SHA-1 digest enters the key.
    occurrence : int
        How many rows with this uuid and URI have come so far, this one included.

    Returns
    -------
    str
        ``<media_uuid>@<16 hex digits>``, with ``#<occurrence>`` after the first.

    Examples
    --------
    >>> row_key("m1", "https://example.org/1.jpg")
    'm1@bccb2439bb0afcb1'
    >>> row_key("m1", "https://example.org/1.jpg", occurrence=2)
    'm1@bccb2439bb0afcb1#2'
    """
    import hashlib

    digest = hashlib.sha1(access_uri.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    key = f"{media_uuid}@{digest}"
    return key if occurrence <= 1 else f"{key}#{occurrence}"


def row_keys(media_uuids: Any, access_uris: Any, seen: dict[str, int]) -> list[str]:
    """Keys of consecutive catalog rows; ``seen`` counts the keys met so far (updated).

    Parameters
    ----------
    media_uuids, access_uris : iterable of str
        The rows' media uuids and (redacted) access URIs, in catalog order.
    seen : dict of str to int
        How often each :func:`row_key` has been met in earlier rows; updated in place,
        so that the next call continues the count.

    Returns
    -------
    list of str
        One key per row, as :func:`row_key` makes it.

    Examples
    --------
    >>> seen = {}
    >>> uris = ["https://example.org/1.jpg", "https://example.org/1.jpg",
    ...         "https://example.org/2.jpg"]
    >>> row_keys(["m1", "m1", "m2"], uris, seen)
    ['m1@bccb2439bb0afcb1', 'm1@bccb2439bb0afcb1#2', 'm2@67e7863590c0e5cb']
    >>> seen
    {'m1@bccb2439bb0afcb1': 2, 'm2@67e7863590c0e5cb': 1}
    """
    keys = []
    for uuid, uri in zip(media_uuids, access_uris):
        base = row_key(uuid, uri)
        count = seen.get(base, 0) + 1
        seen[base] = count
        keys.append(base if count == 1 else f"{base}#{count}")
    return keys


def zarr_storage_options(store: str, storage_options: dict | None) -> dict | None:
    """The storage options zarr takes for ``store``: none for a plain local path.

    zarr refuses options with a path (they belong to fsspec URLs), and a local folder
    needs none, so options meant for a remote catalog or media never break a local store.
    """
    return storage_options if "://" in str(store) or "::" in str(store) else None


def _is_local(fs) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols or "local" in protocols


def _fsync_files(paths: list[str]) -> None:
    """fsync files (or folders) that exist, then the folders that name them."""
    import os

    def flush(name: str) -> None:
        try:
            fd = os.open(name, os.O_RDONLY)
        except FileNotFoundError:
            return  # a chunk never written is absent: nothing to flush
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    for name in paths:
        flush(name)
    for folder in sorted({os.path.dirname(p) for p in paths} - set(paths)):
        flush(folder)


def open_dataset(store: str, storage_options: dict | None = None) -> "xr.Dataset":
    """Open an image store lazily as an :class:`xarray.Dataset`.

    Parameters
    ----------
    store : str
        Local path or fsspec URL of the store.
    storage_options : dict, optional
        Passed to fsspec (e.g. s3 ``key``, ``secret``, ``client_kwargs``).

    Returns
    -------
    xarray.Dataset
        ``images`` as a Dask array chunked like the store, with the provenance
        coordinates along ``image`` and the build attributes in ``attrs`` (a store of
        sounds: ``spectrograms`` along ``clip``, see :data:`LAYOUTS`).

    Examples
    --------
    >>> ds = idigdask.open_dataset("sheets.zarr")            # doctest: +SKIP
    >>> ds.images.isel(image=0).values.shape                  # doctest: +SKIP
    (256, 256, 3)
    """
    import xarray as xr

    fs, path = _fs(store, storage_options)
    if not fs.exists(_join(path, "zarr.json")):
        raise UserError(f"{store}: not an idigdask store (no zarr.json)")
    ds = xr.open_zarr(str(store), consolidated=False,
                      storage_options=zarr_storage_options(store, storage_options),
                      zarr_format=3)
    if layout_of(ds).array not in ds:
        raise UserError(f"{store}: not an idigdask store (no '{layout_of(ds).array}' array)")
    return ds


def read_ledger(store: str, storage_options: dict | None = None, *,
                retired: bool = False) -> pd.DataFrame:
    """Read the ledger of a store: one row per catalog row, the latest outcome of each.

    Parameters
    ----------
    store : str
        Local path or fsspec URL of the store.
    storage_options : dict, optional
        Passed to fsspec.
    retired : bool
        Also return the rows of earlier catalogs that the latest build's catalog no
        longer has (``retired`` True); they are never counted.

    Returns
    -------
    pandas.DataFrame
        Columns ``media_uuid``, ``status`` (``ok``, ``failed``, ``duplicate`` or
        ``excluded``), ``reason``, ``message``, ``warnings``, ``duplicate_of``,
        ``attempts``, ``nbytes``, ``seconds``, ``image_index`` (position in
        ``images`` or -1; of a recording's first clip in ``spectrograms``), ``samples``
        (the clips of a recording) and more, in catalog order.

    Examples
    --------
    >>> ledger = read_ledger("sheets.zarr")                              # doctest: +SKIP
    >>> ledger.groupby(["status", "reason"]).size()                      # doctest: +SKIP
    """
    ledger = _read_parts(store, storage_options).ledger
    if not retired:
        ledger = ledger[~ledger["retired"]]
    return ledger.reset_index(drop=True)


class LedgerParts(NamedTuple):
    """What one pass over a store's committed ledger parts gives."""

    ledger: pd.DataFrame            # the latest row per key, in catalog order
    histogram: np.ndarray | None    # the parts' pixel histogram (None: not read, or a part lacks one)
    images: int                     # one past the largest image index any part wrote


def _read_parts(store: str, storage_options: dict | None,
                histograms: bool = False) -> LedgerParts:
    """Every committed part in one pass.

    ``images`` counts also the images of rows a later part superseded (a row whose
    catalog entry came back excluded): images are only appended, so the committed
    length is one past the largest index any part ever wrote.
    """
    import json

    import pyarrow.parquet as pq

    fs, path = _fs(store, storage_options)
    if not fs.exists(_join(path, "zarr.json")):
        raise UserError(f"{store}: not an idigdask store (no zarr.json)")
    parts = sorted(fs.glob(_join(path, "ledger", "part-*.parquet")))
    total: Any = 0 if histograms else None  # (channels, 256) counts once a part is read
    frames = []
    for part in parts:
        with fs.open(part, "rb") as f:
            table = pq.read_table(f)
        meta = table.schema.metadata or {}
        if total is not None:
            total = (total + np.asarray(json.loads(meta[HISTOGRAM_KEY]), "int64")
                     if HISTOGRAM_KEY in meta else None)
        frames.append(table.to_pandas())
    if isinstance(total, int):
        total = np.zeros((3, 256), "int64")
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in LEDGER_COLUMNS})
        return LedgerParts(empty.astype({"retired": bool}), total, 0)
    ledger = pd.concat(frames, ignore_index=True)
    for name, default in _LEDGER_DEFAULTS.items():
        if name not in ledger:
            ledger[name] = default
    ledger["samples"] = pd.to_numeric(ledger["samples"]).fillna(1).astype("int64")
    last = pd.to_numeric(ledger["image_index"]) + ledger["samples"]
    images = int(last[ledger["image_index"] >= 0].max()) if (ledger["image_index"] >= 0).any() else 0
    ledger["retired"] = ledger["retired"].fillna(False).astype(bool)
    for name in _TEXT_COLUMNS:  # a part whose column was all missing reads back NaN
        ledger[name] = ledger[name].astype(object).where(ledger[name].notna(), None)
    ledger = ledger.drop_duplicates("row_key", keep="last")
    ledger = ledger.sort_values("catalog_row", kind="stable").reset_index(drop=True)
    return LedgerParts(ledger, total, max(images, 0))


def ledger_counts(ledger: pd.DataFrame) -> dict[str, Any]:
    """Counts by status and by ``status: reason``; they add up to ``rows``.

    Parameters
    ----------
    ledger : pandas.DataFrame
        Ledger rows, with ``status`` and ``reason`` columns.

    Returns
    -------
    dict
        ``rows`` (the row count), ``status`` (a count for each of ``ok``, ``failed``,
        ``duplicate`` and ``excluded``) and ``reasons`` (``"status: reason"``, or the
        status alone where there is no reason, to its count, sorted).

    Examples
    --------
    >>> import pandas as pd
    >>> ledger = pd.DataFrame({"status": ["ok", "failed", "failed", "excluded"],
    ...                        "reason": [None, "http_404", "timeout", "no_uri"]})
    >>> counts = ledger_counts(ledger)
    >>> counts["rows"], counts["status"]
    (4, {'ok': 1, 'failed': 2, 'duplicate': 0, 'excluded': 1})
    >>> counts["reasons"]
    {'excluded: no_uri': 1, 'failed: http_404': 1, 'failed: timeout': 1, 'ok': 1}
    """
    by_reason = (
        ledger.assign(key=ledger["status"] + ledger["reason"].fillna("").map(
            lambda r: f": {r}" if r else ""))
        .groupby("key").size().sort_index()
    )
    return {
        "rows": int(len(ledger)),
        "status": {s: int((ledger["status"] == s).sum()) for s in STATUSES},
        "reasons": {k: int(v) for k, v in by_reason.items()},
    }


@dataclass
class ImageStore:
    """Writes an image store: creates it, appends image rows, commits ledger parts.

    The pixel writes themselves happen on the Dask workers through
    :func:`write_images`; this object, held by the process that drives the build,
    only resizes arrays and writes the small coordinate and ledger data.

    Parameters
    ----------
    url : str
        The store's location (a local path or an fsspec URL).
    storage_options : dict, optional
        fsspec options for ``url``.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> store = ImageStore(os.path.join(tempfile.mkdtemp(), "sheets.zarr"))
    >>> store.state()
    'absent'
    >>> store.create(size=4, chunk_size=2, label_kind=None, attrs={})
    >>> store.state(), store.length()
    ('store', 0)
    >>> store.resize(2)
    >>> store.length()
    2
    """

    url: str
    storage_options: dict | None = None
    #: The media kind of a store to create; an existing store's own ``media`` wins.
    media: str = "images"

    @property
    def layout(self) -> Layout:
        """The store's layout: its ``media`` attribute's, or ``media``'s before creation."""
        if self.exists():
            return layout_of(self.attrs)
        return LAYOUTS[self.media]

    # -- creation and checks -------------------------------------------------------
    def _group(self, mode: str = "a"):
        import zarr

        return zarr.open_group(self.url, mode=mode, zarr_format=3,
                               storage_options=zarr_storage_options(self.url, self.storage_options))

    def exists(self) -> bool:
        fs, path = _fs(self.url, self.storage_options)
        return fs.exists(_join(path, "zarr.json"))

    def state(self) -> str:
        """What is at the store's location: ``absent`` (nothing, or an empty folder),
        ``store``, ``partial`` (a store whose creation was cut short: no ledger part,
        and some of its arrays or attributes missing) or ``foreign`` (anything else).
        """
        import json

        fs, path = _fs(self.url, self.storage_options)
        try:
            entries = {posixpath.basename(e.rstrip("/")) for e in fs.ls(path, detail=False)}
        except (FileNotFoundError, NotADirectoryError):
            return "foreign" if fs.isfile(path) else "absent"
        except Exception:  # noqa: BLE001 - unreadable (credentials...): check_writable says why
            return "absent"
        entries.discard(".idigdask-write-check")
        if not entries:
            return "absent"
        if "zarr.json" not in entries:
            return "foreign"
        ours = {"zarr.json", "ledger", "label", *(name for kind in LAYOUTS.values()
                                                  for name in (kind.array, *kind.coords))}
        try:
            meta = json.loads(fs.cat_file(_join(path, "zarr.json")))
        except (ValueError, OSError):
            meta = {}
        attrs = meta.get("attributes") or {}
        complete = "size" in attrs and {layout_of(attrs).array, "ledger"} <= entries
        if complete:
            return "store"
        has_parts = bool(fs.glob(_join(path, "ledger", "part-*.parquet")))
        if meta.get("node_type") == "group" and entries <= ours and not has_parts \
                and (not attrs or "idigdask_version" in attrs):
            return "partial"
        return "foreign"

    def remove(self) -> None:
        """Delete a ``partial`` store, so that it can be created again."""
        fs, path = _fs(self.url, self.storage_options)
        fs.rm(path, recursive=True)

    def create(self, *, size: int, chunk_size: int, label_kind: str | None,
               attrs: dict[str, Any], sample_shape: tuple[int, ...] | None = None) -> None:
        """Create the empty arrays of a new store (``label_kind``: "int", "str" or None).

        ``sample_shape`` is the shape of one entry of the data array: by default a
        ``size`` x ``size`` RGB image; a store of sounds gives its clips' (mel, time).
        """
        from zarr.codecs import ZstdCodec

        kind = LAYOUTS[self.media]
        shape = tuple(sample_shape) if sample_shape is not None else (size, size, 3)
        # the attributes (``size`` last of all) mark the store complete: a creation
        # cut short leaves a ``partial`` store, which the next build creates again
        group = self._group("a")
        group.attrs.update({"idigdask_version": attrs.get("idigdask_version"),
                            "media": kind.media})
        coords = dict(kind.coords)
        if label_kind == "int":
            coords["label"] = ("int64", -1)
        elif label_kind == "str":
            coords["label"] = (str, "")
        group.create_array(
            kind.array, shape=(0, *shape), chunks=(chunk_size, *shape),
            dtype="uint8", fill_value=0, compressors=ZstdCodec(level=3),
            dimension_names=(kind.dim, *kind.axes),
            attributes={"coordinates": " ".join(coords)},
        )
        for name, (dtype, fill) in coords.items():
            group.create_array(name, shape=(0,), chunks=(chunk_size,), dtype=dtype,
                               fill_value=fill, compressors=ZstdCodec(level=3),
                               dimension_names=(kind.dim,))
        group.create_group("ledger", attributes={"description": "idigdask build ledger"})
        group.attrs.update({**attrs, "chunk_size": chunk_size, "format_version": FORMAT_VERSION,
                            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
        group.attrs.update({"size": size})

    def check_writable(self) -> None:
        """Fail early, with one clear line, when the store cannot be written."""
        from .fetch import redact

        try:
            fs, path = _fs(self.url, self.storage_options)
            if "file" in fs.protocol or "local" in fs.protocol:
                fs.makedirs(path, exist_ok=True)  # never on object stores: no new buckets
            fs.pipe_file(_join(path, ".idigdask-write-check"), b"ok")
            fs.rm_file(_join(path, ".idigdask-write-check"))
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot write"
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"cannot write the store {redact(self.url)}: "
                            f"{type(exc).__name__}: {redact(reason)}") from None

    # -- state -----------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group("r").attrs)

    def array_names(self) -> list[str]:
        group = self._group("r")
        return [name for name, _ in group.arrays()]

    def length(self) -> int:
        return int(self._group("r")[self.layout.array].shape[0])

    def resize(self, n: int) -> None:
        """Set the length of every array along ``image``."""
        group = self._group("a")
        for name, arr in group.arrays():
            arr.resize((n,) + tuple(arr.shape[1:]))

    def needs_truncate(self, n: int) -> bool:
        """Whether any array holds entries past image ``n`` (a build stopped mid-wave)."""
        return any(arr.shape[0] > n for _, arr in self._group("r").arrays())

    def truncate(self, n: int) -> None:
        """Cut every array back to ``n`` images, exactly as if nothing had been appended.

        A kill at any moment leaves the committed images intact: the chunk that holds
        image ``n`` is first rewritten in place, committed part kept and the rest set
        to the fill value (one atomic chunk write), and only then is the array shrunk,
        which deletes the chunks wholly past it (they hold nothing committed). A
        truncation cut short is done again by the next resume, since each array stays
        longer than ``n`` until its last step.
        """
        group = self._group("a")
        for _, arr in group.arrays():
            length = arr.shape[0]
            if length <= n:
                continue
            chunk = arr.chunks[0]
            first = (n // chunk) * chunk
            end = min(length, first + chunk)
            if n > first:
                block = arr[first:end]
                block[n - first:] = arr.fill_value
                arr[first:end] = block
            arr.resize((n,) + tuple(arr.shape[1:]))
        self.sync(0, n, only_metadata=True)

    def sync(self, start: int, stop: int, *, only_metadata: bool = False) -> None:
        """Flush to disk the chunks of images ``start:stop`` and the arrays' metadata.

        Only local stores need it: an object store has an object once its PUT returned.
        Called before a ledger part commits those images, so that after a power loss a
        committed part never points at pixels that were still in the page cache.
        """
        fs, path = _fs(self.url, self.storage_options)
        if not _is_local(fs):
            return
        group = self._group("r")
        files = [_join(path, "zarr.json")]
        for name, arr in group.arrays():
            files.append(_join(path, name, "zarr.json"))
            if only_metadata or stop <= start:
                continue
            chunk = arr.chunks[0]
            tail = "/".join("0" * (arr.ndim - 1))
            for index in range(start // chunk, -(-stop // chunk)):
                files.append(_join(path, name, "c", str(index), tail).rstrip("/"))
        _fsync_files(files)

    def write_coords(self, start: int, coords: dict[str, np.ndarray]) -> None:
        """Write coordinate values for images ``start ..`` (arrays already resized)."""
        group = self._group("a")
        for name, values in coords.items():
            if name in group and len(values):
                group[name][start:start + len(values)] = values

    def write_ledger(self, part: pd.DataFrame, run: int, wave: int,
                     histogram: np.ndarray) -> None:
        """Commit one ledger part: after this, the wave's rows count as done.

        ``histogram`` (3 x 256 counts of the pixels the wave wrote) is committed with
        the part, in its parquet metadata, so the two can never disagree. The part is
        written beside its final name, flushed, and renamed into place.
        """
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        fs, path = _fs(self.url, self.storage_options)
        target = _join(path, "ledger", f"part-{run:04d}-{wave:06d}.parquet")
        tmp = target + ".tmp"
        table = pa.Table.from_pandas(part, preserve_index=False)
        table = table.replace_schema_metadata({
            **(table.schema.metadata or {}),
            HISTOGRAM_KEY: json.dumps(np.asarray(histogram, "int64").tolist())})
        with fs.open(tmp, "wb") as f:
            pq.write_table(table, f)
        if _is_local(fs):
            _fsync_files([tmp])
        fs.mv(tmp, target)
        if _is_local(fs):
            _fsync_files([_join(path, "ledger")])  # the rename itself

    def pixel_histogram(self) -> np.ndarray | None:
        """Sum of the committed ledger parts' pixel histograms, shape (3, 256).

        None when a part has no histogram (a store written before parts carried one):
        :func:`channel_stats` then reads the pixels instead.
        """
        return _read_parts(self.url, self.storage_options, histograms=True).histogram

    def next_run(self) -> int:
        fs, path = _fs(self.url, self.storage_options)
        parts = fs.glob(_join(path, "ledger", "part-*.parquet"))
        runs = [int(posixpath.basename(p).split("-")[1]) for p in parts]
        return max(runs, default=-1) + 1

    def update_attrs(self, values: dict[str, Any]) -> None:
        self._group("a").attrs.update(values)


def write_images(store: str, storage_options: dict | None, start: int,
                 pixels: np.ndarray, array: str = "images") -> int:
    """Write ``pixels`` into ``images[start:start+len(pixels)]``; runs on a worker.

    Parameters
    ----------
    store : str
        The store's location.
    storage_options : dict or None
        fsspec options for ``store``.
    start : int
        The first image row to write.
    pixels : numpy.ndarray
        ``(n, size, size, 3)`` uint8; the ``images`` array must already hold
        ``start + n`` rows (:meth:`ImageStore.resize`).
    array : str
        The data array written (``spectrograms`` in a store of sounds).

    Returns
    -------
    int
        The number of images written.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import numpy as np
    >>> url = os.path.join(tempfile.mkdtemp(), "sheets.zarr")
    >>> store = ImageStore(url)
    >>> store.create(size=4, chunk_size=2, label_kind=None, attrs={})
    >>> store.resize(3)
    >>> write_images(url, None, 1, np.full((2, 4, 4, 3), 255, np.uint8))
    2
    """
    import zarr

    # write_empty_chunks: skip zarr's pass comparing every chunk to the fill value;
    # a chunk of images is never all zeros in practice, and writing one is harmless
    arr = zarr.open_array(_join(store, array), mode="r+",
                          storage_options=zarr_storage_options(store, storage_options)
                          ).with_config({"write_empty_chunks": True})
    arr[start:start + len(pixels)] = pixels
    return len(pixels)


def channel_histograms(block: np.ndarray, channels: int = 3) -> np.ndarray:
    """Counts of each 8-bit value per channel in a block of images: shape (3, 256).

    ``channels=1`` counts a block with no channel axis (spectrograms): shape (1, 256).
    """
    if channels == 1:
        return np.bincount(np.ravel(block), minlength=256)[None, :].astype("int64")
    if block.dtype == np.uint8 and block.ndim >= 3 and block.shape[-1] == 3 and block.size:
        from PIL import Image

        # Pillow counts all three channels in one C pass, a third of bincount's time
        tall = np.ascontiguousarray(block).reshape(-1, block.shape[-2], 3)
        return np.asarray(Image.fromarray(tall).histogram(), "int64").reshape(3, 256)
    flat = block.reshape(-1, block.shape[-1])
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(flat.shape[1])])


def stats_of_histogram(counts: np.ndarray) -> tuple[list, list]:
    """Per-channel mean and standard deviation from (channels, 256) value counts."""
    counts = np.asarray(counts, dtype="float64")
    n = counts.sum(axis=1)
    if not n.all():
        return [0.0] * len(counts), [0.0] * len(counts)
    values = np.arange(256, dtype="float64")
    mean = counts @ values / n
    std = np.sqrt(np.maximum(counts @ values**2 / n - mean**2, 0.0))
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def channel_stats(store: str, storage_options: dict | None = None) -> tuple[list, list]:
    """Per-channel mean and standard deviation of the stored pixels (a Dask reduction).

    Each chunk is reduced on a worker to a histogram of its 8-bit values per channel;
    the histograms add up exactly, so the result does not depend on chunking or on
    how the store was built, and no float copy of the pixels is ever made. A build
    gets the same figures without reading the store again: its write tasks reduce
    the pixels they write the same way (see :meth:`ImageStore.pixel_histogram`).

    Parameters
    ----------
    store : str
        The store's location.
    storage_options : dict, optional
        fsspec options for ``store``.

    Returns
    -------
    tuple of (list of float, list of float)
        The mean and the standard deviation of each channel, in 0-255 units, rounded
        to 4 decimals; zeros for an empty store.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import numpy as np
    >>> url = os.path.join(tempfile.mkdtemp(), "sheets.zarr")
    >>> store = ImageStore(url)
    >>> store.create(size=4, chunk_size=2, label_kind=None, attrs={})
    >>> store.resize(2)
    >>> write_images(url, None, 0, np.full((2, 4, 4, 3), (10, 20, 30), np.uint8))
    2
    >>> channel_stats(url)
    ([10.0, 20.0, 30.0], [0.0, 0.0, 0.0])
    """
    import dask
    import dask.array as da

    kind = ImageStore(store, storage_options).layout
    images = da.from_zarr(_join(store, kind.array),
                          storage_options=zarr_storage_options(store, storage_options))
    if images.shape[0] == 0:
        return [0.0] * kind.channels, [0.0] * kind.channels
    per_chunk = [dask.delayed(channel_histograms)(b, kind.channels)
                 for b in images.to_delayed().ravel()]
    return stats_of_histogram(dask.delayed(sum)(per_chunk).compute())
