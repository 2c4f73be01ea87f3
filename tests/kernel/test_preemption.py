"""Runaway and blocking processes never freeze the others; kill works on them.

See docs/process-model.md ("Preemption by hand-off") for the mechanism.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time

import pytest
from tests.conftest import needs_precise_kills, run

import beamlet
from beamlet import ANY, Down, exit, process_info, receive, send, spawn, spawn_monitor
from beamlet._kernel.context import current_runtime
from beamlet._kernel.parker import GIL, Parker


async def busy(parent):
    send(parent, ("started", beamlet.self()))
    x = 0
    while True:
        x += 1


async def echo():
    while True:
        sender, n = await receive()
        send(sender, n)


async def ping_pong(rounds):
    me = beamlet.self()
    e = spawn(echo)
    for n in range(rounds):
        send(e, (me, n))
        assert await receive(timeout=30) == n
    return rounds


def test_a_runaway_busy_loop_does_not_stop_a_ping_pong_pair():
    async def main():
        spawn(busy, beamlet.self())
        await receive(("started", ANY))
        # One scheduler: only a hand-off lets the pair run at all.
        done = await ping_pong(200)
        return done, beamlet.statistics().hand_offs

    done, hand_offs = run(main, schedulers=1)
    assert done == 200 and hand_offs >= 1


def test_a_process_blocked_in_time_sleep_does_not_stop_the_others():
    release = threading.Event()

    async def sleeper():
        while not release.is_set():
            time.sleep(0.005)  # blocking syscall, never awaits

    async def main():
        spawn(sleeper)
        done = await ping_pong(100)
        release.set()
        return done

    assert run(main, schedulers=1) == 100


def test_exit_kill_stops_a_process_that_never_awaits():
    async def main():
        pid, ref = spawn_monitor(busy, beamlet.self())
        await receive(("started", ANY))
        exit(pid, "kill")
        down = await receive(Down(ref, pid, ANY), timeout=30)
        return down.reason, beamlet.is_alive(pid)

    assert run(main) == ("killed", False)


def test_a_linked_crash_stops_a_running_process_too():
    async def crash_later(target):
        beamlet.link(target)
        raise RuntimeError("partner crashed")

    async def main():
        pid, ref = spawn_monitor(busy, beamlet.self())
        await receive(("started", ANY))
        spawn(crash_later, pid)
        down = await receive(Down(ref, pid, ANY), timeout=30)
        return type(down.reason).__name__

    assert run(main) == "RuntimeError"


def test_a_process_that_swallows_its_kill_is_declared_dead_anyway():
    stop = threading.Event()

    async def stubborn(parent):
        send(parent, "started")
        while not stop.is_set():
            try:
                while not stop.is_set():
                    pass
            except BaseException:
                pass  # swallows AsyncKill, again and again

    async def main():
        pid, ref = spawn_monitor(stubborn, beamlet.self())
        await receive("started")
        exit(pid, "kill")
        down = await receive(Down(ref, pid, ANY), timeout=30)
        alive = beamlet.is_alive(pid)
        stop.set()
        return down.reason, alive

    assert run(main) == ("killed", False)


def test_kills_never_hit_the_wrong_process():
    """Kill some of many short CPU-bound workers while all of them run: only the
    targets may die killed; every other one finishes its work."""
    rng = random.Random(7)

    async def worker(parent, spins):
        x = 0
        for _ in range(spins):
            x += 1
        send(parent, ("done", beamlet.self()))

    async def main():
        me = beamlet.self()
        workers = {}
        for _ in range(200):
            pid, ref = spawn_monitor(worker, me, rng.randrange(5_000, 80_000))
            workers[pid] = ref
        targets = set(rng.sample(sorted(workers), 60))
        for pid in targets:
            exit(pid, "kill")
        outcomes = {}
        for pid, ref in workers.items():
            outcomes[pid] = (await receive(Down(ref, pid, ANY), timeout=60)).reason
        done = set()
        while True:
            try:
                done.add((await receive(("done", ANY), timeout=0))[1])
            except TimeoutError:
                break
        return targets, outcomes, done

    targets, outcomes, done = run(main, schedulers=2)
    for pid, reason in outcomes.items():
        if pid in targets:
            assert reason in ("killed", "normal")
            # Killed, it may still have sent "done": a kill that arrives between
            # its last send and its return kills it (on the BEAM too: a signal
            # can arrive after a process's last action, before it exits).
            if reason == "normal":
                assert pid in done
        else:
            assert reason == "normal", (pid, reason)
            assert pid in done


def test_process_info_shows_a_runaway_running_with_growing_runtime_and_its_stack():
    async def main():
        pid = spawn(busy, beamlet.self())
        await receive(("started", ANY))
        first = process_info(pid)
        await ping_pong(50)
        second = process_info(pid)
        # Wait until sysmon has charged it at least a few ticks.
        deadline = time.monotonic() + 30
        while second["runtime"] <= first["runtime"] and time.monotonic() < deadline:
            await ping_pong(10)
            second = process_info(pid)
        return first, second

    first, second = run(main, schedulers=1)
    assert first["status"] == second["status"] == "running"
    assert second["runtime"] > first["runtime"]
    assert [f.name for f in second["current_stacktrace"]] == ["busy"]


def test_blocking_runs_on_a_pool_without_holding_a_scheduler():
    proceed = threading.Event()

    def wait_for_the_others():
        assert proceed.wait(30), "the other process never ran"
        return "pool result"

    async def blocker(parent):
        send(parent, await beamlet.blocking(wait_for_the_others))

    async def main():
        spawn(blocker, beamlet.self())
        await ping_pong(20)  # would deadlock if the blocker held the only scheduler
        proceed.set()
        return await receive(timeout=30)

    assert run(main, schedulers=1) == "pool result"


def test_blocking_raises_what_the_function_raised():
    def fails():
        raise OSError("disk on fire")

    async def main():
        with pytest.raises(OSError, match="disk on fire"):
            await beamlet.blocking(fails)
        return await beamlet.blocking(sum, [1, 2, 3])

    assert run(main) == 6


def test_a_process_killed_while_in_blocking_dies_at_once():
    gate = threading.Event()

    async def blocker(parent):
        send(parent, "waiting")
        await beamlet.blocking(gate.wait, 30)

    async def main():
        pid, ref = spawn_monitor(blocker, beamlet.self())
        await receive("waiting")
        exit(pid, "shutdown")
        down = await receive(Down(ref, pid, ANY), timeout=30)
        gate.set()
        return down.reason

    assert run(main) == "shutdown"


def test_run_returns_even_with_runaways_left():
    async def main():
        for _ in range(3):
            spawn(busy, beamlet.self())
        for _ in range(3):
            await receive(("started", ANY))
        return beamlet.statistics()

    stats = run(main, schedulers=1)
    assert stats.threads >= 1 and stats.schedulers == 1


def test_statistics_are_a_frozen_snapshot():
    async def main():
        return beamlet.statistics()

    stats = run(main, schedulers=2)
    assert stats.schedulers == 2 and stats.processes == 1 and stats.active == 2
    with pytest.raises(AttributeError):
        stats.processes = 5  # type: ignore[misc]


@needs_precise_kills
def test_a_process_killed_while_it_starts_threads_stops_and_no_new_thread_is_hit():
    """A new thread carries its creator's ident until it first runs: a kill
    aimed at the creator must not land in it too (the creator would wait for it
    in Thread.start forever). Every victim's code stops; no started thread dies."""
    hit: list[object] = []
    old_hook = threading.excepthook
    old_unraisable = __import__("sys").unraisablehook
    stopped = [threading.Event() for _ in range(20)]

    async def starter(parent, i):
        send(parent, ("started", i))
        try:
            while True:
                t = threading.Thread(target=int)
                t.start()
                t.join()
        finally:
            stopped[i].set()

    async def main():
        reasons = []
        for i in range(len(stopped)):
            pid, ref = spawn_monitor(starter, beamlet.self(), i)
            await receive(("started", i), timeout=30)
            exit(pid, "kill")
            reasons.append((await receive(Down(ref, pid, ANY), timeout=30)).reason)
        # A victim declared dead while out of reach is pursued until its code stops.
        running = await beamlet.blocking(still_running_after, 30)
        return reasons, running

    def still_running_after(seconds):
        deadline = time.monotonic() + seconds
        return [
            i for i, ev in enumerate(stopped) if not ev.wait(max(0.0, deadline - time.monotonic()))
        ]

    sys = __import__("sys")
    threading.excepthook = lambda args: hit.append(args.exc_value)
    sys.unraisablehook = lambda args: hit.append(args.exc_value)
    try:
        reasons, running = run(main, schedulers=1)
    finally:
        threading.excepthook = old_hook
        sys.unraisablehook = old_unraisable
    assert reasons == ["killed"] * len(stopped)
    assert running == [], "the code of these victims kept running"
    assert hit == []


