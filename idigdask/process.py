"""The per-record core of a build: bytes to pixels and hashes, and a batch of rows to a
ledger. Pure functions, run on the workers; :mod:`idigdask.build` wires them to Dask.

:func:`process_bytes` turns one image's bytes into its pixels, hashes and source size
(or raises :class:`~idigdask.errors.MediaError` with a reason); :func:`process_batch`
does it for a batch of catalog rows, fetching them concurrently, and accounts for
every row: excluded by the catalog, a scheme the build does not fetch, failed with a
reason, or ``ok``. A build of sounds (``media="sounds"``) turns each recording into
its clips' spectrograms instead (:func:`idigdask.audio.process_sound_bytes`): the
same fetch, checks and ledger, a recording giving one or more entries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .decode import decode_image
from .errors import MediaError
from .fetch import iter_fetch
from .hashing import phash_hex, sha256_hex, verify_hash
from .urls import LOCAL_SCHEMES, REMOTE_SCHEMES, classify_scheme, redact

if TYPE_CHECKING:  # pragma: no cover
    from .build import BuildOptions

__all__ = ["BATCH_COLUMNS", "BatchResult", "Processed", "process_batch", "process_bytes",
           "process_sound"]

#: The catalog columns :func:`process_batch` reads.
BATCH_COLUMNS = ("media_uuid", "access_uri", "excluded", "hash_function", "hash_value")


@dataclass
class Processed:
    """One image made ready for the store.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``(size, size, 3)`` uint8, resized as the build options say.
    sha256 : str
        Hex SHA-256 of the image's bytes.
    phash : str
        Hex perceptual hash of the pixels.
    source_width, source_height : int
        The size of the image as decoded, before resizing.
    warnings : tuple of str
        What was mended to decode it (empty when nothing).

    Examples
    --------
    >>> import numpy as np
    >>> image = Processed(np.zeros((4, 4, 3), np.uint8), "0" * 64, "0" * 16, 640, 480, ())
    >>> image.pixels.shape, image.source_width, image.warnings
    ((4, 4, 3), 640, ())
    """

    pixels: np.ndarray          # (size, size, 3) uint8
    sha256: str                 # of the bytes
    phash: str                  # of the pixels
    source_width: int
    source_height: int
    warnings: tuple[str, ...]   # what was mended to decode it


@dataclass
class BatchResult:
    """What one batch task returns: pixels of its ``ok`` rows and a ledger row per row.

    A batch of sounds returns the clips' spectrograms as ``pixels``; its ledger rows
    point at their first clip (``pixel_index``), count them (``samples``) and carry
    their ``offsets`` (seconds) and the recordings' ``source_rate``.
    """

    pixels: np.ndarray
    ledger: pd.DataFrame


def text(value: Any) -> str | None:
    """A catalog value as text; None for missing values of any kind."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) \
        or value is pd.NA else str(value)


def process_bytes(data: bytes, hash_function: str | None, hash_value: str | None,
                  options: "BuildOptions") -> Processed:
    """Verify, decode, resize and hash one image.

    Parameters
    ----------
    data : bytes
        The media file.
    hash_function, hash_value : str, optional
        The record's hash of the file (``ac:hashFunction``, ``ac:hashValue``),
        checked when ``options.verify_hashes``.
    options : BuildOptions
        ``size``, ``resize_mode``, ``pad_color``, ``max_pixels``, ``max_decode_bytes``
        and ``verify_hashes`` are used.

    Returns
    -------
    Processed
        The resized pixels, hashes, source size and decoding warnings.

    Raises
    ------
    MediaError
        With a reason (``hash_mismatch``, ``not_an_image``, ``corrupt``, ``too_large``,
        ``out_of_memory`` ...): the image cannot be stored.

    Examples
    --------
    >>> import numpy as np
    >>> from idigdask import BuildOptions
    >>> from idigdask.synthetic import encode_jpeg
    >>> data = encode_jpeg(np.full((48, 64, 3), 200, np.uint8))
    >>> image = process_bytes(data, None, None, BuildOptions(size=32))
    >>> image.pixels.shape, image.pixels.dtype, image.source_width, image.source_height
    ((32, 32, 3), dtype('uint8'), 64, 48)
    >>> from idigdask.errors import MediaError
    >>> try:
    ...     process_bytes(b"not an image", None, None, BuildOptions(size=32))
    ... except MediaError as exc:
    ...     print(exc.reason)
    not_an_image
    """
    digest = sha256_hex(data)
    if options.verify_hashes and verify_hash(data, hash_function, hash_value) is False:
        raise MediaError("hash_mismatch", f"{hash_function} of the bytes is not the "
                                          f"record's {hash_value}")
    try:
        decoded = decode_image(data, options.size, resize_mode=options.resize_mode,
                               pad_color=options.pad_color, max_pixels=options.max_pixels,
                               max_decode_bytes=options.max_decode_bytes)
        phash = phash_hex(decoded.pixels)
    except MemoryError:  # one image too big for this worker: a failed row, not a stopped build
        raise MediaError("out_of_memory", f"decoding {len(data)} bytes ran out of memory") from None
    return Processed(decoded.pixels, digest, phash, decoded.source_width,
                     decoded.source_height, tuple(decoded.warnings))


