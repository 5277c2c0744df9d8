"""Left/right assignment follows the patient, not the array, and survives touching legs."""
import csv

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.sides import split_legs
from LegSegNetLib.tissues import SIDE_LABELS
from LegSegNetLib.volumes import AxialView

from conftest import array, run_cli
from test_io import ODD_DIRECTIONS


def side_map(phantom, mask):
    view = AxialView.of(phantom.ct)
    sides = split_legs(view.to_canonical(mask), view, phantom.ct)
    return view.from_canonical(sides)


@pytest.mark.parametrize("name", ["LPS", "RAS-flipped", "permuted"])
def test_left_leg_is_patient_left(tmp_path, name):
    """The phantom's left leg has thicker fat; the table must say so whatever the storage order."""
    phantom = make_phantom(seed=6, shape=(12, 160, 208), spacing=(6.0, 1.75, 1.75),
                           direction=ODD_DIRECTIONS[name], left_sat_scale=1.8)
    truth, truth_sides = array(phantom.truth), array(phantom.sides)
    # the phantom's left leg really is on the patient's left (LPS x > 0 for a centred scan)
    k, j, i = np.argwhere(truth_sides == SIDE_LABELS["left"]).mean(axis=0)
    assert phantom.ct.TransformContinuousIndexToPhysicalPoint((i, j, k))[0] > 0
    sitk.WriteImage(phantom.ct, str(tmp_path / "ct.nii.gz"))
    assert run_cli("segment", tmp_path / "ct.nii.gz", "-o", tmp_path / "out") == 0
    with open(tmp_path / "out" / "statistics.csv") as f:
        sat = {r["leg"]: float(r["volume_cm3"]) for r in csv.DictReader(f) if r["tissue"] == "SAT"}
    voxel_cm3 = np.prod(phantom.ct.GetSpacing()) / 1000
    true_left = ((truth == 1) & (truth_sides == SIDE_LABELS["left"])).sum() * voxel_cm3
    true_right = ((truth == 1) & (truth_sides == SIDE_LABELS["right"])).sum() * voxel_cm3
    assert true_left > 1.3 * true_right
    assert sat["left"] == pytest.approx(true_left, rel=0.1)
    assert sat["right"] == pytest.approx(true_right, rel=0.1)


@pytest.mark.parametrize("touching", [False, True])
def test_split_matches_truth(touching):
    phantom = make_phantom(seed=7, touching=touching)
    truth_sides = array(phantom.sides)
    sides = side_map(phantom, truth_sides > 0)
    agreement = (sides[truth_sides > 0] == truth_sides[truth_sides > 0]).mean()
    assert agreement > (0.999 if not touching else 0.98)


def test_single_leg_uses_patient_midline():
    phantom = make_phantom(seed=8, shape=(8, 160, 208), spacing=(6.0, 1.75, 1.75))
    truth_sides = array(phantom.sides)
    only_left = truth_sides == SIDE_LABELS["left"]
    sides = side_map(phantom, only_left)
    assert (sides[only_left] == SIDE_LABELS["left"]).all()
