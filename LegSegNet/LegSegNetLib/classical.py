"""Classical engine: HU windows + body/fascia geometry + morphology. No weights, fully transparent.

Works on the canonical axial array (volumes.AxialView) slab by slab with in-plane operations, so memory stays
bounded and every step is vectorised over the slab. Two passes: the first labels tissue classes and measures
each limb's envelope per slice (kept in the output array: class in bits 0-2, limb index in bits 3-7); the
second regularises the envelopes along z and decides inside/outside. Each slab is worked on in the box around
its tissue (air rows and columns cost nothing but one threshold), then in the box around the body.

  table        a thin (≤ 15 mm), wide (≥ 20 mm) horizontal band; where a limb lies on it with no air gap the
               band is bridged under the limb between the table's exposed parts (its top and bottom
               interpolated across), so the limb is cut from it
  body         voxels above -500 HU, table removed, in limb-sized, limb-thick components
  bone         cortex (> 200 HU, with thin blurred cortex above 120 HU joined to it, so an epiphysis's shell
               closes) with its enclosed marrow filled in; partial volume and the smoothing spread cortex HU
               outward, so a rim pixel stays bone only where its raw HU is over halfway between the cortex's and
               the soft tissue's near it, and otherwise takes the soft tissue class beside it; a ring cut by the
               edge of the field of view is closed along that edge
  limbs        body components; touching legs, and body parts lying against a limb across air (the genitals
               beside a thigh), are cut apart (see limbs.py)
  compartment  the region inside the deep fascia: per limb, the convex hull of the muscle groups (muscle
               opened to drop skin and strands in the fat) and bone, as radius vs angle; across gaps in the
               muscle it reaches out to the fascia line or the SAT depth of the gap's sides, whichever is
               nearer; on the table side at most that depth below the flat skin; averaged over neighbouring
               slices (see compartment.py)
  labels       fat window outside the compartment → SAT, inside → IMAT; muscle window inside → SM, and
               one pixel step beyond it (the outermost muscle pixels, whose centres the envelope passes through);
               pixels next to air are skin blended with it, never fat, whatever their HU (pixels resting on
               the table may be fat)
"""
import numpy as np
from scipy import ndimage

from .compartment import envelope_profiles, hulls, inside
from .limbs import MAX_LIMBS, limb_components, split_across_air
from .masks import IN_PLANE, array_edges, fill_holes, next_to
from .tissues import BY_SHORT

BODY_HU = -500
CORTEX_HU = 200
FAT_HU = (-190, -30)
MUSCLE_HU = (-29, 150)
MIN_LIMB_AREA_MM2 = 1000       # smaller pieces are tubing, cables, noise
MIN_LIMB_THICKNESS_MM = 12     # area / width: a table plate is a few mm, a limb several cm
MIN_BONE_AREA_MM2 = 20
SHELL_HU = 120                 # thin epiphyseal cortex, blurred, joined to cortex above CORTEX_HU
CORTEX_CLOSING_MM = 2.0       # bridges gaps in thin epiphyseal cortex before the marrow is filled
MAX_CUT_BONE_MM = 100          # widest bone section (a femoral condyle) closed where the field of view cuts it
FASCIA_OPENING_MM = 2.5        # removes skin and thin septa in the fat, keeps muscle bulk
MIN_MUSCLE_AREA_MM2 = 150      # drops superficial vessels
COARSE_SPACING_MM = 1.5        # grid of the muscle opening; the envelope itself is measured at full resolution
TABLE_MAX_THICKNESS_MM = 15
TABLE_MIN_WIDTH_MM = 20
TABLE_MARGIN_MM = 1.0          # skin over a dense table is blurred into it
SLAB = 16
KERNEL_REACH = 2              # pixels: gaussian_filter's radius at sigma 0.5 (truncate 4)
BOX_MARGIN = 4                # pixels around the body where its tissue is classified
FAT, MUSCLE, BONE = 1, 2, 4    # tissue classes of the first pass

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
        boxes, envelopes = [], []
        for z0, z1 in self._slabs(total, progress, cancel, 0):
            box, slab_envelopes = classify_slab(hu[z0:z1], px, labels[z0:z1])
            boxes.append(box)
            envelopes += slab_envelopes
        profiles = envelope_profiles(envelopes, float(spacing[0]), px)
        for (z0, z1), box in zip(self._slabs(total, progress, cancel, total), boxes):
            if box is not None:
                label_slab(labels[z0:z1][box], profiles[z0:z1], box)
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
    """First pass: tissue class | limb index << 3 into out; returns the box holding the limbs and the slices'
    limb envelopes (hulls, in the slab's coordinates). Work is done in the box around tissue: a smoothed value
    is above BODY_HU only within the kernel's reach (2 px) of a raw one, so the crop changes no result."""
    tissue = _bbox(hu > BODY_HU, margin=KERNEL_REACH + BOX_MARGIN)
    if tissue is None:
        return None, [[] for _ in range(hu.shape[0])]
    smooth = ndimage.gaussian_filter(np.asarray(hu[tissue], np.float32), (0, 0.5, 0.5))   # tames noise for the
    dense = smooth > BODY_HU                                            # windows; statistics use raw HU
    table = table_mask(dense, px)
    body = body_mask(smooth, px, dense & ~table)
    inner = _bbox(body, margin=BOX_MARGIN)
    if inner is None:
        return None, [[] for _ in range(hu.shape[0])]
    box = _compose(tissue, inner)
    smooth, body, table = smooth[inner], body[inner], table[inner]
    bone, mostly_soft, smooth = unblur_cortex(bone_mask(smooth, body, px), smooth, np.asarray(hu[box], np.float32))
    soft = body & ~bone
    fat = soft & (smooth >= FAT_HU[0]) & (smooth <= FAT_HU[1]) & ~next_to(smooth <= BODY_HU)   # skin by air
    muscle = soft & (smooth >= MUSCLE_HU[0]) & (smooth <= MUSCLE_HU[1])
    muscle |= mostly_soft & next_to(muscle)             # a blurred cortex edge pixel takes the soft tissue
    fat |= mostly_soft & ~muscle & next_to(fat)         # beside it
    core = muscle_core(muscle, px) | bone
    limbs, counts = limb_components(body, core, bone, px)
    limbs, counts, radii = split_across_air(limbs, counts, core, body, body & next_to(~body), px)
    classes = np.where(bone, np.uint8(BONE), (fat * FAT + muscle * MUSCLE).astype(np.uint8))
    out[box] = classes | (np.minimum(limbs, MAX_LIMBS).astype(np.uint8) << 3)
    offset = np.array([box[1].start, box[2].start], float)
    on_table = resting_on(table, body)
    envelopes = hulls(radii, bone, muscle & ~core, limbs, counts, on_table)
    return box, [[None if e is None else (e[0] + offset, e[1] + offset) for e in s] for s in envelopes]


