"""Content hashes: file checksums, perceptual hashes and a near-duplicate index.

* :func:`sha256_hex` and :func:`verify_hash` check a file against the checksum a media
  record declares (Audubon Core ``ac:hashFunction`` / ``ac:hashValue``).
* :func:`phash_hex` is a 64-bit perceptual hash (DCT pHash): re-encoded or resized
  copies of one image land within a few bits of each other.
* :class:`NearDuplicateIndex` finds, among millions of pHashes, the first one within a
  Hamming distance, exactly, by pigeonhole multi-index hashing.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from typing import Any, Hashable

import numpy as np
from PIL import Image

__all__ = ["sha256_hex", "phash_hex", "phash_int", "verify_hash", "normalise_hash_function",
           "NearDuplicateIndex"]

_HEX = re.compile(r"^[0-9a-f]+$")
#: Hash functions by their hex digest length, for records that give a value only.
_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
_MASK64 = (1 << 64) - 1


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 lower-case hex digits.

    Parameters
    ----------
    data : bytes
        The file's bytes, as fetched.

    Returns
    -------
    str
        The digest: 64 lower-case hex digits.

    Examples
    --------
    >>> sha256_hex(b"abc")
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    """
    return hashlib.sha256(data).hexdigest()


def normalise_hash_function(function: str | None) -> str | None:
    """Map a hash function as providers write it to a :mod:`hashlib` name.

    ``"SHA-256"``, ``"sha256"``, ``"SHA 256"`` -> ``"sha256"``; ``"MD5"`` -> ``"md5"``;
    ``"SHA-1"`` -> ``"sha1"``. Returns None for an empty or unknown function.
    """
    if not function:
        return None
    name = re.sub(r"[\s_\-]", "", str(function).strip().lower())
    name = name.rsplit("/", 1)[-1].rsplit("#", 1)[-1]  # a term URI: keep its last part
    if name in ("sha2", "sha2256"):
        name = "sha256"
    return name if name in hashlib.algorithms_guaranteed and not name.startswith("shake") else None


def verify_hash(data: bytes, function: str | None, value: str | None) -> bool | None:
    """Check ``data`` against a declared checksum.

    Parameters
    ----------
    data : bytes
        The file as fetched.
    function : str or None
        The declared hash function (``ac:hashFunction``), e.g. ``"SHA-256"`` or ``"MD5"``.
        When missing, it is inferred from the length of a hex ``value`` (32: MD5,
        40: SHA-1, 64: SHA-256, 128: SHA-512).
    value : str or None
        The declared digest in hex, compared case-insensitively.

    Returns
    -------
    bool or None
        True when the digest matches, False when it does not, None when the record
        gives no value or a function that cannot be checked.

    Examples
    --------
    >>> verify_hash(b"abc", "MD5", "900150983CD24FB0D6963F7D28E17F72")
    True
    """
    if value is None:
        return None
    digest = str(value).strip().lower()
    if not digest:
        return None
    name = normalise_hash_function(function)
    if name is None:
        if function or not _HEX.match(digest):
            return None  # an unknown function, or nothing to infer from
        name = _BY_LENGTH.get(len(digest))
        if name is None:
            return None
    return hashlib.new(name, data).hexdigest() == digest


def phash_hex(image: np.ndarray | Image.Image) -> str:
    """The 64-bit DCT perceptual hash of an image, as 16 hex digits.

    Parameters
    ----------
    image : numpy.ndarray or PIL.Image.Image
        A uint8 ``(h, w)`` or ``(h, w, 3)`` array, or any Pillow image.

    Returns
    -------
    str
        16 lower-case hex digits; :func:`phash_int` turns them into the integer that
        :class:`NearDuplicateIndex` takes.

    Examples
    --------
    A resized copy of an image has the same hash (or one a few bits away):

    >>> sheet = np.zeros((64, 64), np.uint8)
    >>> sheet[:32, :32] = sheet[32:, 32:] = 255
    >>> phash_hex(sheet)
    '8044001100440011'
    >>> phash_hex(Image.fromarray(sheet).resize((200, 150)))
    '8044001100440011'
    """
    import imagehash

    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image))
    return str(imagehash.phash(image, hash_size=8))


