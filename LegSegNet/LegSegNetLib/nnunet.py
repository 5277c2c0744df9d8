"""nnU-Net v2 2D engine: the published LegSegNet network (or any 2D results folder with our labels).

Each axial slice is prepared as the published app does: clip HU to [-200, 200] -> uint8 -> bicubic resize to
256x256 (OpenCV INTER_CUBIC arithmetic) -> nnU-Net's own preprocessing (crop to non-zero, CT normalisation,
padding) -> Gaussian-weighted sliding window, accumulated in float16 like nnunetv2 2.8 (float32 on request).
Unlike the app, class probabilities are resampled to the slice's native size before argmax, so labels live on
the input's own grid. Slices without a body (classical.body_mask) are never sent to the network. Loading and
checking the results folder is nnunet_model's.

torch is imported lazily: the rest of the core works without it.
"""
import itertools
import logging

import numpy as np
from scipy import ndimage

from .classical import body_mask
from .errors import Cancelled, InputError
from .nnunet_model import load_model
from .qc import CONFIDENCE_MIN

log = logging.getLogger(__name__)

HU_WINDOW = (-200.0, 200.0)
NET_SIZE = 256
PRECISIONS = ("fp32", "bf16")
ACCUMULATIONS = ("fp16", "fp32")
GAUSSIAN_SIGMA_SCALE = 1 / 8
GAUSSIAN_PEAK = 10       # nnU-Net scales its Gaussian map to a maximum of 10


# ---------------------------------------------------------------- slice preparation (the published app's)

def hu_to_uint8(hu):
    """Clip to the HU window and rescale to 0..255, truncating like the app's astype(uint8)."""
    lo, hi = HU_WINDOW
    x = np.clip(np.asarray(hu, np.float32), lo, hi)
    x = (x - np.float32(lo)) / np.float32(hi - lo) * np.float32(255.0)
    return x.astype(np.uint8)


def _cubic_taps(n_src, n_dst):
    """Source indices (n_dst, 4), float32 weights (n_dst, 4) and 'border' flags, as OpenCV's INTER_CUBIC sets them
    up: source coordinate in float32, Keys kernel (A = -0.75) evaluated in double, replicated borders."""
    position = ((np.arange(n_dst) + 0.5) * (1.0 / (n_dst / n_src)) - 0.5).astype(np.float32)
    start = np.floor(position).astype(np.int64)
    x = (position - start.astype(np.float32)).astype(np.float64)
    a = -0.75
    w0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    w1 = ((a + 2) * x - (a + 3)) * x * x + 1
    w2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    weights = np.stack([w0, w1, w2, 1 - w0 - w1 - w2], 1).astype(np.float32)
    index = np.clip(start[:, None] + np.arange(-1, 3), 0, n_src - 1)
    border = (start < 1) | (start + 2 >= n_src)
    return index, weights, border


def _fma(a, b, c):
    """float32 fused multiply-add (the product and sum are exact in float64 for these magnitudes)."""
    return (a.astype(np.float64) * b + c).astype(np.float32)


def resize_cubic(images, size=NET_SIZE):
    """Bicubic resize of uint8 images (n, h, w) to (n, size, size), equal to OpenCV 5's cv2.resize(INTER_CUBIC)
    for uint8: float32 arithmetic in the order of its SIMD kernels, rounded to nearest even, saturated."""
    images = np.asarray(images)
    n, h, w = images.shape
    if (h, w) == (size, size):
        return images.astype(np.uint8, copy=True)
    xi, xw, x_border = _cubic_taps(w, size)
    # np.take gathers several times faster than fancy indexing
    p = [np.take(images, xi[:, k], axis=2).astype(np.float32) * xw[:, k] for k in range(4)]   # each n, h, size
    rows = (p[0] + p[1]) + (p[2] + p[3])
    edge = np.flatnonzero(x_border)           # OpenCV's scalar border loop adds the taps in sequence
    rows[:, :, edge] = ((p[0][:, :, edge] + p[1][:, :, edge]) + p[2][:, :, edge]) + p[3][:, :, edge]
    yi, yw, _ = _cubic_taps(h, size)
    r = [np.take(rows, yi[:, k], axis=1) for k in range(4)]                             # each n, size, size
    b = [yw[:, k][:, None] for k in range(4)]
    out = _fma(r[0], b[0], r[1] * b[1]) + _fma(r[2], b[2], r[3] * b[3])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- nnU-Net's sliding window, per 256x256 slice

