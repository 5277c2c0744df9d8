"""`legsegnet batch`: a real LocalCluster (2 worker processes) over a small cohort of phantoms written as NIfTI,
NRRD, MHA and a DICOM series, plus a corrupt file and an MR-like volume."""
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from LegSegNetLib.batch import CASE_FILES
from LegSegNetLib.cases import discover_cases, series_id
from LegSegNetLib.errors import InputError
from LegSegNetLib.phantom import make_phantom

from conftest import REPO, array, run_cli, write_dicom_series

SHAPE = (8, 160, 200)          # small enough to be quick, large enough to segment well
PATIENT = {"name": "Doe^Jane^Quinn", "id": "ID12345", "birth": "19500101"}   # tags write_dicom_series sets
DICOM_UID = "1.2.826.0.1.3680043.2.1125.777.1"
GOOD = {"knee_a": "knee_a.nii.gz", "knee_b": "knee_b.nrrd", "site2__knee_c": "site2/knee_c.mha",
        "site2__thick_fat": "site2/thick_fat.nii.gz", series_id(DICOM_UID): "scans"}
BAD = {"broken": "broken.nii.gz", "mr_like": "mr_like.nii.gz"}


def write_cohort_inputs(folder):
    """Five good cases (one with far thicker subcutaneous fat: an outlier), a corrupt file, an MR-like volume."""
    folder.mkdir(parents=True)
    (folder / "site2").mkdir()
    for seed, name in enumerate(["knee_a.nii.gz", "knee_b.nrrd", "site2/knee_c.mha"], start=1):
        sitk.WriteImage(make_phantom(seed=seed, shape=SHAPE).ct, str(folder / name), useCompression=True)
    thick = make_phantom(seed=4, shape=SHAPE, left_sat_scale=3.0).ct
    sitk.WriteImage(thick, str(folder / "site2/thick_fat.nii.gz"))
    write_dicom_series(make_phantom(seed=5, shape=SHAPE).ct, folder / "scans", patient_name=PATIENT["name"],
                       series_uid=DICOM_UID)
    (folder / "broken.nii.gz").write_bytes(gzip.compress(b"\x5c\x01" + os.urandom(2000)))
    mr = sitk.Cast(make_phantom(seed=6, shape=SHAPE).ct, sitk.sitkFloat32)
    sitk.WriteImage(sitk.Cast((mr + 1024) * 0.8, sitk.sitkInt16), str(folder / "mr_like.nii.gz"))   # no air
    return folder


def run_batch_process(*args, timeout=300):
    """`legsegnet batch` as a user runs it: its own process, output captured."""
    return subprocess.run([sys.executable, "-m", "LegSegNetLib", "batch", *map(str, args)], cwd=REPO,
                          capture_output=True, encoding="utf-8", errors="replace", timeout=timeout)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    inputs = write_cohort_inputs(root / "inputs")
    out = root / "out"
    run = run_batch_process(inputs, "-o", out, "--workers", 2, "--engine", "threshold")
    return inputs, out, run


@pytest.fixture(scope="module")
def segmented_singly(cohort, tmp_path_factory):
    """Each good input through `legsegnet segment`, the single-case command."""
    inputs, _out, _run = cohort
    ref = tmp_path_factory.mktemp("single")
    for case_id, name in GOOD.items():
        assert run_cli("segment", inputs / name, "-o", ref / case_id, "--engine", "threshold") == 0
    return ref


def read_json(path):
    return json.loads(Path(path).read_text())


