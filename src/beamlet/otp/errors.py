"""Exceptions raised by the behaviours to their callers."""

from __future__ import annotations

from typing import Any


class CallError(Exception):
    """A call did not get a reply. ``reason`` says why (as an exit reason would)."""

    def __init__(self, server: Any, reason: Any, message: str | None = None) -> None:
        super().__init__(message or f"call to {server!r} failed: {reason!r}")
        self.server = server
        self.reason = reason


class CallTimeout(CallError, TimeoutError):
    """No reply within the call's timeout (reason ``"timeout"``)."""

    def __init__(self, server: Any, timeout: float) -> None:
        super().__init__(server, "timeout", f"call to {server!r} timed out after {timeout} s")
        self.timeout = timeout


class ServerExit(CallError):
    """The server exited (or did not exist: reason ``"noproc"``) before replying."""


class StartError(Exception):
    """A process could not be started: its ``init`` failed or it died first."""

    def __init__(self, reason: Any) -> None:
        super().__init__(f"start failed: {reason!r}")
        self.reason = reason


class ChildRunning(Exception):
    """``delete_child`` or ``restart_child`` of a child that is running (``reason``
    ``"running"``) or being restarted (``"restarting"``): ``terminate_child`` it first."""

    def __init__(self, child_id: Any, reason: str = "running") -> None:
        state = "is running" if reason == "running" else "is being restarted"
        super().__init__(f"child {child_id!r} {state}: terminate_child it first")
        self.child_id = child_id
        self.reason = reason
