"""Table nodes and export for the MRML glue: statistics tables (from the background run's CSVs, or recomputed
after edits), the Segment Statistics settings, and export of the segmentation as the user sees it.

No helper node is ever added to the scene: exports and statistics leave the scene's node list unchanged.
"""
import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .mrml import LPS_TO_RAS, ijk_to_ras, merged_labelmap, segment_name, segmentation_to_labels, spec_of_segment, \
    volume_to_image
from .pipeline import canonical_statistics
from .statistics import METRICS, STAT_COLUMNS, Statistics
from .tissues import LEGS, TISSUES
from .volumes import AxialView, image_from_matrix

# Column names Segment Statistics gives the keys we use (SegmentStatisticsLogic.exportToTable); the headless
# table uses them so both paths produce the same table.
SEGMENT_STATISTICS_NAMES = {
    "LabelmapSegmentStatisticsPlugin.voxel_count": "Voxel count",
    "LabelmapSegmentStatisticsPlugin.volume_cm3": "Volume cm3",
    "ScalarVolumeSegmentStatisticsPlugin.mean": "Mean",
    "ScalarVolumeSegmentStatisticsPlugin.stdev": "Standard deviation",
    "ScalarVolumeSegmentStatisticsPlugin.median": "Median",
}
SEGMENT_COLUMN = "Segment"


# ---------------------------------------------------------------- Segment Statistics (inside Slicer)
def configure_segment_statistics(parameter_node, plugins, segmentation_node, volume_node):
    """Settings for Slicer's SegmentStatisticsLogic in a parameter node of our own (the module's shared one is left
    alone). Slicer reads `<plugin class name>.enabled` and `<plugin class name>.<key>.enabled`
    (SegmentStatistics.py, updateStatisticsForSegment and SegmentStatisticsPluginBase.getRequestedKeys); only the
    keys of SEGMENT_STATISTICS_NAMES are on, every other plugin (closed surface, ...) is off."""
    wanted = {}
    for long_key in SEGMENT_STATISTICS_NAMES:
        plugin_name, key = long_key.split(".")
        wanted.setdefault(plugin_name, set()).add(key)
    parameter_node.SetParameter("Segmentation", segmentation_node.GetID())
    parameter_node.SetParameter("ScalarVolume", volume_node.GetID())
    parameter_node.SetParameter("visibleSegmentsOnly", "False")
    for plugin in plugins:
        plugin_name = plugin.__class__.__name__
        parameter_node.SetParameter(f"{plugin_name}.enabled", str(plugin_name in wanted))
        for key in plugin.keys:
            parameter_node.SetParameter(f"{plugin_name}.{key}.enabled", str(key in wanted.get(plugin_name, ())))
    return parameter_node


# ---------------------------------------------------------------- statistics
def core_statistics(image, labels, sides=None):
    """The core's statistics for labels (and optional leg sides) (k, j, i) on a SimpleITK CT image's grid."""
    view = AxialView.of(image)
    return canonical_statistics(image, view, view.to_canonical(sitk.GetArrayViewFromImage(image)),
                                view.to_canonical(labels), None if sides is None else view.to_canonical(sides))


def segmentation_statistics(volume_node, segmentation_node):
    """(Statistics, specs of the segments) for the current segmentation content."""
    image = volume_to_image(volume_node)
    labels, sides = segmentation_to_labels(segmentation_node, volume_node)
    return core_statistics(image, labels, sides), tissue_specs(segmentation_node)


def tissue_specs(segmentation_node):
    """(tissue, side) of each segment that stands for a tissue, in the segmentation's order."""
    segmentation = segmentation_node.GetSegmentation()
    return [s for s in (spec_of_segment(segmentation.GetSegment(i)) for i in segmentation.GetSegmentIDs())
            if s is not None]


def read_run_statistics(folder):
    """The Statistics a background run wrote (statistics.csv, metrics.csv): read back, not recomputed, so nothing
    heavy runs on the GUI thread after a run."""
    folder = Path(folder)
    kinds = {"tissue": str, "leg": str, "label": int, "voxel_count": int}
    rows = [{k: kinds.get(k, float)(v) for k, v in row.items()} for row in _read_csv(folder / "statistics.csv")]
    metrics = [{k: str(v) if k == "leg" else float(v) for k, v in row.items()} for row in _read_csv(folder / "metrics.csv")]
    expected = {(t.short, leg) for t in TISSUES for leg in LEGS}
    if {(r["tissue"], r["leg"]) for r in rows} != expected or {m["leg"] for m in metrics} != set(LEGS):
        raise RuntimeError(f"{folder}: the run's statistics.csv or metrics.csv is incomplete")
    return Statistics(rows, [], metrics)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def fill_tables(stats, segmentation_node, segment_table, metrics_table):
    """Both tables from statistics already computed (a run's CSVs): one row per tissue segment, one per leg."""
    if segment_table is not None:
        fill_segment_table(segment_table, stats, tissue_specs(segmentation_node))
    if metrics_table is not None:
        fill_metrics_table(metrics_table, stats)


def fill_segment_table(table_node, stats, specs):
    """One row per segment with Segment Statistics' columns, filled from the core's statistics."""
    columns = [(SEGMENT_COLUMN, "string", "", "segment name")]
    columns += [(SEGMENT_STATISTICS_NAMES[key], "int" if name == "voxel_count" else "double", unit, description)
                for name, key, unit, description in STAT_COLUMNS]
    rows = []
    for spec in specs:
        row = stats.row(spec.tissue.short, spec.side or "both")
        rows.append([segment_name(spec.tissue, spec.side)] + [row[name] for name, *_ in STAT_COLUMNS])
    _fill_table(table_node, columns, rows)


