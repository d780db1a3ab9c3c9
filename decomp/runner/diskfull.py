"""Messages for a file a run could not write, and the clean-up of what the write left behind.

A full disk (``ENOSPC``), an exceeded quota (``EDQUOT``) or any other ``OSError`` while writing
a run's file becomes a :class:`~decomp.errors.StorageError` naming the file, the bytes the write
needed and what the file system has free, and the temporary file is removed.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from decomp.errors import StorageError


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def storage_error(e: OSError, path: Path, needed: int | None, what: str) -> StorageError:
    """The :class:`StorageError` for ``e`` raised while writing ``what`` to ``path``."""
    free = free_bytes(path.parent)
    size = f" (needs {human(needed)}" if needed is not None else " ("
    size += f"{'; ' if needed is not None else ''}{human(free)} free there)" \
        if free is not None else ")"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        cause = "no space left on the device" if e.errno == errno.ENOSPC else "disk quota exceeded"
        fix = "free space there or point out_dir (--out) at a larger file system"
    else:
        cause = e.strerror or str(e)
        fix = "check the folder's permissions and file system"
    return StorageError(f"cannot write {what} {path}: {cause}{size}; {fix}")


def write_bytes_atomic(path: Path, data: bytes, what: str = "file") -> None:
    """Replace ``path`` by ``data`` at once (temporary file + fsync + rename); on failure the
    temporary file is removed and a :class:`StorageError` names the path and bytes."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(e, path, len(data), what) from None
