"""Independent oracles for every compressor: expected outputs written from the papers'
definitions, not from decomp's code.

Each compressor's ``reference`` is a twin of its kernel (same draws, same lane order), so
round-trip tests prove kernel = spec. The tests here prove spec = paper:

* the draws themselves come from SplitMix64 and the key derivation written out below from their
  published definitions (pure Python integers), so a fixed key gives known uniforms u_j;
* with those u_j, the expected output of each compressor is computed in exact rational
  arithmetic from the paper's definition (Top-k: the k largest magnitudes; Rand-k: (d/k)·x on a
  uniform k-subset; QSGD: Alistarh et al. 2017's stochastic rounding of s|x_j|/‖x‖ to a level;
  natural compression: Horváth et al. 2019's rounding to a neighbouring power of two; sign and
  scaled sign; Scaled(C) = C/(ω+1)) and compared with ``decode(encode(x, key))`` bit for bit;
* where the output distribution can be enumerated (QSGD and natural compression on 3-element
  vectors) its exact expectation and variance are computed with fractions (E C(x) = x, the
  variance against ω), and the empirical frequencies of the outcomes over many keys are checked
  against the enumerated probabilities;
* the float16 / bfloat16 wire rounding is checked against an exact round-to-nearest-even written
  with fractions and against torch's conversions.

A compressor's documented coupling of draws to events (which u_j means "round up") is part of
the wire spec (docs/compressors.md, "Randomness"), so it is used here; every probability is
the paper's.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from decomp.compress import (
    QSGD,
    Identity,
    Natural,
    RandK,
    Scaled,
    ScaledSign,
    Sign,
    TopK,
)
from decomp.compress._rng import derive_seed

MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------------
# Draws, from their definitions
# --------------------------------------------------------------------------------------------
def splitmix64(seed: int, i: int) -> int:
    """The (i+1)-th output of SplitMix64 (Steele, Lea, Flood 2014) started at ``seed``."""
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def stream_seed(key: tuple[int, int, int]) -> int:
    """The documented key derivation: first 64-bit output of PCG64 over
    SeedSequence([seed, rank, step, 3]) (3 = the COMPRESS purpose)."""
    bg = np.random.PCG64(np.random.SeedSequence([*key, 3]))
    return int(bg.random_raw())


def u32(seed: int, j: int) -> int:
    """Entry j's 32-bit uniform: low half of draw j // 2 for even j, high half for odd j."""
    h = splitmix64(seed, j // 2)
    return (h >> 32) if j % 2 else (h & 0xFFFFFFFF)


def test_draws_follow_their_definitions() -> None:
    # published first output of SplitMix64 from seed 0 (the generator's reference vectors)
    assert splitmix64(0, 0) == 0xE220A8397B1DCDAF
    for key in [(0, 0, 0), (7, 3, 11), (2**31, 5, 1)]:
        assert derive_seed(key) == stream_seed(key)
    assert stream_seed((1, 0, 0)) != stream_seed((1, 0, 1)) != stream_seed((1, 1, 0))


# --------------------------------------------------------------------------------------------
# Exact rounding to binary floating-point formats (round to nearest, ties to even)
# --------------------------------------------------------------------------------------------
def round_rne(v: Fraction, p: int, emin: int, emax: int) -> Fraction | None:
    """v rounded to the binary format with p significand bits (implicit bit included),
    minimum normal exponent emin and maximum exponent emax; None for an overflow to inf."""
    if v == 0:
        return Fraction(0)
    sign = -1 if v < 0 else 1
    a = abs(v)
    e = math.floor(math.log2(a.numerator) - math.log2(a.denominator))
    while Fraction(2) ** e > a:  # exact floor(log2 a)
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    q = Fraction(2) ** (max(e, emin) - (p - 1))  # spacing of the format at a
    n, rem = divmod(a, q)
    if rem * 2 > q or (rem * 2 == q and n % 2 == 1):
        n += 1
    r = n * q
    if r >= Fraction(2) ** (emax + 1):
        return None
    return sign * r


FORMATS = {"float16": (11, -14, 15), "bfloat16": (8, -126, 127), "float32": (24, -126, 127)}


def exact(x: float) -> Fraction:
    return Fraction(float(x))


def wire_round(x: float, fmt: str) -> float:
    r = round_rne(exact(x), *FORMATS[fmt])
    assert r is not None
    return float(r)


def test_exact_rounding_oracle_on_known_values() -> None:
    """The oracle itself, on values whose rounding is known by hand."""
    assert wire_round(1 + 2.0**-11, "float16") == 1.0  # tie -> even
    assert wire_round(1 + 3 * 2.0**-11, "float16") == 1 + 2.0**-9  # tie -> even (up)
    assert wire_round(65519.0, "float16") == 65504.0
    assert round_rne(Fraction(65520), *FORMATS["float16"]) is None  # rounds to inf
    assert wire_round(2.0**-25, "float16") == 0.0  # half the smallest subnormal: tie -> 0
    assert wire_round(3 * 2.0**-26, "float16") == 2.0**-24
    assert wire_round(1 + 2.0**-8, "bfloat16") == 1.0
    assert wire_round(1 + 2.0**-8 + 2.0**-30, "bfloat16") == 1 + 2.0**-7  # no double rounding
    assert wire_round(0.1, "float32") == float(np.float32(0.1))


# --------------------------------------------------------------------------------------------
# Identity: exact on its own dtype, a rounding on a 16-bit wire
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identity_sends_the_exact_bits(dtype: type) -> None:
    """C(x) = x: the payload body is x's bytes and decode returns the same values, bit for bit
    for the nonzero ones (subnormals, the largest finite value): no rounding on its own dtype."""
    fi = np.finfo(dtype)
    x = np.array([0.0, -0.0, fi.smallest_subnormal, -fi.smallest_subnormal, fi.tiny, fi.max,
                  -fi.max, 1.0 / 3.0, -np.pi], dtype=dtype)
    for c in (Identity(), Scaled(Identity())):  # Scaled(Identity): omega = 0, lambda = 1
        p = c.encode(x)
        assert p.size == 16 + x.nbytes and bytes(p[16:]) == x.tobytes()
        y = c.decode(p)  # decode adds into zeros: -0.0 arrives as +0.0 (the same value)
        nz = x != 0
        assert y.dtype == dtype and np.array_equal(y, x)
        assert y[nz].tobytes() == x[nz].tobytes()


def _wire_cases(n: int = 4000) -> np.ndarray:
    """float32 values that stress a 16-bit rounding: random bit patterns over the exponents
    of both formats, exact ties (half-way patterns), values next to ties, subnormals."""
    rng = np.random.default_rng(17)
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    exp = rng.integers(100, 143, n).astype(np.uint32)  # |x| in about [2^-27, 2^15]
    bits = (bits & np.uint32(0x807FFFFF)) | (exp << np.uint32(23))
    ties = (bits & np.uint32(0xFFFF0000)) | np.uint32(0x8000)  # bf16 ties
    ties16 = (bits & np.uint32(0xFFFFE000)) | np.uint32(0x1000)  # f16 ties (normal range)
    x = np.concatenate([bits, ties, ties + np.uint32(1), ties - np.uint32(1), ties16]
                       ).view(np.float32)
    return np.concatenate([x, np.float32([0.0, -0.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26,
                                          65504.0, 65519.0, -65519.0, 2.0**-133, 1e-40])])


@pytest.mark.parametrize("fmt,tdtype", [("float16", torch.float16),
                                        ("bfloat16", torch.bfloat16)])
def test_16bit_wire_rounding_matches_torch_and_exact_rne_float32_input(fmt: str,
                                                                       tdtype) -> None:
    x = _wire_cases()
    if fmt == "float16":
        x = x[np.abs(x) < 65520]  # beyond: refused (tested below)
    y = Identity(value_dtype=fmt)(x)
    t = torch.from_numpy(x).to(tdtype).to(torch.float32).numpy()
    nz = t != 0  # (a value that rounds to zero arrives as +0.0: decode adds into zeros)
    assert np.array_equal(y, t) and np.array_equal(y[nz].view(np.uint32), t[nz].view(np.uint32))
    sample = np.random.default_rng(0).choice(x.size, 600, replace=False)
    for i in sample:
        assert float(y[i]) == wire_round(float(x[i]), fmt), (fmt, float(x[i]))
    # the same rounding inside Top-k's value section
    k = 50
    z = TopK(k=k, value_dtype=fmt)(x[:400])
    kept = np.flatnonzero(z)
    assert all(float(z[i]) == wire_round(float(x[i]), fmt) for i in kept)


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_16bit_wire_rounding_of_float64_input_is_one_rounding(fmt: str) -> None:
    """A float64 value goes to the 16-bit wire with one round-to-nearest-even (rounding to
    float32 first can land on a tie and round the wrong way: 1 + 2^-8 + 2^-30 is above the
    bfloat16 half-way point 1 + 2^-8, so it rounds up)."""
    x = np.array([1 + 2.0**-8 + 2.0**-30, 1 + 2.0**-11 + 2.0**-40, -(3 + 2.0**-7 + 2.0**-35),
                  0.1, 1 / 3])
    y = Identity(value_dtype=fmt)(x)
    want = [wire_round(v, fmt) for v in x]
    assert np.array_equal(y, want), (y, want)


def test_float16_wire_refuses_what_rounds_to_inf() -> None:
    c = Identity(value_dtype="float16")
    assert np.array_equal(c(np.float32([65519.0, -65519.0])), [65504.0, -65504.0])
    for v in (65520.0, -70000.0):
        with pytest.raises(FloatingPointError):
            c.encode(np.float32([1.0, v]))


# --------------------------------------------------------------------------------------------
# Top-k
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_hand_computed(dtype: type) -> None:
    """C(x) keeps the k largest |x_j|; ties go to the lowest index."""
    x = np.array([3.0, -5.0, 1.0, 5.0, -2.0, 0.5], dtype=dtype)
    assert TopK(k=1)(x).tolist() == [0, -5, 0, 0, 0, 0]
    assert TopK(k=2)(x).tolist() == [0, -5, 0, 5, 0, 0]
    assert TopK(k=3)(x).tolist() == [3, -5, 0, 5, 0, 0]
    assert TopK(k=6)(x).tolist() == x.tolist()
    assert TopK(k=2)(np.array([1.0, -1.0, 1.0, -1.0], dtype=dtype)).tolist() == [1, -1, 0, 0]
    assert TopK(k=2)(np.array([-1.0, 0.0, 2.0, 1.0], dtype=dtype)).tolist() == [-1, 0, 2, 0]
    tiny = np.array([-0.0, np.finfo(dtype).smallest_subnormal, 0.0, -0.0], dtype=dtype)
    assert TopK(k=1)(tiny)[1] == tiny[1] and np.count_nonzero(TopK(k=1)(tiny)) == 1
    # ratio: k = max(1, round(ratio * d))
    assert np.count_nonzero(TopK(ratio=0.5)(x)) == 3
    assert np.count_nonzero(TopK(ratio=0.01)(x)) == 1
    p = TopK(k=2).encode(x)
    assert p.size == 16 + 2 * (np.dtype(dtype).itemsize + 2)


# --------------------------------------------------------------------------------------------
# Rand-k
# --------------------------------------------------------------------------------------------
def randk_subset(seed: int, d: int, k: int) -> list[int]:
    """The documented selection: candidates floor(h_i d / 2^64) in stream order, the first
    m = min(k, d - k) distinct ones; the complement when m < k."""
    m = min(k, d - k)
    kept: list[int] = []
    i = 0
    while len(kept) < m:
        c = (splitmix64(seed, i) * d) >> 64
        if c not in kept:
            kept.append(c)
        i += 1
    return sorted(kept) if m == k else sorted(set(range(d)) - set(kept))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d,k", [(8, 2), (10, 3), (10, 7), (5, 5)])
def test_randk_fixed_draws(dtype: type, d: int, k: int) -> None:
    """Scaled Rand-k: x_j · d/k on the drawn subset (d/k rounded to the input dtype), 0
    elsewhere; unscaled: x_j. The receiver needs only the seed in the payload."""
    x = (np.arange(1, d + 1) * np.array([1, -1] * d)[:d] * 0.75).astype(dtype)
    for step in range(5):
        key = (3, 1, step)
        S = randk_subset(stream_seed(key), d, k)
        factor = dtype(d / k)
        want = np.zeros(d, dtype=dtype)
        want[S] = x[S] * factor
        assert np.array_equal(RandK(k=k)(x, key), want)
        want[S] = x[S]
        assert np.array_equal(RandK(k=k, scaled=False)(x, key), want)
        assert RandK(k=k).indices(RandK(k=k).encode(x, key)).tolist() == S


def test_randk_subsets_are_uniform() -> None:
    """All C(5, 2) = 10 subsets (and their complements, k = 3) come up with probability 1/10:
    chi-square over 6000 keys, against the 99.99 % point of chi-square(9) (33.7)."""
    d, n = 5, 6000
    for k in (2, 3):
        c = RandK(k=k, scaled=False)
        counts: dict[tuple[int, ...], int] = {}
        for i in range(n):
            s = tuple(int(j) for j in c.indices(c.encode(np.ones(d), (9, 0, i))))
            counts[s] = counts.get(s, 0) + 1
        assert set(counts) == set(itertools.combinations(range(d), k))
        chi2 = sum((v - n / 10) ** 2 / (n / 10) for v in counts.values())
        assert chi2 < 33.7, (k, chi2, counts)


# --------------------------------------------------------------------------------------------
# QSGD: the full output distribution on a 3-element vector
# --------------------------------------------------------------------------------------------
QX = np.array([3.0, -4.0, 12.0])  # ||x|| = 13, exactly representable in float32


def qsgd_distribution(x: np.ndarray, s: int) -> dict[tuple[Fraction, ...], Fraction]:
    """{output vector: probability} of QSGD with s levels (Alistarh et al. 2017, eq. (3)):
    C(x)_j = ||x|| sign(x_j) ξ_j / s, ξ_j = l + 1 with probability r - l, else l, where
    r = s|x_j|/||x||, l = floor(r); entries independent."""
    N = Fraction(13)
    per = []
    for v in x:
        r = s * abs(exact(v)) / N
        lo = math.floor(r)
        sg = 1 if v >= 0 else -1
        opts = [(sg * N * lo / s, 1 - (r - lo))]
        if r != lo:
            opts.append((sg * N * (lo + 1) / s, r - lo))
        per.append(opts)
    dist: dict[tuple[Fraction, ...], Fraction] = {}
    for combo in itertools.product(*per):
        vec = tuple(v for v, _ in combo)
        dist[vec] = dist.get(vec, Fraction(0)) + math.prod(p for _, p in combo)
    return dist


@pytest.mark.parametrize("s", [1, 4, 16])
def test_qsgd_exact_distribution_unbiased_and_within_omega(s: int) -> None:
    dist = qsgd_distribution(QX, s)
    assert sum(dist.values()) == 1
    mean = [sum(p * v[j] for v, p in dist.items()) for j in range(3)]
    assert mean == [exact(v) for v in QX]  # E C(x) = x, exactly
    var = sum(p * sum((v[j] - exact(QX[j])) ** 2 for j in range(3)) for v, p in dist.items())
    nx2 = sum(exact(v) ** 2 for v in QX)
    om = QSGD(s).omega(3)
    assert om == min(3 / s**2, math.sqrt(3) / s)
    assert var <= Fraction(om) * nx2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("s", [1, 4, 16])
def test_qsgd_fixed_draws(dtype: type, s: int) -> None:
    """With the draws u_j known, entry j rounds up iff frac(r_j) + u_j 2^-32 >= 1 (probability
    frac(r_j)), and the output is ±N ξ_j / s with the wire norm N = 13."""
    x = QX.astype(dtype)
    for step in range(40):
        key = (5, 2, step)
        seed = stream_seed(key)
        want = []
        for j, v in enumerate(x):
            r = s * abs(exact(v)) / 13
            lo = math.floor(r)
            xi = lo + (1 if (r - lo) + Fraction(u32(seed, j), 2**32) >= 1 else 0)
            want.append(float(np.sign(v)) * 13 * xi / s if xi else 0.0)
        y = QSGD(s)(x, key)
        assert y.dtype == dtype
        assert np.array_equal(y, np.array(want, dtype=dtype)), (step, y, want)
        assert float(QSGD(s).encode(x, key)[16:20].view(np.float32)[0]) == 13.0


@pytest.mark.parametrize("s", [1, 4])
def test_qsgd_outcome_frequencies_match_the_distribution(s: int) -> None:
    """Over 4000 keys every output is in the enumerated support and each outcome's frequency
    is within 4.5 binomial standard errors of its probability."""
    dist = qsgd_distribution(QX, s)
    n = 4000
    c = QSGD(s)
    counts = dict.fromkeys(dist, 0)
    for i in range(n):
        y = tuple(exact(v) for v in c(QX, (8, 0, i)))
        assert y in counts, y
        counts[y] += 1
    for vec, p in dist.items():
        sd = math.sqrt(float(p * (1 - p)) / n)
        assert abs(counts[vec] / n - float(p)) <= 4.5 * sd + 1e-12, (vec, counts[vec], p)


# --------------------------------------------------------------------------------------------
# Natural compression
# --------------------------------------------------------------------------------------------
NX = np.array([1.25, -3.0, 0.3125])  # P(up) = 1/4, 1/2, 1/4


def natural_options(v: float) -> list[tuple[Fraction, Fraction]]:
    """[(value, probability)]: for 2^e <= |v| < 2^(e+1), sign·2^e with probability
    2 - |v|/2^e, sign·2^(e+1) otherwise (Horváth et al. 2019, Definition 1)."""
    a = abs(exact(v))
    if a == 0:
        return [(Fraction(0), Fraction(1))]
    e = math.floor(math.log2(a))
    lo = Fraction(2) ** e
    sg = 1 if v > 0 else -1
    p_up = a / lo - 1
    opts = [(sg * lo, 1 - p_up)]
    if p_up:
        opts.append((sg * 2 * lo, p_up))
    return opts


def test_natural_exact_distribution_and_omega() -> None:
    per = [natural_options(v) for v in NX]
    dist = {tuple(v for v, _ in c): math.prod(p for _, p in c) for c in itertools.product(*per)}
    assert len(dist) == 8 and sum(dist.values()) == 1
    assert [sum(p * v[j] for v, p in dist.items()) for j in range(3)] == [exact(v) for v in NX]
    # per entry, Var / x_j^2 = (2 - t)(t - 1)/t^2 for |x_j| = t 2^e: at most 1/8 (t = 4/3)
    for v in NX:
        var = sum(p * (w - exact(v)) ** 2 for w, p in natural_options(v))
        assert var <= Fraction(1, 8) * exact(v) ** 2
    t = Fraction(4, 3)
    assert (2 - t) * (t - 1) / t**2 == Fraction(1, 8) == Fraction(Natural().omega(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_natural_fixed_draws(dtype: type) -> None:
    """With u_j known, entry j rounds up iff u_j < P(up) · 2^32."""
    x = np.concatenate([NX, [0.0, -2.0, 1.0 + 2.0**-20, -(2.0**100) * 1.75]]).astype(dtype)
    for step in range(40):
        key = (4, 0, step)
        seed = stream_seed(key)
        want = []
        for j, v in enumerate(x):
            opts = natural_options(float(v))
            up = len(opts) == 2 and u32(seed, j) < opts[1][1] * 2**32
            want.append(float(opts[1][0] if up else opts[0][0]))
        y = Natural()(x, key)
        assert np.array_equal(y, np.array(want, dtype=dtype)), (step, y, want)


def test_natural_outcome_frequencies_match_the_distribution() -> None:
    per = [natural_options(v) for v in NX]
    dist = {tuple(v for v, _ in c): math.prod(p for _, p in c) for c in itertools.product(*per)}
    n = 4000
    counts = dict.fromkeys(dist, 0)
    for i in range(n):
        y = tuple(exact(v) for v in Natural()(NX, (6, 1, i)))
        counts[y] += 1  # KeyError = an output outside the support
    for vec, p in dist.items():
        sd = math.sqrt(float(p * (1 - p)) / n)
        assert abs(counts[vec] / n - float(p)) <= 4.5 * sd, (vec, counts[vec], p)


# --------------------------------------------------------------------------------------------
# Sign, scaled sign, Scaled(C)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_and_scaled_sign_hand_computed(dtype: type) -> None:
    x = np.array([0.5, -2.0, 0.0, -0.0, -np.finfo(dtype).smallest_subnormal], dtype=dtype)
    assert Sign()(x).tolist() == [1, -1, 1, 1, -1]  # sign(0) = +1, for -0.0 too
    assert Sign().encode(x).size == 16 + 1
    y = ScaledSign()(np.array([1.0, -2.0, 3.0, -4.0], dtype=dtype))
    assert y.tolist() == [2.5, -2.5, 2.5, -2.5]  # ||x||_1 / d = 10/4
    # the scale is ||x||_1 / d rounded once to the nearest float32 (its wire format)
    x = np.array([0.1, 0.2, -0.3, 1 / 3, -2.0 / 7], dtype=dtype)
    scale = wire_round(float(sum(abs(exact(v)) for v in x) / 5), "float32")
    assert ScaledSign()(x).tolist() == [scale, scale, -scale, scale, -scale]


def test_scaled_is_inner_over_omega_plus_one_hand_computed() -> None:
    """Scaled(Rand-2) on d = 8: ω = 3, λ = 1/4: (d/k)·λ = 1, i.e. x_j on the subset;
    Scaled(QSGD(1)) on d = 3: ω = min(3, √3) = √3; Scaled(Natural): λ = 8/9."""
    x = np.array([1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0])
    key = (2, 0, 3)
    S = randk_subset(stream_seed(key), 8, 2)
    want = np.zeros(8)
    want[S] = x[S]
    assert np.array_equal(Scaled(RandK(k=2))(x, key), want)
    assert Scaled(RandK(k=2)).alpha(8) == 0.25
    lam = 1 / (1 + math.sqrt(3))
    assert np.array_equal(Scaled(QSGD(1))(QX, key), QSGD(1)(QX, key) * lam)
    assert Scaled(QSGD(1)).alpha(3) == pytest.approx(lam, rel=1e-15)
    assert np.array_equal(Scaled(Natural())(NX, key), Natural()(NX, key) * (8 / 9))
    assert Scaled(Natural()).alpha(3) == pytest.approx(8 / 9, rel=1e-15)
