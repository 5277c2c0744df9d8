"""Synthetic two-leg CT phantom with exact ground truth (labels and leg sides).

Built slab by slab in the canonical axial frame (see volumes.AxialView) in millimetres, then stored on a grid
with the requested direction, so the truth is exact for any orientation.

Keyword options make harder phantoms (all off by default, so the default phantom stays as it was):
  vary           draws SAT thickness, septa count and width, tissue HU, partial volume (blur) and noise level
                 and texture (spatially correlated noise) from the seed, so no one setting can be fitted
  anatomy        deep fat with exact truth: a fat pad filling the back of the knee inside the fascia, a large
                 fatty region inside a muscle group, and fat between two muscle groups open to the SAT
                 (no fascia) in one spot; their masks are returned in Phantom.features
  table_contact  the legs rest on a dense table with no air gap (their backs flattened against it)
  septa=False    no fat septa between the muscle groups (the same draw otherwise): IMAT is only fat blobs inside
                 the muscle, where a per-slice reference that fills the holes in the muscle does well
"""
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .tissues import BY_SHORT, SIDE_LABELS
from .volumes import AxialView

HU = {"air": -1000, "skin": 45, "sat": -105, "muscle": 55, "fascia": 40, "imat": -85,
      "cortex": 1150, "marrow": -40, "table": 350}
SAT, SM, IMAT, BONE = (BY_SHORT[s].label for s in ("SAT", "SM", "IMAT", "Bone"))
RAS_FLIPPED = (-1, 0, 0, 0, -1, 0, 0, 0, 1)


@dataclass
class Phantom:
    ct: sitk.Image       # int16 HU
    truth: sitk.Image    # uint8 tissue labels
    sides: sitk.Image    # uint8 leg ownership (tissues.SIDE_LABELS)
    features: dict = None   # anatomy=True: feature name -> uint8 mask image (truth is IMAT inside it)


def make_phantom(seed=0, shape=(32, 224, 288), spacing=(5.0, 1.25, 1.25), noise=15.0, blur=0.6,
                 direction=RAS_FLIPPED, touching=False, left_sat_scale=1.0, slab=16,
                 vary=False, anatomy=False, table_contact=False, septa=True):
    """shape and spacing are canonical (z: inferior→superior, y: anterior→posterior, x: right→left).

    left_sat_scale thickens the left leg's SAT so tests can tell the legs apart.
    """
    rng = np.random.default_rng(seed)
    draw = _draw(np.random.default_rng([seed, 1]), noise, blur) if vary else None
    if draw is not None:
        noise, blur = draw["noise"], draw["blur"]
    nz, ny, nx = shape
    sz, sy, sx = spacing
    fov_x = nx * sx
    scale = fov_x / 360.0                     # the default field of view holds two thighs
    legs = [_leg(rng, side, nz, sz, scale, touching, left_sat_scale if side == "left" else 1.0, fov_x, ny * sy,
                 draw, anatomy) for side in ("right", "left")]
    if not septa:                              # drawn and dropped, so the rest of the draw stays the same
        for leg in legs:
            leg["septa"] = leg["septum_width"] = np.zeros(0)
    table_y = ny * sy * 0.5 + 95 * scale       # posterior to both legs, below the widest thigh
    if table_contact:                          # table top where the knees' backs are: the thighs flatten on it
        table_y = ny * sy * 0.5 + 48 * scale
    hu_of = dict(HU, **draw["hu"]) if draw else HU
    labels = np.zeros(shape, np.uint8)
    sides = np.zeros(shape, np.uint8)
    features = {name: np.zeros(shape, np.uint8) for name in FEATURES} if anatomy else {}
    hu = np.empty(shape, np.float32)
    y = (np.arange(ny) + 0.5) * sy
    x = (np.arange(nx) + 0.5) * sx
    for z0 in range(0, nz, slab):
        z = (np.arange(z0, min(nz, z0 + slab)) + 0.5) * sz
        part = {name: mask[z0:z0 + len(z)] for name, mask in features.items()}
        lab, side, val = _slab(legs, z, y, x, table_y, fov_x, scale, hu_of, table_contact, part)
        labels[z0:z0 + len(z)], sides[z0:z0 + len(z)], hu[z0:z0 + len(z)] = lab, side, val
    if blur > 0:   # partial volume: in-plane blur of the ideal image
        hu = ndimage.gaussian_filter(hu, (0, blur, blur), output=np.float32)
    hu += _noise(rng, shape, noise, draw["noise_grain"] if draw else 0.0)
    ct = np.clip(np.round(hu), -1024, 3071).astype(np.int16)

    reference = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    reference.SetDirection(direction)
    view = AxialView.of(reference)
    index_spacing = [0.0] * 3
    for canonical_axis, numpy_axis in enumerate(view.perm):
        index_spacing[2 - numpy_axis] = spacing[canonical_axis]

    def image(array):
        img = sitk.GetImageFromArray(np.ascontiguousarray(view.from_canonical(array)))
        img.SetSpacing(index_spacing)
        img.SetDirection(direction)
        img.SetOrigin((0.0, 0.0, 0.0))
        centre = img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()])
        img.SetOrigin([-c for c in centre])        # centred on the scanner axis, like a real scan
        return img
    return Phantom(image(ct), image(labels), image(sides),
                   {name: image(mask) for name, mask in features.items()} if anatomy else None)


