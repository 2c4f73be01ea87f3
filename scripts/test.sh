#!/usr/bin/env bash
# Sets up everything the tests need (.venv; Erlang/OTP and Elixir for interop tests), then
# runs the linters, the type checker and the test suite. Extra args go to pytest.
. "$(dirname "$0")/_venv.sh" dev
# Interop tests run against the real Erlang/OTP and Elixir when present.
install() {  # install() <command> <package>: best effort, as root with apt-get
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $2 for the interop tests"
    if [ -z "${_apt_updated:-}" ]; then apt-get update -qq || true; _apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null \
      || echo "could not install $2: its interop tests will be skipped"
  else
    echo "no $1 on PATH and not root: its interop tests will be skipped"
  fi
}
install erl erlang-base
install elixir elixir
ruff check src tests benchmarks examples
ruff format --check src tests benchmarks examples
mypy
exec python -m pytest "$@"
