"""The ``beamlet`` command.

``beamlet --version`` prints the installed version; ``beamlet --help`` what the
command can do. The observer's verbs (top, remsh, run, dashboard) come with it.
Standard library only (argparse): the command must start fast and work in any
environment beamlet installs into.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata


def version() -> str:
    """The installed distribution's version ("unknown" when run from a source tree
    that was never installed)."""
    try:
        return metadata.version("beamlet")
    except metadata.PackageNotFoundError:
        return "unknown"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="beamlet",
        description=(
            "beamlet: the BEAM's process model for Python (processes, links, monitors, "
            "supervisors, Erlang distribution). Programs use it as a library: "
            "beamlet.run(main). See README.md and docs/."
        ),
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"beamlet {version()} (Python {sys.version.split()[0]})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    p = parser()
    p.parse_args(argv)
    p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
