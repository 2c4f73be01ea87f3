"""Crash reports show the user's code first: no scheduler-loop or behaviour-loop frames
ahead of it (Elixir's reports start at the user's function too)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.conftest import run

import beamlet
from beamlet import ANY, Down, receive, spawn_monitor
from beamlet.otp import GenServer, ServerExit, StartError, TaskSupervisor, call

BEAMLET_DIR = str(Path(beamlet.__file__).parent)


def parse(text):
    return int(text)


async def crasher():
    parse("not a number")


async def sends_to_nowhere():
    beamlet.send(12345, "a pid is needed")  # raises BadArg inside beamlet's API


class Parser(GenServer):
    async def init(self, fail=False):
        if fail:
            parse("bad config")

    async def handle_call(self, request, from_):
        return parse(request)


def frames(record: logging.LogRecord) -> list[str]:
    """The 'File ..., line ..., in ...' lines of the traceback a record logs."""
    if record.exc_info:
        text = logging.Formatter().formatException(record.exc_info)
    else:
        text = record.getMessage()
    return [line.strip() for line in text.splitlines() if line.strip().startswith("File ")]


def crash_records(caplog, marker):
    return [r for r in caplog.records if marker in r.getMessage()]


def test_a_crashed_process_logs_its_own_frames_first(caplog):
    async def main():
        for body in (crasher, sends_to_nowhere):
            pid, ref = spawn_monitor(body)
            await receive(Down(ref, pid, ANY), timeout=30)

    with caplog.at_level(logging.ERROR, logger="beamlet"):
        run(main)
    plain, bad_arg = (frames(r) for r in crash_records(caplog, "crashed:"))
    assert "in crasher" in plain[0] and "in parse" in plain[1] and len(plain) == 2
    assert BEAMLET_DIR not in "".join(plain)  # not runtime.py's proc.coro.send(None)
    # Frames of beamlet that the user's code called stay: that is where it failed.
    assert "in sends_to_nowhere" in bad_arg[0] and BEAMLET_DIR in bad_arg[-1]


def test_a_crashed_task_logs_its_own_frames_first(caplog):
    async def main():
        sup = await TaskSupervisor.start_link()
        task = await TaskSupervisor.async_nolink(sup, crasher)
        with pytest.raises(beamlet.otp.TaskError):
            await task.wait(timeout=30)

    with caplog.at_level(logging.ERROR, logger="beamlet"):
        run(main)
    [report] = [frames(r) for r in crash_records(caplog, "crashed:")]
    assert "in crasher" in report[0] and BEAMLET_DIR not in "".join(report)


def test_a_gen_server_crash_report_starts_at_the_callback(caplog):
    async def main():
        pid = await Parser.start()
        with pytest.raises(ServerExit):
            await call(pid, "x")
        with pytest.raises(StartError):
            await Parser.start(True)

    with caplog.at_level(logging.ERROR, logger="beamlet.otp"):
        run(main)
    in_call, in_init = (frames(r) for r in crash_records(caplog, "crash report"))
    assert "in handle_call" in in_call[0] and "in parse" in in_call[1]
    assert "in init" in in_init[0] and "in parse" in in_init[1]
    assert BEAMLET_DIR not in "".join(in_call + in_init)  # not gen_server.py's _loop


def test_the_exception_itself_keeps_its_whole_traceback():
    async def main():
        pid = beamlet.spawn_link(crasher)
        beamlet.process_flag("trap_exit", True)
        exit_ = await receive(beamlet.Exit(pid, ANY), timeout=30)
        return exit_.reason

    logging.disable(logging.CRITICAL)
    try:
        reason = run(main)
    finally:
        logging.disable(logging.NOTSET)
    assert isinstance(reason, ValueError)
    assert reason.__traceback__.tb_frame.f_code.co_filename.startswith(BEAMLET_DIR)
