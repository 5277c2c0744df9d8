#!/usr/bin/env python
"""Rebuild the compact copy of the real CT scans the tests read (LegSegNet/Testing/Data/real-ct) from
../shared/data/real-ct (IBSI/TCIA soft-tissue sarcoma CT, CC BY 3.0; see the README.md written beside it).

    python scripts/make_real_ct_copy.py [SOURCE] [--check]

Each case's DICOM series is read with the core's checked reader and written as an int16 .nii.gz, cropped
in-plane to the body's bounding box (voxels above -500 HU in any slice) plus a margin; all slices are kept.
A few consecutive DICOM files of one case are copied byte for byte for the DICOM reader's test.
"""
import argparse
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LegSegNetLib.dicom_headers import list_dicom_series
from LegSegNetLib.volumes import read_ct

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "real-ct"
OUT = REPO / "LegSegNet" / "Testing" / "Data" / "real-ct"
CASES = ("STS_017", "STS_028", "STS_049")
DICOM_CASE, DICOM_FIRST, DICOM_COUNT = "STS_028", 30, 8     # slices 30..37 (inferior first) of STS_028
BODY_HU, MARGIN = -500, 10                                  # body threshold; margin in pixels


def body_crop(image):
    """The image cropped in-plane to the bounding box of the body in any slice, plus MARGIN pixels."""
    body = sitk.GetArrayViewFromImage(image) > BODY_HU
    rows, columns = np.where(body.any(axis=(0, 2)))[0], np.where(body.any(axis=(0, 1)))[0]
    low = [max(int(columns[0]) - MARGIN, 0), max(int(rows[0]) - MARGIN, 0), 0]
    high = [min(int(columns[-1]) + MARGIN + 1, image.GetWidth()), min(int(rows[-1]) + MARGIN + 1, image.GetHeight()),
            image.GetDepth()]
    return image[low[0]:high[0], low[1]:high[1], :]


def dicom_slices(folder):
    """The case's DICOM files sorted inferior first (by ImagePositionPatient along the slice normal)."""
    (files,) = list_dicom_series(folder).values()
    def height(name):
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        reader.ReadImageInformation()
        return float(reader.GetMetaData("0020|0032").split("\\")[2])
    return sorted(files, key=height)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        ct = read_ct(args.source / case / "dicom")
        image = body_crop(sitk.Cast(ct.image, sitk.sitkInt16))
        sitk.WriteImage(image, str(OUT / f"{case}.nii.gz"), useCompression=True)
        print(case, "size", image.GetSize(), "of", ct.image.GetSize())
    target = OUT / f"{DICOM_CASE}-dicom"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for name in dicom_slices(args.source / DICOM_CASE / "dicom")[DICOM_FIRST:DICOM_FIRST + DICOM_COUNT]:
        shutil.copyfile(name, target / Path(name).name)
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"{OUT}: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
