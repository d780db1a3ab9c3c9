"""Per-tensor compressors over a multi-slot layout: the compressor contract of test_compress.py
(decode(encode(x)) == reference bit for bit, exact payload sizes, decode_add exact, keyed
randomness, damaged payloads refused) plus what is particular to them: the constants are the
per-tensor ones (alpha = min_t, omega = max_t), each tensor is compressed on its own, one slot
is the flat compressor, an unbound recipe is refused naming the fix, and the downlink sum
reads per-tensor Top-k / Rand-k sparsely with global indices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from decomp.comm.timing import Stopwatch, TimedCodec
from decomp.compress import (
    HEADER_BYTES,
    QSGD,
    Compressor,
    Identity,
    PerTensor,
    RandK,
    TopK,
    bind_layout,
    make_compressor,
)
from decomp.compress.aggregate import SumDecoder, SumEncoder, sparse_parts
from decomp.compress.base import align8
from decomp.compress.per_tensor import PER_TENSOR, UsageError
from decomp.errors import ConfigError, PayloadError
from decomp.layout import Layout

KEY = (7, 1, 3)
#: a small MLP's tensors, a scalar, an empty tensor and one big enough for uint32 indices
LAYOUT = Layout.from_shapes([("fc1.weight", (16, 9)), ("fc1.bias", (16,)), ("scale", ()),
                             ("empty", (0, 4)), ("fc2.weight", (3, 16)), ("fc2.bias", (3,)),
                             ("embed", (70_000,))])
SPECS: dict[str, dict[str, Any]] = {
    "topk": {"kind": "topk", "ratio": 0.1},
    "topk_k1": {"kind": "topk", "k": 1},
    "topk_f16": {"kind": "topk", "ratio": 0.25, "value_dtype": "float16"},
    "randk": {"kind": "randk", "ratio": 0.1},
    "randk_unscaled": {"kind": "randk", "ratio": 0.2, "scaled": False},
    "qsgd": {"kind": "qsgd", "levels": 5},
    "natural": {"kind": "natural"},
    "sign": {"kind": "sign"},
    "scaled_sign": {"kind": "scaled_sign"},
    "scaled_qsgd": {"kind": "scaled", "inner": {"kind": "qsgd", "levels": 2}},
}
IDS = list(SPECS)


def build(name: str, layout: Layout = LAYOUT) -> PerTensor:
    c = make_compressor({**SPECS[name], "per_tensor": True})
    assert isinstance(c, PerTensor) and not c.bound
    return c.bind(layout)


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    ui = np.uint32 if a.dtype == np.float32 else np.uint64
    return np.array_equal((a + 0.0).view(ui), (b + 0.0).view(ui))


def sample(dtype: type, seed: int = 0) -> np.ndarray:
    """Tensors of very different scales (per-tensor scales must differ from one global)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(LAYOUT.d)
    for i, s in enumerate(LAYOUT):
        x[s.offset:s.stop] *= 10.0 ** (i - 3)
    return x.astype(dtype)


