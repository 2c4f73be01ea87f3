"""beamlet.net against Erlang's gen_tcp: a beamlet process and an Erlang
process talk TCP over 127.0.0.1.

Each test starts a real ``erl`` (OTP 25 from PATH, OTP 28 from ``$ERL28`` or
../shared/tools/otp28.sh, as tests/distribution/dist_helpers.py finds them)
running ``-noshell -eval`` code; no distribution, so no EPMD. The Erlang side
prints what the Python side needs (its listening port, its verdict) on stdout
and halts with 0 when all its checks passed, 1 (after a ``FAILED`` line) when
one did not. Nothing sleeps: every wait, on either side, has a deadline of a
few seconds, so a failure fails rather than hangs.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import queue
import random
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import beamlet
from beamlet import ANY, net

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
OTPS = ["25", "28"]
#: Seconds any single wait may take, on either side.
T = 5.0
#: The same deadline in Erlang's milliseconds.
T_MS = int(T * 1000)


# ---------------------------------------------------------------- erl


@functools.cache
def erl_path(version: str) -> str | None:
    """OTP 25: the ``erl`` on PATH; OTP 28: ``$ERL28`` or what
    ../shared/tools/otp28.sh prints (the logic of dist_helpers.erl_path)."""
    if version == "25":
        return shutil.which("erl")
    if os.environ.get("ERL28"):
        path = os.environ["ERL28"]
        return path if os.access(path, os.X_OK) else None
    for script in (ROOT.parent / "shared/tools/otp28.sh", Path("/work/shared/tools/otp28.sh")):
        if script.exists():
            try:
                out = subprocess.run(
                    ["bash", str(script)], capture_output=True, text=True, timeout=300, check=True
                )
            except (subprocess.SubprocessError, OSError):
                return None
            return out.stdout.strip() or None
    return None


def _script(body: str) -> str:
    """An ``-eval`` program: run ``body`` (comma-separated expressions), halt
    with 0 if it returned, print ``FAILED ...`` and halt with 1 if it raised."""
    return (
        f"Main = fun() -> {body} end, "
        "try Main() of _ -> halt(0) "
        'catch Class:Reason:Stack -> io:format("FAILED ~p:~p~n~p~n", [Class, Reason, Stack]), '
        "halt(1) end."
    )


class Erl:
    """A running ``erl -noshell -eval`` program whose stdout (and stderr) lines
    are collected, so a test can wait for what it prints."""

    def __init__(self, exe: str, body: str, cwd: Path) -> None:
        env = dict(os.environ, ERL_CRASH_DUMP_BYTES="0")
        for var in ("ERL_FLAGS", "ERL_AFLAGS", "ERL_ZFLAGS"):
            env.pop(var, None)
        self.proc = subprocess.Popen(
            [exe, "-noshell", "-noinput", "-eval", _script(body)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # the end of its output

    def expect(self, prefix: str, timeout: float = T) -> str:
        """Wait for a line starting with ``prefix``; fail at once if erl's
        output ends first, or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"erl printed no line starting with {prefix!r} within {timeout}s; "
                    f"output so far: {self.output!r}"
                ) from None
            if line is None:
                self._lines.put(None)
                raise AssertionError(
                    f"erl ended (status {self.proc.wait(T)}) without a line starting with "
                    f"{prefix!r}; its output: {self.output!r}"
                )
            self.output.append(line)
            if line.startswith(prefix):
                return line

    def finish(self, timeout: float = T) -> tuple[int, list[str]]:
        """Wait for erl to halt; its exit status and all its output."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"erl did not halt within {timeout}s; output so far: {self.output!r}"
            ) from None
        self._pump_thread.join(timeout)
        while True:
            line = self._lines.get_nowait() if not self._lines.empty() else None
            if line is None:
                break
            self.output.append(line)
        return status, self.output

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(params=OTPS, ids=[f"otp{v}" for v in OTPS])
def erl(request: pytest.FixtureRequest) -> str:
    path = erl_path(request.param)
    if path is None:
        pytest.skip(f"no OTP {request.param} erl available")
    return path


@pytest.fixture
def start_erl(erl: str, tmp_path: Path) -> Iterator[Callable[[str], Erl]]:
    """``start_erl(body)`` runs ``body`` in that erl; killed at teardown.
    Safe to call from a beamlet process through ``beamlet.blocking``."""
    started: list[Erl] = []

    def start(body: str) -> Erl:
        node = Erl(erl, body, tmp_path)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def run(main: Callable[..., object], *args: object) -> object:
    return beamlet.run(main, *args, schedulers=2)


def assert_same(got: bytes, want: bytes, what: str) -> None:
    """Byte-for-byte equality, reported by the first difference (a 1 MB diff
    helps nobody)."""
    if got == want:
        return
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if at is None:
        at = min(len(got), len(want))
    raise AssertionError(
        f"{what}: {len(got)} bytes, {len(want)} expected; first difference at byte {at}: "
        f"got {got[at : at + 16]!r}, expected {want[at : at + 16]!r}"
    )


def _status(erl_run: tuple[int, list[str]]) -> list[str]:
    status, out = erl_run
    assert status == 0, f"erl halted with {status}: {out!r}"
    return out


def _line(out: list[str], prefix: str) -> str:
    lines = [line for line in out if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one line starting with {prefix!r} in {out!r}"
    return lines[0]


# ------------------------------------------------- 1. beamlet client, Erlang echo server

ECHO_SERVER = """
{ok, L} = gen_tcp:listen(0, [binary, {packet, @PACKET@}, {active, false},
                             {ip, {127,0,0,1}}, {send_timeout, @T@}]),
{ok, Port} = inet:port(L),
io:format("PORT ~b~n", [Port]),
{ok, S} = gen_tcp:accept(L, @T@),
Echo = fun Echo(Reads, Bytes) ->
    case gen_tcp:recv(S, 0, @T@) of
        {ok, Data} -> ok = gen_tcp:send(S, Data), Echo(Reads + 1, Bytes + byte_size(Data));
        {error, closed} -> {Reads, Bytes}
    end
