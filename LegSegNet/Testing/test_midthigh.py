"""The mid-thigh level: within one slice of a phantom femur's true midpoint, 'not in view' for a cut femur
(never a guess), measured at a given level with --level-mm, and refused when that level is not in the scan."""
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import run_cli
from LegSegNetLib import midthigh
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.volumes import AxialView

SHAPE = (60, 128, 160)
SPACING = (8.0, 2.2, 2.2)       # 480 mm along z: room for a whole femur with both ends in view
BONE, SM = 4, 2


def femur_ct(tmp_path, ends):
    """A phantom whose bone column is kept only between slices ends[leg] = (distal, proximal), inclusive
    (elsewhere it and its blur become muscle): a femur with known ends. Returns the file and the slice positions."""
    p = make_phantom(seed=2, shape=SHAPE, spacing=SPACING)
    view = AxialView.of(p.ct)
    hu = view.to_canonical(sitk.GetArrayFromImage(p.ct)).copy()
    truth = view.to_canonical(sitk.GetArrayFromImage(p.truth))
    sides = view.to_canonical(sitk.GetArrayFromImage(p.sides))
    z = np.arange(SHAPE[0])[:, None, None]
    bone_and_blur = ndimage.binary_dilation(truth == BONE, np.ones((1, 5, 5), bool)) & ((truth == BONE) | (hu > 55))
    for leg, side in (("right", 1), ("left", 2)):
        lo, hi = ends[leg]
        hu[bone_and_blur & (sides == side) & ((z < lo) | (z > hi))] = 55
    image = sitk.GetImageFromArray(np.ascontiguousarray(hu))     # identity direction: index axes are LPS x, y, z
    image.SetSpacing(SPACING[::-1])
    image.SetOrigin((0.0, 0.0, -200.0))
    path = tmp_path / "femur.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, -200.0 + SPACING[0] * np.arange(SHAPE[0])


def run(tmp_path, ct, *options):
    out = tmp_path / "out"
    assert run_cli("segment", ct, "-o", out, "--engine", "threshold", *options) == 0
    with open(out / "midthigh.csv") as f:
        rows = {r["leg"]: r for r in csv.DictReader(f)}
    with open(out / "slices.csv") as f:
        slices = list(csv.DictReader(f))
    return rows, slices, json.loads((out / "report.json").read_text())["midthigh"]


def test_level_is_halfway_along_each_femur(tmp_path):
    ends = {"right": (6, 50), "left": (10, 52)}
    ct, positions = femur_ct(tmp_path, ends)
    rows, slices, report = run(tmp_path, ct)
    for leg, (lo, hi) in ends.items():
        row = rows[leg]
        truth_mm = (positions[lo] + positions[hi]) / 2
        assert row["status"] == "both femur ends in view", row
        assert abs(float(row["level_mm"]) - truth_mm) <= SPACING[0], (leg, row["level_mm"], truth_mm)
        assert abs(float(row["distal_end_mm"]) - positions[lo]) <= SPACING[0]
        assert abs(float(row["proximal_end_mm"]) - positions[hi]) <= SPACING[0]
        z = int(row["slice"])
        assert abs(positions[z] - truth_mm) <= SPACING[0]
        for tissue in ("SM", "IMAT", "SAT", "Bone"):         # the areas are that slice's, for that leg
            assert float(row[f"{tissue}_cm2"]) == pytest.approx(float(slices[z][f"{tissue}_{leg}_cm2"]))
        assert float(row["Bone_cm2"]) > 1 and float(row["SM_cm2"]) > 10 and 0 < float(row["sm_mean_hu"]) < 100
        assert float(row["nama_cm2"]) + float(row["lama_cm2"]) <= float(row["SM_cm2"]) + 1e-9
        assert report[leg]["slice"] == z


def test_cut_femur_reports_no_level(tmp_path):
    ct, _ = femur_ct(tmp_path, {"right": (20, SHAPE[0] - 1), "left": (0, 40)})
    rows, _, report = run(tmp_path, ct)
    assert rows["right"]["status"] == "proximal end not in view"
    assert rows["left"]["status"] == "distal end not in view"
    for leg in ("right", "left"):
        assert rows[leg]["level_mm"] == rows[leg]["slice"] == rows[leg]["SM_cm2"] == "", rows[leg]
        assert "level_mm" not in report[leg] and "SM_cm2" not in report[leg]
    assert rows["left"]["proximal_end_mm"] != "" and rows["left"]["distal_end_mm"] == ""


def test_given_level_is_measured_there(tmp_path):
    ct, positions = femur_ct(tmp_path, {"right": (20, SHAPE[0] - 1), "left": (20, SHAPE[0] - 1)})
    rows, slices, _ = run(tmp_path, ct, "--level-mm", f"{positions[33] + 1.5}")
    for leg in ("right", "left"):
        assert rows[leg]["method"] == "given level (--level-mm)" and int(rows[leg]["slice"]) == 33
        assert rows[leg]["status"] == "proximal end not in view"
        assert float(rows[leg]["SM_cm2"]) == pytest.approx(float(slices[33][f"SM_{leg}_cm2"]))


def test_level_outside_the_scan_is_refused_before_the_engine(tmp_path, phantom_file, capsys):
    assert run_cli("segment", phantom_file, "-o", tmp_path / "out", "--level-mm", "5000") == 2
    assert "--level-mm 5000: outside the scan" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bone_run_of_implausible_length_gives_no_level():
    labels = np.zeros((40, 30, 30), np.uint8)
    labels[:, 5:25, 5:25] = SM
    labels[5:35, 12:18, 12:18] = BONE                     # 30 slices x 2 mm = 60 mm: not a whole femur
    sides = np.where(labels > 0, 1, 0).astype(np.uint8)
    rows = midthigh.measure(np.zeros(labels.shape), labels, sides, (2, 2, 2), np.arange(40) * 2.0)
    assert "not one whole femur" in rows[0]["status"] and rows[0]["slice"] == ""
    assert rows[1]["status"] == "no bone found in this leg"


def test_femur_ends_with_a_gap_take_the_longest_run():
    bone = np.array([0, 9, 9, 0, 0, 9, 9, 9, 9, 0, 9])    # tibia, joint, femur, joint, pelvis cut at the edge
    leg = np.ones_like(bone)
    assert midthigh.femur_ends(bone, leg, 5) == (5, 8, "")
    assert midthigh.femur_ends(bone[:9], leg[:9], 5) == (5, 8, "proximal end not in view")
