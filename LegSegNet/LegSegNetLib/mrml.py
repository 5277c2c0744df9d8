"""MRML glue: volume nodes, segmentation nodes, table nodes and the background run.

Needs only MRML (inside Slicer, or the `slicer-core` wheel headless); no Qt, no Slicer application. `slicer` and
`vtk` are imported inside the functions so that `import LegSegNetLib` never needs them.

Coordinates: SimpleITK images (the core) are in LPS, MRML nodes in RAS; IJK→RAS = diag(-1, -1, 1) · IJK→LPS.
"""
import hashlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import Cancelled, InputError
from .sides import split_legs
from .pipeline import canonical_statistics
from .statistics import METRICS, STAT_COLUMNS
from .tissues import LEGS, SIDE_LABELS, SIDE_MODIFIERS, TERMINOLOGY_CONTEXT, TISSUES, terminology_entry, \
    tissue_for_name
from .volumes import AxialView, ijk_to_lps, image_from_matrix, validate_ct

log = logging.getLogger(__name__)

MODULE_DIR = Path(__file__).resolve().parent.parent          # LegSegNet/ (holds LegSegNetLib and Resources)
TERMINOLOGY_FILE = MODULE_DIR / "Resources" / "SegmentationCategoryTypeModifier-LegSegNet.term.json"
FINGERPRINT_ATTRIBUTE = "LegSegNet.Fingerprint"   # content hash when LegSegNet last wrote the segmentation
ENGINE_ATTRIBUTE = "LegSegNet.Engine"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

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


class EditedOutputError(InputError):
    """The chosen output segmentation was changed since LegSegNet produced it (or was not produced by it)."""


def _slicer():
    import slicer      # Slicer's own module, or the slicer-core wheel
    return slicer


# ---------------------------------------------------------------- terminology
def terminology_document():
    """Our terminology context (Slicer's .term.json schema), generated from the tissue table."""
    categories = {}
    for tissue in TISSUES:
        category = categories.setdefault(tissue.category.value, {
            **_code(tissue.category),   # anatomy selectable where a tissue of the category has a region
            "showAnatomy": any(t.region.value for t in TISSUES if t.category == tissue.category), "Type": []})
        modifiers = [{**_code(code), "recommendedDisplayRGBValue": list(tissue.color),
                      "3dSlicerLabel": segment_name(tissue, side)} for side, code in SIDE_MODIFIERS.items()]
        category["Type"].append({**_code(tissue.type), "recommendedDisplayRGBValue": list(tissue.color),
                                 "3dSlicerLabel": segment_name(tissue), "Modifier": modifiers})
    return {"SegmentationCategoryTypeContextName": TERMINOLOGY_CONTEXT,
            "@schema": "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/segment-context-schema.json#",
            "SegmentationCodes": {"Category": list(categories.values())}}


def _code(code):
    return {"CodingSchemeDesignator": code.scheme, "CodeValue": code.value, "CodeMeaning": code.meaning}


def write_terminology(path=TERMINOLOGY_FILE):
    """Regenerate the shipped .term.json from the tissue table."""
    Path(path).write_text(json.dumps(terminology_document(), indent=2) + "\n", encoding="utf-8")


def load_terminology(terminologies_logic, path=TERMINOLOGY_FILE):
    """Load our context into Slicer's terminologies logic; returns the context name."""
    name = terminologies_logic.LoadTerminologyFromFile(os.fspath(path))
    if name != TERMINOLOGY_CONTEXT:
        raise RuntimeError(f"{path}: loaded as '{name}', expected '{TERMINOLOGY_CONTEXT}'")
    return name


def segment_name(tissue, side=None):
    return f"{tissue.short} {side}" if side else tissue.short


