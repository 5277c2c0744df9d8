"""Shared fixtures: phantoms written to disk, the real CT scans (Data/real-ct), running the CLI."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.cli import main as cli_main
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.tissues import TISSUES

# The browser tests in web/ run in .venv-web (trame-slicer pins slicer-core 5.11). Elsewhere their folder is not
# collected at all, so its conftest never takes this one's place as the module `conftest`.
collect_ignore = [] if importlib.util.find_spec("trame_slicer") else ["web"]

REPO = Path(__file__).resolve().parents[2]
REAL_CT = Path(__file__).resolve().parent / "Data" / "real-ct"   # compact copy, see its README.md
REAL_CASES = ("STS_017", "STS_028", "STS_049")
REAL_DICOM_CASE = "STS_028"                                      # the case a few DICOM slices were kept of


def real_case(name):
    """A real scan as an int16 NIfTI file (the repo's copy of ../shared/data/real-ct)."""
    return REAL_CT / f"{name}.nii.gz"


def real_dicom_slices():
    """Consecutive DICOM slices of REAL_DICOM_CASE as exported by the scanner."""
    return REAL_CT / f"{REAL_DICOM_CASE}-dicom"


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 2.0 * np.logical_and(a, b).sum() / total if total else 1.0


def tissue_dice(labels, truth):
    """Dice per tissue short name."""
    return {t.short: dice(labels == t.label, truth == t.label) for t in TISSUES}


def assert_same_rows(rows, expected, rel):
    """Two tables' rows (dicts) hold the same keys and values: text exactly, numbers within rel (NaN = NaN)."""
    assert len(rows) == len(expected) > 0
    for a, b in zip(rows, expected):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == (b[key] if isinstance(b[key], str) else pytest.approx(b[key], rel=rel, nan_ok=True))


def array(image):
    return sitk.GetArrayFromImage(image)


def run_cli(*args):
    return cli_main([str(a) for a in args])


@pytest.fixture(scope="session")
def phantom():
    return make_phantom(seed=0)


@pytest.fixture(scope="session")
def phantom_file(tmp_path_factory, phantom):
    folder = tmp_path_factory.mktemp("phantom")
    sitk.WriteImage(phantom.ct, str(folder / "ct.nii.gz"))
    sitk.WriteImage(phantom.truth, str(folder / "truth.nii.gz"))
    return folder / "ct.nii.gz"


@pytest.fixture(scope="session")
def segmented(tmp_path_factory, phantom_file):
    """Output folder of `legsegnet segment` on the default phantom."""
    out = tmp_path_factory.mktemp("segmented") / "out"
    assert run_cli("segment", phantom_file, "-o", out, "--engine", "threshold") == 0
    return out


def write_dicom_series(image, folder, modality="CT", patient_name="Test^Patient", series_uid=None,
                       positions=None, orientations=None, slice_thickness="spacing",
                       image_type="ORIGINAL\\PRIMARY\\AXIAL", prefix="slice"):
    """Write a 3D int16 HU image as a DICOM series (one file per slice), as a scanner would.

    Knobs to write what broken exports hold: `positions` / `orientations` replace the ImagePositionPatient /
    ImageOrientationPatient of each slice (uneven, tilted or mixed stacks), `slice_thickness` None leaves
    SliceThickness out, `image_type` marks localizers, `prefix` lets two series share a folder."""
    import time as _time
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    stamp = f"{_time.time_ns() % 10**12}"
    series_uid = series_uid or f"1.2.826.0.1.3680043.2.1125.{stamp}.1"
    direction = image.GetDirection()
    cosines = direction[0:7:3] + direction[1:8:3]
    tags = {
        "0008|0060": modality, "0010|0010": patient_name, "0010|0020": "ID12345", "0010|0030": "19500101",
        "0020|000d": f"1.2.826.0.1.3680043.2.1125.{stamp}.0", "0020|000e": series_uid, "0008|0008": image_type,
        "0028|1052": "0", "0028|1053": "1", "0028|1054": "HU",
    }
    if slice_thickness == "spacing":
        slice_thickness = image.GetSpacing()[2]
    if slice_thickness is not None:
        tags["0018|0050"] = f"{slice_thickness:.6f}"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        position = positions[k] if positions is not None else image.TransformIndexToPhysicalPoint((0, 0, k))
        orientation = orientations[k] if orientations is not None else cosines
        piece.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
        piece.SetMetaData("0020|0037", "\\".join(f"{v:.6f}" for v in orientation))
        piece.SetMetaData("0020|0013", str(k + 1))
        piece.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"{prefix}{k:04d}.dcm"))
        writer.Execute(piece)
    return folder


def slicer_segment_statistics(scene, segmentation, volume, segment_name):
    """Voxel count, mean and sample std of the CT inside one segment, computed the way Segment Statistics'
    plugins do (segment exported to a labelmap on the CT grid, vtkImageAccumulate with a stencil). The
    SegmentStatistics scripted module itself is not in the slicer-core wheel."""
    import slicer
    import vtk
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segmentation.GetSegmentation().GetSegmentIdBySegmentName(segment_name))
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume)
    stencil = vtk.vtkImageToImageStencil()
    stencil.SetInputData(labelmap.GetImageData())
    stencil.ThresholdByUpper(1)
    stencil.Update()
    accumulate = vtk.vtkImageAccumulate()
    accumulate.SetInputData(volume.GetImageData())
    accumulate.SetStencilData(stencil.GetOutput())
    accumulate.Update()
    return accumulate.GetVoxelCount(), accumulate.GetMean()[0], accumulate.GetStandardDeviation()[0]