def label_slab(out, profiles, box):
    """Second pass: classes and limb envelopes → tissue labels, in place (out: the slab's box)."""
    offset = np.array([box[1].start, box[2].start], float)
    within = inside(out >> 3, profiles, offset)
    within |= ((out & 7) == MUSCLE) & next_to(within)          # the envelope's own edge pixels
    out[:] = LABEL_OF[(out & 7) | (within.view(np.uint8) << 3)]


def _label_table():
    """Tissue label by first-pass class (bits 0-2) and inside the envelope (bit 3)."""
    table = np.zeros(16, np.uint8)
    table[FAT] = BY_SHORT["SAT"].label
    table[FAT | 8] = BY_SHORT["IMAT"].label
    table[MUSCLE | 8] = BY_SHORT["SM"].label
    table[BONE] = table[BONE | 8] = BY_SHORT["Bone"].label
    return table


LABEL_OF = _label_table()


def table_mask(dense, px):
    """A thin, wide horizontal band (the CT table), bridged under limbs that lie on it without an air gap."""
    thin = dense & (run_lengths(dense, axis=1) <= TABLE_MAX_THICKNESS_MM / px)
    band = thin & (run_lengths(thin, axis=2) >= TABLE_MIN_WIDTH_MM / px)
    exposed = band.any(axis=1)                                 # (z, x): columns where the band shows
    if not exposed.any():
        return np.zeros_like(dense)
    top = band.argmax(axis=1)
    bottom = dense.shape[1] - 1 - band[:, ::-1].argmax(axis=1)
    upper = np.full(exposed.shape, np.inf)
    lower = np.full(exposed.shape, -np.inf)
    for z in np.flatnonzero(exposed.any(axis=1)):
        seen = np.flatnonzero(exposed[z])
        columns = np.arange(seen[0], seen[-1] + 1)
        upper[z, columns] = np.interp(columns, seen, top[z, seen])
        lower[z, columns] = np.interp(columns, seen, bottom[z, seen])
    upper[~exposed & np.isfinite(upper)] -= TABLE_MARGIN_MM / px   # under a limb: cut a margin into its skin
    rows = np.arange(dense.shape[1])[None, :, None]
    return dense & (rows >= upper[:, None] - 0.5) & (rows <= lower[:, None] + 0.5)


def resting_on(table, body):
    """Body pixels within 2 pixels of the table (the skin resting on it), found in the box around the table."""
    on_table = np.zeros_like(body)
    near = _bbox(table, margin=2)
    if near is not None:
        on_table[near] = body[near] & ndimage.binary_dilation(table[near], disk(2))
    return on_table


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
    components, _ = ndimage.label(smooth > BODY_HU if dense is None else dense, IN_PLANE)
    min_pixels = MIN_LIMB_AREA_MM2 / (px * px)
    body = np.zeros(components.shape, bool)
    for number, box in enumerate(ndimage.find_objects(components), start=1):
        width = (box[2].stop - box[2].start) * px
        if (box[1].stop - box[1].start) * (box[2].stop - box[2].start) < min_pixels:
            continue                                     # too small even if it filled its box
        mine = components[box] == number
        area = np.count_nonzero(mine) * px * px
        if area >= MIN_LIMB_AREA_MM2 and area / width >= MIN_LIMB_THICKNESS_MM:
            body[box] |= mine
    return body


