"""After a run, with real MRML (slicer-core wheel): tables read back from the run's CSVs (no statistics on the
calling thread), the edit fingerprint, labels read straight from the segmentation's layers, export as the user
sees it, and a scene left without helper nodes."""
import csv

import numpy as np
import pytest
import SimpleITK as sitk

import slicer   # the slicer-core wheel (test extra): real MRML without a Slicer application
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from LegSegNetLib import mrml, mrml_run, mrml_tables, panel
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.tissues import TISSUES
from conftest import assert_same_rows
from test_mrml import PERMUTED, new_scene, node_ids


@pytest.fixture(scope="module")
def finished():
    """A finished background run on a phantom (its output folder kept until the module's tests are done)."""
    scene, colors = new_scene()
    phantom = make_phantom(seed=7, shape=(16, 160, 224), direction=PERMUTED)
    volume = mrml.image_to_volume(phantom.ct, scene, "leg CT")
    run = mrml_run.BackgroundRun(volume, engine="threshold").start()
    assert run.wait() == "done", run.error
    yield dict(scene=scene, colors=colors, phantom=phantom, volume=volume, run=run)
    run.cleanup()


def _rewrite_csv(path, change):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        change(row)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_import_reads_the_statistics_the_run_wrote_instead_of_computing_them(finished, tmp_path):
    """Tables from an untouched run equal the recomputed ones; after the CSVs on disk are altered, the import shows
    the altered values: the numbers come from the background process, not from work on this thread."""
    scene, volume, run = finished["scene"], finished["volume"], finished["run"]
    tables = [scene.AddNewNodeByClass("vtkMRMLTableNode") for _ in range(2)]
    segmentation = mrml_run.import_result(run, volume, None, False, False, None, *tables)
    recomputed = [scene.AddNewNodeByClass("vtkMRMLTableNode") for _ in range(2)]
    mrml_tables.update_statistics(volume, segmentation, *recomputed)
    for imported, fresh in zip(tables, recomputed):
        assert_same_rows(mrml_tables.table_rows(imported), mrml_tables.table_rows(fresh), rel=1e-12)

    def tamper(row):
        if row["leg"] == "both":
            row["mean_hu"] = str(1000 + int(row["label"]))
    rows = _rewrite_csv(run.output / "statistics.csv", tamper)
    metrics = _rewrite_csv(run.output / "metrics.csv", lambda row: row.update(imat_to_sat="0.125"))
    altered = [scene.AddNewNodeByClass("vtkMRMLTableNode") for _ in range(2)]
    mrml_run.import_result(run, volume, None, False, False, None, *altered)
    segment_rows, metric_rows = (mrml_tables.table_rows(t) for t in altered)
    assert [r["Mean"] for r in segment_rows] == [1000 + t.label for t in TISSUES]
    assert [r["Voxel count"] for r in segment_rows] == [
        int(next(r for r in rows if r["tissue"] == t.short and r["leg"] == "both")["voxel_count"]) for t in TISSUES]
    assert [r["imat_to_sat"] for r in metric_rows] == [0.125] * len(metrics)


def test_status_line_names_the_engine_and_the_reason_from_report_json(finished):
    report = finished["run"].report()
    text = panel.status_text("leg CT legs", report)
    assert "classical engine" in text and report["engine"]["reason"] in text
    assert "kept as 'x (edited, before rerun)'" in panel.status_text("x", report, "x (edited, before rerun)")


