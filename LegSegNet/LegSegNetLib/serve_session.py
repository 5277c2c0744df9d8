"""What the web page does, without the page: load a CT into the scene, run the core in the background, import the
result, recompute the tables after edits, and export — all through the same MRML glue as the Slicer module
(mrml, mrml_run, mrml_tables). Needs MRML (the `slicer-core` wheel), not trame; serve_app.py is the page.
"""
import re
import shutil
import tempfile
from pathlib import Path

import SimpleITK as sitk

from . import mrml, mrml_run, mrml_tables
from .errors import InputError
from .panel import ENGINE_CHOICES
from .volumes import AxialView, read_ct

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class Busy(InputError):
    """A segmentation is already running on this server."""


class WebSession:
    """One scene: the CT, its segmentation node, the two table nodes and at most one background run."""

    def __init__(self, scene, python=None):
        self.scene, self.python = scene, python
        self.volume = self.segmentation = self.segment_table = self.metrics_table = None
        self.run = None
        self.kept_copy_name = None

    # ------------------------------------------------------------ input
    def load(self, path, name=None):
        """Read a CT with the CLI's checks (InputError on bad input, the scene unchanged) and make it current."""
        if self.running:
            raise Busy("a segmentation is running; cancel it or wait before loading another CT")
        ct = read_ct(path)
        self.scene.Clear(0)
        name = name or Path(path).name.split(".")[0] or "CT"
        self.volume = mrml.image_to_volume(ct.image, self.scene, name)
        self.segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} legs")
        self.segmentation.SetReferenceImageGeometryParameterFromVolumeNode(self.volume)
        self.segmentation.CreateDefaultDisplayNodes()
        self.segment_table, self.metrics_table = mrml_tables.table_nodes(self.scene, self.segmentation.GetName())
        self.kept_copy_name = None
        return self.volume

    def load_upload(self, file_name, content, limit_bytes):
        """An uploaded file: size limit, a safe name in a private temporary folder, then load() (the CLI's
        checks). The temporary copy is removed whatever happens."""
        if len(content) > limit_bytes:
            raise InputError(f"{file_name}: {len(content) / 1e6:.1f} MB is over the upload limit of "
                             f"{limit_bytes / 1e6:.0f} MB")
        safe = SAFE_NAME.sub("_", Path(str(file_name)).name).lstrip(".") or "upload"
        folder = Path(tempfile.mkdtemp(prefix="legsegnet-upload-"))
        try:
            (folder / safe).write_bytes(content)
            return self.load(folder / safe, name=safe.split(".")[0] or "upload")
        except InputError as err:        # name the file as the user knows it, not our temporary copy
            raise type(err)(str(err).replace(str(folder / safe), safe)) from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------ run
    @property
    def running(self):
        return self.run is not None and self.run.state == "running"

    def needs_confirmation(self):
        """True when a rerun would replace a segmentation the user edited (the page asks first, as Slicer does)."""
        return self.segmentation is not None and mrml.edited_since_produced(self.segmentation)

    def start(self, engine_choice="auto", overwrite=False):
        if self.volume is None:
            raise InputError("choose or upload a CT first")
        if self.running:
            raise Busy("a segmentation is already running on this server; wait for it or cancel it")
        if engine_choice not in ENGINE_CHOICES:
            raise InputError(f"unknown engine '{engine_choice}' (choose {', '.join(ENGINE_CHOICES)})")
        mrml.check_output(self.segmentation, overwrite)
        self.overwrite = overwrite
        self.run = mrml_run.BackgroundRun(self.volume, ENGINE_CHOICES[engine_choice], python=self.python).start()
        return self.run

    def poll(self):
        """The run's state; on success the result is imported (segments, tables) once, and the run ends."""
        run = self.run
        if run is None:
            return "idle"
        state = run.poll()
        if state == "running":
            return state
        try:
            if state == "done":
                mrml_run.import_result(run, self.volume, self.segmentation, overwrite=self.overwrite,
                                       segment_table=self.segment_table, metrics_table=self.metrics_table)
                self.kept_copy_name = run.kept_copy.GetName() if run.kept_copy is not None else None
        finally:
            run.cleanup()
            self.run = None
        return state

    def cancel(self):
        if self.run is not None:
            self.run.cancel()
            self.run = None

    # ------------------------------------------------------------ after edits
    def update_statistics(self):
        if not self.has_result():
            raise InputError("segment the legs first")
        return mrml_tables.update_statistics(self.volume, self.segmentation, self.segment_table, self.metrics_table)

    def has_result(self):
        return self.segmentation is not None and self.segmentation.GetSegmentation().GetNumberOfSegments() > 0

    def tables(self):
        """(statistics rows, metrics rows) as lists of dicts, as the page shows them."""
        if not self.has_result():
            return [], []
        return mrml_tables.table_rows(self.segment_table), mrml_tables.table_rows(self.metrics_table)

    # ------------------------------------------------------------ downloads
    def download_names(self):
        """File name of each download, as download() names it."""
        base = self.segmentation.GetName().replace(" ", "_")
        return {"statistics": f"{self.segment_table.GetName()}.csv", "metrics": f"{self.metrics_table.GetName()}.csv",
                "seg": f"{base}.seg.nrrd", "labels": f"{base}_labels.nii.gz", "overview": f"{base}_overview.png"}

    def download(self, what):
        """(file name, bytes) of one export: 'statistics', 'metrics' (CSV), 'seg' (.seg.nrrd), 'labels'
        (NIfTI) or 'overview' (PNG) of the segmentation as it is now."""
        if not self.has_result():
            raise InputError("segment the legs first")
        folder = Path(tempfile.mkdtemp(prefix="legsegnet-export-"))
        try:
            path = self._export(what, folder)
            return path.name, path.read_bytes()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _export(self, what, folder):
        base = folder / self.segmentation.GetName().replace(" ", "_")
        if what == "statistics":
            return mrml_tables.export_tables_csv([self.segment_table], folder)[0]
        if what == "metrics":
            return mrml_tables.export_tables_csv([self.metrics_table], folder)[0]
        if what == "seg":
            return mrml_tables.export_seg_nrrd(self.segmentation, f"{base}.seg.nrrd")
        if what == "labels":
            return mrml_tables.export_labelmap(self.volume, self.segmentation, f"{base}_labels.nii.gz")[0]
        if what == "overview":
            return self._overview(f"{base}_overview.png")
        raise InputError(f"unknown download '{what}'")

    def _overview(self, path):
        from .overview import write_overview
        image = mrml.volume_to_image(self.volume)
        labels, _ = mrml.segmentation_to_labels(self.segmentation, self.volume)
        view = AxialView.of(image)
        write_overview(path, view.to_canonical(sitk.GetArrayViewFromImage(image)), view.to_canonical(labels),
                       view.spacing, title=self.volume.GetName())
        return Path(path)