@pytest.mark.skipif(
    not hasattr(sys, "monitoring"), reason="the throttle needs sys.monitoring (3.12+)"
)
def test_only_a_runaways_own_code_waits_for_its_turn(monkeypatch):
    """Standard library and beamlet code may hold a lock at a jump: a thread
    parked for its turn there could deadlock the runaways (a 3.12 run of
    test_kills_never_hit_the_wrong_process did, parked inside send())."""
    import copy

    from beamlet._kernel.throttle import Throttle

    inside = threading.Event()
    stop = threading.Event()
    pause = Parker()

    def helper():  # a plain function, like library code
        inside.set()
        while not stop.is_set():  # loops here, calling
            copy.deepcopy([1, [2]])  # the standard library's loops
            pause.park(0.00001)  # and beamlet's

    async def body():  # the process's own code
        helper()

    def thread_main():
        with contextlib.suppress(StopIteration):
            body().send(None)

    t = threading.Thread(target=thread_main)
    t.start()
    assert inside.wait(10)
    monkeypatch.delenv("BEAMLET_FT_THROTTLE", raising=False)  # (on by default)
    throttle = Throttle(stop_at=thread_main.__code__)  # thread_main stands for the scheduler
    assert throttle.available
    try:
        throttle.add(t.ident)
        # Under the GIL refresh reads the runaway's frames at once; without it
        # the runaway's own thread tells where it loops (sysmon's refreshes
        # look for it from SEEK_AFTER on, until it has jumped).
        deadline = time.monotonic() + 10
        throttle.refresh()
        while not throttle.codes and time.monotonic() < deadline:
            time.sleep(0.001)
            throttle.refresh()
        watched = set(throttle.codes)
    finally:
        throttle.stop()
        stop.set()
        t.join(10)
    # The innermost frame of the process's own code (a plain function here),
    # where it loops; not beamlet's (Parker.park) or the standard library's
    # above it, nor its caller below, which only waits for the call (other
    # processes running that caller -- an HTTP server's connection loop --
    # must not be throttled).
    assert watched == {helper.__code__}


