"""The ``idigdask`` program's entry point: what it does beyond :func:`idigdask.cli.main`."""

from __future__ import annotations

import gc
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