FEATURES = ("knee_fat_pad", "fatty_muscle", "open_septum")


def _draw(rng, noise, blur):
    """Scan and body settings for vary=True (see make_phantom)."""
    return {"noise": rng.uniform(8, 30), "blur": rng.uniform(0.3, 0.8), "noise_grain": rng.uniform(0, 1.5),
            "sat_scale": rng.uniform(0.4, 1.8, 2), "n_septa": rng.integers(2, 8, 2),
            "septum_width": (rng.uniform(1.5, 2.5), rng.uniform(3.0, 5.0)),
            "hu": {"sat": rng.uniform(-125, -85), "imat": rng.uniform(-110, -70), "muscle": rng.uniform(38, 65),
                   "table": rng.uniform(250, 900)}}


def _noise(rng, shape, sd, grain):
    """Gaussian noise of standard deviation sd; grain > 0 (pixels) correlates it in-plane like real CT texture."""
    if sd <= 0:
        return 0
    noise = rng.normal(0, 1, shape).astype(np.float32)
    if grain > 0:
        noise = ndimage.gaussian_filter(noise, (0, grain, grain), output=np.float32)
        noise /= max(float(noise.std()), 1e-6)
    return sd * noise


def _leg(rng, side, nz, sz, scale, touching, sat_scale, fov_x, fov_y, draw=None, anatomy=False):
    length = nz * sz
    radius_knee, radius_thigh = 52 * scale, 72 * scale
    gap = -6 * scale if touching else 14 * scale
    centre_x = fov_x / 2 + (radius_thigh + gap / 2) * (1 if side == "left" else -1)
    i = 0 if side == "right" else 1
    n_septa = int(draw["n_septa"][i]) if draw else 4
    septum_width = draw["septum_width"] if draw else (1.8, 3.2)
    sat_scale = sat_scale * (draw["sat_scale"][i] if draw else 1.0)
    leg = {
        "side": side, "cx": centre_x, "cy": fov_y * 0.5, "length": length,
        "r": (radius_knee, radius_thigh),
        "shape": rng.uniform(0, 2 * np.pi, 2),
        "sat": np.array((5.0, 11.0)) * scale * sat_scale,
        "bone_offset": np.array((-14.0, 6.0 if side == "left" else -6.0)) * scale,   # anterior, medial
        "bone_r": (22 * scale, 13 * scale), "cortex": (2.0 * scale, 5.0 * scale),
        "septa": np.sort(rng.uniform(0, 2 * np.pi, n_septa)),
        "septum_width": rng.uniform(*septum_width, n_septa) * scale,
        "blobs": [(rng.uniform(0.45, 0.9), rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.9) * length,
                   rng.uniform(2.0, 5.0) * scale, rng.uniform(10, 40)) for _ in range(10)],
    }
    if anatomy:
        medial = 0.0 if side == "left" else np.pi          # +x points to the patient's left
        leg["knee_pad"] = (rng.uniform(0.25, 0.45), rng.uniform(0.45, 0.75))   # z extent (fraction), half-angle
        leg["fatty"] = (rng.uniform(-0.9, 0.9) - np.pi / 2, rng.uniform(0.2, 0.3), rng.uniform(0.3, 0.7))
        leg["open"] = (medial + rng.uniform(-0.6, 0.6), rng.uniform(8, 14) * scale)   # angle, width at fascia
    return leg


