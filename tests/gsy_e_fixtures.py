"""Where a real gsy-e is installed, for the tests that run one.

gsy-e is not on the package registries, so CI cannot install it: ``GSY_E_PYTHON`` names the
interpreter of an environment that has it (or this interpreter imports gsy_e), and the tests
asking for ``gsy_e_python`` are skipped elsewhere. Loaded as a pytest plug-in by conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def gsy_e_python() -> str:
    """The interpreter of an environment with gsy-e, or skip."""
    candidate = os.environ.get("GSY_E_PYTHON") or sys.executable
    probe = subprocess.run([candidate, "-c", "import gsy_e, gsy_framework"],
                           capture_output=True, timeout=120, check=False)
    if probe.returncode != 0:
        pytest.skip("gsy-e is not installed here (it is not on the package registries); set "
                    "GSY_E_PYTHON to the interpreter of an environment with gsy-e to run "
                    "these.")
    return candidate
