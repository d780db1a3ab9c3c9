"""The compressor contract and the payload header every compressor writes.

A payload is a 1-D ``uint8`` numpy buffer: a 16-byte header followed by the body. Its size is
what crosses MPI and what metrics report. Header layout (little endian)::

    offset 0  uint8   magic 0xDC
    offset 1  uint8   kind       (which compressor wrote it)
    offset 2  uint8   vdtype     (wire dtype of the values: 0 f32, 1 f64, 2 f16, 3 bf16)
    offset 3  uint8   flags      (compressor-specific: index width, branch bit, ...)
    offset 4  uint32  count      (entries in the body: k for Top-k, d for dense formats)
    offset 8  uint64  d          (length of the dense vector)

``decode`` checks magic, kind, d (when the caller knows it) and that the payload is exactly as
long as the header says, so a corrupted or truncated buffer is refused, never decoded to garbage.
The length check comes before ``decode`` allocates its output, so a header claiming d = 2**40
is a :class:`PayloadError`, not a 8 TiB allocation (pass ``d`` when the expected length is
known); without ``d``, a sparse payload (Top-k, Rand-k) whose header claims an output larger
than 256 MiB and 4096 times the payload is refused too. The value dtype byte must be the one
the compressor writes (a float16/bfloat16 swap is refused, not decoded). ``decode_add``
accumulates into a caller's 1-D float32/float64 ``out`` (in ``out``'s precision); any other
``out`` (int64, complex, float16, 2-D) is refused with a TypeError, never silently truncated
or cast.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np

from decomp.compress._wire import VDTYPE_CODE, VDTYPES, wire_code
from decomp.errors import ConfigError, PayloadError
from decomp.rng import Key

HEADER_BYTES = 16
MAGIC = 0xDC
_HDR = np.dtype([("magic", "u1"), ("kind", "u1"), ("vdtype", "u1"), ("flags", "u1"),
                 ("count", "<u4"), ("d", "<u8")])
assert _HDR.itemsize == HEADER_BYTES


class Header(NamedTuple):
    kind: int
    vdtype: int
    flags: int
    count: int
    d: int


def align8(n: int) -> int:
    """Round a byte offset up to a multiple of 8, so every section can be viewed in place."""
    return (n + 7) & ~7


def write_header(buf: np.ndarray, h: Header) -> None:
    """Write ``h`` into the first 16 bytes of ``buf`` (uint8)."""
    rec = buf[:HEADER_BYTES].view(_HDR)
    rec["magic"] = MAGIC
    rec["kind"] = h.kind
    rec["vdtype"] = h.vdtype
    rec["flags"] = h.flags
    rec["count"] = h.count
    rec["d"] = h.d


def read_header(payload: np.ndarray, kind: int, d: int | None = None) -> Header:
    """Parse and check a payload's header; raise :class:`PayloadError` naming what is wrong."""
    if not isinstance(payload, np.ndarray) or payload.dtype != np.uint8 or payload.ndim != 1:
        raise PayloadError("payload must be a 1-D uint8 numpy array")
    if payload.size < HEADER_BYTES:
        raise PayloadError(f"payload truncated: {payload.size} bytes, the header alone is 16")
    rec = payload[:HEADER_BYTES].view(_HDR)[0]
    if int(rec["magic"]) != MAGIC:
        raise PayloadError(f"bad payload magic 0x{int(rec['magic']):02x} (expected 0xdc): "
                           "corrupted buffer or not a decomp payload")
    if int(rec["kind"]) != kind:
        raise PayloadError(f"payload kind {int(rec['kind'])} does not match this compressor "
                           f"(kind {kind})")
    if int(rec["vdtype"]) not in VDTYPES:
        raise PayloadError(f"payload has unknown value dtype code {int(rec['vdtype'])}")
    h = Header(int(rec["kind"]), int(rec["vdtype"]), int(rec["flags"]), int(rec["count"]),
               int(rec["d"]))
    if d is not None and h.d != d:
        raise PayloadError(f"payload is for a vector of length {h.d}, expected {d}")
    return h


def check_vdtype(h: Header, value_dtype: str | None, who: str) -> None:
    """Refuse a header whose value dtype byte is not what this compressor writes: its
    ``value_dtype``'s code, or (None) float32/float64. float16 and bfloat16 have the same
    size, so a swapped byte would otherwise decode every value wrongly without a sign."""
    allowed = (VDTYPE_CODE[value_dtype],) if value_dtype else (0, 1)
    if h.vdtype not in allowed:
        names = {c: n for n, c in VDTYPE_CODE.items()}
        raise PayloadError(f"{who} payload carries {names.get(h.vdtype, h.vdtype)} values but "
                           f"this compressor sends {' or '.join(names[c] for c in allowed)}: "
                           "corrupted header or another compressor configuration")


