"""Classical engine on a 512×512×300 phantom: slices/s and peak memory relative to the input array.

Targets (issue 3): ≥ 50 slices/s on this 2-core machine; peak memory during segmentation ≤ 3× the input array.
Peak memory is what numpy/scipy allocate during the engine run (tracemalloc), the input array excluded.
Run:  .venv/bin/python benchmarks/bench_classical.py [--slices 300]
"""
import argparse
import time
import tracemalloc

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.classical import ClassicalEngine
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.volumes import AxialView


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    phantom = make_phantom(seed=0, shape=(args.slices, 512, 512), spacing=(1.0, 0.7, 0.7), noise=20)
    view = AxialView.of(phantom.ct)
    hu = view.to_canonical(sitk.GetArrayViewFromImage(phantom.ct))
    truth = view.to_canonical(sitk.GetArrayViewFromImage(phantom.truth))
    engine = ClassicalEngine()
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        labels = engine.segment(hu, view.spacing)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    labels = engine.segment(hu, view.spacing)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    best = min(times)
    rate = args.slices / best
    ratio = peak / hu.nbytes
    dice = [2 * np.sum((labels == k) & (truth == k)) / (np.sum(labels == k) + np.sum(truth == k)) for k in (1, 2, 3, 4)]
    print(f"volume {hu.shape[2]}x{hu.shape[1]}x{hu.shape[0]} {hu.dtype} ({hu.nbytes / 2**20:.0f} MiB)")
    print(f"classical engine: {best:.2f} s (best of {args.repeat}) = {rate:.0f} slices/s   target >= 50: "
          f"{'met' if rate >= 50 else 'NOT met'}")
    print(f"peak memory during segmentation: {peak / 2**20:.0f} MiB = {ratio:.2f} x input   target <= 3: "
          f"{'met' if ratio <= 3 else 'NOT met'}")
    print("Dice SAT/SM/IMAT/Bone: " + " ".join(f"{d:.3f}" for d in dice))


if __name__ == "__main__":
    main()
