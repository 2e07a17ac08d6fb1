"""Predict: images/s of a trained CNN scoring every image of a store on Dask workers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ._data import cache_root, image_store, start_cluster

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def trained_model(store: str, *, input_size: int = 64, root: str | None = None) -> str:
    """A model folder trained for one epoch on ``store`` (cached: training is not measured)."""
    from idigdask.train import train

    folder = Path(root or cache_root()) / f"model-{Path(store).name}-in{input_size}"
    if not (folder / "done.json").exists():
        train(store, label="label", epochs=1, batch_size=32, out=str(folder), seed=0,
              input_size=input_size, augment=False, patience=0, client=False, verbose=0)
        (folder / "done.json").write_text(json.dumps({"store": store}))
    return str(folder)


class PredictSuite:
    """``idigdask.predict.predict`` over a 256x256 store, the model trained at 64x64.

    Workers load the model once and keep it; ``setup`` runs one prediction first, so
    the figures are of scoring, not of starting TensorFlow.
    """

    number = 1
    repeat = (1, 3, 20.0)
    warmup_time = 0
    #: Worker processes (False: threads in this process, for quick checks).
    processes = True
    timeout = 900
    n = 512
    workers = 2
    train_n = 128
    input_size = 64

    def setup_cache(self) -> dict:
        store = image_store(self.n)
        model = trained_model(image_store(self.train_n), input_size=self.input_size)
        return {"store": store, "model": model}

    def setup(self, cached: dict) -> None:
        self.cluster, self.client = start_cluster(self.workers, self.processes)
        self._predict(cached)  # load TensorFlow and the model on every worker

    def teardown(self, cached: dict) -> None:
        self.client.close()
        self.cluster.close()

    def _predict(self, cached: dict) -> float:
        from idigdask.predict import predict

        t0 = time.perf_counter()
        table = predict(cached["model"], cached["store"], out=None, client=self.client)
        seconds = time.perf_counter() - t0
        if len(table) != self.n:
            raise RuntimeError(f"scored {len(table)} of {self.n} images")
        return seconds

    def time_predict(self, cached: dict) -> None:
        self._predict(cached)

    def peakmem_predict(self, cached: dict) -> None:
        """Peak RSS of the driving process only (the model runs on the workers)."""
        self._predict(cached)

    def track_images_per_s(self, cached: dict) -> float:
        return self.n / self._predict(cached)

    track_images_per_s.unit = "images/s"
