"""DICOM series: checking from the headers (read in dicom_headers) that the chosen series' slices form one even
stack (the faults clinical exports really have), and only then reading the pixels into a volume.
"""
import hashlib
import logging
import os

import numpy as np
import SimpleITK as sitk

from .dicom_headers import ORIENTATION_TOLERANCE, choose_series, printable, refuse_unreadable, scan_folder
from .errors import InputError
from .limits import check_size

log = logging.getLogger(__name__)

# Every slice must lie within 1 % of the slice spacing of its place on an even grid along the slice normal.
# Volumes are voxel count x voxel size, so a slab whose position is off by 1 % changes its volume by at most
# 1 %, well inside segmentation uncertainty; position rounding in real headers (DS strings, 16 characters)
# is orders of magnitude smaller. The same bound applies sideways: a slice shifted off the normal (gantry
# tilt) by more than 1 % of the spacing is refused.
SPACING_TOLERANCE = 0.01
SAME_POSITION_MM = 1e-3        # two slices this close are at the same position (DS strings carry more digits)
MAX_STRAY_IMAGES = 3           # a few images in another plane than the rest of a series are scouts, skipped
DICOM_BYTES_PER_VOXEL = 4      # the series reader gives float32 where a rescale slope is fractional, else int16


# ---------------------------------------------------------------- checks within the series
def _same_kind(a, b):
    return (a.size == b.size and np.abs(a.orientation - b.orientation).max() <= ORIENTATION_TOLERANCE
            and np.allclose(a.pixel_spacing, b.pixel_spacing, rtol=1e-6, atol=0))


def _group_by_kind(slices):
    groups = []
    for s in slices:
        for group in groups:
            if _same_kind(group[0], s):
                group.append(s)
                break
        else:
            groups.append([s])
    return sorted(groups, key=len, reverse=True)


def _describe(s):
    cosines = ",".join(f"{v:g}" for v in np.round(s.orientation, 4))
    return f"{s.size[0]}x{s.size[1]} pixels of {s.pixel_spacing[0]:g}x{s.pixel_spacing[1]:g} mm, orientation {cosines}"


