"""LegSegNet 3D Slicer module: thin widget and logic over LegSegNetLib (the work lives in LegSegNetLib.mrml)."""
import logging
import os
import pathlib
import shutil
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# Python packages the core needs that Slicer does not ship: import name → pinned requirement.
REQUIREMENTS = {"scipy": "scipy>=1.10,<2", "slicerio": "slicerio>=1.1,<2", "nrrd": "pynrrd>=1.0,<2",
                "tqdm": "tqdm>=4.60,<5", "matplotlib": "matplotlib>=3.6,<4"}
NETWORK_REQUIREMENTS = {"dynamic_network_architectures": "dynamic_network_architectures>=0.4,<0.5"}
TORCH_REQUIREMENT = ">=2.0"
# Panel choice → core engine name (LegSegNetLib.engines.ENGINES).
ENGINE_CHOICES = {"auto": "auto", "network": "nnunet", "classical": "threshold"}


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
    """Make our terminology context known to Slicer so segment terminology entries resolve."""
    from LegSegNetLib import mrml
    try:
        mrml.load_terminology(slicer.util.getModuleLogic("Terminologies"))
    except Exception as error:   # a broken terminology must not stop Slicer's startup
        logging.error(f"LegSegNet: cannot load the terminology: {error}")


@parameterNodeWrapper
class LegSegNetParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    engine: Annotated[str, Choice(list(ENGINE_CHOICES))] = "auto"
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    modelFolder: pathlib.Path     # empty (".") means the installed LegSegNet weights
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
        self._run = None
        self._output, self._overwrite = None, False
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
        self.ui.updateStatisticsButton.clicked.connect(self.onUpdateStatistics)
        self.ui.exportButton.clicked.connect(self.onExport)
        self.ui.segmentEditorButton.clicked.connect(self.onSegmentEditor)
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
            self.ui.statisticsTableView.setMRMLTableNode(self._parameterNode.statisticsTable)
            self.ui.metricsTableView.setMRMLTableNode(self._parameterNode.metricsTable)
            self.updateButtons()

    def updateButtons(self, caller=None, event=None):
        p = self._parameterNode
        running = self._run is not None
        self.ui.applyButton.enabled = bool(p and p.inputVolume) and not running
        self.ui.cancelButton.enabled = running
        hasResult = bool(p and p.inputVolume and p.outputSegmentation) and not running
        for button in (self.ui.updateStatisticsButton, self.ui.exportButton, self.ui.segmentEditorButton):
            button.enabled = hasResult

    # -------------------------------------------------------------- segment
    def onApply(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("LegSegNet cannot start.", waitCursor=True):
            if not self.logic.ensureDependencies(p.engine):
                return
            output = self.askAboutEditedOutput(p.outputSegmentation)
            if output is False:
                return
            self._output, self._overwrite = output
            self._run = self.logic.start(p.inputVolume, p.engine, p.slices, p.modelFolder, p.device)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Segmenting in a background process…"
            self.updateButtons()
            self._timer.start()

    def askAboutEditedOutput(self, segmentation):
        """(output node or None for a new one, overwrite) — or False if the user cancels."""
        from LegSegNetLib import mrml
        if not mrml.edited_since_produced(segmentation):
            return segmentation, False
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setWindowTitle("LegSegNet")
        box.setText(f"Segmentation '{segmentation.GetName()}' was edited since LegSegNet produced it.")
        box.setInformativeText("Replace its content (undo is available), put the result in a new segmentation, "
                               "or cancel?")
        overwrite = box.addButton("Overwrite", qt.QMessageBox.DestructiveRole)
        new = box.addButton("New segmentation", qt.QMessageBox.AcceptRole)
        box.addButton(qt.QMessageBox.Cancel)
        box.exec_()
        if box.clickedButton() == overwrite:
            return segmentation, True
        if box.clickedButton() == new:
            return None, False
        return False

    def onPoll(self):
        run = self._run
        if run is None:
            return
        state = run.poll()
        if run.total:
            self.ui.progressBar.maximum = run.total
            self.ui.progressBar.value = run.done
        if state == "running":
            return
        self._timer.stop()
        self._run = None
        try:
            if state == "done":
                with slicer.util.tryWithErrorDisplay("LegSegNet could not import the result.", waitCursor=True):
                    self.importResult(run)
            elif state == "failed":
                self.ui.statusLabel.text = "Failed; see the message."
                slicer.util.errorDisplay("LegSegNet segmentation failed.", detailedText=run.error)
        finally:
            run.cleanup()
            self.updateButtons()

    def importResult(self, run):
        p = self._parameterNode
        output = self._output
        if output is not None and not self._overwrite:
            answer = self.askAboutEditedOutput(output)     # edited while the run was going?
            if answer is False:
                self.ui.statusLabel.text = "Result discarded."
                return
            output, self._overwrite = answer
        segmentation = self.logic.importResult(run, p.inputVolume, output, p.splitLegs, self._overwrite)
        p.outputSegmentation = segmentation
        self.onUpdateStatistics()
        self.ui.statusLabel.text = f"Done: {segmentation.GetName()} ({run.report().get('engine', {}).get('engine', '')} engine)."

    def onCancel(self):
        if self._run is not None:
            self._timer.stop()
            self._run.cancel()
            self._run = None
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Cancelled; the scene is unchanged."
            self.updateButtons()

    # -------------------------------------------------------------- results
    def onUpdateStatistics(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("LegSegNet could not compute the statistics.", waitCursor=True):
            p.statisticsTable, p.metricsTable = self.logic.updateStatistics(
                p.inputVolume, p.outputSegmentation, p.statisticsTable, p.metricsTable)
            self.ui.statisticsTableView.setMRMLTableNode(p.statisticsTable)
            self.ui.metricsTableView.setMRMLTableNode(p.metricsTable)

    def onExport(self):
        p = self._parameterNode
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Export LegSegNet results to")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("LegSegNet export failed.", waitCursor=True):
            paths = self.logic.export(folder, p.inputVolume, p.outputSegmentation, p.statisticsTable, p.metricsTable)
            slicer.util.infoDisplay("Written:\n" + "\n".join(str(path) for path in paths))
            if self.logic.isFromDicom(p.inputVolume) and slicer.util.confirmYesNoDisplay(
                    "The CT came from DICOM. Export the segmentation as DICOM SEG too?"):
                self.logic.exportDicomSeg(p.outputSegmentation)

    def onSegmentEditor(self):
        p = self._parameterNode
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(p.outputSegmentation)
        editor.setSourceVolumeNode(p.inputVolume)


class LegSegNetLogic(ScriptedLoadableModuleLogic):
    """Thin Slicer glue: dependencies, PythonSlicer, Segment Statistics; the rest is LegSegNetLib.mrml."""

    def getParameterNode(self):
        return LegSegNetParameterNode(super().getParameterNode())

    # -------------------------------------------------------------- dependencies
    @staticmethod
    def missingPackages(requirements):
        import importlib.util
        return [pin for name, pin in requirements.items() if importlib.util.find_spec(name) is None]

    def networkAvailable(self):
        from LegSegNetLib.engines import ENGINES
        return ENGINE_CHOICES["network"] in ENGINES

    def ensureDependencies(self, engine):
        """Install what is missing after the user agrees (nothing is installed at import). True when ready."""
        requirements = dict(REQUIREMENTS)
        if engine != "classical":
            requirements.update(NETWORK_REQUIREMENTS)
        missing = self.missingPackages(requirements)
        if missing:
            if not slicer.util.confirmOkCancelDisplay(
                    "LegSegNet needs these Python packages, which will be downloaded and installed now:\n"
                    + "\n".join(missing)):
                return False
            with _progressDialog("Installing Python packages…"):
                slicer.util.pip_install(missing)
        if engine != "classical" and not self.ensureTorch():
            return engine == "auto"     # auto falls back to the classical engine without torch
        return True

    @staticmethod
    def ensureTorch():
        try:
            import PyTorchUtils   # the PyTorch extension (EXTENSION_DEPENDS) picks the right CPU/CUDA build
        except ImportError:
            import importlib.util
            if importlib.util.find_spec("torch") is None:
                slicer.util.warningDisplay("The network engine needs PyTorch: install the PyTorch extension from "
                                           "the Extensions Manager, then restart Slicer.")
                return False
            return True
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if torchLogic.torchInstalled():
            return True
        return torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is not None

    # -------------------------------------------------------------- run
    @staticmethod
    def pythonExecutable():
        """PythonSlicer: Slicer's own interpreter as a console program (sys.executable is the GUI app)."""
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        return shutil.which(name) or os.path.join(slicer.app.slicerHome, "bin", name)

    def start(self, volume, engine="auto", slices="", modelFolder="", device="auto"):
        from LegSegNetLib import mrml
        if engine == "network" and not self.networkAvailable():
            raise ValueError("The network engine is not available in this version of LegSegNetLib.")
        engineArgs = []
        if engine != "classical" and str(modelFolder or "") not in ("", "."):
            engineArgs += ["--model", str(modelFolder)]
        if engine != "classical" and device != "auto":
            engineArgs += ["--device", device]
        return mrml.BackgroundRun(volume, ENGINE_CHOICES[engine], slices or None, engineArgs,
                                  python=self.pythonExecutable()).start()

    def importResult(self, run, volume, segmentation=None, splitLegs=False, overwrite=False):
        from LegSegNetLib import mrml
        return mrml.import_result(run, volume, segmentation, splitLegs, overwrite)

    def process(self, volume, segmentation=None, engine="classical", splitLegs=False, overwrite=False):
        """Segment and fill both tables without the GUI (scripts, self-test). Returns (segmentation, tables)."""
        from LegSegNetLib import mrml
        run = self.start(volume, engine)
        try:
            state = run.wait()
            if state != "done":
                raise RuntimeError(f"LegSegNet segmentation {state}: {run.error}")
            segmentation = mrml.import_result(run, volume, segmentation, splitLegs, overwrite)
        finally:
            run.cleanup()
        return (segmentation,) + self.updateStatistics(volume, segmentation)

    # -------------------------------------------------------------- statistics and export
    def updateStatistics(self, volume, segmentation, statisticsTable=None, metricsTable=None):
        """Segment Statistics fills the first table (labelmap + scalar volume plugins); the core the second."""
        from LegSegNetLib import mrml
        statisticsTable = statisticsTable or slicer.mrmlScene.AddNewNodeByClass(
            "vtkMRMLTableNode", f"{segmentation.GetName()} statistics")
        metricsTable = metricsTable or slicer.mrmlScene.AddNewNodeByClass(
            "vtkMRMLTableNode", f"{segmentation.GetName()} metrics")
        try:
            from SegmentStatistics import SegmentStatisticsLogic
        except ImportError:
            SegmentStatisticsLogic = None
        if SegmentStatisticsLogic is None:
            mrml.update_statistics(volume, segmentation, statisticsTable, metricsTable)
        else:
            self.segmentStatistics(SegmentStatisticsLogic(), volume, segmentation, statisticsTable)
            mrml.update_statistics(volume, segmentation, None, metricsTable)
        return statisticsTable, metricsTable

    @staticmethod
    def segmentStatistics(logic, volume, segmentation, table):
        parameters = logic.getParameterNode()
        parameters.SetParameter("Segmentation", segmentation.GetID())
        parameters.SetParameter("ScalarVolume", volume.GetID())
        parameters.SetParameter("visibleSegmentsOnly", "False")
        for plugin in logic.plugins:
            parameters.SetParameter(f"{plugin.name}.enabled", str(plugin.name in (
                "LabelmapSegmentStatisticsPlugin", "ScalarVolumeSegmentStatisticsPlugin")))
        for key in ("voxel_count", "volume_cm3"):
            parameters.SetParameter(f"LabelmapSegmentStatisticsPlugin.{key}.enabled", "True")
        for key in ("voxel_count", "volume_mm3", "volume_cm3", "min", "max", "percentile_05", "percentile_95"):
            parameters.SetParameter(f"ScalarVolumeSegmentStatisticsPlugin.{key}.enabled", "False")
        for key in ("mean", "stdev", "median"):
            parameters.SetParameter(f"ScalarVolumeSegmentStatisticsPlugin.{key}.enabled", "True")
        logic.computeStatistics()
        logic.exportToTable(table)

    def export(self, folder, volume, segmentation, statisticsTable, metricsTable):
        from LegSegNetLib import mrml
        base = segmentation.GetName().replace(" ", "_")
        paths = mrml.export_tables_csv([t for t in (statisticsTable, metricsTable) if t], folder)
        paths.append(mrml.export_labels(volume, segmentation, os.path.join(folder, f"{base}.seg.nrrd")))
        paths.append(mrml.export_labels(volume, segmentation, os.path.join(folder, f"{base}_labels.nii.gz")))
        return paths

    @staticmethod
    def isFromDicom(volume):
        return bool(volume and volume.GetAttribute("DICOM.instanceUIDs"))

    @staticmethod
    def exportDicomSeg(segmentation):
        """Slicer's DICOM export dialog on the segmentation (DICOM SEG through the segmentation plugin)."""
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        dialog = slicer.qSlicerDICOMExportDialog()
        dialog.setMRMLScene(slicer.mrmlScene)
        dialog.execDialog(hierarchy.GetItemByDataNode(segmentation))


class _progressDialog:
    """A busy dialog while pip runs (pip_install blocks the GUI thread)."""
    def __init__(self, text):
        self.text = text

    def __enter__(self):
        self.dialog = slicer.util.createProgressDialog(labelText=self.text, maximum=0)
        slicer.app.processEvents()
        return self.dialog

    def __exit__(self, *exc):
        self.dialog.close()
        return False


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
