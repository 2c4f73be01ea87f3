"""beamlet.code: two versions of a module, purging, GenServers taking new code at
their next message, upgrade with code_change, code.current, and the limits
(docs/semantics.md, CODE-1 to CODE-7)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import run
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, Down, code, receive, send
from beamlet.code import CodeError
from beamlet.otp import Supervisor, call, cast, get_state, which_children

Mod = Any  # the ``mod`` fixture (conftest.py): a module file under a fresh name

V1 = """
    import beamlet
    from beamlet.otp import GenServer

    __vsn__ = "1.0"
    counter = 0

    def version():
        return "v1"

    async def loop(state):
        while True:
            msg = await beamlet.receive()
            if msg == "stop":
                return
            send_to, what = msg
            beamlet.send(send_to, (version(), what, state))

    class Counter(GenServer):
        async def init(self, start=0):
            self.count = start

        async def handle_call(self, request, from_):
            if request == "get":
                return (version(), self.count)
            if request == "crash":
                raise RuntimeError("asked to")

        async def handle_cast(self, request):
            self.count += 1

    class Thing:
        def kind(self):
            return "v1"
"""


def v(n: int, extra: str = "") -> str:
    """Version ``n`` of V1: what version() answers and the __vsn__ change."""
    return V1.replace('"v1"', f'"v{n}"').replace('"1.0"', f'"{n}.0"') + extra


# ---------------------------------------------------------------------- CODE-1, CODE-2


def test_load_executes_the_new_version_into_a_new_module_and_keeps_the_old(mod: Mod):
    mod.write(v(1))
    first = mod.import_()
    new = code.load(mod.name, mod.source(v(2)))
    assert new is not first and sys.modules[mod.name] is new
    assert vars(new)["version"]() == "v2" and vars(first)["version"]() == "v1"
    # a fully qualified call through the reference taken before the load: the new code
    assert first.version() == "v2"
    import importlib

    assert importlib.import_module(mod.name).version() == "v2"
    assert [(x["version"], x["status"], x["vsn"]) for x in code.versions(mod.name)] == [
        (2, "current", "2.0"),
        (1, "old", "1.0"),
    ]
    assert code.which(mod.name) == f"<beamlet.code {mod.name} v2>"
    # source None: read the module's file again
    mod.write(v(3))
    code.soft_purge(mod.name)
    third = code.load(mod.name)
    assert third.version() == "v3" and code.which(mod.name) == str(mod.path)
    assert code.which("no_such_module_here") is None and code.versions("no_such_module_x") == []
    assert code.versions("sys")[0]["status"] == "current"  # asking is fine; loading sys is not


def test_a_third_load_purges_the_old_version_first(mod: Mod):
    mod.write(v(1))
    mod.import_()
    code.load(mod.name, mod.source(v(2)))
    code.load(mod.name, mod.source(v(3)))
    code.load(mod.name, mod.source(v(4)))
    assert [(x["version"], x["status"]) for x in code.versions(mod.name)] == [
        (4, "current"),
        (3, "old"),
    ]


def test_a_load_is_refused_while_processes_run_the_old_version_and_purge_kills_them(mod: Mod):
    mod.write(v(1))
    m = mod.import_()

    async def main():
        pid, ref = beamlet.spawn_monitor(m.loop, "s")
        send(pid, (beamlet.self(), "hi"))
        assert await receive(("v1", "hi", "s"), timeout=5)
        code.load(mod.name, mod.source(v(2)))  # v1 becomes old: fine
        assert code.running_old(mod.name) == [pid]
        with pytest.raises(CodeError) as info:
            code.load(mod.name, mod.source(v(3)))
        assert info.value.reason == "not_purged" and repr(pid) in str(info.value)
        assert code.versions(mod.name)[0]["version"] == 2  # nothing changed
        assert beamlet.is_alive(pid)
        code.load(mod.name, mod.source(v(4)), purge=True)
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return down.reason, [x["version"] for x in code.versions(mod.name)]

    assert run(main) == ("killed", [3, 2])  # the refused load made no version


def test_soft_purge_reports_and_purge_kills(mod: Mod):
    mod.write(v(1))
    m = mod.import_()

    async def main():
        pid, ref = beamlet.spawn_monitor(m.loop, "s")
        send(pid, (beamlet.self(), "hi"))
        await receive(("v1", ANY, ANY), timeout=5)
        code.load(mod.name, mod.source(v(2)))
        assert code.soft_purge(mod.name) is False  # it runs v1: kept
        assert len(code.versions(mod.name)) == 2 and beamlet.is_alive(pid)
        send(pid, "stop")
        await receive(Down(ref, ANY, "normal"), timeout=5)
        assert code.soft_purge(mod.name) is True
        assert len(code.versions(mod.name)) == 1
        # purge kills
        pid2, ref2 = beamlet.spawn_monitor(vars(sys.modules[mod.name])["loop"], "t")
        send(pid2, (beamlet.self(), "hi"))
        await receive(("v2", ANY, ANY), timeout=5)
        code.load(mod.name, mod.source(v(3)))
        assert code.purge(mod.name) is True
        down = await receive(Down(ref2, ANY, ANY), timeout=5)
        return down.reason, len(code.versions(mod.name)), code.purge(mod.name)

    assert run(main) == ("killed", 1, False)


# ---------------------------------------------------------------------- CODE-3 GenServer


def test_a_gen_server_takes_its_new_callbacks_at_the_next_message(mod: Mod):
    mod.write(v(1))
    m = mod.import_()

    async def main():
        pid = await m.Counter.start_link(5)
        cast(pid, "inc")
        assert await call(pid, "get") == ("v1", 6)
        code.load(mod.name, mod.source(v(2)))
        got = await call(pid, "get")  # same process, same state, new code
        state = await get_state(pid)
        return got, state, type(state) is dict

    assert run(main) == (("v2", 6), {"count": 6}, True)


def test_a_supervisor_restarts_a_child_in_the_current_version(mod: Mod):
    mod.write(v(1))
    m = mod.import_()

    async def main():
        sup = await Supervisor.start_link([(m.Counter, (1,))], intensity=5)
        [(_, pid, _)] = await which_children(sup)
        assert await call(pid, "get") == ("v1", 1)
        code.load(mod.name, mod.source(v(2)))
        ref = beamlet.monitor(pid)
        with pytest.raises(Exception):  # noqa: B017 - the crash of the child
            await call(pid, "crash")
        await receive(Down(ref, ANY, ANY), timeout=5)
        [(_, new_pid, _)] = await which_children(sup)
        return new_pid != pid, await call(new_pid, "get")

    assert run(main) == (True, ("v2", 1))


# ---------------------------------------------------------------------- CODE-4 upgrade

UPGRADE = """

    def _migrate(self, old_vsn, state, extra):
        self.total = state["count"] * extra["factor"]
        del self.count
        self.changed = (old_vsn, beamlet.self())

    async def _code_change(self, old_vsn, state, extra):
        _migrate(self, old_vsn, state, extra)

    async def _get(self, request, from_):
        if request == "get":
            return (version(), self.total, self.changed)

    Counter.code_change = _code_change
    Counter.handle_call = _get
