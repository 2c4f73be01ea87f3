"""The node: joins the beamlet runtime to other nodes over Erlang distribution.

Theory of operation
-------------------
:func:`start_node` listens on a TCP port, registers with EPMD (starting
the built-in EPMD when none runs) and plugs the node into the kernel as its
``rt.distribution`` (the kernel's ``Distribution`` protocol: ``node_name``,
``route`` for a message or signal to a remote pid, ``route_named`` to
``(name, node)``, ``route_alias`` to a remote alias). Each route turns the kernel's signal into a control message of the
distribution protocol and sends it on the connection to that node, opening the
connection first if needed (as Erlang does on first use).

Incoming control messages become kernel signals delivered with
``rt.deliver`` -- the same path a local signal takes -- with the remote pid as
sender, so links, monitors and exit signals across nodes follow the same rules
as local ones (docs/semantics.md). Each connection records the links and
monitors crossing it; when it goes down, linked local processes get an exit
signal ``noconnection``, local watchers a ``Down(..., "noconnection")``, and
``monitor_node`` subscribers ``NodeDown(node)``.

Exit reasons: strings become atoms; a Python exception becomes
``{python_exception, <<"ClassName">>, <<"message">>}``; other values are sent
as terms. Reasons from Erlang arrive as decoded terms (atoms compare equal to
strings).

Security: the node listens on 127.0.0.1 unless told otherwise; the cookie
comes from the argument, then ``$ERLANG_COOKIE``, then ``~/.erlang.cookie``
(created with a random cookie if missing, refused if others can read it, as
Erlang does); a wrong cookie is refused and logged. Erlang's ``rpc:call``
reaches only functions exposed with :func:`beamlet.rpc.expose` -- a cookie is
not a licence to run code here.

A node that cannot be silenced (docs/distribution.md, "Security"): every part
a peer can reach is supervised or checked. The accept thread survives
transient errors (EMFILE backs off and retries, a connection whose thread
cannot start is closed) and, supervised, anything worse (a broken listening
socket is replaced on the same port); handshakes in flight are capped; a
control message that erts would call invalid (a pid of a third node, a
``from`` that is not the peer's, an unknown tag...) ends that peer's
connection at once and never makes us dial another node; the node's services
(``net_kernel``, ``rex``...) handle bad requests without dying, cannot be
sent an exit signal by a peer, and are restarted if they die anyway
(beamlet.net_kernel); the EPMD registration is watched: if the EPMD goes away the
node serves EPMD itself or registers with whoever serves now.

Services: the processes a node runs for its peers (``net_kernel``, ``rex``...)
and the functions a peer may spawn here (erpc's ``execute_call``) are OTP-level
code in the layer above (beamlet.net_kernel, beamlet.rpc). They plug in with
:func:`add_services` and :func:`allow_spawn` when imported; :func:`start_node`
imports them (``SERVICE_MODULES``), so every node has them while this package
never imports the layers above when it is imported.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import itertools
import logging
import os
import secrets
import socket
import stat
import string
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

from beamlet._kernel import context
from beamlet._kernel.runtime import Runtime
from beamlet._kernel.signals import (
    SIGNALS,
    AliasMsg,
    DemonitorSig,
    DownSig,
    ExitSig,
    LinkSig,
    MonitorSig,
    UnlinkSig,
)
from beamlet.distribution import control as C
from beamlet.distribution import epmd_client
from beamlet.distribution.connection import CONNECTING, DOWN, UP, Connection, ConnectionDown
from beamlet.distribution.epmd import EPMDError
from beamlet.distribution.epmd_server import EPMDServer, ensure_epmd
from beamlet.distribution.handshake import simultaneous_status
from beamlet.distribution.limits import Limits, LogLimiter, brief, brief_exception
from beamlet.terms import Atom, Pid, Ref

logger = logging.getLogger("beamlet.distribution")

NOCONNECTION = Atom("noconnection")
NOPROC = Atom("noproc")

#: accept() errors that mean "out of a resource for now": back off and retry.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors that mean the listening socket itself is broken.
_BROKEN = frozenset({errno.EBADF, errno.EINVAL, errno.ENOTSOCK})
_U64 = 1 << 64


class InvalidMessage(Exception):
    """A control message erts would call invalid: it ends the peer's connection."""


class NodeDown(NamedTuple):
    """The message ``monitor_node`` delivers when the connection to ``node`` is lost."""

    node: Atom


def encode_reason(reason: Any) -> Any:
    """An exit reason as Erlang sees it."""
    if type(reason) is Atom:
        return reason
    if isinstance(reason, str):
        return Atom(reason)
    if isinstance(reason, BaseException):
        return (Atom("python_exception"), type(reason).__name__, str(reason))
    return reason


