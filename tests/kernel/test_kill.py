"""A kill always takes effect, lands only in its target's own code, and never
leaves a lock held (docs/process-model.md, "Killing a running process";
docs/semantics.md [EXIT-2], [EXIT-9])."""

from __future__ import annotations

import gc
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import weakref

import pytest
from tests.conftest import needs_precise_kills, run
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, Down, exit, receive, send, sleep, spawn, spawn_monitor


@pytest.fixture
def thread_deaths():
    """Exceptions that end a thread (a scheduler killed by a stray kill) or that
    Python could not raise ("unraisable": a kill swallowed by a weakref callback)."""
    seen: list[str] = []
    old_hook, old_unraisable = threading.excepthook, sys.unraisablehook
    threading.excepthook = lambda a: seen.append(f"{a.thread.name}: {a.exc_value!r}")
    sys.unraisablehook = lambda a: seen.append(
        f"unraisable: {a.exc_value!r} in {a.object!r} {a.err_msg}"
    )
    yield seen
    threading.excepthook, sys.unraisablehook = old_hook, old_unraisable


async def runaway(parent=None):
    if parent is not None:
        send(parent, ("running", beamlet.self()))
    x = 0
    while True:
        x += 1


async def short_loops():
    while True:
        x = 0
        for _ in range(10):
            x += 1
        await sleep(0)


def test_a_process_killed_before_it_first_runs_never_runs():
    """[EXIT-9]"""

    async def tattler(parent):
        send(parent, "I ran")

    async def main():
        pid, ref = spawn_monitor(tattler, beamlet.self())
        exit(pid, "kill")  # main still holds the only scheduler: it has not run
        down = await receive(Down(ref, pid, ANY), timeout=30)
        await assert_no_message("I ran", timeout=0.05)
        return down.reason

    # max_threads=1: no other thread may run it meanwhile (main, descheduled by
    # a loaded machine for 2 ms between the two calls, looked stuck to sysmon,
    # which brought in a thread that ran the tattler: free-threaded, 1 in 20).
    assert run(main, schedulers=1, max_threads=1) == "killed"


def test_a_kill_sent_before_a_runaway_first_runs_stops_it():
    """[EXIT-9] The runaway would never reach a trap to see the signal."""

    async def main():
        pid, ref = spawn_monitor(runaway)
        exit(pid, "kill")
        return (await receive(Down(ref, pid, ANY), timeout=30)).reason

    assert run(main, schedulers=1) == "killed"


def test_a_thousand_runaways_spawned_and_killed_at_once_all_die():
    """[EXIT-9]"""

    async def main():
        procs = [spawn_monitor(runaway) for _ in range(1000)]
        for pid, _ in procs:
            exit(pid, "kill")
        reasons = set()
        for pid, ref in procs:
            reasons.add((await receive(Down(ref, pid, ANY), timeout=30)).reason)
        return reasons, beamlet.statistics().processes

    assert run(main, schedulers=1) == ({"killed"}, 1)


def test_an_exit_signal_that_arrives_as_a_runaway_starts_still_stops_it():
    """[EXIT-9] Killed while queued or just as a scheduler picks it up: either
    the scheduler sees the signal before resuming it, or the sender sees it run."""

    async def main():
        me = beamlet.self()
        reasons = set()
        for _ in range(100):
            pid, ref = spawn_monitor(runaway)
            await sleep(0)  # let a scheduler pick it up, or not
            beamlet.exit(pid, "stop")
            reasons.add((await receive(Down(ref, pid, ANY), timeout=30)).reason)
        send(me, "done")
        return reasons

    assert run(main, schedulers=2) == {"stop"}


def _kill_short_loopers(seconds: float, schedulers: int) -> int:
    async def main():
        rounds = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            procs = [spawn_monitor(short_loops) for _ in range(16)]
            await sleep(0.001)
            for pid, _ in procs:
                exit(pid, "kill")
            for pid, ref in procs:
                assert (await receive(Down(ref, pid, ANY), timeout=30)).reason == "killed"
            rounds += 1
        return rounds

    return run(main, schedulers=schedulers)


