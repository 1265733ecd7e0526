"""The QGIS plugin stays loadable under QGIS 4 (Qt 6 / PyQt6) while QGIS 3.22 runs it.

PyQt6 drops what PyQt5 tolerated: enum members reached through their class (``Qt.AlignLeft``
must be ``Qt.AlignmentFlag.AlignLeft``), ``exec_()``, and QGIS only loads a plugin on Qt 6 when
metadata.txt says ``supportsQt6=True``; importing PyQt5/PyQt6 directly ties the plugin to one Qt.
QGIS 3.22 has none of Qt 6, so these are checked on the source, by its syntax tree: no QGIS
needed, and a pattern that breaks under Qt 6 fails here before it reaches a QGIS 4 user.

The enum rule: ``Cls.Name`` where ``Cls`` is a Qt or QGIS class (imported from ``qgis.*``, or a
plugin class deriving from one) and ``Name`` starts with a capital is an unscoped member, unless
it is scoped further (``Cls.Enum.Member``: the enum type), called (a nested class or a flags
constructor), or a type annotation. Class constants that are not enum members are listed in
CONSTANTS.
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

PLUGIN_ROOT = Path(__file__).resolve().parents[1] / "qgis_plugin"
METADATA = PLUGIN_ROOT / "geosam_qgis" / "metadata.txt"
SOURCES = sorted(PLUGIN_ROOT.rglob("*.py"))
# Qt bindings the plugin must reach only through qgis.PyQt, which picks the one QGIS runs on.
BINDINGS = {"PyQt5", "PyQt6", "PySide2", "PySide6", "sip"}
# Capitalised class attributes that are plain constants, not enum members.
CONSTANTS = {"Qgis": {"QGIS_VERSION", "QGIS_VERSION_INT", "QGIS_RELEASE_NAME", "QGIS_DEV_VERSION"}}


def qt_classes(trees: list[ast.Module]) -> set[str]:
    """Names imported from ``qgis.*`` plus the classes defined on top of them, transitively."""
    names = {
        alias.asname or alias.name
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "qgis"
        for alias in node.names
    }
    classes = [node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    grown = True
    while grown:
        derived = {
            node.name
            for node in classes
            if any(isinstance(base, ast.Name) and base.id in names for base in node.bases)
        }
        grown = not derived <= names
        names |= derived
    return names


def annotation_nodes(tree: ast.Module) -> set[int]:
    """ids of every node inside a type annotation, where an enum type stands for itself."""
    roots = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            roots.append(node.returns)
    return {id(inner) for root in roots for inner in ast.walk(root)}


def qt6_problems(source: str, classes: set[str]) -> list[str]:
    """``line: what`` for each construct in ``source`` that Qt 6 rejects."""
    tree = ast.parse(source)
    annotations = annotation_nodes(tree)
    allowed = set()  # Attribute nodes that are scoped further or called
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            allowed.add(id(node.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            allowed.add(id(node.func))
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.append(node.module or "")
            problems += [
                f"{node.lineno}: imports {module}: use qgis.PyQt"
                for module in modules
                if module.split(".")[0] in BINDINGS
            ]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr == "exec_":
            problems.append(f"{node.lineno}: exec_(): use exec()")
        owner = node.value.id if isinstance(node.value, ast.Name) else None
        if (
            owner in classes
            and node.attr[0].isupper()
            and id(node) not in allowed | annotations
            and node.attr not in CONSTANTS.get(owner, ())
        ):
            problems.append(f"{node.lineno}: {owner}.{node.attr}: scope it by its enum type")
    return sorted(problems, key=lambda problem: int(problem.split(":")[0]))


@pytest.fixture(scope="module")
def classes() -> set[str]:
    return qt_classes([ast.parse(path.read_text()) for path in SOURCES])


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PLUGIN_ROOT)))
def test_source_runs_on_qt6(path: Path, classes: set[str]) -> None:
    assert qt6_problems(path.read_text(), classes) == []


def test_metadata_declares_qt6() -> None:
    metadata = configparser.ConfigParser()
    metadata.read(METADATA)
    assert metadata.getboolean("general", "supportsQt6", fallback=False), METADATA


BAD = {
    "import PyQt5.QtCore": "imports PyQt5.QtCore",
    "from PyQt6.QtWidgets import QDialog": "imports PyQt6.QtWidgets",
    "import sip": "imports sip",
    "dialog.exec_()": "exec_()",
    "label.setAlignment(Qt.AlignLeft)": "Qt.AlignLeft",
    "if event.type() == QEvent.MouseButtonPress: pass": "QEvent.MouseButtonPress",
    "answer = QMessageBox.Yes": "QMessageBox.Yes",
    "QgsRubberBand(canvas, QgsWkbTypes.PolygonGeometry)": "QgsWkbTypes.PolygonGeometry",
    "band.setIcon(QgsRubberBand.ICON_CIRCLE)": "QgsRubberBand.ICON_CIRCLE",
    "from qgis.core import QgsTask\nclass Task(QgsTask): pass\nTask.Complete": "Task.Complete",
    "field = QgsField('x', QVariant.Double)": "QVariant.Double",
}
GOOD = [
    "from qgis.PyQt.QtCore import Qt",
    "from qgis.PyQt import sip",
    "dialog.exec()",
    "label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)",
    "number = QgsProcessingParameterNumber.Type.Double",
    "modifiers = Qt.KeyboardModifiers(Qt.KeyboardModifier.NoModifier)",
    "options = QgsVectorLayer.LayerOptions(False)",
    "def f(level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> Qt.MouseButton: pass",
    "version = Qgis.QGIS_VERSION_INT",
    "size = Path.HOME",  # not a Qt class
]
CLASSES = {"Qt", "QEvent", "QMessageBox", "QgsWkbTypes", "QgsRubberBand", "QgsTask", "QVariant"}
CLASSES |= {"Qgis", "QgsProcessingParameterNumber", "QgsVectorLayer"}


@pytest.mark.parametrize("source", BAD)
def test_rule_flags_what_qt6_rejects(source: str) -> None:
    classes = qt_classes([ast.parse(source)]) | CLASSES
    (problem,) = qt6_problems(source, classes)
    assert BAD[source] in problem


@pytest.mark.parametrize("source", GOOD)
def test_rule_passes_scoped_forms(source: str) -> None:
    assert qt6_problems(source, CLASSES) == []
