"""Signals and every rule that applies them.

Theory of operation
-------------------
Everything one process can do to another -- send a message, link, unlink,
monitor, demonitor, send an exit signal, report a death -- is a *signal*
appended to the target's ``inbox`` under its (striped) lock: the only place two
threads meet. A message is any other object. The owner alone drains its inbox,
at its own schedule points, moving messages to its private ``queue`` and
applying the other signals to state only it mutates (``links``, ``monitors``).
Because every signal from A to B travels through B's one inbox in the order A
appended it, signals between a pair of processes arrive in the order sent:
the one ordering guarantee Erlang makes.

This module holds one small class per signal kind and the rules of
docs/semantics.md §Signals to §Aliases: :func:`deliver` (a signal's journey to
a live, waiting, dead or remote process), :func:`drain` (its arrival),
:func:`handle_exit` (EXIT-*), :func:`finish` (a process's death: what its links,
monitors, names, aliases and timers become) and :func:`answer_dead` (what a dead
process answers). It also holds the operations a process performs on itself
that send signals (:func:`link`, :func:`monitor`, ...), so that api.py stays a
list of thin public functions.

Dispatch is on ``type(sig) is X``. A signal is never shown to user code: only
the messages they turn into (``Exit``, ``Down``, an alias's message) are.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING, Any, Final

from beamlet._kernel.context import current_scheduler
from beamlet._kernel.process import (
    DEAD,
    EXITING,
    NOTHING,
    RUNNABLE,
    RUNNING,
    WAITING,
    BadArg,
    Down,
    Exit,
    Process,
    ProcessExit,
)
from beamlet.terms import Atom, Pid, Ref

logger = logging.getLogger("beamlet")
_get_ident = threading.get_ident

if TYPE_CHECKING:
    from beamlet._kernel.runtime import Runtime

NORMAL: Final = Atom("normal")
KILL: Final = Atom("kill")
KILLED: Final = Atom("killed")
NOPROC: Final = Atom("noproc")
NOCONNECTION: Final = Atom("noconnection")


# ---------------------------------------------------------------------- the signals


class ExitSig:
    """An exit signal: from a link (``from_link``: the linked process died) or
    from ``exit(pid, reason)``."""

    __slots__ = ("from_link", "reason", "sender")

    def __init__(self, sender: Pid | None, reason: Any, from_link: bool) -> None:
        self.sender = sender
        self.reason = reason
        self.from_link = from_link

    def __repr__(self) -> str:
        return f"ExitSig({self.sender!r}, {self.reason!r}, from_link={self.from_link})"


class LinkSig:
    """``sender`` linked to the receiver."""

    __slots__ = ("sender",)

    def __init__(self, sender: Pid) -> None:
        self.sender = sender

    def __repr__(self) -> str:
        return f"LinkSig({self.sender!r})"


class UnlinkSig:
    """``sender`` removed its link to the receiver."""

    __slots__ = ("sender",)

    def __init__(self, sender: Pid) -> None:
        self.sender = sender

    def __repr__(self) -> str:
        return f"UnlinkSig({self.sender!r})"


class MonitorSig:
    """``sender`` monitors the receiver under ``ref``; ``name`` is the name it
    monitored it by (reported in the Down), or None for a monitor by pid.
    Local monitors do not travel as signals (:func:`add_monitor`): this one
    comes from another node, or is answered by a dead process."""

    __slots__ = ("name", "ref", "sender")

    def __init__(self, sender: Pid, ref: Ref, name: Any = None) -> None:
        self.sender = sender
        self.ref = ref
        self.name = name

    def __repr__(self) -> str:
        return f"MonitorSig({self.sender!r}, {self.ref!r}, {self.name!r})"


class DemonitorSig:
    """``sender`` turned its monitor ``ref`` of the receiver off (from another node)."""

    __slots__ = ("ref", "sender")

    def __init__(self, sender: Pid, ref: Ref) -> None:
        self.sender = sender
        self.ref = ref

    def __repr__(self) -> str:
        return f"DemonitorSig({self.sender!r}, {self.ref!r})"


class DownSig:
    """The target of the receiver's monitor ``ref`` died of ``reason``.
    ``sender``: the dead process's pid, or the name it was monitored by."""

    __slots__ = ("reason", "ref", "sender")

    def __init__(self, sender: Any, ref: Ref, reason: Any) -> None:
        self.sender = sender
        self.ref = ref
        self.reason = reason

    def __repr__(self) -> str:
        return f"DownSig({self.sender!r}, {self.ref!r}, {self.reason!r})"


