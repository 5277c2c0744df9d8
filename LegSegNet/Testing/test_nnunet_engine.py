"""The network engine end to end: accuracy through the CLI, engine choice, cancel, refusals, weights."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LegSegNetLib.engines import make_engine
from LegSegNetLib.errors import Cancelled, InputError
from LegSegNetLib.nnunet_model import load_model
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.pipeline import segment_case
from LegSegNetLib.volumes import AxialView
from LegSegNetLib.weights import verify, write_manifest

from conftest import array, run_cli, tissue_dice

TEST_MODEL = Path(__file__).parent / "Data" / "nnunet_test_model"
CHECKPOINT = "fold_0/checkpoint_final.pth"


@pytest.fixture(autouse=True)
def no_installed_weights(tmp_path, monkeypatch):
    """Every test starts with an empty weights cache and no LEGSEGNET_MODEL."""
    monkeypatch.setenv("LEGSEGNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LEGSEGNET_MODEL", raising=False)


@pytest.fixture(scope="module")
def fresh_phantom(tmp_path_factory):
    """A phantom none of the test model's training phantoms (seeds 1000..1015) resembles exactly."""
    folder = tmp_path_factory.mktemp("fresh")
    phantom = make_phantom(seed=4242, shape=(16, 224, 288))
    sitk.WriteImage(phantom.ct, str(folder / "ct.nii.gz"))
    return folder / "ct.nii.gz", phantom


def model_copy(tmp_path):
    target = tmp_path / "model"
    shutil.copytree(TEST_MODEL, target)
    return target


def test_test_model_fixture_is_small_and_complete():
    files = {p.relative_to(TEST_MODEL).as_posix(): p.stat().st_size for p in TEST_MODEL.rglob("*") if p.is_file()}
    assert {"plans.json", "dataset.json", CHECKPOINT} <= set(files), f"fixture incomplete: {sorted(files)}"
    assert sum(files.values()) <= 5_000_000


def test_dice_through_the_cli_on_a_fresh_phantom(tmp_path, fresh_phantom):
    ct, phantom = fresh_phantom
    out = tmp_path / "out"
    assert run_cli("segment", ct, "-o", out, "--engine", "nnunet", "--model", TEST_MODEL) == 0
    labels = array(sitk.ReadImage(str(out / "labels.nii.gz")))
    truth = array(phantom.truth)
    scores = tissue_dice(labels, truth)
    print("Dice (nnunet test model, fresh phantom):", {k: round(v, 3) for k, v in scores.items()})
    assert min(scores.values()) >= 0.80, scores
    report = json.loads((out / "report.json").read_text())
    assert report["engine"]["engine"] == "nnunet" and report["engine"]["precision"] == "fp32"
    assert report["engine"]["accumulation"] == "fp16" and report["engine"]["mirroring"] is False
    assert report["input_geometry"]["size"] == list(phantom.ct.GetSize())   # on the input's own grid


def test_slices_without_body_are_not_sent(tmp_path):
    engine, _ = make_engine("nnunet", model=TEST_MODEL)
    hu = np.full((4, 200, 240), -1000, np.int16)
    hu[1:3, 60:140, 40:200] = 50          # a limb-sized block of soft tissue in two slices
    labels = engine.segment(hu, (5.0, 1.2, 1.2))
    assert engine.last_counts == {"slices_total": 4, "slices_sent_to_network": 2}
    assert not labels[0].any() and not labels[3].any()


def test_auto_engine_choice_is_recorded(tmp_path, fresh_phantom, monkeypatch):
    ct, _ = fresh_phantom
    assert run_cli("segment", ct, "-o", tmp_path / "classical", "--slices", "0:2") == 0
    engine = json.loads((tmp_path / "classical" / "report.json").read_text())["engine"]
    assert engine["engine"] == "threshold" and "no network weights installed" in engine["reason"]

    monkeypatch.setenv("LEGSEGNET_MODEL", str(TEST_MODEL))
    assert run_cli("segment", ct, "-o", tmp_path / "network", "--slices", "0:2") == 0
    engine = json.loads((tmp_path / "network" / "report.json").read_text())["engine"]
    assert engine["engine"] == "nnunet" and "LEGSEGNET_MODEL" in engine["reason"]


