"""`legsegnet batch` writes and deletes inside its cohort folder only: safe case ids for every input kind, a lock
held for the run, unrelated files left alone, DICOM identifiers in any character set, bad arguments refused
before any case runs."""
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk

from LegSegNetLib.batch import LOCK_NAME
from LegSegNetLib.cases import discover_cases, safe_id
from LegSegNetLib.phantom import make_phantom

from conftest import REPO, run_cli, write_dicom_series

SHAPE = (6, 128, 160)


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def one_error_line(stderr):
    lines = stderr.split("\n")
    assert len(lines) == 2 and lines[1] == "" and lines[0].startswith("legsegnet: error: "), repr(stderr)
    return lines[0]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Two phantom files and a folder holding a third."""
    folder = tmp_path_factory.mktemp("scans")
    for seed, name in ((1, "knee_a.nii.gz"), (2, "knee_b.nii.gz"), (3, "sub/knee_c.nii.gz")):
        (folder / name).parent.mkdir(exist_ok=True)
        sitk.WriteImage(make_phantom(seed=seed, shape=SHAPE).ct, str(folder / name))
    return folder


def test_case_ids_are_safe_folder_names():
    assert safe_id("../x") == "_x"
    assert safe_id("/abs/path") == "_abs_path"
    assert safe_id("..") == "case" and safe_id(".hidden") == "hidden" and safe_id("") == "case"
    assert safe_id("a..b/../c") == "a.b_._c"
    long = safe_id("x" * 300)
    assert len(long) == 100 and long.startswith("x" * 87 + "-")


def test_csv_case_ids_never_leave_the_cases_folder(scans, tmp_path):
    """`../x` and an absolute path as case_id, for a file and for a folder input: sanitised, unique, and the
    folders they name outside the cohort are untouched."""
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "mine.txt").write_text("keep me")
    (out / "x").mkdir(parents=True)
    (out / "x" / "mine.txt").write_text("keep me too")
    (tmp_path / "list.csv").write_text(f"path,case_id\n{scans / 'knee_a.nii.gz'},../x\n{scans / 'sub'},{victim}\n"
                                       f"{scans / 'knee_b.nii.gz'},../X\n")
    cases = discover_cases([tmp_path / "list.csv"])
    ids = [c.case_id for c in cases]
    assert ids[:2] == ["_x", safe_id(str(victim))] and ids[2].startswith("_X-")    # unique ignoring case
    for case_id in ids:
        assert "/" not in case_id and ".." not in case_id and not case_id.startswith(".")
    before = {p.name for p in tmp_path.iterdir()}
    assert run_cli("batch", tmp_path / "list.csv", "-o", out, "--workers", 1, "--engine", "threshold") == 0
    assert {p.name for p in tmp_path.iterdir()} == before
    assert (victim / "mine.txt").read_text() == "keep me" and sorted(p.name for p in victim.iterdir()) == ["mine.txt"]
    assert (out / "x" / "mine.txt").read_text() == "keep me too"
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(ids)


def test_unrelated_files_in_the_cohort_folder_survive(scans, tmp_path):
    out = tmp_path / "out"
    mine = {"notes.txt": "cohort notes", "cases/readme.txt": "what these are",
            "cases/.photos.old-2019/a.txt": "hidden folder with .old- in its name",
            "cases/.draft.partial/b.txt": "hidden folder ending in .partial",
            "cases/knee_b/my_edit.nii.gz": "a folder with a case's name holding other files",
            "failures/knee_a.txt": "a file where a traceback could go"}
    for name, text in mine.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    code = run_cli("batch", scans / "knee_a.nii.gz", scans / "knee_b.nii.gz", "-o", out, "--workers", 1,
                   "--engine", "threshold")
    assert code == 3                                       # knee_b's folder is not ours: that case is refused
    for name, text in mine.items():
        assert (out / name).read_text() == text, name
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["case_id"]) == ["knee_b"] and "did not write (my_edit.nii.gz)" in failures["message"][0]
    assert (out / "cases" / "knee_a" / "report.json").is_file()
    assert sorted(p.name for p in (out / "cases" / "knee_b").iterdir()) == ["my_edit.nii.gz"]
    assert not (out / LOCK_NAME).exists()


def test_second_batch_on_a_locked_folder_exits_2_naming_the_holder(scans, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "LegSegNetLib", "batch", str(scans), "-o", str(out),
                              "--workers", "1", "--engine", "threshold"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, encoding="utf-8", errors="replace")
    deadline = time.monotonic() + 120
    while not (out / LOCK_NAME).exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    second = subprocess.run([sys.executable, "-m", "LegSegNetLib", "batch", str(scans), "-o", str(out),
                             "--workers", "1", "--engine", "threshold", "--force"], cwd=REPO, capture_output=True,
                            encoding="utf-8", errors="replace", timeout=120)
    assert first.poll() is None, "the first run ended before the second was tried"
    assert second.returncode == 2
    line = one_error_line(second.stderr)
    assert f"cohort folder {out} is in use" in line and f"pid {first.pid} on {socket.gethostname()}" in line
    _stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    record = json.loads((out / "cohort.json").read_text())
    assert record["counts"]["done"] == 3                   # nothing of the first run was disturbed
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["knee_a", "knee_b", "sub__knee_c"]
    assert not (out / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_run_is_taken_over_and_its_leftovers_removed(scans, tmp_path, caplog):
    out = tmp_path / "out"
    (out / "cases").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          encoding="utf-8", errors="replace")
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                             "token": "0123456789ab", "started": "earlier"}))
    (out / "cases" / ".knee_a.run-0123456789ab.x1y2.partial").mkdir()        # the dead run's half case
    (out / "cases" / ".knee_a.run-ffffffffffff.x1y2.partial").mkdir()        # not that run's: kept
    assert run_cli("batch", scans / "knee_a.nii.gz", "-o", out, "--workers", 1, "--engine", "threshold") == 0
    assert f"taking over the lock of a run that is gone (pid {int(dead.stdout)}" in caplog.text
    assert sorted(p.name for p in (out / "cases").iterdir()) == [".knee_a.run-ffffffffffff.x1y2.partial", "knee_a"]
    assert not (out / LOCK_NAME).exists()


def test_latin1_patient_name_with_keep_identifiers(tmp_path):
    """A DICOM export with Latin-1 bytes in PatientName (no character set declared): decoded, tables written."""
    folder = write_dicom_series(make_phantom(seed=4, shape=SHAPE).ct, tmp_path / "dicom", patient_name="Mueller^Jose")
    for path in folder.iterdir():
        data = path.read_bytes()
        assert b"Mueller^Jose" in data
        path.write_bytes(data.replace(b"Mueller^Jose", "Müller^José_".encode("latin-1")))
    out = tmp_path / "out"
    assert run_cli("batch", folder, "-o", out, "--workers", 1, "--engine", "threshold", "--keep-identifiers") == 0
    for table in (pd.read_parquet(out / "cohort.parquet"), pd.read_csv(out / "cohort_statistics.csv")):
        assert set(table["patient_name"]) == {"Müller^José_"}


def test_output_that_is_a_file_is_refused(scans, tmp_path, capsys):
    (tmp_path / "cohort").write_text("a file")
    for out in (tmp_path / "cohort", tmp_path / "cohort" / "below"):
        assert run_cli("batch", scans, "-o", out, "--workers", 1) == 2
        assert f"{tmp_path / 'cohort'} is a file, not a folder" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "cohort").read_text() == "a file"


@pytest.mark.parametrize("slices, message", [("x:y", "expected A:B with integers"), ("5", "expected A:B"),
                                             ("8:3", "selects no slice"), ("1:2:3", "expected A:B"),
                                             ("-2:", "negative values are not allowed")])
def test_bad_slices_exit_2_before_any_case_runs(scans, tmp_path, capsys, slices, message):
    assert run_cli("batch", scans, "-o", tmp_path / "out", f"--slices={slices}", "--engine", "threshold") == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_localizer_only_series_is_no_case(tmp_path):
    """Series are found with the reader's own header scan, so a scout series never becomes a failed case."""
    folder = tmp_path / "exam"
    ct = make_phantom(seed=1, shape=(4, 64, 96)).ct
    write_dicom_series(ct, folder, series_uid="1.2.826.0.1.3680043.2.1125.31.1")
    scout = sitk.Image(96, 64, 1, sitk.sitkInt16) - 1000
    scout.SetDirection((1, 0, 0, 0, 0, 1, 0, -1, 0))      # a coronal scout beside the axial series
    write_dicom_series(scout, folder, image_type="ORIGINAL\\PRIMARY\\LOCALIZER", prefix="scout",
                       series_uid="1.2.826.0.1.3680043.2.1125.31.2")
    cases = discover_cases([tmp_path])
    assert [(c.input, c.series_uid) for c in cases] == [(str(folder), "1.2.826.0.1.3680043.2.1125.31.1")]


def test_a_full_disk_on_a_worker_is_failure_kind_environment(tmp_path):
    """A real write failure from the operating system (file size limit) is the machine's problem, not a bug:
    kind `environment`, one line, no traceback, no temporary folder left."""
    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(make_phantom(seed=1, shape=(4, 96, 128)).ct, str(ct))
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    code = ("import json, resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
            "from LegSegNetLib.batch import Job, run_case; from LegSegNetLib.cases import Case; "
            f"print(json.dumps(run_case(Case('c1', {str(ct)!r}), Job({str(cases_dir)!r}, engine='threshold'))))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO / "LegSegNet", capture_output=True,
                         encoding="utf-8", errors="replace", timeout=300)
    result = json.loads(run.stdout.splitlines()[-1])
    assert (result["status"], result["kind"], result["traceback"]) == ("failed", "environment", None), result
    message = result["message"]
    assert ("cannot be written" in message or "too large" in message) and "\n" not in message
    assert list(cases_dir.iterdir()) == []