def bone_mask(smooth, body, px):
    """Cortex with its marrow; morphology runs only in the box around the cortex (bone is a small part)."""
    dense = body & (smooth > SHELL_HU)
    bone = np.zeros_like(dense)
    closing = disk(CORTEX_CLOSING_MM / px)
    box = _bbox(dense, margin=closing.shape[1])
    if box is not None:
        shell = connected_to(dense[box], smooth[box] > CORTEX_HU)
        cortex = remove_small(shell, MIN_BONE_AREA_MM2 / (px * px))
        reach = closing.shape[1]                       # the cortex runs on beyond the field of view's edge
        closed = ndimage.binary_closing(np.pad(cortex, ((0, 0), (reach, reach), (reach, reach)), mode="edge"),
                                        closing)[:, reach:-reach, reach:-reach]
        bone[box] = fill_holes(closed | edge_caps(closed, MAX_CUT_BONE_MM / px)) & body[box]
    return bone


def edge_caps(mask, max_span):
    """Where an in-plane component of mask meets an edge of the array in two or more places no further apart
    than max_span pixels, the edge pixels between them: a cortex ring cut by the field of view, whose marrow
    reaches the edge, is closed there (one component only: the muscle between two bones is not capped)."""
    caps = np.zeros_like(mask)
    if not any(edge.any() for edge in array_edges(mask)):
        return caps
    components, n = ndimage.label(mask, IN_PLANE)
    for edge, cap in zip(array_edges(components), array_edges(caps)):
        z, at = np.nonzero(edge)
        if not z.size:
            continue
        which = edge[z, at]
        first = np.full(n + 1, edge.shape[1], np.int64)
        last = np.full(n + 1, -1, np.int64)
        np.minimum.at(first, which, at)
        np.maximum.at(last, which, at)
        for number in np.flatnonzero((last - first > 1) & (last - first <= max_span)):
            slice_z = z[which == number][0]              # components never span slices
            cap[slice_z, first[number]:last[number] + 1] = True
    return caps


def unblur_cortex(bone, smooth, raw):
    """Partial volume and the smoothing spread cortex HU outward. A pixel on bone's rim stays bone only where its
    raw HU is above halfway between the cortex and the soft tissue near it (the 5×5 maximum and minimum), i.e.
    it is mostly bone; the others are returned apart (mostly soft tissue). Soft tissue that the smoothing lifted
    above the muscle window is judged by its raw HU. Returns bone, the mostly soft rim and the HU to window."""
    mostly_soft = np.zeros_like(bone)
    box = _bbox(bone, margin=2)
    if box is not None:
        halfway = (ndimage.maximum_filter(raw[box], size=(1, 5, 5))
                   + ndimage.minimum_filter(raw[box], size=(1, 5, 5))) / 2
        soft = raw[box] <= np.maximum(halfway, CORTEX_HU)
        for _ in range(KERNEL_REACH):                  # the blur spreads cortex up to the smoothing's reach
            mostly_soft[box] |= bone[box] & ~mostly_soft[box] & next_to(~bone[box] | mostly_soft[box]) & soft
    return bone & ~mostly_soft, mostly_soft, np.where(smooth > MUSCLE_HU[1], np.minimum(raw, smooth), smooth)


def connected_to(mask, seeds):
    """Pixels of mask in an in-plane component that holds a pixel of seeds."""
    components, _ = ndimage.label(mask, IN_PLANE)
    keep = np.zeros(components.max() + 1, bool)
    keep[components[seeds & mask]] = True
    keep[0] = False
    return keep[components]


def remove_small(mask, min_pixels):
    """mask without its in-plane components of fewer than min_pixels pixels."""
    components, _ = ndimage.label(mask, IN_PLANE)
    kept = np.zeros_like(mask)
    for number, box in enumerate(ndimage.find_objects(components), start=1):
        if (box[1].stop - box[1].start) * (box[2].stop - box[2].start) >= min_pixels:
            mine = components[box] == number
            if np.count_nonzero(mine) >= min_pixels:
                kept[box] |= mine
    return kept


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
    padded = np.zeros((z, -(-y // factor) * factor, -(-x // factor) * factor), np.uint8)
    padded[:, :y, :x] = mask
    count = sum(padded[:, i::factor, j::factor] for i in range(factor) for j in range(factor))
    return count / np.float32(factor * factor)


def _compose(outer, inner):
    """The box inner (relative to box outer) in outer's frame."""
    return tuple(slice(o.start + i.start, o.start + i.stop) for o, i in zip(outer, inner))


def _bbox(mask, margin):
    if not mask.any():
        return None
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    xs = np.flatnonzero(mask.any(axis=(0, 1)))
    return (slice(0, mask.shape[0]), slice(max(ys[0] - margin, 0), min(ys[-1] + margin + 1, mask.shape[1])),
            slice(max(xs[0] - margin, 0), min(xs[-1] + margin + 1, mask.shape[2])))