# ---------------------------------------------------------------- volumes
def ijk_to_ras(volume_node):
    import vtk
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_array(volume_node):
    """Voxel values (k, j, i) as a numpy view of the node's image data."""
    from vtk.util.numpy_support import vtk_to_numpy
    image = volume_node.GetImageData()
    if image is None:
        raise InputError(f"volume '{volume_node.GetName()}' has no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"volume '{volume_node.GetName()}' is not a scalar volume")
    dims = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])


def volume_to_image(volume_node):
    """SimpleITK image (LPS geometry) holding a copy of the node's voxels. The node's own IJK→RAS is used;
    parent transforms are not applied (the segmentation is placed under the same transform)."""
    return image_from_matrix(np.array(volume_array(volume_node)), LPS_TO_RAS @ ijk_to_ras(volume_node))


def image_to_volume(image, scene, name="CT"):
    """A new scalar volume node in the scene from a SimpleITK image (for tests and the self-test)."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk
    array = sitk.GetArrayFromImage(image)
    data = vtk.vtkImageData()
    data.SetDimensions(image.GetSize())
    data.GetPointData().SetScalars(numpy_to_vtk(array.ravel(), deep=True))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetAndObserveImageData(data)
    ras = LPS_TO_RAS @ ijk_to_lps(image)
    node.SetIJKToRASMatrix(_vtk_matrix(ras))
    node.CreateDefaultDisplayNodes()
    return node


def _vtk_matrix(array):
    import vtk
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


# ---------------------------------------------------------------- segmentations
@dataclass(frozen=True)
class SegmentSpec:
    tissue: object
    side: str = None      # "left", "right" or None (both legs)

    @property
    def segment_id(self):
        return segment_name(self.tissue, self.side).replace(" ", "_")


def segment_specs(split):
    return [SegmentSpec(t, side) for t in TISSUES for side in (("right", "left") if split else (None,))]


def labels_to_segmentation(labels, volume_node, segmentation_node, sides=None, engine=None):
    """Fill segmentation_node with one segment per tissue (per tissue and leg if `sides` is given) from
    labels (k, j, i) on the volume's grid. The previous content is kept for undo and replaced."""
    slicer = _slicer()
    specs = segment_specs(sides is not None)
    lut = np.zeros((len(TISSUES) + 1) * 3, np.uint8)   # (label, side) → value of the segment in the layer
    for value, spec in enumerate(specs, start=1):
        side_values = [SIDE_LABELS[spec.side]] if spec.side else [0, 1, 2]
        for side in side_values:
            lut[spec.tissue.label * 3 + side] = value
    key = labels.astype(np.intp) * 3 + (sides if sides is not None else 0)
    layer = _oriented_image(lut[key], ijk_to_ras(volume_node))

    segmentation_node.GetScene().SaveStateForUndo()   # Ctrl+Z brings the previous content back
    modified = segmentation_node.StartModify()
    try:
        segmentation = segmentation_node.GetSegmentation()
        segmentation.RemoveAllSegments()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        segmentation.SetSourceRepresentationName(binary)
        for value, spec in enumerate(specs, start=1):
            segment = slicer.vtkSegment()
            segment.SetName(segment_name(spec.tissue, spec.side))
            segment.SetNameAutoGenerated(False)
            segment.SetColor(*spec.tissue.color_float)
            segment.SetColorAutoGenerated(False)
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology_entry(spec.tissue, spec.side))
            segment.SetLabelValue(value)
            segment.AddRepresentation(binary, layer)      # all segments share one layer
            segmentation.AddSegment(segment, spec.segment_id)
        if engine:
            segmentation_node.SetAttribute(ENGINE_ATTRIBUTE, engine)
        segmentation_node.CreateDefaultDisplayNodes()
        _place_in_study(segmentation_node, volume_node)
    finally:
        segmentation_node.EndModify(modified)
    segmentation_node.SetAttribute(FINGERPRINT_ATTRIBUTE, fingerprint(segmentation_node))
    return segmentation_node


