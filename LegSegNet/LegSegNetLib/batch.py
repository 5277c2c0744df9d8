"""Cohort runs (`legsegnet batch`): every case is one Dask task calling pipeline.segment_case, the function
`legsegnet segment` calls. A LocalCluster by default, a running scheduler or an HPC queue (dask-jobqueue) on
request. Resumable (finished cases are skipped), failures isolated (one bad case never stops the rest).

Dask is imported lazily so the rest of the core works without it.
"""
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .cases import discover_cases
from .dicom_seg import FILE_NAME as DICOM_SEG_FILE
from .engines import make_engine
from .errors import InputError, environment_problem
from .outputs import FolderLock, check_location, inside, remove_leftovers, uninterrupted
from .pipeline import OUTPUT_FILES as CASE_FILES
from .pipeline import check_outputs, segment_case, settings_digest, slice_bounds
from .volumes import input_fingerprint

CASE_MEMORY = 4 * 2**30        # generous working set of one case; bounds the default number of local workers
WORKER_DEATHS_ALLOWED = 1      # a case whose worker dies is retried once elsewhere, then recorded as failed
JOBQUEUE_CLUSTERS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster"}
LOCK_NAME = ".legsegnet-batch.lock"


@dataclass
class Job:
    """What every task needs besides its case (small: sent with each task)."""
    cases_dir: str
    engine: str = "auto"
    engine_options: dict = field(default_factory=dict)
    slices: str = None
    force: bool = False
    tag: str = ""                 # marks this run's temporary case folders (outputs.atomic_folder)
    with_dicom_seg: bool = False  # also segmentation.dcm (every case is a DICOM series)


# ---------------------------------------------------------------- the task (runs on a worker)
_engines = {}                 # (engine name, options) -> (engine, reason): one model load per worker process
_engine_lock = threading.Lock()
_engine_loads = [0]


def worker_engine(name, options):
    key = (name, json.dumps(options, sort_keys=True, default=str))
    with _engine_lock:     # a worker may run several tasks in threads; load once
        if key not in _engines:
            _engines[key] = make_engine(name, **options)
            _engine_loads[0] += 1
        return _engines[key]


def is_finished(outdir, case, engine, slices, with_dicom_seg=False):
    """A complete case folder (written atomically) from the same input bytes, engine and settings."""
    if not all((outdir / name).is_file() for name in CASE_FILES + ((DICOM_SEG_FILE,) if with_dicom_seg else ())):
        return False
    try:
        report = json.loads((outdir / "report.json").read_text())
        return (report.get("settings_digest") == settings_digest(engine.report(), slices)
                and report.get("input_fingerprint") == input_fingerprint(case.input, case.series_uid))
    except (OSError, ValueError):
        return False


