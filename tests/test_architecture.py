"""Imports run one way: an AST walk over ``src/prunefit`` builds the module import graph, and the tests fail on any
import from a higher layer, any import cycle between modules, or any cycle between packages.

Layers, low to high (a module may import its own layer and the layers below it, nothing above):

    errors, utils, config, losses, toyworld (the world only), models, data, objectives, training, generation,
    pruning, evaluation, attacks, removal, recipes, experiments, and on top api / cli / __main__ / the package
    __init__.

This is ../shared/DESIGN.md §3's order (read bottom-up) except where an import in the code forces otherwise:

- ``toyworld`` sits below ``models`` (DESIGN: above): ``models/components.py`` loads the shipped toy-world teacher
  (``check_model_spec``, ``model_sidecar``, ``load_components("toyworld")`` import ``toyworld.paths.teacher_dir``).
  The world itself imports no model, so nothing pulls it back up.
- ``evaluation`` sits below ``attacks`` (DESIGN: above ``removal``): ``attacks/detectors.py`` judges attacked
  images with ``evaluation.nudity`` (NudeNet) and ``evaluation.clip`` (zero-shot artists). Nothing else in
  ``attacks`` or ``removal`` imports ``evaluation``, and ``evaluation`` imports neither: moving ``detectors.py`` to
  ``evaluation/`` (its one user is ``recipes/attack.py``) would give DESIGN's order back.

``errors`` is the lowest layer (``utils`` raises its errors); DESIGN lists the two together.

Every import counts: module level, inside functions, under ``TYPE_CHECKING``, relative or absolute. An import
names a module: ``from pkg import sub`` the submodule ``pkg.sub``; ``from pkg import name`` the module that defines
``name`` when ``pkg/__init__.py`` only re-exports it (followed through re-exports), else ``pkg/__init__.py``.
Importing ``pkg.mod`` is an edge to ``pkg.mod`` only (not to the parents whose ``__init__`` Python runs first), so a
package ``__init__`` that re-exports its modules makes no cycle with them.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "prunefit"

LAYERS = ["errors", "utils", "config", "losses", "toyworld", "models", "data", "objectives", "training", "generation",
          "pruning", "evaluation", "attacks", "removal", "recipes", "experiments", "top"]
TOP = {"", "api", "cli", "__main__"}  # "" = prunefit/__init__.py

# Known upward imports, as (importing module, imported module). The lead is moving these; empty it, never grow it.
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()
PACKAGES = {m for m, p in MODULES.items() if p.name == "__init__.py"}
_TREES: dict[str, ast.Module] = {}


def _tree(module: str) -> ast.Module:
    if module not in _TREES:
        _TREES[module] = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    return _TREES[module]


def _resolve(name: str) -> str:
    """The longest known module a dotted import name starts with (``a.b.func`` -> ``a.b``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _from_base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` statement imports from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if module in PACKAGES else module.split(".")[:-1]
    return ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))


def _top_level(body: list[ast.stmt]):
    """The statements that run when a module is imported (into ``if`` / ``try`` blocks, not into functions)."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try)):
            handlers = [s for h in getattr(stmt, "handlers", []) for s in h.body]
            yield from _top_level(stmt.body + stmt.orelse + getattr(stmt, "finalbody", []) + handlers)


def _reexports(package: str) -> dict[str, tuple[str, str]]:
    """Names ``package/__init__.py`` binds by importing them: name -> (module it comes from, its name there)."""
    out = {}
    for stmt in _top_level(_tree(package).body):
        if isinstance(stmt, ast.ImportFrom):
            out.update({a.asname or a.name: (_from_base(package, stmt), a.name) for a in stmt.names})
        elif isinstance(stmt, ast.Import):
            out.update({a.asname: (a.name, "") for a in stmt.names if a.asname})
    return out


def _target(base: str, name: str, seen: frozenset = frozenset()) -> str:
    """The module ``from base import name`` depends on: the submodule ``base.name``, else the module that defines
    ``name`` when ``base/__init__.py`` re-exports it, else ``base`` itself."""
    if f"{base}.{name}" in MODULES:
        return f"{base}.{name}"
    source = _reexports(base).get(name) if base in PACKAGES and (base, name) not in seen else None
    if source and source[0].split(".")[0] == "prunefit" and source[1] != "*":
        return _target(*source, seen | {(base, name)}) if source[1] else _resolve(source[0])
    return _resolve(base)


def _imports(module: str) -> list[tuple[str, int]]:
    """(imported prunefit module, line) for every import statement anywhere in the file."""
    found = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            found += [(_resolve(a.name), node.lineno) for a in node.names if a.name.split(".")[0] == "prunefit"]
        elif isinstance(node, ast.ImportFrom) and _from_base(module, node).split(".")[0] == "prunefit":
            base = _from_base(module, node)
            found += [(_resolve(base) if a.name == "*" else _target(base, a.name), node.lineno) for a in node.names]
    return found


def _top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int:
    top = _top_package(module)
    return LAYERS.index("top" if top in TOP else top)


def _package(module: str) -> str:
    """The folder a module sits in (a package's __init__ is its folder); a top-level file is its own node."""
    if module == "prunefit":
        return "prunefit.__init__"
    if module in PACKAGES or module.count(".") == 1:
        return module
    return module.rsplit(".", 1)[0]


def _nested(a: str, b: str) -> bool:
    """One package holds the other (a registry importing its method folders, which import the registry)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _where(module: str) -> str:
    return str(MODULES[module].relative_to(SRC))


EDGES = [(m, t, line) for m in MODULES for t, line in _imports(m) if t in MODULES and t != m]


def test_every_top_level_package_has_a_layer():
    unknown = {_top_package(m) for m in MODULES} - set(LAYERS) - TOP
    assert not unknown, f"give {sorted(unknown)} a place in LAYERS (and the docstring)"


def test_the_walk_sees_imports_inside_functions():
    lazy = [(m, t) for m, t, _ in EDGES if m == "prunefit.cli"]
    assert len(EDGES) > 300 and lazy, "the AST walk found too few imports"  # cli imports its recipes lazily


def test_imports_name_the_module_that_defines_the_name():
    assert _target("prunefit", "load") == "prunefit.api"  # prunefit/__init__.py re-exports it from api
    assert _target("prunefit", "__version__") == "prunefit"  # defined in the __init__ itself
    assert _target("prunefit.config", "load_config") == "prunefit.config.load"
    assert _target("prunefit.config", "load") == "prunefit.config.load"  # a submodule
    assert _target("prunefit.config", "no_such_name") == "prunefit.config"


def test_no_module_imports_a_higher_layer():
    upward = sorted({f"{_where(m)}:{line} imports {t} ({LAYERS[layer_of(t)]} is above {LAYERS[layer_of(m)]})"
                     for m, t, line in EDGES if layer_of(t) > layer_of(m) and (m, t) not in ALLOWED_UPWARD})
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_allow_list_holds_only_live_exceptions():
    live = {(m, t) for m, t, _ in EDGES if layer_of(t) > layer_of(m)}
    stale = ALLOWED_UPWARD - live
    assert not stale, f"remove fixed entries from ALLOWED_UPWARD: {sorted(stale)}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on_stack.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """start -> ... -> start, fewest steps, through ``within`` only (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph.get(v, ()) & within):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return path[::-1] + [start]
            if w not in came_from:
                came_from[w] = v
                queue.append(w)
    return [start]


def _module_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[int]]]:
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], list[int]] = {}
    for m, t, line in EDGES:
        graph.setdefault(m, set()).add(t)
        lines.setdefault((m, t), []).append(line)
    return graph, lines


def _describe(graph: dict[str, set[str]], lines: dict[tuple[str, str], list[int]], comp: list[str]) -> str:
    """One cycle as a chain (``a.py:12 -> b.py:40 -> a.py``: a's line 12 imports b ...), then every import inside
    its strongly connected component."""
    chain = _shortest_cycle(graph, comp[0], set(comp))
    text = " -> ".join(f"{_where(a)}:{lines[a, b][0]}" for a, b in zip(chain, chain[1:])) + f" -> {_where(chain[0])}"
    inside = sorted(f"{_where(a)}:{','.join(map(str, sorted(set(ls))))} imports {b}"
                    for (a, b), ls in lines.items() if a in comp and b in comp)
    return text + "\n    " + "\n    ".join(inside)


def test_no_import_cycle_between_modules():
    graph, lines = _module_graph()
    cycles = [_describe(graph, lines, comp) for comp in _cycles(graph)]
    assert not cycles, "module import cycles (lazy imports count; move code, do not defer the import):\n" + \
        "\n".join(cycles)


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for m, t, _ in EDGES:
        if (m, t) not in ALLOWED_UPWARD and not _nested(_package(m), _package(t)):
            graph.setdefault(_package(m), set()).add(_package(t))
    assert not _cycles(graph), f"package import cycles: {_cycles(graph)}"


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "b"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _shortest_cycle(graph, "b", {"a", "b", "c"}) == ["b", "c", "b"]
    assert _shortest_cycle(graph, "a", {"a", "b", "c"}) == ["a", "b", "c", "a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []


MAX_FUNCTION_LINES = 60


def _long_functions(tree: ast.AST, limit: int) -> list[tuple[str, int]]:
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > limit]


def test_no_function_in_src_is_over_60_lines():
    long = [f"{p.relative_to(SRC.parent)}:{name} ({n} lines)" for p in sorted(SRC.rglob("*.py"))
            for name, n in _long_functions(ast.parse(p.read_text()), MAX_FUNCTION_LINES)]
    assert not long, f"split these functions (at most {MAX_FUNCTION_LINES} lines each): {long}"


def test_the_length_check_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    assert _long_functions(ast.parse(f"def f():\n{body}\n"), MAX_FUNCTION_LINES) == [("f", 62)]
