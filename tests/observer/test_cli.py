"""The ``beamlet`` command (beamlet.cli): argument parsing, ``beamlet run`` in
this process, and ``remsh`` / ``top`` / ``dashboard`` against a real node in
another OS process (a private EPMD; stdin piped, no terminal: test_tmux.py
drives them in one)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from pathlib import Path

import pytest

from beamlet import cli
from beamlet.distribution.epmd_server import EPMDServer

COOKIE = "observer-cli-cookie"

#: The node the end-to-end tests attach to: a runaway that never yields, idle
#: processes, and whatever ``--allow`` turns on.
TARGET_APP = textwrap.dedent(
    """
    import beamlet


    async def runaway():
        n = 0
        while True:
            n += 1


    async def idle():
        await beamlet.receive()


    async def main():
        beamlet.register("runaway", beamlet.spawn(runaway))
        for _ in range(3):
            beamlet.spawn(idle)
        await beamlet.receive()  # until the test kills the node
    """
)


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "beamlet.cli", *args]


class TargetNode:
    """``beamlet run target_app:main --node NAME --allow ...`` in its own OS process."""

    def __init__(self, workdir: Path, env: dict[str, str], allow: str | None) -> None:
        (workdir / "target_app.py").write_text(TARGET_APP)
        self.alive = f"t{uuid.uuid4().hex[:8]}"
        self.name = f"{self.alive}@127.0.0.1"
        argv = command("run", "target_app:main", "--node", self.alive, "--cookie", COOKIE)
        if allow:
            argv += ["--allow", allow]
        self.proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the node is up (or the process died)
        assert line.startswith(f"beamlet: node {self.name} running"), line + self.rest()

    def rest(self) -> str:
        self.stop()
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def dist_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An EPMD of our own (on a free port) for the nodes of one test, and the
    environment that points them at it."""
    epmd = EPMDServer("127.0.0.1", 0).start()
    env = dict(os.environ, ERL_EPMD_PORT=str(epmd.port), PYTHONUNBUFFERED="1")
    env.pop("BEAMLET_COOKIE", None)
    env.pop("ERLANG_COOKIE", None)
    try:
        yield env
    finally:
        epmd.stop()


@pytest.fixture
def start_target(tmp_path: Path, dist_env: dict[str, str]):
    started: list[TargetNode] = []

    def start(allow: str | None) -> TargetNode:
        node = TargetNode(tmp_path, dist_env, allow)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def run_cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), input=stdin, env=env, capture_output=True, text=True, timeout=60
    )


# -- parsing ---------------------------------------------------------------------------


