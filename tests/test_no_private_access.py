"""No module of `agent_sessions` reaches into another module's private (underscore) names.

What a neighbour needs is public and documented (issue 13). This scans the source: a
``from X import _name``, an import of a private module from outside its own package, and an
attribute ``obj._name`` whose `_name` the module itself does not define (a private method or
attribute of an object from elsewhere: `session._mark_clean(...)`, `store._get_valid(...)`, or
an inherited `self._helper(...)`). Dunder names are public protocol and always allowed.
ruff's `PLC2701` (import-private-name) checks the imports too; this test also catches the
attribute accesses, which no lint rule does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "agent_sessions"

#: Underscore names that are public API of the standard library (namedtuple's methods).
PUBLIC_UNDERSCORE = frozenset({"_replace", "_asdict", "_fields", "_make"})

#: The one named fast path (DESIGN §9) that uses a third-party library's private names, with the
#: figure that justifies it in the module's docstring: aiosqlite has no public way to run a whole
#: transaction in one call on its worker thread (one hop instead of one per statement).
FAST_PATH = {("stores/sql/transaction.py", "_execute"), ("stores/sql/transaction.py", "_conn")}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def defined_names(tree: ast.Module) -> set[str]:
    """Every name the module defines: functions, classes, methods, assigned names and
    attributes (``self._x = ...``, class-body annotations), parameters."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            # Names defined by string: `__slots__`, `PrivateAttr` keys in `__pydantic_private__`.
            names.add(node.value)
    return names


def module_package(path: Path) -> tuple[str, ...]:
    """The package a module file belongs to (for ``pkg/__init__.py``: ``pkg`` itself)."""
    return path.relative_to(PACKAGE.parent).parent.parts


def resolve(path: Path, node: ast.ImportFrom) -> tuple[str, ...]:
    """The absolute module path `node` imports from."""
    module = tuple(node.module.split(".")) if node.module else ()
    if node.level == 0:
        return module
    package = module_package(path)
    base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    return (*base, *module)


def violations(path: Path, source: str | None = None) -> list[str]:
    """The private accesses in the module at `path` (its text, or `source` as if it sat there)."""
    if source is None:
        source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path))
    own = defined_names(tree)
    found = []
    where = path.relative_to(PACKAGE.parent)
    package = module_package(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(path, node)
            for alias in node.names:
                if is_private(alias.name):
                    found.append(f"{where}:{node.lineno}: imports private name {alias.name}")
            private_parts = [i for i, part in enumerate(target) if is_private(part)]
            # A private module is private to its package: modules of that package may import it.
            if private_parts and package[: private_parts[0]] != target[: private_parts[0]]:
                found.append(f"{where}:{node.lineno}: imports from private module {'.'.join(target)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(is_private(part) for part in alias.name.split(".")):
                    found.append(f"{where}:{node.lineno}: imports private module {alias.name}")
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            if node.attr in PUBLIC_UNDERSCORE or node.attr in own:
                continue
            if (str(path.relative_to(PACKAGE)), node.attr) in FAST_PATH:
                continue
            found.append(f"{where}:{node.lineno}: uses {ast.unparse(node.value)}.{node.attr}, not defined here")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_uses_only_public_names_of_other_modules(path: Path) -> None:
    assert violations(path) == []


def test_the_scan_finds_each_kind_of_private_access() -> None:
    """The checker itself: each kind of access it must catch is caught (and dunders are not)."""
    probe = PACKAGE / "stores" / "probe_for_test.py"
    code = (
        "from ..session import _hidden\n"
        "from ..ops._transfer import thing\n"
        "def f(session, store):\n"
        "    session._mark_clean()\n"
        "    store._get_valid('x')\n"
        "    return session.__dict__, type(session).__name__\n"
    )
    found = violations(probe, code)  # as if it sat in `stores/` (for the relative imports)
    assert len(found) == 4, found
    assert any("_hidden" in f for f in found)
    assert any("private module agent_sessions.ops._transfer" in f for f in found)
    assert any("session._mark_clean" in f for f in found)
    assert any("store._get_valid" in f for f in found)


def test_a_private_module_is_open_to_its_own_package_and_dunders_are_public() -> None:
    sibling = PACKAGE / "ops" / "probe_for_test.py"
    code = "from ._transfer import thing\n\ndef f(x):\n    return x.__class__, x.__dict__\n"
    assert violations(sibling, code) == []
