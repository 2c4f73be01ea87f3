"""What pyproject.toml declares: metadata setuptools accepts without warnings, and
entry points that exist."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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


def _entry_points() -> dict[str, str]:
    project = PYPROJECT["project"]
    found = {**project.get("scripts", {}), **project.get("gui-scripts", {})}
    for group in project.get("entry-points", {}).values():
        found.update(group)
    return found


def test_every_declared_entry_point_imports_and_is_callable():
    points = _entry_points()
    assert "beamlet" in points
    for name, target in points.items():
        module, _, attr = target.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        assert callable(obj), (name, target)


def test_the_beamlet_command_prints_its_version_and_its_help(capsys):
    from beamlet.cli import main

    with pytest.raises(SystemExit) as version:
        main(["--version"])
    out = capsys.readouterr().out
    assert version.value.code == 0
    assert out.startswith(f"beamlet {PYPROJECT['project']['version']} (Python ")
    with pytest.raises(SystemExit) as help_:
        main(["--help"])
    assert help_.value.code == 0 and capsys.readouterr().out.startswith("usage: beamlet")
    assert main([]) == 0 and "usage: beamlet" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["--no-such-option"])
    assert bad.value.code == 2


def test_the_installed_beamlet_command_runs():
    script = Path(sys.executable).with_name("beamlet")
    if not script.exists():
        pytest.skip("beamlet is not installed in this environment (no console script)")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"beamlet {PYPROJECT['project']['version']}")


def test_no_package_is_an_empty_placeholder():
    src = ROOT / "src" / "beamlet"
    for init in src.rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        others = [p for p in init.parent.iterdir() if p.name not in ("__init__.py", "__pycache__")]
        assert body or others, f"{init.parent.relative_to(ROOT)} holds nothing"
