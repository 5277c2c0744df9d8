"""Every output of `segment` equals what straightforward numpy computes from the labels and the HU, after the
whole-process speed work (work item 13): statistics from labelled voxels only and histogram moments, per-slice
counts shared with QC and the mid-thigh level, gzip inputs read once and proven intact by their trailer."""
import csv
import gzip
import math

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib import image_files, midthigh, qc, volumes
from LegSegNetLib.classical import ClassicalEngine
from LegSegNetLib.errors import InputError
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.pipeline import segment_case
from LegSegNetLib.sides import split_legs
from LegSegNetLib.statistics import LAMA_HU, NAMA_HU, compute_statistics, slice_counts
from LegSegNetLib.tissues import LEGS, SIDE_LABELS, TISSUES
from LegSegNetLib.volumes import AxialView, read_ct

SPACING = (5.0, 0.8, 0.8)


def straightforward_counts(labels, sides):
    """(slices, labels, sides) pixel counts, one mask at a time."""
    return np.stack([np.stack([((labels == label) & (sides == side)).sum(axis=(1, 2)) for side in range(3)], axis=1)
                     for label in range(len(TISSUES) + 1)], axis=1)


def leg_mask(labels, sides, label, leg):
    mask = labels == label
    return mask if leg == "both" else mask & (sides == SIDE_LABELS[leg])


def expected_rows(hu, labels, sides, spacing):
    """statistics.csv rows by masks: count, volume, mean (exact integer sums for integer HU), sample std, median."""
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    rows = {}
    for tissue in TISSUES:
        for leg in LEGS:
            values = hu[leg_mask(labels, sides, tissue.label, leg)]
            n = values.size
            total = float(values.astype(np.int64).sum()) if values.dtype.kind in "iu" else float(values.sum(dtype=np.float64))
            rows[tissue.short, leg] = {
                "voxel_count": n, "volume_cm3": n * voxel_cm3, "mean_hu": total / n if n else math.nan,
                "std_hu": float(np.std(values.astype(np.float64), ddof=1)) if n > 1 else math.nan,
                "median_hu": float(np.median(values)) if n else math.nan,   # in the HU type, as numpy gives it
                "nama": int(((values >= NAMA_HU[0]) & (values <= NAMA_HU[1])).sum()),
                "lama": int(((values >= LAMA_HU[0]) & (values <= LAMA_HU[1])).sum())}
    return rows


def same(value, expected, exact):
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(value)
    return value == expected if exact else value == pytest.approx(expected, rel=1e-9, abs=1e-9)


def assert_statistics(stats, hu, labels, sides, spacing):
    expected = expected_rows(hu, labels, sides, spacing)
    integer = hu.dtype.kind in "iu"
    for row in stats.rows:
        want = expected[row["tissue"], row["leg"]]
        for column in ("voxel_count", "volume_cm3", "median_hu"):
            assert same(row[column], want[column], exact=True), (row, column)
        assert same(row["mean_hu"], want["mean_hu"], exact=integer), row
        assert same(row["std_hu"], want["std_hu"], exact=False), row
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    for metrics in stats.metrics:
        sm = expected["SM", metrics["leg"]]
        assert metrics["nama_cm3"] == sm["nama"] * voxel_cm3 and metrics["lama_cm3"] == sm["lama"] * voxel_cm3
    pixel_cm2 = float(spacing[1] * spacing[2]) / 100.0
    for row in stats.slices:
        z = row["slice"]
        for tissue in TISSUES:
            for leg in LEGS:
                area = leg_mask(labels[z], sides[z], tissue.label, leg).sum() * pixel_cm2
                assert row[f"{tissue.short}_{leg}_cm2"] == area


HU_KINDS = {   # name: random HU of that type (labelled values near both ends of int32 for the wide case)
    "int16": lambda rng, shape: rng.integers(-1024, 3000, shape).astype(np.int16),
    "uint16": lambda rng, shape: rng.integers(0, 4000, shape).astype(np.uint16),
    "int32 wide": lambda rng, shape: np.where(rng.random(shape) < 0.01, np.iinfo(np.int32).min,
                                              rng.integers(-300, 300, shape)).astype(np.int32),
    "int32 narrow": lambda rng, shape: rng.integers(-300, 300, shape).astype(np.int32),
    "float32": lambda rng, shape: (rng.normal(0, 150, shape)).astype(np.float32),
}


@pytest.mark.parametrize("kind", list(HU_KINDS))
def test_statistics_and_counts_equal_straightforward_numpy(kind):
    rng = np.random.default_rng(13)
    shape = (40, 24, 30)                      # more than one 32-slice slab
    hu = HU_KINDS[kind](rng, shape)
    labels = rng.integers(0, len(TISSUES) + 1, shape).astype(np.uint8)
    sides = rng.integers(0, 3, shape).astype(np.uint8)          # some unlabelled voxels carry a side too
    stats = compute_statistics(hu, labels, sides, SPACING, np.arange(shape[0]) * 5.0)
    assert_statistics(stats, hu, labels, sides, SPACING)
    counts = straightforward_counts(labels, sides)
    counts[:, 0, 0] = 0                       # label 0 without a side is not counted (no table uses it)
    assert np.array_equal(stats.counts, counts) and np.array_equal(slice_counts(labels, sides), counts)


