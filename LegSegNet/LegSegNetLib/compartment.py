"""The muscle compartment (inside the deep fascia) for the classical engine: an envelope per limb.

Per slice, each limb (limbs.py: a body component, with touching limbs and body parts cut apart) gets a
centre (the mean of its muscle core and bone). The outermost muscle-core or bone pixel in each 1° sector
around that centre gives the envelope's radius as a function of angle; a 5-sector median drops one-sector
outliers (a vessel, a strand at the fascia), and the convex hull of those points is the first envelope. Where
the hull bridges a gap in the muscle, the radius is interpolated linearly in angle between the gap's edges when
that lies further out (an arc, as a round limb's fascia runs, rather than a chord).

Across a gap (sectors where the muscle is not the envelope: bone, fat between muscle groups, a fatty region or
fat pad reaching the fascia) the fascia lies at the SAT depth of the gap's sides, interpolated along the skin,
unless a soft-tissue line (the fascia itself) shows first beyond the hull: the envelope reaches out to
whichever is nearer, never inside the hull. Gaps wider than MAX_GAP_SECTORS (a limb that is mostly fat or
bone, as at the knee and ankle) keep the hull: the sides' SAT depth says little that far away. Where the limb
rests on the table (its skin flat against the band), the envelope is at most that SAT depth below the flat skin.
The envelope does not depend on the inside being muscle: deep fat pads, fatty muscle and fat between muscle
groups that reaches the surface all stay inside it, where a closing of the muscle mask would open up.

Along z, a limb's envelope is the per-angle interquartile mean (the median for four slices or fewer) of the
envelopes of the same limb (nearest centre) in the slices within ±Z_REACH_MM, each measured from this slice's
centre: it changes smoothly between slices, and a change in anatomy becomes a ramp rather than a step.
"""
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

SECTORS = 360
ANGLE = (np.arange(SECTORS) + 0.5) * (2 * np.pi / SECTORS) - np.pi     # each sector's mid-angle
OUTLIER_SECTORS = 5
Z_REACH_MM = 10.0             # ±3 slices at 3.3 mm: where body parts merge for two slices (the groin) their
                              # envelopes weigh little (STS_038: SAT jump 35 % at ±7 mm, 17 % at ±10 mm)
MAX_Z_NEIGHBOURS = 4          # per side
MATCH_MM = 30.0               # the same limb's centre moves less than this between neighbouring slices
EDGE_DEPTH = 2                # pixels: where a wedge's outermost pixel lies (wedges narrower than a pixel)
SKIN_MARGIN = 1.0
CONTACT_SECTORS = 21
LINE_GAP = 2                  # pixels beyond the hull before a soft-tissue line counts as the fascia (partial
                              # volume at a bone or muscle edge is soft-tissue HU too)
MAX_GAP_SECTORS = 90          # wider gaps keep the hull (a limb mostly fat or bone)


class CoreRadii(NamedTuple):
    """Per slice and limb (arrays indexed [z, limb], radius by row z * n + limb): the core's pixel count, its
    centre and its outermost radius per sector."""
    n: int
    size: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    radius: np.ndarray


def core_radii(core, limbs, counts):
    """Centres come from row and column counts; the outermost pixel per sector is sought among each limb's
    pixels near its edge only (a pixel deeper inside has one further out in the same wedge), and a 5-sector
    median drops one-sector outliers."""
    held = np.where(core, limbs, np.uint16(0))
    n = int(counts.max()) + 1
    size, cy, cx = centres(held, n)
    radius = ndimage.median_filter(outermost(held, cy, cx, n), size=(1, OUTLIER_SECTORS), mode="wrap")
    return CoreRadii(n, size, cy, cx, radius)


