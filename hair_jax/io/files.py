"""Small file helpers shared by everything that writes results or reports errors."""

from __future__ import annotations

import os
import tempfile


def umask() -> int:
    """The process's file mode creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def as_if_opened(path: str) -> None:
    """Gives a file made by `tempfile` (0600, or 0700 for a folder) the mode
    a plain `open()` or `os.makedirs` would have given it under the umask."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask())


def temp_dir(prefix: str, parent: str) -> str:
    """`tempfile.mkdtemp` in `parent`, with the mode of `os.makedirs` (`as_if_opened`)."""
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    as_if_opened(tmp)
    return tmp


def write_atomic(path: str, data: bytes) -> None:
    """Writes `data` under a temporary name in the same directory, then renames.

    A reader never sees a half-written file, and an existing file is replaced
    only once the new one is complete. The file gets the mode `open()` would
    give it (readable by others under the usual umask 022).
    """
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        as_if_opened(tmp)
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
