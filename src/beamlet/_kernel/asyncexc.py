"""Raising an exception in another thread: how a running process is killed.

``PyThreadState_SetAsyncExc`` makes a thread raise an exception at its next
eval-breaker check (a call, a backward jump, a function entry). It is the only
way to stop Python code that never awaits. It is also dangerous: raised at the
wrong moment it hits whatever that thread runs then. The kernel's protocol
(see ``Scheduler.loop`` and ``Runtime.kill_running``) makes sure it only ever
lands in the process it was aimed at:

* the killer injects only under the target scheduler's ``kill_lock``, only
  while that scheduler's ``current`` is the victim, and only outside a kernel
  section the victim has *masked*; it sets ``kill_pending`` first;
* a scheduler whose process stops running (yields, returns, raises) clears
  ``current`` and then, if ``kill_pending``, takes ``kill_lock`` and clears any
  pending exception with a C call before running any other Python code.

A pending exception is raised at the first check after it is set, so it fires
either in the victim or at the end of the very call that resumed it -- inside
the scheduler's ``try`` around ``coro.send`` -- where the scheduler recognises
it. A blocking C call (``time.sleep``, a socket read) is not interrupted: the
exception fires when the call returns.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
import weakref
from typing import Any

from beamlet._kernel.process import ProcessExit

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class AsyncKill(ProcessExit):
    """Raised inside a process that is killed while it runs (never awaits).

    Catching it does not save the process: the kernel already decided it dies
    (its reason is the one the exit signal carried), and a process that swallows
    it is declared dead anyway, its links and monitors told, while its thread
    runs on until the code stops.
    """


# CPython 3.11 gives the thread state of a thread being started its creator's
# ident until the new thread first runs, and PyThreadState_SetAsyncExc sets the
# exception on the first thread state with that ident: the newest, the thread
# being started. Aimed at a process that is starting a thread, the kill would
# hit that thread in its bootstrap, before it signals that it started, and the
# process would wait for it in ``Thread.start`` forever. 3.12 binds the ident
# in the new thread only. So on 3.11 a kill is not injected while a
# ``threading.Thread`` is being started (they sit in ``threading._limbo`` from
# before their thread state exists until after it has its own ident); sysmon
# retries on its next tick. ``_thread.start_new_thread`` called directly is not
# covered.
_NEW_THREADS_BORROW_IDENT = sys.version_info < (3, 12)
_limbo: dict[threading.Thread, threading.Thread] | None = getattr(threading, "_limbo", None)
_limbo_lock: Any = getattr(threading, "_active_limbo_lock", None)
# A limbo entry whose start was cut short (an exception between its entry into
# _limbo and the OS thread's creation) stays there for good; past this age an
# unstarted entry is taken for such a leftover rather than a start under way.
_LEFTOVER_AFTER = 0.5
_first_seen: weakref.WeakKeyDictionary[threading.Thread, float] = weakref.WeakKeyDictionary()


def _a_thread_is_starting() -> bool:
    assert _limbo is not None
    now = time.monotonic()
    for t in list(_limbo):
        if t._started.is_set():  # type: ignore[attr-defined]
            continue
        if now - _first_seen.setdefault(t, now) < _LEFTOVER_AFTER:
            return True
    return False


def inject(thread_ident: int) -> bool:
    """Make ``thread_ident`` raise AsyncKill; False if it cannot be done now."""
    if not _NEW_THREADS_BORROW_IDENT or _limbo is None or _limbo_lock is None:
        return _set_async_exc(thread_ident, ctypes.py_object(AsyncKill)) == 1
    # Holding the lock, no thread can enter _limbo (so none can start).
    if not _limbo_lock.acquire(blocking=False):
        return False
    try:
        if _a_thread_is_starting():
            return False
        return _set_async_exc(thread_ident, ctypes.py_object(AsyncKill)) == 1
    finally:
        _limbo_lock.release()


def clear(thread_ident: int) -> None:
    """Forget an exception injected into ``thread_ident`` that has not fired yet."""
    _set_async_exc(thread_ident, ctypes.py_object())
