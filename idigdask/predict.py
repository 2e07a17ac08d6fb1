"""Score images with a trained model on the Dask workers.

The source is either an image store (one task per group of Zarr chunks, never one per
image) or a catalog (one task per batch of rows: fetch, decode, resize and score without
writing a store, using the build stage's :func:`idigdask.build.process_batch`).

Each worker process loads the model once and keeps it (keyed by the file's path and
modification time) for every later task, instead of once per task: loading Keras and
the model costs seconds, a chunk of images a fraction of that.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import UserError

_MODELS_LOCK = threading.Lock()
_PREDICT_LOCK = threading.Lock()
_LOCAL_MODELS: dict[tuple[str, int], Any] = {}
#: Models loaded in this process outside any Dask worker (a counter the tests read).
LOCAL_MODEL_LOADS = 0


# ---------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------
def _current_worker():
    try:
        from distributed import get_worker
        return get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker
        return None


def _share_cores(worker) -> None:
    """Keep TensorFlow on a worker to that worker's threads.

    TensorFlow otherwise runs a thread per core in every worker process, so workers
    on one machine fight over the cores and adding workers adds nothing.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, int(worker.state.nthreads)))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, int(worker.state.nthreads)))
    except RuntimeError:  # TensorFlow already started in this process: leave it
        pass


def worker_model(model_path: str, mtime_ns: int):
    """Return the model at ``model_path``, loading it once per worker process.

    The cache lives on the :class:`distributed.Worker` (attribute
    ``idigdask_models``; ``idigdask_model_loads`` counts the loads), or in this module
    outside a worker. A newer file (another ``mtime_ns``) replaces the cached model.
    """
    global LOCAL_MODEL_LOADS
    worker = _current_worker()
    with _MODELS_LOCK:
        if worker is not None:
            if not hasattr(worker, "idigdask_models"):
                _share_cores(worker)
                worker.idigdask_models = {}
                worker.idigdask_model_loads = 0
            cache = worker.idigdask_models
        else:
            cache = _LOCAL_MODELS
        key = (model_path, int(mtime_ns))
        if key not in cache:
            import keras

            for old in [k for k in cache if k[0] == model_path]:
                del cache[old]  # keep one version of a model in memory
            cache[key] = keras.saving.load_model(model_path, safe_mode=True)
            if worker is not None:
                worker.idigdask_model_loads += 1
            else:
                LOCAL_MODEL_LOADS += 1
        return cache[key]


def score_images(model_path: str, mtime_ns: int, images: np.ndarray, *,
                 normalize: str | None, mean: Sequence[float] | None,
                 std: Sequence[float] | None, batch_size: int = 64) -> np.ndarray:
    """Class probabilities ``(n, k)`` of ``uint8`` images, with the worker's model."""
    from .feed import normalize_images

    model = worker_model(model_path, mtime_ns)
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    x = normalize_images(images, normalize, mean, std)
    # predict_on_batch skips the data-adapter set-up that model.predict pays on every
    # call (about 60 ms here): a task scores one or a few chunks, so that set-up dominated
    with _PREDICT_LOCK:  # one Keras call at a time per process
        return np.concatenate([np.asarray(model.predict_on_batch(x[i:i + batch_size]), np.float32)
                               for i in range(0, len(x), batch_size)])


def predict_store_block(store: str, storage_options: dict | None, start: int, stop: int,
                        model_path: str, mtime_ns: int, **score_kwargs: Any) -> np.ndarray:
    """Scores of images ``start:stop`` of a store (a whole number of chunks)."""
    from .feed import _images_array

    images = np.asarray(_images_array(store, storage_options)[0][start:stop])
    return score_images(model_path, mtime_ns, images, **score_kwargs)


def predict_catalog_batch(rows: pd.DataFrame, options: Any, model_path: str, mtime_ns: int,
                          **score_kwargs: Any) -> pd.DataFrame:
    """Fetch, decode, resize and score catalog rows; one result row per input row."""
    from .build import process_batch

    result = process_batch(rows, options)
    scores = score_images(model_path, mtime_ns, result.pixels, **score_kwargs)
    ledger = result.ledger.reset_index(drop=True)
    full = np.full((len(ledger), scores.shape[1]), np.nan, dtype=np.float32)
    ok = ledger["pixel_index"].to_numpy() >= 0
    full[ok] = scores[ledger.loc[ok, "pixel_index"].to_numpy()]
    keep = [c for c in ("media_uuid", "access_uri", "status", "reason", "message")
            if c in ledger]
    out = ledger[keep].copy()
    out["_scores"] = list(full)
    return out


