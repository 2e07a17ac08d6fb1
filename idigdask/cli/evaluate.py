"""``idigdask evaluate MODEL_DIR [STORE]``: metrics and plots on the held-out specimens."""

from __future__ import annotations

import argparse
from typing import Any

from . import storage_options_arg


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="score a model on its held-out test specimens",
                       description=__doc__)
    p.add_argument("model_dir", help="a model folder written by 'idigdask train'")
    p.add_argument("store", nargs="?", default=None,
                   help="the image store (default: the one the model was trained on)")
    p.add_argument("-o", "--output", default=None, metavar="REPORT_DIR",
                   help="where metrics.json and the plots go (MODEL_DIR/evaluation)")
    p.add_argument("--batch-size", type=int, default=64, help="images per inference step (64)")
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec storage options of the store, as JSON")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..evaluate import evaluate

    metrics = evaluate(args.model_dir, args.store, out=args.output,
                       storage_options=storage_options_arg(args.storage_options),
                       batch_size=args.batch_size, client=False)
    return {
        "report_dir": metrics["report_dir"], "test_images": metrics["n"],
        "accuracy": metrics["accuracy"], "macro_f1": metrics["macro"]["f1"],
        "roc_auc": metrics["roc_auc"],
        "confusion_matrix": str(metrics["confusion_matrix"]["matrix"]),
        "plots": metrics["plots"],
    }
