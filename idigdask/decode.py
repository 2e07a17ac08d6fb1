"""Bytes in, a fixed-size RGB array out: the per-image hot path, as pure functions.

:func:`decode_image` turns the bytes of one media file into a ``(size, size, 3)`` uint8
array, or raises :class:`~idigdask.errors.MediaError` with a ledger ``reason``:

``not_an_image``
    Empty body, an HTML error page, or bytes no accepted image decoder recognises.
``truncated``
    The file stops early (a JPEG without its end-of-image marker, a PNG without IEND).
``corrupt``
    Any other decoder error, including JPEG scan data that libjpeg reports as corrupt,
    PNG chunks failing their CRC and compressed streams that do not inflate, all of
    which would otherwise decode into garbage.
``bomb``
    More pixels than ``max_pixels``, judged from the header before decoding.
``too_large``
    Decoding would need more memory than ``max_decode_bytes``, judged from the header
    (pixel count times the bytes a pixel of the decoded mode costs, see
    :func:`decode_bytes`).
``out_of_memory``
    The decoder ran out of memory all the same; the record fails, the run goes on.

A decoded image may carry ``warnings``: short machine-readable strings for faults that
were mended without touching a pixel:

``jpeg_extraneous_bytes``
    Junk bytes between JPEG header segments (or before the end marker) were skipped.
``jpeg_bad_icc``
    The ICC profile segments are inconsistent (repeated or missing parts).
``jpeg_bad_app14``
    The Adobe APP14 segment is cut short or names an unknown colour transform.
``jpeg_bad_jfif``
    The JFIF APP0 segment is cut short or names an unknown JFIF version.
``jpeg_header_repaired``
    The strict decoder refused the header, and the same file with only its pixel
    segments (tables, frame, scan) decodes strictly.
``exif_unreadable``
    The EXIF block cannot be parsed; the image is shown as stored (orientation 1).

JPEGs, nearly all of iDigBio's media, are decoded at reduced scale in the DCT domain
(1/2 ... 1/8) to the smallest size that still covers the target, which makes a
3000x4500 sheet several times faster than a full decode; simplejpeg does this in strict
mode so that corrupt scan data raises instead of decoding silently into grey blocks.
When the strict decoder refuses a file for its header alone (junk bytes, a broken ICC,
APP14 or JFIF segment), the header is rebuilt from the segments libjpeg would read and
the scan is decoded strictly again, so corrupt or truncated scans are still refused.
"""

from __future__ import annotations

import re
import zlib
from io import BytesIO
from typing import Iterator, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import MediaError, UserError

__all__ = ["DEFAULT_MAX_DECODE_BYTES", "Decoded", "MAX_SIZE", "MIN_SIZE", "RESIZE_MODES",
           "decode_bytes", "decode_image", "resize", "to_rgb"]

#: How an image is fitted into the square output.
RESIZE_MODES = ("pad", "crop", "stretch")
#: Smallest and largest side of the square output, in pixels: the one limit of every
#: stage that makes images (decode, build, predict).
MIN_SIZE = 8
MAX_SIZE = 4096

#: Default memory bound of one decode, 1 GiB: every RGB or 16-bit image under the default
#: pixel limit fits; RGBA above about 85 megapixels and crops of RGB above about 130 do not.
DEFAULT_MAX_DECODE_BYTES = 1 << 30

#: Image formats Pillow may try, in order, and the plugin of each (BMP's registers DIB
#: too; an MPO opens through JPEG's); anything else (EPS, PSD, exotic plugins) is refused.
_PLUGINS = {"JPEG": "JpegImagePlugin", "MPO": "MpoImagePlugin", "PNG": "PngImagePlugin",
            "GIF": "GifImagePlugin", "TIFF": "TiffImagePlugin", "WEBP": "WebPImagePlugin",
            "BMP": "BmpImagePlugin", "DIB": "BmpImagePlugin", "PPM": "PpmImagePlugin",
            "JPEG2000": "Jpeg2KImagePlugin", "ICO": "IcoImagePlugin", "AVIF": "AvifImagePlugin"}
_FORMATS = tuple(_PLUGINS)

#: Pillow resizes by an integer box reduction first when the factor exceeds this;
#: 3.0 is indistinguishable from a fair Lanczos in practice and much faster.
_REDUCING_GAP = 3.0

#: libjpeg warnings that leave the image intact (junk bytes before the end marker).
_BENIGN_JPEG = re.compile(r"extraneous bytes before marker 0xd9", re.IGNORECASE)

#: libjpeg messages of a scan that stops early.
_TRUNCATED_JPEG = re.compile(r"premature end", re.IGNORECASE)

