"""Data-quality report: the Dask reductions of :func:`idigdask.quality.quality_summary`
over a generated ledger of a million rows, written as the parts a build commits.

:func:`write_ledger_store` is also what ``tests/pipeline/test_quality.py`` reads a
large ledger from (with fewer rows).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._data import _base

#: Reasons of the generated failures and their shares among the failed rows.
FAILURES = {"http_404": 0.5, "timeout": 0.3, "not_an_image": 0.2}


def _part(rng: np.random.Generator, start: int, n: int, hosts: int, images_before: int):
    """One ledger part of ``n`` rows (a wave): ok, failed, duplicate and excluded rows.

    Rows come in catalog order and in recordset order, as a GUODA dump's do; one host
    in ten fails a third of its rows.
    """
    import pandas as pd

    from idigdask.store import row_key

    idx = np.arange(start, start + n)
    host = (idx * 7919) % hosts
    status = np.full(n, "ok", dtype=object)
    draw = rng.random(n)
    bad_host = (host % 10) == 3
    failed = (draw < 0.02) | (bad_host & (draw < 0.33))
    excluded = ~failed & (draw > 0.995)
    duplicate = ~failed & ~excluded & (draw > 0.975) & (draw <= 0.995)
    status[failed], status[excluded], status[duplicate] = "failed", "excluded", "duplicate"
    reason = np.full(n, None, dtype=object)
    reason[failed] = rng.choice(list(FAILURES), failed.sum(), p=list(FAILURES.values()))
    reason[excluded] = "not_an_image_type"
    reason[duplicate] = np.where(rng.random(duplicate.sum()) < 0.6, "exact", "near")
    ok = status == "ok"
    image_index = np.full(n, -1, dtype=np.int64)
    image_index[ok] = images_before + np.arange(ok.sum())
    media = np.array([f"{i:08x}-0000-4000-8000-{i:012x}" for i in idx], dtype=object)
    # a duplicate repeats an image stored a little earlier
    originals = np.maximum(idx - rng.integers(1, 500, n), 0)
    duplicate_of = np.full(n, None, dtype=object)
    duplicate_of[duplicate] = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in originals[duplicate]]
    width = rng.choice([600, 1920, 3000, 3900, 3960], n)
    height = (width * rng.choice([1.25, 1.5, 1.33, 0.75], n)).astype(np.int64)
    fetched = ~excluded & ~(failed & (reason == "timeout"))
    uris = [f"https://media{h}.example.org/m/{i}.jpg" for h, i in zip(host, idx)]
    keys = [row_key(m, u) for m, u in zip(media, uris)]
    sized = ok | duplicate
    frame = pd.DataFrame({
        "row_key": keys, "media_uuid": media, "access_uri": uris, "status": status,
        "reason": reason, "message": None, "duplicate_of": duplicate_of,
        "attempts": np.where(failed, 5, 1).astype(np.int64),
        "nbytes": np.where(fetched, rng.integers(80_000, 6_000_000, n), 0).astype(np.int64),
        "seconds": np.where(fetched, rng.lognormal(-1.0, 0.8, n), 0.0),
        "sha256": [f"{i:064x}" for i in idx], "phash": [f"{int(i) * 2654435761 % 2**64:016x}" for i in idx],
        "source_width": np.where(sized, width, 0).astype(np.int64),
        "source_height": np.where(sized, height, 0).astype(np.int64),
        "image_index": image_index, "catalog_row": idx.astype(np.int64),
        "run": np.zeros(n, np.int64), "wave": np.full(n, start // max(1, n), np.int64),
        "warnings": None, "retired": np.zeros(n, bool),
    })
    return frame, int(ok.sum())


def write_ledger_store(folder: str | os.PathLike, n_rows: int, *, rows_per_part: int = 2000,
                       hosts: int = 60, recordsets: int = 40, seed: int = 0,
                       image_size: int = 16) -> str:
    """Write a store whose ledger holds ``n_rows`` generated rows, part by part.

    The rows are in recordset order (``recordsets`` providers of equal share), as a
    GUODA dump is; the ``images`` array has the length the ``ok`` rows give it but
    no pixels written (its chunks read as the fill value), so a million-row store
    takes seconds to write. A last run (1) fetches again and stores a few failed
    rows, which supersede their first rows as a resumed build's do.

    Returns
    -------
    str
        The store's path.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr
    from zarr.codecs import ZstdCodec

    from idigdask.store import HISTOGRAM_KEY, LEDGER_COLUMNS

    store = Path(folder)
    (store / "ledger").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = 0
    labels = []
    histogram = np.zeros((3, 256), np.int64)
    histogram[:, 200:256] = 1000
    retry = None
    for part_no, start in enumerate(range(0, n_rows, rows_per_part)):
        n = min(rows_per_part, n_rows - start)
        frame, ok = _part(rng, start, n, hosts, images)
        frame["recordset"] = [f"recordset-{(i * recordsets) // n_rows:03d}"
                              for i in range(start, start + n)]
        frame["samples"] = (frame["image_index"] >= 0).astype("int64")  # one image per ok row
        frame["duration"] = np.nan
        labels.append(rng.integers(0, 2, ok))
        images += ok
        if retry is None:
            retry = frame[frame["status"] == "failed"].head(20).copy()
        table = pa.Table.from_pandas(frame[LEDGER_COLUMNS], preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               HISTOGRAM_KEY: json.dumps(histogram.tolist())})
        pq.write_table(table, store / "ledger" / f"part-0000-{part_no:06d}.parquet")
    if retry is not None and len(retry):
        # run 1: the retried rows succeed and get new images
        retry = retry.assign(status="ok", reason=None, image_index=np.arange(len(retry)) + images,
                             run=1, samples=1, source_width=3000, source_height=4500)
        labels.append(rng.integers(0, 2, len(retry)))
        images += len(retry)
        table = pa.Table.from_pandas(retry[LEDGER_COLUMNS], preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               HISTOGRAM_KEY: json.dumps(histogram.tolist())})
        pq.write_table(table, store / "ledger" / "part-0001-000000.parquet")
    group = zarr.open_group(str(store), mode="a", zarr_format=3)
    chunk = 4096
    group.create_array("images", shape=(images, image_size, image_size, 3),
                       chunks=(chunk, image_size, image_size, 3), dtype="uint8", fill_value=230,
                       compressors=ZstdCodec(level=1), dimension_names=("image", "y", "x", "channel"),
                       attributes={"coordinates": "label"})
    label = group.create_array("label", shape=(images,), chunks=(chunk * 16,), dtype="int64",
                               fill_value=-1, dimension_names=("image",))
    label[:] = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    group.create_group("ledger", attributes={"description": "idigdask build ledger"})
    group.attrs.update({"size": image_size, "chunk_size": chunk, "format_version": 2,
                        "resize_mode": "pad", "catalog_source": "generated ledger",
                        "channel_mean": [230.0] * 3, "channel_std": [1.0] * 3})
    return str(store)


