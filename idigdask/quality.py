"""The data-quality report of a store and its ledger, computed with Dask.

:func:`quality_report` answers a data manager's questions about a build: what became
of every catalog row (counts by status and reason), which hosts and which providers
(recordsets) fail and why, how large and how oblong the source images were, what each
image cost in bytes and seconds, which images are exact or near duplicates of which,
what the stored images of each label look like, and the channel statistics. It
writes an HTML page with its figures and a JSON file of every figure's numbers::

    OUT/
        index.html        the page
        quality.json      the numbers
        status.png  hosts.png  recordsets.png  source.png  cost.png
        duplicates.png  samples.png  channels.png

The ledger of a large build has millions of rows in thousands of parquet parts
(``STORE/ledger/part-RUN-WAVE.parquet``), so nothing here reads it whole on the
driver: :func:`ledger_dataframe` is a :mod:`dask.dataframe` over the parts, and
every figure is a reduction of small per-partition summaries. The only rows the
driver ever holds are those of the few duplicate clusters shown.
"""

from __future__ import annotations

import html
import json
import os
import posixpath
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import UserError
from .store import HISTOGRAM_KEY, LEDGER_COLUMNS, STATUSES, layout_of, stats_of_histogram

__all__ = ["ledger_dataframe", "ledger_parts", "quality_report", "quality_summary"]

#: Ledger columns the report reads (``message`` and ``warnings`` are left on disk).
REPORT_COLUMNS = ("row_key", "media_uuid", "access_uri", "status", "reason", "duplicate_of",
                  "nbytes", "seconds", "phash", "source_width", "source_height",
                  "image_index", "retired", "recordset")
#: Ledger parts read by one task: parts are small (one wave each), tasks should not be.
PARTS_PER_TASK = 32
#: Rows of the host and recordset tables and figures (the most failing first).
TOP = 20
#: Duplicate clusters shown side by side, of each kind (exact, near).
CLUSTERS = 4
#: Members of a duplicate cluster shown (the original first).
CLUSTER_MEMBERS = 4
#: Images shown of each label.
SAMPLES_PER_LABEL = 8

# Fixed histogram bins, so that per-partition histograms add up.
_BINS = {
    "long_side": np.geomspace(16, 65536, 49),       # px, the longer side of the source
    "aspect": np.geomspace(1 / 8, 8, 49),           # height / width of the source
    "nbytes": np.geomspace(100, 2**30, 49),         # bytes fetched per image
    "seconds": np.geomspace(1e-3, 1e3, 49),         # seconds per image
}
#: The host of a (redacted) URL: after the scheme and any user info, up to a port or path.
_HOST = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^/:?#]*)"


# ---------------------------------------------------------------------------------
# The ledger as a Dask DataFrame
# ---------------------------------------------------------------------------------
def _fs(store: str, storage_options: dict | None):
    from fsspec.core import url_to_fs

    return url_to_fs(str(store), **(storage_options or {}))


def ledger_parts(store: str, storage_options: dict | None = None) -> list[str]:
    """The committed ledger parts of a store, oldest first.

    Parameters
    ----------
    store : str
        The store's location (a local path or an fsspec URL).
    storage_options : dict, optional
        fsspec options for ``store``.

    Returns
    -------
    list of str
        Paths of the ``ledger/part-*.parquet`` files, in commit order (as the
        filesystem names them, without its protocol); empty before the first commit.

    Raises
    ------
    UserError
        If ``store`` is not an idigdask store.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> from idigdask.store import ImageStore
    >>> url = os.path.join(tempfile.mkdtemp(), "sheets.zarr")
    >>> ImageStore(url).create(size=4, chunk_size=2, label_kind=None, attrs={})
    >>> ledger_parts(url)
    []
    >>> ledger_parts("sheets.zarr")[-1]                                   # doctest: +SKIP
    '/data/sheets.zarr/ledger/part-000001-000003.parquet'
    """
    fs, path = _fs(store, storage_options)
    root = path.rstrip("/")
    if not fs.exists(posixpath.join(root, "zarr.json")):
        raise UserError(f"{store}: not an idigdask store (no zarr.json)")
    # names sort in commit order: part-RUN-WAVE with zero-padded numbers
    return sorted(fs.glob(posixpath.join(root, "ledger", "part-*.parquet")))