"""

FAILING = """

    async def _code_change(self, old_vsn, state, extra):
        self.count = "half-migrated"
        raise ValueError("cannot migrate " + repr(old_vsn))

    Counter.code_change = _code_change
"""


def test_upgrade_calls_code_change_on_the_servers_own_turn_and_migrates_the_state(mod: Mod):
    mod.write(v(1))
    m = mod.import_()

    async def main():
        pid = await m.Counter.start_link(7, name="counter_up")
        await code.upgrade("counter_up", mod.name, {"factor": 10}, mod.source(v(2, UPGRADE)))
        got = await call(pid, "get")
        return got, pid

    got, pid = run(main)
    assert got == ("v2", 70, ("1.0", pid))  # old_vsn, and it ran in the server itself


def test_a_failing_code_change_keeps_the_old_code_and_state(mod: Mod, caplog):
    mod.write(v(1))
    m = mod.import_()

    async def main():
        pid = await m.Counter.start_link(3)
        with pytest.raises(CodeError) as info:
            await code.upgrade(pid, mod.name, None, mod.source(v(2, FAILING)))
        assert info.value.reason == "code_change_failed"
        assert isinstance(info.value.__cause__, ValueError)
        got = await call(pid, "get")  # resumed, old code, old state
        return got, [x["version"] for x in code.versions(mod.name)]

    assert run(main) == (("v1", 3), [1])


def test_upgrade_refuses_a_server_of_another_module_and_bad_source_changes_nothing(mod: Mod):
    mod.write(v(1))
    m = mod.import_()

    async def main():
        pid = await m.Counter.start_link(3)
        with pytest.raises(CodeError) as wrong:
            await code.upgrade(pid, "json", None, "x = 1")
        with pytest.raises(CodeError) as bad:
            await code.upgrade(pid, mod.name, None, "def broken(:\n")
        return wrong.value.reason, bad.value.reason, await call(pid, "get")

    assert run(main) == ("wrong_module", "badfile", ("v1", 3))


# ---------------------------------------------------------------------- CODE-5 current


HAND_LOOP = """
    import beamlet
    from beamlet import code

    def version():
        return "v1"

    async def loop(owner, n):
        while True:
            beamlet.send(owner, ("waiting in", version()))
            await beamlet.receive()
            beamlet.send(owner, (version(), n))
            n += 1
            if code.current(loop) is not loop:  # a new version: enter it (?MODULE:loop)
                return await code.current(loop)(owner, n)
