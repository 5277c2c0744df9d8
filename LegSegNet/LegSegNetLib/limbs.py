"""Limbs for the classical engine: which body pixels belong to which limb, per slice.

A limb is a body component. Two legs that touch are cut apart at the valley of the body's column profile and
across columns that hold no muscle or bone between columns that hold a leg's core (the fat where their skins
meet). A leg's core holds its bone, or the field of view cuts it; a muscle island inside a fatty region holds
neither, so the fat beside it stays inside its limb. A narrow run of such columns in a limb that the field of
view cuts is a fat plane between muscle groups, and does not split it either.

The fascia never encloses air. Where the convex hull of a limb's muscle and bone encloses skin that borders the
air around the body (deeper than AIR_DEPTH_MM), the limb holds another body part lying against it (the
genitals beside a thigh, the other leg touching at one place): its muscle pieces (cut apart where they meet
through a thin neck, skin on skin) are gathered, largest first, into parts whose hulls enclose no such skin,
and each of the limb's pixels goes to the nearest part. Gas inside the body is not air around it.
"""
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from .compartment import OUTLIER_SECTORS, SECTORS, core_radii, edge_pixels, hull_radius, polar
from .masks import IN_PLANE, array_edges, fill_holes, next_to

MIN_LEG_SEPARATION_MM = 50
MIN_GAP_MM = 5.0              # fat between two touching limbs' muscle: two layers of SAT and skin
MAX_VALLEY = 0.6              # valley of the column profile relative to the smaller peak: two touching legs
AIR_DEPTH_MM = 8.0            # skin this deep inside a hull lies between two body parts; a limb's own concave
                              # outline (the ankle) dips less
MIN_PART_MM2 = 300            # muscle (or a testis) that can stand apart; smaller pieces go with the nearest
NECK_PX = 3                   # muscle joined by skin touching skin is this thin where the parts meet
MAX_LIMBS = 31                # limb numbers are kept in 5 bits (classical.py)
FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
ROW = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]])


def touching_split(body, px):
    """Per slice, the column where two touching legs meet, or -1 where the column profile has no such valley."""
    profile = ndimage.uniform_filter1d(body.sum(axis=1).astype(np.float32), max(1, int(round(5 / px))), axis=1)
    columns = np.arange(profile.shape[1])
    first = profile.argmax(axis=1)
    far = np.abs(columns[None] - first[:, None]) * px >= MIN_LEG_SEPARATION_MM
    second = np.where(far, profile, -1).argmax(axis=1)
    rows = np.arange(profile.shape[0])
    lo, hi = np.minimum(first, second), np.maximum(first, second)
    between = (columns[None] > lo[:, None]) & (columns[None] < hi[:, None])
    valley_profile = np.where(between, profile, np.inf)
    valley = valley_profile.argmin(axis=1)
    peak2 = profile[rows, second]
    valley_value = valley_profile[rows, valley]
    touching = far[rows, second] & (peak2 > 0) & (valley_value > 0) & (valley_value <= MAX_VALLEY * peak2)
    return np.where(touching, valley, -1)


def muscle_gaps(core, bone, body, px):
    """Per slice, columns with body but no muscle or bone between columns that hold a leg's core (a piece of core
    with bone in it, or cut by the field of view): the fat where two limbs touch (within a whole limb, muscle and
    bone span every column). A muscle island in a fatty region is no leg's core: the fat beside it stays in its
    limb. A run narrower than MIN_GAP_MM whose body the field of view cuts (it reaches the first or last row)
    does not count: that is a fat plane between muscle groups crossing all that is left of a limb; two skins
    with their fat are wider, or meet in air."""
    has_core = core.any(axis=1)
    gaps = ~has_core & body.any(axis=1) & _between(has_core)
    runs, n = ndimage.label(gaps, ROW)
    narrow = np.bincount(runs.ravel(), minlength=n + 1) < MIN_GAP_MM / px
    gaps &= ~(narrow[runs] & (body[:, 0] | body[:, -1]))
    some = np.flatnonzero(gaps.any(axis=1))           # the pieces are labelled in slices with a gap only
    if some.size:
        gaps[some] &= _between(leg_cores(core[some], bone[some]).any(axis=1))
    return gaps


def leg_cores(core, bone):
    """The pieces of core (in-plane components) that hold bone or reach the array's edge (the body's box: the
    field of view cuts them)."""
    pieces, n = ndimage.label(core, IN_PLANE)
    keep = np.zeros(n + 1, bool)
    for held in (pieces[bone],) + array_edges(pieces):
        keep[held] = True
    keep[0] = False
    return keep[pieces]


def _between(has):
    """Per row of has (slices × columns), the columns strictly between its first and last set column."""
    first = has.argmax(axis=1)
    last = has.shape[1] - 1 - has[:, ::-1].argmax(axis=1)
    columns = np.arange(has.shape[1])[None]
    return (columns > first[:, None]) & (columns < last[:, None])


