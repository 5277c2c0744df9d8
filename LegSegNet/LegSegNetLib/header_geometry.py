"""What an image file's header says about where its voxels lie and what their values are, read by the format's
own definition and independently of ITK. ITK quietly deviates from the definitions in places (a NIfTI intercept
applied although scl_slope is 0, a sform with negative pixdim swapped for the qform, no spacing read as 1 mm,
'cm' read as mm, a NaN origin read as 0): such a file is refused, or ITK's reading is checked against the header
(check_read_geometry), so a voxel is never placed or scaled otherwise than its header says."""
import re
import struct

import numpy as np

from .errors import InputError
from .image_files import nifti_head

MATRIX_TOLERANCE = 1e-3     # relative to the largest spacing: header rounding is far smaller
# Header rounding (float32 NIfTI, 6-decimal DICOM) leaves direction errors near 1e-6; 1e-3 (0.06°, under 0.5 mm
# across a 50 cm field) is the most a direction may deviate from orthonormal (max |DᵀD − I|).
ORTHONORMAL_TOLERANCE = 1e-3
ORIGIN_TOLERANCE_MM = 1e-2
NRRD_SPACES = {"left-posterior-superior": (1, 1, 1), "lps": (1, 1, 1), "right-anterior-superior": (-1, -1, 1),
               "ras": (-1, -1, 1), "left-anterior-superior": (1, -1, 1), "las": (1, -1, 1)}   # sign to LPS
NIFTI_UNIT_MM = {1: 1000.0, 2: 1.0, 3: 0.001}     # xyzt_units & 7: metre, millimetre, micron (0: unknown = mm)


def expected_geometry(path, kind, gzipped=False, fields=None):
    """(3×3 LPS matrix whose columns are the index axes' steps in mm, origin) the header defines for a 3D image,
    None for a 2D one; refuses headers that define no orientation or that readers read differently."""
    if kind == "NIfTI":
        return _nifti(path, gzipped)
    if kind == "NRRD":
        return _nrrd(path, fields)
    return _meta(path, fields)


def check_read_geometry(path, image, expected):
    """ITK's reading of a 3D image must place the voxels where the header says."""
    if expected is None or image.GetDimension() != 3:
        return
    matrix, origin = expected
    read = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    scale = max(np.abs(matrix).max(), 1e-9)
    if (np.abs(read - matrix).max() > MATRIX_TOLERANCE * scale
            or np.abs(np.array(image.GetOrigin()) - origin).max() > ORIGIN_TOLERANCE_MM + 1e-6 * np.abs(origin).max()):
        raise InputError(f"{path}: the image reader places the voxels otherwise than the header defines (spacing "
                         f"{np.round(np.linalg.norm(matrix, axis=0), 4).tolist()} mm, origin "
                         f"{np.round(origin, 3).tolist()} mm); refusing an ambiguous file")


# ---------------------------------------------------------------- NIfTI
def _nifti(path, gzipped):
    head, endian, one = nifti_head(path, gzipped)
    real, code = ("f", "h") if one else ("d", "i")

    def values(fmt, offset, count=1):
        return struct.unpack_from(endian + f"{count}{fmt}", head, offset)
    ndim = values("h" if one else "q", 40 if one else 16)[0]
    pixdim = np.array(values(real, 76 if one else 104, 8), dtype=float)
    slope, inter = values(real, 112 if one else 176, 2)
    qform_code, sform_code = values(code, 252 if one else 344, 2)
    units = (head[123] if one else values("i", 500)[0]) & 7
    _check_nifti_scaling(path, slope, inter)
    spatial = min(max(ndim, 1), 3)
    if not (np.isfinite(pixdim[1:spatial + 1]).all() and (pixdim[1:spatial + 1] > 0).all()):
        raise InputError(f"{path}: NIfTI pixdim {pixdim[1:spatial + 1].tolist()} must be positive voxel sizes "
                         "(readers disagree on a zero or negative one)")
    if qform_code <= 0 and sform_code <= 0:
        raise InputError(f"{path}: the NIfTI header has neither qform nor sform, so it does not say how the "
                         "volume lies in the patient (which side is left)")
    scale = NIFTI_UNIT_MM.get(units, 1.0)
    quaternion = values(real, 256 if one else 352, 6)
    qform = _qform(quaternion, pixdim) * scale if qform_code > 0 else None
    sform = None
    if sform_code > 0:
        sform = np.array(values(real, 280 if one else 400, 12), dtype=float).reshape(3, 4)
        _check_sform_axes(path, sform, pixdim)
        sform = sform * scale
    if qform is not None and sform is not None and not _same_affine(qform, sform):
        raise InputError(f"{path}: the NIfTI qform and sform disagree (qform origin {np.round(qform[:, 3], 2).tolist()}, "
                         f"sform origin {np.round(sform[:, 3], 2).tolist()} mm, or their axes differ); "
                         "which one is right cannot be told")
    if ndim < 3:
        return None
    affine = (sform if sform is not None else qform) * np.array([[-1.0], [-1.0], [1.0]])   # RAS → LPS
    return affine[:, :3], affine[:, 3]