def _oriented_image(array, ijk_to_ras_matrix):
    slicer = _slicer()
    from vtk.util.numpy_support import numpy_to_vtk
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(array.shape[::-1])
    image.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    image.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras_matrix))
    return image


def _place_in_study(segmentation_node, volume_node):
    """Put the segmentation beside its CT in the subject hierarchy (same study)."""
    slicer = _slicer()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(segmentation_node.GetScene())
    if hierarchy is None:
        return
    volume_item = hierarchy.GetItemByDataNode(volume_node)
    item = hierarchy.GetItemByDataNode(segmentation_node)
    parent = hierarchy.GetItemParent(volume_item) if volume_item else 0
    if item and parent:
        hierarchy.SetItemParent(item, parent)


def fingerprint(segmentation_node):
    """Hash of every segment's id, name and voxels: changes with any edit that matters for the results."""
    slicer = _slicer()
    from vtk.util.numpy_support import vtk_to_numpy
    digest = hashlib.sha256()
    segmentation = segmentation_node.GetSegmentation()
    for segment_id in segmentation.GetSegmentIDs():
        digest.update(f"{segment_id}|{segmentation.GetSegment(segment_id).GetName()}|".encode())
        mask = slicer.vtkOrientedImageData()
        segmentation_node.GetBinaryLabelmapRepresentation(segment_id, mask)
        digest.update(repr(mask.GetExtent()).encode())
        scalars = mask.GetPointData().GetScalars()
        if scalars is not None:
            digest.update(np.ascontiguousarray(vtk_to_numpy(scalars) != 0).tobytes())
    return digest.hexdigest()


def edited_since_produced(segmentation_node):
    """True if the node holds segments LegSegNet did not write in exactly this state."""
    if segmentation_node is None or segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        return False
    return segmentation_node.GetAttribute(FINGERPRINT_ATTRIBUTE) != fingerprint(segmentation_node)


def check_output(segmentation_node, overwrite=False):
    if not overwrite and edited_since_produced(segmentation_node):
        raise EditedOutputError(f"segmentation '{segmentation_node.GetName()}' was edited since LegSegNet produced "
                                "it (or holds other segments); choose a new output or pass overwrite=True")


def spec_of_segment(segment):
    """(tissue, side) a segment stands for, from its terminology type and modifier, else its name; or None."""
    parts = segment_terminology(segment).split("~")
    if len(parts) >= 4:
        for tissue in TISSUES:
            if parts[2] == str(tissue.type) and (tissue.region.value == "" or parts[5] == str(tissue.region)):
                side = next((s for s, code in SIDE_MODIFIERS.items() if parts[3] == str(code)), None)
                return SegmentSpec(tissue, side)
    words = segment.GetName().split()
    tissue = tissue_for_name(words[0]) if words else None
    if tissue is None:
        return None
    side = words[1].lower() if len(words) > 1 and words[1].lower() in SIDE_MODIFIERS else None
    return SegmentSpec(tissue, side)


def segment_terminology(segment):
    """The segment's terminology entry string ('' if it has none)."""
    import vtk
    value = vtk.reference("")
    found = segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value) if found else ""