async def _maybe_spin(spin, parent):
    if spin:
        send(parent, ("spinning", beamlet.self()))
        x = 0
        while True:
            x += 1
    send(parent, "done")


def test_processes_that_run_a_runaways_code_but_return_still_finish():
    """Once a function is known to run away, a queued process running the same
    function gets a thread of its own (docs/process-model.md); one that returns
    after all must still finish, and every runaway must still be killable."""

    async def main():
        me = beamlet.self()
        spinners = [spawn_monitor(_maybe_spin, True, me) for _ in range(20)]
        for _ in spinners:
            await receive(("spinning", ANY), timeout=30)
        for _ in range(200):
            spawn(_maybe_spin, False, me)
        done = [await receive("done", timeout=30) for _ in range(200)]
        for pid, _ in spinners:
            exit(pid, "kill")
        reasons = {(await receive(Down(ref, pid, ANY), timeout=30)).reason for pid, ref in spinners}
        return len(done), reasons

    assert run(main, schedulers=1) == (200, {"killed"})


def _loop_here():
    x = 0
    while True:
        x += 1


async def _connection(parent, spin):
    """Shared code, as an HTTP server's connection loop: one copy calls a
    handler that loops forever, the others serve messages."""
    if spin:
        send(parent, ("spinning", beamlet.self()))
        _loop_here()
    while True:
        sender, n = await receive()
        send(sender, ("pong", n))


