"""Every definition in README's tables, pinned with values written here (never imported from the code under
test), on arrays small enough to work out by hand."""
import math

import numpy as np
import pytest

from LegSegNetLib.classical import ClassicalEngine
from LegSegNetLib.statistics import compute_statistics

SAT, SM, IMAT, BONE = 1, 2, 3, 4      # README's label table
RIGHT, LEFT = 1, 2                    # side map values (tissues.SIDE_LABELS)


def classify_block(inner, surround=None):
    """Classical labels of one axial slice: a 100 × 100 mm limb of `surround` HU (or `inner` everywhere) with a
    20 × 20 mm patch of `inner` HU in the middle; returns the label at the patch centre."""
    hu = np.full((1, 120, 120), -1000, np.int16)
    hu[0, 10:110, 10:110] = inner if surround is None else surround
    hu[0, 50:70, 50:70] = inner
    labels = ClassicalEngine().segment(hu, (5.0, 1.0, 1.0))
    return int(labels[0, 60, 60])


# README (Engines): fat −190..−30 HU, muscle −29..150 HU (both inclusive), bone = cortex above 200 HU.
@pytest.mark.parametrize("hu,label", [
    (-191, 0), (-190, SAT),          # fat window, lower edge
    (-30, SAT), (-29, SM),           # fat / muscle boundary
    (150, SM), (151, 0),             # muscle window, upper edge
    (200, 0), (201, BONE),           # cortex threshold
])
def test_hu_window_edges_on_a_uniform_limb(hu, label):
    """A limb of one HU value: fat outside the muscle compartment is SAT; muscle makes its own compartment."""
    assert classify_block(hu) == label


@pytest.mark.parametrize("hu,label", [(-191, 0), (-190, IMAT), (-30, IMAT), (-29, SM)])
def test_fat_window_edges_inside_muscle(hu, label):
    """Fat enclosed by muscle (50 HU) is IMAT; the same edges hold inside the compartment."""
    assert classify_block(hu, surround=50) == label


def hand_case():
    """Two axial slices of 2 × 4 voxels; columns 0-1 are the right leg, 2-3 the left."""
    labels = np.array([[[SAT, SAT, SM, SM], [SM, IMAT, SM, BONE]],
                       [[SAT, 0, SM, SM], [SM, SM, IMAT, SAT]]], np.uint8)
    hu = np.array([[[-100, -80, 40, 60], [20, -50, 100, 700]],
                   [[-90, -1000, 30, 151], [-29, 29, -60, -120]]], np.int16)
    sides = np.where(np.arange(4) < 2, RIGHT, LEFT)[None, None].repeat(2, 0).repeat(2, 1).astype(np.uint8)
    sides[labels == 0] = 0
    return hu, labels, sides


SPACING = (2.0, 0.5, 0.8)     # z, y, x mm: voxel 0.8 mm³ = 0.0008 cm³, pixel 0.4 mm² = 0.004 cm²


@pytest.fixture(scope="module", params=["int16", "float64"])
def hand_stats(request):
    hu, labels, sides = hand_case()
    return compute_statistics(hu.astype(request.param), labels, sides, SPACING, [10.0, 12.0])


# (tissue, leg): voxel_count, mean, sample std (n − 1), median; values worked out by hand
EXPECTED_ROWS = {
    ("SAT", "both"): (4, -97.5, 17.07825127659933, -95.0),      # -100 -80 -90 -120; median of -100, -90
    ("SAT", "right"): (3, -90.0, 10.0, -90.0),
    ("SAT", "left"): (1, -120.0, math.nan, -120.0),
    ("SM", "both"): (8, 50.125, 54.619299310251655, 35.0),       # 40 60 20 100 30 151 -29 29
    ("SM", "right"): (3, 6.666666666666667, 31.214312956291916, 20.0),
    ("SM", "left"): (5, 76.2, 49.670917044081236, 60.0),
    ("IMAT", "both"): (2, -55.0, 7.0710678118654755, -55.0),
    ("IMAT", "right"): (1, -50.0, math.nan, -50.0),
    ("Bone", "left"): (1, 700.0, math.nan, 700.0),
    ("Bone", "right"): (0, math.nan, math.nan, math.nan),
}


@pytest.mark.parametrize("key", sorted(EXPECTED_ROWS))
def test_statistics_rows_by_hand(hand_stats, key):
    count, mean, std, median = EXPECTED_ROWS[key]
    row = hand_stats.row(*key)
    assert row["voxel_count"] == count
    assert row["volume_cm3"] == pytest.approx(count * 0.0008, rel=1e-12)
    assert row["mean_hu"] == pytest.approx(mean, rel=1e-12, nan_ok=True)
    assert row["std_hu"] == pytest.approx(std, rel=1e-9, nan_ok=True)
    assert row["median_hu"] == pytest.approx(median, nan_ok=True)


