"""GenServer: a process that serves calls and casts around its own state.

Subclass :class:`GenServer`, keep state in attributes, and implement the async
callbacks you need::

    class Counter(GenServer):
        async def init(self, start=0):
            self.count = start

        async def handle_call(self, request, from_):
            if request == "get":
                return self.count

        async def handle_cast(self, request):
            if request == "inc":
                self.count += 1

    pid = await Counter.start_link(10, name="counter")
    cast("counter", "inc")
    assert await call("counter", "get") == 11

Callback results, as OTP's:

* ``handle_call`` returns the reply; :data:`NoReply` to reply later with
  :func:`reply`; ``Stop(reason, reply)`` to reply and stop (``Stop(reason)``
  replies None).
* ``handle_cast`` / ``handle_info`` return None, or ``Stop(reason)``.
* ``init`` returns None, or ``Stop(reason)`` to refuse to start (the starter
  gets :class:`StartError`); an exception in ``init`` does the same.
* ``terminate(reason)`` runs when the server stops by a ``Stop``, by
  :func:`stop`, by a crash in a callback, or -- if it traps exits
  (``beamlet.process_flag("trap_exit", True)`` in ``init``) -- when its parent
  (its supervisor) tells it to shut down. A server that does not trap exits is
  killed by the shutdown signal without ``terminate``, exactly as in OTP.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import traceback
from types import TracebackType
from typing import Any, ClassVar

import beamlet
from beamlet import ANY, Down, Exit, Pid, ProcessExit, Ref
from beamlet import code as _code
from beamlet.otp import gen
from beamlet.otp.errors import ServerExit, StartError

logger = logging.getLogger("beamlet.otp")


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NoReply"


#: Returned by ``handle_call`` to reply later with :func:`reply`.
NoReply = _NoReply()


@dataclasses.dataclass(frozen=True)
class Stop:
    """Returned by a callback to stop the server with ``reason`` (replying
    ``reply`` first, from ``handle_call``)."""

    reason: Any = "normal"
    reply: Any = None


_NORMAL_REASONS = ("normal", "shutdown")


def is_normal_exit(reason: Any) -> bool:
    """normal, shutdown or ("shutdown", _): exits that are not failures (OTP)."""
    if isinstance(reason, str):
        return reason in _NORMAL_REASONS
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"


class GenServer:
    """Base class of servers; see the module documentation."""

    #: Seconds ``start``/``start_link`` wait for ``init`` (None: forever).
    start_timeout: ClassVar[float | None] = 5.0

    # -- callbacks -------------------------------------------------------

    async def init(self, *args: Any) -> Any:
        """Called in the new server process with ``start``/``start_link``'s
        arguments, before the caller's ``start_link`` returns (Erlang's
        ``init/1``). Set the state as attributes of ``self``. Return normally
        to start; return ``Stop(reason)`` or raise to refuse: ``start_link``
        then raises ``StartError(reason)`` and the process ends."""
        return None

    async def handle_call(self, request: Any, from_: gen.From) -> Any:
        """A ``call(server, request)`` (Erlang's ``handle_call/3``). The value
        returned is the reply. Return ``NoReply`` to answer later with
        ``reply(from_, value)`` (from this or another process);
        ``Stop(reason, reply)`` to reply and stop. Raising crashes the server
        (the caller gets ``ServerExit``). Default: raise, a call nobody expects."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected call: {request!r}")

    async def handle_cast(self, request: Any) -> Any:
        """A ``cast(server, request)``: no reply (Erlang's ``handle_cast/2``).
        Return ``Stop(reason)`` to stop; anything else is ignored."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected cast: {request!r}")

    async def handle_info(self, msg: Any) -> Any:
        """Any other message: a ``Down`` of a monitor, an ``Exit`` while
        trapping exits, a ``send_after`` timer, a plain ``send`` (Erlang's
        ``handle_info/2``). Return ``Stop(reason)`` to stop. Default: log it
        and carry on, as OTP does."""
        logger.warning(
            "%s %r received an unexpected message: %r", type(self).__qualname__, beamlet.self(), msg
        )

    async def terminate(self, reason: Any) -> None:
        """Called when the server stops: a callback returned ``Stop``,
        :func:`stop` was called, a callback raised, or -- only while it traps
        exits -- its parent (supervisor) sent it an exit signal (Erlang's
        ``terminate/2``). Clean up here; a server
        killed outright (``"kill"``, or not trapping exits) does not run it."""
        return None

    async def code_change(self, old_vsn: Any, state: dict[str, Any], extra: Any) -> Any:
        """Called by :func:`beamlet.code.upgrade` on the server's own turn, on
        the *new* version of its class, to migrate the state from version
        ``old_vsn`` (the old module's ``__vsn__``, else its version number;
        Erlang's ``code_change/3``). ``self`` already holds the old attributes;
        ``state`` is a copy of them. Set attributes on ``self`` and return None,
        or return a dict: the new attributes. Raising (or returning anything
        else) fails the upgrade: the load is undone and the server keeps its
        old code and state. Default: keep the state as it is."""
        return None

    # -- starting --------------------------------------------------------

    @classmethod
    async def start_link(cls, *args: Any, name: str | None = None) -> Pid:
        """Start a server linked to the caller; returns once ``init`` is done.
        Raises :class:`StartError` if ``init`` fails or the name is taken."""
        return await gen.start(
            _serve, (cls, args, name, beamlet.self()), link=True, timeout=cls.start_timeout
        )

    @classmethod
    async def start(cls, *args: Any, name: str | None = None) -> Pid:
        """Like :meth:`start_link`, without the link."""
        return await gen.start(
            _serve, (cls, args, name, beamlet.self()), link=False, timeout=cls.start_timeout
        )


async def _serve(
    ack: Any, cls: type[GenServer], args: tuple[Any, ...], name: str | None, parent: Pid
) -> None:
    me = beamlet.self()
    if _code.generation[0]:
        cls = _code.current_class(cls)  # the module's current version, as Erlang starts
    server = cls.__new__(cls)
    try:
        if name is not None:
            try:
                beamlet.register(name, me)
            except beamlet.BadArg:
                raise StartError(("already_started", beamlet.whereis(name))) from None
        result = await server.init(*args)
        if isinstance(result, Stop):
            raise StartError(result.reason)
    except BaseException as e:
        reason = e.reason if isinstance(e, StartError | ProcessExit) else e
        if not isinstance(e, StartError | ProcessExit):
            _report(server, me, parent, "init", None, e)
        beamlet.unlink(parent)  # the starter learns it from StartError, not by dying
        ack(reason, failed=True)
        raise ProcessExit("normal") from None
    ack()
    await _loop(server, me, parent)


async def _loop(server: GenServer, me: Pid, parent: Pid) -> None:
    # The server's hot loop: names bound to locals once, the call checked first
    # and answered inline (gen.reply's alias case), nothing allocated per
    # message beyond the reply itself.
    receive = beamlet.receive
    send = beamlet.send
    GEN_CALL, GEN_CAST, SYSTEM, ALIAS = gen.GEN_CALL, gen.GEN_CAST, gen.SYSTEM, gen.ALIAS
    # beamlet.code's load counter: when it moves, the server takes the current
    # version of its class before the next message (a fully qualified call in
    # Erlang's gen_server); while it stays, one list read per message.
    generation = _code.generation
    seen = generation[0]
    last: Any = None
    try:
        while True:
            msg = last = await receive()
            if generation[0] != seen:
                seen = generation[0]
                _take_current_class(server)
            result: Any = None
            if type(msg) is tuple and len(msg) == 3 and msg[0] == GEN_CALL:
                from_ = msg[1]
                result = await server.handle_call(msg[2], from_)
                if isinstance(result, Stop):
                    gen.reply(from_, result.reply)
                elif result is not NoReply:
                    tag = from_[1] if type(from_) is tuple and len(from_) == 2 else None
                    if (
                        type(tag) is tuple
                        and len(tag) == 2
                        and tag[0] == ALIAS
                        and type(tag[1]) is Ref
                    ):
                        send(tag[1], (tag, result))  # the caller's alias (gen.reply)
                    else:
                        gen.reply(from_, result)
                    continue
            elif type(msg) is tuple and len(msg) == 2 and msg[0] == GEN_CAST:
                result = await server.handle_cast(msg[1])
            elif type(msg) is tuple and len(msg) == 3 and msg[0] == SYSTEM:
                result = _system(server, msg[1], msg[2])
                if result is _SUSPEND:
                    result = await _suspended(server, parent, msg[1])
            elif type(msg) is Exit and msg.pid == parent:
                result = Stop(msg.reason)  # our parent (supervisor) stops us: we trap exits
            else:
                result = await server.handle_info(msg)
            if isinstance(result, Stop):
                await server.terminate(result.reason)
                if is_normal_exit(result.reason):
                    raise ProcessExit(result.reason)
                _report(server, me, parent, "stop", last, None, result.reason)
                raise ProcessExit(result.reason)
    except (ProcessExit, GeneratorExit):
        raise
    except BaseException as e:
        _report(server, me, parent, "callback", last, e)
        try:
            await server.terminate(e)
        except Exception as t:  # terminate failing must not hide the crash
            logger.error("terminate of %r failed: %r", me, t)
        raise ProcessExit(e) from e


_SUSPEND = object()


def _take_current_class(server: GenServer) -> None:
    """Give ``server`` the current version of its class, if beamlet.code loaded
    a new one (its attributes, the state, stay as they are)."""
    cls = type(server)
    new = _code.current_class(cls)
    if new is not cls:
        try:
            server.__class__ = new
        except TypeError as e:  # a different layout (__slots__): keep the old class
            logger.warning("%r keeps %s: cannot take its new version (%s)", beamlet.self(), cls, e)


async def _suspended(server: GenServer, parent: Pid, suspender: Any) -> Any:
    """sys:suspend: answer only system messages (and the parent's exit) until
    ``resume``; ``change_code`` is one of them (beamlet.code.upgrade). Unlike
    sys, a server whose suspender exits without resuming it resumes by itself."""
    SYSTEM = gen.SYSTEM
    who = suspender[0] if type(suspender) is tuple and suspender else None
    ref = beamlet.monitor(who) if type(who) is Pid else beamlet.make_ref()
    try:
        return await _suspended_loop(server, parent, ref, SYSTEM)
    finally:
        beamlet.demonitor(ref, flush=True)


async def _suspended_loop(server: GenServer, parent: Pid, ref: Ref, SYSTEM: Any) -> Any:
    while True:
        msg = await beamlet.receive((SYSTEM, ANY, ANY), Exit(parent, ANY), Down(ref, ANY, ANY))
        if type(msg) is Exit:
            return Stop(msg.reason)
        if type(msg) is Down:
            logger.warning("%r resumes: %r suspended it and exited", beamlet.self(), msg.pid)
            return None
        from_, request = msg[1], msg[2]
        kind = request[0] if isinstance(request, tuple) and request else request
        if kind == "resume":
            gen.reply(from_, "ok")
            return None
        if kind == "change_code":
            answer = await _change_code(server, request[2], request[3])
            try:
                gen.reply(from_, answer)
            except TypeError:  # an exception that cannot be copied into a message
                gen.reply(from_, ("error", repr(answer[1])))
            continue
        result = _system(server, from_, request)
        if isinstance(result, Stop):
            return result


async def _change_code(server: GenServer, old_vsn: Any, extra: Any) -> Any:
    """sys:change_code on the server's own turn: the current version of its
    class migrates the state with ``code_change``; if that fails, the server
    keeps its class and its state."""
    cls = type(server)
    new_cls = _code.current_class(cls)
    state = dict(server.__dict__)
    trial = new_cls.__new__(new_cls)
    trial.__dict__.update(state)
    try:
        result = await trial.code_change(old_vsn, dict(state), extra)
        if isinstance(result, dict):
            trial.__dict__.clear()
            trial.__dict__.update(result)
        elif result is not None:
            raise TypeError(f"code_change must return None or a dict, not {result!r}")
        server.__class__ = new_cls
    except Exception as e:
        logger.error("code_change of %r (%s) failed: %r", beamlet.self(), new_cls.__qualname__, e)
        return ("error", e)
    server.__dict__.clear()
    server.__dict__.update(trial.__dict__)
    return "ok"


def _system(server: GenServer, from_: gen.From, request: Any) -> Any:
    kind = request[0] if isinstance(request, tuple) else request
    if kind == "suspend":
        cls = type(server)
        gen.reply(from_, ("ok", cls.__module__, cls.__qualname__))
        return _SUSPEND
    if kind == "resume":
        gen.reply(from_, "ok")  # not suspended: nothing to do (sys:resume)
    elif kind == "get_state":
        gen.reply(from_, _state_of(server))
    elif kind == "replace_state":
        state = request[1](_state_of(server))
        server.__dict__.clear()
        server.__dict__.update(state)
        gen.reply(from_, _state_of(server))
    elif kind == "terminate":
        return Stop(request[1])
    else:
        gen.reply(from_, ("error", "unknown_system_message"))
    return None


def _state_of(server: GenServer) -> dict[str, Any]:
    return dict(server.__dict__)


def _report(
    server: Any,
    me: Pid,
    parent: Pid,
    where: str,
    last: Any,
    exc: BaseException | None,
    reason: Any = None,
) -> None:
    """A crash report (proc_lib's): who, ancestors, last message, traceback."""
    if not logger.isEnabledFor(logging.ERROR):
        return
    name = (beamlet.process_info(me) or {}).get("registered_name")
    logger.error(
        "crash report: %s %r (%sparent %r) %s\n  last message: %r\n  reason: %r%s",
        type(server).__qualname__,
        me,
        "" if name is None else f"registered as {name!r}, ",
        parent,
        {
            "init": "failed in init",
            "callback": "crashed in a callback",
            "stop": "stopped abnormally",
        }[where],
        last,
        exc if exc is not None else reason,
        "\n" + "".join(traceback.format_exception(type(exc), exc, _user_traceback(exc)))
        if exc is not None
        else "",
    )


_BEAMLET_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _user_traceback(exc: BaseException) -> TracebackType | None:
    """The traceback of ``exc`` from its first frame outside beamlet (not this
    module's loop): a crash report starts at the user's callback, as Elixir's
    do. All of it if every frame is beamlet's."""
    tb = first = exc.__traceback__
    while first is not None and first.tb_frame.f_code.co_filename.startswith(_BEAMLET_DIR):
        first = first.tb_next
    return tb if first is None else first


async def stop(server: Any, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop a server and wait until it has exited: its ``terminate(reason)``
    runs, then it exits with ``reason`` (gen_server:stop). Raises
    :class:`ServerExit` with reason noproc if it is not running, or with the
    reason it exited with if that is not ``reason``. A server that stops itself
    this way gets :class:`CallError` ``"calling_self"`` (return ``Stop`` instead)."""
    me = beamlet.self()
    if gen.is_self(server, me):
        raise gen.calling_self(server, me)
    ref = beamlet.monitor(server)
    try:
        beamlet.send(
            server, (gen.SYSTEM, (beamlet.self(), beamlet.make_ref()), ("terminate", reason))
        )
    except beamlet.BadArg:
        pass
    try:
        down = await beamlet.receive(Down(ref, ANY, ANY), timeout=timeout)
    except TimeoutError:
        beamlet.demonitor(ref, flush=True)
        raise
    if down.reason != reason:
        raise ServerExit(server, down.reason)


async def get_state(server: Any, timeout: float | None = 5.0) -> dict[str, Any]:
    """A copy of a server's state (its attributes), for debugging (sys:get_state)."""
    state: dict[str, Any] = await gen.call(server, "get_state", timeout=timeout, system=True)
    return state


async def replace_state(server: Any, fn: Any, timeout: float | None = 5.0) -> dict[str, Any]:
    """Replace a server's state with ``fn(state)`` (sys:replace_state); returns it."""
    state: dict[str, Any] = await gen.call(
        server, ("replace_state", fn), timeout=timeout, system=True
    )
    return state


__all__ = [
    "GenServer",
    "NoReply",
    "ServerExit",
    "Stop",
    "get_state",
    "is_normal_exit",
    "replace_state",
    "stop",
]
