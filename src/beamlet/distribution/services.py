"""The processes a node runs for its peers, and the calls that use them.

* ``net_kernel`` answers ``is_auth`` (``net_adm:ping`` from Erlang → ``pong``);
* ``rex`` answers ``rpc:call`` for functions exposed with :func:`expose`
  (nothing is exposed by default: Erlang gets ``{badrpc, ...}``) and the
  ``features_request`` a visible Erlang node sends;
* ``global_name_server`` tolerates what ``global`` sends a visible node (it
  takes no part in global name registration);
* an I/O sink is the group leader of our rpc calls on Erlang nodes (their
  ``io:format`` output is logged at debug level).

They cannot be silenced (docs/distribution.md, "Security"), as OTP's
``kernel_sup`` keeps its ``net_kernel`` and ``rex``:

* a request they cannot handle (a ``From`` that is not a pair, a module name
  that is a 5,000-digit integer...) is answered with an error or dropped with a
  bounded, rate-limited log line; it never kills the service;
* they trap exits (a linked peer dying with reason ``kill`` is a message), and
  the node refuses exit signals a peer sends them (node.py);
* a reply goes only to a caller on this node or on a node connected now: a
  request is never a reason to dial a third node;
* a keeper process monitors them and restarts (and registers again) any that
  dies anyway -- at once, or after a back-off growing to 5 s when one dies more
  than 10 times in 10 s: the node never gives up on its services.
"""

from __future__ import annotations

import collections
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import beamlet
from beamlet import ANY, Atom, Down, Pid, Ref
from beamlet.distribution.etf import ImproperList
from beamlet.distribution.limits import brief, brief_exception
from beamlet.otp import gen

logger = logging.getLogger("beamlet.distribution")

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


def _is_atom(value: Any) -> bool:
    return type(value) is Atom


def _reply(node: Any, from_: Any, value: Any) -> None:
    """gen.reply to a ``From`` a peer sent: only a ``{Pid, Tag}`` whose pid
    (and alias, if the tag is one) is on this node or a connected one."""
    if type(from_) is not tuple or len(from_) != 2 or type(from_[0]) is not Pid:
        raise ValueError("From is not a {Pid, Tag} pair")
    pid, tag = from_
    if not node.reachable(pid.node):
        raise ValueError(f"the caller's node {pid.node} is not connected")
    if type(tag) is tuple and len(tag) == 2 and type(tag[1]) is Ref:
        if not node.reachable(tag[1].node):
            raise ValueError("the caller's alias is on a node that is not connected")
    gen.reply(from_, value)


async def _serve(name: str, node: Any, handle: Callable[[Any, Any], None]) -> None:
    """A service loop: ``handle(node, msg)`` for each message; a message it
    cannot handle is dropped with a bounded, rate-limited log line."""
    beamlet.process_flag("trap_exit", True)
    while True:
        msg = await beamlet.receive()
        try:
            handle(node, msg)
        except Exception as e:
            node.log.log(
                logger,
                logging.WARNING,
                "service_request",
                "%s dropped a request it cannot answer (%s): %s",
                name,
                brief_exception(e, node.limits.log_chars),
                brief(msg, node.limits.log_chars),
            )


def _net_kernel_handle(node: Any, msg: Any) -> None:
    if _is_call(msg):
        req = msg[2]
        if type(req) is tuple and len(req) == 2 and req[0] == "is_auth":
            _reply(node, msg[1], Atom("yes"))
        else:
            _reply(node, msg[1], (Atom("error"), Atom("not_supported")))
    # anything else (trapped exits included) is dropped


async def _net_kernel(node: Any) -> None:
    await _serve("net_kernel", node, _net_kernel_handle)


def _rex_handle(node: Any, msg: Any) -> None:
    if _is_call(msg):
        req = msg[2]
        if type(req) is tuple and len(req) >= 4 and req[0] == "call":
            module, function, args = req[1], req[2], req[3]
            if not (_is_atom(module) and _is_atom(function) and isinstance(args, list)):
                _reply(node, msg[1], (Atom("badrpc"), Atom("badarg")))
                return
            _reply_check(node, msg[1])
            beamlet.spawn(_rpc_worker, node, msg[1], str(module), str(function), args)
        else:
            _reply(node, msg[1], (Atom("badrpc"), Atom("not_supported")))
    elif (
        type(msg) is tuple
        and len(msg) == 2
        and msg[1] == "features_request"
        and type(msg[0]) is Pid
        and node.reachable(msg[0].node)
    ):
        beamlet.send(msg[0], (Atom("features_reply"), beamlet.node(), []))


def _reply_check(node: Any, from_: Any) -> None:
    """Refuse a call whose reply could not be sent, before doing any work."""
    if type(from_) is not tuple or len(from_) != 2 or type(from_[0]) is not Pid:
        raise ValueError("From is not a {Pid, Tag} pair")
    if not node.reachable(from_[0].node):
        raise ValueError(f"the caller's node {from_[0].node} is not connected")


async def _rex(node: Any) -> None:
    await _serve("rex", node, _rex_handle)


