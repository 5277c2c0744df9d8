"""Output folders: claimed by a lock file before any work, written through a temporary sibling folder that is
renamed into place when complete, never left half-written (errors, Ctrl-C, SIGTERM, SIGHUP)."""
import errno
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

log = logging.getLogger(__name__)
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


# ---------------------------------------------------------------- signals
class Interrupted(KeyboardInterrupt):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP): unwinds like Ctrl-C so every temporary folder is removed."""
    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_critical = {"depth": 0, "pending": None}


def _on_stop_signal(signum, _frame):
    if _critical["depth"]:              # renaming or cleaning up: finish that first
        _critical["pending"] = signum
        return
    raise Interrupted(signum)


@contextmanager
def handle_stop_signals():
    """For the CLI: SIGTERM and SIGHUP stop a run exactly as Ctrl-C does; the previous handlers come back after.
    (Signal handlers can only be set from the main thread; elsewhere this does nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [name for name in STOP_SIGNALS if hasattr(signal, name)]
    previous = {name: signal.signal(getattr(signal, name), _on_stop_signal) for name in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            if handler is not None:          # None: set outside Python, cannot be put back
                signal.signal(getattr(signal, name), handler)


@contextmanager
def uninterrupted():
    """A stop signal arriving inside waits until the block is done (renames and clean-up run to the end)."""
    _critical["depth"] += 1
    try:
        yield
    finally:
        _critical["depth"] -= 1
        pending, _critical["pending"] = _critical["pending"], None
        if pending and not _critical["depth"]:
            raise Interrupted(pending)


# ---------------------------------------------------------------- location checks
def check_location(outdir):
    """Refuse before any work an OUTDIR that cannot be written: a file, below a file, a read-only folder.
    Creates its parent folders. Returns the absolute path."""
    outdir = Path(os.path.abspath(outdir))
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir} is a file, not a folder")
    existing = next(p for p in outdir.parents if p.exists())
    if not existing.is_dir():
        raise InputError(f"{outdir}: {existing} is a file, not a folder")
    try:
        outdir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{outdir.parent}: cannot create the folder ({err.strerror})") from None
    if not os.access(outdir.parent, os.W_OK | os.X_OK):
        raise InputError(f"{outdir.parent}: folder is not writable")
    return outdir


def inside(path, root):
    """path, checked to lie inside root (after resolving links): no write, rename or delete escapes root."""
    resolved, root = Path(path).resolve(), Path(root).resolve()
    if resolved != root and root not in resolved.parents:
        raise InputError(f"{path}: outside the output folder {root}; refusing to write there")
    return Path(path)


# ---------------------------------------------------------------- locks
class FolderLock:
    """A lock file created exclusively, holding pid, host and start time. A second run sees it and stops
    (InputError naming the holder); a lock left by a dead process on this host is taken over."""

    def __init__(self, path, what):
        self.path, self.what = Path(path), what
        self.token = None
        self.taken_over = None       # the record of a dead run whose lock this one took over

    def __enter__(self):
        for _attempt in range(3):
            if self._create():
                return self
            holder = self._read()
            if not self._stale(holder):
                raise InputError(f"{self.what} is in use by another legsegnet run ({describe_holder(holder)}; "
                                 f"lock file {self.path}); wait for it, or delete the lock if no run is going")
            self._take_over(holder)
        raise InputError(f"{self.what}: cannot take the lock {self.path}")

    def __exit__(self, *exc):
        with uninterrupted():
            if self._read().get("token") == self.token:
                self.path.unlink(missing_ok=True)

    def _create(self):
        self.token = os.urandom(6).hex()
        record = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        # Written beside it, then linked into place: the lock never exists without its holder's record (another
        # run reading it half-written would not know whom to name, nor whether the holder is gone).
        written = self.path.with_name(f"{self.path.name}.{self.token}")
        try:
            written.write_text(json.dumps(record))
            try:
                os.link(written, self.path)
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                self._create_in_place(record)      # a file system without hard links
        except FileExistsError:
            return False
        except OSError as err:
            raise InputError(f"{self.path}: cannot create the lock file ({err.strerror})") from None
        finally:
            written.unlink(missing_ok=True)
        return True

    def _create_in_place(self, record):
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)

    def _read(self, path=None):
        try:
            return json.loads(Path(path or self.path).read_text())
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _stale(holder):
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False              # another host's process cannot be checked from here
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:      # alive, another user's
            return False
        return False

    def _take_over(self, holder):
        log.warning("%s: taking over the lock of a run that is gone (%s)", self.what, describe_holder(holder))
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:     # another run took it over first
            return
        if self._read(aside) != holder:   # a live run's lock was moved in the meantime: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)
        self.taken_over = holder


