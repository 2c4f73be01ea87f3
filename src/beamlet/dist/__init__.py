"""Erlang distribution for beamlet.

The protocol layers are sans-I/O: they turn bytes into values and events and
values into bytes, and never touch a socket.

* :mod:`beamlet.dist.etf` -- the External Term Format (erl_ext_dist.md).
* :mod:`beamlet.dist.framing` -- 2- and 4-byte length framing, ticks.
* :mod:`beamlet.dist.handshake` -- the version 6 connection handshake.
* :mod:`beamlet.dist.control` -- control messages, distribution header, fragments.
* :mod:`beamlet.dist.epmd` -- the EPMD protocol messages.

Only :mod:`beamlet.dist.epmd_client` and :mod:`beamlet.dist.epmd_server` own
sockets (blocking sockets with timeouts, threads for the server).
"""
