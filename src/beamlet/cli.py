"""The ``beamlet`` command.

``beamlet --version`` prints the installed version; ``beamlet --help`` what the
command can do. The verbs:

* ``beamlet run MODULE:FUNC [--node NAME] [--cookie C] [--allow observer,shell,code]``
  runs ``FUNC`` as the main process of a runtime (a node with ``--node``);
* ``beamlet top [NODE] [--cookie C]``: a terminal observer of a node;
* ``beamlet remsh NODE [--cookie C]``: a shell evaluated on a node;
* ``beamlet dashboard [NODE] [--port 4000] [--host 127.0.0.1] [--cookie C]``:
  the web dashboard of a node, served from here.

``top``, ``remsh`` and ``dashboard`` reach the node over Erlang distribution:
the command starts a runtime of its own, a hidden node (``beamlet-cli-<pid>@HOST``,
HOST taken from NODE), on its own threads. A NODE without ``@`` means
``NODE@127.0.0.1``. The cookie is ``--cookie``, else ``$BEAMLET_COOKIE``, else
what a node uses by default (``$ERLANG_COOKIE``, else ``~/.erlang.cookie``).

Parsing is standard library only (argparse): the command starts fast; each
verb imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from importlib import metadata
from typing import Any

#: What ``beamlet run --allow`` can turn on.
ALLOW = ("observer", "shell", "code")
DEFAULT_HOST = "127.0.0.1"
#: Exit status when ``beamlet top`` / ``dashboard`` without NODE cannot choose a node.
EXIT_CHOOSE = 2


def version() -> str:
    """The installed distribution's version ("unknown" when run from a source tree
    that was never installed)."""
    try:
        return metadata.version("beamlet")
    except metadata.PackageNotFoundError:
        return "unknown"


class CommandError(Exception):
    """A clear message for the user; the command exits with status 1."""


# -- arguments ---------------------------------------------------------------------


def node_name(text: str) -> str:
    """``name@host``; a bare ``name`` means ``name@127.0.0.1``."""
    if not isinstance(text, str) or not text or text.count("@") > 1 or text.startswith("@"):
        raise argparse.ArgumentTypeError(f"a node name is name or name@host, got {text!r}")
    if "@" not in text:
        return f"{text}@{DEFAULT_HOST}"
    if text.endswith("@"):
        raise argparse.ArgumentTypeError(f"a node name is name or name@host, got {text!r}")
    return text


def allow_list(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    bad = [item for item in items if item not in ALLOW]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"--allow takes a comma-separated list of {', '.join(ALLOW)}; got {text!r}"
        )
    return items


def target(text: str) -> tuple[str, str]:
    module, sep, func = text.partition(":")
    if not sep or not module or not func:
        raise argparse.ArgumentTypeError(
            f"expected MODULE:FUNC (e.g. myapp.main:main), got {text!r}"
        )
    return module, func


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port


def cookie_of(args: argparse.Namespace) -> str | None:
    """--cookie, else $BEAMLET_COOKIE, else None (the node's default: $ERLANG_COOKIE,
    then ~/.erlang.cookie)."""
    cookie: str | None = args.cookie or os.environ.get("BEAMLET_COOKIE") or None
    return cookie


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="beamlet",
        description=(
            "beamlet: the BEAM's process model for Python (processes, links, monitors, "
            "supervisors, Erlang distribution). Programs use it as a library: "
            "beamlet.run(main). See README.md and docs/."
        ),
        epilog=(
            "NODE is name@host (a bare name means name@127.0.0.1). The cookie is --cookie, "
            "else $BEAMLET_COOKIE, else $ERLANG_COOKIE, else ~/.erlang.cookie."
        ),
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"beamlet {version()} (Python {sys.version.split()[0]})",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    cookie_help = (
        "the distribution cookie (default: $BEAMLET_COOKIE, $ERLANG_COOKIE, ~/.erlang.cookie)"
    )

    run = sub.add_parser(
        "run",
        help="run MODULE:FUNC as the main process (a node with --node)",
        description=(
            "Import MODULE and run FUNC (an async function taking no arguments) as the main "
            "process of a beamlet runtime, until it returns."
        ),
    )
    run.add_argument("target", type=target, metavar="MODULE:FUNC")
    run.add_argument("--node", type=node_name, metavar="NAME", help="make the runtime this node")
    run.add_argument("--cookie", help=cookie_help)
    run.add_argument(
        "--allow",
        type=allow_list,
        default=(),
        metavar="LIST",
        help=(
            "comma-separated: observer (beamlet.observer.expose()), shell "
            "(allow_remote_shell()), code (beamlet.code.expose()); needs --node"
        ),
    )
    run.add_argument("--schedulers", type=int, metavar="N", help="scheduler threads")

    top = sub.add_parser(
        "top",
        help="a terminal observer of a node",
        description=(
            "A terminal observer: schedulers, memory, run queue; the top processes by cpu, "
            "memory, message queue or reductions; a process's info and stack; kill. Keys: "
            "c m b r sort by cpu/memory/mailbox/reductions, arrows select, k kills, q quits. "
            "Without NODE: the one node registered with the local epmd that exposes the "
            "observer (else the nodes are listed and the status is 2)."
        ),
    )
    top.add_argument("node", type=node_name, nargs="?", metavar="NODE")
    top.add_argument("--cookie", help=cookie_help)

    remsh = sub.add_parser(
        "remsh",
        help="a Python shell evaluated on a node",
        description=(
            "A remote shell: each input is evaluated by a shell process on NODE (top-level "
            "await works). Ctrl-C interrupts an evaluation, Ctrl-D leaves. NODE must allow it "
            "(beamlet.observer.allow_remote_shell(), or beamlet run --allow shell)."
        ),
    )
    remsh.add_argument("node", type=node_name, metavar="NODE")
    remsh.add_argument("--cookie", help=cookie_help)

    dash = sub.add_parser(
        "dashboard",
        help="serve the web dashboard of a node",
        description=(
            "Serve the web dashboard of NODE from this command (Ctrl-C stops it). Without "
            "NODE: chosen as for `beamlet top`."
        ),
    )
    dash.add_argument("node", type=node_name, nargs="?", metavar="NODE")
    dash.add_argument("--port", type=port_number, default=4000, help="default 4000")
    dash.add_argument("--host", default=DEFAULT_HOST, help="default 127.0.0.1 (loopback only)")
    dash.add_argument("--cookie", help=cookie_help)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 0
    if args.command == "run" and args.allow and args.node is None:
        p.error("--allow needs --node (other nodes reach these services over distribution)")
    verbs: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run,
        "top": cmd_top,
        "remsh": cmd_remsh,
        "dashboard": cmd_dashboard,
    }
    try:
        return verbs[args.command](args)
    except CommandError as e:
        print(f"beamlet {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- beamlet run -------------------------------------------------------------------


def _allow(what: str) -> None:
    if what == "observer":
        from beamlet import observer

        observer.expose()
    elif what == "shell":
        from beamlet.observer._shell import allow_remote_shell

        allow_remote_shell()
    elif what == "code":
        try:
            code = importlib.import_module("beamlet.code")
        except ImportError as e:
            raise CommandError(f"--allow code: beamlet.code is not available ({e})") from None
        code.expose()


def load_target(module: str, func: str) -> Callable[..., Any]:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: the current directory
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise CommandError(f"cannot import {module}: {e}") from None
    fn: Any = mod
    for part in func.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise CommandError(f"{module} has no {func}")
    if not callable(fn):
        raise CommandError(f"{module}:{func} is not callable")
    return fn  # type: ignore[no-any-return]


def cmd_run(args: argparse.Namespace) -> int:
    import inspect

    import beamlet

    fn = load_target(*args.target)
    allow: tuple[str, ...] = args.allow
    started = False

    async def main() -> Any:
        nonlocal started
        started = True  # the node (if any) is up
        for what in allow:
            _allow(what)
        if args.node is not None:
            print(
                f"beamlet: node {args.node} running {args.target[0]}:{args.target[1]}", flush=True
            )
        result = fn()
        if inspect.isawaitable(result):
            result = await result
        return result

    main.__qualname__ = getattr(fn, "__qualname__", "main")
    main.__module__ = getattr(fn, "__module__", __name__)
    options: dict[str, Any] = {}
    if args.schedulers is not None:
        options["schedulers"] = args.schedulers
    if args.node is not None:
        options.update(node=args.node, cookie=cookie_of(args))
    try:
        result = beamlet.run(main, **options)
    except Exception as e:
        if started:
            raise  # the program's own error: its traceback
        raise CommandError(f"cannot start the node {args.node}: {e}") from None
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    if result is not None:
        print(repr(result))
    return 0


# -- the command's own node ----------------------------------------------------------


class Attached:
    """The command's own runtime, a hidden node, on its own threads: the
    terminal (or textual's asyncio loop) stays on the main thread and reaches
    the runtime through :meth:`submit` (run ``await fn(*args)`` in a fresh
    process, get a ``concurrent.futures.Future``) and :meth:`send`."""

    def __init__(self, peer: str, cookie: str | None) -> None:
        self.peer = peer
        host = peer.partition("@")[2] or DEFAULT_HOST
        self.name = f"beamlet-cli-{os.getpid()}@{host}"
        self.cookie = cookie
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._main_pid: Any = None
        self._thread = threading.Thread(target=self._run, name="beamlet-cli", daemon=True)

    def __enter__(self) -> Attached:
        self._thread.start()
        if not self._ready.wait(60):
            raise CommandError(f"the command's node {self.name} did not start within 60 s")
        if self._error is not None:
            raise CommandError(f"cannot start the command's node {self.name}: {self._error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        import beamlet

        async def main() -> None:
            self._main_pid = beamlet.self()
            self._ready.set()
            await beamlet.receive("stop")

        try:
            beamlet.run(main, node=self.name, cookie=self.cookie, hidden=True)
        except BaseException as e:
            self._error = e
        finally:
            self._ready.set()

    def close(self) -> None:
        if self._main_pid is not None and self._thread.is_alive():
            import beamlet

            try:
                beamlet.send(self._main_pid, "stop")
            except RuntimeError:
                return
            self._thread.join(10)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``await fn(*args)`` (or ``fn(*args)``) in a new process of this runtime."""
        import inspect

        import beamlet

        fut: Future[Any] = Future()

        async def job() -> None:
            try:
                value = fn(*args)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as e:
                _settle(fut, None, e)
            except BaseException as e:  # killed: the command is closing
                _settle(fut, None, CommandError(f"interrupted: {e!r}"))
                raise
            else:
                _settle(fut, value, None)

        pid = beamlet.spawn(job)

        def cancelled(f: Future[Any]) -> None:
            if f.cancelled():  # the caller gave up (textual quit, say): so does the process
                try:
                    beamlet.exit(pid, "kill")
                except RuntimeError:
                    pass  # the runtime is gone

        fut.add_done_callback(cancelled)
        return fut

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = 30.0) -> Any:
        return self.submit(fn, *args).result(timeout)

    def spawn(self, fn: Callable[[], Any]) -> None:
        import beamlet

        beamlet.spawn(fn)

    def send(self, dest: Any, msg: Any) -> None:
        import beamlet

        beamlet.send(dest, msg)

    # -- reaching the peer --------------------------------------------------------

    def connect(self, peer: str | None = None, timeout: float = 7.0) -> None:
        """Connect to ``peer`` (default: the one given); CommandError says why not."""
        from beamlet import net_kernel

        peer = peer or self.peer
        if self.call(net_kernel.connect, peer, timeout, timeout=timeout + 5):
            return
        alive, _, host = peer.partition("@")
        try:
            names = registered_nodes(host)
        except OSError as e:
            raise CommandError(f"cannot reach {peer}: no epmd answers on {host} ({e})") from None
        known = [name for name, _ in names if name != self.name.partition("@")[0]]
        if alive not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise CommandError(
                f"no node named {alive!r} is registered with epmd on {host} (registered: {listed})"
            )
        raise CommandError(
            f"{peer} refused the connection: the cookie is probably wrong "
            "(--cookie, $BEAMLET_COOKIE, $ERLANG_COOKIE or ~/.erlang.cookie)"
        )

    def rpc(self, module: str, function: str, args: list[Any], timeout: float = 10.0) -> Any:
        from beamlet import rpc

        return self.call(rpc.call, self.peer, module, function, args, timeout, timeout=timeout + 5)


