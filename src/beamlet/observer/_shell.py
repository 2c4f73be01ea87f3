"""The remote shell: ``beamlet remsh NODE`` (the client) and what it talks to
on the target node (the server).

Server side. ``allow_remote_shell()`` exposes one rpc entry,
``rpc:call(Node, beamlet_shell, start, [ClientPid])``; nothing answers it
until the node calls it (``forbid_remote_shell()`` withdraws it and ends the
open sessions). ``start`` spawns a *session* process on the target node that
monitors the client process (a session never outlives its client: when the
client's node disconnects the monitor fires ``noconnection`` and the session
ends, its running evaluation killed with it) and returns
``{"shell": SessionPid, "node": ..., "python": ...}``.

The client then sends the session ``("eval", Seq, Source)``. The session hands
each input to its *evaluator*, a process that evaluates one input after the
other (so ``self()`` and its mailbox persist from input to input, as in
Erlang's shell) and shares the session's namespace by reference (a closure,
never a message: names persist across inputs). It
compiles the input with ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`` (so
``await beamlet.receive(...)`` works at the prompt, as in ``python -m
asyncio``); if the last statement is an expression, its value's ``repr`` is the
result (and ``_`` is bound to it). What it prints reaches the client:
``sys.stdout`` / ``sys.stderr`` are replaced, while the shell is allowed, by
a router that sends what a shell's evaluator writes to its session
(processes it spawns write to the node's own output, as before). The client
gets, in order::

    ("shell_output", Seq, Text)        # zero or more
    ("shell_result", Seq, Kind, Text)  # exactly one; Kind: value | none | error | interrupted

``("interrupt", Seq)`` (Ctrl-C on the client) kills the evaluator, not the
session nor the node: the result is ``interrupted`` and the next input gets a
new evaluator (a new ``self()``), with the same names. ``SystemExit`` raised by
the input (``exit()``) is reported as an error; it ends neither.

Client side: :func:`client` reads lines with ``input`` (readline's editing and
history when available), gathers multi-line input with ``codeop`` as
``code.InteractiveConsole`` does, and prints what comes back.
"""

from __future__ import annotations

import ast
import codeop
import inspect
import itertools
import platform
import queue
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TextIO, cast

import beamlet
from beamlet import ANY, Down, Pid
from beamlet._kernel.context import current_process_or_none
from beamlet.rpc import describe_badrpc, is_badrpc

#: The rpc module name a client calls: ``rpc:call(Node, beamlet_shell, start, [Pid])``.
MODULE = "beamlet_shell"
FILENAME = "<remsh>"

_lock = threading.Lock()
_allowed = False
_sessions: set[Pid] = set()
#: evaluation process -> its session: where what it writes goes.
_capture: dict[Pid, Pid] = {}


# -- output routing ------------------------------------------------------------------