def test_statistics_of_a_flipped_view_equal_those_of_its_copy():
    """Canonical arrays are flipped views of the image; boolean indexing reads them without a copy."""
    rng = np.random.default_rng(3)
    hu = rng.integers(-200, 200, (5, 20, 22)).astype(np.int16)[:, ::-1, ::-1]
    labels = rng.integers(0, 5, hu.shape).astype(np.uint8)
    sides = (labels > 0) * rng.integers(1, 3, hu.shape).astype(np.uint8)
    view_stats = compute_statistics(hu, labels, sides, SPACING, np.arange(5.0))
    copy_stats = compute_statistics(np.ascontiguousarray(hu), labels, sides, SPACING, np.arange(5.0))
    assert view_stats.rows == copy_stats.rows and view_stats.slices == copy_stats.slices


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def csv_text(rows):
    return [{k: str(v) for k, v in row.items()} for row in rows]


@pytest.fixture(scope="module")
def segmented_case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("process")
    phantom = make_phantom(seed=3, shape=(60, 160, 160), spacing=(8.0, 1.6, 1.6))
    sitk.WriteImage(phantom.ct, str(folder / "ct.nii.gz"), useCompression=True)
    segment_case(folder / "ct.nii.gz", folder / "out", engine="threshold")
    return folder


def test_segment_outputs_equal_straightforward_numpy(segmented_case):
    """labels, seg.nrrd, statistics/slices/metrics/qc/midthigh CSVs against the ITK-read input, recomputed."""
    out = segmented_case / "out"
    image = sitk.ReadImage(str(segmented_case / "ct.nii.gz"))
    view = AxialView.of(image)
    hu = view.to_canonical(sitk.GetArrayFromImage(image))
    labels = ClassicalEngine().segment(hu, view.spacing)
    written = sitk.ReadImage(str(out / "labels.nii.gz"))
    assert np.array_equal(view.to_canonical(sitk.GetArrayFromImage(written)), labels)
    assert written.GetOrigin() == image.GetOrigin() and written.GetDirection() == image.GetDirection()
    seg = sitk.ReadImage(str(out / "segmentation.seg.nrrd"))
    assert np.array_equal(sitk.GetArrayFromImage(seg), sitk.GetArrayFromImage(written))

    sides = split_legs(labels > 0, view, image)
    spacing, positions = view.spacing, view.positions(image, 0)
    stats = compute_statistics(hu, labels, sides, spacing, positions)
    assert_statistics(stats, hu, labels, sides, spacing)
    assert read_csv(out / "statistics.csv") == csv_text(stats.rows)
    assert read_csv(out / "slices.csv") == csv_text(stats.slices)
    assert read_csv(out / "metrics.csv") == csv_text(stats.metrics)

    counts = straightforward_counts(labels, sides)
    qc_rows = qc.slice_qc(hu, labels, sides, spacing, positions, counts=counts)
    assert read_csv(out / "qc.csv") == csv_text(qc_rows)
    level_rows = midthigh.measure(hu, labels, sides, spacing, positions, counts=counts)
    assert read_csv(out / "midthigh.csv") == csv_text(level_rows)
    areas = qc.tissue_areas(counts, 1.0)
    assert np.array_equal(areas, np.stack([(labels == t.label).sum(axis=(1, 2)) for t in TISSUES], axis=1))


# ---------------------------------------------------------------- gzip inputs read once
def write_nifti(image, path, compress=True):
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


@pytest.fixture(scope="module")
def small_ct():
    return make_phantom(seed=1, shape=(8, 40, 48), spacing=(5.0, 1.5, 1.5)).ct


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_intact_gzip_input_is_decompressed_once(tmp_path, small_ct, monkeypatch, suffix):
    """ITK's read is proven by the gzip trailer: the stored bytes are not decompressed a second time."""
    path = write_nifti(small_ct, tmp_path / f"ct{suffix}")

    def second_decompression(*args):
        raise AssertionError("the stored data were decompressed again")
    monkeypatch.setattr(volumes, "check_stored_data", second_decompression)
    ct = read_ct(path)
    assert np.array_equal(ct.array, sitk.GetArrayViewFromImage(small_ct)) and ct.files == [str(path)]


def test_two_gzip_members_are_read_like_one(tmp_path, small_ct):
    """A .nii.gz of two concatenated gzip members (the trailer covers only the last): the full check accepts it."""
    plain = write_nifti(small_ct, tmp_path / "ct.nii", compress=False).read_bytes()
    path = tmp_path / "two.nii.gz"
    path.write_bytes(gzip.compress(plain[:5000]) + gzip.compress(plain[5000:]))
    assert np.array_equal(read_ct(path).array, sitk.GetArrayViewFromImage(small_ct))


def test_bytes_after_the_gzip_stream_are_refused(tmp_path, small_ct):
    path = write_nifti(small_ct, tmp_path / "ct.nii.gz")
    path.write_bytes(path.read_bytes() + b"appended")
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_ct(path)


def test_gzip_proof_needs_the_exact_voxels(tmp_path, small_ct):
    path = write_nifti(small_ct, tmp_path / "ct.nii.gz")
    layout = image_files.layout_of(str(path), image_files.sniff(str(path)))
    voxels = sitk.GetArrayFromImage(small_ct)
    assert image_files.gzip_holds(layout, voxels)
    voxels[3, 10, 10] += 1
    assert not image_files.gzip_holds(layout, voxels)