def _check_sform_axes(path, sform, pixdim):
    """The sform's axes over pixdim must be orthonormal: ITK quietly falls back to the qform when the sform is
    sheared or its scales differ from pixdim, so such a file is ambiguous."""
    with np.errstate(all="ignore"):
        direction = sform[:, :3] / np.abs(pixdim[1:4])
        deviation = np.abs(direction.T @ direction - np.eye(3)).max()
    if not deviation <= ORTHONORMAL_TOLERANCE:          # NaN too
        raise InputError(f"{path}: the NIfTI sform is sheared or its scales differ from pixdim "
                         f"(max |DᵀD − I| = {deviation:.3g}, tolerance {ORTHONORMAL_TOLERANCE:g})")


def _check_nifti_scaling(path, slope, inter):
    """The NIfTI standard: scl_slope 0 (or not a number) means no scaling at all; ITK then still adds scl_inter
    and ignores a slope below 2.2e-16."""
    if not np.isfinite(slope) or slope == 0:
        if np.isfinite(inter) and inter != 0:
            raise InputError(f"{path}: NIfTI scl_slope {slope:g} with scl_inter {inter:g}: by the standard no "
                             "scaling applies, but readers add the intercept; the HU are ambiguous")
    elif abs(slope) < np.finfo(float).eps or not np.isfinite(inter):
        raise InputError(f"{path}: NIfTI scl_slope {slope:g} and scl_inter {inter:g} cannot scale the voxels to HU")


def _qform(quaternion, pixdim):
    b, c, d, *offset = (float(v) for v in quaternion)
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    if a == 0.0:                                  # nifti_io's rule: a 180° rotation, b, c, d normalised
        norm = np.sqrt(b * b + c * c + d * d) or 1.0
        b, c, d = b / norm, c / norm, d / norm
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    steps = rotation @ np.diag([pixdim[1], pixdim[2], pixdim[3] * qfac])
    return np.column_stack([steps, offset])


def _same_affine(a, b):
    size = max(np.abs(a[:, :3]).max(), np.abs(b[:, :3]).max(), 1e-9)
    return (np.abs(a[:, :3] - b[:, :3]).max() <= MATRIX_TOLERANCE * size
            and np.abs(a[:, 3] - b[:, 3]).max() <= ORIGIN_TOLERANCE_MM + 1e-6 * np.abs(a[:, 3]).max())


# ---------------------------------------------------------------- NRRD
def _nrrd(path, fields):
    space = fields.get("space", "").strip().lower()
    dimension = int(fields["dimension"])
    if dimension == 2:           # one axial slice: ITK's 2D convention (see slice_images), no patient space
        return None
    if space not in NRRD_SPACES:
        what = f"space '{fields['space']}'" if "space" in fields else "no 'space' field"
        raise InputError(f"{path}: NRRD with {what}: not a patient frame (left-posterior-superior, "
                         "right-anterior-superior or left-anterior-superior), so which side is left cannot be told")
    vectors = re.findall(r"\(([^)]*)\)|(none)", fields.get("spacedirections", ""))
    steps = [_numbers(text, 3) for text, none in vectors if not none]
    if (len(vectors) != dimension or any(s is None or not s.any() for s in steps)
            or (dimension <= 3 and len(steps) != dimension)):     # 'none' only on a 4th (vector) axis
        raise InputError(f"{path}: NRRD 'space directions' must give a finite vector for each of the {dimension} "
                         "axes (none, zero, missing or not numbers leave the voxel size unknown)")
    units = [u.strip('" ') for u in fields.get("spaceunits", "").split()]
    if any(unit != "mm" for unit in units):
        raise InputError(f"{path}: NRRD space units {units}; only mm is read correctly")
    origin = _numbers(fields["spaceorigin"].strip("() "), 3) if "spaceorigin" in fields else np.zeros(3)
    if origin is None:
        raise InputError(f"{path}: NRRD 'space origin' is not three finite numbers")
    if dimension != 3:
        return None
    sign = np.array(NRRD_SPACES[space], dtype=float)
    return np.column_stack(steps) * sign[:, None], origin * sign


# ---------------------------------------------------------------- MetaImage
def _meta(path, fields):
    ndim = int(fields["NDims"])
    spacing = fields.get("ElementSpacing", fields.get("ElementSize"))
    if spacing is None or _numbers(spacing, ndim) is None or not _numbers(spacing, ndim).all():
        raise InputError(f"{path}: MetaImage header states no voxel size (ElementSpacing: {ndim} non-zero numbers)")
    matrix_text = next((fields[k] for k in ("TransformMatrix", "Rotation", "Orientation") if k in fields), None)
    origin_text = next((fields[k] for k in ("Offset", "Origin", "Position") if k in fields), None)
    matrix = np.eye(ndim) if matrix_text is None else _numbers(matrix_text, ndim * ndim)
    origin = np.zeros(ndim) if origin_text is None else _numbers(origin_text, ndim)
    if matrix is None or origin is None:
        raise InputError(f"{path}: MetaImage TransformMatrix or Offset is not {ndim}×{ndim} and {ndim} finite numbers")
    if ndim != 3:
        return None
    return matrix.reshape(3, 3).T @ np.diag(_numbers(spacing, 3)), origin     # stored column by column


def _numbers(text, count):
    try:
        values = np.array([float(v) for v in text.replace(",", " ").split()])
    except ValueError:
        return None
    return values if len(values) == count and np.isfinite(values).all() else None
