"""Identity: no compression (alpha = 1, omega = 0); the dense baseline's wire format.

Wire format: header | d values in the wire dtype (default the input's; float16 and bfloat16
halve the bytes but then the operator is a rounding, not the identity).
"""

from __future__ import annotations

import numpy as np

from decomp.compress._common import max_abs_checked
from decomp.compress._wire import (
    check_value_dtype,
    from_wire,
    itemsize,
    round_like_wire,
    to_wire,
    wire_code,
)
from decomp.compress.base import (
    HEADER_BYTES,
    Compressor,
    Header,
    check_vdtype,
    check_vector,
    nonfinite_error,
    read_header,
    write_header,
)
from decomp.errors import PayloadError
from decomp.rng import Key


class Identity(Compressor):
    """C(x) = x, sent densely. ``value_dtype`` as for :class:`TopK`."""
    value_dtype_on_wire = True

    kind = 0
    name = "identity"
    is_unbiased = True

    def __init__(self, value_dtype: str | None = None) -> None:
        self.value_dtype = check_value_dtype(value_dtype)

    def __repr__(self) -> str:
        return f"Identity({self.value_dtype!r})" if self.value_dtype else "Identity()"

    def alpha(self, d: int) -> float:
        return 1.0

    def omega(self, d: int) -> float:
        return 0.0

    def payload_bytes(self, d: int, dtype: np.dtype | type = np.float64) -> int:
        return HEADER_BYTES + d * itemsize(wire_code(self.value_dtype, np.dtype(dtype)))

    def encode(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        x = check_vector(x)
        max_abs_checked(x, repr(self))  # FloatingPointError on NaN/inf
        code = wire_code(self.value_dtype, x.dtype)
        payload = np.empty(HEADER_BYTES + x.size * itemsize(code), dtype=np.uint8)
        write_header(payload, Header(self.kind, code, 0, x.size, x.size))
        to_wire(x, code, payload[HEADER_BYTES:])
        return payload

    def decode_add(self, payload: np.ndarray, out: np.ndarray, scale: float = 1.0) -> None:
        h = read_header(payload, self.kind, out.size)
        check_vdtype(h, self.value_dtype, "Identity")
        want = HEADER_BYTES + h.d * itemsize(h.vdtype)
        if h.count != h.d or payload.size != want:
            raise PayloadError(f"Identity payload has {payload.size} bytes, expected {want} "
                               "(truncated or corrupted)")
        vals = from_wire(payload[HEADER_BYTES:], h.vdtype)
        if scale == 1.0:
            out += vals
        else:
            out += scale * vals

    def reference(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        x = check_vector(x)
        if not np.all(np.isfinite(x)):
            raise nonfinite_error(x, repr(self))
        return round_like_wire(x, wire_code(self.value_dtype, x.dtype)).astype(x.dtype)