end,
{Reads, Bytes} = Echo(0, 0),
io:format("CLOSED ~b ~b~n", [Reads, Bytes])
"""

_rng = random.Random(20240501)
ECHO_MESSAGES = [
    b"hello",
    b"",  # an empty packet ({packet, 4} only: a bare zero header)
    bytes(range(256)),
    b"\x00\x00\x00\x05fake header inside the data",
    _rng.randbytes(1 << 20),  # 1 MiB
    b"the one after the big one",
    _rng.randbytes(70_000),
]


async def _send_pieces(sock: net.Socket, pieces: list[bytes], to: beamlet.Pid, i: int) -> None:
    for piece in pieces:
        await net.send(sock, piece, timeout=T)
    beamlet.send(to, ("sent", i))


async def _recv_exactly_by_chunks(sock: net.Socket, n: int) -> bytes:
    """Passive ``recv(sock, 0)`` (whatever is there) until ``n`` bytes came."""
    got = bytearray()
    while len(got) < n:
        chunk = await net.recv(sock, 0, timeout=T)
        assert chunk, f"end of stream after {len(got)} of {n} bytes"
        got += chunk
    return bytes(got)


async def _echo_client(port: int, packet: int, messages: list[bytes]) -> int:
    sock = await net.connect("127.0.0.1", port, timeout=T)
    assert net.peername(sock) == ("127.0.0.1", port)
    me = beamlet.self()
    for i, msg in enumerate(messages):
        wire = struct.pack(">I", len(msg)) + msg if packet == 4 else msg
        # Another process sends (in pieces: a header split in two, too) while
        # this one, the owner, reads the echo: a 1 MiB message echoed as it
        # arrives must not deadlock on full buffers.
        pieces = [p for p in (wire[:2], wire[2:7], wire[7:]) if p]
        beamlet.spawn_link(_send_pieces, sock, pieces, me, i)
        if packet == 4:
            (n,) = struct.unpack(">I", await net.recv(sock, 4, timeout=T))
            assert n == len(msg), f"message {i}: echo header says {n} bytes, sent {len(msg)}"
            echo = await net.recv(sock, n, timeout=T) if n else b""
        else:
            echo = await _recv_exactly_by_chunks(sock, len(msg))
        await beamlet.receive(("sent", i), timeout=T)
        assert_same(echo, msg, f"echo of message {i}")
    # Nothing more than the echoes came.
    with pytest.raises(TimeoutError):
        await net.recv(sock, 0, timeout=0.05)
    net.close(sock)
    return len(messages)


@pytest.mark.parametrize("packet", [0, 4], ids=["raw", "packet4"])
def test_beamlet_client_and_erlang_echo_server(start_erl: Callable[[str], Erl], packet: int):
    node = start_erl(ECHO_SERVER.replace("@PACKET@", str(packet)).replace("@T@", str(T_MS)))
    port = int(node.expect("PORT ").split()[1])
    messages = ECHO_MESSAGES if packet == 4 else [m for m in ECHO_MESSAGES if m]

    assert run(_echo_client, port, packet, messages) == len(messages)

    out = _status(node.finish())
    _, reads, total = _line(out, "CLOSED ").split()
    assert int(total) == sum(map(len, messages))  # {packet, 4}: without the headers
    if packet == 4:
        # gen_tcp saw exactly the packets the length prefixes framed.
        assert int(reads) == len(messages)


# ------------------------------------------- 2. beamlet listener, Erlang gen_tcp clients

ECHO_CLIENTS = """
Client = fun(I) ->
    {ok, S} = gen_tcp:connect({127,0,0,1}, @PORT@,
                              [binary, {packet, 0}, {active, false}, {send_timeout, @T@}], @T@),
    Msgs = [<<"hello from client ", (integer_to_binary(I))/binary>>,
            binary:copy(<<I, 0, 1, 2, 3, 4, 5, 255>>, 131072 + I),
            list_to_binary(lists:seq(0, 255))],
    lists:foreach(fun(M) ->
                      ok = gen_tcp:send(S, M),
                      {ok, M} = gen_tcp:recv(S, byte_size(M), @T@)
                  end, Msgs),
    {error, timeout} = gen_tcp:recv(S, 0, 50),
    ok = gen_tcp:close(S),
    lists:sum([byte_size(M) || M <- Msgs])
