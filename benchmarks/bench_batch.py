"""`legsegnet batch` throughput: cases/minute with 1 and 2 local workers on the same 8 phantom cases, model loads,
and the per-case time that is not the engine's.

Target (issue 7): scheduling overhead per case ≤ 5 %. Two overheads are printed, per case and per worker slot:
  wall − engine : everything but the engine (reading, fingerprint, statistics, writing the outputs, scheduling)
  wall − task   : what Dask adds around the task (scheduling, transfer, results) — the scheduling overhead
Cluster start-up is printed apart (paid once per run, not per case).
Run:  .venv/bin/python benchmarks/bench_batch.py [--cases 8] [--shape 40 384 384] [--engine auto]
"""
import argparse
import json
import tempfile
from pathlib import Path

import SimpleITK as sitk

from LegSegNetLib.batch import run_batch
from LegSegNetLib.phantom import make_phantom


def write_cases(folder, n, shape):
    for seed in range(n):
        sitk.WriteImage(make_phantom(seed=seed, shape=shape).ct, str(folder / f"case{seed:02d}.nii.gz"),
                        useCompression=True)


def measure(inputs, out, workers, engine):
    cohort = run_batch([inputs], out, engine=engine, workers=workers, show_progress=False)
    execution = cohort["settings"]["execution"]
    cases = [c for c in cohort["cases"] if c["status"] == "done"]
    n = len(cases)
    slot_wall = execution["tasks_s"] * workers / n          # wall time per case and worker slot
    engine_s = sum(c["engine_s"] for c in cases) / n
    task_s = sum(c["task_s"] for c in cases) / n
    return {"workers": workers, "cases": n, "start_s": execution["start_s"], "tasks_s": execution["tasks_s"],
            "cases_per_min": 60 * n / execution["tasks_s"],
            "cases_per_min_with_start": 60 * n / (execution["tasks_s"] + execution["start_s"]),
            "model_loads": cohort["model_loads"], "engine_s": engine_s, "task_s": task_s, "slot_wall_s": slot_wall,
            "not_engine_pct": 100 * (slot_wall - engine_s) / slot_wall,
            "scheduling_pct": 100 * (slot_wall - task_s) / slot_wall}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 384, 384), help="z y x voxels of each phantom")
    parser.add_argument("--engine", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        write_cases(inputs, args.cases, tuple(args.shape))
        rows = [measure(inputs, Path(tmp) / f"out{w}", w, args.engine) for w in (1, 2)]
    print(f"legsegnet batch: {args.cases} phantom cases of {'×'.join(map(str, args.shape))} voxels, "
          f"engine {args.engine}")
    print(f"{'workers':>7} {'start s':>8} {'run s':>7} {'cases/min':>10} {'(with start)':>12} {'loads':>6} "
          f"{'engine s':>9} {'task s':>7} {'wall/case':>10} {'wall-engine':>12} {'wall-task':>10}")
    for r in rows:
        print(f"{r['workers']:>7} {r['start_s']:>8.1f} {r['tasks_s']:>7.1f} {r['cases_per_min']:>10.1f} "
              f"{r['cases_per_min_with_start']:>12.1f} {r['model_loads']:>6} {r['engine_s']:>9.2f} "
              f"{r['task_s']:>7.2f} {r['slot_wall_s']:>10.2f} {r['not_engine_pct']:>11.1f}% "
              f"{r['scheduling_pct']:>9.1f}%")
    print(f"speed-up 2 vs 1 worker: {rows[1]['cases_per_min'] / rows[0]['cases_per_min']:.2f}×")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
