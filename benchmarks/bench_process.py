#!/usr/bin/env python
"""Whole processes side by side in one run (work item 13), each a fresh Python process timed from start to exit:

  (a) the published app's per-slice pattern: read the volume, one nnUNetPredictor call per slice with the published
      preprocessing (bench_network.reference_run), write the label file;
  (b) `legsegnet segment --engine nnunet` with every output, fp32 and --precision bf16;
  (c) `legsegnet segment --engine threshold` against the naive per-slice reference's compute alone
      (LegSegNet/Testing/simple_reference.py: per slice 3×3 median, holes filled, HU windows, SAT/IMAT split by
      an opened muscle mask; and a minimal one without the split), on a 180-slice volume;
plus the bf16 pixel agreement with fp32 on the test model and each step's time from report.json.

The network is a random-weight network of the published architecture (bench_network.published_like_folder).
Targets: (a)/(b) >= 1.4 in fp32 and >= 2 in bf16; (c) naive compute / classical whole process >= 1.3.
Run:  .venv/bin/python benchmarks/bench_process.py [--slices 96] [--size 448] [--classical-slices 180]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "LegSegNet" / "Testing"))
from LegSegNetLib.volumes import AxialView  # noqa: E402
from bench_network import TEST_MODEL, published_like_folder  # noqa: E402
from simple_reference import reference as naive_reference  # noqa: E402  (the reference test_classical_anatomy uses)


def write_phantom(path, slices, size, slice_mm):
    from LegSegNetLib.phantom import make_phantom
    sitk.WriteImage(make_phantom(seed=0, shape=(slices, size, size), spacing=(slice_mm, 0.8, 0.8)).ct, str(path),
                    useCompression=True)


def reference_process(ct, out, model):
    """The published app's pattern as one process: read, predict slice by slice, write the labels."""
    from bench_network import reference_predictor, reference_run
    image = sitk.ReadImage(ct)
    _, masks = reference_run(reference_predictor(Path(model)), sitk.GetArrayFromImage(image))
    labels = sitk.GetImageFromArray(masks)
    labels.CopyInformation(image)
    sitk.WriteImage(labels, out, useCompression=True)


def timed_process(*args):
    start = time.perf_counter()
    subprocess.run([sys.executable, *map(str, args)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def segment(ct, out, *options):
    seconds = timed_process("-m", "LegSegNetLib", "segment", ct, "-o", out, *options)
    return seconds, json.loads((Path(out) / "report.json").read_text())["timings"]


def minimal_reference(hu):
    """The issue's minimal naive reference: per slice a 3×3 median, the body with holes filled, HU windows."""
    from scipy import ndimage
    out = np.zeros(hu.shape, np.uint8)
    for z in range(hu.shape[0]):
        smooth = ndimage.median_filter(hu[z], size=3)
        body = ndimage.binary_fill_holes(smooth > -500)
        out[z][body & (smooth >= -190) & (smooth <= -30)] = 1
        out[z][body & (smooth >= -29) & (smooth <= 150)] = 2
        out[z][body & (smooth > 150)] = 4
    return out


def compute_seconds(function, hu):
    start = time.perf_counter()
    function(hu)
    return time.perf_counter() - start


def bf16_agreement(ct):
    """Share of pixels where the test model's bf16 labels equal its fp32 labels."""
    from LegSegNetLib.nnunet import NnUNetEngine
    image = sitk.ReadImage(ct)
    view = AxialView.of(image)
    hu = view.to_canonical(sitk.GetArrayFromImage(image))
    fp32 = NnUNetEngine(TEST_MODEL, device="cpu").segment(hu, view.spacing)
    bf16 = NnUNetEngine(TEST_MODEL, device="cpu", precision="bf16").segment(hu, view.spacing)
    return float(np.mean(fp32 == bf16))


def steps_line(timings):
    parts = [f"{k[:-2]} {v:.2f}" for k, v in timings.items() if k.endswith("_s") and k != "write_steps_s"]
    writes = [f"{name} {seconds:.2f}" for name, seconds in timings.get("write_steps_s", {}).items()]
    return " · ".join(parts) + "\n      writes: " + " · ".join(writes)


def verdict(ratio, target):
    return f"{ratio:.2f}x (target >= {target}: {'met' if ratio >= target else 'NOT met'})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=96)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--classical-slices", type=int, default=180)
    parser.add_argument("--reference-run", nargs=3, metavar=("CT", "OUT", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_run:
        return reference_process(*args.reference_run)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ct, ct_classical, model = tmp / "ct.nii.gz", tmp / "ct_classical.nii.gz", tmp / "model"
        write_phantom(ct, args.slices, args.size, 5.0)
        write_phantom(ct_classical, args.classical_slices, args.size, 2.5)
        published_like_folder(model)
        print(f"phantom {args.size}x{args.size}x{args.slices} (.nii.gz); random-weight network of the published "
              "architecture; each entry one whole process, run once")
        t_reference = timed_process(__file__, "--reference-run", ct, tmp / "reference.nii.gz", model)
        network = ("--engine", "nnunet", "--model", model, "--device", "cpu")
        t_fp32, fp32 = segment(ct, tmp / "fp32", *network)
        t_bf16, bf16 = segment(ct, tmp / "bf16", *network, "--precision", "bf16")
        agreement = bf16_agreement(ct)
        t_classical, classical = segment(ct_classical, tmp / "classical", "--engine", "threshold")
        image = sitk.ReadImage(str(ct_classical))
        hu = AxialView.of(image).to_canonical(sitk.GetArrayFromImage(image))
        t_naive, t_minimal = compute_seconds(naive_reference, hu), compute_seconds(minimal_reference, hu)
    print(f"(a) published pattern, nnUNetPredictor per slice, whole process: {t_reference:7.2f} s")
    print(f"(b) legsegnet segment --engine nnunet, fp32, whole process:      {t_fp32:7.2f} s   "
          f"(a)/(b) = {verdict(t_reference / t_fp32, 1.4)}")
    print(f"      {steps_line(fp32)}")
    print(f"    legsegnet segment --engine nnunet --precision bf16:         {t_bf16:7.2f} s   "
          f"(a)/(b) = {verdict(t_reference / t_bf16, 2)}")
    print(f"      {steps_line(bf16)}")
    print(f"    bf16 labels equal to fp32 on the test model: {100 * agreement:.2f} % of pixels (target >= 99.9 %)")
    print(f"(c) {args.size}x{args.size}x{args.classical_slices}: naive per-slice reference, compute alone "
          f"{t_naive:.2f} s; legsegnet segment --engine threshold, whole process {t_classical:.2f} s   "
          f"ratio {verdict(t_naive / t_classical, 1.3)}")
    print(f"    minimal naive reference (3x3 median, holes filled, HU windows only), compute alone {t_minimal:.2f} s   "
          f"ratio {verdict(t_minimal / t_classical, 1.3)}")
    print(f"      {steps_line(classical)}")


if __name__ == "__main__":
    main()