#: decode without ``d=`` allocates at most this many bytes beyond what the payload's own
#: length justifies (:meth:`Compressor.checked_header`)
DECODE_LIMIT_BYTES = 1 << 28
#: ... where a payload justifies an output this many times its size (a sparse payload of k
#: entries of a length-d vector is about k·12 bytes)
DECODE_RATIO = 1 << 12


def check_vector(x: np.ndarray) -> np.ndarray:
    """Return x as a contiguous 1-D float32/float64 array or raise a clear error.

    Other float dtypes (float16) are converted to float32; integers, complex and object arrays
    are refused, since compressing them is almost certainly a bug upstream.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"compressors take flat 1-D vectors, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("cannot compress an empty vector")
    if x.dtype not in (np.float32, np.float64):
        if np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        else:
            raise TypeError(f"compressors take float32/float64 vectors, got dtype {x.dtype}")
    return np.ascontiguousarray(x)


def nonfinite_error(x: np.ndarray, who: str) -> FloatingPointError:
    """The error for a vector with NaN/inf: names the first bad index and value."""
    bad = np.flatnonzero(~np.isfinite(x))
    j = int(bad[0]) if bad.size else -1
    return FloatingPointError(f"{who}: input has {bad.size} non-finite entries "
                              f"(first x[{j}] = {x[j] if j >= 0 else 'n/a'})")


def check_out(out: Any) -> None:
    """``decode_add``'s accumulator must be a writable 1-D float32/float64 numpy array: an
    integer, complex, float16 or read-only ``out`` would be truncated or cast silently."""
    if not isinstance(out, np.ndarray) or out.dtype not in _OUT_DTYPES or out.ndim != 1:
        what = (f"{out.dtype} array of shape {out.shape}" if isinstance(out, np.ndarray)
                else type(out).__name__)
        raise TypeError(f"decode_add needs out = a 1-D float32 or float64 numpy array, got a "
                        f"{what}: decode into a float array and convert afterwards")
    if not out.flags.writeable:
        raise TypeError("decode_add needs a writable out array (got a read-only view)")


_OUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _checking_out(decode_add: Callable[..., None]) -> Callable[..., None]:
    """Wrap a subclass's ``decode_add`` so ``out`` is checked (:func:`check_out`) first."""
    @functools.wraps(decode_add)
    def checked(self: Compressor, payload: np.ndarray, out: np.ndarray,
                scale: float = 1.0) -> None:
        check_out(out)
        decode_add(self, payload, out, scale)

    checked.__checks_out__ = True  # type: ignore[attr-defined]
    return checked


def out_dtype(vdtype_code: int) -> type:
    """decode's output dtype for a header vdtype code (float64 for code 1, else float32)."""
    return np.float64 if vdtype_code == 1 else np.float32


