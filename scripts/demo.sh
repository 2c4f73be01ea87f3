#!/usr/bin/env bash
# Sets up .venv and runs the demo system (examples/), on embedded defaults.
. "$(dirname "$0")/_venv.sh" demo
exec python -m examples.demo_system "$@"
