#!/usr/bin/env bash
# Regenerates the ETF golden vectors under tests/data/ from real Erlang nodes:
#   tests/data/etf_golden_otp25.txt  (the system `erl`, Debian's OTP 25)
#   tests/data/etf_golden_otp28.txt  (ERL28=/path/to/erl, or ../shared/tools/otp28.sh)
# The vectors are produced by tests/data/etf_golden.script (see its header).
set -euo pipefail
export ERL_CRASH_DUMP_BYTES=0
cd "$(dirname "$0")/.."
gen() {  # gen ERL OUTFILE
  "$1" -noshell -noinput -eval "
    {ok, _} = file:script(\"tests/data/etf_golden.script\", [{'Bindings_', [{out, \"$2\"}]}]),
    halt()." || { echo "generation with $1 failed" >&2; return 1; }
  echo "wrote $2"
}
gen "${ERL:-erl}" tests/data/etf_golden_otp25.txt
erl28=${ERL28:-}
if [ -z "$erl28" ] && [ -x ../shared/tools/otp28.sh ]; then erl28=$(../shared/tools/otp28.sh); fi
if [ -z "$erl28" ] && [ -x /work/shared/tools/otp28.sh ]; then erl28=$(/work/shared/tools/otp28.sh); fi
if [ -n "$erl28" ]; then gen "$erl28" tests/data/etf_golden_otp28.txt; else echo "no OTP 28 erl: skipped" >&2; fi
