"""The panel (.ui) against the code that drives it: names, classes, members and parameter bindings.

Qt classes are checked against the real Qt meta-objects (PySide6); Slicer's own widgets against their base
class plus the members of Slicer's API the module uses (listed below, from Slicer's headers)."""
import ast
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6 import QtCore, QtWidgets  # noqa: E402  (after the platform choice)

MODULE = Path(__file__).resolve().parents[1]
UI_FILE = MODULE / "Resources" / "UI" / "LegSegNet.ui"
MODULE_FILE = MODULE / "LegSegNet.py"

# Members of Slicer/CTK widgets used from Python that their Qt base class lacks (qMRMLTableView.h, qMRMLNodeComboBox.h,
# ctkCollapsibleButton.h, ctkPathLineEdit.h).
SLICER_MEMBERS = {
    "qMRMLTableView": {"setMRMLTableNode", "mrmlTableNode", "setMRMLScene"},
    "qMRMLNodeComboBox": {"currentNode", "setCurrentNode", "currentNodeChanged", "setMRMLScene", "nodeTypes"},
    "ctkCollapsibleButton": {"collapsed", "text"},
    "ctkPathLineEdit": {"currentPath", "filters", "currentPathChanged"},
}
# Which widget class the parameter-node wrapper connects to which annotated type (Slicer's guiConnectors.py).
CONNECTABLE = {
    "QCheckBox": {"bool"}, "QLineEdit": {"str"}, "QComboBox": {"Choice"},
    "qMRMLNodeComboBox": {"node"}, "ctkPathLineEdit": {"pathlib.Path"},
}


def ui_widgets():
    """name → (class, Qt base class) for every widget in the .ui."""
    root = ET.parse(UI_FILE).getroot()
    extends = {c.findtext("class"): c.findtext("extends") for c in root.iter("customwidget")}
    widgets = {}
    for widget in root.iter("widget"):
        cls = widget.get("class")
        base = cls
        while base in extends:
            base = extends[base]
        params = [p.findtext("string") for p in widget.findall("property") if p.get("name") == "SlicerParameterName"]
        widgets[widget.get("name")] = (cls, base, params[0] if params else None)
    return widgets


def ui_uses():
    """name → members used on self.ui.<name> in LegSegNet.py (found in its syntax tree)."""
    uses = {}
    for node in ast.walk(ast.parse(MODULE_FILE.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self":
            uses.setdefault(node.attr, set())
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and isinstance(node.value.value, ast.Attribute) and node.value.value.attr == "ui":
            uses.setdefault(node.value.attr, set()).add(node.attr)
    return uses


def has_member(qt_class, member):
    """A Python method, a Qt property (PythonQt exposes those as attributes), signal or slot of the class."""
    meta = qt_class.staticMetaObject
    if meta.indexOfProperty(member) >= 0 or hasattr(qt_class, member):
        return True
    return any(bytes(meta.method(i).name()).decode() == member for i in range(meta.methodCount()))


def test_every_ui_name_in_the_module_exists_with_a_matching_class():
    widgets, uses = ui_widgets(), ui_uses()
    assert uses, "LegSegNet.py uses no self.ui.<name>: the test would check nothing"
    for name, members in uses.items():
        assert name in widgets, f"self.ui.{name} is not in {UI_FILE.name}"
        cls, base, _ = widgets[name]
        qt_class = getattr(QtWidgets, base)
        for member in members:
            assert has_member(qt_class, member) or member in SLICER_MEMBERS.get(cls, ()), \
                f"self.ui.{name}.{member}: {cls} has no such member"


def parameter_annotations():
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LegSegNetParameterNode")
    kinds = {}
    for item in cls.body:
        if isinstance(item, ast.AnnAssign):
            text = ast.unparse(item.annotation)
            kinds[item.target.id] = ("Choice" if "Choice" in text else "node" if text.startswith("vtkMRML")
                                     else text)
    return kinds


def test_parameter_bindings_name_real_parameters_with_connectable_widgets():
    params = parameter_annotations()
    bound = {p: (cls, base) for _name, (cls, base, p) in ui_widgets().items() if p}
    assert set(bound) <= set(params), f"unknown parameters in the .ui: {set(bound) - set(params)}"
    for param, (cls, _base) in bound.items():
        assert params[param] in CONNECTABLE[cls], f"{param}: {cls} cannot hold a {params[param]}"
    assert {"inputVolume", "outputSegmentation", "engine", "splitLegs", "slices", "device"} <= set(bound)


def test_model_folder_is_a_string_bound_by_hand():
    """Slicer's Path connector writes str(Path('')) == '.' into the field; the module keeps a str and shows ''."""
    assert parameter_annotations()["modelFolder"] == "str"
    assert "modelFolder" not in {p for _cls, _base, p in ui_widgets().values() if p}
    assert "currentPathChanged" in ui_uses()["modelFolderPathLineEdit"]
    assert "currentPath" in ui_uses()["modelFolderPathLineEdit"]


@pytest.fixture(scope="module")
def loaded():
    from PySide6.QtUiTools import QUiLoader
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    loader = QUiLoader()
    file = QtCore.QFile(str(UI_FILE))
    assert file.open(QtCore.QFile.ReadOnly)
    widget = loader.load(file)
    file.close()
    assert widget is not None, loader.errorString()
    return app, widget


def test_ui_loads_offscreen_with_every_widget(loaded):
    _app, widget = loaded
    for name, (_cls, base, _param) in ui_widgets().items():
        if name == widget.objectName():
            continue
        child = widget.findChild(QtWidgets.QWidget, name)
        assert child is not None, name
        assert isinstance(child, getattr(QtWidgets, base)), f"{name}: {type(child).__name__} is not a {base}"
    assert widget.findChild(QtWidgets.QPushButton, "applyButton").text() == "Segment legs"
    assert not widget.findChild(QtWidgets.QPushButton, "applyButton").isEnabled()   # until an input is chosen
    for name in ("startHereButton", "endHereButton"):      # need an input volume too
        assert not widget.findChild(QtWidgets.QPushButton, name).isEnabled()
    assert widget.findChild(QtWidgets.QPushButton, "downloadWeightsButton").text().startswith("Download LegSegNet weights")
