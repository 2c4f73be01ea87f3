"""Shared test helpers.

Every scenario runs inside ``beamlet.run(main)`` and asserts on what ``main``
returns; nothing sleeps to wait for something to happen.
"""

from __future__ import annotations

import shutil

import pytest

import beamlet


def run(main, *args, schedulers=2, **kw):
    """beamlet.run with two schedulers by default, so threads really interleave."""
    return beamlet.run(main, *args, schedulers=schedulers, **kw)


@pytest.fixture(params=[1, 2], ids=["1sched", "2sched"])
def schedulers(request):
    return request.param


def have_erl() -> bool:
    return shutil.which("erl") is not None
