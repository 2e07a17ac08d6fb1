"""``idigdask predict MODEL_DIR SOURCE -o predictions.parquet``: score a store or catalog."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_catalog_options, storage_options_arg


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="score the images of a store or a catalog",
                       description=__doc__)
    p.add_argument("model_dir", help="a model folder written by 'idigdask train'")
    p.add_argument("source", help="an image store (Zarr) or a catalog")
    p.add_argument("-o", "--output", default="predictions.parquet", metavar="PARQUET",
                   help="where the predictions go (predictions.parquet)")
    add_catalog_options(p)
    p.add_argument("--batch-size", type=int, default=64, help="images per inference step (64)")
    p.add_argument("--chunks-per-task", type=int, default=4,
                   help="store chunks scored by one task (4)")
    p.add_argument("--catalog-batch-size", type=int, default=64,
                   help="catalog rows fetched and scored by one task (64)")
    p.add_argument("--allow-local", action="store_true",
                   help="fetch local files even when the catalog is remote")
    p.add_argument("--allow-private", action="store_true",
                   help="fetch media from loopback and private network addresses too")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="join this Dask scheduler instead of starting a LocalCluster")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..fetch import FetchOptions
    from ..predict import predict

    storage_options = storage_options_arg(args.storage_options)
    build_options: dict[str, Any] = {}
    if args.allow_local:
        build_options["allow_local"] = True
    if args.allow_private:
        build_options["fetch"] = FetchOptions(storage_options=storage_options, allow_private=True)
    table = predict(args.model_dir, args.source, out=args.output,
                    storage_options=storage_options,
                    scheduler=args.scheduler, batch_size=args.batch_size,
                    chunks_per_task=args.chunks_per_task,
                    catalog_batch_size=args.catalog_batch_size,
                    source_format=args.source_format, url_column=args.url_column,
                    id_column=args.id_column, label_column=args.label_column,
                    build_options=build_options or None)
    predicted = table.loc[table["status"] == "ok", "predicted"].astype(str).value_counts()
    return {
        "output": args.output, "images": len(table),
        "status": {str(k): int(v) for k, v in table["status"].value_counts().items()},
        "predicted": {str(k): int(v) for k, v in predicted.items()},
    }
