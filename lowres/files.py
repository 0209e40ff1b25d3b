"""Writing run files: atomically (temp file + rename) and with the mode a plain write gets.

An interrupted run never leaves a half-written file, and ``tempfile.mkstemp`` (mode 0600)
never leaks its private mode into a run folder whose other files are 0644: results are
meant to be read by the people who share the machine, as any file the process writes is.
"""

from __future__ import annotations

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
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def inside(root: str | Path, relative: str | Path) -> bool:
    """Whether ``root / relative`` stays inside ``root`` once ``..`` and links resolve: a
    name from the config (a preset, a backbone name) must not reach another folder."""
    root = Path(root).resolve()
    return (root / relative).resolve().is_relative_to(root)
