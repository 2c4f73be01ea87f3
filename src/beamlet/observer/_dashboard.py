"""The web dashboard: ``await observer.dashboard(port=4000)``.

Theory of operation
-------------------
:func:`dashboard` starts a supervisor (not linked to the caller: the dashboard
lives until :meth:`Dashboard.stop` or the end of the runtime) with one child,
a GenServer that runs a ``beamlet.http`` server (itself a supervision tree of
acceptors and connections). The server answers two paths: ``/`` is one page
(HTML, CSS and JavaScript inline: no CDN, nothing fetched from elsewhere) and
``/ws`` a WebSocket.

Each WebSocket is served by its connection's process, which starts a *sampler*
process: the sampler calls ``top(by, n, window=interval)`` (which itself takes
``interval`` seconds: the window is the tick), ``system()`` and ``tree()`` --
locally, or on a remote node through ``rpc.call(node, "beamlet_observer", fn,
args)`` -- and sends the JSON text of an update to the connection process,
then waits for it to ask for the next one, so at most one update is in flight
and a browser that reads slowly slows its sampler down instead of filling a
mailbox. The connection process therefore stays free to answer the page at
once (a sort order, a kill). The page keeps the history for its charts itself.

A kill (or info) request names a pid as the page shows it; only a pid of the
rows last sent to that page is accepted (the connection keeps their map), so
a page cannot reach a process it was not shown.

Bounds (what a browser can make the node hold): ``max_connections`` HTTP and
WebSocket connections at once (16; the next ones wait in the backlog), a
request head of 16 KiB, a request body or WebSocket message of 4 KiB (a bigger
message closes the WebSocket with 1009), at most 100 rows per update, at most
500 nodes of the supervision tree, 100 frames of a stack, one update in
flight per WebSocket. The protocol is described in docs/observer.md.

Where it listens: 127.0.0.1 unless ``host`` says otherwise (a warning is
logged then: whoever reaches the port can kill processes). Against DNS
rebinding and cross-site WebSockets, a loopback dashboard only answers
requests whose ``Host`` is a loopback name, and a WebSocket whose ``Origin``
(browsers always send it) is not this page's is refused with 403.
"""

from __future__ import annotations

import importlib
import inspect
import ipaddress
import itertools
import json
import logging
import math
import os
import time
from typing import Any

import beamlet
from beamlet import ANY, Down, Pid, http
from beamlet._kernel.copying import register_immutable
from beamlet.otp import ChildSpec, GenServer, StartError, Stop, Supervisor
from beamlet.otp import stop as _stop_server

logger = logging.getLogger("beamlet.observer")

SORT_KEYS = ("cpu", "memory", "msgq", "reductions")
DEFAULT_ROWS = 20
MAX_ROWS = 100
MAX_TREE_NODES = 500
MAX_FRAMES = 100
MAX_MESSAGE = 4096
MAX_CONNECTIONS = 16
RPC_MODULE = "beamlet_observer"

_UPDATE = "$dashboard_update"
_NEXT = "$dashboard_next"
_SORT = "$dashboard_sort"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
_names = itertools.count(1)


# ---------------------------------------------------------------- the data


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON data: pids (and other terms) as their text, tuples as
    lists, non-finite floats as null."""
    if depth > 64:
        return None
    if value is None or isinstance(value, bool | int | str):
        return value if type(value) in (bool, int, str) or value is None else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _bad_rpc(result: Any) -> str | None:
    """The reason of an ``rpc.call`` that failed (``(badrpc, reason)``), else None."""
    if isinstance(result, tuple) and len(result) == 2 and result[0] == "badrpc":
        return f"badrpc: {result[1]!r}"
    return None


class Source:
    """Where the figures come from: this node's ``beamlet.observer``, or
    ``node``'s through ``rpc.call(node, "beamlet_observer", ...)``."""

    __slots__ = ("node",)

    def __init__(self, node: str | None = None) -> None:
        self.node = node

    async def _call(self, fn: str, args: list[Any], timeout: float = 10.0) -> Any:
        if self.node is None:
            observer = importlib.import_module("beamlet.observer")
            result = getattr(observer, fn)(*args)
            if inspect.isawaitable(result):
                result = await result
            return result
        result = await beamlet.rpc.call(self.node, RPC_MODULE, fn, args, timeout=timeout)
        reason = _bad_rpc(result)
        if reason is not None:
            raise RuntimeError(f"{fn} on {self.node}: {reason}")
        return result

    async def top(self, by: str, n: int, window: float) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._call("top", [by, n, window], window + 10.0)
        return rows

    async def system(self) -> dict[str, Any]:
        info: dict[str, Any] = await self._call("system", [])
        return info

    async def tree(self) -> list[dict[str, Any]]:
        roots: list[dict[str, Any]] = await self._call("tree", [])
        return roots

    async def info(self, pid: Pid) -> dict[str, Any] | None:
        info: dict[str, Any] | None = await self._call("info", [pid])
        return info

    async def kill(self, pid: Pid) -> bool:
        return bool(await self._call("kill", [pid]))


