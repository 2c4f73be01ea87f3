#!/usr/bin/env bash
# Sets up everything the tests need (.venv; Erlang/OTP and Elixir for interop tests), then
# runs the linters, the type checker and the test suite. Extra args go to pytest.
. "$(dirname "$0")/_venv.sh" dev
# Interop tests run against the real Erlang/OTP and Elixir when present, the browser
# tests against Debian's Chromium, the terminal tests in tmux.
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
install chromium chromium  # the headless-browser tests (http chat, observer dashboard)
install tmux tmux  # the terminal tests of `beamlet top` and `beamlet remsh`
# Test artifacts (the dashboard's screenshots) land here.
export BEAMLET_ARTIFACTS=${BEAMLET_ARTIFACTS:-$PWD/artifacts}
ruff check src tests benchmarks examples
ruff format --check src tests benchmarks examples
mypy
python -m pytest "$@"
# The kernel tests with kills on the fallback path (PyThreadState_SetAsyncExc),
# which an interpreter without a free sys.monitoring tool or with an unexpected
# 3.11 layout uses (every run's shutdown kills too, not only test_kill's).
echo "== kernel tests with the fallback kill (BEAMLET_ASYNC_EXC_KILLS=1)"
BEAMLET_ASYNC_EXC_KILLS=1 python -m pytest -q -p no:cacheprovider tests/kernel tests/net/test_net.py
# The kernel has version-specific paths (3.11's thread-start rule for kills, the
# 3.12+ throttle, the observer's sys.monitoring tracer): where pyenv holds 3.12 /
# 3.13, run the kernel, preemption, OTP, code and observer tests on them too (best
# effort set-up, but a failing test fails the run).
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
      tests/kernel/test_timers.py tests/kernel/test_inbox.py tests/kernel/test_call_local.py \
      tests/net/test_net.py tests/net/test_listener.py tests/code \
      tests/observer/test_observer.py tests/observer/test_trace.py
  done
fi
# Free-threaded CPython 3.13t (no GIL): races the GIL hides show there one run in
# a few, so the kernel, preemption, process_info, OTP and net tests run in rounds, until
# BEAMLET_FT_ROUNDS rounds or BEAMLET_FT_BUDGET seconds (at least 3 rounds).
# The interpreter is built (~3 min, then cached in ~/.cache/beamlet-python-ft) by
# the shared tool python-ft.sh, looked for beside the clone (../shared/tools) and
# in /work/shared/tools; BEAMLET_PYTHON_FT=/path/to/python3.13t uses that one
# instead. Best effort set-up (no tool, a failed build: skipped, said so), but a
# failing test fails the run.
# Its venv gets the test tools only: the newest hypothesis and mypy have no wheels
# for 3.13t and their sdists need a Rust toolchain, so hypothesis is taken as a
# wheel (--only-binary: the newest version that has one) and mypy is left out
# (it runs on the main venv).
ft_status=0
if [ -z "${BEAMLET_SKIP_FREE_THREADED:-}" ]; then
  ft_py=${BEAMLET_PYTHON_FT:-}
  if [ -z "$ft_py" ]; then
    ft_tool=
    for t in ../shared/tools/python-ft.sh /work/shared/tools/python-ft.sh; do
      if [ -f "$t" ]; then ft_tool=$t; break; fi
    done
    if [ -z "$ft_tool" ]; then
      echo "no python-ft.sh in ../shared/tools or /work/shared/tools: skipping the free-threaded tests"
    else
      echo "== free-threaded CPython 3.13t from $ft_tool (built once, ~3 min, then cached)"
      ft_py=$(bash "$ft_tool" | tail -n 1) || ft_py=
      [ -n "$ft_py" ] || echo "$ft_tool failed: skipping the free-threaded tests"
    fi
  fi
  venv=.venv-3.13t
  if [ -n "$ft_py" ] && { [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.installed" ]; }; then
    rm -rf "$venv"
    if ! { "$ft_py" -m venv "$venv" && "$venv/bin/python" -m pip install -q -e . "aiosqlite>=0.20,<1" \
        "pytest>=8,<10" "pytest-timeout>=2.2,<3" "hypothesis>=6.100,<7" \
        --only-binary hypothesis && touch "$venv/.installed"; }; then
      echo "could not set up $venv from $ft_py: skipping the free-threaded tests"
      ft_py=
    fi
  fi
  if [ -n "$ft_py" ]; then
    if ! "$venv/bin/python" -c 'import sys, beamlet; sys.exit(sys._is_gil_enabled())'; then
      echo "the GIL is on after import beamlet on $ft_py"
      ft_status=1
    fi
    rounds=${BEAMLET_FT_ROUNDS:-20}
    budget=${BEAMLET_FT_BUDGET:-210}
    echo "== kernel, preemption and OTP tests on free-threaded $("$venv/bin/python" -V):" \
      "up to $rounds rounds or ${budget}s"
    ft_start=$SECONDS
    ft_failed=0
    done_rounds=0
    ft_log=$(mktemp)
    for i in $(seq 1 "$rounds"); do
      if [ "$i" -gt 3 ] && [ $((SECONDS - ft_start)) -ge "$budget" ]; then break; fi
      if ! "$venv/bin/python" -m pytest -q -p no:cacheprovider -x --timeout 60 \
          tests/kernel/semantics tests/otp tests/kernel/test_preemption.py \
          tests/kernel/test_kill.py tests/kernel/test_receive.py tests/kernel/test_timers.py \
          tests/kernel/test_process_info.py tests/kernel/test_inbox.py \
          tests/kernel/test_call_local.py tests/net/test_net.py tests/net/test_listener.py \
          tests/aio/test_aio.py tests/code tests/observer/test_observer.py \
          tests/observer/test_trace.py \
          >"$ft_log" 2>&1; then
        echo "-- round $i failed:"
        sed -n '/^=* FAILURES =*$/,$p' "$ft_log" | head -n 300 || true  # (head may close the pipe early)
        grep -E '^(FAILED|ERROR)' "$ft_log" || tail -n 20 "$ft_log"
        ft_failed=$((ft_failed + 1))
      fi
      done_rounds=$i
    done
    rm -f "$ft_log"
    echo "free-threaded: $((done_rounds - ft_failed)) of $done_rounds rounds passed in $((SECONDS - ft_start))s"
    [ "$ft_failed" = 0 ] || ft_status=1
  fi
fi
exit "$ft_status"
