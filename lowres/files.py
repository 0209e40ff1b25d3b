"""Writing run files: atomically (temp file + rename) and with the mode a plain write gets;
reading JSON files with every failure named.

An interrupted run never leaves a half-written file, and ``tempfile.mkstemp`` (mode 0600)
never leaks its private mode into a run folder whose other files are 0644: results are
meant to be read by the people who share the machine, as any file the process writes is.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from lowres.errors import DataFormatError


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


# A run's checkpoint folder (lowres.training.checkpoints writes it): the trained parameters and
# their manifest. Here, below torch, so that a study's runner reads a manifest without torch.
TRAINABLE_FILE = "trainable.safetensors"
MANIFEST_FILE = "manifest.json"


def recorded_sha256(checkpoint: str | Path) -> str | None:
    """The sha256 a checkpoint's manifest recorded for its trained parameters when the run
    saved them; None without a manifest or a recorded hash (checkpoints written before)."""
    try:
        recorded = json.loads((Path(checkpoint) / MANIFEST_FILE).read_text()).get("sha256", {})
    except (OSError, ValueError, AttributeError):
        return None
    value = recorded.get(TRAINABLE_FILE) if isinstance(recorded, dict) else None
    return value or None


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


def read_json(path: str | Path, expected: str, fix: str) -> Any:
    """Parse a JSON file; every way it can be unreadable is a DataFormatError naming the file.

    A UTF-8 byte-order mark is accepted (editors on Windows write one). Text that is not
    UTF-8, broken syntax (with line, column and whether the file stops early), nesting
    deeper than the parser's recursion limit and integers longer than Python converts
    (4300 digits) are reported with ``expected`` (what the file should hold) and ``fix``.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded). Expected "
            f"{expected} in UTF-8; {fix}"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # A decode error at the very end of the text means the document stops mid-way,
        # which in practice is an interrupted download, copy or write.
        truncated = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        hint = ""
        if truncated:
            hint = " The file ends before the JSON is complete, so it is probably truncated."
        raise DataFormatError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} "
            f"(character {exc.pos} of {len(text)}).{hint} Expected {expected}; {fix}"
        ) from None
    except RecursionError:
        raise DataFormatError(
            f"{path} is not usable JSON: its arrays or objects nest deeper than the "
            f"{sys.getrecursionlimit()} levels the reader follows. Expected {expected}; {fix}"
        ) from None
    except ValueError:  # an integer beyond sys.get_int_max_str_digits()
        raise DataFormatError(
            f"{path} is not usable JSON: it holds an integer of more than "
            f"{sys.get_int_max_str_digits()} digits. Expected {expected}; {fix}"
        ) from None


def not_utf8_error(path: str | Path, expected: str, fix: str) -> DataFormatError:
    """The error for a text file that is not UTF-8, naming the first bad byte and its line.

    Readers that stream a file only learn that some chunk failed; the file is read again
    here, once, to find where.
    """
    path = Path(path)
    data = path.read_bytes()
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        data[start:].decode("utf-8")
        where = ""
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        line = data.count(b"\n", 0, offset) + 1
        where = f" (byte {offset}, line {line}, cannot be decoded)"
    return DataFormatError(f"{path} is not UTF-8 text{where}. Expected {expected} in UTF-8; {fix}")
