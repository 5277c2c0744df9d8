"""`legsegnet batch` features README promises beyond test_batch.py: renamed inputs still count as done, the output
folder inside the input folder is never searched, a running scheduler, PBS/SGE/LSF job scripts, the `engine`
failure kind and the default local worker sizing."""
import json

import pandas as pd
import pytest
import SimpleITK as sitk

from LegSegNetLib.batch import local_cluster_size
from LegSegNetLib.cases import series_id
from LegSegNetLib.phantom import make_phantom

from conftest import run_cli, write_dicom_series

SHAPE = (4, 128, 160)
UID = "1.2.826.0.1.3680043.2.1125.1616.1"


def statuses(out):
    return {c["case_id"]: c["status"] for c in json.loads((out / "cohort.json").read_text())["cases"]}


def batch(*args):
    return run_cli("batch", *args, "--workers", 1, "--engine", "threshold")


def test_renamed_dicom_files_count_as_done_and_output_inside_input_is_not_searched(tmp_path):
    """Run 1 writes its output inside the input folder; run 2 finds the same two cases (not the label images of
    run 1) after the DICOM files were renamed and their folder moved: both are skipped."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    sitk.WriteImage(make_phantom(seed=1, shape=SHAPE).ct, str(inputs / "leg.nii.gz"))
    write_dicom_series(make_phantom(seed=2, shape=SHAPE).ct, inputs / "scans", series_uid=UID)
    out = inputs / "results"
    assert batch(inputs, "-o", out) == 0
    assert statuses(out) == {"leg": "done", series_id(UID): "done"}

    moved = inputs / "renamed"
    moved.mkdir()
    for n, path in enumerate(sorted((inputs / "scans").iterdir())):
        path.rename(moved / f"IM{1000 - n}")             # new folder, new names, names sort in the other order
    (inputs / "scans").rmdir()
    assert batch(inputs, "-o", out) == 0
    assert statuses(out) == {"leg": "skipped", series_id(UID): "skipped"}   # results/ holds .nii.gz: not searched


def test_renamed_file_with_the_same_case_id_counts_as_done(tmp_path):
    sitk.WriteImage(make_phantom(seed=3, shape=SHAPE).ct, str(tmp_path / "a.nii.gz"))
    (tmp_path / "list.csv").write_text("path,case_id\na.nii.gz,subject-1\n")
    assert batch(tmp_path / "list.csv", "-o", tmp_path / "out") == 0
    (tmp_path / "a.nii.gz").rename(tmp_path / "b.nii.gz")
    (tmp_path / "list.csv").write_text("path,case_id\nb.nii.gz,subject-1\n")
    assert batch(tmp_path / "list.csv", "-o", tmp_path / "out") == 0
    assert statuses(tmp_path / "out") == {"subject-1": "skipped"}


def test_running_scheduler(tmp_path):
    """--scheduler ADDRESS: the cases run on the workers of a scheduler started here."""
    from distributed import LocalCluster
    sitk.WriteImage(make_phantom(seed=4, shape=SHAPE).ct, str(tmp_path / "c.nii.gz"))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert run_cli("batch", tmp_path / "c.nii.gz", "-o", tmp_path / "out", "--engine", "threshold",
                       "--scheduler", cluster.scheduler_address) == 0
    record = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert record["settings"]["execution"]["kind"] == "scheduler"
    assert record["settings"]["execution"]["address"] == cluster.scheduler_address
    assert statuses(tmp_path / "out") == {"c": "done"}
    assert (tmp_path / "out" / "cases" / "c" / "labels.nii.gz").is_file()


@pytest.mark.parametrize("kind,project_key,lines", [
    ("pbs", "account", ["#PBS -q long", "#PBS -A legs", "#PBS -l select=1:ncpus=8:mem=30GB",
                        "#PBS -l walltime=04:00:00"]),
    ("sge", "project", ["#$ -q long", "#$ -P legs", "#$ -l h_rt=04:00:00"]),
    ("lsf", "project", ["#BSUB -q long", '#BSUB -P "legs"', "#BSUB -n 8", "#BSUB -W 04:00:00"]),
])
def test_job_scripts_for_pbs_sge_lsf(tmp_path, capsys, kind, project_key, lines):
    config = tmp_path / f"{kind}.yaml"
    config.write_text(f"queue: long\n{project_key}: legs\ncores: 8\nprocesses: 2\nmemory: 32GB\n"
                      "walltime: '04:00:00'\njobs: 2\njob_script_prologue: ['source /opt/legsegnet/bin/activate']\n")
    assert run_cli("batch", tmp_path, "-o", tmp_path / "out", "--cluster", kind, "--cluster-config", config,
                   "--print-job-script") == 0
    script = capsys.readouterr().out.splitlines()
    for line in lines + ["source /opt/legsegnet/bin/activate"]:
        assert line in script, line
    worker = next(line for line in script if "distributed.cli.dask_worker" in line)
    assert "--nworkers 2" in worker and "--nthreads 4" in worker
    assert not (tmp_path / "out").exists()


def test_engine_that_cannot_be_created_is_failure_kind_engine(tmp_path):
    sitk.WriteImage(make_phantom(seed=5, shape=SHAPE).ct, str(tmp_path / "d.nii.gz"))
    code = run_cli("batch", tmp_path / "d.nii.gz", "-o", tmp_path / "out", "--workers", 1, "--engine", "nnunet",
                   "--model", tmp_path / "no-model")
    assert code == 3               # the model is opened on the worker; the case fails, the run completes
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert list(failures["kind"]) == ["engine"] and "does not exist" in failures["message"][0]


def test_default_local_worker_sizing():
    """As many workers as cores, no more than memory allows at 4 GiB a case nor than there are cases; the other
    cores as threads (workers × threads ≤ cores); an equal share of memory each."""
    from dask.system import CPU_COUNT
    from distributed.system import MEMORY_LIMIT
    case_memory = 4 * 2**30
    for n_cases in (1, 2, 3, 1000):
        size = local_cluster_size(n_cases)
        expected = max(1, min(CPU_COUNT, MEMORY_LIMIT // case_memory, n_cases))
        assert size["workers"] == expected, n_cases
        assert size["threads"] == max(1, CPU_COUNT // expected)
        assert size["workers"] * size["threads"] <= max(CPU_COUNT, size["workers"])
        assert size["memory_limit"] == MEMORY_LIMIT // expected
    assert local_cluster_size(1)["threads"] == CPU_COUNT
    assert local_cluster_size(5, workers=3) == {"workers": 3, "threads": max(1, CPU_COUNT // 3),
                                                "memory_limit": MEMORY_LIMIT // 3}
