"""The package's layering, read from the source (ast; nothing imported): the rules of issue 13.

* The core (everything outside ``_qt/``, ``_napari.py`` and ``cli/gui.py``) imports no Qt or napari, not even
  inside a function; and every module under ``_qt/`` does touch Qt or napari (Qt-free logic belongs in the core).
* ``formats/`` is a leaf: its codecs import only each other, ``errors`` and ``classes``.
* No import cycles between our modules. Two graphs are checked: the imports run when a module is imported
  (module level, ``if TYPE_CHECKING:`` blocks left out), whose cycles break imports; and, separately, those
  plus the deferred imports inside functions, whose cycles do not fail at import time but still mean two
  layers lean on each other (the data flows one way: slide -> tiles -> detections -> review store -> counts /
  training). Both must be free of cycles. Importing ``a.b.c`` also runs the package ``a.b``'s ``__init__``, so
  that is an edge too, except from inside the package itself.
* No module is over 600 lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "midog_viewer"
MAX_LINES = 600
#: Longest class, in lines.
MAX_CLASS_LINES = 400
#: Third-party GUI packages the core must never import.
GUI_PACKAGES = ("qtpy", "PySide2", "PySide6", "PyQt5", "PyQt6", "napari", "superqt", "magicgui")
#: The GUI skin: where Qt and napari may be imported.
GUI_MODULES = ("midog_viewer._napari", "midog_viewer.cli.gui")
#: What a codec under formats/ may import from the package.
FORMATS_MAY_IMPORT = ("midog_viewer.formats", "midog_viewer.errors", "midog_viewer.classes")


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    #: Absolute names imported when the module is imported, and those imported inside functions.
    top: set[str] = field(default_factory=set)
    deferred: set[str] = field(default_factory=set)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _collect(module: Module, tree: ast.AST) -> None:
    package = module.name if module.is_package else module.name.rpartition(".")[0]

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue  # annotations only: never executed
            inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in child.names]
            (module.deferred if inner else module.top).update(names)
            visit(child, inner)

    visit(tree, False)


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name, is_package = _module_name(path)
        module = Module(name, path, is_package)
        _collect(module, ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found[name] = module
    return found


def _ours(names: set[str], modules: dict[str, Module], importer: str) -> set[str]:
    """Our modules a set of imported names runs: each name's module (``from a import b``: ``a.b`` if a
    module, else ``a``) and the packages above it that do not contain the importer."""
    result = set()
    for name in names:
        if not name.startswith("midog_viewer"):
            continue
        while name and name not in modules:
            name = name.rpartition(".")[0]
        while name:
            if name != importer and not importer.startswith(name + "."):
                result.add(name)
            name = name.rpartition(".")[0]
    result.discard("midog_viewer")  # the root package holds only the version
    return result


def _third_party(module: Module, deferred: bool = True) -> set[str]:
    names = module.top | (module.deferred if deferred else set())
    return {name.split(".")[0] for name in names if not name.startswith("midog_viewer")}


def _is_gui(name: str) -> bool:
    return name.startswith("midog_viewer._qt") or name in GUI_MODULES


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_parser_sees_the_package(modules):
    assert {"midog_viewer.formats.midog_coco", "midog_viewer.review.store", "midog_viewer.cli"} <= set(modules)
    assert "midog_viewer.formats.gc_points" in _ours(modules["midog_viewer.evaluate"].top, modules, "midog_viewer.evaluate")
    assert "qtpy" in _third_party(modules["midog_viewer._qt.review_widget"])


def test_the_core_imports_no_qt_or_napari(modules):
    offenders = {
        name: sorted(_third_party(module) & set(GUI_PACKAGES))
        for name, module in modules.items()
        if not _is_gui(name) and _third_party(module) & set(GUI_PACKAGES)
    }
    assert offenders == {}


def test_the_core_imports_none_of_the_gui_modules(modules):
    """Only the skins reach the GUI: the command line (``cli/``, which opens viewers) and the GUI itself."""
    offenders = {
        name: sorted(n for n in _ours(module.top | module.deferred, modules, name) if _is_gui(n))
        for name, module in modules.items()
        if not _is_gui(name) and not name.startswith("midog_viewer.cli")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def _qt_free_gui_modules(modules: dict[str, Module]) -> set[str]:
    """Modules under _qt/ that touch neither Qt nor napari: not themselves, nor through a module that does
    (a napari menu contribution that only imports the dock touches Qt through it)."""
    touching = {name for name, module in modules.items() if _third_party(module) & set(GUI_PACKAGES)}
    grown = True
    while grown:
        more = {
            name for name, module in modules.items()
            if name not in touching and _ours(module.top | module.deferred, modules, name) & touching
        }
        touching |= more
        grown = bool(more)
    return {name for name in modules if name.startswith("midog_viewer._qt.") and name not in touching}


def test_every_gui_module_touches_qt_or_napari(modules):
    """Qt-free logic under _qt/ belongs in the core (review/), where it is testable without a viewer."""
    assert _qt_free_gui_modules(modules) == set()


def test_formats_is_a_leaf(modules):
    offenders = {}
    for name, module in modules.items():
        if name == "midog_viewer.formats" or name.startswith("midog_viewer.formats."):
            reached = _ours(module.top | module.deferred, modules, name)
            bad = sorted(n for n in reached if not any(n == ok or n.startswith(ok + ".") for ok in FORMATS_MAY_IMPORT))
            if bad:
                offenders[name] = bad
    assert offenders == {}


def test_no_import_cycles_at_import_time(modules):
    graph = {name: _ours(module.top, modules, name) for name, module in modules.items()}
    assert _cycles(graph) == []


def test_no_import_cycles_counting_imports_inside_functions(modules):
    graph = {name: _ours(module.top | module.deferred, modules, name) for name, module in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_600_lines(modules):
    lengths = {name: len(m.path.read_text(encoding="utf-8").splitlines()) for name, m in modules.items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_no_class_over_400_lines(modules):
    """A class a newcomer can hold: the dock is composition, the store is split by concern (decision log,
    subtypes)."""
    long = {}
    for name, module in modules.items():
        for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}
