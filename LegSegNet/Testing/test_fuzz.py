"""Seeded fuzz: byte flips and truncations of small valid NIfTI, NRRD, MHA files and a DICOM series.

Every mutant is read with read_ct (and a sample run through `legsegnet segment`): it must either be read or be
refused with InputError (exit 2), never raise anything else, never leave a temporary folder, and when no
header byte was changed a mutant that is read must have the clean input's geometry."""
import os
import shutil
import traceback

import numpy as np
import pytest
import SimpleITK as sitk

from LegSegNetLib.errors import InputError
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.volumes import read_ct

from conftest import run_cli, write_dicom_series

SEED = 20240610
MUTANTS_PER_INPUT = 40
CLI_EVERY = 8          # every 8th mutant also goes through the whole command


def clean_inputs(folder, image):
    """{name: (path read, file to mutate, offset where its voxel data start)}."""
    folder.mkdir()
    inputs = {}
    for name, compress in (("ct.nii", False), ("ct.nii.gz", True), ("ct.nrrd", False), ("gz.nrrd", True),
                           ("ct.mha", False), ("z.mha", True)):
        path = folder / name
        sitk.WriteImage(image, str(path), useCompression=compress)
        inputs[name] = (path, path, data_offset(path))
    series = write_dicom_series(image, folder / "dicom")
    first = sorted(series.iterdir())[2]
    voxel_bytes = image.GetWidth() * image.GetHeight() * 2
    inputs["dicom"] = (series, first, first.stat().st_size - voxel_bytes)
    return inputs


def data_offset(path):
    """Where the voxel data (or the compressed stream holding the whole file) begin."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return 0            # gzip: every byte is guarded by the CRC
    if path.suffix == ".nii":
        return 352
    if path.suffix == ".nrrd":
        return data.index(b"\n\n") + 2
    return data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")


def mutate(data, data_start, rng):
    """(mutant bytes, whether the header is unchanged)."""
    if rng.random() < 0.3:
        return data[:int(rng.integers(0, len(data)))], True
    out = bytearray(data)
    positions = rng.integers(0, len(data), size=int(rng.integers(1, 5)))
    for position in positions:
        out[position] ^= int(rng.integers(1, 256))
    return bytes(out), bool(positions.min() >= data_start)


def geometry(image):
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def same_geometry(a, b):
    return a[0] == b[0] and all(np.allclose(x, y, atol=1e-4) for x, y in zip(a[1:], b[1:]))


def outcome(run):
    """('read', geometry) or ('refused', message) or ('error', traceback)."""
    try:
        return "read", run()
    except InputError as err:
        return "refused", str(err)
    except Exception:                      # anything else is the bug this test looks for
        return "error", traceback.format_exc(limit=4)


def run_segment(path, out):
    code = run_cli("segment", path, "-o", out, "--engine", "threshold")
    if code == 2:
        raise InputError("exit 2")
    assert code == 0, f"exit {code}"
    return geometry(sitk.ReadImage(str(out / "labels.nii.gz")))


@pytest.mark.timeout(180)
def test_mutated_inputs_are_read_or_refused(tmp_path, capsys):
    image = make_phantom(seed=2, shape=(6, 24, 24), spacing=(5.0, 1.5, 1.5)).ct
    clean = clean_inputs(tmp_path / "clean", image)
    rng = np.random.default_rng(SEED)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    problems, counts = [], {"read": 0, "refused": 0}
    for name, (path, target, data_start) in clean.items():
        expected = geometry(read_ct(path).image)
        original = target.read_bytes()
        for i in range(MUTANTS_PER_INPUT):
            data, header_unchanged = mutate(original, data_start, rng)
            target.write_bytes(data)
            runs = [("read_ct", lambda: geometry(read_ct(path).image))]
            if i % CLI_EVERY == 0:
                runs.append(("segment", lambda: run_segment(path, outputs / f"{name}-{i}")))
            for how, run in runs:
                kind, detail = outcome(run)
                if kind == "error":
                    problems.append(f"{name} mutant {i} ({how}): {detail}")
                    continue
                counts[kind] += 1
                if kind == "read" and header_unchanged and not same_geometry(detail, expected):
                    problems.append(f"{name} mutant {i} ({how}): geometry {detail} != clean {expected}")
            leftovers = [entry for entry in os.listdir(outputs) if entry.startswith(".")]
            if leftovers:
                problems.append(f"{name} mutant {i}: temporary folders left behind: {leftovers}")
                for entry in leftovers:
                    shutil.rmtree(outputs / entry, ignore_errors=True)
        target.write_bytes(original)
    capsys.readouterr()
    assert not problems, "\n".join(problems)
    assert counts["read"] > 0 and counts["refused"] > 0, counts    # the fuzz reaches both outcomes