def _prune_tree(roots: list[Any], budget: int) -> tuple[list[Any], int]:
    """The tree with at most ``budget`` nodes (breadth first), and how many
    were left out."""
    total = 0
    kept = 0
    out: list[Any] = []
    queue: list[tuple[Any, list[Any]]] = [(node, out) for node in roots]
    while queue:
        nxt: list[tuple[Any, list[Any]]] = []
        for node, parent in queue:
            total += 1
            if kept >= budget or not isinstance(node, dict):
                continue
            kept += 1
            copy = {k: v for k, v in node.items() if k != "children"}
            copy["children"] = []
            parent.append(copy)
            nxt.extend((child, copy["children"]) for child in node.get("children") or [])
        queue = nxt
    return out, total - kept


async def sample(source: Source, by: str, n: int, window: float) -> tuple[str, dict[str, Pid]]:
    """One update: its JSON text, and the pids of its rows by their text."""
    update: dict[str, Any] = {"type": "update", "by": by, "node": source.node}
    pids: dict[str, Pid] = {}
    try:
        rows = await source.top(by, n, window)
        update["top"] = rows[:MAX_ROWS]
        for row in update["top"]:
            pid = row.get("pid")
            if isinstance(pid, Pid):
                pids[str(pid)] = pid
        update["system"] = await source.system()
        tree, left_out = _prune_tree(await source.tree(), MAX_TREE_NODES)
        update["tree"] = tree
        update["tree_left_out"] = left_out
    except Exception as e:  # shown on the page; the next tick tries again
        update["error"] = _error(e)
        await beamlet.sleep(window)
    update["time"] = time.time()
    return json.dumps(_json_safe(update), allow_nan=False), pids


async def _sampler(conn: Pid, source: Source, by: str, n: int, window: float) -> None:
    """Samples for one WebSocket, one update in flight: sends ``(_UPDATE,
    text, pids)`` to ``conn`` and waits for ``(_NEXT,)``; ``(_SORT, by, n)``
    changes what the next sample ranks by. Ends with ``conn``."""
    ref = beamlet.monitor(conn)
    while True:
        text, pids = await sample(source, by, n, window)
        beamlet.send(conn, (_UPDATE, text, pids))
        while True:
            msg = await beamlet.receive()
            match msg:
                case (str(tag),) if tag == _NEXT:
                    break
                case (str(tag), str(new_by), int(new_n)) if tag == _SORT:
                    by, n = new_by, new_n
                case Down(ref=r) if r == ref:
                    return
                case _:
                    pass


# ---------------------------------------------------------------- the server


class _Config:
    __slots__ = ("host", "interval", "source")

    def __init__(self, host: str, source: Source, interval: float) -> None:
        self.host = host
        self.source = source
        self.interval = interval


def _host_allowed(cfg: _Config, req: http.Request) -> bool:
    if not _is_loopback(cfg.host):
        return True
    host = req.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in _LOOPBACK_NAMES


def _origin_allowed(req: http.Request) -> bool:
    origin = req.headers.get("origin")
    if origin is None:  # not a browser: nothing to forge
        return True
    host = req.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def _app(cfg: _Config) -> Any:
    async def app(req: http.Request) -> http.Response:
        if not _host_allowed(cfg, req):
            return http.Response(403, b"forbidden host\n", {"content-type": "text/plain"})
        if req.path == "/" and req.method in ("GET", "HEAD"):
            return http.Response.html(PAGE, headers=_PAGE_HEADERS)
        if req.path == "/ws":
            if not _origin_allowed(req):
                return http.Response(403, b"forbidden origin\n", {"content-type": "text/plain"})
            return await _websocket(cfg, req)
        return http.Response(404, b"not found\n", {"content-type": "text/plain"})

    return app


_PAGE_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "content-security-policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
}


def _parse_request(text: Any) -> dict[str, Any] | str:
    """A request from the page, or the error to answer."""
    if not isinstance(text, str):
        return "requests are JSON text"
    try:
        req = json.loads(text)
    except ValueError:
        return "requests are JSON text"
    if not isinstance(req, dict) or not isinstance(req.get("type"), str):
        return "a request is an object with a type"
    return req


