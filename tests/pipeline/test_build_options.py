"""The build's and the fetch's options, and where work runs: defaults from the dask
config, keyword overrides reaching the nested fetch options, errors naming the option,
and the command line naming the flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dask
import pytest

from idigdask.build import BuildOptions
from idigdask.cluster import get_client
from idigdask.fetch import FetchOptions
from idigdask.options import OptionError, with_overrides

BIN = Path(sys.executable).parent


def test_config_sets_the_defaults_and_text_is_converted():
    with dask.config.set({"idigdask.build.size": "64", "idigdask.fetch.timeout": "7.5",
                          "idigdask.build.dedup": "no", "idigdask.build.pad-color": "0,0,0"}):
        options = BuildOptions()
    assert (options.size, options.fetch.timeout, options.dedup) == (64, 7.5, False)
    assert options.pad_color == (0, 0, 0)
    assert BuildOptions().size == 256


def test_an_environment_variable_reaches_a_new_process():
    code = "from idigdask.build import BuildOptions; o = BuildOptions(); print(o.size, o.fetch.per_host)"
    env = dict(os.environ, DASK_IDIGDASK__BUILD__SIZE="96", DASK_IDIGDASK__FETCH__PER_HOST="3")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["96", "3"], done.stderr


def test_overrides_reach_the_nested_fetch_options():
    options = with_overrides(BuildOptions, BuildOptions(size=64), {"timeout": 5, "batch_size": 4},
                             nested={"fetch": FetchOptions})
    assert (options.size, options.batch_size, options.fetch.timeout) == (64, 4, 5.0)
    assert with_overrides(BuildOptions, {"size": 32}, {}).size == 32
    with pytest.raises(OptionError, match="sizes: not an option of BuildOptions") as err:
        with_overrides(BuildOptions, None, {"sizes": 3}, nested={"fetch": FetchOptions})
    assert err.value.option == "sizes"


@pytest.mark.parametrize("field, value, says", [
    ("size", 3, "size: 3 is out of range: 8 to 4096 pixels"),
    ("resize_mode", "squash", "resize_mode: 'squash' is out of range"),
    ("pad_color", (0, 0, 300), "pad_color"),
    ("batch_size", 0, "batch_size: 0 is out of range"),
    ("size", "large", "size: 'large' is not a int; its default is the setting idigdask.build.size"),
])
def test_a_bad_value_names_its_option(field, value, says):
    with pytest.raises(OptionError, match=says.replace("(", r"\(").replace(")", r"\)")):
        BuildOptions(**{field: value})


def test_a_bad_fetch_value_names_its_option():
    with pytest.raises(OptionError, match="timeout: 0.0 is out of range"):
        FetchOptions(timeout=0)


def test_the_build_command_names_the_flag(tmp_path):
    for argv, says in ((["--size", "3"], "--size: 3 is out of range"),
                       (["--timeout", "-1"], "--timeout: -1.0 is out of range"),
                       (["--phash-distance", "-5"], "--phash-distance: -5 is out of range")):
        (tmp_path / "x.csv").write_text("url\nhttp://example.org/a.jpg\n")
        done = subprocess.run([str(BIN / "idigdask"), "build", str(tmp_path / "x.csv"),
                               "-o", str(tmp_path / "y.zarr"), *argv],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_where_work_runs_follows_the_cluster_config(monkeypatch):
    monkeypatch.setattr("idigdask.cluster.current_client", lambda: None)  # no session client
    with dask.config.set({"idigdask.cluster.n-threads": 3}), get_client() as client:
        assert sum(client.nthreads().values()) == 3
        # a client given is used as it is; a scheduler address is joined
        with get_client(client) as same:
            assert same is client
        with get_client(client.scheduler.address) as joined:
            assert joined.scheduler.address == client.scheduler.address
    with pytest.raises(OptionError, match="n_workers"):
        with get_client(n_workers=0):
            pass
