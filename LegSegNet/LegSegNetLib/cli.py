"""`legsegnet` command line. Exit codes: 0 done, 2 bad input, arguments or environment (one clear line on
stderr), 1 a bug, 3 `batch`: some cases failed (failures.csv), 130 interrupted (Ctrl-C; 143 SIGTERM, 129 SIGHUP)."""
import argparse
import csv
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .engines import ENGINES
from .errors import InputError, environment_problem
from .outputs import check_location, handle_stop_signals

class _ProgressBar:
    """A progress bar on stderr (only on a terminal), started at the first progress call, after the input was
    read: an error before it leaves stderr holding the error line alone."""
    def __init__(self, desc):
        self.desc, self.bar = desc, None

    def __call__(self, done, total):
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=self.desc, unit="slice", file=sys.stderr, leave=False, disable=None)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _ProgressLines:
    """Machine-readable progress for a parent process (the Slicer module): `PROGRESS done total` lines."""
    def __call__(self, done, total):
        print(f"PROGRESS {done} {total}", flush=True)

    def close(self):
        pass


def cmd_segment(args):
    from .pipeline import parse_outputs, segment_case
    from .slice_images import parse_pixel_mm
    outputs = parse_outputs(args.outputs)
    pixel_mm = parse_pixel_mm(args.pixel_mm)
    bar = update = _ProgressLines() if getattr(args, "progress_lines", False) else _ProgressBar("segmenting")
    try:
        report = segment_case(args.input, args.output, engine=args.engine, slices=args.slices,
                              overwrite=args.overwrite, progress=update, engine_options=_engine_options(args),
                              outputs=outputs, with_dicom_seg=args.dicom_seg, pixel_mm=pixel_mm,
                              level_mm=args.level_mm)
    finally:
        bar.close()
    print(f"{args.output}: segmented with the {report['engine']['engine']} engine")


def cmd_stats(args):
    from .pipeline import stats_case
    stats_case(args.ct, args.segmentation, args.output, overwrite=args.overwrite)
    print(f"{args.output}: statistics written")


def cmd_phantom(args):
    import SimpleITK as sitk
    from .phantom import make_phantom
    out = check_location(args.output)
    for name in ("ct.nii.gz", "truth.nii.gz"):
        if (out / name).exists() and not args.overwrite:
            raise InputError(f"{out / name} exists; pass --overwrite to replace it")
    phantom = make_phantom(seed=args.seed, noise=args.noise, touching=args.touching)
    out.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(phantom.ct, str(out / "ct.nii.gz"), useCompression=True)
    sitk.WriteImage(phantom.truth, str(out / "truth.nii.gz"), useCompression=True)
    print(f"{out}: ct.nii.gz, truth.nii.gz (seed {args.seed})")


def cmd_demo(args):
    import numpy as np
    import SimpleITK as sitk
    from .phantom import make_phantom
    from .pipeline import OUTPUT_FILES, segment_case
    from .tissues import TISSUES
    out = Path(args.output or f"legsegnet-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} exists; choose another folder or pass --overwrite")
    check_location(out).mkdir(exist_ok=True)
    phantom = make_phantom(seed=args.seed)
    sitk.WriteImage(phantom.ct, str(out / "phantom_ct.nii.gz"), useCompression=True)
    sitk.WriteImage(phantom.truth, str(out / "phantom_truth.nii.gz"), useCompression=True)
    bar = update = _ProgressBar("segmenting")
    try:
        report = segment_case(out / "phantom_ct.nii.gz", out / "result", engine=args.engine,
                              overwrite=args.overwrite, progress=update, engine_options=_engine_options(args))
    finally:
        bar.close()
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "result" / "labels.nii.gz")))
    truth = sitk.GetArrayFromImage(phantom.truth)
    with open(out / "result" / "statistics.csv") as f:
        rows = {(r["tissue"], r["leg"]): r for r in csv.DictReader(f)}
    print(f"LegSegNet demo: synthetic two-leg phantom (seed {args.seed}), {report['engine']['engine']} engine")
    print(f"{'tissue':<6} {'left cm3':>10} {'right cm3':>10} {'mean HU':>8} {'Dice':>6}")
    for t in TISSUES:
        a, b = labels == t.label, truth == t.label
        dice = 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)
        print(f"{t.short:<6} {float(rows[t.short, 'left']['volume_cm3']):>10.1f} "
              f"{float(rows[t.short, 'right']['volume_cm3']):>10.1f} "
              f"{float(rows[t.short, 'both']['mean_hu']):>8.1f} {dice:>6.3f}")
    print(f"outputs: {out / 'result'} ({', '.join(OUTPUT_FILES)})")


