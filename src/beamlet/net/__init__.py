"""Sockets owned by processes: TCP, UDP and TLS with gen_tcp's semantics.

A socket has one owner (the process that opened or accepted it, or the one it
was handed to with :func:`controlling_process`) and closes when its owner
exits. Readiness is polled by the schedulers themselves (no I/O thread). The
guide is docs/net.md; the rules are NET-* in docs/semantics.md.
"""

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

__all__ = [
    "HIGH_WATERMARK",
    "LINGER",
    "LOW_WATERMARK",
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
]
