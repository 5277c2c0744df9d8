"""The second phantom's drawn anatomy (second_phantom.py renders it): smooth random fields and, per leg, its
outline, SAT depth, femur and condyles, muscle groups, vessels and fat features, all drawn from the seed's rng."""
import numpy as np

TWO_PI = 2 * np.pi


class SmoothField:
    """Sum of random plane waves in (m, p, z): a smooth random field of given amplitude and wavelengths (mm)."""

    def __init__(self, rng, n_waves, amplitude, wavelengths):
        angle = rng.uniform(0, TWO_PI, n_waves)
        wavelength = rng.uniform(*wavelengths, n_waves)
        self.k = np.stack([np.cos(angle), np.sin(angle)], 1) * (TWO_PI / wavelength)[:, None]
        self.kz = rng.uniform(-1, 1, n_waves) * TWO_PI / 150.0
        self.phase = rng.uniform(0, TWO_PI, n_waves)
        self.scale = amplitude / np.sqrt(n_waves / 2)

    def __call__(self, m, p, z):
        out = np.zeros(np.shape(m), np.float32)
        for (km, kp), kz, phase in zip(self.k, self.kz, self.phase):
            out += np.sin(km * m + kp * p + kz * z + phase).astype(np.float32)
        return out * self.scale


def angular_field(rng, n_harmonics, amplitude):
    """Random smooth periodic function f(theta, z) whose harmonics drift slowly with z."""
    k = np.arange(1, n_harmonics + 1)
    amp = rng.uniform(0, amplitude, n_harmonics) / k ** 0.7
    phase = rng.uniform(0, TWO_PI, n_harmonics)
    drift = rng.uniform(-0.012, 0.012, n_harmonics)
    return lambda th, z: sum(amp[i] * np.cos(k[i] * th + phase[i] + drift[i] * z) for i in range(n_harmonics))


def ray_to_circle(start, phi, radius):
    """Distance along the ray from start (inside) in direction phi to the circle of that radius about the origin."""
    b = start[0] * np.cos(phi) + start[1] * np.sin(phi)
    return -b + np.sqrt(max(b * b - (start @ start - radius * radius), 1.0))


