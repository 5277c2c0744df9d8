"""The `legsegnet serve` page: trame-slicer's MRML views (axial, coronal, 3D) and Segment Editor, and the LegSegNet
panel. The panel only reads its controls and calls WebSession (serve_session.py), which calls the same MRML glue
as the Slicer module. Imported only by serve.py, after the `web` extra was found.
"""
import asyncio
import logging
import sys

from trame.app import TrameApp, asynchronous
from trame.widgets import html
from trame.widgets.vuetify3 import (VAlert, VBtn, VCard, VCardActions, VCardText, VCardTitle, VDataTable, VDialog,
                                    VDivider, VFileInput, VNavigationDrawer, VProgressLinear, VSelect, VSpacer)
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import SegmentEditorLogic
from trame_slicer.app.ui import SegmentEditorUI, ViewerLayout
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

from . import mrml
from .errors import InputError
from .panel import ENGINE_CHOICES
from .serve import case_path, list_cases
from .serve_session import WebSession

log = logging.getLogger(__name__)
LAYOUT_ID = "LegSegNet"
DOWNLOADS = [("statistics", "Download statistics CSV", "text/csv"), ("metrics", "Download metrics CSV", "text/csv"),
             ("seg", "Download .seg.nrrd", "application/octet-stream"),
             ("labels", "Download labels NIfTI", "application/gzip"), ("overview", "Download overview PNG", "image/png")]


def view_layout():
    """Axial on the left; coronal above 3D on the right."""
    return Layout(LayoutDirection.Horizontal, [
        ViewLayoutDefinition.axial_view(),
        Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.coronal_view(), ViewLayoutDefinition.threed_view()]),
    ])


