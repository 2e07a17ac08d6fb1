"""``idigdask train STORE -o MODEL_DIR``: train a classifier on a labelled image store."""

from __future__ import annotations

import argparse
from typing import Any

from . import add_cluster_options, cluster_client, storage_options_arg, wants_cluster, with_cluster

#: The flags that set a field of TrainOptions or of its FeedOptions, by field name.
OPTION_FLAGS = ("label", "model", "classifier", "weights", "epochs", "batch_size", "seed",
                "input_size", "learning_rate", "patience", "lr_patience", "bn_momentum",
                "augment", "split_by", "resume", "verbose")


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a CNN (or the classical baseline) on a labelled "
                       "image store",
                       description=__doc__)
    p.add_argument("store", help="the image store: a folder or fsspec URL")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                   help="the model folder to write")
    p.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec storage options of the store, as JSON")
    # every default is the dask config's (idigdask.yaml): a flag given overrides it
    option = p.add_argument_group("training options (defaults: dask config idigdask.train "
                                  "and idigdask.feed)")
    option.add_argument("--label", help="the store's label coordinate (label)")
    option.add_argument("--model",
                        help="smithsonian, calls (spectrograms), resnet50, mobilenetv3, "
                             "efficientnetb0, or baseline: colour and texture features and a "
                             "dask-ml classifier (smithsonian for images, calls for sounds)")
    option.add_argument("--classifier",
                        help="the baseline's: dask-ml LogisticRegression, or an Incremental "
                             "SGDClassifier for features that do not fit in memory (logistic)")
    option.add_argument("--weights", metavar="FILE",
                        help="local weights file of a backbone (never downloaded)")
    option.add_argument("--epochs", type=int, help="epochs (10)")
    option.add_argument("--batch-size", type=int, help="images per step (32)")
    option.add_argument("--seed", type=int, help="seed of split, order and weights (0)")
    option.add_argument("--input-size", type=int, metavar="PX",
                        help="train the network at this size (resized inside the model)")
    option.add_argument("--learning-rate", type=float, help="Adam learning rate (1e-4)")
    option.add_argument("--patience", type=int,
                        help="epochs without a better val_loss before stopping; 0: never (3)")
    option.add_argument("--lr-patience", type=int,
                        help="halve the learning rate after this many epochs without a "
                             "better val_loss; 0: never (0)")
    option.add_argument("--bn-momentum", type=float,
                        help="batch-norm momentum of the smithsonian network (0.99)")
    option.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                        help="no flips, turns, shifts or colour jitter")
    option.add_argument("--split-by",
                        help="keep specimens together, or hold whole recordsets (providers) "
                             "out of training (specimen)")
    option.add_argument("--resume", action="store_const", const=True,
                        help="continue from the last checkpoint")
    option.add_argument("--quiet", dest="verbose", action="store_const", const=0,
                        help="no per-epoch lines")
    # the network trains in this process; the feed reads batches on the workers
    add_cluster_options(p)
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..train import train

    storage_options = storage_options_arg(args.storage_options)
    overrides = {name: getattr(args, name) for name in OPTION_FLAGS
                 if getattr(args, name) is not None}
    if wants_cluster(args):
        with cluster_client(args) as client:
            result = train(args.store, args.output, overrides, client=client,
                           storage_options=storage_options)
            return with_cluster(result.summary(), client)
    # without a cluster, batches are read ahead in a local thread pool
    return train(args.store, args.output, overrides, client=False,
                 storage_options=storage_options).summary()
