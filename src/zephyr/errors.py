"""The one exception type the CLI turns into a single clear sentence (no traceback)."""


class ZephyrError(Exception):
    """A user-facing error: the message names the bad input and what to do about it."""