class Compressor(ABC):
    """A compression operator C: R^d -> R^d with a byte-exact wire format.

    Subclasses define ``kind`` (header id), ``name``, whether C is unbiased (E C(x) = x) and
    its constants: ``alpha(d)`` for contractive C (E||C(x) - x||^2 <= (1 - alpha)||x||^2) and
    ``omega(d)`` for unbiased C (E||C(x) - x||^2 <= omega ||x||^2).
    """

    kind: ClassVar[int]
    name: ClassVar[str]
    is_unbiased: ClassVar[bool] = False
    is_random: ClassVar[bool] = False
    #: the header's value dtype byte is this compressor's ``value_dtype`` (checked on decode)
    value_dtype_on_wire: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every ``decode_add`` a subclass defines checks ``out`` first (:func:`check_out`),
        so no compressor can scatter floats into an integer or complex array."""
        super().__init_subclass__(**kwargs)
        fn = cls.__dict__.get("decode_add")
        if fn is not None and not getattr(fn, "__checks_out__", False) \
                and not getattr(fn, "__isabstractmethod__", False):
            cls.decode_add = _checking_out(fn)  # type: ignore[method-assign]

    # --- constants -------------------------------------------------------------------------
    def alpha(self, d: int) -> float:
        """Contraction constant alpha in (0, 1]; unbiased compressors must be Scaled first."""
        raise ConfigError(f"{self!r} is not contractive; wrap it as Scaled({self!r}) "
                          "to get alpha = 1/(omega + 1)")

    def omega(self, d: int) -> float:
        """Variance constant omega >= 0 of an unbiased compressor."""
        raise ConfigError(f"{self!r} is biased: it has no variance constant omega")

    def check(self, d: int) -> None:
        """Raise :class:`ConfigError` if this compressor cannot compress length-d vectors."""
        if d < 1:
            raise ConfigError(f"vector length must be >= 1, got {d}")

    # --- wire format -----------------------------------------------------------------------
    @abstractmethod
    def payload_bytes(self, d: int, dtype: np.dtype | type = np.float64) -> int:
        """Exact payload size in bytes (header included) for a length-d vector of ``dtype``."""

    @abstractmethod
    def encode(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        """Compress x (shape (d,), float32/64) into a uint8 payload. ``key`` seeds randomness."""

    @abstractmethod
    def decode_add(self, payload: np.ndarray, out: np.ndarray, scale: float = 1.0) -> None:
        """out += scale * C(x) for the x that produced ``payload``; out has shape (d,)."""

    def decode(self, payload: np.ndarray, out: np.ndarray | None = None, *,
               d: int | None = None) -> np.ndarray:
        """The dense C(x), shape (d,), in the wire value dtype (at least float32); ``d``: the
        expected length, when known (a payload for another length is refused)."""
        if out is None:
            h = self.checked_header(payload, d)
            out = np.zeros(h.d, dtype=out_dtype(h.vdtype))
        else:
            check_out(out)
            out[:] = 0
        self.decode_add(payload, out)
        return out

    def checked_header(self, payload: np.ndarray, d: int | None = None) -> Header:
        """The header of ``payload`` after checking its total size against
        :meth:`payload_bytes` for the header's d, before anything of size d is allocated."""
        h = read_header(payload, self.kind, d)
        if self.value_dtype_on_wire:
            check_vdtype(h, getattr(self, "value_dtype", None), type(self).__name__)
        try:
            self.check(h.d)  # e.g. RandK: d < 2**32
            want = self.payload_bytes(h.d, out_dtype(h.vdtype))
        except (ConfigError, ValueError, OverflowError):
            want = -1
        if payload.size != want:
            raise PayloadError(f"payload of {payload.size} bytes does not match {self!r} for "
                               f"the length d={h.d} its header claims: corrupted, truncated or "
                               "written by another compressor configuration")
        size = h.d * np.dtype(out_dtype(h.vdtype)).itemsize
        if d is None and size > max(DECODE_LIMIT_BYTES, DECODE_RATIO * payload.size):
            raise PayloadError(f"payload header claims d={h.d}: decoding it would allocate "
                               f"{size / 2**30:.1f} GiB for a {payload.size}-byte payload; pass "
                               "decode(payload, d=...) with the length you expect")
        return h

    def decode_dtype(self, dtype: np.dtype | type) -> np.dtype:
        """dtype of ``decode``'s output for inputs of ``dtype``: float64 iff the wire carries
        float64 values (or, for quantizers, the input was float64), else float32."""
        code = wire_code(getattr(self, "value_dtype", None), np.dtype(dtype))
        return np.dtype(np.float64 if code == 1 else np.float32)

    # --- reference -------------------------------------------------------------------------
    @abstractmethod
    def reference(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        """C(x) computed densely in plain numpy from the formula: the oracle for tests and sim."""

    def __call__(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        """decode(encode(x)): C(x) through the wire format."""
        return self.decode(self.encode(x, key))


class DenseCodec(Compressor):
    """A compressor whose decoder produces every entry (quantizers, signs): ``decode`` writes
    C(x) straight into ``out`` (no zeroing pass, same bits as zeros + decode_add) and
    ``decode_add`` accumulates, both through one ``_decode(payload, out, scale, assign)``."""

    @abstractmethod
    def _decode(self, payload: np.ndarray, out: np.ndarray, scale: float, assign: bool) -> None:
        """out = C(x) (assign) or out += scale * C(x); out has shape (d,)."""

    def decode_add(self, payload: np.ndarray, out: np.ndarray, scale: float = 1.0) -> None:
        self._decode(payload, out, scale, False)

    def decode(self, payload: np.ndarray, out: np.ndarray | None = None, *,
               d: int | None = None) -> np.ndarray:
        if out is None:
            h = self.checked_header(payload, d)
            out = np.empty(h.d, dtype=out_dtype(h.vdtype))
        else:
            check_out(out)
        self._decode(payload, out, 1.0, True)
        return out