def test_nnunet_engine_without_weights_says_how_to_get_them(tmp_path, fresh_phantom, capsys):
    ct, _ = fresh_phantom
    assert run_cli("segment", ct, "-o", tmp_path / "out", "--engine", "nnunet") == 2
    assert "legsegnet weights download" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cancel_leaves_no_output(tmp_path, fresh_phantom):
    ct, _ = fresh_phantom
    seen = []
    with pytest.raises(Cancelled):
        segment_case(ct, tmp_path / "out", engine="nnunet", engine_options={"model": TEST_MODEL},
                     progress=lambda done, total: seen.append(done), cancel=lambda: len(seen) >= 1)
    assert seen == [8]                        # one batch of 8 slices ran, then the cancel flag stopped it
    assert list(tmp_path.iterdir()) == []     # no output folder, no partial folder


def test_tampered_checkpoint_is_refused_without_running_it(tmp_path):
    model = model_copy(tmp_path)
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    checkpoint = torch.load(model / CHECKPOINT, weights_only=False)
    checkpoint["logging"]["extra"] = Payload()
    torch.save(checkpoint, model / CHECKPOINT)
    with pytest.raises(InputError, match="refused"):
        load_model(model)
    assert not marker.exists()


def test_three_d_configuration_is_refused(tmp_path):
    model = model_copy(tmp_path)
    plans = json.loads((model / "plans.json").read_text())
    config = plans["configurations"]["2d"]
    config["patch_size"] = [32, 128, 128]
    plans["configurations"] = {"3d_fullres": config}
    (model / "plans.json").write_text(json.dumps(plans))
    checkpoint = torch.load(model / CHECKPOINT, weights_only=False)
    checkpoint["init_args"]["configuration"] = "3d_fullres"
    torch.save(checkpoint, model / CHECKPOINT)
    with pytest.raises(InputError, match="is not 2D"):
        load_model(model)


