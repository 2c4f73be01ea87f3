"""Sockets owned by processes: TCP, UDP and TLS with gen_tcp's semantics.

A socket has one owner (the process that opened or accepted it, or the one it
was handed to with :func:`controlling_process`) and closes when its owner
exits. Readiness is polled by the schedulers themselves (no I/O thread). The
guide is docs/net.md; the rules are NET-* in docs/semantics.md.
"""

from typing import TYPE_CHECKING, Any

from beamlet.net._socket import (
    HIGH_WATERMARK,
    LINGER,
    LOW_WATERMARK,
    IncompleteRead,
    NotOwner,
    Socket,
    Tcp,
    TcpClosed,
    TcpError,
    TcpPassive,
    Udp,
    UdpPassive,
    accept,
    close,
    connect,
    controlling_process,
    handshake,
    listen,
    open_udp,
    peername,
    recv,
    recvfrom,
    send,
    sendto,
    setopts,
    shutdown,
    sockets,
    sockname,
)

if TYPE_CHECKING:
    from beamlet.net.listener import (
        CLOSE,
        Handler,
        listener_info,
        listener_port,
        listener_spec,
        start_listener,
        stop_listener,
    )

# The listener is built on beamlet.otp: loaded on first use, so that
# ``import beamlet.net`` does not load the OTP behaviours.
_LISTENER = frozenset(
    ("CLOSE", "Handler", "listener_info", "listener_port", "listener_spec", "start_listener",
     "stop_listener")
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LISTENER:
        from beamlet.net import listener

        value = getattr(listener, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'beamlet.net' has no attribute {name!r}")


__all__ = [
    "CLOSE",
    "HIGH_WATERMARK",
    "LINGER",
    "LOW_WATERMARK",
    "Handler",
    "IncompleteRead",
    "NotOwner",
    "Socket",
    "Tcp",
    "TcpClosed",
    "TcpError",
    "TcpPassive",
    "Udp",
    "UdpPassive",
    "accept",
    "close",
    "connect",
    "controlling_process",
    "handshake",
    "listen",
    "listener_info",
    "listener_port",
    "listener_spec",
    "open_udp",
    "peername",
    "recv",
    "recvfrom",
    "send",
    "sendto",
    "setopts",
    "shutdown",
    "sockets",
    "sockname",
    "start_listener",
    "stop_listener",
]