def _paint_one_voxel(segmentation_node, segment_id, ijk, value):
    """Change one voxel of a segment in place, as a Segment Editor effect does (then Modified())."""
    layer = segmentation_node.GetSegmentation().GetSegment(segment_id).GetRepresentation(
        slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    extent = layer.GetExtent()
    voxels = vtk_to_numpy(layer.GetPointData().GetScalars()).reshape(
        extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    voxels[ijk[2] - extent[4], ijk[1] - extent[2], ijk[0] - extent[0]] = value
    layer.Modified()


def test_fingerprint_detects_a_one_voxel_edit_and_ignores_display_changes(finished):
    volume = finished["volume"]
    segmentation = mrml_run.import_result(finished["run"], volume)
    assert not mrml.edited_since_produced(segmentation)
    segmentation.CreateClosedSurfaceRepresentation()          # "Show 3D" does not change the segments
    segmentation.GetDisplayNode().SetSegmentVisibility("SM", False)
    assert not mrml.edited_since_produced(segmentation)
    labels = mrml.segmentation_to_labels(segmentation, volume)[0]
    k, j, i = np.argwhere(labels == 0)[len(np.argwhere(labels == 0)) // 2]
    _paint_one_voxel(segmentation, "SAT", (i, j, k), TISSUES[0].label)
    assert mrml.edited_since_produced(segmentation)
    _paint_one_voxel(segmentation, "SAT", (i, j, k), 0)        # painted back: the same content again
    assert not mrml.edited_since_produced(segmentation)
    segmentation.GetSegmentation().GetSegment("IMAT").SetName("IMAT (checked)")
    assert mrml.edited_since_produced(segmentation)


def _user_segmentation(finished):
    """Left/right segments as LegSegNet made them, plus a segment the user drew."""
    volume = finished["volume"]
    segmentation = mrml_run.import_result(finished["run"], volume, split=True)
    dims = volume.GetImageData().GetDimensions()
    mask = slicer.vtkOrientedImageData()
    mask.SetExtent(0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    mask.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    mask.GetPointData().GetScalars().Fill(0)
    mask.SetImageToWorldMatrix(mrml._vtk_matrix(mrml.ijk_to_ras(volume)))
    vtk_to_numpy(mask.GetPointData().GetScalars()).reshape(dims[::-1])[1:3, 5:9, 2:6] = 1
    segment_id = segmentation.GetSegmentation().AddEmptySegment("lesion", "lesion", (0.1, 0.9, 0.2))
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        mask, segmentation, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    return segmentation


def test_update_statistics_and_export_leave_no_node_in_the_scene(finished, tmp_path):
    scene, volume = finished["scene"], finished["volume"]
    segmentation = _user_segmentation(finished)
    tables = [scene.AddNewNodeByClass("vtkMRMLTableNode", name) for name in ("legs statistics", "legs metrics")]
    nodes = node_ids(scene)
    mrml_tables.update_statistics(volume, segmentation, *tables)
    mrml.segmentation_to_labels(segmentation, volume)
    paths = mrml_tables.export_all(tmp_path, volume, segmentation, tables)
    assert node_ids(scene) == nodes
    assert {p.name for p in paths} == {"legs statistics.csv", "legs metrics.csv", "leg_CT_legs.seg.nrrd",
                                       "leg_CT_legs_labels.nii.gz", "leg_CT_legs_labels.csv"}


def test_export_keeps_the_segmentation_as_the_user_sees_it(finished, tmp_path):
    volume = finished["volume"]
    segmentation = _user_segmentation(finished)
    source = segmentation.GetSegmentation()
    ids = list(source.GetSegmentIDs())
    assert len(ids) == 2 * len(TISSUES) + 1
    merged = mrml.merged_labelmap(segmentation, volume, ids)

    # .seg.nrrd, read back by Slicer's own reader into a fresh scene: every segment, name, colour, terminology
    path = mrml_tables.export_seg_nrrd(segmentation, tmp_path / "legs.seg.nrrd")
    scene, _colors = new_scene()
    fresh_volume = mrml.image_to_volume(finished["phantom"].ct, scene)
    back = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(path))
    assert reader.ReadData(back)
    read = back.GetSegmentation()
    assert list(read.GetSegmentIDs()) == ids
    for segment_id in ids:
        a, b = source.GetSegment(segment_id), read.GetSegment(segment_id)
        assert (a.GetName(), mrml.segment_terminology(a)) == (b.GetName(), mrml.segment_terminology(b))
        assert np.allclose(a.GetColor(), b.GetColor())
    assert np.array_equal(mrml.merged_labelmap(back, fresh_volume, ids), merged)

    # label NIfTI: one value per segment on the CT grid, and a colour table Slicer reads
    nifti, table = mrml_tables.export_labelmap(volume, segmentation, tmp_path / "legs_labels.nii.gz")
    image = sitk.ReadImage(str(nifti))
    assert np.array_equal(sitk.GetArrayFromImage(image), merged)
    assert np.allclose(image.GetDirection(), finished["phantom"].ct.GetDirection())
    assert np.allclose(image.GetOrigin(), finished["phantom"].ct.GetOrigin())
    assert set(np.unique(merged)) == set(range(len(ids) + 1))          # left, right and the user's segment
    colors = slicer.vtkMRMLColorTableNode()
    storage = slicer.vtkMRMLColorTableStorageNode()
    storage.SetFileName(str(table))
    assert storage.ReadData(colors)
    for value, segment_id in enumerate(ids, start=1):
        assert colors.GetColorName(value) == source.GetSegment(segment_id).GetName()
        rgba = [0.0] * 4
        colors.GetColor(value, rgba)
        assert np.allclose(rgba[:3], source.GetSegment(segment_id).GetColor(), atol=1 / 255)


def _box_segment(segmentation_node, volume, name, extent, matrix=None):
    """A segment in a layer of its own: a box filling a sub-extent (i0, i1, j0, j1, k0, k1) of its image."""
    image = slicer.vtkOrientedImageData()
    image.SetExtent(*extent)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(1)
    image.SetImageToWorldMatrix(mrml._vtk_matrix(mrml.ijk_to_ras(volume) if matrix is None else matrix))
    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.SetLabelValue(1)
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(), image)
    segmentation_node.GetSegmentation().AddSegment(segment, name)
    return name


def test_labels_read_from_the_layers_equal_slicers_merge(finished):
    """Left/right tissues sharing LegSegNet's layer, a user segment, and a segment in a cropped layer of its own
    overlapping the tissues: reading the layers gives Slicer's merged labelmap voxel for voxel, in any order."""
    volume = finished["volume"]
    segmentation = _user_segmentation(finished)
    _box_segment(segmentation, volume, "box", (2, 12, 20, 90, 30, 80))
    assert segmentation.GetSegmentation().GetNumberOfLayers() >= 2
    ids = list(segmentation.GetSegmentation().GetSegmentIDs())
    for order in (ids, ids[::-1], ids[3:9], ["box", "SM_left"]):
        fast = mrml._merged_from_layers(segmentation, volume, order)
        assert fast is not None                                  # the layers are on the CT's grid: no merge
        slow = mrml.merged_labelmap(segmentation, volume, order, read_layers=False)
        assert np.array_equal(fast, slow) and np.array_equal(mrml.merged_labelmap(segmentation, volume, order), slow)
        assert len(np.unique(slow)) > 2
    labels, sides = mrml.segmentation_to_labels(segmentation, volume)
    tissue_ids = [i for i in ids if mrml.spec_of_segment(segmentation.GetSegmentation().GetSegment(i))]
    slow = mrml.merged_labelmap(segmentation, volume, tissue_ids, read_layers=False)
    specs = [mrml.spec_of_segment(segmentation.GetSegmentation().GetSegment(i)) for i in tissue_ids]
    assert np.array_equal(labels, np.array([0] + [s.tissue.label for s in specs])[slow])


def test_a_layer_off_the_cts_grid_goes_through_slicers_merge(finished):
    volume = finished["volume"]
    segmentation = mrml_run.import_result(finished["run"], volume)
    coarse = mrml.ijk_to_ras(volume) @ np.diag([2.0, 2.0, 1.0, 1.0])       # twice the pixel size
    _box_segment(segmentation, volume, "coarse", (1, 6, 10, 40, 30, 60), coarse)
    ids = list(segmentation.GetSegmentation().GetSegmentIDs())
    assert mrml._merged_from_layers(segmentation, volume, ids) is None
    merged = mrml.merged_labelmap(segmentation, volume, ids)
    assert (merged == len(ids)).sum() > 0 and np.array_equal(merged, mrml._merged_by_slicer(segmentation, volume, ids))
    beyond = mrml_run.import_result(finished["run"], volume)
    _box_segment(beyond, volume, "beyond", (10, 20, 10, 40, 30, 60))       # i runs past the CT's 16 columns
    ids = list(beyond.GetSegmentation().GetSegmentIDs())
    assert mrml._merged_from_layers(beyond, volume, ids) is None
    assert np.array_equal(mrml.merged_labelmap(beyond, volume, ids), mrml._merged_by_slicer(beyond, volume, ids))
