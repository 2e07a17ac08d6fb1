"""``idigdask build SOURCE -o STORE``: fetch, decode and store a catalog's images."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_catalog_options, storage_options_arg


def _color(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0 <= v <= 255 for v in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not an R,G,B colour such as 255,255,255")
    return parts  # type: ignore[return-value]


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("build", help="build a chunked Zarr image store from a catalog",
                       description=__doc__)
    p.add_argument("source", help="catalog: GUODA parquet, DwC-A zip, URL table, ...")
    p.add_argument("-o", "--output", required=True, metavar="STORE",
                   help="the store: a folder or fsspec URL (s3://bucket/x.zarr)")
    add_catalog_options(p)
    p.add_argument("--media-storage-options", default=None, metavar="JSON",
                   help="fsspec options for fetching the media (default: --storage-options)")
    p.add_argument("--catalog-storage-options", default=None, metavar="JSON",
                   help="fsspec options for reading the catalog (default: --storage-options "
                        "when the catalog is on the store's protocol)")
    p.add_argument("--size", type=int, default=256, help="output side in pixels (256)")
    p.add_argument("--resize-mode", default="pad", choices=["pad", "crop", "stretch"])
    p.add_argument("--pad-color", type=_color, default=(255, 255, 255), metavar="R,G,B")
    p.add_argument("--chunk-size", type=int, default=64, help="images per Zarr chunk (64)")
    p.add_argument("--batch-size", type=int, default=32, help="catalog rows per task (32)")
    p.add_argument("--wave-batches", type=int, default=None,
                   help="batches per committed wave (four per worker thread)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="per-request timeout (30)")
    p.add_argument("--retries", type=int, default=4, metavar="N", help="retries of transient failures (4)")
    p.add_argument("--concurrency", type=int, default=32, metavar="N",
                   help="requests in flight per task (32)")
    p.add_argument("--per-host", type=int, default=8, metavar="N",
                   help="concurrent requests per host per task (8)")
    p.add_argument("--max-bytes", type=int, default=64 * 2**20, help="byte cap per object")
    p.add_argument("--max-pixels", type=int, default=200_000_000, help="decompression-bomb limit")
    p.add_argument("--max-decode-bytes", type=int, default=None,
                   help="memory one decode may take, from the header (1 GiB)")
    p.add_argument("--phash-distance", type=int, default=2,
                   help="near-duplicate pHash Hamming distance; -1: byte-identical only (2)")
    p.add_argument("--keep-duplicates", action="store_true", help="store duplicates too")
    p.add_argument("--no-dedup", action="store_true", help="do not look for duplicates")
    p.add_argument("--no-verify-hashes", action="store_true",
                   help="do not check the records' ac:hashValue")
    p.add_argument("--no-retry-failed", action="store_true",
                   help="on resume, do not fetch rows that failed before")
    p.add_argument("--allow-local", action="store_true",
                   help="fetch local files even when the catalog is remote")
    p.add_argument("--allow-private", action="store_true",
                   help="fetch media from loopback and private network addresses too")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="join this Dask scheduler instead of starting a LocalCluster")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of the LocalCluster (default: one thread per core)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads of the in-process LocalCluster (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..build import build_dataset

    catalog_options = {k: v for k, v in {
        "format": args.source_format, "url_column": args.url_column,
        "id_column": args.id_column, "label_column": args.label_column}.items() if v}
    result = build_dataset(
        args.source, args.output,
        size=args.size, resize_mode=args.resize_mode, pad_color=args.pad_color,
        storage_options=storage_options_arg(args.storage_options),
        media_storage_options=storage_options_arg(args.media_storage_options,
                                                  "--media-storage-options"),
        catalog_storage_options=storage_options_arg(args.catalog_storage_options,
                                                    "--catalog-storage-options"),
        catalog_options=catalog_options, chunk_size=args.chunk_size,
        batch_size=args.batch_size, wave_batches=args.wave_batches, timeout=args.timeout, retries=args.retries,
        concurrency=args.concurrency, per_host=args.per_host, max_bytes=args.max_bytes,
        max_pixels=args.max_pixels, verify_hashes=not args.no_verify_hashes,
        **({} if args.max_decode_bytes is None else {"max_decode_bytes": args.max_decode_bytes}),
        dedup=not args.no_dedup, phash_distance=args.phash_distance,
        keep_duplicates=args.keep_duplicates, retry_failed=not args.no_retry_failed,
        allow_local=True if args.allow_local else None,
        allow_private=True if args.allow_private else None, scheduler=args.scheduler,
        n_workers=args.workers, n_threads=args.threads,
        progress=False if args.no_progress else None,
    )
    return result.summary()
