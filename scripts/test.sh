#!/usr/bin/env bash
# Sets up everything the tests need (.venv, Erlang/OTP for interop tests), then
# runs the linters, the type checker and the test suite. Extra args go to pytest.
. "$(dirname "$0")/_venv.sh" dev
if ! command -v erl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Erlang/OTP (erlang-base) for the interop tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq erlang-base >/dev/null) \
      || echo "could not install erlang-base: interop tests will be skipped"
  else
    echo "no erl on PATH and not root: interop tests will be skipped"
  fi
fi
ruff check src tests benchmarks examples
ruff format --check src tests benchmarks examples
mypy
exec python -m pytest "$@"
