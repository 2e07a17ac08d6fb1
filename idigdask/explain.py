"""Stain maps: where a trained model looks on each sheet (Grad-CAM), on the Dask workers.

For every image of a store, :func:`idigdask.explain` computes a Grad-CAM heatmap (Selvaraju et
al. 2017): the feature map of the model's last convolution, each channel weighted by
the mean gradient of the explained class's logit over it, summed, kept where positive,
resized to the image and scaled to a maximum of 1. It runs on the workers with the
prediction stage's machinery (:mod:`idigdask.predict`: the model's bytes shipped once
per worker, loaded once per process, one task per group of Zarr chunks), with Keras 3
and ``keras.ops`` only, so it runs on the TensorFlow and the JAX backends; the one
step Keras has no backend-agnostic call for, a gradient, is ``_gradients``.

Each heatmap becomes regions with scikit-image (Otsu's threshold, connected
components, ``regionprops``) whose area, centroid and bounding box are given in the
pixels of the original sheet: the store's ``source_width``, ``source_height``,
``size`` and ``resize_mode`` say how the sheet was letterboxed, cropped or stretched
into the square, and :class:`SheetGeometry` undoes it.

The output folder holds::

    heatmaps.zarr     the heatmaps (image, y, x) float16 in [0, 1], aligned with the
                      store's images, with its provenance coordinates and a score
    regions.parquet   one row per region: media_uuid, record_uuid, score, area,
                      centroid, bounding box (sheet pixels), mean and max intensity
    images.parquet    one row per image: score, class explained, regions found, the
                      heatmap's peak (sheet pixels), status and reason
    grid.png          the most confident positives with their heatmaps and regions
    overlays/         with ``overlays``: a PNG per image, the heatmap over the sheet

An image whose heatmap cannot be made (its scores or map are not finite) gets
``status="failed"`` and a reason in ``images.parquet``, and an all-zero map; the run
goes on.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import UserError
from .options import check, coerce_fields, setting, with_overrides

__all__ = ["ExplainOptions", "ExplainResult", "GradCam", "SheetGeometry", "explain",
           "heatmap_regions", "overlay"]

#: Columns of ``regions.parquet``, in order.
REGION_COLUMNS = ("media_uuid", "record_uuid", "image_index", "score", "explained", "region",
                  "area", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0", "bbox_x1",
                  "bbox_y1", "mean_intensity", "max_intensity")
#: Columns of ``images.parquet``, in order.
IMAGE_COLUMNS = ("media_uuid", "record_uuid", "image_index", "score", "explained",
                 "predicted", "n_regions", "threshold", "peak_x", "peak_y", "status", "reason")


@dataclass
class ExplainOptions:
    """How :func:`idigdask.explain` maps where a model looks.

    Every default is the dask config's ``idigdask.explain.<field>`` (``idigdask.yaml``;
    ``DASK_IDIGDASK__EXPLAIN__BATCH_SIZE=16``), see :mod:`idigdask.options`.

    Parameters
    ----------
    batch_size : int
        Images per Grad-CAM step on a worker.
    chunks_per_task : int
        Store chunks explained by one task.
    layer : str, optional
        The layer whose feature map is explained; None: the last convolution's output
        (after its batch-norm and activation), see :func:`feature_layer`.
    target : str, optional
        The class explained, as the model names it (``"1"``, ``"Lycopodiaceae"``);
        None: the second class of a two-class model (the positive, ``1`` or
        ``stained``), else each image's predicted class.
    min_area : int
        Smallest region kept, in store pixels.
    overlays : bool
        Also write a PNG per image, the heatmap over the sheet, in ``overlays/``.
    grid : int
        How many of the most confident positives ``grid.png`` shows (0: no grid).

    Examples
    --------
    >>> from idigdask.explain import ExplainOptions
    >>> ExplainOptions(batch_size=8, grid=4).grid
    4
    """

    batch_size: int = setting("explain.batch-size")
    chunks_per_task: int = setting("explain.chunks-per-task")
    layer: str | None = setting("explain.layer")
    target: str | None = setting("explain.target")
    min_area: int = setting("explain.min-area")
    overlays: bool = setting("explain.overlays")
    grid: int = setting("explain.grid")

    def __post_init__(self) -> None:
        coerce_fields(self)
        check(self, {"batch_size": (lambda v: v >= 1, "at least 1"),
                     "chunks_per_task": (lambda v: v >= 1, "at least 1"),
                     "min_area": (lambda v: v >= 1, "at least 1"),
                     "grid": (lambda v: v >= 0, "0 or more")})


@dataclass(frozen=True)
class ExplainResult:
    """What :func:`idigdask.explain` wrote.

    Attributes
    ----------
    out : str
        The output folder.
    heatmaps : str
        The heatmap store (``heatmaps.zarr``), opened with :func:`xarray.open_zarr`.
    regions, images : pandas.DataFrame
        The tables of ``regions.parquet`` and ``images.parquet``.
    grid : str or None
        ``grid.png``, or None when no grid was asked for or no image is positive.
    cluster : dict
        Where it ran (:func:`idigdask.cluster.cluster_summary`).

    Examples
    --------
    >>> import pandas as pd
    >>> result = ExplainResult("stain-maps", "stain-maps/heatmaps.zarr",
    ...                        regions=pd.DataFrame(), images=pd.DataFrame())
    >>> result
    ExplainResult(out='stain-maps', heatmaps='stain-maps/heatmaps.zarr', grid=None)
    >>> result = idigdask.explain("model", "sheets.zarr", out="stain-maps")  # doctest: +SKIP
    >>> result.images["n_regions"].sum()                                  # doctest: +SKIP
    """

    out: str
    heatmaps: str
    regions: pd.DataFrame = dataclasses.field(repr=False)
    images: pd.DataFrame = dataclasses.field(repr=False)
    grid: str | None = None
    cluster: dict = dataclasses.field(default_factory=dict, repr=False)


# ---------------------------------------------------------------------------------
# Geometry: store pixels back to the original sheet's
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SheetGeometry:
    """How a ``size`` square of a store maps onto the original ``width`` x ``height`` sheet.

    The inverse of :func:`idigdask.decode.resize`: ``pad`` scaled the sheet by
    ``size / max(width, height)`` (rounded to whole pixels) and centred it on a
    letterbox; ``crop`` scaled the centred square of side ``min(width, height)``;
    ``stretch`` scaled each side to ``size``. Coordinates are continuous: pixel ``i``
    covers ``[i, i + 1)``.

    Examples
    --------
    >>> g = SheetGeometry(2000, 3000, 128, "pad")
    >>> g.picture()                      # the letterbox's picture: 85 x 128 px
    (21, 0, 106, 128)
    >>> [round(v, 6) for v in g.to_sheet(63.5, 64.0)]   # the picture's centre: the sheet's
    [1000.0, 1500.0]
    """

    width: int
    height: int
    size: int
    mode: str

    @property
    def known(self) -> bool:
        """Whether the sheet's size is known (older stores may hold 0)."""
        return self.width > 0 and self.height > 0

    def _affine(self) -> tuple[float, float, float, float]:
        """``(kx, ky, bx, by)``: sheet x = kx * store x + bx (and y alike)."""
        w, h, size = float(self.width), float(self.height), self.size
        if self.mode == "stretch":
            return w / size, h / size, 0.0, 0.0
        if self.mode == "crop":
            side = min(w, h)
            return side / size, side / size, (w - side) / 2, (h - side) / 2
        x0, y0, x1, y1 = self.picture()
        kx, ky = w / (x1 - x0), h / (y1 - y0)
        return kx, ky, -x0 * kx, -y0 * ky

    def picture(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the part of the square that shows the sheet (store px)."""
        size = self.size
        if self.mode != "pad" or not self.known:
            return 0, 0, size, size
        scale = size / max(self.width, self.height)
        nw = max(1, min(size, round(self.width * scale)))
        nh = max(1, min(size, round(self.height * scale)))
        x0, y0 = (size - nw) // 2, (size - nh) // 2  # as decode pastes it
        return x0, y0, x0 + nw, y0 + nh

    def scale(self) -> tuple[float, float]:
        """Sheet pixels per store pixel, across and down."""
        kx, ky, _, _ = self._affine()
        return kx, ky

    def to_sheet(self, x: float, y: float) -> tuple[float, float]:
        """A store position in sheet pixels, inside the sheet (NaN if its size is unknown)."""
        if not self.known:
            return float("nan"), float("nan")
        kx, ky, bx, by = self._affine()
        return (min(max(kx * x + bx, 0.0), float(self.width)),
                min(max(ky * y + by, 0.0), float(self.height)))


# ---------------------------------------------------------------------------------
# Regions and overlays (pure functions)
# ---------------------------------------------------------------------------------
def heatmap_regions(heatmap: np.ndarray, geometry: SheetGeometry | None = None, *,
                    min_area: int = 4) -> tuple[float, list[dict[str, Any]]]:
    """The regions of a heatmap above Otsu's threshold, in sheet pixels.

    Parameters
    ----------
    heatmap : numpy.ndarray
        ``(size, size)`` values in [0, 1].
    geometry : SheetGeometry, optional
        How the store's square maps onto the sheet; None: store pixels are reported.
        Only the part of the square that shows the sheet is thresholded (a
        letterbox is not the sheet).
    min_area : int
        Smallest region kept, in store pixels.

    Returns
    -------
    (float, list of dict)
        The threshold, and one dict per region, largest mean intensity first:
        ``region`` (1, 2...), ``area`` (sheet pixels), ``centroid_x``,
        ``centroid_y``, ``bbox_x0``, ``bbox_y0``, ``bbox_x1``, ``bbox_y1`` (sheet
        pixels, the box's edges), ``mean_intensity`` and ``max_intensity`` (of the
        heatmap), ``store_bbox`` (``(x0, y0, x1, y1)`` in store pixels).

    Examples
    --------
    >>> hm = np.zeros((32, 32), np.float32); hm[4:12, 20:28] = 1.0
    >>> threshold, regions = heatmap_regions(hm)
    >>> regions[0]["area"], regions[0]["bbox_x0"], regions[0]["bbox_y1"]
    (64.0, 20.0, 12.0)
    """
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    heatmap = np.asarray(heatmap, dtype=np.float32)
    size = heatmap.shape[0]
    geometry = geometry or SheetGeometry(size, size, size, "stretch")
    x0, y0, x1, y1 = geometry.picture()
    inside = np.zeros(heatmap.shape, dtype=bool)
    inside[y0:y1, x0:x1] = True
    values = heatmap[inside]
    if values.size == 0 or float(values.max()) <= float(values.min()):
        return float(values.max()) if values.size else 0.0, []  # flat: nothing stands out
    threshold = float(threshold_otsu(values))
    labels = label((heatmap > threshold) & inside, connectivity=2)
    kx, ky = geometry.scale() if geometry.known else (float("nan"), float("nan"))
    regions = []
    for prop in regionprops(labels, intensity_image=heatmap):
        if prop.area < min_area:
            continue
        r0, c0, r1, c1 = prop.bbox
        cy, cx = prop.centroid
        bx0, by0 = geometry.to_sheet(c0, r0)
        bx1, by1 = geometry.to_sheet(c1, r1)
        sx, sy = geometry.to_sheet(cx + 0.5, cy + 0.5)  # pixel centres
        regions.append({"area": float(prop.area) * kx * ky, "centroid_x": sx, "centroid_y": sy,
                        "bbox_x0": bx0, "bbox_y0": by0, "bbox_x1": bx1, "bbox_y1": by1,
                        "mean_intensity": float(prop.intensity_mean),
                        "max_intensity": float(prop.intensity_max),
                        "store_bbox": (int(c0), int(r0), int(c1), int(r1))})
    regions.sort(key=lambda r: -r["mean_intensity"])
    for i, region in enumerate(regions, start=1):
        region["region"] = i
    return threshold, regions


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.6,
            cmap: str = "jet") -> np.ndarray:
    """The heatmap blended over the image, ``(h, w, 3)`` uint8.

    Where the heatmap is 0 the image shows as it is; the colour's weight grows with
    the heatmap's value up to ``alpha``.

    Examples
    --------
    >>> overlay(np.full((8, 8, 3), 200, np.uint8), np.eye(8)).shape
    (8, 8, 3)
    """
    from matplotlib import colormaps

    hm = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0)
    colours = colormaps[cmap](hm)[..., :3] * 255.0
    weight = (alpha * hm)[..., None]
    out = np.asarray(image, np.float32) * (1.0 - weight) + colours * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------
# Grad-CAM (Keras 3, keras.ops)
# ---------------------------------------------------------------------------------
def feature_layer(model) -> str:
    """The name of the layer Grad-CAM explains by default: the last convolution's output.

    That is the last ``Conv*`` layer of the model's top level, followed through the
    layers after it that keep its shape (batch-norm, activation): ``relu2`` of the
    smithsonian network.

    Parameters
    ----------
    model : keras.Model
        A built Keras model.

    Returns
    -------
    str
        The layer's name.

    Raises
    ------
    UserError
        If the model has no convolution at its top level (a ``keras.applications``
        backbone is one nested layer: name a layer of your own with ``layer``).

    Examples
    --------
    >>> import keras                                                     # doctest: +SKIP
    >>> model = keras.models.load_model("model/model.keras")             # doctest: +SKIP
    >>> feature_layer(model)                                              # doctest: +SKIP
    'relu2'
    """
    layers = list(model.layers)
    convs = [i for i, layer in enumerate(layers) if type(layer).__name__.startswith("Conv")]
    if not convs:
        raise UserError(f"model {model.name!r} has no convolution at its top level to "
                        "explain (backbone models nest theirs); name a layer with --layer")
    i = convs[-1]
    shape = tuple(layers[i].output.shape)
    while i + 1 < len(layers) and tuple(layers[i + 1].output.shape) == shape \
            and not type(layers[i + 1]).__name__.startswith(("Dropout", "Conv")):
        i += 1
    return layers[i].name


class GradCam:
    """Grad-CAM of a Keras model: the model split at a feature map, and the maps.

    The model is cut in two at ``layer``: ``features`` (inputs to the feature map)
    and the layers after it, applied in order, ending in the logits. When the last
    layer is a dense softmax, its logits (before the softmax) are explained, as
    Grad-CAM defines it, so that a confident image, whose probability saturates, is
    explained too.

    Parameters
    ----------
    model : keras.Model
        A functional model whose layers after ``layer`` form a chain (the smithsonian
        network; checked against the model on a random batch).
    layer : str, optional
        The feature map; None: :func:`feature_layer`.

    Raises
    ------
    UserError
        If the layer is unknown, not a feature map (4-D), or the model does not split
        there into a chain that reproduces it.

    Examples
    --------
    >>> cam = GradCam(keras.saving.load_model("model/model.keras"))  # doctest: +SKIP
    >>> heatmaps, probabilities, explained = cam(x)                   # doctest: +SKIP
    """

    def __init__(self, model, layer: str | None = None):
        import keras

        self.layer = layer or feature_layer(model)
        try:
            target = model.get_layer(self.layer)
        except ValueError:
            raise UserError(f"model {model.name!r} has no layer {self.layer!r}; layers: "
                            f"{', '.join(layer.name for layer in model.layers)}") from None
        shape = tuple(target.output.shape)
        if len(shape) != 4:
            raise UserError(f"layer {self.layer!r} is not a feature map (its output has shape "
                            f"{shape}); name a convolution's layer")
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        self.features = keras.Model(inputs, target.output)
        rest = list(model.layers)[list(model.layers).index(target) + 1:]
        last = rest[-1] if rest else None
        self.dense = None
        if last is not None and type(last).__name__ == "Dense" \
                and getattr(last.activation, "__name__", "") == "softmax":
            self.dense, rest = last, rest[:-1]
        inputs = keras.Input(shape=shape[1:])
        x = inputs
        try:
            for layer_ in rest:
                x = layer_(x)
        except Exception as exc:  # noqa: BLE001 - any layer that does not take the chain
            raise UserError(f"model {model.name!r} does not split into a chain after layer "
                            f"{self.layer!r} ({type(exc).__name__})") from None
        self.head = keras.Model(inputs, x)
        self.n_classes = int(model.output_shape[-1])
        self._check(model, shape)

    def _check(self, model, shape: tuple) -> None:
        from keras import ops

        x = np.random.default_rng(0).normal(size=(2, *model.input_shape[1:])).astype(np.float32)
        want = ops.convert_to_numpy(model(x, training=False))
        got = ops.convert_to_numpy(self.probabilities(self.logits(self.features(x, training=False))))
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
            raise UserError(f"model {model.name!r} does not split into a chain after layer "
                            f"{self.layer!r}: the parts do not reproduce the model")

    def logits(self, features):
        """The class logits of feature maps (the scores themselves without a softmax)."""
        from keras import ops

        h = self.head(features, training=False)
        if self.dense is None:
            return h
        return ops.matmul(h, self.dense.kernel) + self.dense.bias

    def probabilities(self, logits):
        from keras import ops

        return ops.softmax(logits, axis=-1) if self.dense is not None else logits

    def __call__(self, x: np.ndarray, target: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Heatmaps of a batch of network input.

        Parameters
        ----------
        x : numpy.ndarray
            ``(n, size, size, 3)`` float32, normalized as the model was trained.
        target : int, optional
            The class index explained for every image; None: each image's predicted.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray, numpy.ndarray)
            Heatmaps ``(n, size, size)`` float32 in [0, 1] (each scaled to a maximum
            of 1; all 0 where nothing speaks for the class), the class
            probabilities ``(n, k)``, and the class index explained ``(n,)``.
        """
        from keras import ops

        features = self.features(x, training=False)
        logits = self.logits(features)
        probabilities = ops.convert_to_numpy(self.probabilities(logits)).astype(np.float32)
        explained = (np.full(len(x), int(target)) if target is not None
                     else np.argmax(probabilities, axis=1)).astype(np.int64)
        # each image's logit depends on its own features only (inference mode), so the
        # gradient of the sum is every image's own gradient
        picked = ops.one_hot(ops.convert_to_tensor(explained), self.n_classes)
        grads = _gradients(lambda f: ops.sum(self.logits(f) * picked), features)
        weights = ops.mean(grads, axis=(1, 2))
        cam = ops.relu(ops.einsum("nhwc,nc->nhw", features, weights))
        cam = ops.image.resize(cam[..., None], tuple(x.shape[1:3]), interpolation="bilinear")[..., 0]
        cam = ops.relu(cam)  # bilinear resizing keeps it >= 0; float error may not
        peak = ops.max(cam, axis=(1, 2), keepdims=True)
        cam = ops.where(peak > 0, cam / ops.maximum(peak, 1e-12), 0.0)
        return ops.convert_to_numpy(cam).astype(np.float32), probabilities, explained


def _gradients(scalar, features):
    """The gradient of ``scalar(features)`` with respect to ``features``.

    Keras 3 has no backend-agnostic gradient, so this is the backend's own:
    ``tf.GradientTape`` for TensorFlow, ``jax.grad`` for JAX.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(features)
            value = scalar(features)
        return tape.gradient(value, features)
    if backend == "jax":
        import jax

        return jax.grad(scalar)(features)
    raise UserError(f"explain runs on the tensorflow and jax backends of Keras, not {backend!r} "
                    "(set KERAS_BACKEND)")


# ---------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------
#: (model name, digest, layer) -> (the loaded model, its GradCam), per process.
_CAMS: dict[tuple, tuple[Any, GradCam]] = {}
_CAMS_LOCK = threading.Lock()


def worker_gradcam(model, layer: str | None) -> GradCam:
    """The :class:`GradCam` of a shipped model, built once per process and layer."""
    from .predict import worker_model

    net = worker_model(model)  # loaded once per worker, as prediction does
    key = (model.name, model.digest, layer)
    with _CAMS_LOCK:
        if key not in _CAMS or _CAMS[key][0] is not net:
            for old in [k for k in _CAMS if k[0] == model.name]:
                del _CAMS[old]  # one version of a model's maps, as of the model
            _CAMS[key] = (net, GradCam(net, layer))
        return _CAMS[key][1]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))[:80]


def _write_png(path: str, pixels: np.ndarray, storage_options: dict | None) -> None:
    import io

    import fsspec
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    with fsspec.open(path, "wb", **(storage_options or {})) as fh:
        fh.write(buf.getvalue())


def explain_store_block(store: str, storage_options: dict | None, start: int, stop: int,
                        model: Any, *, out: str, out_options: dict | None,
                        ids: pd.DataFrame, sources: np.ndarray, size: int, resize_mode: str,
                        classes: list, target: int | None, options: ExplainOptions,
                        normalize: str | None, mean: Sequence[float] | None,
                        std: Sequence[float] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Explain images ``start:stop`` of a store (whole chunks); runs on a worker.

    Writes their heatmaps into ``heatmaps.zarr`` (and overlays), and returns the rows
    of ``images.parquet`` and ``regions.parquet`` for them.

    Parameters
    ----------
    store : str
        The image store's location.
    storage_options : dict or None
        fsspec options for ``store``.
    start, stop : int
        The images explained, ``images[start:stop]``.
    model
        The model as shipped to the workers (the ``ModelFile`` of
        ``idigdask.predict``); loaded once per worker.
    out : str
        The output folder; its ``heatmaps.zarr`` must already exist, of the store's
        length.
    out_options : dict or None
        fsspec options for ``out``.
    ids : pandas.DataFrame
        ``media_uuid`` and ``record_uuid`` of images ``start:stop``, in order.
    sources : numpy.ndarray
        ``(stop - start, 2)`` source width and height of those images.
    size : int
        The store's image size.
    resize_mode : str
        How the store resized the sheets (``"pad"``, ``"crop"`` ...).
    classes : list
        The model's class names.
    target : int or None
        Index of the class explained; None: each image's predicted class.
    options : ExplainOptions
        Batch size, layer, ``min_area`` and ``overlays``.
    normalize, mean, std
        The model's input normalization (see
        :func:`idigdask.batches.normalize_images`).

    Returns
    -------
    tuple of (pandas.DataFrame, pandas.DataFrame)
        The image rows (``IMAGE_COLUMNS``, one per image; ``status="failed"``
        where the map is not finite or its regions could not be found) and the region
        rows (``REGION_COLUMNS``).

    Examples
    --------
    It is a task of :func:`idigdask.explain`, which creates ``heatmaps.zarr`` first:

    >>> images, regions = client.submit(
    ...     explain_store_block, "sheets.zarr", None, 0, 64, shipped, out="stain-maps",
    ...     out_options=None, ids=ids, sources=sources, size=256, resize_mode="pad",
    ...     classes=["0", "1"], target=1, options=ExplainOptions(), normalize="store",
    ...     mean=mean, std=std).result()                                   # doctest: +SKIP
    """
    import zarr

    from .batches import images_array, normalize_images
    from .predict import _PREDICT_LOCK
    from .store import zarr_storage_options

    images = np.asarray(images_array(store, storage_options)[0][start:stop])
    cam = worker_gradcam(model, options.layer)
    x = normalize_images(images, normalize, mean, std)
    maps, probs, explained = [], [], []
    with _PREDICT_LOCK:  # one Keras call at a time per process, as prediction
        for i in range(0, len(x), options.batch_size):
            m, p, e = cam(x[i:i + options.batch_size], target)
            maps.append(m), probs.append(p), explained.append(e)
    heatmaps = np.concatenate(maps)
    probabilities, explained = np.concatenate(probs), np.concatenate(explained)
    # a map of NaN features comes out flat (0): its scores say that it failed
    finite = np.isfinite(heatmaps).all(axis=(1, 2)) & np.isfinite(probabilities).all(axis=1)
    stored = np.where(finite[:, None, None], heatmaps, 0.0).astype(np.float16)
    location = posixpath.join(out.rstrip("/"), "heatmaps.zarr", "heatmaps")
    arr = zarr.open_array(location, mode="r+",
                          storage_options=zarr_storage_options(location, out_options))
    arr[start:stop] = stored

    image_rows, region_rows = [], []
    for j in range(len(images)):
        index = start + j
        media, record = ids["media_uuid"].iat[j], ids["record_uuid"].iat[j]
        score = float(probabilities[j, explained[j]])
        row = {"media_uuid": media, "record_uuid": record, "image_index": index,
               "score": score, "explained": str(classes[explained[j]]),
               "predicted": str(classes[int(np.argmax(probabilities[j]))]),
               "n_regions": 0, "threshold": np.nan, "peak_x": np.nan, "peak_y": np.nan,
               "status": "ok", "reason": None}
        if not finite[j]:
            row.update(status="failed", reason="not_finite", score=np.nan)
            image_rows.append(row)
            continue
        geometry = SheetGeometry(int(sources[j, 0]), int(sources[j, 1]), size, resize_mode)
        try:
            threshold, regions = heatmap_regions(heatmaps[j], geometry, min_area=options.min_area)
        except (ValueError, RuntimeError) as exc:  # one odd map never stops the run
            row.update(status="failed", reason=f"regions:{type(exc).__name__}")
            image_rows.append(row)
            continue
        peak = _peak(heatmaps[j], geometry)
        row.update(n_regions=len(regions), threshold=threshold, peak_x=peak[0], peak_y=peak[1])
        image_rows.append(row)
        for region in regions:
            region.pop("store_bbox")
            region_rows.append({"media_uuid": media, "record_uuid": record,
                                "image_index": index, "score": score,
                                "explained": row["explained"], **region})
        if options.overlays:
            name = f"{index:08d}_{_safe_name(media)}.png"
            _write_png(posixpath.join(out.rstrip("/"), "overlays", name),
                       overlay(images[j], heatmaps[j]), out_options)
    return (pd.DataFrame(image_rows, columns=list(IMAGE_COLUMNS)),
            pd.DataFrame(region_rows, columns=list(REGION_COLUMNS)))


def _peak(heatmap: np.ndarray, geometry: SheetGeometry) -> tuple[float, float]:
    """The heatmap's maximum inside the picture, in sheet pixels (NaN when flat)."""
    x0, y0, x1, y1 = geometry.picture()
    inner = heatmap[y0:y1, x0:x1]
    if inner.size == 0 or float(inner.max()) <= 0.0:
        return float("nan"), float("nan")
    r, c = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return geometry.to_sheet(x0 + c + 0.5, y0 + r + 0.5)


# ---------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------
def _target_index(classes: list, target: str | None) -> int | None:
    """The class index explained for every image, or None for each one's predicted."""
    names = [str(c) for c in classes]
    if target is None:
        return 1 if len(classes) == 2 else None
    if str(target) not in names:
        from .options import OptionError

        raise OptionError("target", f"{target!r} is not a class of the model; classes: "
                                    f"{', '.join(names)}")
    return names.index(str(target))


def _open_source(store: Any, storage_options: dict | None):
    from .batches import open_store, store_location
    from .predict import is_store

    if not is_store(store, storage_options):
        raise UserError(f"{store}: not an image store (no zarr.json); build one with "
                        "'idigdask build'")
    ds = open_store(store, storage_options)
    if "images" not in ds:
        raise UserError(f"{store}: the store has no images array")
    location = store_location(ds)
    if location is None:
        raise UserError("explain needs the path or URL of a store, not an in-memory Dataset")
    return ds, location


def _create_heatmaps(ds, path: str, out_options: dict | None, attrs: dict[str, Any]) -> None:
    """The heatmap store: provenance coordinates, attributes, an unwritten array."""
    import dask.array as da
    import xarray as xr

    n, size = ds.sizes["image"], int(ds.sizes["y"])
    chunk = int(ds.attrs.get("chunk_size") or ds["images"].encoding.get("chunks", (64,))[0] or 64)
    coords = {name: ("image", np.asarray(ds[name].values))
              for name in ds.coords if ds[name].dims == ("image",)}
    empty = da.zeros((n, size, size), dtype=np.float16, chunks=(chunk, size, size))
    out = xr.Dataset({"heatmaps": (("image", "y", "x"), empty)}, coords=coords)
    out["heatmaps"].encoding["chunks"] = (chunk, size, size)
    out.attrs.update(attrs)
    # compute=False writes the coordinates and the array's metadata; the workers write
    # its chunks
    out.to_zarr(path, mode="w", compute=False, consolidated=False, zarr_format=3,
                storage_options=out_options)


def _check_layer(model_path: str, layer: str | None) -> None:
    """Refuse a layer the saved model lacks before any work (its names are in the file)."""
    import json
    import zipfile

    if layer is None:
        return
    try:
        with zipfile.ZipFile(model_path) as archive:
            spec = json.loads(archive.read("config.json"))
        names = [entry["config"]["name"] for entry in spec["config"]["layers"]]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return  # not the layout this knows: the workers will say
    if layer not in names:
        raise UserError(f"the model has no layer {layer!r}; layers: {', '.join(names)}")


def _chunk_step(ds, chunks_per_task: int) -> int:
    chunk = int(ds.attrs.get("chunk_size") or ds["images"].encoding.get("chunks", (64,))[0] or 64)
    return chunk * max(1, int(chunks_per_task))


def explain(model_dir: str | os.PathLike, store: Any,
            options: ExplainOptions | dict | None = None, *,
            out: str | os.PathLike = "stain-maps", grid_path: str | os.PathLike | None = None,
            storage_options: dict | None = None, client: Any = None,
            cluster: str | None = None, jobs: int | str | None = None,
            cluster_options: dict | None = None, **overrides: Any) -> ExplainResult:
    """Map where a trained model looks on every image of a store (Grad-CAM).

    Parameters
    ----------
    model_dir : str or path
        A folder written by :func:`idigdask.train`.
    store : str or path
        The image store (built by ``idigdask build``) whose images are explained; its
        images must be the model's size.
    options : ExplainOptions or dict, optional
        Batch and task sizes, the layer and class explained, regions, overlays and
        grid; defaults from the dask config ``idigdask.explain``.
    out : str or path
        The output folder (local path or fsspec URL): ``heatmaps.zarr``,
        ``regions.parquet``, ``images.parquet``, ``grid.png`` and ``overlays/`` (see
        :mod:`idigdask.explain`). Its heatmap store is replaced.
    grid_path : str or path, optional
        Where ``grid.png`` goes instead (a report folder's, for instance).
    storage_options : dict, optional
        fsspec options for the store and the output.
    client : distributed.Client or str, optional
        Where to run (see :func:`idigdask.get_client`).
    cluster, jobs, cluster_options : optional
        Run on workers in batch jobs of this kind, as :func:`idigdask.get_client`
        takes them.
    **overrides
        Fields of :class:`ExplainOptions` (``overlays=True``), over ``options``.

    Returns
    -------
    ExplainResult
        The paths written and the two tables.

    Raises
    ------
    UserError
        If ``model_dir`` is not a model folder, ``store`` not an image store of the
        model's size, or the model has no feature map to explain.
    OptionError
        For an option out of range or unknown, naming it.

    Examples
    --------
    >>> result = idigdask.explain("model", "sheets.zarr", out="stain-maps")  # doctest: +SKIP
    >>> result.regions[["media_uuid", "score", "area", "centroid_x", "centroid_y"]].head()  # doctest: +SKIP
    """
    from .cluster import cluster_summary, get_client
    from .predict import ModelFile, _model_file
    from .train import read_model_dir

    options = with_overrides(ExplainOptions, options, overrides)
    config = read_model_dir(model_dir)
    if config.get("model") == "baseline":
        raise UserError(f"{model_dir}: a baseline model has no feature maps to explain; "
                        "explain a CNN")
    ds, location = _open_source(store, storage_options)
    size = int(ds.sizes["y"])
    if int(config.get("size") or size) != size:
        raise UserError(f"{store}: the store holds {size} px images, the model "
                        f"{config['model_dir']} takes {config['size']} px")
    classes = list(config["classes"])
    target = _target_index(classes, options.target)
    _check_layer(config["model_path"], options.layer)
    out = str(out).rstrip("/")
    out_options = storage_options if "://" in out else None
    import fsspec

    fs, root = fsspec.core.url_to_fs(out, **(out_options or {}))
    fs.makedirs(root, exist_ok=True)
    if options.overlays:
        fs.makedirs(posixpath.join(root, "overlays"), exist_ok=True)
    heatmaps = posixpath.join(out, "heatmaps.zarr")
    model = ModelFile.read(config["model_path"])
    attrs = {**{k: v for k, v in ds.attrs.items() if k in ("size", "resize_mode", "chunk_size")},
             "source_store": location, "model_dir": str(config["model_dir"]),
             "model_sha256": model.digest, "layer": options.layer or "",
             "target": "" if target is None else str(classes[target])}
    _create_heatmaps(ds, heatmaps, out_options, attrs)

    n = ds.sizes["image"]
    ids = pd.DataFrame({name: _strings(ds, name, n) for name in ("media_uuid", "record_uuid")})
    sources = np.stack([_ints(ds, "source_width", n), _ints(ds, "source_height", n)], axis=1)
    mode = str(ds.attrs.get("resize_mode") or "pad")
    step = _chunk_step(ds, options.chunks_per_task)
    task = dict(out=out, out_options=out_options, size=size, resize_mode=mode,
                classes=classes, target=target, options=options,
                normalize=config["normalize"], mean=config["channel_mean"],
                std=config["channel_std"])
    with get_client(client, cluster=cluster, jobs=jobs,
                    cluster_options=cluster_options) as dask_client:
        shipped = dask_client.submit(_model_file, model, key=f"idigdask-model-{model.digest}")
        futures = [dask_client.submit(explain_store_block, location, storage_options, start,
                                      min(start + step, n), shipped,
                                      ids=ids.iloc[start:start + step].reset_index(drop=True),
                                      sources=sources[start:start + step], pure=False, **task)
                   for start in range(0, n, step)]
        parts = dask_client.gather(futures)
        where = cluster_summary(dask_client)
    images = _concat([p[0] for p in parts], IMAGE_COLUMNS)
    regions = _concat([p[1] for p in parts], REGION_COLUMNS)
    _add_scores(heatmaps, images, n, out_options, attrs)
    images.to_parquet(posixpath.join(out, "images.parquet"), index=False,
                      storage_options=out_options)
    regions.to_parquet(posixpath.join(out, "regions.parquet"), index=False,
                       storage_options=out_options)
    grid = None
    if options.grid:
        grid = heatmap_grid(location, heatmaps, images, grid_path or posixpath.join(out, "grid.png"),
                            n=options.grid, storage_options=storage_options)
    return ExplainResult(out, heatmaps, regions, images, grid, where)


def _strings(ds, name: str, n: int) -> np.ndarray:
    if name not in ds.coords:
        return np.array([""] * n, dtype=object)
    return np.asarray(ds[name].values).astype(object).astype(str).astype(object)


def _ints(ds, name: str, n: int) -> np.ndarray:
    if name not in ds.coords:
        return np.zeros(n, dtype=np.int64)
    return np.asarray(ds[name].values).astype(np.int64)


def _concat(frames: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))
    for name in ("media_uuid", "record_uuid", "explained", "predicted", "status", "reason"):
        if name in table:
            table[name] = table[name].astype("string")
    return table[list(columns)]


