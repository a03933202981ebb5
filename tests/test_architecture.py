"""The layer rule of docs/ARCHITECTURE.md, checked on the code: every import of the package
(module-level and inside functions, read with `ast`, not by importing anything) forms no module
cycle and no folder-level cycle, and `training/` imports nothing from `distill/`; and no doc
points outside the repository."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "distilface_jax"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, `from X import name` counted as an import of
    X.name when that is a module, else of X."""
    files = {module_name(path, package.parent): path for path in package.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package, `level` - 1 steps up
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            imported |= {target for target in targets if target in files and target != name}
        graph[name] = imported
    return graph


def folder_of(module: str) -> str:
    """distilface_jax.training.step → "training"; a top-level module (train.py, run_folder.py) is its own unit."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    folders = defaultdict(set)
    for module, imported in graph.items():
        folders[folder_of(module)] |= {folder_of(target) for target in imported} - {folder_of(module)}
    return dict(folders)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    """The walker itself, on a package written for it: a cycle hidden in a function is found."""
    package = tmp_path / "distilface_jax"
    (package / "a").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("")
    (package / "a" / "x.py").write_text("from . import y\n")
    (package / "a" / "y.py").write_text("def f():\n    from distilface_jax.b import z\n")
    (package / "b.py").write_text("import os\n")
    (package / "c.py").write_text("from distilface_jax.a.x import thing\n")
    graph = import_graph(package)
    assert graph["distilface_jax.a.x"] == {"distilface_jax.a.y"}
    assert graph["distilface_jax.a.y"] == {"distilface_jax.b"}  # inside a function
    assert graph["distilface_jax.c"] == {"distilface_jax.a.x"}
    assert folder_graph(graph) == {"a": {"b"}, "b": set(), "c": {"a"}, "distilface_jax": set()}
    assert cycles({"p": {"q"}, "q": {"r"}, "r": {"p"}, "s": {"p"}}) == [["p", "q", "r"]]
    assert cycles({"p": {"q"}, "q": set()}) == []


def test_no_module_imports_itself_through_others():
    assert cycles(import_graph()) == []


def test_folders_form_layers():
    """config, training, distill, trained_model, cli, ...: no folder reaches back up to one that reaches it."""
    assert cycles(folder_graph(import_graph())) == []


def test_training_never_imports_distill():
    """The loop is handed its recipe: distill/ depends on training/, never the reverse."""
    graph = import_graph()
    upward = sorted(
        (module, target)
        for module, imported in graph.items()
        if folder_of(module) == "training"
        for target in imported
        if folder_of(target) == "distill"
    )
    assert upward == []
    assert any(folder_of(t) == "training" for m, ts in graph.items() if folder_of(m) == "distill" for t in ts)


def documented_layers() -> dict[str, int]:
    """{unit: layer} from docs/ARCHITECTURE.md's table ("layer N  unit unit ...  what they are")."""
    layers = {}
    for number, units in re.findall(
        r"^layer (\d+)  (.+?)(?:  |$)", (ROOT / "docs" / "ARCHITECTURE.md").read_text(), re.M
    ):
        for unit in units.split():
            layers[unit] = int(number)
    return layers


def test_every_import_goes_down_the_documented_layers():
    """The doc's layer rule is true: each unit is in one layer, and imports only lower layers."""
    layers = documented_layers()
    graph = folder_graph(import_graph())
    assert sorted(set(graph) - {"distilface_jax"}) == sorted(layers)
    upward = [
        f"{unit} (layer {layers[unit]}) imports {target} (layer {layers[target]})"
        for unit, targets in graph.items()
        if unit != "distilface_jax"
        for target in sorted(targets)
        if layers[target] >= layers[unit]
    ]
    assert upward == []


def test_docs_point_nowhere_outside_the_repository():
    """Users have the repository, not the folders beside it: a markdown link resolves from its
    file, a path in a command or in prose from the repository root (where commands run)."""
    outside = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        links = re.findall(r"\]\(([^)\s]+)\)", text)
        for link in links:
            if "://" not in link and not link.startswith("#"):
                target = (doc.parent / link.split("#")[0]).resolve()
                if not target.is_relative_to(ROOT.resolve()):
                    outside.append(f"{doc.name}: link {link}")
        for path in re.findall(r"(?:\.\./)+[^\s)`'\"]*", re.sub(r"\]\([^)]*\)", "", text)):
            if not (ROOT / path).resolve().is_relative_to(ROOT.resolve()):
                outside.append(f"{doc.name}: {path}")
    assert outside == []
