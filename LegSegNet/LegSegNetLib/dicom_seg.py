"""DICOM SEG of the tissue labels for a DICOM CT series (highdicom; the `dicom-seg` extra).

One binary segment per tissue with the tissue table's codes, referencing every source image and the series'
frame of reference, so PACS viewers and Slicer (any version) show the same four named, coloured segments."""
import os

import numpy as np

from . import __version__
from .errors import InputError
from .tissues import TISSUES
from .volumes import ijk_to_lps

FILE_NAME = "segmentation.dcm"
HOW_TO_GET = "DICOM SEG needs highdicom: pip install 'legsegnet[dicom-seg]'"
GRID_TOLERANCE = 1e-3      # in voxels: DICOM pixel centres must fall on the label grid


def write_dicom_seg(labels, reference, ct_files, path, engine_name, edited=False):
    """Write labels (k, j, i on the reference image's grid, values 1..4) as a DICOM SEG that references the CT
    series in ct_files (its slices in any order). engine_name: the engine that made the labels; edited: a person
    corrected them since (the segments are then SEMIAUTOMATIC, not AUTOMATIC)."""
    try:
        import highdicom as hd
        import pydicom
    except ImportError:
        raise InputError(HOW_TO_GET) from None
    sources = [pydicom.dcmread(os.fspath(f), stop_before_pixels=True) for f in ct_files]
    _check_sources(sources)
    lps_to_index = np.linalg.inv(ijk_to_lps(reference))
    labels = np.asarray(labels, np.uint8)
    frames = np.stack([_frame_of(labels, lps_to_index, ds) for ds in sources])
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(hd, engine_name, edited),
        series_instance_uid=hd.UID(), series_number=_series_number(sources[0]),
        sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="LegSegNet", manufacturer_model_name=f"LegSegNet {engine_name} engine",
        software_versions=__version__, device_serial_number="none",
        content_label="LEGSEGNET",
        content_description=f"Lower-extremity tissues ({', '.join(t.short for t in TISSUES)})",
        omit_empty_frames=True)
    seg.SeriesDescription = f"LegSegNet tissues ({engine_name})"
    seg.save_as(os.fspath(path))


def _check_sources(sources):
    for attribute in ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if any(attribute not in ds for ds in sources):
            raise InputError(f"the DICOM series lacks {attribute}; a DICOM SEG cannot reference it")
    if len({ds.FrameOfReferenceUID for ds in sources}) != 1:
        raise InputError("the DICOM series' images lie in different frames of reference")


def _frame_of(labels, lps_to_index, ds):
    """The labels on one source image's pixel grid (rows, columns), read off the label volume by index: the
    image's pixel centres must be voxel centres of the labels, its rows and columns along their axes."""
    iop = np.array(ds.ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    origin = (lps_to_index @ np.append(np.array(ds.ImagePositionPatient, float), 1.0))[:3]
    step_col = lps_to_index[:3, :3] @ (iop[:3] * col_spacing)    # to the next column
    step_row = lps_to_index[:3, :3] @ (iop[3:] * row_spacing)    # to the next row
    on_grid = all(np.abs(v - np.round(v)).max() <= GRID_TOLERANCE for v in (origin, step_col, step_row))
    origin, step_col, step_row = (np.round(v).astype(int) for v in (origin, step_col, step_row))
    row_axis, col_axis = int(np.abs(step_row).argmax()), int(np.abs(step_col).argmax())
    along_axes = np.abs(step_col).sum() == 1 and np.abs(step_row).sum() == 1 and row_axis != col_axis
    if not (on_grid and along_axes):
        raise InputError(f"DICOM image {ds.SOPInstanceUID}: its pixels are not on the segmentation's grid")
    ends = [origin, origin + (ds.Rows - 1) * step_row + (ds.Columns - 1) * step_col]
    if min(e.min() for e in ends) < 0 or any(np.any(e >= labels.shape[::-1]) for e in ends):
        raise InputError(f"DICOM image {ds.SOPInstanceUID}: outside the segmented volume")
    index = [int(v) for v in origin]                              # i, j, k; the slice's own axis stays fixed
    index[row_axis] = origin[row_axis] + step_row[row_axis] * np.arange(ds.Rows)[:, None]
    index[col_axis] = origin[col_axis] + step_col[col_axis] * np.arange(ds.Columns)[None, :]
    return labels[index[2], index[1], index[0]]


def _segment_descriptions(hd, engine_name, edited):
    algorithm = hd.AlgorithmIdentificationSequence(
        name="LegSegNet", version=__version__, family=_algorithm_family(engine_name),
        parameters={"engine": engine_name})
    kinds = hd.seg.SegmentAlgorithmTypeValues
    algorithm_type = kinds.SEMIAUTOMATIC if edited else kinds.AUTOMATIC
    descriptions = []
    for tissue in TISSUES:
        description = hd.seg.SegmentDescription(
            segment_number=tissue.label, segment_label=tissue.short,
            segmented_property_category=_coded(hd, tissue.category),
            segmented_property_type=_coded(hd, tissue.type),
            algorithm_type=algorithm_type, algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=f"LegSegNet {tissue.short}",
            anatomic_regions=[_coded(hd, tissue.region)] if tissue.region.value else None)
        description.RecommendedDisplayCIELabValue = dicom_cielab(tissue.color)   # highdicom < 0.23 has no option
        descriptions.append(description)
    return descriptions


def _coded(hd, code):
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def _algorithm_family(engine_name):
    from pydicom.sr.codedict import codes
    family = codes.cid7162
    return family.ArtificialIntelligence if engine_name == "nnunet" else family.MorphologicalOperations


def _series_number(source):
    number = source.get("SeriesNumber")
    return int(number) + 1000 if number not in (None, "") else 1000


def dicom_cielab(rgb):
    """sRGB 0..255 → DICOM's scaled CIELab (L 0..100, a and b -128..127, each mapped onto 0..65535)."""
    linear = np.array(rgb, float) / 255
    linear = np.where(linear <= 0.04045, linear / 12.92, ((linear + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz /= [0.95047, 1.0, 1.08883]                          # D65 white
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = (116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2]))
    return [int(round(lab[0] * 65535 / 100)), int(round((lab[1] + 128) * 65535 / 255)),
            int(round((lab[2] + 128) * 65535 / 255))]
