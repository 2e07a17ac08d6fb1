"""Score images with a trained model on the Dask workers.

The source is either an image store (one task per group of Zarr chunks, never one per
image) or a catalog (one task per batch of rows: fetch, decode, resize and score without
writing a store, using the build stage's :func:`idigdask.build.process_batch`).

The model file travels to the workers as data, not as a path, so workers need not
see the driver's file system (batch jobs on compute nodes): one task holds its bytes
and every worker gets them once, from the scheduler's peers, as a dependency of its
first scoring task (the scheduler can run that task again if the worker holding
them leaves). Each worker process loads the model once and keeps it, keyed by the
file's digest, for every later task: loading Keras and the model costs seconds, a
chunk of images a fraction of that.

The settings of :func:`predict` are one :class:`PredictOptions`, whose defaults are
the dask config's ``idigdask.predict`` (and ``idigdask.build`` and ``idigdask.fetch``
for a catalog's media).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .build import BuildOptions
from .decode import RESIZE_MODES
from .errors import UserError
from .fetch import FetchOptions
from .options import OptionError, check, coerce_fields, setting, with_overrides
from .store import layout_of


@dataclass
class PredictOptions:
    """How :func:`predict` scores a store or a catalog.

    Every default is the dask config's ``idigdask.predict.<field>``
    (``idigdask.yaml``; ``DASK_IDIGDASK__PREDICT__BATCH_SIZE=128``), and
    ``idigdask.build`` and ``idigdask.fetch`` for ``build``; see
    :mod:`idigdask.options`.

    Parameters
    ----------
    batch_size : int
        Images per Keras inference step on a worker.
    chunks_per_task : int
        Zarr chunks scored by one task (store source).
    catalog_batch_size : int
        Catalog rows fetched, decoded and scored by one task (catalog source).
    resize_mode : {"pad", "crop", "stretch"}, optional
        How catalog images are brought to the model's size; None: the resize mode of
        the store the model was trained on.
    build : BuildOptions
        How catalog media are fetched and decoded (timeouts, byte caps, address
        policy, decode limits). Its ``size`` and ``resize_mode`` are not used: images
        are made the model's size, with ``resize_mode``. ``allow_local`` None fetches
        local files only for a local catalog, as a build does; fetch storage options
        left None are the call's ``storage_options``.

    Examples
    --------
    >>> from idigdask import PredictOptions
    >>> PredictOptions(batch_size=64).batch_size
    64
    """

    batch_size: int = setting("predict.batch-size")
    chunks_per_task: int = setting("predict.chunks-per-task")
    catalog_batch_size: int = setting("predict.catalog-batch-size")
    resize_mode: str | None = setting("predict.resize-mode")
    build: BuildOptions = field(default_factory=BuildOptions)

    def __post_init__(self) -> None:
        if isinstance(self.build, dict):
            self.build = BuildOptions(**self.build)
        coerce_fields(self)
        if not isinstance(self.build, BuildOptions):
            raise UserError(f"build must be a BuildOptions, not {type(self.build).__name__}")
        check(self, {
            "batch_size": (lambda v: v >= 1, "at least 1"),
            "chunks_per_task": (lambda v: v >= 1, "at least 1"),
            "catalog_batch_size": (lambda v: v >= 1, "at least 1"),
            "resize_mode": (lambda v: v is None or v in RESIZE_MODES,
                            f"one of {', '.join(RESIZE_MODES)}"),
        })


def predict_options(options: PredictOptions | dict | None,
                    overrides: dict[str, Any]) -> PredictOptions:
    """``options`` with keyword overrides of its own fields, its build's or its fetch's.

    ``allow_local=True`` goes to ``build``, ``allow_private=True`` or ``timeout=5`` to
    ``build.fetch``; an unknown name is an :class:`~idigdask.options.OptionError`.
    """
    own = {f.name for f in dataclasses.fields(PredictOptions)}
    mine = {k: v for k, v in overrides.items() if k in own}
    rest = {k: v for k, v in overrides.items() if k not in own}
    if "size" in rest:
        raise OptionError("size", "predict makes images the model's size")
    options = with_overrides(PredictOptions, options, mine)
    if rest:
        build_names = {f.name for f in dataclasses.fields(BuildOptions)}
        fetch_names = {f.name for f in dataclasses.fields(FetchOptions)}
        unknown = sorted(set(rest) - build_names - fetch_names)
        if unknown:
            raise OptionError(unknown[0], "not an option of PredictOptions")
        build = with_overrides(BuildOptions, options.build, rest, nested={"fetch": FetchOptions})
        options = dataclasses.replace(options, build=build)
    return options

@dataclass(frozen=True)
class ModelFile:
    """The bytes of a saved Keras model, as they are shipped to the workers."""

    name: str
    digest: str
    data: bytes = field(repr=False)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "ModelFile":
        """The file at ``path``, with its SHA-256."""
        import hashlib

        data = Path(path).read_bytes()
        return cls(Path(path).name, hashlib.sha256(data).hexdigest(), data)


def _model_file(model: ModelFile) -> ModelFile:
    """The task that holds a model's bytes on the cluster (its argument)."""
    return model