def run_case(case, job):
    """One task: skip a finished case, else segment it with this worker's engine. Never raises for a bad case."""
    start = time.perf_counter()
    outdir = Path(job.cases_dir) / case.case_id
    result = {"case_id": case.case_id, "input": case.input, "worker": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        engine, reason = worker_engine(job.engine, job.engine_options)
    except Exception as err:   # noqa: BLE001 - reported per case, the run goes on
        return {**result, **failure("engine", err, traceback.format_exc())}
    result.update(engine={**engine.report(), "reason": reason}, engine_loads=_engine_loads[0])
    try:
        inside(outdir, job.cases_dir)
        if not job.force and is_finished(outdir, case, engine, job.slices, job.with_dicom_seg):
            return {**result, "status": "skipped", "task_s": time.perf_counter() - start}
        segment_case(case.input, outdir, engine=engine, slices=job.slices, overwrite=True,    # the run holds the
                     series_uid=case.series_uid, engine_reason=reason, lock=False, tag=job.tag,  # cohort's lock
                     with_dicom_seg=job.with_dicom_seg)
        timings = json.loads((outdir / "report.json").read_text())["timings"]
        return {**result, "status": "done", "engine_s": timings["engine_s"], "task_s": time.perf_counter() - start}
    except InputError as err:
        return {**result, **failure("input", err)}
    except MemoryError as err:
        return {**result, **failure("memory", err)}
    except OSError as err:
        if environment_problem(err):     # a full disk or a forbidden location is no bug: no traceback
            return {**result, **failure("environment", InputError(environment_problem(err)))}
        return {**result, **failure("error", err, traceback.format_exc())}
    except Exception as err:   # noqa: BLE001 - a bug in one case must not stop the cohort
        return {**result, **failure("error", err, traceback.format_exc())}


def failure(kind, err, trace=None):
    text = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
    return {"status": "failed", "kind": kind, "message": one_line(text), "traceback": trace}


def one_line(text):
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return " ".join(lines)[:500] if lines else "no message"


# ---------------------------------------------------------------- execution
def local_cluster_size(n_cases, workers=None):
    """Worker processes × numeric threads ≤ cores, each with an equal share of memory as its limit."""
    from dask.system import CPU_COUNT               # both respect cgroup and affinity limits
    from distributed.system import MEMORY_LIMIT
    if workers is None:
        workers = max(1, min(CPU_COUNT, MEMORY_LIMIT // CASE_MEMORY, n_cases))
    return {"workers": workers, "threads": max(1, CPU_COUNT // workers), "memory_limit": int(MEMORY_LIMIT // workers)}


def dask_settings(threads):
    """Scheduler and worker settings for a run: the retry rule, and numeric threads per worker process
    (Dask's default of 1 would leave cores idle when there are fewer workers than cores)."""
    settings = {"distributed.scheduler.allowed-failures": WORKER_DEATHS_ALLOWED,
                "distributed.worker.preload": [__name__]}      # dask_setup below
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        settings[f"distributed.nanny.pre-spawn-environ.{var}"] = threads
    return settings


def dask_setup(worker):
    """Preload hook of local workers: Ctrl-C is the client's to handle (it cancels the run and closes the
    cluster in order); workers that took it too would die noisily mid-case."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def read_cluster_config(path):
    import yaml
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"{path}: cannot read the cluster configuration ({one_line(err)})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: the cluster configuration must be a YAML mapping (queue, cores, memory, ...)")
    return config


def open_hpc_cluster(kind, config_path):
    """A dask-jobqueue cluster from a YAML file of its keyword arguments, plus `jobs` (how many to request).
    Returns (cluster, jobs); no job is submitted until the cluster is scaled."""
    config = read_cluster_config(config_path)
    jobs = config.pop("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"{config_path}: 'jobs' must be a positive integer")
    import dask_jobqueue
    quiet_dask_logs()
    try:
        cluster = getattr(dask_jobqueue, JOBQUEUE_CLUSTERS[kind])(**config)
    except (TypeError, ValueError) as err:
        raise InputError(f"{config_path}: {one_line(err)}") from None
    return cluster, jobs


def quiet_dask_logs():
    """Keep Dask's warnings (a worker died, memory is short) and drop its start-up chatter."""
    logging.getLogger("distributed").setLevel(logging.WARNING)


@contextmanager
def dask_client(n_cases, workers=None, scheduler=None, cluster=None, cluster_config=None):
    """A Dask client on the chosen execution, and a description of it for cohort.json."""
    from distributed import Client, LocalCluster
    quiet_dask_logs()
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as err:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({one_line(err)})") from None
        with client:
            yield client, {"kind": "scheduler", "address": scheduler}
    elif cluster:
        hpc, jobs = open_hpc_cluster(cluster, cluster_config)
        with hpc, Client(hpc) as client:
            hpc.scale(jobs=jobs)
            yield client, {"kind": cluster, "jobs": jobs, "config": os.fspath(cluster_config)}
    else:
        size = local_cluster_size(n_cases, workers)
        with dask_config(dask_settings(size["threads"])):   # restarted workers read it too: keep it for the run
            local = LocalCluster(n_workers=size["workers"], threads_per_worker=1, processes=True,
                                 memory_limit=size["memory_limit"])
            with local, Client(local) as client:
                yield client, {"kind": "local", **size}


def dask_config(settings):
    import dask
    return dask.config.set(settings)


def dashboard_address(client):
    try:
        return client.dashboard_link if "dashboard" in client.scheduler_info()["services"] else None
    except Exception:   # noqa: BLE001 - the address is a courtesy
        return None


def run_tasks(client, cases, job, show_progress=True):
    """Submit one task per case; collect results as they finish, with one progress bar over cases."""
    from distributed import as_completed
    from tqdm import tqdm
    token = hashlib.sha256(f"{time.time_ns()}{os.getpid()}".encode()).hexdigest()[:8]
    pending = {client.submit(run_case, case, job, key=f"legsegnet-{token}-{case.case_id}", pure=False): case
               for case in cases}
    results, counts = {}, {"done": 0, "skipped": 0, "failed": 0}
    bar = tqdm(total=len(cases), unit="case", file=sys.stderr, disable=not show_progress, desc="cases")
    try:
        for future in as_completed(list(pending)):
            case = pending.pop(future)
            result = task_result(future, case)
            deaths = worker_deaths(client, future.key)
            if deaths:
                result["worker_deaths"] = deaths
            future.release()       # a result held by a worker that dies later would be recomputed
            results[case.case_id] = result
            counts[result["status"]] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return results


def task_result(future, case):
    from distributed import KilledWorker
    try:
        return future.result()
    except KilledWorker:
        return {"case_id": case.case_id, "input": case.input, "status": "failed", "kind": "worker_died",
                "message": f"the worker running this case died {WORKER_DEATHS_ALLOWED + 1} times "
                           "(killed, or over its memory limit)"}
    except Exception as err:   # noqa: BLE001 - e.g. the task could not reach a worker
        return {"case_id": case.case_id, "input": case.input, **failure("error", err)}


def worker_deaths(client, key):
    """How often a worker died while holding this task (the scheduler's 'suspicious' count)."""
    def count(dask_scheduler, key):
        task = dask_scheduler.tasks.get(key)
        return task.suspicious if task is not None else 0
    try:
        return client.run_on_scheduler(count, key=key)
    except Exception:   # noqa: BLE001 - a scheduler may refuse run_on_scheduler; the count is informative only
        return 0


def run_batch(inputs, outdir, engine="auto", engine_options=None, slices=None, workers=None, scheduler=None,
              cluster=None, cluster_config=None, force=False, keep_identifiers=False, show_progress=True,
              with_dicom_seg=False):
    """Run a cohort and write its outputs into outdir, which is locked for the run (a second run on it stops
    with InputError naming the holder). Returns cohort.json's content."""
    check_execution_arguments(workers, scheduler, cluster, cluster_config)
    if slices:
        slice_bounds(slices)                 # a bad range stops the run before any case runs
    outdir = check_location(outdir)
    created = not outdir.exists()
    outdir.mkdir(exist_ok=True)
    try:
        with FolderLock(outdir / LOCK_NAME, f"cohort folder {outdir}") as lock:
            cases = discover_cases(inputs, outdir, keep_identifiers)
            for case in cases if with_dicom_seg else ():
                check_outputs(case.input, (), with_dicom_seg)   # DICOM series only, highdicom installed
            settings = {"inputs": [os.fspath(i) for i in inputs], "engine": engine, "slices": slices or "all",
                        "force": force, "keep_identifiers": keep_identifiers, "dicom_seg": with_dicom_seg}
            job = Job(None, engine, dict(engine_options or {}), slices, force, f"run-{lock.token}.", with_dicom_seg)
            return _run_locked(outdir, cases, job, lock, settings, (workers, scheduler, cluster, cluster_config),
                               show_progress)
    except InputError:
        if created and not any(outdir.iterdir()):
            outdir.rmdir()                   # nothing ran: leave no trace
        raise


def _run_locked(outdir, cases, job, lock, settings, execution_args, show_progress):
    from .cohort import write_cohort
    started = time.time()
    cases_dir = outdir / "cases"
    if cases_dir.is_symlink() or (cases_dir.exists() and not cases_dir.is_dir()):
        raise InputError(f"{cases_dir} is not a folder")
    cases_dir.mkdir(exist_ok=True)
    if lock.taken_over:                      # a run killed outright: its temporary case folders are known
        remove_leftovers(cases_dir, f"run-{lock.taken_over.get('token')}.")
    if job.engine_options.get("model"):      # workers may start elsewhere (a scheduler, a queue job)
        job.engine_options["model"] = os.path.abspath(job.engine_options["model"])
    job.cases_dir = os.fspath(cases_dir.resolve())
    try:
        t = time.perf_counter()
        with dask_client(len(cases), *execution_args) as (client, execution):
            execution["start_s"] = time.perf_counter() - t
            link = dashboard_address(client)
            if link:
                print(f"legsegnet: Dask dashboard at {link}", file=sys.stderr)
            t = time.perf_counter()
            results = run_tasks(client, cases, job, show_progress)
            execution["tasks_s"] = time.perf_counter() - t
    finally:
        with uninterrupted():
            remove_leftovers(cases_dir, job.tag)     # the workers are gone: nothing is writing any more
    settings.update(engine_options=job.engine_options, execution=execution)
    return write_cohort(outdir, cases, results, settings, started)


def check_execution_arguments(workers, scheduler, cluster, cluster_config):
    if workers is not None and workers < 1:
        raise InputError("--workers must be at least 1")
    if scheduler and cluster:
        raise InputError("choose --scheduler or --cluster, not both")
    if cluster and cluster not in JOBQUEUE_CLUSTERS:
        raise InputError(f"--cluster {cluster}: choose from {', '.join(JOBQUEUE_CLUSTERS)}")
    if bool(cluster) != bool(cluster_config):
        raise InputError("--cluster and --cluster-config go together (the YAML file holds queue, cores, memory, ...)")
    if cluster_config and not Path(cluster_config).is_file():
        raise InputError(f"{cluster_config}: no such file")


def exit_code(cohort):
    """0: every case succeeded; 3: some failed (see failures.csv)."""
    return 3 if cohort["counts"]["failed"] else 0
