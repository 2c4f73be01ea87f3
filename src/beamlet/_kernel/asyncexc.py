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


def inject(thread_ident: int) -> bool:
    """Make ``thread_ident`` raise AsyncKill; True if the thread exists."""
    return _set_async_exc(thread_ident, ctypes.py_object(AsyncKill)) == 1


def clear(thread_ident: int) -> None:
    """Forget an exception injected into ``thread_ident`` that has not fired yet."""
    _set_async_exc(thread_ident, ctypes.py_object())