def _add_scores(heatmaps: str, images: pd.DataFrame, n: int, out_options: dict | None,
                attrs: dict[str, Any]) -> None:
    """The score of each heatmap's class, as a coordinate of the heatmap store."""
    import xarray as xr

    score = np.full(n, np.nan, dtype=np.float32)
    score[images["image_index"].to_numpy(np.int64)] = images["score"].to_numpy(np.float32)
    explained = np.array([""] * n, dtype=object)
    explained[images["image_index"].to_numpy(np.int64)] = images["explained"].astype(object)
    # the attributes again: appending replaces the group's
    xr.Dataset(coords={"score": ("image", score), "explained": ("image", explained)},
               attrs=attrs).to_zarr(heatmaps, mode="a", consolidated=False, zarr_format=3,
                         storage_options=out_options)


def heatmap_grid(store: str, heatmaps: str, images: pd.DataFrame, path: str | os.PathLike, *,
                 n: int = 16, storage_options: dict | None = None) -> str | None:
    """Draw the ``n`` most confident positives with their heatmaps and regions as a PNG.

    Positives are images whose explained class has a probability of at least 0.5;
    each is shown with its heatmap over it, its regions' boxes and its score.

    Parameters
    ----------
    store : str
        The image store explained.
    heatmaps : str
        Its heatmap store (``heatmaps.zarr`` of :func:`idigdask.explain`).
    images : pandas.DataFrame
        The rows of ``images.parquet`` (``status``, ``score``, ``image_index``,
        ``explained``, ``media_uuid``).
    path : str or path
        The PNG to write.
    n : int
        How many images the grid shows at most.
    storage_options : dict, optional
        fsspec options for ``store`` and a remote ``heatmaps``.

    Returns
    -------
    str or None
        ``path``, or None when no image is positive (nothing is written).

    Examples
    --------
    >>> import pandas as pd
    >>> none_positive = pd.DataFrame({"status": ["ok"], "score": [0.2], "image_index": [0]})
    >>> print(heatmap_grid("sheets.zarr", "stain-maps/heatmaps.zarr", none_positive,
    ...                    "grid.png"))
    None
    >>> images = pd.read_parquet("stain-maps/images.parquet")            # doctest: +SKIP
    >>> heatmap_grid("sheets.zarr", "stain-maps/heatmaps.zarr", images,
    ...              "stain-maps/top.png", n=8)                            # doctest: +SKIP
    'stain-maps/top.png'
    """
    import xarray as xr
    from matplotlib.patches import Rectangle

    from .batches import images_array
    from .report import _figure, _save

    ok = images[(images["status"] == "ok") & (images["score"] >= 0.5)]
    top = ok.sort_values("score", ascending=False, kind="stable").head(int(n))
    if top.empty:
        return None
    index = top["image_index"].to_numpy(np.int64)
    pixels = np.asarray(images_array(store, storage_options)[0].get_orthogonal_selection(
        (np.sort(index), slice(None), slice(None), slice(None))))
    pixels = pixels[np.argsort(np.argsort(index))]  # back to the order of the scores
    hm = xr.open_zarr(heatmaps, consolidated=False, storage_options=storage_options
                      if "://" in str(heatmaps) else None)
    chosen = hm.isel(image=np.sort(index))
    back = np.argsort(np.argsort(index))
    maps = np.asarray(chosen["heatmaps"].values, dtype=np.float32)[back]
    size, mode = int(hm.sizes["y"]), str(hm.attrs.get("resize_mode") or "pad")
    sizes = [(int(w), int(h)) for w, h in zip(
        np.asarray(chosen["source_width"].values if "source_width" in chosen else [0] * len(index))[back],
        np.asarray(chosen["source_height"].values if "source_height" in chosen else [0] * len(index))[back])]
    cols = min(4, len(top))
    rows = -(-len(top) // cols)
    fig = _figure(3.0 * cols, 3.3 * rows)
    for k, ax in enumerate(fig.subplots(rows, cols, squeeze=False).ravel()):
        ax.axis("off")
        if k >= len(top):
            continue
        ax.imshow(overlay(pixels[k], maps[k]))
        _, regions = heatmap_regions(maps[k], SheetGeometry(*sizes[k], size, mode))
        for region in regions[:5]:
            x0, y0, x1, y1 = region["store_bbox"]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                   edgecolor="cyan", linewidth=1))
        row = top.iloc[k]
        ax.set_title(f"{row['explained']} {row['score']:.2f}\n{str(row['media_uuid'])[:13]}",
                     fontsize=8)
    fig.suptitle("Grad-CAM: where the model sees the class, most confident first", fontsize=10)
    return _save(fig, path)
