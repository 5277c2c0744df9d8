"""DICOM headers: finding the image series in a folder (tree) from what each file's header says, before any
pixel is read; files that cannot be read are refused by name, localizer series and non-image files left out.

Headers are read file by file with GDCM through SimpleITK (no extra dependency); GDCM refuses a file that is
cut short anywhere, so a truncated slice is found here and named rather than silently left out of the series.
"""
import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import InputError

ORIENTATION_TOLERANCE = 1e-4   # direction cosines: real headers repeat one string; 1e-4 is ~0.006 degrees
LOCALIZER_TYPES = ("LOCALIZER", "SCOUT")
NON_IMAGE_SOP_CLASS = b"1.2.840.10008.5.1.4.1.1."   # storage SOP classes; these suffixes hold no image:
NON_IMAGE_SUFFIXES = (b"88.", b"481.", b"11.", b"104.", b"66")   # SR, RT, presentation states, documents, raw


@dataclass
class Slice:
    """What the headers of one DICOM file say about where its image lies."""
    file: str
    series: str
    image_type: str
    modality: str
    size: tuple            # columns, rows, frames
    orientation: np.ndarray  # row direction, column direction (6 cosines)
    position: np.ndarray     # ImagePositionPatient (mm) or None
    pixel_spacing: tuple     # (between columns, between rows) in mm, i.e. x then y; or None
    thickness: float         # SliceThickness (mm) or None
    photometric: str = ""    # PhotometricInterpretation
    slope: float = None      # RescaleSlope

    @property
    def normal(self):
        normal = np.cross(self.orientation[:3], self.orientation[3:])
        return normal / np.linalg.norm(normal)

    @property
    def is_localizer(self):
        return any(word in self.image_type.upper().split("\\") for word in LOCALIZER_TYPES)


# ---------------------------------------------------------------- finding the files
def _numbers(text):
    try:
        return np.array([float(v) for v in text.split("\\")]) if text.strip() else None
    except ValueError:
        return None


def _finite(values, count, positive=False):
    """The values when there are `count` finite ones (and positive where asked), else None."""
    if values is None or len(values) != count or not np.isfinite(values).all() or (positive and (values <= 0).any()):
        return None
    return values


def _unit_rows(cosines):
    """Row and column directions scaled to length 1 (headers round them), or None unless they are two
    perpendicular directions."""
    if _finite(cosines, 6) is None:
        return None
    pair = cosines.reshape(2, 3)
    lengths = np.linalg.norm(pair, axis=1, keepdims=True)
    if (lengths < 0.5).any():
        return None
    row, column = pair / lengths
    return np.concatenate([row, column]) if abs(row @ column) <= ORIENTATION_TOLERANCE else None


def _read_header(path):
    """A Slice, or None when GDCM cannot read the file (not DICOM, truncated, corrupt, not an image)."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None

    def tag(key):
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    size = tuple(reader.GetSize()) + (1,) * (3 - reader.GetDimension())
    spacing = _finite(_numbers(tag("0028|0030")), 2, positive=True)
    thickness = _finite(_numbers(tag("0018|0050")), 1, positive=True)
    return Slice(path, tag("0020|000e"), tag("0008|0008"), tag("0008|0060"), size,
                 _unit_rows(_numbers(tag("0020|0037"))), _finite(_numbers(tag("0020|0032")), 3),
                 None if spacing is None else (spacing[1], spacing[0]),   # DICOM: between rows, then columns
                 None if thickness is None else float(thickness[0]), tag("0028|0004").upper(),
                 None if (slope := _finite(_numbers(tag("0028|1053")), 1)) is None else float(slope[0]))


def _looks_like_dicom(path):
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM" or path.lower().endswith((".dcm", ".ima"))


def scan_folder(path, recursive=True):
    """(readable slices, unreadable DICOM-looking files) in a folder (tree) or one file; other files are ignored."""
    names = [path] if os.path.isfile(path) else []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(dirs) if recursive else []
        names += [os.path.join(root, name) for name in sorted(files)
                  if not name.startswith(".") and name.upper() != "DICOMDIR"]
    slices, unreadable = [], []
    for name in names:
        if not os.path.isfile(name):                  # FIFOs, devices, dangling links: never opened
            continue
        if (header := _read_header(name)) is not None:
            slices.append(header)
        elif _looks_like_dicom(name):
            unreadable.append(name)
    return slices, unreadable


def printable(text):
    """Header text fit for a one-line message (a damaged header may hold any bytes)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _series_of(slices):
    """{SeriesInstanceUID: slices}, series made only of localizer images left out."""
    series = {}
    for s in slices:
        series.setdefault(s.series, []).append(s)
    return {uid: group for uid, group in series.items() if not all(s.is_localizer for s in group)}


def list_dicom_series(path, recursive=True):
    """{SeriesInstanceUID: file names} for every readable image series in a folder (tree), localizers excepted."""
    return {uid: [s.file for s in group] for uid, group in _series_of(scan_folder(os.fspath(path), recursive)[0]).items()}


def choose_series(path, slices, notes, series_uid):
    series = _series_of(slices)
    skipped = len({s.series for s in slices}) - len(series)
    if skipped:
        notes.append(f"skipped {skipped} localizer series")
    if series_uid is not None:   # one named series (cohort runs: each series is its own case)
        if series_uid not in series:
            raise InputError(f"{path}: the requested DICOM series is not in this folder")
        return series_uid, series
    if not series:
        raise InputError(f"{path}: folder holds no DICOM series")
    uid = max(series, key=lambda key: len(series[key]))
    if len(series) > 1:
        notes.append(f"{len(series)} DICOM series found; using the largest ({len(series[uid])} files, {printable(uid)})")
    return uid, series


def _is_non_image(name):
    """The file meta header names a SOP class that holds no image (report, RT, presentation state, PDF)."""
    with open(name, "rb") as f:
        head = f.read(2048)
    return any(NON_IMAGE_SOP_CLASS + suffix in head for suffix in NON_IMAGE_SUFFIXES)


def refuse_unreadable(unreadable, notes):
    """A DICOM file GDCM cannot read is refused by name (it may be a slice cut short), unless its header says
    it holds no image at all (dose reports and the like beside a CT series): those are only noted."""
    for name in unreadable:
        if not _is_non_image(name):
            raise InputError(f"{name}: DICOM file cannot be read (truncated or corrupt)")
    if unreadable:
        notes.append(f"ignored {len(unreadable)} DICOM file(s) without an image (reports, structured data), "
                     f"e.g. {os.path.basename(unreadable[0])}")
