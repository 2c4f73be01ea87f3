"""Shared test fixtures and helpers.

Every scenario runs inside ``beamlet.run(main)`` and asserts inside ``main`` (an
AssertionError there comes out of ``run``, showing the values) or on what it
returns; nothing sleeps to wait for something to happen. What must not arrive
is checked with ``tests.helpers.assert_no_message``.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from hypothesis import settings

import beamlet

# The properties are about results, not speed: a loaded machine (CI, or tests run
# beside each other) must not fail an example for taking over 200 ms.
settings.register_profile("beamlet", deadline=None)
settings.load_profile("beamlet")


def run(main, *args, schedulers=2, **kw):
    """beamlet.run with two schedulers by default, so threads really interleave."""
    return beamlet.run(main, *args, schedulers=schedulers, **kw)


@pytest.fixture(params=[1, 2], ids=["1sched", "2sched"])
def schedulers(request):
    return request.param


def have_erl() -> bool:
    return shutil.which("erl") is not None


@pytest.fixture
def fast_switching():
    """Make the GIL change hands every 10 µs, so that races between scheduler
    threads show up in a short test (restored afterwards)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.00001)
    yield
    sys.setswitchinterval(old)


#: Tests of processes that live in the standard library (blocked on a logging
#: lock, starting threads in a loop): the fallback way of killing cannot stop
#: them, by design (it never shoots library code; docs/process-model.md).
needs_precise_kills = pytest.mark.skipif(
    bool(os.environ.get("BEAMLET_ASYNC_EXC_KILLS")),
    reason="the fallback kill cannot stop a process living in the standard library",
)
