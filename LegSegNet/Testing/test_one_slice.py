"""One axial slice as input through the CLI: a one-slice NIfTI, a 2D NRRD/MHA, a 2D DICOM file and an 8-bit
PNG windowed [-200, 200] HU give the same areas as that slice within a volume; a PNG without a pixel size
reports pixel counts; colour and 16-bit pictures are refused."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cli
from LegSegNetLib.nnunet import hu_to_uint8
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.slice_images import windowed_to_hu
from LegSegNetLib.volumes import AxialView

TEST_MODEL = Path(__file__).parent / "Data" / "nnunet_test_model"
SHAPE, SPACING = (12, 176, 224), (4.0, 1.6, 1.6)
K = 7                                          # the slice taken out of the volume


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """(folder, canonical HU, its NIfTI with identity direction) of a phantom."""
    folder = tmp_path_factory.mktemp("one-slice")
    p = make_phantom(seed=5, shape=SHAPE, spacing=SPACING)
    hu = AxialView.of(p.ct).to_canonical(sitk.GetArrayFromImage(p.ct)).copy()
    path = folder / "volume.nii.gz"
    sitk.WriteImage(image_of(hu), str(path))
    return folder, hu, path


def image_of(hu, spacing=SPACING):
    image = sitk.GetImageFromArray(np.ascontiguousarray(hu))
    image.SetSpacing(spacing[::-1][:hu.ndim])
    return image


def tables(out):
    with open(out / "slices.csv") as f:
        slices = list(csv.DictReader(f))
    with open(out / "statistics.csv") as f:
        stats = list(csv.DictReader(f))
    return slices, stats, json.loads((out / "report.json").read_text())


def segment(path, out, *options):
    assert run_cli("segment", path, "-o", out, *options) == 0
    return tables(out)


def area_columns(row, suffix="_cm2"):
    return {k: float(v) for k, v in row.items() if k.endswith(suffix)}


def same_areas(one, reference, suffix="_cm2"):
    a, b = area_columns(one, suffix), area_columns(reference)
    assert a.keys() == {k[:-4] + suffix for k in b}
    for key, value in b.items():
        assert a[key[:-4] + suffix] == pytest.approx(value, rel=1e-6, abs=1e-9), key   # float32 NIfTI spacing


@pytest.fixture(scope="module")
def classical_reference(volume):
    """Slice K's row in a volume of five copies of it: the classical engine averages each limb's envelope over
    neighbouring slices, so in the phantom's own volume slice K also depends on its neighbours."""
    folder, hu, _ = volume
    path = folder / "copies.nii.gz"
    sitk.WriteImage(image_of(np.repeat(hu[K:K + 1], 5, axis=0)), str(path))
    return segment(path, folder / "copies-out", "--engine", "threshold")[0][2]


