"""The published LegSegNet weights (CC BY-NC 4.0): download once into the user cache, verify by sha256.

Where a model comes from, first match wins: --model DIR, $LEGSEGNET_MODEL, the downloaded cache.
The repository layout on the Hub is not assumed: the download keeps *.json and *.pth files and finds the
folder that holds plans.json, dataset.json and fold_N/checkpoint_*.pth.
"""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError

REPO_ID = os.environ.get("LEGSEGNET_WEIGHTS_REPO", "GogoChen/LegSegNet")
# The Hub revision to download. UNPINNED: "main" (whatever the Hub holds now) until a commit hash has been checked
# against the published files (this environment cannot reach the Hub); the sha256 manifest written at download
# only guards against later local changes. Override with --revision or the environment.
REVISION = os.environ.get("LEGSEGNET_WEIGHTS_REVISION", "main")
MANIFEST = "legsegnet-weights.json"
LICENCE = "CC BY-NC 4.0 (non-commercial use only)"
HOW_TO_GET = (f"run 'legsegnet weights download' (from https://huggingface.co/{REPO_ID}, {LICENCE}), "
              "or pass --model DIR / set LEGSEGNET_MODEL to an nnU-Net results folder")


def cache_dir():
    base = os.environ.get("LEGSEGNET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "legsegnet")
    return Path(base) / "weights"


def installed_dir():
    """The downloaded model folder, or None."""
    folder = cache_dir() / "LegSegNet"
    return folder if (folder / MANIFEST).is_file() else None


def locate(model=None):
    """(folder, where it came from) or (None, why none was found)."""
    if model:
        return Path(model), "--model"
    if os.environ.get("LEGSEGNET_MODEL"):
        return Path(os.environ["LEGSEGNET_MODEL"]), "LEGSEGNET_MODEL"
    folder = installed_dir()
    if folder is not None:
        return folder, f"downloaded weights ({folder})"
    return None, "no network weights installed"


def sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(folder):
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST and (p.suffix in (".json", ".pth")))


def write_manifest(folder, source):
    files = {name: sha256(Path(folder) / name) for name in model_files(folder)}
    manifest = {"source": source, "licence": LICENCE, "files": files}
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def verify(folder):
    """Check every file against the sha256 manifest written at download; InputError on any difference."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise InputError(f"{folder}: no {MANIFEST} (written by 'legsegnet weights download'); nothing to verify "
                         "against") from None
    except ValueError:
        raise InputError(f"{folder}/{MANIFEST} is corrupted; run 'legsegnet weights download --force'") from None
    problems = []
    for name, expected in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} missing")
        elif sha256(path) != expected:
            problems.append(f"{name} sha256 mismatch")
    if not manifest.get("files"):
        problems.append("manifest lists no files")
    if problems:
        raise InputError(f"{folder}: corrupted weights ({'; '.join(problems)}); "
                         "run 'legsegnet weights download --force'")
    return manifest


def find_results_folder(root):
    """The folder under root that holds plans.json, dataset.json and fold_*/checkpoint_*.pth."""
    for plans in sorted(Path(root).rglob("plans.json")):
        folder = plans.parent
        if (folder / "dataset.json").is_file() and any(folder.glob("fold_*/checkpoint_*.pth")):
            return folder
    return None


def download(revision=REVISION, force=False, repo_id=REPO_ID):
    """Fetch the published results folder into the cache (atomically) and record sha256 of every file."""
    target = cache_dir() / "LegSegNet"
    if installed_dir() and not force:
        verify(target)
        return target, False
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InputError("downloading needs huggingface_hub; pip install 'legsegnet[network]'") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        try:
            snapshot_download(repo_id=repo_id, revision=revision, local_dir=staging,
                              allow_patterns=["*.json", "*.pth"])
        except Exception as err:   # offline, unknown revision, HTTP errors: all end the same way for the user
            raise InputError(f"could not download {repo_id}@{revision} from huggingface.co "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}); "
                             f"check the connection, or download the files by hand from "
                             f"https://huggingface.co/{repo_id} and pass --model DIR") from None
        found = find_results_folder(staging)
        if found is None:
            raise InputError(f"{repo_id}@{revision} holds no nnU-Net results folder "
                             "(plans.json, dataset.json, fold_N/checkpoint_*.pth)")
        shutil.rmtree(found / ".cache", ignore_errors=True)
        write_manifest(found, {"repo": repo_id, "revision": revision})
        if target.exists():
            shutil.rmtree(target)
        found.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, True