def segmentation_to_labels(segmentation_node, volume_node):
    """(labels, sides) as (k, j, i) arrays on the volume's grid. sides is None unless every tissue segment
    belongs to one leg. Segments that are not tissues are ignored (logged)."""
    slicer = _slicer()
    import vtk
    segmentation = segmentation_node.GetSegmentation()
    ids, specs = [], []
    for segment_id in segmentation.GetSegmentIDs():
        spec = spec_of_segment(segmentation.GetSegment(segment_id))
        if spec is None:
            log.warning("segment '%s' is not a LegSegNet tissue; left out of the statistics",
                        segmentation.GetSegment(segment_id).GetName())
            continue
        ids.append(segment_id)
        specs.append(spec)
    shape = volume_array(volume_node).shape
    if not ids:
        return np.zeros(shape, np.uint8), None
    id_array = vtk.vtkStringArray()
    for segment_id in ids:
        id_array.InsertNextValue(segment_id)
    scene = segmentation_node.GetScene()
    exported = slicer.vtkMRMLLabelMapVolumeNode()    # the export needs it in the scene; removed right after
    exported.SetHideFromEditors(True)
    scene.AddNode(exported)
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, id_array, exported, volume_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise RuntimeError(f"cannot export segmentation '{segmentation_node.GetName()}' on the CT grid")
        values = np.array(volume_array(exported))        # 1..n in the order of ids
    finally:
        scene.RemoveNode(exported)
    tissue_of = np.array([0] + [s.tissue.label for s in specs], np.uint8)
    labels = tissue_of[values]
    if all(s.side for s in specs):
        side_of = np.array([0] + [SIDE_LABELS[s.side] for s in specs], np.uint8)
        return labels, side_of[values]
    return labels, None


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
    specs = [s for s in (spec_of_segment(segmentation_node.GetSegmentation().GetSegment(i))
                         for i in segmentation_node.GetSegmentation().GetSegmentIDs()) if s is not None]
    return core_statistics(image, labels, sides), specs


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


# ---------------------------------------------------------------- export
def export_tables_csv(table_nodes, folder):
    """One CSV per table (named after the node), values as shown. Returns the paths."""
    import csv
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


def export_labels(volume_node, segmentation_node, path):
    """Tissue labels on the CT grid: `.seg.nrrd` (named, coloured segments) or any label image (NIfTI...)."""
    from .segmentations import write_seg_nrrd
    from .volumes import write_labels
    image = volume_to_image(volume_node)
    labels, _sides = segmentation_to_labels(segmentation_node, volume_node)
    if str(path).lower().endswith(".seg.nrrd"):
        write_seg_nrrd(labels, image, path)
    else:
        write_labels(labels, image, path)
    return Path(path)


