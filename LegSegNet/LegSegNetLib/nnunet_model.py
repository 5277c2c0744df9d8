"""Loading a 2D nnU-Net v2 results folder (plans.json, dataset.json, fold_N/checkpoint_best.pth or
checkpoint_final.pth) into a NetworkModel: the network rebuilt from plans.json, its weights, patch size, CT
normalisation, mirroring axes and the output channel -> tissue label table.

Checkpoints are read with torch.load(weights_only=True), allowing only numpy's scalar and dtype types (what
nnU-Net's training log holds); anything else is refused. plans.json must describe a 2D configuration with one CT
channel, CTNormalization, unit spacing, no transposition and a known architecture (PlainConvUNet or
ResidualEncoderUNet) built only from torch.nn operations; dataset.json must give one channel and integer labels
0..N without an ignore label, each naming a different LegSegNet tissue. Every refusal is an InputError saying why.

torch is imported lazily: the rest of the core works without it.
"""
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .tissues import ALIASES, TISSUES, tissue_for_name

CHECKPOINT_NAMES = ("checkpoint_best.pth", "checkpoint_final.pth")
ARCHITECTURES = ("dynamic_network_architectures.architectures.unet.PlainConvUNet",
                 "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet")


@dataclass
class NetworkModel:
    folder: Path
    checkpoint: Path
    configuration: str
    network: object               # torch.nn.Module, eval mode
    patch_size: tuple
    normalisation: dict           # percentile_00_5, percentile_99_5, mean, std
    lut: np.ndarray               # output channel -> tissue label
    label_names: dict             # dataset.json name -> tissue short name
    mirror_axes: tuple


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} is missing; a model folder holds plans.json, dataset.json and "
                         "fold_N/checkpoint_best.pth (or checkpoint_final.pth)") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not readable JSON ({err})") from None


def find_checkpoint(folder, fold=None):
    folds = [f"fold_{fold}"] if fold is not None else sorted(p.name for p in Path(folder).glob("fold_*"))
    for fold_name in folds:
        for name in CHECKPOINT_NAMES:
            if (Path(folder) / fold_name / name).is_file():
                return Path(folder) / fold_name / name
    raise InputError(f"{folder}: no fold_N/{' or '.join(CHECKPOINT_NAMES)} found")


def _numpy_safe_globals():
    """The only non-tensor types nnU-Net checkpoints carry (numpy scalars in the training log), under both
    the numpy 1 and numpy 2 module paths."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed = [np.dtype, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    for name in ("Float64DType", "Float32DType", "Int64DType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            allowed.append(getattr(np.dtypes, name))
    return allowed


def load_checkpoint(path):
    """torch.load with weights_only=True and only numpy's scalar types allowed; anything else is refused."""
    import torch
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: refused, the checkpoint holds objects other than weights and numbers "
                         f"({first[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable checkpoint ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise InputError(f"{path}: not an nnU-Net checkpoint (no network_weights)")
    return checkpoint


def label_table(dataset):
    """Output channel -> tissue label, through dataset.json's label names and the tissue table."""
    labels = dataset.get("labels") or {}
    if any(not isinstance(v, int) for v in labels.values()):
        raise InputError("dataset.json uses region-based labels; LegSegNet needs one integer per tissue")
    if "ignore" in labels:
        raise InputError("dataset.json declares an ignore label; not supported")
    names = {}
    lut = np.zeros(len(labels), np.uint8)
    for channel, (name, value) in enumerate(sorted(labels.items(), key=lambda item: item[1])):
        if channel != value:
            raise InputError(f"dataset.json labels must be 0..N without gaps (found {sorted(labels.values())})")
        if value == 0:
            continue
        tissue = tissue_for_name(name)
        if tissue is None:
            raise InputError(f"dataset.json label '{name}' is not a LegSegNet tissue "
                             f"(expected {', '.join(t.short for t in TISSUES)}, or an alias: {', '.join(ALIASES)})")
        lut[channel], names[name] = tissue.label, tissue.short
    if len(set(names.values())) != len(names):
        raise InputError(f"dataset.json maps two labels onto one tissue ({names})")
    return lut, names


