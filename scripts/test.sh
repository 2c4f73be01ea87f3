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
python -m pytest "$@"
# The kernel tests with kills on the fallback path (PyThreadState_SetAsyncExc),
# which an interpreter without a free sys.monitoring tool or with an unexpected
# 3.11 layout uses (every run's shutdown kills too, not only test_kill's).
echo "== kernel tests with the fallback kill (BEAMLET_ASYNC_EXC_KILLS=1)"
BEAMLET_ASYNC_EXC_KILLS=1 python -m pytest -q -p no:cacheprovider tests/kernel
# The kernel has version-specific paths (3.11's thread-start rule for kills, the
# 3.12+ throttle): where pyenv holds 3.12 / 3.13, run the kernel, preemption and
# OTP tests on them too (best effort set-up, but a failing test fails the run).
if [ -z "${BEAMLET_SKIP_OTHER_PYTHONS:-}" ] && command -v pyenv >/dev/null 2>&1; then
  for v in 3.12 3.13; do
    full=$(pyenv versions --bare 2>/dev/null | grep -E "^${v}\.[0-9]+$" | tail -1 || true)
    [ -n "$full" ] || continue
    prefix=$(pyenv prefix "$full" 2>/dev/null) || continue
    exe=$prefix/bin/python$v
    venv=.venv-$v
    if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.installed" ]; then
      rm -rf "$venv"
      if ! { "$exe" -m venv "$venv" && "$venv/bin/python" -m pip install -q -e ".[dev]" \
          && touch "$venv/.installed"; }; then
        echo "could not set up Python $full: skipping the tests on it"
        continue
      fi
    fi
    echo "== kernel, preemption and OTP tests on Python $full"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/kernel/semantics tests/otp \
      tests/kernel/test_preemption.py tests/kernel/test_kill.py tests/kernel/test_receive.py \
      tests/kernel/test_timers.py
  done
fi
