"""Sockets owned by processes: gen_tcp's and gen_udp's semantics over the schedulers' poller.

Theory of operation
-------------------
A :class:`Socket` is a handle, like an Erlang port: it has one *owner* (the
controlling process), is shared between processes by reference (it is sent in
messages uncopied) and closes when its owner exits, whatever the reason (the
kernel calls :meth:`Socket.owner_exited` as the owner finishes, before its
links and monitors are told).

The descriptor is non-blocking and registered with the runtime's poller
(beamlet/_kernel/poller.py), armed one-shot for what the socket needs next:

* READ while it is active (``active=True``, ``"once"`` or ``N``), while a
  process waits in :func:`recv` (passive mode) or in :func:`accept`;
* WRITE while its send queue holds bytes (or a connect is under way).

The poller calls :meth:`Socket._on_ready` on the polling scheduler's thread.
In active mode that handler reads (one read per event, 64 KiB at most) and
delivers ``Tcp(sock, data)`` to the owner, as inet's driver does; in passive
mode it only wakes the process waiting in :func:`recv`, which reads itself.
``once`` and ``N`` are flow control: a socket that is not active is not armed
for reading, so the OS's receive buffer fills and TCP pushes back on the peer.

Sends never interleave: bytes the OS does not take at once go on the socket's
queue, which the poller flushes when the descriptor is writable; a sender
waits while the queue holds more than ``HIGH_WATERMARK`` bytes, until it drains
below ``LOW_WATERMARK`` (inet's ``high_watermark``/``low_watermark``). A
socket closed with bytes still queued lingers, flushing, for up to ``LINGER``
seconds (inet's close does the same).

TLS is sans-I/O: an ``ssl.SSLObject`` over two ``MemoryBIO``s; the handler
decrypts what it reads, and what the TLS layer has to say goes on the same
send queue. No thread per socket, anywhere.

Every state change happens under the socket's lock; the lock is taken before a
process's lock (a delivery) and never the other way round. Kills never land
here (this is beamlet's kernel code, kill.py), so no kill leaves it held.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket as _socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from beamlet._kernel.context import current_runtime, current_scheduler
from beamlet._kernel.copying import register_immutable
from beamlet._kernel.parker import counter
from beamlet._kernel.poller import ERROR, READ, WRITE
from beamlet._kernel.process import EXITING, BadArg, Process
from beamlet._kernel.traps import WAKE, Ready, blocking, take_messages, wait_ready
from beamlet.terms import Pid

if TYPE_CHECKING:
    from beamlet._kernel.runtime import Runtime

#: A sender waits while more than this many bytes are queued on its socket...
HIGH_WATERMARK = 64 * 1024
#: ... until fewer than this many are.
LOW_WATERMARK = 16 * 1024
#: Bytes read per readiness event (and per passive ``recv(sock, 0)``).
READ_SIZE = 64 * 1024
#: Seconds a closed socket keeps flushing what it had queued.
LINGER = 10.0

_ids = counter(1)
#: Guards Runtime.io_released (sockets of several threads release at once).
_io_lock = threading.Lock()


# ---------------------------------------------------------------- messages


class Tcp(NamedTuple):
    """Data that came on an active TCP (or TLS) socket."""

    socket: Socket
    data: bytes


class TcpClosed(NamedTuple):
    """The peer closed an active socket (it is closed now)."""

    socket: Socket


class TcpError(NamedTuple):
    """An active socket failed; ``reason`` is the errno's name in lower case
    (``"econnreset"``), as Erlang's inet reports it. ``TcpClosed`` follows."""

    socket: Socket
    reason: str


class TcpPassive(NamedTuple):
    """An ``active=N`` socket used its N messages up: it is passive now."""

    socket: Socket


class Udp(NamedTuple):
    """A datagram that came on an active UDP socket."""

    socket: Socket
    host: str
    port: int
    data: bytes


class UdpPassive(NamedTuple):
    """An ``active=N`` UDP socket used its N messages up."""

    socket: Socket


class NotOwner(PermissionError):
    """Only a socket's owner (controlling process) may do this."""


class IncompleteRead(EOFError):
    """``recv(sock, n)`` met the end of the stream before ``n`` bytes;
    ``partial`` holds what came."""

    def __init__(self, partial: bytes, expected: int) -> None:
        super().__init__(
            f"{len(partial)} bytes read of {expected} expected before the end of stream"
        )
        self.partial = partial
        self.expected = expected


