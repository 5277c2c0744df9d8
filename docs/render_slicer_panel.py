"""Render the Slicer panel (LegSegNet/Resources/UI/LegSegNet.ui) offscreen to docs/slicer-panel.png, annotated.

Without Slicer, its own widgets (node selectors, collapsible sections) load as plain QWidgets; this script puts
stand-ins in them and fills the tables with the core's statistics of a phantom, so the picture shows what a
user sees after a run. Run: QT_QPA_PLATFORM=offscreen python docs/render_slicer_panel.py
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LegSegNet"))
from LegSegNetLib.engines import make_engine  # noqa: E402
from LegSegNetLib.phantom import make_phantom  # noqa: E402
from LegSegNetLib.statistics import METRICS  # noqa: E402
from LegSegNetLib.tissues import TISSUES  # noqa: E402
from LegSegNetLib.volumes import AxialView  # noqa: E402

# Callouts: widget name → number; the README explains each number.
CALLOUTS = ["inputVolumeSelector", "outputSegmentationSelector", "engineComboBox", "sliceRangeLineEdit",
            "splitLegsCheckBox", "modelFolderPathLineEdit", "applyButton", "cancelButton", "progressBar",
            "statisticsTableView", "metricsTableView", "updateStatisticsButton", "exportButton",
            "segmentEditorButton", "reviewListWidget", "midthighLabel"]


def phantom_results():
    """The phantom's statistics, and its review list and mid-thigh rows (metal planted in slice 9)."""
    import SimpleITK as sitk
    from LegSegNetLib import midthigh, qc
    from LegSegNetLib.pipeline import canonical_statistics
    from LegSegNetLib.sides import split_legs
    ct = make_phantom(seed=0, shape=(16, 192, 256)).ct
    view = AxialView.of(ct)
    hu = view.to_canonical(sitk.GetArrayViewFromImage(ct)).copy()
    hu[9, 90:96, 60:70] = 3200
    labels = make_engine("threshold")[0].segment(hu, view.spacing)
    sides = split_legs(labels > 0, view, ct)
    positions = view.positions(ct, 0)
    quality = {"review": [{"rank": r["review_rank"], "slice": r["slice"], "position_mm": r["position_mm"],
                           "flags": r["flags"], "reasons": r["reasons"]}
                          for r in sorted((r for r in qc.slice_qc(hu, labels, sides, view.spacing, positions)
                                           if r["flags"]), key=lambda r: r["review_rank"])],
               "midthigh": midthigh.measure(hu, labels, sides, view.spacing, positions)}
    return canonical_statistics(ct, view, hu, labels), quality


def fill(view, header, rows):
    model = QtGui.QStandardItemModel(len(rows), len(header))
    model.setHorizontalHeaderLabels(header)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            model.setItem(r, c, QtGui.QStandardItem(value if isinstance(value, str) else f"{value:.4g}"))
    view.setModel(model)
    view.verticalHeader().hide()
    view.resizeColumnsToContents()


def stand_in(parent, widget):
    layout = QtWidgets.QHBoxLayout(parent)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(widget)


def build():
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    file = QtCore.QFile(str(ROOT / "LegSegNet" / "Resources" / "UI" / "LegSegNet.ui"))
    file.open(QtCore.QFile.ReadOnly)
    panel = QUiLoader().load(file)
    find = lambda name: panel.findChild(QtWidgets.QWidget, name)   # noqa: E731
    for name, text in (("inputVolumeSelector", "leg CT"), ("outputSegmentationSelector", "leg CT legs")):
        combo = QtWidgets.QComboBox()
        combo.addItem(text)
        stand_in(find(name), combo)
    path = QtWidgets.QLineEdit()
    path.setPlaceholderText("(installed LegSegNet weights)")
    stand_in(find("modelFolderPathLineEdit"), path)
    for combo, items in ((find("engineComboBox"), ["auto", "network", "classical"]),
                         (find("deviceComboBox"), ["auto", "cpu", "cuda"])):
        combo.addItems(items)
    stats, quality = phantom_results()
    fill(find("statisticsTableView"), ["Segment", "Voxel count", "Volume cm3", "Mean", "Standard deviation", "Median"],
         [[t.short] + [stats.row(t.short, "both")[k] for k in ("voxel_count", "volume_cm3", "mean_hu", "std_hu",
                                                                "median_hu")] for t in TISSUES])
    fill(find("metricsTableView"), ["Leg"] + [name for name, *_ in METRICS[:5]],
         [[m["leg"]] + [m[name] for name, *_ in METRICS[:5]] for m in stats.metrics])
    bar = find("progressBar")
    bar.setMaximum(16)
    bar.setValue(16)
    for name in ("updateStatisticsButton", "exportButton", "segmentEditorButton", "applyButton"):
        find(name).setEnabled(True)
    find("statusLabel").setText("Done: leg CT legs, classical engine (no network weights installed; using the "
                                "classical engine (run 'legsegnet weights download' ...)).")
    from LegSegNetLib.panel import midthigh_text, review_items
    find("reviewListWidget").addItems(review_items(quality))
    find("midthighLabel").setText(midthigh_text(quality))
    ct = make_phantom(seed=0, shape=(16, 192, 256)).ct      # the phantom of the tables
    positions = AxialView.of(ct).positions(ct, 0)
    find("sliceRangeInfoLabel").setText(f"all {len(positions)} slices (S {positions[0]:.1f} to {positions[-1]:.1f} mm)")
    panel.resize(560, 940)
    panel.show()
    app.processEvents()
    return app, panel, find


def annotate(panel, find):
    image = panel.grab().toImage()
    margin = 36
    out = QtGui.QImage(image.width() + margin, image.height(), QtGui.QImage.Format_ARGB32)
    out.fill(QtGui.QColor("white"))
    painter = QtGui.QPainter(out)
    painter.setRenderHint(QtGui.QPainter.Antialiasing)
    painter.drawImage(margin, 0, image)
    font = painter.font()
    font.setBold(True)
    painter.setFont(font)
    for number, name in enumerate(CALLOUTS, start=1):
        widget = find(name)
        if not widget.isVisible():
            continue
        top_left = widget.mapTo(panel, QtCore.QPoint(0, 0))
        y = top_left.y() + min(widget.height(), 28) // 2
        inline = name in ("cancelButton", "exportButton", "segmentEditorButton")   # beside another callout
        x = margin + top_left.x() + 14 if inline else 32
        painter.setPen(QtGui.QPen(QtGui.QColor(200, 30, 30), 2))
        painter.setBrush(QtGui.QColor(200, 30, 30))
        centre = QtCore.QPoint(x - 14, y)
        painter.drawEllipse(centre, 11, 11)
        painter.setPen(QtGui.QColor("white"))
        painter.drawText(QtCore.QRect(centre.x() - 11, centre.y() - 11, 22, 22), QtCore.Qt.AlignCenter, str(number))
    painter.end()
    return out


def main():
    _app, panel, find = build()
    out = annotate(panel, find)
    path = ROOT / "docs" / "slicer-panel.png"
    assert out.save(str(path))
    print(path)


if __name__ == "__main__":
    main()
