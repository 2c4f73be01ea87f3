"""The demo system: a web service under load that breaks and is fixed without a restart.

Run: ``bash scripts/demo.sh`` (or ``python -m examples.demo_system``; ``--help`` for
the knobs). Everything runs on beamlet's own parts, each step printed as it happens,
with the request rate printed every second:

1. a web server (beamlet.http) answers /hello, /work and /price under load from a
   built-in load generator (beamlet processes on beamlet.net, keep-alive clients);
2. a runaway request handler starts (/spin loops forever): the rate holds, because
   the schedulers preempt it;
3. ``observer.top(by="cpu")`` names it, ``observer.stack`` shows the loop, it is killed;
4. a bug in the /price server (examples/demo_handlers.py) crashes it on one request:
   that request fails, the others do not, its supervisor restarts it;
5. the fix is loaded with beamlet.code over rpc, from a node of its own
   (``python -m examples.demo_fix``: ``rpc.call(node, "beamlet_code", "load", [module,
   source])``): the running server picks it up at its next message, with no restart,
   and the rate never drops to zero;
6. a second node joins (``python -m examples.demo_worker``, a subprocess) and /work
   requests are spread over both nodes.

It ends with a summary table per phase (requests served, failed, latency p50/p99);
``--json`` also prints the summary as one line of JSON, last. The exit status is 0
only if every phase served requests and the fixed endpoint answers.
``--interactive`` pauses between steps and prints the ``beamlet top`` /
``beamlet remsh`` / dashboard commands to try from another terminal; ``--dashboard``
serves the observer's web dashboard; ``--phase-seconds``, ``--clients`` and ``--rate``
size the run (a test runs it with one-second phases).
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import beamlet
from beamlet import ANY, Down, Pid, http, net, receive, rpc, send
from beamlet.distribution.epmd import EPMDError
from beamlet.otp import Supervisor, call, which_children
from examples import demo_handlers
from examples.demo_fix import BUG, FIX, HANDLERS, fixed_source, loaded

ROOT = Path(__file__).resolve().parent.parent
BAD_REQUEST = "/price?item=cup&qty=0"


# -- output ---------------------------------------------------------------------------


def out(line: str = "") -> None:
    """One line to stdout in one write (the stats process prints from another thread)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def step(n: int, text: str) -> None:
    out(f"\n{n}. {text}")


def say(text: str) -> None:
    out(f"   {text}")


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


# -- beamlet.observer and beamlet.code: without them, those steps say so and degrade ----


def _observer() -> Any:
    try:
        from beamlet import observer
    except ImportError:
        return None
    return observer


def _code() -> Any:
    try:
        from beamlet import code
    except ImportError:
        return None
    return code


# -- the web service --------------------------------------------------------------------

#: Nodes that /work requests are spread over, besides this one (step 6 sets it).
_work_nodes: tuple[str, ...] = ()
_round_robin = itertools.count()


async def app(req: http.Request) -> http.Response:
    here = str(beamlet.node())
    if req.path == "/hello":
        return http.Response.text(f"hello from {here}\n", headers={"x-node": here})
    if req.path == "/work":
        return await work_endpoint(req, here)
    if req.path == "/price":
        return await price_endpoint(req, here)
    if req.path == "/spin":
        send("demo_main", ("runaway", beamlet.self()))
        demo_handlers.spin()  # never returns
    return http.Response.json({"error": "not found"}, status=404)


async def work_endpoint(req: http.Request, here: str) -> http.Response:
    try:
        n = int(req.query.get("n", "1000"))
    except ValueError:
        return http.Response.json({"error": "n must be an integer"}, status=400)
    if not 0 <= n <= 100_000:
        return http.Response.json({"error": "n must be in 0..100000"}, status=400)
    targets = (None, *_work_nodes)
    target = targets[next(_round_robin) % len(targets)]
    if target is None:
        result, where = demo_handlers.work(n), here
    else:
        try:
            reply = await rpc.call(target, "demo_worker", "work", [n], timeout=5.0)
            result, where = reply
        except Exception as e:  # the worker is gone, or answered {badrpc, ...}
            return http.Response.json({"error": f"worker {target}: {e!r}"}, status=502)
    return http.Response.json({"n": n, "result": result, "node": where}, headers={"x-node": where})