def test_kills_of_processes_that_keep_yielding_never_escape_into_a_scheduler(
    thread_deaths, fast_switching
):
    """A kill aimed at a process that yields as the kill arrives must not go off
    in the scheduler that ran it (issue: "AsyncKill escapes into the scheduler")."""
    assert _kill_short_loopers(1.0, schedulers=4) > 0
    assert thread_deaths == []


def _readers_left_blocked() -> str:
    async def reader(parent, sock):
        send(parent, "ready")
        try:
            await beamlet.blocking(sock.recv, 1024)
        except OSError:
            pass

    async def main():
        pairs = [socket.socketpair() for _ in range(70)]
        me = beamlet.self()
        for a, _ in pairs:
            spawn(reader, me, a)
        for _ in pairs:
            await receive("ready", timeout=30)
        spawn(lambda_like)
        for _, b in pairs:
            b.close()
        return "ok"

    async def lambda_like():
        await beamlet.blocking(lambda: 42)

    return run(main, schedulers=None)


def test_processes_left_blocked_in_blocking_at_exit_never_kill_a_scheduler(thread_deaths):
    assert _readers_left_blocked() == "ok"
    assert thread_deaths == []


@pytest.mark.slow
def test_stress_kills_never_escape_into_a_scheduler(thread_deaths):
    """The issue's two repros, many times (BEAMLET_STRESS_ROUNDS, default 20)."""
    for _ in range(int(os.environ.get("BEAMLET_STRESS_ROUNDS", "20"))):
        assert _kill_short_loopers(2.0, schedulers=4) > 0
        assert _readers_left_blocked() == "ok"
        assert thread_deaths == []


