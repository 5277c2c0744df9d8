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


def stored_image(canonical, spacing_xyz, origin):
    """An image stored with permuted and flipped axes: index i runs along −x (patient left → right), j along +z,
    k along +y. `canonical` is (z, y, x) in LPS order; the storage is worked out here, not by AxialView."""
    stored = np.ascontiguousarray(canonical.transpose(1, 0, 2)[:, :, ::-1])    # (k=y, j=z, i=reversed x)
    image = sitk.GetImageFromArray(stored)
    sx, sy, sz = spacing_xyz
    image.SetSpacing((sx, sz, sy))
    image.SetDirection((-1, 0, 0,
                        0, 0, 1,
                        0, 1, 0))
    image.SetOrigin(origin)
    return image


def test_anisotropic_spacing_and_permuted_axes_by_hand(tmp_path):
    """0.6 × 0.9 mm pixels, 2.5 mm slices, axes stored permuted and flipped: volumes, areas and HU
    statistics through `legsegnet stats` against hand computation on the canonical arrays."""
    nz, ny, nx = 5, 40, 300
    rng = np.random.default_rng(3)
    hu = np.full((nz, ny, nx), -1000, np.int16)
    labels = np.zeros((nz, ny, nx), np.uint8)
    x_mm = 60.0 + (np.arange(nx) - (nx - 1)) * 0.6     # LPS x of canonical column (i = 0 is the left-most)
    right_leg, left_leg = (x_mm > -70) & (x_mm < -30), (x_mm > 30) & (x_mm < 70)
    for z in range(nz):
        sm_rows, sat_rows = np.arange(5, 35 - 4 * z), np.arange(35 - 4 * z, 37 - 4 * z)   # areas shrink superiorly
        for columns, low, high in ((right_leg, -10, 90), (left_leg, 0, 120)):
            box = np.ix_(sm_rows, np.flatnonzero(columns))
            labels[z][box] = 2
            hu[z][box] = rng.integers(low, high, size=(sm_rows.size, columns.sum()))
        box = np.ix_(sat_rows, np.flatnonzero(right_leg | left_leg))
        labels[z][box] = 1
        hu[z][box] = rng.integers(-150, -50, size=(sat_rows.size, (right_leg | left_leg).sum()))
    # origin = LPS point of stored index (0, 0, 0): canonical x = nx - 1, y = 0, z = 0
    origin = (x_mm[-1], -20.0, 100.0)
    sitk.WriteImage(stored_image(hu, (0.6, 0.9, 2.5), origin), str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(stored_image(labels, (0.6, 0.9, 2.5), origin), str(tmp_path / "labels.nrrd"))
    assert run_cli("stats", tmp_path / "ct.nrrd", tmp_path / "labels.nrrd", "-o", tmp_path / "out") == 0

    voxel_cm3, pixel_cm2 = 0.6 * 0.9 * 2.5 / 1000, 0.6 * 0.9 / 100
    rows = {(r["tissue"], r["leg"]): r for r in read_rows(tmp_path / "out" / "statistics.csv")}
    for tissue, label in (("SAT", 1), ("SM", 2)):
        for leg, columns in (("both", right_leg | left_leg), ("right", right_leg), ("left", left_leg)):
            values = hu[:, :, columns][labels[:, :, columns] == label].astype(float)
            row = rows[tissue, leg]
            assert int(row["voxel_count"]) == values.size
            assert float(row["volume_cm3"]) == pytest.approx(values.size * voxel_cm3, rel=1e-12)
            assert float(row["mean_hu"]) == pytest.approx(values.mean(), rel=1e-9)
            assert float(row["std_hu"]) == pytest.approx(values.std(ddof=1), rel=1e-9)
            assert float(row["median_hu"]) == np.median(values)
    slices = read_rows(tmp_path / "out" / "slices.csv")
    assert [float(r["position_mm"]) for r in slices] == pytest.approx([100.0 + 2.5 * z for z in range(nz)])
    for z, row in enumerate(slices):
        expected_sm_right = (30 - 4 * z) * right_leg.sum() * pixel_cm2
        assert float(row["SM_right_cm2"]) == pytest.approx(expected_sm_right, rel=1e-12)
        assert float(row["SM_left_cm2"]) == pytest.approx((labels[z][:, left_leg] == 2).sum() * pixel_cm2, rel=1e-12)
        assert float(row["SAT_both_cm2"]) == pytest.approx(2 * (right_leg | left_leg).sum() * pixel_cm2, rel=1e-12)