@pytest.mark.skipif(
    not GIL,
    reason="without the GIL a runaway's frames cannot be read: its code is remembered as before",
)
def test_a_runaway_looping_in_a_called_function_does_not_make_its_callers_code_a_runaways():
    """A runaway's own function is remembered as a runaway's, so that copies of
    it get threads of their own (the test above). One that loops in a
    function its function *called* must not make other processes running that
    outer function (every connection of a server whose one handler loops) go
    to threads of their own, at a lower OS priority, taking turns: on 3.12 the whole server
    crawled, and kept crawling after the runaway was killed."""

    async def main():
        me = beamlet.self()
        pid, ref = spawn_monitor(_connection, me, True)
        await receive(("spinning", pid), timeout=30)
        deadline = time.monotonic() + 30
        while (process_info(pid) or {}).get("runtime", 0) < 0.1:  # past RUNAWAY_AFTER
            assert time.monotonic() < deadline
            await beamlet.sleep(0.01)
        threads = beamlet.statistics().threads
        peers = [spawn(_connection, me, False) for _ in range(50)]
        for _ in range(5):
            for i, peer in enumerate(peers):
                send(peer, (me, i))
            for _ in peers:
                await receive(("pong", ANY), timeout=30)
        grown = beamlet.statistics().threads - threads
        exit(pid, "kill")
        await receive(Down(ref, pid, ANY), timeout=30)
        return grown

    assert run(main, schedulers=1) == 0


def _throttled() -> bool:
    """A throttle runs here: sys.monitoring (3.12+, with or without the GIL)
    or, on 3.11, a trace function (TraceThrottle, where the TraceKiller is used)."""
    from beamlet._kernel.kill import _TRAMPOLINE

    return hasattr(sys, "monitoring") or (GIL and _TRAMPOLINE is not None)


@pytest.mark.skipif(not _throttled(), reason="no throttle here (no hook)")
def test_a_lone_runaway_gives_way_while_processes_wait_to_run(monkeypatch):
    """Under the GIL a lone runaway thread took half the interpreter from the
    schedulers however much work waited (the demo's server fell to 55 % of
    its rate). While processes wait in the run queues it now gives the
    interpreter up for RESPITE after each BUDGET of running: the processes
    here get their work done, and the runaway did give way; it is still
    killed (on 3.11 the kill passes through the throttle's trace function,
    opt-in there: BEAMLET_TRACE_THROTTLE=1)."""
    monkeypatch.setenv("BEAMLET_TRACE_THROTTLE", "1")
    monkeypatch.delenv("BEAMLET_FT_THROTTLE", raising=False)

    async def main():
        me = beamlet.self()
        pid, ref = spawn_monitor(_maybe_spin, True, me)
        await receive(("spinning", pid), timeout=30)
        rt = current_runtime()
        deadline = time.monotonic() + 30
        while rt.throttle.respites == 0:
            assert time.monotonic() < deadline, "the runaway never gave way"
            for _ in range(50):  # keep the run queue busy
                spawn(_maybe_spin, False, me)
            for _ in range(50):
                await receive("done", timeout=30)
        exit(pid, "kill")
        return (await receive(Down(ref, pid, ANY), timeout=30)).reason

    assert run(main, schedulers=1) == "killed"


