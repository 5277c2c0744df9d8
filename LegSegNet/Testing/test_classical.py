"""Classical engine accuracy on phantoms (exact truth) and plausibility on real CT."""
import numpy as np
import pytest
from scipy import ndimage

from LegSegNetLib.classical import ClassicalEngine
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.tissues import BY_SHORT, TISSUES
from LegSegNetLib.volumes import AxialView, read_ct

from conftest import REAL_CASES, array, dice, real_case, tissue_dice


def segment_phantom(phantom):
    view = AxialView.of(phantom.ct)
    labels = ClassicalEngine().segment(view.to_canonical(array(phantom.ct)), view.spacing)
    return view.from_canonical(labels)


@pytest.mark.parametrize("seed,touching,noise", [(1, False, 15), (2, True, 15), (3, False, 25), (4, True, 10)])
def test_dice_on_phantoms(seed, touching, noise):
    phantom = make_phantom(seed=seed, touching=touching, noise=noise)
    labels, truth = segment_phantom(phantom), array(phantom.truth)
    scores = tissue_dice(labels, truth)
    assert np.mean(list(scores.values())) >= 0.90, scores
    assert scores["IMAT"] >= 0.75, scores


def test_table_and_air_stay_unlabelled(phantom):
    labels, truth = segment_phantom(phantom), array(phantom.truth)
    outside = array(phantom.sides) == 0          # air, CT table
    assert labels[outside].sum() == 0 or (labels[outside] > 0).mean() < 1e-3
    assert (truth[labels == 0] == 0).mean() > 0.99


def test_cancel_stops_between_slabs(phantom):
    from LegSegNetLib.errors import Cancelled
    view = AxialView.of(phantom.ct)
    calls = []
    with pytest.raises(Cancelled):
        ClassicalEngine().segment(view.to_canonical(array(phantom.ct)), view.spacing,
                                  progress=lambda done, total: calls.append(done), cancel=lambda: len(calls) >= 1)
    assert len(calls) == 1


@pytest.mark.parametrize("case", REAL_CASES)
def test_real_ct_is_plausible(case):
    """No masks exist for these scans: check what any reader would (tissue HU, proportions, no table)."""
    ct = read_ct(real_case(case))
    view = AxialView.of(ct.image)
    hu = view.to_canonical(ct.array)
    labels = ClassicalEngine().segment(hu, view.spacing)
    volume = {t.short: (labels == t.label).sum() for t in TISSUES}
    mean = {t.short: float(hu[labels == t.label].mean()) for t in TISSUES}
    assert volume["SM"] == max(volume.values())            # limbs are mostly muscle
    assert volume["SAT"] > volume["IMAT"] > 0 and volume["Bone"] > 0
    assert 20 < mean["SM"] < 70 and -120 < mean["SAT"] < -60 and mean["Bone"] > 200
    # every labelled voxel lies inside the air-bounded limb outline, never on the table below it
    body = hu > -500
    assert body[labels > 0].all()
    if case == "STS_049":                                   # table arc under the calves: rows 160+
        assert (labels[:, 160:, :] == 0).all()


def round_limb(blur=0.0, thin_arc=False):
    """Radius (pixels) from the centre of a 200² slice, the pixels next to the air, and the labels of 8 slices of
    a round limb: marrow, cortex, muscle, fat, 2 pixels of skin and an outermost ring where skin blends with air
    into fat-like HU. blur: Gaussian sigma (pixels) of the whole slice; thin_arc: a quarter of the cortex is thin
    epiphyseal cortex (160 HU) and the marrow is spongy bone in the muscle window (40 HU)."""
    y, x = np.mgrid[:200, :200] - 100.0
    r = np.hypot(y, x)
    outermost = (r < 71) & ndimage.binary_dilation(r >= 71)          # 4-neighbours of the air
    cortex = np.where(thin_arc & (x > np.abs(y)), 160, 1300)
    slice_hu = np.select([r < 12, r < 18, r < 55, r < 68, outermost, r < 71],
                         [40 if thin_arc else -50, cortex, 55, -100, -120, 40], -1000).astype(float)
    slice_hu = ndimage.gaussian_filter(slice_hu, blur) if blur else slice_hu
    hu = np.repeat(slice_hu[None], 8, axis=0) + np.random.default_rng(0).normal(0, 8, (8, 200, 200))
    return r, outermost, ClassicalEngine().segment(hu.astype(np.int16), (3.0, 0.8, 0.8))


@pytest.mark.parametrize("blur", [0.0, 0.8])
def test_bone_edge_is_where_the_pixel_is_mostly_bone(blur):
    """Partial volume and the noise smoothing spread cortex HU a pixel or two outward: bone ends where a pixel is
    mostly cortex (halfway between the cortex's HU and the muscle's), and the muscle beyond it is muscle (once,
    bone took a 1-2 pixel rim of it)."""
    r, _, labels = round_limb(blur)
    bone, beside = r < 18, (r >= 18.5) & (r < 20)
    assert dice(labels == BY_SHORT["Bone"].label, np.broadcast_to(bone, labels.shape)) > 0.98
    assert (labels[:, beside] == BY_SHORT["SM"].label).mean() > 0.99


def test_marrow_inside_thin_cortex_is_bone():
    """Thin epiphyseal cortex, blurred below the cortex threshold over part of its ring, still encloses its
    marrow (once, the ring stayed open and the marrow was labelled muscle)."""
    r, _, labels = round_limb(blur=0.5, thin_arc=True)
    assert (labels[:, r < 16] == BY_SHORT["Bone"].label).all()


def test_outermost_pixels_are_skin_not_sat():
    """Pixels next to air blend skin with it; fat-like HU there is not subcutaneous fat."""
    r, outermost, labels = round_limb()
    sat = labels == BY_SHORT["SAT"].label
    assert not sat[:, outermost].any()
    assert sat[:, (r >= 57) & (r < 67)].all()
