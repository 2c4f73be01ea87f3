"""A Starlette hello world under wrk: beamlet.http's serve_asgi (h11,
httptools) side by side with uvicorn (h11, httptools) on the same app; the
server on one core (``taskset -c 0``), wrk on another, 64 connections.

    python -m benchmarks.workloads.http_asgi [--seconds 5] [--connections 64]
        [--servers beamlet-h11,beamlet-httptools,uvicorn-h11,uvicorn-httptools]

Each server runs as ``python -m benchmarks.workloads.http_asgi --serve KIND
--port P`` in a process of its own. Prints one line per run: req/s, p50 and
p99 latency (wrk's ``--latency``), and, for beamlet, its share of uvicorn's
req/s with the same parser (the target: >= 50%).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any

from benchmarks.workloads.http_hello import HOST, wrk_server

BODY = "hello"


def make_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse(BODY)

    return Starlette(routes=[Route("/", hello)])


# ---------------------------------------------------------------- servers


def serve_beamlet(port: int, parser: str) -> None:
    import beamlet
    from beamlet import http

    app = make_app()

    async def main() -> None:
        await http.serve_asgi(app, port=port, parser=parser, num_acceptors=4)
        print("ready", flush=True)
        await beamlet.receive()

    beamlet.run(main, schedulers=1)


def serve_uvicorn(port: int, parser: str) -> None:
    import uvicorn

    uvicorn.run(make_app(), host=HOST, port=port, http=parser, log_level="error", access_log=False)


# ---------------------------------------------------------------- driving wrk


def run_one(kind: str, seconds: float, connections: int) -> dict[str, Any]:
    result = wrk_server("benchmarks.workloads.http_asgi", [kind], seconds, connections)
    return {"server": kind, **result}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument(
        "--servers", default="beamlet-h11,beamlet-httptools,uvicorn-h11,uvicorn-httptools"
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    args = ap.parse_args(argv)
    if args.serve:
        runtime, parser = args.serve.split("-")
        serve = serve_beamlet if runtime == "beamlet" else serve_uvicorn
        serve(args.port, parser)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    results = {}
    for kind in args.servers.split(","):
        r = results[kind] = run_one(kind, args.seconds, args.connections)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(
                f"{kind:20s} {r['rps']:10.0f} req/s  "
                f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                + (f"  non-2xx {r['errors']:.0f}" if r["errors"] else ""),
                flush=True,
            )
    for kind, r in results.items():
        runtime, parser = kind.split("-")
        ref = results.get(f"uvicorn-{parser}")
        if runtime == "beamlet" and ref and ref["rps"]:
            share = r["rps"] / ref["rps"]
            line = {"server": kind, "share_of_uvicorn": round(share, 3)}
            if args.json:
                print(json.dumps(line), flush=True)
            else:
                print(f"{kind:20s} {share:6.0%} of uvicorn-{parser} (target >= 50%)", flush=True)


if __name__ == "__main__":
    main()