class _Router:
    """Stands in for ``sys.stdout`` / ``sys.stderr``: a write from a shell's
    evaluation process goes to its session, any other write to the stream it
    replaced."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if _capture:
            proc = current_process_or_none()
            if proc is not None:
                session = _capture.get(proc.pid)
                if session is not None:
                    if not isinstance(text, str):
                        raise TypeError(f"write() argument must be str, not {type(text).__name__}")
                    if text:
                        beamlet.send(session, ("out", text))
                    return len(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _route_output(on: bool) -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if on and not isinstance(stream, _Router):
            setattr(sys, name, _Router(stream))
        elif not on and isinstance(stream, _Router):
            setattr(sys, name, stream._stream)


# -- the server: sessions and evaluations ----------------------------------------------


def allow_remote_shell() -> None:
    """Let ``beamlet remsh`` (or any node with the cookie) open shells on this
    node: ``rpc:call(Node, beamlet_shell, start, [ClientPid])``. Off by default.
    A shell runs any code it is given, as the node's user: allow it on nodes
    whose cookie only trusted people hold."""
    from beamlet import rpc

    global _allowed
    with _lock:
        _allowed = True
        _route_output(True)
    rpc.expose(MODULE, "start", _rpc_start)


def forbid_remote_shell() -> None:
    """Withdraw :func:`allow_remote_shell` and end the open sessions (their
    running evaluations are killed)."""
    from beamlet import rpc

    global _allowed
    rpc.unexpose(MODULE, "start")
    with _lock:
        _allowed = False
        sessions = list(_sessions)
        _route_output(False)
    for pid in sessions:
        try:
            beamlet.exit(pid, "kill")
        except RuntimeError:
            pass  # no runtime any more: nothing runs


def remote_shell_allowed() -> bool:
    return _allowed


def _rpc_start(client: Any) -> dict[str, Any]:
    if type(client) is not Pid:
        raise TypeError(f"beamlet_shell:start needs the client's pid, got {client!r}")
    if not _allowed:  # forbidden between the lookup and the call
        raise PermissionError("this node does not allow remote shells")
    return start_session(client)


def start_session(client: Pid) -> dict[str, Any]:
    """Start a shell session serving ``client`` (a local or remote pid) and
    describe it: ``{"shell": pid, "node": str | None, "python": str}``. The
    session ends when ``client`` exits or its node disconnects."""
    pid = beamlet.spawn(_session, client)
    with _lock:
        _sessions.add(pid)
    node = beamlet.node()
    return {
        "shell": pid,
        "node": None if node is None else str(node),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


async def _session(client: Pid) -> None:
    """Serve ``client``: one input at a time, evaluated by the session's
    evaluator process (started on first use, and again after an interrupt)."""
    client_ref = beamlet.monitor(client)
    namespace: dict[str, Any] = {"__name__": "__remsh__", "beamlet": beamlet}
    evaluator: Evaluator | None = None
    try:
        while True:
            msg = await beamlet.receive()
            if type(msg) is Down and msg.ref == client_ref:
                return
            if type(msg) is tuple and len(msg) == 3 and msg[0] == "eval":
                seq, source = msg[1], msg[2]
                if not isinstance(source, str):
                    beamlet.send(client, ("shell_result", seq, "error", "the input is not text\n"))
                    continue
                if evaluator is None:
                    evaluator = Evaluator(beamlet.self(), namespace)
                kept = await evaluator.run(client, client_ref, seq, source)
                if kept is None:
                    return  # the client is gone
                if not kept:
                    evaluator = None
            # anything else (a late interrupt, a stray message) is dropped
    finally:
        if evaluator is not None:
            beamlet.exit(evaluator.pid, "kill")
        with _lock:
            _sessions.discard(beamlet.self())


class Evaluator:
    """The process that evaluates a session's inputs: the same one from input
    to input (so ``self()`` and its mailbox persist, as in Erlang's shell) until
    an interrupt kills it. It shares the session's namespace by reference:
    a closure, never a message."""

    def __init__(self, session: Pid, namespace: dict[str, Any]) -> None:
        tag = self.tag = beamlet.make_ref()

        async def evaluator() -> None:
            me = beamlet.self()
            _capture[me] = session
            try:
                while True:
                    _, seq, source = await beamlet.receive((tag, ANY, ANY))
                    if not isinstance(sys.stdout, _Router) or not isinstance(sys.stderr, _Router):
                        with _lock:  # somebody replaced them since (a test's capture, say)
                            if _allowed:
                                _route_output(True)
                    kind, text = await _evaluate(source, namespace)
                    beamlet.send(session, ("done", tag, seq, kind, text))
            finally:
                _capture.pop(me, None)

        self.pid, self.ref = beamlet.spawn_monitor(evaluator)

    async def run(self, client: Pid, client_ref: Any, seq: Any, source: str) -> bool | None:
        """Evaluate ``source``, relaying its output and then its result to
        ``client``. True: the evaluator lives on; False: it is gone (interrupted,
        or it exited); None: the client is gone (the evaluator is killed)."""
        beamlet.send(self.pid, (self.tag, seq, source))
        interrupted = False
        while True:
            msg = await beamlet.receive(
                ("out", ANY),
                ("interrupt", ANY),
                ("done", self.tag, seq, ANY, ANY),
                Down(self.ref, ANY, ANY),
                Down(client_ref, ANY, ANY),
            )
            if type(msg) is Down:
                if msg.ref == client_ref:
                    beamlet.exit(self.pid, "kill")
                    return None
                # The evaluator exited: flush what it wrote and said before.
                while True:
                    try:
                        early = await beamlet.receive(
                            ("out", ANY), ("done", self.tag, seq, ANY, ANY), timeout=0
                        )
                    except TimeoutError:
                        break
                    if early[0] == "done":
                        beamlet.send(client, ("shell_result", seq, early[3], early[4]))
                        return False
                    beamlet.send(client, ("shell_output", seq, early[1]))
                if interrupted or msg.reason == "killed":
                    result = ("interrupted", "KeyboardInterrupt\n")
                else:
                    result = ("error", f"the shell's evaluator exited: {msg.reason!r}\n")
                beamlet.send(client, ("shell_result", seq, *result))
                return False
            if msg[0] == "out":
                beamlet.send(client, ("shell_output", seq, msg[1]))
            elif msg[0] == "done":
                if interrupted:  # it finished before the kill: it is dying anyway
                    await beamlet.receive(Down(self.ref, ANY, ANY))
                beamlet.send(client, ("shell_result", seq, msg[3], msg[4]))
                return not interrupted
            elif msg[1] == seq and not interrupted:
                interrupted = True
                beamlet.exit(self.pid, "kill")


_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


async def _evaluate(source: str, namespace: dict[str, Any]) -> tuple[str, str]:
    """Run ``source`` in ``namespace``: (kind, text) with kind value | none | error."""
    try:
        tree = cast(ast.Module, compile(source, FILENAME, "exec", ast.PyCF_ONLY_AST | _FLAGS))
        last: ast.expr | None = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = tree.body[-1].value
            del tree.body[-1]
        body = compile(tree, FILENAME, "exec", _FLAGS)
        expr = None
        if last is not None:
            expr = compile(ast.Expression(last), FILENAME, "eval", _FLAGS)
    except (SyntaxError, ValueError, OverflowError) as e:
        return "error", "".join(traceback.format_exception_only(type(e), e))
    try:
        await _run_code(body, namespace)
        if expr is None:
            return "none", ""
        value = await _run_code(expr, namespace)
        if value is None:
            return "none", ""
        namespace["_"] = value
        return "value", repr(value)
    except (Exception, SystemExit) as e:
        return "error", _format_error(e)


async def _run_code(code: Any, namespace: dict[str, Any]) -> Any:
    result = eval(code, namespace)
    if code.co_flags & inspect.CO_COROUTINE:
        result = await result
    return result


def _format_error(e: BaseException) -> str:
    """The traceback from the input's own frames on (this module's are dropped)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


