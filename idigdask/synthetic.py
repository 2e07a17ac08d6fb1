"""Deterministic synthetic herbarium sheets: the project's default and test data.

No machine of this project reaches iDigBio, so this module draws images that look
enough like herbarium sheets to exercise the whole route (catalog, fetch, decode, store,
train): cream paper with texture, a mounted plant, a printed label, a barcode, a colour
bar and ruler. Sheets of the positive class carry mercury-like stains: two to five
grey-to-black diffuse halos (7-13% of the sheet's width across the radius, of varied
opacity and tone) and up to three speckle clusters near the plant, large enough to stay
visible when a sheet is reduced to the 128 px of a training store. Some sheets of either
class carry confounders (dark plant parts, pencil lines, shadows, foxing, ink stamps,
grey colour-chart patches) so that telling the classes apart is a real learning task.

Everything is seeded from ``(seed, index)``: the same arguments give the same pixels and
the same JPEG bytes. A sheet is drawn at a low internal resolution (long side about
800 px), upscaled smoothly, and given a fine paper grain at full resolution, which keeps
a 2000x3000 sheet well under half a second including the JPEG encoding.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import hashlib
import io
import math
import multiprocessing
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .errors import UserError

__all__ = ["FAMILIES", "GUODA_COLUMNS", "PLANTS", "STAIN_MASK_LEVEL", "SyntheticSet", "render_sheet",
           "encode_jpeg", "make_sheets", "check_size", "read_mask", "write_guoda"]

#: Largest width or height accepted, in pixels.
MAX_SIDE = 20000
#: Smallest width or height accepted, in pixels.
MIN_SIDE = 32
#: Stain opacity from which a pixel counts as stained in a ground-truth mask: a tenth of
#: the way from the paper to the stain's tone, some 15-20 grey levels darker.
STAIN_MASK_LEVEL = 0.1
#: The kinds of plant :func:`render_sheet` draws.
PLANTS = ("herb", "fern", "club-moss")
#: The families of the ``task="family"`` sets, each drawn as one kind of plant, with the
#: species its records name.
FAMILIES = (
    ("Asteraceae", "herb", ("Solidago canadensis L.", "Symphyotrichum novae-angliae (L.) G.L.Nesom")),
    ("Dryopteridaceae", "fern", ("Polystichum acrostichoides (Michx.) Schott",
                                 "Dryopteris marginalis (L.) A. Gray")),
    ("Lycopodiaceae", "club-moss", ("Lycopodium clavatum L.", "Huperzia lucidula (Michx.) Trevis.")),
)
#: Long side of the internal drawing canvas, in pixels.
_INTERNAL_LONG_SIDE = 800
#: Below this many sheets, or this many pixels in all, processes cost more than they save.
_PARALLEL_MIN_SHEETS = 20
_PARALLEL_MIN_PIXELS = 60_000_000

_NAMESPACE = uuid.UUID("6f1c2a0e-6a43-5b7e-9d0a-6964696764a1")
_SPECIES = (
    ("Lycopodium clavatum L.", "Lycopodiaceae"),
    ("Lycopodium annotinum L.", "Lycopodiaceae"),
    ("Huperzia lucidula (Michx.) Trevis.", "Lycopodiaceae"),
    ("Diphasiastrum digitatum (Dill. ex A. Braun) Holub", "Lycopodiaceae"),
    ("Selaginella apoda (L.) Spring", "Selaginellaceae"),
    ("Selaginella rupestris (L.) Spring", "Selaginellaceae"),
    ("Polystichum acrostichoides (Michx.) Schott", "Dryopteridaceae"),
    ("Solidago canadensis L.", "Asteraceae"),
    ("Asclepias syriaca L.", "Apocynaceae"),
    ("Quercus alba L.", "Fagaceae"),
)


# --------------------------------------------------------------------------- sizes


def check_size(size: Sequence[int]) -> tuple[int, int]:
    """Validate a ``(width, height)`` pair and return it as two ints.

    Raises
    ------
    UserError
        If it is not two integers between :data:`MIN_SIDE` and :data:`MAX_SIDE`.
    """
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"sheet size must be two integers (width, height), got {size!r}") from None
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise UserError(f"sheet {name} must be between {MIN_SIDE} and {MAX_SIDE} px, got {value}")
    return width, height


# --------------------------------------------------------------------------- drawing


def _paper(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Cream paper with a slow tint variation and a fine texture, float32 (h, w, 3)."""
    tint = np.array([236.0, 230.0, 208.0]) + rng.normal(0.0, 5.0, 3)
    # uneven lighting and paper tone: a tilt plus blotches, different on every sheet
    slow_grid = rng.normal(0.0, 9.0, (4, 3)).astype(np.float32)
    slow = np.asarray(Image.fromarray(slow_grid, mode="F").resize((w, h), Image.Resampling.BICUBIC))
    tilt_x, tilt_y = rng.normal(0.0, 9.0, 2)
    slow = slow + (np.linspace(-tilt_x, tilt_x, w, dtype=np.float32)[None, :]
                   + np.linspace(-tilt_y, tilt_y, h, dtype=np.float32)[:, None])
    fine = rng.standard_normal((h, w), dtype=np.float32) * 2.5
    paper = (slow + fine)[..., None] + tint.astype(np.float32)
    return paper


def _green(rng: np.random.Generator, dark: bool = False) -> tuple[int, int, int]:
    """A dried-plant green (olive to brown-green); dark parts are near-black brown."""
    if dark:
        v = rng.uniform(35, 70)
        return (int(v * 1.05), int(v), int(v * 0.7))
    r = rng.uniform(60, 125)
    g = r + rng.uniform(10, 45)
    b = rng.uniform(30, 70)
    return (int(r), int(g), int(b))


