"""Output folders are claimed before the work and written atomically: a concurrent run into the same OUTDIR
stops at once, stop signals and write failures leave nothing behind (and an old result as it was), unwritable
locations are found before the computation; `stats` refuses overlapping or malformed .seg.nrrd files; every
error is one line on stderr."""
import errno
import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import time
import tty
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio.segmentation as slicerio_seg

from LegSegNetLib import outputs, pipeline, statistics
from LegSegNetLib.errors import InputError
from LegSegNetLib.outputs import FolderLock
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.volumes import ijk_to_lps

from conftest import REPO, array, run_cli

OUTPUTS = ("labels.nii.gz", "segmentation.seg.nrrd", "statistics.csv", "slices.csv", "metrics.csv",
           "report.json", "overview.png")


def cli_process(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "LegSegNetLib", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", errors="replace", **popen)


def run_process(*args, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", "LegSegNetLib", *map(str, args)], cwd=REPO,
                          capture_output=True, encoding="utf-8", errors="replace", timeout=300)


def one_error_line(stderr):
    """stderr holds exactly one line, the error (no progress-bar debris, no usage block)."""
    lines = stderr.split("\n")
    assert len(lines) == 2 and lines[1] == "", repr(stderr)
    assert lines[0].startswith("legsegnet: error: "), repr(stderr)
    return lines[0]


def snapshot(folder):
    """Every file below folder with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def wait_for(condition, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def big_ct(tmp_path_factory):
    """A phantom whose run takes a second or two: long enough to act on it while it runs."""
    path = tmp_path_factory.mktemp("big") / "ct.nii.gz"
    sitk.WriteImage(make_phantom(seed=2, shape=(48, 256, 320)).ct, str(path))
    return path


# ---------------------------------------------------------------- claims
def test_second_run_into_a_claimed_outdir_stops_at_once(tmp_path, big_ct):
    out = tmp_path / "out"
    first = cli_process("segment", big_ct, "-o", out, "--engine", "threshold")
    wait_for(lambda: (tmp_path / ".out.lock").exists(), first)
    first.send_signal(signal.SIGSTOP)         # hold the first run with its claim taken
    try:
        for extra in ([], ["--overwrite"]):
            start = time.monotonic()
            second = run_process("segment", big_ct, "-o", out, "--engine", "threshold", *extra)
            assert second.returncode == 2, second.stderr
            line = one_error_line(second.stderr)
            assert str(out) in line and "in use by another legsegnet run" in line and f"pid {first.pid}" in line
            assert time.monotonic() - start < 20
    finally:
        first.send_signal(signal.SIGCONT)
    _stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert set(OUTPUTS) <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]      # lock and temporary folder gone


def test_held_claim_refuses_segment_and_stats(tmp_path, phantom_file, segmented):
    out = tmp_path / "out"
    with FolderLock(tmp_path / ".out.lock", out):
        assert run_cli("segment", phantom_file, "-o", out, "--engine", "threshold") == 2
        assert run_cli("stats", phantom_file, segmented / "labels.nii.gz", "-o", out) == 2
    assert not out.exists()
    assert run_cli("stats", phantom_file, segmented / "labels.nii.gz", "-o", out) == 0


def test_stale_claim_of_a_dead_process_is_taken_over(tmp_path, phantom_file, segmented, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          encoding="utf-8", errors="replace")
    (tmp_path / ".out.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                    "token": "0badc0ffee00", "started": "earlier"}))
    assert run_cli("stats", phantom_file, segmented / "labels.nii.gz", "-o", tmp_path / "out") == 0
    assert f"taking over the lock of a run that is gone (pid {int(dead.stdout)}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ---------------------------------------------------------------- stop signals
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("existing", [False, True])
def test_stop_signal_during_the_write_step_leaves_nothing(tmp_path, big_ct, segmented, signum, existing):
    out = tmp_path / "out"
    if existing:
        shutil.copytree(segmented, out)
    before = snapshot(out) if existing else None
    run = cli_process("segment", big_ct, "-o", out, "--engine", "threshold", *(["--overwrite"] if existing else []))

    def writing():
        return any(p.is_dir() and any(p.iterdir()) for p in tmp_path.glob(".out.*.partial"))
    wait_for(writing, run)                     # the first output file is being written
    run.send_signal(signum)
    _stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 128 + signum, stderr
    assert stderr.strip().splitlines()[-1] == "legsegnet: interrupted; nothing was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    if existing:
        assert snapshot(out) == before


# ---------------------------------------------------------------- unwritable locations
def test_read_only_location_is_refused_before_the_computation(tmp_path, phantom_file):
    locked = tmp_path / "locked"
    locked.mkdir()
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not an image" * 10)
    locked.chmod(0o555)
    # root writes anywhere; in a user namespace of its own it is an ordinary user and the mode applies
    prefix = ("unshare", "--user") if os.geteuid() == 0 else ()
    try:
        for source in (phantom_file, garbage):      # the folder is checked before the input is even read
            run = run_process("segment", source, "-o", locked / "out", prefix=prefix)
            assert run.returncode == 2, run.stderr
            assert one_error_line(run.stderr) == f"legsegnet: error: {locked}: folder is not writable"
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_outdir_below_a_file_or_a_file_itself(tmp_path, phantom_file, capsys):
    (tmp_path / "file.txt").write_text("mine")
    for out, message in [(tmp_path / "file.txt" / "out", f"{tmp_path / 'file.txt'} is a file, not a folder"),
                         (tmp_path / "file.txt" / "a" / "b", f"{tmp_path / 'file.txt'} is a file, not a folder"),
                         (tmp_path / "file.txt", f"{tmp_path / 'file.txt'} is a file, not a folder")]:
        for extra in ([], ["--overwrite"]):
            assert run_cli("segment", phantom_file, "-o", out, *extra) == 2
            assert message in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "file.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_full_disk_is_exit_2_without_leftovers(tmp_path, phantom_file):
    """A real write failure from the operating system (file size limit: EFBIG) in the real writers."""
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); from LegSegNetLib.cli import main; "
            f"sys.exit(main(['segment', {str(phantom_file)!r}, '-o', {str(tmp_path / 'out')!r}, "
            "'--engine', 'threshold']))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO / "LegSegNet", capture_output=True,
                         encoding="utf-8", errors="replace", timeout=300)
    assert run.returncode == 2, run.stderr
    line = one_error_line(run.stderr)
    assert str(tmp_path) in line and ("too large" in line or "cannot be written" in line), line
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- failures in the middle of writing
WRITERS = {   # output file → (module, attribute) of the function that writes it
    "labels.nii.gz": (pipeline, "write_labels"), "segmentation.seg.nrrd": (pipeline, "write_seg_nrrd"),
    "statistics.csv": (statistics, "_write_csv"), "slices.csv": (statistics, "_write_csv"),
    "metrics.csv": (statistics, "_write_csv"), "overview.png": (pipeline, "write_overview"),
    "report.json": (pipeline, "_write_report"),
}


def failing_writer(real, name, out, before):
    """The real writer, then half its file cut off and ENOSPC raised, as a full disk does. While writing, the
    output folder must still be absent (or hold the old result): writes go to the temporary folder."""
    def write(*args, **kwargs):
        path = next((Path(a) for a in args if isinstance(a, (str, os.PathLike)) and Path(a).name == name), None)
        result = real(*args, **kwargs)
        if path is None:                         # another file of the same writer
            return result
        assert path.parent != out and path.parent.name.endswith(".partial"), path
        assert (snapshot(out) == before) if before is not None else not out.exists()
        with open(path, "r+b") as f:
            f.truncate(max(1, os.path.getsize(path) // 2))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return write


@pytest.mark.parametrize("name", OUTPUTS)
@pytest.mark.parametrize("existing", [False, True])
def test_write_failure_of_each_output_leaves_nothing(tmp_path, phantom_file, segmented, monkeypatch, capsys,
                                                     name, existing):
    out = tmp_path / "out"
    if existing:
        shutil.copytree(segmented, out)
    before = snapshot(out) if existing else None
    module, attribute = WRITERS[name]
    monkeypatch.setattr(module, attribute, failing_writer(getattr(module, attribute), name, out, before))
    args = ["segment", phantom_file, "-o", out, "--engine", "threshold"] + (["--overwrite"] if existing else [])
    assert run_cli(*args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert name in line and "No space left on device" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    if existing:
        assert snapshot(out) == before


# ---------------------------------------------------------------- stats: overlapping and malformed .seg.nrrd
def two_layer_segmentation(truth, overlap):
    """Layer 0: SAT, SM, Bone of the truth; layer 1: IMAT, plus (overlap) a block of muscle claimed as IMAT."""
    ijk = truth.transpose(2, 1, 0)                     # (i, j, k) as slicerio stores voxels
    layer0 = np.where(ijk == 3, 0, ijk).astype(np.uint8)
    layer1 = (ijk == 3).astype(np.uint8)
    if overlap:
        block = np.zeros_like(layer1, bool)
        block[100:140, 80:120, 10:20] = True
        layer1[block & (ijk == 2)] = 1
    segments = [{"id": "SAT", "name": "SAT", "labelValue": 1, "layer": 0},
                {"id": "SM", "name": "SM", "labelValue": 2, "layer": 0},
                {"id": "Bone", "name": "Bone", "labelValue": 4, "layer": 0},
                {"id": "IMAT", "name": "IMAT", "labelValue": 1, "layer": 1}]
    return np.stack([layer0, layer1]), segments


def test_stats_refuses_overlapping_segments(tmp_path, phantom, phantom_file, capsys):
    truth = array(phantom.truth)
    for overlap in (False, True):
        voxels, segments = two_layer_segmentation(truth, overlap)
        path = tmp_path / f"layers-{overlap}.seg.nrrd"
        slicerio_seg.write_segmentation(str(path), {"voxels": voxels, "ijkToLPS": ijk_to_lps(phantom.ct),
                                                    "segments": segments})
        code = run_cli("stats", phantom_file, path, "-o", tmp_path / f"out-{overlap}")
        if not overlap:      # layers without overlap: the same tables as the label image
            assert code == 0
            assert run_cli("stats", phantom_file, phantom_file.parent / "truth.nii.gz", "-o", tmp_path / "ref") == 0
            assert (tmp_path / "out-False" / "statistics.csv").read_text() == \
                (tmp_path / "ref" / "statistics.csv").read_text()
            capsys.readouterr()
            continue
        shared = int(np.count_nonzero((voxels[0] == 2) & (voxels[1] == 1)))
        assert code == 2 and shared > 100
        line = one_error_line(capsys.readouterr().err)
        assert f"'SM' and 'IMAT' share {shared} voxels" in line
        assert not (tmp_path / "out-True").exists()


def raw_seg_nrrd(path, fields=None, sizes=(6, 5, 4), header=None, data=None, drop=()):
    """A .seg.nrrd written by hand: a header with the given fields (None removes one), then raw voxels."""
    lines = {"type": "unsigned char", "dimension": str(len(sizes)), "space": "left-posterior-superior",
             "sizes": " ".join(map(str, sizes)),
             "space directions": ("none " if len(sizes) == 4 else "") + "(1,0,0) (0,1,0) (0,0,1)",
             "kinds": ("list " if len(sizes) == 4 else "") + "domain domain domain",
             "encoding": "raw", "space origin": "(0,0,0)", **(header or {})}
    segment = {"Segment0_ID": "SM", "Segment0_Name": "SM", "Segment0_LabelValue": "1", "Segment0_Layer": "0",
               **(fields or {})}
    text = "NRRD0004\n" + "".join(f"{k}: {v}\n" for k, v in lines.items() if v is not None and k not in drop)
    text += "".join(f"{k}:={v}\n" for k, v in segment.items() if v is not None and k not in drop) + "\n"
    voxels = np.ones(int(np.prod(sizes)), np.uint8).tobytes() if data is None else data
    Path(path).write_bytes(text.encode() + voxels)
    return path


MALFORMED = {
    "not NRRD": (lambda p: p.write_bytes(b"\x00\x01garbage" * 50), "not a NRRD file"),
    "no label value": (lambda p: raw_seg_nrrd(p, {"Segment0_LabelValue": None}), "segment 0 has no LabelValue"),
    "label value text": (lambda p: raw_seg_nrrd(p, {"Segment0_LabelValue": "one"}), "Segment0_LabelValue 'one'"),
    "no name": (lambda p: raw_seg_nrrd(p, {"Segment0_Name": None}), "segment 0 has no Name"),
    "layer out of range": (lambda p: raw_seg_nrrd(p, {"Segment0_Layer": "3"}, sizes=(2, 6, 5, 4)),
                           "Segment0_Layer '3'"),
    "no segments": (lambda p: raw_seg_nrrd(p, drop=("Segment0_ID", "Segment0_Name", "Segment0_LabelValue",
                                                    "Segment0_Layer")), "holds no segments"),
    "2D": (lambda p: raw_seg_nrrd(p, sizes=(6, 5), header={"space directions": "(1,0,0) (0,1,0)",
                                                           "kinds": "domain domain"}), "'dimension' 2"),
    "no directions": (lambda p: raw_seg_nrrd(p, drop=("space directions",)), "'space directions' missing"),
    "flat directions": (lambda p: raw_seg_nrrd(p, header={"space directions": "(1,0,0) (0,1,0) (0,0,0)"}),
                        "'space directions' missing or invalid"),
    "no origin": (lambda p: raw_seg_nrrd(p, drop=("space origin",)), "'space origin' missing"),
    "huge": (lambda p: raw_seg_nrrd(p, sizes=(4096, 4096, 4096), data=b"\x01" * 100), "declare more than"),
    "truncated": (lambda p: raw_seg_nrrd(p, data=b"\x01" * 10), "not a readable Slicer segmentation"),
    "float voxels": (lambda p: raw_seg_nrrd(p, header={"type": "float", "endian": "little"}, data=np.ones(120, np.float32).tobytes()),
                     "not an integer label type"),
    "bad space": (lambda p: raw_seg_nrrd(p, header={"space": "scanner-xyz"}), "space"),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_seg_nrrd_is_exit_2_with_a_clear_line(tmp_path, phantom_file, capsys, kind):
    make, message = MALFORMED[kind]
    path = tmp_path / "edited.seg.nrrd"
    make(path)
    assert run_cli("stats", phantom_file, path, "-o", tmp_path / "out") == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(path) in line and message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.seg.nrrd"]


def test_well_formed_hand_written_seg_nrrd_is_read(tmp_path, phantom_file):
    """The hand-written files above fail for the one fault each was given, not for being hand-written: the same
    header, placed on the CT's corner voxels, gives 6 x 5 x 4 = 120 muscle voxels."""
    ct = sitk.ReadImage(str(phantom_file))
    matrix = ijk_to_lps(ct)
    header = {"space directions": " ".join("({},{},{})".format(*matrix[:3, axis]) for axis in range(3)),
              "space origin": "({},{},{})".format(*matrix[:3, 3])}
    assert run_cli("stats", phantom_file, raw_seg_nrrd(tmp_path / "ok.seg.nrrd", header=header),
                   "-o", tmp_path / "out") == 0
    rows = [line.split(",") for line in (tmp_path / "out" / "statistics.csv").read_text().splitlines()]
    column = rows[0].index("voxel_count")
    counts = {(r[0], r[2]): int(r[column]) for r in rows[1:]}
    assert counts["SM", "both"] == 120 and counts["SAT", "both"] == 0


# ---------------------------------------------------------------- one line on stderr
def run_with_terminal_stderr(*args):
    """The CLI with stderr on a terminal (where a progress bar would draw), stderr's bytes returned."""
    master, slave = pty.openpty()
    tty.setraw(slave)                    # no \r\n translation: the bytes as written
    process = subprocess.Popen([sys.executable, "-m", "LegSegNetLib", *map(str, args)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:                  # EIO: the process closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return process.wait(timeout=300), b"".join(chunks).decode()


def test_errors_are_one_line_on_stderr(tmp_path, phantom_file):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not an image" * 10)
    commands = {
        "missing input": ["segment", tmp_path / "nothing.nii.gz", "-o", tmp_path / "o1"],
        "unreadable input": ["segment", garbage, "-o", tmp_path / "o2"],
        "bad slices": ["segment", phantom_file, "-o", tmp_path / "o3", "--slices", "x:y"],
        "no output option": ["segment", phantom_file],
        "unknown option": ["segment", phantom_file, "-o", tmp_path / "o4", "--fast"],
        "bad engine": ["segment", phantom_file, "-o", tmp_path / "o5", "--engine", "magic"],
        "negative seed": ["phantom", tmp_path / "ph", "--seed", "-1"],
        "no command": [],
    }
    for name, args in commands.items():
        code, stderr = run_with_terminal_stderr(*args)
        assert code == 2, (name, stderr)
        one_error_line(stderr)
    run = run_process("phantom", tmp_path / "ph", "--seed", "-1")            # and on a pipe
    assert run.returncode == 2 and "-1 is negative" in one_error_line(run.stderr)
    assert not (tmp_path / "ph").exists()


def test_a_signal_during_the_final_rename_keeps_the_complete_result_and_says_so(phantom_file, tmp_path, capsys,
                                                                                  monkeypatch):
    """SIGTERM arrives while the finished folder is renamed into place: the rename completes, the result stays
    and the message says so instead of 'nothing was written'."""
    publish = outputs._publish

    def signalled_publish(*args):
        os.kill(os.getpid(), signal.SIGTERM)      # handled only once the rename is done
        publish(*args)
    monkeypatch.setattr(outputs, "_publish", signalled_publish)
    out = tmp_path / "out"
    assert run_cli("segment", phantom_file, "-o", out, "--engine", "threshold") == 128 + signal.SIGTERM
    assert capsys.readouterr().err.split("\n") == [f"legsegnet: interrupted after {out} was complete (it is kept)", ""]
    assert sorted(p.name for p in out.iterdir()) == sorted(pipeline.OUTPUT_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("kind", ["input file", "DICOM series", "user's notes"])
def test_overwrite_never_replaces_a_folder_holding_files_legsegnet_did_not_write(tmp_path, phantom, capsys, kind):
    """--overwrite replaces the whole folder: with OUTDIR = the input's own folder it deleted the input."""
    from conftest import write_dicom_series
    folder = tmp_path / "work"
    if kind == "DICOM series":
        ct = write_dicom_series(phantom.ct[:, :, :4], folder)
    else:
        folder.mkdir()
        ct = tmp_path / "ct.nii.gz"
        sitk.WriteImage(phantom.ct[:, :, :4], str(folder / "ct.nii.gz" if kind == "input file" else ct))
        ct = folder / "ct.nii.gz" if kind == "input file" else ct
        if kind == "user's notes":
            (folder / "notes.txt").write_text("mine")
    before = sorted(p.name for p in folder.iterdir())
    capsys.readouterr()
    assert run_cli("segment", ct, "-o", folder, "--engine", "threshold", "--overwrite") == 2
    assert "did not write" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not list(tmp_path.glob(".*partial")) and not list(tmp_path.glob(".*.lock"))
    # an old result alone is still replaced
    result = tmp_path / "result"
    assert run_cli("segment", ct, "-o", result, "--engine", "threshold") == 0
    assert run_cli("segment", ct, "-o", result, "--engine", "threshold", "--overwrite") == 0


def test_stats_label_image_on_another_grid(tmp_path, phantom, phantom_file, capsys):
    """A label image in another orientation gives the same tables; one whose labels partly lie outside the CT was
    resampled with those labels silently dropped (exit 0, volumes too small): refused, counting them."""
    truth = phantom.truth
    assert run_cli("stats", phantom_file, phantom_file.parent / "truth.nii.gz", "-o", tmp_path / "ref") == 0
    permuted = sitk.Flip(sitk.PermuteAxes(truth, [2, 0, 1]), [True, False, False])   # same voxels, other axes
    sitk.WriteImage(permuted, str(tmp_path / "permuted.nii.gz"))
    assert run_cli("stats", phantom_file, tmp_path / "permuted.nii.gz", "-o", tmp_path / "permuted") == 0
    assert (tmp_path / "permuted" / "statistics.csv").read_text() == (tmp_path / "ref" / "statistics.csv").read_text()
    shifted = sitk.Image(truth)
    origin = np.array(truth.GetOrigin())
    shifted.SetOrigin((origin + np.array(truth.GetDirection()).reshape(3, 3)[:, 0] * 100.0).tolist())   # 100 mm along i
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    lost = int(np.count_nonzero(array(truth)[:, :, -int(np.ceil(100 / truth.GetSpacing()[0] - 0.5)):]))
    capsys.readouterr()
    assert run_cli("stats", phantom_file, tmp_path / "shifted.nii.gz", "-o", tmp_path / "shifted") == 2
    assert f"{lost} labelled voxels lie outside the CT volume" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "shifted").exists()


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_lock_file_appears_with_its_holder_record(tmp_path, monkeypatch, hard_links):
    """The lock is linked into place complete (no run ever reads it half-written); where the file system has no
    hard links it is created exclusively in place."""
    if not hard_links:
        def no_link(*_args):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_link)
    with FolderLock(tmp_path / ".out.lock", tmp_path / "out"):
        record = json.loads((tmp_path / ".out.lock").read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert [p.name for p in tmp_path.iterdir()] == [".out.lock"]
        with pytest.raises(InputError, match=f"in use by another legsegnet run \\(pid {os.getpid()} on"):
            FolderLock(tmp_path / ".out.lock", tmp_path / "out").__enter__()
    assert list(tmp_path.iterdir()) == []