def read_cookie(cookie: str | None) -> str:
    """The cookie: the argument, $ERLANG_COOKIE, or ~/.erlang.cookie (created if
    missing). Like erl (auth.erl), a cookie file that is not a regular file, or
    that anyone but its owner may access, is refused with PermissionError."""
    if cookie:
        return cookie
    if os.environ.get("ERLANG_COOKIE"):
        return os.environ["ERLANG_COOKIE"]
    path = Path.home() / ".erlang.cookie"
    try:
        st = path.stat()
    except FileNotFoundError:
        value = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        # created owner-read-only from the start: never readable by others, even briefly
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value
    if not stat.S_ISREG(st.st_mode):
        raise PermissionError(f"Cookie file {path} is of type {_file_type(st.st_mode)}")
    if os.name == "posix" and st.st_mode & 0o077:
        raise PermissionError(f"Cookie file {path} must be accessible by owner only")
    return path.read_text().strip()


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "device"),
        (stat.S_ISBLK, "device"),
    ):
        if test(mode):
            return name
    return "other"


class Node:
    """The distribution side of one runtime (see the module documentation)."""

    def __init__(
        self,
        rt: Runtime,
        name: str,
        cookie: str,
        *,
        hidden: bool = False,
        listen_host: str = "127.0.0.1",
        epmd_port: int | None = None,
        tick_time: float = 60.0,
        setup_time: float | None = None,
        limits: Limits | None = None,
    ) -> None:
        if name.count("@") != 1 or not all(name.split("@")):
            raise ValueError(f"a node name is name@host, got {name!r}")
        self.rt = rt
        self.name = Atom(name)
        self.cookie = cookie
        self.hidden = hidden
        self.listen_host = listen_host
        self.epmd_port = epmd_port if epmd_port is not None else epmd_client.default_port()
        self.limits = limits if limits is not None else Limits()
        self.tick_time = tick_time
        self.setup_time = setup_time if setup_time is not None else self.limits.setup_time
        #: One limiter for every line a peer can cause (docs: "Security").
        self.log = LogLimiter(self.limits.log_burst, self.limits.log_period)
        self.creation = 0
        self.lock = threading.Lock()
        self.conns: dict[Atom, Connection] = {}
        self.node_monitors: dict[Atom, list[Pid]] = {}
        self.unlink_ids = itertools.count(1)
        self.listener: socket.socket | None = None
        self.port = 0
        self.acceptor: threading.Thread | None = None
        self.epmd_keeper: threading.Thread | None = None
        self.registration: epmd_client.Registration | None = None
        self.epmd_server: EPMDServer | None = None
        #: Accepted connections still in their handshake (at most limits.max_handshakes).
        self.handshakes = 0
        #: The node's own service processes: a peer may not send them exit signals.
        self.protected: frozenset[Pid] = frozenset()
        self.running = False
        self._stopped = threading.Event()

    # -- start / stop ----------------------------------------------------

    def start(self) -> None:
        self.epmd_server = ensure_epmd(
            "127.0.0.1", self.epmd_port, limits=self.limits, log_limiter=self.log
        )
        self.listener = socket.create_server((self.listen_host, 0))
        self.port = port = self.listener.getsockname()[1]
        alive = self.name.split("@")[0]
        self.registration = epmd_client.register(
            alive, port, hidden=self.hidden, epmd_port=self.epmd_port
        )
        self.creation = self.registration.creation
        self.running = True
        rt = self.rt
        rt.distribution = self
        self.acceptor = threading.Thread(
            target=self._acceptor, name="beamlet-dist-accept", daemon=True
        )
        self.acceptor.start()
        self.epmd_keeper = threading.Thread(
            target=self._keep_registration, name="beamlet-dist-epmd-keeper", daemon=True
        )
        self.epmd_keeper.start()
        logger.info(
            "node %s listening on %s:%d (creation %d)",
            self.name,
            self.listen_host,
            port,
            self.creation,
        )

    def stop(self) -> None:
        self.running = False
        self._stopped.set()
        if self.listener is not None:
            # close() alone does not wake a thread blocked in accept() on Linux.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self.listener.close()
            if self.acceptor is not None and self.acceptor is not threading.current_thread():
                self.acceptor.join(timeout=5)
        with self.lock:
            conns = list(self.conns.values())
        for conn in conns:
            conn.fail("node stopped")
        if self.registration is not None:
            self.registration.close()
        if self.epmd_keeper is not None and self.epmd_keeper is not threading.current_thread():
            self.epmd_keeper.join(timeout=5)
        if self.epmd_server is not None:
            self.epmd_server.stop()

    # -- the acceptor: supervised, it survives whatever accept() does ----------

    def _acceptor(self) -> None:
        """The accept thread's body: runs the accept loop, and restarts it
        (logged, after a pause) if it ever fails, until the node stops."""
        while self.running:
            try:
                self._accept_loop()
            except Exception as e:
                if not self.running:
                    return
                self.log.log(
                    logger,
                    logging.ERROR,
                    "acceptor",
                    "node %s: the accept loop failed, restarting it: %s",
                    self.name,
                    brief_exception(e, trace=True),
                )
                self._stopped.wait(0.1)

    def _accept_loop(self) -> None:
        backoff = 0.0
        while self.running:
            listener = self.listener
            assert listener is not None
            try:
                sock, _ = listener.accept()
            except OSError as e:
                if not self.running:
                    return
                if e.errno in _EXHAUSTED:
                    # Transient (a flood of idle connections, say): wait for
                    # descriptors to come back; the backlog keeps the callers.
                    backoff = min(1.0, max(0.05, backoff * 2))
                    self.log.log(
                        logger,
                        logging.WARNING,
                        "accept",
                        "node %s: cannot accept connections (%s); retrying in %.2f s",
                        self.name,
                        e.strerror,
                        backoff,
                    )
                    self._stopped.wait(backoff)
                elif e.errno in _BROKEN:
                    self._listen_again(e)
                # else (ECONNABORTED, EPROTO, ...): that caller gave up; go on
                continue
            backoff = 0.0
            self._serve(sock)

    def _serve(self, sock: socket.socket) -> None:
        """Start the handshake of an accepted connection, within the bounds."""
        with self.lock:
            full = self.handshakes >= self.limits.max_handshakes
        if full:
            sock.close()
            self.log.log(
                logger,
                logging.WARNING,
                "handshakes",
                "node %s: %d handshakes in progress; refused a connection",
                self.name,
                self.limits.max_handshakes,
            )
            return
        conn = Connection(self, None, accepted=True)
        with self.lock:
            self.handshakes += 1
            conn.counted = True
        try:
            conn.serve_accepted(sock)
        except Exception as e:  # RuntimeError: can't start new thread
            self.handshake_over(conn)
            sock.close()
            self.log.log(
                logger,
                logging.ERROR,
                "serve",
                "node %s: could not serve a connection (closed it): %s",
                self.name,
                brief_exception(e),
            )
            self._stopped.wait(0.05)

    def handshake_over(self, conn: Connection) -> None:
        """``conn`` is past its handshake (or gone): one fewer in flight."""
        with self.lock:
            if conn.counted:
                conn.counted = False
                self.handshakes -= 1

    def _listen_again(self, error: OSError) -> None:
        """The listening socket is broken: listen again on the same port (the
        one EPMD gives out), retrying until it works or the node stops."""
        self.log.log(
            logger,
            logging.ERROR,
            "listener",
            "node %s: the listening socket failed (%s); listening again on port %d",
            self.name,
            error.strerror,
            self.port,
        )
        old = self.listener
        if old is not None:
            with contextlib.suppress(OSError):
                old.close()
        while self.running:
            try:
                new = socket.create_server((self.listen_host, self.port))
            except OSError as e:
                self.log.log(
                    logger,
                    logging.ERROR,
                    "listener",
                    "node %s: cannot listen on port %d again (%s); retrying",
                    self.name,
                    self.port,
                    e.strerror,
                )
                self._stopped.wait(0.2)
                continue
            self.listener = new
            if not self.running:  # stop() ran meanwhile and closed the old one
                new.close()
            return

    # -- EPMD: the registration is watched -------------------------------------

    def _keep_registration(self) -> None:
        """Wait for the EPMD connection to drop; then serve EPMD (if nothing
        answers on its port) or register with whoever serves it now."""
        while self.running:
            reg = self.registration
            if reg is not None:
                reg.wait_closed()
            if not self.running:
                return
            logger.warning(
                "node %s: lost its EPMD registration (port %d); registering again",
                self.name,
                self.epmd_port,
            )
            self._register_again()

    def _register_again(self) -> None:
        delay = 0.02
        while self.running:
            try:
                server = ensure_epmd(
                    "127.0.0.1", self.epmd_port, 0.2, limits=self.limits, log_limiter=self.log
                )
                if server is not None:
                    old, self.epmd_server = self.epmd_server, server
                    if old is not None:
                        old.stop()
                reg = epmd_client.register(
                    self.name.split("@")[0],
                    self.port,
                    hidden=self.hidden,
                    epmd_port=self.epmd_port,
                    timeout=1.0,
                )
            except (OSError, EPMDError) as e:
                self.log.log(
                    logger,
                    logging.WARNING,
                    "epmd",
                    "node %s: cannot register with EPMD yet (%s); retrying",
                    self.name,
                    brief_exception(e),
                )
                self._stopped.wait(delay)
                delay = min(0.2, delay * 2)
                continue
            # The node keeps its creation: pids it handed out stay valid.
            self.registration = reg
            if not self.running:
                reg.close()
                return
            logger.warning(
                "node %s: registered again with EPMD on port %d%s",
                self.name,
                self.epmd_port,
                " (now served by this node)" if server is not None else "",
            )
            return

    # -- connections ------------------------------------------------------

    def connection(self, peer: Atom) -> Connection:
        """The connection to ``peer``, started if there is none."""
        with self.lock:
            conn = self.conns.get(peer)
            if conn is not None and conn.state != DOWN:
                return conn
            conn = self.conns[peer] = Connection(self, peer, accepted=False)
        host = peer.split("@", 1)[1]
        conn.connect_in_background(host, self._port_of)
        return conn

    def _port_of(self, peer: Atom) -> int | None:
        alive, host = peer.split("@", 1)
        info = epmd_client.port_please(
            alive, host, epmd_port=self.epmd_port, timeout=self.setup_time
        )
        return None if info is None else info.port

    def accept_status(self, peer: Atom, flags: int, creation: int) -> str:
        """The acceptor's answer to a node connecting to us."""
        with self.lock:
            existing = self.conns.get(peer)
        if existing is not None and existing.state == CONNECTING and not existing.accepted:
            return simultaneous_status(self.name, peer)  # both connect at once
        return "ok"

    def adopt(self, conn: Connection) -> bool:
        """A handshake completed: make ``conn`` the connection to its peer."""
        assert conn.peer is not None
        with self.lock:
            existing = self.conns.get(conn.peer)
            self.conns[conn.peer] = conn
        if existing is not None and existing is not conn:
            if existing.state == CONNECTING:
                conn.pending[:0] = existing.take_pending()  # our own attempt lost the race
            elif existing.state == UP:
                existing.fail("replaced by a new connection")
        return True

    def connection_down(self, conn: Connection, reason: str) -> None:
        with conn.lock:
            if conn.cleaned:
                return
            conn.cleaned = True
            conn.state = DOWN
            if conn.reason is None:
                conn.reason = reason
            superseded = conn.reason == "superseded"
            conn.pending = []
        conn.settled.set()
        with self.lock:
            if conn.peer is not None and self.conns.get(conn.peer) is conn:
                del self.conns[conn.peer]
            watchers = (
                self.node_monitors.pop(conn.peer, [])
                if conn.peer is not None and not superseded
                else []
            )
        if superseded or conn.peer is None:
            return
        logger.info("connection to %s down: %s", conn.peer, reason)
        rt = self.rt
        with conn.track:
            links, conn.links = conn.links, set()
            outs, conn.out_monitors = conn.out_monitors, {}
            ins, conn.in_monitors = conn.in_monitors, {}
        for local, remote in links:
            rt.deliver(local, ExitSig(remote, NOCONNECTION, True))
        for ref, (watcher, target) in outs.items():
            rt.deliver(watcher, DownSig(target, ref, NOCONNECTION))
        for ref, (watcher, target) in ins.items():
            rt.deliver(target, DemonitorSig(watcher, ref))
        for w in watchers:
            rt.deliver(w, NodeDown(conn.peer))

    def reachable(self, node: Any) -> bool:
        """Whether a message to ``node`` goes out without dialing: it is this
        node, or one connected now. (What a peer asks us to answer is answered
        only there: a request is never a reason to dial a third node.)"""
        if node is None or node == self.name:
            return True
        with self.lock:
            conn = self.conns.get(node)
        return conn is not None and conn.state == UP

    def connected(self, include_hidden: bool = False) -> list[Atom]:
        with self.lock:
            return [
                peer
                for peer, c in self.conns.items()
                if c.state == UP and (include_hidden or not c.peer_hidden)
            ]

    # -- outgoing: kernel signals -> control messages ---------------------

    def node_name(self) -> Atom:
        """Distribution.node_name: this node's name."""
        return self.name

    def route(self, pid: Pid, item: Any, sender: Any) -> None:
        """Distribution.route: a message or signal for a pid on another node."""
        rt = self.rt
        if pid.node == self.name:  # an earlier incarnation of this node: gone
            rt.answer_dead(pid, item)
            return
        assert pid.node is not None
        conn = self.connection(pid.node)
        try:
            self._send_to(conn, pid, item, sender)
        except ConnectionDown:
            rt.answer_dead(pid, item, NOCONNECTION)

    def _send_to(self, conn: Connection, pid: Pid, item: Any, sender: Any) -> None:
        frm = sender.pid if sender is not None else None
        t = type(item)
        if t not in SIGNALS:
            if frm is None:
                conn.send(C.Send(pid), item)
            else:
                conn.send(C.SendSender(frm, pid), item)
            return
        if t is LinkSig:
            with conn.track:
                conn.links.add((item.sender, pid))
            conn.send(C.Link(item.sender, pid))
        elif t is UnlinkSig:
            with conn.track:
                conn.links.discard((item.sender, pid))
            conn.send(C.UnlinkId(next(self.unlink_ids), item.sender, pid))
        elif t is ExitSig:
            if item.sender is None:
                logger.warning(
                    "an exit signal to %r from outside a process cannot cross nodes", pid
                )
                return
            if item.from_link:
                with conn.track:
                    conn.links.discard((item.sender, pid))
                conn.send(C.PayloadExit(item.sender, pid), encode_reason(item.reason))
            else:
                conn.send(C.PayloadExit2(item.sender, pid), encode_reason(item.reason))
        elif t is MonitorSig:
            with conn.track:
                conn.out_monitors[item.ref] = (item.sender, pid)
            conn.send(C.MonitorP(item.sender, pid, item.ref))
        elif t is DemonitorSig:
            with conn.track:
                conn.out_monitors.pop(item.ref, None)
            conn.send(C.DemonitorP(item.sender, pid, item.ref))
        elif t is DownSig:
            with conn.track:
                conn.in_monitors.pop(item.ref, None)
            who = item.sender if type(item.sender) is Pid else Atom(str(item.sender))
            conn.send(C.PayloadMonitorPExit(who, pid, item.ref), encode_reason(item.reason))

    def route_named(self, name: Any, node: Any, item: Any, sender: Any) -> None:
        """Distribution.route_named: a message, monitor or demonitor for ``(name, node)``."""
        node = node if type(node) is Atom else Atom(str(node))
        conn = self.connection(node)
        target = name if type(name) is Atom else Atom(str(name))
        try:
            t = type(item)
            if t not in SIGNALS:
                frm = sender.pid if sender is not None else None
                if frm is None:
                    logger.warning(
                        "a message to %r from outside a process cannot cross nodes", (name, node)
                    )
                    return
                conn.send(C.RegSend(frm, target), item)
            elif t is MonitorSig:
                with conn.track:
                    conn.out_monitors[item.ref] = (item.sender, (name, node))
                conn.send(C.MonitorP(item.sender, target, item.ref))
            elif t is DemonitorSig:
                with conn.track:
                    conn.out_monitors.pop(item.ref, None)
                conn.send(C.DemonitorP(item.sender, target, item.ref))
        except ConnectionDown:
            if type(item) is MonitorSig:
                self.rt.deliver(item.sender, DownSig((name, node), item.ref, NOCONNECTION))

    def route_alias(self, ref: Ref, item: Any, sender: Any) -> None:
        """Distribution.route_alias: a message to an alias on another node."""
        if sender is None or ref.node is None or ref.node == self.name:
            return
        with contextlib.suppress(ConnectionDown):
            self.connection(ref.node).send(C.AliasSend(sender.pid, ref), item)

    # -- incoming: control messages -> kernel signals ----------------------

    def dispatch(self, conn: Connection, ctl: Any, payload: Any) -> None:
        """A control message from ``conn``'s peer (called by its reader thread).

        Checked as erts checks it (``erts_net_message`` in dist.c): a message
        it calls invalid ends the connection; a pid of this node's earlier
        incarnation gets what a dead process answers; a pid of any other node
        is never a reason to dial that node."""
        try:
            self._dispatch(conn, ctl, payload)
        except InvalidMessage as e:
            self.log.log(
                logger,
                logging.WARNING,
                "invalid",
                "invalid distribution message from %s (%s), connection dropped: %s",
                conn.peer,
                e,
                brief(ctl, self.limits.log_chars),
            )
            conn.fail(f"invalid message: {e}")

    def _mine(self, pid: Any) -> bool:
        """A pid of this node (this incarnation: node None; an earlier one: our name)."""
        return type(pid) is Pid and (pid.node is None or pid.node == self.name)

    def _check_from(self, conn: Connection, pid: Any) -> None:
        if type(pid) is not Pid or pid.node != conn.peer:
            raise InvalidMessage("the sender is not a process of the peer")

    def _check_to(self, pid: Any) -> None:
        if not self._mine(pid):
            raise InvalidMessage("the target is not a process of this node")

    def _dispatch(self, conn: Connection, ctl: Any, payload: Any) -> None:
        rt = self.rt
        deliver = rt.deliver
        t = type(ctl)
        if t in (C.SendSender, C.SendSenderTT, C.Send, C.SendTT):
            to = ctl.to_pid
            if type(to) is not Pid or (t in _SENDERS and type(ctl.from_pid) is not Pid):
                raise InvalidMessage("SEND needs pids")
            if to.node is None:
                deliver(to, payload)
            # a pid of another node, or of our earlier incarnation: dropped (erts)
        elif t in (C.RegSend, C.RegSendTT):
            if type(ctl.from_pid) is not Pid or not _is_atom(ctl.to_name):
                raise InvalidMessage("REG_SEND needs a pid and an atom")
            pid = rt.names.get(_atom_text(ctl.to_name))
            if pid is not None:
                deliver(pid, payload)
        elif t in (C.AliasSend, C.AliasSendTT):
            if type(ctl.alias) is not Ref or type(ctl.from_pid) is not Pid:
                raise InvalidMessage("ALIAS_SEND needs a pid and a reference")
            owner = rt.aliases.get(ctl.alias)
            if owner is not None:
                deliver(owner, AliasMsg(ctl.alias, payload))
        elif t is C.Link:
            self._check_from(conn, ctl.from_pid)
            self._check_to(ctl.to_pid)
            with conn.track:
                conn.links.add((ctl.to_pid, ctl.from_pid))
            deliver(ctl.to_pid, LinkSig(ctl.from_pid))
        elif t is C.UnlinkId:
            if type(ctl.id) is not int or not 0 < ctl.id < _U64:
                raise InvalidMessage("UNLINK_ID needs an id in 1..2**64-1")
            self._check_from(conn, ctl.from_pid)
            self._check_to(ctl.to_pid)
            with conn.track:
                conn.links.discard((ctl.to_pid, ctl.from_pid))
            deliver(ctl.to_pid, UnlinkSig(ctl.from_pid))
            with contextlib.suppress(ConnectionDown):
                conn.send(C.UnlinkIdAck(ctl.id, ctl.to_pid, ctl.from_pid))
        elif t is C.UnlinkIdAck:
            if type(ctl.id) is not int or not 0 <= ctl.id < _U64:
                raise InvalidMessage("UNLINK_ID_ACK needs an id in 0..2**64-1")
            self._check_from(conn, ctl.from_pid)
            self._check_to(ctl.to_pid)
        elif t in (C.Exit, C.ExitTT, C.PayloadExit, C.PayloadExitTT):
            self._check_from(conn, ctl.from_pid)
            self._check_to(ctl.to_pid)
            reason = payload if t in (C.PayloadExit, C.PayloadExitTT) else ctl.reason
            with conn.track:
                conn.links.discard((ctl.to_pid, ctl.from_pid))
            deliver(ctl.to_pid, ExitSig(ctl.from_pid, reason, True))
        elif t in (C.Exit2, C.Exit2TT, C.PayloadExit2, C.PayloadExit2TT):
            self._check_from(conn, ctl.from_pid)
            self._check_to(ctl.to_pid)
            if ctl.to_pid in self.protected:
                self.log.log(
                    logger,
                    logging.WARNING,
                    "exit_refused",
                    "refused an exit signal from %s to %r: a service of this node",
                    conn.peer,
                    ctl.to_pid,
                )
                return
            reason = payload if t in (C.PayloadExit2, C.PayloadExit2TT) else ctl.reason
            deliver(ctl.to_pid, ExitSig(ctl.from_pid, reason, False))
        elif t is C.MonitorP:
            self._check_from(conn, ctl.from_pid)
            if type(ctl.ref) is not Ref or not (self._mine(ctl.to_proc) or _is_atom(ctl.to_proc)):
                raise InvalidMessage("MONITOR_P needs a reference and a local pid or a name")
            self._monitor_in(conn, ctl)
        elif t is C.DemonitorP:
            self._check_from(conn, ctl.from_pid)
            if type(ctl.ref) is not Ref or not (self._mine(ctl.to_proc) or _is_atom(ctl.to_proc)):
                raise InvalidMessage("DEMONITOR_P needs a reference and a local pid or a name")
            with conn.track:
                entry = conn.in_monitors.pop(ctl.ref, None)
            if entry is not None:
                deliver(entry[1], DemonitorSig(ctl.from_pid, ctl.ref))
        elif t in (C.MonitorPExit, C.PayloadMonitorPExit):
            if type(ctl.ref) is not Ref or not (
                type(ctl.from_proc) is Pid or _is_atom(ctl.from_proc)
            ):
                raise InvalidMessage("MONITOR_P_EXIT needs a reference and a pid or a name")
            self._check_to(ctl.to_pid)
            reason = payload if t is C.PayloadMonitorPExit else ctl.reason
            with conn.track:
                entry = conn.out_monitors.pop(ctl.ref, None)
            who = entry[1] if entry is not None else ctl.from_proc
            if ctl.to_pid.node is None:
                deliver(ctl.to_pid, DownSig(who, ctl.ref, reason))
        elif t in (C.SpawnRequest, C.SpawnRequestTT):
            mfa = ctl.mfa
            if (
                type(ctl.req_id) is not Ref
                or type(ctl.group_leader) is not Pid
                or type(mfa) is not tuple
                or len(mfa) != 3
                or not (_is_atom(mfa[0]) and _is_atom(mfa[1]) and type(mfa[2]) is int)
                or type(ctl.opts) is not list
            ):
                raise InvalidMessage("malformed SPAWN_REQUEST")
            self._check_from(conn, ctl.from_pid)
            self._spawn_request(conn, ctl, payload)
        elif t in (C.SpawnReply, C.SpawnReplyTT):
            if (
                type(ctl.req_id) is not Ref
                or type(ctl.flags) is not int
                or not 0 <= ctl.flags < 1 << 27
                or not (type(ctl.result) is Pid or _is_atom(ctl.result))
            ):
                raise InvalidMessage("malformed SPAWN_REPLY")
            self._check_to(ctl.to_pid)  # we never ask to spawn: nothing to do
        elif t is C.GroupLeader:
            if type(ctl.from_pid) is not Pid or type(ctl.to_pid) is not Pid:
                raise InvalidMessage("GROUP_LEADER needs pids")
        else:  # UNLINK (refused since OTP 26), NODE_LINK, tags we do not know
            raise InvalidMessage(f"{type(ctl).__name__} is not accepted")

    def _spawn_request(self, conn: Connection, ctl: Any, args: Any) -> None:
        """SPAWN_REQUEST: only what :func:`allow_spawn` allowed is served --
        erpc's ``execute_call`` (how rpc:call and erpc:call run a function
        here), which runs only functions exposed with beamlet.rpc.expose.
        Anything else is refused (notsup)."""
        mfa = ctl.mfa
        requester = ctl.from_pid
        body = _spawnable.get(mfa)
        if body is None or not (isinstance(args, list) and len(args) == mfa[2]):
            self.log.log(
                logger,
                logging.WARNING,
                "spawn_refused",
                "refused a spawn request from %s for %s",
                conn.peer,
                brief(mfa, self.limits.log_chars),
            )
            with contextlib.suppress(ConnectionDown):
                conn.send(C.SpawnReply(ctl.req_id, requester, 0, Atom("notsup")))
            return
        opts = ctl.opts if isinstance(ctl.opts, list) else []
        link, monitor = Atom("link") in opts, Atom("monitor") in opts
        pid = self.rt.spawn(body, tuple(args), None)[0]  # waits for SPAWN_GO
        with conn.track:
            if link:
                conn.links.add((pid, requester))
            if monitor:
                conn.in_monitors[ctl.req_id] = (requester, pid)
        # The reply goes out before the process can run, and before the link
        # and the monitor exist: nothing it sends (a message, the DOWN that
        # carries erpc's result) may reach the requester ahead of it. erts
        # kills a connection that breaks this order ("Missing 'spawn_reply'
        # signal ... OTP-17737", nodedown reason killed).
        with contextlib.suppress(ConnectionDown):
            conn.send(C.SpawnReply(ctl.req_id, requester, link | monitor << 1, pid))
        if link:
            self.rt.deliver(pid, LinkSig(requester))
        if monitor:
            self.rt.deliver(pid, MonitorSig(requester, ctl.req_id))
        self.rt.deliver(pid, SPAWN_GO)  # after the signals: it runs with them in place

    def _monitor_in(self, conn: Connection, ctl: C.MonitorP) -> None:
        rt = self.rt
        target = ctl.to_proc
        name = None
        if type(target) is not Pid:
            name = _atom_text(target)
            pid = rt.names.get(name)
        else:
            pid = target if target.node is None else None
        if pid is None:
            with contextlib.suppress(ConnectionDown):
                conn.send(C.PayloadMonitorPExit(target, ctl.from_pid, ctl.ref), NOPROC)
            return
        with conn.track:
            conn.in_monitors[ctl.ref] = (ctl.from_pid, pid)
        rt.deliver(pid, MonitorSig(ctl.from_pid, ctl.ref, name))


