"""The panel's results beyond the tables, with real MRML (slicer-core wheel): the review list and the mid-thigh
lines read back from a run (and the slice each review entry jumps to), Update statistics in a background process,
and DICOM SEG export for a CT that MRML read from a DICOM series."""
import glob

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import slicer   # the slicer-core wheel (test extra): real MRML without a Slicer application

from LegSegNetLib import mrml, mrml_run, mrml_tables, panel, qc
from LegSegNetLib.errors import InputError
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.tissues import TISSUES
from conftest import assert_same_rows
from test_dicom_seg import FRAME_OF_REFERENCE, scanner_series
from test_midthigh import SPACING, femur_ct
from test_mrml import new_scene, node_ids
from test_mrml_results import _paint_one_voxel, _user_segmentation

METAL_SLICE = 20
ENDS = {"right": (6, 52), "left": (0, 52)}     # the left femur's distal end is cut by the scan


@pytest.fixture(scope="module")
def femur(tmp_path_factory):
    """A femur phantom (right femur whole, left cut) with metal planted in one slice, segmented in the
    background and imported: the review list and mid-thigh rows come with the segmentation."""
    path, positions = femur_ct(tmp_path_factory.mktemp("femur"), ENDS)
    ct = sitk.ReadImage(str(path))
    hu = sitk.GetArrayFromImage(ct)            # identity direction: canonical (z, y, x)
    hu[METAL_SLICE, 50:60, 40:60] = 3500       # in the right leg: 200 pixels of metal
    metal = sitk.GetImageFromArray(hu)
    metal.CopyInformation(ct)
    scene, colors = new_scene()
    volume = mrml.image_to_volume(metal, scene, "femur CT")
    run = mrml_run.BackgroundRun(volume, engine="threshold").start()
    assert run.wait() == "done", run.error
    tables = [scene.AddNewNodeByClass("vtkMRMLTableNode") for _ in range(2)]
    segmentation = mrml_run.import_result(run, volume, None, False, False, None, *tables)
    qc_rows = qc.read_qc(run.output / "qc.csv")
    run.cleanup()
    return dict(scene=scene, colors=colors, volume=volume, segmentation=segmentation, tables=tables,
                positions=positions, qc_rows=qc_rows, image=metal)


def test_review_list_is_the_runs_flagged_slices_ranked(femur):
    quality = mrml_tables.quality_of(femur["segmentation"])
    flagged = sorted((r for r in femur["qc_rows"] if r["review_rank"]), key=lambda r: int(r["review_rank"]))
    assert [(e["rank"], e["slice"], e["reasons"]) for e in quality["review"]] == \
        [(int(r["review_rank"]), int(r["slice"]), r["reasons"]) for r in flagged]
    metal = next(e for e in quality["review"] if e["slice"] == METAL_SLICE)
    assert "metal" in metal["flags"].split(";") and "200 pixels above" in metal["reasons"]
    items = panel.review_items(quality)
    assert len(items) == len(flagged) and items[0].startswith("1. slice ")
    assert any(item.startswith(f"{metal['rank']}. slice {METAL_SLICE} ") and "metal" in item for item in items)


def test_review_entry_jumps_to_its_slice_on_the_cts_grid(femur):
    volume, entry = femur["volume"], next(e for e in mrml_tables.quality_of(femur["segmentation"])["review"]
                                          if e["slice"] == METAL_SLICE)
    ras = panel.review_position(volume, entry)
    assert ras[2] == pytest.approx(entry["position_mm"]) == pytest.approx(femur["positions"][METAL_SLICE])
    ijk = np.linalg.solve(mrml.ijk_to_ras(volume), [*ras, 1.0])[:3]
    dims = volume.GetImageData().GetDimensions()
    assert np.allclose(ijk, [(dims[0] - 1) / 2, (dims[1] - 1) / 2, METAL_SLICE])   # that slice's centre
    lps = femur["image"].TransformContinuousIndexToPhysicalPoint(ijk.tolist())
    assert np.allclose(ras, [-lps[0], -lps[1], lps[2]])
    with pytest.raises(InputError, match="not in this CT"):
        panel.review_position(volume, dict(entry, slice=len(femur["positions"])))


