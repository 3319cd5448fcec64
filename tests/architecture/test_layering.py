"""The layering of ``sine_model`` (see ``sine_model/__init__.py`` and docs/architecture.md), enforced.

Every ``import`` of every module is read with :mod:`ast` — function-level ones too, since hiding an
upward import inside a function still ties the layers together. A module may import from its own layer's
package and from the layers below; siblings on one layer (``preprocess``/``io``, ``hub``/``engine``) may
not import each other; there is no import cycle between modules; ``sine_model`` never imports napari or
Qt; ``napari_sine`` uses only the public API (``from sine_model import …``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sine_model"

#: Layer of each top-level part of sine_model (lower imports nothing above it).
LAYERS: dict[str, int] = {
    "errors": 0, "modes": 0, "metrics": 0, "labelmaps": 0, "triton_guard": 0, "sample_data": 0,
    "preprocess": 1, "io": 1,
    "modeling": 2,
    "postprocess": 3,
    "hub": 4, "engine": 4,
    "training": 5,
    # review state, ranking and export of reviewed targets: files (io) and metrics only, torch-free
    "bootstrap": 5,
    "fitting": 6,
    # resumable / distributed runs: a prepared propagator (engine) + loading weights on workers (hub);
    # used by cli; never needs fitting (the caller prepares the references)
    "scaleout": 6,
    "cli": 7,
}
GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui", "vispy")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, text: str | None = None) -> list[tuple[str, int]]:
    """Absolute names of every module ``path`` imports (relative imports resolved), with line numbers."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8") if text is None else text)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from sine_model.x import y` may name a submodule y: then it imports that module
            submodules = [f"{target}.{alias.name}" for alias in node.names
                          if (ROOT / f"{target}.{alias.name}".replace(".", "/")).with_suffix(".py").exists()
                          or (ROOT / f"{target}.{alias.name}".replace(".", "/") / "__init__.py").exists()]
            found += [(name, node.lineno) for name in submodules or [target]]
    return found


def part_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "sine_model" and len(parts) > 1 else None


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in SOURCES} - {"__init__"}
    assert parts <= set(LAYERS), f"parts without a layer: {sorted(parts - set(LAYERS))}"


def wrong_imports(path: Path, text: str | None = None) -> list[str]:
    """Imports of ``path`` that go up, sideways to a sibling of its layer, or to napari / Qt."""
    own = part_of(module_name(path))
    wrong = []
    for target, line in imports_of(path, text):
        if target.split(".")[0] in GUI_PACKAGES:
            wrong.append(f"line {line}: {target} (sine_model must stay napari- and Qt-free)")
        other = part_of(target)
        if other is None or other == own:
            continue
        # the base modules (layer 0) may use each other; other same-layer parts are independent siblings
        if LAYERS[other] > LAYERS[own] or (LAYERS[other] == LAYERS[own] and LAYERS[own] > 0):
            wrong.append(f"line {line}: {target} ({other}, layer {LAYERS[other]}) from {own} "
                         f"(layer {LAYERS[own]})")
    return wrong


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_only(path):
    if path == PACKAGE / "__init__.py":
        return  # the public API names every layer (lazily)
    wrong = wrong_imports(path)
    assert not wrong, "\n".join(wrong)


def test_the_checker_catches_hidden_upward_sideways_and_gui_imports():
    path = PACKAGE / "modeling" / "config.py"
    text = path.read_text(encoding="utf-8") + (
        "\n\ndef _f():\n    from sine_model.engine import propagator\n    import qtpy\n"
    )
    found = "\n".join(wrong_imports(path, text))
    assert "sine_model.engine.propagator (engine, layer 4) from modeling" in found and "qtpy" in found
    sibling = PACKAGE / "hub" / "presets.py"
    assert wrong_imports(sibling, "from sine_model.engine.tiling import plan_tiles\n")


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    names = {module_name(p) for p in SOURCES}
    for path in SOURCES:
        if path == PACKAGE / "__init__.py":
            continue
        graph[module_name(path)] = {t for t, _ in imports_of(path) if t in names and t != "sine_model"}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("path", sorted((ROOT / "napari_sine").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_plugin_uses_the_public_api_only(path):
    internal = [f"line {line}: {target}" for target, line in imports_of(path)
                if target.startswith("sine_model.")]
    assert not internal, "napari_sine imports sine_model internals:\n" + "\n".join(internal)
