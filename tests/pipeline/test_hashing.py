"""Checksums, perceptual hashes and the near-duplicate index."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from idigdask.hashing import (NearDuplicateIndex, normalise_hash_function, phash_hex, phash_int,
                              sha256_hex, verify_hash)
from idigdask.synthetic import render_sheet

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
ABC_MD5 = "900150983cd24fb0d6963f7d28e17f72"
ABC_SHA1 = "a9993e364706816aba3e25717850c26c9cd0d89d"


def test_sha256_known_value():
    assert sha256_hex(b"abc") == ABC_SHA256


@pytest.mark.parametrize("function,value", [
    ("SHA-256", ABC_SHA256), ("sha256", ABC_SHA256.upper()), ("SHA256", ABC_SHA256),
    (" sha_256 ", ABC_SHA256), ("MD5", ABC_MD5), ("md5", ABC_MD5.upper()), ("SHA-1", ABC_SHA1),
    ("sha1", ABC_SHA1), (None, ABC_SHA256), ("", ABC_MD5),
])
def test_verify_hash_matches(function, value):
    assert verify_hash(b"abc", function, value) is True


def test_verify_hash_mismatch():
    assert verify_hash(b"abd", "SHA-256", ABC_SHA256) is False
    assert verify_hash(b"abc", "MD5", ABC_SHA1[:32]) is False


@pytest.mark.parametrize("function,value", [
    ("SHA-256", None), ("SHA-256", ""), ("SHA-256", "   "), (None, None),
    ("crc32", "352441c2"), ("whirlpool-ish", ABC_SHA256), (None, "not-a-hex-digest"), (None, "abc123"),
])
def test_verify_hash_unknown_is_none(function, value):
    assert verify_hash(b"abc", function, value) is None


def test_normalise_hash_function():
    assert normalise_hash_function("SHA-512") == "sha512"
    assert normalise_hash_function("http://example.org/terms#SHA-256") == "sha256"
    assert normalise_hash_function("bogus") is None


def _jpeg(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_phash_is_stable_and_survives_reencoding():
    sheet = render_sheet(3, size=(400, 600), stained=False)
    h = phash_hex(sheet)
    assert len(h) == 16 and int(h, 16) >= 0
    assert phash_hex(sheet) == h
    assert phash_hex(Image.fromarray(sheet)) == h
    recoded = np.asarray(Image.open(io.BytesIO(_jpeg(sheet, 60))).resize((256, 384)))
    assert bin(phash_int(h) ^ phash_int(phash_hex(recoded))).count("1") <= 4
    other = render_sheet(4, size=(400, 600), stained=False)
    assert bin(phash_int(h) ^ phash_int(phash_hex(other))).count("1") > 4


def test_phash_int_round_trip_and_range():
    assert phash_int("ffffffffffffffff") == 2 ** 64 - 1
    assert phash_int("00000000000000ff") == 255
    with pytest.raises(ValueError):
        phash_int("1" + "0" * 16)


def _brute_force(hashes: list[int], keys: list, query: int, d: int):
    for h, k in zip(hashes, keys):
        if (h ^ query).bit_count() <= d:
            return k
    return None


def _flip(rng: np.random.Generator, h: int, bits: int) -> int:
    for b in rng.choice(64, size=bits, replace=False):
        h ^= 1 << int(b)
    return h


@pytest.mark.parametrize("max_distance", [0, 1, 4, 7])
def test_near_duplicate_index_agrees_with_brute_force(max_distance):
    rng = np.random.default_rng(max_distance)
    high = rng.integers(0, 2 ** 63, 2000, dtype=np.int64)
    base = [int(a) * 2 + int(b) for a, b in zip(high, rng.integers(0, 2, 2000))]  # all 64 bits
    hashes, keys = [], []
    for i, h in enumerate(base):  # plant near neighbours of earlier entries among the randoms
        if i > 10 and rng.random() < 0.3:
            h = _flip(rng, hashes[int(rng.integers(len(hashes)))], int(rng.integers(0, 9)))
        hashes.append(h)
        keys.append(f"k{i}")
    index = NearDuplicateIndex(max_distance)
    for h, k in zip(hashes, keys):
        index.add(h, k)
    assert len(index) == len(hashes)
    queries = [_flip(rng, hashes[int(rng.integers(len(hashes)))], int(rng.integers(0, 10))) for _ in range(600)]
    queries += [int(x) for x in rng.integers(0, 2 ** 63, 200, dtype=np.int64)]
    found = 0
    for q in queries:
        expected = _brute_force(hashes, keys, q, max_distance)
        assert index.find(q) == expected
        found += expected is not None
    assert found > 50  # the planted neighbours were really exercised


def test_near_duplicate_index_returns_the_first_added():
    index = NearDuplicateIndex(3)
    index.add(0b1111, "first")
    index.add(0b1110, "second")
    index.add(0b0000, "third")
    assert index.find(0b1110) == "first"
    assert index.find(0b1000_0000_0000) == "third"
    assert index.find((1 << 63) | (1 << 40) | (1 << 20) | (1 << 10)) is None


def test_near_duplicate_index_exact_and_disabled():
    exact = NearDuplicateIndex(0)
    exact.add(42, "x")
    assert exact.find(42) == "x" and exact.find(43) is None
    off = NearDuplicateIndex(-1)
    off.add(42, "x")
    assert off.find(42) is None and len(off) == 0 and not off.enabled


def test_near_duplicate_index_rejects_out_of_range():
    index = NearDuplicateIndex()
    with pytest.raises(ValueError):
        index.add(-1, "neg")
    with pytest.raises(ValueError):
        index.find(2 ** 64)


def test_near_duplicate_index_grows_past_its_first_capacity():
    index = NearDuplicateIndex(4)
    for i in range(5000):
        index.add(i * 0x9E3779B97F4A7C15 % 2 ** 64, i)
    assert index.find(4999 * 0x9E3779B97F4A7C15 % 2 ** 64) == 4999
    assert index.find(17 * 0x9E3779B97F4A7C15 % 2 ** 64 ^ 0b101) == 17
