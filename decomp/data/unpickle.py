"""A pickle reader for dataset files that admits plain data only (CIFAR-10's python batches).

:func:`restricted_load` unpickles with :class:`RestrictedUnpickler`, which resolves only the
globals numpy needs to rebuild an array, then checks the result's structure with
:func:`_check_plain` in time linear in the pickle's size. Every refusal is a
:class:`~decomp.errors.DataError`; a hostile file is refused before any of it is used.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from decomp.errors import DataError


def _latin1_encode(obj: Any, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes use it: str -> latin-1 bytes only."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("restricted unpickler: _codecs.encode is admitted only as "
                                     "encode(str, 'latin1')")
    return obj.encode("latin1")


def _numpy_allowed() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray as ma
        from numpy._core import numeric as nm
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
        from numpy.core import numeric as nm  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = nm._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy needs to rebuild an array.

    Admitted: ``numpy.ndarray``, ``numpy.dtype``, ``numpy(._core|.core).multiarray._reconstruct``
    and ``.scalar``, ``numpy(._core|.core).numeric._frombuffer`` and ``_codecs.encode`` restricted
    to (str, 'latin1'). Lists, dicts, tuples, str, bytes and numbers need no global. Anything else
    (``os.system``, ``builtins.eval``, any class) raises ``pickle.UnpicklingError``, before it
    could be called.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _numpy_allowed()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"restricted unpickler: refusing global {module}.{name} (only numpy arrays, "
                "bytes, str, numbers, lists and dicts are admitted)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("restricted unpickler: persistent ids are not admitted")


#: limits of the structure check: nesting depth, and entries of the structure written out
#: as a tree (a container reached twice through shared references counts twice)
MAX_DEPTH = 50
MAX_ELEMENTS = 10_000_000


def _check_plain(obj: Any) -> None:
    """Refuse object arrays and anything but arrays/bytes/str/numbers/lists/tuples/dicts.

    Linear in the number of distinct objects: each container is walked once and its size as
    a tree (entries, counting every shared reference) is remembered by id, so a few hundred
    bytes of nested shared references (``a = [b, b]`` thirty times: 2**30 entries as a tree,
    which ``np.asarray`` would expand) are refused at once instead of walked for days. Also
    refused: a container that contains itself and nesting deeper than :data:`MAX_DEPTH`.
    """
    sizes: dict[int, int] = {}  # id -> tree size of containers already checked (obj keeps
    on_path: set[int] = set()  # them alive, so their ids stay unique)

    def walk(o: Any, depth: int) -> int:
        if isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                raise pickle.UnpicklingError("restricted unpickler: object arrays are not "
                                             "admitted")
            return 1
        if isinstance(o, (bytes, str, int, float, bool, np.generic)) or o is None:
            if isinstance(o, np.generic) and o.dtype.hasobject:
                raise pickle.UnpicklingError("restricted unpickler: object scalars are not "
                                             "admitted")
            return 1
        if not isinstance(o, (list, tuple, dict)):
            raise pickle.UnpicklingError(f"restricted unpickler: {type(o).__name__} is not "
                                         "admitted")
        key = id(o)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise pickle.UnpicklingError("restricted unpickler: a container contains itself "
                                         "(not plain data)")
        if depth >= MAX_DEPTH:
            raise pickle.UnpicklingError(f"restricted unpickler: structure nested deeper than "
                                         f"{MAX_DEPTH} levels")
        on_path.add(key)
        items = [v for kv in o.items() for v in kv] if isinstance(o, dict) else o
        total = 1
        for v in items:
            total += walk(v, depth + 1)
            if total > MAX_ELEMENTS:
                raise pickle.UnpicklingError(
                    f"restricted unpickler: the structure expands to more than {MAX_ELEMENTS} "
                    "entries (shared references nested to blow up when read)")
        on_path.discard(key)
        sizes[key] = total
        return total

    walk(obj, 0)


def restricted_load(data: bytes | io.BufferedIOBase, *, encoding: str = "bytes") -> Any:
    """Unpickle ``data`` (bytes or a binary file) admitting only plain data (see
    :class:`RestrictedUnpickler`). ``encoding="bytes"`` reads Python-2 pickles (CIFAR's) with
    bytes keys, as the CIFAR-10 page recommends. Raises :class:`DataError` on refusal."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        obj = RestrictedUnpickler(f, encoding=encoding).load()
        _check_plain(obj)
    except pickle.UnpicklingError as e:
        raise DataError(str(e)) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(f"not a valid pickle of plain data: {type(e).__name__}: {e}") from None
    except (MemoryError, OverflowError):
        raise DataError("not a valid pickle of plain data: it declares an object too large "
                        "to allocate (corrupted or hostile file)") from None
    return obj
