"""Background processes for the MRML glue: the core CLI segmenting a volume node (`BackgroundRun`), the tables
of an edited segmentation (`BackgroundStatistics`), the weights download (`WeightsDownload`), and importing a
finished run into the scene with its statistics, review list and mid-thigh rows read back.

Inside Slicer the interpreter is PythonSlicer; headless it is the current one. Nothing here touches the scene
until a run has succeeded, and the GUI only polls: it never blocks on a pipe.
"""
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import Cancelled, InputError
from .mrml import MODULE_DIR, check_output, fingerprint, keep_edited_copy, labels_to_segmentation, \
    segmentation_to_labels, volume_to_image
from .mrml_tables import fill_tables, read_quality, read_run_statistics, store_quality
from .sides import split_legs
from .volumes import AxialView, ijk_to_lps, image_from_matrix, validate_ct

log = logging.getLogger(__name__)


class BackgroundProcess:
    """Commands run one after another in a process session of their own (cancel ends every process they
    started); a thread reads their lines, the caller takes them with poll() or wait().
    State: idle, running, done, failed, cancelled. `PROGRESS done total` lines update done/total."""

    def __init__(self, commands, python=None):
        self.python = python or sys.executable
        self.commands = commands
        self.done = self.total = 0
        self.state = "idle"
        self.messages = []         # the processes' lines other than progress
        self.process = None
        self._lines = queue.Queue()
        self._lock = threading.Lock()
        self._cancelled = False

    def command(self, *args, module="LegSegNetLib"):
        """`python -m LegSegNetLib args...`"""
        return [self.python, "-m", module, *map(str, args)]

    def start(self):
        self.state = "running"
        threading.Thread(target=self._work, daemon=True).start()
        return self

    def _work(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(MODULE_DIR)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])),
            PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
        code = None
        for command in self.commands:
            with self._lock:
                if self._cancelled:
                    break
                log.info("LegSegNet: %s", " ".join(command))
                self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                                encoding="utf-8", errors="replace", env=env, **_new_process_group())
            for line in self.process.stdout:
                self._lines.put(line.rstrip("\n"))
            code = self.process.wait()
            if code != 0:
                break
        self._lines.put(None)      # end of output

    def succeeded(self):
        return True

    def poll(self):
        """Take the lines printed so far (non-blocking); returns the state."""
        while self.state == "running":
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            self._take(line)
        return self.state

    def _take(self, line):
        if line is None:
            if self.state == "running":
                ok = self.process is not None and self.process.returncode == 0 and self.succeeded()
                self.state = "done" if ok else "failed"
                if not ok:
                    log.error("LegSegNet: the background process failed: %s", self.error)
            return
        parts = line.split()
        if len(parts) == 3 and parts[0] == "PROGRESS":
            self.done, self.total = int(parts[1]), int(parts[2])
        elif line.strip():
            self.messages.append(line)
            log.info("legsegnet: %s", line)

    @property
    def returncode(self):
        return None if self.process is None else self.process.returncode

    @property
    def error(self):
        """The process's own message (its last lines), for an error dialog."""
        return "\n".join(self.messages[-5:]) or f"exit code {self.returncode}"

    def wait(self, progress=None, cancel=None, interval=0.05):
        """Block until the run ends (headless use); progress(done, total); cancel() → True stops it."""
        reported = None
        while self.state == "running":
            try:
                self._take(self._lines.get(timeout=interval))
            except queue.Empty:
                pass
            if progress is not None and self.total and (self.done, self.total) != reported:
                reported = (self.done, self.total)
                progress(self.done, self.total)
            if cancel is not None and self.state == "running" and cancel():
                self.cancel()
        return self.state

    def cancel(self):
        """Stop the process and everything it started; temporary files go too."""
        with self._lock:
            self._cancelled = True
            if self.process is not None and self.process.poll() is None:
                _kill_tree(self.process)
        if self.state == "running":
            self.state = "cancelled"
        self.cleanup()

    def cleanup(self):
        pass