"""


def test_a_hand_written_loop_enters_the_current_version_with_code_current(mod: Mod):
    mod.write(HAND_LOOP)
    m = mod.import_()

    async def main():
        pid = beamlet.spawn(m.loop, beamlet.self(), 0)
        seen = [await receive(timeout=5)]
        code.load(mod.name, mod.source(HAND_LOOP.replace('"v1"', '"v2"')))
        send(pid, "go")  # the message in hand ends in v1, then it enters v2
        seen += [await receive(timeout=5), await receive(timeout=5)]
        send(pid, "go")
        seen.append(await receive(timeout=5))
        fn = code.current(m.loop)
        return seen, fn is vars(sys.modules[mod.name])["loop"]

    assert run(main) == (
        [("waiting in", "v1"), ("v1", 0), ("waiting in", "v2"), ("v2", 1)],
        True,
    )


def test_current_maps_functions_classes_and_methods_and_leaves_others_alone(mod: Mod):
    mod.write(v(1))
    m = mod.import_()
    old_version, old_cls, old_method = vars(m)["version"], vars(m)["Counter"], vars(m)["Thing"]
    code.load(mod.name, mod.source(v(2)))
    new = sys.modules[mod.name]
    assert code.current(old_version) is vars(new)["version"]
    assert code.current(old_cls) is vars(new)["Counter"]
    assert code.current(old_cls.start_link).__self__ is vars(new)["Counter"]
    assert code.current(old_method.kind) is vars(new)["Thing"].kind
    thing = old_method()
    assert code.current(thing.kind)() == "v2"
    assert code.current(len) is len and code.current(42) == 42
    code.load(mod.name, "def version():\n    return 'v3'\n", purge=True)
    with pytest.raises(AttributeError, match="has no Counter"):
        code.current(old_cls)


# ---------------------------------------------------------------------- CODE-6 limits


FRAME = """
    import beamlet

    def version():
        return "v1"

    async def work():
        who = await beamlet.receive()   # waits here while the load happens
        beamlet.send(who, version())    # a local call: this frame's own version