# -- the client ------------------------------------------------------------------------


class ShellError(Exception):
    """The remote shell could not start (the message says why)."""


def _badrpc_text(node: str, reply: Any) -> str | None:
    """A clear sentence for an ``rpc:call`` that failed, or None if it did not."""
    if not is_badrpc(reply):
        return None
    return describe_badrpc(
        node,
        reply,
        "does not allow remote shells (the node must call "
        "beamlet.observer.allow_remote_shell(), e.g. `beamlet run ... --allow shell`)",
    )


async def open_session(node: str, client: Pid, timeout: float = 10.0) -> dict[str, Any]:
    """In a process of the client's runtime: ask ``node`` for a shell session
    serving ``client``; raises :class:`ShellError` with a clear message."""
    from beamlet import rpc

    reply = await rpc.call(node, MODULE, "start", [client], timeout=timeout)
    text = _badrpc_text(node, reply)
    if text is not None:
        raise ShellError(text)
    if not (isinstance(reply, dict) and type(reply.get("shell")) is Pid):
        raise ShellError(f"{node} answered the shell request with {reply!r}")
    return reply


async def _relay(events: queue.Queue[Any], started: Future[Any], node: str) -> None:
    """The client's process: opens the session, then hands what the session
    sends (and the news that it is gone) to the terminal thread."""
    try:
        info = await open_session(node, beamlet.self())
    except Exception as e:  # the terminal thread says why
        started.set_exception(e)
        return
    except BaseException as e:  # killed: the command is closing
        started.set_exception(e)
        raise
    shell = info["shell"]
    ref = beamlet.monitor(shell)
    started.set_result(info)
    while True:
        msg = await beamlet.receive()
        if type(msg) is Down and msg.ref == ref:
            events.put(("gone", msg.reason))
            return
        if type(msg) is tuple and msg and msg[0] in ("shell_output", "shell_result"):
            events.put(msg)


