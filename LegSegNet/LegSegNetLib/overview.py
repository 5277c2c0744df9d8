"""overview.png: axial slices at several levels with the mask overlaid, and a coronal view; with marks, the
slice QC flags first (red ticks on the coronal view, the worst slice as a red line and its own panel) and the
mid-thigh level (a cyan line and its own panel)."""
import numpy as np

from .tissues import TISSUES

WINDOW = (-200, 300)
ALPHA = 0.45


def _overlay(hu, labels):
    grey = (np.clip((np.asarray(hu, np.float32) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1))
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    palette = np.zeros((256, 3), np.float32)
    for t in TISSUES:
        palette[t.label] = t.color_float
    colour = palette[labels]
    tinted = labels > 0
    rgb[tinted] = (1 - ALPHA) * rgb[tinted] + ALPHA * colour[tinted]
    return rgb


def _panels(labels, marks):
    """(slice, title) of the axial panels: the worst flagged slice and the mid-thigh level first, then levels
    spread over the labelled range, superior first."""
    occupied = np.flatnonzero(labels.any(axis=(1, 2)))
    lo, hi = (occupied[0], occupied[-1]) if occupied.size else (0, labels.shape[0] - 1)
    levels = np.unique(np.linspace(lo, hi, 6)[1:-1].round().astype(int)) if hi > lo else [lo]
    panels = []
    if marks.get("worst") is not None:
        panels.append((marks["worst"], f"review first: slice {marks['worst']}"))
    for z in sorted(set(marks.get("levels", {}).values())):
        panels.append((z, f"mid-thigh: slice {z}"))
    shown = {z for z, _ in panels}
    regular = [(int(z), f"axial slice {z}") for z in levels[::-1] if z not in shown]
    return panels + regular[:max(4 - len(panels), 2)]


def write_overview(path, hu, labels, spacing, title="", marks=None):
    """hu, labels: canonical (z, y, x) arrays; spacing (z, y, x) mm; marks: {"flagged": [slices], "worst":
    slice or None, "levels": {leg: slice}} (pipeline.overview_marks)."""
    from matplotlib.figure import Figure      # not pyplot: no GUI backend to import, no global figure state
    from matplotlib.patches import Patch

    marks = marks or {}
    panels = _panels(labels, marks)
    fig = Figure(figsize=(4 * (len(panels) + 1), 4.4))
    axes = fig.subplots(1, len(panels) + 1)
    for ax, (z, name) in zip(axes, panels):
        ax.imshow(_overlay(hu[z], labels[z]), aspect=spacing[1] / spacing[2], interpolation="nearest")
        ax.set_title(name, color="red" if name.startswith("review") else "black")
    middle = labels.shape[1] // 2
    busiest = int(np.argmax((labels > 0).sum(axis=(0, 2)))) if labels.any() else middle   # most labelled voxels
    row = middle if labels[:, middle].any() else busiest
    coronal = _overlay(hu[:, row], labels[:, row])[::-1]    # superior at the top
    axes[-1].imshow(coronal, aspect=spacing[0] / spacing[2], interpolation="nearest")
    axes[-1].set_title(f"coronal row {row}")
    _mark_levels(axes[-1], labels.shape[0], coronal.shape[1], marks)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
        ax.text(0.01, 0.01, "R", transform=ax.transAxes, color="white", fontsize=9)
        ax.text(0.99, 0.01, "L", transform=ax.transAxes, color="white", fontsize=9, ha="right")
    handles = [Patch(color=t.color_float, label=f"{t.short}: {t.name}") for t in TISSUES]
    if marks.get("flagged"):
        handles.append(Patch(color="red", label=f"QC: {len(marks['flagged'])} flagged slices"))
    if marks.get("levels"):
        handles.append(Patch(color="cyan", label="mid-thigh level"))
    fig.legend(handles=handles,
               loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.1, top=0.88, wspace=0.05)   # fixed: tight_layout costs more
    fig.savefig(path, dpi=80, pil_kwargs={"compress_level": 1})


def _mark_levels(ax, n_slices, width, marks):
    """Flagged slices as red ticks at the left edge, the worst one and the mid-thigh level as lines across."""
    row = lambda z: n_slices - 1 - z                        # the coronal view shows superior at the top
    tick = max(2, width // 20)
    for z in marks.get("flagged", []):
        ax.plot([0, tick], [row(z)] * 2, color="red", linewidth=1)
    if marks.get("worst") is not None:
        ax.axhline(row(marks["worst"]), color="red", linewidth=1, linestyle=":")
    for z in set(marks.get("levels", {}).values()):
        ax.axhline(row(z), color="cyan", linewidth=1, linestyle="--")
