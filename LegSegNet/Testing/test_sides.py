"""Left/right assignment follows the patient, not the array, and survives touching legs."""
import csv

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.sides import split_legs, split_positions
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


def identity_image(shape, midline_column):
    """An LPS-ordered CT grid (1 mm pixels, 5 mm slices) whose patient midline (x = 0) is at `midline_column`,
    so the midline is not the array's centre."""
    image = sitk.Image(shape[2], shape[1], shape[0], sitk.sitkInt16)
    image.SetSpacing((1.0, 1.0, 5.0))
    image.SetOrigin((-float(midline_column), -50.0, 0.0))
    return image


def disc_mask(shape, centres_x, radius, z=slice(None)):
    """Legs as discs of `radius` pixels centred on row 50 at the given columns, in slices z."""
    yy, xx = np.mgrid[:shape[1], :shape[2]]
    mask = np.zeros(shape, bool)
    for cx in centres_x:
        mask[z] |= ((yy - 50) ** 2 + (xx - cx) ** 2 <= radius ** 2)[None]
    return mask


def split(mask, image):
    return split_legs(mask, AxialView.of(image), image)


@pytest.mark.parametrize("side,centre,midline", [
    ("right", 115, 130),       # right leg only, between the array centre (100) and the midline
    ("left", 85, 70),          # left leg only, between the midline and the array centre
    ("right", 20, 70),         # right leg near the array's low edge
    ("left", 180, 130),        # left leg near the array's high edge
])
def test_single_leg_split_at_the_patient_midline(side, centre, midline):
    """With one leg in every slice the fallback split is LPS x = 0, not the array edge or centre."""
    shape = (4, 100, 200)
    image = identity_image(shape, midline)
    mask = disc_mask(shape, [centre], 12)
    sides = split(mask, image)
    assert (sides[mask] == SIDE_LABELS[side]).all()
    assert (sides[~mask] == 0).all()


def test_touching_legs_off_centre_split_where_they_meet():
    """Two legs (radius 40 mm) touching at column 82, far from the array centre (130) and from x = 0 (column 100:
    the patient lies off the scanner's axis), so neither fallback could pass for the split."""
    shape = (3, 100, 260)
    image = identity_image(shape, 100)
    mask = disc_mask(shape, [45, 120], 40)
    assert mask[:, 50, 78:88].all()                          # they really touch
    positions = split_positions(mask, 1.0, AxialView.of(image).positions(image, 2))
    assert np.all(np.abs(positions - 82.5) <= 2), positions
    sides = split(mask, image)
    columns = np.broadcast_to(np.arange(shape[2]), shape)
    assert (sides[mask & (columns < 80)] == SIDE_LABELS["right"]).all()
    assert (sides[mask & (columns > 85)] == SIDE_LABELS["left"]).all()


def test_slice_with_one_leg_takes_the_median_split_of_the_others():
    """Slices 0-3 show both legs (right at columns 41-95, left at 110-170: split near 102, midline at column 60);
    slice 4 shows only the right leg's inner part (columns 70-95): it stays right, though it lies left of x = 0."""
    shape = (5, 100, 200)
    image = identity_image(shape, 60)
    mask = disc_mask(shape, [68], 27, slice(0, 4)) | disc_mask(shape, [140], 30, slice(0, 4))
    mask[4] = disc_mask(shape, [68], 27)[4]
    mask[4, :, :70] = False
    positions = split_positions(mask, 1.0, AxialView.of(image).positions(image, 2))
    assert np.all((positions > 95) & (positions <= 110)), positions
    assert positions[4] == int(np.median(positions[:4]))
    sides = split(mask, image)
    assert (sides[4][mask[4]] == SIDE_LABELS["right"]).all()
    assert (sides[:4, :, :100][mask[:4, :, :100]] == SIDE_LABELS["right"]).all()
    assert (sides[:4, :, 105:][mask[:4, :, 105:]] == SIDE_LABELS["left"]).all()


@pytest.mark.parametrize("gap_mm,second_scale,bridge,two_legs", [
    (40, 1.0, 0.0, False),      # peaks closer than 50 mm: one leg
    (70, 1.0, 0.0, True),
    (70, 0.2, 0.0, False),      # second peak below a quarter of the first: noise, not a leg
    (70, 0.3, 0.0, True),
    (70, 1.0, 0.7, False),      # valley above 0.6 of the smaller peak: one wide leg with two humps
    (70, 1.0, 0.5, True),
])
def test_what_counts_as_a_second_leg(gap_mm, second_scale, bridge, two_legs):
    """Two blocks 10 mm wide, `gap_mm` apart (centre to centre), the second `second_scale` as tall, joined by a
    `bridge` as tall as a fraction of the first. With no valid second leg in any slice, the split falls back to
    the midline (column 10, left of both blocks)."""
    shape = (2, 200, 200)
    image = identity_image(shape, 10)
    mask = np.zeros(shape, bool)
    mask[:, 20:120, 60:70] = True
    mask[:, 20:20 + int(100 * second_scale), 60 + gap_mm:70 + gap_mm] = True
    mask[:, 20:20 + int(100 * bridge), 70:60 + gap_mm] = True
    positions = split_positions(mask, 1.0, AxialView.of(image).positions(image, 2))
    if two_legs:
        assert np.all((positions >= 70) & (positions < 60 + gap_mm)), positions
    else:
        assert np.all(positions == 10), positions
