"""The ``idigdask`` program's entry point: what it does beyond :func:`idigdask.cli.main`."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from idigdask.cli import STACKS, _import_stack


def test_import_stack_leaves_the_collector_on_and_skips_missing_libraries():
    sys.modules.pop("colorsys", None)
    _import_stack(("colorsys", "idigdask_no_such_module"))
    assert gc.isenabled() and gc.get_freeze_count() > 0
    assert "colorsys" in sys.modules and "idigdask_no_such_module" not in sys.modules
    # every command's stack names modules that exist with the test extras installed
    for name in {m for stack in STACKS.values() for m in stack}:
        __import__(name)


def test_program_exits_with_the_commands_code(tmp_path):
    missing = tmp_path / "nothing.zarr"
    done = subprocess.run([sys.executable, "-m", "idigdask", "ledger", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not an idigdask store" in done.stderr
    ok = subprocess.run([sys.executable, "-m", "idigdask", "--version"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("idigdask ")


def test_a_build_keeps_the_libraries_it_never_uses_out(tmp_path):
    """``idigdask build`` runs without importing ``sparse`` (and numba) or xarray,
    which dask.array would import only to register their types, nor bokeh, whose
    dashboard waits for work that lasts."""
    import numpy as np

    from idigdask.synthetic import encode_jpeg

    image = tmp_path / "sheet.jpg"
    image.write_bytes(encode_jpeg(np.full((60, 40, 3), 180, np.uint8)))
    (tmp_path / "one.csv").write_text(f"url\n{image}\n")
    probe = ("import atexit, sys, importlib.util\n"
             "atexit.register(lambda: print('SPARSE', sys.modules.get('sparse', 'absent'), "
             "importlib.util.find_spec('sparse'), 'numba' in sys.modules, "
             "sys.modules.get('xarray', 'absent'), 'bokeh' in sys.modules, file=sys.stderr))\n"
             "from idigdask.cli import entry\nentry()\n")
    done = subprocess.run([sys.executable, "-c", probe, "build", str(tmp_path / "one.csv"),
                           "-o", str(tmp_path / "s.zarr"), "--url-column", "url",
                           "--allow-local", "--no-progress", "--json"],
                          capture_output=True, text=True, timeout=300,
                          # a loaded machine may take 2 s: the dashboard's wait, made sure
                          env={**os.environ, "DASK_IDIGDASK__CLUSTER__DASHBOARD_AFTER": "60s"})
    assert done.returncode == 0, done.stderr
    import json

    summary = json.loads(done.stdout)
    assert summary["images"] == 1 and summary["status"]["ok"] == 1
    assert "SPARSE None None False None False" in done.stderr
