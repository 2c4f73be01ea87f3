"""beamlet.run: the kernel's run, plus distribution when ``node=`` is given.

The kernel knows nothing of distribution (a test enforces the layering), so
this thin wrapper starts the node in the first process before ``main`` runs,
and stops it when ``main`` ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from beamlet._kernel.api import GC_THRESHOLDS
from beamlet._kernel.api import run as _kernel_run
from beamlet._kernel.pool import DEFAULT_THREADS as DEFAULT_BLOCKING_THREADS


def run(
    main: Callable[..., Any],
    *args: Any,
    schedulers: int | None = None,
    gc_thresholds: tuple[int, int, int] | None = GC_THRESHOLDS,
    blocking_threads: int = DEFAULT_BLOCKING_THREADS,
    max_threads: int | None = None,
    node: str | None = None,
    cookie: str | None = None,
    hidden: bool = False,
    listen_host: str = "127.0.0.1",
    epmd_port: int | None = None,
) -> Any:
    """Start a runtime, run ``main(*args)`` as its first process, return its result.

    ``schedulers``: scheduler threads (default: one per CPU on free-threaded
    CPython, one under the GIL). ``gc_thresholds``: ``gc.set_threshold``
    while the runtime runs (None: leave the collector alone).
    ``blocking_threads``: threads of the :func:`beamlet.blocking` pool (default
    64). ``max_threads``: cap on scheduler threads, those runaway processes
    keep included (default 2048).

    ``node="name@host"`` makes the runtime a distributed node before ``main``
    starts (see :func:`beamlet.distribution.start_node` for ``cookie``, ``hidden``,
    ``listen_host``, ``epmd_port``); it leaves the cluster when ``main`` ends.

    When ``main`` ends every other process is killed. If ``main`` raised,
    ``run`` raises the same exception; if it was killed by an exit signal,
    ``run`` raises ``ProcessExit(reason)`` (or the exception that was the reason).
    """
    options: dict[str, Any] = {
        "schedulers": schedulers,
        "gc_thresholds": gc_thresholds,
        "blocking_threads": blocking_threads,
        "max_threads": max_threads,
    }
    if node is None:
        return _kernel_run(main, *args, **options)
    name = node

    async def boot(*main_args: Any) -> Any:
        from beamlet.distribution.node import start_node, stop_node

        start_node(name, cookie, hidden=hidden, listen_host=listen_host, epmd_port=epmd_port)
        try:
            return await main(*main_args)
        finally:
            stop_node()

    boot.__qualname__ = getattr(main, "__qualname__", "main")
    return _kernel_run(boot, *args, **options)