class BackgroundRun(BackgroundProcess):
    """`legsegnet segment --progress-lines` on a volume node's voxels, written to a temporary folder."""

    def __init__(self, volume_node, engine="auto", slices=None, engine_args=(), python=None):
        super().__init__([], python)
        self.image = volume_to_image(volume_node)
        validate_ct(self.image, volume_node.GetName())
        self.engine, self.slices, self.engine_args = engine, slices, list(engine_args)
        self.folder = None
        self.kept_copy = None      # set by import_result when an edited segmentation was kept

    @property
    def output(self):
        return self.folder / "out"

    def start(self):
        self.folder = Path(tempfile.mkdtemp(prefix="legsegnet-"))
        sitk.WriteImage(self.image, str(self.folder / "input.nrrd"), useCompression=False)   # temporary: speed over size
        # only what import_result reads back, written with what Slicer ships (numpy, scipy, SimpleITK)
        command = self.command("segment", self.folder / "input.nrrd", "-o", self.output, "--engine", self.engine,
                               "--outputs", "labels,tables", "--progress-lines", *self.engine_args)
        self.commands = [command + (["--slices", self.slices] if self.slices else [])]
        return super().start()

    def succeeded(self):
        return (self.output / "labels.nii.gz").exists()

    def labels(self):
        """The result's labels (k, j, i) on the input grid; only after a successful run."""
        if self.state != "done":
            raise RuntimeError(f"no result: the run is {self.state}")
        image = sitk.ReadImage(str(self.output / "labels.nii.gz"))
        if image.GetSize() != self.image.GetSize() or not np.allclose(
                ijk_to_lps(image), ijk_to_lps(self.image), atol=1e-3):
            raise RuntimeError("the result is not on the input grid")
        return sitk.GetArrayFromImage(image).astype(np.uint8)

    def report(self):
        path = self.output / "report.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def cleanup(self):
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class BackgroundStatistics(BackgroundProcess):
    """Update statistics in a background process: the segmentation's labels as they are now (and its left/right
    segments, if every tissue segment has a side) with the CT go to a temporary folder; the worker
    (mrml_tables.write_tables) writes the tables, qc.csv and midthigh.csv there. Only the labels are taken on the
    calling thread (read straight from the segmentation's layers)."""

    def __init__(self, volume_node, segmentation_node, python=None):
        super().__init__([], python)
        self.image = volume_to_image(volume_node)
        self.labels, self.sides = segmentation_to_labels(segmentation_node, volume_node)
        self.fingerprint = fingerprint(segmentation_node)      # the content these tables will describe
        self.folder = None

    @property
    def output(self):
        return self.folder / "out"

    def start(self):
        self.folder = Path(tempfile.mkdtemp(prefix="legsegnet-stats-"))
        sitk.WriteImage(self.image, str(self.folder / "input.nrrd"), useCompression=False)
        files = [self.folder / "input.nrrd", self.folder / "labels.nrrd", self.output]
        for name, array in (("labels.nrrd", self.labels), ("sides.nrrd", self.sides)):
            if array is not None:
                sitk.WriteImage(image_from_matrix(array, ijk_to_lps(self.image)), str(self.folder / name))
        files += [self.folder / "sides.nrrd"] if self.sides is not None else []
        self.labels = self.sides = None
        self.commands = [self.command(*files, module="LegSegNetLib.mrml_tables")]
        return super().start()

    def succeeded(self):
        return (self.output / "metrics.csv").exists()

    def apply(self, segmentation_node, segment_table=None, metrics_table=None):
        """Fill the tables and the segmentation's review list from the finished process; refused when the
        segmentation changed meanwhile (the tables would describe an older state)."""
        if self.state != "done":
            raise RuntimeError(f"no statistics: the process is {self.state}")
        if fingerprint(segmentation_node) != self.fingerprint:
            raise InputError(f"segmentation '{segmentation_node.GetName()}' changed while its statistics were "
                             "computed; press Update statistics again")
        fill_tables(read_run_statistics(self.output), segmentation_node, segment_table, metrics_table)
        store_quality(segmentation_node, read_quality(self.output))

    def cleanup(self):
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class WeightsDownload(BackgroundProcess):
    """`legsegnet weights download`, then `legsegnet weights verify` (sha256 of every file) in the background."""

    def __init__(self, python=None, revision=None):
        super().__init__([], python)
        self.commands = [self.command("weights", "download", *(["--revision", revision] if revision else [])),
                         self.command("weights", "verify")]


