"""Every docstring example of the package that can run here, runs and prints what it shows.

The API reference shows each public object's example; those marked ``+SKIP`` need a
cluster, a batch system, Keras or the network. The rest are doctests, run here in a
process of their own, so that an example that no longer holds fails the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_docstring_examples_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--doctest-modules", str(ROOT / "idigdask"), "-q",
         "-p", "no:cacheprovider", "--rootdir", str(ROOT)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