def process_batch(rows: pd.DataFrame, options: "BuildOptions") -> BatchResult:
    """Fetch, decode, resize and hash a batch of catalog rows.

    Pure per-batch work for one Dask task: no shared state, every row accounted for.
    Fetching keeps many requests in flight while the bodies that already arrived are
    decoded, so a batch never holds more raw bytes than its requests in flight.

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of a normalized catalog (the :data:`BATCH_COLUMNS`).
    options : BuildOptions
        Size, resizing, hash checks, the schemes fetched (``allow_local``) and the
        :class:`~idigdask.FetchOptions` in ``options.fetch``.

    Returns
    -------
    BatchResult
        ``pixels`` of shape (n_ok, size, size, 3) uint8 and ``ledger`` with one row per
        input row, in input order, ``pixel_index`` pointing into ``pixels`` (or -1).

    Raises
    ------
    UserError
        When the fetch options cannot work at all (see
        :func:`~idigdask.fetch.fetch_many_async`); a failed image is a ledger row, not
        an exception.

    Examples
    --------
    >>> import pandas as pd
    >>> from idigdask import BuildOptions
    >>> rows = pd.DataFrame({"media_uuid": ["m1", "m2"],
    ...                      "access_uri": ["https://example.org/1.jpg", "ftp://example.org/2"],
    ...                      "excluded": ["no_uri", None]})
    >>> result = process_batch(rows, BuildOptions(size=32))
    >>> result.pixels.shape
    (0, 32, 32, 3)
    >>> result.ledger[["media_uuid", "status", "reason"]].values.tolist()
    [['m1', 'excluded', 'no_uri'], ['m2', 'excluded', 'scheme_not_allowed:ftp']]
    """
    n = len(rows)
    out = {
        "media_uuid": [text(u) or "" for u in rows["media_uuid"]],
        "access_uri": [redact(text(u) or "") for u in rows["access_uri"]],
        "status": ["excluded"] * n, "reason": [None] * n, "message": [None] * n,
        "attempts": [0] * n, "nbytes": [0] * n, "seconds": [0.0] * n,
        "sha256": [""] * n, "phash": [""] * n,
        "source_width": [0] * n, "source_height": [0] * n, "pixel_index": [-1] * n,
        "warnings": [None] * n, "samples": [0] * n, "duration": [float("nan")] * n,
    }
    sounds = options.media == "sounds"
    if sounds:
        out["offsets"], out["source_rate"] = [None] * n, [0] * n
    excluded = rows["excluded"] if "excluded" in rows else pd.Series([None] * n)
    wanted: list[int] = []
    for i, (uri, why) in enumerate(zip(rows["access_uri"], excluded)):
        why = text(why)
        if why:
            out["reason"][i], out["message"][i] = why, "excluded by the catalog"
            continue
        scheme = classify_scheme(text(uri) or "")
        if not options.scheme_allowed(scheme):
            out["reason"][i] = f"scheme_not_allowed:{scheme}"
            out["message"][i] = ("local media need the build option allow_local"
                                 if scheme in LOCAL_SCHEMES else
                                 f"only {', '.join(REMOTE_SCHEMES)} URLs are fetched")
            continue
        wanted.append(i)

    # a body's pixels go to its row's slot, not to the next free one: the fetches end
    # in any order, and a batch done again (its worker lost) must give the same layout
    pixels = np.zeros((0 if sounds else len(wanted), options.size, options.size, 3), np.uint8)
    clips: list[np.ndarray | None] = [None] * len(wanted)
    ok = np.zeros(len(wanted), bool)
    hash_functions = rows["hash_function"].tolist() if "hash_function" in rows else [None] * n
    hash_values = rows["hash_value"].tolist() if "hash_value" in rows else [None] * n
    uris = [str(rows["access_uri"].iloc[i]) for i in wanted]
    for j, result in iter_fetch(uris, options.fetch):
        i = wanted[j]
        out["attempts"][i], out["nbytes"][i] = result.attempts, result.nbytes
        out["seconds"][i] = round(result.seconds, 4)
        if result.status != "ok":
            out["status"][i], out["reason"][i], out["message"][i] = \
                "failed", result.reason, result.message
            continue
        started = time.perf_counter()
        try:
            if sounds:
                sound = process_sound(result.data, text(hash_functions[i]),
                                      text(hash_values[i]), options)
            else:
                image = process_bytes(result.data, text(hash_functions[i]),
                                      text(hash_values[i]), options)
        except MediaError as exc:
            out["status"][i], out["reason"][i], out["message"][i] = \
                "failed", exc.reason, redact(exc.message)
            continue
        finally:
            out["seconds"][i] = round(out["seconds"][i] + time.perf_counter() - started, 4)
        ok[j] = True
        out["status"][i] = "ok"
        if sounds:
            clips[j] = sound.spectrograms
            out["sha256"][i], out["samples"][i] = sound.sha256, len(sound.spectrograms)
            out["duration"][i] = round(float(sound.duration), 4)
            out["offsets"][i] = [round(float(t), 4) for t in sound.offsets]
            out["source_rate"][i] = int(sound.source_rate)
            out["warnings"][i] = "; ".join(sound.warnings) or None
            continue
        pixels[j], out["samples"][i] = image.pixels, 1
        out["sha256"][i], out["phash"][i] = image.sha256, image.phash
        out["source_width"][i], out["source_height"][i] = image.source_width, image.source_height
        out["warnings"][i] = "; ".join(image.warnings) or None
    kept = np.flatnonzero(ok)
    position = 0
    for j in kept:  # the ok rows' pixels (a recording's clips), in row order
        out["pixel_index"][wanted[j]] = position
        position += out["samples"][wanted[j]]
    if sounds:
        shape = options.sound.clip_shape
        data = np.concatenate([clips[j] for j in kept]) if len(kept) else \
            np.zeros((0, *shape), np.uint8)
        return BatchResult(pixels=data, ledger=pd.DataFrame(out))
    return BatchResult(pixels=pixels[kept], ledger=pd.DataFrame(out))


