"""Small file helpers shared by everything that writes results or reports errors."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, data: bytes) -> None:
    """Writes `data` under a temporary name in the same directory, then renames.

    A reader never sees a half-written file, and an existing file is replaced
    only once the new one is complete.
    """
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def error_line(error: BaseException) -> str:
    """'Type: first line' of the root cause of `error`, for one-line messages."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
