"""Glue that needs the Slicer application (pip, the PyTorch extension, Slicer's DICOM database, PythonSlicer).
Imported only by LegSegNet.py inside Slicer; `slicer` is imported inside the functions."""
import os
import shutil

from . import panel
from .errors import InputError


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


def ask_about_edited_output(segmentation):
    """(output node or None for a new one, overwrite) — or False if the user cancels."""
    import qt
    import slicer
    from . import mrml
    if not mrml.edited_since_produced(segmentation):
        return segmentation, False
    box = qt.QMessageBox(slicer.util.mainWindow())
    box.setWindowTitle("LegSegNet")
    box.setText(f"Segmentation '{segmentation.GetName()}' was edited since LegSegNet produced it.")
    box.setInformativeText(f"Overwrite it (your edited version is kept as '{segmentation.GetName()}"
                           f"{mrml.EDITED_COPY_SUFFIX}'), put the result in a new segmentation, or cancel?")
    overwrite = box.addButton("Overwrite", qt.QMessageBox.DestructiveRole)
    new = box.addButton("New segmentation", qt.QMessageBox.AcceptRole)
    box.addButton(qt.QMessageBox.Cancel)
    box.exec_()
    if box.clickedButton() == overwrite:
        return segmentation, True
    if box.clickedButton() == new:
        return None, False
    return False


def dicom_seg_sources(volume_node):
    """The CT's DICOM files when it came from DICOM and the user wants a DICOM SEG too (highdicom installed
    after consent); None otherwise."""
    import slicer
    if not is_from_dicom(volume_node) or not slicer.util.confirmYesNoDisplay(
            "The CT came from DICOM. Export a DICOM SEG of the tissues too (left and right legs merged into each "
            "tissue; segments that are not LegSegNet tissues are left out)?", windowTitle="LegSegNet"):
        return None
    files = dicom_files(volume_node)
    return files if install_packages(panel.dicom_seg_plan(), "DICOM SEG export") else None


def is_from_dicom(volume_node):
    return bool(volume_node and volume_node.GetAttribute("DICOM.instanceUIDs"))


def dicom_files(volume_node):
    """The DICOM files the volume was loaded from: its instance UIDs (the attribute Slicer's DICOM loader sets)
    looked up in Slicer's DICOM database."""
    import slicer
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    files = [slicer.dicomDatabase.fileForInstance(uid) if slicer.dicomDatabase else "" for uid in uids]
    missing = sum(1 for f in files if not f or not os.path.isfile(f))
    if not uids or missing:
        raise InputError(f"{missing or 'all'} of the DICOM files of '{volume_node.GetName()}' are no longer in "
                         "Slicer's DICOM database; import the series again to export a DICOM SEG")
    return files