# ---------------------------------------------------------------- background run
class BackgroundRun:
    """The core CLI (`legsegnet segment --progress-lines`) in a separate process.

    Inside Slicer, `python` is PythonSlicer; headless it is the current interpreter. Nothing touches the scene:
    the caller imports the labels once the run has succeeded.
    """
    def __init__(self, volume_node, engine="auto", slices=None, engine_args=(), python=None):
        self.image = volume_to_image(volume_node)
        validate_ct(self.image, volume_node.GetName())
        self.engine, self.slices, self.engine_args = engine, slices, list(engine_args)
        self.python = python or sys.executable
        self.done = self.total = 0
        self.state = "idle"        # running, done, failed, cancelled
        self.messages = []         # the process's lines other than progress
        self.folder = self.process = None
        self._lines = queue.Queue()

    @property
    def output(self):
        return self.folder / "out"

    def start(self):
        self.folder = Path(tempfile.mkdtemp(prefix="legsegnet-"))
        sitk.WriteImage(self.image, str(self.folder / "input.nrrd"), useCompression=False)   # temporary: speed over size
        command = [self.python, "-m", "LegSegNetLib", "segment", str(self.folder / "input.nrrd"),
                   "-o", str(self.output), "--engine", self.engine, "--progress-lines", *self.engine_args]
        if self.slices:
            command += ["--slices", self.slices]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(MODULE_DIR)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])),
            PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        log.info("LegSegNet: %s", " ".join(command))
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        encoding="utf-8", errors="replace",
                                        env=env, **_new_process_group())
        self.state = "running"
        threading.Thread(target=self._read, daemon=True).start()   # the GUI polls; it never blocks on a pipe
        return self

    def _read(self):
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)      # end of output

    def poll(self):
        """Take the lines printed so far (non-blocking); returns the state."""
        while self.state == "running":
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            self._take(line)
        return self.state

    def _take(self, line):
        if line is None:
            code = self.process.wait()
            self.state = "done" if code == 0 and (self.output / "labels.nii.gz").exists() else "failed"
            if self.state == "failed":
                log.error("LegSegNet: the segmentation process failed (exit code %s): %s", code, self.error)
            return
        parts = line.split()
        if len(parts) == 3 and parts[0] == "PROGRESS":
            self.done, self.total = int(parts[1]), int(parts[2])
        elif line.strip():
            self.messages.append(line)
            log.info("legsegnet: %s", line)

    @property
    def error(self):
        """The process's own message (its last lines), for an error dialog."""
        return "\n".join(self.messages[-5:]) or f"exit code {self.process.returncode}"

    def wait(self, progress=None, cancel=None, interval=0.05):
        """Block until the run ends (headless use); progress(done, total); cancel() → True stops it."""
        reported = None
        while self.state == "running":
            try:
                self._take(self._lines.get(timeout=interval))
            except queue.Empty:
                pass
            if progress is not None and self.total and (self.done, self.total) != reported:
                reported = (self.done, self.total)
                progress(self.done, self.total)
            if cancel is not None and self.state == "running" and cancel():
                self.cancel()
        return self.state

    def cancel(self):
        """Stop the process and everything it started; the temporary files go too."""
        if self.process is not None and self.process.poll() is None:
            _kill_tree(self.process)
        if self.state == "running":
            self.state = "cancelled"
        self.cleanup()

    def labels(self):
        """The result's labels (k, j, i) on the input grid; only after a successful run."""
        if self.state != "done":
            raise RuntimeError(f"no result: the run is {self.state}")
        image = sitk.ReadImage(str(self.output / "labels.nii.gz"))
        if image.GetSize() != self.image.GetSize() or not np.allclose(
                ijk_to_lps(image), ijk_to_lps(self.image), atol=1e-3):
            raise RuntimeError("the result is not on the input grid")
        return sitk.GetArrayFromImage(image).astype(np.uint8)

    def report(self):
        path = self.output / "report.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def cleanup(self):
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _new_process_group():
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _kill_tree(process):
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)    # the session holds every worker the CLI started
        except ProcessLookupError:
            pass
    process.wait()


def leg_sides(labels, image):
    """Side map (k, j, i) of the core's left/right split for labels on the image's grid."""
    view = AxialView.of(image)
    return view.from_canonical(split_legs(view.to_canonical(labels) > 0, view, image))


def import_result(run, volume_node, segmentation_node=None, split=False, overwrite=False, name=None):
    """Put a finished run's labels into segmentation_node (a new node if None); checks for edits again,
    since the user may have edited the output while the run was going."""
    labels = run.labels()
    check_output(segmentation_node, overwrite)
    sides = leg_sides(labels, run.image) if split else None
    engine = run.report().get("engine", {}).get("engine", run.engine)
    if segmentation_node is None:
        segmentation_node = volume_node.GetScene().AddNewNodeByClass(
            "vtkMRMLSegmentationNode", name or f"{volume_node.GetName()} legs")
    return labels_to_segmentation(labels, volume_node, segmentation_node, sides, engine=engine)


def segment_volume(volume_node, segmentation_node=None, engine="auto", slices=None, split=False, overwrite=False,
                   engine_args=(), python=None, progress=None, cancel=None):
    """Headless: run the core in a background process and import the result. Raises EditedOutputError before
    any work if the output was edited (unless overwrite), Cancelled if cancel() became true, InputError or
    RuntimeError with the process's message on failure. The scene changes only on success."""
    check_output(segmentation_node, overwrite)
    run = BackgroundRun(volume_node, engine, slices, engine_args, python).start()
    try:
        state = run.wait(progress, cancel)
        if state == "cancelled":
            raise Cancelled("segmentation cancelled; the scene is unchanged")
        if state == "failed":
            raise (InputError if run.process.returncode == 2 else RuntimeError)(run.error)
        return import_result(run, volume_node, segmentation_node, split, overwrite)
    finally:
        run.cleanup()
