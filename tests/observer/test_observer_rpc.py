"""beamlet.observer from another node (OBS-7): a beamlet node through
beamlet.rpc.call, and a real Erlang node through rpc:call, get the same
answers as a local caller."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from dist_helpers import ErlNode, python_node

import beamlet
from beamlet import ANY, Atom, observer, receive, send, spawn
from beamlet.distribution.epmd_server import EPMDServer
from beamlet.rpc import call as rpc_call

COOKIE = "observer-cookie"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
_names = itertools.count(1)
ROW_KEYS = {
    "pid", "name", "initial_call", "current", "status", "cpu", "cpu_pct", "reductions",
    "memory", "msgq",
}  # fmt: skip


@pytest.fixture
def observed(builtin_epmd: EPMDServer):
    name = f"observed{os.getpid()}@127.0.0.1"
    with python_node(HERE / "observed_node.py", name, COOKIE, str(builtin_epmd.port)):
        yield name


def run_node(main, epmd: EPMDServer, *args):
    name = f"obs{os.getpid()}x{next(_names)}@127.0.0.1"
    return beamlet.run(main, name, *args, node=name, cookie=COOKIE, epmd_port=epmd.port)


def test_a_beamlet_node_observes_another_through_rpc(observed, builtin_epmd: EPMDServer):
    async def main(me):
        async def obs(fun, *args):
            return await rpc_call(observed, "beamlet_observer", fun, list(args), timeout=20)

        by_cpu = await obs("top", "cpu", 5, 0.3)
        by_q = await obs("top", Atom("msgq"), 3, [])
        default = await obs("top")
        system = await obs("system")
        tree = await obs("tree")
        runaway = by_cpu[0]["pid"]
        info = await obs("info", runaway)
        stack = await obs("stack", Atom("runaway"))
        procs = await obs("processes")
        socks = await obs("sockets")
        # trace the worker over there; the events come here
        worker = (await obs("info", "worker"))["pid"]
        no_recipient = await obs("trace", worker)
        ref = await obs("trace", worker, 4, 5.0, beamlet.self())
        send(("worker", observed), (Atom("go"), 21, beamlet.self()))
        await receive((Atom("done"), 21), timeout=20)
        events = [
            await receive((Atom("trace"), ref, ANY, ANY, ANY, ANY), timeout=20) for _ in range(2)
        ]
        mon = beamlet.monitor(runaway)
        killed = await obs("kill", runaway)
        down = await receive(beamlet.Down(mon, ANY, ANY), timeout=20)
        gone = await obs("info", runaway)
        local = await observer.top("cpu", 1, 0)
        send(("worker", observed), "stop")
        return locals()

    r = run_node(main, builtin_epmd)
    assert r["by_cpu"][0]["name"] == "runaway" and set(r["by_cpu"][0]) == ROW_KEYS
    assert set(r["local"][0]) == ROW_KEYS  # the same shape as a local call
    assert r["by_q"][0]["name"] == "busy_mailbox" and r["by_q"][0]["msgq"] == 300
    assert len(r["default"]) <= 10
    assert r["system"]["node"] == r["observed"] and r["system"]["processes"] >= 5
    assert [(n["name"], [c["id"] for c in n["children"]]) for n in r["tree"]] == [
        ("obs_sup", ["w1"])
    ]
    assert r["info"]["name"] == "runaway" and r["info"]["stack"][-1]["function"] == "runaway"
    assert r["stack"][-1]["function"] == "runaway"
    assert any(p["name"] == "worker" for p in r["procs"]) and r["socks"] == []
    assert [(e[2], e[3], e[4], e[5]) for e in r["events"]] == [
        (r["worker"], "call", "__main__.work", "n=21"),
        (r["worker"], "return", "__main__.work", "42"),
    ]
    assert r["no_recipient"][0] == "badrpc" and "BadArg" in r["no_recipient"][1][1]
    assert r["killed"] is True and r["down"].reason in ("killed", "noproc") and r["gone"] is None


OTPS = ["25", "28"]


def erl_work(n):
    return n + 1


@pytest.mark.interop
@pytest.mark.parametrize("otp", OTPS)
def test_an_erlang_shell_finds_the_runaway_traces_and_kills_it(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
):
    async def runaway():
        beamlet.register("hog", beamlet.self())
        x = 0
        while True:
            x += 1

    async def worker():
        beamlet.register("worker", beamlet.self())
        while True:
            msg = await receive()
            if msg == "go":
                erl_work(41)

    async def main(me):
        observer.expose()
        spawn(runaway)
        spawn(worker)
        code = (
            f"Py = '{me}',"
            " [First | _] = rpc:call(Py, beamlet_observer, top, []),"
            ' io:format("first ~s~n", [maps:get(<<"name">>, First)]),'
            ' Hog = maps:get(<<"pid">>, First),'
            ' [#{<<"function">> := F} | _] = lists:reverse(rpc:call(Py, beamlet_observer, stack, [Hog])),'
            ' io:format("stack ~s~n", [F]),'
            ' #{<<"pid">> := W} = rpc:call(Py, beamlet_observer, info, [worker]),'
            " Ref = rpc:call(Py, beamlet_observer, trace, [W, 2, 5.0, self()]),"
            " {worker, Py} ! go,"
            " receive {trace, Ref, W, call, Name, Args} ->"
            '   io:format("call ~s ~s~n", [Name, Args]) after 10000 -> io:format("no call~n") end,'
            " receive {trace, Ref, W, return, _, Ret} ->"
            '   io:format("return ~s~n", [Ret]) after 10000 -> io:format("no return~n") end,'
            " receive {trace_done, Ref, N, Why} ->"
            '   io:format("done ~p ~p~n", [N, Why]) after 10000 -> io:format("no done~n") end,'
            " MRef = monitor(process, Hog),"
            ' io:format("killed ~p~n", [rpc:call(Py, beamlet_observer, kill, [Hog])]),'
            " receive {'DOWN', MRef, process, Hog, _} -> io:format(\"down~n\") end,"
            ' io:format("after ~p~n", [rpc:call(Py, beamlet_observer, info, [Hog])]),'
            " receive stop -> ok end."
        )
        erl = erl_nodes(otp, f"o{otp}x{os.getpid()}@127.0.0.1", COOKIE, builtin_epmd.port, code)

        async def expect(prefix):
            return await beamlet.blocking(erl.expect, prefix, 30)

        lines = [
            await expect(p)
            for p in ("first", "stack", "call", "return", "done", "killed", "down", "after")
        ]
        observer.unexpose()
        return lines

    lines = run_node(main, builtin_epmd)
    assert lines == [
        "first hog",
        "stack runaway",
        f"call {__name__}.erl_work n=41",
        "return 42",
        "done 2 max",
        "killed true",
        "down",
        "after undefined",
    ]
