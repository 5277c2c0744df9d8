"""Classical engine vs the naive per-slice reference (3×3 median, holes filled, the same HU windows).

On a 512×512×300 phantom (0.7 × 0.7 × 1 mm): slices/s of both, measured interleaved in one run; peak memory of
the engine relative to the input array; Dice of both. Then Dice of both on harder phantom draws (vary=True,
anatomy=True: varied SAT, septa, HU, blur and noise texture, deep fat pads, fatty muscle, fat open to the
surface; one draw lying on a dense table with touching legs).
Targets (issues 3, 13, 15): ≥ 50 slices/s on this 2-core machine; peak memory ≤ 3× the input; on the hard
draws SAT and IMAT Dice ≥ 0.90 and mean ≥ 0.93, and above the reference tissue by tissue.
Run:  .venv/bin/python benchmarks/bench_classical.py [--slices 300] [--repeat 2] [--seeds 11,12,13,14]
      .venv/bin/python benchmarks/bench_classical.py --draws-only --seeds 11-30 --second-seeds 101-112
      .venv/bin/python benchmarks/bench_classical.py --draws-only --seeds 11 --no-septa-seeds 11-30
"""
import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.classical import ClassicalEngine
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.tissues import BY_SHORT
from LegSegNetLib.volumes import AxialView

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LegSegNet" / "Testing"))
from conftest import tissue_dice  # noqa: E402
from second_phantom import make as make_second  # noqa: E402
from simple_reference import reference  # noqa: E402


def canonical(phantom):
    view = AxialView.of(phantom.ct)
    hu = view.to_canonical(sitk.GetArrayFromImage(phantom.ct))
    return view, hu, view.to_canonical(sitk.GetArrayFromImage(phantom.truth))


def dice(labels, truth):
    """Dice per tissue, in the tissue table's order."""
    return list(tissue_dice(labels, truth).values())


def show(scores):
    return " ".join(f"{d:.3f}" for d in scores) + f"  mean {np.mean(scores):.3f}"


def speed(args):
    phantom = make_phantom(seed=0, shape=(args.slices, 512, 512), spacing=(1.0, 0.7, 0.7), noise=20)
    view, hu, truth = canonical(phantom)
    engine = ClassicalEngine()
    times = {"engine": [], "reference": []}
    for _ in range(args.repeat):                      # interleaved, so both see the same machine load
        for name, run in (("engine", lambda: engine.segment(hu, view.spacing)), ("reference", lambda: reference(hu))):
            start = time.perf_counter()
            labels = run()
            times[name].append(time.perf_counter() - start)
            if name == "engine":
                engine_labels = labels
    tracemalloc.start()
    engine.segment(hu, view.spacing)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rate = {name: args.slices / min(t) for name, t in times.items()}
    ratio = peak / hu.nbytes
    print(f"volume {hu.shape[2]}x{hu.shape[1]}x{hu.shape[0]} {hu.dtype} ({hu.nbytes / 2**20:.0f} MiB), "
          f"best of {args.repeat}, interleaved")
    print(f"classical engine: {min(times['engine']):.2f} s = {rate['engine']:.0f} slices/s   target >= 50: "
          f"{'met' if rate['engine'] >= 50 else 'NOT met'}")
    print(f"naive reference:  {min(times['reference']):.2f} s = {rate['reference']:.0f} slices/s   "
          f"engine / reference speed: {rate['engine'] / rate['reference']:.2f}")
    print(f"peak memory during segmentation: {peak / 2**20:.0f} MiB = {ratio:.2f} x input   target <= 3: "
          f"{'met' if ratio <= 3 else 'NOT met'}")
    print("Dice SAT/SM/IMAT/Bone  engine    " + show(dice(engine_labels, truth)))
    print("                       reference " + show(dice(labels, truth)))


def hard_draws(seeds, septa=True):
    if septa:
        print("hard draws (vary, anatomy; Dice SAT/SM/IMAT/Bone; the share of each deep-fat feature's IMAT voxels "
              "labelled IMAT):")
    else:
        print("draws without septa (vary, no anatomy: IMAT only as fat blobs inside the muscle; "
              "Dice SAT/SM/IMAT/Bone):")
    means, below = [], 0
    for seed in seeds:
        options = dict(seed=seed, vary=True, anatomy=septa, table_contact=seed % 2 == 0, touching=seed % 3 == 0,
                       septa=septa)
        phantom = make_phantom(**options)
        view, hu, truth = canonical(phantom)
        labels = ClassicalEngine().segment(hu, view.spacing)
        engine, simple = dice(labels, truth), dice(reference(hu), truth)
        means.append(np.mean(engine))
        below += any(e < r for e, r in zip(engine, simple))
        extra = ", ".join(k for k in ("table_contact", "touching") if options[k]) or "-"
        print(f"  seed {seed} ({extra}): engine {show(engine)}   reference {show(simple)}")
        if septa:
            print("      features IMAT: " + "  ".join(f"{name} {feature_share(view, mask, labels, truth):.0%}"
                                                       for name, mask in phantom.features.items()))
    print(f"  engine mean Dice over these draws {np.mean(means):.4f}, worst draw {np.min(means):.4f}; draws where "
          f"the engine is below the reference on some tissue: {below}")


def second_draws(seeds):
    """Testing/second_phantom.py, written independently of LegSegNetLib/phantom.py: touching legs on even seeds,
    mirrored on multiples of 3, on a dense table when seed % 4 is 1 or 2."""
    print("second phantom (Dice SAT/SM/IMAT/Bone):")
    engine_all, simple_all = [], []
    for seed in seeds:
        hu, truth, spacing, _ = make_second(seed, touching=seed % 2 == 0, mirrored=seed % 3 == 0,
                                            table_contact=seed % 4 in (1, 2))
        engine, simple = dice(ClassicalEngine().segment(hu, spacing), truth), dice(reference(hu), truth)
        engine_all.append(engine)
        simple_all.append(simple)
        print(f"  seed {seed}: engine {show(engine)}   reference {show(simple)}")
    engine_all, simple_all = np.array(engine_all), np.array(simple_all)
    print(f"  mean engine {show(engine_all.mean(axis=0))}   reference {show(simple_all.mean(axis=0))}")
    print(f"  draws where the engine is below the reference on some tissue: {int((engine_all < simple_all).any(axis=1).sum())}")


def feature_share(view, mask, labels, truth):
    imat = BY_SHORT["IMAT"].label
    voxels = (view.to_canonical(sitk.GetArrayFromImage(mask)) > 0) & (truth == imat)   # bone is drawn over some
    return float(np.mean(labels[voxels] == imat))


def seed_list(text):
    """'11,12,13' or '11-30'."""
    if "-" in text:
        first, last = map(int, text.split("-"))
        return list(range(first, last + 1))
    return [int(s) for s in text.split(",")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seeds", default="11,12,13,14", help="11,12,13 or a range 11-30")
    parser.add_argument("--draws-only", action="store_true", help="only the hard draws, no speed run")
    parser.add_argument("--second-seeds", help="also draws of the second phantom, e.g. 101-112")
    parser.add_argument("--no-septa-seeds", help="also draws without septa (IMAT only inside the muscle), e.g. 11-30")
    args = parser.parse_args()
    if not args.draws_only:
        speed(args)
    hard_draws(seed_list(args.seeds))
    if args.second_seeds:
        second_draws(seed_list(args.second_seeds))
    if args.no_septa_seeds:
        hard_draws(seed_list(args.no_septa_seeds), septa=False)


if __name__ == "__main__":
    main()
