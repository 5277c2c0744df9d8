"""CT and segmentation I/O on the input's own grid, and the axial (canonical) view engines work in."""
import gzip
import hashlib
import logging
import os
import struct
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .tissues import TISSUES, terminology_entry, tissue_for_name

log = logging.getLogger(__name__)

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
            image, files = _read_dicom_folder(path, notes, series_uid)
        else:
            image, files = sitk.ReadImage(path), _image_files(path)
    except InputError:
        raise
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise InputError(f"{path}: cannot be read as an image ({first[-1] if first else 'unknown error'})") from None
    if path.lower().endswith((".nii", ".nii.gz")) and _nifti_has_nan(path):
        raise InputError(f"{path}: holds NaN values")
    validate_ct(image, path)
    return CtVolume(image, path, notes, files)


NIFTI_FLOATS = {16: np.float32, 64: np.float64}   # NIfTI-1 datatype codes


def _nifti_has_nan(path, chunk=1 << 24):
    """ITK's NIfTI reader turns NaN into 0, which would pass as 0 HU: look at the stored floats ourselves."""
    with (gzip.open if path.lower().endswith(".gz") else open)(path, "rb") as f:
        header = f.read(348)
        if len(header) < 348:
            return False
        endian = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
        datatype = struct.unpack(endian + "h", header[70:72])[0]
        if datatype not in NIFTI_FLOATS:          # integer voxels (most CT) cannot hold NaN
            return False
        f.seek(int(struct.unpack(endian + "f", header[108:112])[0]))
        dtype = np.dtype(NIFTI_FLOATS[datatype]).newbyteorder(endian)
        while block := f.read(chunk - chunk % dtype.itemsize):
            if np.isnan(np.frombuffer(block[:len(block) - len(block) % dtype.itemsize], dtype)).any():
                return True
    return False


def list_dicom_series(path):
    """{SeriesInstanceUID: file names in slice order} for every DICOM series in a folder and its subfolders."""
    reader = sitk.ImageSeriesReader()
    series = {}
    for root, _dirs, _files in os.walk(path):
        for uid in reader.GetGDCMSeriesIDs(root) or ():
            series.setdefault(uid, list(reader.GetGDCMSeriesFileNames(root, uid)))
    return series


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
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(os.path.basename(name).encode() + b"\0")
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def _read_dicom_folder(path, notes, series_uid=None):
    reader = sitk.ImageSeriesReader()
    series = list_dicom_series(path)
    if series_uid is not None:   # one named series (cohort runs: each series is its own case)
        if series_uid not in series:
            raise InputError(f"{path}: the requested DICOM series is not in this folder")
        series = {series_uid: series[series_uid]}
    if not series:
        raise InputError(f"{path}: folder holds no DICOM series")
    uid, files = max(series.items(), key=lambda item: len(item[1]))
    if len(series) > 1:
        note = f"{len(series)} DICOM series found; using the largest ({len(files)} files, {uid})"
        log.warning(note)
        notes.append(note)
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else ""
    if modality and modality != "CT":
        raise InputError(f"{path}: DICOM modality is {modality}, not CT")
    return image, files


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


def write_seg_nrrd(labels, reference, path):
    """Write a Slicer segmentation: one shared labelmap layer, a named, coloured segment per tissue."""
    import slicerio.segmentation
    segments = []
    for tissue in TISSUES:
        segments.append({
            "id": tissue.short, "name": tissue.short, "labelValue": tissue.label, "layer": 0,
            "color": list(tissue.color_float), "nameAutoGenerated": False, "colorAutoGenerated": False,
            "terminology": slicerio.segmentation.terminology_entry_from_string(terminology_entry(tissue)),
        })
    segmentation = {
        "voxels": np.ascontiguousarray(np.asarray(labels, dtype=np.uint8).transpose(2, 1, 0)),  # i, j, k
        "ijkToLPS": ijk_to_lps(reference),
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "segments": segments,
    }
    slicerio.write_segmentation(os.fspath(path), segmentation)


def read_segmentation(path, reference):
    """Tissue labels (k, j, i) on the reference CT's grid from a .seg.nrrd or a label image."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    try:
        if path.lower().endswith(".seg.nrrd"):
            image = _seg_nrrd_as_label_image(path)
        else:
            image = sitk.ReadImage(path)
    except RuntimeError as err:
        raise InputError(f"{path}: cannot be read as a segmentation ({str(err).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: a segmentation must be one 3D label volume")
    values = np.unique(sitk.GetArrayViewFromImage(image))
    known = {0} | {t.label for t in TISSUES}
    if not set(values.tolist()) <= known:
        raise InputError(f"{path}: label values {sorted(set(values.tolist()) - known)} are not tissue labels 1..4")
    if not _same_grid(image, reference):
        _check_overlap(image, reference, path)
        image = sitk.Resample(sitk.Cast(image, sitk.sitkUInt8), reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(image).astype(np.uint8)


def _seg_nrrd_as_label_image(path):
    import slicerio.segmentation
    seg = slicerio.read_segmentation(path)
    voxels = seg["voxels"]
    shape = voxels.shape[-3:]
    labels = np.zeros(shape, np.uint8)
    for segment in seg["segments"]:
        tissue = tissue_for_name(segment.get("name", ""))
        if tissue is None:
            raise InputError(f"{path}: segment '{segment.get('name')}' is not one of "
                             f"{', '.join(t.short for t in TISSUES)}")
        labels[slicerio.segment_mask(seg, segment)] = tissue.label
    return image_from_matrix(labels.transpose(2, 1, 0), seg["ijkToLPS"])


def _same_grid(a, b, tol=1e-4):
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def _check_overlap(image, reference, path):
    """Refuse segmentations that do not lie on the CT at all (a different scan)."""
    def corners(img):
        size = np.array(img.GetSize()) - 1
        pts = [img.TransformContinuousIndexToPhysicalPoint((size * np.array(c)).tolist())
               for c in np.ndindex(2, 2, 2)]
        return np.min(pts, axis=0), np.max(pts, axis=0)
    lo_a, hi_a = corners(image)
    lo_b, hi_b = corners(reference)
    if np.any(hi_a < lo_b - 1) or np.any(hi_b < lo_a - 1):
        raise InputError(f"{path}: the segmentation does not overlap the CT volume")