def cmd_batch(args):
    from .batch import exit_code, open_hpc_cluster, run_batch
    if args.print_job_script:
        if not args.cluster or not args.cluster_config:
            raise InputError("--print-job-script needs --cluster and --cluster-config")
        cluster, _jobs = open_hpc_cluster(args.cluster, args.cluster_config)
        with cluster:
            print(cluster.job_script())
        return 0
    try:
        cohort = run_batch(args.inputs, args.output, engine=args.engine, engine_options=_engine_options(args),
                           slices=args.slices, workers=args.workers,
                           scheduler=args.scheduler, cluster=args.cluster, cluster_config=args.cluster_config,
                           force=args.force, keep_identifiers=args.keep_identifiers, with_dicom_seg=args.dicom_seg)
    except KeyboardInterrupt as stop:
        print(f"legsegnet: interrupted; finished cases are kept in {args.output}/cases; "
              "run the same command again to do the rest", file=sys.stderr)
        return interrupted_code(stop)
    c = cohort["counts"]
    print(f"{args.output}: {c['cases']} cases: {c['done']} segmented, {c['skipped']} already done, "
          f"{c['failed']} failed" + (" (see failures.csv)" if c["failed"] else ""))
    return exit_code(cohort)


def cmd_serve(args):
    from .serve import serve
    serve(args.data, host=args.host, port=args.port, token=args.token, upload_limit_mb=args.upload_limit_mb)


