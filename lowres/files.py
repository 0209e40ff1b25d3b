"""Writing run files: atomically (temp file + rename) and with the mode a plain write gets.

An interrupted run never leaves a half-written file, and ``tempfile.mkstemp`` (mode 0600)
never leaks its private mode into a run folder whose other files are 0644: results are
meant to be read by the people who share the machine, as any file the process writes is.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    # os.umask can only be read by setting it; put the old value back at once.
    current = os.umask(0o022)
    os.umask(current)
    return current


def write_atomic(target: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``target`` through a temporary file in the same folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except OSError as err:
        Path(temporary).unlink(missing_ok=True)
        if err.filename is None:  # a failed write names no file; say which one it was
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


# The errors of a disk that cannot take what a command writes, and what to do about each.
DISK_ERRORS = {
    errno.ENOSPC: "Free space there, or choose a folder on another disk",
    errno.EDQUOT: "Free space within your quota, or choose a folder on another disk",
    errno.EROFS: "Choose a folder on a writable file system (or remount this one read-write)",
}


def disk_error(err: BaseException) -> int | None:
    """The errno of a full or read-only disk behind ``err``, or None for anything else.

    Libraries that write through their own code report these in their messages only
    (safetensors: "os error 28"; torch: "strerror: Read-only file system").
    """
    if isinstance(err, OSError):
        return err.errno if err.errno in DISK_ERRORS else None
    text = str(err)
    for code in DISK_ERRORS:
        if f"os error {code})" in text or os.strerror(code) in text:
            return code
    return None


def inside(root: str | Path, relative: str | Path) -> bool:
    """Whether ``root / relative`` stays inside ``root`` once ``..`` and links resolve: a
    name from the config (a preset, a backbone name) must not reach another folder."""
    root = Path(root).resolve()
    return (root / relative).resolve().is_relative_to(root)
