"""What a peer can make a node hold, and how the node talks about bad input.

:class:`Limits` gathers every bound a node puts on its peers (docs/distribution.md,
"Security", lists each with its default and what it protects); pass one to
:func:`beamlet.distribution.start_node` to change them.

Bad input is logged, never echoed: :func:`brief` describes a value in a bounded
number of characters, doing bounded work (no ``repr`` of a 32 MiB binary, no
``str`` of a 5,000-digit integer), and :class:`LogLimiter` keeps a peer that
repeats the same bad input from filling the log: each kind of line is logged at
most ``burst`` times per ``period`` seconds, and the next line that gets through
says how many were suppressed.

This module is sans-I/O and imports nothing from the kernel.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Final

from beamlet.terms import Atom, Pid, Ref

__all__ = ["Limits", "LogLimiter", "brief", "brief_exception"]

MiB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one node (see docs/distribution.md, "Security").

    Unauthenticated peers (before the handshake completes):

    * ``max_handshakes`` -- accepted connections still in the handshake at
      once; one more is closed at accept (each costs a thread and a socket);
    * ``setup_time`` -- seconds a handshake may take (Erlang's
      ``net_setuptime``);

    authenticated peers (per connection):

    * ``max_packet`` -- largest 4-byte-framed packet;
    * ``max_message`` -- largest message reassembled from fragments, and the
      most buffered for reassembly at once;
    * ``max_fragmented`` -- fragmented messages being reassembled at once;
    * ``max_term_depth`` -- nesting of containers in one term;
    * ``max_term_elements`` -- list, tuple and map elements in one decoded
      term (each costs a Python object: this bounds the memory and CPU one
      message costs, whatever its bytes);
    * ``max_equal_hashes`` -- keys of one map with the same Python hash (a
      map built to collide would cost quadratic time to build);
    * ``max_send_buffer`` -- bytes queued for a peer that does not read them:
      beyond it the connection is dropped;

    the built-in EPMD (when this node runs it):

    * ``epmd_max_connections`` -- connections with a request in progress;
      one more is closed at accept;
    * ``epmd_max_registrations`` -- registered nodes;
    * ``epmd_request_timeout`` -- seconds a connection may take to send its
      request and read the answer;

    logs:

    * ``log_burst`` / ``log_period`` -- each kind of warning about a peer is
      logged at most ``log_burst`` times per ``log_period`` seconds;
    * ``log_chars`` -- the longest description of a bad value in a log line.
    """

    max_handshakes: int = 64
    setup_time: float = 7.0
    max_packet: int = 128 * MiB
    max_message: int = 128 * MiB
    max_fragmented: int = 1024
    max_term_depth: int = 256
    max_term_elements: int = 4_000_000
    max_equal_hashes: int = 32
    max_send_buffer: int = 256 * MiB
    epmd_max_connections: int = 64
    epmd_max_registrations: int = 256
    epmd_request_timeout: float = 0.5
    log_burst: int = 20
    log_period: float = 10.0
    log_chars: int = 200

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Limits.{f.name} must be a positive number, got {value!r}")


# -- bounded descriptions --------------------------------------------------------------

_BIG_INT_BITS: Final = 256
_ITEMS: Final = 6


def brief(value: Any, limit: int = 200) -> str:
    """A description of ``value`` of at most ``limit`` characters, built with
    bounded work: long binaries and strings show a prefix and their size, big
    integers their size in bits, containers their first items and length."""
    w = _Writer(limit)
    w.describe(value, 0)
    text = "".join(w.out)
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


