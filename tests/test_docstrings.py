"""Every module and every public function has a docstring: an AST walk over ``src/prunefit`` (DESIGN.md §6).

A module's docstring must open with a non-empty line (the line that names the module's one job). Public means a
name not starting with ``_``: module-level functions, methods, and functions under ``if`` / ``try`` / ``with`` at
those levels; anything defined inside a function (hooks, closures, local classes) is exempt. Offenders are listed
as ``file:line:name``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "prunefit"

_BLOCKS = (ast.If, ast.Try, ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While)


def _raw_docstring(node: ast.AST) -> str | None:
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0].value.value
    return None


def _undocumented(body: list[ast.stmt], prefix: str = ""):
    """(line, qualified name) of each public function in ``body`` without a docstring, classes descended."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("_") and _raw_docstring(node) is None:
                yield node.lineno, prefix + node.name
        elif isinstance(node, ast.ClassDef):
            yield from _undocumented(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, _BLOCKS):
            for part in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                yield from _undocumented(part, prefix)
            for handler in getattr(node, "handlers", []):
                yield from _undocumented(handler.body, prefix)


def offenders(source: str, name: str) -> list[str]:
    """``name:line:what`` for a module without a docstring (or whose first line is empty) and for each public
    function or method without one."""
    tree = ast.parse(source)
    out = []
    doc = _raw_docstring(tree)
    if doc is None:
        out.append(f"{name}:1:<module docstring missing>")
    elif not doc.split("\n", 1)[0].strip():
        out.append(f"{name}:1:<module docstring's first line is empty>")
    out += [f"{name}:{line}:{what}" for line, what in _undocumented(tree.body)]
    return out


def _all_offenders() -> list[str]:
    root = SRC.parents[1]
    out = []
    for path in sorted(SRC.rglob("*.py")):
        out += offenders(path.read_text(encoding="utf-8"), str(path.relative_to(root)))
    return out


def test_walker_flags_what_it_should():
    source = '''
def public(): pass
def _private(): pass
def documented():
    """Does a thing."""
    def nested(): pass
class Thing:
    def method(self): pass
    def __init__(self): pass
    @property
    def prop(self): return 1
    class Inner:
        def deep(self): pass
try:
    def fallback(): pass
except ImportError:
    def other(): pass
'''
    assert offenders(source, "m.py") == [
        "m.py:1:<module docstring missing>", "m.py:2:public", "m.py:8:Thing.method", "m.py:11:Thing.prop",
        "m.py:13:Thing.Inner.deep", "m.py:15:fallback", "m.py:17:other"]
    assert offenders('"""\nText after a blank first line."""\n', "m.py") == [
        "m.py:1:<module docstring's first line is empty>"]
    assert offenders('"""One job."""\n', "m.py") == []


def test_every_module_and_public_function_has_a_docstring():
    missing = _all_offenders()
    assert not missing, f"{len(missing)} missing docstring(s):\n" + "\n".join(missing)
