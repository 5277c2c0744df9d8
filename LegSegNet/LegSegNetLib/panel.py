"""What the Slicer panel decides, without Qt: which packages to install (and the consent text), the status line
after a run, the model-folder text, the axial range taken from the red slice view, and the review list and
mid-thigh lines with the slice position each review entry jumps to.

Light to import (standard library and numpy only at module level): the panel imports it on first use.
"""
import importlib.util
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

# Panel choice → core engine name (engines.ENGINES).
ENGINE_CHOICES = {"auto": "auto", "network": "nnunet", "classical": "threshold"}
ENGINE_NAMES = {"threshold": "classical", "nnunet": "network (nnU-Net)"}
TORCH_REQUIREMENT = ">=2.0"
# Packages the background `segment` needs beyond what Slicer ships (numpy, scipy, SimpleITK): import → pin.
RUN_PACKAGES = {}
# The network builder, installed with --no-deps: its torch requirement is met by the PyTorch extension's torch,
# and its timm dependency (only for architectures LegSegNet does not use) would pull a torch build from PyPI.
NETWORK_PACKAGES = {"dynamic_network_architectures": "dynamic_network_architectures>=0.4,<0.5"}
DOWNLOAD_PACKAGES = {"huggingface_hub": "huggingface_hub>=0.20,<2"}
DICOM_SEG_PACKAGES = {"highdicom": "highdicom>=0.22"}     # pydicom, its dependency, ships with Slicer


def installed(module):
    return importlib.util.find_spec(module) is not None


def model_folder_text(value):
    """The model folder as the field shows it: '' (the installed weights) for an empty value, never '.'."""
    text = "" if value is None else str(value)
    return "" if text in ("", ".") else text


def network_will_run(engine, model_folder=""):
    """Whether the network engine will run (so its packages are needed): 'network', or 'auto' with weights found."""
    if engine != "auto":
        return engine == "network"
    from .weights import locate
    return locate(model_folder_text(model_folder) or None)[0] is not None


@dataclass
class DependencyPlan:
    torch: bool = False                          # through the PyTorch extension, before anything else
    packages: list = field(default_factory=list)     # pip requirements
    no_deps: list = field(default_factory=list)      # pip requirements installed with --no-deps, after torch

    def __bool__(self):
        return bool(self.torch or self.packages or self.no_deps)

    def consent_text(self, purpose="LegSegNet"):
        lines = [f"{purpose} needs the following, which will be downloaded and installed now:"]
        if self.torch:
            lines.append(f"• PyTorch {TORCH_REQUIREMENT} through the PyTorch extension (the build for your GPU or CPU)")
        lines += [f"• {pin}" for pin in self.packages]
        lines += [f"• {pin} (without its dependencies; it uses PyTorch above)" for pin in self.no_deps]
        if self.torch or self.no_deps:
            lines.append("To run without them, choose the classical engine.")
        return "\n".join(lines)


def dependency_plan(engine, model_folder="", is_installed=installed):
    """Everything a run with these settings needs that is missing, in install order."""
    plan = DependencyPlan(packages=[pin for name, pin in RUN_PACKAGES.items() if not is_installed(name)])
    if network_will_run(engine, model_folder):
        plan.torch = not is_installed("torch")
        plan.no_deps = [pin for name, pin in NETWORK_PACKAGES.items() if not is_installed(name)]
    return plan


def download_plan(is_installed=installed):
    return DependencyPlan(packages=[pin for name, pin in DOWNLOAD_PACKAGES.items() if not is_installed(name)])


def dicom_seg_plan(is_installed=installed):
    return DependencyPlan(packages=[pin for name, pin in DICOM_SEG_PACKAGES.items() if not is_installed(name)])


def engine_args(engine, model_folder="", device="auto"):
    """The CLI's engine options for the panel's choices (the classical engine takes none)."""
    args = []
    if engine != "classical" and model_folder_text(model_folder):
        args += ["--model", model_folder_text(model_folder)]
    if engine != "classical" and device != "auto":
        args += ["--device", device]
    return args


def licence_text():
    from .weights import LICENCE, REPO_ID
    return (f"The LegSegNet network weights (https://huggingface.co/{REPO_ID}) are licensed {LICENCE} by their "
            "authors: you may use them for non-commercial purposes only, with attribution "
            "(https://creativecommons.org/licenses/by-nc/4.0/). They are downloaded into your user cache and "
            "checked by sha256. Do you accept the licence?")


def status_text(segmentation_name, report, kept_copy_name=None):
    """The status line after a run: which engine ran and why (report.json's engine reason)."""
    engine = report.get("engine", {})
    name = ENGINE_NAMES.get(engine.get("engine"), engine.get("engine", "unknown"))
    text = f"Done: {segmentation_name}, {name} engine"
    text += f" ({engine['reason']})." if engine.get("reason") else "."
    if kept_copy_name:
        text += f" Your edited segmentation was kept as '{kept_copy_name}'."
    return text


# ---------------------------------------------------------------- axial range from a slice view
def axial_axis(ijk_to_ras):
    """(index axis i/j/k that runs along S, True if the index grows towards S)."""
    direction = np.asarray(ijk_to_ras, float)[:3, :3]
    axis = int(np.abs(direction[2]).argmax())
    return axis, bool(direction[2, axis] > 0)


