"""Helpers for the distribution tests (fixtures are re-exported by conftest.py): free ports, a real ``epmd``, real
``erl`` nodes (OTP 25 from PATH, OTP 28 via ../shared/tools/otp28.sh), all
bound to 127.0.0.1 on private ports and killed at teardown."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from beamlet.distribution.epmd_server import EPMDServer

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``pred`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False


def _otp28_erl() -> str | None:
    if os.environ.get("ERL28"):
        return os.environ["ERL28"]
    for script in (ROOT.parent / "shared/tools/otp28.sh", Path("/work/shared/tools/otp28.sh")):
        if script.exists():
            try:
                out = subprocess.run(
                    [str(script)], capture_output=True, text=True, timeout=300, check=True
                )
            except (subprocess.SubprocessError, OSError):
                return None
            return out.stdout.strip() or None
    return None


_ERLS: dict[str, str | None] = {}


def erl_path(version: str) -> str | None:
    if version not in _ERLS:
        _ERLS[version] = shutil.which("erl") if version == "25" else _otp28_erl()
    return _ERLS[version]


@pytest.fixture
def real_epmd() -> Iterator[int]:
    """A real ``epmd`` on a private port (foreground process, killed after)."""
    exe = shutil.which("epmd")
    if exe is None:
        pytest.skip("epmd not installed")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-port", str(port), "-address", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: proc.poll() is not None or _can_connect(port), 10, "epmd to listen")
        if proc.poll() is not None:
            pytest.fail("epmd exited at start")
        yield port
    finally:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def python_node(script: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run ``python script *args`` (beamlet from this tree's src/), wait for the
    "ready" line it prints once its node is up, kill it at the end."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.fixture
def builtin_epmd() -> Iterator[EPMDServer]:
    server = EPMDServer("127.0.0.1", 0).start()
    try:
        yield server
    finally:
        server.stop()


class ErlNode:
    """A real ``erl`` node running ``-eval`` code; its stdout lines are
    collected so a test can wait for what the node prints."""

    def __init__(
        self,
        erl: str,
        name: str,
        cookie: str,
        epmd_port: int,
        code: str,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._start(name, epmd_port, [
            erl, "-noshell", "-noinput", "-start_epmd", "false",
            "-name", name, "-setcookie", cookie,
            "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
            "-kernel", "net_setuptime", "5",
            *extra_args,
            "-eval", code,
        ])  # fmt: skip

    def _start(self, name: str, epmd_port: int, argv: list[str]) -> None:
        env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port), ERL_CRASH_DUMP_BYTES="0")
        for var in ("ERL_FLAGS", "ERL_AFLAGS", "ERL_ZFLAGS", "ELIXIR_ERL_OPTIONS"):
            env.pop(var, None)
        self.name = name
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 15) -> str:
        """Wait for a line of output starting with ``prefix``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.name}: no line starting with {prefix!r} within {timeout}s; "
                    f"output so far: {self.output!r}"
                )
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.output.append(line)
            if line.startswith(prefix):
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class ElixirNode(ErlNode):
    """A real Elixir node (``elixir`` on PATH) running the script ``code``."""

    def __init__(self, name: str, cookie: str, epmd_port: int, code: str, workdir: Path) -> None:
        script = workdir / f"{name.split('@')[0]}.exs"
        script.write_text(code)
        self._start(name, epmd_port, [
            "elixir", "--name", name, "--cookie", cookie,
            "--erl", "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
            " -kernel net_setuptime 5",
            str(script),
        ])  # fmt: skip


@pytest.fixture
def elixir_nodes(tmp_path: Path) -> Iterator[Callable[..., ElixirNode]]:
    """Start real Elixir nodes: ``start(name, cookie, epmd_port, code)``."""
    if shutil.which("elixir") is None:
        pytest.skip("elixir not installed")
    started: list[ElixirNode] = []

    def start(name: str, cookie: str, epmd_port: int, code: str) -> ElixirNode:
        node = ElixirNode(name, cookie, epmd_port, code, tmp_path)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def erl_nodes() -> Iterator[Callable[..., ErlNode]]:
    """Start real erl nodes: ``start(version, name, cookie, epmd_port, code,
    extra_args=())``."""
    started: list[ErlNode] = []

    def start(
        version: str,
        name: str,
        cookie: str,
        epmd_port: int,
        code: str,
        extra_args: tuple[str, ...] = (),
    ) -> ErlNode:
        erl = erl_path(version)
        if erl is None:
            pytest.skip(f"no OTP {version} erl available")
        node = ErlNode(erl, name, cookie, epmd_port, code, extra_args)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()
