#!/usr/bin/env python
"""Network engine vs the published app's pattern, side by side in one run on one slice stack.

    python benchmarks/bench_network.py [--slices 8] [--empty 8] [--precision fp32|bf16]
    python benchmarks/bench_network.py --memory [--depth 1000]     # 512x512xdepth, peak RSS, test model

A random-weight network with the published architecture (PlainConvUNet, 7 stages, 32..512 features, 256x256
patch) is written as an nnU-Net results folder; then, on the same phantom stack (512x512 slices),
  (a) reference: one nnUNetPredictor call per slice, as the published app does (cv2 resize, run_case_npy,
      predict_logits_from_preprocessed_data, argmax, nearest-neighbour mask back to 512x512);
  (b) this engine (NnUNetEngine.segment);
  (c) the bare forward passes alone, one per body slice.
Prints (a)/(b), (b)/(c) and whether the 256x256 masks agree pixel for pixel.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from LegSegNetLib.nnunet import NnUNetEngine, SlicePredictor, hu_to_uint8, resize_cubic
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.volumes import AxialView

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from make_test_model import dataset_json, plans_json  # noqa: E402

PUBLISHED = {"n_stages": 7, "features_per_stage": [32, 64, 128, 256, 512, 512, 512]}
TEST_MODEL = Path(__file__).resolve().parent.parent / "LegSegNet" / "Testing" / "Data" / "nnunet_test_model"


def published_like_folder(folder):
    """plans/dataset/checkpoint of the published architecture with random weights."""
    from LegSegNetLib.nnunet_model import build_network
    plans = plans_json({"max": 255.0, "mean": 120.0, "median": 120.0, "min": 0.0, "percentile_00_5": 0.0,
                        "percentile_99_5": 255.0, "std": 60.0})
    config = plans["configurations"]["2d"]
    config["patch_size"] = [256, 256]
    n = PUBLISHED["n_stages"]
    config["architecture"]["arch_kwargs"].update(
        PUBLISHED, kernel_sizes=[[3, 3]] * n, strides=[[1, 1]] + [[2, 2]] * (n - 1), n_conv_per_stage=[2] * n,
        n_conv_per_stage_decoder=[2] * (n - 1))
    torch.manual_seed(0)
    network = build_network(config["architecture"], 5)
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json(0)))
    torch.save({"network_weights": network.state_dict(), "init_args": {"configuration": "2d"},
                "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1)},
               folder / "fold_0" / "checkpoint_final.pth")
    params = sum(p.numel() for p in network.parameters())
    return params


def stack(n_body, n_empty):
    phantom = make_phantom(seed=5, shape=(max(n_body, 1), 512, 512), spacing=(5.0, 0.8, 0.8))
    view = AxialView.of(phantom.ct)
    hu = view.to_canonical(sitk.GetArrayFromImage(phantom.ct))[:n_body]
    empty = np.full((n_empty, 512, 512), -1000, hu.dtype)
    return np.concatenate([hu, empty]), view.spacing


def reference_predictor(folder):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(tile_step_size=1.0, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,),
                                                   checkpoint_name="checkpoint_final.pth")
    return predictor, predictor.configuration_manager.preprocessor_class(verbose=False)


def reference_run(reference, hu):
    """The published app's per-slice loop; returns 256x256 masks and masks at the native size."""
    import cv2
    predictor, preprocessor = reference
    masks_256, masks = [], []
    for slice_hu in hu:
        image = cv2.resize(hu_to_uint8(slice_hu), (256, 256), interpolation=cv2.INTER_CUBIC)
        data = image.astype(np.float32)[None, None]
        data, _, props = preprocessor.run_case_npy(data, np.zeros_like(data, dtype=np.int8), {"spacing": (999, 1, 1)},
                                                   predictor.plans_manager, predictor.configuration_manager,
                                                   predictor.dataset_json)
        logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data).float()).cpu()[:, 0]
        _, (y0, y1), (x0, x1) = props["bbox_used_for_cropping"]
        mask = np.zeros((256, 256), np.uint8)
        mask[y0:y1, x0:x1] = logits.argmax(0).byte().numpy()
        masks_256.append(mask)
        masks.append(cv2.resize(mask, slice_hu.shape[::-1], interpolation=cv2.INTER_NEAREST))
    return np.stack(masks_256), np.stack(masks)