def process_sound(data: bytes, hash_function: str | None, hash_value: str | None,
                  options: "BuildOptions"):
    """Verify one recording's bytes and turn them into its clips' spectrograms.

    The sound counterpart of :func:`process_bytes`: the record's hash is checked
    when ``options.verify_hashes``, then :func:`idigdask.audio.process_sound_bytes`
    decodes, resamples, trims and cuts it as ``options.sound`` says.

    Returns
    -------
    idigdask.audio.Clips

    Raises
    ------
    MediaError
        With a reason (``hash_mismatch``, ``not_audio``, ``corrupt``, ``silent``,
        ``too_long`` ...): the recording cannot be stored.

    Examples
    --------
    >>> from idigdask import BuildOptions
    >>> from idigdask.errors import MediaError
    >>> try:
    ...     process_sound(b"<!DOCTYPE html><p>404</p>", None, None, BuildOptions(media="sounds"))
    ... except MediaError as exc:
    ...     print(exc.reason)
    not_audio
    """
    from .audio import process_sound_bytes

    if options.verify_hashes and verify_hash(data, hash_function, hash_value) is False:
        raise MediaError("hash_mismatch", f"{hash_function} of the bytes is not the "
                                          f"record's {hash_value}")
    try:
        return process_sound_bytes(data, options.sound)
    except MemoryError:
        raise MediaError("out_of_memory", f"decoding {len(data)} bytes ran out of memory") from None