end,
Watch = [spawn_monitor(fun() -> exit({done, Client(I)}) end) || I <- lists:seq(1, @N@)],
Totals = [receive
              {'DOWN', Ref, process, Pid, {done, Total}} -> Total;
              {'DOWN', Ref, process, Pid, Why} -> error({client_failed, Why})
          after 2 * @T@ -> error({client_timeout, Pid})
          end || {Pid, Ref} <- Watch],
io:format("ECHOED ~w~n", [Totals])
"""


async def _acceptor(ls: net.Socket, main: beamlet.Pid, n: int) -> None:
    for _ in range(n):
        sock = await net.accept(ls, timeout=T)
        pid = beamlet.spawn(_echo_handler, main)
        net.controlling_process(sock, pid)
        beamlet.send(pid, ("go", sock))


async def _echo_handler(main: beamlet.Pid) -> None:
    beamlet.link(main)  # a failed check here fails the test at once
    _, sock = await beamlet.receive(("go", ANY), timeout=T)
    net.setopts(sock, active=True)
    echoed = 0
    while True:
        msg = await beamlet.receive(timeout=T)
        if type(msg) is net.Tcp and msg.socket is sock:
            await net.send(sock, msg.data, timeout=T)
            echoed += len(msg.data)
        elif type(msg) is net.TcpClosed and msg.socket is sock:
            break
        else:
            raise AssertionError(f"unexpected message {msg!r}")
    # The socket is closed now (exit_on_close, as inet does).
    with pytest.raises(OSError) as closed:
        await net.send(sock, b"too late")
    assert closed.value.errno == errno.EBADF
    beamlet.send(main, ("closed", echoed))


async def _listener_main(start: Callable[[int], object], n: int) -> list[int]:
    ls = net.listen(0)
    host, port = net.sockname(ls)
    assert host == "127.0.0.1" and port > 0
    beamlet.spawn_link(_acceptor, ls, beamlet.self(), n)
    await beamlet.blocking(start, port)
    totals = []
    for _ in range(n):
        _, echoed = await beamlet.receive(("closed", ANY), timeout=2 * T)
        totals.append(echoed)
    net.close(ls)
    return sorted(totals)


def test_erlang_clients_and_beamlet_listener(start_erl: Callable[[str], Erl]):
    n = 3
    nodes: list[Erl] = []

    def start(port: int) -> None:
        code = ECHO_CLIENTS.replace("@PORT@", str(port)).replace("@N@", str(n))
        nodes.append(start_erl(code.replace("@T@", str(T_MS))))

    totals = run(_listener_main, start, n)

    out = _status(nodes[0].finish())
    erlang_totals = _line(out, "ECHOED ").removeprefix("ECHOED ")
    want = sorted(5 + len(str(i)) + 13 + 8 * (131072 + i) + 256 for i in range(1, n + 1))
    assert sorted(map(int, erlang_totals.strip("[]").split(","))) == want
    # Each connection's process echoed exactly what its client sent, then
    # got TcpClosed when the client closed.
    assert totals == want


# ------------------------------- 3. half-close: beamlet shuts down writing, Erlang replies

HALF_CLOSE_SERVER = """
{ok, L} = gen_tcp:listen(0, [binary, {packet, 0}, {active, false}, {exit_on_close, false},
                             {ip, {127,0,0,1}}, {send_timeout, @T@}]),
{ok, Port} = inet:port(L),
io:format("PORT ~b~n", [Port]),
{ok, S} = gen_tcp:accept(L, @T@),
Data = @READ_ALL@,
io:format("EOF ~b~n", [byte_size(Data)]),
ok = gen_tcp:send(S, [<<(byte_size(Data)):32>>, erlang:md5(Data), Data]),
ok = gen_tcp:close(S)
"""

READ_ALL = {
    # recv returns {error, closed} once the data is read and the peer shut down.
    "passive": """(fun Read(Acc) ->
                      case gen_tcp:recv(S, 0, @T@) of
                          {ok, Chunk} -> Read([Acc, Chunk]);
                          {error, closed} -> iolist_to_binary(Acc)
                      end
                  end)([])""",
    # An active socket gets {tcp_closed, S} after the last {tcp, S, _}.
    "active": """begin
                    ok = inet:setopts(S, [{active, true}]),
                    (fun Read(Acc) ->
                         receive
                             {tcp, S, Chunk} -> Read([Acc, Chunk]);
                             {tcp_closed, S} -> iolist_to_binary(Acc)
                         after @T@ -> error(no_tcp_closed)
                         end
                     end)([])
                end""",
}


async def _half_closing_client(port: int, payload: bytes) -> tuple[int, bytes, bytes]:
    sock = await net.connect("127.0.0.1", port, timeout=T)
    await net.send(sock, payload, timeout=T)  # returns with up to 64 KiB still queued
    net.shutdown(sock, "write")  # the peer's EOF comes after what is queued
    size, digest = struct.unpack(">I16s", await net.recv(sock, 20, timeout=T))
    body = await net.recv(sock, size, timeout=T)
    # Then the end of the stream, for good.
    assert await net.recv(sock, 0, timeout=T) == b""
    assert await net.recv(sock, 0, timeout=T) == b""
    with pytest.raises(net.IncompleteRead):
        await net.recv(sock, 1, timeout=T)
    net.close(sock)
    return size, digest, body


@pytest.mark.parametrize("erlang_mode", ["passive", "active"])
def test_beamlet_half_closes_and_erlang_still_replies(
    start_erl: Callable[[str], Erl], erlang_mode: str
):
    code = HALF_CLOSE_SERVER.replace("@READ_ALL@", READ_ALL[erlang_mode])
    node = start_erl(code.replace("@T@", str(T_MS)))
    port = int(node.expect("PORT ").split()[1])
    payload = random.Random(7).randbytes(2 * 1024 * 1024 + 3)

    size, digest, body = run(_half_closing_client, port, payload)

    out = _status(node.finish())
    assert _line(out, "EOF ") == f"EOF {len(payload)}"
    assert size == len(payload)
    assert digest == hashlib.md5(payload).digest()
    assert_same(body, payload, "the reply sent after the half-close")


# ---------------------- 3b. half-close the other way: Erlang shuts down writing, beamlet replies

HALF_CLOSING_CLIENT = """
{ok, S} = gen_tcp:connect({127,0,0,1}, @PORT@,
                          [binary, {packet, 0}, {active, false}, {send_timeout, @T@}], @T@),
