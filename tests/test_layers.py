"""The import order of docs/architecture.md: no module imports a higher layer, and no import cycles.

Every import counts, also the ones inside functions (they run too, just later). Layers, lowest first:

    0  errors, config, io, assets, runtime, progress, cuda_ext        (no model, no data contract)
    1  data, train.checkpoint, train.loop                             (the subject contract; the step engine)
    2  face                                                           (landmarks and blendshapes)
    3  field, render, audio                                           (per-sample fields, rendering, audio)
    4  models                                                         (head representations, torso, mouth, portrait)
    5  train, inference, preprocess                                   (each its own: they never import each other)
    6  eval                                                           (evaluates and, for ablations, trains)
    7  demo
    8  cli

A module may import its own package and any lower layer; preprocess never imports models or the trainer.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("synctalk", "preprocess", "cuda_ext")

# longest prefix wins
LAYERS = {
    "synctalk": 0, "synctalk.errors": 0, "synctalk.config": 0, "synctalk.io": 0, "synctalk.assets": 0,
    "synctalk.runtime": 0, "synctalk.progress": 0, "cuda_ext": 0,
    "synctalk.data": 1, "synctalk.train.checkpoint": 1, "synctalk.train.loop": 1,
    "synctalk.face": 2,
    "synctalk.field": 3, "synctalk.render": 3, "synctalk.audio": 3,
    "synctalk.models": 4,
    "synctalk.train": 5, "synctalk.inference": 5, "preprocess": 5,
    "synctalk.eval": 6,
    "synctalk.demo": 7,
    "synctalk.cli": 8,
}
FORBIDDEN = {"preprocess": ("synctalk.models", "synctalk.train.trainer")}


def _layer_key(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key
    raise KeyError(module)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Our modules that ``path`` imports anywhere in its body (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PACKAGES)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        # `from pkg import name` names a module only when that module exists
        graph[module] = {name for name in _imports(path, module) if name in files and name != module}
    return graph


def _same_package(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2] if a.startswith("synctalk.") else a.split(".")[0] == b.split(".")[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        own = LAYERS[_layer_key(module)]
        for target in sorted(targets):
            layer = LAYERS[_layer_key(target)]
            if layer > own or (layer == own and own > 0 and not _same_package(module, target)):
                problems.append(f"{module} (layer {own}) imports {target} (layer {layer})")
            for banned in FORBIDDEN.get(module.split(".")[0], ()):
                if target == banned or target.startswith(banned + "."):
                    problems.append(f"{module} imports {target}, which {module.split('.')[0]} must never import")
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
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
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_module_imports_a_higher_layer():
    problems = upward_imports(_graph())
    assert not problems, "imports against docs/architecture.md's layer order:\n" + "\n".join(problems)


def test_no_import_cycles():
    cycles = import_cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    """The rules are not vacuous."""
    graph = {"synctalk.data.subject": {"synctalk.models.head"}, "synctalk.models.head": {"synctalk.data.subject"}}
    assert upward_imports(graph) == ["synctalk.data.subject (layer 1) imports synctalk.models.head (layer 4)"]
    assert import_cycles(graph) == [["synctalk.data.subject", "synctalk.models.head"]]
    assert upward_imports({"synctalk.inference.avatar": {"synctalk.train.trainer"}})  # same layer, other package
    assert upward_imports({"preprocess.torso_track": {"synctalk.models.torso"}})