@needs_precise_kills
def test_killing_processes_that_log_in_a_loop_never_leaves_the_handler_lock_held():
    """A kill that lands in logging between a lock's acquire and its try would
    leave the handler locked for every other process (seen before kill.py)."""
    logger = logging.getLogger("beamlet.tests.kill")
    handler = logging.StreamHandler(open(os.devnull, "w"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)

    async def chatty(parent):
        send(parent, "started")
        n = 0
        while True:
            logger.info("line %d", n)
            n += 1

    async def main():
        reasons = []
        for _ in range(30):
            procs = [spawn_monitor(chatty, beamlet.self()) for _ in range(4)]
            for _ in procs:
                await receive("started", timeout=30)
            for pid, _ in procs:
                exit(pid, "kill")
            for pid, ref in procs:
                reasons.append((await receive(Down(ref, pid, ANY), timeout=30)).reason)
        return reasons

    try:
        reasons = run(main, schedulers=2)
        free = handler.lock.acquire(timeout=5)
        if free:
            handler.lock.release()
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert set(reasons) == {"killed"}
    assert free, "a kill left the logging handler's lock held"


def test_a_kill_is_not_swallowed_by_weakref_callbacks_or_finalizers(thread_deaths):
    """Garbage collection runs weakref callbacks (WeakSet's) in whatever thread
    allocates: a kill that went off there became "unraisable" and vanished."""

    class Thing:
        pass

    async def churner(parent):
        things = weakref.WeakSet()
        send(parent, "started")
        while True:
            t = Thing()
            t.cycle = t  # collected by the cyclic GC, in this thread
            things.add(t)
            del t

    async def main():
        reasons = []
        for _ in range(20):
            pid, ref = spawn_monitor(churner, beamlet.self())
            await receive("started", timeout=30)
            exit(pid, "kill")
            reasons.append((await receive(Down(ref, pid, ANY), timeout=30)).reason)
        return reasons

    old = gc.get_threshold()
    try:
        reasons = run(main, schedulers=2, gc_thresholds=(100, 5, 5))
    finally:
        gc.set_threshold(*old)
    assert set(reasons) == {"killed"}
    assert thread_deaths == []


def test_finally_blocks_of_a_killed_process_run_as_it_but_cannot_wait(caplog):
    """[EXIT-2]"""

    async def tidy(parent):
        try:
            send(parent, "waiting")
            await receive("never")
        finally:
            send(parent, ("cleaning up", beamlet.self()))
            await sleep(0.01)  # not allowed any more: it is being killed

    async def main():
        pid, ref = spawn_monitor(tidy, beamlet.self())
        await receive("waiting", timeout=30)
        exit(pid, "shutdown")
        assert await receive(("cleaning up", ANY), timeout=30) == ("cleaning up", pid)
        assert await receive(Down(ref, pid, ANY), timeout=30) == Down(ref, pid, "shutdown")

    with caplog.at_level(logging.WARNING, logger="beamlet"):
        run(main)
    assert "being killed ('shutdown')" in caplog.text
    assert "cannot wait any more" in caplog.text


def test_the_down_of_a_killed_runaway_reaches_a_watcher_while_every_scheduler_idles():
    """The runaway's thread finishes it and wakes the watcher, then parks as a
    spare: it must not leave the watcher queued while every other scheduler
    idles. (The kill comes from a pool thread once the watcher waits.)"""

    def kill_once_waiting(watcher, victim):
        deadline = time.monotonic() + 30
        while beamlet.process_info(watcher)["status"] != "waiting":
            if time.monotonic() > deadline:
                return
            time.sleep(0.0005)
        beamlet.exit(victim, "kill")

    async def killer(watcher, victim):
        await beamlet.blocking(kill_once_waiting, watcher, victim)

    async def main():
        me = beamlet.self()
        reasons = []
        for _ in range(10):
            pid, ref = spawn_monitor(runaway, me)
            await receive(("running", pid), timeout=30)
            deadline = time.monotonic() + 30
            while beamlet.statistics().held_by_runaways == 0 and time.monotonic() < deadline:
                await sleep(0.001)  # until sysmon has handed its thread off
            spawn(killer, me, pid)
            reasons.append((await receive(Down(ref, pid, ANY), timeout=10)).reason)
        return reasons

    assert run(main, schedulers=1) == ["killed"] * 10


class _SpyLock:
    """A lock that sets ``waiting`` when a thread has to wait for it."""

    def __init__(self, waiting: threading.Event) -> None:
        self.lock = threading.Lock()
        self.waiting = waiting

    def __enter__(self):
        if not self.lock.acquire(blocking=False):
            self.waiting.set()
            self.lock.acquire()
        return self

    def __exit__(self, *exc):
        self.lock.release()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_free_threaded_the_kill_events_stay_on_for_a_while_after_a_kill(monkeypatch):
    """Without the GIL each switch of monitoring events stops the world (~1 ms
    with hundreds of runaway threads about): the events a kill switched on stay
    on for kill.LINGER after the last aim, so a process killing runaways one
    after another pays it once, not twice a kill (it lost its turn to it and
    waited a round of all the runaways per kill). With the GIL they go off
    once no kill is under way."""
    from types import SimpleNamespace

    from beamlet._kernel import kill
    from beamlet._kernel.parker import GIL

    monitoring = sys.monitoring
    killer = kill.MonitoringKiller(lambda: None)
    if not killer.available:
        pytest.skip("no free sys.monitoring tool id")

    async def victim_code():
        while True:
            pass

    coro = victim_code()
    code = coro.cr_code
    on = monitoring.events.LINE | monitoring.events.JUMP
    try:
        monkeypatch.setattr(kill, "LINGER", 3600.0)
        assert killer.aim(SimpleNamespace(ident=12345), SimpleNamespace(coro=coro, doom="kill"))
        killer.idle()  # the kill is over (sysmon calls it then)
        assert not killer.armed  # nothing aimed any more ...
        if GIL:
            assert code not in killer.codes
            assert monitoring.get_local_events(killer.tool, code) == 0
        else:
            assert code in killer.codes  # ... but the events stay on, recorded as such
            assert monitoring.get_local_events(killer.tool, code) == on
            monkeypatch.setattr(kill, "LINGER", 0.0)  # LINGER is over
            killer.idle()
            assert code not in killer.codes
            assert monitoring.get_local_events(killer.tool, code) == 0
    finally:
        killer.stop()
        coro.close()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_a_kill_aimed_while_the_killer_goes_idle_keeps_its_events(monkeypatch):
    """The kill events of a code and the killer's record of them change together:
    aimed while idle() switched the events off, a kill once left its code
    recorded as watched with no events, and every later aim trusted the record
    (free-threaded 3.13: killed processes ran on for good, as zombies)."""
    from types import SimpleNamespace

    from beamlet._kernel import kill

    monitoring = sys.monitoring
    killer = kill.MonitoringKiller(lambda: None)
    if not killer.available:
        pytest.skip("no free sys.monitoring tool id")
    # Set when the aiming thread is done or waits for the killer's lock.
    progress = threading.Event()
    killer.lock = _SpyLock(progress)

    async def victim_code():
        while True:
            pass

    coro = victim_code()
    code = coro.cr_code
    proc = SimpleNamespace(coro=coro, doom="killed")
    sched = SimpleNamespace(ident=12345)
    aimed = []

    def aim():
        aimed.append(killer.aim(sched, proc))
        progress.set()

    def set_local_events(tool, c, events):
        if events == 0 and c is code:
            # idle() is switching the events off: a kill is aimed right now,
            # from another thread; go on once it is done or waits for idle().
            t = threading.Thread(target=aim)
            t.start()
            threads.append(t)
            assert progress.wait(30), "the aiming thread did not get anywhere"
        monitoring.set_local_events(tool, c, events)

    threads: list[threading.Thread] = []
    monkeypatch.setattr(
        kill,
        "_monitoring",
        SimpleNamespace(
            events=monitoring.events,
            set_local_events=set_local_events,
            register_callback=monitoring.register_callback,
            free_tool_id=monitoring.free_tool_id,
        ),
    )
    try:
        killer._watch([code])
        killer.idle()
        for t in threads:
            t.join(30)
        assert aimed == [True]
        assert threads, "idle() did not switch the events off"
        assert killer.armed.get(sched.ident) is proc
        assert code in killer.codes
        assert monitoring.get_local_events(killer.tool, code) == (
            monitoring.events.LINE | monitoring.events.JUMP
        )
    finally:
        killer.stop()
        coro.close()


def _spin_forever():
    """A plain function that never returns: a runaway's own code, deeper
    than its coroutine (sysmon finds it on the runaway's stack)."""
    x = 0
    while True:
        x += 1


async def kill_as_it_runs(victim, rounds=5):
    """Spawn ``victim(parent)`` ``rounds`` times; each announces ("running",
    pid) and ("unwound", pid) from a finally: kill it as it runs, wait for its
    code to stop; the reasons of the DOWNs."""
    me = beamlet.self()
    reasons = []
    for _ in range(rounds):
        pid, ref = spawn_monitor(victim, me)
        await receive(("running", pid), timeout=30)
        exit(pid, "kill")
        await receive(("unwound", pid), timeout=30)
        reasons.append((await receive(Down(ref, pid, ANY), timeout=30)).reason)
    return reasons


def test_a_kill_stops_a_loop_in_a_plain_function_without_reading_a_running_threads_frames(
    monkeypatch,
):
    """The kill must reach the loop in the function the process called, and
    its code must stop (its finally runs). On a free-threaded build, reading
    the frames of a thread that runs (sys._current_frames) is a use-after-free
    that crashed the interpreter in sysmon: it must not happen there."""
    from beamlet._kernel.parker import GIL

    if not GIL:

        def no_frames():
            raise AssertionError("sys._current_frames() on a free-threaded build")

        monkeypatch.setattr(sys, "_current_frames", no_frames)

    async def runaway_in_a_function(parent):
        try:
            send(parent, ("running", beamlet.self()))
            _spin_forever()
        finally:
            send(parent, ("unwound", beamlet.self()))

    assert run(kill_as_it_runs, runaway_in_a_function) == ["killed"] * 5


def _spin_on_one_instruction():
    while True: pass  # noqa: E701  # fmt: skip


def test_a_kill_stops_a_loop_that_is_one_instruction_jumping_to_itself():
    """``while True: pass`` on one line compiles to a single backward jump to
    itself, which CPython 3.11 never reports as a line event: the trace
    function that delivers kills there never ran, the process was declared
    dead after 21 ms and its thread spun on for good (and a shutdown waited 5
    s for it). The kill must stop that code: its caller's finally runs."""
    import dis

    assert any(
        i.opname.startswith("JUMP_BACKWARD") and i.argval == i.offset
        for i in dis.get_instructions(_spin_on_one_instruction)
    ), "the loop is not a jump to itself on this Python: the test tests nothing"

    async def victim(parent):
        try:
            send(parent, ("running", beamlet.self()))
            _spin_on_one_instruction()
        finally:
            send(parent, ("unwound", beamlet.self()))

    assert run(kill_as_it_runs, victim) == ["killed"] * 5


@needs_precise_kills
def test_the_finally_block_of_a_killed_process_runs_to_its_end_though_the_kill_is_aimed_again():
    """[EXIT-2] While a killed runaway unwinds, sysmon sees it still running and
    aims the kill again (a process may swallow it): that second kill must not
    cut its finally block short (on free-threaded 3.13, where sysmon runs beside
    the victim, a test's finally never got to set its Event)."""
    from beamlet._kernel.context import current_runtime

    async def victim(parent):
        killer = current_runtime().killer
        me = threading.get_ident()
        try:
            send(parent, "running")
            while True:
                pass
        finally:
            # Unwinding from the kill: wait until sysmon aims it again.
            while not killer.wants(me):
                pass
            send(parent, "unwound")

    async def main():
        reasons = []
        for _ in range(3):
            pid, ref = spawn_monitor(victim, beamlet.self())
            await receive("running", timeout=30)
            exit(pid, "kill")
            await receive("unwound", timeout=30)
            reasons.append((await receive(Down(ref, pid, ANY), timeout=30)).reason)
        return reasons

    assert run(main) == ["killed"] * 3


def test_a_kill_that_lands_in_a_loop_on_one_line_still_runs_that_frames_with_and_finally():
    """A loop on one line has no LINE event per turn: the kill lands at its
    jump. Raised from a JUMP callback, CPython 3.12/3.13 unwound the exception
    past the handlers of the frame that jumped: the lock taken around the loop
    stayed held, and the finally never ran."""
    lock = threading.Lock()

    async def holder(parent):
        try:
            with lock:
                send(parent, "locked")
                while True: pass  # noqa: E701  # fmt: skip
        finally:
            send(parent, "finally ran")

    async def main():
        me = beamlet.self()
        outcomes = []
        for _ in range(5):
            pid, ref = spawn_monitor(holder, me)
            await receive("locked", timeout=30)
            exit(pid, "kill")
            reason = (await receive(Down(ref, pid, ANY), timeout=30)).reason
            finally_ran = await receive("finally ran", timeout=30)
            outcomes.append((reason, finally_ran, lock.locked()))
        return outcomes

    assert run(main) == [("killed", "finally ran", False)] * 5


@needs_precise_kills
def test_a_kill_due_as_a_with_block_ends_never_skips_its_exit():
    """A with statement's normal exit (``__exit__(None, None, None)``) carries
    the with's line, and no handler of the with covers it: a kill raised at
    that LINE event left the lock held. Here the kill is aimed while the
    process is blocked in the last call of the block, so the next event it
    meets is that one."""
    ready = threading.Event()

    async def holder(parent, lock):
        try:
            with lock:
                send(parent, "locked")
                ready.wait()
            x = 0
            while True:
                x += 1
        finally:
            send(parent, "stopped")  # its code has stopped (DOWN may come first)

    async def main():
        me = beamlet.self()
        held = []
        for _ in range(5):
            lock = threading.Lock()
            ready.clear()
            pid, ref = spawn_monitor(holder, me, lock)
            await receive("locked", timeout=30)
            exit(pid, "kill")  # aimed at once: it runs (blocked in ready.wait)
            ready.set()
            assert (await receive(Down(ref, pid, ANY), timeout=30)).reason == "killed"
            await receive("stopped", timeout=30)
            held.append(lock.locked())
        return held

    assert run(main) == [False] * 5


_STALE_SIGNAL_SCRIPT = r"""
import ctypes, platform, sys, threading, time
from beamlet._kernel.kill import CLEARED, Cleared, clear_async_exc, consume_cleared

set_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
set_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
blocked, go = threading.Lock(), threading.Event()
blocked.acquire()
result = []


def worker():
    blocked.acquire()  # (C: the injection below waits here, then is taken back)
    go.wait()
    if sys.argv[1] == "kernel":
        try:  # what the scheduler does to forget a kill aimed at its thread
            clear_async_exc(threading.get_ident(), CLEARED)
            consume_cleared()
        except Cleared:
            pass
    sys.settrace(lambda frame, event, arg: None)  # (coverage's place)

    def f():
        return 1

    for _ in range(100):
        f()
    sys.settrace(None)
    result.append("done")


t = threading.Thread(target=worker, daemon=True)
t.start()
# Inject only once the worker sleeps in blocked.acquire() (a futex wait that
# lasts): injected while it still ran Python (its start-up), the KeyError went
# off at once (seen on 3.13t).
stat, syscall = (f"/proc/self/task/{t.native_id}/{f}" for f in ("stat", "syscall"))
asleep = 0
while asleep < 20:
    with open(stat) as fs, open(syscall) as fc:
        state = fs.read().rsplit(")", 1)[1].split()[0]
        call = fc.read().split()[0]
    futex = {"x86_64": "202", "aarch64": "98"}.get(platform.machine(), call)
    asleep = asleep + 1 if (state, call) == ("S", futex) else 0
    time.sleep(0.001)
# An injection taken back with NULL before it fires: 3.11 leaves the
# interpreter's async-exception signal set.
set_exc(t.ident, KeyError)
set_exc(t.ident, ctypes.py_object())
blocked.release()
go.set()
t.join(2)
print(result[0] if result else "spinning")
"""


def test_forgetting_an_injected_kill_leaves_no_async_exception_signal_set(tmp_path):
    """docs/process-model.md, "Killing a running process": the fallback killer
    (3.11 under a tracer such as coverage) forgets a kill it injected by having
    the thread raise and catch a harmless exception in place, which is what
    clears CPython's signal. Taking it back with NULL left the signal set on
    3.11, and a thread with a trace function then spun for good at its next
    call (the "baseline" run shows the hazard on this interpreter)."""
    script = tmp_path / "stale.py"
    script.write_text(_STALE_SIGNAL_SCRIPT)
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
    fixed = subprocess.run(
        [sys.executable, str(script), "kernel"], capture_output=True, text=True, env=env, timeout=60
    )
    assert fixed.stdout.strip() == "done", fixed.stdout + fixed.stderr
    if sys.version_info[:2] == (3, 11):
        baseline = subprocess.run(
            [sys.executable, str(script), "baseline"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert baseline.stdout.strip() == "spinning", baseline.stdout + baseline.stderr
