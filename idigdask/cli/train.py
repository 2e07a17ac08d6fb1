"""``idigdask train STORE -o MODEL_DIR``: train a classifier on a labelled image store."""

from __future__ import annotations

import argparse
from typing import Any

from . import storage_options_arg


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a CNN on a labelled image store",
                       description=__doc__)
    p.add_argument("store", help="the image store: a folder or fsspec URL")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                   help="the model folder to write")
    p.add_argument("--label", default="label", help="the store's label coordinate (label)")
    p.add_argument("--model", default="smithsonian",
                   help="smithsonian, resnet50, mobilenetv3, efficientnetb0 (smithsonian)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="local weights file of a backbone (never downloaded)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (10)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (32)")
    p.add_argument("--seed", type=int, default=0, help="seed of split, order and weights (0)")
    p.add_argument("--input-size", type=int, default=None, metavar="PX",
                   help="train the network at this size (resized inside the model)")
    p.add_argument("--learning-rate", type=float, default=None, help="Adam learning rate (1e-4)")
    p.add_argument("--patience", type=int, default=3,
                   help="epochs without a better val_loss before stopping; 0: never (3)")
    p.add_argument("--no-augment", action="store_true", help="no flips, turns or colour jitter")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec storage options of the store, as JSON")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="read batches on the workers of this Dask scheduler")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..train import train

    storage_options = storage_options_arg(args.storage_options)
    kwargs = dict(label=args.label, model=args.model, epochs=args.epochs,
                  batch_size=args.batch_size, out=args.output, seed=args.seed,
                  input_size=args.input_size, learning_rate=args.learning_rate,
                  patience=args.patience, augment=not args.no_augment, resume=args.resume,
                  storage_options=storage_options, verbose=0 if args.quiet else 1,
                  weights=args.weights)
    if args.scheduler:
        from ..cluster import get_client

        with get_client(scheduler=args.scheduler) as client:
            result = train(args.store, client=client, **kwargs)
    else:
        # Without a scheduler, batches are read ahead in a local thread pool.
        result = train(args.store, client=False, **kwargs)
    return result.summary()