def test_midthigh_lines_give_the_level_or_why_none(femur):
    rows = {r["leg"]: r for r in mrml_tables.quality_of(femur["segmentation"])["midthigh"]}
    right, left = rows["right"], rows["left"]
    truth = (femur["positions"][ENDS["right"][0]] + femur["positions"][ENDS["right"][1]]) / 2
    assert abs(float(right["level_mm"]) - truth) <= SPACING[0]
    assert left["level_mm"] == "" and "distal end not in view" in left["status"]
    text = panel.midthigh_text(mrml_tables.quality_of(femur["segmentation"]))
    lines = text.splitlines()
    assert lines[0] == (f"right leg: level {float(right['level_mm']):.1f} mm (slice {right['slice']}; "
                        f"{right['method']}): SM {float(right['SM_cm2']):.1f} cm², IMAT {float(right['IMAT_cm2']):.1f} "
                        f"cm², SAT {float(right['SAT_cm2']):.1f} cm²")
    assert lines[1] == f"left leg: no level ({left['status']})"
    assert panel.midthigh_text(mrml_tables.quality_of(None)) == "" and panel.review_items({"review": []}) == []


def test_update_statistics_in_the_background_equals_the_in_process_tables(femur):
    """The worker process gives the same tables as computing them here, and refreshes the review list from the
    edited segmentation; the scene gains no node."""
    scene, volume, segmentation = femur["scene"], femur["volume"], femur["segmentation"]
    labels = mrml.segmentation_to_labels(segmentation, volume)[0]
    k, j, i = np.argwhere(labels == 0)[len(np.argwhere(labels == 0)) // 2]
    _paint_one_voxel(segmentation, "SM", (i, j, k), TISSUES[1].label)          # an edit
    expected = [scene.AddNewNodeByClass("vtkMRMLTableNode") for _ in range(2)]
    mrml_tables.update_statistics(volume, segmentation, *expected)
    nodes = node_ids(scene)
    before = mrml_tables.quality_of(segmentation)
    mrml_tables.store_quality(segmentation, {"review": [], "midthigh": []})
    mrml_run.update_statistics_in_background(volume, segmentation, *femur["tables"])
    assert node_ids(scene) == nodes
    for got, want in zip(femur["tables"], expected):
        assert_same_rows(mrml_tables.table_rows(got), mrml_tables.table_rows(want), rel=1e-9)
    after = mrml_tables.quality_of(segmentation)
    assert [e["slice"] for e in after["review"]] == [e["slice"] for e in before["review"]]   # the classical engine
    assert [r["level_mm"] for r in after["midthigh"]] == [r["level_mm"] for r in before["midthigh"]]


def test_update_statistics_refuses_a_segmentation_edited_meanwhile(femur):
    volume, segmentation = femur["volume"], femur["segmentation"]
    run = mrml_run.BackgroundStatistics(volume, segmentation).start()
    try:
        labels = mrml.segmentation_to_labels(segmentation, volume)[0]
        k, j, i = np.argwhere(labels == 0)[0]
        _paint_one_voxel(segmentation, "SAT", (i, j, k), TISSUES[0].label)
        assert run.wait() == "done", run.error
        with pytest.raises(InputError, match="changed while its statistics were computed"):
            run.apply(segmentation, *femur["tables"])
    finally:
        run.cleanup()
        _paint_one_voxel(segmentation, "SAT", (i, j, k), 0)


def test_update_statistics_keeps_the_users_left_and_right_segments():
    """With a segment per tissue and leg, the worker takes the legs from the segments, not its own split."""
    scene, _colors = new_scene()
    volume = mrml.image_to_volume(make_phantom(seed=4, shape=(8, 128, 160)).ct, scene, "CT")
    segmentation = mrml_run.segment_volume(volume, engine="threshold", split=True)
    segments = segmentation.GetSegmentation()
    labels, sides = mrml.segmentation_to_labels(segmentation, volume)
    moved = np.argwhere((labels == TISSUES[0].label) & (sides == 1))[:50]      # 50 SAT voxels: right → left
    for k, j, i in moved:
        _paint_one_voxel(segmentation, "SAT_right", (i, j, k), 0)
    layer = segments.GetSegment("SAT_left")
    for k, j, i in moved:
        _paint_one_voxel(segmentation, "SAT_left", (i, j, k), layer.GetLabelValue())
    expected, got = ([scene.AddNewNodeByClass("vtkMRMLTableNode") for _ in range(2)] for _ in range(2))
    mrml_tables.update_statistics(volume, segmentation, *expected)
    mrml_run.update_statistics_in_background(volume, segmentation, *got)
    assert mrml_tables.table_rows(got[0]) == mrml_tables.table_rows(expected[0])
    counts = {r["Segment"]: r["Voxel count"] for r in mrml_tables.table_rows(got[0])}
    assert counts["SAT left"] == int(((labels == TISSUES[0].label) & (sides == 2)).sum()) + len(moved)


# ---------------------------------------------------------------- DICOM SEG from the panel's export
@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory):
    """A CT series (with a frame of reference) read into MRML by Slicer's volume reader, the instance UIDs set
    as Slicer's DICOM loader sets them, segmented per leg, a user segment added and one voxel edited."""
    root = tmp_path_factory.mktemp("dicom-export")
    phantom = make_phantom(seed=6, shape=(10, 96, 128))
    files = sorted(glob.glob(str(scanner_series(phantom.ct, root / "ct") / "*.dcm")))
    scene, colors = new_scene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "DICOM CT")
    reader = slicer.vtkMRMLVolumeArchetypeStorageNode()
    reader.SetFileName(files[0])
    for path in files:
        reader.AddFileName(path)
    reader.SetSingleFile(False)
    assert reader.ReadData(volume)
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(pydicom.dcmread(f).SOPInstanceUID for f in files))
    run = mrml_run.BackgroundRun(volume, engine="threshold").start()
    assert run.wait() == "done", run.error
    finished = dict(scene=scene, colors=colors, phantom=phantom, volume=volume, run=run)
    segmentation = _user_segmentation(finished)            # left/right segments and a 'lesion' segment
    labels = mrml.segmentation_to_labels(segmentation, volume)[0]
    segment = segmentation.GetSegmentation().GetSegment("SM_left")
    i0, _, j0, _, k0, _ = segment.GetRepresentation("Binary labelmap").GetExtent()   # the layer's own extent
    k, j, i = np.argwhere(labels[k0:, j0:, i0:] == 0)[0] + (k0, j0, i0)
    _paint_one_voxel(segmentation, "SM_left", (i, j, k), segment.GetLabelValue())
    run.cleanup()
    return dict(root=root, files=files, scene=scene, colors=colors, volume=volume, segmentation=segmentation,
                edited=(k, j, i))


