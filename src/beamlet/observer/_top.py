"""``beamlet top``: a terminal observer (textual), in the manner of observer_cli.

A home panel (node, uptime, schedulers and their utilisation, run queue,
processes, memory, hand-offs, I/O), the top processes by cpu / memory /
message queue / reductions over a one-second window, and the info and stack
of the selected process. Keys: ``c`` ``m`` ``b`` ``r`` sort by cpu, memory,
mailbox (message queue) and reductions; arrows (or the mouse) select a
process; ``k`` kills it; ``q`` or Ctrl-C quits.

The app runs textual's asyncio loop on the main thread and reads the node
through a *source*: any object with the async methods of :class:`Source`.
:class:`RemoteSource` is a node reached by ``rpc.call(node,
"beamlet_observer", ...)`` from the command's own runtime (a hidden node on
its own threads, :class:`beamlet.cli.Attached`), crossing threads with
``concurrent.futures`` futures that asyncio awaits.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Static

SORTS = {"cpu": "cpu", "memory": "memory", "msgq": "mailbox", "reductions": "reductions"}
WINDOW = 1.0
ROWS = 40


class SourceError(Exception):
    """The node could not answer (the message says why)."""


class Source(Protocol):
    async def system(self) -> dict[str, Any]: ...

    async def top(self, by: str, n: int, window: float) -> list[dict[str, Any]]: ...

    async def info(self, pid: Any) -> dict[str, Any] | None: ...

    async def kill(self, pid: Any) -> bool: ...


class RemoteSource:
    """The observer of ``node`` through rpc, from the command's runtime ``attached``
    (anything with ``submit(fn, *args) -> concurrent.futures.Future``)."""

    def __init__(self, attached: Any, node: str) -> None:
        self.attached = attached
        self.node = node

    async def _call(self, function: str, args: list[Any], timeout: float = 10.0) -> Any:
        from beamlet import rpc
        from beamlet.cli import observer_error
        from beamlet.rpc import is_badrpc

        fut = self.attached.submit(rpc.call, self.node, "beamlet_observer", function, args, timeout)
        try:
            reply = await asyncio.wrap_future(fut)
        except Exception as e:
            raise SourceError(f"{self.node}: {e}") from None
        if is_badrpc(reply):
            raise SourceError(observer_error(self.node, reply))
        return reply

    async def system(self) -> dict[str, Any]:
        reply = await self._call("system", [])
        if not isinstance(reply, dict):
            raise SourceError(f"{self.node}: system() answered {reply!r}")
        return reply

    async def top(self, by: str, n: int, window: float) -> list[dict[str, Any]]:
        reply = await self._call("top", [by, n, window], timeout=window + 10)
        if not isinstance(reply, list):
            raise SourceError(f"{self.node}: top() answered {reply!r}")
        return reply

    async def info(self, pid: Any) -> dict[str, Any] | None:
        reply = await self._call("info", [pid])
        return reply if isinstance(reply, dict) else None

    async def kill(self, pid: Any) -> bool:
        return bool(await self._call("kill", [pid]))


# -- formatting ------------------------------------------------------------------------


def fmt_pid(pid: Any) -> str:
    """A pid as the node itself prints it (``<0.ID.SERIAL>``)."""
    ident, serial = getattr(pid, "id", None), getattr(pid, "serial", None)
    if isinstance(ident, int) and isinstance(serial, int):
        return f"<0.{ident}.{serial}>"
    return str(pid)


def fmt_bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def fmt_uptime(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    clock = f"{hours:02d}:{minutes:02d}:{s:02d}"
    return f"{days}d {clock}" if days else clock


def bar(fraction: float, width: int = 10) -> str:
    fraction = max(0.0, min(1.0, fraction))
    full = round(fraction * width)
    return "█" * full + "░" * (width - full)


def home_text(
    node: str,
    sysinfo: dict[str, Any] | None,
    error: str | None,
    by: str = "cpu",
    window: float = WINDOW,
) -> Text:
    text = Text()
    text.append("beamlet top ", style="bold cyan")
    text.append(node, style="bold")
    if sysinfo is None:
        text.append("\n" + (error or "connecting..."), style="red" if error else "dim")
        return text
    gil = "GIL" if sysinfo.get("gil") else "free-threaded"
    text.append(
        f"   uptime {fmt_uptime(sysinfo.get('uptime'))}   Python {sysinfo.get('python')} ({gil})\n"
    )
    memory = sysinfo.get("memory") or {}
    io = sysinfo.get("io") or {}
    text.append(
        f"processes {sysinfo.get('processes')}   run queue {sysinfo.get('run_queue')}   "
        f"hand-offs {sysinfo.get('hand_offs')}   memory {fmt_bytes(memory.get('total'))} "
        f"(processes {fmt_bytes(memory.get('processes'))})   "
        f"io in {fmt_bytes(io.get('bytes_in'))} out {fmt_bytes(io.get('bytes_out'))} "
        f"sockets {io.get('sockets')}\n"
    )
    util = float(sysinfo.get("utilization") or 0.0)
    text.append(f"schedulers {sysinfo.get('schedulers')}   utilisation {util * 100:5.1f}%  ")
    for s in sysinfo.get("scheduler_info") or []:
        u = float(s.get("utilization") or 0.0)
        style = "red" if u > 0.9 else "yellow" if u > 0.5 else "green"
        text.append(f" {s.get('index')}[", style="dim")
        text.append(bar(u, 8), style=style)
        text.append(f"{u * 100:3.0f}%]", style="dim")
    text.append("\nsorted by ")
    text.append(f"{SORTS.get(by, by)} ▼", style="bold reverse")
    text.append(f" over {window:g} s   keys: c cpu  m memory  b mailbox  r reductions", style="dim")
    if error:
        text.append(f"\n{error}", style="red")
    return text


def details_text(pid: Any, info: dict[str, Any] | None) -> Text:
    text = Text()
    if pid is None:
        text.append("select a process (arrows) to see its info and stack", style="dim")
        return text
    if info is None:
        text.append(f"{fmt_pid(pid)}: no such process (it exited)", style="yellow")
        return text
    text.append(fmt_pid(pid), style="bold")
    if info.get("name"):
        text.append(f" ({info['name']})", style="bold")
    text.append(f"  {info.get('initial_call')}  status {info.get('status')}\n")
    text.append(
        f"message queue {info.get('msgq')}   memory {fmt_bytes(info.get('memory'))}   "
        f"reductions {info.get('reductions')}   cpu {float(info.get('cpu') or 0):.3f} s   "
        f"trap_exit {info.get('trap_exit')}\n"
    )
    for key in ("links", "monitors", "monitored_by"):
        items = info.get(key) or []
        shown = ", ".join(fmt_pid(p) if not isinstance(p, tuple | list) else str(p) for p in items)
        text.append(f"{key} [{shown}]   " if items else f"{key} []   ", style="dim")
    text.append("\nstack (innermost last):\n", style="bold")
    stack = info.get("stack") or []
    if not stack:
        text.append("  (no Python frames: not started, or waiting in the kernel)\n", style="dim")
    for frame in stack:
        text.append(f"  {frame.get('function')}", style="cyan")
        text.append(f"  {frame.get('file')}:{frame.get('line')}\n", style="dim")
    return text


def _sort_key(by: str) -> Any:
    field = "cpu" if by == "cpu" else by
    return lambda row: row.get(field) or 0


# -- the app ---------------------------------------------------------------------------


class TopApp(App[int]):
    """The terminal observer of one node (through ``source``)."""

    TITLE = "beamlet top"
    CSS = """
    #home { height: auto; padding: 0 1; background: $boost; }
    #table { height: 1fr; }
    #details { height: 14; border-top: solid $accent; padding: 0 1; }
    """
    BINDINGS = [
        Binding("c", "sort('cpu')", "cpu"),
        Binding("m", "sort('memory')", "memory"),
        Binding("b", "sort('msgq')", "mailbox"),
        Binding("r", "sort('reductions')", "reductions"),
        Binding("k", "kill", "kill selected"),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, source: Source, node: str | None = None, window: float = WINDOW) -> None:
        super().__init__()
        self.source = source
        self.node = node or str(getattr(source, "node", "") or "this node")
        self.window = window
        self.by = "cpu"
        self.rows: list[dict[str, Any]] = []
        self.pids: dict[str, Any] = {}
        self.selected: str | None = None
        self.sysinfo: dict[str, Any] | None = None
        self.error: str | None = None
        self.refreshes = 0

    def compose(self) -> ComposeResult:
        yield Static(home_text(self.node, None, None), id="home")
        table: DataTable[Any] = DataTable(id="table", cursor_type="row", zebra_stripes=True)
        yield table
        with VerticalScroll(id="details"):
            yield Static(details_text(None, None), id="info")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key in (
            ("PID", "pid"),
            ("NAME / INITIAL CALL", "name"),
            ("CURRENT", "current"),
            ("STATUS", "status"),
            ("CPU %", "cpu"),
            ("REDUCTIONS", "reductions"),
            ("MEMORY", "memory"),
            ("MSGQ", "msgq"),
        ):
            table.add_column(label, key=key)
        table.focus()
        self.poll()

    # -- data --------------------------------------------------------------------

    @work(exclusive=True, group="poll")
    async def poll(self) -> None:
        """Refresh about once a second (each round takes ``window`` for top)."""
        while True:
            try:
                sysinfo, rows = await asyncio.gather(
                    self.source.system(), self.source.top(self.by, ROWS, self.window)
                )
            except SourceError as e:
                self.error = str(e)
                self._show_home()
                await asyncio.sleep(self.window)
                continue
            self.error = None
            self.sysinfo = sysinfo
            self._show_home()
            self._show_rows(rows)
            await self._show_details()
            self.refreshes += 1

    def _show_home(self) -> None:
        self.query_one("#home", Static).update(
            home_text(self.node, self.sysinfo, self.error, self.by, self.window)
        )

    def _show_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows = sorted(rows, key=_sort_key(self.by), reverse=True)
        table = self.query_one(DataTable)
        selected = self.selected
        table.clear()
        self.pids = {}
        for row in self.rows:
            key = fmt_pid(row.get("pid"))
            if key in self.pids:
                continue
            self.pids[key] = row.get("pid")
            table.add_row(*self._cells(row), key=key)
        if selected in self.pids:
            table.move_cursor(row=table.get_row_index(selected), scroll=False)
        elif self.rows:
            table.move_cursor(row=0)
            self.selected = fmt_pid(self.rows[0].get("pid"))

    def _cells(self, row: dict[str, Any]) -> list[Any]:
        name = row.get("name") or row.get("initial_call") or ""
        return [
            fmt_pid(row.get("pid")),
            str(name)[:48],
            str(row.get("current") or "")[:60],
            str(row.get("status") or ""),
            Text(f"{float(row.get('cpu_pct') or 0):6.1f}", justify="right"),
            Text(str(row.get("reductions") or 0), justify="right"),
            Text(fmt_bytes(row.get("memory")), justify="right"),
            Text(str(row.get("msgq") or 0), justify="right"),
        ]

    async def _show_details(self) -> None:
        key = self.selected
        pid = self.pids.get(key) if key is not None else None
        info = None
        if pid is not None:
            try:
                info = await self.source.info(pid)
            except SourceError as e:
                self.query_one("#info", Static).update(Text(str(e), style="red"))
                return
        if key == self.selected:
            self.query_one("#info", Static).update(details_text(pid, info))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if key is not None and key != self.selected:
            self.selected = key
            self._details_soon()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.selected = event.row_key.value  # Enter: show it now
        self._details_soon()

    @work(exclusive=True, group="details")
    async def _details_soon(self) -> None:
        await self._show_details()

    # -- actions -------------------------------------------------------------------

    def action_sort(self, by: str) -> None:
        if by not in SORTS:
            return
        self.by = by
        self._show_home()
        if self.rows:  # at once by the last figures; the next round ranks over the window
            self._show_rows(self.rows)

    async def action_kill(self) -> None:
        key = self.selected
        pid = self.pids.get(key) if key is not None else None
        if pid is None:
            self.notify("no process selected", severity="warning")
            return
        try:
            killed = await self.source.kill(pid)
        except SourceError as e:
            self.notify(str(e), severity="error")
            return
        if killed:
            self.notify(f"killed {key}")
        else:
            self.notify(f"{key} was not alive", severity="warning")

    async def action_quit(self) -> None:
        self.exit(0)