_MODELS_LOCK = threading.Lock()
_PREDICT_LOCK = threading.Lock()
_LOCAL_MODELS: dict[str, Any] = {}
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


def worker_model(model: ModelFile):
    """Return the Keras model of ``model``, loading it once per worker process.

    The cache lives on the :class:`distributed.Worker` (attribute
    ``idigdask_models``; ``idigdask_model_loads`` counts the loads), or in this module
    outside a worker; it holds one model per file name, by digest, so a newer file
    of the same name replaces the cached model.
    """
    global LOCAL_MODEL_LOADS
    worker = _current_worker()
    with _MODELS_LOCK:
        if worker is not None:
            if not hasattr(worker, "idigdask_models"):
                worker.idigdask_models = {}
                worker.idigdask_model_loads = 0
            if not model.name.endswith(".npz") and not getattr(worker, "idigdask_shared", False):
                _share_cores(worker)  # Keras models only: a baseline never loads Keras
                worker.idigdask_shared = True
            cache = worker.idigdask_models
        else:
            cache = _LOCAL_MODELS
        key = f"{model.name}:{model.digest}"
        if key not in cache:
            for old in [k for k in cache if k.split(":")[0] == model.name]:
                del cache[old]  # keep one version of a model in memory
            cache[key] = _load(model, getattr(worker, "local_directory", None))
            if worker is not None:
                worker.idigdask_model_loads += 1
            else:
                LOCAL_MODEL_LOADS += 1
        return cache[key]


def _load(model: ModelFile, folder: str | None):
    """Load a model from its bytes (Keras reads a ``.keras`` file from a path)."""
    import tempfile

    if model.name.endswith(".npz"):  # the classical baseline (idigdask.baseline): NumPy
        from .baseline import BaselineModel

        return BaselineModel.from_bytes(model.data)
    import keras

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / (model.name if model.name.endswith(".keras") else "model.keras")
        path.write_bytes(model.data)
        return keras.saving.load_model(path, safe_mode=True)


def score_images(model: ModelFile, images: np.ndarray, *,
                 normalize: str | None, mean: Sequence[float] | None,
                 std: Sequence[float] | None, batch_size: int = 64) -> np.ndarray:
    """Class probabilities ``(n, k)`` of ``uint8`` images, with the worker's model."""
    from .batches import normalize_images

    net = worker_model(model)
    if len(images) == 0:
        return np.zeros((0, net.output_shape[-1]), dtype=np.float32)
    if images.ndim == 3:  # spectrograms: the one channel the feed gave them in training
        images = images[..., None]
    x = normalize_images(images, normalize, mean, std)
    # predict_on_batch skips the data-adapter set-up that model.predict pays on every
    # call (about 60 ms here): a task scores one or a few chunks, so that set-up dominated
    with _PREDICT_LOCK:  # one Keras call at a time per process
        return np.concatenate([np.asarray(net.predict_on_batch(x[i:i + batch_size]), np.float32)
                               for i in range(0, len(x), batch_size)])


def predict_store_block(store: str, storage_options: dict | None, start: int, stop: int,
                        model: ModelFile, **score_kwargs: Any) -> np.ndarray:
    """Scores of images (or clips) ``start:stop`` of a store (a whole number of chunks)."""
    from .batches import images_array

    images = np.asarray(images_array(store, storage_options)[0][start:stop])
    return score_images(model, images, **score_kwargs)


def predict_catalog_batch(rows: pd.DataFrame, options: Any, model: ModelFile,
                          **score_kwargs: Any) -> pd.DataFrame:
    """Fetch, decode, resize and score catalog rows; one result row per input row."""
    from .build import process_batch

    result = process_batch(rows, options)
    scores = score_images(model, result.pixels, **score_kwargs)
    ledger = result.ledger.reset_index(drop=True)
    full = np.full((len(ledger), scores.shape[1]), np.nan, dtype=np.float32)
    ok = ledger["pixel_index"].to_numpy() >= 0
    # a recording's score is the mean of its clips' (an image is one entry)
    full[ok] = recording_scores(scores, ledger.loc[ok, "pixel_index"].to_numpy(),
                                ledger.loc[ok, "samples"].clip(lower=1).to_numpy())
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


