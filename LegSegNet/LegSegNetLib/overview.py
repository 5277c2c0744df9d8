"""overview.png: axial slices at several levels with the mask overlaid, and a coronal view."""
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


def write_overview(path, hu, labels, spacing, title=""):
    """hu, labels: canonical (z, y, x) arrays; spacing (z, y, x) mm."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    occupied = np.flatnonzero(labels.any(axis=(1, 2)))
    lo, hi = (occupied[0], occupied[-1]) if occupied.size else (0, labels.shape[0] - 1)
    levels = np.unique(np.linspace(lo, hi, 6)[1:-1].round().astype(int)) if hi > lo else [lo]
    levels = levels[::-1]                                   # superior first, like reading down the leg
    fig, axes = plt.subplots(1, len(levels) + 1, figsize=(4 * (len(levels) + 1), 4.4))
    for ax, z in zip(axes, levels):
        ax.imshow(_overlay(hu[z], labels[z]), aspect=spacing[1] / spacing[2], interpolation="nearest")
        ax.set_title(f"axial slice {z}")
    middle = labels.shape[1] // 2
    busiest = int(np.argmax((labels > 0).sum(axis=(0, 2)))) if labels.any() else middle   # most labelled voxels
    row = middle if labels[:, middle].any() else busiest
    coronal = _overlay(hu[:, row], labels[:, row])[::-1]    # superior at the top
    axes[-1].imshow(coronal, aspect=spacing[0] / spacing[2], interpolation="nearest")
    axes[-1].set_title(f"coronal row {row}")
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
        ax.text(0.01, 0.01, "R", transform=ax.transAxes, color="white", fontsize=9)
        ax.text(0.99, 0.01, "L", transform=ax.transAxes, color="white", fontsize=9, ha="right")
    fig.legend(handles=[Patch(color=t.color_float, label=f"{t.short}: {t.name}") for t in TISSUES],
               loc="lower center", ncol=len(TISSUES), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=80)
    plt.close(fig)
