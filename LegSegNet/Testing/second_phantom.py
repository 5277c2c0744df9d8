"""A second synthetic two-leg CT phantom with exact truth, test-only (test_second_phantom.py).

Written in this project independently of LegSegNetLib/phantom.py and of the classical engine (its author had read
neither), and kept so that the engine cannot be fitted to one generator. Its construction differs: tissues are
analytic shapes in mm (outlines, SAT depth, muscle groups as warped Voronoi cells with fat septa, femur and
condyles, vessels) drawn at 3 or 4 sub-samples per pixel and axis; a pixel's HU is the mean of its sub-samples',
its truth their plurality label (label 0 wins only strictly); blur, shading and correlated noise touch HU only.
Deep fat features (masks of their IMAT truth): popliteal fat pad, a large fatty region in one muscle group, a
septum open through the fascia into the SAT.

make(seed, touching, mirrored, table_contact, shape, spacing) -> hu (int16, z y x), truth (uint8), spacing
(dz, dy, dx), features {name: bool mask}; axes z inferior->superior, y anterior->posterior, x right->left.
Truth: 1 SAT, 2 SM, 3 IMAT (septa, fat under the fascia, marbling, vessel cuffs, the features), 4 Bone (cortex
and marrow), 0 air, table, foam, skin, deep fascia and vessels. All random numbers come from default_rng(seed).
Legs are drawn in coordinates m (medial +), p (posterior +); depth is the least of the depth below the outline and
the distances to the plane where the legs press together and to the table top: skin, SAT down to the deep
fascia, a thin fascia band, then the muscle compartment.
"""
import numpy as np
from scipy import ndimage

from second_phantom_anatomy import Leg, SmoothField, angular_field, in_ellipse, in_small_ellipse

# What each sub-sample is drawn as, and the truth label each of those counts as.
AIR, SKIN, SUBCUT_FAT, FASCIA, MUSCLE, DEEP_FAT, CORTEX, MARROW, VESSEL, TABLE, FOAM = range(11)
LABEL_OF = np.array([0, 0, 1, 0, 2, 3, 4, 4, 0, 0, 0], np.uint8)
FEATURES = {"popliteal_fat": 1, "fatty_region": 2, "open_septum": 4}   # feature name: its bit in the tag array


def z_profile(z, zc, half_length):
    """1 at zc, falling to 0 at zc +- half_length (sizes scale with its square root)."""
    return 1 - ((z - zc) / half_length) ** 2