class MarkSig:
    """Not a signal but a position in the stream: messages before it predate
    ``ref`` (the receive marker, :func:`set_mark`)."""

    __slots__ = ("ref",)

    def __init__(self, ref: Ref) -> None:
        self.ref = ref

    def __repr__(self) -> str:
        return f"MarkSig({self.ref!r})"


class WakeSig:
    """Just wake the receiver up (its ``blocking()`` work is done)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "WakeSig()"


class AliasMsg:
    """A message sent to the receiver's alias ``ref``: it gets in only if the
    alias is still active when it arrives (ALIAS-2)."""

    __slots__ = ("msg", "ref")

    def __init__(self, ref: Ref, msg: Any) -> None:
        self.ref = ref
        self.msg = msg

    def __repr__(self) -> str:
        return f"AliasMsg({self.ref!r}, {self.msg!r})"


#: Every kind of non-message item an inbox can hold.
SIGNALS: Final = frozenset(
    (ExitSig, LinkSig, UnlinkSig, MonitorSig, DemonitorSig, DownSig, MarkSig, WakeSig, AliasMsg)
)


def is_atom(reason: Any, atom: Atom) -> bool:
    """``reason == atom`` for a string reason; never calls a foreign ``__eq__``."""
    t = type(reason)
    return (t is Atom or t is str) and reason == atom


# ---------------------------------------------------------------------- a signal's journey


def deliver(rt: Runtime, pid: Pid, item: Any, sender: Process | None = None) -> None:
    """Append a message or signal to ``pid``'s inbox, waking it if it waits.

    To a remote pid it goes to the distribution; a dead process answers it
    (:func:`answer_dead`). A message takes :func:`send_message`'s lock-free path.
    """
    if pid.node is not None:
        rt.distribution.route(pid, item, sender)
        return
    proc = rt.table.get(pid.id)
    if proc is None:
        answer_dead(rt, pid, item)
        return
    if type(item) not in SIGNALS:
        send_message(rt, proc, item)
        return
    if put_locked(rt, proc, item) >= EXITING:
        answer_dead(rt, pid, item)
    elif type(item) is ExitSig and proc.state == RUNNING:
        # The state read again after the append: a process a scheduler starts
        # now either sees the signal before it runs (Scheduler.loop) or is seen
        # running here.
        exit_running(rt, proc, item)


def send_message(rt: Runtime, proc: Process, item: Any) -> None:
    """A message to a local process (``api.send`` inlines this: the hot path).

    The inbox protocol. A process's ``inbox`` list, once made (under its lock),
    stays until it dies; only its owner removes items (:func:`drain`: a copy,
    then ``del inbox[:n]``, each one atomic), so a sender may append without
    the lock. Waking is where care is needed: the scheduler parks a process
    (WAITING) under the lock only if the inbox is empty, and *then* looks at
    the inbox again; a sender appends, and *then* looks at the state. Each
    side writes before it reads, so at least one sees the other (the GIL, or
    on a free-threaded build the list's and lock's atomic instructions, order
    them), and whoever sees a WAITING process with a message wakes it under
    the lock (:func:`wake`), once. A message to a process that waits, or whose
    inbox does not exist yet, takes the lock (:func:`put_locked`). Signals
    always take the lock: their arrival at a dying process must be answered.
    """
    inbox = proc.inbox
    if inbox is not None and proc.state != WAITING:
        inbox.append(item)
        if proc.state == WAITING:  # it parked as we appended: it may not have seen it
            wake(rt, proc)
    else:
        put_locked(rt, proc, item)
    # A message to a dead process is dropped; a message never kills, so there
    # is no running process to stop (exit_running).


def put_locked(rt: Runtime, proc: Process, item: Any) -> int:
    """Append ``item`` to ``proc``'s inbox under its lock, waking it if it waits
    (a message goes in the hand-off slot then, if nothing is ahead of it).
    Returns the state it found: EXITING or DEAD means the item was not taken."""
    # ``with`` and C-level appends only: a sender may itself be killed, and
    # must never leave the lock held or a woken process off the run queue.
    signal = type(item) in SIGNALS
    s = current_scheduler()
    if s is not None and s.ident != _get_ident():
        s = None  # a thread running in a context copied from a scheduler's (asyncio)
    q = rt.runq if s is None else s.pushq
    with proc.lock:
        state = proc.state
        if state < EXITING:
            inbox = proc.inbox
            if state == WAITING and not inbox and (not signal or type(item) is AliasMsg):
                # Hand a message over in a slot the process reads without a
                # lock once it runs (the run queue's push/pop orders the two).
                # Only a message or an AliasMsg goes there, so the receive
                # fast path needs one type check.
                proc.handoff = item
            else:
                if signal:
                    proc.signals += 1  # before the append: see drain
                if inbox is None:
                    proc.inbox = [item]
                else:
                    inbox.append(item)  # behind what is there already
            if state == WAITING:
                proc.state = RUNNABLE
                q.append(proc)
    if state == WAITING and (rt.idle or s is None):
        rt.pushed(q, s)
    return state


def wake(rt: Runtime, proc: Process) -> None:
    """Make a WAITING process runnable (if it still waits): a message reached
    its inbox without the lock."""
    s = current_scheduler()
    if s is not None and s.ident != _get_ident():
        s = None  # a thread running in a context copied from a scheduler's (asyncio)
    q = rt.runq if s is None else s.pushq
    with proc.lock:
        woke = proc.state == WAITING
        if woke:
            proc.state = RUNNABLE
            q.append(proc)
    if woke and (rt.idle or s is None):
        rt.pushed(q, s)


def answer_dead(rt: Runtime, pid: Pid, item: Any, reason: Atom = NOPROC) -> None:
    """What a dead (or unreachable: ``noconnection``) process answers to a signal:
    a link gets an exit signal, a monitor a Down (LINK-2, MON-2)."""
    t = type(item)
    if t is LinkSig:
        deliver(rt, item.sender, ExitSig(pid, reason, True))
    elif t is MonitorSig:
        deliver(
            rt, item.sender, DownSig(item.name if item.name is not None else pid, item.ref, reason)
        )


def exit_running(rt: Runtime, proc: Process, sig: ExitSig) -> None:
    """An exit signal reached a process while it runs: if it is to die of it,
    stop its code now rather than at its next schedule point."""
    reason = sig.reason
    if not sig.from_link and is_atom(reason, KILL):
        reason = KILLED
    elif proc.trap_exit or is_atom(reason, NORMAL):
        return
    elif sig.from_link and not linked_now(proc, sig.sender):
        return
    rt.kill_running(proc, reason)


def exit_pending(rt: Runtime, proc: Process) -> None:
    """sysmon: ``proc`` has run for a tick without draining its inbox; act on an
    exit signal in it that must stop it now."""
    pending = [it for it in (proc.inbox or ())[:] if type(it) is ExitSig]
    for sig in pending:
        if proc.doom is not None or proc.state != RUNNING:
            return
        exit_running(rt, proc, sig)


def linked_now(proc: Process, other: Any) -> bool:
    """Whether ``proc`` is linked to ``other`` once the signals it has not
    drained yet (a runaway drains nothing) are applied."""
    linked = proc.links is not None and other in proc.links
    pending = (proc.inbox or ())[:]
    for it in pending:
        t = type(it)
        if (t is LinkSig or t is UnlinkSig) and it.sender == other:
            linked = t is LinkSig
    return linked


# ---------------------------------------------------------------------- arrival


def drain(rt: Runtime, proc: Process) -> None:
    """Move the inbox into the process: messages to its queue, signals applied.

    Runs in the process's own context only (or in its scheduler's, before it is
    resumed). May set ``proc.doom``.
    """
    first = proc.handoff
    inbox = proc.inbox
    if inbox:
        # The owner is the only remover: a copy, then the same items go
        # (appends made between the two stay, behind them).
        items = inbox[:]
        n = len(items)
        if first is not NOTHING:
            items.insert(0, first)
        # In neither the inbox nor the queue until moved: ``batch`` tells a
        # count taken from another thread to look again (introspection.settled).
        proc.batch = items
        del inbox[:n]
        if first is not NOTHING:
            proc.handoff = NOTHING
    elif first is not NOTHING:
        items = [first]
        proc.batch = items
        proc.handoff = NOTHING
    else:
        return
    q = proc.queue
    # Only messages, the usual case: no signal is counted in the inbox (a
    # signal is counted, under the lock, before it is appended, so one in our
    # copy is counted by now), and the hand-off slot holds a message.
    if proc.signals == 0 and (first is NOTHING or type(first) is not AliasMsg):
        if q is None:
            proc.queue = collections.deque(items)
        else:
            q.extend(items)
        items.clear()  # moved
        return
    if q is None:
        q = proc.queue = collections.deque()
    counted = 0
    for it in items:
        t = type(it)
        if t not in SIGNALS:
            q.append(it)
            continue
        if it is not first:
            counted += 1
        if t is AliasMsg:
            # Checked here, in the owner's own order of events: once unalias()
            # has returned, nothing sent to the alias gets in (ALIAS-2).
            if proc.aliases is not None and it.ref in proc.aliases:
                q.append(it.msg)
        elif t is ExitSig:
            handle_exit(proc, it.sender, it.reason, it.from_link, q)
        elif t is DownSig:
            mons = proc.monitors
            if mons is not None and it.ref in mons:
                del mons[it.ref]
                drop_alias(rt, proc, it.ref, only_with_monitor=True)
                q.append(Down(it.ref, it.sender, it.reason))
        elif t is LinkSig:
            if proc.links is None:
                proc.links = set()
            proc.links.add(it.sender)
        elif t is UnlinkSig:
            if proc.links is not None:
                proc.links.discard(it.sender)
        elif t is MonitorSig:  # from another node (local ones: add_monitor)
            # A monitor by name remembers the name, to report it in the Down.
            watcher = it.sender if it.name is None else (it.sender, it.name)
            with proc.lock:  # local watchers add theirs from their own threads
                if proc.monitored_by is None:
                    proc.monitored_by = {}
                proc.monitored_by[it.ref] = watcher
        elif t is DemonitorSig:
            with proc.lock:
                if proc.monitored_by is not None:
                    proc.monitored_by.pop(it.ref, None)
        elif t is MarkSig:
            if proc.mark_ref is it.ref:
                proc.mark_pos = len(q)
        # WakeSig: waking was all it had to do.
    if counted:
        with proc.lock:
            proc.signals -= counted
    if not q:
        proc.queue = None
    items.clear()  # moved


def handle_exit(proc: Process, sender: Any, reason: Any, from_link: bool, q: Any) -> None:
    """Erlang's rules for an exit signal arriving at a live process (EXIT-1..8)."""
    if from_link:
        links = proc.links
        if links is None or sender not in links:
            return  # unlinked since: the signal has no effect
        links.discard(sender)
    if proc.doom is not None:
        return
    if not from_link and is_atom(reason, KILL):
        proc.doom = KILLED
    elif proc.trap_exit:
        q.append(Exit(sender, reason))
    elif is_atom(reason, NORMAL):
        if sender is not None and sender == proc.pid:
            proc.doom = NORMAL
    else:
        proc.doom = reason


