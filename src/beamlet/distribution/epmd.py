"""The EPMD protocol, sans-I/O: request and response encoders and decoders.

Implements erl_dist_protocol.md, "EPMD Protocol":

* "Register a Node in EPMD": ALIVE2_REQ (120), answered by ALIVE2_X_RESP (118,
  32-bit creation) or the older ALIVE2_RESP (121, 16-bit creation);
* "Get the Distribution Port of Another Node": PORT_PLEASE2_REQ (122),
  answered by PORT2_RESP (119);
* "Get All Registered Names from EPMD": NAMES_REQ (110), answered by the
  EPMD port and ``name NAME at port PORT\\n`` lines.

Every request is preceded by a 2-byte length.  The ``parse_*`` functions take
the bytes received so far and return ``None`` while more are needed, or raise
:class:`EPMDError` for malformed data.  Sockets live in
:mod:`beamlet.distribution.epmd_client` and :mod:`beamlet.distribution.epmd_server`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ALIVE2_REQ",
    "ALIVE2_RESP",
    "ALIVE2_X_RESP",
    "DEFAULT_PORT",
    "NAMES_REQ",
    "NODE_HIDDEN",
    "NODE_NORMAL",
    "PORT2_RESP",
    "PORT_PLEASE2_REQ",
    "EPMDError",
    "NodeInfo",
    "Request",
    "alive2_req",
    "alive2_resp",
    "check_name",
    "names_req",
    "names_resp",
    "parse_alive2_resp",
    "parse_names_resp",
    "parse_port2_resp",
    "parse_request",
    "port2_resp",
    "port_please2_req",
]

DEFAULT_PORT: Final = 4369

ALIVE2_REQ: Final = 120
ALIVE2_X_RESP: Final = 118
ALIVE2_RESP: Final = 121
PORT_PLEASE2_REQ: Final = 122
PORT2_RESP: Final = 119
NAMES_REQ: Final = 110
DUMP_REQ: Final = 100
KILL_REQ: Final = 107

NODE_NORMAL: Final = 77  # 'M'
NODE_HIDDEN: Final = 72  # 'H'
PROTOCOL_TCP_IPV4: Final = 0


#: Longest request the server reads (epmd's INBUF_SIZE: 3 * MAXSYMLEN, where
#: MAXSYMLEN = 255 characters * 4 bytes).
MAX_REQUEST: Final = 3 * 255 * 4
#: Longest Extra field of ALIVE2_REQ (epmd's MAXSYMLEN).
MAX_EXTRA: Final = 255 * 4


class EPMDError(ValueError):
    """Malformed EPMD data, or an error result from EPMD."""


def check_name(name: str) -> str | None:
    """Why ``name`` (the part of a node name before ``@``) cannot be registered,
    or None if it can: 1 to 255 characters (as an atom), no ``@``, no NUL.
    epmd refuses the same (node_reg2 in epmd_srv.c), plus ``@``, which no
    node name's alive part can hold."""
    if not name:
        return "empty node name"
    if len(name) > 255:
        return f"node name longer than 255 characters ({len(name)})"
    if "@" in name:
        return "node name contains '@' (register only the part before it)"
    if "\x00" in name:
        return "node name contains NUL"
    return None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node registers and what PORT2_RESP returns.

    ``name`` is the alive part of the node name (before ``@``).
    """

    name: str
    port: int
    node_type: int = NODE_NORMAL
    protocol: int = PROTOCOL_TCP_IPV4
    highest_version: int = 6
    lowest_version: int = 6
    extra: bytes = b""


_u16 = struct.Struct(">H")
_info_head = struct.Struct(">HBBHH")  # port, type, protocol, highest, lowest


def _framed(body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise EPMDError("EPMD request too long")
    return _u16.pack(len(body)) + body


def _encode_info(info: NodeInfo) -> bytes:
    why = check_name(info.name)
    if why is not None:
        raise EPMDError(f"bad node name for EPMD: {why}")
    name = info.name.encode()
    return (
        _info_head.pack(
            info.port, info.node_type, info.protocol, info.highest_version, info.lowest_version
        )
        + _u16.pack(len(name))
        + name
        + _u16.pack(len(info.extra))
        + info.extra
    )


def _decode_info(data: bytes, pos: int, what: str) -> tuple[NodeInfo, int] | None:
    """Decode PortNo..Extra at ``pos``; None if incomplete."""
    if len(data) < pos + _info_head.size + 2:
        return None
    port, ntype, proto, high, low = _info_head.unpack_from(data, pos)
    pos += _info_head.size
    (nlen,) = _u16.unpack_from(data, pos)
    pos += 2
    if len(data) < pos + nlen + 2:
        return None
    raw = data[pos : pos + nlen]
    pos += nlen
    (elen,) = _u16.unpack_from(data, pos)
    pos += 2
    if len(data) < pos + elen:
        return None
    extra = bytes(data[pos : pos + elen])
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EPMDError(f"{what}: node name is not UTF-8") from None
    return NodeInfo(name, port, ntype, proto, high, low, extra), pos + elen


# -- requests ------------------------------------------------------------------------


def alive2_req(info: NodeInfo) -> bytes:
    """ALIVE2_REQ, framed: register ``info`` (keep the connection open)."""
    return _framed(bytes((ALIVE2_REQ,)) + _encode_info(info))


def port_please2_req(name: str) -> bytes:
    """PORT_PLEASE2_REQ, framed: where does node ``name`` (alive part) listen?"""
    raw = name.encode()
    return _framed(bytes((PORT_PLEASE2_REQ,)) + raw)


def names_req() -> bytes:
    """NAMES_REQ, framed."""
    return _framed(bytes((NAMES_REQ,)))


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request (server side). ``info`` for ALIVE2_REQ, ``name`` for
    PORT_PLEASE2_REQ."""

    code: int
    info: NodeInfo | None = None
    name: str | None = None


