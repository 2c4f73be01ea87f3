"""beamlet.observer on the local node: top, info, stack, tree, system,
sockets, kill (docs/semantics.md, "Observer", OBS-1 .. OBS-7)."""

from __future__ import annotations

import inspect
import sys

import pytest
from tests.conftest import run

import beamlet
from beamlet import ANY, BadArg, Down, observer, receive, send, spawn
from beamlet.distribution.etf import ETFContext, decode, encode
from beamlet.otp import GenServer, Supervisor
from beamlet.otp import supervisor as sup_api

ROW_KEYS = {
    "pid", "name", "initial_call", "current", "status", "cpu", "cpu_pct", "reductions",
    "memory", "msgq",
}  # fmt: skip


async def runaway(parent):
    send(parent, ("spinning", beamlet.self()))
    x = 0
    while True:  # RUNAWAY-LOOP
        x += 1


async def waiter():
    await receive("never")  # WAITER-RECEIVE


def line_of(fn, marker):
    lines, start = inspect.getsourcelines(fn)
    for i, text in enumerate(lines):
        if marker in text:
            return start + i
    raise AssertionError(marker)


TEXT = ETFContext(text=True)  # as a beamlet node decodes


def etf_round_trip(value):
    return decode(encode(value, TEXT), TEXT)


# ---------------------------------------------------------------- OBS-1 top


def test_a_runaway_ranks_first_by_cpu_and_kill_kills_it():
    async def main():
        me = beamlet.self()
        pid, ref = beamlet.spawn_monitor(runaway, me)
        await receive(("spinning", pid))
        for _ in range(20):
            spawn(waiter)
        rows = await observer.top("cpu", 5, 0.2)
        first = rows[0]
        assert first["pid"] == pid, rows
        assert set(first) == ROW_KEYS
        assert first["cpu"] > 0 and 0 < first["cpu_pct"] <= 200
        assert first["status"] == "running"
        assert first["initial_call"].endswith("runaway/1")
        assert observer.kill(pid) is True
        down = await receive(Down(ref, pid, ANY), timeout=5)
        assert observer.kill(pid) is False
        assert observer.info(pid) is None and observer.stack(pid) is None
        return down.reason

    assert run(main) == "killed"


def test_a_growing_mailbox_ranks_first_by_msgq_and_memory():
    async def main():
        pid = spawn(waiter)
        for _ in range(5):
            spawn(waiter)
        for i in range(500):
            send(pid, ("junk", i, "x" * 100))
        by_q = await observer.top("msgq", 3, 0)
        by_mem = await observer.top(by="memory", n=3, window=0)
        return pid, by_q, by_mem

    pid, by_q, by_mem = run(main)
    assert by_q[0]["pid"] == pid and by_q[0]["msgq"] == 500
    assert by_mem[0]["pid"] == pid and by_mem[0]["memory"] > 500 * 50  # (shallow sizes: the tuples)


def test_reductions_rank_the_process_that_is_scheduled_most():
    async def yielder(parent):
        send(parent, "go")
        while True:
            await beamlet.sleep(0)

    async def main():
        pid = spawn(yielder, beamlet.self())
        await receive("go")
        rows = await observer.top("reductions", 2, 0.1)
        return pid, rows

    pid, rows = run(main)
    assert rows[0]["pid"] == pid and rows[0]["reductions"] > 10


def test_top_refuses_bad_arguments():
    async def main():
        errors = []
        for kwargs in (
            {"by": "colour"},
            {"n": 0},
            {"n": "3"},
            {"window": -1},
            {"window": "1"},
            {"window": 3600},
        ):
            try:
                await observer.top(**kwargs)
            except BadArg as e:
                errors.append(str(e))
        return errors

    errors = run(main)
    assert len(errors) == 6
    assert "cpu, memory, msgq, reductions" in errors[0]


# ---------------------------------------------------------------- OBS-2 info, OBS-3 stack


