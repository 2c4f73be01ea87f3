"""The docs point at tests that exist, and the README example runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import beamlet

ROOT = Path(__file__).resolve().parents[1]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_named_in_semantics_md_exists():
    text = (ROOT / "docs" / "semantics.md").read_text()
    refs = re.findall(r"`((?:tests/)?[\w/]*\.py)?::(test_\w+)`", text)
    assert len(refs) > 40
    current = None
    missing = []
    for path, name in refs:
        if path:
            current = (
                ROOT / path if path.startswith("tests/") else ROOT / "tests" / "semantics" / path
            )
        assert current is not None, name
        if name not in _test_names(current):
            missing.append(f"{current.relative_to(ROOT)}::{name}")
    assert not missing, missing


def test_every_rule_of_semantics_md_names_a_test():
    text = (ROOT / "docs" / "semantics.md").read_text()
    rules = re.split(r"\n(?=\*\*\[[A-Z]+-\d+\]\*\*)", text)[1:]
    for rule in rules:
        assert "Tests:" in rule, rule[:60]


def test_the_readme_example_runs_and_prints_what_it_says():
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    expected = re.search(r"print\(beamlet.run\(main\)\)\s+# (.*)", code).group(1)
    code = code.replace("print(beamlet.run(main))", "result = beamlet.run(main)")
    namespace: dict = {}
    import logging

    logging.disable(logging.CRITICAL)
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        logging.disable(logging.NOTSET)
    assert repr(namespace["result"]) == expected
    assert namespace["beamlet"] is beamlet


def test_the_gen_server_guide_example_runs_and_prints_what_it_says():
    text = (ROOT / "docs" / "otp" / "gen_server.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    expected = re.search(r"print\(beamlet.run\(main\)\)\s+# (.*)", code).group(1)
    namespace: dict = {}
    exec(
        compile(
            code.replace("print(beamlet.run(main))", "result = beamlet.run(main)"),
            "gen_server.md",
            "exec",
        ),
        namespace,
    )
    assert repr(namespace["result"]) == expected


def test_the_demo_system_runs_every_step():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "examples.demo_system"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for step in ("1.", "2.", "3.", "4.", "5.", "6."):
        assert f"\n{step} " in "\n" + proc.stdout
    assert "ServerExit" in proc.stdout and "killed" in proc.stdout
