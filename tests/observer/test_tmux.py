"""``beamlet top`` and ``beamlet remsh`` in a real terminal: tmux runs them
against a node in another OS process (send-keys, capture-pane). The pane is
polled against a deadline: that is waiting on the state of external programs.
Skipped when tmux is not installed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.observer import test_cli
from tests.observer.test_cli import COOKIE, TargetNode, command, run_cli

# test_cli's fixtures: a private EPMD, target nodes in their own OS processes
dist_env = test_cli.dist_env
start_target = test_cli.start_target

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Pane:
    """One tmux session (on a private tmux server) running ``argv``; the
    pane stays after the command ends and shows ``[exit N]``."""

    def __init__(self, socket: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.socket = socket
        self.name = f"p{uuid.uuid4().hex[:6]}"
        wanted = {k: env[k] for k in ("ERL_EPMD_PORT", "PYTHONPATH", "PATH", "HOME") if k in env}
        script = (
            "env -u COLUMNS -u LINES "  # (set under pytest): the size is the pane's
            + " ".join(f"{k}={shlex.quote(v)}" for k, v in wanted.items())
            + " "
            + shlex.join(argv)
            + '; echo "[exit $?]"; sleep 120'
        )
        self.tmux(
            "new-session", "-d", "-s", self.name, "-x", "200", "-y", "50", "-c", str(cwd), script
        )

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", self.name, "-l", line)
        self.keys("Enter")

    def wait(self, what: str | Callable[[str], bool], timeout: float = 20.0) -> str:
        """Poll the screen until it shows ``what`` (a text, or a test of the screen)."""
        test = what if callable(what) else (lambda screen: what in screen)
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if test(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"the pane never showed {what!r}; it shows:\n{screen}")
            time.sleep(0.05)


@pytest.fixture
def panes(dist_env) -> Iterator[Callable[..., Pane]]:
    socket = f"beamlet-test-{uuid.uuid4().hex[:8]}"
    made: list[Pane] = []

    def start(argv: list[str], cwd: Path) -> Pane:
        pane = Pane(socket, argv, dist_env, cwd)
        made.append(pane)
        return pane

    yield start
    if made:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10)


def _rows(screen: str) -> list[str]:
    """The process table's rows (the lines below its header)."""
    lines = screen.splitlines()
    for i, line in enumerate(lines):
        if "PID" in line and "NAME / INITIAL CALL" in line:
            rows = []
            for row in lines[i + 1 :]:
                if not re.match(r"\s*<0\.\d+\.\d+>", row):
                    break
                rows.append(row)
            return rows
    return []


def test_top_finds_the_runaway_shows_its_stack_and_kills_it(
    start_target, panes, dist_env, tmp_path
):
    pytest.importorskip("textual")
    node = start_target("observer,shell")
    pane = panes(command("top", node.alive, "--cookie", COOKIE), tmp_path)
    screen = pane.wait(lambda s: bool(_rows(s)) and "runaway" in _rows(s)[0])
    assert f"beamlet top {node.name}" in screen
    assert "schedulers" in screen and "run queue" in screen and "memory" in screen
    runaway_pid = _rows(screen)[0].split()[0]
    # arrows select: away from the runaway and back; its info and stack show
    pane.keys("Down")
    pane.wait(lambda s: f"{runaway_pid} (runaway)" not in s)
    pane.keys("Up")
    screen = pane.wait(f"{runaway_pid} (runaway)")
    assert "stack (innermost last):" in screen
    assert re.search(r"runaway\s+\S*target_app\.py:\d+", screen), screen
    pane.keys("m")  # sort by memory: the header marks the column
    pane.wait("sorted by memory ▼")
    pane.keys("c")
    pane.wait("sorted by cpu ▼")
    pane.keys("k")
    pane.wait(f"killed {runaway_pid}")
    pane.wait(lambda s: bool(_rows(s)) and not any("runaway" in r for r in _rows(s)))
    # the node agrees (asked through another connection)
    check = run_cli(
        dist_env,
        "remsh",
        node.alive,
        "--cookie",
        COOKIE,
        stdin="print('runaway:', beamlet.whereis('runaway'))\n",
    )
    assert check.returncode == 0, check.stderr
    assert "runaway: None\n" in check.stdout
    pane.keys("q")
    screen = pane.wait("[exit 0]")
    assert "Traceback" not in screen and "crashed" not in screen, screen
    assert node.proc.poll() is None  # the node runs on


def test_remsh_in_a_terminal(start_target, panes, tmp_path):
    node = start_target("observer,shell")
    prompt = f"({node.alive})>>> "
    pane = panes(command("remsh", node.alive, "--cookie", COOKIE), tmp_path)
    pane.wait(prompt.rstrip())  # (capture-pane drops trailing blanks)
    pane.type("6 * 7")
    pane.wait(f"{prompt}6 * 7\n42\n")
    pane.type("print('hello from', beamlet.node())")
    pane.wait(f"hello from {node.name}\n")
    pane.type("await beamlet.sleep(0.01) or 'awaited'")
    pane.wait("'awaited'\n")
    pane.type("def double(x):")
    pane.wait(f"({node.alive})...")
    pane.type("    return 2 * x")
    pane.type("")
    pane.type("double(21)")
    pane.wait(f"{prompt}double(21)\n42\n")
    # Ctrl-C interrupts the evaluation (it is running: it printed), not the shell
    pane.type("n = 0")
    pane.type("while True:")
    pane.type("    n += 1")
    pane.type("    if n == 1: print('looping')")
    pane.type("")
    pane.wait("looping\n")
    pane.keys("C-c")
    pane.wait("KeyboardInterrupt\n")
    pane.type("n > 0, beamlet.whereis('runaway') is not None")
    pane.wait("(True, True)\n")
    pane.keys("C-d")
    screen = pane.wait("[exit 0]")
    assert "crashed" not in screen, screen
    assert node.proc.poll() is None


def test_remsh_with_a_wrong_cookie_is_refused_in_a_terminal(start_target, panes, tmp_path):
    node = start_target("shell")
    pane = panes(command("remsh", node.alive, "--cookie", "wrong"), tmp_path)
    screen = pane.wait("[exit 1]")
    assert "refused the connection: the cookie is probably wrong" in screen
    assert isinstance(node, TargetNode) and node.proc.poll() is None
