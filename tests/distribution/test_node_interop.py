"""A beamlet node in a real Erlang cluster: ping, messages, calls, links,
monitors, node down, rpc -- against OTP 25 (and OTP 28 when available)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from dist_helpers import ErlNode

import beamlet
from beamlet import ANY, Atom, Down, Exit, NodeDown, Pid, receive, send, spawn
from beamlet.distribution import gen_call, ping
from beamlet.distribution.epmd_server import EPMDServer
from beamlet.otp import GenServer, call
from beamlet.rpc import call as rpc_call
from beamlet.rpc import expose, unexpose

pytestmark = pytest.mark.interop

COOKIE = "beamlet-interop-cookie"
OTPS = ["25", "28"]
_names = itertools.count(1)


def run_node(main, epmd: EPMDServer, **kw):
    name = f"py{next(_names)}@127.0.0.1"
    return beamlet.run(
        main, name, node=name, cookie=kw.pop("cookie", COOKIE), epmd_port=epmd.port, **kw
    )


async def expect(erl: ErlNode, prefix: str, timeout: float = 20) -> str:
    return await beamlet.blocking(erl.expect, prefix, timeout)


@pytest.mark.parametrize("otp", OTPS)
def test_ping_both_ways(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    async def main(me: str):
        erl = erl_nodes(otp, f"e{otp}@127.0.0.1", COOKIE, builtin_epmd.port,
                        f"io:format(\"ping ~p~n\", [net_adm:ping('{me}')]), receive stop -> ok end.")  # fmt: skip
        theirs = await expect(erl, "ping ")
        ours = await ping(erl.name)
        assert erl.name in beamlet.nodes()
        return theirs, ours

    assert run_node(main, builtin_epmd) == ("ping pong", "pong")


@pytest.mark.parametrize("otp", OTPS)
def test_a_wrong_cookie_is_refused_both_ways(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    async def main(me: str):
        erl = erl_nodes(otp, f"w{otp}@127.0.0.1", "another-cookie", builtin_epmd.port,
                        f"io:format(\"ping ~p~n\", [net_adm:ping('{me}')]), receive stop -> ok end.")  # fmt: skip
        theirs = await expect(erl, "ping ")
        ours = await ping(erl.name)
        return theirs, ours, beamlet.nodes()

    assert run_node(main, builtin_epmd) == ("ping pang", "pang", [])


TERMS = (
    "{42, -7, 12345678901234567890, 3.25, atom, 'Quoted Atom', <<\"bin\">>, <<1:3>>,"
    ' [1,2,3], [], "chars", [a | b], #{k => v, 1 => [x]}, {}, true, false, undefined}'
)


@pytest.mark.parametrize("otp", OTPS)
def test_messages_both_ways_with_every_term_type(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    async def bouncer():
        beamlet.register("bouncer", beamlet.self())
        while True:
            sender, term = await receive()
            send(sender, ("bounced", term))

    async def main(me: str):
        spawn(bouncer)
        code = (
            f"T = {TERMS}, {{bouncer, '{me}'}} ! {{self(), T}},"
            ' receive {<<"bounced">>, T} -> io:format("same~n"); {_, Other} -> io:format("differs ~p~n", [Other])'
            ' after 10000 -> io:format("timeout~n") end,'
            ' register(erlrecv, self()), io:format("ready~n"),'
            " receive {From, Got} -> From ! {echo, Got} end, receive stop -> ok end."
        )
        erl = erl_nodes(otp, f"m{otp}@127.0.0.1", COOKIE, builtin_epmd.port, code)
        first = await expect(erl, "", 20)
        while first not in ("same", "timeout") and not first.startswith("differs"):
            first = await expect(erl, "")
        await expect(erl, "ready")
        ours = (
            1,
            -(2**70),
            2.5,
            Atom("ok"),
            b"raw",
            [1, [2]],
            {"k": (1,)},
            True,
            None,
            beamlet.self(),
            beamlet.make_ref(),
        )
        send(("erlrecv", erl.name), (beamlet.self(), ours))
        got = await receive(("echo", ANY), timeout=20)
        return first, got[1], ours

    first, back, ours = run_node(main, builtin_epmd)
    assert first == "same"
    # bytes that are valid UTF-8 come back from Erlang as str (docs/etf.md, text mode)
    assert back[:4] == ours[:4] and back[4:9] == ("raw", [1, [2]], {"k": (1,)}, True, None)
    assert back[9] == ours[9] and back[10] == ours[10]


class KV(GenServer):
    async def init(self):
        self.data = {}
        beamlet.register("kv", beamlet.self())

    async def handle_call(self, request, from_):
        match request:
            case ("put", k, v):
                self.data[k] = v
                return Atom("ok")
            case ("get", k):
                return self.data.get(k, Atom("undefined"))


@pytest.mark.parametrize("otp", OTPS)
def test_gen_server_calls_both_ways(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    async def main(me: str):
        await KV.start_link()
        code = (
            f"ok = gen_server:call({{kv, '{me}'}}, {{put, answer, 42}}),"
            f" io:format(\"got ~p~n\", [gen_server:call({{kv, '{me}'}}, {{get, answer}})]),"
            " receive stop -> ok end."
        )
        erl = erl_nodes(otp, f"g{otp}@127.0.0.1", COOKIE, builtin_epmd.port, code)
        line = await expect(erl, "got ")
        # toward Erlang: its net_kernel and rex are gen_servers
        auth = await gen_call(("net_kernel", erl.name), (Atom("is_auth"), beamlet.node()))
        other = await call(("net_kernel", erl.name), (Atom("is_auth"), beamlet.node()))
        return line, auth, other

    assert run_node(main, builtin_epmd) == ("got 42", "yes", "yes")


@pytest.mark.parametrize("otp", OTPS)
def test_links_and_monitors_carry_the_right_reasons_across(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    async def doomed():
        beamlet.register("doomed", beamlet.self())
        await receive("die")
        raise ValueError("python side failed")

    async def main(me: str):
        beamlet.process_flag("trap_exit", True)
        spawn(doomed)
        code = (
            "process_flag(trap_exit, true),"
            f" P = rpc:call('{me}', erlang, whereis, [doomed]),"  # refused: not exposed
            f" {{doomed, '{me}'}} ! {{self(), hello}},"
            ' register(erlside, self()), io:format("ready~n"),'
            " receive {link_to, Pid, Py0} -> link(Pid), erlang:monitor(process, Pid), Py0 ! linked end,"
            " receive {'EXIT', _, R} -> io:format(\"exit ~p~n\", [R]) end,"
            " receive {'DOWN', _, process, _, R2} -> io:format(\"down ~p~n\", [R2]) end,"
            # a spawned process links back and dies: not the -eval process, whose
            # exit halts the node (its EXIT could then lose the race with the close)
            " receive {link_me, Py} -> spawn(fun() -> link(Py), Py ! {linked2, self()},"
            "   receive die2 -> exit(erl_reason) end end) end,"
            " receive stop -> ok end."
        )
        erl = erl_nodes(otp, f"l{otp}@127.0.0.1", COOKIE, builtin_epmd.port, code)
        await expect(erl, "ready")
        target = beamlet.whereis("doomed")
        send(("erlside", erl.name), (Atom("link_to"), target, beamlet.self()))
        # the link and monitor signals travel the connection ahead of this message
        # and the reader hands them over in order, so they have reached `doomed`
        # (seeing "linked" on erl's stdout raced them: doomed could die first and
        # the late link then rightly got `noproc`)
        await receive(Atom("linked"), timeout=20)
        send(target, "die")
        exit_line = await expect(erl, "exit ")
        down_line = await expect(erl, "down ")
        # and the other way: Erlang dies, our trapping process gets the reason
        send(("erlside", erl.name), (Atom("link_me"), beamlet.self()))
        _, erl_pid = await receive((Atom("linked2"), ANY), timeout=20)  # the link is ahead
        send(erl_pid, Atom("die2"))
        ex = await receive(Exit(erl_pid, ANY), timeout=20)
        assert type(erl_pid) is Pid and erl_pid.node == erl.name, erl_pid
        return exit_line, down_line, ex.reason

    exit_line, down_line, reason = run_node(main, builtin_epmd)
    expected = '{python_exception,<<"ValueError">>,<<"python side failed">>}'
    assert exit_line == f"exit {expected}" and down_line == f"down {expected}"
    assert reason == "erl_reason"


@pytest.mark.parametrize("otp", OTPS)
def test_node_down_gives_noconnection_and_nodedown(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    async def main(me: str):
        beamlet.process_flag("trap_exit", True)
        code = 'register(victim, self()), io:format("ready~n"), receive {Py, go} -> link(Py), Py ! linked end, receive stop -> ok end.'
        erl = erl_nodes(otp, f"d{otp}@127.0.0.1", COOKIE, builtin_epmd.port, code)
        await expect(erl, "ready")
        beamlet.monitor_node(erl.name)
        ref = beamlet.monitor(("victim", erl.name))
        send(("victim", erl.name), (beamlet.self(), Atom("go")))
        await receive("linked", timeout=20)
        erl.proc.kill()
        ex = await receive(Exit, timeout=60)
        down = await receive(Down(ref, ANY, ANY), timeout=60)
        nd = await receive(NodeDown, timeout=60)
        assert nd.node == erl.name
        return ex.reason, down.reason, down.pid, beamlet.nodes()

    reason, down_reason, down_pid, left = run_node(main, builtin_epmd)
    assert reason == "noconnection" and down_reason == "noconnection"
    assert down_pid[0] == "victim" and left == []


@pytest.mark.parametrize("otp", OTPS)
def test_rpc_reaches_only_exposed_functions_and_we_can_rpc_erlang(
    otp: str, builtin_epmd: EPMDServer, erl_nodes: Callable[..., ErlNode]
) -> None:
    def add(a, b):
        return a + b

    async def main(me: str):
        expose("pymath", "add", add)
        try:
            code = (
                f"io:format(\"add ~p~n\", [rpc:call('{me}', pymath, add, [2, 40])]),"
                f' io:format("os ~p~n", [rpc:call(\'{me}\', os, cmd, ["id"])]),'
                " receive stop -> ok end."
            )
            erl = erl_nodes(otp, f"r{otp}@127.0.0.1", COOKIE, builtin_epmd.port, code)
            added = await expect(erl, "add ")
            refused = await expect(erl, "os ")
            assert await rpc_call(erl.name, "erlang", "node", []) == erl.name
            # its output goes to our I/O sink (the group leader), which answers
            assert await rpc_call(erl.name, "io", "format", ["from erlang~n"]) == "ok"
            return added, refused
        finally:
            unexpose("pymath", "add")

    added, refused = run_node(main, builtin_epmd)
    assert added == "add 42"
    assert refused.startswith("os {badrpc,") and "undef" in refused


def test_garbage_on_the_node_port_costs_only_that_connection(builtin_epmd: EPMDServer) -> None:
    import socket

    from hostile import answers

    from beamlet.distribution import epmd_client

    async def main(me: str):
        port = epmd_client.port_please(me.split("@")[0], epmd_port=builtin_epmd.port).port
        for junk in (b"\x00\x05garbage", b"\xff" * 100, b""):
            with socket.create_connection(("127.0.0.1", port), 5) as s:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)  # and nothing more: the node sees EOF
                s.settimeout(5)
                assert s.recv(100) == b""  # it closed the connection
        # still a working node: a fresh peer handshakes and net_kernel answers
        return await beamlet.blocking(answers, port, COOKIE)

    assert run_node(main, builtin_epmd) is True
