"""The package as a developer meets it: Python started at the checkout's root imports the whole
package (passes and runtime included) from the source, and the tests test the checkout's code."""
import os
import subprocess
import sys

import convc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_tests_import_the_checkout():
    assert os.path.dirname(os.path.abspath(convc.__file__)) == os.path.join(ROOT, "convc")


def test_python_at_the_checkout_root_imports_passes_and_runtime_from_source():
    code = ("import numpy as np, convc, convc.passes, convc.runtime.kernels\n"
            "from convc import ops\n"
            "print(convc.__file__); print(convc.passes.__file__); print(convc.runtime.kernels.__file__)\n"
            "print(ops.relu(np.array([-1.0, 2.0])))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [os.path.join(ROOT, "convc", "__init__.py"), os.path.join(ROOT, "passes", "__init__.py"),
                         os.path.join(ROOT, "runtime", "kernels", "__init__.py")]
    assert lines[3] == "[0. 2.]"
