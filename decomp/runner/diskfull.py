"""Messages for a file a run could not write, and the clean-up of what the write left behind.

A full disk (``ENOSPC``), an exceeded quota (``EDQUOT``) or any other ``OSError`` while writing
a run's file becomes a :class:`~decomp.errors.StorageError` naming the file, the bytes the write
needed and what the file system has free, and the temporary file is removed.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


#: bytes handed to the file system per write call: the progress a stalled write is judged by
CHUNK = 8 << 20


class Writing:
    """The file write this process is in (main thread), for the signal backstop
    (:mod:`decomp.runner.guard`): what and where, and when it last made progress (a chunk
    written, the file opened, synced or renamed)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self.since = time.monotonic()

    def progress(self) -> None:
        self.since = time.monotonic()


#: the write in progress (None: none); set and cleared by :func:`writing` only
CURRENT: Writing | None = None


@contextmanager
def writing(path: Path, what: str) -> Iterator[Writing]:
    """Mark a write to ``path`` as in progress (nested writes keep the outer mark)."""
    global CURRENT
    if CURRENT is not None:
        yield CURRENT
        return
    w = CURRENT = Writing(path, what)
    try:
        yield w
    finally:
        CURRENT = None


def write_bytes_atomic(path: Path, data: bytes, what: str = "file") -> None:
    """Replace ``path`` by ``data`` at once (temporary file ``<name>.tmp`` in the same folder,
    fsync, rename): readers see the old file or the new one, never a part. On failure the
    temporary file is removed and a :class:`StorageError` names the path and bytes. The
    process's one atomic writer: run files, checkpoints and the torch front ends' files."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with writing(path, what) as w:
            with open(tmp, "wb") as f:
                w.progress()
                view = memoryview(data)
                for i in range(0, len(view), CHUNK):
                    f.write(view[i:i + CHUNK])
                    w.progress()
                f.flush()
                os.fsync(f.fileno())
                w.progress()
            os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(e, path, len(data), what) from None


def write_text_atomic(path: Path, text: str, what: str = "run file") -> None:
    """:func:`write_bytes_atomic` of ``text`` in UTF-8."""
    write_bytes_atomic(path, text.encode(), what)
