"""The panel's decisions without Qt: axial range from a slice position, dependencies and consent, model-folder
text, weights download in the background, and a startup that imports nothing of the core."""
import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from LegSegNetLib import mrml, mrml_run, panel, terminology, weights
from LegSegNetLib.errors import InputError
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.volumes import AxialView
from test_mrml import PERMUTED, new_scene

MODULE_FILE = Path(__file__).resolve().parents[1] / "LegSegNet.py"


@pytest.mark.parametrize("direction", [None, PERMUTED])
def test_axial_slice_from_a_slice_position_counts_like_slices(direction):
    """The RAS point of canonical slice c (as --slices counts: inferior first) gives back c, and its S in mm."""
    scene, _colors = new_scene()
    ct = make_phantom(seed=1, shape=(12, 64, 96), **({"direction": direction} if direction else {})).ct
    volume = mrml.image_to_volume(ct, scene)
    ijk_to_ras, dims = mrml.ijk_to_ras(volume), volume.GetImageData().GetDimensions()
    positions = AxialView.of(ct).positions(ct, 0)          # LPS z (= RAS S) of each canonical slice
    assert np.all(np.diff(positions) > 0)                 # inferior first
    for canonical in (0, 5, len(positions) - 1):
        ras = (-3.0, 7.0, positions[canonical] + 0.4 * AxialView.of(ct).spacing[0])  # within the slice
        assert panel.axial_slice_at(ijk_to_ras, dims, ras) == canonical
        assert panel.slice_position_mm(ijk_to_ras, dims, canonical) == pytest.approx(positions[canonical])
    with pytest.raises(InputError, match="outside the CT"):
        panel.axial_slice_at(ijk_to_ras, dims, (0.0, 0.0, positions[-1] + 50))
    text = panel.with_range_end("", "start", 3, len(positions))
    text = panel.with_range_end(text, "end", 8, len(positions))
    assert text == "3:9"                                   # End here includes the slice shown
    assert panel.describe_range(text, ijk_to_ras, dims) == \
        f"slices 3–8 of {len(positions)} (S {positions[3]:.1f} to {positions[8]:.1f} mm)"
    assert panel.describe_range("", ijk_to_ras, dims).startswith(f"all {len(positions)} slices")


def test_range_ends_never_leave_an_empty_range():
    assert panel.with_range_end("5:9", "start", 9, 20) == "9:"         # start past the end: end dropped
    assert panel.with_range_end("5:9", "end", 2, 20) == ":3"           # end before the start: start dropped
    assert panel.with_range_end("4:", "end", 18, 20) == "4:19"         # the CLI's own parser reads the text
    with pytest.raises(InputError, match="negative values are not allowed"):
        panel.with_range_end("-4:", "end", 18, 20)
    with pytest.raises(InputError, match="expected A:B"):
        panel.with_range_end("a:b", "start", 1, 20)


def test_model_folder_field_never_shows_a_dot():
    assert panel.model_folder_text(Path("")) == "" and panel.model_folder_text(".") == ""
    assert panel.model_folder_text(None) == "" and panel.model_folder_text("/models/legs") == "/models/legs"


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("LEGSEGNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LEGSEGNET_MODEL", raising=False)
    return tmp_path


def test_network_packages_only_when_the_network_will_run(no_weights):
    nothing = lambda name: False     # noqa: E731  an interpreter where nothing optional is installed
    classical = panel.dependency_plan("classical", "", nothing)
    auto_without_weights = panel.dependency_plan("auto", "", nothing)
    assert not classical.torch and not classical.no_deps
    assert not auto_without_weights.torch and not auto_without_weights.no_deps
    for plan in (panel.dependency_plan("network", "", nothing), panel.dependency_plan("auto", no_weights, nothing)):
        assert plan.torch                                   # through the PyTorch extension, first
        assert plan.no_deps == list(panel.NETWORK_PACKAGES.values())   # never torch or timm from PyPI
        assert not any("torch" in pin or "timm" in pin for pin in plan.packages + plan.no_deps)
        text = plan.consent_text()
        assert "PyTorch" in text and all(pin in text for pin in plan.packages + plan.no_deps)
    everything = panel.dependency_plan("network", "", lambda name: True)
    assert not everything


def test_weights_download_needs_the_licence_and_its_package_listed():
    assert "CC BY-NC 4.0" in panel.licence_text() and weights.REPO_ID in panel.licence_text()
    plan = panel.download_plan(lambda name: False)
    assert plan.packages == list(panel.DOWNLOAD_PACKAGES.values()) and "huggingface_hub" in plan.consent_text()


def _installed_weights(cache):
    folder = cache / "weights" / "LegSegNet"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"made": "here"}))
    (folder / "dataset.json").write_text(json.dumps({"labels": {}}))
    (folder / "fold_0" / "checkpoint_best.pth").write_bytes(bytes(range(256)) * 8)
    weights.write_manifest(folder, {"repo": "test"})
    return folder


def test_weights_download_runs_in_the_background_and_verifies_sha256(no_weights):
    folder = _installed_weights(no_weights / "cache")
    run = mrml_run.WeightsDownload(python=sys.executable).start()
    assert run.wait() == "done", run.error
    assert any("already installed and verified" in m for m in run.messages)
    assert any("match their sha256" in m for m in run.messages)
    (folder / "fold_0" / "checkpoint_best.pth").write_bytes(b"corrupted")
    run = mrml_run.WeightsDownload(python=sys.executable).start()
    assert run.wait() == "failed" and run.returncode == 2
    assert "sha256 mismatch" in run.error


def test_startup_loads_the_terminology_by_path_without_importing_the_core():
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "loadTerminology")
    assert not [n for n in ast.walk(function) if isinstance(n, (ast.Import, ast.ImportFrom))]
    top_imports = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top_imports |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert "LegSegNetLib" not in top_imports
    assign = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "TERMINOLOGY_FILE")
    parts = [a.value for a in assign.value.args[1:]]
    assert MODULE_FILE.parent.joinpath(*parts) == terminology.TERMINOLOGY_FILE


def test_module_file_stays_thin():
    assert len(MODULE_FILE.read_text(encoding="utf-8").splitlines()) <= 400


def test_engine_arguments_and_the_dicom_seg_package():
    assert panel.engine_args("classical", "/models/legs", "cuda") == []
    assert panel.engine_args("network", "/models/legs", "cuda") == ["--model", "/models/legs", "--device", "cuda"]
    assert panel.engine_args("auto", ".", "auto") == []
    plan = panel.dicom_seg_plan(is_installed=lambda name: False)
    assert plan.packages == ["highdicom>=0.22"] and "highdicom>=0.22" in plan.consent_text("DICOM SEG export")
    assert not panel.dicom_seg_plan(is_installed=lambda name: True)