class LegSegNetWebApp(TrameApp):
    def __init__(self, folder, upload_limit_mb, server=None, python=None):
        super().__init__(server)
        self.folder, self.upload_limit = folder, int(upload_limit_mb * 1e6)
        self.server.enable_module(trame_slicer_module)
        self.slicer_app = SlicerApp()
        self.session = WebSession(self.slicer_app.scene, python or sys.executable)
        self.confirmed_overwrite = False
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout(LAYOUT_ID, view_layout())
        self.layout_manager.set_layout(LAYOUT_ID)
        self._init_state()
        self._build_ui()

    def _init_state(self):
        s = self.state
        s.trame__title = "LegSegNet"
        s.cases = list_cases(self.folder)
        s.ct_case = None
        s.engine = "auto"
        s.engines = list(ENGINE_CHOICES)
        s.loaded = s.running = s.has_result = s.confirm_overwrite = False
        s.progress_text, s.progress_value = "", 0
        s.message, s.message_type = "", "info"
        s.stat_headers, s.stat_rows, s.metric_headers, s.metric_rows = [], [], [], []
        s.download_names = {}
        s.upload_limit = self.upload_limit
        s.change("ct_case")(self.on_case)

    # ------------------------------------------------------------ page
    def _build_ui(self):
        with ViewerLayout(self.server, title="LegSegNet", is_drawer_visible=True) as self.ui:
            self.ui.title.set_text("LegSegNet — lower-extremity CT tissue segmentation")
            with self.ui.drawer:
                self.editor_ui = SegmentEditorUI(v_if=("has_result",))
                html.Div("The Segment Editor appears here after Segment legs.", v_if=("!has_result",), classes="pa-4 text-grey")
            self.editor_logic.set_ui(self.editor_ui)
            with self.ui.content:
                self.layout_manager.initialize_layout_grid(self.ui)
            with self.ui, VNavigationDrawer(location="right", width=520, permanent=True):
                with html.Div(classes="pa-3 d-flex flex-column", style="gap: 8px;"):
                    self._input_controls()
                    self._run_controls()
                    self._result_controls()
            self._confirm_dialog()

    def _input_controls(self):
        VSelect(label="CT in the served folder", items=("cases",), v_model=("ct_case",), density="compact",
                hide_details=True, disabled=("running",), id="case-select")
        VFileInput(label="Upload a CT (NIfTI, NRRD, MHA, one DICOM file)", density="compact", hide_details=True,
                   disabled=("running",), id="upload", show_size=True,
                   # $event is only in scope at the top of the handler (not inside nested functions)
                   update_modelValue="$event && [].concat($event).length && ([].concat($event)[0].size > upload_limit"
                                     " ? trigger('upload_too_large', [[].concat($event)[0].name, [].concat($event)[0].size])"
                                     " : trigger('upload', [[].concat($event)]))")
        self.server.trigger("upload")(self.on_upload)
        self.server.trigger("upload_too_large")(self.on_upload_too_large)
        VSelect(label="Engine", items=("engines",), v_model=("engine",), density="compact", hide_details=True,
                disabled=("running",), id="engine-select")

    def _run_controls(self):
        with html.Div(classes="d-flex", style="gap: 8px;"):
            VBtn("Segment legs", color="primary", classes="text-none", click=self.on_segment, disabled=("!loaded || running",),
                 id="segment-legs")
            VBtn("Cancel", classes="text-none", click=self.on_cancel, v_if=("running",), id="cancel")
            VBtn("Update statistics", classes="text-none", click=self.on_update, disabled=("!has_result || running",),
                 id="update-statistics")
        VProgressLinear(v_if=("running",), model_value=("progress_value",), height=6, color="primary")
        html.Div("{{ progress_text }}", v_if=("progress_text",), classes="text-body-2", id="progress")
        VAlert(v_if=("message",), text=("message",), type=("message_type",), density="compact", id="message")

    def _result_controls(self):
        with html.Div(v_if=("has_result",), classes="d-flex flex-column", style="gap: 8px;"):
            VDivider()
            html.Div("Statistics (per segment)", classes="text-subtitle-2")
            VDataTable(headers=("stat_headers",), items=("stat_rows",), density="compact", id="statistics-table",
                       items_per_page=-1, hide_default_footer=True)
            html.Div("Derived metrics (per leg)", classes="text-subtitle-2")
            VDataTable(headers=("metric_headers",), items=("metric_rows",), density="compact", id="metrics-table",
                       items_per_page=-1, hide_default_footer=True)
            with html.Div(classes="d-flex flex-wrap", style="gap: 6px;"):
                for what, label, mime in DOWNLOADS:
                    VBtn(label, size="small", variant="tonal", classes="text-none", id=f"download-{what}",
                         click=f"utils.download(download_names['{what}'], trigger('download', ['{what}']), '{mime}')")
        self.server.trigger("download")(self.on_download)

    def _confirm_dialog(self):
        with self.ui, VDialog(v_model=("confirm_overwrite",), max_width=520), VCard():
            VCardTitle("Replace the edited segmentation?")
            VCardText("The segmentation was edited since LegSegNet produced it. Segmenting again replaces it; the "
                      f"edited version is kept as a hidden copy named '…{mrml.EDITED_COPY_SUFFIX}'.")
            with VCardActions():
                VSpacer()
                VBtn("Keep editing", classes="text-none", click="confirm_overwrite = false", id="keep-editing")
                VBtn("Replace", color="primary", classes="text-none", click=self.on_confirm_overwrite, id="replace")

    # ------------------------------------------------------------ input
    def on_case(self, ct_case=None, **_):
        case = ct_case
        if not case:
            return
        self._guarded(lambda: self._show(self.session.load(case_path(self.folder, case), name=_stem(case))),
                      f"loaded {case}")

    def on_upload(self, files):
        file = files[0] if files else None
        if not isinstance(file, dict) or "content" not in file:
            return self._message("the upload did not arrive; try again", "error")
        self.state.ct_case = None
        self._guarded(lambda: self._show(self.session.load_upload(file.get("name", "upload"), file["content"],
                                                                  self.upload_limit)),
                      f"loaded {file.get('name')}")

    def on_upload_too_large(self, name, size):
        self._message(f"{name}: {size / 1e6:.1f} MB is over the upload limit of {self.upload_limit / 1e6:.0f} MB",
                      "error")

    def _show(self, volume):
        self.slicer_app.display_manager.show_volume(volume, do_reset_views=True)
        self._attach_editor()
        self.state.update({"loaded": True, "has_result": False, "stat_rows": [], "metric_rows": []})

    def _attach_editor(self):
        self.slicer_app.segmentation_editor.set_active_segmentation(self.session.segmentation, self.session.volume)

    # ------------------------------------------------------------ run
    def on_segment(self):
        if self.session.needs_confirmation():
            self.state.confirm_overwrite = True
            return
        self._start(overwrite=False)

    def on_confirm_overwrite(self):
        self.state.confirm_overwrite = False
        self._start(overwrite=True)

    def _start(self, overwrite):
        if self._guarded(lambda: self.session.start(self.state.engine, overwrite)):
            self.state.update({"running": True, "progress_text": "starting…", "progress_value": 0,
                               "message": ""})
            asynchronous.create_task(self._watch())

    async def _watch(self):
        run = self.session.run
        while run is not None and self.session.run is run:
            state = self._guarded(self.session.poll, quiet=True)
            with self.state:
                if run.total:
                    self.state.progress_text = f"segmenting: {run.done} / {run.total} slices"
                    self.state.progress_value = 100 * run.done / run.total
                if state != "running":
                    self._finished(run, state)
                    return
            await asyncio.sleep(0.2)

    def _finished(self, run, state):
        self.state.running = False
        self.state.progress_text = ""
        if state == "done":
            self._attach_editor()
            self.slicer_app.segmentation_editor.set_surface_representation_enabled(True)
            self._fill_tables()
            kept = f"; the edited version was kept as '{self.session.kept_copy_name}'" if self.session.kept_copy_name \
                else ""
            self._message(f"segmented: {run.done} / {run.total} slices{kept}", "success")
        elif state == "failed":
            self._message(run.error.splitlines()[-1] if run.error else "the segmentation failed", "error")
        elif state is not None:
            self._message("segmentation cancelled; nothing changed", "info")

    def on_cancel(self):
        self.session.cancel()
        self.state.update({"running": False, "progress_text": ""})
        self._message("segmentation cancelled; nothing changed", "info")

    # ------------------------------------------------------------ results
    def on_update(self):
        if self._guarded(self.session.update_statistics):
            self._fill_tables()
            self._message("statistics updated from the segmentation as it is now", "success")

    def _fill_tables(self):
        rows, metrics = self.session.tables()
        self.state.update({"has_result": bool(rows), "stat_headers": _headers(rows), "stat_rows": _rounded(rows),
                           "metric_headers": _headers(metrics), "metric_rows": _rounded(metrics),
                           "download_names": self.session.download_names()})

    def on_download(self, what):
        try:
            name, data = self.session.download(what)
        except InputError as err:
            self._message(str(err), "error")
            return None
        return self.server.protocol.addAttachment(data)

    # ------------------------------------------------------------ messages
    def _message(self, text, kind="info"):
        self.state.update({"message": text, "message_type": kind})

    def _guarded(self, action, done_text=None, quiet=False):
        """Run a page action; bad input becomes a message on the page, and the server keeps running."""
        try:
            result = action()
        except InputError as err:
            self._message(str(err), "error")
            return None
        except Exception as err:      # a bug: logged with its traceback, shown as one line, the page stays up
            log.exception("LegSegNet web page")
            self._message(f"internal error: {err}", "error")
            return None
        if done_text and not quiet:
            self._message(done_text, "success")
        return result if result is not None else True


def _stem(name):
    return name.rstrip("/").rsplit("/", 1)[-1].split(".")[0] or "CT"


def _headers(rows):
    return [{"title": key, "key": key} for key in (rows[0] if rows else {})]


def _rounded(rows):
    return [{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