class LegSlice:
    """One leg at level z on a sub-sample grid (m, p in mm): drawing class, HU and feature tag per sub-sample."""

    def __init__(self, leg, m, p, z, medial_cut, table_depth, air_hu):
        self.leg, self.m, self.p, self.z = leg, m, p, z
        self.th, self.rho = np.arctan2(p, m), np.hypot(m, p)
        self.outline = leg.radius(self.th, z)
        depth = self.outline - self.rho
        if medial_cut is not None:                                   # flattened where the legs press together
            depth = np.minimum(depth, medial_cut - m)
        if table_depth is not None:                                  # flattened on the table
            depth = np.minimum(depth, table_depth)
        self.depth, self.body = depth, depth > 0
        self.fascia = leg.fascia_depth(self.th, z, self.outline)
        self.below_fascia = depth - self.fascia - leg.fascia_mm
        self.inside = self.body & (self.below_fascia >= 0)
        self.cls = np.full(m.shape, AIR, np.uint8)
        self.hu = np.full(m.shape, air_hu, np.float32)
        self.tag = np.zeros(m.shape, np.uint8)

    def draw_layers(self):
        leg, c, z = self.leg, self.cls, self.z
        c[self.body] = SKIN
        c[self.body & (self.depth >= leg.skin_mm)] = SUBCUT_FAT
        c[self.body & (self.depth >= self.fascia)] = FASCIA
        self.group, second, to_boundary = leg.nearest_groups(self.m, self.p, z)
        c[self.inside] = MUSCLE
        septum = leg.septum_mm[self.group, second] * (1 + leg.septum_wobble(self.m, self.p, z))
        under_fascia = self.below_fascia < leg.subfascial_fat_mm * np.maximum(0, leg.subfascial_fat(self.th, z))
        c[self.inside & ((to_boundary < septum / 2) | under_fascia)] = DEEP_FAT

    def draw_opening(self):
        """A septum that reaches the SAT through a gap in the fascia (no fascia line there)."""
        leg, c = self.leg, self.cls
        th_centre, zc, half_length, half_width, reach = leg.opening
        k = z_profile(self.z, zc, half_length)
        if k <= 0:
            return
        arc = np.abs(np.angle(np.exp(1j * (self.th - th_centre)))) * np.maximum(self.rho, 1)
        width = half_width * np.sqrt(k)
        below = self.below_fascia
        wedge = (self.body & (self.depth >= leg.skin_mm) & (below < reach)
                 & (arc < width * np.clip(1 - np.maximum(below, 0) / reach, 0, 1) + 0.6))
        fascia_gap = self.body & (c == FASCIA) & (arc < width + 1.0)
        c[fascia_gap & (self.depth < self.fascia + leg.fascia_mm / 2)] = SUBCUT_FAT
        c[fascia_gap & (self.depth >= self.fascia + leg.fascia_mm / 2)] = DEEP_FAT
        wedge_inside = wedge & (self.depth >= self.fascia) & ((c == MUSCLE) | (c == DEEP_FAT))
        c[wedge_inside] = DEEP_FAT
        self.tag[wedge_inside | (fascia_gap & (c == DEEP_FAT))] |= FEATURES["open_septum"]

    def draw_marbling(self):
        muscle = self.cls == MUSCLE
        for phi, fraction, zc, half_length, a, b, angle in self.leg.streaks:
            k = z_profile(self.z, zc, half_length)
            if k > 0:
                cm, cp = self.leg.point_towards(phi, fraction, self.z)
                streak = in_small_ellipse(self.m, self.p, cm, cp, a * np.sqrt(k), b * np.sqrt(k) + .05, angle)
                self.cls[muscle & streak] = DEEP_FAT

    def draw_fatty_region(self, fatty_hu):
        """A large blob of fat (with its own, slightly higher HU) inside one muscle group."""
        group, phi, fraction, zc, half_length, radius, wobble = self.leg.fatty
        k = z_profile(self.z, zc, half_length)
        if k <= 0:
            return
        cm, cp = self.leg.point_towards(phi, fraction, self.z)
        around = np.arctan2(self.p - cp, self.m - cm)
        blob = np.hypot(self.m - cm, self.p - cp) < radius * np.sqrt(k) * (1 + wobble(around, self.z))
        region = blob & (self.cls == MUSCLE) & (self.group == group)
        self.cls[region] = DEEP_FAT
        self.hu[region] = fatty_hu
        self.tag[region] |= FEATURES["fatty_region"]

    def draw_knee(self, knee_z):
        """Femur: shaft widening into condyles towards the knee, a fat pad behind them, an intercondylar notch."""
        leg, c, m, p, z = self.leg, self.cls, self.m, self.p, self.z
        self.condyles = 0 if knee_z is None else np.clip((knee_z + 30 - z) / 30, 0, 1)   # 0 shaft .. 1 condyles
        self.pad = 0 if knee_z is None else np.clip((knee_z + 18 - z) / 25, 0, 1)        # fat pad's extent
        kb = self.condyles
        half_w = leg.shaft_radius + kb * (leg.condyle_width - leg.shaft_radius)
        self.bone_depth = leg.shaft_radius + kb * (leg.condyle_depth - leg.shaft_radius)
        self.bone_centre = leg.femur(z) + np.array([0, kb * (leg.condyle_depth - leg.shaft_radius) * 0.3])
        cm, cp = self.bone_centre
        if self.pad > 0:
            pad_w, pad_d = self.pad * 0.33 * leg.inner_width, self.pad * 0.5 * leg.inner_depth
            pad = self.inside & in_ellipse(m, p, cm + 0.05 * leg.inner_width, cp + self.bone_depth + 0.3 * pad_d,
                                           pad_w, pad_d)
            c[pad] = DEEP_FAT
            self.tag[pad] |= FEATURES["popliteal_fat"]
        self.bone = in_ellipse(m, p, cm, cp, half_w, self.bone_depth)
        if kb > 0.5:                                                 # the notch opens posteriorly
            notch = in_ellipse(m, p, cm, cp + self.bone_depth, 0.22 * half_w, (kb - .5) * 1.2 * self.bone_depth)
            self.bone &= ~notch
            c[notch & self.inside & (c == MUSCLE)] = DEEP_FAT
        cortex = leg.cortex_mm * (1 - kb) + 1.8 * kb
        marrow = in_ellipse(m, p, cm + .1 * cortex, cp, half_w - cortex, self.bone_depth - cortex) & self.bone
        c[self.bone] = CORTEX
        c[marrow] = MARROW

    def draw_vessels(self):
        """Femoral artery and vein (popliteal behind the knee) in a fat cuff; superficial veins in the SAT."""
        leg, c, m, p, z = self.leg, self.cls, self.m, self.p, self.z
        angle, fraction, r_artery, r_vein, cuff = leg.vessel
        thigh = leg.point_towards(np.deg2rad(angle), fraction, z)
        cm, cp = self.bone_centre
        knee = np.array([cm + .05 * leg.inner_width, cp + self.bone_depth + 0.15 * leg.inner_depth + r_artery + 2])
        centre = (1 - self.pad) * thigh + self.pad * (knee if self.pad > 0 else thigh)
        vessels = ((np.array([0, 0]), r_artery), (np.array([r_artery + r_vein, 0.5]), r_vein))
        for offset, radius in vessels:
            at = centre + offset
            in_cuff = self.inside & ~self.bone & (np.hypot(m - at[0], p - at[1]) < radius + cuff)
            c[in_cuff & (c != VESSEL)] = DEEP_FAT
            self.tag[in_cuff] &= ~np.uint8(FEATURES["fatty_region"] | FEATURES["open_septum"])
        for offset, radius in vessels:
            c[self.inside & ~self.bone & (np.hypot(m - centre[0] - offset[0], p - centre[1] - offset[1]) < radius)] \
                = VESSEL
        for angle, fraction, radius, drift in leg.superficial_veins:
            th = angle + drift * z
            if leg.sat_depth(th, z) > 2 * radius + 1.5:
                at = leg.radius(th, z) - (leg.skin_mm + fraction * leg.sat_depth(th, z))
                c[(c == SUBCUT_FAT) & (np.hypot(m - at * np.cos(th), p - at * np.sin(th)) < radius)] = VESSEL
        self.tag[c != DEEP_FAT] = 0

    def fill_hu(self, hu_of):
        c, h, kb = self.cls, self.hu, self.condyles
        for cls, key in ((SKIN, "skin"), (SUBCUT_FAT, "sat"), (FASCIA, "fascia"), (VESSEL, "blood")):
            h[c == cls] = hu_of[key]
        h[(c == DEEP_FAT) & ~(self.tag & FEATURES["fatty_region"]).astype(bool)] = hu_of["imat"]
        h[c == MUSCLE] = (hu_of["muscle"] + self.leg.group_hu_offset[self.group])[c == MUSCLE]
        h[c == CORTEX] = hu_of["cortex"] * (1 - kb) + hu_of["cortex_knee"] * kb
        h[c == MARROW] = hu_of["marrow"] * (1 - kb) + hu_of["cancellous"] * kb
        cupping = hu_of["cup"] * (1 - np.minimum(self.rho / np.maximum(self.outline, 1), 1) ** 2)
        h[self.body] -= cupping[self.body]                           # beam hardening: darker towards the centre


