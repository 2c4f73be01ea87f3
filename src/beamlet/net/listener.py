"""Listeners: a supervised pool of acceptors serving a TCP port (Ranch's design).

``await start_listener(name, port, Handler)`` serves ``port``: every connection
gets its own process, which runs the callbacks of a :class:`Handler` subclass.

Theory of operation
-------------------
A listener is a small supervision tree, registered under its name::

    listener supervisor (rest_for_one)
    ├── connections      counts the connections and supervises them (each a
    │                    GenServer running the handler; temporary)
    ├── listen_socket    owns the listening socket (a socket closes with its owner)
    └── acceptors        a one_for_one supervisor of ``num_acceptors`` acceptors,
                         each looping on ``accept`` of the one listening socket

The order is the restart order of ``rest_for_one``: an acceptor that dies is
restarted alone; if the listening socket's owner dies, the acceptors (which
hold the closed socket) are restarted after it, on a new socket bound to the
same port (the port the first bind got, when it was 0), and the connections
carry on; if the connections supervisor dies, everything restarts.

**Connection limit (Ranch's max_connections).** An acceptor may only accept
while it holds a *slot* from the connections supervisor, which grants at most
``max_connections`` minus the number of running connections. When the limit is
reached the acceptors wait for a slot instead of accepting: new peers stay in
the kernel's backlog (their connect completes, nothing reads them) until a
connection ends. The limit is exact: no more than ``max_connections``
connection processes ever run. A slot held by an acceptor that dies is given
back (the connections supervisor monitors the holders).

**A connection's start.** The acceptor accepts (it owns the new socket), asks
the connections supervisor to start a connection process (a call, whose reply
also hands the acceptor its next slot when there is room), makes the new
process the socket's owner (``controlling_process``) and sends it the socket.
The connection process monitors the acceptor until the socket comes, so
an acceptor killed in between leaves no process waiting forever, and no socket
without an owner (a socket closes with its owner).

**In the connection process**, a GenServer: with ``tls``, the TLS handshake
comes first, bounded by ``handshake_timeout`` (acceptors accept with
``handshake=False``, so a peer that never finishes its handshake holds its own
process and slot for that long, never an acceptor: Ranch's ``handshake``); a failed one
ends the process quietly. Then ``handle_connection(sock)`` runs, with the
socket still passive (it may ``net.recv`` a greeting, say); then the socket is
put in ``active=N`` mode (``Handler.active_n``, re-armed on each
``TcpPassive``), so at most N reads wait in the mailbox and a fast peer is
slowed down by TCP instead of flooding the process. ``Tcp`` messages go to
``handle_data``, ``TcpError`` to ``handle_error``, ``TcpClosed`` to
``handle_close`` (then the process ends normally), calls and casts to
``handle_call``/``handle_cast``, anything else to ``handle_info``. Any callback
may return :data:`CLOSE`: the socket is closed and the process ends normally
(as it does, once the messages already queued are handled, when a callback
closes the socket itself). A callback that raises crashes its connection only
(a crash report is logged, as for any GenServer); the connections supervisor
never restarts it.

**Accept errors** do not crash the acceptor: an aborted connection is skipped;
after a resource error (``EMFILE``: out of descriptors) the acceptor keeps its
slot and tries again ``ACCEPT_RETRY`` seconds later, so a listener out of
descriptors slows down instead of crash-looping. The connections supervisor
logs such errors for the whole listener: once, then at most once every
``ACCEPT_ERROR_LOG_INTERVAL`` seconds with a count, and the recovery. If the
listening socket is found closed (someone called ``net.close`` on it), the
acceptor stops its owner, so that the tree opens a new one.

**Stopping**: :func:`stop_listener` stops the tree as a supervisor stops
(reverse start order): the acceptors, then the listening socket (connects are
refused from then on), then every connection (sent ``"shutdown"``, killed after
``CONNECTION_SHUTDOWN`` seconds if it traps exits and lingers). It returns once
all are gone.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import inspect
import logging
import ssl
import time
from typing import Any, ClassVar, cast

import beamlet
from beamlet import ANY, Atom, BadArg, Down, Exit, Pid, Ref
from beamlet._kernel.copying import copy_message, register_immutable
from beamlet.net import _socket
from beamlet.net._socket import Socket, Tcp, TcpClosed, TcpError, TcpPassive
from beamlet.otp import gen
from beamlet.otp.errors import CallError, ServerExit, StartError
from beamlet.otp.gen_server import GenServer, NoReply, Stop, stop
from beamlet.otp.supervisor import ChildSpec, Restart, Supervisor, which_children

logger = logging.getLogger("beamlet.net")

#: Seconds an acceptor waits before accepting again after a resource error (EMFILE...).
ACCEPT_RETRY = 0.1
#: A listener logs a run of accept errors at most once per this many seconds.
ACCEPT_ERROR_LOG_INTERVAL = 10.0
#: Seconds a connection that traps exits gets to stop when its listener stops.
CONNECTION_SHUTDOWN = 5.0

# accept(2) errors that concern one connection, not the listener: try the next
# one at once (Linux's accept(2) says to treat the network ones like EAGAIN).
_SKIP_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED", "ECONNRESET", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT",
        "EHOSTDOWN", "ENONET", "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "EINTR",
    )
    if hasattr(errno, name)
)  # fmt: skip

# Protocol atoms (requests to the listener's processes, and the socket's hand-over).
_ACQUIRE = Atom("$net_acquire")
_START = Atom("$net_start")
_INFO = Atom("$net_info")
_PORT = Atom("$net_port")
_SOCKET = Atom("$net_socket")
_CLOSED = Atom("$net_closed")
_ACCEPT_FAILED = Atom("$net_accept_failed")
_ACCEPT_OK = Atom("$net_accept_ok")


@register_immutable
class _Close:
    __slots__ = ()

    def __repr__(self) -> str:
        return "CLOSE"

    def __reduce__(self) -> str:
        return "CLOSE"  # one of a kind, even through copy and pickle

    def __deepcopy__(self, memo: Any) -> _Close:
        return self


#: Returned by any :class:`Handler` callback: close the socket and end the
#: connection process normally.
CLOSE = _Close()


# ---------------------------------------------------------------- the handler


class Handler:
    """The base of a listener's connection handlers: subclass it and override
    the callbacks you need. One instance per connection, built in the
    connection process with ``handler(*handler_args)`` (a copy of them, as a
    message would be); ``self.socket`` is set just after.

    Every callback is async and runs in the connection process (a GenServer:
    other processes may ``call``/``cast``/``send`` to it). Each may return
    :data:`CLOSE` to close the socket and end the connection normally, or a
    ``Stop(reason)`` to end it with ``reason``; ``handle_call`` returns its
    reply (or ``NoReply``), as a GenServer's does. An exception crashes this
    connection only.
    """

    #: The socket of this connection (set before ``handle_connection``).
    socket: Socket
    #: The socket runs in ``active=N`` mode with this N, re-armed on each
    #: ``TcpPassive``: at most this many reads wait in the mailbox.
    active_n: ClassVar[int] = 10

    async def handle_connection(self, sock: Socket) -> Any:
        """Called once, first. The socket is still passive here (``await
        net.recv(sock, n)`` works); it becomes active when this returns."""
        return None

    async def handle_data(self, data: bytes) -> Any:
        """Bytes came from the peer (one read, up to 64 KiB: not a message
        boundary). Default: discard them."""
        return None

    async def handle_close(self) -> Any:
        """The peer closed the connection (the socket is closed); the process
        ends normally after this (or with the reason of a returned ``Stop``)."""
        return None

    async def handle_error(self, reason: str) -> Any:
        """The socket failed (``reason``: ``"econnreset"``, ...);
        ``handle_close`` follows. Default: nothing."""
        return None

    async def handle_info(self, msg: Any) -> Any:
        """Any other message. Default: log it, as a GenServer does."""
        logger.warning(
            "%s %r received an unexpected message: %r", type(self).__qualname__, beamlet.self(), msg
        )
        return None

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        """A ``call(connection_pid, request)``; returns the reply (GenServer's rules)."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected call: {request!r}")

    async def handle_cast(self, request: Any) -> Any:
        """A ``cast(connection_pid, request)``."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected cast: {request!r}")

    async def terminate(self, reason: Any) -> None:
        """The connection process is stopping (as GenServer's ``terminate``)."""
        return None

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` to the peer (``net.send(self.socket, data)``)."""
        await _socket.send(self.socket, data)


# ---------------------------------------------------------------- configuration


@register_immutable
@dataclasses.dataclass(frozen=True)
class _Config:
    """A listener's settings. Shared, never copied (it may hold an SSLContext,
    which cannot be): it is only read."""

    name: str
    port: int
    handler: type[Handler]
    handler_args: tuple[Any, ...]
    num_acceptors: int
    max_connections: int | None
    host: str
    tls: ssl.SSLContext | None
    backlog: int
    handshake_timeout: float | None

    def __deepcopy__(self, memo: Any) -> _Config:
        return self


def _config(
    name: str,
    port: int,
    handler: type[Handler],
    handler_args: tuple[Any, ...] | list[Any],
    num_acceptors: int,
    max_connections: int | None,
    host: str,
    tls: ssl.SSLContext | None,
    backlog: int,
    handshake_timeout: float | None,
) -> _Config:
    if not isinstance(name, str):
        raise TypeError(f"a listener's name is a str (it is registered), got {name!r}")
    if not (isinstance(handler, type) and issubclass(handler, Handler)):
        raise TypeError(f"handler must be a subclass of beamlet.net.Handler, got {handler!r}")
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535, got {port!r}")
    if type(num_acceptors) is not int or num_acceptors < 1:
        raise ValueError(f"num_acceptors must be an int >= 1, got {num_acceptors!r}")
    if max_connections is not None and (type(max_connections) is not int or max_connections < 1):
        raise ValueError(f"max_connections must be an int >= 1 or None, got {max_connections!r}")
    if tls is not None and not isinstance(tls, ssl.SSLContext):
        raise TypeError(f"tls must be an ssl.SSLContext, got {tls!r}")
    if handshake_timeout is not None and not (
        isinstance(handshake_timeout, int | float) and handshake_timeout > 0
    ):
        raise ValueError(
            f"handshake_timeout must be seconds > 0 or None, got {handshake_timeout!r}"
        )
    if type(handler.active_n) is not int or handler.active_n < 1:
        raise ValueError(f"{handler.__qualname__}.active_n must be an int >= 1")
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        pass  # not introspectable: a mismatch shows when a connection starts
    else:
        try:
            signature.bind(*handler_args)
        except TypeError as e:
            raise TypeError(
                f"{handler.__qualname__}(*handler_args) fails for {tuple(handler_args)!r}: {e}"
            ) from None
    return _Config(
        name,
        port,
        handler,
        tuple(handler_args),
        num_acceptors,
        max_connections,
        host,
        tls,
        backlog,
        handshake_timeout,
    )


# ---------------------------------------------------------------- API


async def start_listener(
    name: str,
    port: int,
    handler: type[Handler],
    handler_args: tuple[Any, ...] | list[Any] = (),
    num_acceptors: int = 10,
    max_connections: int | None = 16384,
    host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
    backlog: int = 1024,
    handshake_timeout: float | None = 5.0,
) -> Pid:
    """Start a listener serving ``host:port`` with ``handler``, linked to the
    caller and registered as ``name``; returns its supervisor's pid once the
    port is bound and the acceptors run.

    ``port=0`` picks a free port (:func:`listener_port`). ``handler_args``:
    each connection's handler is ``handler(*handler_args)``.
    ``num_acceptors`` processes accept concurrently; at most
    ``max_connections`` connections run at once (None: no limit), the next
    peers wait in the backlog. ``tls``: a server-side ``ssl.SSLContext``;
    each connection process does its handshake, which must be over within
    ``handshake_timeout`` seconds (or the connection is closed, unreported to
    the handler).

    Raises ``OSError`` if the port cannot be bound (``EADDRINUSE``...),
    ``StartError(("already_started", pid))`` if ``name`` is taken.
    """
    cfg = _config(
        name,
        port,
        handler,
        handler_args,
        num_acceptors,
        max_connections,
        host,
        tls,
        backlog,
        handshake_timeout,
    )
    try:
        return await _ListenerSup.start_link(cfg)
    except StartError as e:
        reason = e.reason
        if (
            type(reason) is tuple
            and len(reason) == 3
            and reason[:2] == ("failed_to_start_child", "listen_socket")
            and isinstance(reason[2], OSError)
        ):
            raise reason[2] from None
        raise


def listener_spec(
    name: str,
    port: int,
    handler: type[Handler],
    handler_args: tuple[Any, ...] | list[Any] = (),
    num_acceptors: int = 10,
    max_connections: int | None = 16384,
    host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
    backlog: int = 1024,
    handshake_timeout: float | None = 5.0,
    restart: Restart = "permanent",
) -> ChildSpec:
    """A child spec (``beamlet.otp.ChildSpec``) to run the listener
    :func:`start_listener` would start under your own supervisor; its id is
    ``("listener", name)``. Stop it with ``terminate_child`` of that supervisor.
    (With ``port=0``, a listener restarted by your supervisor may get another
    port: ask :func:`listener_port`.)"""
    cfg = _config(
        name,
        port,
        handler,
        handler_args,
        num_acceptors,
        max_connections,
        host,
        tls,
        backlog,
        handshake_timeout,
    )
    return ChildSpec(
        id=("listener", name),
        start=(_ListenerSup.start_link, (cfg,)),
        restart=restart,
        shutdown="infinity",
        type="supervisor",
    )


async def stop_listener(name: str, timeout: float | None = None) -> None:
    """Stop the listener ``name`` and wait until it is gone: its listening
    socket is closed (connects are refused) and so is every connection.
    Raises ``KeyError`` if no listener runs under that name. (A listener
    under your own supervisor: ``terminate_child`` it there, or it is restarted.)"""
    pid = beamlet.whereis(name)
    if pid is None:
        raise KeyError(name)
    try:
        await stop(pid, "normal", timeout=timeout)
    except ServerExit as e:
        if e.reason == "noproc":
            raise KeyError(name) from None
        raise


async def listener_port(name: str) -> int:
    """The port the listener ``name`` is bound to (the one picked for
    ``port=0``). Raises ``KeyError`` if no listener runs under that name."""
    port: int = await _call_listener(name, (_PORT,))
    return port


async def listener_info(name: str) -> dict[str, Any]:
    """A snapshot of the listener ``name``: ``supervisor`` (pid), ``host``,
    ``port``, ``socket`` (the listening socket), ``acceptors`` (pids),
    ``connections`` (how many run now), ``connection_pids``,
    ``max_connections``, ``accepting`` (acceptors holding a slot: free to
    accept) and ``waiting`` (acceptors waiting for a slot: the listener is at
    its limit). Raises ``KeyError`` if no listener runs under that name."""
    info: dict[str, Any] = await _call_listener(name, (_INFO,))
    return info


async def _call_listener(name: str, request: Any) -> Any:
    try:
        return await gen.call(name, request, timeout=None)
    except ServerExit as e:
        if e.reason == "noproc":
            raise KeyError(name) from None
        raise


# ---------------------------------------------------------------- the tree


class _ListenerSup(Supervisor):
    """The listener's supervisor: ``rest_for_one`` over the connections
    supervisor, the listening socket's owner and the acceptors' supervisor.
    Its children's start functions run in this process, so it remembers what
    a later child needs of an earlier one (the socket, the pids, the port)."""

    @classmethod
    async def start_link(cls, cfg: _Config) -> Pid:  # type: ignore[override]
        return await super(Supervisor, cls).start_link(cfg, name=cfg.name)

    async def init(self, cfg: _Config) -> Any:  # type: ignore[override]
        self.cfg = cfg
        self.port = cfg.port
        self.socket: Socket | None = None
        self.socket_owner: Pid | None = None
        self.connections: Pid | None = None
        self.acceptors: Pid | None = None
        children = [
            ChildSpec(
                id="connections",
                start=(self._start_connections, ()),
                shutdown="infinity",
                type="supervisor",
            ),
            ChildSpec(id="listen_socket", start=(self._start_socket, ()), shutdown="brutal_kill"),
            ChildSpec(
                id="acceptors",
                start=(self._start_acceptors, ()),
                shutdown="infinity",
                type="supervisor",
            ),
        ]
        return await super().init(children, "rest_for_one", 3, 5.0)

    async def _start_connections(self) -> Pid:
        self.connections = await _Connections.start_link(self.cfg)
        return self.connections

    async def _start_socket(self) -> Pid:
        pid = await _ListenSocket.start_link(self.cfg, self.port)
        self.socket, self.port = await gen.call(pid, (_INFO,), timeout=None)
        self.socket_owner = pid
        return pid

    async def _start_acceptors(self) -> Pid:
        assert self.socket is not None and self.socket_owner is not None
        assert self.connections is not None
        args = (self.socket, self.socket_owner, self.connections, self.cfg.name)
        n = self.cfg.num_acceptors
        self.acceptors = await Supervisor.start_link(
            [
                ChildSpec(id=("acceptor", i), start=(_spawn_acceptor, args), shutdown="brutal_kill")
                for i in range(n)
            ],
            strategy="one_for_one",
            intensity=n,
            period=5.0,
        )
        return self.acceptors

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        if request == (_PORT,):
            return self.port
        if request == (_INFO,):
            info: dict[str, Any] = {
                "supervisor": beamlet.self(),
                "host": self.cfg.host,
                "port": self.port,
                "socket": self.socket,
            }
            # A child being restarted may be gone for a moment: an answer
            # without its part, never a crash of the listener.
            try:
                if self.connections is not None:
                    info.update(await gen.call(self.connections, (_INFO,), timeout=None))
            except CallError:
                pass
            try:
                children = [] if self.acceptors is None else await which_children(self.acceptors)
            except CallError:
                children = []
            info["acceptors"] = [pid for _, pid, _ in children if type(pid) is Pid]
            return info
        return await super().handle_call(request, from_)


class _ListenSocket(GenServer):
    """Owns the listening socket: it lives as long as this process does."""

    async def init(self, cfg: _Config, port: int) -> Any:
        try:
            # Acceptors accept with handshake=False: a TLS handshake is the
            # connection process's (within handshake_timeout), never an
            # acceptor's, so silent peers cannot hold the acceptors up.
            self.socket = _socket.listen(port, cfg.host, cfg.backlog, tls=cfg.tls)
        except OSError as e:
            return Stop(e)  # start_listener raises it
        return None

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        if request == (_INFO,):
            return self.socket, _socket.sockname(self.socket)[1]
        return await super().handle_call(request, from_)


class _Connections(GenServer):
    """The connections' supervisor and the listener's counter (Ranch's
    conns_sup). Starts every connection process (linked; it traps exits),
    forgets it when it exits (never restarted: a connection's peer is gone
    with it), and grants acceptors the slots that keep the count at most
    ``max_connections``.

    Requests: ``(_ACQUIRE,)`` (reply ``"ok"`` once the calling acceptor holds
    a slot; delayed while the listener is full), ``(_START,)`` (start a
    connection on the caller's slot; reply ``("ok", pid, slot_again)``),
    ``(_INFO,)``; and ``which_children``/``count_children``, as a
    DynamicSupervisor answers them."""

    async def init(self, cfg: _Config) -> None:
        beamlet.process_flag("trap_exit", True)
        self.cfg = cfg
        self.connection_class = _connection_class(cfg.handler)
        self.max_connections = cfg.max_connections
        self.connections: set[Pid] = set()
        #: Acceptors holding a slot -> the monitor that gives it back if they die.
        self.slots: dict[Pid, Ref] = {}
        #: Acceptors waiting for a slot (their calls, answered in turn).
        self.waiting: collections.deque[gen.From] = collections.deque()
        # Accept errors, logged for the whole listener (_accept_failed).
        self.failing: set[Pid] = set()
        self.failures = 0  # since the last line logged
        self.logged_at: float | None = None
        self.reported = False

    def _room(self) -> bool:
        limit = self.max_connections
        return limit is None or len(self.connections) + len(self.slots) < limit

    def _grant(self, acceptor: Pid) -> None:
        if acceptor not in self.slots:
            self.slots[acceptor] = beamlet.monitor(acceptor)

    def _grant_waiting(self) -> None:
        while self.waiting and self._room():
            from_ = self.waiting.popleft()
            self._grant(from_[0])  # a dead one: its Down gives the slot back
            gen.reply(from_, "ok")

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        acceptor = from_[0]
        if request == (_START,):
            try:
                pid = await self.connection_class.start_link(acceptor, self.cfg)
            except StartError as e:
                return ("error", e.reason)  # the acceptor keeps its slot
            ref = self.slots.pop(acceptor, None)
            if ref is not None:
                beamlet.demonitor(ref, flush=True)
            self.connections.add(pid)
            again = not self.waiting and self._room()
            if again:
                self._grant(acceptor)
            return ("ok", pid, again)
        if request == (_ACQUIRE,):
            if acceptor in self.slots:
                return "ok"
            if not self.waiting and self._room():
                self._grant(acceptor)
                return "ok"
            self.waiting.append(from_)
            return NoReply
        if request == (_INFO,):
            return {
                "connections": len(self.connections),
                "max_connections": self.max_connections,
                "connection_pids": sorted(self.connections),
                "accepting": len(self.slots),
                "waiting": len(self.waiting),
            }
        # A supervisor to whoever walks the tree (which_children, count_children).
        if request == ("which_children",):
            return [(None, pid, "worker") for pid in sorted(self.connections)]
        if request == ("count_children",):
            n = len(self.connections)
            return {"specs": n, "active": n, "supervisors": 0, "workers": n}
        return ("error", ("unknown_request", request))

    async def handle_cast(self, request: Any) -> Any:
        if type(request) is tuple and request and request[0] == _ACCEPT_FAILED:
            self._accept_failed(request[1], request[2])
            return None
        if type(request) is tuple and request and request[0] == _ACCEPT_OK:
            self._accept_ok(request[1])
            return None
        return await super().handle_cast(request)

    def _accept_failed(self, acceptor: Pid, error: str) -> None:
        """An acceptor's accept failed (EMFILE...): logged for the listener
        once, then at most once per ``ACCEPT_ERROR_LOG_INTERVAL`` seconds
        with the count, however many acceptors fail and however often."""
        self.failing.add(acceptor)
        self.failures += 1
        now = time.monotonic()
        if self.logged_at is None or now - self.logged_at >= ACCEPT_ERROR_LOG_INTERVAL:
            logger.error(
                "listener %r: accept failed (%d time%s since the last report): %s; "
                "its acceptors retry every %s s",
                self.cfg.name,
                self.failures,
                "" if self.failures == 1 else "s",
                error,
                ACCEPT_RETRY,
            )
            self.failures = 0
            self.logged_at = now
            self.reported = True

    def _accept_ok(self, acceptor: Pid) -> None:
        """An acceptor that failed accepts again: once all do, the recovery
        of a reported run of errors is logged."""
        self.failing.discard(acceptor)
        if not self.failing and self.reported:
            logger.warning(
                "listener %r accepts again (%d more failure%s since the last report)",
                self.cfg.name,
                self.failures,
                "" if self.failures == 1 else "s",
            )
            self.reported = False
            self.failures = 0

    async def handle_info(self, msg: Any) -> Any:
        if type(msg) is Exit:
            if msg.pid in self.connections:
                self.connections.discard(msg.pid)
                self._grant_waiting()
            return None  # (an exit of a connection that failed to start: ignored)
        if type(msg) is Down:
            if self.slots.get(msg.pid) == msg.ref:
                del self.slots[msg.pid]
                self._grant_waiting()
                self.failing.discard(msg.pid)
            return None
        return await super().handle_info(msg)

    async def terminate(self, reason: Any) -> None:
        """Stop every connection: ``"shutdown"``, then ``"kill"`` for those
        still there after ``CONNECTION_SHUTDOWN`` seconds (those that trap
        exits); return once all have exited."""
        pending = set(self.connections)
        for pid in pending:
            beamlet.exit(pid, "shutdown")
        deadline: float | None = time.monotonic() + CONNECTION_SHUTDOWN
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                msg = await beamlet.receive(Exit, timeout=timeout)
            except TimeoutError:
                for pid in pending:
                    beamlet.exit(pid, "kill")
                deadline = None
                continue
            pending.discard(msg.pid)
        self.connections.clear()


def _connection_class(handler: type[Handler]) -> type[_Connection]:
    """A _Connection subclass named after ``handler``, so that crash reports
    and logs name the user's handler."""
    return cast(
        "type[_Connection]",
        type(
            handler.__name__,
            (_Connection,),
            {"__qualname__": handler.__qualname__, "__module__": handler.__module__},
        ),
    )


# ---------------------------------------------------------------- the acceptors


async def _spawn_acceptor(listen: Socket, socket_owner: Pid, connections: Pid, name: str) -> Pid:
    return beamlet.spawn_link(_acceptor, listen, socket_owner, connections, name)


async def _wait_to_be_stopped() -> None:
    """Wait for the exit signal that is on its way (a rest_for_one restart)."""
    await beamlet.receive(beamlet.make_ref())  # a fresh Ref: nothing ever matches


async def _acceptor(listen: Socket, socket_owner: Pid, connections: Pid, name: str) -> None:
    """Accept on ``listen`` for ever: take a slot, accept, start a connection
    process and hand it the socket."""
    failing = False  # in a run of accept errors (the connections supervisor logs them)
    slot = False
    while True:
        try:
            if not slot:
                await gen.call(connections, (_ACQUIRE,), timeout=None)
                slot = True
            try:
                sock = await _socket.accept(listen, handshake=False)
            except OSError as e:
                if e.errno == errno.EBADF:
                    # The listening socket is closed: its owner died (our
                    # supervisor restarts us with the new one), or someone
                    # closed it, and then its owner must go so that a new
                    # socket is opened.
                    beamlet.exit(socket_owner, "listen_socket_closed")
                    await _wait_to_be_stopped()
                if e.errno in _SKIP_ERRNOS or isinstance(e, ConnectionError):
                    continue
                failing = True
                gen.cast(connections, (_ACCEPT_FAILED, beamlet.self(), str(e)))
                await beamlet.sleep(ACCEPT_RETRY)
                continue
            if failing:
                failing = False
                gen.cast(connections, (_ACCEPT_OK, beamlet.self()))
            answer = await gen.call(connections, (_START,), timeout=None)
        except ServerExit:
            # The connections supervisor is gone: rest_for_one restarts us after it.
            await _wait_to_be_stopped()
            continue
        if answer[0] != "ok":
            _socket.close(sock)
            logger.error("listener %r: a connection failed to start: %r", name, answer[1])
            continue
        _, pid, slot = answer
        try:
            _socket.controlling_process(sock, pid)
        except (BadArg, OSError):
            _socket.close(sock)  # the connection is gone already
            continue
        beamlet.send(pid, (_SOCKET, sock))


# ---------------------------------------------------------------- a connection


class _Connection(GenServer):
    """The connection process: a GenServer that waits for its socket, then
    runs the handler's callbacks (see the module documentation)."""

    start_timeout = None  # its init cannot block; a loaded system is no reason to drop a peer

    async def init(self, acceptor: Pid, cfg: _Config) -> None:
        self.cfg = cfg
        self.socket: Socket | None = None
        self.handler: Handler | None = None
        self.closing = False
        # Until the socket comes: if the acceptor dies first, it never will.
        self.acceptor: Ref | None = beamlet.monitor(acceptor)

    async def _take(self, sock: Socket | None) -> Any:
        """Start serving: wait for the socket (unless it came), make the
        handler, run ``handle_connection``, go active. A Stop, or None."""
        if sock is None:
            assert self.acceptor is not None
            msg = await beamlet.receive((_SOCKET, ANY), Down(self.acceptor, ANY, ANY))
            if type(msg) is Down:
                return Stop("normal")  # the acceptor died before handing the socket over
            sock = msg[1]
        assert sock is not None and self.acceptor is not None
        beamlet.demonitor(self.acceptor, flush=True)
        self.acceptor = None
        self.socket = sock
        cfg = self.cfg
        if cfg.tls is not None:
            try:
                await _socket.handshake(sock, cfg.handshake_timeout)
            except OSError as e:  # ssl.SSLError, TimeoutError, a reset: the peer's problem
                logger.debug("listener %r: a TLS handshake failed: %r", cfg.name, e)
                _socket.close(sock)
                return Stop("normal")
        handler = self.handler = cfg.handler(*copy_message(cfg.handler_args))
        handler.socket = sock
        stop = self._after(await handler.handle_connection(sock))
        if stop is None:
            self._activate()
        return stop

    def _activate(self) -> None:
        """(Re-)arm the socket for ``active_n`` more messages."""
        sock = self.socket
        assert sock is not None and self.handler is not None
        if sock.closed:
            return
        try:
            _socket.setopts(sock, active=self.handler.active_n)
        except OSError:
            self._after(None)  # closed by another process meanwhile: end

    def _after(self, result: Any) -> Any:
        """What a callback's result means to the server loop."""
        sock = self.socket
        assert sock is not None
        if result is CLOSE:
            _socket.close(sock)
            return Stop("normal")
        if isinstance(result, Stop):
            return result
        if sock.closed and not self.closing:
            # Closed by the handler (or another process): no TcpClosed will
            # come for that, so this process would wait for ever. A marker
            # sent now comes after any TcpClosed already queued (the peer's
            # close, which handle_close must see first).
            self.closing = True
            beamlet.send(beamlet.self(), (_CLOSED, sock))
        return None

    async def handle_info(self, msg: Any) -> Any:
        handler = self.handler
        if handler is None:
            if type(msg) is tuple and len(msg) == 2 and msg[0] == _SOCKET:
                return await self._take(msg[1])
            if type(msg) is Down and msg.ref == self.acceptor:
                return Stop("normal")
            stop = await self._take(None)
            if stop is not None:
                return stop
            handler = self.handler
            assert handler is not None
        sock = self.socket
        kind = type(msg)
        if kind is Tcp and msg.socket is sock:
            return self._after(await handler.handle_data(msg.data))
        if kind is TcpPassive and msg.socket is sock:
            self._activate()
            return None
        if kind is TcpClosed and msg.socket is sock:
            result = await handler.handle_close()
            return result if isinstance(result, Stop) else Stop("normal")
        if kind is TcpError and msg.socket is sock:
            return self._after(await handler.handle_error(msg.reason))
        if kind is tuple and len(msg) == 2 and msg[0] == _CLOSED and msg[1] is sock:
            return Stop("normal")
        return self._after(await handler.handle_info(msg))

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        if self.handler is None:
            stop = await self._take(None)
            if stop is not None:
                return stop
        assert self.handler is not None
        result = await self.handler.handle_call(request, from_)
        if result is CLOSE or isinstance(result, Stop):
            return self._after(result)
        self._after(None)
        return result

    async def handle_cast(self, request: Any) -> Any:
        if self.handler is None:
            stop = await self._take(None)
            if stop is not None:
                return stop
        assert self.handler is not None
        return self._after(await self.handler.handle_cast(request))

    async def terminate(self, reason: Any) -> None:
        if self.handler is not None:
            await self.handler.terminate(reason)


__all__ = [
    "ACCEPT_ERROR_LOG_INTERVAL",
    "ACCEPT_RETRY",
    "CLOSE",
    "CONNECTION_SHUTDOWN",
    "Handler",
    "listener_info",
    "listener_port",
    "listener_spec",
    "start_listener",
    "stop_listener",
]
