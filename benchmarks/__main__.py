"""python -m benchmarks: beamlet side by side with asyncio, gevent and Erlang.

Every (workload, runtime) pair runs in a fresh OS process. Results: a table on
stdout, and with --json FILE the raw numbers. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.suite import HIGHER, WORKLOADS, Workload, erlang_workload, module_of
from benchmarks.workloads.netcommon import raise_nofile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY_RUNTIMES = ("beamlet", "asyncio", "uvloop", "gevent", "pykka", "deepcopy", "pickle")
ALL_RUNTIMES = (
    "beamlet", "asyncio", "uvloop", "gevent", "pykka", "deepcopy", "pickle",
    "erlang", "erlang28", "erlang+S1",
)  # fmt: skip


def erl_binaries() -> dict[str, str]:
    found: dict[str, str] = {}
    erl = shutil.which("erl")
    if erl:
        found["erlang"] = erl
    script = ROOT.parent / "shared" / "tools" / "otp28.sh"
    erl28 = os.environ.get("ERL28")
    if not erl28 and script.exists():
        try:
            erl28 = subprocess.run(
                ["bash", str(script)], capture_output=True, text=True, timeout=300, check=True
            ).stdout.strip()
        except (subprocess.SubprocessError, OSError):
            erl28 = None
    if erl28 and Path(erl28).exists():
        found["erlang28"] = erl28
    return found


def otp_release(erl: str) -> str:
    try:
        out = subprocess.run(
            [
                erl,
                "-noshell",
                "-eval",
                'io:format("~s", [erlang:system_info(otp_release)]), halt().',
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip() or "?"
    except (subprocess.SubprocessError, OSError):
        return "?"


def compile_erlang() -> Path | None:
    """bench.erl compiled by OTP 25's erlc (OTP 28 loads it), cached by content."""
    erlc = shutil.which("erlc")
    if not erlc:
        return None
    sources = sorted((HERE / "erlang").glob("*.erl"))
    digest = hashlib.sha1(b"".join(s.read_bytes() for s in sources)).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"beamlet-bench-erl-{digest}"
    if not (out / "bench.beam").exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([erlc, "-o", str(out), *map(str, sources)], check=True, capture_output=True)
    return out


def run_one(
    w: Workload,
    runtime: str,
    args: tuple[int, ...],
    erls: dict[str, str],
    beams: Path | None,
    tree: Path = ROOT,
    cpu: bool = False,
    python: str = sys.executable,
    schedulers: int | None = None,
) -> dict[str, Any]:
    if runtime in PY_RUNTIMES:
        fn = w.functions.get(runtime, runtime)
        cmd = [python, "-m", "benchmarks.child", module_of(w), fn, json.dumps(list(args))]
        # The beamlet under test is tree/src (another checkout: A/B runs);
        # the workloads are always this checkout's.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree / "src"), str(ROOT)]))
        if cpu:
            env["BENCH_CPU_TIME"] = "1"
        if schedulers is not None:
            env["BENCH_SCHEDULERS"] = str(schedulers)
    else:
        erl = erls.get(runtime.removesuffix("+S1"))
        if erl is None or beams is None:
            return {"error": "not installed"}
        flags = [*w.erlang_flags, *(["+S", "1"] if runtime.endswith("+S1") else [])]
        cmd = [
            erl,
            *flags,
            "-noshell",
            "-pa",
            str(beams),
            "-run",
            "bench",
            "main",
            erlang_workload(w),
            *map(str, args),
        ]
        env = dict(os.environ)
    # The Python workloads raise RLIMIT_NOFILE themselves; erl cannot, so its
    # child gets the limit raised before it starts.
    preexec = (
        None if runtime in PY_RUNTIMES or not w.fds else functools.partial(raise_nofile, w.fds)
    )
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=w.timeout, env=env, cwd=ROOT,
            preexec_fn=preexec,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {w.timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0][:120]}"}
    data = json.loads(lines[-1])
    if "metrics" not in data:  # Erlang prints the metrics (and maybe a note) directly
        data = {"metrics": data, "note": data.pop("note", None)}
    return data


