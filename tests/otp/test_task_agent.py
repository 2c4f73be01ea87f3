"""Task, TaskSupervisor and Agent."""

from __future__ import annotations

import pytest
from tests.conftest import run

import beamlet
from beamlet import ANY, Down, Exit, receive
from beamlet.otp import Agent, ServerExit, Task, TaskError, TaskSupervisor


async def double(x):
    return x * 2


async def slow_until_told():
    await receive("finish")
    return "finished"


async def fails():
    raise ValueError("task failed")


def test_a_task_returns_its_result():
    async def main():
        tasks = [Task.start(double, i) for i in range(5)]
        return [await t.wait() for t in tasks]

    assert run(main) == [0, 2, 4, 6, 8]


def test_wait_times_out_while_the_task_runs_and_shutdown_stops_it():
    async def main():
        t = Task.start(slow_until_told)
        with pytest.raises(TimeoutError):
            await t.wait(timeout=0.01)
        ref = beamlet.monitor(t.pid)
        result = await t.shutdown()
        return result, (await receive(Down(ref, ANY, ANY), timeout=30)).reason

    assert run(main) == (None, "shutdown")


def test_yield_reports_running_done_or_exited():
    async def main():
        t = Task.start(slow_until_told)
        running = await t.yield_(timeout=0)
        beamlet.send(t.pid, "finish")
        done = await t.yield_(timeout=30)
        return running, done

    assert run(main) == (None, (True, "finished"))


def test_a_crashing_task_takes_its_linked_owner_down():
    async def owner():
        await Task.start(fails).wait()

    async def main():
        pid, ref = beamlet.spawn_monitor(owner)
        return type((await receive(Down(ref, pid, ANY), timeout=30)).reason)

    assert run(main) is ValueError


def test_tasks_under_a_task_supervisor_crash_alone():
    async def main():
        sup = await TaskSupervisor.start_link()
        bad = await TaskSupervisor.async_nolink(sup, fails)
        good = await TaskSupervisor.async_nolink(sup, double, 21)
        with pytest.raises(TaskError) as info:
            await bad.wait()
        fire = await TaskSupervisor.start_task(sup, fails)
        ref = beamlet.monitor(fire)
        await receive(Down(ref, ANY, ANY), timeout=30)
        return type(info.value.reason), await good.wait(), beamlet.is_alive(sup)

    assert run(main) == (ValueError, 42, True)


def test_only_the_owner_can_wait_for_a_task():
    async def other(task, parent):
        try:
            await task.wait()
        except RuntimeError as e:
            beamlet.send(parent, str(e))

    async def main():
        t = Task.start(slow_until_told)
        beamlet.spawn(other, t, beamlet.self())
        msg = await receive(str, timeout=30)
        beamlet.send(t.pid, "finish")
        await t.wait()
        return msg

    assert "only the process that started" in run(main)


def test_agent_get_update_get_and_update_cast_stop():
    async def main():
        agent = await Agent.start_link(lambda: {"hits": 0}, name="stats")
        await Agent.update("stats", lambda s: {**s, "hits": s["hits"] + 1})
        Agent.cast("stats", lambda s: {**s, "hits": s["hits"] + 10})
        old = await Agent.get_and_update("stats", lambda s: (s["hits"], {**s, "hits": 0}))
        now = await Agent.get("stats", lambda s: s["hits"])
        await Agent.stop(agent)
        with pytest.raises(ServerExit):
            await Agent.get(agent)
        return old, now

    assert run(main) == (11, 0)


def test_an_agent_function_that_raises_crashes_the_agent():
    async def main():
        beamlet.process_flag("trap_exit", True)
        agent = await Agent.start_link(1)
        with pytest.raises(ServerExit) as info:
            await Agent.get(agent, lambda v: v / 0)
        exit_msg = await receive(Exit(agent, ANY), timeout=30)
        return type(info.value.reason), type(exit_msg.reason)

    assert run(main) == (ZeroDivisionError, ZeroDivisionError)