def _leaf_polygon(x: float, y: float, length: float, width: float, angle: float,
                  shape: str) -> list[tuple[float, float]]:
    """Outline of one leaf whose base is at (x, y), pointing along ``angle``."""
    t = np.linspace(0.0, 1.0, 14)
    if shape == "lanceolate":
        half = np.sin(np.pi * t) ** 1.4
    elif shape == "ovate":
        half = np.sin(np.pi * t ** 0.7)
    elif shape == "linear":
        half = np.minimum(1.0, 6 * (1 - t)) * np.minimum(1.0, 8 * t)
    else:  # lobed
        half = np.sin(np.pi * t) * (0.65 + 0.35 * np.abs(np.sin(3 * np.pi * t)))
    along = np.concatenate([t, t[::-1]]) * length
    across = np.concatenate([half, -half[::-1]]) * width / 2
    ca, sa = math.cos(angle), math.sin(angle)
    xs = x + along * ca - across * sa
    ys = y + along * sa + across * ca
    return list(zip(xs.tolist(), ys.tolist()))


def _curve(rng: np.random.Generator, x0: float, y0: float, length: float, angle: float,
           bend: float, n: int = 12) -> list[tuple[float, float]]:
    """A gently bending polyline from (x0, y0)."""
    pts = [(x0, y0)]
    step = length / n
    for _ in range(n):
        angle += bend + rng.normal(0.0, 0.06)
        x0 += step * math.cos(angle)
        y0 += step * math.sin(angle)
        pts.append((x0, y0))
    return pts