def recording_scores(scores: np.ndarray, first: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean class probabilities of each recording's clips.

    Parameters
    ----------
    scores : numpy.ndarray
        ``(n_clips, k)`` probabilities of the clips, recordings' clips consecutive.
    first, counts : numpy.ndarray of int
        Index of each recording's first clip, and its number of clips.

    Returns
    -------
    numpy.ndarray
        ``(len(first), k)`` float32.

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]], np.float32)
    >>> recording_scores(scores, np.array([0, 2]), np.array([2, 1])).astype(float).round(2).tolist()
    [[0.8, 0.2], [0.2, 0.8]]
    """
    first, counts = np.asarray(first, np.int64), np.asarray(counts, np.int64)
    if not len(first):
        return np.zeros((0, scores.shape[1]), np.float32)
    owner = np.repeat(np.arange(len(first)), counts)
    rows = np.concatenate([np.arange(f, f + c) for f, c in zip(first, counts)])
    sums = np.zeros((len(first), scores.shape[1]), np.float64)
    np.add.at(sums, owner, scores[rows])
    return (sums / counts[:, None]).astype(np.float32)


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
    from .batches import open_store, store_location

    ds = open_store(source, storage_options)
    location = store_location(ds)
    if location is None:
        raise UserError("predict needs the path or URL of a store, not an in-memory Dataset")
    kind = layout_of(ds)
    n = ds.sizes[kind.dim]
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
    if kind.media == "sounds":  # one row per recording, from its clips' scores
        base, scores = _per_recording(base, scores, np.asarray(ds["offset"].values, "float64"))
    base["status"] = "ok"
    base["reason"] = pd.Series([None] * len(base), dtype="string")
    return _assemble(base, scores, config["classes"])


def _per_recording(clips: pd.DataFrame, scores: np.ndarray,
                   offsets: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Recordings from their consecutive clips: the first clip's index, the clip count,
    the mean scores, and the offset (seconds) of the clip most sure of the winner."""
    starts = np.flatnonzero(np.r_[True, clips["media_uuid"].to_numpy()[1:]
                                  != clips["media_uuid"].to_numpy()[:-1]]) if len(clips) else \
        np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, len(clips)]).astype(np.int64)
    mean = recording_scores(scores, starts, counts)
    winner = np.argmax(mean, axis=1) if len(mean) else np.zeros(0, np.int64)
    peak = [s + int(np.argmax(scores[s:s + c, w])) for s, c, w in zip(starts, counts, winner)]
    out = clips.iloc[starts].reset_index(drop=True)
    out["clips"] = counts
    out["peak_offset"] = offsets[peak] if len(peak) else np.zeros(0)
    return out, mean


def _coord(ds, name: str) -> np.ndarray:
    return np.asarray(ds[name].values).astype(object).astype(str)


def _build_options(config: dict, options: PredictOptions, local: bool,
                   storage_options: dict | None) -> BuildOptions:
    """The build options of a catalog's media: the model's size, the call's defaults."""
    build = options.build
    if config.get("media") == "sounds":  # the clips the model was trained on
        changes: dict[str, Any] = {"media": "sounds", "sound": dataclasses.replace(
            build.sound, **{k: v for k, v in (config.get("sound") or {}).items()
                            if k in {f.name for f in dataclasses.fields(build.sound)}})}
    else:
        changes = {"size": int(config["size"]),
                   "resize_mode": options.resize_mode or config.get("resize_mode") or "pad"}
    if build.allow_local is None:
        changes["allow_local"] = local
    if build.fetch.storage_options is None and storage_options is not None:
        changes["fetch"] = dataclasses.replace(build.fetch, storage_options=storage_options)
    return dataclasses.replace(build, **changes)