def axial_slice_at(ijk_to_ras, dims, ras):
    """Canonical axial index (inferior first, as --slices counts) of the CT slice through the RAS point."""
    axis, superior = axial_axis(ijk_to_ras)
    ijk = np.linalg.solve(np.asarray(ijk_to_ras, float), [*ras, 1.0])
    index = int(np.floor(ijk[axis] + 0.5))
    if not 0 <= index < dims[axis]:
        raise InputError(f"the slice view (S {ras[2]:.1f} mm) is outside the CT; move it onto the legs")
    return index if superior else dims[axis] - 1 - index


def slice_centre_ras(ijk_to_ras, dims, canonical):
    """RAS point (mm) of the centre of canonical axial slice `canonical` (inferior first, as qc.csv counts)."""
    axis, superior = axial_axis(ijk_to_ras)
    if not 0 <= canonical < dims[axis]:
        raise InputError(f"slice {canonical} is not in this CT ({dims[axis]} axial slices)")
    ijk = [(n - 1) / 2 for n in dims] + [1.0]
    ijk[axis] = canonical if superior else dims[axis] - 1 - canonical
    return [float(v) for v in (np.asarray(ijk_to_ras, float) @ ijk)[:3]]


def slice_position_mm(ijk_to_ras, dims, canonical):
    """S coordinate (mm) of the centre of canonical axial slice `canonical`."""
    return slice_centre_ras(ijk_to_ras, dims, canonical)[2]


def with_range_end(text, which, canonical, n_slices):
    """The Slices text 'A:B' with its start (which='start') or end ('end', inclusive here: B = index + 1) set to
    a canonical index; the other end is dropped if it would leave no slice."""
    start, stop = _range(text, n_slices) if text.strip() else (None, None)
    if which == "start":
        start = canonical
        stop = stop if stop is not None and stop > start else None
    else:
        stop = canonical + 1
        start = start if start is not None and start < stop else None
    return f"{'' if start is None else start}:{'' if stop is None else stop}"


def _range(text, n_slices):
    from .pipeline import parse_slices      # the CLI's own parser (imported on use: it loads the core)
    start, stop, _step = parse_slices(text, n_slices).indices(n_slices)
    return start, stop


def describe_range(text, ijk_to_ras, dims):
    """'slices 10–49 of 120 (S -120.0 to -81.0 mm)' for the Slices text on this CT."""
    n = dims[axial_axis(ijk_to_ras)[0]]
    start, stop = _range(text, n) if text.strip() else (0, n)
    first, last = (slice_position_mm(ijk_to_ras, dims, i) for i in (start, stop - 1))
    which = f"all {n} slices" if (start, stop) == (0, n) else f"slices {start}–{stop - 1} of {n}"
    return f"{which} (S {first:.1f} to {last:.1f} mm)"


def range_with_slice_view(volume_node, slice_node, text, which):
    """The Slices text with its start or end at the slice view's position (the red view: Start/End here)."""
    from .mrml import ijk_to_ras
    matrix = slice_node.GetSliceToRAS()
    ras = [matrix.GetElement(r, 3) for r in range(3)]
    dims = volume_node.GetImageData().GetDimensions()
    index = axial_slice_at(ijk_to_ras(volume_node), dims, ras)
    return with_range_end(text, which, index, dims[axial_axis(ijk_to_ras(volume_node))[0]])


def describe_volume_range(volume_node, text):
    """describe_range for a volume node; '' without voxels, the reason for a range that does not parse."""
    if volume_node is None or volume_node.GetImageData() is None:
        return ""
    from .mrml import ijk_to_ras
    try:
        return describe_range(text, ijk_to_ras(volume_node), volume_node.GetImageData().GetDimensions())
    except InputError as error:     # a half-typed range: say what is wrong instead
        return str(error)


# ---------------------------------------------------------------- review list and mid-thigh level
def review_items(quality):
    """One line per flagged slice, review rank 1 first: '1. slice 12 (S -40.5 mm): border, metal — reasons'."""
    return [f"{r['rank']}. slice {r['slice']} (S {r['position_mm']:.1f} mm): {r['flags'].replace(';', ', ')} — "
            f"{r['reasons']}" for r in quality["review"]]


def review_position(volume_node, entry):
    """RAS point the slice views jump to for a review entry: the centre of its slice on the CT's grid."""
    from .mrml import ijk_to_ras
    return slice_centre_ras(ijk_to_ras(volume_node), volume_node.GetImageData().GetDimensions(), entry["slice"])


def midthigh_text(quality):
    """Per leg: the mid-thigh level and its SM/IMAT/SAT areas, or why no level is given."""
    lines = []
    for row in quality["midthigh"]:
        if row.get("level_mm", "") == "":
            lines.append(f"{row['leg']} leg: no level ({row['status']})")
            continue
        areas = ", ".join(f"{t} {float(row[key]):.1f} {key.rsplit('_', 1)[1].replace('cm2', 'cm²')}"
                          for t in ("SM", "IMAT", "SAT") for key in row if key.startswith(f"{t}_"))
        lines.append(f"{row['leg']} leg: level {float(row['level_mm']):.1f} mm (slice {row['slice']}; "
                     f"{row['method']}): {areas}")
    return "\n".join(lines)