@pytest.mark.parametrize("name", IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_equals_reference(name: str, dtype: type) -> None:
    c = build(name)
    for x in (sample(dtype), np.zeros(LAYOUT.d, dtype=dtype),
              np.random.default_rng(1).integers(-2, 3, LAYOUT.d).astype(dtype)):
        p = c.encode(x, KEY)
        assert p.dtype == np.uint8 and p.ndim == 1
        assert p.size == c.payload_bytes(LAYOUT.d, dtype)
        assert int(p[1]) == c.kind == PER_TENSOR | c.inner.kind
        y = c.decode(p)
        ref = c.reference(x, KEY)
        assert bits_equal(y, ref), f"{c!r}: decode != reference"
        out = np.full(LAYOUT.d, 0.25, dtype=y.dtype)
        c.decode_add(p, out)
        assert bits_equal(out, np.full(LAYOUT.d, 0.25, dtype=y.dtype) + y)
        out2 = np.full(LAYOUT.d, 7.0, dtype=y.dtype)
        assert c.decode(p, out=out2) is out2 and bits_equal(out2, y)


@pytest.mark.parametrize("name", IDS)
def test_each_tensor_is_the_inner_compressor_on_that_tensor(name: str) -> None:
    """C(x)_t = inner(x_t) with tensor t's seed; the payload is the inner payloads, each on an
    8-byte boundary, behind one header."""
    from decomp.compress._rng import derive_seed, tensor_seed

    c = build(name)
    x = sample(np.float64, 3)
    y = c.decode(c.encode(x, KEY))
    base = derive_seed(KEY)
    total = HEADER_BYTES
    for t, s in enumerate(LAYOUT):
        if s.size == 0:
            continue
        key = tensor_seed(base, t) if c.is_random else None
        xt = x[s.offset:s.stop]
        assert bits_equal(y[s.offset:s.stop], c.inner.decode(c.inner.encode(xt, key)))
        total += align8(c.inner.payload_bytes(s.size, np.float64))
    assert c.payload_bytes(LAYOUT.d) == total


@pytest.mark.parametrize("name", IDS)
def test_one_slot_is_the_flat_compressor(name: str) -> None:
    d = 300
    flat = make_compressor(SPECS[name])
    c = build(name, Layout.flat(d))
    x = np.random.default_rng(4).standard_normal(d)
    assert bits_equal(c.decode(c.encode(x, KEY)), flat.decode(flat.encode(x, KEY)))


def test_k_and_scale_per_tensor() -> None:
    x = sample(np.float64)
    c = build("topk")
    y = c.decode(c.encode(x, KEY))
    for s in LAYOUT:  # k_t = max(1, round(0.1 d_t)) of every tensor, from its own entries
        if s.size:
            assert np.count_nonzero(y[s.offset:s.stop]) == max(1, round(0.1 * s.size))
    q = build("scaled_sign").decode(build("scaled_sign").encode(x))
    for s in LAYOUT:  # one scale per tensor: ||x_t||_1 / d_t
        if s.size:
            assert np.abs(q[s.offset:s.stop]) == pytest.approx(
                np.mean(np.abs(x[s.offset:s.stop])), rel=1e-6)


def test_constants_are_per_tensor() -> None:
    d = LAYOUT.d
    sizes = [n for n in LAYOUT.sizes if n]
    assert build("topk").alpha(d) == min(max(1, round(0.1 * n)) / n for n in sizes)
    assert build("topk_k1").alpha(d) == 1 / 70_000
    assert build("randk_unscaled").alpha(d) == min(max(1, round(0.2 * n)) / n for n in sizes)
    assert build("randk").omega(d) == max(n / max(1, round(0.1 * n)) - 1 for n in sizes)
    assert build("qsgd").omega(d) == max(QSGD(5).omega(n) for n in sizes)
    assert build("scaled_sign").alpha(d) == 1 / 70_000
    sq = build("scaled_qsgd")
    assert sq.alpha(d) == min(1 / (QSGD(2).omega(n) + 1) for n in sizes)
    for name in IDS:
        c = build(name)
        assert c.is_unbiased == c.inner.is_unbiased and c.is_random == c.inner.is_random
    with pytest.raises(ConfigError, match="per_tensor = true"):
        build("qsgd").alpha(d)  # unbiased: the hint names the per-tensor scaled table
    with pytest.raises(ConfigError, match="not contractive"):
        build("sign").alpha(d)


def test_unbound_use_names_the_fix() -> None:
    c = make_compressor({"kind": "topk", "ratio": 0.1, "per_tensor": True})
    x = np.ones(10)
    for call in (lambda: c.encode(x), lambda: c.reference(x), lambda: c.payload_bytes(10),
                 lambda: c.alpha(10), lambda: c.check(10),
                 lambda: c.decode(np.zeros(16, np.uint8))):
        with pytest.raises(UsageError, match=r"bind\(layout\)"):
            call()
    with pytest.raises(UsageError, match="Layout"):
        c.bind(None)  # type: ignore[arg-type]
    assert bind_layout(c, None) is c and bind_layout(TopK(k=1), LAYOUT).k == 1
    b = bind_layout(c, LAYOUT)
    assert b.bound and b == build("topk") and b.bind(LAYOUT) is b
    with pytest.raises(ConfigError, match="d = 70"):
        b.encode(np.ones(10))


def test_config_tables() -> None:
    assert isinstance(make_compressor({"kind": "identity", "per_tensor": True}), Identity)
    assert not isinstance(make_compressor({"kind": "topk", "k": 1, "per_tensor": False}),
                          PerTensor)
    with pytest.raises(ConfigError, match="per_tensor"):
        make_compressor({"kind": "topk", "k": 1, "per_tensor": "yes"})
    with pytest.raises(ConfigError, match="per_tensor on the scaled table"):
        make_compressor({"kind": "scaled", "inner": {"kind": "qsgd", "levels": 2,
                                                     "per_tensor": True}})
    with pytest.raises(ConfigError, match="fc1.bias"):  # k = 20 > 16 entries of fc1.bias
        make_compressor({"kind": "topk", "k": 20, "per_tensor": True}).bind(LAYOUT)
    with pytest.raises(ConfigError, match="already"):
        PerTensor(build("topk"))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["randk", "qsgd", "natural"])
