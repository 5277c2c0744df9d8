"""Statistics on the original HU at the original resolution: per tissue and leg, per slice, derived metrics.

Every definition lives here (and is repeated in words in README.md). Column meanings follow Slicer's
Segment Statistics: volume = voxel count × voxel volume; mean, standard deviation (sample, n − 1, as
vtkImageAccumulate computes it) and median of the HU values inside the segment.
"""
import csv
from dataclasses import dataclass

import numpy as np

from .tissues import BY_SHORT, LEGS, SIDE_LABELS, TISSUES

NAMA_HU = (30, 150)    # normal-attenuation muscle
LAMA_HU = (-29, 29)    # low-attenuation muscle
SLAB = 32
MAX_HISTOGRAM_BINS = 1 << 16   # medians of integer HU by histogram up to this span of labelled values; else sorted

# column, Slicer Segment Statistics key it matches, unit, description
STAT_COLUMNS = (
    ("voxel_count", "LabelmapSegmentStatisticsPlugin.voxel_count", "voxels", "number of voxels"),
    ("volume_cm3", "LabelmapSegmentStatisticsPlugin.volume_cm3", "cm3", "voxel count × voxel volume"),
    ("mean_hu", "ScalarVolumeSegmentStatisticsPlugin.mean", "HU", "mean CT value"),
    ("std_hu", "ScalarVolumeSegmentStatisticsPlugin.stdev", "HU", "sample standard deviation (n - 1) of CT values"),
    ("median_hu", "ScalarVolumeSegmentStatisticsPlugin.median", "HU", "median CT value"),
)

# metric, unit, description (per leg)
METRICS = (
    ("total_fat_cm3", "cm3", "SAT + IMAT volume"),
    ("imat_to_sat", "ratio", "IMAT volume / SAT volume"),
    ("sm_to_fat", "ratio", "SM volume / (SAT + IMAT) volume"),
    ("imat_pct_of_compartment", "%", "100 × IMAT / (SM + IMAT): fat share of the muscle compartment"),
    ("fat_mean_hu", "HU", "mean HU over SAT and IMAT voxels"),
    ("sm_mean_hu", "HU", "mean HU of skeletal muscle"),
    ("nama_cm3", "cm3", f"SM volume with HU in {NAMA_HU[0]}..{NAMA_HU[1]} (normal-attenuation muscle)"),
    ("lama_cm3", "cm3", f"SM volume with HU in {LAMA_HU[0]}..{LAMA_HU[1]} (low-attenuation muscle)"),
    ("nama_pct", "%", "100 × NAMA / SM volume"),
    ("lama_pct", "%", "100 × LAMA / SM volume"),
)

N_SIDES = 3   # side map values 0 (none), 1 (right), 2 (left)


@dataclass
class Statistics:
    rows: list          # dicts: tissue, label, leg, then STAT_COLUMNS
    slices: list        # dicts: slice, position_mm, then <tissue>_<leg>_cm2
    metrics: list       # dicts: leg, then METRICS

    def write(self, folder):
        _write_csv(folder / "statistics.csv", self.rows)
        _write_csv(folder / "slices.csv", self.slices)
        _write_csv(folder / "metrics.csv", self.metrics)

    def row(self, tissue, leg):
        return next(r for r in self.rows if r["tissue"] == tissue and r["leg"] == leg)


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def compute_statistics(hu, labels, sides, spacing, positions_mm):
    """hu, labels, sides: canonical arrays (z, y, x); spacing (z, y, x) mm; positions_mm: LPS z per slice."""
    acc, per_slice = _accumulate(hu, labels, sides)
    medians = _medians(hu, labels, sides, acc.pop("hist"))
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    pixel_cm2 = float(spacing[1] * spacing[2]) / 100.0
    rows, metrics = [], []
    for leg in LEGS:
        sums = {k: _leg_sum(v, leg) for k, v in acc.items()}
        for tissue in TISSUES:
            n = int(sums["count"][tissue.label])
            mean = sums["sum"][tissue.label] / n if n else float("nan")
            var = (sums["sumsq"][tissue.label] - n * mean * mean) / (n - 1) if n > 1 else float("nan")
            rows.append({"tissue": tissue.short, "label": tissue.label, "leg": leg, "voxel_count": n,
                         "volume_cm3": n * voxel_cm3, "mean_hu": mean, "std_hu": float(np.sqrt(max(var, 0.0))) if n > 1 else float("nan"),
                         "median_hu": medians[tissue.label, leg]})
        metrics.append({"leg": leg, **derived_metrics(sums, voxel_cm3)})
    columns = {"slice": np.arange(per_slice.shape[0]), "position_mm": np.asarray(positions_mm, float)}
    for tissue in TISSUES:
        for leg in LEGS:
            columns[f"{tissue.short}_{leg}_cm2"] = _leg_sum(per_slice, leg)[:, tissue.label] * pixel_cm2
    slices = [dict(zip(columns, values)) for values in zip(*(c.tolist() for c in columns.values()))]
    return Statistics(rows, slices, metrics)