Payload = binary:copy(<<"0123456789abcdef">>, 65536),
ok = gen_tcp:send(S, Payload),
ok = gen_tcp:shutdown(S, write),
Reply = (fun Read(Acc) ->
             case gen_tcp:recv(S, 0, @T@) of
                 {ok, Chunk} -> Read([Acc, Chunk]);
                 {error, closed} -> iolist_to_binary(Acc)
             end
         end)([]),
Want = <<(byte_size(Payload)):32, (erlang:md5(Payload))/binary>>,
case Reply of
    Want -> io:format("REPLY_OK ~b~n", [byte_size(Payload)]);
    _ -> error({bad_reply, Reply, Want})
end
"""


async def _replying_listener(start: Callable[[int], object]) -> tuple[int, bytes]:
    ls = net.listen(0)
    await beamlet.blocking(start, net.sockname(ls)[1])
    sock = await net.accept(ls, timeout=T)
    net.close(ls)
    got = bytearray()
    while chunk := await net.recv(sock, 0, timeout=T):
        got += chunk
    # The peer shut down its writing only: this side still sends.
    await net.send(sock, struct.pack(">I", len(got)) + hashlib.md5(got).digest(), timeout=T)
    net.close(sock)  # flushed before the descriptor closes
    return len(got), hashlib.md5(got).digest()


def test_erlang_half_closes_and_beamlet_still_replies(start_erl: Callable[[str], Erl]):
    nodes: list[Erl] = []

    def start(port: int) -> None:
        code = HALF_CLOSING_CLIENT.replace("@PORT@", str(port)).replace("@T@", str(T_MS))
        nodes.append(start_erl(code))

    size, digest = run(_replying_listener, start)

    payload = b"0123456789abcdef" * 65536
    assert (size, digest) == (len(payload), hashlib.md5(payload).digest())
    out = _status(nodes[0].finish())
    assert _line(out, "REPLY_OK ") == f"REPLY_OK {len(payload)}"