# README (metrics.csv): NAMA = SM voxels with 30..150 HU, LAMA = SM voxels with −29..29 HU (inclusive).
# SM values: right 20 -29 29 (LAMA 3, NAMA 0); left 40 60 100 30 151 (NAMA 4: 151 is out; LAMA 0).
EXPECTED_METRICS = {
    "both": {"total_fat_cm3": 6 * 0.0008, "imat_to_sat": 2 / 4, "sm_to_fat": 8 / 6, "imat_pct_of_compartment": 20.0,
             "fat_mean_hu": -500 / 6, "sm_mean_hu": 50.125, "nama_cm3": 4 * 0.0008, "lama_cm3": 3 * 0.0008,
             "nama_pct": 50.0, "lama_pct": 37.5},
    "right": {"total_fat_cm3": 4 * 0.0008, "imat_to_sat": 1 / 3, "sm_to_fat": 3 / 4, "imat_pct_of_compartment": 25.0,
              "fat_mean_hu": -80.0, "sm_mean_hu": 20 / 3, "nama_cm3": 0.0, "lama_cm3": 3 * 0.0008,
              "nama_pct": 0.0, "lama_pct": 100.0},
    "left": {"total_fat_cm3": 2 * 0.0008, "imat_to_sat": 1.0, "sm_to_fat": 5 / 2,
             "imat_pct_of_compartment": 100 / 6, "fat_mean_hu": -90.0, "sm_mean_hu": 76.2,
             "nama_cm3": 4 * 0.0008, "lama_cm3": 0.0, "nama_pct": 80.0, "lama_pct": 0.0},
}


@pytest.mark.parametrize("leg", ["both", "right", "left"])
def test_derived_metrics_by_hand(hand_stats, leg):
    metrics = next(m for m in hand_stats.metrics if m["leg"] == leg)
    for name, value in EXPECTED_METRICS[leg].items():
        assert metrics[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name


def test_slice_areas_by_hand(hand_stats):
    """Area = pixel count × pixel area (0.5 × 0.8 mm = 0.004 cm²), inferior slice first."""
    first, second = hand_stats.slices
    assert (first["slice"], second["slice"]) == (0, 1)
    assert (first["position_mm"], second["position_mm"]) == (10.0, 12.0)
    expected = {"SAT_both": (2, 2), "SAT_right": (2, 1), "SAT_left": (0, 1), "SM_both": (4, 4),
                "SM_right": (1, 2), "SM_left": (3, 2), "IMAT_right": (1, 0), "IMAT_left": (0, 1),
                "Bone_left": (1, 0), "Bone_both": (1, 0)}
    for column, (a, b) in expected.items():
        assert first[f"{column}_cm2"] == pytest.approx(a * 0.004, abs=1e-15), column
        assert second[f"{column}_cm2"] == pytest.approx(b * 0.004, abs=1e-15), column


@pytest.mark.parametrize("dtype", [np.int16, np.float32])    # integer HU are counted by histogram
@pytest.mark.parametrize("hu,nama,lama", [
    (29, 0, 1), (30, 1, 0),          # NAMA lower edge = LAMA upper edge + 1
    (150, 1, 0), (151, 0, 0),        # NAMA upper edge
    (-29, 0, 1), (-30, 0, 0),        # LAMA lower edge
])
def test_nama_lama_edges(hu, nama, lama, dtype):
    """One SM voxel of the given HU among SAT voxels of −100 HU, voxel 1 mm³."""
    values = np.full((1, 2, 2), -100, dtype)
    values[0, 0, 0] = hu
    labels = np.full((1, 2, 2), SAT, np.uint8)
    labels[0, 0, 0] = SM
    stats = compute_statistics(values, labels, np.full((1, 2, 2), RIGHT, np.uint8), (1.0, 1.0, 1.0), [0.0])
    both = next(m for m in stats.metrics if m["leg"] == "both")
    assert both["nama_cm3"] == pytest.approx(nama * 0.001)
    assert both["lama_cm3"] == pytest.approx(lama * 0.001)
    assert both["nama_pct"] == pytest.approx(100.0 * nama)
    assert both["lama_pct"] == pytest.approx(100.0 * lama)


def test_ratios_with_an_empty_denominator_are_nan():
    """Only SAT present: ratios with SAT on top are 0, ratios over SM or SM + IMAT are undefined (nan)."""
    values = np.full((1, 2, 2), -100, np.int16)
    labels = np.full((1, 2, 2), SAT, np.uint8)
    stats = compute_statistics(values, labels, np.full((1, 2, 2), LEFT, np.uint8), (1.0, 1.0, 1.0), [0.0])
    left = next(m for m in stats.metrics if m["leg"] == "left")
    assert left["imat_to_sat"] == 0.0 and left["sm_to_fat"] == 0.0 and left["fat_mean_hu"] == -100.0
    for name in ("imat_pct_of_compartment", "sm_mean_hu", "nama_pct", "lama_pct"):
        assert math.isnan(left[name]), name
    right = next(m for m in stats.metrics if m["leg"] == "right")
    assert right["total_fat_cm3"] == 0.0 and math.isnan(right["imat_to_sat"])
    assert stats.row("SM", "both")["voxel_count"] == 0 and math.isnan(stats.row("SM", "both")["median_hu"])