@pytest.mark.skipif(not hasattr(sys, "monitoring"), reason="the throttle needs sys.monitoring")
def test_runaways_take_turns_on_no_more_cores_than_the_schedulers(monkeypatch):
    """Runaways take turns (docs/process-model.md, "Preemption by hand-off"):
    under the GIL one runs at a time; without it, as many as there are
    schedulers (``Throttle.slots``), so that five of them on two schedulers do
    not take five cores' worth from the processes. Every one of them gets its
    turns, and each is still killed while it waits for one."""

    monkeypatch.delenv("BEAMLET_FT_THROTTLE", raising=False)  # (on by default)

    async def main():
        me = beamlet.self()
        throttle = current_runtime().throttle
        spinners = [spawn_monitor(_maybe_spin, True, me) for _ in range(5)]
        for _ in spinners:
            await receive(("spinning", ANY), timeout=30)
        deadline = time.monotonic() + 30
        while len(throttle.threads) < 5 or not throttle.waiting:
            assert time.monotonic() < deadline, "the runaways never took turns"
            await beamlet.sleep(0.005)
        most = 0
        start = [process_info(pid)["runtime"] for pid, _ in spinners]
        while True:
            most = max(most, len(throttle.holders))
            ran = [
                process_info(pid)["runtime"] - r
                for (pid, _), r in zip(spinners, start, strict=True)
            ]
            if min(ran) > 0.02:
                break
            # (A runaway whose turn was passed on before its thread woke to
            # take it waited outside the line for good.)
            assert time.monotonic() < deadline, (
                f"some runaway never had a turn: {ran} "
                f"{ {i: 'holder' if i in throttle.holders else r.queued for i, r in throttle.threads.items()} }"
            )
            await beamlet.sleep(0.005)
        for pid, _ in spinners:
            exit(pid, "kill")
        reasons = {(await receive(Down(ref, pid, ANY), timeout=30)).reason for pid, ref in spinners}
        return throttle.slots, most, reasons

    slots, most, reasons = run(main, schedulers=2)
    assert slots == (1 if GIL else 2)
    assert 1 <= most <= slots
    assert reasons == {"killed"}


class _CountingParker(Parker):
    """sysmon's parker, counting its parks (waitable)."""

    def __init__(self) -> None:
        super().__init__()
        self.parks = 0
        self.changed = threading.Condition()

    def park(self, timeout: float = -1) -> None:
        with self.changed:
            self.parks += 1
            self.changed.notify_all()
        super().park(timeout)


@pytest.mark.parametrize("moment", ["taken, not yet RUNNING", "dropped, not yet queued again"])
def test_sysmon_never_parks_for_good_while_a_scheduler_is_between_two_steps(moment):
    """sysmon decided to park with no timeout from an unlocked look at each
    scheduler's ``current``, its process's ``state`` and the queue: a look
    between a scheduler taking a process and marking it RUNNING (or between
    dropping it and queueing it again) parked sysmon for good, and the runaway
    the scheduler then ran was never handed off: what was queued behind it
    waited for good. The scheduler here is frozen at that moment (its thread
    is a stand-in), sysmon runs for real."""
    from beamlet._kernel.process import RUNNABLE, RUNNING, Process
    from beamlet._kernel.runtime import Runtime
    from beamlet.terms import Pid

    async def runaway_code():
        pass

    async def quick():
        pass

    rt = Runtime(schedulers=1)
    s = rt.schedulers[0]
    stand_in_done = threading.Event()
    stand_in = threading.Thread(target=stand_in_done.wait, daemon=True)
    stand_in.start()
    s.ident, s.native_id = stand_in.ident, stand_in.native_id
    coro = runaway_code()
    proc = Process(Pid(1_000_000), coro)
    if moment == "taken, not yet RUNNING":
        s.current, proc.state = proc, RUNNABLE
    else:
        s.current = None
    handed_off = threading.Event()
    real_hand_off = rt.hand_off

    def hand_off(sched):
        real_hand_off(sched)
        handed_off.set()

    rt.hand_off = hand_off
    parker = rt.sysmon.parker = _CountingParker()
    rt.sysmon.start()
    try:
        # Let sysmon look at the frozen scheduler and decide twice.
        with parker.changed:
            assert parker.changed.wait_for(lambda: parker.parks >= 3, 10), "sysmon parked for good"
        # The scheduler goes on: it runs a process that never yields, and
        # work is queued behind it by another thread.
        s.current, proc.state = proc, RUNNING
        rt.spawn(quick, (), None)
        assert handed_off.wait(30), "sysmon never handed the stuck scheduler off"
    finally:
        s.current = None
        rt.shutdown(grace=5)
        stand_in_done.set()
        coro.close()


