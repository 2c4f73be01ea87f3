"""The processes a node runs for its peers, and the calls that use them.

* ``net_kernel`` answers ``is_auth`` (``net_adm:ping`` from Erlang → ``pong``);
* ``rex`` answers ``rpc:call`` for functions exposed with :func:`expose`
  (nothing is exposed by default: Erlang gets ``{badrpc, ...}``) and the
  ``features_request`` a visible Erlang node sends;
* ``global_name_server`` tolerates what ``global`` sends a visible node (it
  takes no part in global name registration);
* an I/O sink is the group leader of our rpc calls on Erlang nodes (their
  ``io:format`` output is logged at debug level).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import beamlet
from beamlet import ANY, Atom, Pid
from beamlet.dist.etf import ImproperList
from beamlet.otp import gen

logger = logging.getLogger("beamlet.dist")

_exposed: dict[tuple[str, str], Callable[..., Any]] = {}
_exposed_lock = threading.Lock()
_io_sink: dict[Any, Pid] = {}


def expose(module: str, function: str, fn: Callable[..., Any]) -> None:
    """Let other nodes call ``fn`` as ``rpc:call(Node, module, function, Args)``.
    ``fn`` may be a plain or an async function; it runs in a fresh process."""
    with _exposed_lock:
        _exposed[(module, function)] = fn


def unexpose(module: str, function: str) -> None:
    with _exposed_lock:
        _exposed.pop((module, function), None)


def exposed() -> list[tuple[str, str]]:
    with _exposed_lock:
        return sorted(_exposed)


def _is_call(msg: Any) -> bool:
    return type(msg) is tuple and len(msg) == 3 and msg[0] == "$gen_call"


async def _net_kernel() -> None:
    while True:
        msg = await beamlet.receive()
        if _is_call(msg):
            req = msg[2]
            if type(req) is tuple and len(req) == 2 and req[0] == "is_auth":
                gen.reply(msg[1], Atom("yes"))
            else:
                gen.reply(msg[1], (Atom("error"), Atom("not_supported")))


async def _rex() -> None:
    while True:
        msg = await beamlet.receive()
        if _is_call(msg):
            req = msg[2]
            if type(req) is tuple and len(req) >= 4 and req[0] == "call":
                beamlet.spawn(_rpc_worker, msg[1], str(req[1]), str(req[2]), req[3])
            else:
                gen.reply(msg[1], (Atom("badrpc"), Atom("not_supported")))
        elif (
            type(msg) is tuple
            and len(msg) == 2
            and msg[1] == "features_request"
            and type(msg[0]) is Pid
        ):
            beamlet.send(msg[0], (Atom("features_reply"), beamlet.node(), []))


async def _rpc_worker(from_: Any, module: str, function: str, args: Any) -> None:
    with _exposed_lock:
        fn = _exposed.get((module, function))
    if fn is None:
        logger.warning("refused rpc:call %s:%s from %r: not exposed", module, function, from_[0])
        gen.reply(
            from_,
            (
                Atom("badrpc"),
                (Atom("EXIT"), (Atom("undef"), [(Atom(module), Atom(function), args, [])])),
            ),
        )
        return
    try:
        result = fn(*(args if isinstance(args, list) else [args]))
        if inspect.isawaitable(result):
            result = await result
    except Exception as e:
        gen.reply(
            from_,
            (
                Atom("badrpc"),
                (
                    Atom("EXIT"),
                    (Atom("python_exception"), type(e).__name__, str(e)),
                ),
            ),
        )
        return
    gen.reply(from_, result)


GO = Atom("$erpc_go")


async def erpc_execute(ref: Any, module: Any, function: Any, args: Any) -> None:
    """A process spawned by an erpc call from another node: runs the exposed
    function and exits with erpc's result reason, which reaches the caller in
    the DOWN of the monitor it spawned us with."""
    await beamlet.receive(GO)
    with _exposed_lock:
        fn = _exposed.get((str(module), str(function)))
    if fn is None:
        logger.warning("refused an erpc call of %s:%s: not exposed", module, function)
        raise beamlet.ProcessExit(
            (ref, Atom("error"), Atom("undef"), [(module, function, args, [])])
        )
    try:
        result = fn(*(args if isinstance(args, list) else [args]))
        if inspect.isawaitable(result):
            result = await result
    except Exception as e:
        reason = (Atom("python_exception"), type(e).__name__, str(e))
        raise beamlet.ProcessExit((ref, Atom("error"), reason, [])) from None
    raise beamlet.ProcessExit((ref, Atom("return"), result))


async def _global_name_server() -> None:
    while True:
        msg = await beamlet.receive()
        if _is_call(msg):
            gen.reply(msg[1], Atom("ok"))


async def _io_sink_loop() -> None:
    while True:
        msg = await beamlet.receive()
        if type(msg) is tuple and len(msg) == 4 and msg[0] == "io_request":
            logger.debug("remote io: %r", msg[3])
            beamlet.send(msg[1], (Atom("io_reply"), msg[2], Atom("ok")))


def start(node: Any) -> None:
    """Spawn and register the service processes (called by start_node)."""
    for name, body in (
        ("net_kernel", _net_kernel),
        ("rex", _rex),
        ("global_name_server", _global_name_server),
    ):
        if beamlet.whereis(name) is None:
            beamlet.register(name, beamlet.spawn(body))
    _io_sink[node.rt] = beamlet.spawn(_io_sink_loop)


# -- calls toward other nodes ----------------------------------------------------


async def connect(peer: str, timeout: float = 7.0) -> bool:
    """Connect to ``peer`` (``"name@host"``); True once connected."""
    from beamlet.dist.node import current_node

    node = current_node()
    conn = node.connection(Atom(peer))
    return bool(await beamlet.blocking(conn.wait_settled, timeout))


async def ping(peer: str, timeout: float = 7.0) -> str:
    """``"pong"`` if ``peer`` answers (as net_adm:ping), else ``"pang"``."""
    if not await connect(peer, timeout):
        return "pang"
    try:
        answer = await gen.call(("net_kernel", peer), (Atom("is_auth"), beamlet.node()), timeout)
    except Exception:
        return "pang"
    return "pong" if answer == "yes" else "pang"


async def gen_call(dest: Any, request: Any, timeout: float | None = 5.0) -> Any:
    """An Erlang-compatible ``gen_server:call`` (to a pid or ``(name, node)``)."""
    return await gen.call(dest, request, timeout)


async def rpc_call(
    peer: str,
    module: str,
    function: str,
    args: list[Any] | tuple[Any, ...],
    timeout: float | None = 5.0,
) -> Any:
    """``rpc:call(peer, module, function, args)`` on an Erlang node (through its rex).
    Returns what Erlang returns, including ``(badrpc, reason)`` tuples."""
    from beamlet.dist.node import current_node

    node = current_node()
    leader = _io_sink.get(node.rt) or beamlet.self()
    return await gen.call(
        ("rex", peer), (Atom("call"), Atom(module), Atom(function), list(args), leader), timeout
    )


_ = (ANY, ImproperList, time)
