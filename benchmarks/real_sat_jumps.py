"""Classical engine on real scans that are not in the repo: the SAT area's largest jump between slices.

Issue 15's check for real scans: per slice, |SAT area − mean of the two neighbouring slices| / that mean must
stay ≤ 25 % (test_classical_anatomy.py checks it on the repo's three scans). This runs the same measure on any
CT files or DICOM folders, e.g. the other cases of the IBSI validation set the repo's copies come from
(github.com/theibsi/data_sets, ibsi_validation/nifti/STS_*/CT_image.nii.gz, CC BY 3.0), and writes each case's
overview picture so that deep fat labelled SAT can be looked for.
Run:  .venv/bin/python benchmarks/real_sat_jumps.py CT [CT ...] [--overviews DIR]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from LegSegNetLib.classical import ClassicalEngine
from LegSegNetLib.overview import write_overview
from LegSegNetLib.tissues import BY_SHORT
from LegSegNetLib.volumes import AxialView, read_ct

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "LegSegNet" / "Testing"))
from test_classical_anatomy import MAX_SAT_JUMP, sat_area_jumps  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scans", nargs="+", help="CT image files or DICOM series folders")
    parser.add_argument("--overviews", help="folder for one overview picture per scan")
    args = parser.parse_args()
    over = 0
    for path in args.scans:
        name = Path(path).name.split(".")[0]
        ct = read_ct(path)
        view = AxialView.of(ct.image)
        hu = view.to_canonical(ct.array)
        start = time.perf_counter()
        labels = ClassicalEngine().segment(hu, view.spacing)
        seconds = time.perf_counter() - start
        jumps = sat_area_jumps(labels)
        worst = int(jumps.argmax())
        sat = (labels == BY_SHORT["SAT"].label).sum(axis=(1, 2))
        over += jumps.max() > MAX_SAT_JUMP
        print(f"{name}: {hu.shape[0]} slices, largest SAT jump {jumps.max():.1%} at slice {worst + 1} "
              f"(SAT pixels {sat[worst]}, {sat[worst + 1]}, {sat[worst + 2]}), "
              f"{int((jumps > MAX_SAT_JUMP).sum())} slices over {MAX_SAT_JUMP:.0%}, {seconds:.1f} s", flush=True)
        if args.overviews:
            Path(args.overviews).mkdir(parents=True, exist_ok=True)
            write_overview(Path(args.overviews) / f"{name}.png", hu, labels, view.spacing, title=name)
    print(f"scans with a jump over {MAX_SAT_JUMP:.0%}: {over} of {len(args.scans)}")


if __name__ == "__main__":
    main()
