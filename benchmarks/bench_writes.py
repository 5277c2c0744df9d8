"""Each output write of `legsegnet segment` timed side by side on a 96×448×448 phantom segmented by the classical
engine: labels.nii.gz, segmentation.seg.nrrd (SimpleITK, and slicerio's writer it replaced),
the tables, overview.png and report.json, and the ratio seg.nrrd / labels.nii.gz.

Target (issue 13): the .seg.nrrd written in <= 2x the time of labels.nii.gz of the same labels.
Run:  .venv/bin/python benchmarks/bench_writes.py [--shape 96 448 448] [--repeat 3]
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

from LegSegNetLib.classical import ClassicalEngine
from LegSegNetLib.overview import write_overview
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.pipeline import canonical_statistics
from LegSegNetLib.segmentations import write_seg_nrrd
from LegSegNetLib.volumes import AxialView, write_labels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LegSegNet" / "Testing"))
from test_seg_files import write_with_slicerio  # noqa: E402  (the writer segment used before, slicerio + pynrrd)


def best_time(step, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 448, 448), metavar=("Z", "Y", "X"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    phantom = make_phantom(seed=0, shape=tuple(args.shape), spacing=(5.0, 0.8, 0.8))
    view = AxialView.of(phantom.ct)
    hu = view.to_canonical(sitk.GetArrayViewFromImage(phantom.ct))
    labels = ClassicalEngine().segment(hu, view.spacing)
    native = view.from_canonical(labels)
    folder = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    stats = canonical_statistics(phantom.ct, view, hu, labels)
    report = {"engine": {"engine": "threshold"}, "notes": [], "timings": {}}
    steps = [
        ("labels.nii.gz", "labels.nii.gz", lambda: write_labels(native, phantom.ct, folder / "labels.nii.gz")),
        ("segmentation.seg.nrrd", "segmentation.seg.nrrd",
         lambda: write_seg_nrrd(native, phantom.ct, folder / "segmentation.seg.nrrd")),
        ("  (before: slicerio)", "slicerio.seg.nrrd",
         lambda: write_with_slicerio(native, phantom.ct, folder / "slicerio.seg.nrrd")),
        ("statistics (computed)", None, lambda: canonical_statistics(phantom.ct, view, hu, labels)),
        ("tables (3 csv)", "statistics.csv", lambda: stats.write(folder)),
        ("overview.png", "overview.png",
         lambda: write_overview(folder / "overview.png", hu, labels, view.spacing, title="bench")),
        ("report.json", "report.json",
         lambda: (folder / "report.json").write_text(json.dumps(report, indent=2))),
    ]
    print(f"volume {args.shape[2]}x{args.shape[1]}x{args.shape[0]} labels (classical engine), "
          f"best of {args.repeat}")
    print(f"{'step':<24} {'seconds':>8} {'MiB':>7}")
    seconds = {}
    for name, file_name, step in steps:
        try:
            seconds[name] = best_time(step, args.repeat)
        except ImportError as err:
            print(f"{name:<24} {'skipped':>8}  ({err})")
            continue
        size = (folder / file_name).stat().st_size / 2**20 if file_name else float("nan")
        print(f"{name:<24} {seconds[name]:>8.3f} {size:>7.2f}")
    ratio = seconds["segmentation.seg.nrrd"] / seconds["labels.nii.gz"]
    print(f"seg.nrrd / labels.nii.gz = {ratio:.2f}   target <= 2: {'met' if ratio <= 2 else 'NOT met'}")
    if "  (before: slicerio)" in seconds:
        print(f"slicerio writer / labels.nii.gz = {seconds['  (before: slicerio)'] / seconds['labels.nii.gz']:.1f}")


if __name__ == "__main__":
    main()
