"""The layering of architecture.md holds: who may import whom, and no import cycle among the project's modules.

Imports are read from the source (every ``import`` statement, also those inside functions), so a lazy import
that closes a cycle counts as much as a top-level one.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("r2ec", "services", "dags", "feature_repo", "benchmarks", "studies")
EXTERNAL_CLIENTS = (
    "mlflow", "feast", "qdrant_client", "sqlalchemy", "alembic", "great_expectations", "airflow", "psycopg",
    "redis", "fastapi", "uvicorn", "httpx",
)  # fmt: skip


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports (names that are not modules of the tree are dropped)."""
    files = [p for package in packages if (root / package).exists() for p in (root / package).rglob("*.py")]
    modules = {module_name(p, root): p for p in files}
    return {name: {i for i in imports_of(path, root) if i in modules and i != name} for name, path in modules.items()}


def external_imports(root: Path, package: str) -> dict[str, set[str]]:
    files = (root / package).rglob("*.py") if (root / package).exists() else []
    return {module_name(p, root): imports_of(p, root) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def violations(root: Path) -> list[str]:
    """Every broken layering rule of the tree at ``root``, one line each."""
    found = []
    if cycle := find_cycle(import_graph(root)):
        found.append("import cycle: " + " -> ".join(cycle))
    top = lambda name: name.split(".")[0]  # noqa: E731
    for module, names in external_imports(root, "r2ec").items():
        for name in names:
            if top(name) in ("services", "dags", "benchmarks", "studies", *EXTERNAL_CLIENTS):
                found.append(f"{module} (pure ML) imports {name}")
    for module, names in external_imports(root, "feature_repo").items():
        found += [f"{module} (Feast definitions) imports {n}" for n in names if top(n) in ("r2ec", "services")]
    for module, names in external_imports(root, "dags").items():
        for name in names:
            project = top(name) in PACKAGES
            if (project and not name.startswith("services.jobs")) or top(name) in set(EXTERNAL_CLIENTS) - {"airflow"}:
                found.append(f"{module} (a DAG) imports {name}: DAGs call services.jobs only")
    for module, names in external_imports(root, "benchmarks").items():
        found += [f"{module} (a benchmark) imports {n}" for n in names if top(n) == "studies"]
    return sorted(set(found))


def test_the_repository_keeps_its_layers() -> None:
    assert violations(ROOT) == []


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("r2ec/model.py", "from services import registry\n", "(pure ML) imports services"),
        ("r2ec/model.py", "def f():\n    import mlflow\n", "(pure ML) imports mlflow"),
        ("feature_repo/views.py", "from r2ec.data import schema\n", "(Feast definitions) imports r2ec"),
        ("dags/nightly.py", "from services.registry import resolve\n", "DAGs call services.jobs only"),
        ("services/a.py", "def f():\n    from services import b\n", "import cycle: services.a -> services.b"),
    ],
)
def test_a_planted_violation_is_found(tmp_path: Path, path: str, source: str, expected: str) -> None:
    for package in ("r2ec", "services", "feature_repo", "dags"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "services" / "b.py").write_text("from services import a\n")
    (tmp_path / "services" / "a.py").write_text("")
    (tmp_path / path).write_text(source)
    assert any(expected in line for line in violations(tmp_path)), violations(tmp_path)
