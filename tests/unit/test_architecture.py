"""The import structure of the project's packages, read from the source with `ast` (nothing is imported).

- no import cycle among the project's modules (imports inside functions count too: a lazy import is still
  a dependency);
- the packages are layered: `cdc_cli` imports everything and nothing imports it; `ingest` and `connectors`
  may import `cdc_consumer` (settings, PostgreSQL and Cassandra edges, identifiers, secrets, errors) but
  `cdc_consumer` imports neither of them;
- no module imports another module's private name (`from x import _name`); a package's private modules
  (the C extensions `_json_native`, ...) may be imported by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cdc_cli", "cdc_consumer", "connectors", "ingest")
# package -> the project packages it may import (besides itself)
ALLOWED = {"cdc_cli": {"cdc_consumer", "connectors", "ingest"}, "connectors": {"cdc_consumer"},
           "ingest": {"cdc_consumer"}, "cdc_consumer": set()}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def is_module(name: str, modules: dict[str, Path], root: Path = ROOT) -> bool:
    """A project module, or a C extension module of a project package (its .c source sits beside it)."""
    return name in modules or (root / (name.replace(".", "/") + ".c")).is_file()


def imports_of(name: str, path: Path, modules: dict[str, Path], root: Path = ROOT) -> list[tuple[str, str, int]]:
    """(imported project module, imported name or '', line) of every import statement in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, "", node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                if is_module(child, modules, root):
                    found.append((child, "", node.lineno))
                else:
                    found.append((base, alias.name, node.lineno))
    return [(target, attr, line) for target, attr, line in found if target.split(".")[0] in PACKAGES]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _, _ in imports_of(name, path, modules, root):
            while target not in modules and "." in target:  # `import a.b.c` of a C extension: its package
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def private_imports(root: Path = ROOT) -> list[str]:
    modules = module_files(root)
    return [f"{path.relative_to(root)}:{line}: from {target} import {attr}"
            for name, path in modules.items()
            for target, attr, line in imports_of(name, path, modules, root)
            if attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__")) and target != name]


def test_the_project_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_packages_import_only_the_layers_below_them():
    wrong = sorted(f"{module} imports {target}" for module, targets in import_graph().items()
                   for target in targets
                   if target.split(".")[0] != module.split(".")[0]
                   and target.split(".")[0] not in ALLOWED[module.split(".")[0]])
    assert wrong == []


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


# ---------------------------------------------------------------- the checks themselves catch what they should

def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("files, expected", [
    ({"cdc_consumer/__init__.py": "", "cdc_consumer/a.py": "from cdc_consumer.b import x\n",
      "cdc_consumer/b.py": "def f():\n    from cdc_consumer import a\n"}, [["cdc_consumer.a", "cdc_consumer.b"]]),
    ({"cdc_consumer/__init__.py": "", "ingest/__init__.py": "", "cdc_consumer/a.py": "import ingest.c\n",
      "ingest/c.py": "from cdc_consumer import a\n"}, [["cdc_consumer.a", "ingest.c"]]),
    ({"cdc_consumer/__init__.py": "", "cdc_consumer/a.py": "from . import b\n",
      "cdc_consumer/b.py": "from .a import y\n"}, [["cdc_consumer.a", "cdc_consumer.b"]]),
    ({"cdc_consumer/__init__.py": "", "cdc_consumer/a.py": "from cdc_consumer.b import x\n",
      "cdc_consumer/b.py": "x = 1\n"}, []),
])
def test_a_cycle_is_found_even_through_a_lazy_or_relative_import(tmp_path, files, expected):
    assert cycles(import_graph(write(tmp_path, files))) == expected


def test_a_private_name_is_found_but_a_c_extension_module_is_not(tmp_path):
    root = write(tmp_path, {"cdc_consumer/__init__.py": "", "cdc_consumer/_fast.c": "",
                            "cdc_consumer/a.py": "from cdc_consumer import _fast\nfrom cdc_consumer.b import _OPS, OK\n",
                            "cdc_consumer/b.py": "_OPS = OK = 1\n"})
    assert private_imports(root) == ["cdc_consumer/a.py:2: from cdc_consumer.b import _OPS"]
