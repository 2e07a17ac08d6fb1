"""``idigdask explain MODEL_DIR STORE -o OUT``: Grad-CAM stain maps and their regions."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_cluster_options, cluster_options_arg, cluster_settings, storage_options_arg

#: The flags that set a field of ExplainOptions, by field name.
OPTION_FLAGS = ("batch_size", "chunks_per_task", "layer", "target", "min_area", "overlays",
                "grid")


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("explain", help="map where a model looks on every image (Grad-CAM)",
                       description=__doc__)
    p.add_argument("model_dir", help="a model folder written by 'idigdask train'")
    p.add_argument("store", help="an image store (Zarr) of the model's size")
    p.add_argument("-o", "--output", default="stain-maps", metavar="OUT",
                   help="folder for heatmaps.zarr, regions.parquet, images.parquet, "
                        "grid.png (stain-maps)")
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec storage options of the store and the output, as JSON")
    # every default is the dask config's (idigdask.yaml): a flag given overrides it
    option = p.add_argument_group("explain options (defaults: dask config idigdask.explain)")
    option.add_argument("--batch-size", type=int, help="images per Grad-CAM step (32)")
    option.add_argument("--chunks-per-task", type=int, help="store chunks explained by one task (2)")
    option.add_argument("--layer", help="the layer whose feature map is explained "
                                        "(the last convolution's)")
    option.add_argument("--target", metavar="CLASS",
                        help="the class explained (the second of two, else each image's "
                             "predicted)")
    option.add_argument("--min-area", type=int, help="smallest region kept, store pixels (4)")
    option.add_argument("--overlays", action="store_const", const=True,
                        help="also write a PNG per image in OUT/overlays")
    option.add_argument("--grid", type=int, metavar="N",
                        help="most confident positives shown in grid.png (16; 0: none)")
    add_cluster_options(p)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..explain import explain

    overrides = {name: getattr(args, name) for name in OPTION_FLAGS
                 if getattr(args, name) is not None}
    with cluster_settings(args):
        result = explain(args.model_dir, args.store, out=args.output,
                         storage_options=storage_options_arg(args.storage_options),
                         client=args.scheduler, cluster_options=cluster_options_arg(args),
                         **overrides)
    images = result.images
    return {
        "output": result.out, "heatmaps": result.heatmaps, "images": len(images),
        "status": {str(k): int(v) for k, v in images["status"].value_counts().items()},
        "positives": int(((images["status"] == "ok") & (images["score"] >= 0.5)).sum()),
        "regions": len(result.regions), "grid": result.grid,
        "cluster": result.cluster,
    }
