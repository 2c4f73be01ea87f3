"""Runs one (workload, runtime) in this fresh process; prints one JSON line."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time

if os.environ.get("BENCH_CPU_TIME"):
    # --cpu: the workloads time themselves with perf_counter; make it CPU time.
    time.perf_counter = time.process_time


def _with_schedulers(n: int) -> None:
    """--schedulers: beamlet.run gets ``schedulers=n`` unless the workload says."""
    import beamlet

    run = beamlet.run

    def run_with(main: object, *args: object, **kw: object) -> object:
        kw.setdefault("schedulers", n)
        return run(main, *args, **kw)  # type: ignore[arg-type]

    beamlet.run = run_with  # type: ignore[assignment]


def main() -> None:
    workload, runtime, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if os.environ.get("BENCH_SCHEDULERS"):
        _with_schedulers(int(os.environ["BENCH_SCHEDULERS"]))
    module = importlib.import_module(f"benchmarks.workloads.{workload}")
    fn = getattr(module, runtime)
    metrics = fn(*args)
    note = metrics.pop("note", None) if isinstance(metrics, dict) else None
    clean = {
        k: (v if not (isinstance(v, float) and math.isinf(v)) else "inf")
        for k, v in metrics.items()
    }
    print(json.dumps({"metrics": clean, "note": note}), flush=True)


if __name__ == "__main__":
    main()
