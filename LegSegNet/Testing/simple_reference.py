"""The naive per-slice reference the classical engine must beat (test_classical_anatomy.py, benchmarks): a 3×3
median, holes filled, the engine's HU windows, fat outside the filled (opened) muscle mask is SAT."""
import numpy as np
from scipy import ndimage

from LegSegNetLib.classical import CORTEX_HU, FAT_HU, MUSCLE_HU
from LegSegNetLib.tissues import BY_SHORT

IN_PLANE = np.zeros((3, 3, 3), bool)
IN_PLANE[1] = True


def reference(hu):
    """Labels (canonical, uint8) for a canonical HU array, slice by slice in-plane."""
    smooth = ndimage.median_filter(hu, size=(1, 3, 3))
    labels = np.zeros(hu.shape, np.uint8)
    body = ndimage.binary_fill_holes(smooth > -500, IN_PLANE)
    bone = ndimage.binary_fill_holes(smooth > CORTEX_HU, IN_PLANE) & body
    muscle = body & ~bone & (smooth >= MUSCLE_HU[0]) & (smooth <= MUSCLE_HU[1])
    fat = body & ~bone & (smooth >= FAT_HU[0]) & (smooth <= FAT_HU[1])
    inside = ndimage.binary_fill_holes(ndimage.binary_opening(muscle, IN_PLANE, iterations=2) | bone, IN_PLANE)
    labels[fat & ~inside] = BY_SHORT["SAT"].label
    labels[fat & inside] = BY_SHORT["IMAT"].label
    labels[muscle & inside] = BY_SHORT["SM"].label
    labels[bone] = BY_SHORT["Bone"].label
    return labels