def phash_int(value: str) -> int:
    """A hex pHash as an unsigned 64-bit integer (for :class:`NearDuplicateIndex`).

    Parameters
    ----------
    value : str
        A pHash in hex, as :func:`phash_hex` writes it.

    Returns
    -------
    int
        The hash as a number between 0 and ``2**64 - 1``.

    Raises
    ------
    ValueError
        When ``value`` is not hex, or does not fit in 64 bits.

    Examples
    --------
    >>> phash_int("8044001100440011")
    9242512408290000913
    >>> phash_int("ffffffffffffffff") == 2**64 - 1
    True
    """
    number = int(value, 16)
    if not 0 <= number <= _MASK64:
        raise ValueError(f"pHash {value!r} does not fit in 64 bits")
    return number


class NearDuplicateIndex:
    """Incremental index of 64-bit hashes answering "a first-added one within distance d?".

    Exact multi-index hashing: the 64 bits are split into ``max_distance + 1`` blocks,
    so two hashes within ``max_distance`` bits agree exactly on at least one block
    (pigeonhole). Each block has a dict from block value to the positions that have
    it; candidates are verified with a vectorised popcount. Memory is about
    8 bytes per block per entry plus the keys.

    Parameters
    ----------
    max_distance : int, default 4
        Largest Hamming distance counted as a near duplicate; 0 means identical
        hashes only; a negative value disables the index (``find`` returns None).

    Examples
    --------
    >>> index = NearDuplicateIndex(2)
    >>> index.add(0b1011, "a")
    >>> index.find(0b0011), index.find(0b0100)
    ('a', None)
    """

    def __init__(self, max_distance: int = 4):
        self.max_distance = int(max_distance)
        self._keys: list[Any] = []
        self._hashes = np.empty(1024, dtype=np.uint64)
        n_blocks = max(1, min(64, self.max_distance + 1))
        edges = np.linspace(0, 64, n_blocks + 1).round().astype(int)
        self._blocks = [(int(lo), (1 << int(hi - lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:])]
        self._tables: list[dict[int, array]] = [{} for _ in self._blocks]

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def enabled(self) -> bool:
        """False when ``max_distance`` is negative."""
        return self.max_distance >= 0

    def add(self, phash: int, key: Hashable) -> None:
        """Add a hash with the key to report when a later hash is found near it."""
        if not self.enabled:
            return
        phash = self._check(phash)
        position = len(self._keys)
        if position == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.empty_like(self._hashes)])
        self._hashes[position] = phash
        self._keys.append(key)
        for table, (shift, mask) in zip(self._tables, self._blocks):
            bucket = table.get((phash >> shift) & mask)
            if bucket is None:
                table[(phash >> shift) & mask] = array("q", [position])
            else:
                bucket.append(position)

    def find(self, phash: int) -> Hashable | None:
        """The key of the first-added hash within ``max_distance`` of ``phash``, or None."""
        phash = self._check(phash)
        if not self.enabled or not self._keys:
            return None
        query = np.uint64(phash)
        best = len(self._keys)
        for table, (shift, mask) in zip(self._tables, self._blocks):
            bucket = table.get((phash >> shift) & mask)
            if bucket is None:
                continue
            if len(bucket) == 1:  # the common case: skip numpy's per-call overhead
                pos = bucket[0]
                if pos < best and (phash ^ int(self._hashes[pos])).bit_count() <= self.max_distance:
                    best = pos
                continue
            positions = np.frombuffer(bucket, dtype=np.int64)
            close = np.bitwise_count(self._hashes[positions] ^ query) <= self.max_distance
            hits = positions[close]
            if hits.size and hits[0] < best:  # buckets are in insertion order
                best = int(hits[0])
        return self._keys[best] if best < len(self._keys) else None

    @staticmethod
    def _check(phash: int) -> int:
        phash = int(phash)
        if not 0 <= phash <= _MASK64:
            raise ValueError(f"hash {phash} is not an unsigned 64-bit integer")
        return phash
