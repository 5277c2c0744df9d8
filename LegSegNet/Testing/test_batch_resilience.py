"""`legsegnet batch` never loses work: a worker process killed mid-run, and the whole run interrupted (Ctrl-C)."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import SimpleITK as sitk

from LegSegNetLib.batch import CASE_FILES
from LegSegNetLib.phantom import make_phantom

from conftest import REPO, run_cli

N_CASES = 8


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Eight phantoms, large enough per case (about a second) to interrupt a run partway."""
    folder = tmp_path_factory.mktemp("resilience") / "inputs"
    folder.mkdir()
    for seed in range(N_CASES):
        sitk.WriteImage(make_phantom(seed=seed, shape=(20, 192, 240)).ct, str(folder / f"case{seed}.nii.gz"))
    return folder


def start_batch(inputs, out, **popen):
    return subprocess.Popen([sys.executable, "-m", "LegSegNetLib", "batch", str(inputs), "-o", str(out),
                             "--workers", "2", "--engine", "threshold"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **popen)


def wait_for_first_case(process, out, timeout=120):
    deadline = time.monotonic() + timeout
    while not list((out / "cases").glob("case*/report.json")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no case finished"
        time.sleep(0.02)


def dask_workers(process):
    """The worker processes of the batch's LocalCluster (spawned children, not multiprocessing's tracker)."""
    children = psutil.Process(process.pid).children()
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) == 2, [c.cmdline() for c in children]
    return workers


def assert_only_complete_case_folders(out):
    leftovers = [p.name for p in (out / "cases").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers
    done = sorted(p.name for p in (out / "cases").iterdir())
    for name in done:
        assert all((out / "cases" / name / f).is_file() for f in CASE_FILES), name
        json.loads((out / "cases" / name / "report.json").read_text())
    return done


def test_killed_worker_case_is_retried_and_run_completes(inputs, tmp_path):
    out = tmp_path / "out"
    process = start_batch(inputs, out)
    wait_for_first_case(process, out)
    victim = dask_workers(process)[0]
    victim.kill()                      # SIGKILL: as the kernel's OOM killer would
    _stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode(errors="replace")

    record = json.loads((out / "cohort.json").read_text())
    counts = record["counts"]
    assert counts["done"] + counts["skipped"] == N_CASES and counts["failed"] == 0
    retried = [c for c in record["cases"] if c.get("worker_deaths")]
    assert retried, "no case was held by the killed worker"
    # a retried case is segmented again, or skipped when the killed worker had just finished writing it
    assert all(c["status"] in ("done", "skipped") and not c["worker"].endswith(f":{victim.pid}") for c in retried)
    assert record["counts"]["retried_after_worker_death"] == len(retried)
    assert not victim.is_running()
    assert len(assert_only_complete_case_folders(out)) == N_CASES


def test_interrupted_run_leaves_no_half_case_and_next_run_finishes(inputs, tmp_path):
    out = tmp_path / "out"
    process = start_batch(inputs, out, start_new_session=True)
    wait_for_first_case(process, out)
    workers = dask_workers(process)
    os.killpg(process.pid, signal.SIGINT)            # Ctrl-C reaches the whole process group
    _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode(errors="replace")
    assert b"run the same command again" in stderr
    psutil.wait_procs(workers, timeout=10)
    assert not any(w.is_running() for w in workers)

    done_before = assert_only_complete_case_folders(out)
    assert 1 <= len(done_before) < N_CASES
    assert not (out / "cohort.json").exists()

    assert run_cli("batch", inputs, "-o", out, "--workers", 2, "--engine", "threshold") == 0
    statuses = {c["case_id"]: c["status"] for c in json.loads((out / "cohort.json").read_text())["cases"]}
    assert sorted(c for c, s in statuses.items() if s == "skipped") == done_before
    assert sum(s == "done" for s in statuses.values()) == N_CASES - len(done_before)
    assert len(assert_only_complete_case_folders(out)) == N_CASES