def metrics_columns():
    columns = [("Leg", "string", "", "both legs, left leg or right leg")]
    for tissue in TISSUES:
        columns.append((f"{tissue.short} volume cm3", "double", "cm3", f"{tissue.name}: voxel count × voxel volume"))
    for tissue in TISSUES:
        columns.append((f"{tissue.short} mean HU", "double", "HU", f"{tissue.name}: mean CT value"))
    columns += [(name, "double", unit, description) for name, unit, description in METRICS]
    return columns


def fill_metrics_table(table_node, stats):
    """One row per leg: per-tissue volume and mean HU, then the derived metrics."""
    rows = []
    for leg in LEGS:
        per_tissue = [stats.row(t.short, leg) for t in TISSUES]
        metrics = next(m for m in stats.metrics if m["leg"] == leg)
        rows.append([leg] + [r["volume_cm3"] for r in per_tissue] + [r["mean_hu"] for r in per_tissue]
                    + [metrics[name] for name, *_ in METRICS])
    _fill_table(table_node, metrics_columns(), rows)


def _fill_table(table_node, columns, rows):
    import vtk
    arrays = {"string": vtk.vtkStringArray, "int": vtk.vtkLongArray, "double": vtk.vtkDoubleArray}
    modified = table_node.StartModify()
    table_node.RemoveAllColumns()
    for name, kind, unit, description in columns:
        array = arrays[kind]()
        array.SetName(name)
        table_node.AddColumn(array)
        table_node.SetColumnUnitLabel(name, unit)
        table_node.SetColumnDescription(name, description)
    table = table_node.GetTable()
    for values in rows:
        index = table_node.AddEmptyRow()
        for column, value in enumerate(values):
            table.GetColumn(column).SetVariantValue(index, vtk.vtkVariant(value))
    table_node.Modified()
    table_node.EndModify(modified)


def table_rows(table_node):
    """The table as a list of dicts (column name → value), for tests and CSV export."""
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    return [{name: table.GetValue(r, c).ToString() if table.GetColumn(c).IsA("vtkStringArray")
             else table.GetValue(r, c).ToDouble() for c, name in enumerate(names)}
            for r in range(table.GetNumberOfRows())]


def update_statistics(volume_node, segmentation_node, segment_table, metrics_table):
    """Recompute both tables from the segmentation's current content (after manual edits)."""
    stats, specs = segmentation_statistics(volume_node, segmentation_node)
    if segment_table is not None:
        fill_segment_table(segment_table, stats, specs)
    fill_metrics_table(metrics_table, stats)
    return stats




def table_nodes(scene, name, segment_table=None, metrics_table=None):
    """The two table nodes, new ones ('<name> statistics', '<name> metrics') where missing."""
    new = lambda what: scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} {what}")  # noqa: E731
    return segment_table or new("statistics"), metrics_table or new("metrics")


# ---------------------------------------------------------------- export
def export_all(folder, volume_node, segmentation_node, table_nodes):
    """Everything the panel's Export writes: the tables as CSV, the segmentation as `.seg.nrrd` and as a label
    NIfTI with its colour table. Returns the paths."""
    base = Path(folder) / segmentation_node.GetName().replace(" ", "_")
    paths = export_tables_csv([t for t in table_nodes if t is not None], folder)
    paths.append(export_seg_nrrd(segmentation_node, f"{base}.seg.nrrd"))
    return paths + export_labelmap(volume_node, segmentation_node, f"{base}_labels.nii.gz")


def export_tables_csv(table_nodes, folder):
    """One CSV per table (named after the node), values as shown. Returns the paths."""
    paths = []
    for node in table_nodes:
        rows = table_rows(node)
        path = Path(folder) / f"{node.GetName()}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)
        paths.append(path)
    return paths


def export_seg_nrrd(segmentation_node, path):
    """The segmentation as the user sees it (every segment, its name, colour, terminology, left/right), written
    by Slicer's own segmentation writer with a storage node outside the scene."""
    import slicer
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(segmentation_node):
        raise RuntimeError(f"cannot write {path}")
    return Path(path)


def export_labelmap(volume_node, segmentation_node, path):
    """A label image on the CT grid with one value per segment (1..n in the segmentation's order; later segments
    win where they overlap) and beside it `<name>.csv`, a colour table in Slicer's CSV format (LabelValue, Name,
    Color_R/G/B/A). Returns both paths."""
    segmentation = segmentation_node.GetSegmentation()
    ids = list(segmentation.GetSegmentIDs())
    values = merged_labelmap(segmentation_node, volume_node, ids).astype(np.uint8 if len(ids) < 256 else np.uint16)
    image = image_from_matrix(values, LPS_TO_RAS @ ijk_to_ras(volume_node))
    sitk.WriteImage(image, str(path), useCompression=True)
    table = Path(str(path).removesuffix(".gz").rsplit(".", 1)[0] + ".csv")
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["LabelValue", "Name", "Color_R", "Color_G", "Color_B", "Color_A"])
        for value, segment_id in enumerate(ids, start=1):
            segment = segmentation.GetSegment(segment_id)
            writer.writerow([value, segment.GetName(), *(round(255 * c) for c in segment.GetColor()), 255])
    return [Path(path), table]
