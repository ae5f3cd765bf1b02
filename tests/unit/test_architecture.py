"""The package's layering: no import cycles, only runtimes/ talks to Docker or reaches into
an engine, only lifecycle writes a status, and only the owner of background work makes its
thread pools."""

from __future__ import annotations

import ast
import functools
import re
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


@functools.cache
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


def test_outside_runtimes_no_module_uses_one_that_speaks_docker_but_the_known_two():
    # A node's backend is made in runtimes/connect.py; what is left Docker-only outside
    # runtimes/ is listed in docs/architecture.md ("Not yet").
    graph = _graph()
    speaks_docker = {name for name, imported in graph.items()
                     if any(m == "docker" or m.startswith("docker.") for m in imported)}
    reached = {name: sorted(imported & speaks_docker) for name, imported in graph.items()
               if not name.startswith("dockyard.runtimes") and imported & speaks_docker}
    assert reached == {"dockyard.services.images": ["dockyard.runtimes.image_build"],
                       "dockyard.services.migration": ["dockyard.runtimes.transfer"]}


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


REPO = PACKAGE.parent.parent


def _texts(suffixes: set[str]) -> list[Path]:
    """The repository's own files with one of `suffixes` (no hidden folders, no builds)."""
    return [p for p in REPO.rglob("*") if p.suffix in suffixes
            and not any(part.startswith(".") or part in ("node_modules", "build") for part in p.relative_to(REPO).parts)]


def test_no_file_holds_a_merge_conflicts_markers():
    marked = [str(p.relative_to(REPO)) for p in _texts({".py", ".md", ".html", ".js", ".css", ".sh", ".toml", ".txt"})
              if any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in p.read_text(errors="replace").splitlines())]
    assert marked == []


ISSUE_REFERENCE = re.compile(r"\bissue ?#?\d", re.IGNORECASE)


def test_no_code_refers_to_an_issue_by_number():
    # Code says why; which issue asked is git's history (docs may cite issues).
    found = [f"{p.relative_to(REPO)}:{n}" for p in _texts({".py", ".html", ".js", ".css", ".sh"})
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if ISSUE_REFERENCE.search(line)]
    assert found == []


def test_the_issue_reference_finder_finds_one():
    assert ISSUE_REFERENCE.search("// iss" + "ue 12: the place in line") and ISSUE_REFERENCE.search("(Iss" + "ue #7)")
    assert not ISSUE_REFERENCE.search("the issuer's key 7")


def _status_statements(tree: ast.AST) -> list[str]:
    """The tables of the `update(X)....values(status=...)` (or `insert`) statements in a
    module's code, as written ("Instance", or a variable's name)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            if not any(k.arg in ("status", None) for k in node.keywords):
                continue
            found += [ast.unparse(inner.args[0]) for inner in ast.walk(node.func.value)
                      if isinstance(inner, ast.Call) and getattr(inner.func, "id", None) in ("update", "insert")
                      and len(inner.args) == 1]
    return found


def _status_updates(tree: ast.AST) -> int:
    """`update(Instance)....values(status=...)` statements in a module's code."""
    return _status_statements(tree).count("Instance")


def test_only_lifecycle_writes_an_instances_status():
    writers = {name: n for name, path in _modules().items() if (n := _status_updates(ast.parse(path.read_text())))}
    assert writers == {"dockyard.services.lifecycle": 1}


STATUS_MODELS = ("Image", "Cluster", "Volume")


def _status_writes(tree: ast.AST) -> int:
    """Writes in a module's code that could set an image's, a cluster's or a volume's
    status: any assignment to a `.status` (above runtimes/, whose fake containers have
    one, only rows do; instances' go through lifecycle's UPDATE), `setattr(_, "status",
    _)`, one of those models made with `status=`, and their UPDATE/INSERT statements."""
    # Any table but instances': the helper's own UPDATE names its model by a variable.
    found = sum(table != "Instance" for table in _status_statements(tree))
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, ast.Attribute) and part.attr == "status" and isinstance(part.ctx, ast.Store):
                    found += 1
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name == "setattr" and len(node.args) > 1 and getattr(node.args[1], "value", None) == "status":
                found += 1
            if name in STATUS_MODELS and any(k.arg in ("status", None) for k in node.keywords):
                found += 1
    return found


