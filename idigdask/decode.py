"""Bytes in, a fixed-size RGB array out: the per-image hot path, as pure functions.

:func:`decode_image` turns the bytes of one media file into a ``(size, size, 3)`` uint8
array, or raises :class:`~idigdask.errors.MediaError` with a ledger ``reason``:

``not_an_image``
    Empty body, an HTML error page, or bytes no image decoder recognises.
``truncated``
    The file stops early (a JPEG without its end-of-image marker, a PNG without IEND).
``corrupt``
    Any other decoder error, including JPEG data that libjpeg reports as corrupt and
    PNG chunks failing their CRC, which would otherwise decode into garbage.
``bomb``
    More pixels than ``max_pixels``, judged from the header before decoding.

JPEGs, nearly all of iDigBio's media, are decoded at reduced scale in the DCT domain
(1/2 ... 1/8) to the smallest size that still covers the target, which makes a
3000x4500 sheet several times faster than a full decode; simplejpeg does this in strict
mode so that corrupt data raises instead of decoding silently into grey blocks.
"""

from __future__ import annotations

import re
import zlib
from io import BytesIO
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import MediaError, UserError

__all__ = ["Decoded", "RESIZE_MODES", "decode_image", "resize", "to_rgb"]

#: How an image is fitted into the square output.
RESIZE_MODES = ("pad", "crop", "stretch")

#: Image formats Pillow may try; anything else (EPS, PSD, exotic plugins) is refused.
_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "TIFF", "WEBP", "BMP", "DIB", "PPM",
            "JPEG2000", "ICO", "AVIF")

#: Pillow resizes by an integer box reduction first when the factor exceeds this;
#: 3.0 is indistinguishable from a fair Lanczos in practice and much faster.
_REDUCING_GAP = 3.0