# ---------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------
def is_store(source: Any, storage_options: dict | None = None) -> bool:
    """Whether ``source`` is a Zarr store (an xarray Dataset, or a folder/URL holding
    ``zarr.json``) rather than a catalog."""
    import xarray as xr

    if isinstance(source, xr.Dataset):
        return True
    if not isinstance(source, (str, os.PathLike)):
        return False
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(str(source), **(storage_options or {}))
        path = path.rstrip("/")
        return fs.isdir(path) and (fs.exists(f"{path}/zarr.json") or fs.exists(f"{path}/.zgroup"))
    except (OSError, ValueError, ImportError):  # not a filesystem path: a catalog source
        return False


def _assemble(base: pd.DataFrame, scores: np.ndarray, classes: list) -> pd.DataFrame:
    out = base.reset_index(drop=True).copy()
    ok = out["status"].to_numpy() == "ok"
    for i, c in enumerate(classes):
        out[f"score_{c}"] = scores[:, i].astype(np.float32)
    predicted = np.where(ok, np.argmax(np.nan_to_num(scores, nan=-1.0), axis=1), -1)
    labels = pd.Series([classes[p] if p >= 0 else None for p in predicted], dtype=object)
    if all(isinstance(c, int) for c in classes):
        out["predicted"] = pd.array([None if v is None else int(v) for v in labels], dtype="Int64")
    else:
        out["predicted"] = labels.astype("string")
    return out


def _predict_store(client, config: dict, source: Any, storage_options: dict | None,
                   score_kwargs: dict, chunks_per_task: int) -> pd.DataFrame:
    from .feed import open_store, store_location

    ds = open_store(source, storage_options)
    location = store_location(ds)
    if location is None:
        raise UserError("predict needs the path or URL of a store, not an in-memory Dataset")
    n = ds.sizes["image"]
    step = int(ds.attrs.get("chunk_size") or 64) * max(1, int(chunks_per_task))
    futures = [client.submit(predict_store_block, location, storage_options, start,
                             min(start + step, n), pure=False, **score_kwargs)
               for start in range(0, n, step)]
    blocks = client.gather(futures)
    k = len(config["classes"])
    scores = np.concatenate(blocks) if blocks else np.zeros((0, k), np.float32)
    base = pd.DataFrame({"media_uuid": _coord(ds, "media_uuid")})
    for name in ("record_uuid", "access_uri"):
        if name in ds.coords:
            base[name] = _coord(ds, name)
    base["image_index"] = np.arange(n, dtype=np.int64)
    base["status"] = "ok"
    base["reason"] = pd.Series([None] * n, dtype="string")
    return _assemble(base, scores, config["classes"])


def _coord(ds, name: str) -> np.ndarray:
    return np.asarray(ds[name].values).astype(object).astype(str)


def _catalog_frame(source: Any, storage_options: dict | None,
                   catalog_kwargs: dict) -> tuple[pd.DataFrame, bool]:
    """The normalized catalog as pandas, and whether it is a local source."""
    from .catalog import read_catalog
    from .fetch import classify_scheme

    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True), True
    if hasattr(source, "compute"):  # a Dask DataFrame of a normalized catalog
        return source.compute().reset_index(drop=True), True
    catalog = read_catalog(str(source), storage_options=storage_options,
                           **{k: v for k, v in catalog_kwargs.items() if v is not None})
    if hasattr(catalog, "compute"):
        catalog = catalog.compute()
    return catalog.reset_index(drop=True), classify_scheme(str(source)) in ("file", "local")


def _build_options(config: dict, build_options: Any, local: bool,
                   storage_options: dict | None):
    from .build import BuildOptions
    from .fetch import FetchOptions

    if isinstance(build_options, BuildOptions):
        options = build_options
    else:
        extra = dict(build_options or {})
        extra.setdefault("resize_mode", config.get("resize_mode") or "pad")
        extra.setdefault("allow_local", local)
        extra.setdefault("fetch", FetchOptions(storage_options=storage_options))
        options = BuildOptions(size=int(config["size"]), **extra)
    if options.size != int(config["size"]):
        raise UserError(f"build size {options.size} differs from the model's {config['size']}")
    return options


