"""The public API and the project's layering."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import beamlet

SRC = pathlib.Path(beamlet.__file__).parent

# Names the issues fix: users and other layers rely on them.
REQUIRED = {
    "run", "spawn", "spawn_link", "spawn_monitor", "send", "receive", "self", "sleep",
    "make_ref", "link", "unlink", "monitor", "demonitor", "exit", "process_flag",
    "register", "unregister", "whereis", "registered", "is_alive", "processes",
    "process_info", "send_after", "cancel_timer", "Pid", "Ref", "Atom", "Exit", "Down",
    "ANY", "ProcessExit", "BadArg",
}  # fmt: skip


def test_all_lists_exactly_the_public_names():
    public = {n for n in dir(beamlet) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(beamlet, n)).__name__ == "module"}
    assert set(beamlet.__all__) == public - modules
    assert len(beamlet.__all__) == len(set(beamlet.__all__))


def test_the_names_the_issues_fix_are_exported():
    assert REQUIRED <= set(beamlet.__all__)


def test_the_package_init_defines_nothing_itself():
    # Only imports, __all__, and the lazy loading of the heavy rooms (PEP 562).
    tree = ast.parse((SRC / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.If):  # if TYPE_CHECKING: imports for type checkers
            assert ast.unparse(node.test) == "_typing.TYPE_CHECKING" and not node.orelse
            assert all(isinstance(n, ast.ImportFrom) for n in node.body)
            continue
        if isinstance(node, ast.FunctionDef):
            assert node.name in ("__getattr__", "__dir__"), node.name
            continue
        assert isinstance(node, ast.Import | ast.ImportFrom | ast.Assign | ast.Expr), ast.dump(node)
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            assert names in (["__all__"], ["_LAZY"]), names


# The layers above the distribution: what `import beamlet` and the
# distribution package must not load by themselves.
UPPER = ("beamlet.distribution", "beamlet.otp", "beamlet.net_kernel", "beamlet.rpc")


def _run(code: str) -> None:
    """Run ``code`` in a fresh interpreter (this one has long imported everything)."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_import_beamlet_loads_neither_distribution_nor_otp_until_a_name_is_used():
    _run(f"""if True:
        import sys
        import beamlet
        assert not [m for m in sys.modules if m.startswith({UPPER!r})]
        assert "rpc" in dir(beamlet) and "ping" in dir(beamlet)
        assert callable(beamlet.rpc.expose)  # docs/interop.md: beamlet.rpc after import beamlet
        assert "beamlet.distribution" in sys.modules
        assert beamlet.otp.GenServer.__name__ == "GenServer"
        from beamlet import NodeDown, connect, ping
        assert ping is beamlet.net_kernel.ping and connect is beamlet.net_kernel.connect
        assert NodeDown is beamlet.distribution.NodeDown
        assert beamlet.distribution.gen_call is beamlet.net_kernel.gen_call
        for module in (beamlet, beamlet.distribution):
            try:
                module.no_such_name
            except AttributeError as e:
                assert "no_such_name" in str(e)
            else:
                raise AssertionError("no AttributeError")
    """)


def test_beamlet_dist_is_gone():
    _run("""if True:
        try:
            import beamlet.dist
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError("beamlet.dist still imports")
    """)


def test_the_distribution_does_not_load_the_layers_above():
    # Its modules, the package facade included, load neither OTP nor the node
    # services; the facade's OTP-backed names load on first use.
    modules = sorted(
        "beamlet.distribution" + ("" if p.stem == "__init__" else "." + p.stem)
        for p in (SRC / "distribution").glob("*.py")
    )
    assert "beamlet.distribution.node" in modules
    above = UPPER[1:]
    _run(f"""if True:
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
            loaded = [m for m in sys.modules if m.startswith({above!r})]
            assert not loaded, (name, loaded)
        import beamlet.distribution
        assert beamlet.distribution.ping.__module__ == "beamlet.net_kernel"
        assert "beamlet.otp" in sys.modules
    """)


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("beamlet")}


def test_the_kernel_imports_nothing_from_beamlet_but_terms():
    for path in (SRC / "_kernel").rglob("*.py"):
        for mod in _imports(path):
            assert mod == "beamlet.terms" or mod.startswith("beamlet._kernel"), (path.name, mod)


def test_the_kernel_has_no_third_party_dependencies():
    import sys

    stdlib = sys.stdlib_module_names
    for path in (SRC / "_kernel").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                assert top in stdlib or top == "beamlet" or top == "__future__", (path.name, n)


def test_otp_uses_only_the_public_api():
    for path in (SRC / "otp").rglob("*.py"):
        for mod in _imports(path):
            assert not mod.startswith("beamlet._kernel"), (path.name, mod)


def test_the_protocol_layers_do_not_reach_into_the_kernel():
    sans_io = {"etf.py", "framing.py", "handshake.py", "control.py", "epmd.py"}
    for path in (SRC / "distribution").rglob("*.py"):
        if path.name in sans_io:
            for mod in _imports(path):
                assert mod in {"beamlet.terms"} or mod.startswith("beamlet.distribution"), (
                    path.name,
                    mod,
                )


def _runtime_imports(path: pathlib.Path) -> set[str]:
    """The beamlet modules ``path`` imports, but for ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("beamlet")}


def test_the_distribution_imports_nothing_above_it():
    # The kernel and terms below it, itself; not the package facade (`beamlet`),
    # OTP, or the node services (beamlet.net_kernel, beamlet.rpc), which plug
    # into it instead (node.add_services, node.allow_spawn).
    for path in (SRC / "distribution").rglob("*.py"):
        for mod in _runtime_imports(path):
            assert mod == "beamlet.terms" or mod.startswith(
                ("beamlet._kernel", "beamlet.distribution")
            ), (path.name, mod)


def test_the_package_is_typed():
    assert (SRC / "py.typed").exists()
