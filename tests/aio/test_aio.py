"""beamlet.aio: the asyncio bridge (docs/aio.md).

Processes -> asyncio (``aio.run``): results, exceptions, timeouts, cancellation
when the process is killed or exits, the loop's lifetime. asyncio -> processes
(``aio.call``, ``aio.cast``, ``aio.send``) from a loop on another thread, as a
web framework's. A GenServer owning a pool of a real asyncio library's
connections (aiosqlite), supervised and restarted.

Nothing sleeps to wait for something: the coroutines on the loop report what
happens to them by message (``beamlet.send`` works from any thread), and every
wait is bounded by ``T`` so that a failure fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import threading
from typing import Any

import pytest
from tests.conftest import run
from tests.helpers import assert_no_message

import beamlet
from beamlet import ANY, Down, aio, exit, monitor, receive, send, spawn, spawn_monitor
from beamlet.otp import (
    CallError,
    CallTimeout,
    GenServer,
    NoReply,
    ServerExit,
    Supervisor,
    call,
    reply,
    which_children,
)

T = 10.0  # bound on every wait


async def in_asyncio_thread(fn, *args):
    """``asyncio.run(fn(*args))`` on a new thread: a foreign loop, as a web
    framework's. Waited for from a process with ``blocking``."""
    out: dict[str, Any] = {}

    def target():
        try:
            out["value"] = asyncio.run(fn(*args))
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=target, name="foreign-asyncio")
    t.start()
    await beamlet.blocking(t.join, T)
    assert not t.is_alive(), "the asyncio thread did not finish"
    if "error" in out:
        raise out["error"]
    return out["value"]


async def others_on_the_loop() -> list[asyncio.Task[Any]]:
    """On the node's loop: the tasks besides the caller's, once the ones that
    were cancelled have had their turns (polled between yields, no sleeps)."""
    me = asyncio.current_task()
    for _ in range(100):
        left = [t for t in asyncio.all_tasks() if t is not me]
        if not left:
            return []
        await asyncio.sleep(0)
    return left


# ---------------------------------------------------------------------- aio.run


async def double(x):
    await asyncio.sleep(0)
    return 2 * x


async def returns():
    return None


async def fail(message):
    await asyncio.sleep(0)
    raise ValueError(message)


def test_run_returns_the_value_of_the_coroutine():
    async def main():
        loop_thread = await aio.run(lambda: asyncio.sleep(0, threading.current_thread().name))
        return (
            await aio.run(double, 21),
            await aio.run(double(5)),  # a coroutine object runs as it is
            await aio.run(functools.partial(asyncio.sleep, 0, result="kw")),
            loop_thread,
        )

    assert run(main) == (42, 10, "kw", "beamlet-aio")


def test_run_raises_the_exception_of_the_coroutine():
    async def main():
        try:
            await aio.run(fail, "boom")
        except ValueError as e:
            names = []
            tb = e.__traceback__
            while tb is not None:
                names.append(tb.tb_frame.f_code.co_name)
                tb = tb.tb_next
            return str(e), "fail" in names
        return "no exception"

    assert run(main) == ("boom", True)


def test_run_refuses_what_is_not_async():
    async def main():
        errors = []
        for fn, args in ((lambda: 42, ()), (42, ()), (double(1), (1,))):
            try:
                await aio.run(fn, *args)
            except TypeError as e:
                errors.append(str(e).split(":")[0].split(";")[0])
        return errors

    errors = run(main)
    assert len(errors) == 3, errors
    assert errors[0].startswith("aio.run needs an async function"), errors