def test_stack_of_a_waiting_process_shows_its_receive_line():
    async def main():
        pid = spawn(waiter)
        # it has run into its receive once it appears waiting in its own view
        while (info := observer.info(pid))["status"] != "waiting":
            await beamlet.sleep(0)
        return pid, observer.stack(pid), info

    pid, stack, info = run(main)
    mine = [f for f in stack if f["function"] == "waiter"]
    assert mine and mine[0]["line"] == line_of(waiter, "WAITER-RECEIVE")
    assert mine[0]["file"] == __file__
    assert info["stack"] == stack
    assert info["current"].startswith("receive (")
    assert info["pid"] == pid and info["msgq"] == 0 and info["trap_exit"] is False
    assert set(ROW_KEYS) | {
        "links",
        "monitors",
        "monitored_by",
        "trap_exit",
        "stack",
        "sockets",
    } <= set(info)
    assert etf_round_trip(info) == info


def test_stack_of_a_running_runaway_shows_its_loop():
    async def main():
        pid = spawn(runaway, beamlet.self())
        await receive(("spinning", pid))
        stack = observer.stack(pid)
        observer.kill(pid)
        return stack

    stack = run(main)
    assert stack[-1]["function"] == "runaway"
    if beamlet._kernel.parker.GIL:
        assert stack[-1]["line"] in range(
            line_of(runaway, "RUNAWAY-LOOP"), line_of(runaway, "RUNAWAY-LOOP") + 2
        )
    else:
        # free-threaded: a running process's frames cannot be read safely (OBS-3)
        assert stack[-1]["line"] == runaway.__code__.co_firstlineno


def test_info_and_stack_take_registered_names_and_refuse_other_things():
    async def main():
        pid = spawn(waiter)
        beamlet.register("the_waiter", pid)
        a = observer.info("the_waiter")
        b = observer.info(beamlet.Atom("nobody"))
        errors = []
        for bad in (42, None, 1.5):
            try:
                observer.info(bad)
            except BadArg as e:
                errors.append(str(e))
        return pid, a, b, errors

    pid, a, b, errors = run(main)
    assert a["pid"] == pid and a["name"] == "the_waiter"
    assert b is None and len(errors) == 3


def test_processes_lists_every_process_with_totals():
    async def main():
        pids = {spawn(waiter) for _ in range(5)}
        rows = observer.processes()
        return pids, rows

    pids, rows = run(main)
    assert pids <= {r["pid"] for r in rows}
    assert all(set(r) == ROW_KEYS and r["cpu_pct"] == 0.0 for r in rows)
    assert etf_round_trip(rows) == rows


# ---------------------------------------------------------------- OBS-4 tree


class Worker(GenServer):
    async def init(self, parent=None):
        if parent is not None:
            send(parent, ("started", beamlet.self()))

    async def handle_call(self, request, from_):
        return request


def test_tree_shows_supervisors_children_and_restarts_after_a_crash():
    async def main():
        spec = sup_api.ChildSpec
        w3 = spec("w3", (Worker.start_link, ()))
        inner = spec("inner", (Supervisor.start_link, ([w3],)), type="supervisor")
        sup = await Supervisor.start_link(
            [spec("w1", (Worker.start_link, ())), spec("w2", (Worker.start_link, ())), inner],
            intensity=5,
            name="top_sup",
        )
        before = observer.tree()
        children = await sup_api.which_children(sup)
        w1 = children[0][1]
        ref = beamlet.monitor(w1)
        beamlet.exit(w1, "kill")
        await receive(Down(ref, w1, ANY))
        after_children = await sup_api.which_children(sup)  # queued behind its Exit
        after = observer.tree()
        return sup, before, after, w1, after_children

    sup, before, after, w1, after_children = run(main)
    assert len(before) == 1
    root = before[0]
    assert root["pid"] == sup and root["name"] == "top_sup" and root["type"] == "supervisor"
    assert [c["id"] for c in root["children"]] == ["w1", "w2", "inner"]
    assert [c["type"] for c in root["children"]] == ["worker", "worker", "supervisor"]
    assert root["restarts"] == 0
    assert [c["id"] for c in root["children"][2]["children"]] == ["w3"]
    new_root = after[0]
    assert new_root["restarts"] == 1
    assert new_root["children"][0]["pid"] == after_children[0][1] != w1
    assert etf_round_trip(after) == after


