"""``idigdask evaluate MODEL_DIR [STORE]``: metrics and plots on the held-out specimens."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_cluster_options, cluster_client, storage_options_arg, wants_cluster, with_cluster

#: The flags that set a field of EvaluateOptions, by field name.
OPTION_FLAGS = ("batch_size", "n_worst")


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="score a model on its held-out test specimens",
                       description=__doc__)
    p.add_argument("model_dir", help="a model folder written by 'idigdask train'")
    p.add_argument("store", nargs="?", default=None,
                   help="the image store (default: the one the model was trained on)")
    p.add_argument("-o", "--output", default=None, metavar="REPORT_DIR",
                   help="where metrics.json and the plots go (MODEL_DIR/evaluation)")
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec storage options of the store, as JSON")
    p.add_argument("--compare", action="append", default=None, metavar="MODEL_DIR",
                   help="another model folder (e.g. 'idigdask train --model baseline') scored "
                        "beside it in the same report; repeatable")
    # every default is the dask config's (idigdask.yaml): a flag given overrides it
    option = p.add_argument_group("evaluation options (defaults: dask config idigdask.evaluate)")
    option.add_argument("--batch-size", type=int, help="images per inference step (64)")
    option.add_argument("--n-worst", type=int, metavar="N",
                        help="worst-classified test images listed and shown (16)")
    add_cluster_options(p)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..evaluate import evaluate

    overrides = {name: getattr(args, name) for name in OPTION_FLAGS
                 if getattr(args, name) is not None}
    storage_options = storage_options_arg(args.storage_options)
    if wants_cluster(args):
        with cluster_client(args) as client:
            metrics = evaluate(args.model_dir, args.store, overrides, out=args.output,
                               storage_options=storage_options, compare=args.compare,
                               client=client)
            return with_cluster(_summary(metrics), client)
    # without a cluster, batches are read ahead in a local thread pool
    return _summary(evaluate(args.model_dir, args.store, overrides, out=args.output,
                             storage_options=storage_options, compare=args.compare,
                             client=False))


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    # a store of sounds is scored by clip, and by recording (the mean of its clips)
    sounds = "recordings" in metrics
    recordings = ({"test_recordings": metrics["recordings"]["n"],
                   "recording_accuracy": metrics["recordings"]["accuracy"]} if sounds else {})
    return {
        "report_dir": metrics["report_dir"],
        "test_clips" if sounds else "test_images": metrics["n"], **recordings,
        "accuracy": metrics["accuracy"], "macro_f1": metrics["macro"]["f1"],
        "roc_auc": metrics["roc_auc"],
        "confusion_matrix": str(metrics["confusion_matrix"]["matrix"]),
        "by_recordset": {k: v["accuracy"] for k, v in metrics["by_recordset"].items()},
        "compared": {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"],
                         "roc_auc": v["roc_auc"]} for k, v in metrics.get("compared", {}).items()},
        "plots": metrics["plots"],
    }