_SENDERS = frozenset({C.SendSender, C.SendSenderTT})


def _is_atom(value: Any) -> bool:
    """An Erlang atom as decoded: an Atom, or true/false/undefined."""
    return type(value) is Atom or value is None or type(value) is bool


def _atom_text(value: Any) -> str:
    if value is None:
        return "undefined"
    if type(value) is bool:
        return "true" if value else "false"
    return str(value)


# -- the services the layer above runs on a node -----------------------------------

#: The modules that plug the node's services in: imported by :func:`start_node`.
SERVICE_MODULES = ("beamlet.net_kernel", "beamlet.rpc")

#: The first message a process spawned for a peer receives: it comes after the
#: process's link and monitor to the requester are in place.
SPAWN_GO = Atom("$spawn_go")

_services: dict[str, tuple[Callable[[Node], None], Callable[[Node], None]]] = {}
_spawnable: dict[tuple[Atom, Atom, int], Callable[..., Awaitable[None]]] = {}


def add_services(name: str, start: Callable[[Node], None], stop: Callable[[Node], None]) -> None:
    """Have every node started from now on call ``start(node)`` (in a process,
    once the node is up) and ``stop(node)`` (before it stops). Adding ``name``
    again replaces its pair."""
    _services[name] = (start, stop)


def allow_spawn(
    module: str, function: str, arity: int, body: Callable[..., Awaitable[None]]
) -> None:
    """Let peers spawn ``module:function/arity`` here (a SPAWN_REQUEST): the
    node spawns ``body(*args)``, which must first ``receive(SPAWN_GO)``."""
    _spawnable[(Atom(module), Atom(function), arity)] = body


