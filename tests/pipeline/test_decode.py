"""Decoding and resizing: every image case, the resize modes, and the reduced JPEG decode.

The defects of issue 10 (orientation, JPEG header junk, load errors, memory) have their
own module, ``test_decode_hardening.py``.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image, ImageFile

from idigdask.decode import RESIZE_MODES, _min_decoded, decode_image, resize
from idigdask.errors import MediaError, UserError

from imagecases import BLUE, EXPECTED, GREEN, RED, YELLOW, quadrants, sixteen_bit_ramp, write_cases

OK_CASES = sorted(k for k, v in EXPECTED.items() if v.reason is None)
BAD_CASES = sorted(k for k, v in EXPECTED.items() if v.reason is not None)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("imagecases"))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _close(pixel, colour, tol=40) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(colour, int)) <= tol))


# --------------------------------------------------------------------------- every case


@pytest.mark.parametrize("name", OK_CASES)
def test_good_case_decodes_to_square_rgb(cases, name):
    expected = EXPECTED[name]
    out = decode_image(cases[name].read_bytes(), 64)
    assert out.pixels.shape == (64, 64, 3)
    assert out.pixels.dtype == np.uint8
    assert (out.source_width, out.source_height) == (expected.width, expected.height)
    assert out.format == expected.format
    assert out.warnings == expected.warnings


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_case_raises_media_error_with_reason(cases, name):
    with pytest.raises(MediaError) as info:
        decode_image(cases[name].read_bytes(), 64)
    assert info.value.reason == EXPECTED[name].reason
    assert info.value.message


@pytest.mark.parametrize("name", [k for k in OK_CASES if EXPECTED[k].quadrants])
def test_quadrants_land_upright_in_every_format(cases, name):
    """Orientation, CMYK, first frames: the four colours end up where they belong."""
    px = decode_image(cases[name].read_bytes(), 256, resize_mode="stretch").pixels
    assert _close(px[64, 64], RED), px[64, 64]
    assert _close(px[64, 192], GREEN), px[64, 192]
    assert _close(px[192, 64], BLUE), px[192, 64]
    assert _close(px[192, 192], YELLOW), px[192, 192]


# --------------------------------------------------------------------------- pixels


def _reference(data: bytes, size: int) -> np.ndarray:
    """Full decode and a plain Pillow Lanczos resize, letterboxed on white."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    scale = size / max(w, h)
    small = img.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (size, size), (255, 255, 255))
    out.paste(small, ((size - small.width) // 2, (size - small.height) // 2))
    return np.asarray(out)


def _gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    r = 40 + 180 * x + 0 * y
    g = 60 + 150 * y + 0 * x
    b = 200 - 120 * x * y
    return np.stack([r, g, b], -1).round().astype(np.uint8)


@pytest.mark.parametrize("size", [(1600, 1000), (1000, 1600), (300, 200)])
def test_reduced_jpeg_decode_matches_full_decode_and_resize(size):
    data = _jpeg(_gradient(*size), 92)
    got = decode_image(data, 128).pixels.astype(int)
    ref = _reference(data, 128).astype(int)
    diff = np.abs(got - ref)
    assert diff.mean() < 1.5
    assert np.percentile(diff, 99) <= 6


def test_png_pixels_match_full_resize():
    arr = _gradient(500, 320)
    got = decode_image(_png(arr), 100).pixels.astype(int)
    assert np.abs(got - _reference(_png(arr), 100).astype(int)).mean() < 1.0


def test_pad_letterboxes_a_wide_image_top_and_bottom():
    wide = np.zeros((200, 400, 3), np.uint8)  # black, aspect 2:1
    px = decode_image(_png(wide), 256, pad_color=(10, 200, 30)).pixels
    assert np.all(px[:64] == (10, 200, 30)) and np.all(px[192:] == (10, 200, 30))
    assert np.all(px[64:192] == 0)


def test_pad_letterboxes_a_tall_image_left_and_right():
    tall = np.zeros((400, 200, 3), np.uint8)
    px = decode_image(_png(tall), 256).pixels
    assert np.all(px[:, :64] == 255) and np.all(px[:, 192:] == 255)
    assert np.all(px[:, 64:192] == 0)


def test_crop_keeps_the_centre():
    arr = np.zeros((200, 400, 3), np.uint8)
    arr[:, :100], arr[:, 100:300], arr[:, 300:] = RED, GREEN, BLUE
    px = decode_image(_png(arr), 64, resize_mode="crop").pixels
    assert np.all(px == GREEN)


def test_stretch_fills_the_square():
    arr = np.zeros((100, 400, 3), np.uint8)
    arr[:, :200], arr[:, 200:] = RED, BLUE
    px = decode_image(_png(arr), 32, resize_mode="stretch").pixels
    assert np.all(px[:, :12] == RED) and np.all(px[:, 20:] == BLUE)


def test_small_image_is_upscaled():
    px = decode_image(_jpeg(quadrants(30, 20)), 120, resize_mode="stretch").pixels
    assert px.shape == (120, 120, 3)
    assert _close(px[20, 20], RED)


def test_transparency_is_composited_on_white(cases):
    rgba = decode_image(cases["rgba.png"].read_bytes(), 64, resize_mode="stretch").pixels
    assert np.all(rgba[:, :28] == 255)  # the transparent half, red underneath
    assert _close(rgba[32, 50], RED, 5)
    pal = decode_image(cases["palette_transparent.png"].read_bytes(), 64, resize_mode="stretch").pixels
    assert np.all(pal[:, :28] == 255)
    assert _close(pal[32, 50], GREEN, 5)


def test_transparency_uses_the_pad_colour(cases):
    px = decode_image(cases["rgba.png"].read_bytes(), 64, resize_mode="stretch", pad_color=(0, 0, 0)).pixels
    assert np.all(px[:, :28] == 0)


def test_sixteen_bit_is_scaled_not_clipped(cases):
    px = decode_image(cases["sixteen_bit.png"].read_bytes(), 256, resize_mode="stretch").pixels
    row = px[128, :, 0].astype(int)
    expected = np.round(sixteen_bit_ramp()[0] / 257.0)
    assert np.abs(row[4:-4] - expected[4:-4]).max() <= 2
    assert row[0] <= 2 and row[-1] >= 253
    assert np.all(px[..., 0] == px[..., 1])


def test_grey_and_bilevel_become_three_equal_channels(cases):
    for name in ("grey_l.png", "grey.jpg", "bilevel.png", "grey_alpha_la.png"):
        px = decode_image(cases[name].read_bytes(), 64).pixels
        assert np.array_equal(px[..., 0], px[..., 1]) and np.array_equal(px[..., 1], px[..., 2]), name


def test_float_and_int32_images_are_scaled():
    buf = io.BytesIO()
    Image.fromarray(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64), mode="F").save(buf, "TIFF")
    px = decode_image(buf.getvalue(), 64).pixels
    assert px.min() <= 1 and px.max() >= 254
    buf = io.BytesIO()
    Image.fromarray(np.linspace(-5000, 90000, 64 * 64).astype(np.int32).reshape(64, 64), mode="I").save(buf, "TIFF")
    px = decode_image(buf.getvalue(), 64).pixels
    assert px.min() == 0 and px.max() == 255


# --------------------------------------------------------------------------- limits and options


def test_pixel_limit_is_checked_from_the_header(cases):
    with pytest.raises(MediaError) as info:
        decode_image(cases["baseline.jpg"].read_bytes(), 64, max_pixels=300 * 200 - 1)
    assert info.value.reason == "bomb"
    decode_image(cases["baseline.jpg"].read_bytes(), 64, max_pixels=300 * 200)


def test_bad_options_are_user_errors(cases):
    data = cases["baseline.jpg"].read_bytes()
    with pytest.raises(UserError, match="resize mode"):
        decode_image(data, 64, resize_mode="squash")
    with pytest.raises(UserError, match="size"):
        decode_image(data, 0)
    with pytest.raises(UserError, match="pad colour"):
        decode_image(data, 64, pad_color=(0, 0, 300))


def test_truncated_images_flag_must_stay_off(cases, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(UserError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(cases["baseline.jpg"].read_bytes(), 64)


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_resize_accepts_arrays_and_images(mode):
    arr = quadrants(90, 60)
    a = resize(arr, 48, mode)
    b = resize(Image.fromarray(arr), 48, mode)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8 and a.flags.writeable
    assert np.array_equal(a, b)
    assert resize(arr[..., 0], 16, mode).shape == (16, 16, 3)


def test_resize_rejects_bad_arrays():
    with pytest.raises(UserError):
        resize(np.zeros((10, 10, 3), np.float32), 8)


def test_draft_keeps_enough_pixels_for_each_mode():
    assert _min_decoded(3000, 4500, 256, "pad") == (1, 256)
    assert _min_decoded(4500, 3000, 256, "pad") == (256, 1)
    assert _min_decoded(3000, 4500, 256, "crop") == (256, 256)
    assert _min_decoded(3000, 4500, 256, "stretch") == (256, 256)


def test_reduced_decode_is_much_faster_than_full_decode():
    from idigdask.synthetic import encode_jpeg, render_sheet

    data = encode_jpeg(render_sheet(1, size=(3000, 4500), stained=True), 90)

    def full():
        img = Image.open(io.BytesIO(data)).convert("RGB")
        return img.resize((171, 256), Image.Resampling.LANCZOS)

    def best(fn, repeat=3):
        fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    reduced = best(lambda: decode_image(data, 256))
    assert best(full) / reduced > 3.0


def test_decoding_imports_only_the_accepted_formats_plugins():
    """Decoding never loads all of Pillow's plugins (``Image.init``), only those of
    the accepted formats, which all stay openable."""
    import subprocess
    import sys

    probe = (
        "import io, sys, numpy as np\n"
        "from PIL import Image\n"
        "from idigdask.decode import _FORMATS, _registered_formats, decode_image\n"
        "for fmt in ('JPEG', 'PNG', 'TIFF', 'WEBP', 'GIF', 'BMP'):\n"
        "    buf = io.BytesIO(); Image.new('RGB', (40, 30), 'red').save(buf, fmt)\n"
        "    assert decode_image(buf.getvalue(), 16).format == fmt, fmt\n"
        "Image.init()\n"
        "print(sorted(_registered_formats()) == sorted(f for f in _FORMATS if f in Image.OPEN),\n"
        "      'PIL.PsdImagePlugin' in sys.modules)\n")
    before = ("import sys; from idigdask.decode import _registered_formats; _registered_formats()\n"
              "print('PIL.PsdImagePlugin' in sys.modules)\n")
    assert subprocess.run([sys.executable, "-c", before], capture_output=True, text=True,
                          check=True).stdout.split() == ["False"]
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.split() == ["True", "True"]
