"""Classical engine: HU windows + body/fascia geometry + morphology. No weights, fully transparent.

Works on the canonical axial array (volumes.AxialView) slab by slab with in-plane operations, so memory stays
bounded and every step is vectorised over the slab. Two passes: the first labels tissue classes and measures
each limb's envelope per slice (kept in the output array: class in bits 0-2, limb index in bits 3-7); the
second regularises the envelopes along z and decides inside/outside.

  table        a thin (≤ 15 mm), wide (≥ 20 mm) horizontal band; where a limb lies on it with no air gap the
               band is bridged under the limb between the table's exposed parts (its top and bottom
               interpolated across), so the limb is cut from it
  body         voxels above -500 HU, table removed, in limb-sized, limb-thick components
  bone         cortex (> 200 HU) with its enclosed marrow filled in
  compartment  the region inside the deep fascia: per limb, the convex hull of the muscle groups (muscle
               opened to drop skin and strands in the fat) and bone, as radius vs angle, median over
               neighbouring slices (see compartment.py)
  labels       fat window outside the compartment → SAT, inside → IMAT; muscle window inside → SM
"""
import numpy as np
from scipy import ndimage

from .compartment import envelope_profiles, hulls, inside, limb_components
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
COARSE_SPACING_MM = 1.5        # grid of the muscle opening; the envelope itself is measured at full resolution
TABLE_MAX_THICKNESS_MM = 15
TABLE_MIN_WIDTH_MM = 20
TABLE_MARGIN_MM = 1.0          # skin over a dense table is blurred into it
SLAB = 16
FAT, MUSCLE, BONE = 1, 2, 4    # tissue classes of the first pass

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
        px = float(np.mean(spacing[1:]))
        envelopes = []
        for z0, z1 in self._slabs(total, progress, cancel, 0):
            envelopes += classify_slab(np.asarray(hu[z0:z1], np.float32), px, labels[z0:z1])
        profiles = envelope_profiles(envelopes, float(spacing[0]), px)
        for z0, z1 in self._slabs(total, progress, cancel, total):
            label_slab(labels[z0:z1], profiles[z0:z1])
        return labels

    @staticmethod
    def _slabs(total, progress, cancel, done_before):
        for z0 in range(0, total, SLAB):
            if cancel is not None and cancel():
                from .errors import Cancelled
                raise Cancelled("cancelled")
            z1 = min(total, z0 + SLAB)
            yield z0, z1
            if progress is not None:
                progress((done_before + z1) // 2, total)


def classify_slab(hu, px, out):
    """First pass: tissue class | limb index << 3 into out; returns the slices' limb envelopes (hulls)."""
    smooth = ndimage.gaussian_filter(hu, (0, 0.5, 0.5))   # tames noise for the windows; statistics use raw HU
    dense = smooth > BODY_HU
    body = body_mask(smooth, px, dense & ~table_mask(dense, px))
    box = _bbox(body, margin=4)
    if box is None:
        return [[] for _ in range(hu.shape[0])]
    smooth, body = smooth[box], body[box]
    bone = bone_mask(smooth, body, px)
    fat = body & ~bone & (smooth >= FAT_HU[0]) & (smooth <= FAT_HU[1])
    muscle = body & ~bone & (smooth >= MUSCLE_HU[0]) & (smooth <= MUSCLE_HU[1])
    core = muscle_core(muscle, px) | bone
    limbs, counts = limb_components(body, core, px)
    envelopes = hulls(core, limbs, counts)
    classes = np.where(bone, BONE, fat * FAT + muscle * MUSCLE).astype(np.uint8)
    out[box] = classes | (np.minimum(limbs, 31).astype(np.uint8) << 3)
    offset = np.array([box[1].start, box[2].start], float)
    return [[None if e is None else (e[0] + offset, e[1] + offset) for e in s] for s in envelopes]


def label_slab(out, profiles):
    """Second pass: classes and limb envelopes → tissue labels, in place."""
    classes, limbs = out & 7, out >> 3
    within = inside(limbs, profiles)
    out[:] = 0
    out[(classes == FAT) & ~within] = BY_SHORT["SAT"].label
    out[(classes == FAT) & within] = BY_SHORT["IMAT"].label
    out[(classes == MUSCLE) & within] = BY_SHORT["SM"].label
    out[classes == BONE] = BY_SHORT["Bone"].label


def table_mask(dense, px):
    """A thin, wide horizontal band (the CT table), bridged under limbs that lie on it without an air gap."""
    thin = dense & (run_lengths(dense, axis=1) <= TABLE_MAX_THICKNESS_MM / px)
    band = thin & (run_lengths(thin, axis=2) >= TABLE_MIN_WIDTH_MM / px)
    table = np.zeros_like(dense)
    rows = np.arange(dense.shape[1])[:, None]
    margin = TABLE_MARGIN_MM / px
    for z in np.flatnonzero(band.any(axis=(1, 2))):
        exposed = np.flatnonzero(band[z].any(axis=0))
        top = band[z].argmax(axis=0)[exposed]
        bottom = dense.shape[1] - 1 - band[z, ::-1].argmax(axis=0)[exposed]
        columns = np.arange(exposed[0], exposed[-1] + 1)
        top_all, bottom_all = np.interp(columns, exposed, top), np.interp(columns, exposed, bottom)
        bridged = ~np.isin(columns, exposed)              # under a limb: cut a margin into its skin
        top_all[bridged] -= margin
        table[z][:, columns] = (rows >= top_all[None] - 0.5) & (rows <= bottom_all[None] + 0.5)
    return table & dense


def run_lengths(mask, axis):
    """For each set pixel, the length of the run of set pixels along axis that contains it (0 elsewhere)."""
    moved = np.moveaxis(mask, axis, -1)
    lines = np.zeros(moved.shape[:-1] + (moved.shape[-1] + 1,), np.int8)
    lines[..., :-1] = moved                          # a 0 at the end of every line keeps runs apart
    flat = lines.ravel()
    step = np.diff(flat, prepend=np.int8(0))
    length = (np.flatnonzero(step == -1) - np.flatnonzero(step == 1)).astype(np.int32)
    lengths = np.zeros(flat.shape, np.int32)
    lengths[flat.astype(bool)] = np.repeat(length, length)
    return np.moveaxis(lengths.reshape(lines.shape)[..., :-1], -1, axis)


def body_mask(smooth, px, dense=None):
    """Limb-sized, limb-thick components above BODY_HU (or of dense: that with the table removed). Holes are
    left alone: they are air, never tissue."""
    components, n = ndimage.label(smooth > BODY_HU if dense is None else dense, IN_PLANE)
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


def muscle_core(muscle, px):
    """Muscle groups without skin, strands in the fat and superficial vessels: opened on a ~1.5 mm grid, then
    back at full resolution (muscle pixels next to that core) so the envelope is measured to the pixel."""
    factor = max(1, int(round(COARSE_SPACING_MM / px)))
    coarse_px = px * factor
    core = block_mean(muscle, factor) > 0.5
    core = ndimage.binary_opening(core, disk(FASCIA_OPENING_MM / coarse_px))
    core = remove_small(core, MIN_MUSCLE_AREA_MM2 / coarse_px ** 2)
    core = ndimage.binary_dilation(core, disk(1))
    if factor > 1:
        core = core.repeat(factor, axis=1).repeat(factor, axis=2)[:, :muscle.shape[1], :muscle.shape[2]]
    return core & muscle


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
