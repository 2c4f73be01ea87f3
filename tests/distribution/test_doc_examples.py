"""The docs' node examples, run against real peers: the ``python node`` snippets of
docs/distribution.md and docs/interop.md run as programs of their own (the
names, cookies and ports they show; a private EPMD through ``$ERL_EPMD_PORT``,
the cookie through ``$ERLANG_COOKIE`` where the snippet has none), the
``elixir iex`` transcripts are replayed on a real Elixir node and must print
what they show. tests/test_docs.py checks that no other kind of snippet exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dist_helpers import ElixirNode, ErlNode, wait_until
from tests.test_docs import Snippet, expected_output, snippets

from beamlet.distribution.epmd_server import EPMDServer

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
COOKIE = "beamlet-doc-examples"


def doc_snippets(name: str) -> list[Snippet]:
    return [
        s for s in snippets() if s.path.name == name and s.info in ("python node", "elixir iex")
    ]


def test_every_node_example_of_the_docs_is_run_here():
    runs_here = {s.id for name in ("distribution.md", "interop.md") for s in doc_snippets(name)}
    everywhere = {s.id for s in snippets() if s.info in ("python node", "elixir iex")}
    assert runs_here == everywhere
    assert len(runs_here) == 5


@pytest.fixture
def python_program(
    tmp_path: Path, builtin_epmd: EPMDServer
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Run a doc example as a program of its own (killed at teardown)."""
    started: list[subprocess.Popen[str]] = []

    def start(code: str) -> subprocess.Popen[str]:
        script = tmp_path / f"example_{len(started)}.py"
        script.write_text(code)
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT / "src"),
            ERL_EPMD_PORT=str(builtin_epmd.port),
            ERLANG_COOKIE=COOKIE,
        )
        proc = subprocess.Popen(
            [sys.executable, str(script)], cwd=tmp_path, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_the_node_layer_example_pings_and_talks_to_an_erlang_node(
    builtin_epmd: EPMDServer,
    erl_nodes: Callable[..., ErlNode],
    python_program: Callable[..., subprocess.Popen[str]],
) -> None:
    [example] = doc_snippets("distribution.md")
    cookie = re.search(r'cookie="([^"]+)"', example.code).group(1)
    erl = erl_nodes(
        "25", "erl@127.0.0.1", cookie, builtin_epmd.port,
        "register(echo, self()), io:format(\"ready~n\"),"
        " receive {From, Msg} -> From ! Msg end, io:format(\"echoed~n\").",
    )  # fmt: skip
    erl.expect("ready", 60)
    proc = python_program(example.code)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == expected_output(example.code)
    erl.expect("echoed", 10)


def _replay(transcript: str) -> tuple[str, str, list[str]]:
    """(node name, an Elixir script that evaluates each ``iex>`` line and prints
    what iex would, the lines the transcript shows after the prompts)."""
    lines = transcript.strip().splitlines()
    name = re.fullmatch(r"\$ iex --name (\S+)", lines[0]).group(1)
    exprs = [
        re.sub(r"\bflush\(", "DocIEx.flush(", line.removeprefix("iex> "))
        for line in lines[1:]
        if line.startswith("iex> ")
    ]
    shown = [line for line in lines[1:] if not line.startswith("iex> ")]
    # IEx's flush/0 prints what is in the mailbox; a reader types slower than a
    # round trip, so this one waits for the first message.
    script = (
        "defmodule DocIEx do\n"
        "  def flush do\n"
        "    receive do\n      m -> IO.inspect(m)\n"
        '    after 10_000 -> IO.puts("(nothing to flush)")\n    end\n    :ok\n  end\nend\n'
        + "".join(f"IO.inspect({expr})\n" for expr in exprs)
        + 'IO.puts("--done--")\n'
    )
    return name, script, shown


def _printed(node: ElixirNode) -> list[str]:
    node.expect("--done--", 60)
    return [line for line in node.output if line != "--done--"]


def _same(lines: list[str]) -> list[str]:
    return [re.sub(r"#PID<\d+\.\d+\.\d+>", "#PID<...>", line) for line in lines]


@pytest.mark.skipif(__import__("shutil").which("elixir") is None, reason="elixir not installed")
def test_the_interop_guide_works_from_iex_as_written(
    builtin_epmd: EPMDServer,
    elixir_nodes: Callable[..., ElixirNode],
    python_program: Callable[..., subprocess.Popen[str]],
) -> None:
    program, greet, expose, rpc = doc_snippets("interop.md")
    assert program.info == expose.info == "python node" and greet.info == rpc.info == "elixir iex"
    # Step 5's lines go into step 2's program, before beamlet.run.
    head, run_line, tail = program.code.partition("beamlet.run(")
    proc = python_program(f"{head}{expose.code}\n\n{run_line}{tail}")
    wait_until(
        lambda: proc.poll() is not None or "py" in builtin_epmd.registered(),
        60, "the example's node to register with EPMD",
    )  # fmt: skip
    assert proc.poll() is None, proc.communicate()[1]
    for transcript in (greet, rpc):
        name, script, shown = _replay(transcript.code)
        node = elixir_nodes(name, COOKIE, builtin_epmd.port, script)
        assert _same(_printed(node)) == _same(shown), transcript.id
        node.stop()
