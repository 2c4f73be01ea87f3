"""Fixtures for the observer tests: the distribution tests' epmd and erl nodes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distribution"))

from dist_helpers import builtin_epmd, erl_nodes

__all__ = ["builtin_epmd", "erl_nodes"]
