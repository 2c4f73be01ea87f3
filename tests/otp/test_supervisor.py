"""Supervisor and DynamicSupervisor: strategies, order, intensity, shutdown."""

from __future__ import annotations

import pytest
from tests.conftest import run
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, Down, receive, send
from beamlet.otp import (
    ChildRunning,
    ChildSpec,
    DynamicSupervisor,
    GenServer,
    StartError,
    Stop,
    Supervisor,
    call,
    count_children,
    delete_child,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)


class Child(GenServer):
    """Logs its start and (trapping exits) its stop to the process named "log"."""

    async def init(self, name, fail_init=False):
        self.name = name
        if fail_init:
            return Stop("bad_init")
        beamlet.process_flag("trap_exit", True)
        send("log", ("started", name))
        return None

    async def handle_call(self, request, from_):
        if request == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if request == ("exit", "normal"):
            return Stop("normal", "ok")
        return self.name

    async def terminate(self, reason):
        send("log", ("stopped", self.name))


def spec(name, restart="permanent", **kw):
    return ChildSpec(id=name, start=(Child.start_link, (name,)), restart=restart, **kw)


async def events(n):
    return [await receive(timeout=30) for _ in range(n)]


async def pid_of(sup, child_id):
    for cid, pid, _ in await which_children(sup):
        if cid == child_id:
            return pid
    return None


async def crash(sup, child_id):
    pid = await pid_of(sup, child_id)
    ref = beamlet.monitor(pid)
    beamlet.exit(pid, "kill")
    await receive(Down(ref, ANY, ANY), timeout=30)


async def shut_down_linked():
    """Stop what main started linked (its supervision trees), newest first, as an
    application's stop would, so that nothing is restarting or logging when
    run() ends and kills what is left."""
    for pid in sorted(beamlet.process_info(beamlet.self())["links"], reverse=True):
        beamlet.unlink(pid)
        ref = beamlet.monitor(pid)
        beamlet.exit(pid, "shutdown")
        await receive(Down(ref, pid, ANY), timeout=30)


def logged(main, *args, **kw):
    async def wrapper():
        beamlet.register("log", beamlet.self())
        result = await main(*args)
        await shut_down_linked()
        return result

    return run(wrapper, **kw)


def test_children_start_in_order_and_stop_in_reverse():
    async def main():
        sup = await Supervisor.start_link([spec("a"), spec("b"), spec("c")])
        started = await events(3)
        beamlet.unlink(sup)
        ref = beamlet.monitor(sup)
        beamlet.exit(sup, "shutdown")
        stopped = await events(3)
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        return started, stopped, down.reason

    started, stopped, reason = logged(main)
    assert started == [("started", "a"), ("started", "b"), ("started", "c")]
    assert stopped == [("stopped", "c"), ("stopped", "b"), ("stopped", "a")]
    assert reason == "shutdown"


def test_one_for_one_restarts_only_the_crashed_child():
    async def main():
        sup = await Supervisor.start_link([spec("a"), spec("b"), spec("c")], intensity=5)
        await events(3)
        before = await which_children(sup)
        await crash(sup, "b")
        after_start = await events(1)
        after = await which_children(sup)
        return before, after, after_start

    before, after, ev = logged(main)
    assert ev == [("started", "b")]
    assert before[0][1] == after[0][1] and before[2][1] == after[2][1]
    assert before[1][1] != after[1][1] and after[1][1] is not None


def test_one_for_all_restarts_everyone_in_order_after_stopping_the_rest_in_reverse():
    async def main():
        sup = await Supervisor.start_link(
            [spec("a"), spec("b"), spec("c")], strategy="one_for_all", intensity=5
        )
        await events(3)
        await crash(sup, "b")
        return await events(5)

    assert logged(main) == [
        ("stopped", "c"),
        ("stopped", "a"),
        ("started", "a"),
        ("started", "b"),
        ("started", "c"),
    ]


def test_rest_for_one_restarts_the_child_and_those_started_after_it():
    async def main():
        children = [spec("a"), spec("b"), spec("c"), spec("d")]
        sup = await Supervisor.start_link(children, strategy="rest_for_one", intensity=5)
        await events(4)
        await crash(sup, "b")
        return await events(5)

    assert logged(main) == [
        ("stopped", "d"),
        ("stopped", "c"),
        ("started", "b"),
        ("started", "c"),
        ("started", "d"),
    ]