def _new_process_group():
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _kill_tree(process):
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)    # the session holds every worker the CLI started
        except ProcessLookupError:
            pass
    process.wait()


def leg_sides(labels, image):
    """Side map (k, j, i) of the core's left/right split for labels on the image's grid."""
    view = AxialView.of(image)
    return view.from_canonical(split_legs(view.to_canonical(labels) > 0, view, image))


def import_result(run, volume_node, segmentation_node=None, split=False, overwrite=False, name=None,
                  segment_table=None, metrics_table=None):
    """Put a finished run's labels into segmentation_node (a new node if None) and fill the tables from the
    statistics the run computed (its review list and mid-thigh rows are kept with the segmentation: quality_of).
    Checks for edits again (the user may have edited the output while the run was
    going); with overwrite, an edited segmentation is first kept as '<name> (edited, before rerun)' (run.kept_copy)."""
    labels = run.labels()
    check_output(segmentation_node, overwrite)
    stats = read_run_statistics(run.output) if segment_table is not None or metrics_table is not None else None
    quality = read_quality(run.output)
    sides = leg_sides(labels, run.image) if split else None
    engine = run.report().get("engine", {}).get("engine", run.engine)
    if segmentation_node is None:
        segmentation_node = volume_node.GetScene().AddNewNodeByClass(
            "vtkMRMLSegmentationNode", name or f"{volume_node.GetName()} legs")
    else:
        run.kept_copy = keep_edited_copy(segmentation_node)
    labels_to_segmentation(labels, volume_node, segmentation_node, sides, engine=engine)
    store_quality(segmentation_node, quality)
    if stats is not None:
        fill_tables(stats, segmentation_node, segment_table, metrics_table)
    return segmentation_node


def segment_volume(volume_node, segmentation_node=None, engine="auto", slices=None, split=False, overwrite=False,
                   engine_args=(), python=None, progress=None, cancel=None, segment_table=None, metrics_table=None):
    """Headless: run the core in a background process and import the result (and its statistics into the tables
    given). Raises EditedOutputError before any work if the output was edited (unless overwrite: then the edited
    content is kept in a new node), Cancelled if cancel() became true, InputError or RuntimeError with the
    process's message on failure. The scene changes only on success."""
    check_output(segmentation_node, overwrite)
    run = BackgroundRun(volume_node, engine, slices, engine_args, python).start()
    try:
        state = run.wait(progress, cancel)
        if state == "cancelled":
            raise Cancelled("segmentation cancelled; the scene is unchanged")
        if state == "failed":
            raise (InputError if run.returncode == 2 else RuntimeError)(run.error)
        return import_result(run, volume_node, segmentation_node, split, overwrite,
                             segment_table=segment_table, metrics_table=metrics_table)
    finally:
        run.cleanup()


def update_statistics_in_background(volume_node, segmentation_node, segment_table=None, metrics_table=None,
                                    python=None):
    """Headless: Update statistics through the background process (as the panel does), waiting for it."""
    run = BackgroundStatistics(volume_node, segmentation_node, python).start()
    try:
        if run.wait() != "done":
            raise (InputError if run.returncode == 2 else RuntimeError)(run.error)
        run.apply(segmentation_node, segment_table, metrics_table)
    finally:
        run.cleanup()