def derived_metrics(sums, voxel_cm3):
    vol = {t.short: sums["count"][t.label] * voxel_cm3 for t in TISSUES}
    sat, sm, imat = vol["SAT"], vol["SM"], vol["IMAT"]
    fat = [BY_SHORT["SAT"].label, BY_SHORT["IMAT"].label]
    sm_label = BY_SHORT["SM"].label
    nama = sums["nama"][sm_label] * voxel_cm3
    lama = sums["lama"][sm_label] * voxel_cm3
    return {
        "total_fat_cm3": sat + imat,
        "imat_to_sat": _ratio(imat, sat),
        "sm_to_fat": _ratio(sm, sat + imat),
        "imat_pct_of_compartment": 100 * _ratio(imat, sm + imat),
        "fat_mean_hu": _ratio(sums["sum"][fat].sum(), sums["count"][fat].sum()),
        "sm_mean_hu": _ratio(sums["sum"][sm_label], sums["count"][sm_label]),
        "nama_cm3": nama, "lama_cm3": lama,
        "nama_pct": 100 * _ratio(nama, sm), "lama_pct": 100 * _ratio(lama, sm),
    }


def _ratio(a, b):
    return float(a) / float(b) if b else float("nan")


def _leg_sum(per_side, leg):
    """Sum an array indexed [..., label, side] over the sides that make up `leg`."""
    if leg == "both":
        return per_side.sum(axis=-1)
    return per_side[..., SIDE_LABELS[leg]]


def _accumulate(hu, labels, sides):
    """One pass over slabs: per (label, side) counts, sums, squares, NAMA/LAMA counts and (for integer HU)
    histograms; per-slice counts."""
    n_labels = len(TISSUES) + 1
    n_keys = n_labels * N_SIDES
    low, high = _labelled_range(hu, labels) if np.issubdtype(hu.dtype, np.integer) else (0, None)
    bins = high - low + 1 if high is not None and high - low < MAX_HISTOGRAM_BINS else 0
    acc = {k: np.zeros(n_keys) for k in ("count", "sum", "sumsq", "nama", "lama")}
    hist = np.zeros(n_keys * bins, np.int64) if bins else None
    per_slice = []
    for z0 in range(0, hu.shape[0], SLAB):
        h = np.asarray(hu[z0:z0 + SLAB], np.float64).ravel()
        key = labels[z0:z0 + SLAB].astype(np.intp) * N_SIDES + sides[z0:z0 + SLAB]
        flat = key.ravel()
        acc["count"] += np.bincount(flat, minlength=n_keys)
        acc["sum"] += np.bincount(flat, h, n_keys)
        acc["sumsq"] += np.bincount(flat, h * h, n_keys)
        acc["nama"] += np.bincount(flat, (h >= NAMA_HU[0]) & (h <= NAMA_HU[1]), n_keys)
        acc["lama"] += np.bincount(flat, (h >= LAMA_HU[0]) & (h <= LAMA_HU[1]), n_keys)
        if bins:
            labelled = flat >= N_SIDES       # label 0 needs no median
            hist += np.bincount(flat[labelled] * bins + (h[labelled].astype(np.intp) - low), minlength=n_keys * bins)
        in_slab = np.arange(key.shape[0])[:, None, None] * n_keys + key
        per_slice.append(np.bincount(in_slab.ravel(), minlength=key.shape[0] * n_keys).reshape(-1, n_keys))
    acc = {k: v.reshape(n_labels, N_SIDES) for k, v in acc.items()}
    acc["hist"] = (hist.reshape(n_labels, N_SIDES, bins), low) if bins else None
    return acc, np.concatenate(per_slice).reshape(-1, n_labels, N_SIDES)


def _labelled_range(hu, labels):
    """(min, max) of the HU of labelled voxels, (0, 0) when none is labelled: the histogram's span, which the
    value range of the whole volume (padding at -2^31, say) must not set."""
    low = high = None
    for z0 in range(0, hu.shape[0], SLAB):
        values = hu[z0:z0 + SLAB][labels[z0:z0 + SLAB] > 0]
        if values.size:
            low = int(values.min()) if low is None else min(low, int(values.min()))
            high = int(values.max()) if high is None else max(high, int(values.max()))
    return (0, 0) if low is None else (low, high)


def _medians(hu, labels, sides, hist):
    """Median HU per (label, leg): from the histograms for integer HU of a narrow span, else by sorting (exact
    either way)."""
    medians = {}
    for tissue in TISSUES:
        for leg in LEGS:
            if hist is not None:
                counts, low = hist
                medians[tissue.label, leg] = _histogram_median(_leg_sum(counts[tissue.label].T, leg), low)
            else:
                mask = labels == tissue.label
                if leg != "both":
                    mask &= sides == SIDE_LABELS[leg]
                medians[tissue.label, leg] = float(np.median(hu[mask])) if mask.any() else float("nan")
    return medians


def _histogram_median(counts, low):
    """numpy's median (mean of the two middle values for even counts) from a histogram of integers."""
    n = int(counts.sum())
    if n == 0:
        return float("nan")
    cumulative = np.cumsum(counts)
    lower = np.searchsorted(cumulative, (n - 1) // 2, side="right")
    upper = np.searchsorted(cumulative, n // 2, side="right")
    return (lower + upper) / 2 + low
