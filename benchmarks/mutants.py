"""Mutation testing benchmark (not part of CI): does the suite catch one-line mistakes of the kind people make?

Each mutant replaces one source fragment in a temporary copy of the committed package and tests (git archive of
HEAD, so the real files are never edited and work in progress elsewhere does not interfere), then runs the test
files that cover that module with pytest -x. A failing run kills the mutant; a passing one lets it survive.

    .venv/bin/python benchmarks/mutants.py                 # every mutant (about 15-25 minutes on 2 cores)
    .venv/bin/python benchmarks/mutants.py --only sides    # mutants of one module
    .venv/bin/python benchmarks/mutants.py --planted       # only the mistakes planted in work item 16
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
T = "LegSegNet/Testing/"
TESTS = {
    "statistics": [T + "test_definitions.py", T + "test_statistics.py"],
    "sides": [T + "test_sides.py", T + "test_statistics.py"],
    "classical": [T + "test_definitions.py", T + "test_classical.py"],
    "pipeline": [T + "test_cli.py", T + "test_statistics.py", T + "test_process_outputs.py"],
    "volumes": [T + "test_io.py", T + "test_input_files.py", T + "test_cli.py", T + "test_sides.py",
                T + "test_statistics.py", T + "test_batch_features.py"],
    "nnunet": [T + "test_nnunet_parity.py", T + "test_nnunet_engine.py"],
    "outputs": [T + "test_safe_outputs.py", T + "test_cli.py"],
}

# (module, fragment as written in the source, replacement, what the mistake is, planted in work item 16)
MUTANTS = [
    # ---- the work item's planted mistakes
    ("classical", "FAT_HU = (-190, -30)", "FAT_HU = (-190, -50)", "fat window upper bound -30 -> -50", True),
    ("classical", "MUSCLE_HU = (-29, 150)", "MUSCLE_HU = (-29, 100)", "muscle window upper bound 150 -> 100", True),
    ("sides", 'np.where(left, SIDE_LABELS["left"], SIDE_LABELS["right"])',
     'np.where(left, SIDE_LABELS["right"], SIDE_LABELS["left"])', "left and right legs swapped", True),
    ("sides", "fallback = int(np.searchsorted(x_lps, 0.0))", "fallback = 0",
     "fallback split at the array edge, not the midline", True),
    ("statistics", "/ (n - 1) if n > 1", "/ n if n > 1", "standard deviation over n instead of n - 1", True),
    ("statistics", "NAMA_HU = (30, 150)", "NAMA_HU = (35, 150)", "NAMA window starting at 35 HU", True),
    ("statistics", "pixel_cm2 = float(spacing[1] * spacing[2])", "pixel_cm2 = float(spacing[2] * spacing[2])",
     "pixel area from square pixels", True),
    ("statistics", "voxel_cm3 = float(np.prod(spacing)) / 1000.0",
     "voxel_cm3 = float(spacing[0] * spacing[2] ** 2) / 1000.0", "voxel volume from square pixels", True),
    ("pipeline", "    return start, stop\n", "    return start, None if stop is None else stop + 1\n",
     "--slices stop one slice too far", True),
    ("nnunet", "lut[channel], names[name] = tissue.label, tissue.short", "lut[channel], names[name] = channel, tissue.short",
     "network labels by channel number instead of by name", True),
    ("outputs", "            yield tmp\n", "            yield outdir.mkdir(exist_ok=True) or outdir\n",
     "output written in place instead of through the temporary folder", True),
    ("outputs", "                shutil.rmtree(tmp, ignore_errors=True)\n", "                pass\n",
     "a failed write leaves its .partial folder", True),
    # ---- statistics.py
    ("statistics", "NAMA_HU = (30, 150)", "NAMA_HU = (30, 149)", "NAMA upper edge 149", False),
    ("statistics", "LAMA_HU = (-29, 29)", "LAMA_HU = (-30, 29)", "LAMA lower edge -30", False),
    ("statistics", "LAMA_HU = (-29, 29)", "LAMA_HU = (-29, 30)", "LAMA upper edge 30", False),
    ("statistics", "(h >= NAMA_HU[0])", "(h > NAMA_HU[0])", "NAMA lower edge exclusive", False),
    ("statistics", "(h <= NAMA_HU[1])", "(h < NAMA_HU[1])", "NAMA upper edge exclusive", False),
    ("statistics", "(h >= LAMA_HU[0])", "(h > LAMA_HU[0])", "LAMA lower edge exclusive", False),
    ("statistics", "(h <= LAMA_HU[1])", "(h < LAMA_HU[1])", "LAMA upper edge exclusive", False),
    ("statistics", "float(np.prod(spacing)) / 1000.0", "float(np.prod(spacing)) / 100.0", "cm3 from mm3 / 100", False),
    ("statistics", "pixel_cm2 = float(spacing[1] * spacing[2])", "pixel_cm2 = float(spacing[0] * spacing[2])",
     "pixel area with the slice spacing", False),
    ("statistics", "float(np.sqrt(max(var, 0.0)))", "float(max(var, 0.0))", "variance reported as std", False),
    ("statistics", 'mean = sums["sum"][tissue.label] / n if n', 'mean = sums["sum"][tissue.label] / (n + 1) if n',
     "mean over n + 1", False),
    ("statistics", '"total_fat_cm3": sat + imat', '"total_fat_cm3": sat + sm', "total fat adds muscle", False),
    ("statistics", '"imat_to_sat": _ratio(imat, sat)', '"imat_to_sat": _ratio(sat, imat)', "IMAT/SAT inverted", False),
    ("statistics", '"sm_to_fat": _ratio(sm, sat + imat)', '"sm_to_fat": _ratio(sm, sat)', "SM/fat without IMAT", False),
    ("statistics", "100 * _ratio(imat, sm + imat)", "100 * _ratio(imat, sm)", "IMAT % over SM only", False),
    ("statistics", 'fat = [BY_SHORT["SAT"].label, BY_SHORT["IMAT"].label]', 'fat = [BY_SHORT["SAT"].label]',
     "fat mean HU without IMAT", False),
    ("statistics", '"nama_pct": 100 * _ratio(nama, sm)', '"nama_pct": _ratio(nama, sm)', "NAMA % as a fraction", False),
    ("statistics", 'lama = sums["lama"][sm_label]', 'lama = sums["nama"][sm_label]', "LAMA counts NAMA", False),
    ("statistics", 'return float(a) / float(b) if b else float("nan")', 'return float(a) / float(b) if b else 0.0',
     "empty denominator gives 0 instead of nan", False),
    ("statistics", "return per_side[..., SIDE_LABELS[leg]]", "return per_side[..., 3 - SIDE_LABELS[leg]]",
     "per-leg sums of the other leg", False),
    ("statistics", '"position_mm": np.asarray(positions_mm, float)', '"position_mm": np.asarray(positions_mm, float)[::-1]',
     "slice positions reversed", False),
    ("statistics", "per_slice.append(counts)", "per_slice.append(counts[::-1])",
     "per-slice areas in reverse order within each slab", False),
    ("statistics", "return (lower + upper) / 2 + low", "return lower + low", "median of an even count: lower middle",
     False),
    ("statistics", "(n - 1) // 2, side=\"right\")", "n // 2, side=\"right\")", "histogram median off by one", False),
    ("statistics", '"median_hu": medians[tissue.label, leg]', '"median_hu": medians[tissue.label, "both"]',
     "per-leg rows with the median of both legs", False),
    ("statistics", 'acc["sum"] = (hist @ values).astype(float)', 'acc["sum"] = (hist @ (values // 10 * 10)).astype(float)',
     "HU rounded down to 10 before averaging (integer HU)", False),
    ("statistics", 'acc["sum"] += np.bincount(key, h, n_keys)', 'acc["sum"] += np.bincount(key, h.round(-1), n_keys)',
     "HU rounded to 10 before averaging (float HU)", False),
    # ---- sides.py
    ("sides", "MIN_LEG_SEPARATION_MM = 50", "MIN_LEG_SEPARATION_MM = 20", "legs may be 20 mm apart", False),
    ("sides", "MIN_LEG_SEPARATION_MM = 50", "MIN_LEG_SEPARATION_MM = 80", "legs must be 80 mm apart", False),
    ("sides", "MIN_SECOND_LEG = 0.25", "MIN_SECOND_LEG = 0.1", "second leg may be a tenth of the first", False),
    ("sides", "MIN_SECOND_LEG = 0.25", "MIN_SECOND_LEG = 0.35", "second leg must be 35 % of the first", False),
    ("sides", "MAX_VALLEY = 0.6", "MAX_VALLEY = 0.9", "shallow valleys split legs", False),
    ("sides", "MAX_VALLEY = 0.6", "MAX_VALLEY = 0.3", "only deep valleys split legs", False),
    ("sides", "valley = valley_profile.argmin(axis=1)", "valley = (lo + hi) // 2",
     "split halfway between the peaks, not at the valley", False),
    ("sides", "fallback = int(np.searchsorted(x_lps, 0.0))", "fallback = len(x_lps) // 2",
     "fallback split at the array centre", False),
    ("sides", "fallback = int(np.searchsorted(x_lps, 0.0))", "fallback = len(x_lps)",
     "fallback split at the far array edge", False),
    ("sides", "fallback = int(np.median(valley[valid]))", "fallback = int(np.searchsorted(x_lps, 0.0))",
     "one-leg slices split at the midline, not the other slices' split", False),
    ("sides", "return np.where(valid, valley, fallback)", "return np.where(valid, valley, valley)",
     "invalid slices keep their bogus valley", False),
    ("sides", "& (peak2 >= MIN_SECOND_LEG * peak1)", "", "no minimum size for the second leg", False),
    ("sides", "& (valley_profile[rows, valley] <= MAX_VALLEY * peak2)", "", "no valley depth test", False),
    ("sides", "return np.where(mask, sides, np.uint8(0))", "return sides", "sides outside the mask", False),
    ("sides", "view.positions(image, 2)", "view.positions(image, 1)", "midline from the wrong axis", False),
    ("sides", "left = columns[None, None, :] >= split[:, None, None]",
     "left = columns[None, None, :] >= split[::-1][:, None, None]", "split of another slice", False),
    # ---- classical.py
    ("classical", "FAT_HU = (-190, -30)", "FAT_HU = (-200, -30)", "fat window from -200", False),
    ("classical", "CORTEX_HU = 200", "CORTEX_HU = 250", "cortex above 250", False),
    ("classical", "(smooth > CORTEX_HU)", "(smooth >= CORTEX_HU)", "cortex threshold inclusive", False),
    ("classical", "(smooth <= MUSCLE_HU[1])", "(smooth < MUSCLE_HU[1])", "muscle upper edge exclusive", False),
    ("classical", 'table[FAT | 8] = BY_SHORT["IMAT"].label', 'table[FAT | 8] = BY_SHORT["SAT"].label',
     "fat inside the compartment called SAT", False),
    # ---- pipeline.py
    ("pipeline", "view.positions(image, 0))", "view.positions(image, 1))", "slice positions from the wrong axis", False),
    # ---- volumes.py
    ("volumes", "flips.append(bool(direction[physical, index_axis] < 0))",
     "flips.append(bool(direction[physical, index_axis] > 0))", "axis flips inverted", False),
    ("volumes", "spacing.append(image.GetSpacing()[index_axis])", "spacing.append(image.GetSpacing()[2 - index_axis])",
     "canonical spacing in the wrong order", False),
    ("volumes", "digests = sorted(_content_sha256(name) for name in files)",
     "digests = sorted(os.path.basename(n) + _content_sha256(n) for n in files)",
     "fingerprint depends on file names", False),
    ("volumes", "if low > AIR_HU:", "if low > AIR_HU + 1000:", "MR without air accepted", False),
    # ---- nnunet.py
    ("nnunet", "HU_WINDOW = (-200.0, 200.0)", "HU_WINDOW = (-250.0, 200.0)", "another HU window", False),
    ("nnunet", "GAUSSIAN_PEAK = 10", "GAUSSIAN_PEAK = 1", "Gaussian map not scaled like nnU-Net", False),
    ("nnunet", "return x.astype(np.uint8)", "return np.rint(x).astype(np.uint8)", "uint8 rounded, not truncated", False),
]


def snapshot(root):
    """The committed package and tests (HEAD) in a fresh folder."""
    archive = subprocess.run(["git", "archive", "HEAD", "LegSegNet"], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root / "LegSegNet"


def run_tests(package, tests, timeout):
    env = {**os.environ, "PYTHONPATH": str(package), "LEGSEGNET_SHARED": str(REPO.parent / "shared")}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        result = subprocess.run(command, cwd=package.parent, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed (timeout)"
    return "survived" if result.returncode == 0 else "killed"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="one module (statistics, sides, classical, pipeline, outputs, volumes, nnunet)")
    parser.add_argument("--planted", action="store_true", help="only the work item's planted mistakes")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per mutant")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if (not args.only or m[0] == args.only) and (not args.planted or m[4])]
    outcome = defaultdict(lambda: defaultdict(int))
    with tempfile.TemporaryDirectory(prefix="legsegnet-mutants-") as tmp:
        package = snapshot(Path(tmp))
        baseline = {module: run_tests(package, TESTS[module], args.timeout) for module in {m[0] for m in chosen}}
        broken = [module for module, status in baseline.items() if status != "survived"]
        if broken:
            sys.exit(f"the unmutated suite fails for {', '.join(broken)}; fix that first")
        for module, original, replacement, what, planted in chosen:
            path = package / "LegSegNetLib" / f"{module}.py"
            source = path.read_text()
            if source.count(original) != 1:
                status = "not applicable (fragment not found once)"
            else:
                path.write_text(source.replace(original, replacement))
                start = time.perf_counter()
                status = run_tests(package, TESTS[module], args.timeout)
                status += f" ({time.perf_counter() - start:.0f} s)"
                path.write_text(source)
            outcome[module][status.split(" (")[0]] += 1
            print(f"{module:10s} {'P' if planted else ' '} {status:28s} {what}", flush=True)
    print("\nmodule      killed  survived  not applicable")
    for module, counts in outcome.items():
        killed = counts["killed"]
        applicable = killed + counts["survived"]
        print(f"{module:10s} {killed:4d}/{applicable:<3d} {counts['survived']:6d}  {counts['not applicable']:6d}"
              f"   {100 * killed / max(applicable, 1):.0f} % killed")


if __name__ == "__main__":
    main()