def test_randomness_is_keyed_and_independent_across_tensors(name: str) -> None:
    two = Layout.from_shapes([("a", (500,)), ("b", (500,))])
    c = build(name, two)
    x = np.tile(np.random.default_rng(0).standard_normal(500), 2)
    p = c.encode(x, KEY)
    assert np.array_equal(p, c.encode(x, KEY))
    assert not np.array_equal(p, c.encode(x, (7, 2, 3)))
    y = c.decode(p)
    assert not np.array_equal(y[:500], y[500:])  # equal tensors, different draws
    with pytest.raises(ConfigError, match="key"):
        c.encode(x, None)


@pytest.mark.parametrize("name", ["topk", "qsgd", "scaled_sign"])
def test_damaged_payload_refused(name: str) -> None:
    c = build(name)
    x = sample(np.float32)
    p = c.encode(x, KEY)
    for cut in (p[:-1], p[:HEADER_BYTES], p[:3], np.concatenate([p, p[-8:]])):
        with pytest.raises(PayloadError):
            c.decode(cut)
    for byte, value in ((0, 0x00), (1, c.inner.kind), (4, 3)):  # magic, flat kind, count
        bad = p.copy()
        bad[byte] = value
        with pytest.raises(PayloadError):
            c.decode(bad)
    with pytest.raises(PayloadError, match="length"):
        c.decode_add(p, np.zeros(LAYOUT.d + 1, dtype=np.float32))
    other = build(name, Layout.from_shapes([("a", (LAYOUT.d - 1,)), ("b", (1,))]))
    with pytest.raises(PayloadError):
        other.decode(p)  # same d, another layout
    with pytest.raises(FloatingPointError, match="non-finite"):
        c.encode(np.where(np.arange(LAYOUT.d) == 150, np.nan, x), KEY)


@pytest.mark.parametrize("name", ["topk", "topk_f16", "randk", "randk_unscaled", "qsgd"])
@pytest.mark.parametrize("timed", [False, True])
def test_downlink_sum_of_per_tensor_payloads(name: str, timed: bool) -> None:
    """The master's sum of n per-tensor payloads equals the sum of their decodes; Top-k and
    Rand-k are read sparsely (global ascending indices), the others densely."""
    c = build(name)
    codec: Any = TimedCodec(c, Stopwatch()) if timed else c
    n, dtype = 3, np.float64
    xs = [sample(dtype, seed) for seed in range(n)]
    payloads = [c.encode(x, (7, i, 3)) for i, x in enumerate(xs)]
    want = np.zeros(LAYOUT.d, dtype=dtype)
    for p in payloads:
        c.decode_add(p, want)
    parts = sparse_parts(codec, payloads[0], LAYOUT.d)
    if isinstance(c.inner, (TopK, RandK)):
        assert parts is not None
        vals, idx = parts
        assert np.all(np.diff(idx.astype(np.int64)) > 0)
        rebuilt = np.zeros(LAYOUT.d)
        rebuilt[idx] = vals
        assert bits_equal(rebuilt, c.decode(payloads[0]).astype(dtype))
    else:
        assert parts is None
    enc = SumEncoder(LAYOUT.d, dtype)
    down = enc.encode(codec, payloads)
    got = np.zeros(LAYOUT.d, dtype=dtype)
    SumDecoder(1).apply(down, got, 1.0)
    assert bits_equal(got, want)


