"""Errors the user can act on. The CLI maps InputError (and OSErrors from the machine) to exit code 2; anything
else is a bug (exit 1)."""
import errno

# OSErrors that come from the machine, not from a bug: a full disk, a read-only or forbidden location, ...
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
                      errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.EIO,
                      errno.ELOOP, errno.EMFILE, errno.ENFILE, errno.ENOTEMPTY, errno.EXDEV, errno.EBUSY}


class InputError(Exception):
    """The input cannot be processed (unreadable, not CT, wrong shape...). The message says why in one line."""


class Cancelled(Exception):
    """The run was cancelled by the caller; nothing was written."""


def environment_problem(err):
    """The one-line message of an OSError that comes from the machine (full disk, no permission...), else None."""
    if not isinstance(err, OSError) or err.errno not in ENVIRONMENT_ERRNOS:
        return None
    return f"{err.filename}: {err.strerror}" if err.filename else str(err.strerror or err)