# -- the node of the running runtime ----------------------------------------------

_node: Node | None = None
_node_lock = threading.Lock()


def current_node() -> Node:
    node = _node
    if node is None or node.rt is not context.runtime:
        raise RuntimeError(
            "this runtime is not a distributed node (start one with beamlet.distribution.start_node)"
        )
    return node


def start_node(
    name: str,
    cookie: str | None = None,
    *,
    hidden: bool = False,
    listen_host: str = "127.0.0.1",
    epmd_port: int | None = None,
    tick_time: float = 60.0,
    setup_time: float | None = None,
    limits: Limits | None = None,
) -> Node:
    """Make the running runtime the node ``name`` (``"py@127.0.0.1"``).

    Starts the built-in EPMD if none answers on ``epmd_port`` (default:
    $ERL_EPMD_PORT or 4369), listens on ``listen_host``, registers, and starts
    the ``net_kernel``, ``rex`` and ``global_name_server`` processes that other
    nodes expect, supervised. ``tick_time`` is Erlang's ``net_ticktime``,
    ``setup_time`` its ``net_setuptime`` (default ``limits.setup_time``, 7 s);
    ``limits`` bounds what peers can make the node hold (:class:`Limits`;
    docs/distribution.md, "Security"). Returns the :class:`Node`.
    """
    global _node
    for module in SERVICE_MODULES:
        importlib.import_module(module)  # they add their services
    rt = context.current_runtime()
    with _node_lock:
        if _node is not None and _node.rt is rt and _node.running:
            raise RuntimeError(f"this runtime is already the node {_node.name}")
        node = Node(
            rt,
            name,
            read_cookie(cookie),
            hidden=hidden,
            listen_host=listen_host,
            epmd_port=epmd_port,
            tick_time=tick_time,
            setup_time=setup_time,
            limits=limits,
        )
        node.start()
        _node = node
    for start, _ in list(_services.values()):
        start(node)
    return node


