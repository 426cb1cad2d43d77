"""The package's layering rules, read from the source (imports inside functions count).

1. ``llama_cpp`` is imported only in ``edgejudge/native/``; typer and rich only in ``edgejudge/cli/``; PIL
   only in ``edgejudge/images/`` (type-checking imports included).
2. No import cycle between two modules, nor between two top-level modules or subpackages of ``edgejudge``
   (a package's ``__init__`` counts as the package); ``engine/`` and ``convert/`` never import each other.
3. No module over 450 lines.
4. Nothing the tests alone need (pickles with payloads, fake shards) ships in the package: no such writer,
   no parameter of a package writer through which a test plants pickle content, no code kept "for tests".
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgejudge"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(edgejudge modules, top-level external packages) that ``name`` imports anywhere in its source."""
    inner: set[str] = set()
    outer: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "edgejudge" or target.startswith("edgejudge."):
                # the longest known module the name points into
                parts = target.split(".")
                while parts and ".".join(parts) not in MODULES:
                    parts.pop()
                if parts:
                    inner.add(".".join(parts))
            elif target:
                outer.add(target.split(".")[0])
    inner.discard(name)
    return inner, outer


GRAPH: dict[str, set[str]] = {}
EXTERNAL: dict[str, set[str]] = defaultdict(set)
for _name, _path in MODULES.items():
    GRAPH[_name], _outer = _imports(_name, _path)
    for _pkg in _outer:
        EXTERNAL[_pkg].add(_name)


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    reach = {node: _reach(graph, node) for node in graph}
    return sorted({(a, b) for a in graph for b in reach[a] if a < b and a in reach.get(b, ())})


def _top(name: str) -> str:
    return ".".join(name.split(".")[:2])


def _top_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, targets in GRAPH.items():
        graph[_top(name)]  # every node present
        for target in targets:
            if _top(target) != _top(name):
                graph[_top(name)].add(_top(target))
    return graph


@pytest.mark.parametrize(
    ("package", "home"),
    [
        ("llama_cpp", "edgejudge.native"),
        ("typer", "edgejudge.cli"),
        ("rich", "edgejudge.cli"),
        ("click", "nowhere (Typer's public API only)"),
        ("PIL", "edgejudge.images"),
        ("fastapi", "edgejudge.serve"),
        ("starlette", "edgejudge.serve"),
        ("pydantic", "edgejudge.serve"),
        ("uvicorn", "edgejudge.serve"),
        ("prometheus_client", "edgejudge.serve"),
        ("inspect_ai", "edgejudge.integrations"),
    ],
)
def test_a_dependency_is_imported_only_in_its_home(package: str, home: str) -> None:
    outside = sorted(m for m in EXTERNAL.get(package, ()) if not (m == home or m.startswith(home + ".")))
    assert outside == [], f"{package} is imported outside {home}: {outside}"


def test_no_import_cycle_between_modules() -> None:
    # a package's __init__ re-exporting its own submodules is not a cycle between two modules
    graph = {
        name: {t for t in targets if not (name.startswith(t + ".") and MODULES[t].name == "__init__.py")}
        for name, targets in GRAPH.items()
    }
    assert _cycles(graph) == []


def test_no_import_cycle_between_subpackages() -> None:
    graph = _top_graph()
    graph.pop("edgejudge", None)  # the root package: version and the lazy public names, imported by many
    for targets in graph.values():
        targets.discard("edgejudge")
    assert _cycles(graph) == []


def test_engine_and_convert_never_import_each_other() -> None:
    graph = _top_graph()
    assert "edgejudge.convert" not in graph["edgejudge.engine"]
    assert "edgejudge.engine" not in graph["edgejudge.convert"]


def test_no_module_over_the_line_limit() -> None:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_the_package_holds_no_test_only_writers() -> None:
    text = {name: path.read_text(encoding="utf-8") for name, path in MODULES.items()}
    assert [n for n, t in text.items() if "os.system" in t or "write_malicious" in t] == []


#: Parameters through which a writer would let a caller plant arbitrary pickle content (a test's hook).
_HOOK_PARAMETERS = {"pickle_bytes", "extra", "payload", "raw_pickle", "override"}
#: Where the package writes checkpoints and pickles.
_WRITERS = ("edgejudge.convert.torchzip", "edgejudge.fixtures")
#: Wording that marks code kept for the tests' sake.
_TEST_ONLY_WORDS = re.compile(
    r"\btests?\s+(?:use|uses|need|needs|plant|only)\b|\bfor\s+(?:the\s+)?tests\b|\btest[- ]only\b|"
    r"\bonly\s+(?:the\s+)?tests\b|\bused\s+by\s+(?:the\s+)?tests\b",
    re.IGNORECASE,
)


def test_the_package_writers_take_no_test_hooks() -> None:
    """Review B5: the torch-zip writer took ``pickle_bytes=`` and ``extra=`` so tests could plant hostile
    pickles. Such writers live in ``tests/helpers``; the package's writers take no such parameter."""
    hooks = []
    for name, path in MODULES.items():
        if not any(name == w or name.startswith(w + ".") for w in _WRITERS):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
                hooks += [f"{name}.{node.name}({a.arg}=)" for a in params if a and a.arg in _HOOK_PARAMETERS]
    assert hooks == []


def test_the_package_keeps_nothing_for_the_tests_sake() -> None:
    said = [
        f"{name}:{i}: {line.strip()}"
        for name, path in MODULES.items()
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _TEST_ONLY_WORDS.search(line)
    ]
    assert said == []