def describe_holder(holder):
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"


# ---------------------------------------------------------------- atomic folders
@contextmanager
def atomic_folder(outdir, overwrite=False, lock=True, tag="", replaceable=None):
    """Claim outdir (check it can be written, take its lock beside it) and yield a temporary folder beside it;
    on success the temporary folder becomes outdir (replacing the old one only with overwrite), on any error or
    stop signal it vanishes and an old outdir stays as it was. lock=False when the caller holds a lock on a
    folder above (a cohort run); tag marks the temporary names so the caller can find its own leftovers.
    replaceable: the file names an old result may hold; an outdir holding anything else (the input, the user's
    own files) is never replaced, even with overwrite."""
    outdir = check_location(outdir)
    claim = FolderLock(outdir.with_name(f".{outdir.name}.lock"), outdir) if lock else _no_lock()
    with claim:
        if outdir.exists() and not overwrite:
            raise InputError(f"{outdir} exists; choose another folder or pass --overwrite")
        check_replaceable(outdir, replaceable)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.{tag}", suffix=".partial", dir=outdir.parent))
        except OSError as err:
            raise InputError(f"{outdir.parent}: cannot write there ({err.strerror})") from None
        try:
            _follow_umask(tmp)
            yield tmp
            try:
                with uninterrupted():
                    _publish(tmp, outdir, tag, replaceable)
            except Interrupted as stop:     # the signal came while renaming: the result is complete and in place
                stop.published = outdir
                raise
        finally:
            with uninterrupted():
                shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _no_lock():
    yield


def _follow_umask(folder):
    """mkdtemp makes the folder private; results follow the user's umask like a plain mkdir."""
    umask = os.umask(0o022)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def check_replaceable(outdir, replaceable):
    """Refuse to replace an outdir holding entries that are not an old result's files (the input itself, a
    DICOM series, the user's notes): replacing deletes the whole folder."""
    if replaceable is None or not os.path.lexists(outdir):
        return
    if outdir.is_symlink() or not outdir.is_dir():
        raise InputError(f"{outdir} is not a folder; refusing to replace it")
    foreign = sorted(entry.name for entry in outdir.iterdir()
                     if entry.name not in replaceable or entry.is_symlink() or not entry.is_file())
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"{outdir} holds files legsegnet did not write ({shown}); refusing to replace it, "
                         "even with --overwrite: choose a new or empty folder")


def _publish(tmp, outdir, tag, replaceable=None):
    if not outdir.exists():
        tmp.rename(outdir)
        return
    if not outdir.is_dir() or outdir.is_symlink():
        raise InputError(f"{outdir} is not a folder; refusing to replace it")
    check_replaceable(outdir, replaceable)
    old = outdir.with_name(f".{outdir.name}.{tag}old-{os.getpid()}.partial")
    outdir.rename(old)
    try:
        tmp.rename(outdir)
    except BaseException:
        old.rename(outdir)            # the previous result stays as it was
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(folder, tag):
    """Remove the temporary folders (`.<name>.<tag>....partial`) that a run with this tag left in folder."""
    if not tag:
        return
    for path in Path(folder).glob(f".*.{tag}*.partial"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(inside(path, folder), ignore_errors=True)