class _Writer:
    __slots__ = ("limit", "n", "out")

    def __init__(self, limit: int) -> None:
        self.out: list[str] = []
        self.n = 0
        self.limit = limit

    def put(self, s: str) -> None:
        self.out.append(s)
        self.n += len(s)

    @property
    def full(self) -> bool:
        return self.n >= self.limit

    def describe(self, v: Any, depth: int) -> None:
        if self.full:
            return
        t = type(v)
        if v is None or t is bool or t is float or t is Pid or t is Ref:
            self.put(repr(v))
        elif t is Atom:
            self.put(str.__repr__(v))
        elif isinstance(v, int):
            bits = v.bit_length()
            self.put(f"<integer of {bits} bits>" if bits > _BIG_INT_BITS else repr(int(v)))
        elif isinstance(v, str):
            s = str(v[:40]) if len(v) > 60 else str(v)
            self.put(repr(s) if len(v) <= 60 else f"{s!r}... <{len(v)} characters>")
        elif isinstance(v, bytes | bytearray | memoryview):
            b = bytes(v[:40]) if len(v) > 60 else bytes(v)
            self.put(repr(b) if len(v) <= 60 else f"{b!r}... <{len(v)} bytes>")
        elif depth >= 4:
            self.put(f"<{t.__name__}>")
        elif isinstance(v, tuple | list | dict) or t.__name__ in ("FrozenList", "FrozenMap"):
            self.container(v, depth)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            self.put(f"{t.__name__}(")
            for i, f in enumerate(dataclasses.fields(v)):
                if i:
                    self.put(", ")
                if i >= _ITEMS or self.full:
                    self.put("...")
                    break
                self.put(f"{f.name}=")
                self.describe(getattr(v, f.name), depth + 1)
            self.put(")")
        else:
            self.put(f"<{t.__name__}>")

    def container(self, v: Any, depth: int) -> None:
        is_map = hasattr(v, "items") and hasattr(v, "keys")
        if is_map:
            opening, closing = "{", "}"
        elif isinstance(v, list):
            opening, closing = "[", "]"
        else:
            opening, closing = "(", ")"
        self.put(opening)
        items = iter(v.items()) if is_map else iter(v)
        n = len(v)
        shown = 0
        for shown in range(min(n, _ITEMS)):
            if shown:
                self.put(", ")
            if self.full:
                break
            item = next(items)
            if is_map:
                self.describe(item[0], depth + 1)
                self.put(": ")
                self.describe(item[1], depth + 1)
            else:
                self.describe(item, depth + 1)
        if n > _ITEMS or self.full:
            self.put(f", ... <{n} items>")
        self.put(closing)


def brief_exception(e: BaseException, limit: int = 200, *, trace: bool = False) -> str:
    """``Type: message`` with the message cut to ``limit`` characters; with
    ``trace``, the traceback's frames before it (never a repr of the data)."""
    try:
        text = str(e)
    except Exception:  # a message that cannot even be built (e.g. int -> str)
        text = "<message cannot be shown>"
    if len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    line = f"{type(e).__name__}: {text}"
    if trace and e.__traceback__ is not None:
        frames = "".join(traceback.format_tb(e.__traceback__, limit=20))
        return f"Traceback (most recent call last):\n{frames}{line}"
    return line


# -- rate-limited logging ----------------------------------------------------------------


class LogLimiter:
    """At most ``burst`` log lines of each kind per ``period`` seconds.

    ``log(logger, level, kind, msg, *args)`` logs like ``logger.log`` unless
    that kind already had ``burst`` lines in the current period; then it
    counts the line as suppressed, and the next line of that kind that is
    logged ends with how many were. Thread-safe.
    """

    def __init__(self, burst: int = 20, period: float = 10.0) -> None:
        self.burst = burst
        self.period = period
        self._lock = threading.Lock()
        self._windows: dict[str, list[float]] = {}  # kind -> [window start, count, suppressed]

    def allow(self, kind: str, now: float | None = None) -> int | None:
        """None if a line of ``kind`` must be suppressed now, else the number
        of lines of that kind suppressed since the last one logged."""
        now = time.monotonic() if now is None else now
        with self._lock:
            w = self._windows.get(kind)
            if w is None:
                if len(self._windows) >= 256:  # kinds are fixed strings; stay bounded anyway
                    self._windows.clear()
                w = self._windows[kind] = [now, 0, 0]
            if now - w[0] >= self.period:
                w[0], w[1] = now, 0
            if w[1] >= self.burst:
                w[2] += 1
                return None
            w[1] += 1
            suppressed, w[2] = int(w[2]), 0
            return suppressed

    def log(self, logger: logging.Logger, level: int, kind: str, msg: str, *args: Any) -> bool:
        """Log unless suppressed; True if the line was logged."""
        if not logger.isEnabledFor(level):
            return False
        suppressed = self.allow(kind)
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d similar lines suppressed)"
            args = (*args, suppressed)
        logger.log(level, msg, *args)
        return True
