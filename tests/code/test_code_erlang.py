"""An Erlang node loads Python code into a beamlet node with
``rpc:call(Node, beamlet_code, load, [Name, Source])`` (CODE-8)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from test_code_loading import GREETER  # the same server, loaded from an erl shell

import beamlet
from beamlet import code
from beamlet.distribution.epmd_server import EPMDServer

pytestmark = pytest.mark.interop


def test_an_erlang_node_loads_code_with_rpc_call_an_atom_and_a_binary(
    mod: Any, builtin_epmd: EPMDServer, erl_nodes: Callable[..., Any]
) -> None:
    mod.write(GREETER)
    m = mod.import_()
    fixed = mod.source(GREETER).replace('"v1"', "'v2'").replace('"', "'")
    assert '"' not in fixed and "\\" not in fixed
    source = fixed.replace("\n", "\\n")  # an Erlang string literal: <<"...">>
    me = f"codepy{os.getpid()}@127.0.0.1"

    async def main() -> tuple[str, str, str]:
        await m.Greeter.start_link(name="greeter")
        erl_code = (
            f"R0 = rpc:call('{me}', beamlet_code, load, [{mod.name}, <<\"{source}\">>]),"
            ' io:format("refused ~p~n", [element(1, R0)]),'
            f" {{ready, '{me}'}} ! {{self(), go}}, receive go -> ok end,"
            f" R = rpc:call('{me}', beamlet_code, load, [{mod.name}, <<\"{source}\">>]),"
            ' io:format("load ~p~n", [R]),'
            f" io:format(\"call ~p~n\", [gen_server:call({{greeter, '{me}'}}, hi)]),"
            " receive stop -> ok end."
        )
        beamlet.register("ready", beamlet.self())
        erl = erl_nodes("25", f"codeerl{os.getpid()}@127.0.0.1", "code-cookie",
                        builtin_epmd.port, erl_code)  # fmt: skip
        refused = await beamlet.blocking(erl.expect, "refused ", 30)
        erl_pid, _ = await beamlet.receive((beamlet.ANY, "go"), timeout=30)
        code.expose()
        try:
            beamlet.send(erl_pid, beamlet.Atom("go"))
            loaded = await beamlet.blocking(erl.expect, "load ", 30)
            called = await beamlet.blocking(erl.expect, "call ", 30)
        finally:
            code.unexpose()
        return refused, loaded, called

    refused, loaded, called = beamlet.run(
        main, node=me, cookie="code-cookie", epmd_port=builtin_epmd.port
    )
    assert refused == "refused badrpc"  # not exposed yet
    assert loaded == f"load {{module,{mod.name}}}"
    assert called == 'call {<<"v2">>,hi,1}'  # the running server's next message: new code