def _slab(legs, z, y, x, table_y, fov_x, scale, hu_of=HU, table_contact=False, features=None):
    Z, Y, X = z[:, None, None], y[None, :, None], x[None, None, :]
    rho_all, fields = [], []
    for leg in legs:
        t = Z / leg["length"]                             # 0 at the knee, 1 at mid-thigh
        dy, dx = Y - leg["cy"], X - leg["cx"]
        r = np.hypot(dy, dx)
        theta = np.arctan2(dy, dx)
        wobble = 1 + 0.06 * np.sin(2 * theta + leg["shape"][0]) + 0.04 * np.cos(3 * theta + leg["shape"][1])
        outer = (leg["r"][0] + (leg["r"][1] - leg["r"][0]) * t) * wobble
        rho_all.append(r / outer)
        fields.append((t, dy, dx, r, theta, outer))
    owner = np.argmin(np.stack(rho_all), axis=0)       # legs that touch meet where their shapes meet
    bend = ((X - fov_x / 2) / fov_x) ** 2 * 40 * scale
    table_top = table_y - bend - 2.5 * scale
    labels = np.zeros(np.broadcast_shapes(Z.shape, Y.shape, X.shape), np.uint8)
    sides = np.zeros_like(labels)
    hu = np.full(labels.shape, hu_of["air"], np.float32)
    for i, (leg, (t, dy, dx, r, theta, outer)) in enumerate(zip(legs, fields)):
        mine = owner == i
        depth = outer - r                                 # mm below the skin surface
        if table_contact:                                 # the back rests flat on the table
            depth = np.minimum(depth, table_top - Y)
        sat = leg["sat"][0] + leg["sat"][1] * (0.5 + 0.5 * np.sin(theta + leg["shape"][0])) ** 2
        skin = 1.8 * scale
        compartment = depth >= skin + sat
        body = mine & (depth >= 0)
        sides[body] = SIDE_LABELS[leg["side"]]
        _put(labels, hu, body & (depth < skin), 0, hu_of["skin"])
        _put(labels, hu, body & (depth >= skin) & ~compartment, SAT, hu_of["sat"])
        _put(labels, hu, mine & compartment & (depth < skin + sat + 1.2 * scale), SM, hu_of["fascia"])
        inner = mine & (depth >= skin + sat + 1.2 * scale)
        _put(labels, hu, inner, SM, hu_of["muscle"])
        # intermuscular septa: fat streaks running from the bone out to the fascia
        for angle, width in zip(leg["septa"], leg["septum_width"]):
            across = np.abs(np.sin(theta - angle - 0.3 * t)) * r
            along = np.cos(theta - angle - 0.3 * t) > 0
            _put(labels, hu, inner & along & (across < width / 2) & (r > 0.3 * outer), IMAT, hu_of["imat"])
        # intramuscular fat blobs
        for frac, angle, zc, size, zlen in leg["blobs"]:
            by = 0.75 * outer * frac * np.sin(angle)
            bx = 0.75 * outer * frac * np.cos(angle)
            d2 = ((dy - by) / size) ** 2 + ((dx - bx) / (1.6 * size)) ** 2 + ((Z - zc) / zlen) ** 2
            _put(labels, hu, inner & (d2 < 1), IMAT, hu_of["imat"])
        if "knee_pad" in leg:
            _deep_fat(leg, labels, hu, features, mine, compartment, inner, t, dy, dx, r, theta, outer, hu_of)
        # bone: cortex ring with fatty marrow; wide and thin-walled at the knee
        bone_r = leg["bone_r"][0] + (leg["bone_r"][1] - leg["bone_r"][0]) * np.sqrt(t)
        cortex = leg["cortex"][0] + (leg["cortex"][1] - leg["cortex"][0]) * t
        rb = np.hypot(dy - leg["bone_offset"][0], (dx - leg["bone_offset"][1]) / 1.1)
        _put(labels, hu, mine & (rb < bone_r), BONE, hu_of["cortex"])
        _put(labels, hu, mine & (rb < bone_r - cortex), BONE, hu_of["marrow"])
    # CT table: a curved plate under the legs, not part of the patient
    plate = np.abs(Y - (table_y - bend)) < 2.5 * scale
    plate = np.broadcast_to(plate, labels.shape) & (labels == 0) & (sides == 0)
    hu[plate] = hu_of["table"]
    return labels, sides, hu


def _deep_fat(leg, labels, hu, features, mine, compartment, inner, t, dy, dx, r, theta, outer, hu_of):
    """Fat inside the fascia that a closing of the muscle cannot enclose; truth IMAT, masks in features."""
    z_end, half_angle = leg["knee_pad"]
    # popliteal fat pad: the back of the knee from the bone to the fascia, narrowing towards the thigh
    off = np.angle(np.exp(1j * (theta - np.pi / 2)))
    pad = inner & (np.abs(off) < half_angle * (1 - t / z_end)) & (r > 0.3 * outer)
    # fatty region replacing most of one muscle group, reaching its fascia
    angle, size, z_centre = leg["fatty"]
    cy, cx = 0.72 * outer * np.sin(angle), 0.72 * outer * np.cos(angle)
    fatty = inner & ((dy - cy) ** 2 + (dx - cx) ** 2 < (size * outer) ** 2) & (np.abs(t - z_centre) < 0.25)
    # fat between two muscle groups that widens to the surface, with no fascia over it
    angle, width = leg["open"]
    across = np.abs(np.sin(theta - angle)) * r
    gap = mine & compartment & (np.cos(theta - angle) > 0) & (across < width * np.clip(r / outer, 0.2, 1) / 2) \
        & (r > 0.4 * outer)
    for name, where in (("knee_fat_pad", pad), ("fatty_muscle", fatty), ("open_septum", gap)):
        _put(labels, hu, where, IMAT, hu_of["imat"])
        features[name][where] = 1


def _put(labels, hu, where, label, value):
    labels[where] = label
    hu[where] = value