def _positions_text(slices):
    values = sorted(float(s.position @ s.normal) for s in slices)
    shown = ", ".join(f"{v:.2f}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
    return f"at {shown} mm along the slice normal"


def _main_stack(path, slices, notes):
    """The slices of one shape and orientation; localizer images and a few strays are skipped with a note."""
    for s in slices:
        if s.size[2] > 1:
            raise InputError(f"{s.file}: multi-frame DICOM ({s.size[2]} frames in one file) is not read, its "
                             "frame positions cannot be checked; export the series as one file per slice")
        missing = [name for name, value in (("ImageOrientationPatient", s.orientation),
                                            ("ImagePositionPatient", s.position),
                                            ("PixelSpacing", s.pixel_spacing)) if value is None]
        if missing and not s.is_localizer:
            raise InputError(f"{s.file}: DICOM file has no valid {' or '.join(missing)}; the voxel geometry "
                             "is unknown")
    localizers = [s for s in slices if s.is_localizer]
    slices = [s for s in slices if not s.is_localizer]
    if localizers:
        notes.append(f"skipped {len(localizers)} localizer image(s) in the series")
    groups = _group_by_kind(slices)
    main, strays = groups[0], [s for group in groups[1:] for s in group]
    # a scout lies in another plane; an image parallel to the stack but of another size is no scout
    parallel = any(abs(s.normal @ main[0].normal) > 1 - ORIENTATION_TOLERANCE for s in strays)
    if strays and (parallel or len(strays) > MAX_STRAY_IMAGES or 4 * len(strays) > len(main)):
        other = groups[1]
        raise InputError(f"{path}: DICOM series mixes image orientations or sizes: {len(main)} files of "
                         f"{_describe(main[0])} and {len(strays)} others ({len(other)} of {_describe(other[0])}, "
                         f"{_positions_text(other)})")
    if strays:
        notes.append(f"skipped {len(strays)} image(s) in another plane than the other "
                     f"{len(main)} of the series (scouts?): {', '.join(os.path.basename(s.file) for s in strays)}")
    return main


def _file_digest(name):
    with open(name, "rb") as f:
        return hashlib.sha256(f.read()).digest()


def _drop_duplicates(path, stack, notes):
    """Identical copies of a file are dropped with a note; two different images at one position are refused."""
    kept, dropped = [stack[0]], []
    for s in stack[1:]:
        previous = kept[-1]
        if np.linalg.norm(s.position - previous.position) > SAME_POSITION_MM:
            kept.append(s)
        elif _file_digest(s.file) == _file_digest(previous.file):
            dropped.append(f"{os.path.basename(s.file)} (= {os.path.basename(previous.file)})")
        else:
            raise InputError(f"{path}: DICOM series has two different images at the same slice position "
                             f"({float(s.position @ s.normal):.2f} mm along the slice normal): "
                             f"{os.path.basename(previous.file)} and {os.path.basename(s.file)}")
    if dropped:
        notes.append(f"dropped {len(dropped)} duplicate DICOM file(s), byte-identical copies of another slice "
                     f"at the same position: {', '.join(dropped)}")
    return kept


def _even_spacing(path, stack):
    """The slice spacing of a stack sorted along its normal, or InputError naming the fault and positions."""
    normal = stack[0].normal
    offsets = np.array([s.position - stack[0].position for s in stack])
    along = offsets @ normal
    step = along[-1] / (len(stack) - 1)
    sideways = np.linalg.norm(offsets - np.outer(along, normal), axis=1)
    if sideways.max() > SPACING_TOLERANCE * step:
        k = int(sideways.argmax())
        raise InputError(f"{path}: DICOM slices are not stacked along the slice normal (gantry tilt or shifted "
                         f"slices): the slice at {along[k] + stack[0].position @ normal:.2f} mm lies "
                         f"{sideways[k]:.2f} mm off the normal through the first slice; resample to an untilted "
                         "volume first")
    if np.abs(along - step * np.arange(len(stack))).max() <= SPACING_TOLERANCE * step:
        return step
    gaps = np.diff(along)
    usual = float(np.median(gaps))
    k = int(np.abs(gaps - usual).argmax())
    where = f"between the slices at {along[k] + stack[0].position @ normal:.2f} and " \
            f"{along[k + 1] + stack[0].position @ normal:.2f} mm along the slice normal"
    ratio = gaps[k] / usual
    if round(ratio) >= 2 and abs(ratio - round(ratio)) <= SPACING_TOLERANCE * round(ratio):
        raise InputError(f"{path}: DICOM series has a gap (missing slice file?): {gaps[k]:.2f} mm {where}, "
                         f"where the other slices are {usual:.2f} mm apart")
    raise InputError(f"{path}: DICOM series has uneven slice spacing: {gaps[k]:.2f} mm {where}, the usual "
                     f"spacing is {usual:.2f} mm (spacing from {gaps.min():.2f} to {gaps.max():.2f} mm; "
                     f"tolerance {SPACING_TOLERANCE:.0%})")


def _ordered_stack(path, stack, notes):
    """(slices sorted inferior-first along the normal, slice spacing in mm), after every stack check."""
    stack = sorted(stack, key=lambda s: float(s.position @ s.normal))
    stack = _drop_duplicates(path, stack, notes)
    if len(stack) > 1:
        return stack, _even_spacing(path, stack)
    if stack[0].thickness is None:
        raise InputError(f"{stack[0].file}: single-file DICOM series without SliceThickness (0018,0050); "
                         "the slice spacing is unknown")
    notes.append(f"single-slice DICOM series: slice spacing taken from SliceThickness, {stack[0].thickness:g} mm")
    return stack, stack[0].thickness


def _refuse_continuations(path, stack, spacing, others):
    """Another series whose every image extends this stack's even grid is part of the same scan (a damaged
    SeriesInstanceUID, or one scan split into series): refused rather than silently left out. Series on the
    same grid within the stack (another reconstruction kernel) or on another grid (thin slices) are fine."""
    first = stack[0]
    for uid, group in others.items():
        steps = []
        for s in group:
            offset = s.position - first.position if s.position is not None and s.orientation is not None else None
            k = round(float(offset @ first.normal) / spacing) if offset is not None else 0
            if (0 <= k < len(stack) or not _same_kind(first, s)
                    or np.linalg.norm(offset - k * spacing * first.normal) > SPACING_TOLERANCE * spacing):
                break
            steps.append(k)
        else:
            positions = ", ".join(f"{first.position @ first.normal + k * spacing:.2f}" for k in sorted(steps)[:6])
            raise InputError(f"{path}: DICOM series {printable(uid)} ({len(group)} files at {positions} mm along the slice "
                             f"normal) continues the chosen series' slices on the same grid: one scan split into "
                             "series, or a file with a damaged SeriesInstanceUID")


# ---------------------------------------------------------------- reading
def _refuse_pixel_meaning(stack):
    """GDCM inverts MONOCHROME1 values (HU with the sign flipped) and reads a RescaleSlope of 0 as 1."""
    for s in stack:
        if s.photometric not in ("", "MONOCHROME2"):
            raise InputError(f"{s.file}: PhotometricInterpretation {printable(s.photometric)}; CT in HU is "
                             "MONOCHROME2 (MONOCHROME1 values would be read inverted)")
        if s.slope == 0:
            raise InputError(f"{s.file}: RescaleSlope 0 cannot give HU")


def _read_pixels(stack):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([s.file for s in stack])
    try:
        image = reader.Execute()
    except RuntimeError:
        for s in stack:                       # name the file that fails on its own
            try:
                sitk.ReadImage(s.file)
            except RuntimeError:
                raise InputError(f"{s.file}: DICOM pixel data cannot be read") from None
        raise
    if image.GetDimension() == 2:             # one slice: a volume one slice deep
        image = sitk.JoinSeries(image)
    return image


def _expected_geometry(stack, spacing):
    first = stack[0]
    direction = np.column_stack([first.orientation[:3], first.orientation[3:], first.normal])
    return {"size": (first.size[0], first.size[1], len(stack)),
            "spacing": (first.pixel_spacing[0], first.pixel_spacing[1], spacing),
            "origin": tuple(first.position), "direction": tuple(direction.ravel())}


def _check_geometry(path, image, expected):
    """SimpleITK's reading must agree with the headers; the exact header values are then set on the image."""
    spacing = np.array(image.GetSpacing())
    agrees = (tuple(image.GetSize()) == expected["size"]
              and np.allclose(spacing[:2], expected["spacing"][:2], rtol=1e-6)
              and (expected["size"][2] == 1
                   or abs(spacing[2] - expected["spacing"][2]) <= SPACING_TOLERANCE * expected["spacing"][2])
              and np.allclose(image.GetOrigin(), expected["origin"], atol=SAME_POSITION_MM)
              and (expected["size"][2] == 1
                   or np.allclose(image.GetDirection(), expected["direction"], atol=ORIENTATION_TOLERANCE)))
    if not agrees:
        raise InputError(f"{path}: the DICOM reader's geometry (size {image.GetSize()}, spacing "
                         f"{tuple(np.round(spacing, 4))}, origin {tuple(np.round(image.GetOrigin(), 3))}) "
                         f"differs from the headers' (size {expected['size']}, spacing "
                         f"{tuple(np.round(expected['spacing'], 4))}, origin {tuple(np.round(expected['origin'], 3))})")
    image.SetSpacing(expected["spacing"])
    image.SetOrigin(expected["origin"])
    image.SetDirection(expected["direction"])
    return image


def read_dicom_folder(path, notes, series_uid=None):
    """(image, files) of one CT series of a folder tree (the largest, or the one with series_uid), after
    checking from the headers that its slices form one even stack; faults are InputErrors naming them."""
    path = os.fspath(path)
    slices, unreadable = scan_folder(path)
    refuse_unreadable(unreadable, notes)
    uid, series = choose_series(path, slices, notes, series_uid)
    stack = _main_stack(path, series.pop(uid), notes)
    modality = stack[0].modality
    if modality and modality != "CT":
        raise InputError(f"{path}: DICOM modality is {modality}, not CT")
    _refuse_pixel_meaning(stack)
    stack, spacing = _ordered_stack(path, stack, notes)
    _refuse_continuations(path, stack, spacing, series)
    check_size(path, (stack[0].size[0], stack[0].size[1], len(stack)), DICOM_BYTES_PER_VOXEL)
    image = _check_geometry(path, _read_pixels(stack), _expected_geometry(stack, spacing))
    for note in notes:
        log.warning(note)
    return image, [s.file for s in stack]
