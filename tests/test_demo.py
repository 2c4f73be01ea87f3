"""The demo system (examples/demo_system.py, what ``bash scripts/demo.sh`` runs), end to
end in a subprocess with short phases: its JSON summary is checked for shape -- every
phase served requests, the runaway was named by observer.top and killed, the crash cost
only failed requests to the crashing endpoint, the fix loaded over rpc answers without a
restart, the second node served work -- and it leaves no process behind, on Ctrl-C and
when it is killed outright."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PHASES = ["baseline", "runaway", "kill", "crash", "fix", "spread"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_command(tag: str, *extra: str) -> list[str]:
    """The demo on its own EPMD port and node names (tests run side by side)."""
    return [
        sys.executable,
        "-m",
        "examples.demo_system",
        "--node",
        f"demo_{tag}_{os.getpid()}@127.0.0.1",
        "--cookie",
        "demo_test",
        "--epmd-port",
        str(free_port()),
        *extra,
    ]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), str(ROOT)) if p)
    return e


def alive(pid: int) -> bool:
    """Is ``pid`` a live process (not a zombie)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    """Polls an external process (the worker node) until it is gone."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def run() -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [*demo_command("e2e"), "--phase-seconds", "1", "--json"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.stdout.strip(), proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return proc, report


def test_the_demo_runs_every_step_and_exits_0(run: Any) -> None:
    proc, report = run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert report["ok"] is True
    for n in range(1, 7):
        assert f"\n{n}. " in proc.stdout
    assert "\nsummary\n" in proc.stdout


def test_every_phase_served_requests(run: Any) -> None:
    _, report = run
    phases = report["phases"]
    assert [p["name"] for p in phases] == PHASES
    for p in phases:
        assert p["served"] > 0, p
        assert p["p50_ms"] is not None and p["p99_ms"] >= p["p50_ms"], p
    # the rate never dropped to zero: no second of any phase without a request served
    assert report["min_rate"] is None or report["min_rate"] > 0


def test_the_runaway_was_named_by_top_shown_by_stack_and_killed(run: Any) -> None:
    _, report = run
    r = report["runaway"]
    assert r["named_by_top"] is True, r
    assert r["top"][0]["pid"] == r["pid"]
    assert r["top"][0]["current"].startswith("spin ")
    assert r["stack_has_loop"] is True
    assert r["killed"] is True


def test_the_crash_cost_only_requests_to_the_crashing_endpoint(run: Any) -> None:
    _, report = run
    crash = report["crash"]
    assert crash["status"] == 500
    assert crash["pid_after"] != crash["pid_before"]  # its supervisor restarted it
    assert crash["restarts_after"] == crash["restarts_before"] + 1
    phases = {p["name"]: p for p in report["phases"]}
    assert phases["crash"]["failed"] >= 1  # the bad request itself
    assert set(phases["crash"]["failed_by_endpoint"]) == {"/price"}
    for name in PHASES:
        if name != "crash":
            assert phases[name]["failed"] == 0, phases[name]


def test_the_fix_loaded_over_rpc_answers_without_a_restart(run: Any) -> None:
    _, report = run
    fix = report["fix"]
    assert fix["loaded"] is True
    assert fix["loaded_from"] == "demo_fix node"  # over the wire, from a node of its own
    assert "module" in fix["load_result"]
    assert fix["status"] == 200 and fix["after_load"] == 200
    assert fix["body"]["per_item"] == 0 and fix["body"]["vsn"] == 2
    assert fix["same_pid"] is True
    assert fix["restarts_after"] == fix["restarts_before"]


def test_the_second_node_served_work_and_is_gone(run: Any) -> None:
    _, report = run
    spread = report["spread"]
    assert spread["ping"] == "pong"
    served = next(p for p in report["phases"] if p["name"] == "spread")["served_by_node"]
    assert served.get(spread["worker"], 0) > 0
    assert len(served) == 2
    assert wait_gone(spread["os_pid"], 5.0)


def run_until_the_worker_joins(tag: str, *extra: str) -> tuple[subprocess.Popen[str], int, str]:
    """Starts the demo, reads its output until the worker node joined: (the demo, the
    worker's OS pid, the output so far)."""
    proc = subprocess.Popen(
        [*demo_command(tag), "--phase-seconds", "0.3", "--quiet", *extra],
        cwd=ROOT,
        env=env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "(OS pid " in line:
            return proc, int(line.split("(OS pid ")[1].split(")")[0]), "".join(seen)
    proc.kill()
    raise AssertionError(f"the worker never joined: {proc.communicate(timeout=10)}")


def test_ctrl_c_stops_the_demo_and_its_worker_node() -> None:
    # --interactive, with no terminal: it prints what to try and goes on at each pause
    proc, worker, seen = run_until_the_worker_joins("int", "--interactive")
    for command in ("beamlet top demo_int_", "beamlet remsh demo_int_", "beamlet dashboard"):
        assert command in seen
    assert alive(worker)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, out + err
    assert "interrupted" in out
    assert "Traceback" not in err, err
    assert wait_gone(worker, 5.0)


def test_a_killed_demo_leaves_no_worker_node_behind() -> None:
    # The demo's way of starting its worker node, in a parent that is then killed
    # outright (no clean-up code runs): the worker sees its stdin close and exits.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from examples.demo_system import WorkerNode; "
            f"w = WorkerNode('demo_orphan_{os.getpid()}@127.0.0.1', 'c', {free_port()}); "
            "print(w.wait_ready(), w.proc.pid, flush=True); time.sleep(60)",
        ],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    name, pid = parent.stdout.readline().split()
    assert name.startswith("demo_orphan_") and alive(int(pid))
    parent.kill()
    parent.communicate(timeout=10)
    assert wait_gone(int(pid), 10.0)
