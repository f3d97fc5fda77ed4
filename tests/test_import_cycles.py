"""No import circle in the package: no fbl_jax module imports, at module level or inside a
function, a module that imports it back (directly or through others).

Read from the source with ast, so function-level ("lazy") imports count as much as the ones at
the top: a lazy import only hides a circle until the day someone moves it up. An edge goes from
a module to the module its statement names: `import a.b` and `from a import b` (b a submodule)
to a.b, `from a import name` (name not a module) to a; the packages above a named module, which
Python runs first, are not edges (a package's __init__ importing its submodules, which import
their siblings by the package's name, is no circle of code).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = "fbl_jax"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE


def package_modules(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, pathlib.Path]:
    """Dotted module name -> source file, for every .py file of the package."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an ImportFrom names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()  # a module's relative imports start from its package
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """The package's modules that `module` imports anywhere in its source (module or function
    level), by the rule in this file's docstring."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_package)
            names = []
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                names.append(submodule if submodule in modules else source)
        else:
            continue
        found.update(name for name in names if name in modules and name != module)
    return found


def import_graph(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = package_modules(root, package)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a list of
    module names; an empty list when the graph has no cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One circle inside a strongly connected component, as a path a -> b -> ... -> a."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        succ = sorted(graph[path[-1]] & members)
        back = [s for s in succ if s in seen]
        nxt = next((s for s in succ if s not in seen), None)
        if back and (nxt is None or start in back):
            target = start if start in back else back[0]
            return path[path.index(target) :] + [target]
        path.append(nxt)
        seen.add(nxt)


def test_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "fbl_jax.defaults" in graph  # the walk found the package
    cycles = [" -> ".join(one_cycle(graph, c)) for c in import_cycles(graph)]
    assert not cycles, "import circles in the package:\n" + "\n".join(cycles)


def test_the_walk_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n    return b\n")
    (pkg / "sub" / "b.py").write_text("from ..c import helper\n")
    (pkg / "c.py").write_text("import json\n\ndef helper():\n    import pkg.a\n")
    graph = import_graph(pkg, "pkg")
    assert graph == {
        "pkg": set(),
        "pkg.sub": {"pkg.sub.b"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg.c"},
        "pkg.c": {"pkg.a"},
    }
    (component,) = import_cycles(graph)
    assert component == ["pkg.a", "pkg.c", "pkg.sub.b"]
    assert one_cycle(graph, component) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


@pytest.mark.parametrize("acyclic", [True, False])
def test_cycle_finder_on_small_graphs(acyclic):
    graph = {"a": {"b"}, "b": {"c"}, "c": set() if acyclic else {"a"}, "d": {"a"}}
    assert import_cycles(graph) == ([] if acyclic else [["a", "b", "c"]])
