"""One axial slice as input: an 8-bit PNG/JPEG windowed as the published app expects, a 2D image file, and the
table units of a slice whose pixel size or thickness is not known.

The published app's PNG tab takes slices windowed [-200, 200] HU -> 0..255 (truncated, nnunet.hu_to_uint8). We
read them back as HU: 1..254 -> the centre of its 400/255 HU bin (-200 + 400 (v + 0.5) / 255), so the network
sees exactly the same 8-bit values again; 0 (-200 HU or below) is read as air, -1000 HU, and 255 (+200 HU or
above) as dense bone, +1000 HU, so the classical engine's air and cortex limits see them as what they are.
"""
import numpy as np
import SimpleITK as sitk

from .errors import InputError

WINDOW_HU = (-200.0, 200.0)
BELOW_WINDOW_HU = -1000.0      # 8-bit 0: air
ABOVE_WINDOW_HU = 1000.0       # 8-bit 255: cortical bone
WINDOWED_SUFFIXES = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg")}
MAPPING = ("8-bit value v -> HU: 0 -> -1000 (air, at or below -200), 1..254 -> -200 + 400 (v + 0.5) / 255 "
           "(inverse of the [-200, 200] HU window, 1.6 HU steps), 255 -> +1000 (bone, at or above +200)")
NOMINAL_MM = 1.0               # spacing stored for what the input does not say (reported, never used as mm)
# Where a size is unknown the statistics are computed with 10 mm steps (1 cm² a pixel, 1 cm³ a voxel) so every
# area and volume equals its pixel count, and the columns are renamed (see table_units).
COUNTING_MM = 10.0


def is_windowed_slice(path, content_kind):
    """A PNG/JPEG whose name says so (a PNG named .nii.gz stays refused as a mislabelled file)."""
    return str(path).lower().endswith(WINDOWED_SUFFIXES.get(content_kind, ("\0",)))


def windowed_to_hu(values):
    v = np.asarray(values, np.float32)
    hu = WINDOW_HU[0] + (WINDOW_HU[1] - WINDOW_HU[0]) * (v + 0.5) / 255.0
    return np.where(v <= 0, BELOW_WINDOW_HU, np.where(v >= 255, ABOVE_WINDOW_HU, hu)).astype(np.float32)


def read_windowed_slice(path, kind, pixel_mm, notes):
    """(3D one-slice HU image, sizes the input does not give) of an 8-bit grey PNG/JPEG."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    components, pixel = reader.GetNumberOfComponents(), reader.GetPixelID()
    if reader.GetDimension() != 2 or components not in (1, 2) or pixel != sitk.sitkUInt8 and components == 1:
        what = f"{components} channels" if components > 2 else sitk.GetPixelIDValueAsString(pixel)
        raise InputError(f"{path}: {kind} of {what}; an 8-bit grey slice windowed [-200, 200] HU is needed "
                         "(colour images are not CT)")
    image = reader.Execute()
    if components == 2:        # grey + alpha: the alpha channel carries no HU
        image = sitk.VectorIndexSelectionCast(image, 0)
    hu = sitk.GetImageFromArray(windowed_to_hu(sitk.GetArrayViewFromImage(image))[None])
    notes.append(f"{kind} slice read as HU: {MAPPING}")
    unknown = ["slice_thickness"]
    if pixel_mm is None:
        unknown.append("pixel_size")
        notes.append(f"{kind} has no pixel size: areas are pixel counts (columns ending _px); "
                     "give --pixel-mm X[,Y] for cm²")
        spacing = (NOMINAL_MM, NOMINAL_MM)
    else:
        spacing = tuple(pixel_mm)
        notes.append(f"pixel size {spacing[0]:g} x {spacing[1]:g} mm from --pixel-mm")
    hu.SetSpacing((*spacing, NOMINAL_MM))
    notes.append("slice thickness unknown: volumes are given as the slice's areas (columns ending _cm2 or _px)")
    return hu, unknown


def as_one_slice_volume(image, notes):
    """A 2D image file as a volume one (axial) slice deep; its thickness is unknown."""
    spacing, origin = image.GetSpacing(), image.GetOrigin()
    direction = np.array(image.GetDirection()).reshape(2, 2)
    volume = sitk.JoinSeries(image)
    volume.SetSpacing((*spacing, NOMINAL_MM))
    volume.SetOrigin((*origin, 0.0))
    full = np.eye(3)
    full[:2, :2] = direction
    volume.SetDirection(full.ravel().tolist())
    notes.append("2D image read as one axial slice; slice thickness unknown: volumes are given as the slice's "
                 "areas (columns ending _cm2)")
    return volume


def parse_pixel_mm(text):
    """'X[,Y]' (mm between columns, between rows) -> (x, y); None for None."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--pixel-mm '{text}': expected X or X,Y in mm") from None
    if len(values) not in (1, 2) or not all(0.05 <= v <= 5.0 for v in values):
        raise InputError(f"--pixel-mm '{text}': one or two sizes within 0.05..5 mm")
    return (values[0], values[-1])


def counting_spacing(spacing, unknown):
    """The (z, y, x) spacing statistics are computed with: known sizes as they are, unknown ones COUNTING_MM."""
    z, y, x = spacing
    if "pixel_size" in unknown:
        return (COUNTING_MM, COUNTING_MM, COUNTING_MM)
    return (COUNTING_MM if "slice_thickness" in unknown else z, y, x)


def table_units(rows, unknown):
    """Rename the columns of table rows whose unit the input cannot give: with no pixel size, areas and volumes
    are pixel counts (_px); with no slice thickness, a one-slice volume is the slice's area (_cm3 -> _cm2)."""
    if "pixel_size" in unknown:
        rename = {"_cm2": "_px", "_cm3": "_px"}
    elif "slice_thickness" in unknown:
        rename = {"_cm3": "_cm2"}
    else:
        return rows
    def renamed(key):
        return next((key[:-len(old)] + new for old, new in rename.items() if key.endswith(old)), key)
    return [{renamed(k): v for k, v in row.items()} for row in rows]