"""


def test_a_running_frame_keeps_its_code_until_it_returns(mod: Mod):
    mod.write(FRAME)
    m = mod.import_()

    async def main():
        pid = beamlet.spawn(m.work)
        code.load(mod.name, mod.source(FRAME.replace('"v1"', '"v2"')))
        send(pid, beamlet.self())
        return await receive(timeout=5), m.version()

    assert run(main) == ("v1", "v2")


def test_objects_created_from_an_old_class_keep_it(mod: Mod):
    mod.write(v(1))
    m = mod.import_()
    thing = m.Thing()
    code.load(mod.name, mod.source(v(2)))
    assert thing.kind() == "v1" and m.Thing().kind() == "v2"
    assert not isinstance(thing, m.Thing)  # two classes now, of the same name
    assert code.current(type(thing))().kind() == "v2"


def test_from_imports_keep_the_old_function(mod: Mod):
    mod.write(v(1))
    mod.import_()
    namespace: dict = {}
    exec(f"from {mod.name} import version", namespace)
    code.load(mod.name, mod.source(v(2)))
    assert namespace["version"]() == "v1"  # bound once, to the old function
    assert sys.modules[mod.name].version() == "v2"


def test_module_level_state_is_not_migrated(mod: Mod):
    mod.write(v(1))
    m = mod.import_()
    m.counter = 5
    code.load(mod.name, mod.source(v(2)))
    assert m.counter == 0  # the new module ran its own top level: counter = 0
    assert sys.modules[mod.name].counter == 0


# ---------------------------------------------------------------------- CODE-7 errors


def test_bad_source_is_a_clear_error_and_changes_nothing(mod: Mod):
    mod.write(v(1))
    m = mod.import_()
    with pytest.raises(CodeError) as info:
        code.load(mod.name, "def broken(:\n    pass\n")
    assert info.value.reason == "badfile" and isinstance(info.value.__cause__, SyntaxError)
    assert "SyntaxError" in str(info.value) and mod.name in str(info.value)
    with pytest.raises(CodeError) as raised:
        code.load(mod.name, "raise RuntimeError('top-level code fails')\n")
    assert raised.value.reason == "on_load_failure"
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert sys.modules[mod.name] is m and type(m).__name__ == "module"
    assert code.versions(mod.name) == [
        {"version": 1, "vsn": "1.0", "status": "current", "origin": str(mod.path)}
    ]
    for name in ("not a module name", "sys", "__main__", "beamlet._kernel.api", "beamlet.code"):
        with pytest.raises(CodeError) as badarg:
            code.load(name, "x = 1")
        assert badarg.value.reason == "badarg", name
    with pytest.raises(CodeError) as nofile:
        code.load("codemod_nowhere_to_be_found")
    assert nofile.value.reason == "nofile"
    with pytest.raises(CodeError):
        code.load(mod.name, 42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- CODE-8 over rpc

GREETER = """
    from beamlet.otp import GenServer

    class Greeter(GenServer):
        async def init(self):
            self.greeted = 0

        async def handle_call(self, request, from_):
            self.greeted += 1
            return ("v1", request, self.greeted)
"""

GREETER_V3 = """
    from beamlet.otp import GenServer

    __vsn__ = "3"

    class Greeter(GenServer):
        async def code_change(self, old_vsn, state, extra):
            return {"count": state["greeted"] + extra, "from": old_vsn}

        async def handle_call(self, request, from_):
            self.count += 1
            return ("v3", request, self.count, self.__dict__["from"])
"""


@pytest.fixture
def code_peer(mod: Mod, builtin_epmd):
    """A second beamlet node (an OS process) serving ``mod``'s Greeter as "greeter"."""
    import os

    from dist_helpers import python_node

    mod.write(GREETER)
    name = f"codepeer{os.getpid()}@127.0.0.1"
    args = [name, "code-cookie", str(builtin_epmd.port), str(mod.path.parent), mod.name]
    with python_node(Path(__file__).with_name("code_peer.py"), *args):
        yield name, builtin_epmd