#: Modes with more than 8 bits a sample, scaled (never clipped) to 8 bits.
_HIGH_DEPTH = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")

#: Pixels converted at a time from a high-depth mode: its float64 work array stays at 4 MB.
_STRIP_PIXELS = 1 << 19

#: Bytes a pixel of Pillow's raster, by mode (Pillow pads 3-band modes to 4 bytes).
_RASTER_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
#: Modes whose 8-bit form is ``L`` (1 byte a pixel) rather than ``RGB`` (4).
_GREY_RESULT = ("1", "L", *_HIGH_DEPTH)
#: Work memory of one decode whatever its size: conversion strips, codec buffers.
_WORK_BYTES = 32 << 20
#: Bytes a sample that a codec keeps besides Pillow's raster: OpenJPEG decodes JPEG 2000
#: into 32-bit integers a sample (and a tile buffer), measured at about 4.5.
_CODEC_SAMPLE_BYTES = {"JPEG2000": 5}

_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class Decoded(NamedTuple):
    """A decoded and resized image.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``(size, size, 3)`` uint8 RGB.
    source_width, source_height : int
        Size of the original image as displayed, that is after its orientation (EXIF,
        XMP or TIFF tag) is applied: the stored raster's size, with width and height
        swapped for orientations 5 to 8. Full-resolution pixels for every format, even
        when a JPEG is decoded at reduced scale.
    format : str
        The file format as Pillow names it (``"JPEG"``, ``"PNG"`` ...).
    warnings : tuple of str
        Faults that were mended without touching a pixel (see the module notes), in
        sorted order; empty for a clean file.

    Examples
    --------
    >>> from io import BytesIO
    >>> buf = BytesIO(); Image.new("RGB", (300, 200), "red").save(buf, "PNG")
    >>> decoded = decode_image(buf.getvalue(), 64)
    >>> decoded.pixels.shape, decoded.pixels.dtype
    ((64, 64, 3), dtype('uint8'))
    >>> decoded.source_width, decoded.source_height, decoded.format, decoded.warnings
    (300, 200, 'PNG', ())
    """

    pixels: np.ndarray
    source_width: int
    source_height: int
    format: str
    warnings: tuple[str, ...] = ()


# --------------------------------------------------------------------------- options


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) \
            or not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"image size must be an integer between {MIN_SIZE} and {MAX_SIZE}, "
                        f"got {size!r}")
    return int(size)


def _check_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise UserError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    return mode


