"""The per-case work shared by the CLI, the Slicer module and cohort runs."""
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import __version__
from .engines import make_engine
from .errors import InputError
from .overview import write_overview
from .sides import split_legs
from .statistics import compute_statistics
from .segmentations import read_segmentation, write_seg_nrrd
from .volumes import AxialView, fingerprint_files, read_ct, write_labels

log = logging.getLogger(__name__)

# What `segment` writes into a case folder (a folder holding all of them is complete: it was renamed into place).
OUTPUT_FILES = ("labels.nii.gz", "segmentation.seg.nrrd", "statistics.csv", "slices.csv", "metrics.csv",
                "report.json", "overview.png")


def parse_slices(text, n_slices):
    """'A:B' (canonical axial indices, inferior first, B exclusive; either may be empty) → slice."""
    try:
        start, stop = (int(v) if v.strip() else None for v in text.split(":"))
    except ValueError:
        raise InputError(f"--slices '{text}': expected A:B with integers") from None
    chosen = slice(start, stop)
    if len(range(*chosen.indices(n_slices))) == 0:
        raise InputError(f"--slices '{text}' selects no slice of {n_slices}")
    return chosen


@contextmanager
def atomic_folder(outdir, overwrite=False):
    """Yield a temporary folder beside outdir; on success it becomes outdir, on any error it vanishes."""
    outdir = Path(outdir)
    if outdir.exists() and not overwrite:
        raise InputError(f"{outdir} exists; choose another folder or pass --overwrite")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".partial", dir=outdir.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)         # mkdtemp makes it private; results follow the user's umask like mkdir
    try:
        yield tmp
        if outdir.exists():
            old = outdir.with_name(f".{outdir.name}.old-{os.getpid()}")
            outdir.rename(old)
            tmp.rename(outdir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(outdir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def settings_digest(engine_report, slices=None):
    """Hash of what decides a result besides the input: software version, engine identity and settings, slice
    range. A cohort run skips a finished case only when this and the input fingerprint are unchanged."""
    settings = {"legsegnet": __version__, "slices": slices or "all",
                "engine": {k: v for k, v in engine_report.items() if k != "reason"}}
    text = json.dumps(settings, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def segment_case(input_path, outdir, engine="auto", slices=None, overwrite=False, progress=None, cancel=None,
                 series_uid=None, engine_options=None, engine_reason="given by the caller"):
    """Segment one CT (series_uid: one series of a DICOM folder) and write every output into outdir
    atomically. engine: a name for engines.make_engine (with engine_options: model, device, precision, ...) or
    an engine already loaded (engine_reason then says why it was chosen). Returns the report dict."""
    timings = {}
    start = time.perf_counter()
    if Path(outdir).exists() and not overwrite:   # fail before the slow part
        raise InputError(f"{outdir} exists; choose another folder or pass --overwrite")
    ct = read_ct(input_path, series_uid)
    fingerprint = fingerprint_files(ct.files)
    view = AxialView.of(ct.image)
    hu = view.to_canonical(ct.array)
    chosen = parse_slices(slices, hu.shape[0]) if slices else slice(None)
    engine_obj, reason = (make_engine(engine, **(engine_options or {})) if isinstance(engine, str)
                          else (engine, engine_reason))
    timings["read_s"] = time.perf_counter() - start

    t = time.perf_counter()
    labels = np.zeros(hu.shape, np.uint8)
    labels[chosen] = engine_obj.segment(hu[chosen], view.spacing, progress=progress, cancel=cancel)
    timings["engine_s"] = time.perf_counter() - t
    if not labels.any():
        note = "no leg tissue was found: every table is empty (is a limb in the field of view?)"
        log.warning(note)
        ct.notes.append(note)
    report = {"engine": {**engine_obj.report(), "reason": reason},
              "slices": slices or "all", "notes": ct.notes, "input_fingerprint": fingerprint,
              "settings_digest": settings_digest(engine_obj.report(), slices)}
    write_results(ct, view, hu, labels, outdir, report, timings, overwrite)
    return report


def stats_case(ct_path, segmentation_path, outdir, overwrite=False):
    """Recompute the tables (and picture) for a corrected segmentation."""
    if Path(outdir).exists() and not overwrite:
        raise InputError(f"{outdir} exists; choose another folder or pass --overwrite")
    ct = read_ct(ct_path)
    view = AxialView.of(ct.image)
    labels = view.to_canonical(read_segmentation(segmentation_path, ct.image))
    report = {"segmentation": os.fspath(segmentation_path), "notes": ct.notes}
    write_results(ct, view, view.to_canonical(ct.array), labels, outdir, report, {}, overwrite,
                  with_labels=False)
    return report


def canonical_statistics(image, view, hu, labels, sides=None):
    """Statistics of canonical labels on the CT `image` (hu: its canonical array, view: its AxialView); the legs
    are split from the labels unless a canonical side map is given."""
    if sides is None:
        sides = split_legs(labels > 0, view, image)
    return compute_statistics(hu, labels, sides, view.spacing, view.positions(image, 0))


def write_results(ct, view, hu, labels, outdir, report, timings, overwrite, with_labels=True):
    t = time.perf_counter()
    stats = canonical_statistics(ct.image, view, hu, labels)
    timings["statistics_s"] = time.perf_counter() - t
    with atomic_folder(outdir, overwrite) as tmp:
        t = time.perf_counter()
        if with_labels:
            native = view.from_canonical(labels)
            write_labels(native, ct.image, tmp / "labels.nii.gz")
            write_seg_nrrd(native, ct.image, tmp / "segmentation.seg.nrrd")
        stats.write(tmp)
        write_overview(tmp / "overview.png", hu, labels, view.spacing, title=_case_title(ct.source))
        timings["write_s"] = time.perf_counter() - t
        full = {"input": os.path.abspath(ct.source), "input_geometry": ct.geometry(),
                "legsegnet_version": __version__, "versions": _versions(), **report, "timings": timings}
        (tmp / "report.json").write_text(json.dumps(full, indent=2, default=str))
    return stats


def _case_title(source):
    """'case/dicom' rather than a bare 'dicom' for series folders."""
    parts = Path(os.path.abspath(source)).parts
    return "/".join(parts[-2:]) if Path(source).is_dir() else parts[-1]


def _versions():
    import scipy
    import SimpleITK
    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "SimpleITK": SimpleITK.Version_VersionString()}