def limb_components(body, core, bone, px):
    """Limb index per pixel (0 = none) numbered from 1 within each slice, and the number of limbs per slice.
    Touching limbs are cut at the valley of the body's column profile and across columns without muscle between
    two legs' cores."""
    cut = body.copy()
    split = touching_split(body, px)
    for z in np.flatnonzero(split >= 0):
        cut[z, :, split[z]] = False
    cut &= ~muscle_gaps(core, bone, body, px)[:, None, :]
    components, _ = ndimage.label(cut, np.stack([np.zeros_like(FOUR), FOUR, np.zeros_like(FOUR)]))
    # components never span slices and are numbered in scan order, so slice z holds the numbers after the
    # highest number of the slices before it
    last = np.maximum.accumulate(components.max(axis=(1, 2)))
    before = np.concatenate([[0], last[:-1]])
    counts = last - before
    local = np.where(components > 0, components - before[:, None, None], 0).astype(np.uint16)
    return local, counts


def split_across_air(limbs, counts, core, body, next_to_air, px):
    """limbs, counts (changed in place) and their core_radii, with each limb whose muscle and bone's convex hull
    encloses skin that borders air (deeper than AIR_DEPTH_MM, in at least OUTLIER_SECTORS sectors seen from its
    centre) split into parts that enclose none. next_to_air (any air, cheap) finds the candidates; the parts are
    judged on the skin beside the air around the body only, not beside gas inside it."""
    radii = core_radii(core, limbs, counts)
    n, depth = radii.n, AIR_DEPTH_MM / px
    air = ndimage.median_filter(innermost(np.where(next_to_air, limbs, np.uint16(0)), radii.cy, radii.cx, n),
                                size=(1, OUTLIER_SECTORS), mode="wrap")
    # the hull is nowhere beyond the outermost core pixel: most limbs need no hull to rule this out
    maybe = np.count_nonzero(air < radii.radius.max(axis=1, keepdims=True) - depth, axis=1) >= OUTLIER_SECTORS
    split = False
    for z, limb in zip(*np.divmod(np.flatnonzero(maybe), n)):
        if not 0 < limb <= counts[z] or radii.size[z, limb] < 3:
            continue
        hull = hull_radius(radii.radius[z * n + limb])
        if hull is None or np.count_nonzero(air[z * n + limb] < hull - depth) < OUTLIER_SECTORS:
            continue
        mine = limbs[z] == limb
        skin = mine & next_to(~fill_holes(body[z:z + 1]))[0]
        parts = _parts_apart(core[z] & mine, skin, MIN_PART_MM2 / (px * px), depth)
        if parts.max() > 1:
            counts[z] = _assign_to_parts(limbs[z], mine, parts, limb, counts[z])
            split = True
    return limbs, counts, core_radii(core, limbs, counts) if split else radii


def innermost(held, cy, cx, n):
    """Per slice and limb (rows z * n + limb), the smallest distance from the limb's centre of its pixels in
    held, per 1° sector (inf where none)."""
    key, sector, r = polar(held, cy, cx, n)
    radius = np.full(cy.size * SECTORS, np.inf, np.float32)
    np.minimum.at(radius, key * SECTORS + sector, r)
    return radius.reshape(cy.size, SECTORS)


def _parts_apart(core, skin, min_pixels, depth):
    """Part number per pixel of core (one slice; 0 for pieces under min_pixels, which go with the nearest part):
    its pieces, largest first, gathered greedily into parts whose convex hull encloses no skin deeper than depth."""
    pieces, count = _pieces(core)
    sizes = np.bincount(pieces.ravel(), minlength=count + 1)
    edge = edge_pixels(pieces[None], 1)[0]
    points = [np.argwhere(edge & (pieces == number)).astype(float) for number in range(1, count + 1)]
    skin_points = np.argwhere(skin).astype(float)
    part_of = np.zeros(count + 1, np.int32)
    left = [i for i in np.argsort(-sizes[1:]) if sizes[i + 1] >= min_pixels]
    part = 0
    while left:
        part += 1
        first = left.pop(0)
        gathered, part_of[first + 1] = points[first], part
        for piece in list(left):
            joined = np.vstack([gathered, points[piece]])
            if not _encloses(joined, skin_points, depth):
                gathered, part_of[piece + 1] = joined, part
                left.remove(piece)
    return part_of[pieces]


def _pieces(core):
    """core's pieces, numbered, and their count: the pieces that stay apart once the core is eroded by NECK_PX
    (a neck where skin touches skin is cut), each grown back over the core pixels nearest to it."""
    seeds, count = ndimage.label(ndimage.binary_erosion(core, FOUR, NECK_PX), FOUR)
    if count == 0:
        return seeds, 0
    _, (rows, columns) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    return np.where(core, seeds[rows, columns], 0), count


def _encloses(points, skin_points, depth):
    """Whether the convex hull of points holds at least three skin points deeper than depth inside it."""
    try:
        facets = ConvexHull(points).equations
    except (QhullError, ValueError):
        return False
    inside = -(skin_points @ facets[:, :2].T + facets[:, 2]).max(axis=1)
    return np.count_nonzero(inside > depth) >= 3


def _assign_to_parts(limbs, mine, parts, limb, count):
    """Give each pixel of limb (mine) the number of its nearest part: the first keeps limb, the others get new
    numbers after count (up to MAX_LIMBS). Returns the new count."""
    _, (rows, columns) = ndimage.distance_transform_edt(parts == 0, return_indices=True)
    nearest = parts[rows, columns]
    numbers = np.concatenate([[0, limb], count + np.arange(1, parts.max())])
    numbers = np.minimum(numbers, MAX_LIMBS)
    limbs[mine] = numbers[nearest[mine]]
    return int(min(count + parts.max() - 1, MAX_LIMBS))
