"""Datasets of the benchmarks: generated once, cached on disk, keyed by their parameters.

Everything here is deterministic: the same parameters give the same files, so a cache
folder can be reused across runs of the asv suite and of ``compare.py``. A set is
written into a temporary folder and renamed into place when complete, so an
interrupted run never leaves a half-written set behind under the final name.

The cache folder is ``$IDIGDASK_BENCH_CACHE`` or ``~/.cache/idigdask-bench``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

#: Nominal size of a full-size herbarium sheet scan (width, height).
FULL_SIZE = (3000, 4500)
#: iDigBio's "webview" derivative is 600 px wide.
WEB_SIZE = (600, 900)


def cache_root() -> Path:
    """The folder that holds every cached dataset (created if missing)."""
    root = Path(os.environ.get("IDIGDASK_BENCH_CACHE")
                or Path.home() / ".cache" / "idigdask-bench").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _base(root: str | os.PathLike | None) -> Path:
    """The cache folder to use: ``root`` (created if missing) or :func:`cache_root`."""
    if root is None:
        return cache_root()
    base = Path(root).expanduser()
    base.mkdir(parents=True, exist_ok=True)
    return base


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished set into place; another process may have won the race."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not (final / "done.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class SheetSet:
    """A folder of synthetic sheets (``images/*.jpg``) and what is known about them.

    Attributes
    ----------
    folder : str
        The set's folder; the images are under ``images/``.
    paths : list of str
        Absolute paths of the JPEG files, in index order.
    nbytes : int
        Total size of the files in bytes.
    size : tuple of int
        Nominal (width, height).
    """

    folder: str
    paths: list[str]
    nbytes: int
    size: tuple[int, int]

    def relpaths(self, root: str | os.PathLike) -> list[str]:
        """Paths relative to ``root`` (for :meth:`MediaServer.url_for`), POSIX style."""
        return [Path(p).relative_to(root).as_posix() for p in self.paths]

    def read_bytes(self) -> list[bytes]:
        """The files' contents, in index order."""
        return [Path(p).read_bytes() for p in self.paths]


def sheet_set(n: int, size: Sequence[int] = WEB_SIZE, *, seed: int = 7, quality: int = 90,
              root: str | os.PathLike | None = None) -> SheetSet:
    """Return a cached set of ``n`` synthetic herbarium sheets, writing it if needed.

    Parameters
    ----------
    n : int
        Number of sheets.
    size : (int, int)
        Nominal width and height (about 40% of the sheets are slightly smaller).
    seed : int
        Seed of the set.
    quality : int
        JPEG quality.
    root : path, optional
        Cache folder (default :func:`cache_root`).

    Returns
    -------
    SheetSet
    """
    from idigdask.synthetic import make_sheets

    width, height = (int(v) for v in size)
    base = _base(root)
    final = base / f"sheets-{width}x{height}-q{quality}-s{seed}-n{n}"
    if not (final / "done.json").exists():
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-sheets-", dir=base))
        made = make_sheets(tmp, n, size=(width, height), seed=seed, quality=quality,
                           stained_fraction=0.5)
        names = [Path(p).name for p in made.paths]
        (tmp / "done.json").write_text(json.dumps({"names": names}))
        _publish(tmp, final)
    names = json.loads((final / "done.json").read_text())["names"]
    paths = [str(final / "images" / name) for name in names]
    return SheetSet(str(final), paths, sum(os.path.getsize(p) for p in paths), (width, height))


def write_url_csv(path: str | os.PathLike, urls: Sequence[str]) -> str:
    """Write a one-column CSV (``url``) of URLs, the input every tool reads."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("url\n")
        for url in urls:
            fh.write(f"{url}\n")
    return str(path)


# --------------------------------------------------------------------------- catalogs

#: Provider-record terms of the generated GUODA dump; most are null in any one row, as
#: in the real dump (about 100 terms, a handful filled per provider).
GUODA_DATA_KEYS = (
    "ac:accessURI", "ac:bestQualityAccessURI", "ac:goodQualityAccessURI",
    "ac:thumbnailAccessURI", "ac:hashFunction", "ac:hashValue", "ac:licenseLogoURL",
    "ac:subtype", "ac:variant", "ac:taxonCoverage", "ac:digitizationDate", "coreid",
    "dc:format", "dcterms:format", "dc:type", "dc:rights", "dcterms:identifier",
    "dcterms:title", "dcterms:rights", "dcterms:license", "dwc:scientificName",
    "dwc:family", "dwc:catalogNumber", "dwc:institutionCode", "dwc:collectionCode",
    "dwc:country", "dwc:recordedBy", "exif:PixelXDimension", "exif:PixelYDimension",
    "xmpRights:WebStatement", "xmpRights:Owner", "Iptc4xmpExt:CountryCode",
    "Iptc4xmpExt:LocationCreated", "photoshop:Credit", "xmp:CreateDate", "xmp:Rating",
)

_FAMILIES = ("Lycopodiaceae", "Selaginellaceae", "Dryopteridaceae", "Asteraceae", "Fagaceae")


def _guoda_row_group(start: int, n: int, url_base: str = "https://media.example.org/fullsize/"):
    """One row group of a synthetic GUODA media dump (vectorised, no per-row Python)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    idx = np.arange(start, start + n)
    hexes = pa.array([f"{i:012x}" for i in idx])
    uuid = pc.binary_join_element_wise("5b1f0e2c-6a43-4b7e-9d0a-", hexes, "")
    url = pc.binary_join_element_wise(url_base, hexes, ".jpg", "")
    string = pa.string()
    # about 1% of rows lack iDigBio's cleaned accessuri (the provider's value is used),
    # 1% are sounds and 0.5% have no URI at all, so every catalog code path is taken
    no_top = (idx % 100) == 3
    sound = (idx % 100) == 7
    no_uri = (idx % 200) == 11
    accessuri = pc.if_else(pa.array(no_top | no_uri), pa.nulls(n, string), url)
    provider_uri = pc.if_else(pa.array(no_uri), pa.nulls(n, string), url)
    families = pa.array(np.asarray(_FAMILIES, dtype=object)[idx % len(_FAMILIES)], string)
    filled = {
        "ac:accessURI": provider_uri,
        "ac:bestQualityAccessURI": provider_uri,
        "dcterms:format": pa.array(["image/jpeg"] * n, string),
        "dc:type": pa.array(["StillImage"] * n, string),
        "dwc:family": families,
        "dwc:catalogNumber": pc.binary_join_element_wise("BENCH-", hexes, ""),
        "dwc:institutionCode": pa.array(["BENCH"] * n, string),
        "exif:PixelXDimension": pa.array(["3000"] * n, string),
        "exif:PixelYDimension": pa.array(["4500"] * n, string),
        "xmpRights:WebStatement": pa.array(
            ["https://creativecommons.org/publicdomain/zero/1.0/"] * n, string),
    }
    data = pa.StructArray.from_arrays(
        [filled.get(k, pa.nulls(n, string)) for k in GUODA_DATA_KEYS], names=list(GUODA_DATA_KEYS))
    ts = pa.array(np.datetime64("2017-06-01T00:00:00", "us") + idx.astype("timedelta64[s]"),
                  pa.timestamp("us", tz="UTC"))
    return pa.table({
        "accessuri": accessuri,
        "data": data,
        "datemodified": ts,
        "dqs": pa.array((idx % 97) / 97.0),
        "etag": pc.binary_join_element_wise("etag-", hexes, ""),
        "format": pa.array(["image/jpeg"] * n, string),
        "hasSpecimen": pa.array(np.ones(n, bool)),
        "licenselogourl": pa.nulls(n, string),
        "mediatype": pc.if_else(pa.array(sound), pa.array(["sounds"] * n, string),
                                pa.array(["images"] * n, string)),
        "modified": ts,
        "recordset": pa.array(["a7f0c4a2-54c4-4c43-9f7b-2d1c0e3f7a11"] * n, string),
        "rights": pa.array(["CC0"] * n, string),
        "tag": pa.nulls(n, string),
        "type": pa.array(["mediarecords"] * n, string),
        "uuid": uuid,
        "version": pa.array(np.ones(n, np.int64)),
        "webstatement": pa.nulls(n, string),
        "xpixels": pa.array(np.full(n, 3000, np.int64)),
        "ypixels": pa.array(np.full(n, 4500, np.int64)),
    })


def guoda_parquet(n_rows: int = 1_000_000, *, row_group: int = 100_000,
                  root: str | os.PathLike | None = None,
                  url_base: str = "https://media.example.org/fullsize/") -> str:
    """Return a cached GUODA-schema media parquet of ``n_rows`` rows, writing it if needed.

    The ``data`` column is a struct whose field names contain ``:`` (the provider's
    namespaced terms), as in the GUODA dump; see ``GUODA_DATA_KEYS``. Media URLs are
    ``url_base`` followed by the row's number in hex and ``.jpg``.
    """
    import hashlib

    import pyarrow.parquet as pq

    base = _base(root)
    tag = "" if url_base == "https://media.example.org/fullsize/" else \
        "-" + hashlib.sha256(url_base.encode()).hexdigest()[:8]
    final = base / f"guoda-{n_rows}-rg{row_group}{tag}.parquet"
    if final.exists():
        return str(final)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-guoda-", suffix=".parquet", dir=base)
    os.close(fd)
    writer = None
    try:
        for start in range(0, n_rows, row_group):
            table = _guoda_row_group(start, min(row_group, n_rows - start), url_base)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="snappy")
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, final)
    return str(final)


# --------------------------------------------------------------------------- stores

def image_store(n: int = 256, *, size: int = 256, chunk_size: int = 64, seed: int = 3,
                root: str | os.PathLike | None = None) -> str:
    """Return a cached image store of ``n`` labelled images, written in the store layout.

    The pixels are decoded synthetic webview sheets (tiled to ``n``), so the chunks
    compress as real sheets do; labels alternate 0/1 and every image is a specimen of its own.
    """
    import xarray as xr

    base = _base(root)
    final = base / f"store-n{n}-s{size}-c{chunk_size}-seed{seed}.zarr"
    marker = final.with_name(final.name + ".done")  # outside the store: Zarr lists its files
    if marker.exists():
        return str(final)
    images = sheet_pixels(min(n, 32), size, seed=seed)  # tiled: generating is the slow part
    images = np.concatenate([images] * -(-n // len(images)))[:n]
    ids = np.array([f"bench-{seed}-{i:07d}" for i in range(n)], dtype=object)
    ds = xr.Dataset(
        {"images": (("image", "y", "x", "channel"), images)},
        coords={
            "media_uuid": ("image", ids),
            "record_uuid": ("image", np.array([f"rec-{i:07d}" for i in range(n)], dtype=object)),
            "label": ("image", (np.arange(n) % 2).astype(np.int64)),
        },
    )
    flat = images.reshape(-1, 3)
    ds.attrs.update(size=size, resize_mode="pad", chunk_size=chunk_size, images=n,
                    channel_mean=[float(v) for v in flat.mean(0)],
                    channel_std=[float(v) for v in flat.std(0)])
    ds["images"].encoding["chunks"] = (chunk_size, size, size, 3)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-store-", dir=base)) / "store.zarr"
    ds.to_zarr(str(tmp), mode="w", consolidated=False, zarr_format=3)
    if not marker.exists():
        shutil.rmtree(final, ignore_errors=True)  # a set left by an interrupted run
        os.replace(tmp, final)
        marker.write_text("{}")
    shutil.rmtree(tmp.parent, ignore_errors=True)
    return str(final)


def sheet_pixels(n: int, size: int = 256, *, seed: int = 3) -> np.ndarray:
    """``n`` decoded synthetic webview sheets as ``(n, size, size, 3)`` uint8."""
    from idigdask.decode import decode_image

    sheets = sheet_set(n, WEB_SIZE, seed=seed)
    return np.stack([decode_image(b, size).pixels for b in sheets.read_bytes()])


# --------------------------------------------------------------------------- serving

_SERVE = """
import sys
from idigdask.testing.media_server import MediaServer
with MediaServer(sys.argv[1]) as server:
    print(server.url, flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
"""


class ServedFolder:
    """A :class:`~idigdask.testing.media_server.MediaServer` over ``root`` in a child process.

    A process of its own keeps the server's threads off the interpreter (and the GIL)
    of whatever is being measured, and out of its memory figures.

    Examples
    --------
    >>> with ServedFolder(folder) as served:          # doctest: +SKIP
    ...     served.url_for("images/x.jpg")
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self._proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(self.root)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.close()
            raise RuntimeError(f"the media server did not start (it printed {line!r})")
        self.url = line
        self.pid = self._proc.pid

    def url_for(self, path: str | os.PathLike) -> str:
        """URL of a file under ``root`` (absolute path or relative to ``root``)."""
        from urllib.parse import quote

        rel = Path(path)
        if rel.is_absolute():
            rel = rel.resolve().relative_to(self.root)
        return f"{self.url}/{quote(rel.as_posix())}"

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> "ServedFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- memory

class PeakTreeRSS:
    """Poll the summed RSS of a process and all its descendants; keep the peak.

    ``peak`` is the largest sum seen, ``root_peak`` the largest RSS of the root alone.

    Forked workers share pages with their parent, so the sum over-counts what the
    machine really spends; it is the figure a batch scheduler enforces, and the same
    rule applies to every tool measured.

    Parameters
    ----------
    pid : int, optional
        The root process (default: this one).
    interval : float
        Seconds between polls.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.05):
        import threading

        import psutil

        self._root = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.peak = 0
        self.root_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="peak-rss", daemon=True)

    def sample(self) -> int:
        """The current summed RSS in bytes (processes that vanish meanwhile count 0)."""
        import psutil

        total = 0
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total += rss
            if proc is self._root:
                self.root_peak = max(self.root_peak, rss)
        return total

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def start(self) -> "PeakTreeRSS":
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop polling; return the peak in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak

    def __enter__(self) -> "PeakTreeRSS":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- clusters

def start_cluster(workers: int, processes: bool = True):
    """A LocalCluster as idigdask starts one, and its client: ``(cluster, client)``.

    ``processes=False`` runs the workers as threads of this process (in-process
    transport), which starts in a fraction of the time: for quick checks only.
    """
    from distributed import Client, LocalCluster

    from idigdask.cluster import local_cluster_kwargs

    kwargs = local_cluster_kwargs(workers)
    if not processes:  # workers without nannies: the in-process cluster's worker class
        kwargs.update(processes=False, worker_class=local_cluster_kwargs()["worker_class"])
        kwargs.pop("host", None)  # the in-process transport has no host to bind
    cluster = LocalCluster(**kwargs)
    return cluster, Client(cluster)