# ---------------------------------------------------------------------- what a process does


def set_mark(proc: Process, ref: Ref) -> None:
    """Erlang's receive marker: a receive that only matches messages mentioning
    ``ref`` need not look at anything queued before ``ref`` was made."""
    q = proc.queue
    proc.mark_ref = ref
    proc.mark_pos = len(q) if q is not None else 0
    inbox = proc.inbox
    if inbox:
        # Messages still in the inbox predate the ref too: a marker after them.
        with proc.lock:
            proc.signals += 1
            inbox.append(MarkSig(ref))


def link(rt: Runtime, proc: Process, pid: Pid) -> None:
    """``proc`` links to ``pid`` (LINK-1..4)."""
    if pid == proc.pid:
        return
    if not proc.trap_exit and pid.node is None:
        target = rt.lookup(pid)
        if target is None or target.state >= EXITING:
            raise ProcessExit(NOPROC)
    if proc.links is None:
        proc.links = set()
    elif pid in proc.links:
        return
    proc.links.add(pid)
    deliver(rt, pid, LinkSig(proc.pid), proc)


def unlink(rt: Runtime, proc: Process, pid: Pid) -> None:
    """``proc`` removes its link to ``pid``: no exit signal from it has an
    effect afterwards (LINK-5)."""
    if proc.links is None or pid not in proc.links:
        return
    proc.links.discard(pid)
    deliver(rt, pid, UnlinkSig(proc.pid), proc)


