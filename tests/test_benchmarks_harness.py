"""The benchmark harness runs and reports; it measures nothing here (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.__main__ import print_row
from benchmarks.suite import HIGHER, Metric, Workload

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("runtime", ["beamlet", "asyncio"])
def test_the_harness_prints_a_table_and_writes_json(tmp_path, runtime):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "pingpong,kill_0",
         "--runtimes", runtime, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "== pingpong" in proc.stdout
    data = json.loads(out.read_text())
    rows = {r["workload"]: r for r in data["results"]}
    value = rows["pingpong"]["runtimes"][runtime]["metrics"]["us_per_roundtrip"]
    assert value > 0
    if runtime == "asyncio":
        assert rows["kill_0"]["runtimes"] == {}  # not an asyncio workload


def test_two_trees_are_measured_side_by_side_in_cpu_time(tmp_path):
    """--tree twice: one column per checkout (an A/B of two beamlets in one run);
    --cpu: CPU time, said in the header."""
    out = tmp_path / "r.json"
    other = tmp_path / "other"
    (other / "src").mkdir(parents=True)
    (other / "src" / "beamlet").symlink_to(ROOT / "src" / "beamlet")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "pingpong",
         "--runtimes", "beamlet", "--cpu", "--tree", str(ROOT), "--tree", str(other),
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "process CPU time" in proc.stdout
    data = json.loads(out.read_text())
    columns = data["results"][0]["runtimes"]
    assert set(columns) == {f"beamlet@{ROOT.name}", "beamlet@other"}
    assert all(c["metrics"]["us_per_roundtrip"] > 0 for c in columns.values())


def test_scheduler_counts_are_columns(tmp_path):
    """--schedulers 1,2: beamlet runs once per count (the parallel workloads)."""
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "pairs,cpu_bound",
         "--runtimes", "beamlet", "--schedulers", "1,2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {r["workload"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows["pairs"]["runtimes"]) == {"beamlet/S1", "beamlet/S2"}
    assert rows["pairs"]["runtimes"]["beamlet/S2"]["metrics"]["roundtrips_per_s"] > 0
    assert rows["cpu_bound"]["runtimes"]["beamlet/S1"]["metrics"]["seconds"] > 0


def test_ratios_read_as_speedups_between_beamlet_columns(capsys):
    """Against another runtime a ratio > 1 means beamlet does better; between two
    beamlet columns (--schedulers, --tree) it means the later column does better:
    2 schedulers that halve the time show 2.00x, not 0.50x."""
    w = Workload("w", "a workload", (1,), (1,),
                 (Metric("seconds", "s"), Metric("per_s", "/s", better=HIGHER)))  # fmt: skip
    row = {"args": [1], "runtimes": {
        "beamlet/S1": {"metrics": {"seconds": 2.0, "per_s": 100.0}},
        "beamlet/S2": {"metrics": {"seconds": 1.0, "per_s": 150.0}},
        "asyncio": {"metrics": {"seconds": 4.0, "per_s": 50.0}},
    }}  # fmt: skip
    print_row(w, row, ["beamlet/S1", "beamlet/S2", "asyncio"])
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert "beamlet/S2 2.00x, asyncio 2.00x" in lines["seconds"]
    assert "beamlet/S2 1.50x, asyncio 2.00x" in lines["per_s"]
