"""The package's shape: no import cycle inside ``src/fluxvit`` (function-level imports included,
since they hide a cycle rather than remove it), and one source for the Token Optimization defaults."""

from __future__ import annotations

import ast
from pathlib import Path

import fluxvit
from fluxvit.cli import build_parser
from fluxvit.evaluate.token_optimization import SearchSpace

SRC = Path(fluxvit.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph() -> dict[str, set[str]]:
    """module -> the fluxvit modules it imports anywhere in its body (``from pkg import mod``
    counts as an import of ``pkg.mod`` when that is a module, else of ``pkg``)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        edges = set()
        for node in ast.walk(tree):
            if _type_checking_only(node, parents):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    assert len(graph) > 40 and "fluxvit.models.registry" in graph["fluxvit.models"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_optimize_defaults_are_the_librarys():
    optimize = build_parser()._subparsers._group_actions[0].choices["optimize"]
    defaults = {a.dest: a.default for a in optimize._actions}
    space = SearchSpace()
    assert tuple(int(v) for v in defaults["frames"].split(",")) == space.frames
    assert tuple(int(v) for v in defaults["sizes"].split(",")) == space.sizes
    assert defaults["max_factor"] == space.max_factor


def test_help_needs_no_torch():
    """``fluxvit --help`` and every command's --help answer without importing torch (seconds)."""
    import subprocess
    import sys

    code = ("import sys\nfrom fluxvit.cli import build_parser\nbuild_parser()\nimport fluxvit\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