def _closed_error() -> OSError:
    return OSError(errno.EBADF, "the socket is closed")


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno)).lower()
    if isinstance(e, ssl.SSLError):
        return f"tls: {e.reason or e}"
    return str(e) or type(e).__name__


def _me() -> Process:
    s = current_scheduler()
    proc = s.current if s is not None else None
    if proc is None or s is None or s.closing:
        raise RuntimeError("beamlet.net is used from beamlet processes")
    return proc


# ---------------------------------------------------------------- the handle

#: Modes (Socket.active): passive, active=True; a positive number counts down.
PASSIVE = 0
ALWAYS = -1


@register_immutable
class Socket:
    """A socket owned by a process. Compare and hash by identity; send it in
    messages freely (it is not copied)."""

    __slots__ = (
        "_tls_in",
        "_tls_out",
        "acceptors",
        "active",
        "bytes_in",
        "bytes_out",
        "closed",
        "connecting",
        "eof",
        "error",
        "fd",
        "handshaken",
        "id",
        "kind",
        "lingering",
        "lock",
        "once",
        "owner",
        "owner_proc",
        "peer",
        "rbuf",
        "reader",
        "rt",
        "shut_wr",
        "sock",
        "tls",
        "want",
        "wbuf",
        "wr_closed",
        "writers",
        "wsize",
    )

    def __init__(self, rt: Runtime, kind: str, sock: _socket.socket, owner: Process) -> None:
        self.id = _ids()
        self.kind = kind
        self.rt = rt
        sock.setblocking(False)
        self.sock: _socket.socket | None = sock
        self.fd = sock.fileno()
        self.lock = threading.Lock()
        self.owner: Pid = owner.pid
        self.owner_proc: Process | None = owner
        self.active = PASSIVE
        self.once = False
        self.closed = False
        self.lingering = False
        self.eof = False
        self.error: OSError | None = None
        self.connecting = False
        self.shut_wr = False  # a shutdown(write) waits for the queue to drain
        self.wr_closed = False  # shut down for writing (for good)
        # Allocated when first needed (an idle connection's budget is 3 KB).
        self.rbuf: bytearray | None = None
        # Lists, not deques: they hold one or two items, and an empty deque
        # costs 600 bytes a socket (an idle connection's budget is 3 KB).
        self.wbuf: list[memoryview] = []
        self.wsize = 0
        self.want = 0
        self.reader: Ready | None = None
        self.writers: list[Ready] | None = None
        self.acceptors: list[Ready] | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.peer: Any = None
        self.tls: ssl.SSLObject | None = None
        self.handshaken = True  # False until a deferred TLS handshake is done
        self._tls_in: ssl.MemoryBIO | None = None
        self._tls_out: ssl.MemoryBIO | None = None
        with owner.lock:
            if owner.state >= EXITING:
                sock.close()
                raise RuntimeError(f"{owner.pid!r} is exiting")
            if owner.ports is None:
                owner.ports = [self]
            else:
                owner.ports.append(self)
        rt.poller.register(self.fd, self._on_ready)
        rt.ports[self.id] = self

    def __repr__(self) -> str:
        return f"<Socket #{self.id} {self.kind}{' closed' if self.closed else ''}>"

    def __reduce__(self) -> Any:
        raise TypeError("a beamlet.net Socket cannot leave its node")

    def __deepcopy__(self, memo: Any) -> Socket:
        return self

    # ------------------------------------------------------------ TLS

    def start_tls(self, context: ssl.SSLContext, server_side: bool, hostname: str | None) -> None:
        self._tls_in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self.tls = context.wrap_bio(
            self._tls_in, self._tls_out, server_side=server_side, server_hostname=hostname
        )

    def _tls_pump(self) -> None:
        """What the TLS layer has to send goes on the send queue."""
        out = self._tls_out
        if out is not None and out.pending:
            data = out.read()
            self.wbuf.append(memoryview(data))
            self.wsize += len(data)

    # ------------------------------------------------------------ I/O (under lock)

    def _read_some(self) -> bytes | None:
        """Read what is there: bytes, b"" at the end of the stream, None if
        nothing is. Raises OSError (or ssl.SSLError) on failure."""
        sock = self.sock
        assert sock is not None
        tls = self.tls
        if tls is None:
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return None
            self.bytes_in += len(data)
            return data
        assert self._tls_in is not None
        out = []
        eof = False
        while True:
            try:
                chunk = tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                try:
                    raw = sock.recv(READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                if not raw:
                    self._tls_in.write_eof()
                else:
                    self.bytes_in += len(raw)
                    self._tls_in.write(raw)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                eof = True
                break
            if not chunk:
                eof = True
                break
            out.append(chunk)
            if sum(map(len, out)) >= READ_SIZE:
                break
        self._tls_pump()
        if self.wsize:
            self._flush()
        if out:
            if eof:
                self.eof = True  # seen next time (the data first)
            return b"".join(out)
        return b"" if eof else None

    def _tls_buffered(self) -> bool:
        """Bytes the TLS layer holds (read from the descriptor along with the
        handshake, or past the last read's limit): no readiness event will
        announce them."""
        tls = self.tls
        return tls is not None and (
            tls.pending() > 0 or (self._tls_in is not None and self._tls_in.pending > 0)
        )

    def _queue(self, data: Any) -> None:
        if self.tls is not None:
            self.tls.write(data)
            self._tls_pump()
            return
        view = memoryview(data).cast("B")
        if view.nbytes:
            self.wbuf.append(view)
            self.wsize += view.nbytes

    def _flush(self) -> None:
        """Send what is queued, as far as the OS takes it."""
        sock = self.sock
        wbuf = self.wbuf
        while wbuf:
            view = wbuf[0]
            try:
                n = sock.send(view) if sock is not None else 0
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.error = e
                wbuf.clear()
                self.wsize = 0
                return
            self.bytes_out += n
            self.wsize -= n
            if n == len(view):
                del wbuf[0]
            else:
                wbuf[0] = view[n:]
                return
        if self.shut_wr and sock is not None and not self.closed:
            self.shut_wr = False
            try:
                sock.shutdown(_socket.SHUT_WR)
            except OSError:
                pass

    def _arm(self) -> None:
        """Arm the descriptor for what the socket needs next."""
        if self.sock is None:
            return
        want = 0
        if self.wsize or self.connecting or (self.writers and not self.closed):
            want |= WRITE
        if not self.closed and not self.eof and (self.active or self.reader or self.acceptors):
            want |= READ
        self.want = want
        if want:
            self.rt.poller.arm(self.fd, want)

    def _on_ready(self, events: int) -> None:
        """The poller's handler: runs on a polling scheduler's thread."""
        with self.lock:
            self.want = 0
            if self.sock is None:
                return
            if self.connecting and events & (WRITE | ERROR):
                self.connecting = False  # (its waiter reads SO_ERROR)
            if self.wsize and events & (WRITE | ERROR):
                self._flush()
            if self.lingering:
                if not self.wsize or self.error is not None:
                    self._release()
                else:
                    self._arm()
                return
            if self.closed:
                return
            if events & (READ | ERROR):
                if self.kind == "listen":
                    self._wake_acceptor()
                elif self.active:
                    if self.kind == "udp":
                        self._read_udp_active()
                    else:
                        self._read_active()
                        while self.active and not self.closed and self._tls_buffered():
                            self._read_active()  # decrypted bytes the descriptor won't announce
                elif self.reader is not None:
                    self._wake(self.reader)
                    self.reader = None  # it reads itself now; nothing to arm for it
            writers = self.writers
            if writers and (self.wsize <= LOW_WATERMARK or self.error is not None):
                self.writers = None
                for cell in writers:
                    self._wake(cell)
            self._arm()

    def add_writer(self, cell: Ready) -> None:
        if self.writers is None:
            self.writers = [cell]
        else:
            self.writers.append(cell)

    def remove_writer(self, cell: Ready) -> None:
        if self.writers and cell in self.writers:
            self.writers.remove(cell)

    def _wake(self, cell: Ready) -> None:
        if not cell.ready:
            cell.ready = True
            self.rt.deliver(cell.pid, WAKE)

    def _wake_acceptor(self) -> None:
        while self.acceptors:
            cell = self.acceptors.pop(0)
            if not cell.ready:
                self._wake(cell)
                return

    def _deliver(self, msg: Any) -> None:
        self.rt.deliver(self.owner, msg)

    def _count_down(self) -> None:
        """One message delivered in active mode: ``once``/``N`` count down."""
        if self.active > 0:
            self.active -= 1
            if not self.active:
                if not self.once:
                    self._deliver(UdpPassive(self) if self.kind == "udp" else TcpPassive(self))
                self.once = False

    def _read_active(self) -> None:
        if self.rbuf:
            data = bytes(self.rbuf)
            self.rbuf = None
            self._deliver(Tcp(self, data))
            self._count_down()
            return
        try:
            got = None if self.eof else self._read_some()
            if got is None and not self.eof:
                return
        except OSError as e:
            self._fail(e)
            return
        if got:
            self._deliver(Tcp(self, got))
            self._count_down()
            return
        # The end of the stream: the owner is told, and the socket closes
        # (inet's exit_on_close).
        self.eof = True
        self._deliver(TcpClosed(self))
        self._close_locked(linger=True)

    def _fail(self, e: OSError) -> None:
        self.error = e
        self._deliver(TcpError(self, _reason(e)))
        self._deliver(TcpClosed(self))
        self._close_locked(linger=False)

    def _read_udp_active(self) -> None:
        sock = self.sock
        assert sock is not None
        try:
            data, addr = sock.recvfrom(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # ICMP errors on an unconnected socket: dropped, as gen_udp does
        self.bytes_in += len(data)
        self._deliver(Udp(self, addr[0], addr[1], data))
        self._count_down()

    # ------------------------------------------------------------ closing

    def _close_locked(self, linger: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if self.kind == "listen":
            _tls_contexts.pop(self.id, None)
        owner = self.owner_proc
        if owner is not None:
            with owner.lock:
                if owner.ports and self in owner.ports:
                    owner.ports.remove(self)
        for cell in (self.reader, *(self.writers or ()), *(self.acceptors or ())):
            if cell is not None:
                self._wake(cell)
        self.reader = None
        self.writers = self.acceptors = None
        if linger and self.wsize and self.error is None:
            self._flush()
        if linger and self.wsize and self.error is None:
            self.lingering = True
            self._arm()
            self.rt.timers.add(LINGER, _linger_over, self)
            return
        self._release()

    def _release(self) -> None:
        sock = self.sock
        if sock is None:
            return
        self.rt.ports.pop(self.id, None)  # (a lingering socket stays listed until here)
        with _io_lock:
            released = self.rt.io_released
            released[0] += self.bytes_in
            released[1] += self.bytes_out
        self.sock = None
        self.lingering = False
        self.wbuf.clear()
        self.wsize = 0
        self.rt.poller.unregister(self.fd)
        try:
            sock.close()
        except OSError:
            pass

    def close(self) -> None:
        with self.lock:
            self._close_locked(linger=True)

    def release(self) -> None:
        """The kernel, at shutdown: close now, lingering or not."""
        with self.lock:
            self.closed = True
            self._release()

    def owner_exited(self, pid: Pid, reason: Any) -> None:
        """The kernel: the owner exited (signals.finish)."""
        with self.lock:
            if self.owner == pid:
                self.owner_proc = None
                self._close_locked(linger=True)

    # ------------------------------------------------------------ introspection

    def info(self) -> dict[str, Any]:
        with self.lock:
            if self.active == ALWAYS:
                mode: Any = True
            elif self.active == 0:
                mode = False
            else:
                mode = "once" if self.once else self.active
            return {
                "id": self.id,
                "kind": self.kind + ("+tls" if self.tls is not None else ""),
                "owner": self.owner,
                "local": _address(self.sock, "getsockname"),
                "peer": self.peer,
                "active": mode,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "queued": self.wsize,
                "closed": self.closed,
            }


def _linger_over(timer: Any) -> None:
    s: Socket = timer.arg
    with s.lock:
        s._release()


def _address(sock: _socket.socket | None, method: str) -> Any:
    if sock is None:
        return None
    try:
        addr = getattr(sock, method)()
    except OSError:
        return None
    return (addr[0], addr[1]) if isinstance(addr, tuple) else addr


def _check_socket(sock: Any, *kinds: str) -> Socket:
    if type(sock) is not Socket:
        raise BadArg(f"not a beamlet.net socket: {sock!r}")
    if kinds and sock.kind not in kinds:
        raise BadArg(f"{sock!r} is a {sock.kind} socket; this needs {' or '.join(kinds)}")
    return sock


def _check_owner(s: Socket, proc: Process, what: str) -> None:
    if s.owner != proc.pid:
        raise NotOwner(f"{what}: {proc.pid!r} does not own {s!r} (its owner is {s.owner!r})")


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    return time.monotonic() + max(0.0, timeout)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _bind_family(host: str) -> int:
    """The address family to bind ``host`` with (IPv6 for an IPv6 literal)."""
    try:
        return _socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else _socket.AF_INET
    except ValueError:
        return _socket.AF_INET


# ---------------------------------------------------------------- opening


async def _resolve(host: str, port: int, kind: int) -> tuple[int, Any]:
    """(family, address) for ``host``: a literal is used as it is; a name is
    looked up on the blocking pool (getaddrinfo blocks)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if ip.version == 6:
            return _socket.AF_INET6, (host, port, 0, 0)
        return _socket.AF_INET, (host, port)
    infos = await blocking(_socket.getaddrinfo, host, port, 0, kind)
    if not infos:
        raise OSError(errno.EHOSTUNREACH, f"{host!r} has no address")
    family, _, _, _, addr = infos[0]
    return family, addr


def listen(
    port: int,
    host: str = "127.0.0.1",
    backlog: int = 1024,
    tls: ssl.SSLContext | None = None,
    reuse_port: bool = False,
) -> Socket:
    """A listening TCP socket owned by the caller (``gen_tcp:listen``).

    ``port=0`` picks a free port (see :func:`sockname`). ``tls``: connections
    accepted from it speak TLS (a server-side ``ssl.SSLContext``). Raises
    ``OSError`` (``EADDRINUSE``, ``EACCES``, ...)."""
    proc = _me()
    family = _bind_family(host)
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    s = Socket(current_runtime(), "listen", sock, proc)
    if tls is not None:
        _tls_contexts[s.id] = tls
    return s


# Listening sockets' server-side TLS contexts, by socket id (a slot would
# cost every socket 8 bytes).
_tls_contexts: dict[int, ssl.SSLContext] = {}


async def accept(ls: Socket, timeout: float | None = None, handshake: bool = True) -> Socket:
    """Wait for a connection on listening socket ``ls``; the new socket is
    owned by the caller, passive. Any number of processes may wait on one
    listening socket (acceptor pools); each connection goes to one of them.
    Raises ``TimeoutError``, ``OSError(EBADF)`` if ``ls`` is closed, or the
    ``OSError`` of ``accept(2)`` (``EMFILE``: out of descriptors).

    On a TLS listener the handshake is done here, within ``timeout``
    (``ssl.SSLError`` if it fails), unless ``handshake=False``: then the
    connection's own process calls :func:`handshake` (Erlang's
    ``ssl:transport_accept`` then ``ssl:handshake``), so that a peer that
    never completes one holds up that process only, not an acceptor."""
    proc = _me()
    _check_socket(ls, "listen")
    deadline = _deadline(timeout)
    while True:
        cell = None
        with ls.lock:
            if ls.closed or ls.sock is None:
                raise _closed_error()
            try:
                conn, addr = ls.sock.accept()
            except (BlockingIOError, InterruptedError):
                conn = None
                cell = Ready(proc.pid)
                if ls.acceptors is None:
                    ls.acceptors = [cell]
                else:
                    ls.acceptors.append(cell)
                ls._arm()
            else:
                if ls.acceptors:
                    ls._arm()  # more may be waiting in the backlog
        if conn is not None:
            conn.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            s = Socket(ls.rt, "tcp", conn, proc)
            s.peer = (addr[0], addr[1])
            ctx = _tls_contexts.get(ls.id)
            if ctx is not None:
                s.start_tls(ctx, True, None)
                if handshake:
                    try:
                        await _handshake(s, deadline)
                    except BaseException:
                        s.close()
                        raise
                else:
                    s.handshaken = False
            return s
        assert cell is not None
        try:
            ok = await wait_ready(cell, _left(deadline))
        finally:
            with ls.lock:
                if ls.acceptors and cell in ls.acceptors:
                    ls.acceptors.remove(cell)
                if cell.ready and ls.acceptors:
                    ls._arm()  # what woke us is someone else's now
        if not ok:
            raise TimeoutError("accept timed out")


async def connect(
    host: str,
    port: int,
    timeout: float | None = None,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Socket:
    """Connect to ``host:port``; the socket is owned by the caller, passive.

    ``tls``: a client-side ``ssl.SSLContext``; the handshake is done before
    this returns (``server_hostname`` defaults to ``host``). Raises
    ``ConnectionRefusedError``, ``TimeoutError`` (the whole connect, handshake
    included), ``OSError`` (``EHOSTUNREACH``, ...), ``ssl.SSLError``."""
    proc = _me()
    deadline = _deadline(timeout)
    family, addr = await _resolve(host, port, _socket.SOCK_STREAM)
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    s = Socket(current_runtime(), "tcp", sock, proc)
    try:
        err = sock.connect_ex(addr)
        if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            cell = Ready(proc.pid)
            with s.lock:
                s.connecting = True
                s.add_writer(cell)
                s._arm()
            try:
                ok = await wait_ready(cell, _left(deadline))
            finally:
                with s.lock:
                    s.connecting = False
                    s.remove_writer(cell)
            if not ok:
                raise TimeoutError(f"connect to {host}:{port} timed out")
            if s.closed:
                raise _closed_error()
            err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            raise OSError(err, f"{os.strerror(err)} ({host}:{port})")
        s.peer = (addr[0], addr[1])
        if tls is not None:
            s.start_tls(tls, False, server_hostname or host)
            await _handshake(s, deadline)
        return s
    except BaseException:
        s.close()
        raise


async def _wait_to_read(s: Socket, cell: Ready, deadline: float | None, what: str) -> None:
    """Wait as ``s``'s reader until ``cell`` is ready; ``TimeoutError`` at
    ``deadline``. The socket forgets the reader however the wait ends."""
    try:
        ok = await wait_ready(cell, _left(deadline))
    finally:
        with s.lock:
            if s.reader is cell:
                s.reader = None
    if not ok:
        raise TimeoutError(f"{what} timed out")


async def handshake(sock: Socket, timeout: float | None = None) -> None:
    """The server side of the TLS handshake of a socket accepted with
    ``accept(ls, handshake=False)`` (a no-op if it is done or the socket is
    not TLS). Raises ``TimeoutError`` or ``ssl.SSLError``; the socket stays
    open either way (close it)."""
    s = _check_socket(sock, "tcp")
    if s.tls is None or s.handshaken:
        return
    await _handshake(s, _deadline(timeout))


async def _handshake(s: Socket, deadline: float | None) -> None:
    proc = _me()
    tls = s.tls
    assert tls is not None
    while True:
        cell = None
        with s.lock:
            if s.closed:
                raise _closed_error()
            try:
                tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            finally:
                s._tls_pump()
                if s.wsize:
                    s._flush()
                    if s.wsize:
                        s._arm()
            if done:
                s.handshaken = True
                return
            assert s.sock is not None and s._tls_in is not None
            try:
                raw = s.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                cell = s.reader = Ready(proc.pid)
                s._arm()
            else:
                if not raw:
                    raise ConnectionResetError(
                        errno.ECONNRESET, "the peer closed during the TLS handshake"
                    )
                s.bytes_in += len(raw)
                s._tls_in.write(raw)
        if cell is not None:
            await _wait_to_read(s, cell, deadline, "TLS handshake")


# ---------------------------------------------------------------- using


async def recv(sock: Socket, length: int = 0, timeout: float | None = None) -> bytes:
    """Passive mode: wait for data (``gen_tcp:recv``). ``length=0``: whatever
    is there (up to 64 KiB), ``b""`` at the end of the stream; ``length=N``:
    exactly N bytes, or ``IncompleteRead`` if the stream ends first.

    Raises ``TimeoutError`` (nothing is lost: bytes read stay for the next
    recv), ``OSError(EBADF)`` on a closed socket, ``OSError(EINVAL)`` on an
    active one, ``OSError(EALREADY)`` while another process waits in recv on
    it, and the socket's error (``ConnectionResetError``, ...)."""
    proc = _me()
    s = _check_socket(sock, "tcp")
    if length < 0:
        raise BadArg(f"recv length must be >= 0, got {length!r}")
    deadline = _deadline(timeout)
    while True:
        cell = None
        with s.lock:
            if s.closed:
                raise _closed_error()
            if s.active:
                raise OSError(errno.EINVAL, f"recv on {s!r}, which is active")
            if s.reader is not None:
                raise OSError(errno.EALREADY, f"another process waits in recv on {s!r}")
            while True:
                rbuf = s.rbuf
                if rbuf and (not length or len(rbuf) >= length):
                    n = length or len(rbuf)
                    data = bytes(rbuf[:n])
                    del rbuf[:n]
                    if not rbuf:
                        s.rbuf = None
                    return data
                if s.error is not None:
                    raise s.error
                if s.eof:
                    if not length:
                        return b""
                    partial = bytes(rbuf or b"")
                    s.rbuf = None
                    raise IncompleteRead(partial, length)
                try:
                    got = s._read_some()
                except OSError as e:
                    s.error = e
                    raise
                if got is None:
                    break
                if not got:
                    s.eof = True
                elif not length and not rbuf:
                    return got
                elif rbuf is None:
                    s.rbuf = bytearray(got)
                else:
                    rbuf += got
            cell = s.reader = Ready(proc.pid)
            s._arm()
        await _wait_to_read(s, cell, deadline, "recv")


async def send(
    sock: Socket, data: bytes | bytearray | memoryview, timeout: float | None = None
) -> None:
    """Send ``data`` (``gen_tcp:send``): returns once the OS or the socket's
    queue holds it all; waits while the queue is over ``HIGH_WATERMARK``
    bytes (a slow peer slows the sender, nothing piles up). Any process may
    send; sends never interleave. Raises ``OSError(EBADF)`` on a closed
    socket, the socket's error (``BrokenPipeError``, ``ConnectionResetError``),
    ``TimeoutError`` (the data stays queued)."""
    proc = _me()
    s = _check_socket(sock, "tcp")
    cell = None
    with s.lock:
        if s.closed:
            raise _closed_error()
        if s.error is not None:
            raise s.error
        if s.wr_closed:
            raise OSError(errno.EPIPE, "the socket was shut down for writing")
        if not s.wsize and s.tls is None and type(data) is bytes and s.sock is not None:
            # The common case, nothing queued: straight to the OS.
            try:
                n = s.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                s.error = e
                raise
            s.bytes_out += n
            if n == len(data):
                return
            data = memoryview(data)[n:]
        s._queue(data)
        s._flush()
        if s.error is not None:
            raise s.error
        if not s.wsize:
            return
        s._arm()
        if s.wsize <= HIGH_WATERMARK:
            return
        cell = Ready(proc.pid)
        s.add_writer(cell)
        s._arm()
    try:
        ok = await wait_ready(cell, timeout)
    finally:
        with s.lock:
            s.remove_writer(cell)
    if not ok:
        raise TimeoutError("send timed out (the data stays queued)")
    with s.lock:
        if s.error is not None:
            raise s.error


def close(sock: Socket) -> None:
    """Close the socket (any process may). Bytes still queued are flushed for
    up to ``LINGER`` seconds. Closing a closed socket does nothing."""
    _check_socket(sock).close()


def shutdown(sock: Socket, how: str) -> None:
    """``"write"``: no more sends; the peer reads the end of the stream once
    what is queued is sent. ``"read"`` / ``"read_write"`` as ``shutdown(2)``."""
    s = _check_socket(sock, "tcp")
    if how not in ("read", "write", "read_write"):
        raise BadArg(f"shutdown how must be 'read', 'write' or 'read_write', got {how!r}")
    with s.lock:
        if s.closed or s.sock is None:
            raise _closed_error()
        if how in ("write", "read_write"):
            if s.tls is not None:
                try:
                    s.tls.unwrap()
                except ssl.SSLError:
                    pass
                s._tls_pump()
            s.shut_wr = s.wr_closed = True
            s._flush()
            if s.wsize:
                s._arm()
        if how in ("read", "read_write"):
            try:
                s.sock.shutdown(_socket.SHUT_RD)
            except OSError:
                pass


def setopts(sock: Socket, active: bool | str | int | None = None) -> None:
    """Set the socket's mode (only its owner may): ``active=False`` (passive:
    :func:`recv`), ``True`` (every read becomes a ``Tcp``/``Udp`` message),
    ``"once"`` (one message, then passive), ``N`` (N messages more, then
    passive and a ``TcpPassive``/``UdpPassive``; ``N <= 0`` counts down at
    once, as ``inet:setopts`` does)."""
    proc = _me()
    s = _check_socket(sock)
    if s.kind == "listen":
        raise BadArg("a listening socket has no active mode")
    with s.lock:
        _check_owner(s, proc, "setopts")
        if s.closed:
            raise _closed_error()
        if active is None:
            return
        if active is True:
            s.active, s.once = ALWAYS, False
        elif active is False:
            s.active, s.once = PASSIVE, False
        elif active == "once":
            s.active, s.once = 1, True
        elif type(active) is int:
            base = s.active if s.active > 0 and not s.once else 0
            n = min(base + active, 32767)
            s.once = False
            if n <= 0:
                s.active = PASSIVE
                s._deliver(UdpPassive(s) if s.kind == "udp" else TcpPassive(s))
            else:
                s.active = n
        else:
            raise BadArg(f"active must be True, False, 'once' or an int, got {active!r}")
        if s.active and s.kind == "tcp" and (s.rbuf or s.eof or s._tls_buffered()):
            s._read_active()  # what recv left behind comes first, as a message
        if not s.closed:
            s._arm()


def controlling_process(sock: Socket, pid: Pid) -> None:
    """Make ``pid`` the socket's owner (only the owner may). The messages of
    this socket already in the caller's mailbox go to the new owner, in order,
    before any new one (as ``gen_tcp:controlling_process``). Raises
    ``NotOwner``; ``BadArg`` if ``pid`` is not a live local process."""
    proc = _me()
    s = _check_socket(sock)
    rt = s.rt
    if type(pid) is not Pid:
        raise BadArg(f"controlling_process needs a pid, got {pid!r}")
    with s.lock:
        _check_owner(s, proc, "controlling_process")
        if s.closed:
            raise _closed_error()
        if pid == proc.pid:
            return
        new = rt.lookup(pid)
        if new is None:
            raise BadArg(f"{pid!r} is not a live local process")
        # No new message is delivered while we move the old ones: the owner
        # changes under this lock, and handlers deliver under it.
        moved = take_messages(lambda m: _is_message_of(m, s))
        with new.lock:
            if new.state >= EXITING:
                for m in moved:
                    rt.deliver(proc.pid, m)
                raise BadArg(f"{pid!r} is not alive")
            if new.ports is None:
                new.ports = [s]
            else:
                new.ports.append(s)
        with proc.lock:
            if proc.ports and s in proc.ports:
                proc.ports.remove(s)
        s.owner = pid
        s.owner_proc = new
        for m in moved:
            rt.deliver(pid, m)


_MESSAGE_TYPES = (Tcp, TcpClosed, TcpError, TcpPassive, Udp, UdpPassive)


def _is_message_of(m: Any, s: Socket) -> bool:
    return type(m) in _MESSAGE_TYPES and m[0] is s


def peername(sock: Socket) -> tuple[str, int]:
    """The peer's (host, port). ``OSError(ENOTCONN)`` if there is none."""
    s = _check_socket(sock)
    if s.peer is None:
        raise OSError(errno.ENOTCONN, f"{s!r} has no peer")
    return s.peer  # type: ignore[no-any-return]


def sockname(sock: Socket) -> tuple[str, int]:
    """The socket's own (host, port)."""
    s = _check_socket(sock)
    addr = _address(s.sock, "getsockname")
    if addr is None:
        raise _closed_error()
    return addr  # type: ignore[no-any-return]


def sockets(include_closed: bool = False) -> list[dict[str, Any]]:
    """Every open socket of this runtime: id, kind, owner, local and peer
    addresses, mode, bytes in and out, bytes queued. ``include_closed``: with
    the closed ones still flushing their queue (``LINGER``)."""
    rt = current_runtime()
    return [
        s.info()
        for s in list(rt.ports.values())
        if type(s) is Socket and (include_closed or not s.closed)
    ]


# ---------------------------------------------------------------- UDP


def open_udp(port: int = 0, host: str = "127.0.0.1", active: bool | str | int = False) -> Socket:
    """A UDP socket bound to ``host:port``, owned by the caller
    (``gen_udp:open``). Active: datagrams come as ``Udp(sock, host, port,
    data)`` messages; passive: :func:`recvfrom`."""
    proc = _me()
    family = _bind_family(host)
    sock = _socket.socket(family, _socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    s = Socket(current_runtime(), "udp", sock, proc)
    if active is not False:
        setopts(s, active=active)
    return s


async def recvfrom(sock: Socket, timeout: float | None = None) -> tuple[str, int, bytes]:
    """Passive UDP: wait for a datagram; ``(host, port, data)``."""
    proc = _me()
    s = _check_socket(sock, "udp")
    deadline = _deadline(timeout)
    while True:
        with s.lock:
            if s.closed or s.sock is None:
                raise _closed_error()
            if s.active:
                raise OSError(errno.EINVAL, f"recvfrom on {s!r}, which is active")
            if s.reader is not None:
                raise OSError(errno.EALREADY, f"another process waits on {s!r}")
            try:
                data, addr = s.sock.recvfrom(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                cell = s.reader = Ready(proc.pid)
                s._arm()
            else:
                s.bytes_in += len(data)
                return addr[0], addr[1], data
        await _wait_to_read(s, cell, deadline, "recvfrom")


async def sendto(sock: Socket, host: str, port: int, data: bytes) -> None:
    """Send one datagram. Raises ``OSError`` (``EMSGSIZE``, ...)."""
    proc = _me()
    s = _check_socket(sock, "udp")
    _, addr = await _resolve(host, port, _socket.SOCK_DGRAM)
    while True:
        with s.lock:
            if s.closed or s.sock is None:
                raise _closed_error()
            try:
                s.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                cell = Ready(proc.pid)
                s.add_writer(cell)
                s._arm()
            else:
                s.bytes_out += len(data)
                return
        try:
            await wait_ready(cell)
        finally:
            with s.lock:
                s.remove_writer(cell)
