"""The processes a node runs for its peers, and the calls that reach other nodes.

Every node runs, registered:

* ``net_kernel``, which answers ``is_auth`` (``net_adm:ping`` from Erlang →
  ``pong``);
* ``global_name_server``, which tolerates what ``global`` sends a visible node
  (it takes no part in global name registration);
* the services other modules add with :func:`add_service` -- ``rex`` and an
  I/O sink (:mod:`beamlet.rpc`).

They are OTP-level processes: they live here, above the distribution layer,
and plug into it (``beamlet.distribution.node.add_services``) when this module
is imported; ``start_node`` imports it. They cannot be silenced
(docs/distribution.md, "Security"), as OTP's ``kernel_sup`` keeps its
``net_kernel`` and ``rex``:

* a request they cannot handle (a ``From`` that is not a pair, a module name
  that is a 5,000-digit integer...) is answered with an error or dropped with a
  bounded, rate-limited log line; it never kills the service;
* they trap exits (a linked peer dying with reason ``kill`` is a message), and
  the node refuses exit signals a peer sends them (``Node.protected``);
* a reply goes only to a caller on this node or on a node connected now: a
  request is never a reason to dial a third node;
* a keeper process monitors them and restarts (and registers again) any that
  dies anyway -- at once, or after a back-off growing to 5 s when one dies more
  than 10 times in 10 s: the node never gives up on its services.

Calls toward other nodes: :func:`connect`, :func:`ping`, :func:`gen_call`
(also ``beamlet.connect``, ``beamlet.ping``, ``beamlet.distribution.gen_call``).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import beamlet
from beamlet import Atom, Down, Pid, Ref
from beamlet.distribution.limits import brief, brief_exception
from beamlet.distribution.node import add_services, current_node
from beamlet.otp import gen

logger = logging.getLogger("beamlet.distribution")

#: A service's body: ``body(node)``, run in a process.
Service = Callable[[Any], Awaitable[None]]


# -- helpers for services --------------------------------------------------------


def is_call(msg: Any) -> bool:
    """A ``$gen_call`` message: ``("$gen_call", From, Request)``."""
    return type(msg) is tuple and len(msg) == 3 and msg[0] == "$gen_call"


def check_caller(node: Any, from_: Any) -> None:
    """Raise ValueError unless ``from_`` is a ``{Pid, Tag}`` pair whose pid is
    on this node or a connected one (refuse a call before doing any work)."""
    if type(from_) is not tuple or len(from_) != 2 or type(from_[0]) is not Pid:
        raise ValueError("From is not a {Pid, Tag} pair")
    if not node.reachable(from_[0].node):
        raise ValueError(f"the caller's node {from_[0].node} is not connected")


def reply(node: Any, from_: Any, value: Any) -> None:
    """gen.reply to a ``From`` a peer sent: only a ``{Pid, Tag}`` whose pid
    (and alias, if the tag is one) is on this node or a connected one."""
    check_caller(node, from_)
    tag = from_[1]
    if type(tag) is tuple and len(tag) == 2 and type(tag[1]) is Ref:
        if not node.reachable(tag[1].node):
            raise ValueError("the caller's alias is on a node that is not connected")
    gen.reply(from_, value)


def reply_late(node: Any, from_: Any, value: Any) -> None:
    """A reply after the work: the caller's node may be gone by now."""
    try:
        reply(node, from_, value)
    except ValueError:
        pass


async def serve(name: str, node: Any, handle: Callable[[Any, Any], None]) -> None:
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


# -- net_kernel and global_name_server --------------------------------------------


def _net_kernel_handle(node: Any, msg: Any) -> None:
    if is_call(msg):
        req = msg[2]
        if type(req) is tuple and len(req) == 2 and req[0] == "is_auth":
            reply(node, msg[1], Atom("yes"))
        else:
            reply(node, msg[1], (Atom("error"), Atom("not_supported")))
    # anything else (trapped exits included) is dropped


async def _net_kernel(node: Any) -> None:
    await serve("net_kernel", node, _net_kernel_handle)


def _global_handle(node: Any, msg: Any) -> None:
    if is_call(msg):
        reply(node, msg[1], Atom("ok"))


async def _global_name_server(node: Any) -> None:
    await serve("global_name_server", node, _global_handle)


# -- the services, their keeper, and the distribution hook -------------------------

#: The services: name -> body. A registered service runs under its name.
_SERVICES: dict[str, Service] = {
    "net_kernel": _net_kernel,
    "global_name_server": _global_name_server,
}
_unregistered: set[str] = set()
#: Per runtime: the keeper, and the pid of each service it keeps.
_keepers: dict[Any, Pid] = {}
_pids: dict[Any, dict[str, Pid]] = {}


def add_service(name: str, body: Service, *, registered: bool = True) -> None:
    """Run ``body(node)`` as a service of every node started from now on
    (registered as ``name`` unless ``registered`` is False), kept by the keeper."""
    _SERVICES[name] = body
    if registered:
        _unregistered.discard(name)
    else:
        _unregistered.add(name)


def service_pid(node: Any, name: str) -> Pid | None:
    """The pid of the service ``name`` of ``node`` (None if not running)."""
    return _pids.get(node.rt, {}).get(name)


def _start_service(node: Any, name: str, pids: dict[str, Pid]) -> Pid:
    pid = beamlet.spawn(_SERVICES[name], node)
    pids[name] = pid
    if name not in _unregistered:
        try:
            beamlet.register(name, pid)
        except Exception as e:  # the name is someone else's now: theirs to serve
            logger.error("node service %s not registered: %s", name, brief_exception(e))
    return pid


def start(node: Any) -> None:
    """Spawn and register the service processes and their keeper (called by
    start_node, in a process). A name someone already registered is left to
    its owner."""
    pids: dict[str, Pid] = {}
    _pids[node.rt] = pids
    for name in list(_SERVICES):
        if name in _unregistered or beamlet.whereis(name) is None:
            _start_service(node, name, pids)
    keeper = beamlet.spawn(_keeper, node, pids)
    _keepers[node.rt] = keeper
    node.protected = frozenset([*pids.values(), keeper])


def stop(node: Any) -> None:
    """Stop the keeper, then the services (called by stop_node)."""
    keeper = _keepers.pop(node.rt, None)
    _pids.pop(node.rt, None)
    victims = [keeper] if keeper is not None else []
    victims += [p for p in node.protected if p != keeper]
    for pid in victims:
        try:
            beamlet.exit(pid, "kill")
        except Exception:  # outside a runtime: nothing to stop
            return


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
        pid = _start_service(node, name, pids)
        node.protected = frozenset([*pids.values(), me])
        watched[beamlet.monitor(pid)] = name


add_services("beamlet.net_kernel", start, stop)


# -- calls toward other nodes ----------------------------------------------------


async def connect(peer: str, timeout: float = 7.0) -> bool:
    """Connect to ``peer`` (``"name@host"``); True once connected."""
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


__all__ = ["add_service", "connect", "gen_call", "ping", "service_pid"]
