"""Hostile image files (NIfTI, NRRD, MHA/MHD), built here from a small phantom: each must be refused by
`legsegnet segment` with exit 2, one line on stderr and no output folder, before any slow step."""
import gzip
import os
import re
import shutil
import socket
import struct
import time

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib import limits, volumes
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.statistics import compute_statistics
from LegSegNetLib.tissues import LEGS, SIDE_LABELS, TISSUES

from conftest import array, run_cli


@pytest.fixture(scope="module")
def ct():
    """A small int16 CT of two legs (air, fat, muscle, bone), RAS-flipped direction."""
    return make_phantom(seed=1, shape=(6, 48, 64), spacing=(5.0, 1.5, 1.5)).ct


def segment(tmp_path, path):
    return run_cli("segment", path, "-o", tmp_path / "out", "--engine", "threshold")


def assert_refused(tmp_path, capsys, path, pattern):
    code = segment(tmp_path, path)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("legsegnet: error: "), lines
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]   # no temporary folder
    return lines[0]


def write(image, path, compress=False):
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


# ---------------------------------------------------------------- only regular files
@pytest.mark.timeout(30)        # opening a FIFO blocks for ever: fail instead of hanging
def test_fifo_device_and_socket_are_refused_without_opening(tmp_path, capsys):
    fifo = tmp_path / "ct.nii.gz"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "ct.mha"))
    try:
        for path in (fifo, tmp_path / "ct.mha", "/dev/zero"):
            assert_refused(tmp_path, capsys, path, "not a regular file")
    finally:
        sock.close()


@pytest.mark.timeout(30)
def test_detached_data_file_that_is_a_fifo_is_refused(tmp_path, capsys, ct):
    write(ct, tmp_path / "ct.nhdr")
    (tmp_path / "ct.raw").unlink()
    os.mkfifo(tmp_path / "ct.raw")
    assert_refused(tmp_path, capsys, tmp_path / "ct.nhdr", r"ct\.raw: not a regular file")


# ---------------------------------------------------------------- the header decides before any voxel is read
def test_huge_declared_size_is_refused_at_once(tmp_path, capsys, ct):
    """A small gzip declaring 2048×2048×512 voxels: refused from the header, without decompressing."""
    header = bytearray(write(ct, tmp_path / "small.nii").read_bytes()[:352])
    struct.pack_into("<4h", header, 40, 3, 2048, 2048, 512)
    with gzip.open(tmp_path / "huge.nii.gz", "wb", compresslevel=1) as f:
        f.write(bytes(header))
        for _ in range(64):
            f.write(bytes(1 << 20))
    start = time.perf_counter()
    assert_refused(tmp_path, capsys, tmp_path / "huge.nii.gz",
                   rf"size \(2048, 2048, 512\) is {2 ** 31} voxels, more than the limit of {limits.MAX_VOXELS}")
    assert time.perf_counter() - start < 0.5


def test_size_beyond_available_memory_is_refused(tmp_path, capsys, ct, monkeypatch):
    assert limits.available_memory() > 0          # read from /proc/meminfo on this machine
    header = bytearray(write(ct, tmp_path / "small.nii").read_bytes()[:352])
    struct.pack_into("<4h", header, 40, 3, 512, 512, 1000)
    (tmp_path / "big.nii").write_bytes(bytes(header))
    monkeypatch.setattr(limits, "available_memory", lambda: 1 << 30)    # a machine with 1 GiB free
    assert_refused(tmp_path, capsys, tmp_path / "big.nii", r"needs about 1\.7 GiB of memory; 1\.0 GiB is available")


