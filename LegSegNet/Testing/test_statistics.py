"""Statistics against an independent numpy reference and against Slicer's own computation (slicer-core)."""
import csv

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.pipeline import stats_case
from LegSegNetLib.statistics import LAMA_HU, NAMA_HU
from LegSegNetLib.tissues import LEGS, SIDE_LABELS, TISSUES

from conftest import array, run_cli, slicer_segment_statistics


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def leg_mask(sides, leg):
    return sides > 0 if leg == "both" else sides == SIDE_LABELS[leg]


def reference(hu, labels, sides, leg, label):
    values = hu[(labels == label) & leg_mask(sides, leg)].astype(np.float64)
    return values


@pytest.fixture(scope="module", params=["int16", "float32"])
def truth_stats(request, tmp_path_factory, phantom):
    """`legsegnet stats` on the phantom's exact truth; float HU exercises the non-histogram medians."""
    folder = tmp_path_factory.mktemp(f"stats-{request.param}")
    ct = phantom.ct
    if request.param == "float32":
        ct = sitk.Cast(ct, sitk.sitkFloat32) + 0.25
    sitk.WriteImage(ct, str(folder / "ct.nii.gz"))
    sitk.WriteImage(phantom.truth, str(folder / "truth.nii.gz"))
    assert run_cli("stats", folder / "ct.nii.gz", folder / "truth.nii.gz", "-o", folder / "out") == 0
    return array(ct), folder / "out"


def test_tissue_rows_equal_reference(truth_stats, phantom):
    hu, out = truth_stats
    labels, sides = array(phantom.truth), array(phantom.sides)
    voxel_cm3 = np.prod(phantom.ct.GetSpacing()) / 1000
    rows = {(r["tissue"], r["leg"]): r for r in read_rows(out / "statistics.csv")}
    assert len(rows) == len(TISSUES) * len(LEGS)
    for t in TISSUES:
        for leg in LEGS:
            values = reference(hu, labels, sides, leg, t.label)
            row = rows[t.short, leg]
            assert int(row["voxel_count"]) == values.size
            assert float(row["volume_cm3"]) == pytest.approx(values.size * voxel_cm3, rel=1e-12)
            assert float(row["mean_hu"]) == pytest.approx(values.mean(), rel=1e-9)
            assert float(row["std_hu"]) == pytest.approx(values.std(ddof=1), rel=1e-6)
            assert float(row["median_hu"]) == np.median(values)


def test_slice_areas_equal_reference(truth_stats, phantom):
    _, out = truth_stats
    labels, sides = array(phantom.truth), array(phantom.sides)   # default phantom: slices are array axis 0
    pixel_cm2 = phantom.ct.GetSpacing()[0] * phantom.ct.GetSpacing()[1] / 100
    rows = read_rows(out / "slices.csv")
    assert len(rows) == labels.shape[0]
    positions = [float(r["position_mm"]) for r in rows]
    assert np.all(np.diff(positions) > 0)
    for z, row in enumerate(rows):
        for t in TISSUES:
            for leg in LEGS:
                expected = ((labels[z] == t.label) & leg_mask(sides[z], leg)).sum() * pixel_cm2
                assert float(row[f"{t.short}_{leg}_cm2"]) == pytest.approx(expected, abs=1e-9)


def test_derived_metrics_equal_reference(truth_stats, phantom):
    hu, out = truth_stats
    labels, sides = array(phantom.truth), array(phantom.sides)
    voxel_cm3 = np.prod(phantom.ct.GetSpacing()) / 1000
    for row in read_rows(out / "metrics.csv"):
        leg = row["leg"]
        vol = {t.short: reference(hu, labels, sides, leg, t.label).size * voxel_cm3 for t in TISSUES}
        sm = reference(hu, labels, sides, leg, 2)
        fat = np.concatenate([reference(hu, labels, sides, leg, 1), reference(hu, labels, sides, leg, 3)])
        nama = ((sm >= NAMA_HU[0]) & (sm <= NAMA_HU[1])).sum() * voxel_cm3
        lama = ((sm >= LAMA_HU[0]) & (sm <= LAMA_HU[1])).sum() * voxel_cm3
        expected = {
            "total_fat_cm3": vol["SAT"] + vol["IMAT"], "imat_to_sat": vol["IMAT"] / vol["SAT"],
            "sm_to_fat": vol["SM"] / (vol["SAT"] + vol["IMAT"]),
            "imat_pct_of_compartment": 100 * vol["IMAT"] / (vol["SM"] + vol["IMAT"]),
            "fat_mean_hu": fat.mean(), "sm_mean_hu": sm.mean(), "nama_cm3": nama, "lama_cm3": lama,
            "nama_pct": 100 * nama / vol["SM"], "lama_pct": 100 * lama / vol["SM"],
        }
        for name, value in expected.items():
            assert float(row[name]) == pytest.approx(value, rel=1e-9), name
        assert 0 < float(row["lama_pct"]) < 100


def test_volumes_means_and_std_equal_slicer(segmented, phantom_file):
    """Load the written .seg.nrrd and the CT into real MRML; count and average the way Segment Statistics
    does (conftest.slicer_segment_statistics)."""
    import slicer
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(phantom_file))
    assert storage.ReadData(volume)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg_storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    seg_storage.SetFileName(str(segmented / "segmentation.seg.nrrd"))
    assert seg_storage.ReadData(segmentation)
    rows = {r["tissue"]: r for r in read_rows(segmented / "statistics.csv") if r["leg"] == "both"}
    voxel_cm3 = np.prod(volume.GetSpacing()) / 1000
    for t in TISSUES:
        count, mean, std = slicer_segment_statistics(scene, segmentation, volume, t.short)
        assert int(rows[t.short]["voxel_count"]) == count
        assert float(rows[t.short]["volume_cm3"]) == pytest.approx(count * voxel_cm3, rel=1e-9)
        assert float(rows[t.short]["mean_hu"]) == pytest.approx(mean, rel=1e-9)
        assert float(rows[t.short]["std_hu"]) == pytest.approx(std, rel=1e-6)


def test_stats_of_corrected_segmentation_changes_only_edited_tissue(tmp_path, phantom, phantom_file, segmented):
    labels = array(sitk.ReadImage(str(segmented / "labels.nii.gz")))
    edited = labels.copy()
    edited[edited == 3] = 0                                  # the reader erased every IMAT voxel
    image = sitk.GetImageFromArray(edited)
    image.CopyInformation(phantom.ct)
    sitk.WriteImage(image, str(tmp_path / "edited.nii.gz"))
    stats_case(phantom_file, tmp_path / "edited.nii.gz", tmp_path / "out")
    before = {(r["tissue"], r["leg"]): r for r in read_rows(segmented / "statistics.csv")}
    after = {(r["tissue"], r["leg"]): r for r in read_rows(tmp_path / "out" / "statistics.csv")}
    for key in before:
        if key[0] == "IMAT":
            assert int(after[key]["voxel_count"]) == 0
        else:
            assert after[key] == before[key]
