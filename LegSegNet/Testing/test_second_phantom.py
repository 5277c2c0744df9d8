"""Classical engine on the second, independently written phantom (second_phantom.py), so that its accuracy is not
fitted to LegSegNetLib/phantom.py (issue 15): every tissue's Dice at least the simple reference's, floors on the
Dice, and the deep fat features (popliteal fat pad, fatty region, septum open to the SAT) mostly IMAT."""
import numpy as np
import pytest

from LegSegNetLib.classical import ClassicalEngine
from LegSegNetLib.tissues import BY_SHORT

from conftest import tissue_dice
from second_phantom import make
from simple_reference import reference

# seed 1 touching, mirrored and lying on a dense table; seed 2 legs apart, no table: the first two seeds tried,
# both reaching the knee in 16 slices, so all three features are there. 16 slices (of 32) keep this fast.
DRAWS = [dict(seed=1, touching=True, mirrored=True, table_contact=True), dict(seed=2)]
SHAPE = (16, 256, 320)

# Floors below every draw measured (2026-11-30, commit e56a4ef) by 0.02-0.03. Engine Dice SAT SM IMAT Bone
# (simple reference in brackets):
#   seed 1   0.977 0.941 0.855 0.996   (0.920 0.930 0.017 0.534)
#   seed 2   0.978 0.960 0.897 0.994   (0.905 0.951 0.231 0.918)
#   seeds 101-112 at the default shape (touching: even seeds, mirrored: multiples of 3, table contact: seed % 4
#   in 1, 2): SAT 0.911-0.982, SM 0.954-0.977, IMAT 0.745-0.912, Bone 0.984-0.999; at least the reference's
#   on every tissue of every draw. Bone was 0.774-0.974 before thin epiphyseal cortex closed the condyles'
#   shell and bone edges moved to half maximum.
MIN_DICE = {"SAT": 0.89, "SM": 0.92, "IMAT": 0.72, "Bone": 0.96}
# Share of each feature's IMAT truth labelled IMAT: seed 1 0.79-0.85, 0.97-0.98, 0.76-0.77; seed 2 0.94-0.97,
# 0.95-0.98, 0.95; seeds 101-112 0.83-0.95, 0.82-0.99, 0.68-0.99 (seed 112's opening, 0.29 of it SAT).
MIN_FEATURE_IMAT = {"popliteal_fat": 0.75, "fatty_region": 0.78, "open_septum": 0.65}


@pytest.fixture(scope="module", params=DRAWS, ids=lambda draw: f"seed{draw['seed']}")
def segmented(request):
    """Truth, feature masks, the engine's and the simple reference's labels of one draw (built once)."""
    hu, truth, spacing, features = make(**request.param, shape=SHAPE)
    labels = np.asarray(ClassicalEngine().segment(hu, spacing))
    return truth, features, labels, reference(hu)


def test_at_least_the_simple_reference_tissue_by_tissue(segmented):
    truth, _, labels, simple = segmented
    engine, naive = tissue_dice(labels, truth), tissue_dice(simple, truth)
    assert all(engine[t] >= naive[t] for t in engine), (engine, naive)


def test_dice_floors(segmented):
    truth, _, labels, _ = segmented
    engine = tissue_dice(labels, truth)
    assert all(engine[t] >= MIN_DICE[t] for t in MIN_DICE), engine


def test_deep_fat_features_are_mostly_imat(segmented):
    _, features, labels, _ = segmented
    imat = BY_SHORT["IMAT"].label
    assert all(mask.sum() > 200 for mask in features.values())      # every feature is drawn in both draws
    right = {name: (labels[mask] == imat).mean() for name, mask in features.items()}
    assert all(right[name] >= MIN_FEATURE_IMAT[name] for name in right), right
