"""``idigdask predict MODEL_DIR SOURCE -o predictions.parquet``: score a store or catalog."""

from __future__ import annotations

import argparse
from typing import Any

from . import (add_catalog_options, add_cluster_options, cluster_options_arg, cluster_settings,
               storage_options_arg)

#: The flags that set a field of PredictOptions, of its BuildOptions or of their
#: FetchOptions, by field name.
OPTION_FLAGS = ("batch_size", "chunks_per_task", "catalog_batch_size", "resize_mode",
                "allow_local", "allow_private")


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="score the images of a store or a catalog",
                       description=__doc__)
    p.add_argument("model_dir", help="a model folder written by 'idigdask train'")
    p.add_argument("source", help="an image store (Zarr) or a catalog")
    p.add_argument("-o", "--output", default="predictions.parquet", metavar="PARQUET",
                   help="where the predictions go (predictions.parquet)")
    add_catalog_options(p)
    # every default is the dask config's (idigdask.yaml): a flag given overrides it
    option = p.add_argument_group("prediction options (defaults: dask config "
                                  "idigdask.predict, idigdask.build, idigdask.fetch)")
    option.add_argument("--batch-size", type=int, help="images per inference step (64)")
    option.add_argument("--chunks-per-task", type=int, help="store chunks scored by one task (4)")
    option.add_argument("--catalog-batch-size", type=int,
                        help="catalog rows fetched and scored by one task (64)")
    option.add_argument("--resize-mode", choices=["pad", "crop", "stretch"],
                        help="how catalog images are resized (the model's)")
    option.add_argument("--allow-local", action="store_const", const=True,
                        help="fetch local files even when the catalog is remote")
    option.add_argument("--allow-private", action="store_const", const=True,
                        help="fetch media from loopback and private network addresses too")
    add_cluster_options(p)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..predict import predict

    catalog_options = {k: v for k, v in {
        "format": args.source_format, "url_column": args.url_column,
        "id_column": args.id_column, "label_column": args.label_column}.items() if v}
    overrides = {name: getattr(args, name) for name in OPTION_FLAGS
                 if getattr(args, name) is not None}
    with cluster_settings(args):
        table = predict(args.model_dir, args.source, out=args.output,
                        storage_options=storage_options_arg(args.storage_options),
                        catalog_options=catalog_options, client=args.scheduler,
                        cluster_options=cluster_options_arg(args), **overrides)
    predicted = table.loc[table["status"] == "ok", "predicted"].astype(str).value_counts()
    return {
        # a row per image, or per recording (from its clips) of a store or catalog of sounds
        "output": args.output,
        "recordings" if table.attrs.get("media") == "sounds" else "images": len(table),
        "status": {str(k): int(v) for k, v in table["status"].value_counts().items()},
        "predicted": {str(k): int(v) for k, v in predicted.items()},
        "cluster": table.attrs.get("cluster", {}),
    }

