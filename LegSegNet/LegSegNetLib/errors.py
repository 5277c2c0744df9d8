"""Errors the user can act on. The CLI maps InputError to exit code 2; anything else is a bug (exit 1)."""


class InputError(Exception):
    """The input cannot be processed (unreadable, not CT, wrong shape...). The message says why in one line."""


class Cancelled(Exception):
    """The run was cancelled by the caller; nothing was written."""
