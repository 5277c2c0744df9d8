"""Glue that needs the Slicer application (pip, the PyTorch extension, Segment Statistics, the DICOM export
dialog, PythonSlicer). Imported only by LegSegNet.py inside Slicer; `slicer` is imported inside the functions."""
import os
import shutil

from . import panel
from .mrml_tables import configure_segment_statistics


def install_packages(plan, purpose):
    """After the user agrees to the whole list: torch through the PyTorch extension first, then the packages
    that must not bring their own torch (--no-deps), then the rest. False if the user declines."""
    import slicer
    if not plan:
        return True
    if not slicer.util.confirmOkCancelDisplay(plan.consent_text(purpose), windowTitle="LegSegNet"):
        return False
    if plan.torch and not install_torch():
        raise RuntimeError("PyTorch could not be installed: install the PyTorch extension from the Extensions "
                           "Manager, restart Slicer, or choose the classical engine.")
    if plan.no_deps:
        pip_install(plan.no_deps + ["--no-deps"], purpose)
    if plan.packages:
        pip_install(plan.packages, purpose)
    return True


def install_torch():
    import slicer
    try:
        import PyTorchUtils   # the PyTorch extension (EXTENSION_DEPENDS) picks the right CPU/CUDA build
    except ImportError:
        return panel.installed("torch")
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if torch_logic.torchInstalled():
        return True
    with slicer.util.WaitCursor():   # the user agreed to the whole list already: no second question
        return torch_logic.installTorch(askConfirmation=False,
                                        torchVersionRequirement=panel.TORCH_REQUIREMENT) is not None


def pip_install(requirements, purpose):
    """slicer.util.pip_install with one progress dialog: Slicer 5.12+ shows its own; before 5.12, ours."""
    import slicer
    try:
        import slicer.packaging  # noqa: F401  (5.12+: pip_install shows progress and takes a requester)
    except ImportError:
        dialog = slicer.util.createProgressDialog(labelText=f"{purpose}: installing Python packages…", maximum=0)
        slicer.app.processEvents()
        try:
            with slicer.util.WaitCursor():
                slicer.util.pip_install(requirements)
        finally:
            dialog.close()
    else:
        slicer.util.pip_install(requirements, requester="LegSegNet")


def python_executable():
    """PythonSlicer: Slicer's own interpreter as a console program (sys.executable is the GUI app)."""
    import slicer
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    return shutil.which(name) or os.path.join(slicer.app.slicerHome, "bin", name)


def segment_statistics(volume_node, segmentation_node, table_node):
    """Slicer's Segment Statistics into table_node, with settings in a parameter node of our own outside the
    scene: the module's shared node is neither created nor changed. False where the module is absent."""
    import slicer
    try:
        from SegmentStatistics import SegmentStatisticsLogic
    except ImportError:
        return False
    parameters = slicer.vtkMRMLScriptedModuleNode()

    class OwnParametersLogic(SegmentStatisticsLogic):
        def getParameterNode(self):
            if not self.parameterNode:
                self.setParameterNode(parameters)
            return self.parameterNode

    logic = OwnParametersLogic()
    configure_segment_statistics(parameters, logic.plugins, segmentation_node, volume_node)
    logic.computeStatistics()
    logic.exportToTable(table_node)
    return True


def is_from_dicom(volume_node):
    return bool(volume_node and volume_node.GetAttribute("DICOM.instanceUIDs"))


def export_dicom_seg_dialog(segmentation_node):
    """Slicer's DICOM export dialog on the segmentation (DICOM SEG through the segmentation plugin)."""
    import slicer
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    dialog = slicer.qSlicerDICOMExportDialog()
    dialog.setMRMLScene(slicer.mrmlScene)
    dialog.execDialog(hierarchy.GetItemByDataNode(segmentation_node))
