"""The `legsegnet` command: outputs, atomic writes, and exit code 2 with one clear line for bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.errors import Cancelled
from LegSegNetLib.pipeline import segment_case

from conftest import REPO, array, dice, run_cli, write_dicom_series

OUTPUTS = {"labels.nii.gz", "segmentation.seg.nrrd", "statistics.csv", "slices.csv", "metrics.csv",
           "report.json", "overview.png"}


def volume(values, spacing=(1.0, 1.0, 5.0)):
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    return image


def bad_inputs(tmp_path, phantom):
    hu = array(phantom.ct)
    tmp_path.mkdir()
    cases = {}
    (tmp_path / "garbage.nii.gz").write_bytes(b"this is not an image" * 100)
    cases["unreadable"] = (tmp_path / "garbage.nii.gz", "cannot be read")
    (tmp_path / "no-dicom").mkdir()
    (tmp_path / "no-dicom" / "notes.txt").write_text("hello")
    cases["folder without DICOM"] = (tmp_path / "no-dicom", "no DICOM series")
    cases["missing"] = (tmp_path / "nothing-here.nii.gz", "no such file")
    images = {
        "2D not CT": (sitk.GetImageFromArray(np.clip(hu[5] + 1000, 0, None).astype(np.int16)), "not CT"),
        "4D": (sitk.JoinSeries([phantom.ct, phantom.ct]), "4D image"),
        "constant": (volume(np.full((10, 64, 64), -1000, np.int16)), "empty"),
        "NaN": (volume(np.where(hu > 1000, np.nan, hu).astype(np.float32)), "NaN"),
        "MR": (volume(np.clip(hu + 1000, 0, None).astype(np.int16) // 3), "not CT"),
        "unrescaled": (volume((hu.astype(np.int32) + 1024).clip(0, 4095).astype(np.int16)), "not CT"),
    }
    for name, (image, message) in images.items():
        path = tmp_path / f"{name}.mha"                  # MetaImage keeps NaNs as they are
        sitk.WriteImage(image, str(path))
        cases[name] = (path, message)
    cases["MR DICOM"] = (write_dicom_series(phantom.ct, tmp_path / "mr", modality="MR"), "modality is MR")
    nan_nifti = tmp_path / "NaN.nii.gz"           # ITK's own reader would hand these NaNs over as 0 HU
    sitk.WriteImage(images["NaN"][0], str(nan_nifti))
    cases["NaN NIfTI"] = (nan_nifti, "NaN")
    return cases


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, phantom, capsys):
    for name, (path, message) in bad_inputs(tmp_path / "in", phantom).items():
        out = tmp_path / "out" / name.replace(" ", "_")
        assert run_cli("segment", path, "-o", out) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert err and message in err[-1] and err[-1].startswith("legsegnet: error:"), (name, err)
        assert not out.exists(), name
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())   # no temp leftovers


def test_segment_writes_everything(segmented, phantom):
    assert OUTPUTS <= {p.name for p in segmented.iterdir()}
    report = json.loads((segmented / "report.json").read_text())
    assert report["engine"]["engine"] == "threshold"
    assert report["input_geometry"]["size"] == list(phantom.ct.GetSize())
    assert {"read_s", "engine_s", "statistics_s", "write_s"} <= set(report["timings"])
    assert "numpy" in report["versions"]
    assert (segmented / "overview.png").read_bytes()[:4] == b"\x89PNG"


def test_existing_output_is_kept_without_overwrite(tmp_path, phantom_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert run_cli("segment", phantom_file, "-o", out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep me"
    assert run_cli("segment", phantom_file, "-o", out, "--overwrite") == 2   # never deletes files it did not write
    assert "mine.txt" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()
    out.rmdir()
    assert run_cli("segment", phantom_file, "-o", out) == 0
    assert run_cli("segment", phantom_file, "-o", out, "--overwrite") == 0      # an earlier result is replaced
    assert OUTPUTS <= {p.name for p in out.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_cancel_leaves_no_output(tmp_path, phantom_file):
    with pytest.raises(Cancelled):
        segment_case(phantom_file, tmp_path / "out", engine="threshold", cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_slice_range(tmp_path, phantom_file):
    assert run_cli("segment", phantom_file, "-o", tmp_path / "out", "--slices", "10:20") == 0
    labels = array(sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz")))
    busy = np.flatnonzero(labels.any(axis=(1, 2)))      # RAS-flipped phantom: array axis 0 is inferior→superior
    assert busy.min() == 10 and busy.max() == 19
    assert run_cli("segment", phantom_file, "-o", tmp_path / "bad", "--slices", "x:y") == 2


@pytest.mark.parametrize("slices, message", [("-2:", "negative values are not allowed"),
                                             ("0:-1", "negative values are not allowed"),
                                             ("10:500", "so B is at most"), ("400:", "selects no slice of")])
def test_slices_outside_the_scan_are_refused_not_clipped(phantom_file, tmp_path, capsys, slices, message):
    assert run_cli("segment", phantom_file, "-o", tmp_path / "out", f"--slices={slices}") == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_dicom_input_end_to_end(tmp_path, phantom):
    folder = write_dicom_series(phantom.ct, tmp_path / "dicom")
    assert run_cli("segment", folder, "-o", tmp_path / "out") == 0
    labels = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    # DICOM stores LPS rows/columns: compare on physical grid by resampling the truth
    truth = sitk.Resample(phantom.truth, labels, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert dice(array(labels) > 0, array(truth) > 0) > 0.95


def test_phantom_and_stats_commands(tmp_path):
    assert run_cli("phantom", tmp_path / "ph", "--seed", "3") == 0
    assert run_cli("phantom", tmp_path / "ph", "--seed", "3") == 2          # no silent overwrite
    assert run_cli("stats", tmp_path / "ph" / "ct.nii.gz", tmp_path / "ph" / "truth.nii.gz",
                   "-o", tmp_path / "st") == 0
    assert {"statistics.csv", "slices.csv", "metrics.csv", "report.json", "overview.png"} <= \
        {p.name for p in (tmp_path / "st").iterdir()}


def test_module_entry_point_and_demo(tmp_path):
    done = subprocess.run([sys.executable, "-m", "LegSegNetLib", "demo", "-o", str(tmp_path / "demo")],
                          capture_output=True, text=True, encoding="utf-8", cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    table = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in
             {"SAT", "SM", "IMAT", "Bone"}}
    assert set(table) == {"SAT", "SM", "IMAT", "Bone"}
    assert all(float(row[-1]) > 0.85 for row in table.values())               # Dice column
    assert OUTPUTS <= {p.name for p in (tmp_path / "demo" / "result").iterdir()}
    bad = subprocess.run([sys.executable, "-m", "LegSegNetLib", "segment"], capture_output=True,
                         encoding="utf-8", errors="replace")
    assert bad.returncode == 2


def test_output_folder_follows_umask(tmp_path, phantom_file):
    """The atomic temp folder is private while written; the result is as readable as a plain mkdir."""
    import os
    assert run_cli("segment", phantom_file, "-o", tmp_path / "out") == 0
    (tmp_path / "plain").mkdir()
    assert (tmp_path / "out").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    assert os.access(tmp_path / "out" / "report.json", os.R_OK)


def test_scan_without_legs_says_so(tmp_path, caplog):
    """Air and a CT table only: the run completes, and a warning and report.json say nothing was found."""
    hu = np.full((5, 100, 100), -1000, np.int16)
    hu[:, 80:83, :] = 300                                      # the table
    sitk.WriteImage(volume(hu), str(tmp_path / "air.nii.gz"))
    assert run_cli("segment", tmp_path / "air.nii.gz", "-o", tmp_path / "out") == 0
    assert "no leg tissue was found" in caplog.text
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any("no leg tissue" in note for note in report["notes"])
