"""One distribution connection as a sans-I/O object: handshake, then messages.

:class:`DistSession` strings the layers together for the socket owner
(``connection.py``): the version 6 handshake (:mod:`~beamlet.distribution.handshake`),
then 4-byte framing and ticks (:mod:`~beamlet.distribution.framing`), then packets
(:mod:`~beamlet.distribution.control`) whose terms use the ETF codec
(:mod:`~beamlet.distribution.etf`) with the local node as context.

It never touches a socket or a clock: the caller passes the bytes it read
and the current time (``time.monotonic()``), and writes the bytes it is
given.  Events:

* :class:`~beamlet.distribution.handshake.Send` -- bytes to write;
* :class:`~beamlet.distribution.handshake.Complete` -- the connection is up;
* :class:`Message` -- a control message (and its payload) arrived;
* :class:`BadMessage` -- a packet could not be decoded; if ``fatal`` the
  stream or the atom cache is out of step and the connection must close,
  otherwise only that message is lost (it is reported, the node stays up);
* :class:`~beamlet.distribution.handshake.Failed` -- the connection is over: the
  handshake failed, the peer fell silent (``net_tick_timeout``, see
  "net_ticktime" in the kernel docs: a tick is sent after ``tick_time / 4``
  of silence and the peer is given up after ``tick_time`` without data), or
  a fatal protocol error.

Thread safety: the receive side (``receive``) and the send side (``send``,
``tick``) each have a lock, so a reader thread and any number of writer
threads can share a session; ``poll`` takes both briefly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final

from beamlet.distribution.control import (
    DEFAULT_MAX_MESSAGE,
    DEFAULT_MAX_SEQUENCES,
    NO_PAYLOAD,
    Control,
    DistDecoder,
    DistEncoder,
    DistHeaderError,
)
from beamlet.distribution.etf import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ELEMENTS,
    DEFAULT_MAX_EQUAL_HASHES,
    ETFContext,
    ETFDecodeError,
)
from beamlet.distribution.framing import DEFAULT_MAX_PACKET, TICK, FrameError, PacketReader, frame
from beamlet.distribution.handshake import Acceptor, Complete, Failed, Initiator, Send

__all__ = [
    "DEFAULT_SETUP_TIME",
    "DEFAULT_TICK_TIME",
    "BadMessage",
    "DistSession",
    "Message",
    "SessionEvent",
]

#: Erlang's defaults: net_ticktime 60 s, net_setuptime 7 s.
DEFAULT_TICK_TIME: Final = 60.0
DEFAULT_SETUP_TIME: Final = 7.0


@dataclass(frozen=True, slots=True)
class Message:
    """A control message from the peer; ``payload`` is None when the control
    message has none (``type(control).HAS_PAYLOAD`` is False)."""

    control: Control
    payload: Any


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A packet that could not be decoded (see the module docstring)."""

    error: ValueError
    fatal: bool


SessionEvent = Send | Complete | Failed | Message | BadMessage


