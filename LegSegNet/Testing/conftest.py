"""Shared fixtures: phantoms written to disk, the real CT scans in ../shared, running the CLI."""
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.cli import main as cli_main
from LegSegNetLib.phantom import make_phantom

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("LEGSEGNET_SHARED", REPO.parent / "shared"))
REAL_CT = SHARED / "data" / "real-ct"
REAL_CASES = ("STS_017", "STS_028", "STS_049")


def real_case(name):
    """DICOM folder of a real scan; fails (not skips) with a clear message when ../shared is absent."""
    folder = REAL_CT / name / "dicom"
    if not folder.is_dir():
        pytest.fail(f"real CT data missing: {folder} (expected ../shared beside the repo, or set LEGSEGNET_SHARED)")
    return folder


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 2.0 * np.logical_and(a, b).sum() / total if total else 1.0


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


def write_dicom_series(image, folder, modality="CT", patient_name="Test^Patient", series_uid=None):
    """Write a 3D int16 HU image as a DICOM series (one file per slice), as a scanner would."""
    import time as _time
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    stamp = f"{_time.time_ns() % 10**12}"
    series_uid = series_uid or f"1.2.826.0.1.3680043.2.1125.{stamp}.1"
    direction = image.GetDirection()
    tags = {
        "0008|0060": modality, "0010|0010": patient_name, "0010|0020": "ID12345", "0010|0030": "19500101",
        "0020|000d": f"1.2.826.0.1.3680043.2.1125.{stamp}.0", "0020|000e": series_uid,
        "0020|0037": "\\".join(f"{v:.6f}" for v in direction[0:7:3] + direction[1:8:3]),
        "0028|1052": "0", "0028|1053": "1", "0028|1054": "HU",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        piece.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        piece.SetMetaData("0020|0013", str(k + 1))
        piece.SetMetaData("0018|0050", f"{image.GetSpacing()[2]:.6f}")
        piece.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
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