async def price_endpoint(req: http.Request, here: str) -> http.Response:
    item = req.query.get("item", "cup")
    try:
        qty = int(req.query.get("qty", "1"))
    except ValueError:
        return http.Response.json({"error": "qty must be an integer"}, status=400)
    if item not in demo_handlers.PRICES:
        return http.Response.json({"error": f"no such item: {item}"}, status=404)
    try:
        quote = await call("pricing", ("quote", item, qty), timeout=5.0)
    except Exception as e:  # the server crashed on this call (ServerExit), or is restarting
        return http.Response.json({"error": f"{type(e).__name__}: {e}"}, status=500)
    return http.Response.json(quote, headers={"x-node": here})


# -- an HTTP/1.1 client on beamlet.net (the load generator's) ----------------------------


async def read_response(sock: Any, buf: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    """One response off a keep-alive connection: (status, headers, body, rest of buf).
    Enough for beamlet.http's answers (Content-Length bodies)."""
    while b"\r\n\r\n" not in buf:
        data = await net.recv(sock, 0, timeout=10.0)
        if not data:
            raise EOFError("connection closed")
        buf += data
    head, _, buf = buf.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in lines:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        data = await net.recv(sock, 0, timeout=10.0)
        if not data:
            raise EOFError("connection closed in a body")
        buf += data
    return status, headers, buf[:length], buf[length:]


def request_bytes(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: demo\r\n\r\n".encode()


async def fetch(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own."""
    sock = await net.connect("127.0.0.1", port, timeout=5.0)
    try:
        await net.send(sock, request_bytes(path))
        status, headers, body, _ = await read_response(sock, b"")
        return status, headers, body
    finally:
        net.close(sock)


def decode(body: bytes) -> Any:
    """A response body: its JSON value, else its text."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def pick_request(rng: random.Random) -> tuple[str, str]:
    """(endpoint, path): the load's mix."""
    r = rng.random()
    if r < 0.4:
        return "/hello", "/hello"
    if r < 0.7:
        return "/work", f"/work?n={rng.randrange(500, 3000)}"
    return (
        "/price",
        f"/price?item={rng.choice(list(demo_handlers.PRICES))}&qty={rng.randrange(1, 30)}",
    )


async def load_client(stats: Pid, port: int, seed: int, interval: float) -> None:
    """A keep-alive client sending a request every ``interval`` seconds (0: back to
    back; it never sends before the previous answer), each reported to ``stats`` as
    ("r", endpoint, status, seconds, node that served it); status 0: no answer."""
    rng = random.Random(seed)
    sock: Any = None
    buf = b""
    next_at = time.monotonic() + rng.random() * interval
    while True:
        if interval:
            delay = next_at - time.monotonic()
            if delay > 0:
                await beamlet.sleep(delay)
            # after a stall, catch up a little, not with a burst
            next_at = max(next_at + interval, time.monotonic() - interval)
        endpoint, path = pick_request(rng)
        t0 = time.perf_counter()
        headers: dict[str, str] = {}
        try:
            if sock is None:
                sock, buf = await net.connect("127.0.0.1", port, timeout=5.0), b""
            await net.send(sock, request_bytes(path))
            status, headers, _, buf = await read_response(sock, buf)
        except (OSError, EOFError, ValueError):  # incl. TimeoutError, reset, closed
            status = 0
        if (status == 0 or headers.get("connection") == "close") and sock is not None:
            net.close(sock)
            sock = None
        send(stats, ("r", endpoint, status, time.perf_counter() - t0, headers.get("x-node", "")))


async def spin_client(port: int) -> None:
    """The request that never gets an answer: GET /spin, then wait for the connection
    to close (when its process is killed)."""
    sock = await net.connect("127.0.0.1", port, timeout=5.0)
    await net.send(sock, request_bytes("/spin"))
    try:
        while await net.recv(sock, 0):
            pass
    except (OSError, EOFError):
        pass


# -- the statistics process ------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


@dataclass
class Phase:
    name: str
    t0: float
    t1: float | None = None
    served: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    failed_by_endpoint: Counter[str] = field(default_factory=Counter)
    served_by_node: Counter[str] = field(default_factory=Counter)
    per_second: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        secs = (self.t1 or time.monotonic()) - self.t0
        return {
            "name": self.name,
            "seconds": round(secs, 2),
            "served": self.served,
            "failed": self.failed,
            "rate": round((self.served + self.failed) / secs) if secs > 0 else 0,
            "min_rate": min(self.per_second) if self.per_second else None,
            "p50_ms": None if not lat else round(1000 * (percentile(lat, 0.5) or 0), 2),
            "p99_ms": None if not lat else round(1000 * (percentile(lat, 0.99) or 0), 2),
            "failed_by_endpoint": dict(self.failed_by_endpoint),
            "served_by_node": dict(self.served_by_node),
            "per_second": list(self.per_second),
        }


async def stats_loop(show: bool) -> None:
    """Counts the load's requests per phase and prints one status line a second.
    Messages: ("r", endpoint, status, seconds, node), ("phase", name | None),
    ("report", pid) -> ("report", [phase summary, ...])."""
    phases: list[Phase] = []
    cur: Phase | None = None
    n = errors = 0
    lat: list[float] = []
    work_nodes: Counter[str] = Counter()
    last = time.monotonic()
    # The dashboard shows application figures where beamlet.observer publishes them.
    publish = getattr(_observer(), "set_metric", None)
    while True:
        now = time.monotonic()
        if now - last >= 1.0:
            rate = round((n + errors) / (now - last))
            if cur is not None:
                cur.per_second.append(rate)
                if show:
                    out(status_line(cur.name, rate, sorted(lat), errors, work_nodes))
                if publish is not None:
                    publish("demo req/s", rate)
                    publish("demo errors/s", errors)
            n = errors = 0
            lat, work_nodes = [], Counter()
            last = now
        try:
            msg = await receive(timeout=max(0.0, last + 1.0 - now))
        except TimeoutError:
            continue
        match msg:
            case ("r", endpoint, status, seconds, node):
                if cur is None:
                    continue
                if 200 <= status < 300:
                    cur.served += 1
                    n += 1
                    cur.latencies.append(seconds)
                    lat.append(seconds)
                    if node:
                        cur.served_by_node[node] += 1
                        if endpoint == "/work":
                            work_nodes[node] += 1
                else:
                    cur.failed += 1
                    errors += 1
                    cur.failed_by_endpoint[endpoint] += 1
            case ("phase", name):
                now = time.monotonic()
                if cur is not None:
                    cur.t1 = now
                cur = Phase(name, now) if name is not None else None
                if cur is not None:
                    phases.append(cur)
                n = errors = 0
                lat, work_nodes = [], Counter()
                last = now
            case ("report", pid):
                send(pid, ("report", [p.summary() for p in phases]))


def status_line(
    phase: str, rate: int, lat: list[float], errors: int, work_nodes: Counter[str]
) -> str:
    line = (
        f"   | {phase:<9} {rate:>6,} req/s   p50 {ms(percentile(lat, 0.5)):>5} ms"
        f"   p99 {ms(percentile(lat, 0.99)):>6} ms   errors {errors}"
    )
    if len(work_nodes) > 1:
        line += "   /work on " + ", ".join(f"{k} {v:,}/s" for k, v in sorted(work_nodes.items()))
    return line


# -- the worker node (a subprocess) ----------------------------------------------------


class WorkerNode:
    """``python -m examples.demo_worker`` as a subprocess; never outlives the demo: it
    is killed by ``stop`` (called on every way out, atexit included) and exits by
    itself when its standard input (a pipe from us) closes."""

    def __init__(self, name: str, cookie: str, epmd_port: int | None) -> None:
        self.name = name
        cmd = [sys.executable, "-m", "examples.demo_worker", "--node", name, "--cookie", cookie]
        if epmd_port is not None:
            cmd += ["--epmd-port", str(epmd_port)]
        env = child_env()
        # (stderr to a file: a pipe nobody reads would block the worker once full)
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        atexit.register(self.stop)

    def wait_ready(self, timeout: float = 30.0) -> str:
        """Blocks until the worker printed its ready line (run on the blocking pool);
        a worker not ready within ``timeout`` seconds is killed."""
        assert self.proc.stdout is not None
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            timer.cancel()
        if not line.startswith("ready"):
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)
            self.stderr.seek(0)
            err = self.stderr.read()[-2000:]
            self.stop()
            raise RuntimeError(f"the worker node did not start: {line!r} {err}")
        return line.split()[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            if f is not None:
                f.close()


_workers: list[WorkerNode] = []
_children: list[subprocess.Popen[str]] = []


def stop_workers() -> None:
    """Kills the subprocesses still running (the worker node, a fix loader)."""
    while _workers:
        _workers.pop().stop()
    for proc in list(_children):
        if proc.poll() is None:
            proc.kill()


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_child(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Runs ``cmd`` to its end (on the blocking pool): (exit status, its output)."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _children.append(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    finally:
        _children.remove(proc)
    return proc.returncode, out


# -- the demo ------------------------------------------------------------------------------


@dataclass
class Options:
    phase_seconds: float = 6.0
    clients: int = 16
    rate: int = 2000
    node: str = "demo@127.0.0.1"
    cookie: str = "demo"
    epmd_port: int | None = None
    port: int = 0
    interactive: bool = False
    dashboard: int | None = None
    json: bool = False
    quiet: bool = False


class Demo:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.report: dict[str, Any] = {}
        self.stats: Pid | None = None
        self.port = 0
        self.sup: Pid | None = None
        self.server: http.Server | None = None
        self.dashboard: Any = None
        self.runaway_pid: Pid | None = None
        self.clients: list[Pid] = []

    async def phase(self, name: str) -> None:
        assert self.stats is not None
        send(self.stats, ("phase", name))

    async def hold(self) -> None:
        """Lets the load run for the phase's time. A little over: the phase's last
        status line comes before the next step's title."""
        await beamlet.sleep(self.opts.phase_seconds + 0.15)

    async def pause(self) -> None:
        """With --interactive, waits for Enter (the load goes on meanwhile)."""
        if self.opts.interactive:
            try:
                await beamlet.blocking(input, "   ... press Enter for the next step ")
            except EOFError:  # no terminal: go on
                pass

    async def phases(self) -> list[dict[str, Any]]:
        """The phases' summaries so far (the current one included)."""
        assert self.stats is not None
        send(self.stats, ("report", beamlet.self()))
        return list((await receive(("report", ANY), timeout=10.0))[1])

    async def fetch_counted(self, path: str) -> tuple[int, Any]:
        """A request of our own, counted with the load's (as the endpoint's)."""
        assert self.stats is not None
        t0 = time.perf_counter()
        status, headers, body = await fetch(self.port, path)
        endpoint = path.partition("?")[0]
        send(
            self.stats, ("r", endpoint, status, time.perf_counter() - t0, headers.get("x-node", ""))
        )
        return status, decode(body)

    async def fetch_json(self, path: str) -> tuple[int, Any]:
        status, _, body = await fetch(self.port, path)
        return status, decode(body)

    # step 1
    async def start(self) -> None:
        o = self.opts
        step(1, "a web server (beamlet.http) under load from a built-in load generator")
        node = str(beamlet.node())
        code = _code()
        if code is not None:
            code.expose()  # rpc:call(Node, beamlet_code, load, [Name, Source]) (step 5)
        observer = _observer()
        if observer is not None:
            observer.expose()
            if o.interactive:
                observer.allow_remote_shell()
        self.sup = await Supervisor.start_link(
            [{"id": "pricing", "start": (pricing_start, ())}],
            strategy="one_for_one",
            intensity=10,
            period=3600,  # restarts are counted over an hour: pauses do not reset the count
            name="demo_sup",
        )
        server = await http.serve(app, port=o.port)
        self.port = server.port
        self.server = server
        self.stats = beamlet.spawn_link(stats_loop, not o.quiet)
        beamlet.register("demo_stats", self.stats)  # a name in top and on the dashboard
        await self.phase("baseline")
        interval = o.clients / o.rate if o.rate else 0.0
        # (not linked: finish() stops them, and the end of main any that are left)
        self.clients = [
            beamlet.spawn(load_client, self.stats, self.port, i, interval) for i in range(o.clients)
        ]
        say(
            f"node {node}, serving http://127.0.0.1:{self.port}/ (/hello, /work?n=, /price?item=&qty=)"
        )
        offered = f"{o.rate:,} requests/s in all" if o.rate else "requests back to back"
        say(
            f"{o.clients} keep-alive clients send {offered}"
            + ("" if o.quiet else "; every second:")
        )
        if o.dashboard is not None:
            await self.start_dashboard(o.dashboard)
        if o.interactive:
            self.print_commands()
        await self.hold()

    def print_commands(self) -> None:
        o = self.opts
        env = f"ERL_EPMD_PORT={o.epmd_port} " if o.epmd_port is not None else ""
        say("try, from another terminal (while the demo runs; the venv: . .venv/bin/activate):")
        say(f"  {env}beamlet top {o.node} --cookie {o.cookie}")
        say(f"  {env}beamlet remsh {o.node} --cookie {o.cookie}")
        say(f"  {env}beamlet dashboard {o.node} --cookie {o.cookie} --port 4001")
        say(f"  curl http://127.0.0.1:{self.port}/hello")

    async def start_dashboard(self, port: int) -> None:
        observer = _observer()
        if observer is None:
            say("(no dashboard: beamlet.observer is not installed)")
            return
        try:
            dash = observer.dashboard
        except AttributeError:
            say("(no dashboard: beamlet.observer has no dashboard)")
            return
        self.dashboard = await dash(port=port)
        say(f"dashboard on {self.dashboard.url} (schedulers, I/O rates, top, the supervision tree)")

    # step 2
    async def runaway(self) -> None:
        step(2, "a runaway request handler starts: GET /spin loops forever, never awaiting")
        await self.phase("runaway")
        beamlet.spawn(spin_client, self.port)
        _, pid = await receive(("runaway", ANY), timeout=10.0)
        self.report["runaway"] = {"pid": str(pid)}
        self.runaway_pid = pid
        say(f"the handler of /spin runs in {pid}; the other requests go on (preemption):")
        await self.hold()
        phases = await self.phases()
        base, now = phases[0]["rate"], phases[-1]["rate"]
        held = 100 * now / base if base else 0
        self.report["runaway"].update(baseline_rate=base, rate=now)
        say(
            f"the rate held: {now:,} req/s on average with the runaway, {base:,} before"
            f" ({held:.0f}%; it keeps a thread busy and takes its share of the CPU)"
        )

    # step 3
    async def observe_and_kill(self) -> None:
        step(3, 'observer.top(by="cpu") names the runaway, observer.stack shows the loop')
        await self.phase("kill")
        pid = self.runaway_pid
        assert pid is not None
        r = self.report["runaway"]
        observer = _observer()
        if observer is None:
            say("NOTE: beamlet.observer is not installed: the runaway is found by hand")
            r["named_by_top"] = False
            info = beamlet.process_info(pid) or {}
            stack = [f.name for f in info.get("current_stacktrace", [])]
            say(f"process_info({pid}): status {info.get('status')}, stack {' > '.join(stack)}")
            r["stack_has_loop"] = "spin" in stack
        else:
            rows = await observer.top(by="cpu", n=5, window=1.0)
            say(f"{'pid':<12} {'cpu%':>6} {'reductions':>10}  current")
            for row in rows:
                say(
                    f"{row['pid']!s:<12} {row['cpu_pct']:>6.0f} {row['reductions']:>10,}  "
                    f"{row['current'] or '-'}"
                )
            r["named_by_top"] = bool(rows) and rows[0]["pid"] == pid
            r["top"] = [{**row, "pid": str(row["pid"])} for row in rows[:3]]
            say(f"top's first row is {'the runaway' if r['named_by_top'] else 'NOT the runaway'}")
            frames = observer.stack(pid) or []
            say(f"observer.stack({pid}):")
            for f in frames[-3:]:
                say(f"  {f['function']} ({Path(f['file']).name}:{f['line']})")
            r["stack_has_loop"] = any(f["function"].endswith("spin") for f in frames)
        ref = beamlet.monitor(pid)
        if observer is not None:
            observer.kill(pid)
            say(f"observer.kill({pid})")
        else:
            beamlet.exit(pid, "kill")
            say(f"beamlet.exit({pid}, 'kill')")
        down = await receive(Down(ref, ANY, ANY), timeout=10.0)
        r["killed"] = down.reason == "killed"
        say(f"it is gone ({down.reason}); its connection closed with it")
        await self.hold()
        failed = (await self.phases())[-1]["failed"]
        say(f"failed requests in this phase: {failed or 'none'}")

    # step 4
    async def crash(self) -> None:
        step(4, f"a handler bug: GET {BAD_REQUEST} crashes the /price server")
        await self.phase("crash")
        before = beamlet.whereis("pricing")
        restarts_before = self.restarts()
        assert before is not None
        ref = beamlet.monitor(before)
        status, body = await self.fetch_counted(BAD_REQUEST)
        say(f"that request: {status} {body}")
        down = await receive(Down(ref, ANY, ANY), timeout=10.0)
        await which_children("demo_sup")  # a call: the supervisor has restarted it by now
        after = beamlet.whereis("pricing")
        restarts_after = self.restarts()
        say(f"the server {before} died ({_reason(down.reason)}); demo_sup restarted it: {after}")
        if restarts_after is not None:
            say(
                f"restarts made by demo_sup (observer.tree()): {restarts_before} -> {restarts_after}"
            )
        self.report["crash"] = {
            "status": status,
            "pid_before": str(before),
            "pid_after": str(after),
            "restarts_before": restarts_before,
            "restarts_after": restarts_after,
        }
        await self.hold()
        failed = (await self.phases())[-1]["failed_by_endpoint"]
        self.report["crash"]["failed_by_endpoint"] = failed
        listed = ", ".join(f"{k} {v}" for k, v in failed.items()) or "none"
        only = "only requests to /price" if set(failed) <= {"/price"} else "OTHER ENDPOINTS TOO"
        say(f"failed requests in this phase: {listed}: the crash cost {only}")

    def restarts(self) -> int | None:
        """The restarts demo_sup made (observer.tree(): a supervisor's count, in its
        intensity period), or None without beamlet.observer."""
        observer = _observer()
        if observer is None:
            return None

        def find(nodes: list[dict[str, Any]]) -> int | None:
            for n in nodes:
                if n.get("name") == "demo_sup":
                    return int(n.get("restarts", 0))
                found = find(n.get("children") or [])
                if found is not None:
                    return found
            return None

        return find(observer.tree())

    # step 5
    async def fix(self) -> None:
        step(5, "the fix is loaded with beamlet.code over rpc; no restart")
        await self.phase("fix")
        fix: dict[str, Any] = {"loaded": False}
        self.report["fix"] = fix
        before = beamlet.whereis("pricing")
        restarts_before = self.restarts()
        if _code() is None:
            say("NOTE: beamlet.code is not installed: the fix cannot be loaded")
        else:
            await self.load_fix(fix)
        status, body = await self.fetch_counted(BAD_REQUEST)
        after = beamlet.whereis("pricing")
        say(f"GET {BAD_REQUEST}: {status} {body}")
        fix.update(
            status=status,
            body=body,
            same_pid=before == after,
            restarts_before=restarts_before,
            restarts_after=self.restarts(),
        )
        say(
            f"the server is still {after} ({'no restart' if before == after else 'RESTARTED'}),"
            f" restarts {restarts_before} -> {fix['restarts_after']}"
        )
        await self.hold()
        lowest = (await self.phases())[-1]["min_rate"]
        if lowest is not None:
            say(f"the lowest rate in a second of this phase: {lowest:,} req/s")

    async def load_fix(self, fix: dict[str, Any]) -> None:
        """From another node (python -m examples.demo_fix), else from this one."""
        o = self.opts
        node = str(beamlet.node())
        cmd = [sys.executable, "-m", "examples.demo_fix", node, "--cookie", o.cookie]
        if o.epmd_port is not None:
            cmd += ["--epmd-port", str(o.epmd_port)]
        say(f"python -m examples.demo_fix {node}: a node of its own, which calls")
        say(f'  rpc.call({node!r}, "beamlet_code", "load", [{HANDLERS!r}, <fixed source>])')
        say(f"  - {BUG.strip()}")
        say(f"  + {FIX.strip()}")
        try:
            status, output = await beamlet.blocking(run_child, cmd, 60.0)
        except OSError as e:
            status, output = -1, repr(e)
        if status == 0:
            say(f"  -> {output.strip()}")
            fix.update(loaded=True, load_result=output.strip(), loaded_from="demo_fix node")
            return
        say(f"NOTE: the demo_fix node failed ({output.strip()[-300:]}); loading it from here")
        result = await rpc.call(node, "beamlet_code", "load", [HANDLERS, fixed_source()])
        say(f"  -> {result!r}")
        fix.update(loaded=loaded(result), load_result=repr(result), loaded_from="this node")

    # step 6
    async def spread(self) -> None:
        global _work_nodes
        o = self.opts
        step(6, "a second node joins; /work is spread over both nodes")
        name = o.node.replace("@", "_worker@", 1)
        say(f"starting python -m examples.demo_worker --node {name} ...")
        await self.phase("spread")
        worker = WorkerNode(name, o.cookie, o.epmd_port)
        _workers.append(worker)
        try:
            await beamlet.blocking(worker.wait_ready)
        except RuntimeError as e:
            say(f"NOTE: {e}")
            self.report["spread"] = {"worker": name, "error": str(e)}
            await self.hold()
            return
        pong = await beamlet.ping(name)
        say(f"ping {name}: {pong} (OS pid {worker.proc.pid}); nodes(): {beamlet.nodes()}")
        _work_nodes = (name,)
        self.report["spread"] = {"worker": name, "ping": str(pong), "os_pid": worker.proc.pid}
        await self.hold()
        by_node = (await self.phases())[-1]["served_by_node"]
        say(f"requests served by {name}: {by_node.get(name, 0):,} (its /work share)")

    def stop_load(self) -> None:
        """Stops the clients, and /work's calls to the worker node (before it goes)."""
        global _work_nodes
        _work_nodes = ()
        for pid in self.clients:
            beamlet.exit(pid, "kill")
        self.clients = []

    async def finish(self) -> dict[str, Any]:
        assert self.stats is not None
        send(self.stats, ("phase", None))
        phases = await self.phases()
        status, _ = await self.fetch_json(BAD_REQUEST)  # after the load: still fixed?
        self.report["fix"]["after_load"] = status
        self.stop_load()
        self.report["phases"] = phases
        seconds = [r for p in phases for r in p["per_second"]]
        self.report["min_rate"] = min(seconds) if seconds else None
        fixed = self.report["fix"].get("status") == 200 and status == 200
        self.report["ok"] = bool(phases) and all(p["served"] > 0 for p in phases) and fixed
        return self.report


def _reason(reason: Any) -> str:
    text = str(reason)
    return text if len(text) < 80 else text[:77] + "..."


async def pricing_start() -> Pid:
    """The pricing server's start function. ``demo_handlers.Pricing`` is a fully
    qualified name: once beamlet.code has loaded a new version of the module, the
    module object imported above forwards to it, so a restart starts the current
    version (and a running server takes it at its next message)."""
    return await demo_handlers.Pricing.start_link(name="pricing")


def print_summary(report: dict[str, Any]) -> None:
    out("\nsummary")
    head = f"   {'phase':<9} {'secs':>5} {'served':>8} {'failed':>6} {'req/s':>6} {'min/s':>6} {'p50 ms':>7} {'p99 ms':>7}  notes"
    out(head)
    out("   " + "-" * (len(head) - 3))
    for p in report.get("phases", []):
        notes = []
        if p["failed_by_endpoint"]:
            notes.append(
                "failed: " + ", ".join(f"{k} {v}" for k, v in p["failed_by_endpoint"].items())
            )
        nodes = p["served_by_node"]
        if len(nodes) > 1:
            notes.append("served by " + ", ".join(f"{k} {v:,}" for k, v in sorted(nodes.items())))
        out(
            f"   {p['name']:<9} {p['seconds']:>5.1f} {p['served']:>8,} {p['failed']:>6,} "
            f"{p['rate']:>6,} {p['min_rate'] if p['min_rate'] is not None else '-':>6} "
            f"{p['p50_ms'] if p['p50_ms'] is not None else '-':>7} "
            f"{p['p99_ms'] if p['p99_ms'] is not None else '-':>7}  {'; '.join(notes)}"
        )
    fix = report.get("fix", {})
    answers = fix.get("status") == 200 and fix.get("after_load") == 200
    out(f"\n   lowest rate in any second: {report.get('min_rate')} req/s")
    out(f"   the fixed endpoint answers: {answers}   -> {'OK' if report.get('ok') else 'FAILED'}")


async def main(opts: Options) -> int:
    beamlet.register("demo_main", beamlet.self())
    demo = Demo(opts)
    try:
        for step_ in (demo.start, demo.runaway, demo.observe_and_kill, demo.crash, demo.fix):
            await step_()
            await demo.pause()
        await demo.spread()
        report = await demo.finish()
    finally:
        demo.stop_load()
        stop_workers()
    print_summary(report)
    if opts.json:
        out(json.dumps(report, default=str))
    return 0 if report["ok"] else 1


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m examples.demo_system",
        description="beamlet's demo: a web service under load that breaks and is fixed live.",
    )
    p.add_argument("--phase-seconds", type=float, default=6.0, help="seconds per phase (6)")
    p.add_argument("--clients", type=int, default=16, help="concurrent keep-alive clients (16)")
    p.add_argument(
        "--rate",
        type=int,
        default=2000,
        help="requests/s the clients send in all (2000; 0: flat out)",
    )
    p.add_argument("--node", default="demo@127.0.0.1", help="this node's name")
    p.add_argument("--cookie", default="demo")
    p.add_argument("--epmd-port", type=int, default=None, help="(default: $ERL_EPMD_PORT or 4369)")
    p.add_argument("--port", type=int, default=0, help="HTTP port (0: any free port)")
    p.add_argument(
        "--interactive", action="store_true", help="pause between steps; print commands to try"
    )
    p.add_argument(
        "--dashboard", type=int, nargs="?", const=4000, default=None, metavar="PORT",
        help="serve the observer's dashboard too (port 4000)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the summary as JSON, last")
    p.add_argument("--quiet", action="store_true", help="no status line every second")
    a = p.parse_args(argv)
    if a.phase_seconds <= 0 or a.clients < 1 or a.rate < 0:
        p.error("--phase-seconds must be > 0, --clients >= 1, --rate >= 0")
    return Options(
        phase_seconds=a.phase_seconds,
        clients=a.clients,
        rate=a.rate,
        node=a.node,
        cookie=a.cookie,
        epmd_port=a.epmd_port,
        port=a.port,
        interactive=a.interactive,
        dashboard=a.dashboard,
        json=a.json,
        quiet=a.quiet,
    )


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cli(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # SIGTERM stops it as Ctrl-C does (the worker node is stopped on the way out)
    signal.signal(signal.SIGTERM, _terminate)
    # The crashes are on purpose: their reports would drown the demo's output.
    logging.basicConfig(level=logging.CRITICAL)
    try:
        return int(
            beamlet.run(main, opts, node=opts.node, cookie=opts.cookie, epmd_port=opts.epmd_port)
        )
    except KeyboardInterrupt:
        out("\ninterrupted: stopped")
        return 130
    except EPMDError as e:  # the name is taken: another demo runs
        out(f"cannot become the node {opts.node}: {e} (another demo running? try --node NAME)")
        return 1
    finally:
        stop_workers()


if __name__ == "__main__":
    sys.exit(cli())
