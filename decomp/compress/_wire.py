"""Value sections of a payload: the wire dtype codes (header byte 2) and the helpers shared by
compressors to write, read and round values (dtype on the wire, rounding).

The lowest module of the wire format: :mod:`decomp.compress.base` imports the codes from here."""

from __future__ import annotations

import numpy as np

from decomp.errors import ConfigError

# Wire dtypes of values. bf16 travels as the upper 16 bits of a float32 (uint16 on the wire).
VDTYPES: dict[int, np.dtype] = {0: np.dtype(np.float32), 1: np.dtype(np.float64),
                                2: np.dtype(np.float16), 3: np.dtype(np.uint16)}
VDTYPE_CODE: dict[str, int] = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}

VALUE_DTYPES = ("float32", "float64", "float16", "bfloat16")


def check_value_dtype(value_dtype: str | None) -> str | None:
    """Validate a ``value_dtype`` option (None = the input's own dtype)."""
    if value_dtype is not None and value_dtype not in VALUE_DTYPES:
        raise ConfigError(f"value_dtype must be one of {VALUE_DTYPES} or unset, "
                          f"got {value_dtype!r}")
    return value_dtype


def wire_code(value_dtype: str | None, x_dtype: np.dtype) -> int:
    """Header code of the wire dtype for values of an input of dtype ``x_dtype``."""
    name = value_dtype or np.dtype(x_dtype).name
    return VDTYPE_CODE[name]


def itemsize(code: int) -> int:
    return VDTYPES[code].itemsize


def _float32_round_to_odd(vals: np.ndarray) -> np.ndarray:
    """float32 of ``vals`` rounded to odd (truncate, then set the last bit if inexact).

    bfloat16 is float32's upper 16 bits; a float64 rounded to float32 to nearest and then to
    bfloat16 to nearest can round twice the wrong way (1 + 2^-8 + 2^-30 would become 1.0).
    Rounding to odd first, with 16 spare bits, makes the second rounding the correctly rounded
    one (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums", 2008).
    """
    f = vals.astype(np.float32)
    if vals.dtype != np.float64:
        return f
    with np.errstate(invalid="ignore"):
        back = f.astype(np.float64)
        inexact = (back != vals) & np.isfinite(f)
        u = f.view(np.uint32).copy()
        u[inexact & (np.abs(back) > np.abs(vals))] -= np.uint32(1)  # toward zero
        u[inexact] |= np.uint32(1)
    return u.view(np.float32)


def to_wire(vals: np.ndarray, code: int, out: np.ndarray) -> None:
    """Write ``vals`` converted to wire dtype ``code`` into the uint8 section ``out``.

    A value that does not fit the wire dtype (e.g. |v| > 65504 for float16) raises
    FloatingPointError instead of silently becoming inf.
    """
    narrowing = code in (2, 3) or (code == 0 and vals.dtype == np.float64)
    with np.errstate(over="ignore"):
        if code == 3:  # bfloat16: round-to-nearest-even on the upper 16 bits of float32
            u = _float32_round_to_odd(vals).view(np.uint32)
            rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) \
                >> np.uint32(16)
            out.view(np.uint16)[:] = rounded.astype(np.uint16)
        else:
            out.view(VDTYPES[code])[:] = vals
    if narrowing and not np.all(np.isfinite(from_wire(out, code))):
        name = {0: "float32", 2: "float16", 3: "bfloat16"}[code]
        raise FloatingPointError(f"a value exceeds the range of the {name} wire format "
                                 f"(max |v| = {float(np.max(np.abs(vals))):.6g})")


def from_wire(section: np.ndarray, code: int) -> np.ndarray:
    """View/convert a uint8 value section to a float array (float32 for 16-bit formats)."""
    if code == 3:
        return (section.view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
    vals = section.view(VDTYPES[code])
    return vals.astype(np.float32) if code == 2 else vals


def round_like_wire(vals: np.ndarray, code: int) -> np.ndarray:
    """What values look like after a trip over the wire (for dense references)."""
    buf = np.empty(vals.size * itemsize(code), dtype=np.uint8)
    to_wire(vals, code, buf)
    out = from_wire(buf, code)
    return out.astype(np.result_type(vals.dtype, np.float32))
