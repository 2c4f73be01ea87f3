"""process_info and friends: what an operator sees."""

from __future__ import annotations

from tests.conftest import run

import beamlet
from beamlet import ANY, Down, monitor, process_info, receive, send, spawn, spawn_link


async def parked_in_receive():
    await receive("never")


def test_process_info_of_a_waiting_process():
    async def main():
        me = beamlet.self()
        pid = spawn_link(parked_in_receive)
        beamlet.register("parked", pid)
        ref = monitor(pid)
        send(pid, "one")
        send(pid, "two")
        # A round trip through a process that is scheduled after it makes sure
        # the target has run and parked again.
        for _ in range(3):
            await beamlet.sleep(0)
        info = process_info(pid)
        return me, pid, ref, info

    me, _pid, _ref, info = run(main, schedulers=1)
    assert info["status"] == "waiting"
    assert info["message_queue_len"] == 2
    assert info["registered_name"] == "parked"
    assert info["links"] == [me]
    assert info["monitored_by"] == [me]
    assert info["trap_exit"] is False
    assert info["initial_call"] == (__name__, "parked_in_receive", 0)
    assert info["reductions"] >= 1
    assert info["memory"] > 0
    names = [f.name for f in info["current_stacktrace"]]
    assert names[0] == "parked_in_receive" and "receive" in names[-1]


def test_process_info_of_the_caller_says_running():
    async def main():
        info = process_info(beamlet.self())
        return info["status"], info["initial_call"][1]

    assert run(main) == ("running", "test_process_info_of_the_caller_says_running.<locals>.main")


def test_process_info_of_a_dead_process_is_none():
    async def quick():
        return None

    async def main():
        pid, ref = beamlet.spawn_monitor(quick)
        await receive(Down(ref, ANY, ANY))
        return process_info(pid), beamlet.is_alive(pid), pid in beamlet.processes()

    assert run(main) == (None, False, False)


def test_monitors_are_listed_by_target():
    async def main():
        pid = spawn(parked_in_receive)
        monitor(pid)
        monitor(pid)
        return pid, process_info(beamlet.self())["monitors"]

    pid, monitors = run(main)
    assert monitors == [pid, pid]


def test_processes_lists_live_processes():
    async def main():
        pids = [spawn(parked_in_receive) for _ in range(10)]
        live = set(beamlet.processes())
        return all(p in live for p in pids) and beamlet.self() in live

    assert run(main)
