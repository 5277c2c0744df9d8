"""The per-case work shared by the CLI, the Slicer module and cohort runs."""
import errno
import hashlib
import importlib.util
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from . import __version__
from . import dicom_seg, midthigh, qc
from .engines import make_engine
from .errors import InputError
from .outputs import atomic_folder
from .overview import write_overview
from .sides import split_legs
from .statistics import compute_statistics
from .segmentations import read_segmentation, write_seg_nrrd
from .slice_images import counting_spacing, table_units
from .volumes import AxialView, fingerprint_files, read_ct, write_labels

log = logging.getLogger(__name__)

# What `segment` writes into a case folder (a folder holding all of them is complete: it was renamed into place).
OUTPUT_FILES = ("labels.nii.gz", "segmentation.seg.nrrd", "statistics.csv", "slices.csv", "metrics.csv",
                "qc.csv", "midthigh.csv", "report.json", "overview.png")
# What an old result folder may hold for --overwrite to replace it (anything else is the user's: never deleted).
REPLACEABLE = frozenset(OUTPUT_FILES + (dicom_seg.FILE_NAME,))
# What `segment --outputs` chooses from (report.json is always written); --dicom-seg adds dicom_seg.FILE_NAME.
OUTPUT_GROUPS = {"labels": ("labels.nii.gz",), "seg": ("segmentation.seg.nrrd",),
                 "tables": ("statistics.csv", "slices.csv", "metrics.csv", "qc.csv", "midthigh.csv"),
                 "overview": ("overview.png",)}


def parse_outputs(text):
    """'labels,seg,tables' → a tuple of OUTPUT_GROUPS names (None: all of them)."""
    if text is None:
        return tuple(OUTPUT_GROUPS)
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in OUTPUT_GROUPS]
    if unknown or not names:
        raise InputError(f"--outputs '{text}': choose from {', '.join(OUTPUT_GROUPS)}, comma-separated")
    return names


def check_outputs(input_path, outputs, with_dicom_seg):
    """Refuse, before any work, outputs that this input or this Python installation cannot have."""
    if "overview" in outputs:
        _require("matplotlib", "overview.png needs matplotlib (pip install matplotlib); "
                 "or leave overview out of --outputs")
    if with_dicom_seg:
        if not os.path.isdir(input_path):
            raise InputError(f"--dicom-seg needs a DICOM series as input; {input_path} is an image file")
        _require("highdicom", dicom_seg.HOW_TO_GET)


def _require(module, message):
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:           # an import hook refusing it
        found = False
    if not found:
        raise InputError(message)


def slice_bounds(text):
    """'A:B' (either may be empty) → (start, stop); refuses other text, negative indices and empty ranges, so a
    cohort run can check --slices before any case runs."""
    try:
        start, stop = (int(v) if v.strip() else None for v in text.split(":"))
    except ValueError:
        raise InputError(f"--slices '{text}': expected A:B with integers") from None
    if any(v is not None and v < 0 for v in (start, stop)):
        raise InputError(f"--slices '{text}': slices count from 0 at the inferior end; negative values are not "
                         "allowed")
    if start is not None and stop is not None and stop <= start:
        raise InputError(f"--slices '{text}' selects no slice")
    return start, stop


def parse_slices(text, n_slices):
    """'A:B' (canonical axial indices, inferior first, B exclusive; either may be empty) → slice; a range
    reaching past the scan is refused rather than clipped."""
    start, stop = slice_bounds(text)
    if (start or 0) >= n_slices:
        raise InputError(f"--slices '{text}' selects no slice of {n_slices}")
    if stop is not None and stop > n_slices:
        raise InputError(f"--slices '{text}': the scan has {n_slices} slices, so B is at most {n_slices}")
    return slice(start, stop)


