"""Reading CT in every supported form, writing results on the input's exact grid, Slicer segmentations."""
import numpy as np
import pytest
import SimpleITK as sitk
import slicerio.segmentation as slicerio_seg

from LegSegNetLib.errors import InputError
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.tissues import TISSUES, terminology_entry
from LegSegNetLib.segmentations import read_segmentation
from LegSegNetLib.volumes import AxialView, read_ct

from conftest import REAL_DICOM_CASE, array, dice, real_case, real_dicom_slices, run_cli, write_dicom_series

ODD_DIRECTIONS = {
    "LPS": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS-flipped": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "permuted": (0, 0, -1, 1, 0, 0, 0, -1, 0),          # i→P, j→I, k→R: stored sideways and upside down
    "oblique": tuple(np.array([[np.cos(0.2), -np.sin(0.2), 0], [np.sin(0.2), np.cos(0.2), 0], [0, 0, 1]]).ravel()),
}


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_read_image_files_keeps_geometry(tmp_path, phantom, suffix):
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(phantom.ct, str(path))
    ct = read_ct(path)
    assert ct.image.GetSize() == phantom.ct.GetSize()
    np.testing.assert_allclose(ct.image.GetSpacing(), phantom.ct.GetSpacing())
    np.testing.assert_allclose(ct.image.GetOrigin(), phantom.ct.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ct.image.GetDirection(), phantom.ct.GetDirection(), atol=1e-6)
    assert np.array_equal(ct.array, array(phantom.ct))


def test_read_dicom_series_picks_largest_and_says_so(tmp_path, phantom):
    write_dicom_series(phantom.ct, tmp_path / "study" / "a")
    write_dicom_series(phantom.ct[:, :, :5], tmp_path / "study" / "b")
    ct = read_ct(tmp_path / "study")
    assert ct.image.GetSize() == phantom.ct.GetSize()
    assert np.array_equal(ct.array, array(phantom.ct))
    assert any("2 DICOM series" in note for note in ct.notes)


def test_read_real_dicom():
    """The scanner's own files: geometry from the headers and HU equal the NIfTI copy's slices 30-37."""
    ct = read_ct(real_dicom_slices())
    whole = sitk.ReadImage(str(real_case(REAL_DICOM_CASE)))
    assert ct.image.GetSize() == (173, 176, 8)
    np.testing.assert_allclose(ct.image.GetSpacing(), (0.976562, 0.976562, 3.27), rtol=1e-5)
    np.testing.assert_allclose(ct.image.GetSpacing(), whole.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(ct.image.GetOrigin(), whole.TransformIndexToPhysicalPoint((0, 0, 30)), atol=1e-3)
    np.testing.assert_allclose(ct.image.GetDirection(), whole.GetDirection(), atol=1e-6)
    assert np.array_equal(ct.array, array(whole)[30:38])
    assert ct.notes == []


def test_dicom_of_other_modality_is_refused(tmp_path, phantom):
    with pytest.raises(InputError, match="modality is MR"):
        read_ct(write_dicom_series(phantom.ct, tmp_path / "mr", modality="MR"))


@pytest.mark.parametrize("name", list(ODD_DIRECTIONS))
def test_labels_on_input_grid_for_any_orientation(tmp_path, name):
    phantom = make_phantom(seed=5, shape=(16, 160, 208), spacing=(6.0, 1.75, 1.75), direction=ODD_DIRECTIONS[name])
    sitk.WriteImage(phantom.ct, str(tmp_path / "ct.nii.gz"))
    assert run_cli("segment", tmp_path / "ct.nii.gz", "-o", tmp_path / "out") == 0
    labels = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    ct = sitk.ReadImage(str(tmp_path / "ct.nii.gz"))
    assert labels.GetSize() == ct.GetSize()
    assert labels.GetSpacing() == ct.GetSpacing()
    assert labels.GetOrigin() == ct.GetOrigin()
    assert labels.GetDirection() == ct.GetDirection()
    # the labels are not only stamped with the geometry: they sit on the right voxels
    assert dice(array(labels) > 0, array(phantom.truth) > 0) > 0.95


def test_axial_view_round_trip():
    image = sitk.Image([5, 6, 7], sitk.sitkInt16)
    image.SetDirection(ODD_DIRECTIONS["permuted"])
    view = AxialView.of(image)
    data = np.arange(7 * 6 * 5).reshape(7, 6, 5)
    assert np.array_equal(view.from_canonical(view.to_canonical(data)), data)
    # canonical axis 0 must run inferior→superior in LPS z
    z = view.positions(image, 0)
    assert np.all(np.diff(z) > 0)


def test_seg_nrrd_has_named_coloured_segments_with_terminology(segmented):
    seg = slicerio_seg.read_segmentation(str(segmented / "segmentation.seg.nrrd"))
    by_name = {s["name"]: s for s in seg["segments"]}
    assert list(by_name) == [t.short for t in TISSUES]
    for t in TISSUES:
        segment = by_name[t.short]
        assert segment["labelValue"] == t.label
        np.testing.assert_allclose(segment["color"], t.color_float, atol=1e-3)
        assert slicerio_seg.terminology_entry_to_string(segment["terminology"]) == terminology_entry(t)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(segmented / "labels.nii.gz")))
    assert np.array_equal(seg["voxels"].transpose(2, 1, 0), labels)


def test_read_segmentation_from_cropped_seg_nrrd(tmp_path, phantom):
    """Slicer saves segmentations cropped to their extent: they must land back on the CT grid."""
    truth = array(phantom.truth)
    seg = slicerio_seg.create_segmentation(truth.shape[::-1], np.eye(4))
    from LegSegNetLib.volumes import ijk_to_lps
    matrix = ijk_to_lps(phantom.ct)
    k0, j0, i0 = 3, 20, 30
    cropped = truth[k0:, j0:, i0:]
    shift = matrix[:3, :3] @ np.array([i0, j0, k0])
    matrix[:3, 3] += shift
    seg = {"voxels": cropped.transpose(2, 1, 0).copy(), "ijkToLPS": matrix,
           "segments": [{"id": t.short, "name": t.short, "labelValue": t.label, "layer": 0} for t in TISSUES]}
    slicerio_seg.write_segmentation(str(tmp_path / "cropped.seg.nrrd"), seg)
    labels = read_segmentation(tmp_path / "cropped.seg.nrrd", phantom.ct)
    expected = np.zeros_like(truth)
    expected[k0:, j0:, i0:] = cropped
    assert np.array_equal(labels, expected)


def test_foreign_segment_names_are_refused(tmp_path, phantom):
    truth = array(phantom.truth)
    from LegSegNetLib.volumes import ijk_to_lps
    seg = {"voxels": truth.transpose(2, 1, 0).copy(), "ijkToLPS": ijk_to_lps(phantom.ct),
           "segments": [{"id": "x", "name": "liver", "labelValue": 1, "layer": 0}]}
    slicerio_seg.write_segmentation(str(tmp_path / "liver.seg.nrrd"), seg)
    with pytest.raises(InputError, match="liver"):
        read_segmentation(tmp_path / "liver.seg.nrrd", phantom.ct)


def test_the_voxel_array_outlives_its_volume(phantom_file, phantom):
    """SimpleITK's array view does not hold its image: `read_ct(path).array` would read freed memory."""
    import gc
    import weakref
    ct = read_ct(phantom_file)
    image = weakref.ref(ct.image)
    voxels = ct.array
    del ct
    gc.collect()
    assert image() is not None and not voxels.flags.writeable
    assert np.array_equal(voxels, array(phantom.ct))
