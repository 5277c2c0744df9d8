"""DICOM series faults clinical exports have, written from a phantom: each is refused (exit 2, one line naming
the fault and the slice positions) or handled with a note in report.json and exact geometry."""
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.dicom import SPACING_TOLERANCE
from LegSegNetLib.phantom import make_phantom

from conftest import run_cli, write_dicom_series

SHAPE, SPACING = (12, 128, 160), (5.0, 2.25, 2.25)        # canonical (z, y, x); 12 slices 5 mm apart
DIRECTIONS = {
    "RAS-flipped": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "permuted": (0, 0, -1, 1, 0, 0, 0, -1, 0),
    "oblique": tuple(np.array([[np.cos(0.2), -np.sin(0.2), 0], [np.sin(0.2), np.cos(0.2), 0], [0, 0, 1]]).ravel()),
}
CORONAL = (1, 0, 0, 0, 0, -1)


@pytest.fixture(scope="module")
def ct():
    return make_phantom(seed=3, shape=SHAPE, spacing=SPACING).ct


def positions(image):
    return [image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(image.GetDepth())]


def z(image, k):
    """Position of slice k along the slice normal (mm), as the messages state it."""
    return f"{image.TransformIndexToPhysicalPoint((0, 0, k))[2]:.2f}"


def segment(folder, tmp_path, capsys):
    """(exit code, stderr on one line, report.json or None) of `legsegnet segment` on a folder."""
    out = tmp_path / "out"
    code = run_cli("segment", folder, "-o", out, "--engine", "threshold")
    report = json.loads((out / "report.json").read_text()) if code == 0 else None
    return code, " ".join(capsys.readouterr().err.split()), report


def assert_geometry(report, image, depth=None):
    geometry = report["input_geometry"]
    assert geometry["size"] == [image.GetWidth(), image.GetHeight(), depth or image.GetDepth()]
    np.testing.assert_allclose(geometry["spacing"], image.GetSpacing(), rtol=1e-6)   # headers: 6 decimals
    np.testing.assert_allclose(geometry["origin"], image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(geometry["direction"], image.GetDirection(), atol=1e-6)


# ---------------------------------------------------------------- accepted
@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_clean_series_has_the_exact_geometry(tmp_path, capsys, name):
    image = make_phantom(seed=3, shape=SHAPE, spacing=SPACING, direction=DIRECTIONS[name]).ct
    folder = write_dicom_series(image, tmp_path / "dicom")
    for path in folder.iterdir():            # file names in the reverse of the slice order: positions decide
        path.rename(folder / f"x{99 - int(path.stem[5:]):04d}.dcm")
    code, err, report = segment(folder, tmp_path, capsys)
    assert code == 0, err
    assert_geometry(report, image)
    assert report["notes"] == []
    labels = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    assert labels.GetSize() == image.GetSize()


def test_positions_within_the_tolerance_are_accepted(tmp_path, capsys, ct):
    jitter = 0.8 * SPACING_TOLERANCE * SPACING[0]
    moved = [(x, y, z + (jitter if k % 2 else -jitter) * (0 < k < 11)) for k, (x, y, z) in enumerate(positions(ct))]
    code, err, report = segment(write_dicom_series(ct, tmp_path / "dicom", positions=moved), tmp_path, capsys)
    assert code == 0, err
    assert_geometry(report, ct)


def test_byte_identical_duplicate_is_dropped_with_a_note(tmp_path, capsys, ct):
    folder = write_dicom_series(ct, tmp_path / "dicom")
    shutil.copyfile(folder / "slice0005.dcm", folder / "slice0005 copy.dcm")
    code, err, report = segment(folder, tmp_path, capsys)
    assert code == 0, err
    assert_geometry(report, ct)
    assert any("dropped 1 duplicate" in note and "slice0005 copy.dcm" in note and "slice0005.dcm" in note
               for note in report["notes"]), report["notes"]


def test_single_file_series_takes_the_slice_thickness(tmp_path, capsys, ct):
    one = ct[:, :, 5:6]
    code, err, report = segment(write_dicom_series(one, tmp_path / "dicom", slice_thickness=3.0), tmp_path, capsys)
    assert code == 0, err
    assert report["input_geometry"]["size"] == [ct.GetWidth(), ct.GetHeight(), 1]
    np.testing.assert_allclose(report["input_geometry"]["spacing"], (2.25, 2.25, 3.0))
    np.testing.assert_allclose(report["input_geometry"]["origin"], one.GetOrigin(), atol=1e-6)
    assert any("SliceThickness, 3 mm" in note for note in report["notes"]), report["notes"]


def test_localizer_series_is_skipped(tmp_path, capsys, ct):
    folder = write_dicom_series(ct, tmp_path / "dicom")
    scout = sitk.Image(96, 64, 1, sitk.sitkInt16) - 1000
    write_dicom_series(scout, folder, orientations=[CORONAL], image_type="ORIGINAL\\PRIMARY\\LOCALIZER",
                       prefix="scout")
    code, err, report = segment(folder, tmp_path, capsys)
    assert code == 0, err
    assert_geometry(report, ct)
    assert "skipped 1 localizer series" in report["notes"]


@pytest.mark.parametrize("image_type", ["ORIGINAL\\PRIMARY\\LOCALIZER", "ORIGINAL\\PRIMARY\\AXIAL"])
def test_scout_inside_the_series_is_skipped(tmp_path, capsys, ct, image_type):
    """A localizer image (or one lone image in another plane) sharing the SeriesInstanceUID."""
    uid = "1.2.826.0.1.3680043.2.1125.77.1"
    folder = write_dicom_series(ct, tmp_path / "dicom", series_uid=uid)
    write_dicom_series(sitk.Image(96, 64, 1, sitk.sitkInt16) - 1000, folder, series_uid=uid,
                       orientations=[CORONAL], image_type=image_type, prefix="scout")
    code, err, report = segment(folder, tmp_path, capsys)
    assert code == 0, err
    assert_geometry(report, ct)
    wanted = "localizer image" if "LOCALIZER" in image_type else "scout0000.dcm"
    assert any(wanted in note for note in report["notes"]), report["notes"]


def test_two_series_in_one_folder_use_the_largest_with_a_note(tmp_path, capsys, ct):
    folder = write_dicom_series(ct[:, :, :5], tmp_path / "dicom", prefix="small")
    write_dicom_series(ct, folder, prefix="large")
    code, err, report = segment(folder, tmp_path, capsys)
    assert code == 0, err
    assert_geometry(report, ct)
    assert any("2 DICOM series found; using the largest (12 files" in note for note in report["notes"])


# ---------------------------------------------------------------- refused
def refused(folder, tmp_path, capsys, *words):
    code, err, _ = segment(folder, tmp_path, capsys)
    assert code == 2, err
    assert err.startswith("legsegnet: error:") and "Traceback" not in err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "out").exists()