def test_run_keeps_pursuing_a_process_declared_dead_until_its_code_stops():
    """A killed process whose code runs on is declared dead after 20 ms (its
    DOWN goes out), and sysmon keeps aiming the kill at it. If main returns
    then, the shutdown must go on pursuing it for its grace period rather than
    stop the killer and wait 5 s per such thread for code that nothing stops
    any more (free-threaded, with more runaways than cores, kills often take
    longer than 20 ms: a test's run() waited 5 s for each of 20 runaways)."""
    from beamlet._kernel.context import current_runtime

    give_up = threading.Event()  # only if it was never stopped: do not leak a spinning thread
    ran_on = []

    async def stubborn(parent):
        rt = current_runtime()
        ran_on.append(threading.get_ident())
        late_kills = 0
        send(parent, "started")
        while not give_up.is_set():
            try:
                while not give_up.is_set():
                    # Mostly blocked, it gets a core at once when it wakes:
                    # a busy loop at a runaway's low priority could wait
                    # seconds for one on a loaded machine, past the grace.
                    time.sleep(0.001)
            except BaseException:
                # Once run() has seen every process leave the table (this
                # one included), the second kill stops it: one aimed after
                # that (the first may have been aimed just before). (A kill
                # may also land on any line of this handler and stop it.)
                if rt.stopping and not rt.table:
                    late_kills += 1
                    if late_kills == 2:
                        raise

    def still_running():
        # Its code runs on if its thread's stack holds its frame. (Not an
        # event set in a `finally`: a pursuing kill may land on that line too.)
        frame = sys._current_frames().get(ran_on[0])
        while frame is not None:
            if frame.f_code is stubborn.__code__:
                return True
            frame = frame.f_back
        return False

    async def main():
        pid, ref = spawn_monitor(stubborn, beamlet.self())
        await receive("started", timeout=30)
        exit(pid, "kill")
        return (await receive(Down(ref, pid, ANY), timeout=30)).reason  # declared dead

    try:
        assert run(main) == "killed"
        assert not still_running(), "run() returned while the killed process's code still ran"
    finally:
        give_up.set()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the throttle needs sys.monitoring")
def test_a_runaway_that_kills_one_waiting_for_its_turn_gets_that_turn(monkeypatch):
    """A runaway (a killer that never yields) in its turn that kills a runaway
    waiting in line gets the victim's turn: its own lasts BUDGET longer, once
    per victim (throttle.Throttle.wake). Without it, a process killing a
    thousand runaways on 3.13t got a few kills per round of all of them, and
    took up to a minute (benchmarks: kill_1000_spawned)."""
    from beamlet._kernel import throttle as th_mod

    monkeypatch.delenv("BEAMLET_FT_THROTTLE", raising=False)  # (on by default)
    th = th_mod.Throttle()
    me, victim, bystander = threading.get_ident(), 1, 2
    try:
        for ident in (me, victim, bystander):
            th.add(ident)
        assert th.tool is not None
        killer, r, other = (th.threads[i] for i in (me, victim, bystander))
        with th.lock:  # this thread holds a turn; the others wait in line
            th.holders.add(me)
            for w in (r, other):
                th.waiting.append(w)
                w.queued = True
        killer.since = since = 1000.0
        th.wake(victim)
        assert killer.since == since + th_mod.BUDGET
        th.wake(victim)  # killed again (it swallowed the kill, say): no more
        assert killer.since == since + th_mod.BUDGET
        with th.lock:
            th.holders.discard(me)  # out of turn: nothing to give
        th.wake(bystander)
        assert killer.since == since + th_mod.BUDGET and not other.donated
    finally:
        th.stop()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the throttle needs sys.monitoring")