def settings_digest(engine_report, slices=None, level_mm=None):
    """Hash of what decides a result besides the input: software version, engine identity and settings, slice
    range, a given mid-thigh level. A cohort run skips a finished case only when this and the input fingerprint
    are unchanged."""
    settings = {"legsegnet": __version__, "slices": slices or "all",
                "engine": {k: v for k, v in engine_report.items() if k != "reason"}}
    if level_mm is not None:
        settings["level_mm"] = level_mm
    text = json.dumps(settings, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def segment_case(input_path, outdir, engine="auto", slices=None, overwrite=False, progress=None, cancel=None,
                 series_uid=None, engine_options=None, engine_reason="given by the caller", lock=True, tag="",
                 outputs=tuple(OUTPUT_GROUPS), with_dicom_seg=False, pixel_mm=None, level_mm=None):
    """Segment one CT (series_uid: one series of a DICOM folder) and write every output into outdir
    atomically. engine: a name for engines.make_engine (with engine_options: model, device, precision, ...) or
    an engine already loaded (engine_reason then says why it was chosen). outdir is claimed before the input is
    read (lock and tag: see outputs.atomic_folder). outputs: OUTPUT_GROUPS names to write; with_dicom_seg: also
    a DICOM SEG (DICOM inputs only). pixel_mm: (x, y) of a PNG/JPEG slice; level_mm: measure the mid-thigh
    tables at this patient z instead of the femur's midpoint. Returns the report dict."""
    check_outputs(input_path, outputs, with_dicom_seg)
    with atomic_folder(outdir, overwrite, lock, tag, replaceable=REPLACEABLE) as folder:
        timings = {}
        start = time.perf_counter()
        ct = read_ct(input_path, series_uid, pixel_mm)
        fingerprint = fingerprint_files(ct.files)
        view = AxialView.of(ct.image)
        if level_mm is not None:            # refused before the slow part when the level is not in the scan
            midthigh.level_slice(level_mm, view.positions(ct.image, 0))
        hu = view.to_canonical(ct.array)
        chosen = parse_slices(slices, hu.shape[0]) if slices else slice(None)
        engine_obj, reason = (make_engine(engine, **(engine_options or {})) if isinstance(engine, str)
                              else (engine, engine_reason))
        timings["read_s"] = time.perf_counter() - start

        t = time.perf_counter()
        labels = np.zeros(hu.shape, np.uint8)
        labels[chosen] = engine_obj.segment(hu[chosen], view.spacing, progress=progress, cancel=cancel)
        timings["engine_s"] = time.perf_counter() - t
        uncertain = _uncertain_share(engine_obj, hu.shape[0], chosen)
        if not labels.any():
            note = "no leg tissue was found: every table is empty (is a limb in the field of view?)"
            log.warning(note)
            ct.notes.append(note)
        report = {"engine": {**engine_obj.report(), "reason": reason},
                  "slices": slices or "all", "notes": ct.notes, "input_fingerprint": fingerprint,
                  "settings_digest": settings_digest(engine_obj.report(), slices, level_mm)}
        write_results(ct, view, hu, labels, folder, report, timings, outputs, with_dicom_seg,
                      uncertain=uncertain, level_mm=level_mm)
    return report


def stats_case(ct_path, segmentation_path, outdir, overwrite=False):
    """Recompute the tables (and picture) for a corrected segmentation."""
    with atomic_folder(outdir, overwrite, replaceable=REPLACEABLE) as folder:
        ct = read_ct(ct_path)
        view = AxialView.of(ct.image)
        labels = view.to_canonical(read_segmentation(segmentation_path, ct.image))
        report = {"segmentation": os.fspath(segmentation_path), "notes": ct.notes}
        write_results(ct, view, view.to_canonical(ct.array), labels, folder, report, {}, ("tables", "overview"))
    return report


def canonical_statistics(image, view, hu, labels, sides=None, unknown=()):
    """Statistics of canonical labels on the CT `image` (hu: its canonical array, view: its AxialView); the legs
    are split from the labels unless a canonical side map is given. unknown: sizes a one-slice input does not
    give (their tables are in pixels or areas, see slice_images.table_units)."""
    if sides is None:
        sides = split_legs(labels > 0, view, image)
    stats = compute_statistics(hu, labels, sides, counting_spacing(view.spacing, unknown), view.positions(image, 0))
    stats.rows, stats.slices, stats.metrics = (table_units(rows, unknown)
                                               for rows in (stats.rows, stats.slices, stats.metrics))
    return stats


def _uncertain_share(engine, n_slices, chosen):
    """Per slice, the network's share of uncertain body pixels (None for engines without probabilities)."""
    share = getattr(engine, "last_uncertain_share", None)
    if share is None:
        return None
    full = np.full(n_slices, np.nan)
    full[chosen] = share
    return full


def quality_tables(ct, view, hu, labels, sides, uncertain=None, level_mm=None, counts=None):
    """(qc rows, mid-thigh rows) of canonical labels, in the units the input gives; counts: the per-slice pixel
    counts statistics computed (Statistics.counts), so neither counts again."""
    spacing = counting_spacing(view.spacing, ct.unknown)
    positions = view.positions(ct.image, 0)
    unit = "px" if "pixel_size" in ct.unknown else "cm2"
    qc_rows = qc.slice_qc(hu, labels, sides, spacing, positions, uncertain, unit, counts)
    level_rows = table_units(midthigh.measure(hu, labels, sides, spacing, positions, level_mm, counts), ct.unknown)
    return qc_rows, level_rows


def case_tables(ct, view, hu, labels, sides=None, uncertain=None, level_mm=None):
    """(statistics, qc rows, mid-thigh rows) of canonical labels on the CtVolume ct; the legs are split from the
    labels unless a canonical side map is given. Statistics count the pixels once; QC and the level reuse them."""
    if sides is None:
        sides = split_legs(labels > 0, view, ct.image)
    stats = canonical_statistics(ct.image, view, hu, labels, sides, ct.unknown)
    qc_rows, level_rows = quality_tables(ct, view, hu, labels, sides, uncertain, level_mm, stats.counts)
    return stats, qc_rows, level_rows


def write_tables(folder, stats, qc_rows, level_rows):
    """statistics.csv, slices.csv, metrics.csv, qc.csv and midthigh.csv into folder."""
    folder = Path(folder)
    stats.write(folder)
    qc.write_qc(folder / "qc.csv", qc_rows)
    midthigh.write_midthigh(folder / "midthigh.csv", level_rows)


def write_results(ct, view, hu, labels, folder, report, timings, outputs=tuple(OUTPUT_GROUPS),
                  with_dicom_seg=False, uncertain=None, level_mm=None):
    """The chosen outputs (OUTPUT_GROUPS names) and report.json into folder (atomic_folder's temporary one);
    uncertain: the network's per-slice share of uncertain pixels; level_mm: a given mid-thigh level."""
    t = time.perf_counter()
    stats, qc_rows, level_rows = case_tables(ct, view, hu, labels, uncertain=uncertain, level_mm=level_mm)
    timings["statistics_s"] = time.perf_counter() - t
    report["qc"] = qc.summary(qc_rows, uncertain)
    report["midthigh"] = midthigh.summary(level_rows)
    if ct.unknown:
        report["units"] = {"unknown": list(ct.unknown), "areas": "px" if "pixel_size" in ct.unknown else "cm2",
                           "volumes": "areas of the one slice (no slice thickness)"}
    t = time.perf_counter()
    native = view.from_canonical(labels)
    steps = {}        # seconds per file written, in report.json so that a slow writer shows
    if "labels" in outputs:
        _timed(steps, "labels.nii.gz", lambda: _itk_write(folder / "labels.nii.gz",
                                                          lambda path: write_labels(native, ct.image, path)))
    if "seg" in outputs:
        _timed(steps, "segmentation.seg.nrrd", lambda: _itk_write(folder / "segmentation.seg.nrrd",
                                                                  lambda path: write_seg_nrrd(native, ct.image, path)))
    if with_dicom_seg:
        _timed(steps, dicom_seg.FILE_NAME, lambda: dicom_seg.write_dicom_seg(
            native, ct.image, ct.files, folder / dicom_seg.FILE_NAME, report["engine"]["engine"]))
    if "tables" in outputs:
        _timed(steps, "tables", lambda: write_tables(folder, stats, qc_rows, level_rows))
    if "overview" in outputs:
        _timed(steps, "overview.png", lambda: write_overview(folder / "overview.png", hu, labels, view.spacing,
                                                             title=_case_title(ct.source),
                                                             marks=overview_marks(qc_rows, level_rows)))
    timings["write_s"] = time.perf_counter() - t
    timings["write_steps_s"] = steps
    written = sorted(os.listdir(folder) + ["report.json"])
    full = {"input": os.path.abspath(ct.source), "input_geometry": ct.geometry(),
            "legsegnet_version": __version__, "versions": _versions(), **report, "outputs": written,
            "timings": timings}
    _write_report(folder / "report.json", full)
    return stats


def overview_marks(qc_rows, level_rows):
    """What overview.png marks: flagged slices, the worst one, the mid-thigh level slice per leg."""
    flagged = [r for r in qc_rows if r["flags"]]
    worst = min(flagged, key=lambda r: r["review_rank"])["slice"] if flagged else None
    levels = {r["leg"]: r["slice"] for r in level_rows if r["slice"] != ""}
    return {"flagged": [r["slice"] for r in flagged], "worst": worst, "levels": levels}


def _timed(steps, name, write):
    """Run write() and record its seconds under name."""
    start = time.perf_counter()
    write()
    steps[name] = time.perf_counter() - start


def _itk_write(path, write):
    """ITK reports a full disk or a refused write as RuntimeError: make it the OSError it is."""
    try:
        write(path)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise OSError(errno.EIO, f"cannot be written ({lines[-1] if lines else 'ITK write error'})",
                      os.fspath(path)) from None


def _write_report(path, report):
    Path(path).write_text(json.dumps(report, indent=2, default=str))


def _case_title(source):
    """'case/dicom' rather than a bare 'dicom' for series folders."""
    parts = Path(os.path.abspath(source)).parts
    return "/".join(parts[-2:]) if Path(source).is_dir() else parts[-1]


def _versions():
    import scipy
    import SimpleITK
    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "SimpleITK": SimpleITK.Version_VersionString()}
