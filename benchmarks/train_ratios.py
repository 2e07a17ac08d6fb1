"""Two ratios of the training stage, measured side by side in one run.

1. Training steps/s of the reference CNN fed by :class:`idigdask.loaders.keras.StoreFeed` from
   a local store, over the same model fed from the same images held in memory as a
   numpy array (target: at least 0.9, the I/O hidden behind compute).
2. Prediction images/s over a store with a LocalCluster of 2 workers, over 1 worker
   (target: at least 1.6 on a 2-core machine).

Each figure is the median of ``--repeat`` runs, the two variants interleaved so that
drift on a shared machine hits both alike. Run::

    python benchmarks/train_ratios.py [--n 512] [--epochs 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks._data import image_store, start_cluster  # noqa: E402
from benchmarks.bench_predict import trained_model  # noqa: E402


def _steps_per_s(fit, steps: int) -> float:
    started = time.perf_counter()
    fit()
    return steps / (time.perf_counter() - started)


def training_ratio(store: str, *, epochs: int, batch_size: int, input_size: int,
                   repeat: int) -> dict:
    """Steps/s fed by the store's feed and fed from memory, interleaved."""
    import keras
    import numpy as np

    from idigdask.loaders.keras import StoreFeed
    from idigdask.models import compile_model, smithsonian_cnn
    from idigdask.store import open_dataset

    ds = open_dataset(store)
    labels = (ds.label.values.astype(str) == "1").astype("int64")
    mean, std = np.array(ds.attrs["channel_mean"]), np.array(ds.attrs["channel_std"])
    images = (ds.images.values.astype("float32") - mean) / std
    shape = images.shape[1:]
    steps = epochs * -(-len(labels) // batch_size)

    def model():
        keras.utils.set_random_seed(0)
        net = smithsonian_cnn(shape, 2, input_size=input_size)
        compile_model(net, 1e-4)
        return net

    def from_memory():
        model().fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True,
                    verbose=0)

    def from_feed():
        feed = StoreFeed(store, labels=labels, n_classes=2, batch_size=batch_size,
                         shuffle=True, seed=0, normalize="store", augment=False,
                         client=False)
        try:
            model().fit(feed, epochs=epochs, shuffle=False, verbose=0)
        finally:
            feed.close()

    memory, fed = [], []
    for _ in range(repeat):
        memory.append(_steps_per_s(from_memory, steps))
        fed.append(_steps_per_s(from_feed, steps))
    m, f = statistics.median(memory), statistics.median(fed)
    return {"memory_steps_per_s": round(m, 3), "feed_steps_per_s": round(f, 3),
            "ratio": round(f / m, 3)}


def predict_scaling(store: str, model_dir: str, *, repeat: int) -> dict:
    """Images/s of predict over a store with 1 and with 2 worker processes."""
    from idigdask.predict import predict
    from idigdask.store import open_dataset

    n = open_dataset(store).sizes["image"]
    rates: dict[int, list[float]] = {1: [], 2: []}
    clusters = {w: start_cluster(w, True) for w in (1, 2)}
    try:
        for workers, (_, client) in clusters.items():  # load TensorFlow and the model
            predict(model_dir, store, out=None, client=client)
        for _ in range(repeat):
            for workers, (_, client) in clusters.items():
                started = time.perf_counter()
                predict(model_dir, store, out=None, client=client)
                rates[workers].append(n / (time.perf_counter() - started))
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    return {"1_worker_images_per_s": round(one, 1), "2_workers_images_per_s": round(two, 1),
            "ratio": round(two / one, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="images in the store")
    parser.add_argument("--size", type=int, default=128, help="side of the stored images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["train", "predict"], default=None)
    args = parser.parse_args(argv)
    store = image_store(args.n, size=args.size)
    out = {"machine": f"{os.cpu_count()} cores", "store": f"{args.n} images of {args.size} px"}
    if args.only in (None, "train"):
        out["training"] = training_ratio(store, epochs=args.epochs, batch_size=args.batch_size,
                                         input_size=args.size, repeat=args.repeat)
        print("training:", out["training"], flush=True)
    if args.only in (None, "predict"):
        model_dir = trained_model(image_store(128, size=args.size), input_size=64)
        out["predict"] = predict_scaling(store, model_dir, repeat=args.repeat)
        print("predict:", out["predict"], flush=True)
    return out


if __name__ == "__main__":
    main()
