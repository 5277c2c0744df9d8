"""Left/right leg split on the canonical axial array (axis 2 runs patient right → left).

Per slice, the tissue mask's column profile along right→left has one peak per leg; the split is the
deepest valley between the two peaks, so touching legs are split where they meet. Slices with one leg in
view take the median split of the others; a volume with a single leg everywhere uses the patient midline
(LPS x = 0).
"""
import numpy as np
from scipy import ndimage

from .tissues import SIDE_LABELS

MIN_LEG_SEPARATION_MM = 50
MIN_SECOND_LEG = 0.25     # second peak relative to the first
MAX_VALLEY = 0.6          # valley relative to the smaller peak


def split_positions(mask, pixel_x_mm, x_lps):
    """Column index per slice: columns below it belong to the right leg. x_lps: LPS x of each column."""
    width = max(1, int(round(5 / pixel_x_mm)))     # 5 mm smoothing against ragged outlines
    profile = ndimage.uniform_filter1d(mask.sum(axis=1).astype(np.float32), width, axis=1)
    nz, nx = profile.shape
    columns = np.arange(nx)
    first = profile.argmax(axis=1)
    far = np.abs(columns[None] - first[:, None]) * pixel_x_mm >= MIN_LEG_SEPARATION_MM
    second = np.where(far, profile, -1).argmax(axis=1)
    rows = np.arange(nz)
    lo, hi = np.minimum(first, second), np.maximum(first, second)
    between = (columns[None] > lo[:, None]) & (columns[None] < hi[:, None])
    valley_profile = np.where(between, profile, np.inf)
    valley = valley_profile.argmin(axis=1)
    peak1, peak2 = profile[rows, first], profile[rows, second]
    valid = (peak1 > 0) & far[rows, second] & (peak2 >= MIN_SECOND_LEG * peak1) \
        & (valley_profile[rows, valley] <= MAX_VALLEY * peak2)
    if valid.any():
        fallback = int(np.median(valley[valid]))
    else:
        fallback = int(np.searchsorted(x_lps, 0.0))   # x_lps increases along the canonical axis
    return np.where(valid, valley, fallback)


def split_legs(mask, view, image):
    """Side map (tissues.SIDE_LABELS) for a canonical boolean mask of the legs in `image` seen through `view`
    (volumes.AxialView)."""
    split = split_positions(mask, view.spacing[2], view.positions(image, 2))
    columns = np.arange(mask.shape[2])
    left = columns[None, None, :] >= split[:, None, None]
    sides = np.where(left, SIDE_LABELS["left"], SIDE_LABELS["right"]).astype(np.uint8)
    return np.where(mask, sides, np.uint8(0))