def fmt(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return "n/a"
    if v == float("inf"):
        return "starved"
    if abs(v) >= 10_000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) >= 0.01 else f"{v:.2g}"


def _python_version(python: str) -> str:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version.split()[0], "
             "'free-threaded' if not getattr(sys, '_is_gil_enabled', lambda: True)() else 'GIL')"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        return f"not runnable: {e}"
    return out.stdout.strip() or out.stderr.strip()[-100:]


def _runs_in(w: Workload, rt: str) -> bool:
    rt = rt.partition("/S")[0].partition("@")[0]
    erlang_variant = (rt == "erlang28" and "erlang" in w.runtimes) or (
        rt == "erlang+S1" and w.erlang_single
    )
    return rt in w.runtimes or erlang_variant


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--only", help="comma-separated workloads (default: all)")
    ap.add_argument("--group", help="kernel, preemption, otp, parallel, net, aio or http")
    ap.add_argument("--runtimes", help="comma-separated: " + ",".join(ALL_RUNTIMES))
    ap.add_argument("--quick", action="store_true", help="scaled-down sizes, for a smoke run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per pair; the median is reported")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument(
        "--tree",
        action="append",
        help="measure the beamlet of this checkout (its src/); give it twice or more to "
        "compare checkouts side by side, alternating runs (default: this checkout)",
    )
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="Python runtimes report process CPU time instead of wall-clock time: stable "
        "on a loaded machine, but not comparable with Erlang's figures",
    )
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter for the Python runtimes (e.g. a free-threaded build)",
    )
    ap.add_argument(
        "--schedulers",
        help="comma-separated scheduler counts for beamlet (e.g. 1,2): one column each",
    )
    opts = ap.parse_args(argv)
    sched_counts = [int(n) for n in opts.schedulers.split(",")] if opts.schedulers else [None]
    trees = [Path(t).resolve() for t in opts.tree] if opts.tree else [ROOT]
    for t in trees:
        if not (t / "src" / "beamlet").is_dir():
            ap.error(f"--tree {t}: no src/beamlet there")

    selected = [
        w
        for w in WORKLOADS
        if (not opts.only or w.name in opts.only.split(","))
        and (not opts.group or w.group == opts.group)
    ]
    if opts.only:
        unknown = set(opts.only.split(",")) - {w.name for w in WORKLOADS}
        if unknown:
            ap.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    wanted = opts.runtimes.split(",") if opts.runtimes else None
    erls = erl_binaries() if (wanted is None or any(r.startswith("erlang") for r in wanted)) else {}
    beams = compile_erlang() if erls else None
    runtimes = list(ALL_RUNTIMES)
    if wanted:
        runtimes = [r for r in runtimes if r in wanted]
    if "beamlet" in runtimes and (len(trees) > 1 or opts.schedulers):
        # One column per checkout ("beamlet@<dir name>") and scheduler count ("/S<n>").
        cols = [
            "beamlet"
            + (f"@{t.name}" if len(trees) > 1 else "")
            + (f"/S{n}" if n is not None else "")
            for t in trees
            for n in sched_counts
        ]
        runtimes = cols + [r for r in runtimes if r != "beamlet"]

    print(
        f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    )
    if opts.python != sys.executable:
        print(f"Python runtimes run on: {opts.python} ({_python_version(opts.python)})")
    for name, erl in erls.items():
        print(f"{name}: OTP {otp_release(erl)} ({erl}), default schedulers (one per core)")
    print(f"sizes: {'quick' if opts.quick else 'full'}; repeat {opts.repeat} (median)")
    if opts.cpu:
        print("time: process CPU time for the Python runtimes (--cpu)")
    print()

    results: list[dict[str, Any]] = []
    for w in selected:
        args = w.quick if opts.quick else w.args
        row: dict[str, Any] = {
            "workload": w.name,
            "title": w.title,
            "args": list(args),
            "runtimes": {},
        }
        columns = [rt for rt in runtimes if _runs_in(w, rt)]
        runs_of: dict[str, list[dict[str, Any]]] = {rt: [] for rt in columns}
        for _ in range(opts.repeat):  # alternating: the machine's drift hits all columns
            for rt in columns:
                name, _, n = rt.partition("/S")
                base, _, tree_name = name.partition("@")
                tree = next((t for t in trees if t.name == tree_name), trees[0])
                runs_of[rt].append(
                    run_one(
                        w, base, args, erls, beams, tree, opts.cpu, opts.python,
                        int(n) if n else None,
                    )
                )  # fmt: skip
        for rt in columns:
            runs = runs_of[rt]
            ok = [r for r in runs if "metrics" in r]
            if not ok:
                row["runtimes"][rt] = {"error": runs[0].get("error")}
                continue
            merged: dict[str, Any] = {}
            for m in w.metrics:
                vals = [r["metrics"].get(m.name) for r in ok]
                nums = [float(v) for v in vals if v is not None]
                if nums:
                    merged[m.name] = statistics.median(nums)
                    if len(nums) > 1:
                        merged[m.name + "_spread"] = [min(nums), max(nums)]
            row["runtimes"][rt] = {"metrics": merged, "note": ok[0].get("note")}
        results.append(row)
        print_row(w, row, runtimes)

    print()
    print(
        "ratio = other / beamlet for lower-is-better metrics (2.0x: beamlet takes half the time),"
    )
    print("beamlet / other for higher-is-better ones; > 1 means beamlet is better. 'target' is the")
    print("issue's figure for beamlet. asyncio/gevent 'starved': their pinger never ran again.")
    print("Between beamlet columns (--tree, --schedulers) it is the other way round: > 1 means the")
    print("column does better than the first beamlet column (2 schedulers' speedup over 1).")
    if opts.json:
        Path(opts.json).write_text(json.dumps({"results": results}, indent=2))
    return 0