def _port(text):
    value = _count(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port: {text} (1-65535)")
    return value


def _add_network_options(p):
    g = p.add_argument_group("network engine (nnunet, or auto when weights are installed)")
    g.add_argument("--model", metavar="DIR", help="nnU-Net v2 2D results folder (default: $LEGSEGNET_MODEL, "
                   "then the weights from 'legsegnet weights download')")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (identical to nnU-Net) or bf16 autocast (faster on CPUs with AMX/AVX512-BF16)")
    g.add_argument("--mirroring", choices=("auto", "on", "off"), default="auto",
                   help="test-time mirroring (auto: on for cuda, off for cpu, like the published app)")
    g.add_argument("--accumulation", choices=("fp16", "fp32"), default="fp16",
                   help="sliding-window accumulation dtype (fp16 reproduces nnunetv2 2.8)")


def _add_dicom_seg_option(p):
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write segmentation.dcm, a DICOM SEG referencing the input series (DICOM inputs "
                   "only; needs the dicom-seg extra)")


def _engine_options(args):
    return {"model": args.model, "device": args.device, "precision": args.precision,
            "mirroring": {"auto": None, "on": True, "off": False}[args.mirroring], "accumulation": args.accumulation}


def cmd_weights(args):
    from . import weights
    if args.action == "download":
        folder, fetched = weights.download(revision=args.revision or weights.REVISION, force=args.force)
        print(f"{folder}: {'downloaded and recorded' if fetched else 'already installed and verified'} "
              f"(licence: {weights.LICENCE})")
    else:
        folder, source = weights.locate(args.model)
        if folder is None:
            raise InputError(f"{source}: {weights.HOW_TO_GET}")
        manifest = weights.verify(folder)
        print(f"{folder}: {len(manifest['files'])} files match their sha256")


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (like every other error), not a usage block."""
    def error(self, message):
        self.exit(2, f"legsegnet: error: {message} (see '{self.prog} --help')\n")


def _count(text):
    """A whole number ≥ 0 (a seed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; use 0 or more")
    return value


def _finite(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if value != value or abs(value) == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number")
    return value


def _non_negative(text):
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number of 0 or more")
    return value


def build_parser():
    parser = _Parser(prog="legsegnet", description="Lower-extremity CT tissue segmentation "
                                     "(SAT, muscle, IMAT, bone) and quantification.")
    parser.add_argument("--version", action="version", version=f"legsegnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment a CT volume (NIfTI, NRRD, MHA or a DICOM folder)")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="output folder (created atomically)")
    p.add_argument("--engine", choices=ENGINES, default="auto")
    p.add_argument("--slices", help="A:B axial slice range, inferior first, B exclusive")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--progress-lines", action="store_true",
                   help="print 'PROGRESS done total' lines on stdout instead of a progress bar")
    p.add_argument("--outputs", metavar="LIST",
                   help="what to write besides report.json, comma-separated from labels (labels.nii.gz), "
                   "seg (segmentation.seg.nrrd), tables (the CSV files), overview (overview.png, needs "
                   "matplotlib); default: all")
    p.add_argument("--pixel-mm", metavar="X[,Y]", help="pixel size of a PNG/JPEG slice in mm (between columns, "
                   "between rows); without it its areas are pixel counts")
    p.add_argument("--level-mm", metavar="Z", type=_finite, help="measure midthigh.csv at this patient z (LPS, "
                   "mm) instead of halfway along the femur (for scans that do not hold the whole femur)")
    _add_dicom_seg_option(p)
    _add_network_options(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("stats", help="recompute the tables for a (corrected) segmentation")
    p.add_argument("ct")
    p.add_argument("segmentation", help=".seg.nrrd or label image (values 1..4)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("phantom", help="write a synthetic leg phantom with its ground truth")
    p.add_argument("output")
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument("--noise", type=_non_negative, default=15.0, help="noise standard deviation (HU)")
    p.add_argument("--touching", action="store_true", help="legs touch each other")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("demo", help="phantom → segment → summary table")
    p.add_argument("-o", "--output")
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument("--engine", choices=ENGINES, default="auto")
    p.add_argument("--overwrite", action="store_true")
    _add_network_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("weights", help="download or verify the published network weights (CC BY-NC 4.0)")
    p.add_argument("action", choices=("download", "verify"))
    p.add_argument("--revision", default=None, help="Hub revision to download (default: main, unpinned)")
    p.add_argument("--force", action="store_true", help="download again even if installed")
    p.add_argument("--model", metavar="DIR", help="folder to verify (default: the installed weights)")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("batch", help="segment a cohort on Dask (resumable; exit 0 all done, 3 some failed, "
                       "2 bad arguments)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="folder (image files and DICOM series, recursively), list file (.txt, .csv) or image file")
    p.add_argument("-o", "--output", required=True, help="cohort folder (cases/, cohort tables, failures.csv)")
    p.add_argument("--engine", choices=ENGINES, default="auto")
    p.add_argument("--slices", help="A:B axial slice range for every case")
    p.add_argument("--workers", type=int, help="local worker processes (default: sized to cores and memory)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler (tcp://host:8786)")
    p.add_argument("--cluster", choices=("slurm", "pbs", "sge", "lsf"), help="start workers through an HPC queue")
    p.add_argument("--cluster-config", metavar="FILE", help="YAML: queue, cores, memory, walltime, jobs, ...")
    p.add_argument("--print-job-script", action="store_true", help="print the queue's job script and exit")
    p.add_argument("--force", action="store_true", help="rerun cases that are already done")
    p.add_argument("--keep-identifiers", action="store_true",
                   help="add DICOM patient name, ID and birth date to the cohort tables")
    _add_dicom_seg_option(p)
    _add_network_options(p)      # each worker loads the model once with these settings
    p.set_defaults(func=cmd_batch)

    from .serve import DEFAULT_HOST, DEFAULT_PORT, UPLOAD_LIMIT_MB
    p = sub.add_parser("serve", help="LegSegNet in the browser (needs the web extra): segment, correct, update, "
                       "export")
    p.add_argument("--data", default=".", metavar="DIR", help="folder of CTs the page offers (files are read only "
                   "from inside it; default: the current folder)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine "
                   "only; any other host needs the token)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--token", help="access token (at least 16 characters); generated and printed in the URL when "
                   "the host is not local")
    p.add_argument("--upload-limit-mb", type=_count, default=UPLOAD_LIMIT_MB, help=f"largest upload (default "
                   f"{UPLOAD_LIMIT_MB} MB)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format="legsegnet: %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:       # argparse: 2 for bad arguments, 0 for --help
        return exit_.code
    try:
        with handle_stop_signals():
            code = args.func(args)
    except InputError as err:
        return _error(err)
    except OSError as err:
        if not environment_problem(err):
            raise
        return _error(environment_problem(err))
    except KeyboardInterrupt as stop:
        published = getattr(stop, "published", None)
        print(f"legsegnet: interrupted after {published} was complete (it is kept)" if published
              else "legsegnet: interrupted; nothing was written", file=sys.stderr)
        return interrupted_code(stop)
    return code or 0


def _error(message):
    print(f"legsegnet: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def interrupted_code(stop):
    """128 + the signal's number, as a shell reports it (130 for Ctrl-C)."""
    return 128 + getattr(stop, "signum", 2)


if __name__ == "__main__":
    sys.exit(main())