def monitor(rt: Runtime, proc: Process, target: Any, alias: bool | str) -> Ref:
    """``proc`` monitors ``target`` (a pid, a name, or ``(name, node)``)."""
    # (Every gen.call starts here: set_mark and activate_alias are inlined.)
    with_monitor: bool | None
    if alias is False:
        with_monitor = None
    elif alias == "demonitor":
        with_monitor = True
    elif alias is True or alias == "explicit_unalias":
        with_monitor = False
    else:
        raise BadArg(f"monitor alias must be a bool, 'explicit_unalias' or 'demonitor': {alias!r}")
    ref = rt.make_ref()
    q = proc.queue
    proc.mark_ref = ref
    proc.mark_pos = len(q) if q is not None else 0
    if proc.inbox:
        set_mark(proc, ref)  # messages still in the inbox: a marker after them
    if with_monitor is not None:
        aliases = proc.aliases
        if aliases is None:
            proc.aliases = {ref: with_monitor}
        else:
            aliases[ref] = with_monitor
        rt.aliases[ref] = proc.pid
    if proc.monitors is None:
        proc.monitors = {}
    if type(target) is Pid:
        proc.monitors[ref] = target
        if target.node is not None:
            deliver(rt, target, MonitorSig(proc.pid, ref), proc)
            return ref
        # add_monitor, inlined (every call monitors its server).
        other = rt.table.get(target.id)
        if other is not None:
            with other.lock:
                if other.state < EXITING:
                    mb = other.monitored_by
                    if mb is None:
                        other.monitored_by = {ref: proc.pid}
                    else:
                        mb[ref] = proc.pid
                    return ref
        deliver(rt, proc.pid, DownSig(target, ref, NOPROC))
        return ref
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], str):
        name, node = target
        if node is None or node == rt.distribution.node_name():
            target = name
        else:
            proc.monitors[ref] = (name, node)
            rt.distribution.route_named(name, node, MonitorSig(proc.pid, ref, (name, node)), proc)
            return ref
    if isinstance(target, str):
        pid = rt.whereis(target)
        proc.monitors[ref] = pid if pid is not None else target
        if pid is None or not add_monitor(rt, pid, ref, (proc.pid, target)):
            deliver(rt, proc.pid, DownSig(target, ref, NOPROC))
        return ref
    drop_alias(rt, proc, ref)  # not a target: take the alias back
    raise BadArg(f"monitor needs a pid, a registered name or (name, node), got {target!r}")