def announcing_forever(pid):
    """An async function for the loop that tells ``pid`` "started", waits
    forever, and tells it "cancelled" when its task is cancelled."""

    async def forever():
        send(pid, "started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            send(pid, "cancelled")
            raise

    return forever


def test_run_times_out_raises_timeout_error_and_cancels_the_task():
    async def main():
        me = beamlet.self()

        forever = announcing_forever(me)

        try:
            await aio.run(forever, timeout=0.05)
        except TimeoutError as e:
            error = str(e)
        else:
            error = "no timeout"
        got = [await receive(timeout=T), await receive(timeout=T)]
        return error, got, await aio.run(others_on_the_loop)

    error, got, left = run(main)
    assert error == "aio.run timed out after 0.05 s"
    assert got == ["started", "cancelled"]
    assert left == []


def test_a_process_waiting_in_run_holds_no_scheduler():
    """With one scheduler, 100 processes wait on the loop at once while main
    keeps running; no scheduler thread was brought in for them."""

    async def main():
        me = beamlet.self()
        box: dict[str, asyncio.Event] = {}

        async def make_event():
            box["ev"] = asyncio.Event()

        async def wait_for_event(i):
            send(me, ("waiting", i))
            await box["ev"].wait()
            return i

        async def waiter(i):
            send(me, ("result", await aio.run(wait_for_event, i)))

        async def set_event():
            box["ev"].set()

        await aio.run(make_event)
        pids = []
        for i in range(100):
            # One at a time: main's own turn stays short (a hundred spawns in
            # one turn can outlast a slice on a slow machine, and main would
            # be handed off for that, not for the waiters).
            pids.append(spawn(waiter, i))
            await receive(("waiting", i), timeout=T)
        statuses = {beamlet.process_info(p)["status"] for p in pids}
        stats = beamlet.statistics()
        await aio.run(set_event)
        results = sorted([(await receive(("result", ANY), timeout=T))[1] for _ in pids])
        return statuses, stats.threads, stats.hand_offs, results

    statuses, threads, hand_offs, results = run(main, schedulers=1)
    assert statuses == {"waiting"}
    assert (threads, hand_offs) == (1, 0)
    assert results == list(range(100))


@pytest.mark.parametrize("reason", ["kill", "shutdown"])
def test_a_process_killed_or_exiting_while_it_waits_cancels_its_task(reason):
    async def main():
        me = beamlet.self()

        forever = announcing_forever(me)

        async def worker():
            await aio.run(forever)
            send(me, "returned")  # never

        pid, ref = spawn_monitor(worker)
        await receive("started", timeout=T)
        exit(pid, reason)
        down = await receive(Down(ref, pid, ANY), timeout=T)
        await receive("cancelled", timeout=T)
        await assert_no_message("returned", timeout=0)
        return down.reason, await aio.run(others_on_the_loop)

    down_reason, left = run(main)
    assert down_reason == ("killed" if reason == "kill" else reason)
    assert left == []


def test_killing_processes_mid_call_1000_times_leaves_no_task_running():
    """Killed before the task starts (the start then never calls the
    function), just after it starts, or while it waits on the loop: every task
    that started is cancelled, and nothing is left on the loop or queued."""
    counts = {"started": 0, "cancelled": 0, "finished": 0}

    async def forever(parent, i, notify):
        counts["started"] += 1  # (only the loop's thread touches counts)
        if notify:
            send(parent, ("started", i))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            counts["cancelled"] += 1
            raise
        counts["finished"] += 1

    async def worker(parent, i, notify):
        if i % 3 == 1:
            send(parent, ("calling", i))
        await aio.run(forever, parent, i, notify)

    async def main():
        me = beamlet.self()
        await aio.run(asyncio.sleep, 0)  # the loop is up
        for i in range(1000):
            kind = i % 3  # 0: at once; 1: as it calls aio.run; 2: once the task runs
            pid, ref = spawn_monitor(worker, me, i, kind == 2)
            if kind == 1:
                await receive(("calling", i), timeout=T)
            elif kind == 2:
                await receive(("started", i), timeout=T)
            exit(pid, "kill")
            down = await receive(Down(ref, pid, ANY), timeout=T)
            assert down.reason == "killed", down
        left = await aio.run(others_on_the_loop)
        return left, len(beamlet.aio._node.bridge.jobs)

    left, jobs = run(main)
    assert left == []
    assert jobs == 0
    assert counts["started"] >= 333  # the ones killed once their task ran, at least
    assert counts["cancelled"] == counts["started"]
    assert counts["finished"] == 0


def test_a_task_that_ignores_its_cancellation_is_reported(caplog):
    logged = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record):
            if "ignored its cancellation" in record.getMessage():
                logged.set()

    async def stubborn(parent):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            send(parent, "swallowed")
        return "ran on"

    async def main():
        try:
            await aio.run(stubborn, beamlet.self(), timeout=0.05)
        except TimeoutError:
            pass
        await receive("swallowed", timeout=T)
        return await beamlet.blocking(logged.wait, T)

    watch = Watch()
    logging.getLogger("beamlet").addHandler(watch)
    try:
        assert run(main) is True
    finally:
        logging.getLogger("beamlet").removeHandler(watch)