def hulls(radii, bone, lines, limbs, counts, on_table=None):
    """Per slice, a list (one per limb) of (centre yx, envelope outline) or None where a limb has no envelope.
    radii: core_radii of the muscle groups and bone; bone: the bone in it; lines: soft-tissue pixels outside
    the core (fascia, strands, vessels, skin)."""
    n, size, cy, cx, radius = radii
    bone_radius = ndimage.median_filter(outermost(np.where(bone, limbs, np.uint16(0)), cy, cx, n, depth=None),
                                        size=(1, OUTLIER_SECTORS), mode="wrap")
    muscle_edge = radius > bone_radius + 0.5              # the outermost core pixel is muscle, not bone
    skin = ndimage.maximum_filter1d(outermost(limbs, cy, cx, n, 1), 3, axis=1, mode="wrap")   # no empty sectors
    contact = np.zeros(skin.shape, bool)
    if on_table is not None and on_table.any():
        touching = ndimage.maximum_filter1d(outermost(np.where(on_table, limbs, np.uint16(0)), cy, cx, n, 1),
                                            3, axis=1, mode="wrap")
        contact = ndimage.maximum_filter1d((touching > 0) & (touching >= skin - 1), CONTACT_SECTORS, axis=1,
                                           mode="wrap")
    candidates = _line_candidates(np.where(lines, limbs, np.uint16(0)), cy, cx, n, radius, skin)
    return [[_hull(cy[zi, limb], cx[zi, limb],
                   *(a[zi * n + limb] for a in (radius, muscle_edge, skin, contact)), candidates.get(zi * n + limb))
             if size[zi, limb] >= 3 else None
             for limb in range(1, counts[zi] + 1)] for zi in range(limbs.shape[0])]


def centres(held, n):
    """Per slice and limb (columns 0..n-1): pixel count and mean row and column of held == limb."""
    size, cy, cx = np.zeros((3, held.shape[0], n))
    for limb in range(1, n):
        mine = held == limb
        rows, columns = np.count_nonzero(mine, axis=2), np.count_nonzero(mine, axis=1)
        size[:, limb] = rows.sum(axis=1)
        cy[:, limb] = rows @ np.arange(rows.shape[1]) / np.maximum(size[:, limb], 1)
        cx[:, limb] = columns @ np.arange(columns.shape[1]) / np.maximum(size[:, limb], 1)
    return size, cy, cx


def polar(held, cy, cx, n):
    """For each set pixel: its row key (z * n + limb), 1° sector and distance from its limb's centre."""
    z, y, x = np.nonzero(held)
    key = z * n + held[z, y, x]
    dy, dx = y - cy.ravel()[key], x - cx.ravel()[key]
    sector = ((np.arctan2(dy, dx) + np.pi) * (SECTORS / (2 * np.pi))).astype(np.int64) % SECTORS
    return key, sector, np.hypot(dy, dx).astype(np.float32)


def _line_candidates(held, cy, cx, n, radius, skin):
    """Per row key, (sector, distance) of the soft-tissue pixels between the core (+ LINE_GAP) and the skin:
    those that could be the fascia beyond the hull (the skin itself and anything deeper cannot)."""
    key, sector, r = polar(held, cy, cx, n)
    flat_index = key * SECTORS + sector
    between = (r > radius.ravel()[flat_index] + LINE_GAP) & (r < skin.ravel()[flat_index] - 1)
    key, sector, r = key[between], sector[between], r[between]
    order = np.argsort(key, kind="stable")
    key, sector, r = key[order], sector[order], r[order]
    starts = np.flatnonzero(np.diff(key, prepend=-1))
    ends = np.append(starts[1:], key.size)
    return {int(key[a]): (sector[a:b], r[a:b]) for a, b in zip(starts, ends)}


def outermost(held, cy, cx, n, depth=EDGE_DEPTH):
    """Per slice and limb (rows z * n + limb), the largest distance from the limb's centre of its pixels in
    held, per 1° sector (0 where none); among those near its edge only, unless depth is None (small masks)."""
    key, sector, r = polar(held if depth is None else edge_pixels(held, depth) * held, cy, cx, n)
    radius = np.zeros(cy.size * SECTORS, np.float32)
    np.maximum.at(radius, key * SECTORS + sector, r)
    return radius.reshape(cy.size, SECTORS)


