"""Per-slice quality control: which slices to open first when checking a segmentation.

Each flag has a kind, a one-line reason and a severity (how far past its threshold, >= 1); a slice's score is
the sum of its flags' severities and the review rank orders flagged slices by score (1: open first). The
thresholds below are stated in README.md ("Per-slice quality control").
"""
import csv

import numpy as np

from .statistics import slice_counts
from .tissues import BY_SHORT, TISSUES

BORDER_PIXELS = 1            # a labelled pixel this close to the image edge: the limb is cut by the field of view
AREA_JUMP = 0.5              # a tissue's area differs from the median of the 5 slices around it by > 50 % ...
MIN_JUMP_CM2 = 2.0           # ... and by more than 2 cm² (small areas fluctuate by a few pixels)
MIN_MUSCLE_CM2 = 5.0         # a leg with this much muscle in a slice is a limb slice: it should hold bone
MAX_FAT_SHARE = 0.85         # fat (SAT + IMAT) above 85 % of a leg's tissue in a slice is implausible
METAL_HU = 2500              # above dense cortical bone (<= ~2000 HU): metal or its streaks
MIN_METAL_PIXELS = 5
CONFIDENCE_MIN = 0.6         # network: a pixel whose top class probability is below this is uncertain ...
MAX_UNCERTAIN_SHARE = 0.10   # ... a slice with more than 10 % uncertain body pixels is flagged
PX_PER_CM2 = 100             # pixel-count input (no pixel size): area limits as for 1 mm pixels
KINDS = ("border", "metal", "area_jump", "composition", "low_confidence")
SPACING_NOTE = ("slice spacing: checked when the input was read (an uneven DICOM series is refused; an image "
                "file has one spacing)")
SM, BONE = BY_SHORT["SM"].label, BY_SHORT["Bone"].label
FAT = (BY_SHORT["SAT"].label, BY_SHORT["IMAT"].label)


def thresholds():
    return {"border_pixels": BORDER_PIXELS, "area_jump": AREA_JUMP, "min_jump_cm2": MIN_JUMP_CM2,
            "min_muscle_cm2": MIN_MUSCLE_CM2, "max_fat_share": MAX_FAT_SHARE, "metal_hu": METAL_HU,
            "min_metal_pixels": MIN_METAL_PIXELS, "confidence_min": CONFIDENCE_MIN,
            "max_uncertain_share": MAX_UNCERTAIN_SHARE}


def slice_qc(hu, labels, sides, spacing, positions_mm, uncertain_share=None, area_unit="cm2", counts=None):
    """One row per canonical slice: slice, position_mm, flags, reasons, score, review_rank. uncertain_share:
    per slice, the network's share of body pixels below CONFIDENCE_MIN (NaN where not computed). counts: the
    (slices, labels, sides) pixel counts statistics computed (Statistics.counts); counted here when not given."""
    pixel_area = float(spacing[1] * spacing[2]) / 100.0 if area_unit == "cm2" else 1.0
    counts = slice_counts(labels, sides) if counts is None else counts
    flags = [[] for _ in range(labels.shape[0])]
    _border(labels, flags)
    _metal(hu, counts, flags)
    _area_jumps(counts, pixel_area, area_unit, flags)
    _composition(counts, pixel_area, area_unit, flags)
    if uncertain_share is not None:
        _confidence(np.asarray(uncertain_share, float), flags)
    rows = []
    for z, found in enumerate(flags):
        rows.append({"slice": z, "position_mm": float(positions_mm[z]),
                     "flags": ";".join(dict.fromkeys(kind for kind, _, _ in found)),
                     "reasons": "; ".join(reason for _, reason, _ in found),
                     "score": round(sum(severity for _, _, severity in found), 3), "review_rank": ""})
    order = sorted((r for r in rows if r["flags"]), key=lambda r: (-r["score"], r["slice"]))
    for rank, row in enumerate(order, 1):
        row["review_rank"] = rank
    return rows


def _border(labels, flags):
    """Severity grows with the length of the cut edge, so the most truncated slice ranks first."""
    b = BORDER_PIXELS
    edge = ((labels[:, :b] > 0).sum(axis=(1, 2)) + (labels[:, -b:] > 0).sum(axis=(1, 2))
            + (labels[:, :, :b] > 0).sum(axis=(1, 2)) + (labels[:, :, -b:] > 0).sum(axis=(1, 2)))
    for z in np.flatnonzero(edge):
        flags[z].append(("border", f"limb touches the image border over {int(edge[z])} pixels (truncated field "
                         "of view)", 3.0 + np.log10(edge[z])))


