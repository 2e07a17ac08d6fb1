"""Image classifiers for herbarium sheets, written with ``keras`` and ``keras.ops`` only.

Nothing here calls TensorFlow directly, so the models run on every Keras 3 backend
(TensorFlow, the default, and JAX are tested).

* :func:`smithsonian_cnn` is the small network of Schuettpelz et al. (2017) that found
  mercury-stained sheets of the US National Herbarium.
* :func:`backbone` wraps a ``keras.applications`` network (ResNet50, MobileNetV3,
  EfficientNetB0) with a new softmax head. Weights are never downloaded: pass
  ``weights=None`` (random start) or the path of a local weights file.
* :func:`calls_cnn` is a small network for the log-mel spectrograms of sound clips
  (animal calls): time-frequency convolutions, pooled over time.
* :func:`build_model` picks one by name; :data:`MODELS` lists the names and the input
  scaling each expects.

Models are returned **uncompiled**; :func:`compile_model` adds the optimizer (Adam,
learning rate :data:`DEFAULT_LEARNING_RATE` = 1e-4 as in the paper), the loss and the
accuracy metric. :func:`idigdask.train.train` calls both.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import UserError

#: Learning rate of the Smithsonian study (Adam).
DEFAULT_LEARNING_RATE = 1e-4

#: name -> (keras.applications constructor or None, input scaling the feed applies).
#: "store": per-channel standardization with the store's statistics; None: raw 0..255
#: pixels, for networks that rescale inside themselves.
MODELS: dict[str, tuple[str | None, str | None]] = {
    "smithsonian": (None, "store"),
    "calls": (None, "store"),
    "resnet50": ("ResNet50", "store"),
    "mobilenetv3": ("MobileNetV3Small", "store"),
    "mobilenetv3small": ("MobileNetV3Small", "store"),
    "mobilenetv3large": ("MobileNetV3Large", "store"),
    "efficientnetb0": ("EfficientNetB0", None),
}


def smithsonian_cnn(input_shape: tuple[int, int, int] = (256, 256, 3), n_classes: int = 2,
                    input_size: int | None = None, bn_momentum: float | None = None):
    """The stain-detection network of Schuettpelz et al. (2017).

    conv 10 filters 5x5, batch-norm, ReLU, max-pool; conv 40 filters 5x5, batch-norm,
    ReLU, max-pool; dropout 0.5; flatten; dense 500; dense 500; dropout 0.25; dense
    ``n_classes`` softmax (train it with Adam at a learning rate of 1e-4).

    Parameters
    ----------
    input_shape : tuple of int
        ``(height, width, channels)`` of the images given to the model.
    n_classes : int
        Number of classes of the softmax output.
    input_size : int, optional
        When set, the model first resizes its input to ``input_size`` square (a
        ``Resizing`` layer), so a 256 px store can train a faster 128 px network.
    bn_momentum : float, optional
        Momentum of the moving statistics of the two batch-norm layers (default: the
        Keras default, 0.99). A short run of a few hundred steps leaves the moving
        statistics far behind the trained weights at 0.99, so the evaluated network
        differs from the trained one; 0.9 lets them keep up. The architecture is
        unchanged.

    Returns
    -------
    keras.Model
        Uncompiled.

    Notes
    -----
    At 256 px the flattened 61x61x40 feature map feeds a dense layer of 500 units:
    about 75 million parameters, nearly all in that layer. That is the reference
    network, kept as published. At 128 px (``input_size=128``) the map is 29x29x40, the
    model has about 17 million parameters and a training step is about four times
    faster (about 0.35 s instead of 1.4 s for 32 images on two CPU cores with
    TensorFlow), which suits a demonstration on a laptop.

    Examples
    --------
    >>> model = smithsonian_cnn((32, 32, 3), n_classes=2)  # doctest: +SKIP
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if input_size and tuple(input_shape[:2]) != (input_size, input_size):
        x = layers.Resizing(input_size, input_size, name="resize")(x)
    for i, filters in enumerate((10, 40), start=1):
        x = layers.Conv2D(filters, 5, name=f"conv{i}")(x)
        bn = {} if bn_momentum is None else {"momentum": float(bn_momentum)}
        x = layers.BatchNormalization(name=f"bn{i}", **bn)(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Dropout(0.5, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(500, name="dense1")(x)
    x = layers.Dense(500, name="dense2")(x)
    x = layers.Dropout(0.25, name="dropout2")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name="smithsonian_cnn")


def calls_cnn(input_shape: tuple[int, int, int] = (64, 201, 1), n_classes: int = 2,
              filters: tuple[int, ...] = (16, 32, 64), dropout: float = 0.3):
    """A small CNN for the log-mel spectrograms of sound clips.

    Three blocks of a 3x3 convolution over (mel, time), batch-norm, ReLU and 2x2
    max-pooling learn local time-frequency shapes (a sweep, a pulse); a convolution
    that spans the remaining mel bands with a short time extent then turns each time
    step into a feature vector, and global average and max pooling over time make the
    score independent of where in the clip the call lies (a call cut by the clip's
    start or end is still found). It trains in seconds per epoch on two CPU cores.

    Parameters
    ----------
    input_shape : tuple of int
        ``(mel bands, time frames, 1)`` of the spectrograms the feed gives.
    n_classes : int
        Number of classes of the softmax output.
    filters : tuple of int
        Filters of each convolution block.
    dropout : float
        Dropout before the output layer.

    Returns
    -------
    keras.Model
        Uncompiled.

    Examples
    --------
    >>> model = calls_cnn((64, 201, 1), n_classes=2)          # doctest: +SKIP
    >>> model.output_shape                                     # doctest: +SKIP
    (None, 2)
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="spectrogram")
    x = inputs
    for i, n in enumerate(filters, start=1):
        x = layers.Conv2D(n, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    bands = int(x.shape[1])
    x = layers.Conv2D(2 * filters[-1], (bands, 3), padding="valid", activation="relu",
                      name="bands")(x)                      # (1, time, features)
    x = layers.Reshape((int(x.shape[2]), int(x.shape[3])), name="steps")(x)
    x = layers.Concatenate(name="pooled")([layers.GlobalAveragePooling1D(name="mean")(x),
                                           layers.GlobalMaxPooling1D(name="max")(x)])
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name="calls_cnn")


def backbone(name: str, input_shape: tuple[int, int, int] = (256, 256, 3),
             n_classes: int = 2, weights: str | os.PathLike | None = None,
             input_size: int | None = None):
    """A ``keras.applications`` network with global pooling and a softmax head.

    Parameters
    ----------
    name : str
        One of ``"resnet50"``, ``"mobilenetv3"`` (small), ``"mobilenetv3small"``,
        ``"mobilenetv3large"``, ``"efficientnetb0"``.
    input_shape : tuple of int
        Shape of the images given to the model.
    n_classes : int
        Number of classes.
    weights : str or path, optional
        None for a random start, or the path of a local weights file of the backbone
        without its top (``.weights.h5``). Never downloaded.
    input_size : int, optional
        Resize the input to this square size inside the model.

    Returns
    -------
    keras.Model
        Uncompiled.

    Raises
    ------
    UserError
        For an unknown name, ``weights="imagenet"`` or a weights file that is missing.

    Examples
    --------
    >>> model = backbone("mobilenetv3", (128, 128, 3), n_classes=2)     # doctest: +SKIP
    >>> model.output_shape                                              # doctest: +SKIP
    (None, 2)
    >>> model = backbone("resnet50", weights="resnet50_notop.weights.h5")  # doctest: +SKIP
    """
    import keras
    from keras import layers

    key = name.lower()
    if key not in MODELS or MODELS[key][0] is None:
        known = ", ".join(k for k, v in MODELS.items() if v[0])
        raise UserError(f"unknown backbone {name!r}: choose one of {known}")
    weights = _local_weights(weights)
    size = input_size or input_shape[0]
    inner_shape = (size, size, input_shape[2]) if input_size else tuple(input_shape)
    constructor = getattr(keras.applications, MODELS[key][0])
    extra = {"include_preprocessing": False} if "mobilenet" in key else {}
    base = constructor(include_top=False, weights=weights, input_shape=inner_shape,
                       pooling="avg", **extra)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if input_size and tuple(input_shape[:2]) != (input_size, input_size):
        x = layers.Resizing(input_size, input_size, name="resize")(x)
    x = base(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name=f"{key}_classifier")


def _local_weights(weights: Any) -> str | None:
    if weights is None:
        return None
    text = str(weights)
    if text.lower() == "imagenet":
        raise UserError("weights='imagenet' would download from the internet: download the "
                        "file once and pass its local path")
    if not os.path.isfile(text):
        raise UserError(f"weights file not found: {text}")
    return text


def build_model(name: str = "smithsonian", input_shape: tuple[int, int, int] = (256, 256, 3),
                n_classes: int = 2, weights: str | os.PathLike | None = None,
                input_size: int | None = None, bn_momentum: float | None = None):
    """Build a classifier by name (see :data:`MODELS`).

    Parameters
    ----------
    name : str
        ``"smithsonian"`` or a backbone name.
    input_shape, n_classes, weights, input_size
        See :func:`smithsonian_cnn` and :func:`backbone`.
    bn_momentum : float, optional
        Batch-norm momentum of the smithsonian network (see :func:`smithsonian_cnn`);
        backbones keep their own.

    Returns
    -------
    keras.Model
        Uncompiled.

    Raises
    ------
    UserError
        For a name that is not in :data:`MODELS`, weights given to the smithsonian
        network, or the weights errors of :func:`backbone`.

    Examples
    --------
    >>> model = build_model("smithsonian", (64, 64, 3), n_classes=2)    # doctest: +SKIP
    >>> model.name                                                      # doctest: +SKIP
    'smithsonian_cnn'
    >>> build_model("vgg16")                                  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    idigdask.errors.UserError: unknown model 'vgg16': choose one of smithsonian, calls, ...
    """
    key = name.lower()
    if key not in MODELS:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    if key == "calls":
        if weights is not None:
            raise UserError("the calls model has no pretrained weights")
        return calls_cnn(input_shape, n_classes)
    if key == "smithsonian":
        if weights is not None:
            raise UserError("the smithsonian model has no pretrained weights")
        return smithsonian_cnn(input_shape, n_classes, input_size=input_size,
                               bn_momentum=bn_momentum)
    return backbone(key, input_shape, n_classes, weights=weights, input_size=input_size)


def input_scaling(name: str) -> str | None:
    """The ``normalize`` mode of the feed that model ``name`` expects.

    Parameters
    ----------
    name : str
        A model name of :data:`MODELS`, in any case.

    Returns
    -------
    str or None
        ``"store"``: standardize each channel with the store's statistics; None: raw
        0..255 pixels, for a network that rescales inside itself.

    Raises
    ------
    UserError
        For a name that is not in :data:`MODELS`.

    Examples
    --------
    >>> input_scaling("smithsonian"), input_scaling("EfficientNetB0")
    ('store', None)
    """
    key = name.lower()
    if key not in MODELS:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[key][1]


def compile_model(model, learning_rate: float | None = None):
    """Compile with Adam, sparse categorical cross-entropy and accuracy.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`build_model`.
    learning_rate : float, optional
        Default :data:`DEFAULT_LEARNING_RATE`.

    Returns
    -------
    keras.Model
        The same model, compiled.

    Examples
    --------
    With ``feed`` a :class:`~idigdask.StoreFeed` of 64 px images and their labels:

    >>> model = compile_model(build_model("smithsonian", (64, 64, 3)))  # doctest: +SKIP
    >>> model.fit(feed, epochs=2)                                       # doctest: +SKIP
    """
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate or DEFAULT_LEARNING_RATE),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
