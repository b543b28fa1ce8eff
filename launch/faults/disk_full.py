"""A full disk (or a used-up quota) while a run writes: told apart from other errors, and
turned into a `RunError` that says what was kept and what to do.

No restart mends a full disk, and a node restarted onto one would only fill it again,
so the run ends with this message.
"""

import errno
import os
from typing import Optional

from launch.faults import RunError

_CODES = (errno.ENOSPC, errno.EDQUOT)
# Orbax's arrays are written by tensorstore, which raises a ValueError whose message alone
# carries the OS error ("... [OS error 28: ENOSPC No space left on device] ...").
_WORDS = {code: (errno.errorcode[code], os.strerror(code)) for code in _CODES}


def disk_full_code(error: BaseException) -> Optional[int]:
    """ENOSPC or EDQUOT if `error`, or an error it was raised from, is a full disk; else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _CODES:
            return error.errno
        text = str(error)
        for code, words in _WORDS.items():
            if any(word in text for word in words):
                return code
        error = error.__cause__ or error.__context__
    return None


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024


def free_space(path: str) -> str:
    """'12.0 KiB free of 512.0 KiB' for the filesystem holding `path` ('free space unknown' if
    statvfs cannot tell; a quota is not visible there)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return "free space unknown"
    return f"{_size(stats.f_bavail * stats.f_frsize)} free of {_size(stats.f_blocks * stats.f_frsize)}"


def run_error(error: BaseException, failed: str, directory: str, kept: str, run_dir: str) -> Optional[RunError]:
    """The RunError for `error` if it is a full disk, else None (the caller re-raises `error`).

    `failed` says what could not be written, `kept` what is still whole on disk.
    """
    code = disk_full_code(error)
    if code is None:
        return None
    return RunError(f"{failed}: {os.strerror(code)} ({free_space(directory)} on the filesystem of {directory}). "
                    f"{kept} Free space on that filesystem (or move the run), then resume with --resume {run_dir}.")


def recording_error(error, run_dir: str) -> Optional[RunError]:
    """The RunError for a `replay.experience.ChunkWriteError` that is a full disk, else None."""
    return run_error(error, error.failed, error.directory, error.kept, run_dir)
