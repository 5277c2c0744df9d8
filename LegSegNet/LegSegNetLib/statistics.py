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
    counts: np.ndarray = None   # (slices, labels, sides) pixel counts, for QC and the mid-thigh level

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
                         "volume_cm3": n * voxel_cm3, "mean_hu": mean,
                         "std_hu": float(np.sqrt(max(var, 0.0))) if n > 1 else float("nan"),
                         "median_hu": medians[tissue.label, leg]})
        metrics.append({"leg": leg, **derived_metrics(sums, voxel_cm3)})
    columns = {"slice": np.arange(per_slice.shape[0]), "position_mm": np.asarray(positions_mm, float)}
    for tissue in TISSUES:
        for leg in LEGS:
            columns[f"{tissue.short}_{leg}_cm2"] = _leg_sum(per_slice, leg)[:, tissue.label] * pixel_cm2
    slices = [dict(zip(columns, values)) for values in zip(*(c.tolist() for c in columns.values()))]
    return Statistics(rows, slices, metrics, per_slice)


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
    """One pass over slabs, touching only voxels with a label or a side: per (label, side) counts, sums,
    squares, NAMA/LAMA counts and (for integer HU) histograms; per-slice counts. Integer HU take their moments
    from the histograms (exact integer sums, as the float64 sums of integers were); label 0 without a side is
    not counted (no table uses it)."""
    n_labels = len(TISSUES) + 1
    n_keys = n_labels * N_SIDES
    low, bins = _histogram_span(hu, labels)
    acc = {k: np.zeros(n_keys) for k in ("count", "sum", "sumsq", "nama", "lama")}
    hist = np.zeros(n_keys * bins, np.int64) if bins else None
    per_slice = []
    for z0 in range(0, hu.shape[0], SLAB):
        chosen, key, counts = _slab_keys(labels[z0:z0 + SLAB], sides[z0:z0 + SLAB])
        per_slice.append(counts)
        values = hu[z0:z0 + SLAB][chosen]          # boolean indexing reads a flipped view without copying it
        if bins:
            hist += np.bincount(key * bins + (values.astype(np.intp) - low), minlength=n_keys * bins)
        else:
            _add_moments(acc, key, np.asarray(values, np.float64), n_keys)
    per_slice = np.concatenate(per_slice) if per_slice else np.zeros((0, n_keys), np.int64)
    if bins:
        hist = hist.reshape(n_keys, bins)
        _moments_from_histogram(acc, hist, low)
    acc["count"] = per_slice.sum(axis=0).astype(float)
    acc = {k: v.reshape(n_labels, N_SIDES) for k, v in acc.items()}
    acc["hist"] = (hist.reshape(n_labels, N_SIDES, bins), low) if bins else None
    return acc, per_slice.reshape(-1, n_labels, N_SIDES)


def slice_counts(labels, sides):
    """(slices, labels, sides) pixel counts of canonical labels and side map, as compute_statistics keeps them
    in Statistics.counts (label 0 without a side is not counted)."""
    n_keys = (len(TISSUES) + 1) * N_SIDES
    per_slice = [_slab_keys(labels[z0:z0 + SLAB], sides[z0:z0 + SLAB])[2] for z0 in range(0, labels.shape[0], SLAB)]
    return (np.concatenate(per_slice) if per_slice else np.zeros((0, n_keys), np.int64)).reshape(
        -1, len(TISSUES) + 1, N_SIDES)


def _slab_keys(lab, sid):
    """The voxels of a slab with a label or a side (boolean mask), their (label, side) keys and the slab's
    per-slice key counts (slices, keys)."""
    n_keys = (len(TISSUES) + 1) * N_SIDES
    chosen = np.logical_or(lab, sid)
    key = lab[chosen].astype(np.intp) * N_SIDES + sid[chosen]
    z = np.repeat(np.arange(len(lab)), np.count_nonzero(chosen, axis=(1, 2)))   # chosen voxels in C order
    return chosen, key, np.bincount(z * n_keys + key, minlength=len(lab) * n_keys).reshape(-1, n_keys)


def _histogram_span(hu, labels):
    """(lowest value, bins) of the integer histogram; bins 0: HU are not integers or span too wide a range.
    8- and 16-bit HU take their type's whole range (no pass to find it)."""
    if not np.issubdtype(hu.dtype, np.integer):
        return 0, 0
    if hu.dtype.itemsize <= 2:
        info = np.iinfo(hu.dtype)
        return int(info.min), int(info.max) - int(info.min) + 1
    low, high = _labelled_range(hu, labels)
    return (low, high - low + 1) if high - low < MAX_HISTOGRAM_BINS else (0, 0)


def _add_moments(acc, key, h, n_keys):
    acc["sum"] += np.bincount(key, h, n_keys)
    acc["sumsq"] += np.bincount(key, h * h, n_keys)
    acc["nama"] += np.bincount(key, (h >= NAMA_HU[0]) & (h <= NAMA_HU[1]), n_keys)
    acc["lama"] += np.bincount(key, (h >= LAMA_HU[0]) & (h <= LAMA_HU[1]), n_keys)


def _moments_from_histogram(acc, hist, low):
    """Sums, squares and NAMA/LAMA counts from integer histograms (n_keys, bins): exact integers (Python
    integers where int64 could overflow)."""
    values = np.arange(low, low + hist.shape[1], dtype=np.int64)
    wide = max(abs(low), abs(low + hist.shape[1] - 1)) >= 1 << 16
    if wide:
        hist, values = hist.astype(object), values.astype(object)
    acc["sum"] = (hist @ values).astype(float)
    acc["sumsq"] = (hist @ (values * values)).astype(float)
    for name, (lo, hi) in (("nama", NAMA_HU), ("lama", LAMA_HU)):
        inside = (values >= lo) & (values <= hi)
        acc[name] = hist[:, inside.astype(bool)].sum(axis=1).astype(float)


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
