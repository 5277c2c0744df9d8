"""Table nodes and export for the MRML glue: statistics tables and the review list (read from the CSVs a
background process wrote, or recomputed in-process for scripts), the statistics worker that process runs, and
export of the segmentation (as the user sees it; DICOM SEG of the tissues).

No helper node is ever added to the scene: exports and statistics leave the scene's node list unchanged.
Run as `python -m LegSegNetLib.mrml_tables CT LABELS OUT [SIDES]` it is the worker of Update statistics.
"""
import csv
import json
import logging
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .mrml import ENGINE_ATTRIBUTE, LPS_TO_RAS, edited_since_produced, ijk_to_ras, merged_labelmap, \
    segmentation_to_labels, spec_of_segment, volume_to_image
from .pipeline import canonical_statistics, case_tables
from .pipeline import write_tables as write_case_tables
from .statistics import METRICS, STAT_COLUMNS, Statistics
from .tissues import LEGS, TISSUES, segment_name
from .volumes import AxialView, image_from_matrix, read_ct

log = logging.getLogger(__name__)
QUALITY_ATTRIBUTE = "LegSegNet.Quality"     # the review list and mid-thigh rows of the segmentation's last tables

# Column names Slicer's Segment Statistics gives these keys (SegmentStatisticsLogic.exportToTable): the segment
# table uses them, so it reads like the Segment Statistics module's own (same definitions, tested against it).
SEGMENT_STATISTICS_NAMES = {
    "LabelmapSegmentStatisticsPlugin.voxel_count": "Voxel count",
    "LabelmapSegmentStatisticsPlugin.volume_cm3": "Volume cm3",
    "ScalarVolumeSegmentStatisticsPlugin.mean": "Mean",
    "ScalarVolumeSegmentStatisticsPlugin.stdev": "Standard deviation",
    "ScalarVolumeSegmentStatisticsPlugin.median": "Median",
}
SEGMENT_COLUMN = "Segment"


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


def write_tables(ct_path, labels_path, out, sides_path=None):
    """The worker of Update statistics (in a background process): the tables, qc.csv and midthigh.csv of
    labels (and the user's left/right segments, else the core's split) on the CT, as `segment` writes them."""
    ct = read_ct(ct_path)
    view = AxialView.of(ct.image)
    hu = view.to_canonical(ct.array)
    labels = view.to_canonical(_read_array(labels_path, ct.image))
    sides = view.to_canonical(_read_array(sides_path, ct.image)) if sides_path else None
    Path(out).mkdir(parents=True, exist_ok=True)
    write_case_tables(out, *case_tables(ct, view, hu, labels, sides))


def _read_array(path, reference):
    image = sitk.ReadImage(str(path))
    if image.GetSize() != reference.GetSize():
        raise RuntimeError(f"{path}: not on the CT's grid")
    return sitk.GetArrayFromImage(image).astype(np.uint8)


# ---------------------------------------------------------------- review list and mid-thigh level
def read_quality(folder):
    """What the panel shows besides the tables, from a run's qc.csv and midthigh.csv: the flagged slices ranked
    (review rank 1 first) and the mid-thigh rows per leg."""
    folder = Path(folder)
    review = [{"rank": int(r["review_rank"]), "slice": int(r["slice"]), "position_mm": float(r["position_mm"]),
               "flags": r["flags"], "reasons": r["reasons"]}
              for r in _read_csv(folder / "qc.csv") if r["review_rank"]]
    return {"review": sorted(review, key=lambda r: r["rank"]), "midthigh": _read_csv(folder / "midthigh.csv")}


def store_quality(segmentation_node, quality):
    """Keep the review list with the segmentation (saved with the scene; not part of the edit fingerprint)."""
    segmentation_node.SetAttribute(QUALITY_ATTRIBUTE, json.dumps(quality))


def quality_of(segmentation_node):
    """The review list and mid-thigh rows stored with the segmentation (empty when it has none)."""
    text = segmentation_node.GetAttribute(QUALITY_ATTRIBUTE) if segmentation_node is not None else None
    return json.loads(text) if text else {"review": [], "midthigh": []}


def table_nodes(scene, name, segment_table=None, metrics_table=None):
    """The two table nodes, new ones ('<name> statistics', '<name> metrics') where missing."""
    new = lambda what: scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} {what}")  # noqa: E731
    return segment_table or new("statistics"), metrics_table or new("metrics")


# ---------------------------------------------------------------- export
def export_all(folder, volume_node, segmentation_node, table_nodes, dicom_files=None):
    """Everything the panel's Export writes: the tables as CSV, the segmentation as `.seg.nrrd` and as a label
    NIfTI with its colour table, and with the CT's DICOM files a DICOM SEG `<name>_SEG.dcm`. Returns the paths."""
    base = Path(folder) / segmentation_node.GetName().replace(" ", "_")
    paths = export_tables_csv([t for t in table_nodes if t is not None], folder)
    paths.append(export_seg_nrrd(segmentation_node, f"{base}.seg.nrrd"))
    paths += export_labelmap(volume_node, segmentation_node, f"{base}_labels.nii.gz")
    if dicom_files is not None:
        paths.append(export_dicom_seg(volume_node, segmentation_node, dicom_files, f"{base}_SEG.dcm"))
    return paths


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


def export_dicom_seg(volume_node, segmentation_node, ct_files, path):
    """A DICOM SEG of the segmentation as it is now (edits included) referencing the CT's DICOM files: one
    segment per tissue with the tissue table's codes; left and right segments are merged into their tissue and
    segments that are not tissues are left out (logged), as a DICOM SEG segment needs a tissue code."""
    from .dicom_seg import write_dicom_seg
    _check_dicom_sources(volume_node, ct_files)
    labels, _sides = segmentation_to_labels(segmentation_node, volume_node)
    engine = segmentation_node.GetAttribute(ENGINE_ATTRIBUTE) or "unknown"
    write_dicom_seg(labels, volume_to_image(volume_node), ct_files, path, engine,
                    edited=edited_since_produced(segmentation_node))
    return Path(path)


def _check_dicom_sources(volume_node, ct_files):
    """The files must be the instances the volume was loaded from (Slicer's DICOM.instanceUIDs), where it says."""
    import pydicom
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids:
        return
    try:
        found = [pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
                 for f in ct_files]
    except (OSError, AttributeError, pydicom.errors.InvalidDicomError) as error:
        raise InputError(f"cannot read the CT's DICOM files: {error}") from None
    if sorted(found) != sorted(uids):
        raise InputError(f"the DICOM files given are not the {len(uids)} instances '{volume_node.GetName()}' was "
                         "loaded from")


def main(argv):
    """CT LABELS OUT [SIDES]; a fault in the input is one line and exit 2, as from the CLI."""
    try:
        write_tables(*argv[:3], *argv[3:4])
    except InputError as error:
        print(f"legsegnet: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