def test_good_cases_match_segment_and_bad_ones_are_reported(cohort, segmented_singly):
    _inputs, out, run = cohort
    assert run.returncode == 3, run.stderr
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(GOOD)
    for case_id in GOOD:
        case = out / "cases" / case_id
        assert all((case / name).is_file() for name in CASE_FILES)
        single = segmented_singly / case_id
        np.testing.assert_array_equal(array(sitk.ReadImage(str(case / "labels.nii.gz"))),
                                      array(sitk.ReadImage(str(single / "labels.nii.gz"))))
        for table in ("statistics.csv", "metrics.csv", "slices.csv"):
            assert (case / table).read_text() == (single / table).read_text(), (case_id, table)
        assert read_json(case / "report.json")["input_fingerprint"] == \
            read_json(single / "report.json")["input_fingerprint"]
        assert read_json(case / "report.json")["engine"] == read_json(single / "report.json")["engine"]

    failures = pd.read_csv(out / "failures.csv")
    assert list(failures.columns) == ["case_id", "input", "kind", "message"]
    by_id = failures.set_index("case_id")
    assert sorted(by_id.index) == sorted(BAD)
    assert (by_id["kind"] == "input").all()
    assert "cannot be read as an image" in by_id.loc["broken", "message"]
    assert "not CT in Hounsfield units" in by_id.loc["mr_like", "message"]
    assert all("\n" not in m for m in by_id["message"])

    counts = read_json(out / "cohort.json")["counts"]
    assert counts == {"cases": 7, "done": 5, "skipped": 0, "failed": 2, "not_run": 0,
                      "retried_after_worker_death": 0}
    assert "5 segmented, 0 already done, 2 failed" in run.stdout


def test_progress_dashboard_and_one_model_load_per_worker(cohort):
    _inputs, out, run = cohort
    assert "cases: 100%" in run.stderr and "7/7" in run.stderr
    assert "Dask dashboard at http" in run.stderr
    record = read_json(out / "cohort.json")
    assert record["settings"]["execution"]["kind"] == "local"
    assert record["settings"]["execution"]["workers"] == 2
    assert record["workers"] == 2 and record["model_loads"] == 2    # both workers ran cases; one load each
    assert record["engine"]["engine"] == "threshold"
    assert record["timings"]["engine_s"] > 0


def test_cohort_tables_are_the_per_case_tables_concatenated(cohort):
    _inputs, out, _run = cohort
    for cohort_file, case_file in (("cohort_statistics.csv", "statistics.csv"), ("cohort_metrics.csv", "metrics.csv")):
        expected = pd.concat([pd.read_csv(out / "cases" / case_id / case_file)
                              .assign(case_id=case_id) for case_id in sorted(GOOD)], ignore_index=True)
        expected = expected[["case_id"] + [c for c in expected.columns if c != "case_id"]]
        pd.testing.assert_frame_equal(pd.read_csv(out / cohort_file), expected)
    statistics = pd.read_csv(out / "cohort_statistics.csv")
    metrics = pd.read_csv(out / "cohort_metrics.csv")
    parquet = pd.read_parquet(out / "cohort.parquet")
    pd.testing.assert_frame_equal(parquet[list(statistics.columns)], statistics, check_dtype=False)
    pd.testing.assert_frame_equal(parquet[list(metrics.columns)].drop_duplicates(ignore_index=True), metrics,
                                  check_dtype=False)


def test_summary_labels_the_outlying_case(cohort):
    _inputs, out, _run = cohort
    assert (out / "cohort_summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = sitk.ReadImage(str(out / "cohort_summary.png"))
    assert image.GetWidth() > 800
    outliers = read_json(out / "cohort.json")["outliers"]
    assert outliers["SAT volume (cm³)"] == ["site2__thick_fat"]


def test_outliers_need_the_fences_and_a_real_difference():
    from LegSegNetLib.cohort import outlying
    alike = {"a": 125.6, "b": 125.7, "c": 125.8, "d": 123.6}       # IQR ~0.2: Tukey alone would flag d
    assert outlying(alike) == []
    assert outlying({**alike, "e": 199.0}) == ["e"]
    assert outlying({"a": 100.0, "b": 101.0, "c": 99.0, "d": 80.0, "e": 100.5}) == ["d"]
    assert outlying({"a": 1.0, "b": 2.0, "c": 300.0}) == []        # fewer than four cases: nothing


def test_patient_identifiers_never_reach_cohort_files(cohort):
    _inputs, out, _run = cohort
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in files) and len(files) > 30
    for path in files:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        for value in (PATIENT["name"], "Doe", PATIENT["id"], PATIENT["birth"], DICOM_UID):
            assert value.encode() not in data, (path, value)


def test_keep_identifiers_adds_them_to_the_tables(cohort, tmp_path):
    inputs, _out, _run = cohort
    assert run_cli("batch", inputs / "scans", "-o", tmp_path, "--workers", 1, "--keep-identifiers", "--engine", "threshold") == 0
    table = pd.read_csv(tmp_path / "cohort_metrics.csv", dtype=str)
    assert set(table["patient_name"]) == {PATIENT["name"]}
    assert set(table["patient_id"]) == {PATIENT["id"]}
    assert set(table["patient_birth_date"]) == {PATIENT["birth"]}