def _metal(hu, counts, flags):
    bright = np.count_nonzero(np.asarray(hu) > METAL_HU, axis=(1, 2))
    labelled = counts[:, 1:].sum(axis=(1, 2)) > 0
    for z in np.flatnonzero((bright >= MIN_METAL_PIXELS) & labelled):
        flags[z].append(("metal", f"{int(bright[z])} pixels above {METAL_HU} HU (metal or streak artefact)",
                         3.0 + np.log10(bright[z] / MIN_METAL_PIXELS)))


def tissue_areas(counts, pixel_area):
    """(slices, tissues) areas of every tissue, both legs together, from (slices, labels, sides) counts."""
    return counts[:, [t.label for t in TISSUES]].sum(axis=2) * pixel_area


def _area_jumps(counts, pixel_area, unit, flags):
    """A tissue's area against the median of the five slices around it (the slice itself included), so a
    single odd slice stands out and its normal neighbours do not."""
    areas = tissue_areas(counts, pixel_area)
    if areas.shape[0] < 3:
        return
    padded = np.pad(areas, ((2, 2), (0, 0)), mode="edge")
    reference = np.median(np.stack([padded[i:i + len(areas)] for i in range(5)]), axis=0)
    change = np.abs(areas - reference)
    min_jump = MIN_JUMP_CM2 if unit == "cm2" else MIN_JUMP_CM2 * PX_PER_CM2
    relative = change / np.maximum(reference, 1e-9)
    jump = (relative > AREA_JUMP) & (change > min_jump)
    for z, k in zip(*np.nonzero(jump)):
        t = TISSUES[k]
        flags[z].append(("area_jump", f"{t.short} area {areas[z, k]:.1f} {unit} against {reference[z, k]:.1f} "
                         f"{unit} around it", 1.0 + min(relative[z, k], 10.0) / AREA_JUMP / 2))


def _composition(counts, pixel_area, unit, flags):
    min_muscle = MIN_MUSCLE_CM2 if unit == "cm2" else MIN_MUSCLE_CM2 * PX_PER_CM2
    for side, leg in ((1, "right"), (2, "left")):
        count = {label: counts[:, label, side] for label in (SM, BONE, *FAT)}
        tissue = counts[:, 1:, side].sum(axis=1)
        fat_share = (count[FAT[0]] + count[FAT[1]]) / np.maximum(tissue, 1)
        for z in np.flatnonzero((count[SM] * pixel_area >= min_muscle) & (count[BONE] == 0)):
            flags[z].append(("composition", f"{leg} leg: muscle without bone", 1.5))
        for z in np.flatnonzero((tissue > 0) & (fat_share > MAX_FAT_SHARE)):
            flags[z].append(("composition", f"{leg} leg: fat is {100 * fat_share[z]:.0f} % of the tissue "
                             f"(limit {100 * MAX_FAT_SHARE:.0f} %)", 1.0 + fat_share[z] - MAX_FAT_SHARE))


def _confidence(share, flags):
    for z in np.flatnonzero(np.nan_to_num(share, nan=0.0) > MAX_UNCERTAIN_SHARE):
        flags[z].append(("low_confidence", f"{100 * share[z]:.0f} % of body pixels with top class probability "
                         f"below {CONFIDENCE_MIN:g}", 1.0 + share[z] / MAX_UNCERTAIN_SHARE / 2))


def summary(rows, uncertain_share=None):
    """The QC part of report.json."""
    flagged = [r for r in rows if r["flags"]]
    by_kind = {kind: sum(kind in r["flags"].split(";") for r in flagged) for kind in KINDS}
    order = sorted(flagged, key=lambda r: r["review_rank"])
    return {"flagged_slices": len(flagged), "by_kind": by_kind,
            "worst_slice": order[0]["slice"] if order else None,
            "review_first": [{"slice": r["slice"], "position_mm": r["position_mm"], "reasons": r["reasons"]}
                             for r in order[:10]],
            "confidence_checked": uncertain_share is not None, "spacing": SPACING_NOTE,
            "thresholds": thresholds()}


def write_qc(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["slice", "position_mm", "flags", "reasons", "score", "review_rank"])
        writer.writeheader()
        writer.writerows(rows)


def read_qc(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