#: libjpeg warnings that leave the image intact (junk bytes before the end marker).
_BENIGN_JPEG = re.compile(r"extraneous bytes before marker 0xd9", re.IGNORECASE)

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
        Size of the original image, after EXIF orientation.
    format : str
        The file format as Pillow names it (``"JPEG"``, ``"PNG"`` ...).
    """

    pixels: np.ndarray
    source_width: int
    source_height: int
    format: str


# --------------------------------------------------------------------------- options


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= 16384:
        raise UserError(f"image size must be an integer between 1 and 16384, got {size!r}")
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
        Any Pillow mode is converted with :func:`to_rgb` first.
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
    img = to_rgb(img, pad)
    w, h = img.size
    lanczos = Image.Resampling.LANCZOS
    if mode == "stretch":
        out = img.resize((size, size), lanczos, reducing_gap=_REDUCING_GAP)
    elif mode == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        # crop first: a resize box would let the filter reach past the cut edges
        square = img.crop((left, top, left + side, top + side))
        out = square.resize((size, size), lanczos, reducing_gap=_REDUCING_GAP)
    else:
        scale = size / max(w, h)
        nw, nh = max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))
        inner = img.resize((nw, nh), lanczos, reducing_gap=_REDUCING_GAP)
        if (nw, nh) == (size, size):
            out = inner
        else:
            out = Image.new("RGB", (size, size), pad)
            out.paste(inner, ((size - nw) // 2, (size - nh) // 2))
    return np.array(out, dtype=np.uint8)


# --------------------------------------------------------------------------- modes


def _high_depth_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float samples to 0-255 (never clip)."""
    if mode.startswith("I;16"):
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    values = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        scaled = values * 255.0  # floats in [0, 1]
    elif lo >= 0.0 and hi <= 255.0:
        scaled = values  # already 8-bit values
    elif mode == "I" and lo >= 0.0 and hi <= 65535.0:
        scaled = values * (255.0 / 65535.0)  # 16-bit data held as 32-bit ints
    else:
        scaled = (values - lo) * (255.0 / (hi - lo))  # arbitrary range: stretch
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image, background: int | Sequence[int] = (255, 255, 255)) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparency (alpha, a palette's transparent index, a colour key) is composited on
    ``background``; 16-bit, 32-bit and float images are scaled to 0-255 rather than
    clipped; CMYK (including Adobe's inverted CMYK JPEGs, which Pillow reads) uses
    Pillow's conversion.
    """
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    bg = _check_color(background)
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return Image.fromarray(_high_depth_to_uint8(np.asarray(img), img.mode)).convert("RGB")
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, bg)
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8); 1 when absent or unreadable (a bad EXIF is not a bad image)."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError, IndexError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# --------------------------------------------------------------------------- JPEG


def _jpeg_scan_start(data: bytes) -> int:
    """Offset of the first start-of-scan marker; -1 if the file ends first, -2 if malformed."""
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            return -2
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:
            return i
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        if i + 4 > n:
            return -1
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return -1


def _check_jpeg_complete(data: bytes) -> None:
    """Raise unless the JPEG has its end-of-image marker after the first scan.

    Pillow decodes a JPEG missing its tail into grey-filled garbage when truncated
    images are allowed; a missing EOI after the scan data is the reliable sign. The
    embedded EXIF thumbnail has its own EOI, hence "after the first scan".
    """
    sos = _jpeg_scan_start(data)
    if sos == -2:
        raise MediaError("corrupt", "JPEG marker structure is broken")
    if sos == -1 or data.rfind(b"\xff\xd9") < sos:
        raise MediaError("truncated", f"JPEG ends without its end-of-image marker ({len(data)} bytes)")


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


def _decode_jpeg_reduced(data: bytes, width: int, height: int, size: int, mode: str) -> Image.Image:
    """Decode an RGB or greyscale JPEG at the smallest DCT scale that covers the target."""
    import simplejpeg

    min_w, min_h = _min_decoded(width, height, size, mode)
    kwargs = dict(colorspace="RGB", min_width=min_w, min_height=min_h)
    try:
        arr = simplejpeg.decode_jpeg(data, strict=True, **kwargs)
    except ValueError as exc:
        message = str(exc)
        if "premature end" in message.lower():
            raise MediaError("truncated", f"JPEG: {message}") from None
        if not _BENIGN_JPEG.search(message):
            raise MediaError("corrupt", f"JPEG: {message}") from None
        arr = simplejpeg.decode_jpeg(data, strict=False, **kwargs)
    return Image.fromarray(arr)


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
    if not _FORMAT_CACHE:
        Image.init()
        _FORMAT_CACHE.extend(f for f in _FORMATS if f in Image.OPEN)
    return _FORMAT_CACHE


def _decode(data: bytes, size: int, mode: str, pad: tuple[int, int, int], max_pixels: int) -> Decoded:
    img = _open(data)
    width, height = img.size
    if width * height > max_pixels:
        raise MediaError("bomb", f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels}")
    orientation = _orientation(img)
    fmt = img.format or "unknown"
    if fmt in ("JPEG", "MPO"):
        _check_jpeg_complete(data)
    elif fmt == "PNG":
        _check_png_chunks(data)
    if fmt in ("JPEG", "MPO") and img.mode in ("RGB", "L"):
        rgb = _decode_jpeg_reduced(data, width, height, size, mode)
    else:
        if fmt in ("JPEG", "MPO"):  # CMYK and YCCK: Pillow, still reduced in the DCT domain
            img.draft(img.mode, _min_decoded(width, height, size, mode))
        img.load()
        rgb = to_rgb(img, pad)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    if orientation >= 5:  # the transposing orientations swap width and height
        width, height = height, width
    return Decoded(resize(rgb, size, mode, pad), width, height, fmt)


def decode_image(data: bytes, size: int = 256, *, resize_mode: str = "pad",
                 pad_color: int | Sequence[int] = (255, 255, 255),
                 max_pixels: int = 200_000_000) -> Decoded:
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

    Returns
    -------
    Decoded
        ``pixels`` ``(size, size, 3)`` uint8, the source size after EXIF orientation,
        and the format.

    Raises
    ------
    MediaError
        With reason ``not_an_image``, ``truncated``, ``corrupt`` or ``bomb``.
    UserError
        For a bad ``size``, ``resize_mode`` or ``pad_color``, or when
        ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was switched on (truncated files would
        then decode into grey-filled garbage).

    Notes
    -----
    The first frame of multi-frame files (GIF, TIFF, WebP) is used. EXIF orientation
    is applied. RGB and greyscale JPEGs are decoded at reduced DCT scale with
    simplejpeg in strict mode; other JPEGs and formats through Pillow.

    Examples
    --------
    >>> from io import BytesIO
    >>> buf = BytesIO(); Image.new("RGB", (300, 200), "red").save(buf, "PNG")
    >>> decode_image(buf.getvalue(), 64).pixels.shape
    (64, 64, 3)
    """
    size, mode, pad = _check_size(size), _check_mode(resize_mode), _check_color(pad_color)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise UserError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated images would "
                        "decode into grey fill; set it back to False")
    try:
        return _decode(bytes(data), size, mode, pad, int(max_pixels))
    except (MediaError, UserError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError("bomb", str(exc)) from None
    except UnidentifiedImageError as exc:
        raise MediaError("not_an_image", str(exc)) from None
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise MediaError(reason, f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow plugins raise many types on bad input
        raise MediaError("corrupt", f"{type(exc).__name__}: {exc}") from None