def _reply_late(node: Any, from_: Any, value: Any) -> None:
    """A reply after the work: the caller's node may be gone by now."""
    try:
        _reply(node, from_, value)
    except ValueError:
        pass


async def _rpc_worker(node: Any, from_: Any, module: str, function: str, args: Any) -> None:
    with _exposed_lock:
        fn = _exposed.get((module, function))
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
        _reply_late(
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
        _reply_late(
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
    _reply_late(node, from_, result)


GO = Atom("$erpc_go")


async def erpc_execute(ref: Any, module: Any, function: Any, args: Any) -> None:
    """A process spawned by an erpc call from another node: runs the exposed
    function and exits with erpc's result reason, which reaches the caller in
    the DOWN of the monitor it spawned us with."""
    await beamlet.receive(GO)
    if not (_is_atom(module) and _is_atom(function) and isinstance(args, list)):
        raise beamlet.ProcessExit((ref, Atom("error"), Atom("badarg"), []))
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


def _global_handle(node: Any, msg: Any) -> None:
    if _is_call(msg):
        _reply(node, msg[1], Atom("ok"))


async def _global_name_server(node: Any) -> None:
    await _serve("global_name_server", node, _global_handle)


def _io_sink_handle(node: Any, msg: Any) -> None:
    if type(msg) is tuple and len(msg) == 4 and msg[0] == "io_request":
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("remote io: %s", brief(msg[3], node.limits.log_chars))
        if type(msg[1]) is Pid and node.reachable(msg[1].node):
            beamlet.send(msg[1], (Atom("io_reply"), msg[2], Atom("ok")))


async def _io_sink_loop(node: Any) -> None:
    await _serve("io sink", node, _io_sink_handle)


#: The services: registered name (None: unregistered) -> body.
_SERVICES: dict[str, Callable[[Any], Awaitable[None]]] = {
    "net_kernel": _net_kernel,
    "rex": _rex,
    "global_name_server": _global_name_server,
    "io_sink": _io_sink_loop,
}
_UNREGISTERED = frozenset({"io_sink"})
_keepers: dict[Any, Pid] = {}


def _start_service(node: Any, name: str) -> Pid:
    pid = beamlet.spawn(_SERVICES[name], node)
    if name in _UNREGISTERED:
        _io_sink[node.rt] = pid
    else:
        try:
            beamlet.register(name, pid)
        except Exception as e:  # the name is someone else's now: theirs to serve
            logger.error("node service %s not registered: %s", name, brief_exception(e))
    return pid


def start(node: Any) -> None:
    """Spawn and register the service processes and their keeper (called by
    start_node, in a process). A name someone already registered is left to
    its owner."""
    pids = {}
    for name in _SERVICES:
        if name in _UNREGISTERED or beamlet.whereis(name) is None:
            pids[name] = _start_service(node, name)
    keeper = beamlet.spawn(_keeper, node, pids)
    _keepers[node.rt] = keeper
    node.protected = frozenset([*pids.values(), keeper])


def stop(node: Any) -> None:
    """Stop the keeper, then the services (called by stop_node)."""
    keeper = _keepers.pop(node.rt, None)
    victims = [keeper] if keeper is not None else []
    victims += [p for p in node.protected if p != keeper]
    for pid in victims:
        try:
            beamlet.exit(pid, "kill")
        except Exception:  # outside a runtime: nothing to stop
            return
    _io_sink.pop(node.rt, None)


async def _keeper(node: Any, pids: dict[str, Pid]) -> None:
    """Monitor the services; restart (and register again) any that dies."""
    beamlet.process_flag("trap_exit", True)
    me = beamlet.self()
    watched = {beamlet.monitor(pid): name for name, pid in pids.items()}
    deaths: collections.deque[float] = collections.deque()
    backoff = 0.0
    while True:
        msg = await beamlet.receive()
        if type(msg) is not Down or msg.ref not in watched:
            continue  # a trapped exit, or anything else: not ours to act on
        name = watched.pop(msg.ref)
        now = time.monotonic()
        deaths.append(now)
        while deaths and deaths[0] < now - 10.0:
            deaths.popleft()
        if len(deaths) > 10:
            backoff = min(5.0, max(0.1, backoff * 2))
        else:
            backoff = 0.0
        node.log.log(
            logger,
            logging.ERROR,
            "service_down",
            "node service %s exited (%s); restarting it%s",
            name,
            brief(msg.reason, node.limits.log_chars),
            f" in {backoff:.1f} s" if backoff else "",
        )
        if backoff:
            await beamlet.sleep(backoff)
        pid = _start_service(node, name)
        pids[name] = pid
        node.protected = frozenset([*pids.values(), me])
        watched[beamlet.monitor(pid)] = name


# -- calls toward other nodes ----------------------------------------------------


async def connect(peer: str, timeout: float = 7.0) -> bool:
    """Connect to ``peer`` (``"name@host"``); True once connected."""
    from beamlet.distribution.node import current_node

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
    from beamlet.distribution.node import current_node

    node = current_node()
    leader = _io_sink.get(node.rt) or beamlet.self()
    return await gen.call(
        ("rex", peer), (Atom("call"), Atom(module), Atom(function), list(args), leader), timeout
    )


_ = (ANY, ImproperList)