def _predict_catalog(client, config: dict, source: Any, storage_options: dict | None,
                     score_kwargs: dict, options: PredictOptions,
                     catalog_options: dict) -> pd.DataFrame:
    from .catalog.read import iter_partitions, open_catalog

    catalog_options = {"media_type": config.get("media") or "images", **catalog_options}
    catalog, _, local = open_catalog(source, storage_options, **catalog_options)
    build = _build_options(config, options, local, storage_options)
    step = options.catalog_batch_size
    futures = []
    for part in iter_partitions(client, catalog):  # the driver holds one at a time
        part = part.reset_index(drop=True)
        futures += [client.submit(predict_catalog_batch, part.iloc[s:s + step], build,
                                  pure=False, **score_kwargs)
                    for s in range(0, len(part), step)]
    parts = client.gather(futures)
    k = len(config["classes"])
    if not parts:
        return _assemble(pd.DataFrame(columns=["media_uuid", "status", "reason"]),
                         np.zeros((0, k), np.float32), config["classes"])
    table = pd.concat(parts, ignore_index=True)
    scores = np.stack(table.pop("_scores").to_list())
    return _assemble(table, scores, config["classes"])


def predict(model_dir: str | os.PathLike, source: Any,
            options: PredictOptions | dict | None = None, *,
            out: str | os.PathLike | None = "predictions.parquet",
            storage_options: dict | None = None, catalog_options: dict[str, Any] | None = None,
            client: Any = None, cluster: str | None = None, jobs: int | str | None = None,
            cluster_options: dict | None = None, **overrides: Any) -> pd.DataFrame:
    """Score every image of a store or a catalog with a trained model.

    Parameters
    ----------
    model_dir : str or path
        A folder written by :func:`idigdask.train`.
    source : str, path or xarray.Dataset
        An image store (a Zarr store, detected by its ``zarr.json``) or anything
        :func:`idigdask.read_catalog` takes.
    options : PredictOptions or dict, optional
        Batch sizes, task sizes and how catalog media are fetched and decoded;
        defaults from the dask config ``idigdask.predict`` (``idigdask.build`` and
        ``idigdask.fetch`` for the media).
    out : str or path, optional
        Parquet file to write (None: write nothing).
    storage_options : dict, optional
        fsspec options for the store or catalog, and for the media unless
        ``options.build.fetch`` has its own.
    catalog_options : dict, optional
        Extra keyword arguments of :func:`~idigdask.read_catalog` (``url_column``,
        ``id_column``, ``label_column``, ``format``) when ``source`` is a catalog.
    client : distributed.Client or str, optional
        Where to run: this client, or the address of a scheduler to join; else the
        current client; else what the config ``idigdask.cluster`` says (see
        :func:`idigdask.get_client`).
    cluster, jobs, cluster_options : optional
        Run on workers in batch jobs of this kind (``"slurm"``, ``"sge"``...), as
        :func:`idigdask.get_client` takes them.
    **overrides
        Fields of :class:`PredictOptions` (``batch_size=8``), of its
        :class:`~idigdask.build.BuildOptions` (``allow_local=True``) or of their
        :class:`~idigdask.fetch.FetchOptions` (``timeout=5``), over ``options``.

    Returns
    -------
    pandas.DataFrame
        One row per image, or per recording for a model of sounds (the mean of its
        clips' scores; from a store with ``clips`` and ``peak_offset``): ``media_uuid``,
        ``status`` (ok / failed / excluded), ``reason``, ``score_<class>`` per class
        (NaN where not ok), ``predicted``; ``attrs["cluster"]`` says where it ran
        (:func:`idigdask.cluster.cluster_summary`), ``attrs["media"]`` what it scored.

    Raises
    ------
    UserError
        If ``model_dir`` is not a model folder or the source cannot be read.
    OptionError
        For an option out of range or unknown, naming it.
    """
    from .cluster import cluster_summary, get_client
    from .train import read_model_dir

    options = predict_options(options, overrides)
    config = read_model_dir(model_dir)
    model = ModelFile.read(config["model_path"])
    score_kwargs = dict(normalize=config["normalize"], mean=config["channel_mean"],
                        std=config["channel_std"], batch_size=options.batch_size)
    with get_client(client, cluster=cluster, jobs=jobs,
                    cluster_options=cluster_options) as dask_client:
        # one copy on the cluster, which every worker fetches once (see the module)
        score_kwargs["model"] = dask_client.submit(_model_file, model,
                                                   key=f"idigdask-model-{model.digest}")
        if is_store(source, storage_options):
            table = _predict_store(dask_client, config, source, storage_options,
                                   score_kwargs, options.chunks_per_task)
        else:
            table = _predict_catalog(dask_client, config, source, storage_options,
                                     score_kwargs, options, catalog_options or {})
        where = cluster_summary(dask_client)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out, index=False)
    table.attrs["cluster"] = where  # after writing: not a column of the file
    table.attrs["media"] = config.get("media") or "images"  # a row per image, or per recording
    return table