def _check_color(color: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(color, (int, np.integer)):
        color = (color, color, color)
    try:
        rgb = tuple(int(c) for c in color)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise UserError(f"pad colour must be three integers 0-255, got {color!r}")
    return rgb  # type: ignore[return-value]


def _check_limit(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- resize


def _array_to_image(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise UserError(f"expected a uint8 array of shape (h, w), (h, w, 3) or (h, w, 4), "
                        f"got {arr.dtype} {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return Image.fromarray(np.ascontiguousarray(arr))


def resize(img: Image.Image | np.ndarray, size: int = 256, mode: str = "pad",
           pad_color: int | Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """Fit an image into a ``size`` x ``size`` square with anti-aliasing.

    Parameters
    ----------
    img : PIL.Image.Image or numpy.ndarray
        The image; an array must be uint8 ``(h, w)``, ``(h, w, 3)`` or ``(h, w, 4)``.
        Any Pillow mode is converted as by :func:`to_rgb` first (grey stays one channel
        until the square is made, which gives the same pixels at a quarter the memory).
    size : int, default 256
        Side of the output square.
    mode : {"pad", "crop", "stretch"}, default "pad"
        ``pad`` keeps the aspect and letterboxes the image, centred, on ``pad_color``;
        ``crop`` keeps the aspect and cuts the centred square; ``stretch`` ignores the
        aspect.
    pad_color : int or (int, int, int), default white
        Colour of the letterbox (and of transparent pixels).

    Returns
    -------
    numpy.ndarray
        ``(size, size, 3)`` uint8 RGB, a fresh writable array.

    Examples
    --------
    >>> resize(np.zeros((30, 60, 3), np.uint8), 8).shape
    (8, 8, 3)
    """
    size, mode, pad = _check_size(size), _check_mode(mode), _check_color(pad_color)
    if isinstance(img, np.ndarray):
        img = _array_to_image(img)
    return _fit(_to_8bit(img, pad), size, mode, pad)


def _fit(img: Image.Image, size: int, mode: str, pad: tuple[int, int, int],
         source: tuple[int, int] | None = None,
         box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """:func:`resize` of an 8-bit ``RGB`` or ``L`` image.

    For a reduced decode, ``source`` is the full-resolution size and ``box`` the part of
    ``img`` that is picture (see :func:`_reduced_extent`): the letterbox is sized from
    the source and the resize reads exactly the box, so a reduced decode lands where a
    full decode would.
    """
    lanczos = Image.Resampling.LANCZOS
    if box is None:
        box = (0.0, 0.0, float(img.width), float(img.height))
        exact = False
    else:
        exact = True
    bw, bh = box[2] - box[0], box[3] - box[1]
    if mode == "stretch":
        out = img.resize((size, size), lanczos, box=box, reducing_gap=_REDUCING_GAP)
    elif mode == "crop":
        side = min(bw, bh)
        if exact:  # a fractional square: the resize reads it directly
            left, top = box[0] + (bw - side) / 2, box[1] + (bh - side) / 2
            square, square_box = img, (left, top, left + side, top + side)
        else:  # crop first: a resize box would let the filter reach past the cut edges
            left, top = (img.width - int(side)) // 2, (img.height - int(side)) // 2
            square = img.crop((left, top, left + int(side), top + int(side)))
            square_box = None
        out = square.resize((size, size), lanczos, box=square_box, reducing_gap=_REDUCING_GAP)
    else:
        sw, sh = source or (bw, bh)
        scale = size / max(sw, sh)
        nw, nh = max(1, min(size, round(sw * scale))), max(1, min(size, round(sh * scale)))
        inner = img.resize((nw, nh), lanczos, box=box, reducing_gap=_REDUCING_GAP)
        if (nw, nh) == (size, size):
            out = inner
        else:
            out = Image.new("RGB", (size, size), pad)
            out.paste(inner, ((size - nw) // 2, (size - nh) // 2))
    return np.array(out if out.mode == "RGB" else out.convert("RGB"), dtype=np.uint8)


# --------------------------------------------------------------------------- modes


def _strips(img: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """``(top row, samples)`` of horizontal strips of about ``_STRIP_PIXELS`` pixels."""
    w, h = img.size
    rows = max(1, _STRIP_PIXELS // max(1, w))
    for top in range(0, h, rows):
        yield top, np.asarray(img.crop((0, top, w, min(h, top + rows))))


def _value_range(img: Image.Image) -> tuple[float, float]:
    """Lowest and highest sample, NaN and infinities counting as 0 (as they are drawn)."""
    lo, hi, nonfinite = np.inf, -np.inf, False
    for _, strip in _strips(img):
        if strip.dtype.kind == "f":
            finite = np.isfinite(strip)
            if not finite.all():
                nonfinite, strip = True, strip[finite]
        if strip.size:
            lo, hi = min(lo, float(strip.min())), max(hi, float(strip.max()))
    if nonfinite:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _linear_map(mode: str, lo: float, hi: float) -> tuple[float, float]:
    """``(offset, factor)`` taking samples of this range to 0-255 as ``(v - offset) * factor``."""
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        return 0.0, 255.0  # floats in [0, 1]
    if lo >= 0.0 and hi <= 255.0:
        return 0.0, 1.0  # already 8-bit values
    if mode == "I" and lo >= 0.0 and hi <= 65535.0:
        return 0.0, 255.0 / 65535.0  # 16-bit data held as 32-bit ints
    return lo, (255.0 / (hi - lo) if hi > lo else 0.0)  # arbitrary range: stretch


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer or float samples to an 8-bit ``L`` image (never clip).

    Works strip by strip, in place, into one uint8 array: the cost is 1 byte a pixel on
    top of Pillow's raster, instead of several full-size float64 copies.
    """
    w, h = img.size
    out = np.empty((h, w), np.uint8)
    if img.mode.startswith("I;16"):
        for top, strip in _strips(img):
            out[top:top + len(strip)] = (strip.astype(np.uint32) * 255 + 32767) // 65535
        return Image.fromarray(out)
    offset, factor = _linear_map(img.mode, *_value_range(img))
    for top, strip in _strips(img):
        values = np.nan_to_num(strip.astype(np.float64), copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        values -= offset
        values *= factor
        out[top:top + len(strip)] = np.clip(np.rint(values, out=values), 0, 255, out=values)
    return Image.fromarray(out)


def _to_8bit(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Convert any Pillow mode to 8-bit ``RGB``, or ``L`` for opaque greyscale."""
    if img.mode in ("RGB", "L") and "transparency" not in img.info:
        return img
    if img.mode in _HIGH_DEPTH:
        return _high_depth_to_l(img)
    if img.has_transparency_data:
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        out = Image.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba)  # the RGBA image is its own alpha mask: no extra copies
        return out
    return img.convert("L" if img.mode == "1" else "RGB")


def to_rgb(img: Image.Image, background: int | Sequence[int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparency (alpha, a palette's transparent index, a colour key) is composited on
    ``background``; 16-bit, 32-bit and float images are scaled to 0-255 rather than
    clipped (strip by strip, without full-size float copies); CMYK (including Adobe's
    inverted CMYK JPEGs, which Pillow reads) uses Pillow's conversion.

    Parameters
    ----------
    img : PIL.Image.Image
        An image of any mode.
    background : int or sequence of int
        The RGB colour (or one grey level) that transparent pixels are composited on.

    Returns
    -------
    PIL.Image.Image
        An ``RGB`` image of the same size; ``img`` itself when it is already RGB
        without transparency.

    Raises
    ------
    UserError
        When ``background`` is not three integers (or one) between 0 and 255.

    Examples
    --------
    >>> rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 0))       # transparent red
    >>> rgba.putpixel((1, 0), (0, 0, 255, 255))                 # opaque blue
    >>> np.asarray(to_rgb(rgba)).tolist()
    [[[255, 255, 255], [0, 0, 255]]]
    >>> np.asarray(to_rgb(rgba, background=0)).tolist()
    [[[0, 0, 0], [0, 0, 255]]]
    >>> deep = Image.fromarray(np.array([[0, 32768, 65535]], np.uint16))   # 16-bit
    >>> np.asarray(to_rgb(deep))[0, :, 0].tolist()
    [0, 128, 255]
    """
    out = _to_8bit(img, _check_color(background))
    return out if out.mode == "RGB" else out.convert("RGB")


def _orientation(img: Image.Image) -> tuple[int, tuple[str, ...]]:
    """The orientation (1-8) still to apply, and a warning when the EXIF is unreadable.

    Call it only on a loaded image or on a JPEG: Pillow's PNG ``getexif()`` loads the
    image itself, and a load error raised there must not be taken for a bad EXIF. A
    plugin that applies the orientation while loading (TIFF) removes the tag, so what
    is read after loading is what is left to do.
    """
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - a bad EXIF block is not a bad image, but it is said
        return 1, ("exif_unreadable",)
    return (value if isinstance(value, int) and 1 <= value <= 8 else 1), ()


# --------------------------------------------------------------------------- JPEG

#: A clean JFIF 1.01 APP0 segment, standing in for one with a bad version.
_JFIF = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, int, int]], int, int]:
    """Walk a JPEG header from SOI to the first scan the way libjpeg reads it.

    Returns
    -------
    segments : list of (marker, start, end)
        Byte offsets of every header segment (marker included).
    junk : int
        Bytes libjpeg skips, with a warning, while looking for the next marker.
    sos : int
        Offset of the first start-of-scan marker; -1 when the file ends first.

    Raises
    ------
    MediaError
        ``corrupt`` for a segment length under 2, which libjpeg refuses too.
    """
    segments: list[tuple[int, int, int]] = []
    junk, i, n = 0, 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:  # skip to the next 0xFF, as libjpeg does
            j = data.find(b"\xff", i)
            if j < 0:
                break
            junk, i = junk + j - i, j
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x00:  # a stuffed zero is data, not a marker
            junk, i = junk + 2, i + 2
        elif marker == 0xDA:
            return segments, junk, i
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            segments.append((marker, i, i + 2))
            i += 2
        elif i + 4 > n:
            break
        else:
            length = int.from_bytes(data[i + 2:i + 4], "big")
            if length < 2:
                raise MediaError("corrupt", f"JPEG segment 0xff{marker:02x} at byte {i} has length {length}")
            segments.append((marker, i, i + 2 + length))
            i += 2 + length
    return segments, junk, -1


def _check_jpeg_complete(data: bytes) -> int:
    """Raise unless the JPEG has its end-of-image marker after the first scan.

    Pillow decodes a JPEG missing its tail into grey-filled garbage when truncated
    images are allowed; a missing EOI after the scan data is the reliable sign. The
    embedded EXIF thumbnail has its own EOI, hence "after the first scan".

    Returns
    -------
    int
        The junk bytes in the header (see :func:`_jpeg_segments`).
    """
    _, junk, sos = _jpeg_segments(data)
    if sos < 0 or data.rfind(b"\xff\xd9") < sos:
        raise MediaError("truncated", f"JPEG ends without its end-of-image marker ({len(data)} bytes)")
    return junk


def _icc_consistent(parts: list[bytes]) -> bool:
    """Whether ICC chunk headers (sequence number, count) number 1..N exactly once."""
    counts = {p[1] for p in parts if len(p) == 2}
    if len(counts) != 1 or 0 in counts or len(parts) != next(iter(counts)):
        return False
    return sorted(p[0] for p in parts) == list(range(1, len(parts) + 1))


def _mend_segment(data: bytes, marker: int, start: int, end: int,
                  warnings: set[str]) -> bytes:
    """The bytes to keep of one header segment: tables and frame as they are,
    JFIF and Adobe markers mended the way libjpeg reads them, metadata dropped."""
    body = data[start + 4:end]
    if marker == 0xE0 and body.startswith(b"JFIF\x00"):
        if len(body) >= 14 and body[5] == 1:
            return data[start:end]
        warnings.add("jpeg_bad_jfif")
        return _JFIF if len(body) >= 14 else b""  # libjpeg ignores a short one
    if marker == 0xEE and body.startswith(b"Adobe"):
        if len(body) < 12:  # libjpeg ignores a short one
            warnings.add("jpeg_bad_app14")
            return b""
        if body[11] > 2:  # libjpeg reads an unknown transform as YCbCr
            warnings.add("jpeg_bad_app14")
            return data[start:start + 15] + b"\x01" + data[start + 16:end]
        return data[start:end]
    if 0xE0 <= marker <= 0xEF or marker == 0xFE or 0xD0 <= marker <= 0xD7 or marker == 0x01:
        return b""  # application data, comments, stray markers: no pixel depends on them
    return data[start:end]


def _repair_jpeg_header(data: bytes) -> tuple[bytes, tuple[str, ...]] | None:
    """The JPEG with a header rebuilt from the segments libjpeg would use.

    Junk bytes, metadata (EXIF, ICC, XMP, comments) and stray markers are dropped; the
    quantization and Huffman tables, frame, restart interval, JFIF and Adobe markers
    are kept (mended where libjpeg would read them in a fixed way); the scans are kept
    byte for byte, so a strict decode of the result still checks every scan.

    Returns
    -------
    (bytes, tuple of str) or None
        The mended file and its warnings, or None when the header has no scan or holds
        a second image start or an early end marker (not a header fault to mend).
    """
    segments, junk, sos = _jpeg_segments(data)
    if sos < 0 or any(marker in (0xD8, 0xD9) for marker, _, _ in segments):
        return None
    warnings = {"jpeg_extraneous_bytes"} if junk else set()
    icc = [data[s + 16:s + 18] for m, s, e in segments
           if m == 0xE2 and data[s + 4:s + 16] == b"ICC_PROFILE\x00"]
    if icc and not _icc_consistent(icc):
        warnings.add("jpeg_bad_icc")
    parts = [b"\xff\xd8"] + [_mend_segment(data, *seg, warnings) for seg in segments]
    return b"".join(parts) + data[sos:], tuple(sorted(warnings))


def _min_decoded(width: int, height: int, size: int, mode: str) -> tuple[int, int]:
    """Smallest (width, height) a reduced decode must keep for a good ``mode`` resize.

    ``pad`` scales by size / max(w, h), so only the long side must stay >= size;
    ``crop`` scales by size / min(w, h) and ``stretch`` scales each side to size, so
    both sides must stay >= size. Orientation does not matter: a rotation swaps the
    sides, and these rules are symmetric in them.
    """
    if mode == "pad":
        return (size, 1) if width >= height else (1, size)
    return size, size


def _draft_scale(width: int, height: int, minimum: tuple[int, int]) -> int:
    """Pillow's JPEG draft divisor (8, 4, 2 or 1) for a decode of at least ``minimum``.

    simplejpeg chooses among finer factors (k/8), so its output is never larger.
    """
    scale = min(width // max(1, minimum[0]), height // max(1, minimum[1]))
    return next(s for s in (8, 4, 2, 1) if scale >= s or s == 1)


def _decode_jpeg_reduced(data: bytes, width: int, height: int, size: int,
                         mode: str) -> tuple[Image.Image, tuple[str, ...]]:
    """Decode an RGB or greyscale JPEG at the smallest DCT scale that covers the target.

    Strict first; a refusal that is not a truncation is retried strictly on the file
    with a mended header (see :func:`_repair_jpeg_header`), so junk in the header costs
    a warning while corrupt scan data is still refused.
    """
    import simplejpeg

    min_w, min_h = _min_decoded(width, height, size, mode)

    def run(buf: bytes, strict: bool) -> Image.Image:
        return Image.fromarray(simplejpeg.decode_jpeg(buf, strict=strict, colorspace="RGB",
                                                      min_width=min_w, min_height=min_h))

    try:
        return run(data, True), ()
    except ValueError as exc:
        message = str(exc)
    warnings: tuple[str, ...] = ()
    if not _TRUNCATED_JPEG.search(message) and not _BENIGN_JPEG.search(message):
        repaired = _repair_jpeg_header(data)
        if repaired is not None:
            data, warnings = repaired
            try:
                return run(data, True), warnings or ("jpeg_header_repaired",)
            except ValueError as exc:
                message = str(exc)
    if _TRUNCATED_JPEG.search(message):
        raise MediaError("truncated", f"JPEG: {message}")
    if not _BENIGN_JPEG.search(message):
        raise MediaError("corrupt", f"JPEG: {message}")
    return run(data, False), tuple(sorted({*warnings, "jpeg_extraneous_bytes"}))


# --------------------------------------------------------------------------- decode


def _open(data: bytes) -> Image.Image:
    if not data:
        raise MediaError("not_an_image", "empty body")
    try:
        return Image.open(BytesIO(data), formats=_registered_formats())
    except UnidentifiedImageError:
        head = bytes(data[:32]).lstrip().lower()
        hint = " (looks like HTML or text)" if head.startswith((b"<", b"{", b"[")) else ""
        raise MediaError("not_an_image", f"no image decoder recognises these {len(data)} bytes{hint}") from None


_FORMAT_CACHE: list[str] = []


def _registered_formats() -> list[str]:
    """The accepted formats this Pillow can open, their plugins imported.

    Only those plugins: ``Image.init()`` imports all forty-odd (about 50 ms of a
    build's start-up), and ``Image.open`` calls it whenever a format it is given is
    not registered, so only registered formats are returned.
    """
    if not _FORMAT_CACHE:
        import importlib

        for name in dict.fromkeys(_PLUGINS.values()):
            try:
                importlib.import_module(f"PIL.{name}")
            except ImportError:  # a codec this Pillow was built without
                pass
        _FORMAT_CACHE.extend(f for f in _FORMATS if f in Image.OPEN)
    return _FORMAT_CACHE


def _is_jpeg(img: Image.Image) -> bool:
    return img.format in ("JPEG", "MPO")


def _fast_jpeg(img: Image.Image) -> bool:
    """Whether simplejpeg decodes it (RGB and grey); CMYK and YCCK go through Pillow."""
    return _is_jpeg(img) and img.mode in ("RGB", "L")


def _pixel_bytes(img: Image.Image, resize_mode: str) -> int:
    """Peak bytes a pixel costs through :func:`_to_8bit` and :func:`resize`.

    Pillow's raster, plus the 8-bit conversion unless the raster already is one (with
    transparency: the RGBA copy, unless already RGBA, and the composite), plus the
    centred square that ``crop`` copies.
    """
    mode = img.mode
    raster = _RASTER_BYTES.get(mode, 4)
    if mode not in _HIGH_DEPTH and (mode in ("LA", "PA", "RGBA", "La", "RGBa") or "transparency" in img.info):
        convert, eight_bit = (4 if mode == "RGBA" else 8), 4
    elif mode in ("RGB", "L"):
        convert, eight_bit = 0, raster
    else:
        eight_bit = 1 if mode in _GREY_RESULT else 4
        convert = eight_bit
    return raster + convert + (eight_bit if resize_mode == "crop" else 0)


def decode_bytes(img: Image.Image, size: int = 256, resize_mode: str = "pad") -> int:
    """Estimated peak bytes of decoding ``img`` (opened, not loaded) for a ``size`` output.

    The pixel count of the decoded raster times the bytes a pixel of its mode costs
    (``_pixel_bytes``: Pillow's raster, the 8-bit conversion, transparency and the
    crop copy; for JPEG 2000 also OpenJPEG's 32-bit samples), plus a fixed allowance
    for work buffers. A JPEG counts at the reduced DCT scale that covers ``size``; a
    progressive one also keeps libjpeg's coefficients of the whole image (2 bytes a
    sample).

    Examples
    --------
    >>> decode_bytes(Image.new("F", (5000, 5000))) // 2**20
    151
    """
    width, height = img.size
    if not _is_jpeg(img):
        codec = _CODEC_SAMPLE_BYTES.get(img.format or "", 0) * len(img.getbands())
        return width * height * (_pixel_bytes(img, resize_mode) + codec) + _WORK_BYTES
    scale = _draft_scale(width, height, _min_decoded(width, height, size, resize_mode))
    pixels = -(-width // scale) * -(-height // scale)
    per_pixel = 3 + 4 if _fast_jpeg(img) else 4 + 4  # simplejpeg's array or Pillow's raster, RGB copy
    coefficients = 2 * len(img.getbands()) * width * height if img.info.get("progressive") else 0
    return pixels * per_pixel + coefficients + _WORK_BYTES


def _check_limits(img: Image.Image, size: int, mode: str, max_pixels: int, max_bytes: int) -> None:
    """Refuse, from the header alone, an image over the pixel or the memory limit."""
    width, height = img.size
    if width * height > max_pixels:
        raise MediaError("bomb", f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels}")
    need = decode_bytes(img, size, mode)
    if need > max_bytes:
        raise MediaError("too_large", f"decoding {width}x{height} {img.mode} needs about "
                         f"{need / 2**20:.0f} MiB, over the limit of {max_bytes / 2**20:.0f} MiB")


class _Loaded(NamedTuple):
    """An image decoded to 8 bits and upright, with what :func:`_fit` needs to know."""

    image: Image.Image  # RGB or L
    source: tuple[int, int]  # full-resolution displayed size
    box: tuple[float, float, float, float] | None  # the picture within a reduced decode
    warnings: tuple[str, ...]


def _reduced_extent(full: tuple[int, int], reduced: tuple[int, int]) -> tuple[float, float] | None:
    """The true picture's size within a DCT-reduced decode, None when not reduced.

    libjpeg scales by k/8 and rounds each side up, so a 500x450 JPEG at 1/4 is 125x113
    pixels of which 125x112.5 are picture: resizing all 113 rows would shift the
    output by a fraction of a pixel and change the letterbox's rounding.
    """
    (w, h), (rw, rh) = full, reduced
    if (w, h) == (rw, rh):
        return None
    return next(((w * k / 8, h * k / 8) for k in range(1, 9)
                 if -(-w * k // 8) == rw and -(-h * k // 8) == rh), None)


def _oriented_box(size: tuple[int, int], extent: tuple[float, float],
                  method: Image.Transpose | None) -> tuple[float, float, float, float]:
    """Where a picture of ``extent``, at the top left of an image of ``size``, lies once
    the image is transposed by ``method`` (the rounded-up slack moves with it)."""
    (w, h), (ew, eh) = size, extent
    corner = Image.new("L", (2, 2))
    corner.putpixel((1, 1), 255)  # the slack is at the bottom right before transposing
    if method is not None:
        corner = corner.transpose(method)
        if method in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE,
                      Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270):
            w, h, ew, eh = h, w, eh, ew
    x, y = next((x, y) for y in range(2) for x in range(2) if corner.getpixel((x, y)))
    left, top = (0.0 if x else w - ew), (0.0 if y else h - eh)
    return left, top, left + ew, top + eh


def _load(img: Image.Image, data: bytes, size: int, mode: str, pad: tuple[int, int, int]) -> _Loaded:
    """Decode ``img`` (any accepted format) to 8 bits, upright.

    The orientation is read once: from the header for a simplejpeg decode, after
    ``load()`` otherwise, so that an image a plugin orients while loading (TIFF) is
    not oriented twice, and a load error is never mistaken for a bad EXIF.
    """
    width, height = img.size
    if _fast_jpeg(img):
        orientation, warnings = _orientation(img)
        out, mended = _decode_jpeg_reduced(data, width, height, size, mode)
        warnings += mended
    else:
        if _is_jpeg(img):  # CMYK and YCCK: Pillow, still reduced in the DCT domain
            img.draft(img.mode, _min_decoded(width, height, size, mode))
        img.load()
        orientation, warnings = _orientation(img)
        if not _is_jpeg(img):  # a JPEG shrank with its draft, and Pillow never orients one
            width, height = img.size
        out = _to_8bit(img, pad)  # before transposing: the 8-bit copy is the small one
    method = _TRANSPOSE.get(orientation)
    extent = _reduced_extent((width, height), out.size)
    box = None if extent is None else _oriented_box(out.size, extent, method)
    if method is not None:
        out = out.transpose(method)
    if orientation >= 5:
        width, height = height, width
    return _Loaded(out, (width, height), box, warnings)


def _check_container(img: Image.Image, data: bytes) -> tuple[str, ...]:
    """Check what Pillow does not (a JPEG's end marker, PNG chunk CRCs); header warnings."""
    if _is_jpeg(img):
        junk = _check_jpeg_complete(data)
        if junk and not _fast_jpeg(img):  # Pillow skips the junk silently; simplejpeg says so
            return ("jpeg_extraneous_bytes",)
    elif img.format == "PNG":
        _check_png_chunks(data)
    return ()


def _decode(data: bytes, size: int, mode: str, pad: tuple[int, int, int],
            max_pixels: int, max_bytes: int) -> Decoded:
    img = _open(data)
    _check_limits(img, size, mode, max_pixels, max_bytes)
    warnings = _check_container(img, data)
    loaded = _load(img, data, size, mode, pad)
    pixels = _fit(loaded.image, size, mode, pad, loaded.source, loaded.box)
    return Decoded(pixels, *loaded.source, img.format or "unknown", tuple(sorted({*warnings, *loaded.warnings})))


def decode_image(data: bytes, size: int = 256, *, resize_mode: str = "pad",
                 pad_color: int | Sequence[int] = (255, 255, 255),
                 max_pixels: int = 200_000_000,
                 max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> Decoded:
    """Decode image bytes into a square RGB array.

    Parameters
    ----------
    data : bytes
        The whole file.
    size : int, default 256
        Side of the output square.
    resize_mode : {"pad", "crop", "stretch"}, default "pad"
        How to fit the image; see :func:`resize`.
    pad_color : int or (int, int, int), default white
        Letterbox colour, also the background for transparent pixels.
    max_pixels : int, default 200_000_000
        Refuse images with more pixels than this (read from the header, before any
        decoding). Pillow's own limit, twice ``PIL.Image.MAX_IMAGE_PIXELS``, applies too.
    max_decode_bytes : int, default DEFAULT_MAX_DECODE_BYTES (1 GiB)
        Refuse images whose decode would need more memory than this, as estimated from
        the header by :func:`decode_bytes` (pixels times bytes a pixel of the mode).

    Returns
    -------
    Decoded
        ``pixels`` ``(size, size, 3)`` uint8, the displayed source size, the format and
        the warnings of mended faults.

    Raises
    ------
    MediaError
        With reason ``not_an_image``, ``truncated``, ``corrupt``, ``bomb``,
        ``too_large`` or ``out_of_memory``; no other exception escapes for bad bytes.
    UserError
        For a bad ``size``, ``resize_mode``, ``pad_color`` or limit, or when
        ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was switched on (truncated files would
        then decode into grey-filled garbage).

    Notes
    -----
    The first frame of multi-frame files (GIF, TIFF, WebP) is used. The orientation
    is applied exactly once, whichever format carries it. RGB and greyscale JPEGs are
    decoded at reduced DCT scale with simplejpeg in strict mode; other JPEGs and
    formats through Pillow.

    Examples
    --------
    >>> from io import BytesIO
    >>> buf = BytesIO(); Image.new("RGB", (300, 200), "red").save(buf, "PNG")
    >>> decode_image(buf.getvalue(), 64).pixels.shape
    (64, 64, 3)
    """
    size, mode, pad = _check_size(size), _check_mode(resize_mode), _check_color(pad_color)
    max_pixels = _check_limit(max_pixels, "max_pixels")
    max_bytes = _check_limit(max_decode_bytes, "max_decode_bytes")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise UserError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images would "
                        "decode into grey fill; set it back to False")
    try:
        return _decode(bytes(data), size, mode, pad, max_pixels, max_bytes)
    except (MediaError, UserError):
        raise
    except MemoryError as exc:  # one record fails; the arrays it held are freed on return
        raise MediaError("out_of_memory", f"{type(exc).__name__}: {exc}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError("bomb", str(exc)) from None
    except UnidentifiedImageError as exc:
        raise MediaError("not_an_image", str(exc)) from None
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise MediaError(reason, f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow plugins raise many types on bad input
        raise MediaError("corrupt", f"{type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- containers


def _check_png_chunks(data: bytes) -> None:
    """Raise unless every PNG chunk is complete and matches its CRC, up to IEND.

    Pillow does not check the CRC of image data chunks, so bytes damaged in transit
    can otherwise decode into wrong pixels. Checking costs about 1 ms per MB.
    """
    i, n = 8, len(data)
    while True:
        if i + 12 > n:
            raise MediaError("truncated", f"PNG ends inside a chunk header at byte {i} of {n}")
        length = int.from_bytes(data[i:i + 4], "big")
        end = i + 12 + length
        if end > n:
            raise MediaError("truncated", f"PNG chunk at byte {i} needs {length} bytes; the file ends at {n}")
        if zlib.crc32(data[i + 4:i + 8 + length]) != int.from_bytes(data[end - 4:end], "big"):
            kind = data[i + 4:i + 8].decode("latin-1")
            raise MediaError("corrupt", f"PNG chunk {kind!r} at byte {i} fails its CRC check")
        if data[i + 4:i + 8] == b"IEND":
            return
        i = end