def _settle(fut: Future[Any], value: Any, error: BaseException | None) -> None:
    if fut.done():
        return  # cancelled by the caller
    try:
        if error is None:
            fut.set_result(value)
        else:
            fut.set_exception(error)
    except InvalidStateError:
        pass  # cancelled meanwhile


def registered_nodes(host: str = DEFAULT_HOST) -> list[tuple[str, int]]:
    """(name, port) of the nodes registered with the epmd on ``host``."""
    from beamlet.distribution import epmd_client

    return epmd_client.names(host, timeout=3.0)


def observer_error(node: str, reply: Any) -> str:
    """A clear sentence for an observer rpc that failed."""
    from beamlet.rpc import describe_badrpc

    return describe_badrpc(
        node,
        reply,
        "does not expose the observer (the node must call beamlet.observer.expose(), "
        "e.g. `beamlet run ... --allow observer`)",
    )


def choose_node(attached: Attached, host: str = DEFAULT_HOST) -> str:
    """The one node on ``host``'s epmd that exposes the observer; CommandError
    (status 2) listing what there is otherwise."""
    try:
        names = registered_nodes(host)
    except OSError as e:
        raise ChooseError(f"no epmd answers on {host} ({e}): give NODE") from None
    mine = attached.name.partition("@")[0]
    found: list[str] = []
    others: list[str] = []
    for name, _ in sorted(names):
        if name == mine:
            continue
        peer = f"{name}@{host}"
        try:
            reply = attached.call(_probe, peer, timeout=15)
        except Exception:
            reply = None
        (found if reply else others).append(peer)
    if len(found) == 1:
        return found[0]
    lines = []
    if found:
        lines.append("several nodes expose the observer; give NODE:")
        lines += [f"  {peer}" for peer in found]
    else:
        lines.append(f"no node registered with epmd on {host} exposes the observer")
    if others:
        lines.append("other nodes (not reachable with this cookie, or observer not exposed):")
        lines += [f"  {peer}" for peer in others]
    raise ChooseError("\n".join(lines))


