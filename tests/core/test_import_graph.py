"""No import cycle in the package, lazy (function-level) imports included.

Why: a cycle hidden inside a function still couples the two modules both ways; it breaks as soon
as someone hoists the import, and it hides which module a helper belongs to. Only imports under
``if TYPE_CHECKING:`` are ignored (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "neuralign"


def _tomllib():
    """tomllib (Python >= 3.11), else the copy pip vendors (Python 3.10)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        from pip._vendor import tomli as tomllib
    return tomllib


def package_modules() -> dict[str, Path]:
    """Every module of the package, ``dotted name -> file``, from pyproject's package-dir map
    (``neuralign.offline`` lives in ``offline/``), packages as their ``__init__``."""
    tool = _tomllib().loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs: dict[str, Path] = {}
    for pkg in tool["packages"]:
        # the longest mapped prefix decides the folder
        prefix = max((p for p in tool["package-dir"] if pkg == p or pkg.startswith(p + ".")),
                     key=len)
        rest = pkg[len(prefix):].lstrip(".").split(".") if pkg != prefix else []
        dirs[pkg] = ROOT.joinpath(tool["package-dir"][prefix], *rest)
    modules: dict[str, Path] = {}
    for pkg, folder in dirs.items():
        for f in sorted(folder.glob("*.py")):
            modules[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str,
             is_package: bool) -> set[tuple[str, tuple[str, ...]]]:
    """The absolute names ``tree`` imports anywhere (functions too), skipping TYPE_CHECKING
    blocks, as ``(module, names)``: ``import a`` is ``(a, ())``, ``from a import b`` is
    ``(a, (b,))`` (``a.b`` if ``b`` is a submodule, else ``a``)."""
    found: set[tuple[str, tuple[str, ...]]] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update((a.name, ()) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[:len(base) - node.level + 1]
                src = ".".join(parts + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            found.add((src, tuple(a.name for a in node.names)))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """``module -> the package's modules it imports`` (the importing module itself excluded)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets: set[str] = set()
        for src, names in _imports(tree, name, path.stem == "__init__"):
            subs = {f"{src}.{n}" for n in names if f"{src}.{n}" in modules}
            # 'from pkg import submodule' depends on the submodule, not on pkg's own code
            targets |= subs if subs and len(subs) == len(names) else subs | {src}
        graph[name] = {n for n in targets if n in modules and n != name}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    out.append(sorted(comp))
    return out


def test_graph_sees_the_whole_package():
    modules = package_modules()
    assert {"neuralign.cli.parser", "neuralign.offline.train", "neuralign.realtime.engine",
            "neuralign.models", "neuralign.ui"} <= set(modules)
    assert import_graph()["neuralign.cli"] >= {"neuralign.cli.parser"}


def test_no_import_cycles():
    graph = import_graph()
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    report = "\n".join(
        "{" + ", ".join(c) + "}:\n" + "\n".join(
            f"    {m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c)
        for c in cycles)
    print(report)
    assert not cycles, f"{len(cycles)} import cycle(s):\n{report}"
