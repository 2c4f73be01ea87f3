"""The cookie file, checked as erl checks it (auth.erl: check_attributes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from beamlet.distribution.node import read_cookie


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ERLANG_COOKIE", raising=False)
    return tmp_path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700])
def test_a_cookie_file_others_may_access_is_refused_with_erls_message(
    home: Path, mode: int
) -> None:
    path = home / ".erlang.cookie"
    path.write_text("SECRETCOOKIE\n")
    path.chmod(mode)
    if mode == 0o700:  # owner-only, executable: erl accepts it (only group/other bits count)
        assert read_cookie(None) == "SECRETCOOKIE"
        return
    with pytest.raises(PermissionError) as info:
        read_cookie(None)
    assert str(info.value) == f"Cookie file {path} must be accessible by owner only"


def test_an_owner_only_cookie_file_is_read(home: Path) -> None:
    path = home / ".erlang.cookie"
    path.write_text("SECRETCOOKIE\n")
    path.chmod(0o400)
    assert read_cookie(None) == "SECRETCOOKIE"
    path.chmod(0o600)
    assert read_cookie(None) == "SECRETCOOKIE"
    assert read_cookie("given") == "given"  # the argument wins, the file is not read


def test_a_cookie_path_that_is_not_a_regular_file_is_refused(home: Path) -> None:
    (home / ".erlang.cookie").mkdir()
    with pytest.raises(PermissionError, match="is of type directory"):
        read_cookie(None)


def test_a_missing_cookie_file_is_created_for_its_owner_only(home: Path) -> None:
    cookie = read_cookie(None)
    path = home / ".erlang.cookie"
    assert len(cookie) == 20 and cookie.isupper()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400
    assert read_cookie(None) == cookie