def bare_forward(network, n):
    x = torch.randn(1, 1, 256, 256)
    with torch.inference_mode():
        for _ in range(n):
            network(x)


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def speed(args):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        params = published_like_folder(folder)
        hu, spacing = stack(args.slices, args.empty)
        print(f"published architecture, random weights: {params / 1e6:.1f} M parameters; stack "
              f"{hu.shape[0]} slices of 512x512 ({args.slices} with a body, {args.empty} without); "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.repeats} "
              "interleaved rounds")
        engine = NnUNetEngine(folder, device="cpu", precision=args.precision)
        reference = reference_predictor(folder)
        bare_forward(engine.model.network, 2)                                   # warm-up
        times = {"a": [], "b": [], "c": []}
        for _ in range(args.repeats):       # interleaved, so a busy machine slows all three alike
            t, (ref_256, ref_native) = timed(lambda: reference_run(reference, hu))
            times["a"].append(t)
            t, labels = timed(lambda: engine.segment(hu, spacing))
            times["b"].append(t)
            times["c"].append(timed(lambda: bare_forward(engine.model.network, args.slices))[0])
        t_ref, t_engine, t_bare = (min(times[k]) for k in "abc")
        predictor = SlicePredictor(engine.model, "cpu", precision=args.precision)
        ours_256 = np.stack([predictor.labels_256(i) for i in resize_cubic(hu_to_uint8(hu[:args.slices]))])
        differing = int((ours_256 != ref_256[:args.slices]).sum())
        body = slice(0, args.slices)
        native_agreement = np.mean(engine.model.lut[ref_native[body]] == labels[body])
    print(f"(a) reference, nnUNetPredictor per slice: {t_ref:7.2f} s  ({t_ref / len(hu) * 1000:.0f} ms/slice)")
    print(f"(b) this engine ({args.precision}):             {t_engine:7.2f} s")
    print(f"(c) bare forward passes ({args.slices}):          {t_bare:7.2f} s  "
          f"({t_bare / args.slices * 1000:.0f} ms/slice)")
    print(f"(a)/(b) = {t_ref / t_engine:.2f}   (b)/(c) = {t_engine / t_bare:.2f}")
    print(f"256x256 masks, engine vs reference: {differing} differing pixels "
          f"({'identical' if differing == 0 else 'NOT identical'})")
    print(f"native 512x512 grid, body slices: {native_agreement:.4f} of pixels equal to the reference's "
          "nearest-neighbour masks (we resample probabilities instead; random weights make this a lower bound)")


def memory(args):
    hu = np.full((args.depth, 512, 512), -1000, np.int16)
    phantom = make_phantom(seed=6, shape=(16, 512, 512), spacing=(5.0, 0.8, 0.8))
    slab = AxialView.of(phantom.ct).to_canonical(sitk.GetArrayFromImage(phantom.ct))
    for z0 in range(0, args.depth, 16):
        hu[z0:z0 + 16] = slab[:min(16, args.depth - z0)]
    engine = NnUNetEngine(TEST_MODEL, device="cpu", batch_slices=8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    labels = engine.segment(hu, (1.0, 0.8, 0.8))
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"512x512x{args.depth} int16 ({hu.nbytes / 2**30:.2f} GiB) + labels ({labels.nbytes / 2**30:.2f} GiB): "
          f"{elapsed:.0f} s; peak RSS of the process {peak / 1024:.2f} GiB (peak before the engine ran, while "
          f"building the input: {before / 1024:.2f} GiB)")
    # the whole product path in a fresh process: read, engine, statistics, every output written
    with tempfile.TemporaryDirectory() as folder:
        image = sitk.GetImageFromArray(hu)
        image.SetSpacing((0.8, 0.8, 1.0))
        sitk.WriteImage(image, f"{folder}/ct.nii")
        del hu, labels, image
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "LegSegNetLib", "segment", f"{folder}/ct.nii", "-o", f"{folder}/out",
                        "--engine", "nnunet", "--model", str(TEST_MODEL)], check=True, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"legsegnet segment (nnunet, test model) on the same volume: {elapsed:.0f} s; peak RSS {child:.2f} GiB "
          f"(target <= 4 GiB: {'met' if child <= 4 else 'NOT met'})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=8, help="slices that hold a body")
    parser.add_argument("--empty", type=int, default=8, help="slices of air added to the stack")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best of each is printed")
    parser.add_argument("--memory", action="store_true", help="peak memory on 512x512xdepth with the test model")
    parser.add_argument("--depth", type=int, default=1000)
    args = parser.parse_args()
    memory(args) if args.memory else speed(args)


if __name__ == "__main__":
    main()