def test_only_the_status_helper_writes_an_images_clusters_or_volumes_status():
    writers = {name: n for name, path in _modules().items()
               if not name.startswith("dockyard.runtimes") and (n := _status_writes(ast.parse(path.read_text())))}
    assert writers == {"dockyard.services.statuses": 2}


def test_the_status_write_finder_finds_each_kind():
    for code in ("row.status = 'ready'", "row.status, row.status_reason = 'ready', None",
                 "db.get(Image, 1).status = 'ready'", "setattr(row, 'status', 'ready')",
                 "Volume(id='v', status='ready')", "Cluster(**fields)",
                 "db.execute(update(Cluster).where(Cluster.id == k).values(status='released'))",
                 "db.execute(insert(Image).values(name='x', status='absent'))",
                 "db.execute(update(model).where(model.id == k).values(status=new))"):
        assert _status_writes(ast.parse(code)) == 1, code
    for code in ("if row.status == 'ready': pass", "Image(name='x')", "setattr(row, 'public', True)",
                 "db.execute(update(Volume).values(node_name='b'))", "ok = row.status",
                 "db.execute(update(Instance).values(status=target))"):
        assert _status_writes(ast.parse(code)) == 0, code


def test_nothing_outside_runtimes_reaches_into_a_runtimes_engine_client():
    """What a backend can do goes through the runtime interface (runtimes/base.py): code
    above it that used a runtime's `.client` or `.api(...)` would work on Docker alone."""
    reaching = []
    for name, path in _modules().items():
        if name.startswith("dockyard.runtimes"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("client", "api", "disks", "tools"):
                owner = ast.unparse(node.value)
                if "runtime" in owner:
                    reaching.append(f"{name}: {owner}.{node.attr}")
    assert reaching == []


# background/workers.py owns every pool of the server's background work, so that its stop
# reaches all of it; the access front's pool serves connections, not background work.
POOL_MAKERS = {"dockyard.background.workers", "dockyard.access.front"}


def _makes_a_pool(tree: ast.AST) -> bool:
    """A ThreadPoolExecutor (or ProcessPoolExecutor) made or subclassed in a module's code."""
    names = {"ThreadPoolExecutor", "ProcessPoolExecutor"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if getattr(func, "id", None) in names or getattr(func, "attr", None) in names:
                return True
        if isinstance(node, ast.ClassDef) and any(getattr(b, "id", getattr(b, "attr", None)) in names
                                                  for b in node.bases):
            return True
    return False


def test_only_the_owner_of_background_work_makes_thread_pools():
    makers = {name for name, path in _modules().items() if _makes_a_pool(ast.parse(path.read_text()))}
    assert makers <= POOL_MAKERS and "dockyard.background.workers" in makers


def test_the_pool_finder_finds_one():
    assert _makes_a_pool(ast.parse("import concurrent.futures as f\npool = f.ThreadPoolExecutor(4)"))
    assert _makes_a_pool(ast.parse("from concurrent.futures import ThreadPoolExecutor\nclass P(ThreadPoolExecutor): pass"))
    assert not _makes_a_pool(ast.parse("from concurrent.futures import Executor\ndef f(pool: Executor): pool.submit(f)"))


def _starts_a_thread(tree: ast.AST) -> bool:
    return any(isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Thread"
               and getattr(node.func.value, "id", None) == "threading" for node in ast.walk(tree))


def test_services_start_no_threads_of_their_own():
    """Background work of a service goes to a pool it is handed (platform.pools)."""
    starters = {name for name, path in _modules().items()
                if name.startswith("dockyard.services") and _starts_a_thread(ast.parse(path.read_text()))}
    assert starters == set()


def test_only_the_held_module_reads_or_writes_the_backend_state_column():
    """The runtime's state of an instance is opaque above it: read and written through
    services/held.py (and made by the migration that moved it there), never by name."""
    reaching = [name for name, path in _modules().items()
                if name not in ("dockyard.services.held", "dockyard.db.models") and not name.startswith(
                    "dockyard.db.migrations") and "backend_state" in path.read_text()]
    assert reaching == []


def test_the_model_reads_the_container_where_the_engine_writes_it():
    from dockyard.db.models import Instance
    from dockyard.runtimes.instances import CONTAINER_KEY, Held

    instance = Instance(backend_state=Held("c1", ("GPU-a",), None).state())
    assert instance.backend_state[CONTAINER_KEY] == "c1" and instance.container_id == "c1"
    assert Instance(backend_state=Held().state()).container_id is None
