"""docs/distribution.md, "Security", lists every limit with its default, and
its example runs."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from beamlet.distribution import Limits

DOC = Path(__file__).resolve().parents[2] / "docs" / "distribution.md"


def _section() -> str:
    text = DOC.read_text()
    return text[text.index("## Security") : text.index("## Not supported")]


def _shown(default: object) -> str:
    if isinstance(default, float):
        return f"{default:.1f}"
    mib = 1024 * 1024
    if isinstance(default, int) and default >= mib and default % mib == 0:
        return f"{default // mib} MiB"
    return f"{default:,}"


def test_every_limit_is_listed_with_its_default() -> None:
    section = _section()
    rows = {m[0]: m[1] for m in re.findall(r"^\| `(\w+)`[^|]*\| ([^|]+) \|", section, re.M)}
    for f in dataclasses.fields(Limits):
        if f.name == "log_period":  # shares a row with log_burst
            assert "`log_burst`, `log_period` | 20 per 10.0 s" in section
            continue
        assert f.name in rows, f"Limits.{f.name} is not in docs/distribution.md, Security"
        assert rows[f.name].startswith(_shown(f.default)), (f.name, rows[f.name], f.default)


def test_the_security_example_runs_and_prints_what_it_says(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dist_helpers import free_port

    monkeypatch.setenv("ERL_EPMD_PORT", str(free_port()))  # a private EPMD, not 4369
    code = re.search(r"```python\n(.*?)```", _section(), re.S)
    assert code is not None
    expected = re.search(r"print\(beamlet.run\(main\)\)\s+# (.*)", code.group(1))
    assert expected is not None
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), "distribution.md", "exec"), namespace)
    assert capsys.readouterr().out.strip() == expected.group(1)
