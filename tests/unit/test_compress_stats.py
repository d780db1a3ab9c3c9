"""Statistical properties of the compressors, with tests that bite, and the paper identities
built on them.

Unbiasedness, per coordinate: a vector x0 of d0 entries is tiled T times (every copy of entry g
is an independent draw of C(x)_g for Natural and QSGD, a negatively correlated one for Rand-k,
which only makes the standard error below conservative) and compressed with R keys, giving
N = R·T draws per entry. Entry g's mean m_g must lie within Z = 4.5 standard errors of x_g
(two-sided; P(|N(0,1)| > 4.5) = 6.8e-6 per entry, so a correct compressor passes; the keys are
fixed, so the tests are deterministic). Each case also asserts its own power: for every entry
with a random output, 0.02·|x_g| >= (Z + 2)·se_g, i.e. a 2 % bias puts the mean at least 6.5
standard errors away and is rejected with probability >= 97.7 % per entry (in practice every
entry of a multiplicative bias). ``test_a_2_percent_bias_is_rejected`` runs the same check on
compressors made 2 % biased and shows that it fails.

Variance, two-sided: E‖C(x) − x‖² is computed exactly from the definition (Rand-k:
(d/k − 1)‖x‖²; QSGD: (N/s)² Σ_j p_j(1 − p_j), p_j the fractional part of s|x_j|/N; natural
compression: Σ_j (2^(e_j+1) − |x_j|)(|x_j| − 2^e_j)); the empirical mean of ‖C(x) − x‖² over the R
calls must be within Z standard errors of it, above and below, and the exact value must be
<= ω(d)‖x‖². Where the bound is attained (Rand-k always; natural compression at |x_j| = (4/3)·2^e)
the empirical value must equal ω‖x‖² within Z standard errors, so an ω that is too large fails
as well as one that is too small. QSGD is tested at s = 1, 4, 16 and 127.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from decomp.compress import (
    QSGD,
    Compressor,
    Identity,
    Natural,
    RandK,
    Scaled,
    ScaledSign,
    TopK,
)

Z = 4.5  # two-sided rejection threshold, in standard errors
POWER = Z + 2.0  # a 2 % bias must sit at least this many standard errors away
BIAS = 0.02

Draw = Callable[[np.ndarray, int], np.ndarray]


def draw_of(c: Compressor, seed: int = 11) -> Draw:
    """C(x) with key (seed, 0, i) for call i, through the wire (decode(encode))."""
    return lambda x, i: c.decode(c.encode(x, (seed, 0, i)))


class Sample(NamedTuple):
    x0: np.ndarray  # (d0,) the entries
    mean: np.ndarray  # (d0,) mean of the N = R·T draws of each entry
    se: np.ndarray  # (d0,) its standard error
    sq: np.ndarray  # (R,) ||C(x) - x||^2 of each call, x = tile(x0, T)
    x: np.ndarray  # the tiled vector


def sample(draw: Draw, x0: np.ndarray, T: int, R: int) -> Sample:
    x = np.tile(x0, T)
    xf = x.astype(np.float64)
    s1 = np.zeros(x.size)
    s2 = np.zeros(x.size)
    sq = np.empty(R)
    for i in range(R):
        y = draw(x, i).astype(np.float64)
        s1 += y
        s2 += y * y
        sq[i] = float(np.sum((y - xf) ** 2))
    n = R * T
    mean = s1.reshape(T, -1).sum(axis=0) / n
    var = np.maximum(s2.reshape(T, -1).sum(axis=0) / n - mean**2, 0.0) * n / (n - 1)
    return Sample(x0.astype(np.float64), mean, np.sqrt(var / n), sq, x)


def z_scores(s: Sample) -> np.ndarray:
    """|m_g - x_g| / se_g; an entry without spread must equal x_g exactly (else inf)."""
    dev = np.abs(s.mean - s.x0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = dev / s.se
    return np.where(s.se > 0, z, np.where(dev == 0, 0.0, np.inf))


def assert_unbiased(s: Sample) -> None:
    z = z_scores(s)
    assert z.max() <= Z, f"entry {int(z.argmax())} is {z.max():.2f} standard errors off"


def assert_power(s: Sample) -> None:
    random = s.se > 0
    assert random.any()
    worst = float(np.min(BIAS * np.abs(s.x0[random]) / s.se[random]))
    assert worst >= POWER, f"too few draws: a 2 % bias is only {worst:.2f} standard errors"


def assert_two_sided(s: Sample, expected: float, what: str) -> None:
    se = float(s.sq.std(ddof=1) / np.sqrt(s.sq.size))
    emp = float(s.sq.mean())
    assert abs(emp - expected) <= Z * se + 1e-12 * expected, (what, emp, expected, se)


# exact E||C(x) - x||^2 from each definition -------------------------------------------------
def randk_variance(c: RandK, x: np.ndarray) -> float:
    d = x.size
    k = c.k_for(d)
    f = float(x.dtype.type(d / k))  # the factor d/k as sent (rounded to the input dtype)
    return float(np.sum(x.astype(np.float64) ** 2)) * (f * f * k / d - 2 * f * k / d + 1)


def qsgd_variance(c: QSGD, x: np.ndarray) -> float:
    N = float(c.encode(x, (0, 0, 0))[16:20].view(np.float32)[0])  # the wire norm
    r = c.levels * np.abs(x.astype(np.float64)) / N
    p = r - np.floor(r)
    return float((N / c.levels) ** 2 * np.sum(p * (1 - p)))


def natural_variance(x: np.ndarray) -> float:
    a = np.abs(x.astype(np.float64))
    a = a[a > 0]
    lo = np.exp2(np.floor(np.log2(a)))
    return float(np.sum((2 * lo - a) * (a - lo)))


def draws(c: Compressor, x: np.ndarray, n: int, seed: int = 11) -> np.ndarray:
    """(n, d) float64 array of decode(encode(x, key_i)), key_i = (seed, 0, i)."""
    return np.stack([draw_of(c, seed)(x, i).astype(np.float64) for i in range(n)])


def make_vector(d: int = 40, dtype: type = np.float64) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(d) * 10.0 ** rng.uniform(-2, 2, d)
    x[::7] = 0.0
    return x.astype(dtype)


X8 = np.array([1.0, -2.0, 3.0, 0.0, -1.5, 2.5, 0.75, -3.5])
X4 = np.array([1.0, -2.0, 0.0, 1.5])
XN = np.array([1.25, -3.0, 0.3125, 0.0, 1.75, -6.5, 0.9, -1e-3, 2.0, 1e5 / 3])

#: name -> (compressor, x0, T copies, R calls, exact variance)
CASES: dict[str, tuple[Compressor, np.ndarray, int, int, Callable[[np.ndarray], float]]] = {
    # k = round(D/3): d/k = 3.0001 (not a power of two); omega ~ 2
    "randk": (RandK(k=10923), X8, 4096, 56, lambda x: randk_variance(RandK(k=10923), x)),
    "natural": (Natural(), XN, 4096, 8, natural_variance),
    "natural-f32": (Natural(), XN.astype(np.float32), 4096, 8, natural_variance),
    "qsgd1": (QSGD(1), X4, 4096, 4500, lambda x: qsgd_variance(QSGD(1), x)),
    "qsgd4": (QSGD(4), X4, 1024, 2300, lambda x: qsgd_variance(QSGD(4), x)),
    "qsgd16": (QSGD(16), X4, 64, 700, lambda x: qsgd_variance(QSGD(16), x)),
    "qsgd127": (QSGD(127), X8, 4, 300, lambda x: qsgd_variance(QSGD(127), x)),
    "qsgd127-f32": (QSGD(127), X8.astype(np.float32), 4, 300,
                    lambda x: qsgd_variance(QSGD(127), x)),
}

_SAMPLES: dict[str, Sample] = {}


def case_sample(name: str) -> Sample:
    """The draws of a case, made once per session (several tests read them)."""
    if name not in _SAMPLES:
        c, x0, T, R, _ = CASES[name]
        _SAMPLES[name] = sample(draw_of(c), x0, T, R)
    return _SAMPLES[name]


@pytest.mark.parametrize("name", list(CASES))
def test_unbiased_per_coordinate_with_power_against_a_2_percent_bias(name: str) -> None:
    s = case_sample(name)
    assert_power(s)
    assert_unbiased(s)


@pytest.mark.parametrize("name", list(CASES))
def test_variance_two_sided_and_within_omega(name: str) -> None:
    c, _, _, _, exact_var = CASES[name]
    s = case_sample(name)
    expected = exact_var(s.x)
    nx2 = float(np.sum(s.x.astype(np.float64) ** 2))
    assert_two_sided(s, expected, "E||C(x) - x||^2")
    assert expected <= c.omega(s.x.size) * nx2 * (1 + 1e-12)
    if isinstance(c, RandK):  # the bound is attained: omega is exactly d/k - 1
        assert_two_sided(s, c.omega(s.x.size) * nx2, "omega ||x||^2")


def test_qsgd_levels_are_exercised() -> None:
    """s = 127 rounds between many levels (not only 0 and 1), s = 1 between 0 and 1."""
    x = np.tile(X8, 4)  # as in the "qsgd127" case: levels up to s|x_j|/||x|| = 37
    xi = np.abs(QSGD(127)(x, (0, 0, 1))) * 127 / float(
        QSGD(127).encode(x, (0, 0, 1))[16:20].view(np.float32)[0])
    assert len(np.unique(np.round(xi))) >= 8 and np.round(xi).max() >= 30
    y = QSGD(1)(np.tile(X4, 4096), (0, 0, 1))
    assert set(np.unique(np.abs(y))) <= {0.0, float(QSGD(1).encode(np.tile(X4, 4096), (0, 0, 1))
                                                    [16:20].view(np.float32)[0])}


def test_natural_omega_is_attained_at_four_thirds() -> None:
    """Var / x^2 = (2 - t)(t - 1)/t^2 peaks at t = 4/3 with 1/8: there E||C(x) - x||^2 =
    ω||x||^2, so a larger ω (or a wrong rounding probability) fails."""
    x0 = np.array([4 / 3, -8 / 3, 2 ** -10 * 4 / 3, -(2.0**40) * 4 / 3])
    s = sample(draw_of(Natural()), x0, 4096, 40)
    nx2 = float(np.sum(s.x**2))
    assert_two_sided(s, Natural().omega(s.x.size) * nx2, "omega ||x||^2")
    assert_unbiased(s)


def test_a_2_percent_bias_is_rejected() -> None:
    """The checks above on compressors that are 2 % off: Rand-k with its factor d/k 2 % too
    large, QSGD (s = 1) with a scale 2 % too small, natural compression biased on one entry
    only. Each fails assert_unbiased with the draws of its unbiased case."""
    randk = RandK(k=10923)
    biased: dict[str, Draw] = {
        "randk": lambda x, i: 1.02 * draw_of(randk)(x, i),
        "qsgd1": lambda x, i: 0.98 * draw_of(QSGD(1))(x, i),
    }
    for name, draw in biased.items():
        _, x0, T, R, _ = CASES[name]
        s = sample(draw, x0, T, R)
        with pytest.raises(AssertionError, match="standard errors off"):
            assert_unbiased(s)

    def one_entry(x: np.ndarray, i: int) -> np.ndarray:
        y = draw_of(Natural())(x, i)
        y[::XN.size] *= 1.02  # entry 0 (1.25) of every copy
        return y

    s = sample(one_entry, XN, 4096, 8)
    assert_power(s)
    with pytest.raises(AssertionError, match="entry 0 is"):
        assert_unbiased(s)


def test_randk_inclusion_probability() -> None:
    """Every index is kept with probability k/d (chi-square style check on the counts)."""
    d, k, n = 50, 5, 4000
    c = RandK(k=k, scaled=False)
    counts = np.zeros(d)
    for i in range(n):
        counts[c.indices(c.encode(np.ones(d), (5, 0, i)))] += 1
    expect = n * k / d
    sd = np.sqrt(n * (k / d) * (1 - k / d))
    assert np.all(np.abs(counts - expect) < 5 * sd)
    assert counts.sum() == n * k


#: contractive random compressors: name -> (C, unbiased inner or None, x0, T, R)
RANDOM_CONTRACTIVE: dict[str, tuple[Compressor, Compressor | None]] = {
    "randk_unscaled": (RandK(k=1024, scaled=False), None),
    "scaled_randk": (Scaled(RandK(k=1024)), RandK(k=1024)),
    "scaled_qsgd": (Scaled(QSGD(2)), QSGD(2)),
    "scaled_natural": (Scaled(Natural()), Natural()),
}


@pytest.mark.parametrize("name", list(RANDOM_CONTRACTIVE))
def test_random_contraction_two_sided(name: str) -> None:
    """E||C(x) - x||^2 exactly: (1 - k/d)||x||^2 for unscaled Rand-k, and for C = λU with U
    unbiased of variance V: (1 - λ)^2 ||x||^2 + λ^2 V; empirical within Z standard errors of
    it, and the exact value <= (1 - α)||x||^2."""
    c, inner = RANDOM_CONTRACTIVE[name]
    s = sample(draw_of(c), X8, 512, 200)
    d = s.x.size
    nx2 = float(np.sum(s.x**2))
    if inner is None:
        expected = (1 - 1024 / d) * nx2
    else:
        lam = 1 / (inner.omega(d) + 1)
        if isinstance(inner, RandK):
            V = randk_variance(inner, s.x)
        elif isinstance(inner, QSGD):
            V = qsgd_variance(inner, s.x)
        else:
            V = natural_variance(s.x)
        expected = (1 - lam) ** 2 * nx2 + lam**2 * V
    assert_two_sided(s, expected, name)
    assert expected <= (1 - c.alpha(d)) * nx2 * (1 + 1e-12)


def test_natural_subnormals_unbiased_and_saturation() -> None:
    tiny = np.array([2.0**-130, -(2.0**-140), 3 * 2.0**-149, 2.0**-127], dtype=np.float32)
    cs = draws(Natural(), tiny, 4000)
    assert set(np.unique(np.abs(cs))) <= {0.0, 2.0**-126}
    p = tiny.astype(np.float64) / 2.0**-126
    sd = 2.0**-126 * np.sqrt(np.abs(p) * (1 - np.abs(p)) / 4000)
    assert np.all(np.abs(cs.mean(axis=0) - tiny) <= 5 * sd + 1e-60)
    for dtype in (np.float32, np.float64):  # saturation at 2^127 (documented, biased)
        big = np.array([3e38, -2.0**127 * 1.999], dtype=dtype)
        assert np.array_equal(np.abs(Natural()(big, (0, 0, 0))), [2.0**127, 2.0**127])
    huge = np.array([1e300, -1e200, 1e-300, 0.0])
    y = Natural()(huge, (0, 0, 1))
    assert y[0] == 2.0**127 and y[1] == -(2.0**127) and y[3] == 0.0
    assert y[2] in (0.0, 2.0**-126)
    cs = draws(Natural(), np.array([2.0**-200, 2.0**-127 * 1.5]), 4000)
    assert abs(cs[:, 1].mean() / (2.0**-127 * 1.5) - 1) < 0.1  # unbiased below 2^-126 too
    assert cs[:, 0].max() <= 2.0**-126


# --------------------------------------------------------------------------------------------
# Deterministic (per-draw) properties, with hypothesis over shapes, dtypes and special values
# --------------------------------------------------------------------------------------------
special = st.sampled_from([0.0, -0.0, 1.0, -2.5, 1e-40, -1e-45, 1e-310, 2.0**-126, 1e20, -7e30])


@st.composite
def vectors(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    d = draw(st.integers(1, 200))
    width = 32 if dtype == np.float32 else 64
    finite = st.floats(width=width, allow_nan=False, allow_infinity=False,
                       min_value=-(2.0**90), max_value=2.0**90)
    x = draw(hnp.arrays(dtype, d, elements=st.one_of(finite, special)))
    if draw(st.booleans()):
        x[:] = x[0]
    return x


def sqdist(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y.astype(np.float64) - x.astype(np.float64)) ** 2))


@settings(max_examples=40, deadline=None)
@given(x=vectors(), r=st.floats(0.01, 1.0))
def test_topk_contraction(x: np.ndarray, r: float) -> None:
    c = TopK(ratio=r)
    y = c(x)
    nx2 = float(np.sum(x.astype(np.float64) ** 2))
    assert sqdist(y, x) <= (1 - c.alpha(x.size)) * nx2 * (1 + 1e-12)
    # the identity ||x||^2 = ||C(x)||^2 + ||x - C(x)||^2 (disjoint supports)
    assert sqdist(y, x) + float(np.sum(y.astype(np.float64) ** 2)) == pytest.approx(nx2,
                                                                                    rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(x=vectors())
def test_scaled_sign_contraction_and_identity(x: np.ndarray) -> None:
    c = ScaledSign()
    y = c(x)
    d = x.size
    xf = x.astype(np.float64)
    nx2, l1 = float(xf @ xf), float(np.abs(xf).sum())
    s = float(np.abs(y[0]))
    ulp = float(np.spacing(np.float32(s))) if s > 0 else float(np.spacing(np.float32(0)))
    slack = d * ulp**2 + 1e-12 * nx2 + d * (l1 / d - s) ** 2
    assert sqdist(y, x) <= (1 - c.alpha(d)) * nx2 + slack
    # ||C(x) - x||^2 = ||x||^2 - ||x||_1^2 / d (with the exact scale), up to the rounding
    assert sqdist(y, x) == pytest.approx(nx2 - l1**2 / d, rel=1e-6, abs=slack)
    assert s == 0 or np.all((y < 0) == (x < 0))  # a scale below float32 range flushes to 0


@settings(max_examples=40, deadline=None)
@given(x=vectors(), s=st.sampled_from([1, 2, 3, 16, 1000]), seed=st.integers(0, 1000))
def test_qsgd_per_draw(x: np.ndarray, s: int, seed: int) -> None:
    c = QSGD(s)
    p = c.encode(x, (seed, 0, 0))
    y = c.decode(p).astype(np.float64)
    norm = float(p[16:20].view(np.float32)[0])
    xf = x.astype(np.float64)
    assert norm >= np.sqrt(np.sum(xf**2)) * (1 - 1e-6)  # rounded up
    tiny = float(np.finfo(x.dtype).smallest_subnormal)  # output rounding near 0
    assert np.all(np.abs(y - xf) <= norm / s * (1 + 1e-6) + tiny)
    assert np.all((y == 0) | (np.sign(y) == np.sign(xf)))
    assert np.all(np.abs(y) <= norm * (1 + 1e-6))


@settings(max_examples=40, deadline=None)
@given(x=vectors(), seed=st.integers(0, 1000))
def test_natural_per_draw(x: np.ndarray, seed: int) -> None:
    y = Natural()(x, (seed, 0, 0)).astype(np.float64)
    xf = x.astype(np.float64)
    a = np.abs(xf)
    nz = y != 0
    assert np.all(np.sign(y[nz]) == np.sign(xf[nz]))
    assert np.all(y[a == 0] == 0)
    m, e = np.frexp(np.abs(y[nz]))
    assert np.all(m == 0.5)  # powers of two
    normal = (a >= 2.0**-126) & (a < 2.0**127)
    lo = np.exp2(np.floor(np.log2(a[normal])))
    assert np.all((np.abs(y[normal]) == lo) | (np.abs(y[normal]) == 2 * lo) |
                  (np.abs(y[normal]) == a[normal]))
    assert np.all(np.abs(y) <= 2.0**127)


# --------------------------------------------------------------------------------------------
# Identities from the papers
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work():
    from decomp.data import load_dataset
    from decomp.problems import initial_point, split_problem

    ds = load_dataset("breast_cancer", scale="standard")
    return split_problem(ds, "logistic", 4), initial_point("normal", ds.n_features, seed=2)


@pytest.mark.parametrize("c", [TopK(k=3), RandK(k=5, scaled=False), ScaledSign()])
def test_error_feedback_loses_nothing(work, c: Compressor) -> None:
    """Classic EF (decomp.sim's "ef", which the MPI runtime equals bit for bit): what was
    sent plus what is still held back is everything that was to be sent. With
    x^{t+1} = x^t − (1/n) Σ_i v_i^t and e_i^{t+1} = e_i^t + γ∇f_i(x^t) − v_i^t:
    n (x^0 − x^T) + Σ_i e_i^T = γ Σ_{t<T} Σ_i ∇f_i(x^t), for gradients evaluated here."""
    from decomp.sim import simulate

    probs, x0 = work
    lr, T = 0.1, 25
    tr = simulate("ef", probs, x0, lr=lr, steps=T, compressor=c)
    want = lr * sum(p.grad(tr.xs[t]) for t in range(T) for p in probs)
    got = len(probs) * (tr.xs[0] - tr.xs[T]) + tr.state["E"].sum(axis=0)
    scale = lr * sum(np.abs(p.grad(tr.xs[t])).sum() for t in range(T) for p in probs)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * scale)
    assert np.abs(tr.state["E"]).max() > 1e-3 * np.abs(want).max()  # something is held back


@pytest.mark.parametrize("c", [Identity(), Scaled(Identity())])
def test_ef21_with_an_exact_compressor_tracks_the_gradients(work, c: Compressor) -> None:
    """EF21 (decomp.sim): g_i^{t+1} = g_i^t + C(∇f_i(x^{t+1}) − g_i^t), so with ω = 0 every
    g_i equals ∇f_i(x^T) after the last step and g their mean, up to rounding, whatever the
    start (init = compressed or full); with Top-k it does not (the check can fail)."""
    from decomp.sim import simulate

    probs, x0 = work
    for init in ("compressed", "full"):
        tr = simulate("ef21", probs, x0, lr=0.2, steps=15, compressor=c, init=init)
        grads = np.stack([p.grad(tr.xs[-1]) for p in probs])
        np.testing.assert_allclose(tr.state["G"], grads, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(tr.state["g"], grads.mean(axis=0), rtol=1e-12, atol=1e-15)
    tr = simulate("ef21", probs, x0, lr=0.2, steps=15, compressor=TopK(k=2))
    grads = np.stack([p.grad(tr.xs[-1]) for p in probs])
    assert np.abs(tr.state["G"] - grads).max() > 1e-6


@pytest.mark.parametrize("inner", [RandK(k=7), QSGD(3), Natural(), Identity()])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scaled_is_inner_over_omega_plus_one(inner: Compressor, dtype: type) -> None:
    x = make_vector(dtype=dtype)
    sc = Scaled(inner)
    lam = 1.0 / (inner.omega(x.size) + 1.0)
    key = (3, 2, 1)
    a = sc.decode(sc.encode(x, key))
    b = inner.decode(inner.encode(x, key))
    assert np.array_equal(a, b * b.dtype.type(lam))
    assert np.array_equal(a, sc.reference(x, key))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_randk_scaled_is_d_over_k_times_unscaled(dtype: type) -> None:
    x = make_vector(dtype=dtype)
    key = (9, 0, 4)
    a = RandK(k=6).decode(RandK(k=6).encode(x, key))
    b = RandK(k=6, scaled=False).decode(RandK(k=6, scaled=False).encode(x, key))
    assert np.array_equal(a, b * dtype(x.size / 6))


def test_decode_add_aggregates_like_a_dense_sum() -> None:
    """Master side of EF21: sum_i decode(payload_i) == sum_i reference_i, bit for bit."""
    rng = np.random.default_rng(2)
    for c in (TopK(k=9), RandK(k=9), QSGD(4), Natural(), ScaledSign()):
        acc = np.zeros(64, dtype=np.float32)
        dense = np.zeros(64, dtype=np.float32)
        for rank in range(5):
            x = rng.standard_normal(64).astype(np.float32)
            c.decode_add(c.encode(x, (1, rank, 0)), acc)
            dense += c.reference(x, (1, rank, 0))
        assert np.array_equal(acc, dense)
        half = np.zeros(64, dtype=np.float32)
        c.decode_add(c.encode(x, (1, 4, 0)), half, scale=0.5)
        assert np.allclose(half, 0.5 * c.reference(x, (1, 4, 0)), rtol=1e-6, atol=0)