def add_monitor(rt: Runtime, target: Pid, ref: Ref, watcher: Any) -> bool:
    """Set up a monitor of a local process at once; False if it is not alive.

    The monitor signal's arrival, done by the watcher under the target's lock:
    the target need not run (or be woken) to take note, and its death
    (:func:`finish`, which marks it EXITING under the same lock before it reads
    ``monitored_by``) reports to every monitor added before (MON-6). A
    ``watcher`` is a pid, or ``(pid, name)`` for a monitor by name.
    """
    proc = rt.table.get(target.id)
    if proc is None:
        return False
    with proc.lock:
        if proc.state >= EXITING:
            return False
        mb = proc.monitored_by
        if mb is None:
            proc.monitored_by = {ref: watcher}
        else:
            mb[ref] = watcher
    return True


def monitor_and_send(rt: Runtime, proc: Process, ref: Ref, watcher: Pid, item: Any) -> int:
    """:func:`add_monitor` of ``proc`` by ``watcher``, then the message ``item``
    to it, under one hold of its lock (call_local). Returns the state found:
    EXITING or DEAD means neither was taken (the watcher is then owed a
    ``noproc`` Down, and a message to a dead process is dropped)."""
    s = current_scheduler()
    if s is not None and s.ident != _get_ident():
        s = None  # a thread running in a context copied from a scheduler's (asyncio)
    q = rt.runq if s is None else s.pushq
    with proc.lock:
        state = proc.state
        if state < EXITING:
            mb = proc.monitored_by
            if mb is None:
                proc.monitored_by = {ref: watcher}
            else:
                mb[ref] = watcher
            inbox = proc.inbox
            if state == WAITING and not inbox:
                proc.handoff = item  # as put_locked: nothing ahead of it
            elif inbox is None:
                proc.inbox = [item]
            else:
                inbox.append(item)
            if state == WAITING:
                proc.state = RUNNABLE
                q.append(proc)
    if state == WAITING and (rt.idle or s is None):
        rt.pushed(q, s)
    return state


