"""Classical engine on what real sarcoma CTs cropped around the tumour showed (cases of the IBSI set the tests never
saw; benchmarks/real_sat_jumps.py): a bone or a limb cut by the edge of the field of view, and a body part lying
against a limb with air between them (the genitals beside a thigh). Each case is drawn here from circles with
known tissue."""
import numpy as np
import pytest

from LegSegNetLib.classical import ClassicalEngine
from LegSegNetLib.tissues import BY_SHORT

SAT, SM, IMAT, BONE = (BY_SHORT[name].label for name in ("SAT", "SM", "IMAT", "Bone"))
SPACING = (3.0, 0.8, 0.8)
SHAPE = (200, 260)


def disk(centre, radius):
    y, x = np.mgrid[:SHAPE[0], :SHAPE[1]]
    return np.hypot(y - centre[0], x - centre[1]) < radius


def limb(centre, radius=70, sat=13):
    """HU of a round limb (skin, fat, muscle) on air, and its muscle."""
    hu = np.full(SHAPE, -1000.0)
    hu[disk(centre, radius)] = 40                       # skin
    hu[disk(centre, radius - 2)] = -100
    muscle = disk(centre, radius - 2 - sat)
    hu[muscle] = 55
    return hu, muscle


def add_bone(hu, centre, marrow=12, cortex=6):
    hu[disk(centre, marrow + cortex)] = 1300
    hu[disk(centre, marrow)] = -50                      # fatty marrow: fat HU, yet bone


def segment(slice_hu):
    hu = np.repeat(slice_hu[None], 8, axis=0) + np.random.default_rng(0).normal(0, 8, (8,) + slice_hu.shape)
    return ClassicalEngine().segment(hu.astype(np.int16), SPACING)


def test_marrow_of_a_bone_cut_by_the_field_of_view_is_bone():
    """The edge cuts through a femur: its marrow reaches the edge, so the ring of cortex never encloses it (once,
    the marrow was labelled IMAT). Two bones cut side by side keep the muscle between them."""
    hu, _ = limb((110, 130))
    for centre in ((110, 100), (110, 160)):
        add_bone(hu, centre)
    cut = slice(110, None)                               # the field of view starts at the bones' centres
    labels = segment(hu[cut])
    marrow = disk((110, 100), 11)[cut] | disk((110, 160), 11)[cut]
    between = disk((110, 130), 9)[cut]
    assert (labels[:, marrow] == BONE).mean() > 0.99
    assert (labels[:, between] == SM).mean() > 0.99


@pytest.mark.parametrize("plane_px", [2, 4])
def test_fat_plane_across_a_cut_limb_stays_inside(plane_px):
    """The field of view keeps a band of the limb; a fat plane between two muscle groups crosses all of it, so no
    column holds muscle there, as between two touching legs (once, the limb was split there and the plane was
    labelled SAT)."""
    hu, muscle = limb((100, 130))
    plane = muscle & (np.abs(np.arange(SHAPE[1]) - 150) < plane_px / 2)[None]
    hu[plane] = -100
    cut = slice(60, 140)
    labels = segment(hu[cut])
    assert (labels[:, plane[cut]] == IMAT).mean() > 0.95
    assert (labels[:, muscle[cut] & ~plane[cut]] == SM).mean() > 0.99


def test_touching_legs_cut_by_the_field_of_view_stay_apart():
    """Two legs pressed together skin to skin over more than the rows the field of view keeps (so no valley in
    the body's column profile tells them apart, only the columns without muscle): their fat where they meet is
    SAT."""
    left, left_muscle = limb((100, 80), radius=60)
    right, right_muscle = limb((100, 180), radius=60)
    hu = np.maximum(left, right)
    cut = slice(70, 130)
    labels = segment(hu[cut])
    meet = (hu[cut] == -100) & (np.abs(np.arange(SHAPE[1]) - 130) < 10)[None]
    assert (labels[:, meet] == SAT).mean() > 0.95
    assert (labels[:, (left_muscle | right_muscle)[cut]] == SM).mean() > 0.99


@pytest.mark.parametrize("rows", [slice(None), slice(0, 130)])
def test_fat_beside_a_muscle_island_stays_inside(rows):
    """Fat replaces a muscle group from its fascia (a line over it) to near the bone, with an island of muscle left
    in it (a fatty mass, atrophied muscle); no column between the island and the other muscle holds muscle, as
    between two touching legs (once, the limb was split there and the fat was labelled SAT). Also with the limb
    cut by the field of view, as on the real scan."""
    hu, muscle = limb((100, 130))
    add_bone(hu, (100, 150))
    fatty = disk((100, 130), 53) & (np.arange(SHAPE[1]) < 115)[None]      # muscle's outer 2 px: the fascia
    island = disk((100, 90), 12)
    hu[fatty & ~island] = -100
    labels = segment(hu[rows])
    beside = fatty & ~island & (np.arange(SHAPE[1]) > 102)[None]    # the columns without muscle
    assert (labels[:, beside[rows]] == IMAT).mean() > 0.9
    assert (labels[:, (fatty & ~island)[rows]] == IMAT).mean() > 0.8
    assert (labels[:, island[rows]] == SM).mean() > 0.95


def test_body_part_beside_a_limb_across_air_is_not_inside_its_fascia():
    """A small soft-tissue body part (fat around a core in the muscle window) rests against a thigh, touching its
    skin at one place with air elsewhere: the thigh's fat facing it is still SAT (once, the fascia was drawn
    around both and that fat was labelled IMAT)."""
    hu, muscle = limb((100, 110))
    centre = (100 - 67, 110 + 67)                        # up and to the side: its columns overlap the thigh's
    part = disk(centre, 26)
    hu[part] = np.maximum(hu[part], 40)
    hu[disk(centre, 24)] = -100
    hu[disk(centre, 14)] = 45
    labels = segment(hu)
    facing = (hu == -100) & disk((100, 110), 68) & disk(centre, 60)
    assert facing.sum() > 200
    assert (labels[:, facing] == SAT).mean() > 0.9
    assert (labels[:, muscle] == SM).mean() > 0.99