def test_foreign_labels_are_refused(tmp_path, capsys):
    model = model_copy(tmp_path)
    dataset = json.loads((model / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "liver": 1, "SM": 2, "IAT": 3, "Bone": 4}
    (model / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(InputError, match="'liver' is not a LegSegNet tissue"):
        load_model(model)


def test_downloaded_weights_verified_and_corruption_refused(tmp_path, capsys):
    installed = Path(os.environ["LEGSEGNET_CACHE"]) / "weights" / "LegSegNet"
    shutil.copytree(TEST_MODEL, installed)
    write_manifest(installed, {"repo": "local test copy"})
    assert run_cli("weights", "verify") == 0
    engine, reason = make_engine("auto")
    assert engine.name == "nnunet" and "downloaded weights" in reason

    with open(installed / CHECKPOINT, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert run_cli("weights", "verify") == 2
    assert "sha256 mismatch" in capsys.readouterr().err
    with pytest.raises(InputError, match="corrupted weights"):
        make_engine("auto")
    with pytest.raises(InputError, match="corrupted"):
        verify(installed)


def test_download_offline_gives_a_clear_message(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LEGSEGNET_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "LegSegNetLib", "weights", "download"], env=env,
                            capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "could not download GogoChen/LegSegNet" in result.stderr and "--model DIR" in result.stderr
    assert not list((tmp_path / "cache" / "weights").glob("*"))     # nothing half-downloaded left behind


def test_core_works_without_torch(tmp_path):
    """The classical path (and auto's fallback) must not need torch."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from LegSegNetLib.engines import make_engine\n"
            "engine, reason = make_engine('auto')\n"
            "print(engine.name, '|', reason)\n")
    env = {**os.environ, "LEGSEGNET_MODEL": str(TEST_MODEL)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            encoding="utf-8", errors="replace", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("threshold |") and "torch is not installed" in result.stdout


def test_labels_follow_dataset_json_names_not_channel_order(tmp_path, fresh_phantom):
    """The same network with its output channels permuted and dataset.json listing the labels in that new order
    must give the same tissue labels: the mapping goes by name, not by channel number."""
    model = model_copy(tmp_path)
    new_order = ["background", "Bone", "IAT", "SAT", "SM"]          # channel → name in the permuted model
    old_channel = {"background": 0, "SAT": 1, "SM": 2, "IAT": 3, "Bone": 4}   # the test model's dataset.json
    permutation = torch.tensor([old_channel[name] for name in new_order])
    checkpoint = torch.load(model / CHECKPOINT, weights_only=False)
    weights = checkpoint["network_weights"]
    seg_layers = [k for k in weights if k.startswith("decoder.seg_layers.")]
    assert seg_layers, "the test model's final layers moved; update this test"
    for key in seg_layers:
        weights[key] = weights[key][permutation].clone()
    torch.save(checkpoint, model / CHECKPOINT)
    dataset = json.loads((model / "dataset.json").read_text())
    dataset["labels"] = {name: channel for channel, name in enumerate(new_order)}
    (model / "dataset.json").write_text(json.dumps(dataset))

    ct, phantom = fresh_phantom
    view = AxialView.of(phantom.ct)
    hu, spacing = view.to_canonical(array(phantom.ct)), view.spacing
    original, _ = make_engine("nnunet", model=TEST_MODEL)
    permuted, _ = make_engine("nnunet", model=model)
    expected = original.segment(hu[4:8], spacing)
    labels = permuted.segment(hu[4:8], spacing)
    assert len(np.unique(expected)) == 5
    assert np.array_equal(labels, expected), f"{(labels != expected).sum()} voxels differ"


def fake_hub(tmp_path, monkeypatch, with_model=True):
    """A local folder laid out like a Hub repository (results folder nested, plus files the download must leave
    out); only the network fetch (huggingface_hub.snapshot_download) is replaced, by a copy from that folder
    honouring allow_patterns. Everything after the fetch (finding the folder, manifest, verify) is the real code."""
    import fnmatch
    import huggingface_hub
    hub = tmp_path / "hub"
    (hub / "docs").mkdir(parents=True)
    (hub / "README.md").write_text("LegSegNet weights\n")
    (hub / "docs" / "figure.png").write_bytes(b"\x89PNG")
    if with_model:
        shutil.copytree(TEST_MODEL, hub / "Dataset001_Legs" / "nnUNetTrainer__nnUNetPlans__2d")
    calls = []

    def snapshot_download(repo_id, revision, local_dir, allow_patterns):
        calls.append((repo_id, revision))
        for path in hub.rglob("*"):
            name = path.relative_to(hub).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, Path(local_dir) / name)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_download_from_a_local_fake_hub(tmp_path, monkeypatch, capsys):
    calls = fake_hub(tmp_path, monkeypatch)
    assert run_cli("weights", "download", "--revision", "abc123") == 0
    installed = Path(os.environ["LEGSEGNET_CACHE"]) / "weights" / "LegSegNet"
    manifest = json.loads((installed / "legsegnet-weights.json").read_text())
    assert manifest["source"] == {"repo": "GogoChen/LegSegNet", "revision": "abc123"}
    assert sorted(manifest["files"]) == ["dataset.json", CHECKPOINT, "plans.json"]     # no README, no PNG
    assert manifest["files"][CHECKPOINT] == hashlib.sha256((TEST_MODEL / CHECKPOINT).read_bytes()).hexdigest()
    assert not list(installed.parent.glob(".download-*"))                              # staging removed
    engine, reason = make_engine("auto")
    assert engine.name == "nnunet" and "downloaded weights" in reason

    assert run_cli("weights", "download") == 0 and len(calls) == 1     # installed and verified: not fetched again
    assert run_cli("weights", "download", "--force") == 0 and calls[-1] == ("GogoChen/LegSegNet", "main")


def test_download_of_a_repository_without_a_model_is_refused(tmp_path, monkeypatch, capsys):
    fake_hub(tmp_path, monkeypatch, with_model=False)
    assert run_cli("weights", "download") == 2
    assert "holds no nnU-Net results folder" in capsys.readouterr().err
    assert not list((Path(os.environ["LEGSEGNET_CACHE"]) / "weights").glob("*"))


def test_bf16_on_a_cpu_without_bf16_instructions_warns(tmp_path, caplog, monkeypatch):
    from LegSegNetLib import nnunet
    flags = tmp_path / "cpuinfo"
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert nnunet.cpu_has_native_bf16(flags) is False
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert nnunet.cpu_has_native_bf16(flags) is True
    assert nnunet.cpu_has_native_bf16(tmp_path / "absent") is None
    monkeypatch.setattr(nnunet, "cpu_has_native_bf16", lambda: False)
    make_engine("nnunet", model=TEST_MODEL, device="cpu", precision="fp32")
    assert "emulated" not in caplog.text
    make_engine("nnunet", model=TEST_MODEL, device="cpu", precision="bf16")
    assert "bf16 is emulated and slower than fp32" in caplog.text