class DistSession:
    """One connection: ``handshake`` is a fresh :class:`Initiator` (we
    connected) or :class:`Acceptor` (we accepted)."""

    def __init__(
        self,
        handshake: Initiator | Acceptor,
        *,
        tick_time: float = DEFAULT_TICK_TIME,
        setup_time: float = DEFAULT_SETUP_TIME,
        fragment_size: int | None = 64 * 1024,
        max_packet: int = DEFAULT_MAX_PACKET,
        max_message: int = DEFAULT_MAX_MESSAGE,
        max_sequences: int = DEFAULT_MAX_SEQUENCES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_elements: int | None = DEFAULT_MAX_ELEMENTS,
        max_equal_hashes: int = DEFAULT_MAX_EQUAL_HASHES,
        text: bool = False,
    ) -> None:
        self.handshake = handshake
        self.ctx = ETFContext(handshake.name, handshake.creation, text)
        self.tick_time = tick_time
        self.setup_time = setup_time
        self.peer: Complete | None = None
        self.closed: Failed | None = None
        self._fragment_size = fragment_size
        self._reader = PacketReader(4, max_size=max_packet)
        self._decoder = DistDecoder(
            self.ctx,
            max_message=max_message,
            max_sequences=max_sequences,
            max_depth=max_depth,
            max_elements=max_elements,
            max_equal_hashes=max_equal_hashes,
        )
        self._encoder: DistEncoder | None = None
        self._recv_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._started = 0.0
        self._last_received = 0.0
        self._last_sent = 0.0

    @property
    def connected(self) -> bool:
        return self.peer is not None and self.closed is None

    @property
    def decoder(self) -> DistDecoder:
        return self._decoder

    def start(self, now: float) -> list[SessionEvent]:
        """Begin: the initiator's first message (nothing for an acceptor)."""
        with self._recv_lock, self._send_lock:
            self._started = self._last_received = self._last_sent = now
            if isinstance(self.handshake, Initiator):
                return list(self.handshake.start())
            return []

    def receive(self, data: bytes | bytearray | memoryview, now: float) -> list[SessionEvent]:
        """Bytes read from the connection; returns the events they cause."""
        with self._recv_lock:
            if self.closed is not None:
                return []
            self._last_received = now
            events: list[SessionEvent] = []
            if self.peer is None:
                hs_events = self.handshake.receive(data)
                events.extend(hs_events)
                done = hs_events[-1] if hs_events else None
                if isinstance(done, Failed):
                    self.closed = done
                    return events
                if not isinstance(done, Complete):
                    return events
                with self._send_lock:
                    self._encoder = DistEncoder(
                        self.ctx, done.flags, fragment_size=self._fragment_size
                    )
                self.peer = done
                data = done.leftover
            try:
                packets = self._reader.feed(data)
            except FrameError as e:
                return [*events, *self._fatal("protocol", e)]
            for packet in packets:
                if not packet:
                    continue  # a tick: its arrival already counted as activity
                try:
                    got = self._decoder.decode(packet)
                except DistHeaderError as e:
                    events.extend(self._fatal("protocol", e))
                    break
                except ETFDecodeError as e:
                    events.append(BadMessage(e, fatal=False))
                    continue
                if got is not None:
                    events.append(Message(*got))
            return events

    def _fatal(self, reason: str, error: ValueError) -> list[SessionEvent]:
        self.closed = Failed(reason, str(error))
        return [BadMessage(error, fatal=True), self.closed]

    def send(self, control: Control, payload: Any = NO_PAYLOAD, *, now: float) -> bytes:
        """The framed packet(s) carrying ``control`` (and its payload).

        Raises RuntimeError before the handshake completed or after the
        session closed; ``TypeError``/``ValueError`` if a term cannot be
        encoded (nothing is written then)."""
        with self._send_lock:
            if self._encoder is None or self.closed is not None:
                raise RuntimeError("the connection is not up")
            bodies = self._encoder.encode(control, payload)
            self._last_sent = now
            return b"".join(frame(b) for b in bodies)

    def poll(self, now: float) -> list[SessionEvent]:
        """Timers: a tick to send, or the end of a silent or slow connection.
        Call it at least every :meth:`next_deadline` seconds."""
        with self._recv_lock, self._send_lock:
            if self.closed is not None:
                return []
            if self.peer is None:
                if now - self._started >= self.setup_time:
                    self.closed = Failed("setup_timeout", "the handshake took too long")
                    return [self.closed]
                return []
            if now - self._last_received >= self.tick_time:
                self.closed = Failed(
                    "net_tick_timeout", f"nothing received for {self.tick_time:g} s"
                )
                return [self.closed]
            if now - self._last_sent >= self.tick_time / 4:
                self._last_sent = now
                return [Send(TICK)]
            return []

    def next_deadline(self, now: float) -> float:
        """Seconds until :meth:`poll` may have something to do."""
        with self._recv_lock, self._send_lock:
            if self.peer is None:
                return max(0.0, self._started + self.setup_time - now)
            return max(
                0.0,
                min(
                    self._last_received + self.tick_time,
                    self._last_sent + self.tick_time / 4,
                )
                - now,
            )

    def close(self, reason: str = "closed") -> None:
        """Mark the session over (the socket owner closes the socket)."""
        with self._recv_lock, self._send_lock:
            if self.closed is None:
                self.closed = Failed(reason, "closed locally")
