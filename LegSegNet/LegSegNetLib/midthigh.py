"""The mid-thigh level: halfway between the femur's proximal end (femoral head / greater trochanter) and its
distal end (condyles), found per leg from the bone mask along z; the level the Health ABC study and most
sarcopenia protocols measure at. Never a guess: when an end is not in view no level is reported.

The femur is the longest run of consecutive slices in which the leg holds bone (at least MIN_BONE_CM2). An end
is in view when the slice beyond it still shows the leg without bone (the joint space or the bone's end); a run
reaching the scan's first or last slice, or the leg's own end, is "not in view". A run whose length is outside
FEMUR_LENGTH_MM is not one whole femur (the tibia or pelvis joined to it across a joint thinner than a slice,
or a fragment) and gives no level either. `level_mm` measures at a level the user gives instead.
"""
import csv

import numpy as np

from .errors import InputError
from .statistics import LAMA_HU, NAMA_HU, slice_counts
from .tissues import BY_SHORT, SIDE_LABELS

MIN_BONE_CM2 = 1.0               # a femur shaft is 4-7 cm²; less is a fragment or a partial-volume speck
FEMUR_LENGTH_MM = (250, 600)     # adult femora are 40-50 cm long
LEGS = ("right", "left")
TISSUE_COLUMNS = ("SM", "IMAT", "SAT", "Bone")
COLUMNS = ("leg", "status", "method", "distal_end_mm", "proximal_end_mm", "femur_length_mm", "level_mm",
           "slice", *(f"{t}_cm2" for t in TISSUE_COLUMNS), "sm_mean_hu", "nama_cm2", "lama_cm2")


def level_slice(level_mm, positions_mm):
    """The slice at a user-given patient z (mm); refused when the level is not in the scan."""
    positions = np.asarray(positions_mm, float)
    step = abs(positions[1] - positions[0]) if positions.size > 1 else 0.0
    z = int(np.argmin(np.abs(positions - level_mm)))
    if abs(positions[z] - level_mm) > step / 2 + 1e-6:
        raise InputError(f"--level-mm {level_mm:g}: outside the scan ({positions.min():.1f} .. "
                         f"{positions.max():.1f} mm along z)")
    return z


def femur_ends(bone_pixels, leg_pixels, min_pixels):
    """(distal index, proximal index, status) of the longest bone run; status '' when both ends are in view."""
    present = bone_pixels >= min_pixels
    if not present.any():
        return None, None, "no bone found in this leg"
    edges = np.diff(np.concatenate([[0], present.astype(int), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    k = int(np.argmax(stops - starts))
    lo, hi = int(starts[k]), int(stops[k])
    missing = [name for name, beyond in (("distal", lo - 1), ("proximal", hi + 1))
               if not 0 <= beyond < len(present) or leg_pixels[beyond] == 0]
    status = " and ".join(missing) + (" end not in view" if len(missing) == 1 else " ends not in view")
    return lo, hi, status if missing else ""


def measure(hu, labels, sides, spacing, positions_mm, level_mm=None, counts=None):
    """One row per leg (COLUMNS). hu, labels, sides: canonical (z, y, x); spacing (z, y, x) mm; counts: the
    (slices, labels, sides) pixel counts statistics computed (counted here when not given)."""
    positions = np.asarray(positions_mm, float)
    pixel_cm2 = float(spacing[1] * spacing[2]) / 100.0
    min_pixels = max(1, int(np.ceil(MIN_BONE_CM2 / pixel_cm2)))
    given = None if level_mm is None else level_slice(level_mm, positions)
    counts = slice_counts(labels, sides) if counts is None else counts
    rows = []
    for leg in LEGS:
        side = SIDE_LABELS[leg]
        lo, hi, status = femur_ends(counts[:, BY_SHORT["Bone"].label, side], counts[:, :, side].sum(axis=1),
                                    min_pixels)
        row = dict.fromkeys(COLUMNS, "")
        row.update(leg=leg, status=status or "both femur ends in view")
        if lo is not None:          # only the ends in view are reported
            if "distal" not in status:
                row["distal_end_mm"] = float(positions[lo])
            if "proximal" not in status:
                row["proximal_end_mm"] = float(positions[hi])
            if not status:
                row["femur_length_mm"] = float(positions[hi] - positions[lo])
        z = None
        if given is not None:
            z, row["method"], row["level_mm"] = given, "given level (--level-mm)", float(level_mm)
        elif not status:
            length = row["femur_length_mm"]
            if FEMUR_LENGTH_MM[0] <= length <= FEMUR_LENGTH_MM[1]:
                middle = (positions[lo] + positions[hi]) / 2
                z = int(np.argmin(np.abs(positions - middle)))
                row["method"], row["level_mm"] = "halfway between the femur's ends", float(middle)
            else:
                row["status"] = (f"bone run of {length:.0f} mm is outside {FEMUR_LENGTH_MM[0]}..{FEMUR_LENGTH_MM[1]} "
                                 "mm: not one whole femur")
        if z is not None:
            row.update(slice=z, **_areas(hu[z], labels[z], sides[z] == side, pixel_cm2))
        rows.append(row)
    return rows


def _areas(hu, labels, mine, pixel_cm2):
    out = {f"{t}_cm2": float(((labels == BY_SHORT[t].label) & mine).sum()) * pixel_cm2 for t in TISSUE_COLUMNS}
    muscle = (labels == BY_SHORT["SM"].label) & mine
    values = np.asarray(hu, float)[muscle]
    out["sm_mean_hu"] = float(values.mean()) if values.size else float("nan")
    out["nama_cm2"] = float(((values >= NAMA_HU[0]) & (values <= NAMA_HU[1])).sum()) * pixel_cm2
    out["lama_cm2"] = float(((values >= LAMA_HU[0]) & (values <= LAMA_HU[1])).sum()) * pixel_cm2
    return out


def summary(rows):
    """The mid-thigh part of report.json: per leg, the status and (where measured) the level and areas."""
    return {row["leg"]: {k: v for k, v in row.items() if k != "leg" and v != ""} for row in rows}


def write_midthigh(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
