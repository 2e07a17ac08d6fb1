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
    """

    reason: str | None = None
    width: int = WIDTH
    height: int = HEIGHT
    format: str = ""
    quadrants: bool = True


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
    noisy = Image.fromarray(np.random.default_rng(4).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    png = _save(noisy, "PNG")
    cases["truncated.png"] = png[: len(png) // 2]
    cases["corrupt_middle.png"] = _corrupt_middle(png, b"\x5a")
    assert set(cases) == set(EXPECTED)
    return cases


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
