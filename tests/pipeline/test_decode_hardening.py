"""Decode hardening (issue 10, items 12-15): orientation once, JPEG header junk, load
errors surfacing, bounded memory. Every fixture is made here with Pillow and numpy."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

import idigdask.decode as decode_module
from idigdask.decode import decode_bytes, decode_image, to_rgb
from idigdask.errors import MediaError, UserError

from imagecases import (ICC_1_OF_1, SHORT_APP14, break_idat, build_cases, jpeg_drop, jpeg_insert,
                        oriented_file, png_build, png_chunks, quadrants, scale_high_depth_reference, segment)

SIZE = 64


def _save(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _pillow_reference(data: bytes, size: int = SIZE) -> np.ndarray:
    """Pillow's own rendering: full decode, exif_transpose, RGB on white, Lanczos pad."""
    with Image.open(io.BytesIO(data)) as img:
        img = ImageOps.exif_transpose(img)
        if img.has_transparency_data:
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        img = img.convert("RGB")
    scale = size / max(img.size)
    small = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                       Image.Resampling.LANCZOS)
    out = Image.new("RGB", (size, size), (255, 255, 255))
    out.paste(small, ((size - small.width) // 2, (size - small.height) // 2))
    return np.asarray(out)


def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


# --------------------------------------------------------------------------- 12: orientation

ENCODINGS = {
    "jpeg": ("JPEG", {"quality": 95}),
    "tiff_raw": ("TIFF", {}),
    "tiff_lzw": ("TIFF", {"compression": "tiff_lzw"}),
    "tiff_deflate": ("TIFF", {"compression": "tiff_deflate"}),
    "tiff_jpeg": ("TIFF", {"compression": "jpeg"}),
    "png_exif": ("PNG", {}),
    "webp_exif": ("WEBP", {"lossless": True}),
}


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_orientation_is_applied_exactly_once(encoding, orientation):
    """Every orientation of every encoding shows what exif_transpose shows, at its size."""
    fmt, params = ENCODINGS[encoding]
    upright = Image.fromarray(quadrants(300, 200))
    data = oriented_file(upright, orientation, fmt, **params)
    with Image.open(io.BytesIO(data)) as img:
        displayed = ImageOps.exif_transpose(img).size
    out = decode_image(data, SIZE)
    assert displayed == (300, 200)
    assert (out.source_width, out.source_height) == displayed
    assert _mean_diff(out.pixels, _pillow_reference(data)) <= 3.0
    assert _mean_diff(out.pixels, _pillow_reference(_save(upright, "PNG"))) <= 3.0


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_source_size_is_the_displayed_size_also_at_reduced_scale(orientation):
    """A large JPEG is decoded at 1/8 scale; its source size is the full displayed one."""
    upright = Image.fromarray(quadrants(1600, 1000))
    out = decode_image(oriented_file(upright, orientation, "JPEG", quality=90), SIZE)
    assert (out.source_width, out.source_height) == (1600, 1000)


def _smooth_picture(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    wave = 128 + 100 * np.sin(x / 9.0) * np.cos(y / 7.0)
    return Image.fromarray(np.stack([x * 255 // width, y * 255 // height, wave], -1).astype(np.uint8))


@pytest.mark.parametrize("resize_mode", ["pad", "crop", "stretch"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_jpeg_lands_where_a_full_decode_does(orientation, resize_mode):
    """501x453 at 1/4 scale is 126x114 pixels holding 125.25x113.25 of picture; the
    rounded-up slack, wherever the orientation puts it, must not shift the output."""
    data = oriented_file(_smooth_picture(501, 453), orientation, "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as img:
        full = decode_module.resize(ImageOps.exif_transpose(img).convert("RGB"), 96, resize_mode)
    got = decode_image(data, 96, resize_mode=resize_mode).pixels
    assert _mean_diff(got, full) <= 1.0


# --------------------------------------------------------------------------- 13: JPEG header junk

_QUAD = Image.fromarray(quadrants())
_BASELINE = _save(_QUAD, "JPEG", quality=95)
_NO_JFIF = jpeg_drop(_BASELINE, 0xE0)

JUNK_CASES = {
    "junk_before_dqt": (jpeg_insert(_BASELINE, 0xDB, b"\x00junk"), ("jpeg_extraneous_bytes",)),
    "stuffed_zero_before_dqt": (jpeg_insert(_BASELINE, 0xDB, b"\xff\x00\x00\x02"), ("jpeg_extraneous_bytes",)),
    "junk_before_sof": (jpeg_insert(_BASELINE, 0xC0, b"\x12\x34"), ("jpeg_extraneous_bytes",)),
    "icc_repeated_after_sof": (jpeg_insert(jpeg_insert(_BASELINE, 0xDB, ICC_1_OF_1), 0xC0, ICC_1_OF_1, after=True),
                               ("jpeg_bad_icc",)),
    "icc_numbered_2_of_1": (jpeg_insert(_BASELINE, 0xDB, segment(0xE2, b"ICC_PROFILE\x00\x02\x01data")),
                            ("jpeg_bad_icc",)),
    "app14_one_byte_short": (jpeg_insert(_BASELINE, 0xDB, SHORT_APP14), ("jpeg_bad_app14", "jpeg_extraneous_bytes")),
    "app14_unknown_transform": (jpeg_insert(_NO_JFIF, 0xDB, segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x07")),
                                ("jpeg_bad_app14",)),
    "jfif_version_9": (jpeg_insert(_NO_JFIF, 0xDB, segment(0xE0, b"JFIF\x00\x09\x01\x00\x00\x01\x00\x01\x00\x00")),
                       ("jpeg_bad_jfif",)),
    "app1_length_short_of_its_body": (jpeg_insert(_BASELINE, 0xDB, segment(0xE1, b"Exif\x00\x00" + b"\x11" * 120,
                                                                           length=40)),
                                      ("jpeg_extraneous_bytes",)),
    "comment_length_short_of_its_body": (jpeg_insert(_BASELINE, 0xC4, segment(0xFE, b"scanner v1.0 " * 9, length=9)),
                                         ("jpeg_extraneous_bytes",)),
    "junk_before_end_marker": (_BASELINE[:-2] + b"junk!\xff\xd9", ("jpeg_extraneous_bytes",)),
}


@pytest.mark.parametrize("name", sorted(JUNK_CASES))
def test_jpeg_header_junk_decodes_with_a_warning(name):
    data, warnings = JUNK_CASES[name]
    Image.open(io.BytesIO(data)).load()  # Pillow (and browsers) show it
    out = decode_image(data, SIZE)
    assert out.warnings == warnings
    assert (out.source_width, out.source_height, out.format) == (300, 200, "JPEG")
    assert _mean_diff(out.pixels, _pillow_reference(data)) <= 3.0


def test_cmyk_jpeg_with_header_junk_decodes_with_a_warning():
    data = jpeg_insert(_save(_QUAD.convert("CMYK"), "JPEG", quality=95), 0xDB, b"\x00junk")
    out = decode_image(data, SIZE)
    assert out.warnings == ("jpeg_extraneous_bytes",)
    assert _mean_diff(out.pixels, _pillow_reference(data)) <= 3.0


def test_clean_jpeg_has_no_warnings():
    assert decode_image(_BASELINE, SIZE).warnings == ()


def test_header_junk_does_not_hide_a_truncated_scan():
    junk = JUNK_CASES["junk_before_dqt"][0]
    for cut in (junk[: len(junk) // 2], junk[: len(junk) * 2 // 3] + b"\xff\xd9"):
        with pytest.raises(MediaError) as info:
            decode_image(cut, SIZE)
        assert info.value.reason == "truncated"


def test_header_junk_does_not_hide_a_corrupt_scan():
    junk = bytearray(JUNK_CASES["icc_repeated_after_sof"][0])
    mid = len(junk) // 2
    junk[mid:mid + 600] = bytes(600)
    with pytest.raises(MediaError) as info:
        decode_image(bytes(junk), SIZE)
    assert info.value.reason == "corrupt"


def test_a_zero_segment_length_is_corrupt():
    data = jpeg_insert(_BASELINE, 0xDB, b"\xff\xe1\x00\x00")
    with pytest.raises(MediaError) as info:
        decode_image(data, SIZE)
    assert info.value.reason in ("corrupt", "not_an_image")


# --------------------------------------------------------------------------- 14: load errors surface

_NOISY = Image.fromarray(np.random.default_rng(11).integers(0, 256, (120, 160, 3), dtype=np.uint8))
_APNG = _save(_NOISY, "PNG", save_all=True, append_images=[Image.new("RGB", _NOISY.size, "blue")])


def _without(chunks: list[tuple[bytes, bytes]], kind: bytes) -> list[tuple[bytes, bytes]]:
    return [(k, b) for k, b in chunks if k != kind]


LOAD_ERRORS = {
    # getexif() on a PNG loads it; the deflate error raised there was taken for a bad EXIF
    "png_deflate_broken_crc_valid": break_idat(_save(_NOISY, "PNG")),
    "apng_default_image_broken": break_idat(_APNG),
    "apng_frame_data_without_frame_control": png_build(_without(png_chunks(_APNG), b"fcTL")),
}


@pytest.mark.parametrize("name", sorted(LOAD_ERRORS))
def test_errors_of_an_implicit_load_surface(name):
    data = LOAD_ERRORS[name]
    with pytest.raises(Exception):  # Pillow itself cannot show it
        Image.open(io.BytesIO(data)).load()
    with pytest.raises(MediaError) as info:
        decode_image(data, SIZE)
    assert info.value.reason == "corrupt"
    assert info.value.message


def test_broken_second_tiff_page_is_a_media_error():
    """Pillow checks for a next page while loading the first; a broken one surfaces."""
    data = bytearray(_save(_NOISY, "TIFF", save_all=True, append_images=[_NOISY]))
    second_ifd = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[second_ifd:second_ifd + 2])[0]
    next_at = second_ifd + 2 + 12 * entries
    data[next_at:next_at + 4] = struct.pack("<I", len(data) + 10_000)  # next page past the end
    try:
        Image.open(io.BytesIO(bytes(data))).load()
        pillow_ok = True
    except Exception:  # noqa: BLE001
        pillow_ok = False
    try:
        out = decode_image(bytes(data), SIZE)
    except MediaError as exc:
        assert exc.reason and not pillow_ok
    else:
        assert pillow_ok and _mean_diff(out.pixels, _pillow_reference(bytes(data))) <= 2.0


def test_unreadable_exif_is_a_warning_not_silence():
    data = _save(_QUAD, "PNG", exif=b"Exif\x00\x00not a TIFF header")
    with pytest.raises(Exception):
        Image.open(io.BytesIO(data)).getexif()
    out = decode_image(data, SIZE)
    assert out.warnings == ("exif_unreadable",)
    assert _mean_diff(out.pixels, _pillow_reference(_save(_QUAD, "PNG"))) <= 1.0


@pytest.mark.parametrize("error", [RuntimeError("x"), struct.error("x"), AssertionError("x"),
                                   RecursionError("x"), KeyError("x"), ZeroDivisionError("x")])
def test_no_other_exception_type_leaves_decode_image(monkeypatch, error):
    def broken_load(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
    with pytest.raises(MediaError) as info:
        decode_image(_save(_QUAD, "PNG"), SIZE)
    assert info.value.reason == "corrupt"


def _mutations(data: bytes, rng: np.random.Generator, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        buf = bytearray(data)
        for at in rng.integers(0, len(buf), rng.integers(1, 8)):
            buf[at] = int(rng.integers(0, 256))
        out.append(bytes(buf[: int(rng.integers(len(buf) // 3, len(buf) + 1))]))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on the broken EXIF it skips
def test_damaged_files_end_as_pixels_or_media_errors():
    """Bytes flipped and tails cut in every accepted format: a result or a MediaError."""
    rng = np.random.default_rng(2024)
    sources = [data for name, data in build_cases().items()
               if name.rsplit(".", 1)[-1] in ("jpg", "png", "gif", "tiff", "webp", "bmp")
               and 100 < len(data) < 200_000]
    apng_like = [png_build([(k, bytes(rng.integers(0, 256, len(b), dtype=np.uint8)) if k == b"IDAT" else b)
                            for k, b in png_chunks(_APNG)])]
    reasons = set()
    for data in [m for src in sources for m in _mutations(src, rng, 12)] + apng_like:
        try:
            out = decode_image(data, 32)
        except MediaError as exc:
            assert exc.reason and exc.message
            reasons.add(exc.reason)
        else:
            assert out.pixels.shape == (32, 32, 3)
    assert {"corrupt", "truncated"} <= reasons


# --------------------------------------------------------------------------- 15: memory


def _high_depth_arrays() -> dict[str, tuple[np.ndarray, str]]:
    rng = np.random.default_rng(8)
    shape = (1100, 1500)  # several conversion strips
    nan_float = rng.normal(50, 400, shape).astype(np.float32)
    nan_float[::97, ::13] = np.nan
    nan_float[5, 5], nan_float[6, 6] = np.inf, -np.inf
    return {
        "float_unit": (rng.random(shape, dtype=np.float32), "F"),
        "float_wide_nan_inf": (nan_float, "F"),
        "float_constant": (np.full(shape, 1234.5, np.float32), "F"),
        "int32_16bit": (rng.integers(0, 65536, shape).astype(np.int32), "I"),
        "int32_negative": (rng.integers(-70000, 90000, shape).astype(np.int32), "I"),
        "uint16": (rng.integers(0, 65536, shape).astype(np.uint16), "I;16"),
    }


@pytest.mark.parametrize("name", sorted(_high_depth_arrays()))
def test_high_depth_conversion_equals_the_float64_reference(name):
    arr, mode = _high_depth_arrays()[name]
    img = Image.fromarray(arr)
    assert img.mode == mode
    got = np.asarray(to_rgb(img))
    assert np.array_equal(got[..., 0], scale_high_depth_reference(arr, mode))
    assert np.array_equal(got[..., 0], got[..., 2])


_MEASURE = textwrap.dedent("""
    import io, json, re, sys
    import numpy as np
    from PIL import Image
    from idigdask.decode import decode_bytes, decode_image

    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

    rng = np.random.default_rng(0)
    n = int(sys.argv[1])
    rgb = Image.fromarray(rng.integers(0, 256, (n, n, 3), dtype=np.uint8))
    cases = {
        "F": (Image.fromarray(rng.random((n, n), dtype=np.float32)), "TIFF", {}),
        "I;16": (Image.fromarray(rng.integers(0, 65536, (n, n), dtype=np.uint16)), "PNG", {}),
        "RGBA": (rgb.convert("RGBA"), "PNG", {"compress_level": 1}),
        "P+transparency": (rgb.convert("P"), "PNG", {"transparency": 0, "compress_level": 1}),
        "CMYK": (rgb.convert("CMYK"), "TIFF", {}),
    }
    names = sys.argv[2].split(",")
    files = {}
    for name in names:
        img, fmt, params = cases[name]
        buf = io.BytesIO()
        img.save(buf, fmt, **params)
        files[name] = buf.getvalue()
    del rgb, cases, img
    out = {}
    for name in names:
        for mode in ("pad", "crop"):
            data = files[name]
            estimate = decode_bytes(Image.open(io.BytesIO(data)), 256, mode)
            open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM)
            base = status("VmRSS")
            decode_image(data, 256, resize_mode=mode)
            out[name + "/" + mode] = {"peak": status("VmHWM") - base, "estimate": estimate}
    print(json.dumps(out))
""")


def _measure(n: int, names: list[str]) -> dict[str, dict[str, int]]:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pytest.skip("peak memory is read from /proc/self/status after a clear_refs reset (Linux)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(n), ",".join(names)],
                          capture_output=True, text=True, timeout=240, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_float_tiff_of_5000_squared_decodes_in_bounded_memory():
    """The float64 copies cost about 40 bytes a pixel (1 GiB here); now about 6."""
    peaks = _measure(5000, ["F"])
    for key, got in peaks.items():
        assert got["peak"] < 10 * 5000 * 5000, (key, got)
        assert got["peak"] <= got["estimate"], (key, got)


def test_decode_bytes_bounds_the_measured_peak():
    for key, got in _measure(2000, ["I;16", "RGBA", "P+transparency", "CMYK"]).items():
        assert got["peak"] <= got["estimate"], (key, got)


def test_too_large_is_refused_from_the_header(monkeypatch):
    data = _save(Image.fromarray(np.zeros((1000, 1500), np.float32)), "TIFF")
    need = decode_bytes(Image.open(io.BytesIO(data)), SIZE)
    assert need >= 1000 * 1500 * 5

    def no_load(self):
        raise AssertionError("decoded although over the limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    with pytest.raises(MediaError) as info:
        decode_image(data, SIZE, max_decode_bytes=need - 1)
    assert info.value.reason == "too_large"
    assert "MiB" in info.value.message
    monkeypatch.undo()
    decode_image(data, SIZE, max_decode_bytes=need)


def test_reduced_jpeg_is_judged_at_its_decoded_scale():
    """A 1/8-scale JPEG decode needs a 64th of the pixels: a big JPEG fits a small limit."""
    data = _save(Image.new("RGB", (4000, 3000), "red"), "JPEG", quality=80)
    need = decode_bytes(Image.open(io.BytesIO(data)), SIZE)
    assert need - decode_module._WORK_BYTES == 500 * 375 * 7  # simplejpeg's RGB array, Pillow's copy
    decode_image(data, SIZE, max_decode_bytes=need)


@pytest.mark.parametrize("bad", [0, -5, True, 1.5, "1GB"])
def test_bad_memory_limit_is_a_user_error(bad):
    with pytest.raises(UserError, match="max_decode_bytes"):
        decode_image(_BASELINE, SIZE, max_decode_bytes=bad)


def test_memory_error_inside_decode_is_a_media_error(monkeypatch):
    def exhausted(img, background):
        raise MemoryError()

    monkeypatch.setattr(decode_module, "_to_8bit", exhausted)
    with pytest.raises(MediaError) as info:
        decode_image(_save(_QUAD, "PNG"), SIZE)
    assert info.value.reason == "out_of_memory"


_OOM = textwrap.dedent("""
    import io, re, resource, sys
    import numpy as np
    from PIL import Image
    from idigdask.decode import decode_image
    from idigdask.errors import MediaError

    buf = io.BytesIO()
    Image.fromarray(np.zeros((4000, 4000), np.float32)).save(buf, "TIFF")
    big, small = buf.getvalue(), buf.getvalue()[:0]
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), "red").save(buf, "PNG")
    small = buf.getvalue()
    vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + (40 << 20), resource.RLIM_INFINITY))
    try:
        decode_image(big, 64, max_decode_bytes=1 << 40)
        print("decoded")
    except MediaError as exc:
        print(exc.reason)
    print(decode_image(small, 64).pixels.shape)
""")


def test_real_memory_exhaustion_fails_one_record_and_the_next_decodes():
    if not sys.platform.startswith("linux"):
        pytest.skip("address-space limits and /proc/self/status are Linux's")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _OOM], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["out_of_memory", "(64,", "64,", "3)"], done.stdout
