"""``beamlet top``'s textual app driven headless (textual's pilot) with a
source that needs no node: what it shows, the sort keys, selection, kill."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("textual")

from beamlet import Pid
from beamlet.observer._top import SourceError, TopApp, details_text, fmt_bytes, fmt_pid


def _row(pid: Pid, name: str | None, call: str, cpu: float, mem: int, q: int, reds: int):
    return {
        "pid": pid,
        "name": name,
        "initial_call": call,
        "current": f"{call.split('/')[0]} (app.py:1)",
        "status": "running" if cpu else "waiting",
        "cpu": cpu / 100,
        "cpu_pct": cpu,
        "reductions": reds,
        "memory": mem,
        "msgq": q,
    }


class FakeSource:
    node = "app@127.0.0.1"

    def __init__(self) -> None:
        self.procs = {
            Pid(7): _row(Pid(7), "runaway", "app.spin/0", 98.0, 600, 0, 5),
            Pid(8): _row(Pid(8), None, "app.hoarder/0", 0.5, 9_000_000, 1, 50),
            Pid(9): _row(Pid(9), None, "app.inbox/0", 0.0, 2_000, 4_000, 7),
        }
        self.killed: list[Pid] = []
        self.tops: list[str] = []
        self.fail = False
        self.round = asyncio.Event()

    async def system(self) -> dict[str, Any]:
        if self.fail:
            raise SourceError("app@127.0.0.1: nodedown")
        return {
            "node": self.node,
            "uptime": 3725.0,
            "schedulers": 2,
            "scheduler_info": [
                {"index": 1, "utilization": 1.0, "handed_off": True, "current": Pid(7)},
                {"index": 2, "utilization": 0.25, "handed_off": False, "current": None},
            ],
            "utilization": 0.625,
            "run_queue": 1,
            "processes": len(self.procs),
            "memory": {"total": 30 * 2**20, "processes": 9 * 2**20},
            "hand_offs": 3,
            "io": {"bytes_in": 10, "bytes_out": 20, "sockets": 1},
            "python": "3.11.7",
            "gil": True,
        }

    async def top(self, by: str, n: int, window: float) -> list[dict[str, Any]]:
        self.tops.append(by)
        await asyncio.sleep(window)
        self.round.set()
        return list(self.procs.values())[:n]

    async def info(self, pid: Any) -> dict[str, Any] | None:
        row = self.procs.get(pid)
        if row is None:
            return None
        return {
            **row,
            "links": [Pid(1)],
            "monitors": [],
            "monitored_by": [],
            "trap_exit": False,
            "stack": [
                {"file": "/srv/app.py", "line": 3, "function": "main"},
                {"file": "/srv/app.py", "line": 9, "function": "spin_inner"},
            ],
            "sockets": [],
        }

    async def kill(self, pid: Any) -> bool:
        self.killed.append(pid)
        return self.procs.pop(pid, None) is not None


def _text(app: TopApp, widget_id: str) -> str:
    return str(app.query_one(widget_id).render())


def _first_pids(app: TopApp) -> list[str]:
    table = app.query_one("#table")
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]  # type: ignore[attr-defined]


async def _next_round(app: TopApp, source: FakeSource, pilot: Any) -> None:
    source.round.clear()
    done = app.refreshes
    while app.refreshes == done:
        await pilot.pause(0.01)


def test_top_shows_the_node_the_runaway_first_and_its_stack():
    source = FakeSource()

    async def go():
        app = TopApp(source, window=0.1)
        async with app.run_test(size=(160, 40)) as pilot:
            await _next_round(app, source, pilot)
            home = _text(app, "#home")
            order = _first_pids(app)
            await _next_round(app, source, pilot)
            details = _text(app, "#info")
            return home, order, details

    home, order, details = asyncio.run(go())
    assert "app@127.0.0.1" in home and "uptime 01:02:05" in home
    assert "processes 3" in home and "run queue 1" in home and "hand-offs 3" in home
    assert "schedulers 2" in home and "62.5%" in home and "100%" in home
    assert order == ["<0.7.0>", "<0.8.0>", "<0.9.0>"]
    assert "<0.7.0> (runaway)" in details
    assert "spin_inner  /srv/app.py:9" in details
    assert details.index("main") < details.index("spin_inner")  # innermost last


def test_keys_sort_select_and_kill():
    source = FakeSource()

    async def go():
        app = TopApp(source, window=0.1)
        seen = {}
        async with app.run_test(size=(160, 40)) as pilot:
            await _next_round(app, source, pilot)
            for key, by in (("m", "memory"), ("b", "msgq"), ("r", "reductions"), ("c", "cpu")):
                await pilot.press(key)
                seen[by] = _first_pids(app)[0]
            await pilot.press("m")
            await _next_round(app, source, pilot)
            assert source.tops[-1] == "memory"
            await pilot.press("up")  # the cursor stayed on the runaway (last by memory)
            await pilot.pause(0.05)
            selected = app.selected
            await pilot.press("k")
            await _next_round(app, source, pilot)
            remaining = _first_pids(app)
            await pilot.press("q")
        return seen, selected, remaining, app.return_code

    seen, selected, remaining, code = asyncio.run(go())
    assert seen == {
        "memory": "<0.8.0>",
        "msgq": "<0.9.0>",
        "reductions": "<0.8.0>",
        "cpu": "<0.7.0>",
    }
    assert selected == "<0.9.0>"
    assert source.killed == [Pid(9)]
    assert remaining == ["<0.8.0>", "<0.7.0>"]
    assert code == 0


def test_an_unreachable_node_is_shown_not_fatal():
    source = FakeSource()
    source.fail = True

    async def go():
        app = TopApp(source, window=0.1)
        async with app.run_test(size=(160, 40)) as pilot:
            while "nodedown" not in _text(app, "#home"):
                await pilot.pause(0.01)
            source.fail = False
            await _next_round(app, source, pilot)
            return _text(app, "#home")

    assert "nodedown" not in asyncio.run(go())


def test_formatting():
    assert fmt_pid(Pid(12, 0, "app@h")) == "<0.12.0>"
    assert fmt_bytes(512) == "512 B" and fmt_bytes(3 * 2**20) == "3.0 MiB"
    assert "no such process" in str(details_text(Pid(3), None))