def print_row(w: Workload, row: dict[str, Any], runtimes: list[str]) -> None:
    cols = [rt for rt in runtimes if rt in row["runtimes"]]
    # Ratios are against the first beamlet column (with --tree: the first tree).
    base = next((rt for rt in cols if rt.startswith("beamlet")), None)
    width = {rt: max(12, len(rt) + 2) for rt in cols}
    print(f"== {w.name}: {w.title} (args {row['args']})")
    header = (
        f"   {'metric':<18}"
        + "".join(f"{rt:>{width[rt]}}" for rt in cols)
        + f"{'target':>11}  ratios vs {base or 'beamlet'}"
    )
    print(header)
    for m in w.metrics:
        vals = {}
        line = f"   {m.name + ' (' + m.unit + ')':<18}"
        for rt in cols:
            r = row["runtimes"][rt]
            v = r.get("metrics", {}).get(m.name) if "metrics" in r else None
            vals[rt] = v
            line += f"{(fmt(v) if 'metrics' in r else 'n/a'):>{width[rt]}}"
        line += f"{fmt(m.target) if m.target is not None else '':>11}  "
        b = vals.get(base) if base is not None else None
        ratios = []
        for rt in cols:
            v = vals.get(rt)
            if rt == base or b in (None, 0) or v is None:
                continue
            if v == float("inf"):
                ratios.append(f"{rt} starved")
                continue
            r = (b / v) if m.better == HIGHER else (v / b)
            if rt.startswith("beamlet"):
                # Another beamlet (a --tree or --schedulers column): how much
                # better that column does than the first, e.g. 2 schedulers' speedup.
                r = 1 / r if r else float("inf")
            ratios.append(f"{rt} {r:.2f}x")
        print(line + ", ".join(ratios))
    for rt in cols:
        r = row["runtimes"][rt]
        if "error" in r:
            print(f"   {rt}: n/a ({r['error']})")
        elif r.get("note"):
            print(f"   {rt}: {r['note']}")


if __name__ == "__main__":
    raise SystemExit(main())