def _configuration(plans, name, folder):
    configurations = plans.get("configurations") or {}
    if name not in configurations:
        raise InputError(f"{folder}: plans.json has no configuration '{name}'")
    config = dict(configurations[name])
    parent = config.pop("inherits_from", None)
    if parent:
        config = {**_configuration(plans, parent, folder), **config}
    return config


def _check_2d(config, name, plans, folder):
    if len(config.get("patch_size", ())) != 2:
        raise InputError(f"{folder}: configuration '{name}' is not 2D (patch {config.get('patch_size')}); "
                         "LegSegNet runs nnU-Net 2D models on axial slices")
    if config.get("normalization_schemes") != ["CTNormalization"]:
        raise InputError(f"{folder}: needs one CT channel with CTNormalization "
                         f"(found {config.get('normalization_schemes')})")
    if any(abs(float(s or 999) - 1.0) > 1e-6 for s in config.get("spacing", [1, 1])):
        raise InputError(f"{folder}: 2D spacing {config.get('spacing')} would resample the 256x256 slices; "
                         "only models trained on 256x256 slices with unit spacing are supported")
    if list(plans.get("transpose_forward", [0, 1, 2])) != [0, 1, 2]:
        raise InputError(f"{folder}: transpose_forward {plans.get('transpose_forward')} is not supported")


def _import_op(dotted):
    """torch.nn classes named in plans.json (conv, norm, dropout, nonlinearity); nothing else is imported."""
    import torch
    if dotted is None:
        return None
    if not str(dotted).startswith("torch.nn."):
        raise InputError(f"plans.json names '{dotted}'; only torch.nn operations are allowed")
    obj = torch
    for part in str(dotted).split(".")[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            raise InputError(f"plans.json names unknown operation '{dotted}'")
    return obj


def build_network(architecture, n_classes):
    import importlib
    class_name = architecture.get("network_class_name")
    if class_name not in ARCHITECTURES:
        raise InputError(f"plans.json architecture '{class_name}' is not supported ({', '.join(ARCHITECTURES)})")
    module, _, name = class_name.rpartition(".")
    try:
        network_class = getattr(importlib.import_module(module), name)
    except ImportError:
        raise InputError("the network engine needs dynamic_network_architectures; "
                         "pip install 'legsegnet[network]'") from None
    kwargs = dict(architecture["arch_kwargs"])
    for key in architecture.get("_kw_requires_import", ()):
        kwargs[key] = _import_op(kwargs.get(key))
    return network_class(input_channels=1, num_classes=n_classes, deep_supervision=False, **kwargs)


def load_model(folder, fold=None):
    """Rebuild and strictly load a 2D nnU-Net results folder; every refusal is an InputError saying why."""
    try:
        import torch
    except ImportError:
        raise InputError("the network engine needs torch; pip install 'legsegnet[network]'") from None
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"model folder {folder} does not exist")
    plans, dataset = _read_json(folder / "plans.json"), _read_json(folder / "dataset.json")
    if len(dataset.get("channel_names", {"0": "CT"})) != 1:
        raise InputError(f"{folder}: the model takes {len(dataset['channel_names'])} channels; LegSegNet gives one CT")
    lut, names = label_table(dataset)
    path = find_checkpoint(folder, fold)
    checkpoint = load_checkpoint(path)
    name = (checkpoint.get("init_args") or {}).get("configuration", "2d")
    config = _configuration(plans, name, folder)
    _check_2d(config, name, plans, folder)
    network = build_network(config["architecture"], len(lut))
    try:
        network.load_state_dict(checkpoint["network_weights"], strict=True)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"{path}: weights do not fit the architecture in plans.json "
                         f"({str(err).splitlines()[0][:200]})") from None
    network.eval()
    intensities = plans["foreground_intensity_properties_per_channel"]["0"]
    normalisation = {k: float(intensities[k]) for k in ("percentile_00_5", "percentile_99_5", "mean", "std")}
    mirror_axes = tuple(checkpoint.get("inference_allowed_mirroring_axes") or ())
    del torch
    return NetworkModel(folder, path, name, network, tuple(config["patch_size"]), normalisation, lut, names,
                        mirror_axes)
