"""Remote procedure calls between beamlet and Erlang nodes.

``expose(module, function, fn)`` lets Erlang call ``fn`` with
``rpc:call(PyNode, module, function, Args)`` or ``erpc:call``; nothing else can
be called (an Erlang cookie means "may run any code"; a beamlet node is safer
by default). ``await call(node, module, function, args)`` calls a function on
an Erlang node.

The node services behind it (:mod:`beamlet.net_kernel` keeps them):

* ``rex`` answers ``rpc:call`` for exposed functions (nothing is exposed by
  default: Erlang gets ``{badrpc, ...}``) and the ``features_request`` a
  visible Erlang node sends;
* erpc's ``execute_call`` (a peer's spawn request) runs exposed functions too;
* an I/O sink is the group leader of our rpc calls on Erlang nodes (their
  ``io:format`` output is logged at debug level).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

import beamlet
from beamlet import Atom, Pid
from beamlet.distribution.limits import brief
from beamlet.distribution.node import SPAWN_GO, allow_spawn, current_node
from beamlet.net_kernel import add_service, check_caller, is_call, reply, reply_late, serve
from beamlet.net_kernel import service_pid as _service_pid
from beamlet.otp import gen

logger = logging.getLogger("beamlet.distribution")

_exposed: dict[tuple[str, str], Callable[..., Any]] = {}
_exposed_lock = threading.Lock()


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


def _lookup(module: str, function: str) -> Callable[..., Any] | None:
    with _exposed_lock:
        return _exposed.get((module, function))


def _is_atom(value: Any) -> bool:
    return type(value) is Atom


# -- rex ---------------------------------------------------------------------------


def _rex_handle(node: Any, msg: Any) -> None:
    if is_call(msg):
        req = msg[2]
        if type(req) is tuple and len(req) >= 4 and req[0] == "call":
            module, function, args = req[1], req[2], req[3]
            if not (_is_atom(module) and _is_atom(function) and isinstance(args, list)):
                reply(node, msg[1], (Atom("badrpc"), Atom("badarg")))
                return
            check_caller(node, msg[1])
            beamlet.spawn(_rpc_worker, node, msg[1], str(module), str(function), args)
        else:
            reply(node, msg[1], (Atom("badrpc"), Atom("not_supported")))
    elif (
        type(msg) is tuple
        and len(msg) == 2
        and msg[1] == "features_request"
        and type(msg[0]) is Pid
        and node.reachable(msg[0].node)
    ):
        beamlet.send(msg[0], (Atom("features_reply"), beamlet.node(), []))


async def _rex(node: Any) -> None:
    await serve("rex", node, _rex_handle)


async def _rpc_worker(node: Any, from_: Any, module: str, function: str, args: Any) -> None:
    fn = _lookup(module, function)
    if fn is None:
        node.log.log(
            logger,
            logging.WARNING,
            "rpc_refused",
            "refused rpc:call %s:%s from %r: not exposed",
            module,
            function,
            from_[0],
        )
        reply_late(
            node,
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
        reply_late(
            node,
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
    reply_late(node, from_, result)


# -- erpc ----------------------------------------------------------------------------


async def _erpc_execute(ref: Any, module: Any, function: Any, args: Any) -> None:
    """A process spawned by an erpc call from another node: runs the exposed
    function and exits with erpc's result reason, which reaches the caller in
    the DOWN of the monitor it spawned us with."""
    await beamlet.receive(SPAWN_GO)
    if not (_is_atom(module) and _is_atom(function) and isinstance(args, list)):
        raise beamlet.ProcessExit((ref, Atom("error"), Atom("badarg"), []))
    fn = _lookup(str(module), str(function))
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


# -- the I/O sink ----------------------------------------------------------------------


def _io_sink_handle(node: Any, msg: Any) -> None:
    if type(msg) is tuple and len(msg) == 4 and msg[0] == "io_request":
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("remote io: %s", brief(msg[3], node.limits.log_chars))
        if type(msg[1]) is Pid and node.reachable(msg[1].node):
            beamlet.send(msg[1], (Atom("io_reply"), msg[2], Atom("ok")))


async def _io_sink(node: Any) -> None:
    await serve("io sink", node, _io_sink_handle)


add_service("rex", _rex)
add_service("io_sink", _io_sink, registered=False)
allow_spawn("erpc", "execute_call", 4, _erpc_execute)


# -- calls toward other nodes ------------------------------------------------------


async def call(
    peer: str,
    module: str,
    function: str,
    args: list[Any] | tuple[Any, ...],
    timeout: float | None = 5.0,
) -> Any:
    """``rpc:call(peer, module, function, args)`` on an Erlang node (through its rex).
    Returns what Erlang returns, including ``(badrpc, reason)`` tuples."""
    leader = _service_pid(current_node(), "io_sink") or beamlet.self()
    return await gen.call(
        ("rex", peer), (Atom("call"), Atom(module), Atom(function), list(args), leader), timeout
    )


def is_badrpc(reply: Any) -> bool:
    """Whether ``reply`` (from :func:`call`) is a ``(badrpc, reason)`` failure."""
    return type(reply) is tuple and len(reply) == 2 and reply[0] == "badrpc"


def describe_badrpc(node: str, reply: Any, not_exposed: str) -> str:
    """A sentence for a failed :func:`call` to ``node``: ``not_exposed`` when
    the function is not exposed there (Erlang's ``undef``), the Python
    exception it raised, or the reason as it came."""
    reason = reply[1] if is_badrpc(reply) else reply
    if type(reason) is tuple and len(reason) == 2 and reason[0] == "EXIT":
        inner = reason[1]
        if type(inner) is tuple and inner and inner[0] == "undef":
            return f"{node} {not_exposed}"
        if type(inner) is tuple and len(inner) == 3 and inner[0] == "python_exception":
            return f"{node}: {inner[1]}: {inner[2]}"
    return f"{node}: {reason!r}"


__all__ = ["call", "describe_badrpc", "expose", "exposed", "is_badrpc", "unexpose"]