@pytest.mark.parametrize("suffix", [".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("kind", ["complex", "vector"])
def test_complex_and_vector_voxels_are_refused(tmp_path, capsys, ct, suffix, kind):
    hu = sitk.Cast(ct, sitk.sitkFloat32)
    image = (sitk.RealAndImaginaryToComplex(hu, hu) if kind == "complex" else sitk.Compose(hu, hu, hu))
    assert_refused(tmp_path, capsys, write(image, tmp_path / f"ct{suffix}"), "a scalar CT volume is needed")


# ---------------------------------------------------------------- the content, not the name, decides
def test_png_named_nifti_is_refused_saying_what_it_is(tmp_path, capsys, ct):
    write(sitk.Cast(ct[:, :, 0] > 0, sitk.sitkUInt8), tmp_path / "slice.png")
    shutil.move(tmp_path / "slice.png", tmp_path / "ct.nii.gz")
    assert_refused(tmp_path, capsys, tmp_path / "ct.nii.gz", "content is PNG, not NIfTI/NRRD/MHA")


def test_garbage_is_refused_saying_what_it_is(tmp_path, capsys, ct):
    (tmp_path / "noise.mha").write_bytes(np.random.default_rng(0).bytes(4000))
    assert_refused(tmp_path, capsys, tmp_path / "noise.mha", "content is unrecognised data, not NIfTI")


def test_gzipped_nifti_named_nii_is_refused_with_the_fix(tmp_path, capsys, ct):
    write(ct, tmp_path / "ct.nii.gz")
    shutil.move(tmp_path / "ct.nii.gz", tmp_path / "ct.nii")
    assert_refused(tmp_path, capsys, tmp_path / "ct.nii", r"content is gzip-compressed NIfTI; name the file \*\.nii\.gz")


@pytest.mark.parametrize("written, named", [(".nii", "ct.nii.gz"), (".nrrd", "ct.mha"), (".mha", "ct.nrrd")])
def test_content_read_whatever_the_name(tmp_path, ct, written, named):
    """A plain NIfTI named .nii.gz (and NRRD/MetaImage under each other's name) segments on its exact grid."""
    write(ct, tmp_path / "ct.nii.gz", compress=True)
    assert run_cli("segment", tmp_path / "ct.nii.gz", "-o", tmp_path / "reference", "--engine", "threshold") == 0
    shutil.move(write(ct, tmp_path / f"written{written}"), tmp_path / named)
    assert segment(tmp_path, tmp_path / named) == 0
    labels = sitk.ReadImage(str(tmp_path / "out" / "labels.nii.gz"))
    assert labels.GetSize() == ct.GetSize()
    np.testing.assert_allclose(labels.GetSpacing(), ct.GetSpacing())
    np.testing.assert_allclose(labels.GetOrigin(), ct.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(labels.GetDirection(), ct.GetDirection(), atol=1e-6)
    reference = array(sitk.ReadImage(str(tmp_path / "reference" / "labels.nii.gz")))
    assert reference.any() and np.array_equal(array(labels), reference)


# ---------------------------------------------------------------- stored data must match the header
def _nifti_crc_flipped(tmp_path, ct):
    path = write(ct, tmp_path / "ct.nii.gz", compress=True)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF                       # the gzip trailer's CRC32
    path.write_bytes(bytes(data))
    return path


def _appended(tmp_path, ct):
    path = write(ct, tmp_path / "ct.nii")
    path.write_bytes(path.read_bytes() + bytes(100))
    return path


TRUNCATED = {   # name: (build(tmp_path, ct) -> path given to segment, message)
    "nii.gz cut in half": (lambda d, ct: cut(write(ct, d / "ct.nii.gz", True)) or d / "ct.nii.gz", "corrupt or truncated"),
    "nii cut in half": (lambda d, ct: cut(write(ct, d / "ct.nii")) or d / "ct.nii", "truncated: .* bytes stored"),
    "nii with bytes appended": (_appended, "longer than declared"),
    "nii.gz with a bad CRC": (_nifti_crc_flipped, "corrupt or truncated|not recognized as a NIFTI file"),
    "nrrd raw cut": (lambda d, ct: cut(write(ct, d / "ct.nrrd"), 0.7) or d / "ct.nrrd", "truncated"),
    "nrrd gzip cut": (lambda d, ct: cut(write(ct, d / "ct.nrrd", True), 0.7) or d / "ct.nrrd", "corrupt or truncated"),
    "nhdr + raw cut": (lambda d, ct: write(ct, d / "ct.nhdr") and cut(d / "ct.raw") or d / "ct.nhdr", "truncated"),
    "nhdr + raw.gz cut": (lambda d, ct: write(ct, d / "ct.nhdr", True) and cut(d / "ct.raw.gz") or d / "ct.nhdr",
                          "corrupt or truncated"),
    "mha cut": (lambda d, ct: cut(write(ct, d / "ct.mha"), 0.7) or d / "ct.mha", "truncated"),
    "mha compressed cut": (lambda d, ct: cut(write(ct, d / "ct.mha", True), 0.7) or d / "ct.mha", "corrupt or truncated"),
    "mhd + raw cut": (lambda d, ct: write(ct, d / "ct.mhd") and cut(d / "ct.raw") or d / "ct.mhd", "truncated"),
    "mhd + zraw cut": (lambda d, ct: write(ct, d / "ct.mhd", True) and cut(d / "ct.zraw") or d / "ct.mhd",
                       "corrupt or truncated"),
}


@pytest.mark.parametrize("name", list(TRUNCATED))
def test_truncated_or_corrupt_data_are_refused(tmp_path, capsys, ct, name):
    build, message = TRUNCATED[name]
    assert_refused(tmp_path, capsys, build(tmp_path, ct), message)


# ---------------------------------------------------------------- NaN and ±inf
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_voxels_are_refused(tmp_path, capsys, ct, suffix, value):
    hu = array(ct).astype(np.float32)
    hu[3, 20, 30] = value
    image = sitk.GetImageFromArray(hu)
    image.CopyInformation(ct)
    assert_refused(tmp_path, capsys, write(image, tmp_path / f"ct{suffix}", True), "NaN or infinite values")


# ---------------------------------------------------------------- no allocation sized by the value range
def test_extreme_int32_padding_segments_like_the_plain_scan(tmp_path, ct):
    hu = array(ct).astype(np.int32)
    write(sitk.Cast(ct, sitk.sitkInt32), tmp_path / "plain.nii")
    hu[0, 0, 0] = -2 ** 31                 # one padding voxel in the air
    padded = sitk.GetImageFromArray(hu)
    padded.CopyInformation(ct)
    write(padded, tmp_path / "padded.nii")
    for name in ("plain", "padded"):
        assert run_cli("segment", tmp_path / f"{name}.nii", "-o", tmp_path / name, "--engine", "threshold") == 0
    assert (tmp_path / "plain" / "statistics.csv").read_text() == (tmp_path / "padded" / "statistics.csv").read_text()


def test_medians_of_labelled_values_spanning_the_int32_range():
    rng = np.random.default_rng(4)
    hu = rng.integers(-200, 200, size=(4, 20, 30)).astype(np.int32)
    labels = rng.integers(0, len(TISSUES) + 1, size=hu.shape).astype(np.uint8)
    sides = np.where(np.arange(30) < 15, SIDE_LABELS["right"], SIDE_LABELS["left"])[None, None, :] * (labels > 0)
    hu[labels == TISSUES[0].label] = np.iinfo(np.int32).min     # labelled voxels at both ends of int32
    hu[0][labels[0] == TISSUES[1].label] = np.iinfo(np.int32).max
    stats = compute_statistics(hu, labels, sides.astype(np.uint8), (5.0, 1.0, 1.0), np.arange(4) * 5.0)
    for tissue in TISSUES:
        for leg in LEGS:
            mask = labels == tissue.label
            if leg != "both":
                mask &= sides == SIDE_LABELS[leg]
            assert stats.row(tissue.short, leg)["median_hu"] == np.median(hu[mask].astype(np.float64))


# ---------------------------------------------------------------- geometry
def _edit_header(path, old, new):
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    return path


def _nifti_sform(tmp_path, ct, srow_x):
    path = write(ct, tmp_path / "ct.nii")
    data = bytearray(path.read_bytes())
    struct.pack_into("<4f", data, 280, *srow_x)
    path.write_bytes(bytes(data))
    return path


GEOMETRY = {   # name: (build(tmp_path, ct) -> path, message)
    "nrrd sheared": (lambda d, ct: _edit_header(write(ct, d / "ct.nrrd"), b"(-1.5,0,0) (0,-1.5,0)", b"(-1.5,0,0) (0.5,-1.5,0)"),
                     r"not orthonormal .*max \|DᵀD − I\| = 0\.316"),
    "mha column of length 2": (lambda d, ct: _edit_header(write(ct, d / "ct.mha"), b"TransformMatrix = -1 0 0",
                                                          b"TransformMatrix = -2 0 0"), r"not orthonormal .*= 3\b"),
    "mha tilted axes": (lambda d, ct: _edit_header(write(ct, d / "ct.mha"), b"TransformMatrix = -1 0 0 0 -1 0",
                                                   b"TransformMatrix = -1 0 0 0.17364818 -0.98480775 0"),
                        r"not orthonormal .*= 0\.174"),
    "nifti sform sheared": (lambda d, ct: _nifti_sform(d, ct, (1.5, 0.5, 0, 0)), r"sform is sheared .*= 0\.333"),
    "nifti sform scaled": (lambda d, ct: _nifti_sform(d, ct, (3.0, 0, 0, 0)), r"sform .*scales differ .*= 3\b"),
    "voxels of 100 mm": (lambda d, ct: _edit_header(write(ct, d / "ct.mha"), b"ElementSpacing = 1.5 1.5 5",
                                                    b"ElementSpacing = 100 100 5"),
                         r"in-plane spacing 100 mm is outside 0\.05\.\.5 mm"),
    "spacing in metres": (lambda d, ct: _edit_header(write(ct, d / "ct.mha"), b"ElementSpacing = 1.5 1.5 5",
                                                     b"ElementSpacing = 0.0015 0.0015 0.005"),
                          r"slice spacing 0\.005 mm is outside 0\.05\.\.30 mm"),
}


@pytest.mark.parametrize("name", list(GEOMETRY))
def test_implausible_geometry_is_refused(tmp_path, capsys, ct, name):
    build, message = GEOMETRY[name]
    assert_refused(tmp_path, capsys, build(tmp_path, ct), message)


# ---------------------------------------------------------------- headers ITK reads otherwise than their format
def _nifti_patched(tmp_path, ct, *patches, array_of=None):
    """A plain NIfTI (qform and sform, as ITK writes it) with (offset, struct format, value) patches applied."""
    image = ct if array_of is None else sitk.GetImageFromArray(array_of(array(ct)))
    if array_of is not None:
        image.CopyInformation(ct)
    path = write(image, tmp_path / "ct.nii")
    data = bytearray(path.read_bytes())
    for offset, fmt, value in patches:
        struct.pack_into("<" + fmt, data, offset, value)
    path.write_bytes(bytes(data))
    return path


SLOPE, INTER, PIXDIM_X, PIXDIM_Z, QFORM_CODE, SFORM_CODE, QOFFSET_Z = 112, 116, 80, 88, 252, 254, 276
HEADERS = {   # name: (build(tmp_path, ct) -> path, message)
    "nifti slope 0 with an intercept": (lambda d, ct: _nifti_patched(d, ct, (SLOPE, "f", 0.0), (INTER, "f", -1024.0)),
                                        r"scl_slope 0 with scl_inter -1024: .*ambiguous"),
    "nifti slope NaN with an intercept": (lambda d, ct: _nifti_patched(d, ct, (SLOPE, "f", np.nan), (INTER, "f", -1024.0)),
                                          r"scl_slope nan with scl_inter -1024"),
    "nifti intercept NaN": (lambda d, ct: _nifti_patched(d, ct, (SLOPE, "f", 1.0), (INTER, "f", np.nan)),
                            r"scl_inter nan cannot scale"),
    "nifti negative pixdim with sform": (lambda d, ct: _nifti_patched(d, ct, (PIXDIM_X, "f", -1.5)),
                                         r"pixdim \[-1\.5, 1\.5, 5\.0\] must be positive"),
    "nifti zero pixdim, qform only": (lambda d, ct: _nifti_patched(d, ct, (SFORM_CODE, "h", 0), (PIXDIM_Z, "f", 0.0)),
                                      r"pixdim \[1\.5, 1\.5, 0\.0\] must be positive"),
    "nifti without qform and sform": (lambda d, ct: _nifti_patched(d, ct, (QFORM_CODE, "h", 0), (SFORM_CODE, "h", 0)),
                                      r"neither qform nor sform.*which side is left"),
    "nifti qform and sform disagree": (lambda d, ct: _nifti_patched(d, ct, (QOFFSET_Z, "f", 40.0)),
                                       r"qform and sform disagree"),
    "nrrd without space": (lambda d, ct: _edit_header(write(ct, d / "ct.nrrd"), b"space: left-posterior-superior\n", b""),
                           r"no 'space' field: not a patient frame"),
    "nrrd scanner-xyz space": (lambda d, ct: _edit_header(write(ct, d / "ct.nrrd"), b"left-posterior-superior",
                                                          b"scanner-xyz"), r"space 'scanner-xyz': not a patient frame"),
    "nrrd axis without direction": (lambda d, ct: _edit_header(write(ct, d / "ct.nrrd"), b"(-1.5,0,0) (0,-1.5,0)",
                                                               b"none (0,-1.5,0)"), r"'space directions' must give"),
    "nrrd in cm": (lambda d, ct: _edit_header(write(ct, d / "ct.nrrd"), b"encoding:", b'space units: "cm" "cm" "cm"\nencoding:'),
                   r"space units \['cm', 'cm', 'cm'\]; only mm"),
    "mha without spacing": (lambda d, ct: _edit_header(write(ct, d / "ct.mha"), b"ElementSpacing = 1.5 1.5 5\n", b""),
                            r"states no voxel size"),
    "mha NaN offset": (lambda d, ct: _edit_header(write(ct, d / "ct.mha"), b"Offset = 47.25", b"Offset = nan"),
                       r"TransformMatrix or Offset is not"),
}


@pytest.mark.parametrize("name", list(HEADERS))
def test_headers_read_otherwise_than_their_format_are_refused(tmp_path, capsys, ct, name):
    """ITK silently added the intercept of scl_slope 0, swapped a sform for the qform (left and right swapped),
    read no spacing as 1 mm, 'cm' as mm and a NaN origin as 0: every one gave exit 0 with wrong numbers."""
    build, message = HEADERS[name]
    assert_refused(tmp_path, capsys, build(tmp_path, ct), message)


SCALED = {   # name: build(tmp_path, ct) -> a file whose header defines exactly ct's HU and grid
    "nifti uint16 with scl_inter -1024": lambda d, ct: _nifti_patched(
        d, ct, (SLOPE, "f", 1.0), (INTER, "f", -1024.0), array_of=lambda hu: (hu.astype(np.int32) + 1024).astype(np.uint16)),
    "nifti int16 with scl_slope 0.5": lambda d, ct: _nifti_patched(
        d, ct, (SLOPE, "f", 0.5), (INTER, "f", 0.0), array_of=lambda hu: (hu * 2).astype(np.int16)),
    "nifti qform only": lambda d, ct: _nifti_patched(d, ct, (SFORM_CODE, "h", 0)),
    "nifti sform only": lambda d, ct: _nifti_patched(d, ct, (QFORM_CODE, "h", 0)),
    "nrrd in RAS space": lambda d, ct: _edit_header(_edit_header(write(ct, d / "ct.nrrd"), b"left-posterior-superior",
                                                                 b"right-anterior-superior"),
                                                    b"(-1.5,0,0) (0,-1.5,0) (0,0,5)", b"(1.5,0,0) (0,1.5,0) (0,0,5)"),
}


@pytest.mark.parametrize("name", list(SCALED))
def test_scaled_and_alternative_headers_read_exact_hu_and_grid(tmp_path, ct, name):
    path = SCALED[name](tmp_path, ct)
    if name == "nrrd in RAS space":
        _edit_header(path, b"(47.25,35.25,-12.5)", b"(-47.25,-35.25,-12.5)")
    volume = volumes.read_ct(path)
    assert np.array_equal(volume.array, array(ct))
    for key, value in volume.geometry().items():
        np.testing.assert_allclose(value, volumes.CtVolume(ct, "").geometry()[key], atol=1e-4)