def remove_monitor(rt: Runtime, target: Pid, ref: Ref) -> None:
    """Forget a monitor of a local process (the demonitor signal's arrival)."""
    proc = rt.table.get(target.id)
    if proc is not None:
        with proc.lock:
            mb = proc.monitored_by
            if mb is not None:
                mb.pop(ref, None)


def demonitor(rt: Runtime, proc: Process, ref: Ref) -> bool:
    """``proc`` turns its monitor ``ref`` off; True if it was active. A Down
    still in the inbox is dropped when drained (the monitor is gone)."""
    target = proc.monitors.pop(ref, None) if proc.monitors else None
    if target is not None and proc.aliases:
        drop_alias(rt, proc, ref, True)
    if type(target) is Pid:
        if target.node is None:
            # remove_monitor, inlined.
            other = rt.table.get(target.id)
            if other is not None:
                with other.lock:
                    mb = other.monitored_by
                    if mb is not None:
                        mb.pop(ref, None)
        else:
            deliver(rt, target, DemonitorSig(proc.pid, ref), proc)
    elif type(target) is tuple:
        rt.distribution.route_named(target[0], target[1], DemonitorSig(proc.pid, ref), proc)
    return target is not None


def exit_signal(rt: Runtime, proc: Process | None, pid: Pid, reason: Any) -> None:
    """``exit(pid, reason)`` from ``proc`` (None: from outside any process)."""
    if proc is not None and pid == proc.pid:
        # To itself: takes effect at once (EXIT-6).
        if is_atom(reason, KILL):
            proc.doom = KILLED
        elif proc.trap_exit:
            deliver(rt, pid, ExitSig(pid, reason, False), proc)
            return
        else:
            proc.doom = reason
        raise ProcessExit(proc.doom)
    deliver(rt, pid, ExitSig(proc.pid if proc is not None else None, reason, False), proc)


def activate_alias(rt: Runtime, proc: Process, ref: Ref, with_monitor: bool = False) -> None:
    """Make ``ref`` an active alias of ``proc`` (``with_monitor``: it goes when
    its monitor goes)."""
    if proc.aliases is None:
        proc.aliases = {}
    proc.aliases[ref] = with_monitor
    rt.aliases[ref] = proc.pid


def drop_alias(rt: Runtime, proc: Process, ref: Ref, only_with_monitor: bool = False) -> bool:
    """Deactivate ``proc``'s alias ``ref`` (from its own context); True if it was
    active. ``only_with_monitor``: only an alias made to go with its monitor
    (``monitor(..., alias="demonitor")``), as its monitor goes."""
    aliases = proc.aliases
    if not aliases:
        return False
    # One dict operation in the usual case (a Ref's hash is a Python call).
    with_monitor = aliases.pop(ref, None)
    if with_monitor is None:
        return False
    if only_with_monitor and not with_monitor:
        aliases[ref] = with_monitor  # an explicit alias stays
        return False
    rt.aliases.pop(ref, None)
    return True