def test_rerun_skips_finished_cases_and_force_reruns_them(cohort, tmp_path):
    inputs, out, _run = cohort
    out = Path(shutil.copytree(out, tmp_path / "out"))
    stamps = {c: (out / "cases" / c / "report.json").stat().st_mtime_ns for c in GOOD}

    assert run_cli("batch", inputs, "-o", out, "--workers", 2, "--engine", "threshold") == 3
    record = read_json(out / "cohort.json")
    assert record["counts"]["skipped"] == 5 and record["counts"]["done"] == 0
    assert record["timings"]["engine_s"] == 0
    assert {c: (out / "cases" / c / "report.json").stat().st_mtime_ns for c in GOOD} == stamps

    shutil.rmtree(out / "cases" / "knee_b")                 # a case that never finished
    assert run_cli("batch", inputs, "-o", out, "--workers", 2, "--engine", "threshold") == 3
    statuses = {c["case_id"]: c["status"] for c in read_json(out / "cohort.json")["cases"]}
    assert statuses["knee_b"] == "done"
    assert sorted(c for c, s in statuses.items() if s == "skipped") == sorted(set(GOOD) - {"knee_b"})

    assert run_cli("batch", inputs, "-o", out, "--workers", 2, "--engine", "threshold", "--force") == 3
    assert read_json(out / "cohort.json")["counts"]["done"] == 5
    assert all((out / "cases" / c / "report.json").stat().st_mtime_ns != stamps[c] for c in GOOD)


def test_changed_input_or_settings_are_not_skipped(cohort, tmp_path):
    inputs, out, _run = cohort
    out = Path(shutil.copytree(out, tmp_path / "out"))
    moved = tmp_path / "moved"          # the fingerprint is of the bytes: moved inputs still count as done
    moved.mkdir()
    for name in ("knee_a.nii.gz", "knee_b.nrrd"):
        shutil.copy(inputs / name, moved / name)
    sitk.WriteImage(make_phantom(seed=11, shape=SHAPE).ct, str(moved / "knee_a.nii.gz"), useCompression=True)
    assert run_cli("batch", moved, "-o", out, "--workers", 1, "--engine", "threshold") == 0
    statuses = {c["case_id"]: c["status"] for c in read_json(out / "cohort.json")["cases"]}
    assert statuses == {"knee_a": "done", "knee_b": "skipped"}           # new bytes → rerun
    assert run_cli("batch", moved / "knee_b.nrrd", "-o", out, "--workers", 1, "--slices", "2:6", "--engine", "threshold") == 0
    assert read_json(out / "cohort.json")["cases"][0]["status"] == "done"   # other settings → rerun


# ---------------------------------------------------------------- discovery and arguments (no cluster)
def test_discovery_of_folders_and_list_files(cohort, tmp_path):
    inputs, _out, _run = cohort
    found = {c.case_id: c for c in discover_cases([inputs], outdir=inputs / "out")}
    assert sorted(found) == sorted({**GOOD, **BAD})
    assert found[series_id(DICOM_UID)].series_uid == DICOM_UID
    assert "scans" not in series_id(DICOM_UID)            # folder names may hold patient names

    (tmp_path / "cohort.txt").write_text(f"# one path a line\n{inputs / 'knee_a.nii.gz'}\n\n{inputs / 'scans'}\n")
    listed = discover_cases([tmp_path / "cohort.txt"])
    assert [c.case_id for c in listed] == ["knee_a", series_id(DICOM_UID)]

    rel = os.path.relpath(inputs / "site2" / "knee_c.mha", tmp_path)
    (tmp_path / "cohort.csv").write_text(f"path,case_id\n{rel},subject-07\n{inputs / 'scans'},subject-08\n"
                                         f"missing.nii.gz,\n{inputs / 'knee_a.nii.gz'},subject-07\n")
    listed = discover_cases([tmp_path / "cohort.csv"])
    assert [c.case_id for c in listed][:3] == ["subject-07", "subject-08", "missing"]
    assert listed[3].case_id.startswith("subject-07-")     # a clashing id gets a stable suffix
    assert Path(listed[0].input).resolve() == (inputs / "site2" / "knee_c.mha").resolve()

    (tmp_path / "bad.csv").write_text("file\nx.nii.gz\n")
    with pytest.raises(InputError, match="'path' column"):
        discover_cases([tmp_path / "bad.csv"])