def _print_out(text: str, out: TextIO) -> None:
    out.write(text)
    out.flush()


def client(
    node: str,
    spawn: Callable[[Callable[[], Any]], Any],
    send: Callable[[Any, Any], None],
    *,
    stdin_is_tty: bool | None = None,
    out: TextIO | None = None,
    read: Callable[[str], str] = input,
) -> int:
    """The terminal side of ``beamlet remsh``: runs in the main thread while the
    command's runtime (a hidden node) runs on its own threads. ``spawn(fn)``
    starts ``fn()`` as a process there; ``send(dest, msg)`` sends from this
    thread. Returns the exit status."""
    out = out if out is not None else sys.stdout
    events: queue.Queue[Any] = queue.Queue()
    started: Future[Any] = Future()

    async def relay() -> None:
        await _relay(events, started, node)

    spawn(relay)
    try:
        info = started.result(timeout=30)
    except ShellError as e:
        print(f"beamlet remsh: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        print(f"beamlet remsh: cannot reach {node}: {e}", file=sys.stderr)
        return 1
    shell: Pid = info["shell"]
    if stdin_is_tty is None:
        stdin_is_tty = sys.stdin.isatty()
    if stdin_is_tty:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    short = node.split("@")[0]
    _print_out(
        f"beamlet remote shell on {node} ({info.get('python')}); evaluated there.\n"
        "Top-level await works. Ctrl-C interrupts an evaluation, Ctrl-D leaves "
        "(the node keeps running).\n",
        out,
    )
    seq = itertools.count(1)
    compiler = codeop.CommandCompiler()
    compiler.compiler.flags |= _FLAGS
    while True:
        lines: list[str] = []
        try:
            while True:
                prompt = f"({short})>>> " if not lines else f"({short})... "
                line = read(prompt)
                lines.append(line)
                source = "\n".join(lines)
                try:
                    if compiler(source, FILENAME, "single") is not None:
                        break
                except (SyntaxError, ValueError, OverflowError):
                    break  # the node reports the error
        except EOFError:
            _print_out("\n", out)
            return 0
        except KeyboardInterrupt:
            _print_out("\nKeyboardInterrupt\n", out)
            continue
        if not source.strip():
            continue
        n = next(seq)
        sent = False
        while True:  # a Ctrl-C from here on interrupts input n, wherever it lands
            try:
                if not sent:
                    send(shell, ("eval", n, source))
                    sent = True
                alive = _await_result(n, shell, events, send, out)
                break
            except KeyboardInterrupt:
                if sent:
                    send(shell, ("interrupt", n))
                else:
                    alive = True  # not sent: the input is dropped
                    break
        if not alive:
            return 1


def _await_result(
    n: int, shell: Pid, events: queue.Queue[Any], send: Callable[[Any, Any], None], out: TextIO
) -> bool:
    """Print the output of evaluation ``n`` until its result; False if the session
    is gone. (Ctrl-C: the caller sends the interrupt and calls again.)"""
    while True:
        event = events.get()
        if event[0] == "gone":
            _print_out(f"*** the shell session ended: {event[1]}\n", out)
            return False
        if event[1] != n:
            continue  # a late event of an earlier input
        if event[0] == "shell_output":
            _print_out(event[2], out)
            continue
        kind, text = event[2], event[3]
        if kind == "value":
            _print_out(text + "\n", out)
        elif kind in ("error", "interrupted"):
            _print_out(text if text.endswith("\n") else text + "\n", out)
        return True


__all__ = ["MODULE", "allow_remote_shell", "forbid_remote_shell", "start_session"]
