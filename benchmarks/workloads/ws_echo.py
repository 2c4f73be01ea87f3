"""WebSocket echo: 64 clients, each sending a small text message and waiting
for its echo, in a loop; messages echoed per second. beamlet.http's WebSocket
(``req.upgrade()`` and an echo loop in the connection's process) side by side
with uvicorn (its wsproto implementation) on a minimal ASGI echo app. The
server on one core (``taskset -c 0``), the clients in one OS process on
another (``taskset -c 1``).

    python -m benchmarks.workloads.ws_echo [--seconds 5] [--connections 64]
        [--servers beamlet,uvicorn-wsproto] [--size 16]

The clients are asyncio protocols (uvloop's loop if installed) that speak the
protocol by hand, as cheaply as it goes: a handshake, then one precomputed
masked text frame per message, and the echo counted by its length (a server
frame of a small message is 2 + n bytes). Prints msg/s and the p50/p99 of the
round trips (target: >= 50,000 msg/s).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from benchmarks.workloads.http_hello import HOST, _free_port, _wait_port

# ---------------------------------------------------------------- servers


def serve_beamlet(port: int, codec: str = "wsproto") -> None:
    import beamlet
    from beamlet import http

    async def echo(req: http.Request) -> http.Response:
        ws = await req.upgrade()
        while True:
            msg = await ws.receive()
            if isinstance(msg, str | bytes):
                await ws.send(msg)
            elif isinstance(msg, http.Close):
                return http.Response(200)

    async def main() -> None:
        await http.serve(echo, port=port, num_acceptors=4, ws=codec)
        print("ready", flush=True)
        await beamlet.receive()

    beamlet.run(main, schedulers=1)


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        msg = await receive()
        if msg["type"] != "websocket.receive":
            return
        if msg.get("text") is not None:
            await send({"type": "websocket.send", "text": msg["text"]})
        else:
            await send({"type": "websocket.send", "bytes": msg["bytes"]})


def serve_uvicorn(port: int, ws: str) -> None:
    import uvicorn

    uvicorn.run(
        asgi_echo,
        host=HOST,
        port=port,
        ws=ws,
        log_level="error",
        access_log=False,
        lifespan="off",
    )


# ---------------------------------------------------------------- clients


def _frame(payload: bytes) -> bytes:
    """A masked text frame (a client's), payload < 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


class _Client(asyncio.Protocol):
    def __init__(self, frame: bytes, echo_len: int, ready: asyncio.Future[None]) -> None:
        self.frame = frame
        self.echo_len = echo_len
        self.ready = ready
        self.head = b""
        self.upgraded = False
        self.pending = 0
        self.count = 0
        self.sent_at = 0.0
        self.rtts: list[float] = []
        self.measuring = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16))
        transport.write(
            b"GET / HTTP/1.1\r\nhost: %s\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-key: %s\r\nsec-websocket-version: 13\r\n\r\n" % (HOST.encode(), key)
        )

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(self.head[:200].decode("latin-1")))
                return
            self.upgraded = True
            data = self.head[end + 4 :]
            self.ready.set_result(None)
            self.send()
        self.pending += len(data)
        while self.pending >= self.echo_len:
            self.pending -= self.echo_len
            if self.measuring:
                self.count += 1
                self.rtts.append(time.perf_counter() - self.sent_at)
            self.send()

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.write(self.frame)


def _same(proto: _Client) -> _Client:
    return proto


async def _clients(port: int, connections: int, seconds: float, size: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    payload = b"x" * size
    frame, echo_len = _frame(payload), 2 + size
    clients = []
    for _ in range(connections):
        ready: asyncio.Future[None] = loop.create_future()
        proto = _Client(frame, echo_len, ready)
        await loop.create_connection(functools.partial(_same, proto), HOST, port)
        await ready
        clients.append(proto)
    await asyncio.sleep(1.0)  # warm-up
    for c in clients:
        c.measuring = True
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    for c in clients:
        c.measuring = False
    elapsed = time.perf_counter() - t0
    total = sum(c.count for c in clients)
    rtts = sorted(x for c in clients for x in c.rtts)
    for c in clients:
        c.transport.close()

    def q(p: float) -> float:
        return rtts[min(len(rtts) - 1, int(p * len(rtts)))] * 1000 if rtts else float("nan")

    return {"msgs": total, "msg_per_s": total / elapsed, "p50_ms": q(0.50), "p99_ms": q(0.99)}


def run_clients(port: int, connections: int, seconds: float, size: int) -> None:
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    print(json.dumps(run(_clients(port, connections, seconds, size))), flush=True)


# ---------------------------------------------------------------- driving


def run_one(kind: str, seconds: float, connections: int, size: int) -> dict[str, Any]:
    port = _free_port()
    ncpu = os.cpu_count() or 1
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and ncpu > 1 else []
    client_pin = ["taskset", "-c", "1"] if pin else []
    me = [sys.executable, "-m", "benchmarks.workloads.ws_echo"]
    cmd = [*pin, *me, "--serve", kind, "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        client = [*client_pin, *me, "--client", "--port", str(port), "--seconds", str(seconds)]
        client += ["--connections", str(connections), "--size", str(size)]
        out = subprocess.run(client, capture_output=True, text=True, check=False, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"the clients failed: {out.stderr[-2000:]}")
        result: dict[str, Any] = {"server": kind, "command": " ".join(client)}
        result.update(json.loads(out.stdout.strip().splitlines()[-1]))
        return result
    finally:
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--size", type=int, default=16, help="message bytes (< 126)")
    ap.add_argument(
        "--servers", default="beamlet,beamlet-websockets,uvicorn-wsproto,uvicorn-websockets"
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args(argv)
    if not 0 < args.size < 126:
        sys.exit("--size must be 1..125")
    if args.serve:
        if args.serve.startswith("beamlet"):
            serve_beamlet(args.port, args.serve.partition("-")[2] or "wsproto")
        else:
            serve_uvicorn(args.port, args.serve.split("-", 1)[1])
        return
    if args.client:
        run_clients(args.port, args.connections, args.seconds, args.size)
        return
    for kind in args.servers.split(","):
        r = run_one(kind, args.seconds, args.connections, args.size)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(
                f"{kind:20s} {r['msg_per_s']:10.0f} msg/s  "
                f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
