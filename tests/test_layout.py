"""The package's shape, read from its source files (no torch): no module over 450 lines outside
``musicgen/experiments/``, no import cycle among musicgen's modules, the Hydra configs shipped as
package data, and a module behind every verb of the ``musicgen`` command."""

from __future__ import annotations

import ast
import glob
from fnmatch import fnmatch
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = REPO / "musicgen"
MAX_LINES = 450


def module_name(path: Path) -> str:
    """``musicgen/a/b.py`` -> ``musicgen.a.b``; ``musicgen/a/__init__.py`` -> ``musicgen.a``."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: every module of the package: dotted name -> its source file
MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """The musicgen modules ``name`` imports, anywhere in its file (in functions too, as
    import-linter counts them): ``from musicgen.x import y`` is ``musicgen.x.y`` where that is a
    module, else ``musicgen.x``; relative imports resolved against the module's package."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:  # ``import musicgen.a.b.name``-like: the longest module prefix
                t = t.rpartition(".")[0]
            if t.startswith("musicgen") and t != name:
                out.add(t)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle
    through some of its modules (``a -> b -> ... -> a``)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [one_cycle(graph, c) for c in components]


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A path ``start -> ... -> start`` inside ``component`` (breadth first: a shortest one)."""
    start, inside = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & inside):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{component} is not strongly connected")


def test_no_module_outside_experiments_is_over_the_line_limit():
    over = {str(p.relative_to(REPO)): n for p in MODULES.values()
            if "experiments" not in p.relative_to(PACKAGE).parts[:1]
            and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (outside musicgen/experiments/): " + ", ".join(
        f"{p} ({n})" for p, n in sorted(over.items(), key=lambda x: -x[1]))


def test_the_import_graph_has_no_cycle():
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}
    assert graph["musicgen.api"] >= {"musicgen.checkpoint", "musicgen.generation.guidance"}  # the graph is read
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_graph_reader_resolves_imports_and_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert "musicgen.generation.guidance" in imports_of("musicgen.api", MODULES["musicgen.api"])
    assert "musicgen.checkpoint.run" in imports_of("musicgen.checkpoint", MODULES["musicgen.checkpoint"])


def test_every_config_ships_as_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = [n for n, path in MODULES.items() if path.name == "__init__.py"]
    include = setuptools["packages"]["find"]["include"]
    shipped: set[Path] = set()
    for package, patterns in setuptools["package-data"].items():
        for pkg in (packages if package in ("", "*") else [package]):
            assert any(fnmatch(pkg, i) for i in include), f"{pkg} has package data but is not a package found"
            root = REPO / pkg.replace(".", "/")
            for pattern in patterns:
                shipped |= {(root / f).resolve() for f in glob.glob(pattern, root_dir=root, recursive=True)}
    configs = sorted((PACKAGE / "conf").rglob("*.yaml"))
    assert len(configs) > 20
    missing = [str(c.relative_to(REPO)) for c in configs if c.resolve() not in shipped]
    assert not missing, f"configs not in [tool.setuptools.package-data]: {missing}"


def test_every_verb_has_a_module_with_a_main():
    from musicgen.__main__ import VERBS

    assert {"train", "generate", "evaluate", "prepare", "export", "app", "gallery"} <= set(VERBS)
    for verb, (module, _) in VERBS.items():
        path = MODULES.get(module)
        assert path is not None and path.is_file(), f"musicgen {verb}: no file for {module}"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        names |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
        assert "main" in names, f"musicgen {verb}: {module} defines no main()"
