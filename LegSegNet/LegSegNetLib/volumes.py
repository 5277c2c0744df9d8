"""Reading CT volumes (image files, DICOM series) with their geometry, label images on the input's own grid,
and the axial (canonical) view engines work in."""
import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .dicom import list_dicom_series, read_dicom_folder
from .errors import InputError
from .image_files import nifti_has_nan

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
AIR_HU = -500          # every CT of a limb holds air below this; MR and raw detector values do not
MAX_PLAUSIBLE_HU = 5000  # beyond dense metal; larger maxima mean the values are not HU


@dataclass
class CtVolume:
    """A CT volume: the image as read (geometry authority) plus notes gathered while reading."""
    image: sitk.Image
    source: str
    notes: list = field(default_factory=list)
    files: list = field(default_factory=list)   # the files the image was read from (for input_fingerprint)

    @property
    def array(self):
        """Voxel values in numpy order (k, j, i), no copy."""
        return sitk.GetArrayViewFromImage(self.image)

    def geometry(self):
        img = self.image
        return {"size": list(img.GetSize()), "spacing": list(img.GetSpacing()),
                "origin": list(img.GetOrigin()), "direction": list(img.GetDirection())}


def is_image_file(path):
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def read_ct(path, series_uid=None):
    """Read a CT volume from an image file or a DICOM series folder (the largest series, or the one with
    series_uid), validate it and return a CtVolume."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or folder")
    notes = []
    try:
        if os.path.isdir(path):
            image, files = read_dicom_folder(path, notes, series_uid)
        else:
            image, files = sitk.ReadImage(path), _image_files(path)
    except InputError:
        raise
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise InputError(f"{path}: cannot be read as an image ({first[-1] if first else 'unknown error'})") from None
    if path.lower().endswith((".nii", ".nii.gz")) and nifti_has_nan(path):
        raise InputError(f"{path}: holds NaN values")
    validate_ct(image, path)
    return CtVolume(image, path, notes, files)


def _image_files(path):
    """An image file plus, for detached headers (.mhd, .nhdr), the data files beside it with the same stem."""
    if not path.lower().endswith((".mhd", ".nhdr")):
        return [path]
    folder, stem = os.path.split(os.path.splitext(path)[0])
    return [path] + sorted(os.path.join(folder or ".", name) for name in os.listdir(folder or ".")
                           if name.startswith(stem + ".") and not is_image_file(name))


def input_fingerprint(path, series_uid=None):
    """sha256 of the input's bytes (every file it is read from), without reading it as an image."""
    path = os.fspath(path)
    if os.path.isdir(path):
        series = list_dicom_series(path)
        files = series.get(series_uid, []) if series_uid else max(series.values(), key=len, default=[])
    else:
        files = _image_files(path)
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
