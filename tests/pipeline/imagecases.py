"""Real image files for every decode case, with the outcome each one must have.

``write_cases(folder)`` writes them and returns ``{name: path}``; ``EXPECTED[name]`` says
what decoding must give: the ledger reason of a failure, or the source size (after EXIF
orientation) and format of a success. Test modules of any stage can serve these files
(over HTTP, from a store) and check the outcome.

Most successful cases draw :func:`quadrants`: red top-left, green top-right, blue
bottom-left, yellow bottom-right, so orientation mistakes are visible.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Upright size (width, height) of the quadrant pictures.
WIDTH, HEIGHT = 300, 200

RED, GREEN, BLUE, YELLOW = (220, 30, 30), (30, 180, 60), (30, 60, 220), (230, 210, 40)


@dataclass(frozen=True)
class Expected:
    """What decoding a case must give.

    Attributes
    ----------
    reason : str or None
        The MediaError reason, or None when decoding succeeds.
    width, height : int
        Source size after EXIF orientation (successes only).
    format : str
        Pillow's format name (successes only).
    quadrants : bool
        Whether the picture is :func:`quadrants` (colour checks apply).
    warnings : tuple of str
        The warnings a success carries (sorted).
    """

    reason: str | None = None
    width: int = WIDTH
    height: int = HEIGHT
    format: str = ""
    quadrants: bool = True
    warnings: tuple[str, ...] = ()


EXPECTED: dict[str, Expected] = {
    "baseline.jpg": Expected(format="JPEG"),
    "progressive.jpg": Expected(format="JPEG"),
    "exif_orientation_6.jpg": Expected(format="JPEG"),
    "exif_orientation_8.jpg": Expected(format="JPEG"),
    "cmyk.jpg": Expected(format="JPEG"),
    "grey.jpg": Expected(format="JPEG", quadrants=False),
    "grey_l.png": Expected(format="PNG", quadrants=False),
    "grey_alpha_la.png": Expected(format="PNG", quadrants=False),
    "palette_transparent.png": Expected(format="PNG", quadrants=False),
    "rgba.png": Expected(format="PNG", quadrants=False),
    "sixteen_bit.png": Expected(format="PNG", width=256, height=64, quadrants=False),
    "bilevel.png": Expected(format="PNG", quadrants=False),
    "multipage.tiff": Expected(format="TIFF"),
    "animated.gif": Expected(format="GIF"),
    "lossless.webp": Expected(format="WEBP"),
    "plain.bmp": Expected(format="BMP"),
    "tiff_orientation_6.tiff": Expected(format="TIFF"),
    "tiff_lzw_orientation_8.tiff": Expected(format="TIFF"),
    "tiff_jpeg_orientation_5.tiff": Expected(format="TIFF"),
    "junk_before_marker.jpg": Expected(format="JPEG", warnings=("jpeg_extraneous_bytes",)),
    "icc_after_sof.jpg": Expected(format="JPEG", warnings=("jpeg_bad_icc",)),
    "truncated_app14.jpg": Expected(format="JPEG", warnings=("jpeg_bad_app14", "jpeg_extraneous_bytes")),
    "short_app1_length.jpg": Expected(format="JPEG", warnings=("jpeg_extraneous_bytes",)),
    "junk_header_truncated.jpg": Expected(reason="truncated"),
    "junk_header_corrupt_scan.jpg": Expected(reason="corrupt"),
    "broken_zlib.png": Expected(reason="corrupt"),
    "broken_apng.png": Expected(reason="corrupt"),
    "truncated.jpg": Expected(reason="truncated"),
    "no_end_marker.jpg": Expected(reason="truncated"),
    "truncated.png": Expected(reason="truncated"),
    "corrupt_middle.jpg": Expected(reason="corrupt"),
    "corrupt_middle.png": Expected(reason="corrupt"),
    "error_page.html": Expected(reason="not_an_image"),
    "empty.jpg": Expected(reason="not_an_image"),
    "random_bytes.bin": Expected(reason="not_an_image"),
    "bomb.png": Expected(reason="bomb"),
}


def quadrants(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """The upright test picture: red, green / blue, yellow quadrants, uint8 (h, w, 3)."""
    out = np.empty((height, width, 3), np.uint8)
    hw, hh = width // 2, height // 2
    out[:hh, :hw], out[:hh, hw:] = RED, GREEN
    out[hh:, :hw], out[hh:, hw:] = BLUE, YELLOW
    return out


def _save(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _with_orientation(upright: Image.Image, orientation: int) -> bytes:
    """Store a JPEG rotated so that applying EXIF ``orientation`` shows ``upright``."""
    # orientation 6 is displayed by rotating 90 degrees clockwise, so store it counter-clockwise
    stored = upright.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(stored, "JPEG", quality=95, exif=exif.tobytes())


#: What each EXIF/TIFF orientation does to the stored picture to display it (Pillow's
#: ``exif_transpose``); the stored picture is the inverse of it applied to the upright one.
_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def stored_for_orientation(upright: Image.Image, orientation: int) -> Image.Image:
    """The raster to store so that applying ``orientation`` (1-8) displays ``upright``."""
    return upright.transpose(_STORE[orientation]) if orientation in _STORE else upright.copy()


def oriented_file(upright: Image.Image, orientation: int, fmt: str, **params) -> bytes:
    """``upright`` stored as ``fmt`` with its orientation tag (EXIF, or TIFF's own tag)."""
    stored = stored_for_orientation(upright, orientation)
    if fmt == "TIFF":
        return _save(stored, "TIFF", tiffinfo={0x0112: orientation}, **params)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(stored, fmt, exif=exif.tobytes(), **params)


# --------------------------------------------------------------------------- damaged files


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of each header segment of a well-formed JPEG, up to SOS."""
    out, i = [], 2
    while data[i + 1] != 0xDA:
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        out.append((data[i + 1], i, end))
        i = end
    out.append((0xDA, i, i + 2 + int.from_bytes(data[i + 2:i + 4], "big")))
    return out


def jpeg_insert(data: bytes, marker: int, extra: bytes, *, after: bool = False) -> bytes:
    """Insert ``extra`` bytes before (or after) the first segment with ``marker``."""
    _, start, end = next(seg for seg in jpeg_segments(data) if seg[0] == marker)
    at = end if after else start
    return data[:at] + extra + data[at:]


def jpeg_drop(data: bytes, marker: int) -> bytes:
    """Remove every header segment with ``marker`` (e.g. 0xE0, the JFIF APP0)."""
    for _, start, end in reversed([seg for seg in jpeg_segments(data) if seg[0] == marker]):
        data = data[:start] + data[end:]
    return data


def segment(marker: int, body: bytes, length: int | None = None) -> bytes:
    """A JPEG segment; ``length`` overrides the true length field (len(body) + 2)."""
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2 if length is None else length) + body


#: Pillow's own corpus holds files like these: an ICC segment, numbered 1 of 1, repeated
#: after the frame header; an Adobe APP14 one byte short; junk before a table.
ICC_1_OF_1 = segment(0xE2, b"ICC_PROFILE\x00\x01\x01profile")
SHORT_APP14 = segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00", length=13) + b"\x00"


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(type, body)`` of every chunk of a PNG."""
    out, i = [], 8
    while i < len(data):
        length = int.from_bytes(data[i:i + 4], "big")
        out.append((data[i + 4:i + 8], data[i + 8:i + 8 + length]))
        i += 12 + length
    return out


def png_build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG of these chunks, each with its correct CRC."""
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in chunks)


def break_idat(data: bytes) -> bytes:
    """Zero the second half of every IDAT chunk and fix the CRCs: the CRC check passes,
    the deflate stream does not."""
    return png_build([(k, b[:len(b) // 2] + bytes(len(b) - len(b) // 2) if k == b"IDAT" else b)
                      for k, b in png_chunks(data)])


def _bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid bilevel PNG of ``width`` x ``height`` white pixels, about 100 KB on disk.

    The deflate stream is one fully flushed segment of 100 rows repeated, so writing it
    costs milliseconds although it inflates to over 100 MB.
    """
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = (b"\x00" + b"\xff" * ((width + 7) // 8)) * 100
    assert height % 100 == 0
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = raw.compress(rows) + raw.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, history reset
    last = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    adler = 1
    for _ in range(height // 100):
        adler = zlib.adler32(rows, adler)
    idat = b"\x78\xda" + segment * (height // 100) + last + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _corrupt_middle(data: bytes, fill: bytes = b"\x00") -> bytes:
    """Overwrite 600 bytes in the middle of the compressed data."""
    out = bytearray(data)
    mid = len(out) // 2
    out[mid:mid + 600] = fill * 600
    return bytes(out)


def _first_frame_red(fmt: str, **params) -> bytes:
    """Two frames: the quadrant picture first, then plain blue (which must be ignored)."""
    first = Image.fromarray(quadrants())
    second = Image.new("RGB", (WIDTH, HEIGHT), BLUE)
    return _save(first, fmt, save_all=True, append_images=[second], **params)


def _grey_gradient() -> Image.Image:
    ramp = np.tile(np.linspace(0, 255, WIDTH).astype(np.uint8), (HEIGHT, 1))
    return Image.fromarray(ramp, mode="L")


def _rgba_left_transparent() -> Image.Image:
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    rgba[..., :3] = RED
    rgba[:, WIDTH // 2:, 3] = 255  # the left half is fully transparent (and "red" underneath)
    return Image.fromarray(rgba, mode="RGBA")


def _palette_transparent() -> Image.Image:
    """A palette image: index 0 (black) is transparent on the left, index 1 green on the right."""
    idx = np.zeros((HEIGHT, WIDTH), np.uint8)
    idx[:, WIDTH // 2:] = 1
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, *GREEN] + [0] * 762)
    img.info["transparency"] = 0
    return img


def sixteen_bit_ramp() -> np.ndarray:
    """A 64 x 256 uint16 ramp covering 0..65535 from left to right."""
    return np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (64, 1))


def scale_high_depth_reference(arr: np.ndarray, mode: str) -> np.ndarray:
    """The documented 8-bit scaling of a 16-bit, 32-bit or float image, on the whole
    array in float64: 16-bit samples by 255/65535; floats in [0, 1] by 255; samples
    already in 0-255 as they are; 32-bit ints in 0-65535 by 255/65535; any other range
    stretched from its minimum to its maximum (NaN and infinities count as 0)."""
    if mode.startswith("I;16"):
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    values = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        scaled = values * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        scaled = values
    elif mode == "I" and lo >= 0.0 and hi <= 65535.0:
        scaled = values * (255.0 / 65535.0)
    else:
        scaled = (values - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def build_cases() -> dict[str, bytes]:
    """The bytes of every case, keyed by file name (see :data:`EXPECTED`)."""
    quad = Image.fromarray(quadrants())
    baseline = _save(quad, "JPEG", quality=95)
    grey = _grey_gradient()
    la = Image.merge("LA", (grey, Image.new("L", grey.size, 255)))
    la.putpixel((0, 0), (0, 0))
    bilevel = grey.point(lambda v: 255 if v > 127 else 0).convert("1")
    cases = {
        "baseline.jpg": baseline,
        "progressive.jpg": _save(quad, "JPEG", quality=95, progressive=True),
        "exif_orientation_6.jpg": _with_orientation(quad, 6),
        "exif_orientation_8.jpg": _with_orientation(quad, 8),
        "cmyk.jpg": _save(quad.convert("CMYK"), "JPEG", quality=95),
        "grey.jpg": _save(grey, "JPEG", quality=95),
        "grey_l.png": _save(grey, "PNG"),
        "grey_alpha_la.png": _save(la, "PNG"),
        "palette_transparent.png": _save(_palette_transparent(), "PNG", transparency=0),
        "rgba.png": _save(_rgba_left_transparent(), "PNG"),
        "sixteen_bit.png": _save(Image.fromarray(sixteen_bit_ramp()), "PNG"),
        "bilevel.png": _save(bilevel, "PNG"),
        "multipage.tiff": _first_frame_red("TIFF"),
        "animated.gif": _first_frame_red("GIF", duration=100, loop=0),
        "lossless.webp": _save(quad, "WEBP", lossless=True),
        "plain.bmp": _save(quad, "BMP"),
        "truncated.jpg": baseline[: len(baseline) // 2],
        "no_end_marker.jpg": baseline[:-2],
        "corrupt_middle.jpg": _corrupt_middle(baseline),
        "error_page.html": b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
                           b"<body><h1>error</h1><p>The media server is unavailable.</p></body></html>\n",
        "empty.jpg": b"",
        "random_bytes.bin": np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "bomb.png": _bomb_png(),
    }
    cases.update(_hardening_cases(quad, baseline))
    noisy = Image.fromarray(np.random.default_rng(4).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    png = _save(noisy, "PNG")
    cases["truncated.png"] = png[: len(png) // 2]
    cases["corrupt_middle.png"] = _corrupt_middle(png, b"\x5a")
    assert set(cases) == set(EXPECTED)
    return cases


def _hardening_cases(quad: Image.Image, baseline: bytes) -> dict[str, bytes]:
    """Files that once decoded wrongly: oriented TIFFs, JPEG header junk, broken deflate."""
    noisy = Image.fromarray(np.random.default_rng(5).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    junk = jpeg_insert(baseline, 0xDB, b"\x00junk")
    apng = _save(noisy, "PNG", save_all=True, append_images=[Image.new("RGB", noisy.size, BLUE)])
    app1 = segment(0xE1, b"Exif\x00\x00" + b"\x11" * 120, length=40)  # the length ends inside the body
    return {
        "tiff_orientation_6.tiff": oriented_file(quad, 6, "TIFF"),
        "tiff_lzw_orientation_8.tiff": oriented_file(quad, 8, "TIFF", compression="tiff_lzw"),
        "tiff_jpeg_orientation_5.tiff": oriented_file(quad, 5, "TIFF", compression="jpeg"),
        "junk_before_marker.jpg": junk,
        "icc_after_sof.jpg": jpeg_insert(jpeg_insert(baseline, 0xDB, ICC_1_OF_1), 0xC0, ICC_1_OF_1, after=True),
        "truncated_app14.jpg": jpeg_insert(baseline, 0xDB, SHORT_APP14),
        "short_app1_length.jpg": jpeg_insert(baseline, 0xDB, app1),
        "junk_header_truncated.jpg": junk[: len(junk) * 2 // 3] + b"\xff\xd9",
        "junk_header_corrupt_scan.jpg": _corrupt_middle(junk),
        "broken_zlib.png": break_idat(_save(noisy, "PNG")),
        "broken_apng.png": break_idat(apng),
    }


def write_cases(folder: str | Path) -> dict[str, Path]:
    """Write every case into ``folder`` and return ``{name: path}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in build_cases().items():
        path = folder / name
        path.write_bytes(data)
        paths[name] = path
    return paths
