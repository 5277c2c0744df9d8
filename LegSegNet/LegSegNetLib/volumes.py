"""Reading CT volumes (image files, DICOM series) with their geometry, label images on the input's own grid,
and the axial (canonical) view engines work in."""
import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .dicom import read_dicom_folder
from .dicom_headers import list_dicom_series
from .errors import InputError
from .limits import check_size
from .slice_images import as_one_slice_volume, is_windowed_slice, read_windowed_slice
from .header_geometry import ORTHONORMAL_TOLERANCE, check_read_geometry, expected_geometry
from .image_files import (check_stored_data, gzip_holds, layout_files, layout_of, meta_fields,
                          nrrd_fields, refuse_unreadable, require_regular_file, sniff, stored_files)

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
AIR_HU = -500          # every CT of a limb holds air below this; MR and raw detector values do not
MAX_PLAUSIBLE_HU = 5000  # beyond dense metal; larger maxima mean the values are not HU
# Clinical CT is reconstructed at 0.2–2 mm in-plane and 0.5–10 mm slices (sparse protocols up to ~20 mm).
# Outside these limits the header's unit is wrong (m, cm) or the volumes would be meaningless.
IN_PLANE_SPACING_MM = (0.05, 5.0)
SLICE_SPACING_MM = (0.05, 30.0)
IMAGE_IO = {"NIfTI": "NiftiImageIO", "NRRD": "NrrdImageIO", "MetaImage": "MetaImageIO"}
SCALAR_BYTES = {sitk.sitkInt8: 1, sitk.sitkUInt8: 1, sitk.sitkInt16: 2, sitk.sitkUInt16: 2, sitk.sitkInt32: 4,
                sitk.sitkUInt32: 4, sitk.sitkInt64: 8, sitk.sitkUInt64: 8, sitk.sitkFloat32: 4, sitk.sitkFloat64: 8}


@dataclass
class CtVolume:
    """A CT volume: the image as read (geometry authority) plus notes gathered while reading."""
    image: sitk.Image
    source: str
    notes: list = field(default_factory=list)
    files: list = field(default_factory=list)   # the files the image was read from (for input_fingerprint)
    unknown: tuple = ()   # sizes a one-slice input does not give: "pixel_size", "slice_thickness"

    @property
    def array(self):
        """Voxel values in numpy order (k, j, i), no copy, read-only; the array keeps the image alive."""
        return np.asarray(_ImageVoxels(self.image))

    def geometry(self):
        img = self.image
        return {"size": list(img.GetSize()), "spacing": list(img.GetSpacing()),
                "origin": list(img.GetOrigin()), "direction": list(img.GetDirection())}


class _ImageVoxels:
    """An image's voxels for numpy, holding the image: SimpleITK's own view does not, so it would point into freed
    memory once the image is gone (e.g. `read_ct(path).array`)."""
    def __init__(self, image):
        self.image = image
        self.__array_interface__ = sitk.GetArrayViewFromImage(image).__array_interface__