def test_scan_split_into_two_series_is_refused(tmp_path, capsys, ct):
    """The largest series alone would silently lose the legs' other part (or a slice whose UID is damaged)."""
    folder = write_dicom_series(ct[:, :, :8], tmp_path / "dicom", prefix="lower")
    write_dicom_series(ct[:, :, 8:], folder, prefix="upper")
    refused(folder, tmp_path, capsys, "(4 files at", f"{z(ct, 8)}, {z(ct, 9)}", "continues the chosen series")


def test_missing_file_is_a_gap(tmp_path, capsys, ct):
    folder = write_dicom_series(ct, tmp_path / "dicom")
    (folder / "slice0006.dcm").unlink()
    refused(folder, tmp_path, capsys, "gap", f"{z(ct, 5)} and {z(ct, 7)} mm", "10.00 mm", "5.00 mm apart")


def test_uneven_spacing_is_refused(tmp_path, capsys, ct):
    moved = [(x, y, z + 1.0 * (k >= 6)) for k, (x, y, z) in enumerate(positions(ct))]
    refused(write_dicom_series(ct, tmp_path / "dicom", positions=moved), tmp_path, capsys,
            "uneven slice spacing", "6.00 mm", f"{z(ct, 5)} and {float(z(ct, 6)) + 1:.2f} mm")


def test_two_different_images_at_one_position_are_refused(tmp_path, capsys, ct):
    uid = "1.2.826.0.1.3680043.2.1125.78.1"
    folder = write_dicom_series(ct, tmp_path / "dicom", series_uid=uid)
    write_dicom_series(ct[:, :, 5:6] + 10, folder, series_uid=uid, prefix="again", positions=[positions(ct)[5]])
    refused(folder, tmp_path, capsys, "two different images at the same slice position", f"{z(ct, 5)} mm",
            "slice0005.dcm", "again0000.dcm")


def test_mixed_orientations_are_refused(tmp_path, capsys, ct):
    direction = ct.GetDirection()
    axial = direction[0:7:3] + direction[1:8:3]
    orientations = [axial if k % 2 else CORONAL for k in range(ct.GetDepth())]
    refused(write_dicom_series(ct, tmp_path / "dicom", orientations=orientations), tmp_path, capsys,
            "mixes image orientations", "6 files", "orientation 1,0,0,0,0,-1", "mm along the slice normal")