def test_exceeding_the_restart_intensity_shuts_the_supervisor_down_with_shutdown():
    async def main():
        sup = await Supervisor.start_link([spec("a"), spec("b")], intensity=1, period=60)
        beamlet.unlink(sup)
        ref = beamlet.monitor(sup)
        await events(2)
        await crash(sup, "a")  # restart 1: allowed
        await events(1)
        await crash(sup, "a")  # restart 2 within 60 s: too many
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        stopped = await events(1)
        return down.reason, stopped

    assert logged(main) == ("shutdown", [("stopped", "b")])


def test_transient_children_restart_only_after_abnormal_exits_temporary_never():
    async def main():
        sup = await Supervisor.start_link(
            [spec("t", "transient"), spec("tmp", "temporary"), spec("p")], intensity=10
        )
        await events(3)
        t = await pid_of(sup, "t")
        await call(t, ("exit", "normal"))
        await events(1)  # ("stopped", "t"): terminate ran
        # a normal exit: no restart; its spec stays with no pid
        after_normal = await pid_of(sup, "t")
        await restart_child(sup, "t")
        await events(1)
        await crash(sup, "t")
        restarted = await events(1)
        await crash(sup, "tmp")
        ids = [cid for cid, _, _ in await which_children(sup)]
        return after_normal, restarted, ids

    after_normal, restarted, ids = logged(main)
    assert after_normal is None
    assert restarted == [("started", "t")]
    assert ids == ["t", "p"]


def test_a_child_that_ignores_shutdown_is_killed_after_its_timeout():
    async def stubborn():
        beamlet.process_flag("trap_exit", True)
        while True:
            await receive()  # ignores the shutdown Exit (a GenServer would obey its parent)

    async def spawn_stubborn():
        return beamlet.spawn_link(stubborn)

    async def main():
        children = [ChildSpec(id="s", start=(spawn_stubborn, ()), shutdown=0.05)]
        sup = await Supervisor.start_link(children)
        child = await pid_of(sup, "s")
        ref = beamlet.monitor(child)
        await terminate_child(sup, "s")
        return (await receive(Down(ref, ANY, ANY), timeout=30)).reason, await pid_of(sup, "s")

    assert run(main) == ("killed", None)


def test_brutal_kill_kills_at_once():
    async def main():
        sup = await Supervisor.start_link([spec("a", shutdown="brutal_kill")])
        await events(1)
        child = await pid_of(sup, "a")
        ref = beamlet.monitor(child)
        await terminate_child(sup, "a")
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        await assert_no_message(("stopped", "a"), timeout=0)  # terminate never ran
        return down.reason

    assert logged(main) == "killed"


def test_nested_supervisors_stop_depth_first_in_reverse():
    async def main():
        inner = {
            "id": "inner",
            "start": (Supervisor.start_link, ([spec("x"), spec("y")],)),
            "type": "supervisor",
        }
        sup = await Supervisor.start_link([spec("a"), inner, spec("b")])
        started = await events(4)
        beamlet.unlink(sup)
        ref = beamlet.monitor(sup)
        beamlet.exit(sup, "shutdown")
        stopped = await events(4)
        await receive(Down(ref, ANY, ANY), timeout=30)
        return started, stopped, None

    started, stopped, _ = logged(main)
    assert started == [("started", n) for n in ("a", "x", "y", "b")]
    assert stopped == [("stopped", n) for n in ("b", "y", "x", "a")]


def test_admin_functions():
    async def main():
        sup = await Supervisor.start_link([spec("a")])
        await events(1)
        pid_b = await start_child(sup, spec("b"))
        await events(1)
        counts = await count_children(sup)
        with pytest.raises(StartError):
            await start_child(sup, spec("b"))  # already present
        await terminate_child(sup, "b")
        await events(1)
        with pytest.raises(ChildRunning, match="'a' is running: terminate_child it first"):
            await delete_child(sup, "a")
        with pytest.raises(ChildRunning) as running:
            await restart_child(sup, "a")
        assert running.value.reason == "running" and running.value.child_id == "a"
        await delete_child(sup, "b")
        with pytest.raises(KeyError):
            await restart_child(sup, "b")
        assert type(pid_b) is beamlet.Pid
        return counts, [c[0] for c in await which_children(sup)]

    assert logged(main) == ({"specs": 2, "active": 2, "supervisors": 0, "workers": 2}, ["a"])