def ledger_store(n_rows: int, rows_per_part: int = 2000) -> str:
    """A cached generated store of ``n_rows`` ledger rows (see :func:`write_ledger_store`)."""
    base = _base(None)
    final = base / f"ledger-store-{n_rows}-p{rows_per_part}.zarr"
    marker = final.with_name(final.name + ".done")
    if not marker.exists():
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-ledger-", dir=base)) / "store.zarr"
        write_ledger_store(tmp, n_rows, rows_per_part=rows_per_part)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        marker.write_text("{}")
    return str(final)


class QualitySuite:
    """The report's numbers over a million-row ledger in 500 parts, on two workers."""

    number = 1
    repeat = (1, 3, 60.0)
    warmup_time = 0
    timeout = 900
    n_rows = 1_000_000
    rows_per_part = 2000
    workers = 2

    def setup_cache(self) -> str:
        return ledger_store(self.n_rows, self.rows_per_part)

    def setup(self, store: str) -> None:
        from ._data import start_cluster

        self.cluster, self.client = start_cluster(self.workers)

    def teardown(self, store: str) -> None:
        self.client.close()
        self.cluster.close()

    def time_summary(self, store: str) -> None:
        from idigdask.quality import quality_summary

        quality_summary(store, client=self.client)

    def peakmem_summary(self, store: str) -> None:
        # the driver's peak: the reductions run on the workers
        from idigdask.quality import quality_summary

        quality_summary(store, client=self.client)

    def track_rows_per_s(self, store: str) -> float:
        import time

        from idigdask.quality import quality_summary

        t0 = time.perf_counter()
        summary = quality_summary(store, client=self.client)
        return summary["rows"] / (time.perf_counter() - t0)

    track_rows_per_s.unit = "rows/s"