async def _websocket(cfg: _Config, req: http.Request) -> http.Response:
    ws = await req.upgrade()
    by, n = "cpu", DEFAULT_ROWS
    # Linked: a sampler that crashes takes the connection down (the page
    # reconnects and gets a new one); unlinked before it is killed at the end.
    sampler = beamlet.spawn_link(_sampler, beamlet.self(), cfg.source, by, n, cfg.interval)
    shown: dict[str, Pid] = {}
    try:
        hello = {
            "type": "hello",
            "node": cfg.source.node,
            "by": by,
            "n": n,
            "interval": cfg.interval,
            "sort_keys": list(SORT_KEYS),
            "max_rows": MAX_ROWS,
        }
        await ws.send(json.dumps(hello))
        while True:
            msg = await ws.receive()
            match msg:
                case http.Close():
                    return http.Response(200)
                case (str(tag), str(text), dict(pids)) if tag == _UPDATE:
                    shown = pids
                    await ws.send(text)
                    beamlet.send(sampler, (_NEXT,))
                case str() | bytes():
                    answer = await _answer(cfg, _parse_request(msg), shown)
                    await ws.send(json.dumps(answer))
                    if answer["type"] == "sort":
                        beamlet.send(sampler, (_SORT, answer["by"], answer["n"]))
                case beamlet.Exit(pid=pid) if pid == sampler:  # (if this process traps exits)
                    await ws.close(1011, "the sampler failed")
                    return http.Response(200)
                case _:
                    pass
    except http.ConnectionClosed:
        return http.Response(200)
    finally:
        beamlet.unlink(sampler)
        beamlet.exit(sampler, "kill")


async def _answer(cfg: _Config, req: dict[str, Any] | str, shown: dict[str, Pid]) -> dict[str, Any]:
    if isinstance(req, str):
        return {"type": "error", "error": req}
    kind = req["type"]
    if kind == "sort":
        by = req.get("by")
        n = req.get("n", DEFAULT_ROWS)
        if by not in SORT_KEYS:
            return {"type": "error", "error": f"by must be one of {', '.join(SORT_KEYS)}"}
        if type(n) is not int or not 1 <= n <= MAX_ROWS:
            return {"type": "error", "error": f"n must be an int from 1 to {MAX_ROWS}"}
        return {"type": "sort", "by": by, "n": n}
    if kind in ("kill", "info"):
        text = req.get("pid")
        pid = shown.get(text) if isinstance(text, str) else None
        if pid is None:
            error = "not a pid of the table shown"
            if kind == "info":
                return {"type": "info", "pid": _json_safe(text), "info": None, "error": error}
            return {"type": "kill", "pid": _json_safe(text), "ok": False, "error": error}
        if kind == "info":
            try:
                info = await cfg.source.info(pid)
            except Exception as e:
                return {"type": "info", "pid": text, "info": None, "error": _error(e)}
            if info is not None and isinstance(info.get("stack"), list):
                info["stack"] = info["stack"][-MAX_FRAMES:]  # the innermost frames
            return {
                "type": "info",
                "pid": text,
                "info": _json_safe(info),
                "error": None if info is not None else "not alive",
            }
        try:
            ok = await cfg.source.kill(pid)
        except Exception as e:
            return {"type": "kill", "pid": text, "ok": False, "error": _error(e)}
        if ok:
            logger.warning("dashboard: %s killed from the web page", text)
        return {"type": "kill", "pid": text, "ok": ok, "error": None if ok else "not alive"}
    return {"type": "error", "error": f"unknown request type {kind!r}"}


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


class _Server(GenServer):
    """Runs the HTTP server; stops it gracefully when it stops itself."""

    async def init(self, cfg: _Config, port: int) -> None:
        beamlet.process_flag("trap_exit", True)
        self.server = await http.serve(
            _app(cfg),
            port=port,
            host=cfg.host,
            max_connections=MAX_CONNECTIONS,
            max_body_size=MAX_MESSAGE,
            idle_timeout=30.0,
            name=f"beamlet.observer.dashboard.{next(_names)}",
        )

    async def handle_call(self, request: Any, from_: Any) -> Any:
        if request == "port":
            return self.server.port
        raise ValueError(f"unexpected call {request!r}")

    async def handle_info(self, msg: Any) -> Any:
        if isinstance(msg, beamlet.Exit) and msg.pid == self.server.pid:
            return Stop(msg.reason)  # the http server's tree is gone: restart
        return None

    async def terminate(self, reason: Any) -> None:
        await self.server.stop(timeout=2.0)


# ---------------------------------------------------------------- the entry point


