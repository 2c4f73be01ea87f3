"""What pyproject.toml declares: metadata setuptools accepts without warnings."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_license_is_an_spdx_expression_with_a_setuptools_that_reads_it():
    # A table (``{ text = ... }``) makes setuptools >= 77 print ~40 lines of
    # deprecation warnings on every install; the string form needs >= 77.
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    floors = [
        re.fullmatch(r"setuptools\s*>=\s*(\d+)(\.\d+)*", req)
        for req in PYPROJECT["build-system"]["requires"]
        if req.startswith("setuptools")
    ]
    assert len(floors) == 1 and floors[0] is not None, PYPROJECT["build-system"]["requires"]
    assert int(floors[0].group(1)) >= 77
