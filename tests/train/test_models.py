"""The model zoo, on TensorFlow, and a training smoke test on JAX."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from idigdask.errors import UserError
from idigdask.models import MODELS, build_model, compile_model, input_scaling, smithsonian_cnn


def test_smithsonian_cnn_is_the_published_network():
    model = smithsonian_cnn((256, 256, 3), n_classes=2)
    kinds = [layer.__class__.__name__ for layer in model.layers[1:]]
    assert kinds == ["Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D",
                     "Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D",
                     "Dropout", "Flatten", "Dense", "Dense", "Dropout", "Dense"]
    assert model.get_layer("conv1").filters == 10 and model.get_layer("conv2").filters == 40
    assert model.get_layer("conv1").kernel_size == (5, 5)
    assert model.get_layer("flatten").output.shape[-1] == 61 * 61 * 40
    assert model.get_layer("dense1").units == 500 and model.get_layer("dense2").units == 500
    assert model.output_shape == (None, 2)
    assert 74e6 < model.count_params() < 76e6


def test_smithsonian_cnn_can_resize_its_input():
    model = smithsonian_cnn((256, 256, 3), n_classes=3, input_size=128)
    assert model.get_layer("resize").output.shape[1:3] == (128, 128)
    assert model.get_layer("flatten").output.shape[-1] == 29 * 29 * 40
    scores = model.predict(np.zeros((2, 256, 256, 3), np.float32), verbose=0)
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)


def test_backbone_builds_without_download():
    model = compile_model(build_model("mobilenetv3", (32, 32, 3), n_classes=3), 1e-3)
    assert model.output_shape == (None, 3)
    assert input_scaling("efficientnetb0") is None and input_scaling("resnet50") == "store"
    assert {"smithsonian", "resnet50", "mobilenetv3", "efficientnetb0"} <= set(MODELS)


def test_model_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="local path"):
        build_model("resnet50", weights="imagenet")
    with pytest.raises(UserError, match="not found"):
        build_model("resnet50", weights=tmp_path / "missing.weights.h5")
    with pytest.raises(UserError, match="unknown model 'vgg'"):
        build_model("vgg")


JAX_SCRIPT = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    from idigdask.batches import open_store
    from idigdask.loaders.keras import StoreFeed
    from idigdask.models import build_model, compile_model
    ds = open_store(sys.argv[1])
    labels = ds["label"].values
    idx = np.nonzero(labels >= 0)[0][:32]  # two full batches: one compiled step shape
    feed = StoreFeed(ds, idx, labels[idx], batch_size=16, client=None, augment=True)
    model = compile_model(build_model("smithsonian", (32, 32, 3), 2), 1e-3)
    history = model.fit(feed, epochs=1, shuffle=False, verbose=0)
    model.save(sys.argv[2])
    scores = keras.saving.load_model(sys.argv[2], safe_mode=True).predict(feed, verbose=0)
    print(json.dumps({"backend": keras.backend.backend(), "loss": history.history["loss"],
                      "sums": scores.sum(1).tolist()}))
""")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_training_runs_on_jax(tiny_store, tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT, tiny_store,
                           str(tmp_path / "m.keras")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["backend"] == "jax"
    assert len(summary["loss"]) == 1 and np.isfinite(summary["loss"][0])
    np.testing.assert_allclose(summary["sums"], 1.0, rtol=1e-4)
    assert len(summary["sums"]) == 32