def write_slice_dicom(hu, path):
    """One CT DICOM file of a 2D slice, the tags a scanner writes."""
    image = sitk.Cast(image_of(hu), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for tag, value in (("0008|0060", "CT"), ("0020|000e", "1.2.826.0.1.3680043.2.1125.77.1"),
                       ("0020|000d", "1.2.826.0.1.3680043.2.1125.77.2"), ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"),
                       ("0008|0018", "1.2.826.0.1.3680043.2.1125.77.3"), ("0020|0032", "0\\0\\28"),
                       ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", f"{SPACING[1]}\\{SPACING[2]}"),
                       ("0018|0050", str(SPACING[0])), ("0028|1052", "0"), ("0028|1053", "1")):
        image.SetMetaData(tag, value)
    writer.SetFileName(str(path))
    writer.Execute(image)
    return path


@pytest.mark.parametrize("kind", ["one-slice NIfTI", "2D NRRD", "2D MHA", "2D DICOM"])
def test_one_slice_files_give_the_volume_slice_areas(tmp_path, volume, classical_reference, kind):
    _, hu, _ = volume
    if kind == "one-slice NIfTI":
        path = tmp_path / "slice.nii.gz"
        sitk.WriteImage(image_of(hu[K:K + 1]), str(path))
    elif kind == "2D DICOM":
        path = write_slice_dicom(hu[K], tmp_path / "slice.dcm")
    else:
        path = tmp_path / ("slice.nrrd" if kind == "2D NRRD" else "slice.mha")
        sitk.WriteImage(image_of(hu[K]), str(path))
    slices, stats, report = segment(path, tmp_path / "out", "--engine", "threshold")
    assert len(slices) == 1
    same_areas(slices[0], classical_reference)
    labels = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    assert labels.GetSize() == (SHAPE[2], SHAPE[1], 1)                      # on the input's own grid
    if kind.startswith("2D") and kind != "2D DICOM":                        # no thickness: volumes are areas
        assert "volume_cm2" in stats[0] and "volume_cm3" not in stats[0]
        assert report["units"]["unknown"] == ["slice_thickness"]
        row = next(r for r in stats if r["tissue"] == "SM" and r["leg"] == "both")
        assert float(row["volume_cm2"]) == pytest.approx(float(classical_reference["SM_both_cm2"]))
    else:
        assert "volume_cm3" in stats[0] and "units" not in report
    assert (tmp_path / "out" / "overview.png").is_file() and (tmp_path / "out" / "qc.csv").is_file()


def windowed_png(hu, path):
    sitk.WriteImage(sitk.GetImageFromArray(hu_to_uint8(hu)), str(path))
    return path


def test_windowed_png_round_trips_the_network_input():
    values = np.arange(256, dtype=np.uint8)
    assert (hu_to_uint8(windowed_to_hu(values)) == values).all()


def test_png_with_pixel_size_gives_the_volume_slice_areas_with_the_network(tmp_path, volume):
    folder, hu, path = volume
    reference = segment(path, tmp_path / "volume", "--engine", "nnunet", "--model", TEST_MODEL)[0][K]
    png = windowed_png(hu[K], tmp_path / "slice.png")
    slices, _, report = segment(png, tmp_path / "png", "--engine", "nnunet", "--model", TEST_MODEL,
                                "--pixel-mm", f"{SPACING[2]},{SPACING[1]}")
    same_areas(slices[0], reference)
    assert any("8-bit value v -> HU" in note for note in report["notes"])
    assert report["units"]["areas"] == "cm2"


def test_png_without_pixel_size_reports_pixel_counts(tmp_path, volume):
    _, hu, _ = volume
    png = windowed_png(hu[K], tmp_path / "slice.png")
    slices, stats, report = segment(png, tmp_path / "px", "--engine", "threshold")
    assert not any(key.endswith(("_cm2", "_cm3")) for key in {**slices[0], **stats[0]})
    counts = area_columns(slices[0], "_px")
    assert counts["SM_both_px"] > 100 and all(float(v).is_integer() for v in counts.values())
    row = next(r for r in stats if r["tissue"] == "SM" and r["leg"] == "both")
    assert float(row["volume_px"]) == counts["SM_both_px"] == float(row["voxel_count"])
    assert report["units"]["areas"] == "px" and any("no pixel size" in n for n in report["notes"])
    with open(tmp_path / "px" / "midthigh.csv") as f:
        assert "SM_px" in next(csv.DictReader(f))
    jpeg = tmp_path / "slice.jpg"
    sitk.WriteImage(sitk.GetImageFromArray(hu_to_uint8(hu[K])), str(jpeg))
    assert segment(jpeg, tmp_path / "jpeg", "--engine", "threshold", "--pixel-mm", "1.6")[0][0]["SM_both_cm2"]


@pytest.mark.parametrize("kind, message", [("colour", "colour images are not CT"),
                                           ("16-bit", "an 8-bit grey slice"),
                                           ("pixel-mm on NIfTI", "--pixel-mm is for PNG/JPEG slices only")])
def test_refused_pictures(tmp_path, volume, capsys, kind, message):
    _, hu, path = volume
    options = []
    if kind == "colour":
        grey = hu_to_uint8(hu[K])
        path = tmp_path / "colour.png"
        sitk.WriteImage(sitk.GetImageFromArray(np.stack([grey, grey, grey], -1), isVector=True), str(path))
    elif kind == "16-bit":
        path = tmp_path / "deep.png"
        sitk.WriteImage(sitk.GetImageFromArray((hu[K] + 1024).clip(0).astype(np.uint16)), str(path))
    else:
        options = ["--pixel-mm", "1"]
    assert run_cli("segment", path, "-o", tmp_path / "out", *options) == 2
    assert message in capsys.readouterr().err