def test_missing_listed_file_is_a_failed_case_not_a_stopped_run(cohort, tmp_path):
    inputs, _out, _run = cohort
    (tmp_path / "list.txt").write_text(f"{inputs / 'knee_a.nii.gz'}\n{tmp_path / 'gone.nii.gz'}\n")
    assert run_cli("batch", tmp_path / "list.txt", "-o", tmp_path / "out", "--workers", 1, "--engine", "threshold") == 3
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert list(failures["case_id"]) == ["gone"] and "no such file" in failures["message"][0]
    assert (tmp_path / "out" / "cases" / "knee_a" / "report.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "no such file or folder"),
    (["{inputs}", "--workers", "0"], "--workers must be at least 1"),
    (["{inputs}", "--cluster", "slurm"], "--cluster and --cluster-config go together"),
    (["{inputs}", "--cluster", "slurm", "--cluster-config", "nope.yaml"], "nope.yaml: no such file"),
])
def test_bad_arguments_exit_2(cohort, tmp_path, capsys, args, message):
    inputs, _out, _run = cohort
    args = [a.format(inputs=inputs) for a in args]
    assert run_cli("batch", *args, "-o", tmp_path / "out") == 2
    assert message in capsys.readouterr().err


def test_slurm_job_script_holds_the_requested_resources(tmp_path, capsys):
    config = tmp_path / "slurm.yaml"
    config.write_text("queue: long\naccount: legs\ncores: 8\nprocesses: 2\nmemory: 32GB\nwalltime: '04:00:00'\n"
                      "jobs: 3\njob_extra_directives: ['--gres=gpu:1']\n"
                      "job_script_prologue: ['source /opt/legsegnet/bin/activate']\n")
    assert run_cli("batch", tmp_path, "-o", tmp_path / "out", "--cluster", "slurm", "--cluster-config", config,
                   "--print-job-script") == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH -p long", "#SBATCH -A legs", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=30G",
                 "#SBATCH -t 04:00:00", "#SBATCH --gres=gpu:1", "source /opt/legsegnet/bin/activate"):
        assert line in script.splitlines(), line
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert "--nworkers 2" in worker and "--nthreads 4" in worker and "--memory-limit 14.90GiB" in worker
    config.write_text("queue: long\ncores: 8\nmemory: 32GB\nno_such_option: 1\n")
    assert run_cli("batch", tmp_path, "-o", tmp_path / "out", "--cluster", "slurm", "--cluster-config", config,
                   "--print-job-script") == 2
    assert "no_such_option" in capsys.readouterr().err


def test_network_engine_is_loaded_once_per_worker_and_matches_segment(tmp_path):
    """The network options reach the workers; each worker loads the model once; labels equal `segment`'s."""
    model = REPO / "LegSegNet" / "Testing" / "Data" / "nnunet_test_model"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for seed in (1, 2):
        sitk.WriteImage(make_phantom(seed=seed, shape=SHAPE).ct, str(inputs / f"leg{seed}.nii.gz"))
    run = run_batch_process(inputs, "-o", tmp_path / "out", "--workers", 1, "--engine", "nnunet", "--model", model)
    assert run.returncode == 0, run.stderr
    record = read_json(tmp_path / "out" / "cohort.json")
    assert record["model_loads"] == 1 and record["engine"]["engine"] == "nnunet"
    assert run_cli("segment", inputs / "leg1.nii.gz", "-o", tmp_path / "single", "--engine", "nnunet",
                   "--model", model) == 0
    np.testing.assert_array_equal(array(sitk.ReadImage(str(tmp_path / "out" / "cases" / "leg1" / "labels.nii.gz"))),
                                  array(sitk.ReadImage(str(tmp_path / "single" / "labels.nii.gz"))))
    assert read_json(tmp_path / "out" / "cases" / "leg1" / "report.json")["engine"]["engine"] == "nnunet"