def test_a_child_failing_to_start_fails_the_supervisor_start_and_stops_the_others():
    async def main():
        children = [spec("a"), ChildSpec(id="bad", start=(Child.start_link, ("bad", True)))]
        with pytest.raises(StartError) as info:
            await Supervisor.start_link(children)
        stopped = await events(2)
        return info.value.reason, stopped

    reason, ev = logged(main)
    assert reason[0] == "failed_to_start_child" and reason[1] == "bad"
    assert ev == [("started", "a"), ("stopped", "a")]


def test_children_given_as_classes_pairs_and_dicts():
    async def body(tag):
        send("log", ("body", tag))
        await receive("never")

    async def main():
        sup = await Supervisor.start_link(
            [(Child, ("cls",)), (body, ("fn",)), {"id": "d", "start": (Child, ("dict",))}]
        )
        ev = await events(3)
        return ev, await count_children(sup)

    ev, counts = logged(main)
    # Children start in order; a plain function's child is running once started,
    # but what it does first may come after the next child's init (two
    # schedulers run them at the same time).
    assert sorted(ev) == sorted([("started", "cls"), ("body", "fn"), ("started", "dict")])
    assert ev.index(("started", "cls")) < ev.index(("started", "dict"))
    assert counts["active"] == 3


def test_dynamic_supervisor_starts_on_demand_up_to_max_children_and_restarts():
    async def main():
        sup = await DynamicSupervisor.start_link(max_children=2, intensity=5)
        a = await DynamicSupervisor.start_child(sup, spec("a"))
        await DynamicSupervisor.start_child(sup, spec("b", "temporary"))
        await events(2)
        with pytest.raises(StartError) as info:
            await DynamicSupervisor.start_child(sup, spec("c"))
        ref = beamlet.monitor(a)
        beamlet.exit(a, "kill")
        await receive(Down(ref, ANY, ANY), timeout=30)
        restarted = await events(1)
        count = await DynamicSupervisor.count_children(sup)
        return info.value.reason, restarted, count["active"]

    assert logged(main) == ("max_children", [("started", "a")], 2)


def test_which_children_has_one_shape_for_both_supervisors():
    async def main():
        sup = await Supervisor.start_link([spec("a")])
        dyn = await DynamicSupervisor.start_link()
        b = await DynamicSupervisor.start_child(dyn, spec("b"))
        await events(2)
        a = await pid_of(sup, "a")
        return (
            await which_children(sup),
            await which_children(dyn),
            await DynamicSupervisor.which_children(dyn),
            a,
            b,
        )

    static, dynamic, via_class, a, b = logged(main)
    assert static == [("a", a, "worker")]
    assert dynamic == via_class == [(None, b, "worker")]  # OTP: {undefined, Pid, worker, Mods}


def test_a_child_spec_start_may_pass_keyword_arguments():
    async def body(tag, *, suffix):
        send("log", ("body", tag + suffix))
        await receive("never")

    async def main():
        sup = await Supervisor.start_link(
            [
                ChildSpec(id="kw", start=(Child.start_link, ("kw",), {"name": "kw_server"})),
                {"id": "d", "start": (Child, ("dict",), {"name": "dict_server"})},
                (Child, ("pair",), {"name": "pair_server"}),
                (body, ("fn",), {"suffix": "+kw"}),
            ],
            intensity=5,
        )
        started = await events(4)
        for child_id, name in (("kw", "kw_server"), ("d", "dict_server")):
            assert await pid_of(sup, child_id) == beamlet.whereis(name), name
        await crash(sup, "kw")  # restarted with the same keyword arguments
        restarted = await events(1)
        assert await pid_of(sup, "kw") == beamlet.whereis("kw_server")  # named again
        return started, restarted

    started, restarted = logged(main)
    assert started == [
        ("started", "kw"), ("started", "dict"), ("started", "pair"), ("body", "fn+kw")
    ]  # fmt: skip
    assert restarted == [("started", "kw")]