class ChooseError(CommandError):
    """No single node to attach to (exit status 2)."""


async def _probe(peer: str) -> bool:
    from beamlet import net_kernel, rpc

    if not await net_kernel.connect(peer, 5.0):
        return False
    reply = await rpc.call(peer, "beamlet_observer", "system", [], timeout=5.0)
    return isinstance(reply, dict)


def _attach(args: argparse.Namespace) -> tuple[Attached, str]:
    peer: str | None = args.node
    attached = Attached(peer or f"beamlet@{DEFAULT_HOST}", cookie_of(args))
    attached.__enter__()
    try:
        if peer is None:
            peer = choose_node(attached)
            attached.peer = peer
        attached.connect(peer)
    except BaseException:
        attached.close()
        raise
    return attached, peer


# -- beamlet top / remsh / dashboard --------------------------------------------------


def cmd_top(args: argparse.Namespace) -> int:
    try:
        attached, peer = _attach(args)
    except ChooseError as e:
        print(f"beamlet top: {e}", file=sys.stderr)
        return EXIT_CHOOSE
    try:
        reply = attached.rpc("beamlet_observer", "system", [])
        if not isinstance(reply, dict):
            raise CommandError(observer_error(peer, reply))
        try:
            from beamlet.observer._top import RemoteSource, TopApp
        except ImportError as e:
            raise CommandError(
                f"beamlet top needs textual ({e}): pip install 'beamlet[observer]'"
            ) from None

        # The screen is textual's: the command's own log lines would tear it
        # (what goes wrong shows in the app, in red).
        quiet = logging.getLogger("beamlet")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        app = TopApp(RemoteSource(attached, peer))
        app.run()
        return 0 if app.return_code is None else app.return_code
    finally:
        attached.close()


def cmd_remsh(args: argparse.Namespace) -> int:
    attached, peer = _attach(args)
    try:
        from beamlet.observer._shell import client

        return client(peer, attached.spawn, attached.send)
    finally:
        attached.close()


def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        attached, peer = _attach(args)
    except ChooseError as e:
        print(f"beamlet dashboard: {e}", file=sys.stderr)
        return EXIT_CHOOSE
    try:
        try:
            from beamlet.observer import _dashboard
        except ImportError as e:
            raise CommandError(
                f"the dashboard needs beamlet.http's dependencies ({e}): "
                "pip install 'beamlet[observer]'"
            ) from None

        async def serve() -> str:
            board = await _dashboard.dashboard(port=args.port, host=args.host, node=peer)
            return str(board.url)

        url = attached.call(serve)
        print(f"beamlet dashboard of {peer} at {url} (Ctrl-C stops it)", flush=True)
        threading.Event().wait()  # until Ctrl-C
        return 0
    finally:
        attached.close()


if __name__ == "__main__":
    sys.exit(main())