def render_leg(leg, m, p, z, knee_z, hu_of, cls, hu, tag, medial_cut, table_depth):
    """Draw one leg into the slice's sub-sample arrays cls, hu, tag (views); the legs never overwrite each other."""
    s = LegSlice(leg, m, p, z, medial_cut, table_depth, hu_of["air"])
    s.draw_layers()
    if leg.opening is not None:
        s.draw_opening()
    s.draw_marbling()
    if leg.fatty is not None:
        s.draw_fatty_region(hu_of["fatty"])
    s.draw_knee(knee_z)
    s.draw_vessels()
    s.fill_hu(hu_of)
    free = s.body & (cls == AIR)
    cls[free], hu[free], tag[free] = s.cls[free], s.hu[free], s.tag[free]


class Scene:
    """All random choices of one phantom (drawn in __init__, in a fixed order) and the drawing of its slices."""

    def __init__(self, rng, shape, spacing, touching, table_contact):
        self.rng, self.shape, self.touching, self.table_contact = rng, shape, touching, table_contact
        u = rng.uniform
        if spacing is None:
            pixel = u(0.7, 1.1)
            spacing = (float(u(2.5, 5.0)), float(pixel), float(pixel))
        self.spacing = spacing
        self.sub = int(rng.choice([3, 4]))                           # sub-samples per pixel and axis
        self.z_length = shape[0] * spacing[0]
        self.gap = 0.0 if touching else u(4, 25)                     # between the legs (mm)
        self.overlap = u(3, 10)                                      # how far touching thighs press together
        self.has_table = table_contact or rng.random() < 0.6
        self.table_mm, self.table_curve = u(5, 12), u(0, 15) * (rng.random() < 0.6)
        self.foam = (not table_contact) and rng.random() < 0.5
        self.table_gap = 0.0 if table_contact else u(3, 20)
        self._draw_legs()
        self._draw_features()
        self.shading = SmoothField(rng, 4, u(0, 10), (150, 400))
        self.noise_sd, self.noise_blur, self.blur = u(8, 25), u(0.5, 1.6), u(0.3, 0.7)
        self._place_legs()

    def _draw_legs(self):
        rng, u = self.rng, self.rng.uniform
        _, height, width = self.shape
        _, dy, dx = self.spacing
        half_width = u(60, 90)
        half_depth = half_width * u(0.8, 1.05)
        fit = min(1.0, (width * dx - self.gap - 16) / (4 * half_width * 1.2),
                  (height * dy - 16 - self.has_table * (self.table_mm + self.table_gap)) / (2 * half_depth * 1.25))
        base = dict(A=half_width * fit, B=half_depth * fit, grow=u(0, .25), sat=u(3, 16) * min(1, fit * 1.2),
                    post=u(0, 12) * (rng.random() < .5), med=u(0, 8) * (rng.random() < .5))
        self.legs = [Leg(rng, base, self.z_length) for _ in range(2)]   # legs[0]: patient right (low x)
        self.hu_of = dict(air=-1000.0, muscle=u(35, 65), sat=u(-120, -80), skin=u(20, 60), fascia=u(20, 60),
                          blood=u(30, 60), cortex=u(1200, 1600), cortex_knee=u(700, 1000), marrow=u(-50, 50),
                          cancellous=u(150, 350), table=u(100, 400), foam=u(-900, -600), cup=u(0, 12))
        self.hu_of["imat"] = self.hu_of["sat"] + (u(0, 15) if rng.random() < .5 else u(-5, 5))
        self.hu_of["fatty"] = self.hu_of["imat"] + u(0, 30)

    def _draw_features(self):
        """Knee level (or none), a large fatty region in one leg, a septum open to the SAT in one or both legs."""
        rng, u, z_length = self.rng, self.rng.uniform, self.z_length
        self.knee_z = u(5, 0.45 * z_length) if rng.random() < 0.7 else None
        leg = self.legs[int(rng.integers(2))]
        group = int(rng.integers(len(leg.group_sites)))
        leg.fatty = (group, *leg.group_sites[group], u(.3, .7) * z_length, u(.15, .35) * z_length,
                     u(.35, .6) * leg.inner_width * .6, angular_field(rng, 3, 0.25))
        for i, leg in enumerate(self.legs):
            if i == 0 or rng.random() < 0.5:
                zc = u(.3, .7) * z_length
                leg.opening = (self._septum_angle(leg, zc), zc, u(.12, .3) * z_length, u(3, 8), u(8, 20))

    def _septum_angle(self, leg, zc):
        """A random angle where two muscle groups meet just under the fascia."""
        th = np.linspace(-np.pi, np.pi, 720, endpoint=False)
        under = leg.radius(th, zc) - leg.fascia_depth(th, zc) - leg.fascia_mm - 3
        group = leg.nearest_groups(under * np.cos(th), under * np.sin(th), zc)[0]
        changes = np.nonzero(group != np.roll(group, 1))[0]
        return th[self.rng.choice(changes)] if len(changes) else self.rng.uniform(-np.pi, np.pi)

    def _extent(self, leg, z, direction):
        return np.max(leg.radius(self._angles, z) * direction(self._angles))

    def _place_legs(self):
        """Legs side by side, centred in the field, on (or above) the table."""
        u = self.rng.uniform
        nz, height, width = self.shape
        dz, dy, dx = self.spacing
        s = self.sub
        self.xs = ((np.arange(width * s) + .5) / s * dx).astype(np.float32)   # sub-sample centres (mm)
        self.ys = ((np.arange(height * s) + .5) / s * dy).astype(np.float32)
        self.x_mid = width * dx / 2 + u(-8, 8)
        self._angles = np.linspace(-np.pi, np.pi, 360, endpoint=False)
        levels = np.arange(nz) * dz
        posterior = max(self._extent(leg, z, np.sin) for leg in self.legs for z in levels)
        anterior = max(self._extent(leg, z, lambda t: -np.sin(t)) for leg in self.legs for z in levels)
        self.flattened = u(2, 6) if self.table_contact else 0.0      # how far the backs are flattened on the table
        stack = anterior + posterior - self.flattened + (self.table_gap + self.table_mm if self.has_table else 0)
        self.y_centre = max(4, (height * dy - stack) / 2) + anterior
        self.table_y0 = self.y_centre + posterior + self.table_gap - self.flattened

    def table_top(self, x):
        return self.table_y0 - self.table_curve * ((x - self.x_mid) / (self.shape[2] * self.spacing[2] / 2)) ** 2

    def draw_slice(self, z):
        """Drawing class, HU and feature tag of every sub-sample at level z."""
        full = (len(self.ys), len(self.xs))
        cls, tag = np.full(full, AIR, np.uint8), np.zeros(full, np.uint8)
        hu = np.full(full, self.hu_of["air"], np.float32)
        for side, leg in zip((1, -1), self.legs):
            medial = self._extent(leg, z, np.cos)
            xc = self.x_mid - side * ((medial - self.overlap) if self.touching else (medial + self.gap / 2))
            if self.table_contact:
                yc = self.table_top(xc) - self._extent(leg, z, np.sin) + self.flattened
            else:
                yc = self.y_centre + 2 * np.sin(z / 40 + side)           # a little sway along z
            reach = 1.25 * max(leg.half_width, leg.half_depth) * (1 + leg.taper)
            cols = np.nonzero((self.xs > xc - reach) & (self.xs < xc + reach))[0]
            rows = np.nonzero((self.ys > yc - reach) & (self.ys < yc + reach))[0]
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            x, y = np.meshgrid(self.xs[box[1]], self.ys[box[0]])
            render_leg(leg, side * (x - xc), y - yc, z, self.knee_z, self.hu_of, cls[box], hu[box], tag[box],
                       abs(self.x_mid - xc) if self.touching else None,
                       (self.table_top(x) - y) if self.table_contact else None)
        if self.has_table:
            self._draw_table(cls, hu)
        return cls, hu, tag

    def _draw_table(self, cls, hu):
        x, y = np.meshgrid(self.xs, self.ys)
        top = self.table_top(x)
        table = (y >= top) & (y < top + self.table_mm) & (cls == AIR)
        cls[table], hu[table] = TABLE, self.hu_of["table"]
        if self.foam:
            foam = ((y >= top - self.table_gap) & (y < top) & (cls == AIR)
                    & (np.abs(x - self.x_mid) < self.shape[2] * self.spacing[2] * .45))
            cls[foam], hu[foam] = FOAM, self.hu_of["foam"]

    def pixels(self, zi, cls, hu, tag):
        """Sub-samples -> pixels: truth by plurality, features where half the sub-samples carry them, HU by mean,
        then blur, shading and correlated noise (HU only)."""
        _, height, width = self.shape
        s, (dz, dy, dx) = self.sub, self.spacing
        labels = LABEL_OF[cls]
        counts = np.stack([(labels == k).reshape(height, s, width, s).sum((1, 3)) for k in range(5)]).astype(np.float32)
        counts[0] -= 0.5                                             # label 0 wins ties with no tissue
        truth = np.argmax(counts, 0)
        features = {name: (((tag & bit) > 0).reshape(height, s, width, s).mean((1, 3)) >= 0.5) & (truth == 3)
                    for name, bit in FEATURES.items()}
        image = ndimage.gaussian_filter(hu.reshape(height, s, width, s).mean((1, 3)), self.blur)
        x, y = np.meshgrid((np.arange(width) + .5) * dx, (np.arange(height) + .5) * dy)
        image += self.shading(x, y, (zi + 0.5) * dz) * (image > -500)
        noise = ndimage.gaussian_filter(self.rng.standard_normal((height, width)), self.noise_blur)
        image += noise * (self.noise_sd / noise.std())
        return np.clip(np.round(image), -1024, 3071), truth, features


def make(seed, touching=False, mirrored=False, table_contact=False, shape=(32, 256, 320), spacing=None):
    """A phantom: hu, truth, spacing, features (see the module docstring). shape is (slices, rows, columns)."""
    scene = Scene(np.random.default_rng(seed), shape, spacing, touching, table_contact)
    hu = np.zeros(shape, np.int16)
    truth = np.zeros(shape, np.uint8)
    features = {name: np.zeros(shape, bool) for name in FEATURES}
    for zi in range(shape[0]):
        cls, sub_hu, tag = scene.draw_slice((zi + 0.5) * scene.spacing[0])
        hu[zi], truth[zi], slice_features = scene.pixels(zi, cls, sub_hu, tag)
        for name, mask in slice_features.items():
            features[name][zi] = mask
    if mirrored:                                                     # the other left-right direction
        hu, truth = hu[:, :, ::-1].copy(), truth[:, :, ::-1].copy()
        features = {name: mask[:, :, ::-1].copy() for name, mask in features.items()}
    return hu, truth, tuple(float(v) for v in scene.spacing), features
