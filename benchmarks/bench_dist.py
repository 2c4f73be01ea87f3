"""Distribution over loopback, side by side: messages/s one way and call round
trips, for beamlet <-> Erlang, beamlet <-> beamlet and Erlang <-> Erlang (the
anchor). Run: ``python benchmarks/bench_dist.py [--messages N] [--calls N]``.

Every node is a separate OS process on 127.0.0.1 with a private EPMD. A message
is a small tuple ``{I, <<"payload">>}``; "one way" is timed from the first send
to the receiver's acknowledgement of the last message.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import beamlet  # noqa: E402
from beamlet import ANY, Atom, receive, send  # noqa: E402
from beamlet.distribution.epmd_server import EPMDServer  # noqa: E402

COOKIE = "bench-dist"

SINK = """
    register(sink, self()), io:format("ready~n"),
    Loop = fun L(0) -> ok; L(K) -> receive {_, _} -> L(K - 1) end end,
    receive {start, From, N} -> Loop(N), From ! {done, N} end,
    receive stop -> ok end.
"""


def erl_node(name: str, epmd: int, code: str) -> subprocess.Popen[str]:
    env = dict(os.environ, ERL_EPMD_PORT=str(epmd))
    proc = subprocess.Popen(
        ["erl", "-noshell", "-noinput", "-start_epmd", "false", "-name", name, "-setcookie", COOKIE, "-eval", code],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    return proc


def wait_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"node exited before printing {prefix!r}")
        if line.startswith(prefix):
            return line.strip()


def erl_to_erl(epmd: int, n: int, calls: int) -> dict[str, float]:
    sink = erl_node("bsink@127.0.0.1", epmd, SINK)
    wait_line(sink, "ready")
    code = f"""
        T = 'bsink@127.0.0.1', true = net_kernel:connect_node(T),
        T0 = erlang:monotonic_time(microsecond),
        {{sink, T}} ! {{start, self(), {n}}},
        [{{sink, T}} ! {{I, <<"payload">>}} || I <- lists:seq(1, {n})],
        receive {{done, _}} -> ok end,
        T1 = erlang:monotonic_time(microsecond),
        Lat = lists:sort([begin A = erlang:monotonic_time(nanosecond),
                                yes = gen_server:call({{net_kernel, T}}, {{is_auth, node()}}),
                                erlang:monotonic_time(nanosecond) - A end || _ <- lists:seq(1, {calls})]),
        io:format("result ~p ~p ~p~n", [{n} / ((T1 - T0) / 1.0e6),
                  lists:nth({calls} div 2, Lat) / 1000, lists:nth(({calls} * 99) div 100, Lat) / 1000]),
        halt().
    """
    src = erl_node("bsrc@127.0.0.1", epmd, code)
    _, rate, p50, p99 = wait_line(src, "result").split()
    sink.kill()
    return {"msgs_per_s": float(rate), "call_p50_us": float(p50), "call_p99_us": float(p99)}


def beamlet_to_erl(epmd: int, n: int, calls: int) -> dict[str, float]:
    sink = erl_node("esink@127.0.0.1", epmd, SINK)
    wait_line(sink, "ready")

    async def main(me: str) -> dict[str, float]:
        target = ("sink", "esink@127.0.0.1")
        assert await beamlet.connect("esink@127.0.0.1")
        t0 = time.perf_counter()
        send(target, (Atom("start"), beamlet.self(), n))
        for i in range(n):
            send(target, (i, b"payload"))
        await receive((Atom("done"), ANY), timeout=300)
        rate = n / (time.perf_counter() - t0)
        lat = []
        for _ in range(calls):
            a = time.perf_counter()
            await beamlet.distribution.gen_call(
                ("net_kernel", "esink@127.0.0.1"), (Atom("is_auth"), beamlet.node())
            )
            lat.append(time.perf_counter() - a)
        lat.sort()
        return {
            "msgs_per_s": rate,
            "call_p50_us": lat[len(lat) // 2] * 1e6,
            "call_p99_us": lat[int(len(lat) * 0.99)] * 1e6,
        }

    try:
        return beamlet.run(
            main, "bsrc@127.0.0.1", node="bsrc@127.0.0.1", cookie=COOKIE, epmd_port=epmd
        )
    finally:
        sink.kill()


def erl_to_beamlet(epmd: int, n: int) -> dict[str, float]:
    async def main(me: str) -> dict[str, float]:
        beamlet.register("sink", beamlet.self())
        code = f"""
            T = '{me}', true = net_kernel:connect_node(T),
            T0 = erlang:monotonic_time(microsecond),
            {{sink, T}} ! {{start, self(), {n}}},
            [{{sink, T}} ! {{I, <<"payload">>}} || I <- lists:seq(1, {n})],
            receive {{done, _}} -> ok end,
            T1 = erlang:monotonic_time(microsecond),
            io:format("result ~p~n", [{n} / ((T1 - T0) / 1.0e6)]), halt().
        """
        src = erl_node("esrc@127.0.0.1", epmd, code)
        _, sender, count = await receive((Atom("start"), ANY, ANY), timeout=60)
        for _ in range(count):
            await receive()
        send(sender, (Atom("done"), count))
        line = await beamlet.blocking(wait_line, src, "result")
        return {"msgs_per_s": float(line.split()[1])}

    return beamlet.run(
        main, "bsink@127.0.0.1", node="bsink@127.0.0.1", cookie=COOKIE, epmd_port=epmd
    )


PEER = """
import sys, beamlet
from beamlet import ANY, Atom, receive, send
async def main():
    beamlet.register("sink", beamlet.self())
    print("ready", flush=True)
    _, sender, n = await receive((Atom("start"), ANY, ANY))
    for _ in range(n):
        await receive()
    send(sender, (Atom("done"), n))
    await receive("stop")