def edge_pixels(held, depth=EDGE_DEPTH):
    """Set pixels within depth 4-neighbour steps of a pixel of another value (or of the array's border)."""
    inner = held > 0
    for _ in range(depth):
        padded = np.pad(held * inner, ((0, 0), (1, 1), (1, 1)))
        centre = padded[:, 1:-1, 1:-1]
        inner = ((padded[:, :-2, 1:-1] == centre) & (padded[:, 2:, 1:-1] == centre)
                 & (padded[:, 1:-1, :-2] == centre) & (padded[:, 1:-1, 2:] == centre) & inner)
    return (held > 0) & ~inner


def _hull(cy, cx, radius, muscle_edge, skin, contact, candidates):
    """Envelope outline (SECTORS × 2 points, y x) around centre (cy, cx) from the outermost core radius per
    sector (see the module docstring)."""
    envelope = hull_radius(radius)
    if envelope is None:
        return None
    kept = (radius > 0) & (envelope <= radius + 1)      # sectors where the core itself is the envelope
    if kept.sum() >= 3:
        envelope = np.maximum(envelope, np.interp(ANGLE, ANGLE[kept], radius[kept], period=2 * np.pi))
    sides = kept & muscle_edge                          # where the muscle is the fascia: the SAT depth is known
    if sides.sum() >= 3:
        sat = np.interp(ANGLE, ANGLE[sides], skin[sides] - radius[sides], period=2 * np.pi)
        below_skin = np.maximum(skin - sat + SKIN_MARGIN, radius)
        reach = np.minimum(_first_line(candidates, envelope + LINE_GAP) + 1, below_skin)
        gap = ~sides & ~_wide_runs(~sides, MAX_GAP_SECTORS)
        envelope = np.where(gap, np.maximum(envelope, reach), envelope)
        envelope = np.where(contact, np.clip(envelope, radius, below_skin), envelope)   # flat skin on the table
    return np.array([cy, cx]), np.column_stack([cy + envelope * np.sin(ANGLE), cx + envelope * np.cos(ANGLE)])


def hull_radius(radius):
    """Radius per sector of the convex hull of the centre and the points at radius (per sector's mid-angle), or
    None where they span no area."""
    present = radius > 0
    points = np.column_stack([radius[present] * np.sin(ANGLE[present]), radius[present] * np.cos(ANGLE[present])])
    try:
        hull = ConvexHull(np.vstack([points, [[0.0, 0.0]]]))
    except (QhullError, ValueError):
        return None
    return _polygon_radius(hull.points[hull.vertices], ANGLE)


def _first_line(candidates, start):
    """Per sector, the distance of the nearest candidate pixel beyond start (inf where none), 5-sector median."""
    nearest = np.full(SECTORS, np.inf, np.float32)
    if candidates is not None:
        sector, r = candidates
        beyond = r > start[sector]
        np.minimum.at(nearest, sector[beyond], r[beyond])
    return ndimage.median_filter(nearest, OUTLIER_SECTORS, mode="wrap")


def _wide_runs(mask, max_length):
    """Sectors in a circular run of set sectors longer than max_length."""
    if mask.all():
        return mask
    shift = int(np.argmin(mask))                        # start the circle at an unset sector
    runs, _ = ndimage.label(np.roll(mask, -shift))
    lengths = np.bincount(runs)
    lengths[0] = 0
    return np.roll(lengths[runs] > max_length, shift)


def _polygon_radius(vertices, angle):
    """Distance from the origin to a convex polygon's edge (vertices y x around the origin) along each angle:
    the edge between the two vertices that bracket the angle. 0 everywhere if the origin is a vertex."""
    if (np.abs(vertices).sum(axis=1) < 1e-9).any():
        return np.zeros(angle.shape)
    vertex_angle = np.arctan2(vertices[:, 0], vertices[:, 1])
    order = np.argsort(vertex_angle)
    vertex_angle, vertices = vertex_angle[order], vertices[order]
    after = np.searchsorted(vertex_angle, angle) % len(vertices)
    start = vertices[after - 1]
    edge = vertices[after] - start
    ray_y, ray_x = np.sin(angle), np.cos(angle)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (start[:, 0] * edge[:, 1] - start[:, 1] * edge[:, 0]) / (ray_y * edge[:, 1] - ray_x * edge[:, 0])


