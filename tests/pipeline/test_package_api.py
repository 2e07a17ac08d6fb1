"""``idigdask.train``, ``idigdask.evaluate`` and ``idigdask.predict`` stay functions
whichever modules have been imported (a submodule import binds the module to the
package under the same name)."""

from __future__ import annotations

import subprocess
import sys


def test_functions_named_like_their_modules_stay_functions():
    code = (
        "import idigdask, types\n"
        "from idigdask.train import TrainOptions\n"       # binds the submodule...
        "import idigdask.evaluate, idigdask.predict\n"
        "from idigdask.evaluate import evaluate as e\n"
        "for name in ('train', 'evaluate', 'predict'):\n"
        "    value = getattr(idigdask, name)\n"
        "    assert callable(value) and not isinstance(value, types.ModuleType), name\n"
        "import sys\n"
        "assert isinstance(sys.modules['idigdask.train'], types.ModuleType)\n"
        "assert idigdask.evaluate is e\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