def _draw_plant(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int,
                dark_parts: bool, plant: str | None = None) -> list[tuple[float, float]]:
    """Draw a mounted plant (of kind ``plant``, else a drawn one); return points on it."""
    drawn = rng.choice(["herb", "fern", "herb", "club-moss"])
    kind = plant or drawn  # drawn either way: a sheet forced to its own kind keeps its pixels
    base_x = w * rng.uniform(0.22, 0.62)
    base_y = h * rng.uniform(0.74, 0.84)
    height = (base_y - h * rng.uniform(0.06, 0.35))
    stem_width = max(1, round(w * rng.uniform(0.004, 0.009)))
    shape = str(rng.choice(["lanceolate", "ovate", "linear", "lobed"]))
    points: list[tuple[float, float]] = []
    n_stems = int(rng.integers(1, 4))
    for stem in range(n_stems):
        angle = -math.pi / 2 + rng.normal(0.0, 0.25)
        dark_stem = dark_parts and stem == 0
        stem_pts = _curve(rng, base_x + rng.normal(0, w * 0.06), base_y,
                          height * rng.uniform(0.6, 1.0), angle, rng.normal(0, 0.015))
        draw.line(stem_pts, fill=_green(rng, dark_stem), width=stem_width, joint="curve")
        points.extend(stem_pts)
        if kind == "herb":
            _herb_leaves(draw, rng, w, stem_pts, shape, dark_parts, points)
        else:
            _pinnae(draw, rng, w, stem_pts, kind, dark_parts, points)
    # roots: a few thin dark lines below the base
    for _ in range(int(rng.integers(2, 6))):
        root = _curve(rng, base_x, base_y, h * rng.uniform(0.03, 0.08),
                      math.pi / 2 + rng.normal(0, 0.5), 0.0, n=6)
        draw.line(root, fill=(110, 90, 60), width=max(1, stem_width // 2))
    return points


def _herb_leaves(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int,
                 stem_pts: list[tuple[float, float]], shape: str, dark_parts: bool,
                 points: list[tuple[float, float]]) -> None:
    """Alternate leaves and a few side branches along a stem."""
    for i, (x, y) in enumerate(stem_pts[2:], start=2):
        side = 1 if i % 2 else -1
        stem_angle = math.atan2(stem_pts[i][1] - stem_pts[i - 1][1], stem_pts[i][0] - stem_pts[i - 1][0])
        angle = stem_angle + side * rng.uniform(0.6, 1.3)
        length = w * rng.uniform(0.06, 0.15) * (1.1 - i / len(stem_pts) * 0.5)
        width = length * rng.uniform(0.25, 0.55)
        dark = dark_parts and rng.random() < 0.4
        draw.polygon(_leaf_polygon(x, y, length, width, angle, shape), fill=_green(rng, dark))
        points.append((x + length / 2 * math.cos(angle), y + length / 2 * math.sin(angle)))
        if rng.random() < 0.25:  # a side branch with small leaves
            branch = _curve(rng, x, y, length * 1.5, angle, 0.0, n=5)
            draw.line(branch, fill=_green(rng), width=max(1, round(w * 0.003)))
            for bx, by in branch[2:]:
                draw.polygon(_leaf_polygon(bx, by, length * 0.5, width * 0.5,
                                           angle + rng.normal(0, 0.8), shape), fill=_green(rng))


def _pinnae(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int,
            stem_pts: list[tuple[float, float]], kind: str, dark_parts: bool,
            points: list[tuple[float, float]]) -> None:
    """Fern pinnae or club-moss microphylls on both sides of a stem."""
    n = len(stem_pts)
    for i in range(1, n - 1):
        x0, y0 = stem_pts[i]
        x1, y1 = stem_pts[i + 1]
        stem_angle = math.atan2(y1 - y0, x1 - x0)
        for frac in (0.0, 0.5):
            x, y = x0 + (x1 - x0) * frac, y0 + (y1 - y0) * frac
            taper = 1.0 - 0.7 * i / n
            for side in (-1, 1):
                if kind == "fern":
                    length = w * rng.uniform(0.06, 0.1) * taper
                    width = length * 0.3
                    shape = "lobed"
                else:
                    length = w * rng.uniform(0.015, 0.03)
                    width = length * 0.35
                    shape = "linear"
                angle = stem_angle + side * rng.uniform(1.0, 1.4)
                dark = dark_parts and rng.random() < 0.3
                draw.polygon(_leaf_polygon(x, y, length, width, angle, shape), fill=_green(rng, dark))
        points.append((x0, y0))


def _text_lines(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[float, ...],
                line_h: float, w: int) -> None:
    """Fill a box with lines of word-like dark blocks (printed or typed text)."""
    x0, y0, x1, y1 = box
    y = y0 + line_h * 1.2
    while y + line_h < y1 - line_h * 0.5:
        x = x0 + w * 0.015
        end = x1 - w * rng.uniform(0.02, 0.12)
        while x < end:
            word = w * rng.uniform(0.015, 0.06)
            ink = int(rng.uniform(25, 70))
            draw.rectangle([x, y, min(x + word, end), y + line_h * 0.5], fill=(ink, ink, ink))
            x += word + w * 0.01
        y += line_h * 1.9


def _draw_label(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """The printed label (bottom right), a barcode, and sometimes more slips of paper."""
    # mostly bottom right, as most herbaria mount them; some collections use the left
    x0 = w * (rng.uniform(0.45, 0.62) if rng.random() < 0.8 else rng.uniform(0.03, 0.15))
    y0 = h * rng.uniform(0.74, 0.86)
    x1 = min(w * 0.975, x0 + w * rng.uniform(0.3, 0.45))
    y1 = min(h * 0.98, y0 + h * rng.uniform(0.09, 0.16))
    paper = tuple(int(v) for v in rng.uniform(236, 252, 3))
    draw.rectangle([x0, y0, x1, y1], fill=paper, outline=(80, 80, 80))
    _text_lines(draw, rng, (x0, y0, x1, y1), max(2.0, h * rng.uniform(0.006, 0.01)), w)
    # barcode sticker: above the label, in the top right corner, or left of the label
    place = int(rng.integers(3))
    bw, bh = w * rng.uniform(0.15, 0.25), h * rng.uniform(0.035, 0.05)
    bx0, by0 = [(x0 + w * rng.uniform(0.0, 0.1), y0 - bh - h * 0.015),
                (w * rng.uniform(0.68, 0.8), h * rng.uniform(0.02, 0.08)),
                (x0 - bw - w * 0.03, h * rng.uniform(0.85, 0.92))][place]
    bx0 = min(max(bx0, w * 0.02), w * 0.98 - bw)
    draw.rectangle([bx0, by0, bx0 + bw, by0 + bh], fill=(252, 252, 250))
    x = bx0 + w * 0.01
    while x < bx0 + bw - w * 0.01:
        bar = max(1.0, w * rng.uniform(0.001, 0.004))
        draw.rectangle([x, by0 + bh * 0.12, x + bar, by0 + bh * 0.8], fill=(15, 15, 15))
        x += bar + max(1.0, w * rng.uniform(0.001, 0.004))
    for _ in range(int(rng.integers(0, 3))):  # determination slips, annotation labels
        sx0, sy0 = w * rng.uniform(0.05, 0.7), h * rng.uniform(0.05, 0.7)
        sx1, sy1 = sx0 + w * rng.uniform(0.15, 0.28), sy0 + h * rng.uniform(0.03, 0.06)
        tone = tuple(int(v) for v in rng.uniform(215, 250, 3))
        draw.rectangle([sx0, sy0, sx1, sy1], fill=tone, outline=(120, 120, 120))
        _text_lines(draw, rng, (sx0, sy0, sx1, sy1), max(2.0, h * 0.006), w)
    if rng.random() < 0.3:  # a fragment packet: a folded paper envelope
        ex0, ey0 = w * rng.uniform(0.05, 0.75), h * rng.uniform(0.05, 0.6)
        ex1, ey1 = ex0 + w * rng.uniform(0.12, 0.22), ey0 + h * rng.uniform(0.08, 0.14)
        draw.rectangle([ex0, ey0, ex1, ey1], fill=(224, 218, 196), outline=(150, 140, 120))
        draw.line([(ex0, ey0 + (ey1 - ey0) * 0.3), (ex1, ey0 + (ey1 - ey0) * 0.3)], fill=(170, 160, 140))


_PATCHES = ((250, 250, 250), (200, 200, 200), (128, 128, 128), (60, 60, 60), (15, 15, 15),
            (200, 40, 40), (40, 160, 60), (40, 60, 190), (230, 210, 40), (30, 170, 200),
            (190, 50, 160), (220, 130, 40))


def _draw_colour_bar(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """A colour chart with a black-and-white ruler, along an edge of the sheet."""
    patch = w * rng.uniform(0.025, 0.035)
    seg = w * 0.025
    place = int(rng.integers(4))
    if place == 3:  # vertical, along the left or the right edge
        x0 = w * (rng.uniform(0.01, 0.04) if rng.random() < 0.5 else rng.uniform(0.91, 0.94))
        y0 = h * rng.uniform(0.1, 0.45)
        for i, colour in enumerate(_PATCHES):
            draw.rectangle([x0, y0 + i * patch, x0 + patch, y0 + (i + 1) * patch], fill=colour)
        rx = x0 + patch * 1.3
        for i in range(12):
            fill = (20, 20, 20) if i % 2 == 0 else (245, 245, 245)
            draw.rectangle([rx, y0 + i * seg, rx + w * 0.012, y0 + (i + 1) * seg], fill=fill, outline=(20, 20, 20))
        return
    x0 = w * rng.uniform(0.02, 0.55)
    y0 = h * rng.uniform(0.01, 0.04) if place < 2 else h * rng.uniform(0.9, 0.93)
    if place == 2:  # along the bottom: keep clear of a label on the right
        x0 = min(x0, w * 0.2)
    for i, colour in enumerate(_PATCHES):
        draw.rectangle([x0 + i * patch, y0, x0 + (i + 1) * patch, y0 + patch], fill=colour)
    ry = y0 + patch * 1.3
    for i in range(12):
        fill = (20, 20, 20) if i % 2 == 0 else (245, 245, 245)
        draw.rectangle([x0 + i * seg, ry, x0 + (i + 1) * seg, ry + h * 0.008], fill=fill, outline=(20, 20, 20))


def _draw_confounders(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """Dark marks that are not mercury: pencil lines, ink stamps, foxing."""
    chosen = {"pencil": rng.random() < 0.3, "stamp": rng.random() < 0.25, "foxing": rng.random() < 0.25}
    if chosen["pencil"]:
        x, y = w * rng.uniform(0.1, 0.6), h * rng.uniform(0.3, 0.9)
        line = _curve(rng, x, y, w * rng.uniform(0.1, 0.35), rng.uniform(-0.3, 0.3), 0.0, n=8)
        grey = int(rng.uniform(70, 120))
        draw.line(line, fill=(grey, grey, grey + 5), width=1)
        if rng.random() < 0.5:  # a pencilled note: a row of short strokes
            for k in range(int(rng.integers(5, 15))):
                sx = x + k * w * 0.012
                draw.line([(sx, y + h * 0.01), (sx + w * 0.006, y + h * 0.002)], fill=(grey, grey, grey), width=1)
    if chosen["stamp"]:
        cx, cy, r = w * rng.uniform(0.1, 0.4), h * rng.uniform(0.6, 0.9), w * rng.uniform(0.04, 0.07)
        ink = (int(rng.uniform(40, 90)), int(rng.uniform(30, 60)), int(rng.uniform(60, 130)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=ink, width=max(1, round(w * 0.003)))
        draw.rectangle([cx - r * 0.6, cy - r * 0.15, cx + r * 0.6, cy + r * 0.15], fill=ink)
    if chosen["foxing"]:  # brown age spots: dark-ish, but brown and scattered
        for _ in range(int(rng.integers(4, 20))):
            fx, fy, fr = w * rng.random(), h * rng.random(), w * rng.uniform(0.002, 0.008)
            tone = (int(rng.uniform(170, 200)), int(rng.uniform(135, 160)), int(rng.uniform(90, 120)))
            draw.ellipse([fx - fr, fy - fr, fx + fr, fy + fr], fill=tone)


def _shadow(arr: np.ndarray, rng: np.random.Generator) -> None:
    """Darken one edge softly, as a page curling under a scanner lamp would (in place)."""
    h, w, _ = arr.shape
    edge = int(rng.integers(4))
    depth = rng.uniform(0.05, 0.12)
    strength = rng.uniform(0.12, 0.3)
    n = w if edge < 2 else h
    ramp = np.clip(1.0 - np.arange(n) / (depth * n), 0.0, 1.0) ** 2 * strength
    if edge % 2:
        ramp = ramp[::-1]
    factor = (1.0 - ramp).astype(np.float32)
    if edge < 2:
        arr *= factor[None, :, None]
    else:
        arr *= factor[:, None, None]


def _stain_density(rng: np.random.Generator, w: int, h: int,
                   plant: list[tuple[float, float]]) -> np.ndarray:
    """Opacity map (h, w) in [0, 1] of mercury-like halos and speckle clusters."""
    density = np.zeros((h, w), np.float32)
    # Halos are what the classifier must find at the store's 128-256 px: two to five
    # of 7-13% of the sheet's width (a few pixels across would sit below what the
    # reference network learns from a thousand sheets), of varied size and contrast.
    n_halos = int(rng.integers(2, 6))
    n_clusters = int(rng.integers(0, 4))
    anchors = np.asarray(plant, dtype=np.float64)

    def near_plant() -> tuple[float, float]:
        x, y = anchors[rng.integers(len(anchors))]
        return x + rng.normal(0, w * 0.04), y + rng.normal(0, w * 0.04)

    for _ in range(n_halos):
        cx, cy = near_plant()
        radius = w * rng.uniform(0.07, 0.13)
        peak = rng.uniform(0.6, 0.9)
        aspect, theta = rng.uniform(0.55, 1.0), rng.uniform(0, math.pi)
        x0, x1 = max(0, int(cx - 2.5 * radius)), min(w, int(cx + 2.5 * radius) + 1)
        y0, y1 = max(0, int(cy - 2.5 * radius)), min(h, int(cy + 2.5 * radius) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        u = dx * math.cos(theta) + dy * math.sin(theta)
        v = (-dx * math.sin(theta) + dy * math.cos(theta)) / aspect
        d2 = (u * u + v * v) / (radius * radius)
        # a diffuse core with a slightly darker rim, blotchy rather than a perfect disc
        blotch = 0.75 + 0.25 * rng.random((y1 - y0, x1 - x0), dtype=np.float32)
        halo = (np.exp(-d2 * 1.5) + 0.35 * np.exp(-((np.sqrt(d2) - 0.9) ** 2) * 12)) * peak * blotch
        density[y0:y1, x0:x1] += halo.astype(np.float32)
    if n_clusters:
        mask = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        for _ in range(n_clusters):
            cx, cy = near_plant()
            spread = w * rng.uniform(0.015, 0.04)
            for _ in range(int(rng.integers(40, 140))):
                x, y = cx + rng.normal(0, spread), cy + rng.normal(0, spread)
                r = w * rng.uniform(0.0015, 0.005)
                draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.uniform(110, 240)))
        speckles = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) / 255.0
        density += speckles
    return np.clip(density, 0.0, 0.92)


def render_sheet(index: int, *, seed: int = 0, size: Sequence[int] = (2000, 3000),
                 stained: bool, plant: str | None = None,
                 return_mask: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic herbarium sheet.

    Parameters
    ----------
    index : int
        Position of the sheet in its set; with ``seed`` it fixes every random choice.
    seed : int, default 0
        Seed of the set.
    size : (int, int), default (2000, 3000)
        Width and height in pixels.
    stained : bool
        Whether to add mercury-like stains. The sheet is otherwise the same as its clean
        twin: plant, label and confounders come from ``(seed, index)`` alone.
    plant : {"herb", "fern", "club-moss"}, optional
        The kind of plant mounted (broad leaves, lobed pinnae, needle-like
        microphylls); None: drawn from ``(seed, index)``. Paper, plant position and
        stains still come from ``(seed, index)``.
    return_mask : bool, default False
        Also return the ground-truth stain mask. The pixels are the same either way.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        ``(height, width, 3)`` uint8 RGB pixels; with ``return_mask``, also the
        ``(height, width)`` bool mask of the pixels whose stain opacity is at least
        :data:`STAIN_MASK_LEVEL` (all False on a clean sheet).

    Examples
    --------
    >>> render_sheet(0, size=(200, 300), stained=True).shape
    (300, 200, 3)
    >>> pixels, mask = render_sheet(0, size=(200, 300), stained=True, return_mask=True)
    >>> mask.shape, mask.dtype, bool(mask.any())
    ((300, 200), dtype('bool'), True)
    """
    if plant is not None and plant not in PLANTS:
        raise UserError(f"plant must be one of {', '.join(PLANTS)}, got {plant!r}")
    width, height = check_size(size)
    if int(index) < 0 or int(seed) < 0:
        raise UserError(f"sheet index and seed must be non-negative, got index={index}, seed={seed}")
    rng = np.random.default_rng([int(seed), int(index)])
    scale = max(1.0, max(width, height) / _INTERNAL_LONG_SIDE)
    w, h = max(16, round(width / scale)), max(16, round(height / scale))

    img = Image.fromarray(np.clip(_paper(rng, w, h), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    dark_parts = bool(rng.random() < 0.3)
    points = _draw_plant(draw, rng, w, h, dark_parts, plant)
    _draw_label(draw, rng, w, h)
    _draw_colour_bar(draw, rng, w, h)
    _draw_confounders(draw, rng, w, h)
    arr = np.asarray(img, dtype=np.float32).copy()
    if rng.random() < 0.25:
        _shadow(arr, rng)
    density = None
    if stained:
        # stains have their own stream so a stained sheet and its clean twin match elsewhere
        srng = np.random.default_rng([int(seed), int(index), 1])
        density = _stain_density(srng, w, h, points)
        tone = srng.uniform(25, 85)
        colour = np.array([tone * 1.02, tone, tone * 0.95], np.float32)
        arr = arr * (1.0 - density[..., None]) + colour * density[..., None]
    small = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    big = small.resize((width, height), Image.Resampling.BILINEAR) if scale > 1 else small
    pixels = _add_grain(np.asarray(big), rng)
    if not return_mask:
        return pixels
    return pixels, _stain_mask(density, width, height)


def _stain_mask(density: np.ndarray | None, width: int, height: int) -> np.ndarray:
    """The ``(height, width)`` mask of a density map, upscaled as the pixels are."""
    if density is None:
        return np.zeros((height, width), dtype=bool)
    if density.shape != (height, width):
        field = Image.fromarray(density.astype(np.float32), mode="F")
        density = np.asarray(field.resize((width, height), Image.Resampling.BILINEAR))
    return density >= STAIN_MASK_LEVEL


def _add_grain(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add a fine luminance grain at full resolution (a tiled noise field, cheap)."""
    tile = rng.integers(-3, 4, size=(256, 256), dtype=np.int16)
    h, w, _ = pixels.shape
    reps = (-(-h // 256), -(-w // 256))
    grain = np.tile(tile, reps)[:h, :w]
    out = pixels.astype(np.int16)
    out += grain[..., None]
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """Encode ``(h, w, 3)`` uint8 pixels as baseline JPEG bytes (Pillow's defaults, 4:2:0).

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(h, w, 3)`` uint8 RGB pixels.
    quality : int
        JPEG quality (1 to 100), as Pillow takes it.

    Returns
    -------
    bytes
        The JPEG file (without Huffman-table optimisation).

    Examples
    --------
    >>> import numpy as np
    >>> data = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    >>> data[:3], data[-2:]
    (b'\\xff\\xd8\\xff', b'\\xff\\xd9')
    """
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=int(quality), optimize=False)
    return buf.getvalue()


# --------------------------------------------------------------------------- a set on disk


@dataclass(frozen=True)
class SyntheticSet:
    """What :func:`make_sheets` wrote.

    Attributes
    ----------
    folder : str
        The output folder.
    paths : list of str
        The JPEG files, in index order.
    catalog : str
        The GUODA-schema media parquet.
    labels : str
        The label table (``record_uuid``, ``catalogNumber``, ``stained``).
    n : int
        Number of sheets.
    stained : tuple of int
        The 0/1 label of each sheet, in index order.
    masks : tuple of (str or None)
        With ``masks=True``: the ground-truth stain mask PNG of each stained sheet
        (None for a clean one), in index order; else empty.
    records : str or None
        With ``task="family"``: the specimen records table (``record_uuid``,
        ``catalogNumber``, ``family``, ``genus``, ``scientificName``); else None.
    families : tuple of str
        With ``task="family"``: the family of each sheet, in index order; else empty.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> sheets = make_sheets(tempfile.mkdtemp(), n=2, size=(64, 96), seed=0, n_jobs=1)
    >>> sheets.n, sheets.stained, len(sheets.paths)
    (2, (1, 0), 2)
    >>> os.path.basename(sheets.catalog), os.path.basename(sheets.labels), sheets.records
    ('media.parquet', 'labels.csv', None)
    """

    folder: str
    paths: list[str]
    catalog: str
    labels: str
    n: int
    stained: tuple[int, ...] = ()
    masks: tuple[str | None, ...] = ()
    records: str | None = None
    families: tuple[str, ...] = ()


def media_uuid(seed: int, index: int) -> str:
    """The deterministic media uuid of sheet ``index`` of set ``seed``."""
    return str(uuid.uuid5(_NAMESPACE, f"synthetic:{seed}:{index}:media"))


def record_uuid(seed: int, index: int) -> str:
    """The deterministic specimen record uuid of sheet ``index`` of set ``seed``."""
    return str(uuid.uuid5(_NAMESPACE, f"synthetic:{seed}:{index}:record"))


def _sheet_size(seed: int, index: int, size: tuple[int, int]) -> tuple[int, int]:
    """Most sheets have the nominal size; some are slightly smaller, of another aspect."""
    rng = np.random.default_rng([seed, index, 2])
    if rng.random() < 0.6:
        return size
    w = max(MIN_SIDE, round(size[0] * rng.uniform(0.9, 1.0)))
    h = max(MIN_SIDE, round(size[1] * rng.uniform(0.9, 1.0)))
    return w, h


def _write_one(job: tuple[int, int, tuple[int, int], bool, int, str, str | None, str | None]
               ) -> dict[str, Any]:
    """Render, encode and write one sheet (and its mask); return what the catalog needs."""
    index, seed, size, stained, quality, path, mask_path, plant = job
    pixels = render_sheet(index, seed=seed, size=size, stained=stained, plant=plant,
                          return_mask=mask_path is not None)
    if mask_path is not None:
        pixels, mask = pixels
        _write_atomic(mask_path, _png(mask))
    data = encode_jpeg(pixels, quality)
    _write_atomic(path, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest(),
            "width": pixels.shape[1], "height": pixels.shape[0]}


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.part"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)  # never leave a half-written file under the final name


def _png(mask: np.ndarray) -> bytes:
    """A bool mask as a 1-bit PNG (white: stained)."""
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A stain mask written by :func:`make_sheets` as a ``(height, width)`` bool array.

    Examples
    --------
    >>> import tempfile
    >>> sheets = make_sheets(tempfile.mkdtemp(), n=2, size=(64, 96), masks=True)
    >>> i = sheets.stained.index(1)
    >>> from PIL import Image
    >>> read_mask(sheets.masks[i]).shape == Image.open(sheets.paths[i]).size[::-1]
    True
    """
    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 127


def _family_codes(n: int, seed: int) -> np.ndarray:
    """Each sheet's index into :data:`FAMILIES`: as many of each (within one), seeded."""
    order = np.random.default_rng([seed, 4]).permutation(n)
    codes = np.empty(n, dtype=np.int64)
    codes[order] = np.arange(n) % len(FAMILIES)
    return codes


def _stained_flags(n: int, fraction: float, seed: int) -> np.ndarray:
    """Exactly ``round(n * fraction)`` stained sheets, at seeded positions."""
    flags = np.zeros(n, dtype=np.int8)
    k = int(round(n * fraction))
    order = np.random.default_rng([seed, 3]).permutation(n)
    flags[order[:k]] = 1
    return flags


def _default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _run_jobs(jobs: list[tuple], n_jobs: int) -> list[dict[str, Any]]:
    pixels = sum(job[2][0] * job[2][1] for job in jobs)
    if n_jobs <= 1 or len(jobs) < _PARALLEL_MIN_SHEETS or pixels < _PARALLEL_MIN_PIXELS:
        return [_write_one(job) for job in jobs]
    # forkserver: safe even when the caller runs threads (a Dask client, a server)
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
        return list(pool.map(_write_one, jobs, chunksize=max(1, len(jobs) // (n_jobs * 4))))


#: The kinds of set :func:`make_sheets` writes.
TASKS = ("stain", "family")


def _validate(n: int, stained_fraction: float, quality: int, seed: int, task: str) -> None:
    if task not in TASKS:
        raise UserError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"number of sheets must be a positive integer, got {n!r}")
    if not 0.0 <= float(stained_fraction) <= 1.0:
        raise UserError(f"stained fraction must be between 0 and 1, got {stained_fraction!r}")
    if not 1 <= int(quality) <= 100:
        raise UserError(f"JPEG quality must be between 1 and 100, got {quality!r}")
    if int(seed) < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")


def make_sheets(out_dir: str | os.PathLike, n: int = 200, *, size: Sequence[int] = (2000, 3000),
                stained_fraction: float = 0.5, seed: int = 0, base_url: str | None = None,
                quality: int = 90, n_jobs: int | None = None, masks: bool = False,
                task: str = "stain") -> SyntheticSet:
    """Write a folder of synthetic herbarium sheets with a GUODA-schema catalog and labels.

    Parameters
    ----------
    out_dir : str or path-like
        Local folder to write into (created if missing).
    n : int, default 200
        Number of sheets.
    size : (int, int), default (2000, 3000)
        Nominal width and height; about 40% of the sheets are up to 10% smaller in
        either direction, as real scans vary.
    stained_fraction : float, default 0.5
        Fraction of sheets with mercury-like stains (exactly ``round(n * fraction)``).
    seed : int, default 0
        Seed of the set: the same arguments write the same bytes.
    base_url : str, optional
        If given, ``accessuri`` is ``base_url + '/images/<uuid>.jpg'`` (for serving the
        folder over HTTP or uploading it under a prefix); otherwise the absolute path.
    quality : int, default 90
        JPEG quality.
    n_jobs : int, optional
        Worker processes (default: the usable cores). Small sets (under 20 sheets or
        60 million pixels in all) are written in this process.
    masks : bool, default False
        Also write the ground-truth stain mask of each stained sheet,
        ``masks/<media uuid>.png`` (1-bit, the sheet's size, white where the stain's
        opacity is at least :data:`STAIN_MASK_LEVEL`; read it with :func:`read_mask`).
        The sheets are the same bytes either way.
    task : {"stain", "family"}, default "stain"
        ``"stain"``: plants of every kind, the records' species unrelated to them.
        ``"family"``: a second, multi-class task: each sheet is of one of the three
        :data:`FAMILIES` (as many of each, within one), drawn as that family's kind of
        plant (broad-leaved herbs, ferns with lobed pinnae, club-mosses with
        needle-like microphylls), its records naming a species of that family, and a
        specimen records table ``records.csv`` written beside the labels. Stains are
        added as for ``"stain"`` (``stained_fraction=0`` for clean sheets only).

    Returns
    -------
    SyntheticSet
        The folder, the image paths, the catalog and label paths and the labels.

    Notes
    -----
    Writes ``images/<media uuid>.jpg``, ``media.parquet`` (one row per sheet, the
    columns of a GUODA media dump with the provider record in a nested ``data`` struct
    whose keys contain ``:``) and ``labels.csv`` (``record_uuid``, ``catalogNumber``,
    ``stained``); with ``masks``, ``masks/<media uuid>.png``; with ``task="family"``,
    ``records.csv`` (``record_uuid``, ``catalogNumber``, ``family``, ``genus``,
    ``scientificName``), a specimen records table for
    :func:`idigdask.attach_labels` (``label="family"``).

    Examples
    --------
    >>> import tempfile
    >>> sheets = make_sheets(tempfile.mkdtemp(), n=4, size=(64, 96), seed=1)
    >>> sheets.n, len(sheets.stained)
    (4, 4)
    >>> plants = make_sheets(tempfile.mkdtemp(), n=3, size=(64, 96), task="family")
    >>> sorted(plants.families)
    ['Asteraceae', 'Dryopteridaceae', 'Lycopodiaceae']
    """
    _validate(n, stained_fraction, quality, seed, task)
    nominal = check_size(size)
    seed, n = int(seed), int(n)
    folder = Path(out_dir).expanduser().resolve()
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    flags = _stained_flags(n, stained_fraction, seed)
    media = [media_uuid(seed, i) for i in range(n)]
    paths = [str(images / f"{m}.jpg") for m in media]
    mask_paths: list[str | None] = [None] * n
    if masks:
        (folder / "masks").mkdir(exist_ok=True)
        mask_paths = [str(folder / "masks" / f"{m}.png") if flags[i] else None
                      for i, m in enumerate(media)]
    codes = _family_codes(n, seed) if task == "family" else None
    plants = [None] * n if codes is None else [FAMILIES[c][1] for c in codes]
    jobs = [(i, seed, _sheet_size(seed, i, nominal), bool(flags[i]), int(quality), paths[i],
             mask_paths[i], plants[i]) for i in range(n)]
    results = _run_jobs(jobs, n_jobs or _default_jobs())
    catalog = folder / "media.parquet"
    labels = folder / "labels.csv"
    species = None if codes is None else [(FAMILIES[c][2][i % 2], FAMILIES[c][0])
                                          for i, c in enumerate(codes)]
    _write_catalog(catalog, seed, media, paths, results, base_url, species)
    _write_labels(labels, seed, flags)
    records = None
    if species is not None:
        records = folder / "records.csv"
        _write_records(records, seed, species)
    return SyntheticSet(str(folder), paths, str(catalog), str(labels), n,
                        tuple(int(f) for f in flags),
                        masks=tuple(mask_paths) if masks else (),
                        records=None if records is None else str(records),
                        families=() if species is None else tuple(f for _, f in species))


def _catalog_number(seed: int, index: int) -> str:
    return f"SYN{seed:03d}-{index:07d}"


def _write_records(path: Path, seed: int, species: list[tuple[str, str]]) -> None:
    """The specimen records table: one row per record, Darwin Core names."""
    import csv

    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["record_uuid", "catalogNumber", "family", "genus", "scientificName"])
        for i, (name, family) in enumerate(species):
            out.writerow([record_uuid(seed, i), _catalog_number(seed, i), family,
                          name.split()[0], name])


def _write_labels(path: Path, seed: int, flags: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("record_uuid,catalogNumber,stained\n")
        for i, flag in enumerate(flags):
            fh.write(f"{record_uuid(seed, i)},{_catalog_number(seed, i)},{int(flag)}\n")


#: Keys of the nested provider record, in the order written.
DATA_KEYS = ("ac:accessURI", "ac:bestQualityAccessURI", "ac:hashFunction", "ac:hashValue",
             "coreid", "dc:type", "dcterms:format", "dcterms:identifier", "dcterms:rights",
             "dwc:catalogNumber", "dwc:family", "dwc:institutionCode", "dwc:scientificName",
             "exif:PixelXDimension", "exif:PixelYDimension", "xmpRights:WebStatement")

#: Top-level columns of a GUODA media dump, in the dump's order.
GUODA_COLUMNS = ("accessuri", "data", "datemodified", "dqs", "etag", "format", "hasSpecimen",
                 "licenselogourl", "mediatype", "modified", "recordset", "records", "rights",
                 "tag", "type", "uuid", "version", "webstatement", "xpixels", "ypixels")

_RIGHTS = "CC0"
_WEBSTATEMENT = "https://creativecommons.org/publicdomain/zero/1.0/"
_LICENSE_LOGO = "https://mirrors.creativecommons.org/presskit/buttons/80x15/png/cc-zero.png"


def _guoda_type(column: str, data_keys: Sequence[str]):
    """The Arrow type of a GUODA column (``data``: a struct of strings over ``data_keys``)."""
    import pyarrow as pa

    if column not in GUODA_COLUMNS:
        raise ValueError(f"{column!r} is not a GUODA media column")
    if column == "data":
        return pa.struct([(k, pa.string()) for k in data_keys])
    when = pa.timestamp("us", tz="UTC")
    return {"datemodified": when, "modified": when, "dqs": pa.float64(),
            "hasSpecimen": pa.bool_(), "records": pa.list_(pa.string()),
            "xpixels": pa.int64(), "ypixels": pa.int64()}.get(column, pa.string())


def write_guoda(path: str | os.PathLike, rows: Sequence[dict[str, Any]], *,
                data_keys: Sequence[str] = DATA_KEYS, columns: Sequence[str] = GUODA_COLUMNS,
                row_group_size: int | None = None) -> Path:
    """Write media rows as a GUODA-schema parquet file, the layout of iDigBio's dump.

    Parameters
    ----------
    path : str or os.PathLike
        The parquet file to write.
    rows : sequence of dict
        One dict per media record, keyed by GUODA column names; a column a row lacks is
        null. ``data`` is the provider record, a dict keyed by terms written with a colon
        (``ac:accessURI``); only its ``data_keys`` are written, missing ones as null.
    data_keys : sequence of str, default :data:`DATA_KEYS`
        Fields of the ``data`` struct, in order.
    columns : sequence of str, default :data:`GUODA_COLUMNS`
        Top-level columns to write, in order, each one of :data:`GUODA_COLUMNS`.
    row_group_size : int, optional
        Rows per parquet row group; pyarrow's default when None.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        When ``columns`` names a column that is not one of :data:`GUODA_COLUMNS`.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import pyarrow.parquet as pq
    >>> uri = "https://example.org/1.jpg"
    >>> path = write_guoda(os.path.join(tempfile.mkdtemp(), "media.parquet"),
    ...                    [{"uuid": "m1", "accessuri": uri, "data": {"ac:accessURI": uri}}])
    >>> table = pq.read_table(path)
    >>> table.num_rows, table.column_names[:3]
    (1, ['accessuri', 'data', 'datemodified'])
    >>> table.column("data")[0]["ac:accessURI"].as_py()
    'https://example.org/1.jpg'
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, _guoda_type(c, data_keys)) for c in columns])
    if "data" in columns:
        rows = [{**r, "data": {k: (r.get("data") or {}).get(k) for k in data_keys}} for r in rows]
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), path,
                   row_group_size=row_group_size)
    return Path(path)


def _write_catalog(path: Path, seed: int, media: list[str], paths: list[str],
                   results: list[dict[str, Any]], base_url: str | None,
                   species: list[tuple[str, str]] | None = None) -> None:
    """Write the GUODA-schema media parquet with a nested ``data`` struct.

    ``species``: the (scientific name, family) of each sheet; None: cycled through
    :data:`_SPECIES`, unrelated to what is drawn.
    """
    n = len(media)
    if base_url is None:
        urls = list(paths)
    else:
        urls = [f"{base_url.rstrip('/')}/images/{m}.jpg" for m in media]
    recordset = str(uuid.uuid5(_NAMESPACE, f"synthetic:{seed}:recordset"))
    start = _dt.datetime(2017, 6, 1, tzinfo=_dt.timezone.utc)
    modified = [start + _dt.timedelta(minutes=i) for i in range(n)]
    if species is None:
        species = [_SPECIES[(seed * 7919 + i) % len(_SPECIES)] for i in range(n)]
    rows = [
        {"accessuri": urls[i],
         "data": {"ac:accessURI": urls[i], "ac:bestQualityAccessURI": urls[i],
                  "ac:hashFunction": "SHA-256", "ac:hashValue": r["sha256"],
                  "coreid": f"urn:catalog:SYN:{_catalog_number(seed, i)}",
                  "dc:type": "StillImage", "dcterms:format": "image/jpeg",
                  "dcterms:identifier": urls[i], "dcterms:rights": _RIGHTS,
                  "dwc:catalogNumber": _catalog_number(seed, i), "dwc:family": species[i][1],
                  "dwc:institutionCode": "SYN", "dwc:scientificName": species[i][0],
                  "exif:PixelXDimension": str(r["width"]),
                  "exif:PixelYDimension": str(r["height"]),
                  "xmpRights:WebStatement": _WEBSTATEMENT},
         "datemodified": modified[i], "dqs": 0.5, "etag": r["sha1"], "format": "image/jpeg",
         "hasSpecimen": True, "licenselogourl": _LICENSE_LOGO, "mediatype": "images",
         "modified": modified[i], "recordset": recordset, "records": [record_uuid(seed, i)],
         "rights": _RIGHTS, "tag": None, "type": "stillimage", "uuid": media[i],
         "version": "1", "webstatement": _WEBSTATEMENT, "xpixels": r["width"],
         "ypixels": r["height"]}
        for i, r in enumerate(results)
    ]
    write_guoda(path, rows)