def _empty_part(columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    for name in ("nbytes", "source_width", "source_height", "image_index"):
        if name in frame:
            frame[name] = frame[name].astype("int64")
    if "seconds" in frame:
        frame["seconds"] = frame["seconds"].astype("float64")
    if "retired" in frame:
        frame["retired"] = frame["retired"].astype(bool)
    frame["_seq"] = pd.Series(dtype="int64")
    return frame


def _read_group(group: tuple[int, tuple[str, ...]], names: tuple[str, ...],
                storage_options: dict | None) -> pd.DataFrame:
    """The rows of a few consecutive parts; ``_seq`` orders every row of the ledger.

    Parts written by older versions lack some columns (``recordset``...): they read
    as missing, as :func:`idigdask.store.read_ledger` reads them.
    """
    import pyarrow.parquet as pq
    from fsspec.core import url_to_fs

    first, paths = group
    frames = []
    fs = None
    for offset, part in enumerate(paths):
        if fs is None:
            fs, _ = url_to_fs(part, **(storage_options or {}))
        with fs.open(part, "rb") as f:
            pf = pq.ParquetFile(f)
            present = [c for c in names if c in pf.schema_arrow.names]
            frame = pf.read(columns=present).to_pandas()
        for name in names:
            if name not in frame:
                frame[name] = False if name == "retired" else None
        frame = frame[list(names)]
        # a row's place in the ledger: later parts supersede earlier ones
        frame["_seq"] = ((first + offset) << 32) + np.arange(len(frame), dtype=np.int64)
        frames.append(frame)
    if not frames:
        return _empty_part(names)
    out = pd.concat(frames, ignore_index=True)
    return _typed(out)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column whatever the part (a column all missing reads as null)."""
    for name in ("nbytes", "source_width", "source_height", "image_index"):
        if name in frame:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").fillna(
                -1 if name == "image_index" else 0).astype("int64")
    if "seconds" in frame:
        frame["seconds"] = pd.to_numeric(frame["seconds"], errors="coerce").astype("float64")
    if "retired" in frame:
        frame["retired"] = frame["retired"].fillna(False).astype(bool)
    for name in frame.columns:
        if name not in ("nbytes", "source_width", "source_height", "image_index", "seconds",
                        "retired", "_seq"):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def _key_hashes(keys: pd.DataFrame) -> np.ndarray:
    """``(3, n)`` int64: two independent 64-bit hashes of each ``row_key``, and ``_seq``.

    128 bits of hash make two different keys of a ledger collide with a probability
    of about ``n**2 / 2**129`` (1e-26 for a million rows), so the keys themselves
    need never meet in one place.
    """
    from pandas.util import hash_pandas_object

    values = keys["row_key"].astype(object)
    first = hash_pandas_object(values, index=False).to_numpy()
    second = hash_pandas_object(values, index=False, hash_key="idigdask-ledger2").to_numpy()
    return np.stack([first.view(np.int64), second.view(np.int64),
                     keys["_seq"].to_numpy(np.int64)])


def _stale_seqs(*hashes: np.ndarray) -> np.ndarray:
    """The ``_seq`` of every row that a later row with the same key supersedes."""
    table = np.concatenate(hashes, axis=1) if hashes else np.zeros((3, 0), np.int64)
    order = np.lexsort((table[2], table[1], table[0]))  # by key hash, then commit order
    first, second, seq = table[0][order], table[1][order], table[2][order]
    # a row followed by one with the same key is superseded by it
    again = (first[:-1] == first[1:]) & (second[:-1] == second[1:])
    return np.sort(seq[:-1][again])


def _drop_stale(frame: pd.DataFrame, stale: np.ndarray, retired: bool) -> pd.DataFrame:
    keep = ~np.isin(frame["_seq"].to_numpy(), stale)
    if not retired:
        keep &= ~frame["retired"].to_numpy(bool)
    return frame[keep]


def ledger_dataframe(store: str, storage_options: dict | None = None, *,
                     columns: Sequence[str] | None = None, retired: bool = False,
                     parts_per_task: int = PARTS_PER_TASK):
    """The ledger of a store as a lazy :class:`dask.dataframe.DataFrame`.

    The same rows as :func:`idigdask.store.read_ledger` (the latest row of each key;
    without ``retired``, only the rows of the latest catalog), read by tasks of
    ``parts_per_task`` parts each, never on the driver. Finding the superseded rows
    takes one pass over the keys alone: each task hashes its keys, one task sorts
    the hashes (24 bytes a row) and names the rows a later one supersedes, and
    those are dropped from each partition as it is read.

    Parameters
    ----------
    store : str
        Local path or fsspec URL of the store.
    storage_options : dict, optional
        Passed to fsspec.
    columns : sequence of str, optional
        Ledger columns to read (default: those of the report, :data:`REPORT_COLUMNS`);
        ``row_key`` and ``retired`` are always read.
    retired : bool
        Keep the rows of earlier catalogs too.
    parts_per_task : int
        Ledger parts one task reads.

    Returns
    -------
    dask.dataframe.DataFrame
        The rows in commit order within each partition, plus ``_seq`` (a row's place
        in the ledger's commit order). Partitions are not in catalog order.

    Examples
    --------
    >>> ledger = ledger_dataframe("sheets.zarr")                       # doctest: +SKIP
    >>> ledger.groupby("status").size().compute()                      # doctest: +SKIP
    """
    import dask
    import dask.dataframe as dd

    names = tuple(dict.fromkeys(["row_key", "retired", *(columns or REPORT_COLUMNS)]))
    unknown = [c for c in names if c not in LEDGER_COLUMNS]
    if unknown:
        raise UserError(f"no ledger column {unknown[0]!r} (columns: {', '.join(LEDGER_COLUMNS)})")
    parts = ledger_parts(store, storage_options)
    step = max(1, int(parts_per_task))
    groups = [(i, tuple(parts[i:i + step])) for i in range(0, len(parts), step)] or [(0, ())]
    meta = _empty_part(names)
    hashes = [dask.delayed(_key_hashes)(dask.delayed(_read_group)(g, ("row_key",), storage_options))
              for g in groups]
    stale = dask.delayed(_stale_seqs)(*hashes)
    frame = dd.from_map(_read_group, groups, names=names, storage_options=storage_options,
                        meta=meta, enforce_metadata=False)
    return frame.map_partitions(_drop_stale, stale, retired, meta=meta)


# ---------------------------------------------------------------------------------
# Per-partition summaries and their reduction (pure pandas and NumPy)
# ---------------------------------------------------------------------------------
def _status_table(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Rows of each status per value of ``by`` (a column)."""
    counts = pd.crosstab(frame[by], frame["status"]) if len(frame) else pd.DataFrame()
    return counts.reindex(columns=list(STATUSES), fill_value=0).astype("int64")


def _hosts(uris: pd.Series) -> np.ndarray:
    """The lower-cased host of each URL ("" for none), in Arrow's vectorised regex."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(uris.astype(object).where(uris.notna(), ""), type=pa.string())
    found = pc.struct_field(pc.extract_regex(values, _HOST), [0])
    return np.asarray(pc.fill_null(pc.utf8_lower(found), "").to_pylist(), dtype=object)


def _histogram(values: np.ndarray, name: str) -> np.ndarray:
    edges = _BINS[name]
    clipped = np.clip(values, edges[0], edges[-1] * (1 - 1e-12))
    return np.histogram(clipped, bins=edges)[0].astype("int64")


def partition_summary(frame: pd.DataFrame) -> dict[str, Any]:
    """The small summary of one partition of the ledger that the report adds up.

    Parameters
    ----------
    frame : pandas.DataFrame
        Ledger rows (at least the columns of :data:`REPORT_COLUMNS`).

    Returns
    -------
    dict
        Counts by status and reason; by host and by recordset, each status and the
        failures' reasons; histograms over fixed bins of the sources' long side and
        aspect, of bytes and of seconds per image; totals; duplicate clusters.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({
    ...     "status": ["ok", "failed", "duplicate"], "reason": [None, "http_404", "phash"],
    ...     "recordset": ["rs-1", "rs-1", None],
    ...     "access_uri": ["https://a.org/1.jpg", "https://b.org/2.jpg", "https://a.org/3.jpg"],
    ...     "source_width": [2000, 0, 2000], "source_height": [3000, 0, 3000],
    ...     "nbytes": [500000, 0, 400000], "seconds": [0.5, 0.1, 0.4],
    ...     "duplicate_of": [None, None, "m1"]})
    >>> summary = partition_summary(frame)
    >>> summary["rows"], summary["status_reason"].to_dict()
    (3, {('duplicate', 'phash'): 1, ('failed', 'http_404'): 1, ('ok', ''): 1})
    >>> summary["hosts"]["failed"].to_dict()
    {'a.org': 0, 'b.org': 1}
    """
    frame = frame.copy()
    frame["reason"] = frame["reason"].fillna("").astype(str)
    frame["recordset"] = frame["recordset"].fillna("").astype(str)
    frame["host"] = _hosts(frame["access_uri"])
    failed = frame[frame["status"] == "failed"]
    width = frame["source_width"].to_numpy(np.int64)
    height = frame["source_height"].to_numpy(np.int64)
    sized = (width > 0) & (height > 0)
    fetched = frame["nbytes"].to_numpy(np.int64) > 0
    seconds = frame["seconds"].to_numpy(np.float64)
    timed = np.isfinite(seconds) & (seconds > 0) & fetched
    dup = frame[frame["duplicate_of"].notna()]
    clusters = (dup.groupby(["duplicate_of", "reason"]).size().rename("members")
                if len(dup) else pd.Series(dtype="int64", name="members"))
    return {
        "rows": int(len(frame)),
        "status_reason": frame.groupby(["status", "reason"]).size(),
        "hosts": _status_table(frame, "host"),
        "host_reasons": failed.groupby(["host", "reason"]).size(),
        "recordsets": _status_table(frame, "recordset"),
        "recordset_reasons": failed.groupby(["recordset", "reason"]).size(),
        "long_side": _histogram(np.maximum(width, height)[sized], "long_side"),
        "aspect": _histogram((height[sized] / np.maximum(width[sized], 1)), "aspect"),
        "nbytes": _histogram(frame["nbytes"].to_numpy(np.float64)[fetched], "nbytes"),
        "seconds": _histogram(seconds[timed], "seconds"),
        "totals": np.array([fetched.sum(), frame["nbytes"].to_numpy(np.int64)[fetched].sum(),
                            timed.sum(), seconds[timed].sum(), sized.sum()], dtype=np.float64),
        "clusters": clusters,
    }


def _add_series(a: pd.Series, b: pd.Series) -> pd.Series:
    if len(a) == 0:
        return b
    if len(b) == 0:
        return a
    return a.add(b, fill_value=0).astype("int64")


def merge_summaries(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two partition summaries as one (the reduction of :func:`partition_summary`)."""
    out: dict[str, Any] = {}
    for key, value in a.items():
        other = b[key]
        if isinstance(value, pd.DataFrame):
            out[key] = value.add(other, fill_value=0).astype("int64") if len(value) and len(other) \
                else (value if len(value) else other)
        elif isinstance(value, pd.Series):
            out[key] = _add_series(value, other)
        else:
            out[key] = value + other
    return out


def _tree_reduce(items: list, combine) -> Any:
    import dask

    while len(items) > 1:
        items = [dask.delayed(combine)(*items[i:i + 2]) if i + 1 < len(items) else items[i]
                 for i in range(0, len(items), 2)]
    return items[0]


def _part_histogram(group: tuple[int, tuple[str, ...]],
                    storage_options: dict | None) -> np.ndarray | None:
    """The pixel histogram the parts of a group carry (None: a part has none)."""
    import pyarrow.parquet as pq
    from fsspec.core import url_to_fs

    total = np.zeros((3, 256), "int64")
    for part in group[1]:
        fs, _ = url_to_fs(part, **(storage_options or {}))
        with fs.open(part, "rb") as f:
            meta = pq.ParquetFile(f).schema_arrow.metadata or {}
        if HISTOGRAM_KEY not in meta:
            return None
        total += np.asarray(json.loads(meta[HISTOGRAM_KEY]), "int64")
    return total


def _add_histograms(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return None if a is None or b is None else a + b


# ---------------------------------------------------------------------------------
# The summary
# ---------------------------------------------------------------------------------
def quality_summary(store: str, storage_options: dict | None = None, *,
                    client: Any = None) -> dict[str, Any]:
    """The numbers of the data-quality report: reductions of the ledger on Dask.

    Parameters
    ----------
    store : str
        Local path or fsspec URL of the store.
    storage_options : dict, optional
        Passed to fsspec.
    client : distributed.Client, optional
        Where the reductions run (default: the current client, else Dask's default
        scheduler).

    Returns
    -------
    dict
        JSON-able: ``rows``, ``status``, ``reasons``, ``hosts`` and ``recordsets``
        (the :data:`TOP` most failing, each with its rows by status and the reasons of
        its failures), ``histograms`` (bin edges and counts), ``cost`` (bytes and
        seconds per fetched image), ``duplicates`` (clusters) and ``channels``.

    Examples
    --------
    >>> summary = quality_summary("sheets.zarr")                       # doctest: +SKIP
    >>> summary["status"]                                             # doctest: +SKIP
    {'ok': 180, 'failed': 12, 'duplicate': 6, 'excluded': 2}
    """
    import dask

    parts = ledger_parts(store, storage_options)
    frame = ledger_dataframe(store, storage_options)
    summaries = [dask.delayed(partition_summary)(p) for p in frame.to_delayed()]
    step = PARTS_PER_TASK
    groups = [(i, tuple(parts[i:i + step])) for i in range(0, len(parts), step)]
    histograms = [dask.delayed(_part_histogram)(g, storage_options) for g in groups]
    targets = [_tree_reduce(summaries, merge_summaries)]
    if histograms:  # a store with no committed part has no pixel statistics
        targets.append(_tree_reduce(histograms, _add_histograms))
    if client is not None:
        results = client.gather(client.compute(targets))
    else:
        results = dask.compute(*targets)
    return _summarize(results[0], results[1] if len(results) > 1 else None, len(parts))


def _table(counts: pd.DataFrame, reasons: pd.Series, name: str) -> list[dict[str, Any]]:
    """The :data:`TOP` rows of a status table, the most failing first."""
    if counts.empty:
        return []
    counts = counts.assign(rows=counts.sum(axis=1))
    counts = counts.sort_values(["failed", "rows"], ascending=False, kind="stable").head(TOP)
    out = []
    for value, row in counts.iterrows():
        why = reasons.xs(value, level=0) if len(reasons) and value in reasons.index.get_level_values(0) \
            else pd.Series(dtype="int64")
        out.append({name: str(value) or "(none)", "rows": int(row["rows"]),
                    **{s: int(row[s]) for s in STATUSES},
                    "failure_rate": float(row["failed"] / row["rows"]) if row["rows"] else 0.0,
                    "failures": {str(k): int(v) for k, v in why.sort_values(ascending=False).items()}})
    return out


def _median_of_histogram(counts: np.ndarray, edges: np.ndarray) -> float | None:
    total = counts.sum()
    if not total:
        return None
    i = int(np.searchsorted(np.cumsum(counts), total / 2))
    return float(np.sqrt(edges[i] * edges[i + 1]))  # the bin's geometric middle


def _summarize(total: dict[str, Any], pixels: np.ndarray | None, n_parts: int) -> dict[str, Any]:
    by_reason = total["status_reason"]
    status = {s: int(by_reason.xs(s, level=0).sum()) if s in by_reason.index.get_level_values(0)
              else 0 for s in STATUSES} if len(by_reason) else {s: 0 for s in STATUSES}
    reasons = {f"{s}: {r}" if r else s: int(v) for (s, r), v in by_reason.sort_index().items()}
    fetched, nbytes, timed, seconds, sized = (float(v) for v in total["totals"])
    histograms = {name: {"edges": [float(e) for e in _BINS[name]],
                         "counts": [int(c) for c in total[name]]} for name in _BINS}
    cost = {"fetched_images": int(fetched), "bytes": int(nbytes),
            "mean_bytes": nbytes / fetched if fetched else None,
            "median_bytes": _median_of_histogram(total["nbytes"], _BINS["nbytes"]),
            "timed_images": int(timed), "seconds": seconds,
            "mean_seconds": seconds / timed if timed else None,
            "median_seconds": _median_of_histogram(total["seconds"], _BINS["seconds"]),
            "sized_images": int(sized)}
    clusters = total["clusters"]
    duplicates = {"clusters": int(clusters.index.get_level_values(0).nunique()) if len(clusters) else 0,
                  "rows": int(clusters.sum()) if len(clusters) else 0,
                  "largest": _largest_clusters(clusters)}
    channels = None
    if pixels is not None:
        mean, std = stats_of_histogram(pixels)
        channels = {"mean": mean, "std": std, "histogram": np.asarray(pixels).tolist()}
    return {"rows": int(total["rows"]), "ledger_parts": n_parts, "status": status,
            "reasons": reasons,
            "hosts": _table(total["hosts"], total["host_reasons"], "host"),
            "n_hosts": int(len(total["hosts"])),
            "recordsets": _table(total["recordsets"], total["recordset_reasons"], "recordset"),
            "n_recordsets": int(len(total["recordsets"])),
            "histograms": histograms, "cost": cost, "duplicates": duplicates,
            "channels": channels}


def _largest_clusters(clusters: pd.Series) -> list[dict[str, Any]]:
    """The :data:`CLUSTERS` largest clusters with exact duplicates, then with near ones.

    ``clusters`` counts the members of each (original, kind); a cluster is all the
    duplicates of one original, of whatever kind.
    """
    if not len(clusters):
        return []
    table = clusters.rename("members").reset_index()
    table["reason"] = table["reason"].astype(str)
    per = table.groupby("duplicate_of").agg(
        members=("members", "sum"), kind=("reason", lambda k: "+".join(sorted(set(k)))))
    per = per.sort_values("members", ascending=False, kind="stable")
    chosen: dict[str, Any] = {}
    for kind in ("exact", "near", ""):
        having = per[per["kind"].str.contains(kind, regex=False)] if kind else per
        for original, row in having.head(CLUSTERS).iterrows():
            chosen.setdefault(str(original), {"original": str(original), "kind": row["kind"],
                                              "members": int(row["members"])})
        if len(chosen) >= 2 * CLUSTERS:
            break
    return list(chosen.values())[:2 * CLUSTERS]


# ---------------------------------------------------------------------------------
# Images: duplicate clusters and samples per label
# ---------------------------------------------------------------------------------
def _cluster_rows(store: str, storage_options: dict | None, originals: Sequence[str],
                  client: Any) -> pd.DataFrame:
    """The ledger rows of the shown clusters: their originals and members only."""
    if not originals:
        return pd.DataFrame(columns=["media_uuid", "duplicate_of", "status", "reason",
                                     "phash", "image_index"])
    frame = ledger_dataframe(store, storage_options,
                             columns=("media_uuid", "duplicate_of", "status", "reason",
                                      "phash", "image_index"))
    wanted = set(originals)
    rows = frame[frame["media_uuid"].isin(wanted) | frame["duplicate_of"].isin(wanted)]
    return (client.compute(rows).result() if client is not None else rows.compute())


def _phash_distance(a: Any, b: Any) -> int | None:
    from .hashing import phash_int

    try:
        return (phash_int(str(a)) ^ phash_int(str(b))).bit_count()
    except (TypeError, ValueError):
        return None


def _cluster_panels(store_ds, location: str | None, rows: pd.DataFrame,
                    clusters: list[dict[str, Any]], storage_options: dict | None) -> list:
    """One row of (image or None, caption) per cluster: the original, then members."""
    from .batches import read_images

    panels, wanted = [], []
    originals = rows[rows["duplicate_of"].isna()].drop_duplicates("media_uuid") \
        .set_index("media_uuid")
    for cluster in clusters:
        uuid = cluster["original"]
        members = rows[rows["duplicate_of"] == uuid].head(CLUSTER_MEMBERS - 1)
        orig = originals.loc[uuid] if uuid in originals.index else None
        line = [(int(orig["image_index"]) if orig is not None else -1,
                 f"original {uuid[:8]}", orig["phash"] if orig is not None else None)]
        for _, m in members.iterrows():
            d = _phash_distance(m["phash"], line[0][2])
            text = f"{m['reason']} duplicate {str(m['media_uuid'])[:8]}" + \
                (f"\npHash distance {d}" if d is not None else "")
            line.append((int(m["image_index"]), text, m["phash"]))
        panels.append(line)
        wanted += [i for i, _, _ in line if i >= 0]
    images = {}
    if wanted and location is not None:
        idx = np.unique(np.asarray(wanted, dtype=np.int64))
        idx = idx[idx < store_ds.sizes[layout_of(store_ds).dim]]
        if len(idx):
            chunk = int(store_ds.attrs.get("chunk_size") or 64)
            images = dict(zip(idx.tolist(), read_images(location, idx, chunk, storage_options)))
    return [[(images.get(i), text) for i, text, _ in line] for line in panels]


def _label_samples(ds, location: str | None, storage_options: dict | None,
                   seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Up to :data:`SAMPLES_PER_LABEL` random stored images of each label."""
    from .batches import read_images
    from .splits import missing_labels

    if location is None or "label" not in ds.coords or ds.sizes[layout_of(ds).dim] == 0:
        return np.zeros((0, 1, 1, 3), np.uint8), []
    labels = np.asarray(ds["label"].values)
    labels = labels.astype(object) if labels.dtype.kind not in "iuf" else labels
    known = ~missing_labels(labels)
    rng = np.random.default_rng(seed)
    chosen, titles = [], []
    for value in np.unique(labels[known].astype(str)):
        where = np.flatnonzero(known & (labels.astype(str) == value))
        pick = np.sort(rng.choice(where, min(SAMPLES_PER_LABEL, len(where)), replace=False))
        chosen += pick.tolist()
        titles += [f"label {value}\n{layout_of(ds).dim} {i}" for i in pick]
    if not chosen:
        return np.zeros((0, 1, 1, 3), np.uint8), []
    chunk = int(ds.attrs.get("chunk_size") or 64)
    idx = np.asarray(chosen, dtype=np.int64)
    return read_images(location, idx, chunk, storage_options), titles


# ---------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------
def quality_report(store: str, out: str | os.PathLike = "quality", *,
                   storage_options: dict | None = None, client: Any = None,
                   cluster: str | None = None, jobs: int | str | None = None,
                   cluster_options: dict | None = None) -> dict[str, Any]:
    """Write the data-quality report of a store: an HTML page, its figures and numbers.

    Parameters
    ----------
    store : str
        Local path or fsspec URL of a store built by ``idigdask build``.
    out : str or path
        The report folder (created; its files are replaced).
    storage_options : dict, optional
        Passed to fsspec.
    client : distributed.Client or str, optional
        Where the reductions run: this client or scheduler address; else the current
        client; else the config's (:func:`idigdask.get_client`).
    cluster, jobs, cluster_options : optional
        Run on workers in batch jobs of this kind, as :func:`idigdask.get_client`
        takes them.

    Returns
    -------
    dict
        :func:`quality_summary`'s numbers, with ``report_dir``, ``index``, ``plots``
        and ``seconds``.

    Raises
    ------
    UserError
        If ``store`` is not an idigdask store.

    Examples
    --------
    >>> report = idigdask.quality_report("sheets.zarr", "quality")     # doctest: +SKIP
    >>> report["status"], report["index"]                             # doctest: +SKIP
    ({'ok': 180, 'failed': 12, 'duplicate': 6, 'excluded': 2}, 'quality/index.html')
    """
    from .batches import open_store, store_location
    from .cluster import cluster_summary, get_client

    started = time.perf_counter()
    ledger_parts(store, storage_options)  # not a store: one line, before any cluster starts
    ds = open_store(store, storage_options)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with get_client(client, cluster=cluster, jobs=jobs,
                    cluster_options=cluster_options) as dask_client:
        summary = quality_summary(store, storage_options, client=dask_client)
        shown = summary["duplicates"]["largest"]
        rows = _cluster_rows(store, storage_options, [c["original"] for c in shown], dask_client)
        where = cluster_summary(dask_client)
    location = store_location(ds) or str(store)
    panels = _cluster_panels(ds, location, rows, shown, storage_options)
    samples, titles = _label_samples(ds, location, storage_options)
    summary["store"] = str(store)
    summary["images"] = int(ds.sizes[layout_of(ds).dim])
    summary["attrs"] = {k: ds.attrs.get(k) for k in ("size", "resize_mode", "chunk_size",
                                                       "catalog_source", "created",
                                                       "channel_mean", "channel_std")}
    summary["plots"] = _plots(summary, panels, samples, titles, folder)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["cluster"] = where
    summary["report_dir"] = str(folder)
    (folder / "quality.json").write_text(json.dumps(summary, indent=2, default=str))
    summary["index"] = str(_write_html(summary, folder))
    return summary


def _plots(summary: dict[str, Any], panels: list, samples: np.ndarray, titles: list[str],
           folder: Path) -> dict[str, str]:
    from . import report

    plots = {"status": report.plot_counts(summary["reasons"], folder / "status.png",
                                          title="ledger rows by status and reason")}
    for key, name in (("hosts", "host"), ("recordsets", "recordset")):
        if summary[key]:
            plots[key] = report.plot_status_table(summary[key], name, folder / f"{key}.png")
    hist = summary["histograms"]
    plots["source"] = report.plot_histograms(
        {"long side of the source (px)": hist["long_side"],
         "aspect of the source (height / width)": hist["aspect"]}, folder / "source.png")
    plots["cost"] = report.plot_histograms(
        {"bytes fetched per image": hist["nbytes"], "seconds per image": hist["seconds"]},
        folder / "cost.png")
    if panels:
        plots["duplicates"] = report.plot_image_rows(panels, folder / "duplicates.png")
    if len(titles):
        plots["samples"] = report.plot_image_grid(samples, titles, folder / "samples.png",
                                                  ncols=SAMPLES_PER_LABEL)
    if summary["channels"] is not None:
        plots["channels"] = report.plot_channels(
            np.asarray(summary["channels"]["histogram"]), summary["channels"]["mean"],
            summary["channels"]["std"], folder / "channels.png")
    return {k: Path(v).name for k, v in plots.items()}


def _html_table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "" if value is None else str(value)


def _write_html(summary: dict[str, Any], folder: Path) -> Path:
    plots = summary["plots"]

    def figure(key: str, caption: str) -> str:
        if key not in plots:
            return ""
        return (f'<figure><img src="{html.escape(plots[key])}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    cost = summary["cost"]
    status_rows = [{"status": k, "rows": v} for k, v in summary["status"].items()]
    reason_rows = [{"status: reason": k, "rows": v} for k, v in summary["reasons"].items()]
    columns = ("rows", *STATUSES, "failure_rate", "failures")
    dup = summary["duplicates"]
    channels = summary["channels"]
    sections = [
        f"<h1>Data quality of <code>{html.escape(summary['store'])}</code></h1>",
        f"<p>{summary['rows']} ledger rows in {summary['ledger_parts']} parts; "
        f"{summary['images']} stored images. Made in {summary['seconds']} s.</p>",
        "<h2>What became of every catalog row</h2>",
        _html_table(status_rows, ("status", "rows")), _html_table(reason_rows, ("status: reason", "rows")),
        figure("status", "rows by status and reason"),
        f"<h2>Failures by host</h2><p>{summary['n_hosts']} hosts; the {TOP} most failing:</p>",
        _html_table(summary["hosts"], ("host", *columns)), figure("hosts", "rows by host"),
        f"<h2>Failures by recordset</h2><p>{summary['n_recordsets']} recordsets; "
        f"the {TOP} most failing:</p>",
        _html_table(summary["recordsets"], ("recordset", *columns)),
        figure("recordsets", "rows by recordset"),
        "<h2>Source images</h2>", figure("source", "source size and aspect"),
        "<h2>Cost per image</h2>",
        _html_table([{k: v for k, v in cost.items()}], tuple(cost)),
        figure("cost", "bytes and seconds per image"),
        f"<h2>Duplicates</h2><p>{dup['rows']} rows duplicate {dup['clusters']} images.</p>",
        _html_table(dup["largest"], ("original", "kind", "members")),
        figure("duplicates", "the largest clusters, original first"),
        "<h2>Samples per label</h2>", figure("samples", "random stored images of each label"),
        "<h2>Channel statistics</h2>",
        (f"<p>mean {channels['mean']}, standard deviation {channels['std']} "
         "(of every committed pixel, from the ledger parts' histograms)</p>"
         if channels else "<p>a ledger part carries no pixel histogram</p>"),
        figure("channels", "pixel values per channel"),
        "<p>All numbers: <a href='quality.json'>quality.json</a></p>",
    ]
    page = ("<!doctype html><meta charset='utf-8'><title>idigdask data quality</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
            "padding:2px 6px;font-size:90%}img{max-width:100%}</style>\n"
            + "\n".join(s for s in sections if s) + "\n")
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
