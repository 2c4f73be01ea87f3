"""Every code snippet in README.md and docs/ is run (or checked against the code) by
the suite, and the docs point at tests that exist.

A fenced block's info string says how it is tested:

* ``python``: an example, executed here; every ``print(...)  # text`` line must
  print ``text`` (in order), so the output a reader is promised is the output;
* ``python node``: an example that makes a node; run against real peers in
  tests/distribution/test_doc_examples.py (with the ``elixir iex`` transcripts);
* ``python signatures``: an API listing; each entry must name a function or
  class that exists, with the documented parameters (names, kinds, defaults);
* ``console``: shell commands; the files and pytest markers they name exist.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

KINDS = {
    "python": "test_every_python_example_runs_and_prints_what_it_says",
    "python node": "tests/distribution/test_doc_examples.py",
    "elixir iex": "tests/distribution/test_doc_examples.py",
    "python signatures": "test_every_signature_listing_matches_the_code",
    "console": "test_every_command_in_the_docs_names_files_and_markers_that_exist",
}

_FENCE = re.compile(r"^([ \t]*)```([^\n`]*)\n(.*?)^\1```[ \t]*$", re.M | re.S)


@dataclasses.dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    info: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets(info: str | None = None) -> list[Snippet]:
    """The fenced code blocks of the docs (dedented), optionally of one kind."""
    found = []
    for path in DOC_FILES:
        text = path.read_text()
        for m in _FENCE.finditer(text):
            indent = m.group(1)
            code = "".join(
                line[len(indent) :] if line.startswith(indent) else line
                for line in m.group(3).splitlines(keepends=True)
            )
            line = text.count("\n", 0, m.start()) + 1
            found.append(Snippet(path, line, m.group(2).strip(), code))
    return [s for s in found if info is None or s.info == info]


def expected_output(code: str) -> list[str]:
    """What the ``print(...)  # text`` lines of an example promise, in order."""
    lines = []
    for line in code.splitlines():
        if re.match(r"\s*print\(", line):
            m = re.search(r"\)\s+# (.*)$", line)
            assert m, f"a print in a doc example must say what it prints: {line.strip()}"
            lines.append(m.group(1))
    return lines


def test_every_snippet_in_the_docs_is_one_the_suite_runs():
    found = snippets()
    assert len(found) >= 10
    unknown = [f"{s.id} ```{s.info}" for s in found if s.info not in KINDS]
    assert not unknown, f"fenced blocks no test runs (kinds: {sorted(KINDS)}): {unknown}"


@pytest.mark.parametrize("snippet", snippets("python"), ids=lambda s: s.id)
def test_every_python_example_runs_and_prints_what_it_says(snippet: Snippet):
    out = io.StringIO()
    namespace: dict[str, Any] = {"__name__": "__doc_example__"}
    with contextlib.redirect_stdout(out):
        exec(compile(snippet.code, snippet.id, "exec"), namespace)
    assert out.getvalue().splitlines() == expected_output(snippet.code)


# -- API listings ------------------------------------------------------------


def _logical_lines(code: str) -> list[str]:
    """Lines without comments, a call continued over several lines joined."""
    out: list[str] = []
    pending = ""
    for raw in code.splitlines():
        line = re.sub(r"(^|\s+)#.*$", "", raw).strip()
        if not line:
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.count("(") == pending.count(")"):
            out.append(pending)
            pending = ""
    assert not pending, pending
    return out


def _split_params(text: str) -> list[str]:
    params, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            params.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        params.append(cur.strip())
    return params


def _check_signature(entry: str, obj: Any, params_text: str) -> list[str]:
    """Differences between a documented parameter list and ``obj``'s signature."""
    sig = inspect.signature(obj)
    actual = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    documented = []
    keyword_only = False
    for p in _split_params(params_text):
        if p == "*":
            keyword_only = True
            continue
        m = re.fullmatch(r"(\w+)(?:\s*:\s*[^=]+)?(?:\s*=\s*(.+))?", p)
        assert m, f"{entry}: cannot read the parameter {p!r}"
        documented.append((m.group(1), keyword_only, m.group(2)))
    problems = []
    if [d[0] for d in documented] != [a.name for a in actual]:
        names = [d[0] for d in documented]
        return [f"{entry}: documented parameters {names}, code {[a.name for a in actual]}"]
    module = vars(importlib.import_module(obj.__module__))
    for (name, kw_only, default), a in zip(documented, actual, strict=True):
        if kw_only != (a.kind is inspect.Parameter.KEYWORD_ONLY):
            problems.append(f"{name}: documented keyword-only {kw_only}, code {a.kind.name}")
        if (default is None) != (a.default is inspect.Parameter.empty):
            problems.append(f"{name}: default {default!r} vs {a.default!r}")
        elif default is not None:
            value = eval(default, dict(module))
            if value != a.default:
                problems.append(f"{name}: default {default} == {value!r}, code has {a.default!r}")
    return [f"{entry}: {p}" for p in problems]


@pytest.mark.parametrize("snippet", snippets("python signatures"), ids=lambda s: s.id)
def test_every_signature_listing_matches_the_code(snippet: Snippet):
    namespace: dict[str, Any] = {}
    problems: list[str] = []
    checked = 0
    for line in _logical_lines(snippet.code):
        if line.startswith(("from ", "import ")):
            exec(line, namespace)
            continue
        for entry in (e.strip() for e in line.split(";")):
            m = re.fullmatch(r"(?:(\w+)\s*=\s*)?([\w.]+)\((.*)\)(?:\s*->\s*.+)?", entry)
            if m is None:
                # ``obj.attr``: an attribute the listing promises
                target, _, attr = entry.partition(".")
                assert attr and target in namespace, f"{snippet.id}: cannot read {entry!r}"
                owner = namespace[target]
                assert hasattr(owner, attr) or attr in getattr(owner, "__annotations__", {}), (
                    f"{snippet.id}: {entry} does not exist"
                )
                continue
            bind, dotted, params = m.groups()
            head, *rest = dotted.split(".")
            assert head in namespace, f"{snippet.id}: {dotted} is not imported by the listing"
            obj = namespace[head]
            for part in rest:
                obj = getattr(obj, part)
            problems += _check_signature(f"{snippet.id} {dotted}", obj, params)
            checked += 1
            if bind:
                namespace[bind] = obj  # ``s = DistSession(...)``: s.method(...) below
    assert checked, snippet.id
    assert not problems, "\n".join(problems)


# -- commands ------------------------------------------------------------------


def test_every_command_in_the_docs_names_files_and_markers_that_exist():
    markers = {
        m.split(":")[0]
        for m in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
            "ini_options"
        ]["markers"]
    }
    commands = [s for s in snippets("console")]
    assert commands
    for snippet in commands:
        for line in _logical_lines(snippet.code):
            words = shlex.split(line.removeprefix("$ "))
            for i, word in enumerate(words):
                if words[i - 1] == "-m" and i > 1 and words[i - 2] != "python3":
                    assert word in markers, f"{snippet.id}: no pytest marker {word!r}"
                elif "/" in word and "=" not in word:
                    assert (ROOT / word.split("::")[0]).exists(), f"{snippet.id}: no {word}"


# -- the docs point at tests that exist ------------------------------------------------


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
                ROOT / path
                if path.startswith("tests/")
                else ROOT / "tests" / "kernel" / "semantics" / path
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