def test_tree_is_empty_without_supervisors():
    async def main():
        return observer.tree()

    assert run(main) == []


# ---------------------------------------------------------------- OBS-5 system


def test_system_has_its_keys_and_sane_values():
    async def main():
        pid = spawn(runaway, beamlet.self())
        await receive(("spinning", pid))
        info = observer.system()
        observer.kill(pid)
        return pid, info

    pid, info = run(main)
    for key in ("node", "uptime", "schedulers", "scheduler_info", "utilization", "run_queue",
                "processes", "memory", "hand_offs", "io", "python", "gil"):  # fmt: skip
        assert key in info, key
    assert info["node"] is None and info["schedulers"] == 2
    assert info["uptime"] > 0 and info["processes"] >= 2
    assert 0.0 <= info["utilization"] <= 1.0
    assert all(0.0 <= s["utilization"] <= 1.0 for s in info["scheduler_info"])
    assert pid in [s["current"] for s in info["scheduler_info"]]
    assert info["memory"]["total"] > 1_000_000 and info["memory"]["processes"] > 0
    assert info["python"] == sys.version.split()[0]
    assert isinstance(info["gil"], bool) and isinstance(info["hand_offs"], int)
    assert etf_round_trip(info) == info


def test_system_counts_socket_bytes_and_sockets_lists_them():
    from beamlet import net

    async def main():
        ls = net.listen(0)
        port = net.sockname(ls)[1]
        c = await net.connect("127.0.0.1", port)
        s = await net.accept(ls)
        await net.send(c, b"x" * 1000)
        got = b""
        while len(got) < 1000:
            got += await net.recv(s, 0)
        listed = observer.sockets()
        during = observer.system()["io"]
        net.close(c)
        net.close(s)
        after = observer.system()["io"]
        return listed, during, after

    listed, during, after = run(main)
    assert len(listed) == 3 and during["sockets"] == 3
    assert during["bytes_in"] >= 1000 and during["bytes_out"] >= 1000
    assert after["bytes_in"] >= 1000 and after["bytes_out"] >= 1000  # released ones count
    assert etf_round_trip(listed) == listed


# ---------------------------------------------------------------- OBS-7 lazy parts, expose


def test_expose_registers_every_function_and_unexpose_removes_them():
    from beamlet import rpc

    observer.expose()
    try:
        names = {f for (m, f) in rpc.exposed() if m == "beamlet_observer"}
    finally:
        observer.unexpose()
    assert names == {
        "top",
        "processes",
        "info",
        "stack",
        "tree",
        "system",
        "trace",
        "sockets",
        "kill",
    }
    assert not [m for (m, _f) in rpc.exposed() if m == "beamlet_observer"]


def test_unknown_attributes_raise_attribute_error():
    with pytest.raises(AttributeError):
        observer.no_such_thing  # noqa: B018


def test_set_metric_publishes_a_figure_in_system_per_runtime_and_refuses_bad_ones():
    async def main():
        assert observer.system()["metrics"] == {}
        observer.set_metric("http req/s", 1973)
        observer.set_metric("http req/s", 1980.5)  # replaced, not added
        assert observer.system()["metrics"] == {"http req/s": 1980.5}
        for name, value in (("", 1), ("x" * 65, 1), (3, 1), ("a", "1"), ("a", float("nan"))):
            with pytest.raises(BadArg):
                observer.set_metric(name, value)  # type: ignore[arg-type]
        for i in range(observer.MAX_METRICS - 1):
            observer.set_metric(f"m{i}", i)
        with pytest.raises(BadArg, match="at most"):
            observer.set_metric("one too many", 0)

    run(main)

    async def again():
        return observer.system()["metrics"]

    assert run(again) == {}  # a new runtime starts with none
