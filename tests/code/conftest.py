"""A module written to a temporary directory, importable under a fresh name, and
forgotten (sys.modules, beamlet.code's table) after the test; the distribution
tests' fixtures (an epmd, real erl nodes) for the rpc tests."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beamlet import code

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distribution"))
from dist_helpers import builtin_epmd, erl_nodes

__all__ = ["builtin_epmd", "erl_nodes", "mod"]


@dataclasses.dataclass
class Mod:
    name: str
    path: Path

    def write(self, source: str) -> None:
        """Replace the module's file (what ``code.load(name)`` reads again)."""
        self.path.write_text(textwrap.dedent(source))
        importlib.invalidate_caches()

    def source(self, text: str) -> str:
        return textwrap.dedent(text)

    def import_(self) -> Any:
        return importlib.import_module(self.name)


@pytest.fixture
def mod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mod]:
    name = f"codemod_{uuid.uuid4().hex[:10]}"
    monkeypatch.syspath_prepend(str(tmp_path))
    yield Mod(name, tmp_path / f"{name}.py")
    sys.modules.pop(name, None)
    code._modules.pop(name, None)
