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
