"""A beamlet node in an Elixir cluster: an Elixir node (Elixir 1.14 from Debian, on
the system's OTP) pings it, calls its GenServer with GenServer.call, exchanges
maps/bignums/pids with it, and monitors one of its processes; the beamlet node
pings back and calls an Elixir GenServer. Skipped without ``elixir``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dist_helpers import ElixirNode

import beamlet
from beamlet import ANY, Atom, ProcessExit, receive, send, spawn
from beamlet.distribution import ping
from beamlet.distribution.epmd_server import EPMDServer
from beamlet.otp import GenServer, call

pytestmark = pytest.mark.interop

COOKIE = "beamlet-elixir-cookie"

SCRIPT = """
defmodule Echo do
  use GenServer
  def init(x), do: {:ok, x}
  def handle_call(msg, _from, s), do: {:reply, {:echo, msg}, s}
end
{:ok, _} = GenServer.start_link(Echo, nil, name: :execho)
py = :"PYNODE"
IO.puts("ping #{Node.ping(py)}")
IO.puts("got #{inspect(GenServer.call({:kv, py}, {:get, :answer}))}")
term = %{name: "beamlet", tags: [:a, :b], big: 12345678901234567890, f: 1.5, me: {:ok, self()}}
send({:echoer, py}, {self(), term})
receive do
  ^term -> IO.puts("echo same")
  other -> IO.puts("echo different #{inspect(other)}")
after 10_000 -> IO.puts("echo none")
end
pid = GenServer.call({:kv, py}, :doomed)
ref = Process.monitor(pid)
send(pid, :die)
receive do
  {:DOWN, ^ref, :process, _, reason} -> IO.puts("down #{inspect(reason)}")
after 10_000 -> IO.puts("down none")
end
receive do :stop -> :ok end
"""


async def doomed():
    await receive(Atom("die"))
    raise ProcessExit(Atom("boom"))


async def echoer():
    beamlet.register("echoer", beamlet.self())
    sender, term = await receive((ANY, ANY))
    send(sender, term)


class KV(GenServer):
    async def handle_call(self, request, from_):
        if request == (Atom("get"), Atom("answer")):
            return 42
        if request == Atom("doomed"):
            return spawn(doomed)
        return Atom("unknown")


def test_an_elixir_node_and_a_beamlet_node_work_together(
    builtin_epmd: EPMDServer, elixir_nodes: Callable[..., ElixirNode]
) -> None:
    async def main():
        me = str(beamlet.node())
        await KV.start_link(name="kv")
        spawn(echoer)
        ex = elixir_nodes("ex@127.0.0.1", COOKIE, builtin_epmd.port, SCRIPT.replace("PYNODE", me))
        lines = [
            await beamlet.blocking(ex.expect, p, 60) for p in ("ping ", "got ", "echo ", "down ")
        ]
        ours = await ping(ex.name)
        reply = await call(("execho", ex.name), "hi")
        return lines, ours, reply

    lines, ours, reply = beamlet.run(
        main, node="py@127.0.0.1", cookie=COOKIE, epmd_port=builtin_epmd.port
    )
    assert lines == ["ping pong", "got 42", "echo same", "down :boom"]
    assert ours == "pong"
    assert reply == (Atom("echo"), "hi")  # an Elixir string (UTF-8 binary) arrives as str