def outline_radius(centre, outline):
    """Radius of a closed outline (points y x, star-shaped about centre) at each sector's mid-angle."""
    dy, dx = outline[:, 0] - centre[0], outline[:, 1] - centre[1]
    return np.interp(ANGLE, np.arctan2(dy, dx), np.hypot(dy, dx), period=2 * np.pi)


def envelope_profiles(all_hulls, slice_mm, px):
    """Per slice and limb: (centre, radius per sector), the interquartile mean over neighbouring slices, or None.
    Centres and radii are in pixels of size px mm."""
    reach = int(min(MAX_Z_NEIGHBOURS, round(Z_REACH_MM / slice_mm)))
    profiles = []
    for z, slice_hulls in enumerate(all_hulls):
        out = []
        for limb in slice_hulls:
            if limb is None:
                out.append(None)
                continue
            centre = limb[0]
            stack = [outline_radius(centre, limb[1])]
            for other in range(max(0, z - reach), min(len(all_hulls), z + reach + 1)):
                if other != z:
                    match = _nearest(all_hulls[other], centre, MATCH_MM / px)
                    if match is not None:
                        stack.append(outline_radius(centre, match[1]))
            out.append((centre, interquartile_mean(np.stack(stack))))
        profiles.append(out)
    return profiles


def interquartile_mean(stack):
    """Per column, the mean of the middle values (a quarter dropped at each end; the median for four rows or
    fewer): robust to an outlier slice, and a ramp rather than a step where the anatomy changes."""
    if len(stack) <= 4:
        return np.median(stack, axis=0)
    drop = len(stack) // 4
    return np.sort(stack, axis=0)[drop:len(stack) - drop].mean(axis=0)


def _nearest(slice_hulls, centre, max_distance):
    candidates = [h for h in slice_hulls if h is not None]
    if not candidates:
        return None
    distance = [np.hypot(*(h[0] - centre)) for h in candidates]
    best = int(np.argmin(distance))
    return candidates[best] if distance[best] <= max_distance else None


def inside(limbs, profiles, offset=(0.0, 0.0)):
    """Pixels of each limb within its envelope (limbs: local limb index per pixel of a slab; profiles: per slice
    and limb (centre, radius) in a frame where this array starts at offset). Each envelope is tested only in
    its own bounding box, on dense rows and columns (no per-pixel gathers)."""
    result = np.zeros(limbs.shape, bool)
    for z, slice_profiles in enumerate(profiles):
        for limb, profile in enumerate(slice_profiles, start=1):
            if profile is not None:
                _inside_envelope(result[z], limbs[z], limb, profile[0] - offset, profile[1])
    return result


def _inside_envelope(out, limbs, limb, centre, radius):
    """Set out where limbs == limb within radius (per sector, linear between sector mid-angles) of centre."""
    reach = float(radius.max()) + 1
    y0, x0 = np.maximum(np.floor(centre - reach), 0).astype(int)
    y1, x1 = np.ceil(centre + reach).astype(int)
    dy = (np.arange(y0, min(y1, out.shape[0])) - centre[0]).astype(np.float32)[:, None]
    dx = (np.arange(x0, min(x1, out.shape[1])) - centre[1]).astype(np.float32)[None, :]
    position = np.arctan2(dy, dx) * np.float32(SECTORS / (2 * np.pi)) + np.float32(SECTORS / 2 - 0.5)
    lower = np.floor(position)
    frac = position - lower
    ring = np.concatenate([radius[-1:], radius, radius[:1]]).astype(np.float32)   # sector -1 .. SECTORS
    below = lower.astype(np.intp) + 1
    envelope = ring[below] + frac * (ring[below + 1] - ring[below])
    window = (slice(y0, y0 + dy.shape[0]), slice(x0, x0 + dx.shape[1]))
    out[window] |= (limbs[window] == limb) & (dy * dy + dx * dx <= envelope * np.abs(envelope))   # signed square
