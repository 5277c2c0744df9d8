"""DICOM SEG for DICOM inputs (`segment --dicom-seg`, `batch --dicom-seg`, dicom_seg.write_dicom_seg), read back
with highdicom and pydicom: four segments with the tissue table's codes, the input's frame of reference and images,
every frame on its own slice."""
import random
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from LegSegNetLib.dicom_seg import write_dicom_seg
from LegSegNetLib.errors import InputError
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.tissues import TISSUES
from LegSegNetLib.volumes import read_ct

from conftest import array, real_dicom_slices, run_cli, write_dicom_series

FRAME_OF_REFERENCE = "1.2.826.0.1.3680043.2.1125.77.1"


def scanner_series(image, folder):
    """A DICOM series with the frame of reference every CT scanner writes (write_dicom_series leaves it out)."""
    write_dicom_series(image, folder)
    for path in sorted(Path(folder).glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = FRAME_OF_REFERENCE
        ds.save_as(path)
    return Path(folder)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom-seg")
    phantom = make_phantom(seed=1, shape=(14, 96, 128))
    series = scanner_series(phantom.ct, root / "ct")
    assert run_cli("segment", series, "-o", root / "out", "--engine", "threshold", "--dicom-seg") == 0
    sources = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in sorted(series.glob("*.dcm")))}
    labels_image = sitk.ReadImage(str(root / "out" / "labels.nii.gz"))
    return {"root": root, "series": series, "sources": sources, "labels_image": labels_image,
            "labels": array(labels_image), "seg_path": root / "out" / "segmentation.dcm"}


def test_four_segments_with_the_tissue_tables_codes(case):
    seg = hd.seg.segread(case["seg_path"])
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == len(TISSUES)
    for tissue, description in zip(TISSUES, seg.SegmentSequence):
        assert description.SegmentNumber == tissue.label and description.SegmentLabel == tissue.short
        for sequence, code in ((description.SegmentedPropertyCategoryCodeSequence, tissue.category),
                               (description.SegmentedPropertyTypeCodeSequence, tissue.type)):
            assert (sequence[0].CodingSchemeDesignator, sequence[0].CodeValue, sequence[0].CodeMeaning) == \
                (code.scheme, code.value, code.meaning)
        regions = description.get("AnatomicRegionSequence", [])
        assert [(r.CodeValue, r.CodeMeaning) for r in regions] == \
            ([(tissue.region.value, tissue.region.meaning)] if tissue.region.value else [])
        algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "LegSegNet" and "threshold" in algorithm.AlgorithmParameters
        assert description.SegmentAlgorithmType == "AUTOMATIC"
        rgb = hd.color.CIELabColor.from_dicom_value(description.RecommendedDisplayCIELabValue).to_rgb()
        assert np.abs(np.subtract(rgb, tissue.color)).max() <= 1


def test_references_the_input_series_and_its_frame_of_reference(case):
    seg = pydicom.dcmread(case["seg_path"])
    source = next(iter(case["sources"].values()))
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID == FRAME_OF_REFERENCE
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == set(case["sources"])


def test_every_frame_lies_on_its_source_slice(case):
    """Frame by frame: the source image it names, its plane position and its pixels are the label slice there."""
    seg = pydicom.dcmread(case["seg_path"])
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    counts = dict.fromkeys((t.label for t in TISSUES), 0)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        source = case["sources"][uid]
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in source.ImagePositionPatient], atol=1e-4)
        k = case["labels_image"].TransformPhysicalPointToIndex(position)[2]
        number = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        assert np.array_equal(frame, case["labels"][k] == number)
        counts[number] += int(frame.sum())
    assert counts == {t.label: int((case["labels"] == t.label).sum()) for t in TISSUES}
    assert all(counts.values())