@register_immutable
class Dashboard:
    """A running dashboard (from :func:`dashboard`): ``url``, ``host``,
    ``port``, ``node`` (the node it shows; None: this one) and ``pid`` (its
    supervisor). ``await d.stop()`` stops it."""

    __slots__ = ("_own_node", "host", "node", "pid", "port", "url")

    def __init__(
        self, host: str, port: int, node: str | None, pid: Pid, own_node: bool = False
    ) -> None:
        self.host = host
        self.port = port
        self.node = node
        self.pid = pid
        self._own_node = own_node  # this runtime became a node for the dashboard
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"

    def __repr__(self) -> str:
        return f"<observer.Dashboard {self.url} node={self.node!r} {self.pid!r}>"

    def __deepcopy__(self, memo: Any) -> Dashboard:
        return self

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the WebSockets (1001) and stop serving; returns once it is
        gone. If :func:`dashboard` made this runtime a node, that node stops too."""
        try:
            await _stop_server(self.pid, "normal", timeout=timeout)
        except Exception:
            ref = beamlet.monitor(self.pid)
            beamlet.exit(self.pid, "kill")
            await beamlet.receive(Down(ref, ANY, ANY))
        if self._own_node:
            _stop_node()


def _ensure_node(node: str, cookie: str | None) -> bool:
    """Make this runtime a (hidden) node if it is not one, so it can reach
    ``node``; True if it did."""
    from beamlet.distribution.node import current_node, start_node

    try:
        current = current_node()
    except RuntimeError:
        host = node.partition("@")[2] or "127.0.0.1"
        start_node(f"beamlet_dashboard_{os.getpid()}@{host}", cookie, hidden=True)
        return True
    if cookie is not None and cookie != current.cookie:
        raise ValueError(
            f"this runtime is already the node {current.name} with another cookie: "
            "a dashboard cannot use a different one"
        )
    return False


async def dashboard(
    port: int = 4000,
    host: str = "127.0.0.1",
    node: str | None = None,
    cookie: str | None = None,
    *,
    interval: float = 1.0,
) -> Dashboard:
    """Serve the web dashboard on ``host:port`` (``port=0``: any free port)
    and return a :class:`Dashboard` (``url``, ``port``, ``await stop()``).

    Call it inside a beamlet process. The dashboard shows this node, or with
    ``node`` the node of that name, through ``rpc.call(node,
    "beamlet_observer", ...)`` (that node must have called
    ``observer.expose()``); if this runtime is not a node yet it becomes a
    hidden one, with ``cookie`` (default: Erlang's cookie file). A new update
    is pushed every ``interval`` seconds (the window of ``top``).
    Listens on 127.0.0.1 unless ``host`` says otherwise (then a warning is
    logged: whoever reaches the port can kill processes)."""
    if type(port) is not int or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a host name or address, got {host!r}")
    if type(interval) not in (int, float) or not 0.1 <= interval <= 60:
        raise ValueError(f"interval must be seconds from 0.1 to 60, got {interval!r}")
    if node is not None and (not isinstance(node, str) or "@" not in node):
        raise ValueError(f"node must be a node name like 'py@127.0.0.1', got {node!r}")
    if cookie is not None and (not isinstance(cookie, str) or not cookie):
        raise ValueError("cookie must be a non-empty str")
    if cookie is not None and node is None:
        raise ValueError("cookie is for reaching a remote node: give node too")
    own_node = _ensure_node(node, cookie) if node is not None else False
    cfg = _Config(host, Source(node), float(interval))
    spec = ChildSpec(id="dashboard", start=(_Server.start_link, (cfg, port)), shutdown=5.0)
    try:
        sup = await Supervisor.start_link([spec], intensity=3, period=10.0)
    except StartError as e:
        if own_node:
            _stop_node()
        match e.reason:
            case ("failed_to_start_child", _, OSError() as error):
                raise OSError(
                    error.errno, f"the dashboard cannot listen on {host}:{port}: {error.strerror}"
                ) from None
        raise
    beamlet.unlink(sup)
    child = await beamlet.otp.which_children(sup)
    actual = await beamlet.otp.call(child[0][1], "port")
    if not _is_loopback(host):
        logger.warning(
            "the beamlet dashboard listens on %s:%s, not on a loopback address: whoever "
            "reaches that port sees the node and can kill its processes",
            host,
            actual,
        )
    return Dashboard(host, actual, node, sup, own_node)


def _stop_node() -> None:
    from beamlet.distribution.node import stop_node

    stop_node()


# ---------------------------------------------------------------- the page

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>beamlet dashboard</title>
<style>
:root { --bg:#14171c; --panel:#1d2128; --line:#2c323c; --fg:#d8dee9; --dim:#8a93a3;
  --accent:#5fb3f0; --warn:#f0a35f; --bad:#f06b5f; --ok:#7fd18b; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
header { display:flex; gap:16px; align-items:baseline; padding:10px 16px;
  border-bottom:1px solid var(--line); }
header h1 { font-size:16px; margin:0; color:var(--accent); }
#conn.ok { color:var(--ok); } #conn.bad { color:var(--bad); }
main { display:grid; grid-template-columns: minmax(300px, 1fr) 2fr; gap:12px; padding:12px; }
.panel { min-width:0; background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
.panel h2 { font-size:13px; margin:0 0 8px; color:var(--dim); text-transform:uppercase;
  letter-spacing:.05em; display:flex; gap:10px; align-items:center; }
.wide { grid-column: 1 / -1; }
dl { display:grid; grid-template-columns:auto 1fr; gap:2px 12px; margin:0; }
dt { color:var(--dim); } dd { margin:0; font-variant-numeric: tabular-nums; }
.bar { height:8px; background:var(--line); border-radius:4px; overflow:hidden; margin:2px 0 6px; }
.bar > div { height:100%; background:var(--accent); }
.bar.off > div { background:var(--warn); }
.charts { display:grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap:10px; }
.charts h2 { grid-column: 1 / -1; }
canvas { width:100%; height:150px; background:#171a20; border-radius:4px; }
table { width:100%; border-collapse:collapse; font-variant-numeric: tabular-nums; }
th, td { text-align:left; padding:3px 8px; border-bottom:1px solid var(--line);
  white-space:nowrap; overflow:hidden; text-overflow:ellipsis; max-width:280px; }
.scroll { overflow-x:auto; }
th { color:var(--dim); font-weight:600; }
th[data-by] { cursor:pointer; color:var(--accent); }
th.sorted::after { content:" \25BC"; }
td.num, th.num { text-align:right; }
tr.running td { color:#fff; }
#top tbody tr { cursor:pointer; }
#top tbody tr.selected td { background:#243042; }
button.plain { background:var(--line); color:var(--fg); border:0; border-radius:4px;
  cursor:pointer; font-size:12px; }
.cols { display:grid; grid-template-columns: minmax(260px, 1fr) 2fr; gap:16px; }
#dstack { margin:4px 0 0; padding-left:24px; font-family: ui-monospace, monospace; font-size:12px; }
button.kill { background:#3a1f1f; color:var(--bad); border:1px solid #5a2a2a;
  border-radius:4px; cursor:pointer; font-size:12px; padding:1px 8px; }
button.kill:hover { background:#5a2a2a; }
select { background:var(--panel); color:var(--fg); border:1px solid var(--line); }
#message { min-height:1.4em; margin-top:6px; color:var(--dim); }
#message.bad { color:var(--bad); }
#tree ul { list-style:none; margin:0; padding-left:16px; border-left:1px solid var(--line); }
#tree > ul { padding-left:0; border-left:0; }
#tree li { padding:1px 0; }
.sup { color:var(--accent); } .restarts { color:var(--warn); } .dim { color:var(--dim); }
</style></head>
<body>
<header><h1>beamlet</h1><span id="node" class="dim"></span><span id="uptime" class="dim"></span>
<span id="conn" class="bad">connecting&hellip;</span></header>
<main>
<section class="panel" id="system"><h2>System</h2><dl id="sys"></dl><div id="scheds"></div></section>
<section class="panel charts"><h2>Last minutes</h2>
<canvas id="chart-util" width="640" height="300"></canvas>
<canvas id="chart-memory" width="640" height="300"></canvas>
<canvas id="chart-procs" width="640" height="300"></canvas>
<canvas id="chart-rates" width="640" height="300"></canvas>
</section>
<section class="panel wide"><h2>Processes
<label class="dim">sort by <select id="by">
<option value="cpu">cpu</option><option value="memory">memory</option>
<option value="msgq">message queue</option><option value="reductions">reductions</option>
</select></label></h2>
<div class="scroll"><table id="top"><thead><tr>
<th>pid</th><th>name</th><th>initial call</th><th>current</th><th>status</th>
<th class="num" data-by="cpu">cpu %</th><th class="num" data-by="reductions">reductions</th>
<th class="num" data-by="memory">memory</th><th class="num" data-by="msgq">msgq</th><th></th>
</tr></thead><tbody></tbody></table></div>
<div id="message"></div></section>
<section class="panel wide" id="details" hidden><h2>Process <span id="dpid"></span>
<button id="dclose" class="plain">close</button></h2>
<div class="cols"><dl id="dinfo"></dl>
<div><div class="dim">stack, outermost call first</div><ol id="dstack"></ol></div></div></section>
<section class="panel wide"><h2>Supervision trees</h2><div id="tree"></div></section>
</main>
<script>
"use strict";
const HISTORY_SECONDS = 300;
const COLORS = ["#5fb3f0", "#f0a35f", "#7fd18b", "#c58af0", "#f06b5f", "#e8d35f",
  "#5ff0d8", "#f05fb8"];
// The page's state, kept here (and readable by tests through window.dashboard).
const state = { by: "cpu", n: 20, updates: 0, last: null, history: [], kills: [],
  errors: [], connected: false, selected: null, info: null, interval: 1 };
window.dashboard = state;
let ws = null;

const $ = (id) => document.getElementById(id);
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
}
function num(n) {
  if (n === null || n === undefined) return "-";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}
function duration(s) {
  s = Math.floor(s || 0);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
    m = Math.floor(s % 3600 / 60);
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
}
function say(text, bad) {
  const m = $("message");
  m.textContent = text;
  m.className = bad ? "bad" : "";
}
function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

// ---- the system panel
function renderSystem(s) {
  if (!s) return;
  $("node").textContent = (s.node || "(not distributed)") + " \u00b7 Python " +
    (s.python || "?") + (s.gil === false ? " (free-threaded)" : "");
  $("uptime").textContent = "up " + duration(s.uptime);
  const io = s.io || {}, mem = s.memory || {};
  const items = [
    ["schedulers", s.schedulers],
    ["utilisation", ((s.utilization || 0) * 100).toFixed(1) + " %"],
    ["processes", num(s.processes)],
    ["run queue", num(s.run_queue)],
    ["memory (RSS)", bytes(mem.total)],
    ["processes' memory", bytes(mem.processes)],
    ["hand-offs", num(s.hand_offs)],
    ["I/O in / out", bytes(io.bytes_in) + " / " + bytes(io.bytes_out)],
    ["sockets", num(io.sockets)],
  ];
  for (const [k, v] of Object.entries(s.metrics || {})) items.push([k, num(v)]);
  const dl = $("sys");
  dl.replaceChildren();
  for (const [k, v] of items) { dl.append(el("dt", k), el("dd", v)); }
  const box = $("scheds");
  box.replaceChildren();
  for (const sc of s.scheduler_info || []) {
    const pct = Math.max(0, Math.min(100, (sc.utilization || 0) * 100));
    box.append(el("div", "scheduler " + sc.index + ": " + pct.toFixed(0) + " %" +
      (sc.handed_off ? " (handed off)" : "") + (sc.current ? " \u2014 " + sc.current : ""), "dim"));
    const bar = el("div", null, "bar" + (sc.handed_off ? " off" : ""));
    const fill = el("div");
    fill.style.width = pct + "%";
    bar.append(fill);
    box.append(bar);
  }
}

// ---- the process table
const SORTERS = { cpu: (r) => r.cpu, memory: (r) => r.memory, msgq: (r) => r.msgq,
  reductions: (r) => r.reductions };
const rowsByPid = new Map();  // pid -> its <tr>: rows are kept, not redrawn
function makeRow(pid) {
  const tr = el("tr");
  tr.dataset.pid = pid;
  for (let i = 0; i < 9; i++) tr.append(el("td", "", i >= 5 ? "num" : ""));
  tr.addEventListener("click", (e) => { if (!e.target.closest("button")) select(pid); });
  const td = el("td");
  const b = el("button", "kill", "kill");
  b.dataset.pid = pid;
  b.title = "kill " + pid;
  b.addEventListener("click", () => {
    const r = tr.row;
    if (confirm("Kill process " + pid + (r.name ? " (" + r.name + ")" : "") + ", " +
        r.initial_call + "?")) {
      send({ type: "kill", pid: pid });
      say("killing " + pid + "\u2026");
    }
  });
  td.append(b);
  tr.append(td);
  return tr;
}
function renderTop(rows) {
  if (!rows) return;
  rows = rows.slice().sort((a, b) => (SORTERS[state.by](b) || 0) - (SORTERS[state.by](a) || 0));
  const body = $("top").tBodies[0];
  const seen = new Set();
  rows.forEach((r, i) => {
    seen.add(r.pid);
    let tr = rowsByPid.get(r.pid);
    if (!tr) { tr = makeRow(r.pid); rowsByPid.set(r.pid, tr); }
    tr.row = r;
    tr.className = (r.status === "running" ? "running" : "") +
      (r.pid === state.selected ? " selected" : "");
    const cells = [r.pid, r.name || "", r.initial_call, r.current || "", r.status,
      (r.cpu_pct || 0).toFixed(1), num(r.reductions), bytes(r.memory), num(r.msgq)];
    cells.forEach((v, j) => {
      const td = tr.cells[j];
      if (td.textContent !== v) { td.textContent = v; td.title = v; }
    });
    if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
  });
  for (const [pid, tr] of rowsByPid) {
    if (!seen.has(pid)) { tr.remove(); rowsByPid.delete(pid); }
  }
  for (const th of document.querySelectorAll("th[data-by]")) {
    th.classList.toggle("sorted", th.dataset.by === state.by);
  }
}
// ---- one process: its info and stack (asked for again after every update)
function select(pid) {
  state.selected = pid;
  for (const [p, tr] of rowsByPid) tr.classList.toggle("selected", p === pid);
  $("details").hidden = pid === null;
  if (pid === null) return;
  $("dpid").textContent = pid;
  send({ type: "info", pid: pid });
}
$("dclose").addEventListener("click", () => select(null));
function renderInfo(m) {
  if (m.pid !== state.selected) return;
  state.info = m;
  const dl = $("dinfo"), ol = $("dstack");
  dl.replaceChildren();
  ol.replaceChildren();
  const i = m.info;
  if (!i) { dl.append(el("dt", "error"), el("dd", m.error)); return; }
  const list = (xs) => (xs || []).map(String).join(", ") || "-";
  const items = [["name", i.name || "-"], ["initial call", i.initial_call],
    ["status", i.status], ["current", i.current || "-"],
    ["cpu (total)", (i.cpu || 0).toFixed(3) + " s"], ["reductions", num(i.reductions)],
    ["memory", bytes(i.memory)], ["message queue", num(i.msgq)],
    ["trap_exit", String(i.trap_exit)], ["links", list(i.links)],
    ["monitors", list(i.monitors)], ["monitored by", list(i.monitored_by)],
    ["sockets", (i.sockets || []).length]];
  for (const [k, v] of items) dl.append(el("dt", k), el("dd", v));
  for (const f of i.stack || []) {
    ol.append(el("li", f.function + " \u2014 " + f.file + ":" + f.line));
  }
}

function sortBy(by) {
  state.by = by;
  $("by").value = by;
  send({ type: "sort", by: by, n: state.n });
  if (state.last) renderTop(state.last.top);
}
$("by").addEventListener("change", (e) => sortBy(e.target.value));
for (const th of document.querySelectorAll("th[data-by]")) {
  th.addEventListener("click", () => sortBy(th.dataset.by));
}

// ---- the supervision trees
function treeNode(n) {
  const li = el("li");
  li.append(el("span", n.type === "supervisor" ? "\u25be " : "\u2022 ",
    n.type === "supervisor" ? "sup" : "dim"));
  li.append(el("span", n.name || n.id || "", n.type === "supervisor" ? "sup" : ""));
  li.append(el("span", " " + n.pid, "dim"));
  if (n.id && n.name && n.id !== n.name) li.append(el("span", " id=" + n.id, "dim"));
  if (n.restarts) li.append(el("span", " restarts: " + n.restarts, "restarts"));
  if (n.children && n.children.length) {
    const ul = el("ul");
    for (const c of n.children) ul.append(treeNode(c));
    li.append(ul);
  }
  return li;
}
function renderTree(roots, leftOut) {
  if (!roots) return;
  const box = $("tree");
  box.replaceChildren();
  if (!roots.length) { box.append(el("div", "no supervisors", "dim")); return; }
  const ul = el("ul");
  for (const r of roots) ul.append(treeNode(r));
  box.append(ul);
  if (leftOut) box.append(el("div", leftOut + " more not shown", "dim"));
}

// ---- the charts: the page keeps the last HISTORY_SECONDS of samples
function record(m) {
  const s = m.system;
  if (!s) return;
  const prev = state.history.length ? state.history[state.history.length - 1] : null;
  const io = s.io || {};
  const p = { t: m.time, util: (s.utilization || 0) * 100,
    scheds: (s.scheduler_info || []).map((x) => (x.utilization || 0) * 100),
    rss: (s.memory || {}).total || 0, pmem: (s.memory || {}).processes || 0,
    procs: s.processes || 0, runq: s.run_queue || 0,
    bin: io.bytes_in || 0, bout: io.bytes_out || 0, hand: s.hand_offs || 0,
    red: s.reductions, msgs: s.messages,
    // the rows' reductions in the window of top(), per second
    topred: (m.top || []).reduce((a, r) => a + (r.reductions || 0), 0) / state.interval };
  const rate = (k) => {
    if (!prev || p[k] === undefined || p[k] === null || prev[k] === undefined ||
        prev[k] === null || p.t <= prev.t) return null;
    return Math.max(0, (p[k] - prev[k]) / (p.t - prev.t));
  };
  p.binRate = rate("bin"); p.boutRate = rate("bout");
  p.redRate = s.reductions !== undefined ? rate("red") : null;
  p.msgRate = s.messages !== undefined ? rate("msgs") : null;
  state.history.push(p);
  while (state.history.length && state.history[0].t < p.t - HISTORY_SECONDS) {
    state.history.shift();
  }
}
function chart(id, title, series, fmt, fixedMax) {
  const c = $(id), g = c.getContext("2d");
  const W = c.width, H = c.height, L = 70, R = 10, T = 44, B = 22;
  g.clearRect(0, 0, W, H);
  g.font = "20px system-ui, sans-serif";
  g.fillStyle = "#d8dee9";
  g.fillText(title, 10, 22);
  let lx = 10 + g.measureText(title).width + 20;
  const hist = state.history;
  const now = hist.length ? hist[hist.length - 1].t : 0;
  // The span grows with the history, from one minute to HISTORY_SECONDS.
  const span = Math.min(HISTORY_SECONDS, Math.max(60, hist.length ? now - hist[0].t : 0));
  let max = fixedMax || 0;
  if (!fixedMax) {
    for (const s of series) for (const p of hist) {
      const v = s.get(p);
      if (v !== null && v !== undefined && v > max) max = v;
    }
    max = max > 0 ? max * 1.1 : 1;
  }
  g.strokeStyle = "#2c323c";
  g.fillStyle = "#8a93a3";
  g.font = "16px system-ui, sans-serif";
  g.lineWidth = 1;
  for (let i = 0; i <= 2; i++) {
    const y = T + (H - T - B) * i / 2;
    g.beginPath(); g.moveTo(L, y); g.lineTo(W - R, y); g.stroke();
    g.fillText(fmt(max * (2 - i) / 2), 4, y + 5);
  }
  g.fillText("-" + Math.round(span / 60) + " min", L, H - 4);
  g.fillText("now", W - R - 30, H - 4);
  const x = (t) => L + (W - L - R) * (1 - (now - t) / span);
  const y = (v) => T + (H - T - B) * (1 - Math.min(v, max) / max);
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    let started = false;
    for (const p of hist) {
      const v = s.get(p);
      if (v === null || v === undefined) { started = false; continue; }
      if (started) g.lineTo(x(p.t), y(v)); else { g.moveTo(x(p.t), y(v)); started = true; }
    }
    g.stroke();
    const last = hist.length ? s.get(hist[hist.length - 1]) : null;
    const label = s.label + (last === null || last === undefined ? "" : " " + fmt(last));
    g.fillStyle = color;
    g.font = "15px system-ui, sans-serif";
    if (lx + g.measureText(label).width > W - R) return;
    g.fillRect(lx, 12, 10, 10);
    g.fillText(label, lx + 14, 22);
    lx += g.measureText(label).width + 28;
  });
}
function drawCharts() {
  const last = state.history.length ? state.history[state.history.length - 1] : null;
  const scheds = last ? last.scheds.length : 0;
  const util = [{ label: "all", get: (p) => p.util, color: "#ffffff" }];
  for (let i = 0; i < scheds && i < 8; i++) {
    util.push({ label: "s" + (i + 1), get: (p) => p.scheds[i] === undefined ? null : p.scheds[i],
      color: COLORS[i % COLORS.length] });
  }
  chart("chart-util", "scheduler utilisation", util, (v) => v.toFixed(0) + "%", 100);
  chart("chart-memory", "memory", [
    { label: "RSS", get: (p) => p.rss }, { label: "processes", get: (p) => p.pmem }], bytes);
  chart("chart-procs", "processes", [
    { label: "processes", get: (p) => p.procs }, { label: "run queue", get: (p) => p.runq }], num);
  const rates = [];
  if (last && last.redRate !== null) rates.push({ label: "reductions/s", get: (p) => p.redRate });
  else rates.push({ label: "reductions/s (rows)", get: (p) => p.topred });
  if (last && last.msgRate !== null) rates.push({ label: "messages/s", get: (p) => p.msgRate });
  rates.push({ label: "in B/s", get: (p) => p.binRate }, { label: "out B/s", get: (p) => p.boutRate });
  chart("chart-rates", "rates", rates, num);
}

// ---- the WebSocket
const handlers = {
  hello(m) {
    state.n = m.n;
    state.interval = m.interval;
    send({ type: "sort", by: state.by, n: state.n });
  },
  update(m) {
    state.updates++;
    state.last = m;
    if (m.error) { state.errors.push(m.error); say(m.error, true); }
    renderSystem(m.system);
    renderTop(m.top);
    renderTree(m.tree, m.tree_left_out);
    if (state.selected !== null) {
      const shown = rowsByPid.has(state.selected);
      if (shown) send({ type: "info", pid: state.selected });
      $("dpid").textContent = state.selected + (shown ? "" : " (not in the table any more)");
    }
    record(m);
    drawCharts();
  },
  kill(m) {
    state.kills.push(m);
    say(m.ok ? "killed " + m.pid : "could not kill " + m.pid + ": " + m.error, !m.ok);
  },
  sort(m) { state.by = m.by; },
  info(m) { renderInfo(m); },
  error(m) { state.errors.push(m.error); say(m.error, true); },
};
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(proto + "//" + location.host + "/ws");
  ws.onopen = () => { state.connected = true; $("conn").textContent = "live";
    $("conn").className = "ok"; };
  ws.onclose = () => {
    state.connected = false;
    $("conn").textContent = "disconnected: retrying";
    $("conn").className = "bad";
    setTimeout(connect, 2000);
  };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    const h = handlers[m.type];
    if (h) h(m);
  };
}
drawCharts();
connect();
</script>
</body></html>
"""
