"""Fixtures for the distribution tests (defined in dist_helpers.py)."""

from dist_helpers import builtin_epmd, elixir_nodes, erl_nodes, real_epmd

__all__ = ["builtin_epmd", "elixir_nodes", "erl_nodes", "real_epmd"]