def test_a_child_spec_with_a_malformed_start_is_refused_at_once():
    for start in ((Child.start_link,), (Child.start_link, ("a",), ["not", "a", "dict"]), "x"):
        with pytest.raises(TypeError, match=r"start must be \(start_fn, args\)"):
            ChildSpec(id="bad", start=start)


def flaky_start(fail_on):
    """A start function that reports each attempt to "log" and fails the
    attempts numbered in ``fail_on`` (1 is the first start)."""
    attempts = []

    async def start():
        attempts.append(None)
        send("log", ("attempt", len(attempts)))
        if len(attempts) in fail_on:
            raise RuntimeError(f"attempt {len(attempts)} fails")
        return await Child.start_link("flaky")

    return start


async def start_flaky(kind, fail_on, intensity):
    """(supervisor, pid of the flaky child) under a Supervisor or a DynamicSupervisor."""
    spec = ChildSpec(id="flaky", start=(flaky_start(fail_on), ()))
    if kind is Supervisor:
        sup = await Supervisor.start_link([spec], intensity=intensity, period=60)
        pid = await pid_of(sup, "flaky")
    else:
        sup = await DynamicSupervisor.start_link(intensity=intensity, period=60)
        pid = await DynamicSupervisor.start_child(sup, spec)
    assert await events(2) == [("attempt", 1), ("started", "flaky")]
    return sup, pid


@pytest.mark.parametrize("kind", [Supervisor, DynamicSupervisor])
def test_a_permanent_child_whose_restart_fails_once_is_tried_again(kind):
    # OTP's try_again_restart: a failed restart is retried (counting toward the
    # intensity), not given up after one attempt.
    async def main():
        sup, pid = await start_flaky(kind, fail_on={2}, intensity=3)
        beamlet.exit(pid, "kill")
        ev = await events(3)
        children = await which_children(sup)
        return ev, children, beamlet.is_alive(sup)

    ev, children, alive = logged(main)
    assert ev == [("attempt", 2), ("attempt", 3), ("started", "flaky")]
    assert len(children) == 1 and type(children[0][1]) is beamlet.Pid and alive


@pytest.mark.parametrize("kind", [Supervisor, DynamicSupervisor])
def test_a_child_that_cannot_be_restarted_uses_up_the_intensity_and_the_supervisor_gives_up(
    kind,
):
    async def main():
        sup, pid = await start_flaky(kind, fail_on=set(range(2, 100)), intensity=2)
        beamlet.unlink(sup)
        ref = beamlet.monitor(sup)
        beamlet.exit(pid, "kill")
        down = await receive(Down(ref, ANY, ANY), timeout=30)
        return await events(2), down.reason

    # restarts 1 and 2 (attempts 2, 3) fail; the third within the period is too many
    assert logged(main) == ([("attempt", 2), ("attempt", 3)], "shutdown")


def test_a_child_waiting_for_its_restart_is_restarting_until_terminate_child_cancels_it():
    async def drain_attempts():
        n = 0
        while True:
            try:
                n = (await receive(("attempt", ANY), timeout=0))[1]
            except TimeoutError:
                return n

    async def main():
        # Every restart fails, and the intensity never runs out, however long
        # this process waits for its turn (a busy machine once let 9,999 go by).
        sup, pid = await start_flaky(Supervisor, fail_on=range(2, 10**12), intensity=10**12)
        beamlet.exit(pid, "kill")
        await receive(("attempt", 2), timeout=30)
        # Each retry is a message the supervisor casts to itself, behind this call.
        status = await which_children(sup)
        with pytest.raises(ChildRunning) as info:
            await delete_child(sup, "flaky")
        await terminate_child(sup, "flaky")  # cancels the retries
        await which_children(sup)  # a retry cast before terminate_child is handled by now
        await drain_attempts()
        after = await which_children(sup)
        await assert_no_message(("attempt", ANY), timeout=0)  # no retry after terminate_child
        return status, info.value.reason, after

    status, reason, after = logged(main)
    assert status == [("flaky", "restarting", "worker")] and reason == "restarting"
    assert after == [("flaky", None, "worker")]
