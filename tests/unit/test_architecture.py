"""The package's layering: no import cycles, and only runtimes/ talks to Docker."""

from __future__ import annotations

import ast
from pathlib import Path

import dockyard

PACKAGE = Path(dockyard.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("dockyard",) + path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of the package `name` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v] & graph.keys():
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted(component + [v]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_runtimes_import_the_docker_sdk():
    outside = sorted(name for name, imported in _graph().items()
                     if not name.startswith("dockyard.runtimes")
                     and any(m == "docker" or m.startswith("docker.") for m in imported))
    assert outside == []


# Which layers each may import (docs/architecture.md). The console and the API are
# siblings: both call the services (the read model: services/instance_views.py) and
# share the request models of core/inputs.py; neither imports the other's routes.
ALLOWED = {
    "core": set(),
    "config": {"core"},
    "db": {"core"},
    "runtimes": {"config", "core"},
    "services": {"config", "core", "db", "runtimes"},
    "access": {"core", "db", "services"},
    "background": {"access", "core", "db", "runtimes", "services"},
    "web": {"core", "db", "services"},
    "api": {"access", "background", "config", "core", "db", "runtimes", "services", "web"},
    "cli": {"access", "api", "config", "core", "services"},
}


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else "dockyard"


def test_each_layer_imports_only_the_layers_below_it():
    graph = _graph()
    wrong = sorted(f"{m} imports {d}" for m, imported in graph.items() for d in imported & graph.keys()
                   if _layer(d) != _layer(m) and _layer(m) in ALLOWED and _layer(d) not in ALLOWED[_layer(m)])
    assert wrong == []
    assert set(ALLOWED) == {_layer(m) for m in graph} - {"dockyard", "__main__"}


def test_no_file_holds_a_merge_conflicts_markers():
    repo = PACKAGE.parent.parent
    texts = [p for p in repo.rglob("*") if p.suffix in {".py", ".md", ".html", ".js", ".css", ".sh", ".toml", ".txt"}
             and not any(part.startswith(".") or part in ("node_modules", "build") for part in p.relative_to(repo).parts)]
    marked = [str(p.relative_to(repo)) for p in texts
              if any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in p.read_text(errors="replace").splitlines())]
    assert marked == []


def _status_updates(tree: ast.AST) -> int:
    """`update(Instance)....values(status=...)` statements in a module's code."""
    found = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            updates_instances = any(isinstance(inner, ast.Call) and getattr(inner.func, "id", None) == "update"
                                    and [getattr(a, "id", None) for a in inner.args] == ["Instance"]
                                    for inner in ast.walk(node.func.value))
            if updates_instances and any(k.arg in ("status", None) for k in node.keywords):
                found += 1
    return found


def test_only_lifecycle_writes_an_instances_status():
    writers = {name: n for name, path in _modules().items() if (n := _status_updates(ast.parse(path.read_text())))}
    assert writers == {"dockyard.services.lifecycle": 1}