def parse_request(data: bytes) -> tuple[Request, int] | None:
    """Decode one framed request from ``data``: ``(request, bytes used)``, or
    None if incomplete."""
    if len(data) < 2:
        return None
    (n,) = _u16.unpack_from(data, 0)
    if len(data) < 2 + n:
        return None
    if n == 0:
        raise EPMDError("empty EPMD request")
    body = bytes(data[2 : 2 + n])
    code = body[0]
    if code == ALIVE2_REQ:
        got = _decode_info(body, 1, "ALIVE2_REQ")
        if got is None or got[1] != len(body):
            raise EPMDError("malformed ALIVE2_REQ")
        return Request(code, info=got[0]), 2 + n
    if code == PORT_PLEASE2_REQ:
        try:
            name = body[1:].decode("utf-8")
        except UnicodeDecodeError:
            raise EPMDError("PORT_PLEASE2_REQ: name is not UTF-8") from None
        return Request(code, name=name), 2 + n
    return Request(code), 2 + n


# -- responses -----------------------------------------------------------------------


def alive2_resp(result: int, creation: int) -> bytes:
    """ALIVE2_X_RESP (118): result 0 = ok, 32-bit creation."""
    return struct.pack(">BBI", ALIVE2_X_RESP, result, creation & 0xFFFFFFFF)


def parse_alive2_resp(data: bytes) -> int | None:
    """The creation from ALIVE2_X_RESP or ALIVE2_RESP; None if incomplete.
    Raises EPMDError when EPMD refused the registration (name taken)."""
    if not data:
        return None
    code = data[0]
    if code == ALIVE2_X_RESP:
        if len(data) < 6:
            return None
        _, result, creation = struct.unpack_from(">BBI", data)
    elif code == ALIVE2_RESP:
        if len(data) < 4:
            return None
        _, result, creation = struct.unpack_from(">BBH", data)
    else:
        raise EPMDError(f"unexpected reply to ALIVE2_REQ (code {code})")
    if result != 0:
        raise EPMDError(f"EPMD refused the registration (result {result}: name in use?)")
    return int(creation)


def port2_resp(info: NodeInfo | None, error: int = 1) -> bytes:
    """PORT2_RESP: ``info`` on success, else ``[119, error]``."""
    if info is None:
        return bytes((PORT2_RESP, error or 1))
    return bytes((PORT2_RESP, 0)) + _encode_info(info)


def parse_port2_resp(data: bytes) -> tuple[NodeInfo | None] | None:
    """``(info,)`` -- ``(None,)`` when EPMD does not know the node -- or
    None if incomplete."""
    if len(data) < 2:
        return None
    if data[0] != PORT2_RESP:
        raise EPMDError(f"unexpected reply to PORT_PLEASE2_REQ (code {data[0]})")
    if data[1] != 0:
        return (None,)
    got = _decode_info(data, 2, "PORT2_RESP")
    if got is None:
        return None
    return (got[0],)


def names_resp(epmd_port: int, nodes: list[tuple[str, int]]) -> bytes:
    """NAMES_RESP: the EPMD port, then ``name N at port P`` lines."""
    lines = "".join(f"name {n} at port {p}\n" for n, p in nodes)
    return struct.pack(">I", epmd_port) + lines.encode()


_NAME_LINE = re.compile(r"name (.+) at port (\d+)")


def parse_names_resp(data: bytes) -> tuple[int, list[tuple[str, int]]]:
    """Decode a complete NAMES_RESP (EPMD closes the connection after it)."""
    if len(data) < 4:
        raise EPMDError("truncated NAMES_RESP")
    (port,) = struct.unpack_from(">I", data)
    nodes = []
    for line in data[4:].decode("utf-8", "replace").splitlines():
        m = _NAME_LINE.fullmatch(line.strip())
        if m is None:
            raise EPMDError(f"malformed NAMES_RESP line {line!r}")
        nodes.append((m.group(1), int(m.group(2))))
    return port, nodes
