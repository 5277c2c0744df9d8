"""Classical engine: HU windows + body/fascia geometry + morphology. No weights, fully transparent.

Works on the canonical axial array (volumes.AxialView) slab by slab with in-plane (z-less) operations, so
memory stays bounded and every step is vectorised over the slab.

  body         voxels above -500 HU in limb-sized, limb-thick components (drops the CT table)
  bone         cortex (> 200 HU) with its enclosed marrow filled in
  compartment  the region inside the muscle fascia: muscle opened (drops skin and septa in the fat),
               closed across intermuscular fat, holes filled; worked out on a ~1.5 mm grid
  labels       fat window outside the compartment → SAT, inside → IMAT; muscle window inside → SM
"""
import numpy as np
from scipy import ndimage

from .tissues import BY_SHORT

BODY_HU = -500
CORTEX_HU = 200
FAT_HU = (-190, -30)
MUSCLE_HU = (-29, 150)
MIN_LIMB_AREA_MM2 = 1000       # smaller pieces are tubing, cables, noise
MIN_LIMB_THICKNESS_MM = 12     # area / width: a table plate is a few mm, a limb several cm
MIN_BONE_AREA_MM2 = 20
CORTEX_CLOSING_MM = 2.0       # bridges gaps in thin epiphyseal cortex before the marrow is filled
FASCIA_OPENING_MM = 2.5        # removes skin and thin septa in the fat, keeps muscle bulk
MIN_MUSCLE_AREA_MM2 = 150      # drops superficial vessels
FASCIA_CLOSING_MM = 6.0        # bridges intermuscular fat between muscle groups
COARSE_SPACING_MM = 1.5
SLAB = 16

IN_PLANE = np.zeros((3, 3, 3), bool)
IN_PLANE[1] = True


def disk(radius_px):
    r = max(int(round(radius_px)), 1)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= r * r)[None]


class ClassicalEngine:
    name = "threshold"

    def report(self):
        return {"engine": self.name, "fat_hu": FAT_HU, "muscle_hu": MUSCLE_HU, "cortex_hu": CORTEX_HU}

    def segment(self, hu, spacing, progress=None, cancel=None):
        """Labels (uint8, canonical) for a canonical HU array (z, y, x) with spacing in mm."""
        labels = np.zeros(hu.shape, np.uint8)
        total = hu.shape[0]
        for z0 in range(0, total, SLAB):
            if cancel is not None and cancel():
                from .errors import Cancelled
                raise Cancelled("cancelled")
            z1 = min(total, z0 + SLAB)
            labels[z0:z1] = segment_slab(np.asarray(hu[z0:z1], np.float32), spacing[1:])
            if progress is not None:
                progress(z1, total)
        return labels


def segment_slab(hu, pixel_mm):
    px = float(np.mean(pixel_mm))
    smooth = ndimage.gaussian_filter(hu, (0, 0.5, 0.5))   # tames noise for the windows; statistics use raw HU
    body = body_mask(smooth, px)
    labels = np.zeros(hu.shape, np.uint8)
    box = _bbox(body, margin=4)
    if box is None:
        return labels
    smooth, body = smooth[box], body[box]
    bone = bone_mask(smooth, body, px)
    fat = body & ~bone & (smooth >= FAT_HU[0]) & (smooth <= FAT_HU[1])
    muscle = body & ~bone & (smooth >= MUSCLE_HU[0]) & (smooth <= MUSCLE_HU[1])
    inside = compartment(muscle, bone, body, px)
    out = labels[box]
    out[fat & ~inside] = BY_SHORT["SAT"].label
    out[fat & inside] = BY_SHORT["IMAT"].label
    out[muscle & inside] = BY_SHORT["SM"].label
    out[bone] = BY_SHORT["Bone"].label
    return labels


def body_mask(smooth, px):
    """Limb-sized, limb-thick components above BODY_HU. Holes are left alone: they are air, never tissue."""
    components, n = ndimage.label(smooth > BODY_HU, IN_PLANE)
    if n == 0:
        return np.zeros(smooth.shape, bool)
    area = np.bincount(components.ravel())[1:] * px * px
    objects = ndimage.find_objects(components)
    width = np.array([(sl[2].stop - sl[2].start) * px for sl in objects])
    keep = np.concatenate([[False], (area >= MIN_LIMB_AREA_MM2) & (area / width >= MIN_LIMB_THICKNESS_MM)])
    return keep[components]


def bone_mask(smooth, body, px):
    """Cortex with its marrow; morphology runs only in the box around the cortex (bone is a small part)."""
    cortex = remove_small(body & (smooth > CORTEX_HU), MIN_BONE_AREA_MM2 / (px * px))
    closing = disk(CORTEX_CLOSING_MM / px)
    box = _bbox(cortex, margin=closing.shape[1])
    bone = np.zeros_like(cortex)
    if box is not None:
        closed = ndimage.binary_closing(cortex[box], closing, border_value=0)
        bone[box] = ndimage.binary_fill_holes(closed, IN_PLANE) & body[box]
    return bone


def remove_small(mask, min_pixels):
    components, n = ndimage.label(mask, IN_PLANE)
    if n == 0:
        return mask
    keep = np.bincount(components.ravel()) >= min_pixels
    keep[0] = False
    return keep[components]


def compartment(muscle, bone, body, px):
    """The region inside the deep fascia, computed on a ~1.5 mm grid and repeated back to full resolution."""
    factor = max(1, int(round(COARSE_SPACING_MM / px)))
    coarse_px = px * factor
    core = block_mean(muscle, factor) > 0.5
    core = ndimage.binary_opening(core, disk(FASCIA_OPENING_MM / coarse_px))
    core = remove_small(core, MIN_MUSCLE_AREA_MM2 / coarse_px ** 2)
    pad = int(np.ceil(FASCIA_CLOSING_MM / coarse_px)) + 1
    padded = np.pad(core, ((0, 0), (pad, pad), (pad, pad)))
    closed = ndimage.binary_closing(padded, disk(FASCIA_CLOSING_MM / coarse_px))[:, pad:-pad, pad:-pad]
    filled = ndimage.binary_fill_holes(closed | (block_mean(bone, factor) > 0.5), IN_PLANE)
    if factor > 1:
        filled = filled.repeat(factor, axis=1).repeat(factor, axis=2)[:, :muscle.shape[1], :muscle.shape[2]]
    return filled & body


def block_mean(mask, factor):
    """Fraction of each factor×factor block that is set (edges padded with zeros)."""
    if factor == 1:
        return mask.astype(np.float32)
    z, y, x = mask.shape
    ny, nx = -(-y // factor), -(-x // factor)
    padded = np.zeros((z, ny * factor, nx * factor), np.float32)
    padded[:, :y, :x] = mask
    return padded.reshape(z, ny, factor, nx, factor).mean(axis=(2, 4))


def _bbox(mask, margin):
    if not mask.any():
        return None
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    xs = np.flatnonzero(mask.any(axis=(0, 1)))
    return (slice(None), slice(max(ys[0] - margin, 0), ys[-1] + margin + 1),
            slice(max(xs[0] - margin, 0), xs[-1] + margin + 1))