def test_gantry_tilt_is_refused(tmp_path, capsys, ct):
    shift = np.tan(np.radians(10)) * SPACING[0]              # a 10 degree tilt moves each slice 0.88 mm sideways
    tilted = [(x, y + shift * k, z) for k, (x, y, z) in enumerate(positions(ct))]
    refused(write_dicom_series(ct, tmp_path / "dicom", positions=tilted), tmp_path, capsys,
            "not stacked along the slice normal", "gantry tilt", f"slice at {z(ct, 11)} mm")


@pytest.mark.parametrize("keep", [0.5, -1, 200])
def test_truncated_file_is_named(tmp_path, capsys, ct, keep):
    folder = write_dicom_series(ct, tmp_path / "dicom")
    data = (folder / "slice0004.dcm").read_bytes()
    (folder / "slice0004.dcm").write_bytes(data[:int(len(data) * keep)] if keep == 0.5 else data[:keep])
    refused(folder, tmp_path, capsys, "slice0004.dcm", "truncated or corrupt")


def test_single_file_series_without_slice_thickness_is_refused(tmp_path, capsys, ct):
    folder = write_dicom_series(ct[:, :, 5:6], tmp_path / "dicom", slice_thickness=None)
    refused(folder, tmp_path, capsys, "single-file DICOM series without SliceThickness", "slice0000.dcm")


def test_multi_frame_file_is_refused(tmp_path, capsys, ct):
    folder = tmp_path / "dicom"
    folder.mkdir()
    frames = sitk.Cast(ct + 1024, sitk.sitkUInt16)             # GDCM writes a 3D image as one multi-frame file
    frames.SetMetaData("0008|0060", "CT")
    sitk.WriteImage(frames, str(folder / "frames.dcm"))
    refused(folder, tmp_path, capsys, "frames.dcm", "multi-frame DICOM (12 frames in one file)")


def test_series_too_large_for_memory_is_refused_before_any_pixel_is_read(tmp_path, capsys, ct, monkeypatch):
    from LegSegNetLib import dicom, limits
    folder = write_dicom_series(ct, tmp_path / "dicom")

    def no_pixels(stack):
        raise AssertionError("pixels read before the size was checked")
    monkeypatch.setattr(dicom, "_read_pixels", no_pixels)
    monkeypatch.setattr(limits, "available_memory", lambda: 100_000)     # a machine with 100 kB free
    code, err, _report = segment(folder, tmp_path, capsys)
    assert code == 2 and f"size ({ct.GetWidth()}, {ct.GetHeight()}, {ct.GetDepth()}) needs about" in err, err
    monkeypatch.setattr(limits, "available_memory", lambda: None)
    monkeypatch.setattr(limits, "MAX_VOXELS", ct.GetWidth() * ct.GetHeight())   # one slice's worth
    code, err, _report = segment(folder, tmp_path, capsys)
    assert code == 2 and f"voxels, more than the limit of {ct.GetWidth() * ct.GetHeight()}" in err, err


def _rewrite(folder, change):
    import pydicom
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)
    return folder


def _unsigned_with_intercept(ds):
    ds.PixelData = (ds.pixel_array.astype(np.int32) + 1024).astype(np.uint16).tobytes()
    ds.PixelRepresentation, ds.RescaleIntercept, ds.RescaleSlope = 0, -1024, 1


def _half_slope(ds):
    ds.PixelData = (ds.pixel_array.astype(np.int16) * 2).astype(np.int16).tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = 0.5, 0


@pytest.mark.parametrize("change", [_unsigned_with_intercept, _half_slope])
def test_rescaled_pixels_give_the_exact_hu(tmp_path, ct, change):
    """uint16 0..4095 with RescaleIntercept -1024 (the usual export) and RescaleSlope 0.5 read as the same HU."""
    folder = _rewrite(write_dicom_series(ct[:, :, :3], tmp_path / "dicom"), change)
    from LegSegNetLib.volumes import read_ct
    assert np.array_equal(read_ct(folder).array, sitk.GetArrayFromImage(ct[:, :, :3]))


@pytest.mark.parametrize("tag, value, words", [("PhotometricInterpretation", "MONOCHROME1", ["MONOCHROME1"]),
                                               ("RescaleSlope", 0, ["RescaleSlope 0"])])
def test_pixel_values_readers_misread_are_refused(tmp_path, capsys, ct, tag, value, words):
    """GDCM inverted MONOCHROME1 (every HU with its sign flipped) and read RescaleSlope 0 as 1: exit 0 before."""
    folder = _rewrite(write_dicom_series(ct[:, :, :3], tmp_path / "dicom"), lambda ds: setattr(ds, tag, value))
    refused(folder, tmp_path, capsys, *words)
