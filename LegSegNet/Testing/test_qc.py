"""Per-slice QC: planted faults (limb cut by the border, metal with streaks, an area jump) are flagged at their
slices and ranked first; a clean phantom has no flag; the network's confidence is computed per slice."""
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cli
from LegSegNetLib import qc
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.volumes import AxialView

SHAPE = (24, 160, 208)
SPACING = (5.0, 1.75, 1.75)


def canonical_phantom(seed=0):
    p = make_phantom(seed=seed, shape=SHAPE, spacing=SPACING)
    view = AxialView.of(p.ct)
    return view.to_canonical(sitk.GetArrayFromImage(p.ct)).copy(), view.to_canonical(sitk.GetArrayFromImage(p.truth))


def write_canonical(hu, path, spacing=SPACING):
    """A canonical (z, y, x) array as an image with identity direction (index axes = LPS x, y, z)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(hu))
    image.SetSpacing((spacing[2], spacing[1], spacing[0]))
    sitk.WriteImage(image, str(path))
    return path


def segment(tmp_path, hu, name):
    out = tmp_path / name
    assert run_cli("segment", write_canonical(hu, tmp_path / f"{name}.nii.gz"), "-o", out,
                   "--engine", "threshold") == 0
    with open(out / "qc.csv") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out / "report.json").read_text())["qc"]


def flagged(rows, kind):
    return {int(r["slice"]) for r in rows if kind in r["flags"].split(";")}


def first(rows):
    return int(next(r for r in rows if r["review_rank"] == "1")["slice"])


def test_clean_phantom_has_no_flag(tmp_path):
    hu, _ = canonical_phantom()
    rows, summary = segment(tmp_path, hu, "clean")
    assert len(rows) == SHAPE[0] and [int(r["slice"]) for r in rows] == list(range(SHAPE[0]))
    assert summary["flagged_slices"] == 0 and summary["worst_slice"] is None
    assert all(r["flags"] == "" and r["review_rank"] == "" for r in rows)
    assert summary["thresholds"]["metal_hu"] == qc.METAL_HU and not summary["confidence_checked"]


def test_metal_streak_is_flagged_and_ranked_first(tmp_path):
    hu, truth = canonical_phantom()
    k = 9
    y, x = np.argwhere(truth[k] == 2)[len(np.argwhere(truth[k] == 2)) // 2]      # inside a muscle
    hu[k, y - 2:y + 3, x - 2:x + 3] = 3071                                        # an implant
    hu[k, y - 1:y + 2, :] = np.where(hu[k, y - 1:y + 2, :] > -500, 1800, hu[k, y - 1:y + 2, :])   # its streak
    rows, summary = segment(tmp_path, hu, "metal")
    assert flagged(rows, "metal") == {k}
    assert first(rows) == k and summary["worst_slice"] == k
    assert "above 2500 HU" in rows[k]["reasons"]


def test_area_jump_is_flagged_and_ranked_first(tmp_path):
    hu, truth = canonical_phantom()
    k = 14
    hu[k][truth[k] == 1] = 55            # the SAT of one slice turned to muscle density
    rows, summary = segment(tmp_path, hu, "jump")
    assert k in flagged(rows, "area_jump") and flagged(rows, "area_jump") <= {k}
    assert first(rows) == k and summary["by_kind"]["area_jump"] == 1
    assert "SAT area" in rows[k]["reasons"]


def test_limb_cut_by_the_border_is_flagged_where_it_touches(tmp_path):
    hu, truth = canonical_phantom()
    widest = (truth > 0).any(axis=1).sum(axis=1)        # the thigh widens superiorly
    columns = np.flatnonzero((truth > 0).any(axis=(0, 1)))
    cut = columns[-1] - 6                                 # the left leg's outer edge is cut off where it is widest
    hu, truth = hu[:, :, :cut], truth[:, :, :cut]
    touching = {z for z in range(SHAPE[0]) if (truth[z, :, -1] > 0).sum() >= 5}
    near = {z for z in range(SHAPE[0]) if (truth[z, :, -3:] > 0).any()}
    assert touching and len(touching) < SHAPE[0] and widest.argmax() in touching
    rows, summary = segment(tmp_path, hu, "cut")
    assert touching <= flagged(rows, "border") <= near
    assert first(rows) in touching
    assert summary["by_kind"]["border"] == len(flagged(rows, "border"))


def test_qc_rows_rank_by_score_and_count_by_kind():
    labels = np.zeros((6, 40, 40), np.uint8)
    labels[:, 10:30, 10:30] = 2
    labels[:, 15:20, 15:20] = 4
    labels[2, 0:5, 10:15] = 2                             # touches the border over 5 pixels
    hu = np.zeros(labels.shape, np.int16)
    hu[4, 12:20, 20:25] = 3000                            # 40 metal pixels
    sides = np.where(labels > 0, 1, 0).astype(np.uint8)
    rows = qc.slice_qc(hu, labels, sides, (5, 1, 1), np.arange(6) * 5.0)
    assert {r["slice"]: r["flags"] for r in rows if r["flags"]} == {2: "border", 4: "metal"}
    assert rows[4]["review_rank"] == 1 and rows[2]["review_rank"] == 2      # the larger fault first
    summary = qc.summary(rows)
    assert summary["by_kind"]["border"] == 1 and summary["by_kind"]["metal"] == 1 and summary["worst_slice"] == 4


def test_composition_flags_muscle_without_bone_and_too_much_fat():
    labels = np.zeros((3, 60, 60), np.uint8)
    labels[:, 10:50, 10:50] = 2
    labels[:, 25:32, 25:32] = 4
    labels[1, 25:32, 25:32] = 2                           # slice 1: no bone
    labels[2, 10:50, 10:50] = 1                           # slice 2: all fat
    sides = np.where(labels > 0, 2, 0).astype(np.uint8)
    rows = qc.slice_qc(np.zeros(labels.shape), labels, sides, (5, 1, 1), np.arange(3) * 5.0)
    assert "left leg: muscle without bone" in rows[1]["reasons"]
    assert "left leg: fat is 100 %" in rows[2]["reasons"] and rows[0]["flags"] == ""


def test_low_confidence_flag_from_the_network_share():
    labels = np.zeros((3, 40, 40), np.uint8)
    labels[:, 5:35, 5:35] = 2
    labels[:, 15:20, 15:20] = 4
    share = np.array([0.02, 0.4, np.nan])                 # NaN: a slice not sent to the network
    rows = qc.slice_qc(np.zeros(labels.shape), labels, np.where(labels > 0, 1, 0), (5, 1, 1), [0, 5, 10], share)
    assert [r["flags"] for r in rows] == ["", "low_confidence", ""]
    assert "40 % of body pixels" in rows[1]["reasons"]
    assert qc.summary(rows, share)["confidence_checked"]


def test_network_confidence_comes_from_the_probabilities_it_argmaxes():
    import torch
    from pathlib import Path
    from LegSegNetLib.engines import make_engine
    from LegSegNetLib.nnunet import hu_to_uint8, resize_cubic
    engine, _ = make_engine("nnunet", model=Path(__file__).parent / "Data" / "nnunet_test_model")
    hu, _ = canonical_phantom(seed=3)
    stack = np.concatenate([np.full((1, *hu.shape[1:]), -1000, hu.dtype), hu[10:12]])   # air, then two limbs
    labels = engine.segment(stack, SPACING)
    share = engine.last_uncertain_share
    assert np.isnan(share[0]) and ((share[1:] >= 0) & (share[1:] <= 1)).all()
    for z in (1, 2):      # the definition, recomputed from the predictor's own class probabilities
        probabilities = engine.predictor.probabilities_256(resize_cubic(hu_to_uint8(stack[z:z + 1]))[0])
        native = torch.nn.functional.interpolate(probabilities[None], size=stack.shape[1:], mode="bilinear",
                                                 align_corners=False)[0]
        body = labels[z] > 0
        expected = ((native.amax(0).numpy() < qc.CONFIDENCE_MIN) & body).sum() / body.sum()
        assert share[z] == pytest.approx(expected, abs=1e-9)


def test_cohort_qc_equals_the_case_tables_and_names_the_case_to_review_first(tmp_path):
    hu, truth = canonical_phantom()
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_canonical(hu, inputs / "clean.nii.gz")
    y, x = np.argwhere(truth[5] == 2)[0]
    hu[5, y:y + 4, x:x + 4] = 3071
    write_canonical(hu, inputs / "metal.nii.gz")
    out = tmp_path / "cohort"
    assert run_cli("batch", inputs, "-o", out, "--workers", 1, "--engine", "threshold") == 0
    with open(out / "cohort_qc.csv") as f:
        cohort = {r["case_id"]: r for r in csv.DictReader(f)}
    assert set(cohort) == {"clean", "metal"}
    for case, row in cohort.items():
        with open(out / "cases" / case / "qc.csv") as f:
            rows = list(csv.DictReader(f))
        assert int(row["slices"]) == len(rows)
        assert int(row["flagged_slices"]) == sum(bool(r["flags"]) for r in rows)
        for kind in qc.KINDS:
            assert int(row[kind]) == len(flagged(rows, kind)), (case, kind)
    assert cohort["metal"]["metal"] == "1" and cohort["metal"]["worst_slice"] == "5"
    review = json.loads((out / "cohort.json").read_text())["review_first"]
    assert review[0]["case_id"] == "metal" and "metal" in review[0]["why"]
    with open(out / "cohort_midthigh.csv") as f:
        assert {r["case_id"] for r in csv.DictReader(f)} == {"clean", "metal"}