def test_the_verbs_and_their_arguments_parse():
    p = cli.parser()
    top = p.parse_args(["top", "app", "--cookie", "c"])
    assert (top.command, top.node, top.cookie) == ("top", "app@127.0.0.1", "c")
    assert p.parse_args(["top"]).node is None
    remsh = p.parse_args(["remsh", "app@host.example"])
    assert (remsh.command, remsh.node, remsh.cookie) == ("remsh", "app@host.example", None)
    run = p.parse_args(["run", "pkg.mod:main", "--node", "a", "--allow", "observer, shell"])
    assert run.target == ("pkg.mod", "main")
    assert (run.node, run.allow) == ("a@127.0.0.1", ("observer", "shell"))
    dash = p.parse_args(["dashboard", "--port", "0"])
    assert (dash.node, dash.port, dash.host) == (None, 0, "127.0.0.1")
    assert p.parse_args(["dashboard"]).port == 4000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["remsh"], "the following arguments are required: NODE"),
        (["remsh", "a@b@c"], "a node name is name or name@host"),
        (["top", "app@"], "a node name is name or name@host"),
        (["run", "nomodule"], "expected MODULE:FUNC"),
        (["run", "m:f", "--node", "n", "--allow", "observer,root"], "--allow takes"),
        (["run", "m:f", "--allow", "observer"], "--allow needs --node"),
        (["dashboard", "--port", "70000"], "a port is 0 to 65535"),
        (["dashboard", "--port", "http"], "a port is a number"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_help_names_every_verb(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for verb in ("run", "top", "remsh", "dashboard"):
        assert verb in out


def test_the_cookie_is_the_option_then_beamlet_cookie_then_the_nodes_default(monkeypatch):
    ns = argparse.Namespace
    monkeypatch.setenv("BEAMLET_COOKIE", "from-env")
    assert cli.cookie_of(ns(cookie="given")) == "given"
    assert cli.cookie_of(ns(cookie=None)) == "from-env"
    monkeypatch.delenv("BEAMLET_COOKIE")
    assert cli.cookie_of(ns(cookie=None)) is None  # start_node: $ERLANG_COOKIE, ~/.erlang.cookie


# -- beamlet run -------------------------------------------------------------------------


def test_run_runs_the_main_and_its_int_result_is_the_status(tmp_path, monkeypatch, capsys):
    (tmp_path / "cli_run_app.py").write_text(
        "import beamlet\n\n"
        "async def main():\n"
        "    print('in a process:', isinstance(beamlet.self(), beamlet.Pid))\n"
        "    return 3\n\n"
        "async def text():\n"
        "    return 'done'\n\n"
        "def plain():\n"
        "    return beamlet.self() is not None and 5\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["run", "cli_run_app:main"]) == 3
    assert capsys.readouterr().out == "in a process: True\n"
    assert cli.main(["run", "cli_run_app:text", "--schedulers", "1"]) == 0
    assert capsys.readouterr().out == "'done'\n"
    assert cli.main(["run", "cli_run_app:plain"]) == 5  # a plain function runs in a process too
    assert cli.main(["run", "cli_run_app:nothing"]) == 1
    assert "cli_run_app has no nothing" in capsys.readouterr().err
    assert cli.main(["run", "no_such_module_here:main"]) == 1
    assert "cannot import no_such_module_here" in capsys.readouterr().err


# -- against a node --------------------------------------------------------------------


def test_remsh_evaluates_on_the_node(start_target, dist_env):
    node = start_target("observer,shell,code")
    stdin = "\n".join(
        [
            "import os",
            "os.getpid()",
            "print('printed', 6 * 7)",
            "beamlet.send(beamlet.self(), 'echo')",
            "await beamlet.receive(timeout=5)",
            "def triple(n):",
            "    return 3 * n",
            "",
            "triple(14)",
            "beamlet.whereis('runaway') is not None",
            "1 / 0",
            "sorted({module for module, _ in beamlet.rpc.exposed()})",
        ]
    )
    done = run_cli(dist_env, "remsh", node.alive, "--cookie", COOKIE, stdin=stdin + "\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"beamlet remote shell on {node.name}" in out
    assert f"(t{node.alive[1:]})>>> {node.proc.pid}\n" in out  # evaluated there
    assert "printed 42\n" in out
    assert out.count("'echo'\n") == 2  # sent, then received by the same evaluator
    assert "TimeoutError" not in out
    assert "42\n" in out and "True\n" in out
    assert "ZeroDivisionError: division by zero" in out
    assert "['beamlet_code', 'beamlet_observer', 'beamlet_shell']\n" in out  # --allow
    assert f"({node.alive})... " in out  # the multi-line def


def test_remsh_and_top_refuse_a_wrong_cookie_an_unknown_node_and_a_closed_node(
    start_target, dist_env
):
    node = start_target(None)  # allows nothing
    wrong = run_cli(dist_env, "remsh", node.name, "--cookie", "not-the-cookie")
    assert wrong.returncode == 1
    assert f"{node.name} refused the connection: the cookie is probably wrong" in wrong.stderr
    unknown = run_cli(dist_env, "remsh", "nobody", "--cookie", COOKIE)
    assert unknown.returncode == 1
    assert "no node named 'nobody' is registered with epmd on 127.0.0.1" in unknown.stderr
    assert node.alive in unknown.stderr  # what is registered
    closed = run_cli(dist_env, "remsh", node.name, "--cookie", COOKIE)
    assert closed.returncode == 1
    assert f"{node.name} does not allow remote shells" in closed.stderr
    assert "crashed" not in closed.stderr and "Traceback" not in closed.stderr
    top = run_cli(dist_env, "top", node.name, "--cookie", COOKIE)
    assert top.returncode == 1
    assert f"{node.name} does not expose the observer" in top.stderr
    taken = run_cli(
        dist_env, "run", "beamlet.cli:version", "--node", node.alive, "--cookie", COOKIE
    )
    assert taken.returncode == 1
    assert f"beamlet run: cannot start the node {node.name}: EPMD refused" in taken.stderr
    # Without NODE: nothing on this epmd exposes the observer; the nodes are listed.
    choose = run_cli(dist_env, "top", "--cookie", COOKIE)
    assert choose.returncode == cli.EXIT_CHOOSE
    assert "no node registered with epmd on 127.0.0.1 exposes the observer" in choose.stderr
    assert node.name in choose.stderr


def test_top_without_node_needs_exactly_one_observer(start_target, dist_env):
    first = start_target("observer")
    second = start_target("observer")
    choose = run_cli(dist_env, "dashboard", "--cookie", COOKIE, "--port", "0")
    assert choose.returncode == cli.EXIT_CHOOSE
    assert "several nodes expose the observer; give NODE" in choose.stderr
    assert first.name in choose.stderr and second.name in choose.stderr


def test_dashboard_serves_the_page_of_a_node_until_ctrl_c(start_target, dist_env):
    pytest.importorskip("wsproto")  # beamlet.http's
    node = start_target("observer")
    proc = subprocess.Popen(
        command("dashboard", node.alive, "--cookie", COOKIE, "--port", "0"),
        env=dist_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until it serves (or the command died)
        assert line.startswith(f"beamlet dashboard of {node.name} at http://127.0.0.1:"), (
            line + proc.communicate(timeout=10)[1]
        )
        url = line.split(" at ")[1].split()[0]
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(url, timeout=10) as page:
            assert page.status == 200
            assert "<title>beamlet dashboard</title>" in page.read().decode()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_shell_session_ends_with_its_client_node(start_target, dist_env):
    """The client's node goes away (kill -9 of the command) while its input
    runs: the session's monitor of the client fires (noconnection), and the
    session ends and kills its evaluator. Watched from a second shell."""
    node = start_target("shell")

    def remsh() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command("remsh", node.alive, "--cookie", COOKIE),
            env=dist_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def say(proc: subprocess.Popen[str], source: str, until: str) -> str:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(source + "\n")
        proc.stdin.flush()
        while True:
            line = proc.stdout.readline()
            assert line, proc.communicate(timeout=10)[1]
            if until in line:
                return line

    doomed, watcher = remsh(), remsh()
    try:
        say(doomed, "print('spinning')\nn = 0\nwhile True:\n    n += 1\n", "spinning")
        say(
            watcher,
            "from beamlet.observer import _shell\n"
            "mine = _shell._capture[beamlet.self()]\n"
            "[(ev, session)] = [(e, s) for e, s in _shell._capture.items() if s != mine]\n"
            "refs = [beamlet.monitor(ev), beamlet.monitor(session)]\n"
            "print('watching')",
            "watching",
        )
        doomed.kill()
        doomed.wait(10)
        line = say(
            watcher,
            "print([(await beamlet.receive(beamlet.Down(r, beamlet.ANY, beamlet.ANY),"
            " timeout=10)).reason for r in refs])",
            "[",
        )
        assert "[Atom('killed'), Atom('normal')]" in line
    finally:
        for proc in (doomed, watcher):
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