def test_any_file_order_and_axis_order_give_the_same_frames(case, tmp_path):
    ct = read_ct(case["series"])
    files = list(ct.files)
    random.Random(0).shuffle(files)
    flipped = sitk.Flip(case["labels_image"], [True, False, True])    # same voxels, other index order
    write_dicom_seg(array(flipped), flipped, files, tmp_path / "shuffled.dcm", "threshold")
    expected, shuffled = (hd.seg.segread(p) for p in (case["seg_path"], tmp_path / "shuffled.dcm"))
    for number in (t.label for t in TISSUES):
        uids = [uid for _s, _r, uid in expected.get_source_image_uids()]
        a = expected.get_pixels_by_source_instance(uids, segment_numbers=[number])
        b = shuffled.get_pixels_by_source_instance(uids, segment_numbers=[number])
        assert np.array_equal(a, b)


def test_labels_off_the_series_grid_are_refused(case):
    ct = read_ct(case["series"])
    coarse = sitk.Image(ct.image)
    coarse.SetSpacing([s * 2 for s in ct.image.GetSpacing()])
    with pytest.raises(InputError, match="not on the segmentation's grid"):
        write_dicom_seg(case["labels"], coarse, ct.files, case["root"] / "x.dcm", "threshold")
    shorter = ct.image[:, :, 2:]
    with pytest.raises(InputError, match="outside the segmented volume"):
        write_dicom_seg(case["labels"][2:], shorter, ct.files, case["root"] / "y.dcm", "threshold")


def test_refused_with_exit_2_for_image_files_and_series_without_frame_of_reference(case, tmp_path, capsys):
    nifti = tmp_path / "ct.nii.gz"
    sitk.WriteImage(make_phantom(seed=1, shape=(8, 64, 96)).ct, str(nifti))
    no_frame = write_dicom_series(make_phantom(seed=1, shape=(8, 64, 96)).ct, tmp_path / "no-frame")
    for source, message in ((nifti, "needs a DICOM series"), (no_frame, "FrameOfReferenceUID")):
        out = tmp_path / f"out-{source.name}"
        assert run_cli("segment", source, "-o", out, "--engine", "threshold", "--dicom-seg") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()


def test_batch_passes_dicom_seg_on_and_refuses_image_files(case, tmp_path, capsys):
    out = tmp_path / "cohort"
    assert run_cli("batch", case["series"], "-o", out, "--workers", 1, "--engine", "threshold", "--dicom-seg") == 0
    (case_dir,) = (out / "cases").iterdir()
    seg = pydicom.dcmread(case_dir / "segmentation.dcm")
    assert seg.FrameOfReferenceUID == FRAME_OF_REFERENCE
    assert np.array_equal(array(sitk.ReadImage(str(case_dir / "labels.nii.gz"))), case["labels"])
    nifti = tmp_path / "ct.nii.gz"
    sitk.WriteImage(make_phantom(seed=1, shape=(8, 64, 96)).ct, str(nifti))
    capsys.readouterr()
    assert run_cli("batch", case["series"], nifti, "-o", tmp_path / "mixed", "--engine", "threshold",
                   "--dicom-seg") == 2
    assert "needs a DICOM series" in capsys.readouterr().err
    assert not (tmp_path / "mixed").exists()


def test_a_scanners_series_is_referenced_frame_by_frame(tmp_path):
    """Slices as a real scanner exported them (real CT, CC BY 3.0): their own frame of reference and UIDs."""
    series = real_dicom_slices()
    assert run_cli("segment", series, "-o", tmp_path / "out", "--engine", "threshold", "--dicom-seg") == 0
    sources = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p, stop_before_pixels=True)
                                                 for p in sorted(series.glob("*.dcm")))}
    seg = hd.seg.segread(tmp_path / "out" / "segmentation.dcm")
    assert seg.FrameOfReferenceUID == next(iter(sources.values())).FrameOfReferenceUID
    assert {uid for _study, _series, uid in seg.get_source_image_uids()} == set(sources)
    labels = array(sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz")))
    for tissue in TISSUES:
        pixels = seg.get_pixels_by_source_instance(list(sources), segment_numbers=[tissue.label])
        assert pixels.sum() == (labels == tissue.label).sum() > 0, tissue.short