def in_ellipse(m, p, cm, cp, a, b, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    x, y = (m - cm) * c + (p - cp) * s, -(m - cm) * s + (p - cp) * c
    return (x / a) ** 2 + (y / b) ** 2 <= 1


def in_small_ellipse(m, p, cm, cp, a, b, angle):
    """in_ellipse evaluated only in the ellipse's bounding box (m varies along columns, p along rows): same result,
    much faster for the many small marbling streaks."""
    reach = max(a, b) + 1.0
    cols = np.nonzero(np.abs(m[0] - cm) <= reach)[0]
    rows = np.nonzero(np.abs(p[:, 0] - cp) <= reach)[0]
    out = np.zeros(m.shape, bool)
    if len(cols) and len(rows):
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        out[box] = in_ellipse(m[box], p[box], cm, cp, a, b, angle)
    return out


class Leg:
    """One leg's random anatomy: outline, SAT, fascia, femur, muscle groups, vessels, marbling."""

    def __init__(self, rng, base, z_length):
        self.rng, self.z_length = rng, z_length
        self._draw_outline(base)
        self._draw_femur()
        self._draw_muscle_groups()
        self._draw_vessels_and_marbling()
        self.fatty = None                                            # set by Scene: large fatty region
        self.opening = None                                          # set by Scene: septum open into the SAT

    def _draw_outline(self, base):
        u = self.rng.uniform
        self.half_width, self.half_depth = base["A"] * u(.94, 1.06), base["B"] * u(.94, 1.06)
        self.taper = base["grow"] * u(.8, 1.2)                       # relative growth from bottom to top
        self.outline_wobble = angular_field(self.rng, 5, 0.035)
        self.skin_mm = u(1.4, 2.0)
        self.fascia_mm = u(0.3, 0.6)
        self.sat_mm = base["sat"] * u(.75, 1.3)
        self.sat_posterior, self.sat_medial = base["post"] * u(.5, 1.5), base["med"] * u(.5, 1.5)
        self.sat_wobble = angular_field(self.rng, 4, 0.35)
        self.inner_width, self.inner_depth = self.half_width - self.sat_mm - 2, self.half_depth - self.sat_mm - 2

    def _draw_femur(self):
        u = self.rng.uniform
        self.femur_centre = np.array([-u(0, .18) * self.inner_width, -u(.05, .28) * self.inner_depth])
        self.femur_drift = u(-4, 4, 2) / 100.0                       # mm per mm of z
        self.shaft_radius = u(.19, .25) * min(self.inner_width, self.inner_depth)
        self.cortex_mm = u(.28, .45) * self.shaft_radius
        self.condyle_width = u(.48, .62) * self.inner_width
        self.condyle_depth = max(u(.3, .4) * self.inner_depth, self.shaft_radius * 1.25)
        self.subfascial_fat, self.subfascial_fat_mm = angular_field(self.rng, 4, 1.0), u(0, 3.0)

    def _draw_muscle_groups(self):
        """Group centres in anatomical directions about the femur (theta = atan2(p, m)); fat septa between them."""
        rng, u = self.rng, self.rng.uniform
        directions = [-90, -150, 20, 110, -40, 160, 60]
        n = int(rng.integers(3, 7))
        extra = list(rng.choice(directions[3:], n - 3, replace=False))
        angles = np.deg2rad(np.array(directions[:3] + extra) + u(-15, 15, n))
        self.group_sites = [(angle, u(.45, .75)) for angle in angles]   # direction, fraction femur -> fascia
        self.group_hu_offset = u(-12, 8, n)
        width = u(0.5, 4.0, (n, n))
        self.septum_mm = np.triu(width) + np.triu(width, 1).T        # symmetric: septum width per pair of groups
        self.warp = (SmoothField(rng, 6, u(2, 6), (25, 70)), SmoothField(rng, 6, u(2, 6), (25, 70)))
        self.septum_wobble = SmoothField(rng, 5, 0.35, (15, 40))

    def _draw_vessels_and_marbling(self):
        rng, u, z_length = self.rng, self.rng.uniform, self.z_length
        # femoral vessels: angle (deg), fraction femur -> fascia, artery and vein radius, fat cuff (mm)
        self.vessel = (u(-25, 25), u(.45, .65), u(2.2, 3.5), u(2.5, 4.5), u(1.5, 3.0))
        self.superficial_veins = [(u(0, TWO_PI), u(.3, .7), u(1.0, 2.5), u(-.01, .01))
                                  for _ in range(int(rng.integers(1, 5)))]
        # marbling streaks and specks: direction, fraction, z centre, z half-length, half-axes, orientation
        self.streaks = [(u(0, TWO_PI), u(.25, .95), u(0, z_length), u(3, 20), u(1.5, 8), u(.3, 1.2), u(0, np.pi))
                        for _ in range(int(rng.integers(4, 40)))]
        if rng.random() < 0.6:                                       # a cluster of small specks (fatty infiltration)
            phi, fraction, zc = u(0, TWO_PI), u(.4, .85), u(0, z_length)
            for _ in range(int(rng.integers(15, 50))):
                spread = u(.3, .6)
                self.streaks.append((phi + u(-spread, spread), min(.95, fraction + u(-.15, .15)), zc + u(-8, 8),
                                     u(2, 8), u(.4, 1.2), u(.3, .8), u(0, np.pi)))

    # --- geometry at level z (mm) ---------------------------------------------------------------------------
    def radius(self, th, z):
        grow = 1 + self.taper * (z / self.z_length - .5)
        a, b = self.half_width * grow, self.half_depth * grow
        return a * b / np.sqrt((b * np.cos(th)) ** 2 + (a * np.sin(th)) ** 2) * (1 + self.outline_wobble(th, z))

    def sat_depth(self, th, z, radius=None):
        """SAT thickness, more posteriorly and medially where drawn so; radius (the outline's) when known."""
        radius = self.radius(th, z) if radius is None else radius
        s = self.sat_mm * (1 + self.sat_wobble(th, z)) + self.sat_posterior * np.maximum(0, np.sin(th)) ** 2 \
            + self.sat_medial * np.maximum(0, np.cos(th)) ** 2
        return np.clip(s, 2.5, np.minimum(30, 0.38 * radius))

    def fascia_depth(self, th, z, radius=None):
        return self.skin_mm + self.sat_depth(th, z, radius)

    def femur(self, z):
        return self.femur_centre + self.femur_drift * (z - self.z_length / 2)

    def point_towards(self, phi, fraction, z):
        """The point that fraction of the way from the femur to the deep fascia, in direction phi."""
        femur = self.femur(z)
        th = np.arctan2(femur[1] + 200 * np.sin(phi), femur[0] + 200 * np.cos(phi))
        for _ in range(3):                                           # fixed point: where the ray meets the fascia
            reach = ray_to_circle(femur, phi, self.radius(th, z) - self.fascia_depth(th, z) - 2)
            th = np.arctan2(femur[1] + reach * np.sin(phi), femur[0] + reach * np.cos(phi))
        return femur + fraction * reach * np.array([np.cos(phi), np.sin(phi)])

    def nearest_groups(self, m, p, z):
        """Nearest and second-nearest group (warped Voronoi cells) and the distance to the cells' boundary."""
        qm, qp = m + self.warp[0](m, p, z), p + self.warp[1](m, p, z)
        sites = np.array([self.point_towards(a, fr, z) for a, fr in self.group_sites], np.float32)
        d2 = (qm[..., None] - sites[:, 0]) ** 2 + (qp[..., None] - sites[:, 1]) ** 2
        first = np.argmin(d2, -1)
        d2_first = np.take_along_axis(d2, first[..., None], -1)[..., 0]
        np.put_along_axis(d2, first[..., None], np.inf, -1)
        second = np.argmin(d2, -1)
        d2_second = np.take_along_axis(d2, second[..., None], -1)[..., 0]
        spacing = np.linalg.norm(sites[first] - sites[second], axis=-1)
        return first, second, (d2_second - d2_first) / (2 * spacing)