beamlet.run(main, node=sys.argv[1], cookie=sys.argv[2], epmd_port=int(sys.argv[3]))
"""


def beamlet_to_beamlet(epmd: int, n: int) -> dict[str, float]:
    peer = subprocess.Popen(
        [sys.executable, "-c", PEER, "psink@127.0.0.1", COOKIE, str(epmd)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
    )  # fmt: skip
    wait_line(peer, "ready")

    async def main(me: str) -> dict[str, float]:
        target = ("sink", "psink@127.0.0.1")
        assert await beamlet.connect("psink@127.0.0.1")
        t0 = time.perf_counter()
        send(target, (Atom("start"), beamlet.self(), n))
        for i in range(n):
            send(target, (i, b"payload"))
        await receive((Atom("done"), ANY), timeout=300)
        return {"msgs_per_s": n / (time.perf_counter() - t0)}

    try:
        return beamlet.run(
            main, "psrc@127.0.0.1", node="psrc@127.0.0.1", cookie=COOKIE, epmd_port=epmd
        )
    finally:
        peer.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=2_000)
    opts = ap.parse_args()
    if shutil.which("erl") is None:
        print("erl not found: install erlang-base")
        return 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    epmd = EPMDServer("127.0.0.1", port).start()
    try:
        rows = {
            "erlang -> erlang": erl_to_erl(port, opts.messages, opts.calls),
            "beamlet -> erlang": beamlet_to_erl(port, opts.messages, opts.calls),
            "erlang -> beamlet": erl_to_beamlet(port, opts.messages),
            "beamlet -> beamlet": beamlet_to_beamlet(port, opts.messages),
        }
    finally:
        epmd.stop()
    anchor = rows["erlang -> erlang"]["msgs_per_s"]
    print(
        f"{opts.messages:,} small messages one way; {opts.calls:,} calls (gen_server:call to net_kernel)"
    )
    print(
        f"{'direction':<20}{'msgs/s':>12}{'vs erl->erl':>13}{'call p50 µs':>13}{'call p99 µs':>13}"
    )
    for k, v in rows.items():
        p50 = v.get("call_p50_us")
        p99 = v.get("call_p99_us")
        print(
            f"{k:<20}{v['msgs_per_s']:>12,.0f}{v['msgs_per_s'] / anchor:>12.2f}x"
            f"{(f'{p50:.0f}' if p50 else '-'):>13}{(f'{p99:.0f}' if p99 else '-'):>13}"
        )
    print("target: beamlet >= 100k small messages/s one way")
    _ = statistics
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
