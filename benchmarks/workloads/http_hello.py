"""HTTP hello world under wrk: beamlet.http (h11, httptools) side by side with
uvicorn (h11, httptools) on the same app; the server on one core
(``taskset -c 0``), wrk on another, 64 connections.

    python -m benchmarks.workloads.http_hello [--seconds 5] [--connections 64]
        [--servers beamlet-h11,beamlet-httptools,uvicorn-h11,uvicorn-httptools]
        [--runaways 4]

``--runaways N`` also runs each server with N runaway loops in it: N beamlet
processes that loop forever (the schedulers preempt them), or, for uvicorn,
N threads that spin in Python (a runaway there holds the loop's thread or
the GIL: it starves the server).

Each server runs as ``python -m benchmarks.workloads.http_hello --serve KIND
--port P`` in a process of its own. Prints one line per run: req/s, p50 and
p99 latency (wrk's ``--latency``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

HOST = "127.0.0.1"
BODY = b"hello"


# ---------------------------------------------------------------- servers


def serve_beamlet(port: int, parser: str, runaways: int) -> None:
    import beamlet
    from beamlet import http

    async def app(req: http.Request) -> http.Response:
        return http.Response(200, BODY, {"content-type": "text/plain"})

    async def spin() -> None:
        while True:
            pass

    async def main() -> None:
        for _ in range(runaways):
            beamlet.spawn(spin)
        await http.serve(app, port=port, parser=parser, num_acceptors=4)
        print("ready", flush=True)
        await beamlet.receive()

    beamlet.run(main, schedulers=1)


def serve_uvicorn(port: int, parser: str, runaways: int) -> None:
    import threading

    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": BODY})

    def spin() -> None:
        while True:
            pass

    for _ in range(runaways):
        threading.Thread(target=spin, daemon=True).start()
    print("ready", flush=True)
    uvicorn.run(
        app, host=HOST, port=port, http=parser, log_level="error", access_log=False, lifespan="off"
    )


# ---------------------------------------------------------------- driving wrk


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no server on port {port}")


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    result: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(m.group(1)) if m else 0.0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        result[f"p{q}_ms"] = _ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: (.*)", out)
    if m:
        result["socket_errors"] = float(sum(int(x) for x in re.findall(r"\d+", m.group(1))))
    return result


def wrk_server(module: str, serve: list[str], seconds: float, connections: int) -> dict[str, Any]:
    """Start ``python -m module --serve ... --port P`` (``serve``: the
    arguments after ``--serve``) pinned to core 0, wait for its port, warm it
    up, and measure it with wrk on core 1: wrk's figures and its command."""
    port = _free_port()
    ncpu = os.cpu_count() or 1
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and ncpu > 1 else []
    wrk_pin = ["taskset", "-c", "1"] if pin else []
    cmd = [*pin, sys.executable, "-m", module, "--serve", *serve, "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        url = f"http://{HOST}:{port}/"
        # a short warm-up, then the measured run
        subprocess.run(["wrk", "-t1", "-c8", "-d1s", url], capture_output=True, check=False)
        wrk = [
            *wrk_pin,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            url,
        ]
        out = subprocess.run(wrk, capture_output=True, text=True, check=False).stdout
        result: dict[str, Any] = {"command": " ".join(wrk)}
        result.update(parse_wrk(out))
        return result
    finally:
        server.kill()
        server.wait()


def run_one(kind: str, seconds: float, connections: int, runaways: int) -> dict[str, Any]:
    serve = [kind, "--runaways", str(runaways)]
    result = wrk_server("benchmarks.workloads.http_hello", serve, seconds, connections)
    return {"server": kind, "runaways": runaways, **result}


def _harness(runtime: str, seconds: int, connections: int, runaways: int) -> dict[str, Any]:
    """One harness run (``python -m benchmarks --group http``): both parsers."""
    if shutil.which("wrk") is None:
        return {"note": "skipped: wrk is not installed (apt-get install wrk)"}
    out: dict[str, Any] = {}
    for parser in ("h11", "httptools"):
        r = run_one(f"{runtime}-{parser}", seconds, connections, runaways)
        out[f"{parser}_rps"] = r["rps"]
        out[f"{parser}_p99_ms"] = r["p99_ms"]
    return out


def beamlet(seconds: int, connections: int, runaways: int) -> dict[str, Any]:
    """beamlet.http (h11 and httptools) under wrk."""
    return _harness("beamlet", seconds, connections, runaways)


def asyncio_(seconds: int, connections: int, runaways: int) -> dict[str, Any]:
    """uvicorn (h11 and httptools) under wrk: the harness's "asyncio" column."""
    return _harness("uvicorn", seconds, connections, runaways)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument(
        "--servers", default="beamlet-h11,beamlet-httptools,uvicorn-h11,uvicorn-httptools"
    )
    ap.add_argument("--runaways", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args(argv)
    if args.serve:
        runtime, parser = args.serve.split("-")
        serve = serve_beamlet if runtime == "beamlet" else serve_uvicorn
        serve(args.port, parser, args.runaways)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    loads = [0] if not args.runaways else [0, args.runaways]
    for runaways in loads:
        for kind in args.servers.split(","):
            r = run_one(kind, args.seconds, args.connections, runaways)
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                print(
                    f"{kind:20s} runaways={runaways}  {r['rps']:10.0f} req/s  "
                    f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                    + (f"  non-2xx {r['errors']:.0f}" if r["errors"] else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main()