def test_code_is_loaded_and_a_server_upgraded_over_rpc_only_where_allowed(mod: Mod, code_peer):
    import os

    from beamlet import Atom, rpc

    peer, epmd = code_peer
    v2 = mod.source(GREETER).replace('"v1"', '"v2"').encode()  # Erlang sends a binary

    async def main():
        assert await call(("greeter", peer), "hi") == ("v1", "hi", 1)
        refused = await rpc.call(peer, "beamlet_code", "load", [Atom(mod.name), v2])
        assert await call(("greeter", peer), "hi") == ("v1", "hi", 2)  # not loaded
        send(("peer_main", peer), (beamlet.self(), "expose"))
        await receive("exposed", timeout=20)
        loaded = await rpc.call(peer, "beamlet_code", "load", [Atom(mod.name), v2])
        after_load = await call(("greeter", peer), "hi")
        versions = await rpc.call(peer, "beamlet_code", "versions", [mod.name])
        upgraded = await rpc.call(
            peer,
            "beamlet_code",
            "upgrade",
            [Atom("greeter"), Atom(mod.name), 100, mod.source(GREETER_V3)],
        )
        after_upgrade = await call(("greeter", peer), "hi")
        bad = await rpc.call(peer, "beamlet_code", "load", [Atom(mod.name), "def (:"])
        send(("peer_main", peer), "stop")
        return refused, loaded, after_load, versions, upgraded, after_upgrade, bad

    refused, loaded, after_load, versions, upgraded, after_upgrade, bad = beamlet.run(
        main, node=f"codeme{os.getpid()}@127.0.0.1", cookie="code-cookie", epmd_port=epmd.port
    )
    assert refused[0] == "badrpc" and refused[1][1][0] == "undef"
    assert loaded == ("module", mod.name)
    assert after_load == ("v2", "hi", 3)  # the same server, its next message: new code
    assert [(x["version"], x["status"]) for x in versions] == [(2, "current"), (1, "old")]
    assert upgraded == "ok"
    assert after_upgrade == ("v3", "hi", 104, 2)  # code_change(2, state, 100) migrated it
    assert bad[0] == "badrpc" and "SyntaxError" in str(bad)


def test_code_loading_is_refused_until_exposed_and_after_unexposed():
    from beamlet import rpc

    assert ("beamlet_code", "load") not in rpc.exposed()
    code.expose()
    try:
        assert {("beamlet_code", f) for f in ("load", "upgrade", "purge")} <= set(rpc.exposed())
    finally:
        code.unexpose()
    assert not [e for e in rpc.exposed() if e[0] == "beamlet_code"]


STEP = """
    import beamlet
    from beamlet import code

    def version():
        return "v1"

    async def step(state):
        owner, n = state
        beamlet.send(owner, ("waiting in", version()))
        if await beamlet.receive() == "stop":
            return code.DONE
        beamlet.send(owner, (version(), n))
        return (owner, n + 1)
"""


def test_code_loop_enters_the_current_version_at_every_step_so_old_versions_can_be_purged(
    mod: Mod,
):
    mod.write(STEP)
    m = mod.import_()

    async def main():
        pid, ref = beamlet.spawn_monitor(code.loop, m.step, (beamlet.self(), 0))
        seen = [await receive(timeout=5)]
        for n in (2, 3, 4):  # each load purges the version before last: nobody runs it
            code.load(mod.name, mod.source(STEP.replace('"v1"', f'"v{n}"')))
            send(pid, "go")  # answered by the step that was waiting (the previous version)
            seen += [await receive(timeout=5), await receive(timeout=5)]
        send(pid, "stop")
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return seen, down.reason

    seen, reason = run(main)
    assert seen == [
        ("waiting in", "v1"),
        ("v1", 0),
        ("waiting in", "v2"),
        ("v2", 1),
        ("waiting in", "v3"),
        ("v3", 2),
        ("waiting in", "v4"),
    ]
    assert reason == "normal"


def test_a_suspended_server_answers_only_system_messages_and_resumes_if_its_suspender_exits():
    from beamlet.otp import GenServer, gen

    class Echo(GenServer):
        async def handle_call(self, request, from_):
            return request

    async def main():
        me = beamlet.self()
        server = await Echo.start_link()

        async def suspender():
            await gen.call(server, ("suspend",), system=True)
            send(me, "suspended")
            await receive("exit")  # and exits without resuming it

        async def caller():
            send(me, ("answer", await call(server, "still here")))

        who, ref = beamlet.spawn_monitor(suspender)
        await receive("suspended", timeout=5)
        beamlet.spawn(caller)
        state = await get_state(server)  # a system message: answered while suspended
        await assert_no_message(("answer", ANY), timeout=0.2)  # a call waits
        send(who, "exit")
        await receive(Down(ref, ANY, ANY), timeout=5)
        return state, await receive(("answer", ANY), timeout=5)

    assert run(main) == ({}, ("answer", "still here"))
