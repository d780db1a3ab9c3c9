"""``njit`` for the kernels: numba's, with an on-disk cache that many ranks can start on at once.

numba's own cache (``cache=True``) writes each file through a temporary name and a rename, so
no file is ever torn, but it takes no lock: when hundreds of ranks start together on a cold
cache every rank compiles every kernel (minutes of CPU on a shared node), and two processes
saving different signatures of one function both read the index, both pick the first free
data file ``<fn>.1.nbc`` and one overwrites the other's code while the index still maps the
first signature to it (a later start would load the wrong machine code).

:class:`LockedCache` is numba's ``FunctionCache`` with one lock file per function beside its
index (``<index>.lock``, a POSIX ``lockf`` lock, which NFS and Lustre honour): a rank that
misses the cache takes the lock, looks again (another rank may have compiled meanwhile, then it
loads that), and only if it still misses compiles and saves, releasing the lock after the
save. So on a cold cache one rank per function compiles while the others wait for it and load
its result; a warm cache is read without any lock. A process that dies releases its locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from typing import Any

import numba
from numba.core.caching import FunctionCache


class LockedCache(FunctionCache):  # type: ignore[misc]
    """numba's per-function cache; a miss is compiled by one process at a time (see module)."""

    def __init__(self, py_func: Callable[..., Any]) -> None:
        super().__init__(py_func)
        self._held: int | None = None  # the lock file's descriptor while this process holds it

    @property
    def lock_path(self) -> str:
        return self._cache_file._index_path + ".lock"

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        cres = super().load_overload(sig, target_context)
        if cres is not None or not self._enabled:
            return cres
        if self._held is None:
            self._held = self._acquire()
            if self._held is None:  # no lock possible here (read-only folder): as numba
                return None
        cres = super().load_overload(sig, target_context)  # compiled while we waited?
        if cres is not None:
            self._release()
        return cres  # None: numba compiles now and calls save_overload, which releases

    def save_overload(self, sig: Any, data: Any) -> None:
        try:
            super().save_overload(sig, data)
        finally:
            self._release()

    def _acquire(self) -> int | None:
        try:
            self._impl.locator.ensure_cache_path()
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            return None
        return fd

    def _release(self) -> None:
        fd, self._held = self._held, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.lockf(fd, fcntl.LOCK_UN)
            os.close(fd)


def njit(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``numba.njit`` (same options); ``cache=True`` caches through :class:`LockedCache`."""
    if fn is None:
        return lambda f: njit(f, **options)
    cache = options.pop("cache", False)
    dispatcher = numba.njit(**options)(fn)
    if cache:
        dispatcher._cache = LockedCache(dispatcher.py_func)  # what enable_caching() sets
    return dispatcher


__all__ = ["LockedCache", "njit"]