def is_image_file(path):
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def read_ct(path, series_uid=None, pixel_mm=None):
    """Read a CT volume from an image file, a DICOM series folder (the largest series, or the one with
    series_uid) or one axial slice (a DICOM file, a 2D image file, a windowed PNG/JPEG with pixel_mm (x, y) or
    none), validate it and return a CtVolume."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or folder")
    notes, unknown = [], ()
    try:
        if os.path.isdir(path):
            _refuse_pixel_mm(path, pixel_mm)
            image, files = read_dicom_folder(path, notes, series_uid)
        else:
            image, files, unknown = read_image_file(path, notes, pixel_mm)
    except InputError:
        raise
    except (RuntimeError, OSError) as err:    # ITK's readers raise RuntimeError for files they cannot parse
        first = str(err).strip().splitlines()
        raise InputError(f"{path}: cannot be read as an image ({first[-1] if first else 'unknown error'})") from None
    validate_ct(image, path)
    return CtVolume(image, path, notes, files, tuple(unknown))


def read_image_file(path, notes=None, pixel_mm=None):
    """Read a NIfTI/NRRD/MetaImage file the way its content (not its name) says, checking the header (size,
    type, memory) before any voxel is read and the stored bytes before ITK reads them; a single DICOM file or a
    PNG/JPEG named so is one axial slice. (image, files, sizes the input does not give)."""
    notes = [] if notes is None else notes
    require_regular_file(path)
    content = sniff(path)
    if is_windowed_slice(path, content.kind) and not content.gzipped:
        image, unknown = read_windowed_slice(path, content.kind, pixel_mm, notes)
        return image, [path], unknown
    _refuse_pixel_mm(path, pixel_mm)
    if content.kind == "DICOM" and not content.gzipped:
        image, files = read_dicom_folder(path, notes)
        notes.append("one DICOM file given: read as one slice (give the folder for the whole series)")
        return image, files, ()
    refuse_unreadable(path, content)
    layout = layout_of(path, content)
    fields = {"NRRD": nrrd_fields, "MetaImage": meta_fields}.get(content.kind, lambda _: (None, 0))(path)[0]
    expected = expected_geometry(path, content.kind, content.gzipped, fields)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.SetImageIO(IMAGE_IO[content.kind])
    reader.ReadImageInformation()
    check_header(reader, path)
    if layout.encoding == "gzip" and reader.GetDimension() == 3:
        image = _read_gzip_checked(reader, path, layout)
        check_read_geometry(path, image, expected)
        return image, layout_files(path, layout), ()
    files = check_stored_data(path, layout)
    if reader.GetDimension() == 2:
        return as_one_slice_volume(reader.Execute(), notes), files, ("slice_thickness",)
    image = reader.Execute()
    check_read_geometry(path, image, expected)
    return image, files, ()


def _read_gzip_checked(reader, path, layout):
    """Gzip data read once: ITK decompresses them (faster than Python's zlib) and the gzip trailer proves that it
    read exactly the stored voxels (gzip_holds). Only when it cannot prove it, or ITK fails, are the stored bytes
    decompressed again by check_stored_data, which names the fault (truncation, corruption, NaN/±inf) or passes
    what the proof does not cover (several gzip members)."""
    try:
        image = reader.Execute()
    except RuntimeError:
        check_stored_data(path, layout)
        raise
    voxels = sitk.GetArrayViewFromImage(image)
    if not gzip_holds(layout, voxels) or (voxels.dtype.kind == "f" and not np.isfinite(voxels).all()):
        check_stored_data(path, layout)
    return image


def _refuse_pixel_mm(path, pixel_mm):
    if pixel_mm is not None:
        raise InputError(f"{path}: --pixel-mm is for PNG/JPEG slices only; this input's header gives its pixel size")


def check_header(reader, name):
    """Refuse from the header alone what is not a 3D scalar volume (or a 2D slice), or too large to hold in memory."""
    if reader.GetDimension() not in (2, 3):
        raise InputError(f"{name}: a {reader.GetDimension()}D image; a 3D CT volume or one 2D axial slice is needed")
    pixel = reader.GetPixelID()
    if reader.GetNumberOfComponents() != 1 or pixel not in SCALAR_BYTES:
        raise InputError(f"{name}: voxels of type {sitk.GetPixelIDValueAsString(pixel)} with "
                         f"{reader.GetNumberOfComponents()} components; a scalar CT volume is needed")
    check_size(name, reader.GetSize(), SCALAR_BYTES[pixel])


def input_fingerprint(path, series_uid=None):
    """sha256 of the input's bytes (every file it is read from), without reading it as an image."""
    path = os.fspath(path)
    if os.path.isdir(path):
        series = list_dicom_series(path)
        files = series.get(series_uid, []) if series_uid else max(series.values(), key=len, default=[])
    else:
        files = stored_files(path)
    return fingerprint_files(files)


def fingerprint_files(files):
    """sha256 of the sorted sha256 digests of the files' contents: names, folders and order do not count, so a
    renamed or moved input (a DICOM series whose files were renamed too) is recognised as the same input."""
    digests = sorted(_content_sha256(name) for name in files)
    return "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()


def _content_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_ct(image, name="input"):
    """Refuse what is not a 3D CT volume in Hounsfield units, with a message that says what is wrong."""
    if image.GetDimension() != 3:
        raise InputError(f"{name}: a {image.GetDimension()}D image; a 3D CT volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar CT volume is needed")
    validate_geometry(image, name)
    size = image.GetSize()
    view = AxialView.of(image)
    if min(size) == 0 or min(size[2 - view.perm[axis]] for axis in (1, 2)) < 16:
        raise InputError(f"{name}: size {size} is too small for axial CT slices")
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(f"{name}: holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low == high:
        raise InputError(f"{name}: every voxel is {low:g}; the volume is empty")
    if low > AIR_HU:
        raise InputError(f"{name}: no voxel below {AIR_HU} HU (range {low:g}..{high:g}); "
                         "this is not CT in Hounsfield units (MR, or raw values without rescale?)")
    if high > MAX_PLAUSIBLE_HU:
        raise InputError(f"{name}: values up to {high:g}; this is not CT in Hounsfield units")


def validate_geometry(image, name="input"):
    """Refuse a direction that is not orthonormal (labels.nii.gz cannot store it: they would land elsewhere) and
    spacing no CT of the legs has."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    deviation = float(np.abs(direction.T @ direction - np.eye(3)).max()) if np.isfinite(direction).all() else np.inf
    if deviation > ORTHONORMAL_TOLERANCE:
        raise InputError(f"{name}: the direction matrix is not orthonormal (sheared, tilted or scaled axes: "
                         f"max |DᵀD − I| = {deviation:.3g}, tolerance {ORTHONORMAL_TOLERANCE:g})")
    spacing = AxialView.of(image).spacing    # canonical (slice, in-plane, in-plane)
    for value, (low, high), what in ((spacing[0], SLICE_SPACING_MM, "slice"),
                                     (spacing[1], IN_PLANE_SPACING_MM, "in-plane"),
                                     (spacing[2], IN_PLANE_SPACING_MM, "in-plane")):
        if not low <= value <= high:
            raise InputError(f"{name}: {what} spacing {value:g} mm is outside {low:g}..{high:g} mm "
                             "(implausible for CT of the legs; is the unit wrong?)")


# ---------------------------------------------------------------- axial view
@dataclass(frozen=True)
class AxialView:
    """How to turn a (k, j, i) array into the canonical axial array (S, P, L) and back, without resampling.

    Canonical axes: 0 runs inferior→superior, 1 anterior→posterior, 2 patient right→left (LPS +z, +y, +x),
    so axis-0 slices are axial with the radiological layout and left is the high end of axis 2.
    """
    perm: tuple
    flips: tuple
    spacing: tuple   # canonical (z, y, x) spacing in mm

    @classmethod
    def of(cls, image):
        direction = np.array(image.GetDirection()).reshape(3, 3)
        physical_of_index = np.abs(direction).argmax(axis=0)      # physical axis each index axis follows
        if sorted(physical_of_index) != [0, 1, 2]:
            raise InputError("image direction is too oblique to tell axial slices (two axes follow the same body axis)")
        perm, flips, spacing = [], [], []
        for physical in (2, 1, 0):                                   # z, y, x
            index_axis = int(np.where(physical_of_index == physical)[0][0])
            perm.append(2 - index_axis)                              # numpy axis of that index axis
            flips.append(bool(direction[physical, index_axis] < 0))
            spacing.append(image.GetSpacing()[index_axis])
        return cls(tuple(perm), tuple(flips), tuple(spacing))

    def positions(self, image, axis):
        """LPS coordinate (mm) along the body axis of canonical `axis` for each index on it."""
        physical, index_axis = 2 - axis, 2 - self.perm[axis]
        n = image.GetSize()[index_axis]
        step = np.array(image.GetDirection()).reshape(3, 3)[physical, index_axis] * image.GetSpacing()[index_axis]
        index = np.arange(n)[::-1] if self.flips[axis] else np.arange(n)
        return image.GetOrigin()[physical] + step * index

    def to_canonical(self, array):
        out = np.transpose(array, self.perm)
        return np.flip(out, [a for a, f in enumerate(self.flips) if f])

    def from_canonical(self, array):
        out = np.flip(array, [a for a, f in enumerate(self.flips) if f])
        return np.transpose(out, np.argsort(self.perm))


# ---------------------------------------------------------------- outputs
def labels_image(labels, reference):
    """A uint8 label image on the reference's exact grid from a (k, j, i) array."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels, dtype=np.uint8))
    image.CopyInformation(reference)
    return image


def image_from_matrix(array, ijk_to_lps_matrix):
    """A SimpleITK image of a (k, j, i) array placed by a 4×4 IJK→LPS matrix (the inverse of ijk_to_lps)."""
    matrix = np.asarray(ijk_to_lps_matrix, dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((matrix[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(matrix[:3, 3].tolist())
    return image


def write_labels(labels, reference, path):
    sitk.WriteImage(labels_image(labels, reference), os.fspath(path), useCompression=True)


def ijk_to_lps(image):
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix
