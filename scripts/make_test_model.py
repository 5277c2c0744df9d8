#!/usr/bin/env python
"""Train the small nnU-Net-2D-family test model on phantom slices (CPU, a few minutes) and write an nnU-Net v2
results folder: plans.json, dataset.json, fold_0/checkpoint_final.pth (nnU-Net's checkpoint layout).

    python scripts/make_test_model.py [OUTDIR] [--iterations N] [--seed S]

Slices are prepared exactly as the engine prepares them (LegSegNetLib.nnunet), labels are resized with nearest
neighbour. The network is a PlainConvUNet like the published model's, only smaller (5 stages, 8..96 features,
128x128 patch, so a 256x256 slice is covered by overlapping tiles and the Gaussian sliding window is exercised).
Training is a plain loop, not nnU-Net's trainer: Adam with nnU-Net's poly schedule, CE + soft Dice, 64x64 crops,
random mirroring; 500 iterations take about 5 minutes on 2 cores. The checkpoint keeps nnU-Net's keys
(network_weights, optimizer_state, logging with numpy scalars, init_args, trainer_name, mirroring axes).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from LegSegNetLib.nnunet import NET_SIZE, hu_to_uint8, nonzero_box, resize_cubic
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.tissues import TISSUES
from LegSegNetLib.volumes import AxialView

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "LegSegNet" / "Testing" / "Data" / "nnunet_test_model"
PATCH = [128, 128]
FEATURES = [8, 16, 32, 64, 96]
CROP = [64, 64]       # training crops (smaller than the patch keeps CPU training to minutes)
LR = 3e-3
DATASET_LABELS = {"background": 0, "SAT": 1, "SM": 2, "IAT": 3, "Bone": 4}   # the published model's names


def architecture():
    n = len(FEATURES)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": FEATURES, "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": [[3, 3]] * n, "strides": [[1, 1]] + [[2, 2]] * (n - 1),
            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def plans_json(intensities):
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    config_2d = {
        "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 8,
        "patch_size": PATCH, "median_image_size_in_voxels": [NET_SIZE, NET_SIZE], "spacing": [1.0, 1.0],
        "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": architecture(), "batch_dice": True}
    return {"dataset_name": "Dataset990_LegSegNetPhantom", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [999.0, 1.0, 1.0],
            "original_median_shape_after_transp": [1, NET_SIZE, NET_SIZE],
            "image_reader_writer": "NaturalImage2DIO", "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2], "configurations": {"2d": config_2d},
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {"0": intensities}}


def dataset_json(n_training):
    return {"channel_names": {"0": "CT"}, "labels": DATASET_LABELS, "numTraining": n_training,
            "file_ending": ".png", "name": "LegSegNet phantom test model",
            "description": "Synthetic two-leg phantoms (LegSegNetLib.phantom); for tests only"}


def nearest_256(labels):
    """Nearest-neighbour resize of label slices (n, h, w) to 256x256 (pixel centres)."""
    h, w = labels.shape[1:]
    rows = np.minimum(((np.arange(NET_SIZE) + 0.5) * h / NET_SIZE).astype(int), h - 1)
    cols = np.minimum(((np.arange(NET_SIZE) + 0.5) * w / NET_SIZE).astype(int), w - 1)
    return labels[:, rows][:, :, cols]


def phantom_slices(seed):
    rng = np.random.default_rng(seed)
    shape = (12, int(rng.integers(190, 260)), int(rng.integers(250, 330)))
    pixel = float(rng.uniform(1.0, 1.5))
    phantom = make_phantom(seed=seed, shape=shape, spacing=(5.0, pixel, pixel), noise=float(rng.uniform(8, 22)),
                           touching=bool(rng.random() < 0.3), left_sat_scale=float(rng.uniform(1.0, 1.6)))
    view = AxialView.of(phantom.ct)
    hu = view.to_canonical(sitk.GetArrayFromImage(phantom.ct))
    truth = view.to_canonical(sitk.GetArrayFromImage(phantom.truth))
    return resize_cubic(hu_to_uint8(hu)), nearest_256(truth)


def foreground_intensities(images, labels):
    values = images[labels > 0].astype(np.float64)
    return {"max": float(values.max()), "mean": float(values.mean()), "median": float(np.median(values)),
            "min": float(values.min()), "percentile_00_5": float(np.percentile(values, 0.5)),
            "percentile_99_5": float(np.percentile(values, 99.5)), "std": float(values.std())}


def preprocess(image, labels, norm):
    """As at inference: crop to the non-zero box, CT normalisation, pad to at least the patch (centred)."""
    (y0, y1), (x0, x1) = nonzero_box(image)
    data = np.clip(image[y0:y1, x0:x1].astype(np.float32), norm["percentile_00_5"], norm["percentile_99_5"])
    data = (data - norm["mean"]) / max(norm["std"], 1e-8)
    seg = labels[y0:y1, x0:x1]
    shape = [max(s, p) for s, p in zip(data.shape, PATCH)]
    below = [(s - d) // 2 for s, d in zip(shape, data.shape)]
    out_data, out_seg = np.zeros(shape, np.float32), np.zeros(shape, np.int64)
    window = (slice(below[0], below[0] + data.shape[0]), slice(below[1], below[1] + data.shape[1]))
    out_data[window], out_seg[window] = data, seg
    return out_data, out_seg


def batches(cases, rng, size):
    while True:
        x, y = [], []
        for i in rng.integers(0, len(cases), size):
            data, seg = cases[i]
            oy = rng.integers(0, data.shape[0] - CROP[0] + 1)
            ox = rng.integers(0, data.shape[1] - CROP[1] + 1)
            d, s = data[oy:oy + CROP[0], ox:ox + CROP[1]], seg[oy:oy + CROP[0], ox:ox + CROP[1]]
            if rng.random() < 0.5:        # mirroring augmentation, so test-time mirroring is meaningful
                d, s = d[::-1], s[::-1]
            if rng.random() < 0.5:
                d, s = d[:, ::-1], s[:, ::-1]
            x.append(d.copy())
            y.append(s.copy())
        yield torch.from_numpy(np.stack(x))[:, None], torch.from_numpy(np.stack(y))


def loss_fn(logits, target):
    ce = torch.nn.functional.cross_entropy(logits, target)
    probabilities = logits.softmax(1)
    one_hot = torch.nn.functional.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    intersection = (probabilities * one_hot).sum((0, 2, 3))[1:]
    denominator = (probabilities + one_hot).sum((0, 2, 3))[1:]
    return ce + 1 - ((2 * intersection + 1e-5) / (denominator + 1e-5)).mean()


def train(out, iterations, seed, n_phantoms=16):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    start = time.time()
    images, labels = zip(*(phantom_slices(1000 + i) for i in range(n_phantoms)))
    images, labels = np.concatenate(images), np.concatenate(labels)
    norm = foreground_intensities(images, labels)
    cases = [preprocess(i, l, norm) for i, l in zip(images, labels)]
    print(f"{len(cases)} slices from {n_phantoms} phantoms in {time.time() - start:.0f} s")

    arch = architecture()
    kwargs = dict(arch["arch_kwargs"], conv_op=torch.nn.Conv2d, norm_op=torch.nn.InstanceNorm2d,
                  dropout_op=None, nonlin=torch.nn.LeakyReLU)
    network = PlainConvUNet(input_channels=1, num_classes=len(DATASET_LABELS), deep_supervision=False, **kwargs)
    optimizer = torch.optim.Adam(network.parameters(), lr=LR)
    log = {"mean_fg_dice": [], "ema_fg_dice": [], "dice_per_class_or_region": [], "train_losses": [],
           "val_losses": [], "lrs": [], "epoch_start_timestamps": [], "epoch_end_timestamps": []}
    stream = batches(cases, rng, 4)
    network.train()
    epoch_length = 50
    for it in range(iterations):
        lr = LR * (1 - it / iterations) ** 0.9            # nnU-Net's poly schedule
        for group in optimizer.param_groups:
            group["lr"] = lr
        if it % epoch_length == 0:
            log["epoch_start_timestamps"].append(time.time())
            losses = []
        x, y = next(stream)
        loss = loss_fn(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        optimizer.step()
        losses.append(loss.item())
        if it % epoch_length == epoch_length - 1 or it == iterations - 1:
            log["train_losses"].append(np.float64(np.mean(losses)))
            log["val_losses"].append(np.float64(np.mean(losses)))
            log["lrs"].append(lr)
            log["epoch_end_timestamps"].append(time.time())
            dice = evaluate(network, cases[::7])
            log["dice_per_class_or_region"].append([np.float64(d) for d in dice])
            log["mean_fg_dice"].append(np.float64(np.mean(dice)))
            ema = log["ema_fg_dice"][-1] * 0.9 + 0.1 * np.mean(dice) if log["ema_fg_dice"] else np.mean(dice)
            log["ema_fg_dice"].append(np.float64(ema))
            print(f"iteration {it + 1}: loss {np.mean(losses):.3f}, Dice {np.round(dice, 3)}, "
                  f"{time.time() - start:.0f} s", flush=True)
    network.eval()
    write_results(out, network, optimizer, log, norm, len(cases), iterations // epoch_length)


def evaluate(network, cases):
    network.eval()
    dice = []
    cases = [(d[:d.shape[0] // 16 * 16, :d.shape[1] // 16 * 16], s[:s.shape[0] // 16 * 16, :s.shape[1] // 16 * 16])
             for d, s in cases]      # whole slices, cut to a multiple of the network's total stride
    with torch.inference_mode():
        predicted = [network(torch.from_numpy(np.ascontiguousarray(d))[None, None]).argmax(1)[0].numpy()
                     for d, _ in cases]
    for t in TISSUES:
        a = np.concatenate([(p == t.label).ravel() for p in predicted])
        b = np.concatenate([(s == t.label).ravel() for _, s in cases])
        dice.append(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    network.train()
    return dice


def write_results(out, network, optimizer, log, norm, n_training, epochs):
    out = Path(out)
    (out / "fold_0").mkdir(parents=True, exist_ok=True)
    plans, dataset = plans_json(norm), dataset_json(n_training)
    (out / "plans.json").write_text(json.dumps(plans, indent=4))
    (out / "dataset.json").write_text(json.dumps(dataset, indent=4))
    checkpoint = {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": log,
        "_best_ema": log["ema_fg_dice"][-1],
        "current_epoch": epochs,
        "init_args": {"plans": plans, "configuration": "2d", "fold": 0, "dataset_json": dataset,
                      "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1),
    }
    torch.save(checkpoint, out / "fold_0" / "checkpoint_final.pth")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: plans.json, dataset.json, fold_0/checkpoint_final.pth ({size / 1e6:.1f} MB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=str(DEFAULT_OUT))
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train(args.output, args.iterations, args.seed)


if __name__ == "__main__":
    main()