def test_awaiting_an_asyncio_future_in_a_process_fails_with_the_kernels_error():
    async def main():
        fut = await aio.run(lambda: asyncio.sleep(0, aio.loop().create_future()))

        async def misuse():
            await fut

        pid, ref = spawn_monitor(misuse)
        down = await receive(Down(ref, pid, ANY), timeout=T)
        return down.reason

    reason = run(main)
    assert isinstance(reason, RuntimeError)
    assert "asyncio objects cannot be awaited in a beamlet process" in str(reason)


def test_run_outside_a_process_says_so():
    async def from_asyncio():
        try:
            await aio.run(double, 1)
        except RuntimeError as e:
            return str(e)

    async def main():
        return await in_asyncio_thread(from_asyncio)

    assert "outside a beamlet process" in run(main)


def test_tasks_on_the_node_loop_never_run_in_a_scheduler_threads_context():
    """asyncio runs a task in a copy of the context of the thread that made it;
    a process's is its scheduler thread's, whose scheduler the kernel must not
    see on the loop's thread (it would queue wake-ups there, unseen). Also for
    a task a process makes with run_coroutine_threadsafe."""
    from beamlet._kernel.context import scheduler_var

    async def probe():
        return scheduler_var.get()

    async def named():
        task = asyncio.create_task(probe(), name="named")
        return task.get_name(), await task

    async def main():
        seen_by_run = await aio.run(probe)
        fut = asyncio.run_coroutine_threadsafe(probe(), aio.loop())
        seen_by_threadsafe = await beamlet.blocking(fut.result, T)
        return seen_by_run, seen_by_threadsafe, await aio.run(named)

    assert run(main) == (None, None, ("named", None))


# ---------------------------------------------------------------------- the loop


def test_the_loop_is_one_thread_started_on_first_use_and_stopped_with_the_runtime(monkeypatch):
    monkeypatch.delenv("BEAMLET_AIO_LOOP", raising=False)

    def aio_threads():
        return [t for t in threading.enumerate() if t.name == "beamlet-aio"]

    loops = []

    async def in_other_process(parent):
        loops.append(aio.loop())
        send(parent, "done")

    async def main():
        before = aio_threads()
        loops.append(aio.loop())
        spawn(in_other_process, beamlet.self())
        await receive("done", timeout=T)
        return before, aio_threads()

    before, during = run(main)
    first, other = loops
    assert before == []
    assert first is other
    assert len(during) == 1
    assert aio_threads() == []  # joined when the runtime shut down
    assert first.is_closed()
    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert type(first).__module__.split(".")[0] == expected


def test_beamlet_aio_loop_asyncio_forces_asyncios_own_loop(monkeypatch):
    monkeypatch.setenv("BEAMLET_AIO_LOOP", "asyncio")

    async def main():
        return type(aio.loop()).__module__.split(".")[0], await aio.run(double, 2)

    assert run(main) == ("asyncio", 4)