def stop_node() -> None:
    """Leave the cluster: close connections, unregister from EPMD."""
    global _node
    with _node_lock:
        node, _node = _node, None
    if node is not None:
        for _, stop in reversed(list(_services.values())):
            stop(node)
        node.stop()
        rt = node.rt
        rt.reset_distribution()


def nodes(include_hidden: bool = False) -> list[Atom]:
    """The nodes this node is connected to (visible ones unless ``include_hidden``)."""
    node = _node
    if node is None or node.rt is not context.runtime:
        return []
    return node.connected(include_hidden)


def disconnect(peer: str) -> bool:
    """Drop the connection to ``peer``; True if there was one."""
    node = current_node()
    with node.lock:
        conn = node.conns.get(Atom(peer))
    if conn is None:
        return False
    conn.fail("disconnected")
    return True


def monitor_node(peer: str, flag: bool = True) -> None:
    """Receive ``NodeDown(peer)`` when the connection to ``peer`` is lost
    (connecting first if needed; at once if it cannot be reached)."""
    node = current_node()
    me = context.current_process().pid
    peer_atom = Atom(peer)
    with node.lock:
        watchers = node.node_monitors.setdefault(peer_atom, [])
        if flag:
            watchers.append(me)
        elif me in watchers:
            watchers.remove(me)
    if flag:
        node.connection(peer_atom)
