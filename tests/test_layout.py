"""The package's shape: small modules, no import cycles, a command line on the public API."""

from __future__ import annotations

import ast
from pathlib import Path

import capillary_async
import capillary_async.redis
import capillary_async.testing

PACKAGE = Path(capillary_async.__file__).parent
#: "About 500 lines": a module past this wants splitting by concern.
MAX_LINES = 520


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def run_time_imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """Module-level imports (not under ``TYPE_CHECKING``): (module, names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            target = resolve(name, node, path.name == "__init__.py")
            found.append((target, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


def test_no_module_is_over_about_500_lines() -> None:
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_import_cycle_between_modules_of_the_package() -> None:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges = set()
        for target, names in run_time_imports(name, path):
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in mods and candidate != name:
                    edges.add(candidate)
                    break
        graph[name] = edges
    # A package importing its own submodules (to re-export) is not a cycle.
    graph = {
        name: {t for t in edges if not t.startswith(name + ".")} for name, edges in graph.items()
    }
    seen: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in seen:
                visit(nxt, [*stack, nxt])
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name, [name])
    assert cycles == []


def test_the_command_line_imports_only_public_names() -> None:
    public = {
        "capillary_async": set(capillary_async.__all__),
        "capillary_async.testing": set(capillary_async.testing.__all__),
        "capillary_async.redis": set(capillary_async.redis.__all__),
    }
    private = []
    for name, path in modules().items():
        if not name.startswith("capillary_async.cli"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):  # function-level imports count too
            if not isinstance(node, ast.ImportFrom):
                continue
            target = resolve(name, node, path.name == "__init__.py")
            if target.startswith("capillary_async.cli") or not target.startswith("capillary_async"):
                continue
            allowed = public.get(target, set())
            private += [f"{name}: {target}.{a.name}" for a in node.names if a.name not in allowed]
    assert private == []


def test_the_checks_above_see_what_they_claim_to() -> None:
    """The walkers find real modules and real imports (a guard against vacuous passes)."""
    mods = modules()
    assert {"capillary_async._bulk._job", "capillary_async.cli._run"} <= set(mods)
    job = dict(run_time_imports("capillary_async._bulk._job", mods["capillary_async._bulk._job"]))
    assert "Chunker" in job["capillary_async._bulk._chunker"]