def _predict_catalog(client, config: dict, source: Any, storage_options: dict | None,
                     score_kwargs: dict, catalog_batch_size: int, catalog_kwargs: dict,
                     build_options: Any) -> pd.DataFrame:
    catalog, local = _catalog_frame(source, storage_options, catalog_kwargs)
    options = _build_options(config, build_options, local, storage_options)
    futures = [client.submit(predict_catalog_batch, catalog.iloc[s:s + catalog_batch_size],
                             options, pure=False, **score_kwargs)
               for s in range(0, len(catalog), catalog_batch_size)]
    parts = client.gather(futures)
    k = len(config["classes"])
    if not parts:
        return _assemble(pd.DataFrame(columns=["media_uuid", "status", "reason"]),
                         np.zeros((0, k), np.float32), config["classes"])
    table = pd.concat(parts, ignore_index=True)
    scores = np.stack(table.pop("_scores").to_list())
    return _assemble(table, scores, config["classes"])


def predict(model_dir: str | os.PathLike, source: Any, *,
            out: str | os.PathLike | None = "predictions.parquet",
            storage_options: dict | None = None, client: Any = None,
            scheduler: str | None = None, batch_size: int = 64, chunks_per_task: int = 4,
            catalog_batch_size: int = 64, source_format: str | None = None,
            url_column: str | None = None, id_column: str | None = None,
            label_column: str | None = None, build_options: Any = None) -> pd.DataFrame:
    """Score every image of a store or a catalog with a trained model.

    Parameters
    ----------
    model_dir : str or path
        A folder written by :func:`idigdask.train`.
    source : str, path or xarray.Dataset
        An image store (a Zarr store, detected by its ``zarr.json``) or anything
        :func:`idigdask.read_catalog` takes.
    out : str or path, optional
        Parquet file to write (None: write nothing).
    storage_options : dict, optional
        fsspec options for the store or catalog.
    client : distributed.Client, optional
        Run here; default: the current client, else ``scheduler``, else a LocalCluster
        started (and closed) for this call (see :func:`idigdask.cluster.get_client`).
    scheduler : str, optional
        Address of a Dask scheduler to join.
    batch_size : int
        Images per Keras inference step on a worker.
    chunks_per_task : int
        Zarr chunks scored by one task (store source).
    catalog_batch_size : int
        Catalog rows fetched and scored by one task (catalog source).
    source_format, url_column, id_column, label_column : str, optional
        Passed to :func:`idigdask.read_catalog` (as ``format=``, ...).
    build_options : idigdask.build.BuildOptions or dict, optional
        How catalog media are fetched and decoded (keyword arguments of
        ``BuildOptions``); the size, and by default the resize mode, are the model's;
        local files are fetched by default only for a local catalog, as in ``build``.

    Returns
    -------
    pandas.DataFrame
        One row per image: ``media_uuid``, ``status`` (ok / failed / excluded),
        ``reason``, ``score_<class>`` per class (NaN where not ok), ``predicted``.

    Raises
    ------
    UserError
        If ``model_dir`` is not a model folder or the source cannot be read.
    """
    from .cluster import get_client
    from .train import read_model_dir

    config = read_model_dir(model_dir)
    model_path = str(Path(config["model_path"]).resolve())
    score_kwargs = dict(model_path=model_path, mtime_ns=os.stat(model_path).st_mtime_ns,
                        normalize=config["normalize"], mean=config["channel_mean"],
                        std=config["channel_std"], batch_size=batch_size)
    with get_client(client, scheduler=scheduler) as dask_client:
        if is_store(source, storage_options):
            table = _predict_store(dask_client, config, source, storage_options,
                                   score_kwargs, chunks_per_task)
        else:
            table = _predict_catalog(
                dask_client, config, source, storage_options, score_kwargs,
                catalog_batch_size,
                dict(format=source_format, url_column=url_column, id_column=id_column,
                     label_column=label_column), build_options)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out, index=False)
    return table
