"""LegSegNet 3D Slicer module: thin widget and logic over LegSegNetLib (the work lives in LegSegNetLib.mrml)."""
import logging
import os
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# The panel's engine choices (LegSegNetLib.panel.ENGINE_CHOICES; repeated: loading the module imports no core)
ENGINE_CHOICES = ("auto", "network", "classical")
TERMINOLOGY_FILE = os.path.join(os.path.dirname(__file__), "Resources",
                                "SegmentationCategoryTypeModifier-LegSegNet.term.json")


class LegSegNet(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LegSegNet"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LegSegNet extension developers"]
        self.parent.helpText = (
            "Segments the lower-extremity tissues on CT into subcutaneous adipose tissue (SAT), skeletal muscle "
            "(SM), inter/intramuscular adipose tissue (IMAT) and bone, left and right leg, and quantifies them "
            "(volumes, mean HU, fat ratios, muscle quality). Engines: the published LegSegNet network (nnU-Net v2, "
            "2D, applied slice by slice) when its weights are installed, or a transparent classical engine. "
            "Correct the segments with the Segment Editor and press <b>Update statistics</b>. "
            'See the <a href="https://github.com/mazurowski-lab/LegSegNet">LegSegNet project</a>.')
        self.parent.acknowledgementText = (
            "LegSegNet model and method: Y. Chen, Y. Chen, R. Colglazier, H. Dong, H. Gu, M. A. Mazurowski, "
            "K. W. Southerland, <i>LegSegNet: A Public Deep Learning System for Lower Extremity CT Tissue "
            "Segmentation and Quantification</i>, arXiv:2605.30829 (2026), Mazurowski lab, Duke University: an "
            "nnU-Net 2D model with an average Dice score of 89.3 on 900 held-out test slices. The model weights "
            "are licensed CC BY-NC 4.0 by their authors and are not part of this extension.")
        slicer.app.connect("startupCompleted()", loadTerminology)


def loadTerminology():
    """Make our terminology context known to Slicer at startup, from the file alone: no core import (SimpleITK,
    scipy, the pipeline) at every Slicer start."""
    try:
        if not slicer.util.getModuleLogic("Terminologies").LoadTerminologyFromFile(TERMINOLOGY_FILE):
            logging.error(f"LegSegNet: cannot load the terminology {TERMINOLOGY_FILE}")
    except Exception as error:   # a broken terminology must not stop Slicer's startup
        logging.error(f"LegSegNet: cannot load the terminology: {error}")


@parameterNodeWrapper
class LegSegNetParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    engine: Annotated[str, Choice(list(ENGINE_CHOICES))] = "auto"
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    modelFolder: str = ""         # empty: the installed LegSegNet weights (bound by hand: a Path shows ".")
    slices: str = ""
    splitLegs: bool = False
    statisticsTable: vtkMRMLTableNode
    metricsTable: vtkMRMLTableNode


class LegSegNetWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = self._onRunEnd = None
        self._output, self._overwrite = None, False
        self._quality = None
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onPoll)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LegSegNet.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LegSegNetLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.startHereButton.clicked.connect(lambda: self.onRangeEnd("start"))
        self.ui.endHereButton.clicked.connect(lambda: self.onRangeEnd("end"))
        self.ui.modelFolderPathLineEdit.currentPathChanged.connect(self.onModelFolderChanged)
        self.ui.downloadWeightsButton.clicked.connect(self.onDownloadWeights)
        self.ui.updateStatisticsButton.clicked.connect(self.onUpdateStatistics)
        self.ui.exportButton.clicked.connect(self.onExport)
        self.ui.segmentEditorButton.clicked.connect(self.onSegmentEditor)
        self.ui.reviewListWidget.currentRowChanged.connect(self.onReviewChosen)
        self.initializeParameterNode()

    def cleanup(self):
        self.onCancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.showTables()
            self.updateButtons()

    def showTables(self):
        self.ui.statisticsTableView.setMRMLTableNode(self._parameterNode.statisticsTable)
        self.ui.metricsTableView.setMRMLTableNode(self._parameterNode.metricsTable)

    def updateButtons(self, caller=None, event=None):
        from LegSegNetLib import panel
        p = self._parameterNode
        running = self._run is not None
        self.ui.applyButton.enabled = bool(p and p.inputVolume) and not running
        self.ui.cancelButton.enabled = running
        self.ui.downloadWeightsButton.enabled = not running
        hasResult = bool(p and p.inputVolume and p.outputSegmentation) and not running
        for button in (self.ui.updateStatisticsButton, self.ui.exportButton, self.ui.segmentEditorButton):
            button.enabled = hasResult
        for button in (self.ui.startHereButton, self.ui.endHereButton):
            button.enabled = bool(p and p.inputVolume)
        if p:
            folder = panel.model_folder_text(p.modelFolder)
            if self.ui.modelFolderPathLineEdit.currentPath != folder:
                self.ui.modelFolderPathLineEdit.currentPath = folder
            self.ui.sliceRangeInfoLabel.text = panel.describe_volume_range(p.inputVolume, p.slices)
        self.updateReview()

    def updateReview(self):
        """The review list and mid-thigh lines stored with the output segmentation (refilled when they change)."""
        from LegSegNetLib import mrml_tables, panel
        quality = mrml_tables.quality_of(self._parameterNode.outputSegmentation if self._parameterNode else None)
        if quality == self._quality:
            return
        self._quality = quality
        self.ui.reviewListWidget.clear()
        self.ui.reviewListWidget.addItems(panel.review_items(quality))
        self.ui.midthighLabel.text = panel.midthigh_text(quality)

    def onReviewChosen(self, row):
        """Move the slice views to the chosen slice (its centre on the CT's grid)."""
        from LegSegNetLib import panel
        p = self._parameterNode
        if p and p.inputVolume and 0 <= row < len(self._quality["review"]):
            with slicer.util.tryWithErrorDisplay("LegSegNet cannot show that slice."):
                r, a, s = panel.review_position(p.inputVolume, self._quality["review"][row])
                slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)

    def onModelFolderChanged(self, path):
        from LegSegNetLib import panel
        if self._parameterNode:
            self._parameterNode.modelFolder = panel.model_folder_text(path)

    def onRangeEnd(self, which):
        """Start/End here: the red slice view's position into the Slices range."""
        from LegSegNetLib import panel
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("LegSegNet cannot use the slice position."):
            p.slices = panel.range_with_slice_view(p.inputVolume, slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed"),
                                                   p.slices, which)

    # -------------------------------------------------------------- background processes
    def startBackground(self, run, onEnd, status):
        self._run, self._onRunEnd = run, onEnd
        self.ui.progressBar.maximum, self.ui.progressBar.value = 0, 0   # busy until the first progress line
        self.ui.statusLabel.text = status
        self.updateButtons()
        self._timer.start()

    def onPoll(self):
        run = self._run
        if run is None:
            return
        state = run.poll()
        if run.total:
            self.ui.progressBar.maximum, self.ui.progressBar.value = run.total, run.done
        if state == "running":
            return
        self._timer.stop()
        self._run = None
        self.ui.progressBar.maximum = max(self.ui.progressBar.maximum, 1)
        try:
            if state == "done":
                with slicer.util.tryWithErrorDisplay("LegSegNet could not use the result."):
                    self._onRunEnd(run)
            elif state == "failed":
                self.ui.statusLabel.text = "Failed; see the message."
                slicer.util.errorDisplay("LegSegNet: the background process failed.", detailedText=run.error)
        finally:
            run.cleanup()
            self.updateButtons()

    def onCancel(self):
        if self._run is not None:
            self._timer.stop()
            self._run.cancel()
            self._run = None
            self.ui.progressBar.maximum, self.ui.progressBar.value = 1, 0
            self.ui.statusLabel.text = "Cancelled; the scene is unchanged."
            self.updateButtons()

    # -------------------------------------------------------------- segment
    def onApply(self):
        from LegSegNetLib import slicer_app
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("LegSegNet cannot start."):
            if not self.logic.ensureDependencies(p.engine, p.modelFolder):
                return
            output = slicer_app.ask_about_edited_output(p.outputSegmentation)
            if output is False:
                return
            self._output, self._overwrite = output
            with slicer.util.WaitCursor():
                run = self.logic.start(p.inputVolume, p.engine, p.slices, p.modelFolder, p.device)
            self.startBackground(run, self.importResult, "Segmenting in a background process…")

    def importResult(self, run):
        """The run's labels into the segmentation, its statistics (computed in the background) into the tables."""
        from LegSegNetLib import mrml_run, panel, slicer_app
        p = self._parameterNode
        output = self._output
        if output is not None and not self._overwrite:
            answer = slicer_app.ask_about_edited_output(output)     # edited while the run was going?
            if answer is False:
                self.ui.statusLabel.text = "Result discarded."
                return
            output, self._overwrite = answer
        with slicer.util.WaitCursor():
            name = output.GetName() if output else f"{p.inputVolume.GetName()} legs"     # import_result's name
            p.statisticsTable, p.metricsTable = self.logic.tables(name, p.statisticsTable, p.metricsTable)
            segmentation = mrml_run.import_result(run, p.inputVolume, output, p.splitLegs, self._overwrite, None,
                                                  p.statisticsTable, p.metricsTable)
        p.outputSegmentation = segmentation
        self.showTables()
        kept = run.kept_copy.GetName() if run.kept_copy else None
        self.ui.statusLabel.text = panel.status_text(segmentation.GetName(), run.report(), kept)

    # -------------------------------------------------------------- weights
    def onDownloadWeights(self):
        from LegSegNetLib import mrml_run, panel, slicer_app
        with slicer.util.tryWithErrorDisplay("LegSegNet cannot download the weights."):
            if not slicer.util.confirmYesNoDisplay(panel.licence_text(), windowTitle="LegSegNet weights licence"):
                return
            if not slicer_app.install_packages(panel.download_plan(), "Downloading the LegSegNet weights"):
                return
            download = mrml_run.WeightsDownload(python=slicer_app.python_executable()).start()
            self.startBackground(download, self.onWeightsDownloaded,
                                 "Downloading the LegSegNet weights and checking their sha256…")

    def onWeightsDownloaded(self, run):
        self.ui.statusLabel.text = ("LegSegNet weights installed and verified; the auto engine now uses the "
                                    "network. " + (run.messages[-1] if run.messages else ""))

    # -------------------------------------------------------------- results
    def onUpdateStatistics(self):
        """Both tables, the review list and the mid-thigh lines from the segments as they are now, computed in a
        background process (only the labels are taken here, straight from the segmentation's layers)."""
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("LegSegNet could not compute the statistics.", waitCursor=True):
            p.statisticsTable, p.metricsTable = self.logic.tables(p.outputSegmentation.GetName(), p.statisticsTable,
                                                                  p.metricsTable)
            run = self.logic.startStatistics(p.inputVolume, p.outputSegmentation)
            self.startBackground(run, self.onStatisticsDone, "Computing the statistics in a background process…")

    def onStatisticsDone(self, run):
        p = self._parameterNode
        run.apply(p.outputSegmentation, p.statisticsTable, p.metricsTable)
        self.showTables()
        self.ui.statusLabel.text = f"Statistics updated from '{p.outputSegmentation.GetName()}' as it is now."

    def onExport(self):
        """Tables as CSV, the segmentation as the user sees it (.seg.nrrd; label NIfTI + colour table CSV), and a
        DICOM SEG of the tissues when the CT came from DICOM (highdicom installed after consent)."""
        from LegSegNetLib import mrml_tables, slicer_app
        p = self._parameterNode
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Export LegSegNet results to")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("LegSegNet export failed."):
            dicomFiles = slicer_app.dicom_seg_sources(p.inputVolume)     # None: no DICOM SEG
            with slicer.util.WaitCursor():
                paths = mrml_tables.export_all(folder, p.inputVolume, p.outputSegmentation,
                                               [p.statisticsTable, p.metricsTable], dicomFiles)
            slicer.util.infoDisplay("Written:\n" + "\n".join(str(path) for path in paths))

    def onSegmentEditor(self):
        p = self._parameterNode
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(p.outputSegmentation)
        editor.setSourceVolumeNode(p.inputVolume)


class LegSegNetLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer glue over LegSegNetLib (mrml, mrml_tables, mrml_run, panel, slicer_app)."""

    def getParameterNode(self):
        return LegSegNetParameterNode(super().getParameterNode())

    @staticmethod
    def ensureDependencies(engine, modelFolder=""):
        """Install what this run needs after the user agrees to the whole list (nothing is installed at import):
        torch through the PyTorch extension first, the network packages only when the network will run."""
        from LegSegNetLib import panel, slicer_app
        return slicer_app.install_packages(panel.dependency_plan(engine, modelFolder), "LegSegNet")

    @staticmethod
    def start(volume, engine="auto", slices="", modelFolder="", device="auto"):
        from LegSegNetLib import mrml_run, panel, slicer_app
        return mrml_run.BackgroundRun(volume, panel.ENGINE_CHOICES[engine], slices or None,
                                      panel.engine_args(engine, modelFolder, device),
                                      python=slicer_app.python_executable()).start()

    def process(self, volume, segmentation=None, engine="classical", splitLegs=False, overwrite=False):
        """Segment and fill both tables without the GUI (scripts, self-test). Returns (segmentation, tables)."""
        from LegSegNetLib import mrml_run, panel, slicer_app
        tables = self.tables((segmentation or volume).GetName())
        segmentation = mrml_run.segment_volume(volume, segmentation, panel.ENGINE_CHOICES[engine], None, splitLegs,
                                               overwrite, python=slicer_app.python_executable(),
                                               segment_table=tables[0], metrics_table=tables[1])
        return (segmentation,) + tables

    @staticmethod
    def tables(name, statisticsTable=None, metricsTable=None):
        from LegSegNetLib import mrml_tables
        return mrml_tables.table_nodes(slicer.mrmlScene, name, statisticsTable, metricsTable)

    @staticmethod
    def startStatistics(volume, segmentation):
        """Update statistics in a background process; its apply(segmentation, tables...) fills the tables."""
        from LegSegNetLib import mrml_run, slicer_app
        return mrml_run.BackgroundStatistics(volume, segmentation, python=slicer_app.python_executable()).start()


class LegSegNetTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: phantom → classical engine in PythonSlicer → segments and tables."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentPhantom()

    def test_SegmentPhantom(self):
        from LegSegNetLib import mrml
        from LegSegNetLib.phantom import make_phantom
        from LegSegNetLib.tissues import TISSUES
        self.delayDisplay("Building a leg phantom")
        volume = mrml.image_to_volume(make_phantom(seed=0, shape=(16, 192, 256)).ct, slicer.mrmlScene, "phantom CT")
        self.delayDisplay("Segmenting with the classical engine in a background process")
        segmentation, statisticsTable, metricsTable = LegSegNetLogic().process(volume, engine="classical")
        segments = segmentation.GetSegmentation()
        self.assertEqual([segments.GetSegment(i).GetName() for i in segments.GetSegmentIDs()],
                         [t.short for t in TISSUES])
        self.assertFalse(mrml.edited_since_produced(segmentation))
        self.assertEqual(statisticsTable.GetNumberOfRows(), len(TISSUES))
        self.assertEqual(metricsTable.GetNumberOfRows(), 3)
        labels, _ = mrml.segmentation_to_labels(segmentation, volume)
        for row, tissue in enumerate(TISSUES):
            voxels = int((labels == tissue.label).sum())
            self.assertGreater(voxels, 0)
            self.assertEqual(int(statisticsTable.GetTable().GetValueByName(row, "Voxel count").ToDouble()), voxels)
        self.delayDisplay("Test passed")