def test_runaways_take_turns_by_default_and_free_threaded_it_can_be_switched_off(monkeypatch):
    """docs/process-model.md: runaways take turns on every build that has
    sys.monitoring; on a free-threaded one BEAMLET_FT_THROTTLE=0 switches it
    off (under the GIL that variable means nothing)."""
    from beamlet._kernel.throttle import Throttle

    monkeypatch.delenv("BEAMLET_FT_THROTTLE", raising=False)
    assert Throttle().available
    monkeypatch.setenv("BEAMLET_FT_THROTTLE", "0")
    assert Throttle().available is GIL


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the throttle needs sys.monitoring")
def test_a_runaway_that_spawned_or_killed_gets_every_other_turn(monkeypatch):
    """A runaway that spawned or killed in its turn waits for the next in the
    urgent line, which gets every other turn while the ordinary line holds
    some (throttle.Throttle._next): a supervisor starting or stopping a
    thousand workers from a loop that never yields is not sent behind all
    of them after each turn (on 3.13t one such round took 45-90 s), and the
    others still get their turns in order."""
    from beamlet._kernel import throttle as th_mod

    monkeypatch.delenv("BEAMLET_FT_THROTTLE", raising=False)  # (on by default)
    th = th_mod.Throttle()
    me = threading.get_ident()
    others = [1, 2, 3, 4]
    try:
        for ident in (me, *others):
            th.add(ident)
        assert th.tool is not None
        sup = th.threads[me]
        turns = []

        def take_turns(n: int) -> None:
            for _ in range(n):
                (holder,) = th.holders
                turns.append(holder)
                th._pass_on(holder)
                r = th.threads[holder]
                r.kernel = False  # a new turn: nothing spawned in it yet
                if holder == me:
                    th.credit(me, 0.0)  # it spawns in each of its turns
                th._enqueue(r)

        with th.lock:
            th.holders.add(others[0])
            for i in others[1:]:
                th._enqueue(th.threads[i])
            th.credit(me, 0.0)  # it spawned while it held its last turn
            th._enqueue(sup)
            assert list(th.urgent) == [sup] and me not in [r.ident for r in th.waiting]
            take_turns(9)
        assert turns == [others[0], me, others[1], me, others[2], me, others[3], me, others[0]]
        with th.lock:
            # A turn without a spawn or a kill: back to the ordinary line.
            monkeypatch.setattr(th, "credit", lambda ident, spent: None)
            take_turns(6)
        assert turns[9:] == [me, others[1], others[2], others[3], others[0], me]
        assert not th.urgent
        # A kill aimed at a runaway marks the killer too (wake).
        assert not sup.kernel
        th.wake(others[2])
        assert sup.kernel
    finally:
        th.stop()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the throttle needs sys.monitoring")
def test_a_runaways_spawns_do_not_count_against_its_turn_up_to_a_bound(monkeypatch):
    """Time a runaway spends spawning in its turn is credited to the turn, up
    to CREDIT a turn, and only in its turn (throttle.Throttle.credit; the
    runtime credits spawns made on a handed-off thread without the GIL)."""
    from beamlet._kernel import throttle as th_mod

    monkeypatch.delenv("BEAMLET_FT_THROTTLE", raising=False)  # (on by default)
    th = th_mod.Throttle()
    me = threading.get_ident()
    try:
        th.add(me)
        r = th.threads[me]
        r.since = since = 1000.0
        th.credit(me, 0.001)  # not its turn: nothing
        assert r.since == since
        with th.lock:
            th.holders.add(me)
        th.credit(me, 0.001)
        assert r.since == since + 0.001
        th.credit(me, 1.0)  # no more than CREDIT a turn in all
        assert r.since == pytest.approx(since + th_mod.CREDIT)
        th.credit(me, 0.001)
        assert r.since == pytest.approx(since + th_mod.CREDIT)
    finally:
        th.stop()