def test_compressor_type_is_kept() -> None:
    assert isinstance(build("topk"), Compressor)
    assert {build(n).kind for n in IDS} >= {PER_TENSOR | k for k in range(1, 7)}


def test_bind_attributes_copies_never_mutates() -> None:
    from decomp.algorithms.ef21 import EF21
    from decomp.compress import bind_attributes

    recipe = make_compressor({"kind": "topk", "ratio": 0.1, "per_tensor": True})
    alg = EF21(recipe)
    bound = bind_attributes(alg, LAYOUT)
    assert bound is not alg and alg.compressor is recipe
    assert bound.compressor == build("topk") and type(bound) is EF21
    assert bind_attributes(bound, LAYOUT) is bound and bind_attributes(alg, None) is alg
    flat = EF21(TopK(k=1))
    assert bind_attributes(flat, LAYOUT) is flat


def test_downlink_size_model_counts_per_tensor_entries() -> None:
    """The cost model's sparse count mirrors sparse_parts: Σ_t k_t for per-tensor Top-k and
    Rand-k, dense (None) for what the master sums densely; one payload's sum has exactly the
    predicted size."""
    from decomp.compress import Scaled
    from decomp.compress.aggregate import sparse_count, sum_payload_bytes

    k_sum = sum(max(1, round(0.1 * n)) for n in LAYOUT.sizes if n)
    assert sparse_count(build("topk"), LAYOUT.d) == k_sum
    assert sparse_count(TimedCodec(build("randk"), Stopwatch()), LAYOUT.d) == k_sum
    assert sparse_count(build("qsgd"), LAYOUT.d) is None
    assert sparse_count(Scaled(RandK(k=3)), 100) is None  # decoded densely by the master
    assert sparse_count(TopK(k=3), 100) == 3
    c = build("topk")
    down = SumEncoder(LAYOUT.d, np.float64).encode(c, [c.encode(sample(np.float64), KEY)])
    assert down.size == sum_payload_bytes(c, LAYOUT.d, 1)


@pytest.mark.parametrize("name", ["topk", "randk", "qsgd", "sign"])
def test_encode_parts_in_any_order_writes_the_bytes_of_encode(name: str) -> None:
    """Overlap with backward encodes a bucket's tensors at a time, last tensors first
    (decomp.torch.overlap_compressed): the same payload, byte for byte, same seeds."""
    C = build(name)
    x = np.random.default_rng(3).standard_normal(LAYOUT.d).astype(np.float32)
    key = (7, 1, 4)
    want = C.encode(x, key)
    got = np.full(C.payload_bytes(LAYOUT.d, x.dtype), 0, np.uint8)
    spans = [(5, 6), (4, 4), (2, 3), (0, 1)]  # slot ranges, reverse order; 3 is empty
    ends = []
    for lo, hi in spans:
        first, stop = C.part_span(lo, hi)
        a, b = C.part_bytes(first, stop, x.dtype)
        C.encode_parts(x, key, got, first, stop)
        ends.append((a, b))
    # the spans tile the payload after the 16-byte header
    s = sorted(ends)
    assert s[0][0] == 16 and s[-1][1] == got.size
    assert all(s[i][1] == s[i + 1][0] for i in range(len(s) - 1))
    C.write_payload_header(got, x.dtype)
    assert np.array_equal(got, want)
    assert C.part_span(3, 3) == (3, 3)  # the empty tensor has no part
