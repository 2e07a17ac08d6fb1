"""``idigdask build SOURCE -o STORE``: fetch, decode and store a catalog's images
(``--media sounds``: its sound recordings, as the log-mel spectrograms of their clips)."""

from __future__ import annotations

import argparse
from typing import Any

from . import (add_catalog_options, add_cluster_options, cluster_options_arg, cluster_settings,
               storage_options_arg)


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
    # every default is the dask config's (idigdask.yaml): a flag given overrides it
    option = p.add_argument_group("build options (defaults: dask config idigdask.build)")
    option.add_argument("--size", type=int, help="output side in pixels (256)")
    option.add_argument("--resize-mode", choices=["pad", "crop", "stretch"], help="(pad)")
    option.add_argument("--pad-color", type=_color, metavar="R,G,B", help="(255,255,255)")
    option.add_argument("--chunk-size", type=int, help="images per Zarr chunk (64)")
    option.add_argument("--batch-size", type=int, help="catalog rows per task (32)")
    option.add_argument("--wave-batches", type=int,
                        help="batches per committed wave (four per worker thread)")
    option.add_argument("--max-pixels", type=int, help="decompression-bomb limit")
    option.add_argument("--max-decode-bytes", type=int,
                        help="memory one decode may take, from the header (1 GiB)")
    option.add_argument("--phash-distance", type=int,
                        help="near-duplicate pHash Hamming distance; -1: byte-identical only (2)")
    option.add_argument("--keep-duplicates", action="store_const", const=True,
                        help="store duplicates too")
    option.add_argument("--no-dedup", dest="dedup", action="store_const", const=False,
                        help="do not look for duplicates")
    option.add_argument("--no-verify-hashes", dest="verify_hashes", action="store_const",
                        const=False, help="do not check the records' ac:hashValue")
    option.add_argument("--no-retry-failed", dest="retry_failed", action="store_const",
                        const=False, help="on resume, do not fetch rows that failed before")
    option.add_argument("--allow-local", action="store_const", const=True,
                        help="fetch local files even when the catalog is remote")
    option.add_argument("--media", choices=["images", "sounds"],
                        help="the catalog's media built: images, or sound recordings (images)")
    sound = p.add_argument_group("sound options, with --media sounds (defaults: dask config "
                                 "idigdask.sound)")
    sound.add_argument("--sample-rate", type=int, metavar="HZ", help="resampled to (16000)")
    sound.add_argument("--window", type=float, metavar="SECONDS", help="clip length (2.0)")
    sound.add_argument("--hop", type=float, metavar="SECONDS",
                       help="between clip starts; below --window the clips overlap (1.0)")
    sound.add_argument("--n-mels", type=int, metavar="N", help="mel bands (64)")
    sound.add_argument("--fmin", type=float, metavar="HZ", help="lowest frequency kept (50)")
    sound.add_argument("--fmax", type=float, metavar="HZ",
                       help="highest frequency kept (half the sample rate)")
    sound.add_argument("--trim", choices=["none", "silence", "intro"],
                       help="cut leading silence, or also a spoken introduction (silence)")
    sound.add_argument("--normalize", dest="normalize", choices=["clip", "recording", "none"],
                       help="0 dB is each clip's loudest bin, the recording's, or full scale (clip)")
    sound.add_argument("--max-duration", type=float, metavar="SECONDS",
                       help="longer recordings are refused (1800)")
    fetch = p.add_argument_group("fetch options (defaults: dask config idigdask.fetch)")
    fetch.add_argument("--timeout", type=float, metavar="SECONDS", help="per-request timeout (30)")
    fetch.add_argument("--retries", type=int, metavar="N", help="retries of transient failures (4)")
    fetch.add_argument("--concurrency", type=int, metavar="N", help="requests in flight per task (32)")
    fetch.add_argument("--per-host", type=int, metavar="N",
                       help="concurrent requests per host per task (8)")
    fetch.add_argument("--max-bytes", type=int, help="byte cap per object (64 MiB)")
    fetch.add_argument("--allow-private", action="store_const", const=True,
                       help="fetch media from loopback and private network addresses too")
    add_cluster_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    from ..audio import SoundOptions
    from ..build import BuildOptions, build_dataset
    from ..fetch import FetchOptions

    catalog_options = {k: v for k, v in {
        "format": args.source_format, "url_column": args.url_column,
        "id_column": args.id_column, "label_column": args.label_column}.items() if v}
    # a flag named as a field of the options (its dest) and given on the command line
    # (storage options are given per location below, as JSON, never as an override)
    fields = {f.name for cls in (BuildOptions, FetchOptions, SoundOptions)
              for f in dataclasses.fields(cls)} - {"storage_options"}
    overrides = {name: value for name, value in vars(args).items()
                 if name in fields and value is not None}
    with cluster_settings(args):
        result = build_dataset(
            args.source, args.output, overrides,
            storage_options=storage_options_arg(args.storage_options),
            media_storage_options=storage_options_arg(args.media_storage_options,
                                                      "--media-storage-options"),
            catalog_storage_options=storage_options_arg(args.catalog_storage_options,
                                                        "--catalog-storage-options"),
            catalog_options=catalog_options, client=args.scheduler,
            cluster_options=cluster_options_arg(args),
            progress=False if args.no_progress else None)
    return result.summary()
