"""Synthetic two-leg CT phantom with exact ground truth (labels and leg sides).

Built slab by slab in the canonical axial frame (see volumes.AxialView) in millimetres, then stored on a grid
with the requested direction, so the truth is exact for any orientation.
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


def make_phantom(seed=0, shape=(32, 224, 288), spacing=(5.0, 1.25, 1.25), noise=15.0, blur=0.6,
                 direction=RAS_FLIPPED, touching=False, left_sat_scale=1.0, slab=16):
    """shape and spacing are canonical (z: inferior→superior, y: anterior→posterior, x: right→left).

    left_sat_scale thickens the left leg's SAT so tests can tell the legs apart.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    sz, sy, sx = spacing
    fov_x = nx * sx
    scale = fov_x / 360.0                     # the default field of view holds two thighs
    legs = [_leg(rng, side, nz, sz, scale, touching, left_sat_scale if side == "left" else 1.0, fov_x, ny * sy)
            for side in ("right", "left")]
    table_y = ny * sy * 0.5 + 95 * scale       # posterior to both legs, below the widest thigh
    labels = np.zeros(shape, np.uint8)
    sides = np.zeros(shape, np.uint8)
    hu = np.empty(shape, np.float32)
    y = (np.arange(ny) + 0.5) * sy
    x = (np.arange(nx) + 0.5) * sx
    for z0 in range(0, nz, slab):
        z = (np.arange(z0, min(nz, z0 + slab)) + 0.5) * sz
        lab, side, val = _slab(legs, z, y, x, table_y, fov_x, scale)
        labels[z0:z0 + len(z)], sides[z0:z0 + len(z)], hu[z0:z0 + len(z)] = lab, side, val
    if blur > 0:   # partial volume: in-plane blur of the ideal image
        hu = ndimage.gaussian_filter(hu, (0, blur, blur), output=np.float32)
    hu += rng.normal(0, noise, shape).astype(np.float32) if noise > 0 else 0
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
    return Phantom(image(ct), image(labels), image(sides))


def _leg(rng, side, nz, sz, scale, touching, sat_scale, fov_x, fov_y):
    length = nz * sz
    radius_knee, radius_thigh = 52 * scale, 72 * scale
    gap = -6 * scale if touching else 14 * scale
    centre_x = fov_x / 2 + (radius_thigh + gap / 2) * (1 if side == "left" else -1)
    n_septa = 4
    return {
        "side": side, "cx": centre_x, "cy": fov_y * 0.5, "length": length,
        "r": (radius_knee, radius_thigh),
        "shape": rng.uniform(0, 2 * np.pi, 2),
        "sat": np.array((5.0, 11.0)) * scale * sat_scale,
        "bone_offset": np.array((-14.0, 6.0 if side == "left" else -6.0)) * scale,   # anterior, medial
        "bone_r": (22 * scale, 13 * scale), "cortex": (2.0 * scale, 5.0 * scale),
        "septa": np.sort(rng.uniform(0, 2 * np.pi, n_septa)),
        "septum_width": rng.uniform(1.8, 3.2, n_septa) * scale,
        "blobs": [(rng.uniform(0.45, 0.9), rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.9) * length,
                   rng.uniform(2.0, 5.0) * scale, rng.uniform(10, 40)) for _ in range(10)],
    }


def _slab(legs, z, y, x, table_y, fov_x, scale):
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
    labels = np.zeros(np.broadcast_shapes(Z.shape, Y.shape, X.shape), np.uint8)
    sides = np.zeros_like(labels)
    hu = np.full(labels.shape, HU["air"], np.float32)
    for i, (leg, (t, dy, dx, r, theta, outer)) in enumerate(zip(legs, fields)):
        mine = owner == i
        depth = outer - r                                 # mm below the skin surface
        sat = leg["sat"][0] + leg["sat"][1] * (0.5 + 0.5 * np.sin(theta + leg["shape"][0])) ** 2
        skin = 1.8 * scale
        compartment = depth >= skin + sat
        body = mine & (depth >= 0)
        sides[body] = SIDE_LABELS[leg["side"]]
        _put(labels, hu, body & (depth < skin), 0, HU["skin"])
        _put(labels, hu, body & (depth >= skin) & ~compartment, SAT, HU["sat"])
        _put(labels, hu, mine & compartment & (depth < skin + sat + 1.2 * scale), SM, HU["fascia"])
        inner = mine & (depth >= skin + sat + 1.2 * scale)
        _put(labels, hu, inner, SM, HU["muscle"])
        # intermuscular septa: fat streaks running from the bone out to the fascia
        for angle, width in zip(leg["septa"], leg["septum_width"]):
            across = np.abs(np.sin(theta - angle - 0.3 * t)) * r
            along = np.cos(theta - angle - 0.3 * t) > 0
            _put(labels, hu, inner & along & (across < width / 2) & (r > 0.3 * outer), IMAT, HU["imat"])
        # intramuscular fat blobs
        for frac, angle, zc, size, zlen in leg["blobs"]:
            by = 0.75 * outer * frac * np.sin(angle)
            bx = 0.75 * outer * frac * np.cos(angle)
            d2 = ((dy - by) / size) ** 2 + ((dx - bx) / (1.6 * size)) ** 2 + ((Z - zc) / zlen) ** 2
            _put(labels, hu, inner & (d2 < 1), IMAT, HU["imat"])
        # bone: cortex ring with fatty marrow; wide and thin-walled at the knee
        bone_r = leg["bone_r"][0] + (leg["bone_r"][1] - leg["bone_r"][0]) * np.sqrt(t)
        cortex = leg["cortex"][0] + (leg["cortex"][1] - leg["cortex"][0]) * t
        rb = np.hypot(dy - leg["bone_offset"][0], (dx - leg["bone_offset"][1]) / 1.1)
        _put(labels, hu, mine & (rb < bone_r), BONE, HU["cortex"])
        _put(labels, hu, mine & (rb < bone_r - cortex), BONE, HU["marrow"])
    # CT table: a curved plate under the legs, not part of the patient
    bend = ((X - fov_x / 2) / fov_x) ** 2 * 40 * scale
    plate = np.abs(Y - (table_y - bend)) < 2.5 * scale
    plate = np.broadcast_to(plate, labels.shape) & (labels == 0) & (sides == 0)
    hu[plate] = HU["table"]
    return labels, sides, hu


def _put(labels, hu, where, label, value):
    labels[where] = label
    hu[where] = value