def gaussian_map(patch_size):
    """nnU-Net's importance map: a centred delta blurred with sigma = patch/8, peak scaled to 10, zeros lifted."""
    delta = np.zeros(patch_size)
    delta[tuple(s // 2 for s in patch_size)] = 1
    blurred = ndimage.gaussian_filter(delta, [s * GAUSSIAN_SIGMA_SCALE for s in patch_size], 0,
                                      mode="constant", cval=0)
    return blurred / (blurred.max() / GAUSSIAN_PEAK)


def tile_starts(size, patch, step):
    """Tile origins along one axis (nnU-Net's compute_steps_for_sliding_window)."""
    n = int(np.ceil((size - patch) / (patch * step))) + 1
    if n == 1:
        return [0]
    return [int(np.round((size - patch) / (n - 1) * i)) for i in range(n)]


def nonzero_box(image):
    """nnU-Net's crop_to_nonzero bounding box (half-open); the whole image when it is all zero."""
    rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
    if rows.size == 0:
        return (0, image.shape[0]), (0, image.shape[1])
    return (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)


class SlicePredictor:
    """Logits for 256x256 uint8 slices, the arithmetic of nnunetv2 2.8's predictor (one tile per forward pass,
    so results do not depend on batch composition)."""

    def __init__(self, model, device, precision="fp32", mirroring=False, accumulation="fp16", tile_step=0.5):
        import torch
        self.torch, self.model, self.device = torch, model, torch.device(device)
        self.network = model.network.to(self.device)
        self.precision, self.accumulation, self.tile_step = precision, accumulation, tile_step
        self.mirror_axes = model.mirror_axes if mirroring else ()
        self.acc_dtype = torch.float16 if accumulation == "fp16" else torch.float32
        weight = torch.from_numpy(gaussian_map(model.patch_size)).to(self.device, self.acc_dtype)
        weight[weight == 0] = weight[weight != 0].min()
        self.gaussian = weight

    def normalise(self, crop):
        n = self.model.normalisation
        image = crop.astype(np.float32)
        np.clip(image, n["percentile_00_5"], n["percentile_99_5"], out=image)
        image -= n["mean"]
        image /= max(n["std"], 1e-8)
        return image

    def forward(self, tile):
        torch = self.torch
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            prediction = self.network(tile).float()
            if self.mirror_axes:
                axes = [a + 2 for a in self.mirror_axes]
                combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
                for flip in combos:
                    prediction += torch.flip(self.network(torch.flip(tile, flip)), flip).float()
                prediction /= len(combos) + 1
        return prediction[0]

    def logits(self, image):
        """Logits (C, h, w) in the accumulation dtype for the non-zero box of one uint8 256x256 slice, and the box."""
        with self.torch.inference_mode():
            return self._logits(image)

    def _logits(self, image):
        torch = self.torch
        (y0, y1), (x0, x1) = box = nonzero_box(image)
        data = self.normalise(image[y0:y1, x0:x1])
        patch = self.model.patch_size
        shape = [max(s, p) for s, p in zip(data.shape, patch)]
        below = [(s - d) // 2 for s, d in zip(shape, data.shape)]
        padded = np.zeros(shape, np.float32)
        padded[below[0]:below[0] + data.shape[0], below[1]:below[1] + data.shape[1]] = data
        padded = torch.from_numpy(padded).to(self.device)
        n_classes = len(self.model.lut)
        summed = torch.zeros((n_classes, *shape), dtype=self.acc_dtype, device=self.device)
        weights = torch.zeros(shape, dtype=self.acc_dtype, device=self.device)
        for sy in tile_starts(shape[0], patch[0], self.tile_step):
            for sx in tile_starts(shape[1], patch[1], self.tile_step):
                window = (slice(sy, sy + patch[0]), slice(sx, sx + patch[1]))
                tile = padded[window].clone()[None, None]
                prediction = self.forward(tile) * self.gaussian
                summed[(slice(None), *window)] += prediction
                weights[window] += self.gaussian
        torch.div(summed, weights, out=summed)
        unpad = (slice(None), slice(below[0], below[0] + data.shape[0]), slice(below[1], below[1] + data.shape[1]))
        return summed[unpad], box

    def labels_256(self, image):
        """The published app's 256x256 mask (output channels, not tissue labels): argmax inside the box, 0 outside."""
        with self.torch.inference_mode():
            logits, ((y0, y1), (x0, x1)) = self._logits(image)
            full = np.zeros(image.shape, np.uint8)
            full[y0:y1, x0:x1] = logits.argmax(0).to(self.torch.uint8).cpu().numpy()
        return full

    def probabilities_256(self, image):
        """Class probabilities (C, 256, 256) float32; outside the box (where the app writes 0) background is certain."""
        logits, ((y0, y1), (x0, x1)) = self.logits(image)
        probabilities = self.torch.zeros((len(self.model.lut), *image.shape), dtype=self.torch.float32,
                                         device=self.device)
        probabilities[0] = 1
        probabilities[:, y0:y1, x0:x1] = self.torch.softmax(logits.float(), 0)
        return probabilities


# ---------------------------------------------------------------- the engine

def resolve_device(device):
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device '{device}' (auto, cpu or cuda)")
    return device


def cpu_has_native_bf16(cpuinfo="/proc/cpuinfo"):
    """True/False from the CPU flags (AVX512-BF16 or AMX-BF16), None where the flags cannot be read."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def warn_if_bf16_is_emulated(device, precision):
    """bf16 autocast on a CPU without bf16 instructions is emulated: same arithmetic, but slower than fp32."""
    if precision == "bf16" and device == "cpu" and cpu_has_native_bf16() is False:
        log.warning("--precision bf16: this CPU has no AVX512-BF16/AMX instructions; bf16 is emulated and "
                    "slower than fp32 here")


def slices_with_body(slab, pixel_mm):
    """Which slices hold a limb (the classical engine's body test), decided on every second pixel: a presence
    test needs no full resolution and this keeps it a small fraction of the network's time."""
    coarse = slab[:, ::2, ::2]
    return body_mask(ndimage.gaussian_filter(coarse, (0, 0.5, 0.5)), 2 * pixel_mm).any(axis=(1, 2))


class NnUNetEngine:
    name = "nnunet"

    def __init__(self, model_dir, device="auto", precision="fp32", mirroring=None, accumulation="fp16",
                 tile_step=0.5, batch_slices=8, fold=None):
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision '{precision}' ({', '.join(PRECISIONS)})")
        if accumulation not in ACCUMULATIONS:
            raise InputError(f"unknown accumulation '{accumulation}' ({', '.join(ACCUMULATIONS)})")
        self.model = load_model(model_dir, fold)
        self.device = resolve_device(device)
        self.mirroring = (self.device == "cuda") if mirroring is None else bool(mirroring)
        warn_if_bf16_is_emulated(self.device, precision)
        self.predictor = SlicePredictor(self.model, self.device, precision, self.mirroring, accumulation, tile_step)
        self.batch_slices = max(1, int(batch_slices))
        self.last_counts = {}     # slices seen / sent in the latest segment() call (not settings: kept out of report)

    def report(self):
        m, p = self.model, self.predictor
        return {"engine": self.name, "model": str(m.folder), "checkpoint": str(m.checkpoint.relative_to(m.folder)),
                "configuration": m.configuration, "patch_size": list(m.patch_size), "labels": m.label_names,
                "device": self.device, "precision": p.precision, "accumulation": p.accumulation,
                "mirroring": bool(p.mirror_axes), "tile_step": p.tile_step,
                "preprocessing": "clip [-200, 200] HU -> uint8 -> bicubic 256x256 -> nnU-Net CT normalisation",
                "output": "class probabilities resampled (bilinear) to the native slice size, then argmax"}

    def segment(self, hu, spacing, progress=None, cancel=None):
        """Labels (uint8, canonical) for a canonical HU array (z, y, x); streamed in batches of slices."""
        labels = np.zeros(hu.shape, np.uint8)
        uncertain = np.full(hu.shape[0], np.nan)     # per slice, for per-slice QC (NaN: not sent)
        total, sent = hu.shape[0], 0
        pixel_mm = float(np.mean(spacing[1:]))
        for z0 in range(0, total, self.batch_slices):
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            z1 = min(total, z0 + self.batch_slices)
            slab = np.asarray(hu[z0:z1], np.float32)
            has_body = slices_with_body(slab, pixel_mm)
            if has_body.any():
                labels[z0:z1][has_body], uncertain[z0:z1][has_body] = self.segment_slices(slab[has_body],
                                                                                          with_confidence=True)
                sent += int(has_body.sum())
            if progress is not None:
                progress(z1, total)
        self.last_counts = {"slices_total": total, "slices_sent_to_network": sent}
        self.last_uncertain_share = uncertain
        return labels

    def segment_slices(self, slab, with_confidence=False):
        """Tissue labels at native size for slices that hold a body; with_confidence: also, per slice, the share
        of labelled pixels whose top class probability is below qc.CONFIDENCE_MIN (from the same probabilities)."""
        torch = self.predictor.torch
        images = resize_cubic(hu_to_uint8(slab))
        with torch.inference_mode():
            probabilities = torch.stack([self.predictor.probabilities_256(image) for image in images])
            native = torch.nn.functional.interpolate(probabilities, size=slab.shape[1:], mode="bilinear",
                                                     align_corners=False)
            labels = np.take(self.model.lut, first_argmax(native).cpu().numpy())
            if not with_confidence:
                return labels
            low = (native.amax(1) < CONFIDENCE_MIN).cpu().numpy()
        body = labels > 0
        return labels, (low & body).sum(axis=(1, 2)) / np.maximum(body.sum(axis=(1, 2)), 1)


def first_argmax(scores):
    """argmax over dim 1 (first index on ties), a few times faster than torch's strided argmax on CPU."""
    import torch
    best = scores[:, 0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=scores.device)
    for channel in range(1, scores.shape[1]):
        index[scores[:, channel] > best] = channel
        torch.maximum(best, scores[:, channel], out=best)
    return index