def send_to_alias(rt: Runtime, owner: Pid, ref: Ref, item: Any) -> None:
    """A message to ``owner``'s local alias ``ref`` (every call's reply): its
    owner drops it if the alias is no longer active when it arrives (ALIAS-2),
    and so does a dead owner."""
    proc = rt.table.get(owner.id)
    if proc is None:
        return
    # put_locked, with one more case: to an owner that waits with an empty
    # inbox (a caller blocked on its reply), the alias is tested here, under
    # its lock. A waiting process cannot alias or unalias before it runs
    # again, so this is its own order of events: an active alias hands the
    # bare message over (no AliasMsg, no test when it resumes), an inactive
    # one drops it without waking the owner. Otherwise the AliasMsg is
    # counted and appended behind what is in the inbox, and the owner tests it.
    s = current_scheduler()
    if s is not None and s.ident != _get_ident():
        s = None  # a thread running in a context copied from a scheduler's (asyncio)
    q = rt.runq if s is None else s.pushq
    with proc.lock:
        state = proc.state
        if state == WAITING and not proc.inbox:
            aliases = proc.aliases
            if not aliases or ref not in aliases:
                return
            proc.handoff = item
            proc.state = RUNNABLE
            q.append(proc)
        elif state < EXITING:
            proc.signals += 1  # before the append: see drain
            inbox = proc.inbox
            if inbox is None:
                proc.inbox = [AliasMsg(ref, item)]
            else:
                inbox.append(AliasMsg(ref, item))
            if state == WAITING:
                proc.state = RUNNABLE
                q.append(proc)
    if state == WAITING and (rt.idle or s is None):
        rt.pushed(q, s)


# ---------------------------------------------------------------------- death


def close_ports(pid: Pid, ports: list[Any], reason: Any) -> None:
    for port in list(ports):
        try:
            port.owner_exited(pid, reason)
        except Exception:
            logger.exception("beamlet: closing %r as its owner %r exited failed", port, pid)


def finish(rt: Runtime, proc: Process, reason: Any) -> None:
    """The process has stopped running: tell its links and monitors, forget it."""
    with proc.lock:
        if proc.state >= EXITING:
            return  # already finished (a zombie declared dead by sysmon)
        proc.state = EXITING
        # A sender that read the list before this may still append to it: the
        # process is dead, what it appends is dropped (only messages go there
        # without the lock; signals find EXITING under it and are answered).
        pending = proc.inbox[:] if proc.inbox else None
        proc.inbox = None
        send_timers = proc.send_timers
        proc.send_timers = None
        ports = proc.ports  # (taken under the lock: a hand-over checks EXITING under it)
        proc.ports = None
    if not proc.zombie:
        rt.killing.pop(proc, None)  # a zombie's thread is pursued until it stops
    if proc.handoff is not NOTHING:
        pending = [proc.handoff, *(pending or ())]
        proc.handoff = NOTHING
    pid = proc.pid
    # Its table entry, name and aliases go first, as on the BEAM: whoever
    # learns of the death from a link or monitor no longer finds it among
    # processes() and can register the name again at once (REG-2). (Senders
    # that find no entry answer as a dead process does, like EXITING ones.)
    rt.table.pop(pid.id, None)
    if proc.name is not None:
        rt.release_name(proc.name, pid)
    if proc.aliases:
        for alias in list(proc.aliases):
            rt.aliases.pop(alias, None)
    rt.cancel_timers_of(proc, send_timers)
    if ports:
        # Its sockets close before anyone learns of the death: whoever waits
        # for the DOWN finds them closed (NET-3).
        close_ports(pid, ports, reason)
    if pending:
        for it in pending:
            t = type(it)
            if t is LinkSig and proc.links is not None and it.sender in proc.links:
                continue  # already linked: it gets the real exit reason below
            if t is LinkSig or t is MonitorSig:
                answer_dead(rt, pid, it)
    # Snapshots (list() is atomic): a zombie may still be mutating these.
    if proc.links:
        for other in list(proc.links):
            deliver(rt, other, ExitSig(pid, reason, True))
    if proc.monitored_by:
        for ref, watcher in list(proc.monitored_by.items()):
            if type(watcher) is tuple:
                deliver(rt, watcher[0], DownSig(watcher[1], ref, reason))
            else:
                deliver(rt, watcher, DownSig(pid, ref, reason))
    if proc.monitors:
        for ref, target in list(proc.monitors.items()):
            if type(target) is Pid:
                if target.node is None:
                    remove_monitor(rt, target, ref)
                else:
                    deliver(rt, target, DemonitorSig(pid, ref))
            elif type(target) is tuple:
                rt.distribution.route_named(target[0], target[1], DemonitorSig(pid, ref), proc)
    proc.state = DEAD
    if not proc.zombie:
        proc.coro = None
    proc.queue = None
    rt.forget(proc, reason)
