"""The options of the feed, training, evaluation and prediction: defaults from the dask
config, overrides, checks that name the option, and the command line naming the flag."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import dask
import pytest
import yaml

from idigdask.batches import FeedOptions
from idigdask.build import BuildOptions
from idigdask.fetch import FetchOptions
from idigdask.cli import _as_flag, build_parser, main
from idigdask.config import DEFAULTS_FILE
from idigdask.evaluate import EvaluateOptions
from idigdask.options import OptionError, with_overrides
from idigdask.predict import PredictOptions, predict_options
from idigdask.train import TrainOptions, train

CLASSES = {"feed": FeedOptions, "train": TrainOptions, "evaluate": EvaluateOptions,
           "predict": PredictOptions, "fetch": FetchOptions, "build": BuildOptions}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("section", sorted(CLASSES))
def test_defaults_are_the_yaml_and_every_key_is_a_field(section):
    written = yaml.safe_load(DEFAULTS_FILE.read_text())["idigdask"][section]
    with dask.config.set({f"idigdask.{section}": written}):  # not the session's opt-ins
        options = CLASSES[section]()
    keys = set()
    for f in dataclasses.fields(options):
        key = f.metadata.get("setting")
        if key is None:  # options of another stage, with their own section
            continue
        assert key.startswith(f"{section}.")
        name = key.split(".", 1)[1]
        keys.add(name)
        assert _plain(getattr(options, f.name)) == written[name], key
    assert keys == set(written)  # no key in the file that no field reads


def test_nested_options_take_their_own_sections():
    written = yaml.safe_load(DEFAULTS_FILE.read_text())["idigdask"]
    assert TrainOptions().feed == FeedOptions()
    assert TrainOptions().feed.batch_size == written["feed"]["batch-size"]
    assert PredictOptions().build.size == written["build"]["size"]


def test_an_environment_variable_sets_a_default():
    code = ("from idigdask.train import TrainOptions; o = TrainOptions(); "
            "print(o.epochs, o.feed.batch_size, o.augment)")
    env = dict(os.environ, DASK_IDIGDASK__TRAIN__EPOCHS="3",
               DASK_IDIGDASK__FEED__BATCH_SIZE="8", DASK_IDIGDASK__TRAIN__AUGMENT="false")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "8", "False"]


def test_dask_config_set_and_overrides():
    with dask.config.set({"idigdask.train.epochs": 5, "idigdask.feed.window-chunks": 2,
                          "idigdask.predict.chunks-per-task": 7}):
        assert TrainOptions().epochs == 5
        assert TrainOptions().feed.window_chunks == 2
        assert PredictOptions().chunks_per_task == 7
        # a keyword beats the config, and goes to the feed when it is the feed's
        options = with_overrides(TrainOptions, None, {"epochs": 2, "batch_size": 8},
                                 nested={"feed": FeedOptions})
        assert (options.epochs, options.feed.batch_size, options.feed.window_chunks) == (2, 8, 2)
    assert TrainOptions().epochs == 10
    base = TrainOptions(epochs=4, feed={"prefetch": 1})
    options = with_overrides(TrainOptions, base, {"patience": 0, "prefetch": 2},
                             nested={"feed": FeedOptions})
    assert (options.epochs, options.patience, options.feed.prefetch) == (4, 0, 2)
    assert base.feed.prefetch == 1  # the options given are not changed


def test_text_values_are_converted():
    options = TrainOptions(epochs="7", fractions="0.8, 0.1, 0.1", learning_rate="none")
    assert options.epochs == 7 and options.fractions == (0.8, 0.1, 0.1)
    assert options.learning_rate is None
    feed = FeedOptions(shuffle="false", normalize="null", mean=[1, 2, 3])
    assert feed.shuffle is False and feed.normalize is None and feed.mean == (1.0, 2.0, 3.0)


@pytest.mark.parametrize("cls, field, value", [
    (TrainOptions, "epochs", 0), (TrainOptions, "model", "vgg"),
    (TrainOptions, "fractions", (0.5, -0.1, 0.6)), (TrainOptions, "learning_rate", 0),
    (TrainOptions, "epochs", "many"), (FeedOptions, "batch_size", 0),
    (FeedOptions, "normalize", "zscore"), (FeedOptions, "prefetch", -1),
    (EvaluateOptions, "n_worst", -1), (PredictOptions, "chunks_per_task", 0),
    (PredictOptions, "resize_mode", "zoom"),
])
def test_a_bad_value_names_the_option(cls, field, value):
    with pytest.raises(OptionError) as info:
        cls(**{field: value})
    assert info.value.option == field
    assert str(info.value).startswith(f"{field}: ")


def test_unknown_and_misplaced_options_are_named(tiny_store, tmp_path):
    with pytest.raises(OptionError) as info:
        train(tiny_store, tmp_path / "m", epochs=1, epoch=2)
    assert info.value.option == "epoch"
    with pytest.raises(OptionError, match="batch_size"):  # checked before anything is read
        train(tiny_store, tmp_path / "m", batch_size=0)
    assert not (tmp_path / "m").exists()
    with pytest.raises(OptionError) as info:
        predict_options(None, {"size": 64})
    assert info.value.option == "size"
    with pytest.raises(OptionError) as info:
        predict_options(None, {"chunk_per_task": 2})
    assert info.value.option == "chunk_per_task"


def test_predict_overrides_reach_the_build_and_its_fetch():
    options = predict_options({"batch_size": 8}, {"allow_local": True, "allow_private": True,
                                                  "timeout": 5, "catalog_batch_size": 3})
    assert (options.batch_size, options.catalog_batch_size) == (8, 3)
    assert options.build.allow_local is True
    assert options.build.fetch.allow_private is True and options.build.fetch.timeout == 5


def test_the_feed_takes_options_and_overrides(tiny_store):
    from idigdask.loaders.keras import StoreFeed

    feed = StoreFeed(tiny_store, options=FeedOptions(batch_size=8, shuffle=False),
                     batch_size=4, normalize="unit", client=None)
    try:
        assert feed.batch_size == 4 and not feed.shuffle and feed.normalize == "unit"
        assert feed.options.batch_size == 4
    finally:
        feed.close()
    with pytest.raises(OptionError) as info:
        StoreFeed(tiny_store, batch_sise=4, client=None)
    assert info.value.option == "batch_sise"


def test_the_command_line_names_the_flag(tiny_store, tmp_path, capsys):
    cases = [
        (["train", tiny_store, "-o", str(tmp_path / "m"), "--batch-size", "0"], "--batch-size"),
        (["train", tiny_store, "-o", str(tmp_path / "m"), "--epochs", "0"], "--epochs"),
        (["train", tiny_store, "-o", str(tmp_path / "m"), "--model", "vgg"], "--model"),
        (["evaluate", str(tmp_path), tiny_store, "--n-worst", "-1"], "--n-worst"),
        (["predict", str(tmp_path), tiny_store, "--chunks-per-task", "0"], "--chunks-per-task"),
    ]
    for argv, flag in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"error: {flag}: " in err, err
    assert not (tmp_path / "m").exists()


def test_flags_found_by_destination_and_options_without_a_flag():
    args = build_parser().parse_args(["train", "store", "-o", "model"])
    assert _as_flag(OptionError("augment", "no"), args._parser) == "--no-augment: no"
    assert _as_flag(OptionError("verbose", "no"), args._parser) == "--quiet: no"
    assert _as_flag(OptionError("fractions", "no"), args._parser) == "fractions: no"


def test_importing_the_stages_loads_no_keras():
    code = ("import sys, idigdask, idigdask.train, idigdask.evaluate, idigdask.predict, "
            "idigdask.batches, idigdask.splits, idigdask.loaders; "
            "print(json.dumps(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", "import json; " + code],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == []


def test_a_config_block_entered_before_the_first_import_keeps_the_defaults():
    """``with dask.config.set`` before idigdask.config is imported removes the whole
    ``idigdask`` key as it exits; the defaults come back on the next lookup."""
    code = ("import dask\n"
            "with dask.config.set({'idigdask.build.size': 64}):\n"
            "    from idigdask.build import BuildOptions\n"
            "    inside = BuildOptions().size\n"
            "after = BuildOptions()\n"
            "print(inside, after.size, after.batch_size, after.fetch.timeout)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["64", "256", "32", "30.0"]