def test_each_runtime_has_its_own_loop_and_a_task_left_running_is_cancelled_at_shutdown():
    cancelled = threading.Event()

    async def forever(parent):
        send(parent, "started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def worker(parent):
        await aio.run(forever, parent)

    async def main():
        spawn(worker, beamlet.self())
        await receive("started", timeout=T)
        return aio.loop()

    first = run(main)
    assert cancelled.is_set()  # main returned: the worker was killed, its task cancelled
    assert first.is_closed()

    async def again():
        return aio.loop(), await aio.run(double, 3)

    second, value = run(again)
    assert second is not first and value == 6


def test_the_loop_closes_at_the_runtimes_shutdown_with_no_process_of_its_own():
    """beamlet.aio registers rt.at_shutdown: no extra process keeps its loop."""

    async def main():
        loop = aio.loop()
        return loop, len(beamlet.processes()), await aio.run(double, 4)

    loop, n_processes, value = run(main)
    assert n_processes == 1  # main only
    assert value == 8
    assert loop.is_closed()


# ---------------------------------------------------------------------- asyncio -> beamlet


class Echo(GenServer):
    async def init(self, watcher=None):
        self.watcher = watcher

    async def handle_call(self, request, from_):
        match request:
            case "hold":
                send(self.watcher, ("held", from_))
                return NoReply
            case "crash":
                raise RuntimeError("crash requested")
            case _:
                return ("echo", request)

    async def handle_cast(self, request):
        send(self.watcher, ("cast", request))


def test_call_from_asyncio_returns_the_reply():
    async def main():
        await Echo.start_link(name="echo")
        pid = beamlet.whereis("echo")

        async def client():
            return [await aio.call(pid, 1), await aio.call("echo", [2, 3], timeout=T)]

        return await in_asyncio_thread(client)

    assert run(main) == [("echo", 1), ("echo", [2, 3])]


def test_call_to_a_dead_or_dying_server_is_an_exception_at_once():
    async def main():
        me = beamlet.self()
        dead, ref = spawn_monitor(returns)
        await receive(Down(ref, dead, ANY), timeout=T)
        server = await Echo.start(me)

        async def client():
            errors = []
            for target, request in ((dead, 1), ("nobody", 1), (server, "crash")):
                try:
                    # no call timeout: only the monitor can end these calls
                    await asyncio.wait_for(aio.call(target, request, timeout=None), T)
                except ServerExit as e:
                    errors.append(e.reason if isinstance(e.reason, str) else type(e.reason))
            return errors

        return await in_asyncio_thread(client)

    assert run(main) == ["noproc", "noproc", RuntimeError]


def test_call_to_a_server_killed_while_it_handles_the_call_raises_server_exit():
    async def main():
        me = beamlet.self()
        server = await Echo.start(me)

        async def client():
            try:
                # no call timeout: only the monitor can end this call
                await asyncio.wait_for(aio.call(server, "hold", timeout=None), T)
            except ServerExit as e:
                return e.reason

        async def run_client(parent):
            send(parent, ("client", await in_asyncio_thread(client)))

        spawn(run_client, me)
        await receive(("held", ANY), timeout=T)
        exit(server, "kill")
        return (await receive(("client", ANY), timeout=T))[1]

    assert run(main) == "killed"


def test_call_times_out_with_call_timeout():
    async def main():
        me = beamlet.self()
        server = await Echo.start(me)

        async def client():
            try:
                await aio.call(server, "hold", timeout=0.05)
            except CallTimeout as e:
                return e.reason

        async def run_client(parent):
            send(parent, ("client", await in_asyncio_thread(client)))

        spawn(run_client, me)
        _, from_ = await receive(("held", ANY), timeout=T)
        result = (await receive(("client", ANY), timeout=T))[1]
        reply(from_, "late")  # to a caller that gave up: dropped
        return result

    assert run(main) == "timeout"


def test_cancelling_a_call_in_asyncio_kills_its_process_and_drops_the_late_reply():
    async def main():
        me = beamlet.self()
        server = await Echo.start(me)
        box: dict[str, Any] = {}
        ready = threading.Event()

        async def client():
            task = asyncio.ensure_future(aio.call(server, "hold", timeout=None))
            box["loop"], box["task"] = asyncio.get_running_loop(), task
            ready.set()
            try:
                await task
            except asyncio.CancelledError:
                return "cancelled"

        async def run_client(parent):
            send(parent, ("client", await in_asyncio_thread(client)))

        spawn(run_client, me)
        _, from_ = await receive(("held", ANY), timeout=T)
        caller = from_[0]
        ref = monitor(caller)
        assert await beamlet.blocking(ready.wait, T)
        box["loop"].call_soon_threadsafe(box["task"].cancel)
        down = await receive(Down(ref, caller, ANY), timeout=T)
        reply(from_, "late")
        return (await receive(("client", ANY), timeout=T))[1], down.reason

    assert run(main) == ("cancelled", "killed")


def test_a_call_pending_when_the_runtime_shuts_down_fails_instead_of_hanging():
    out: dict[str, Any] = {}

    async def main():
        me = beamlet.self()
        server = await Echo.start(me)

        async def client():
            try:
                await asyncio.wait_for(aio.call(server, "hold", timeout=None), T)
            except CallError as e:
                return e.reason

        def target():
            out["result"] = asyncio.run(client())

        out["thread"] = threading.Thread(target=target)
        out["thread"].start()
        await receive(("held", ANY), timeout=T)
        # main returns: the runtime kills every process, the call's included

    run(main)
    out["thread"].join(T)
    # "shutdown"; or a ServerExit with "killed" if the server was killed and
    # the call saw its Down before the shutdown reached the call
    assert out["result"] in ("shutdown", "killed")


def test_a_call_whose_process_settles_nothing_fails_at_shutdown(monkeypatch):
    """A call's process killed before it ever ran (a shutdown racing the
    call) runs no ``finally``: the pending call is failed by the shutdown.
    Simulated with a call process that never answers."""

    async def silent(server, request, timeout, caller_loop, fut, calls):
        send("main", "spawned")
        await receive("never")

    monkeypatch.setattr(beamlet.aio, "_caller", silent)
    out: dict[str, Any] = {}

    async def main():
        beamlet.register("main", beamlet.self())

        async def client():
            try:
                await asyncio.wait_for(aio.call("anyone", 1, timeout=None), T)
            except CallError as e:
                return e.reason

        out["thread"] = threading.Thread(target=lambda: out.update(r=asyncio.run(client())))
        out["thread"].start()
        await receive("spawned", timeout=T)

    run(main)
    out["thread"].join(T)
    assert out["r"] == "shutdown"


def test_send_and_cast_from_asyncio():
    async def main():
        me = beamlet.self()
        beamlet.register("main", me)
        server = await Echo.start(me)

        async def client():
            aio.send("main", ("hello", 1))
            aio.send(me, ("hello", 2))
            aio.cast(server, "ping")
            aio.cast("nobody", "dropped")  # as otp.cast: never fails

        await in_asyncio_thread(client)
        return [await receive(timeout=T) for _ in range(3)]

    got = run(main)
    assert sorted(got, key=repr) == [("cast", "ping"), ("hello", 1), ("hello", 2)]


def test_calls_both_ways_a_coroutine_on_the_node_loop_calls_back_into_a_server():
    async def main():
        server = await Echo.start()

        async def coroutine(n):
            return [await aio.call(server, i) for i in range(n)]

        return await aio.run(coroutine, 3)

    assert run(main) == [("echo", 0), ("echo", 1), ("echo", 2)]


def test_call_from_a_process_points_at_otp_call():
    async def main():
        try:
            await aio.call("x", 1)
        except RuntimeError as e:
            return str(e)

    assert "beamlet.otp.call" in run(main)


# ---------------------------------------------------------------------- a real asyncio library


class SqlitePool:
    """An asyncpg-style pool over aiosqlite: connections live on the node's
    loop; a process uses them through aio.run."""

    def __init__(self, conns):
        self.conns = conns
        self.free: asyncio.Queue[Any] = asyncio.Queue()
        for c in conns:
            self.free.put_nowait(c)
        self.closed = False

    @classmethod
    async def open(cls, path, size):
        import aiosqlite

        return cls([await aiosqlite.connect(path) for _ in range(size)])

    async def fetch(self, sql, *params):
        conn = await self.free.get()
        try:
            async with conn.execute(sql, params) as cursor:
                return await cursor.fetchall()
        finally:
            self.free.put_nowait(conn)

    async def execute(self, sql, *params):
        conn = await self.free.get()
        try:
            await conn.execute(sql, params)
            await conn.commit()
        finally:
            self.free.put_nowait(conn)

    async def close(self):
        self.closed = True
        for c in self.conns:
            await c.close()


class Db(GenServer):
    """Owns a pool: opens it in init, closes it in terminate; hands it out."""

    async def init(self, path):
        beamlet.process_flag("trap_exit", True)  # terminate runs on shutdown too
        self.pool = await aio.run(SqlitePool.open, path, 4)
        await aio.run(self.pool.execute, "create table if not exists kv (k text, v text)")
        send("log", ("db_up", beamlet.self()))

    async def handle_call(self, request, from_):
        if request == "pool":
            return self.pool
        if request == "crash":
            raise RuntimeError("the db server crashed")

    async def terminate(self, reason):
        await aio.run(self.pool.close)


def test_a_supervised_gen_server_owns_an_aiosqlite_pool_and_is_restarted(tmp_path):
    pytest.importorskip("aiosqlite")  # a real asyncio library (in the dev dependencies)

    beamlet.register_immutable(SqlitePool)  # a handle: every use runs on the loop's thread

    async def client(parent, i):
        pool = await call("db", "pool")
        await aio.run(pool.execute, "insert into kv values (?, ?)", f"k{i}", f"v{i}")
        rows = await aio.run(pool.fetch, "select v from kv where k = ?", f"k{i}")
        send(parent, ("row", i, rows))

    async def main():
        me = beamlet.self()
        beamlet.register("log", me)
        path = str(tmp_path / "db.sqlite")
        sup = await Supervisor.start_link(
            [{"id": "db", "start": (Db.start_link, (path,), {"name": "db"})}]
        )
        _, first = await receive(("db_up", ANY), timeout=T)
        for i in range(20):
            spawn(client, me, i)
        rows = sorted([(await receive(("row", ANY, ANY), timeout=T))[1:] for _ in range(20)])
        old_pool = await call("db", "pool")
        try:
            await call("db", "crash")
        except ServerExit:
            pass
        _, second = await receive(("db_up", ANY), timeout=T)
        new_pool = await call("db", "pool")
        children = await which_children(sup)
        count = await aio.run(new_pool.fetch, "select count(*) from kv")
        try:
            await aio.run(old_pool.fetch, "select 1")
            old_usable = True
        except ValueError:  # aiosqlite: "no active connection"
            old_usable = False
        beamlet.unlink(sup)
        ref = monitor(sup)
        exit(sup, "shutdown")
        await receive(Down(ref, sup, ANY), timeout=T)
        return rows, first, second, children, count, old_pool.closed, old_usable, new_pool

    rows, first, second, children, count, old_closed, old_usable, new_pool = run(main)
    assert rows == sorted((i, [(f"v{i}",)]) for i in range(20))
    assert first != second and children[0][1] == second
    assert count == [(20,)]
    assert old_closed and not old_usable
    assert new_pool.closed  # terminate ran at the supervisor's shutdown