def test_dicom_seg_export_holds_the_tissues_as_the_user_sees_them(dicom_case, tmp_path):
    volume, segmentation = dicom_case["volume"], dicom_case["segmentation"]
    nodes = node_ids(dicom_case["scene"])
    assert len(volume.GetAttribute("DICOM.instanceUIDs").split()) == len(dicom_case["files"])
    paths = mrml_tables.export_all(tmp_path, volume, segmentation, [], dicom_case["files"])
    assert node_ids(dicom_case["scene"]) == nodes
    (path,) = [p for p in paths if p.name.endswith("_SEG.dcm")]
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == len(TISSUES) and seg.FrameOfReferenceUID == FRAME_OF_REFERENCE
    for tissue, description in zip(TISSUES, seg.SegmentSequence):
        assert description.SegmentLabel == tissue.short
        assert description.SegmentAlgorithmType == "SEMIAUTOMATIC"      # corrected by hand since the run
        for sequence, code in ((description.SegmentedPropertyCategoryCodeSequence, tissue.category),
                               (description.SegmentedPropertyTypeCodeSequence, tissue.type)):
            assert (sequence[0].CodingSchemeDesignator, sequence[0].CodeValue) == (code.scheme, code.value)
    # frame by frame: the labels the user sees (left and right merged, edit included, the lesion left out)
    labels = mrml.segmentation_to_labels(segmentation, volume)[0]
    k, j, i = dicom_case["edited"]
    assert labels[k, j, i] == TISSUES[1].label
    image = mrml.volume_to_image(volume)
    sources = {pydicom.dcmread(f).SOPInstanceUID: f for f in dicom_case["files"]}
    for tissue in TISSUES:
        pixels = seg.get_pixels_by_source_instance(list(sources), segment_numbers=[tissue.label])[..., 0]
        for frame, uid in zip(pixels, sources):
            position = [float(v) for v in pydicom.dcmread(sources[uid]).ImagePositionPatient]
            z = image.TransformPhysicalPointToIndex(position)[2]
            assert np.array_equal(frame > 0, labels[z] == tissue.label), (tissue.short, z)


def test_dicom_seg_export_refuses_files_of_another_grid(dicom_case, tmp_path):
    other = scanner_series(make_phantom(seed=6, shape=(10, 48, 64)).ct, tmp_path / "other")
    with pytest.raises(InputError, match="not the 10 instances 'DICOM CT' was loaded from"):
        mrml_tables.export_dicom_seg(dicom_case["volume"], dicom_case["segmentation"],
                                     sorted(glob.glob(str(other / "*.dcm"))), tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()
