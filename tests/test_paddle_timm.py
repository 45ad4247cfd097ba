"""The real paddle and timm NAdams as ground truth.

Three real optimizers (tests/paddle_timm_cases.py): ``paddle.optimizer.NAdam``
3.3.1, ``timm.optim.NAdamW`` and ``timm.optim.NAdamLegacy`` 1.0.31, recorded
by ``tests/data/record_paddle_timm.py`` (float32 and float64, defaults and
other hyperparameters, 200 steps, three parameters of 5, 12 and 20 elements).

Checked here:

* an independent replay of each library's arithmetic, written below from its
  source (paddle's ``phi/kernels/impl/nadam_kernel_impl.h``, timm's
  ``optim/nadamw.py`` and ``optim/nadam.py``), against the recordings: it pins
  down what the libraries compute, to the bit where the library is
  deterministic arithmetic, and says where it is not (see
  docs/real_implementations.md);
* the recordings against nadam_ref's profiles ``paddle``, ``timm-nadamw`` and
  ``timm-nadam-legacy``;
* the installed libraries (when installed) against the recordings;
* the golden side: the real libraries on the golden cases' inputs pass their
  own profile's cases and fail every other profile's case at step 1.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from paddle_timm_cases import CASES, OPTIMIZERS, timm_dir

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RECORDER = DATA / "record_paddle_timm.py"
DTYPES = ("float32", "float64")
ALL_CASES = [(o, c) for o in OPTIMIZERS for c in CASES[o]]


def recording_path(optimizer: str, case: str, root: Path = DATA) -> Path:
    if optimizer == "paddle":
        return root / "paddle" / f"{case}.npz"
    return root / "timm" / f"{optimizer}--{case}.npz"


def recorded(optimizer: str, case: str, root: Path = DATA) -> dict:
    """One recording: kwargs, θ₀, gradients, and per dtype θ and the traces."""
    with np.load(recording_path(optimizer, case, root), allow_pickle=False) as f:
        out = {
            "kwargs": json.loads(str(f["config"]))["kwargs"],
            "versions": json.loads(str(f["versions"])),
            "initial": [f[f"initial/{i}"] for i in range(3)],
            "grads": [f[f"grads/{i}"] for i in range(3)],
        }
        for dtype in DTYPES:
            out[dtype] = [f[f"{dtype}/theta/{i}"] for i in range(3)]
            prefix = f"{dtype}/trace/"
            out[f"{dtype}/trace"] = {
                k[len(prefix) :]: f[k] for k in f.files if k.startswith(prefix)
            }
    return out


def units(a, b) -> np.ndarray:
    """|a − b| in units of b's machine epsilon at max(|b|, 1), per element: ulps
    for |θ| ≥ 1, and the absolute error in ulps of 1 for θ near zero (θ is of
    unit scale here, so a rounding error made at |θ| ~ 1 does not look huge
    when θ later passes through zero)."""
    b = np.asarray(b)
    scale = np.finfo(b.dtype).eps * np.maximum(np.abs(b.astype(np.float64)), 1.0)
    return np.abs(np.asarray(a, np.float64) - b.astype(np.float64)) / scale


# -- independent replays of the libraries' arithmetic -------------------------------------------


def fma(a, b, c, dtype):
    """a·b + c rounded once to ``dtype``, element by element: the fused
    multiply-add torch's CPU kernels use (lerp, addcmul, add with alpha).

    float32: the product of two floats is exact in double, the sum is rounded
    in double and then to float (a double rounding that changes the result in
    about one case in 2^29).  float64: a·b split exactly into p + e (Dekker's
    product, exact away from overflow and underflow, as here), then
    ``math.fsum`` rounds p + e + c once, correctly."""
    a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype) for x in (a, b, c)))
    if np.dtype(dtype) == np.float32:
        wide = a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)
        return wide.astype(np.float32)
    p = a * b
    split = 134217729.0  # 2^27 + 1: halves of 26 bits whose products are exact
    ah = a * split - (a * split - a)
    bh = b * split - (b * split - b)
    al, bl = a - ah, b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    flat = [math.fsum(t) for t in zip(p.ravel(), e.ravel(), c.ravel())]
    return np.array(flat, np.float64).reshape(a.shape)


def replay_paddle(x0, grads, dtype, kwargs, *, float32_hyper=True, accumulated=True):
    """paddle's NAdamKernel (nadam_kernel_impl.h), in the parameter's dtype T.

    β1, β2, ε, ψ arrive as C++ ``float`` and are cast to T; lr is a tensor of
    T (paddle makes it in the first parameter's dtype); 0.96 is cast to T.
    Three accumulators of T, one per element, start at 1: d ← d·0.96,
    b ← b·β2, ∏ ← ∏·μ_t.  Then, in T::

        μ_t = β1(1 − 0.5·d^ψ)           μ_{t+1} = β1(1 − (0.5·d^ψ)·0.96^ψ)
        m = β1·m + (1 − β1)·g           v = β2·v + ((1 − β2)·g)·g
        m̂ = (μ_{t+1}·m)/(1 − ∏·μ_{t+1}) + ((1 − μ_t)·g)/(1 − ∏)
        θ = θ − (lr·m̂)/(√(v/(1 − b)) + ε)

    ``float32_hyper=False`` / ``accumulated=False`` switch off the float32
    rounding of the four hyperparameters / the running products (0.96^(tψ)
    and β2^t from t instead), for the tests that show each fact matters.
    """
    T = np.dtype(dtype).type
    hyper = {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "momentum_decay": 4e-3, **kwargs}
    cast = (lambda x: T(np.float32(x))) if float32_hyper else T
    b1, b2, eps, psi = (cast(hyper[k]) for k in ("beta1", "beta2", "epsilon", "momentum_decay"))
    lr = T(kwargs.get("learning_rate", 2e-3))
    one, half, base = T(1), T(0.5), T(0.96)
    theta = np.asarray(x0, T).ravel().copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    d, b2_pow, prod = one, one, one
    # Powers of NumPy scalars with ``**``: the C library's pow, as paddle's scalar code
    # calls it.  np.power would run NumPy's ufunc loop, which on an AVX-512 CPU is a SIMD
    # pow that differs from the C library's by an ulp now and then.
    base_psi = T(base**psi)
    out, trace = [], []
    for t, g in enumerate(grads, 1):
        g = np.asarray(g, T).ravel()
        if accumulated:
            d, b2_pow = T(d * base), T(b2_pow * b2)
            d_psi = T(d**psi)
        else:
            d_psi, b2_pow = T(base ** (T(t) * psi)), T(b2 ** T(t))
        mu = T(b1 * (one - half * d_psi))
        mu_next = T(b1 * (one - T(half * d_psi) * base_psi))
        prod = T(prod * mu)
        prod_next = T(prod * mu_next)
        m = b1 * m + (one - b1) * g
        v = b2 * v + (one - b2) * g * g
        m_hat = mu_next * m / (one - prod_next) + (one - mu) * g / (one - prod)
        v_hat = v / (one - b2_pow)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(theta.copy())
        trace.append((d, b2_pow, prod))
    trace = np.array(trace, T)
    names = ("momentum_decay_pow", "beta2_pow", "mu_product")
    return np.array(out), {n: trace[:, i] for i, n in enumerate(names)}


def replay_timm_nadamw(x0, grads, dtype, kwargs, *, momentum_to="t"):
    """timm's _single_tensor_nadamw (the CPU path), scalars as Python floats,
    each converted to the parameter's dtype where a tensor op takes it::

        θ ← θ·(1 − γλ)
        m ← lerp(m, g, 1 − β1)          fused: m + (1 − β1)(g − m), one rounding
        v ← v·β2 + ((1 − β2)·g)·g       addcmul, fused: one rounding
        m̄ = lerp(m, g, 1 − β1)
        θ ← θ + (−γ/(1 − β1^t)·m̄) / (√v/√(1 − β2^t) + ε)

    ``momentum_to="t+1"`` divides by 1 − β1^(t+1) instead, as optax.nadamw does.
    """
    T = np.dtype(dtype).type
    lr, eps, wd = kwargs.get("lr", 1e-3), kwargs.get("eps", 1e-8), kwargs.get("weight_decay", 1e-2)
    b1, b2 = kwargs.get("betas", (0.9, 0.999))
    theta = np.asarray(x0, T).ravel().copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    w = T(1 - b1)
    out = []
    for t, g in enumerate(grads, 1):
        g = np.asarray(g, T).ravel()
        theta = theta * T(1.0 - lr * wd)
        m = fma(w, g - m, m, T)
        v = fma(T(1 - b2) * g, g, v * T(b2), T)
        bc1 = 1 - b1 ** (t if momentum_to == "t" else t + 1)
        m_bar = fma(w, g - m, m, T)
        denom = np.sqrt(v) / T((1 - b2**t) ** 0.5) + T(eps)
        theta = theta + T(-(lr / bc1)) * m_bar / denom
        out.append(theta.copy())
    return np.array(out)


def replay_timm_legacy(x0, grads, dtype, kwargs, *, float32_product=False):
    """timm's NAdamLegacy.step: torch's NAdam with ∏μ (``m_schedule``) a
    Python float and the denominator √v/√(1 − β2^t) + ε, θ updated in two
    addcdiv steps; ``grad.add(p, alpha=λ)`` and ``add_(g, alpha=1 − β1)`` and
    addcmul are fused multiply-adds in torch's CPU kernels.

    ``float32_product=True`` keeps ∏μ in float32 as torch.optim.NAdam does.
    """
    T = np.dtype(dtype).type
    lr, eps, wd = kwargs.get("lr", 2e-3), kwargs.get("eps", 1e-8), kwargs.get("weight_decay", 0)
    b1, b2 = kwargs.get("betas", (0.9, 0.999))
    psi = kwargs.get("schedule_decay", 4e-3)
    theta = np.asarray(x0, T).ravel().copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    schedule, out, trace = 1.0, [], []
    for t, g in enumerate(grads, 1):
        g = np.asarray(g, T).ravel()
        if wd:
            g = fma(theta, T(wd), g, T)
        mu = b1 * (1.0 - 0.5 * (0.96 ** (t * psi)))
        mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi)))
        if float32_product:
            new = float(np.float32(schedule * mu))
            nxt = float(np.float32(new * mu_next))
        else:
            new, nxt = schedule * mu, schedule * mu * mu_next
        schedule = new
        m = fma(g, T(1.0 - b1), m * T(b1), T)
        v = fma(T(1.0 - b2) * g, g, v * T(b2), T)
        denom = np.sqrt(v) / T(math.sqrt(1 - b2**t)) + T(eps)
        theta = theta + T(-lr * (1.0 - mu) / (1.0 - new)) * g / denom
        theta = theta + T(-lr * mu_next / (1.0 - nxt)) * m / denom
        out.append(theta.copy())
        trace.append(schedule)
    return np.array(out), {"m_schedule": np.array(trace)}


REPLAYS = {
    "paddle": lambda x0, g, dtype, kw: replay_paddle(x0, g, dtype, kw)[0],
    "timm-nadamw": replay_timm_nadamw,
    "timm-nadam-legacy": lambda x0, g, dtype, kw: replay_timm_legacy(x0, g, dtype, kw)[0],
}


def replay_errors(optimizer, case, dtype, rec=None, replay=None):
    """Per parameter, |replay − recording| in :func:`units`, [steps, n]."""
    rec = rec or recorded(optimizer, case)
    replay = replay or REPLAYS[optimizer]
    errs = []
    for x0, g, theta in zip(rec["initial"], rec["grads"], rec[dtype]):
        ours = replay(x0, g, dtype, rec["kwargs"])
        errs.append(units(ours, theta.reshape(len(theta), -1)))
    return errs


# -- what the libraries compute: replays against the recordings ----------------------------------

#: replay vs recording, in :func:`units`; measured: at most 1.8 (see docs/real_implementations.md)
REPLAY_TOLERANCE = 4.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer,case", ALL_CASES)
def test_replay_reproduces_the_recording(optimizer, case, dtype):
    errs = replay_errors(optimizer, case, dtype)
    worst = max(float(e.max()) for e in errs)
    assert worst <= REPLAY_TOLERANCE, f"{optimizer}/{case}/{dtype}: {worst:.3g} units"


@pytest.mark.parametrize(
    "optimizer,case,dtype",
    [
        # paddle's float64 kernel is the replay's arithmetic exactly (Eigen's packets
        # of doubles round as the scalar code does)
        ("paddle", "defaults", "float64"),
        ("paddle", "hyperparameters", "float64"),
        # without weight decay timm's NAdamW is the replay exactly, in both dtypes:
        # lerp and addcmul are fused multiply-adds
        ("timm-nadamw", "no-weight-decay", "float32"),
        ("timm-nadamw", "no-weight-decay", "float64"),
        ("timm-nadamw", "defaults", "float64"),
        ("timm-nadam-legacy", "defaults", "float64"),
    ],
)
def test_replay_is_bit_for_bit(optimizer, case, dtype):
    errs = replay_errors(optimizer, case, dtype)
    assert all(np.all(e == 0) for e in errs), f"{optimizer}/{case}/{dtype}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES["paddle"]))
def test_paddle_accumulators_are_running_products(case, dtype):
    """paddle's 0.96^t and β2^t are 1 multiplied by 0.96 and float32(β2) t
    times in the parameter's dtype, bit for bit; ∏μ within one ulp (Eigen's
    pow differs from the C library's by an ulp at 3 of 400 float64 steps)."""
    rec = recorded("paddle", case)
    _, trace = replay_paddle(rec["initial"][0], rec["grads"][0], dtype, rec["kwargs"])
    got = rec[f"{dtype}/trace"]
    for name in ("momentum_decay_pow", "beta2_pow"):
        assert np.array_equal(trace[name], got[name]), name
        assert got[name].dtype == np.dtype(dtype)
    spacing = np.spacing(np.abs(got["mu_product"]))
    assert np.all(np.abs(trace["mu_product"] - got["mu_product"]) <= spacing)
    # and they are not the powers evaluated from t
    t = np.arange(1, len(got["momentum_decay_pow"]) + 1)
    assert not np.array_equal(got["momentum_decay_pow"], np.power(0.96, t).astype(dtype))


def test_timm_legacy_schedule_product_is_a_python_float():
    """m_schedule is ∏μ computed in double whatever the parameter's dtype."""
    rec = recorded("timm-nadam-legacy", "hyperparameters")
    _, trace = replay_timm_legacy(rec["initial"][0], rec["grads"][0], "float64", rec["kwargs"])
    for dtype in DTYPES:
        assert np.array_equal(trace["m_schedule"], rec[f"{dtype}/trace"]["m_schedule"]), dtype


def _worst(optimizer, case, dtype, replay):
    return max(float(e.max()) for e in replay_errors(optimizer, case, dtype, replay=replay))


def test_paddle_float64_needs_the_float32_hyperparameters():
    """The replay has teeth: with β1, β2, ε, ψ not rounded to float32, a
    float64 replay leaves paddle by ~1e-9 (10^6 units); with 0.96^(tψ) and
    β2^t evaluated from t instead of kept as running products, it is no
    longer bit for bit (a few ulps: running products of doubles drift
    little)."""
    off = _worst(
        "paddle",
        "defaults",
        "float64",
        lambda *a: replay_paddle(*a, float32_hyper=False)[0],
    )
    assert off > 1e5 * REPLAY_TOLERANCE
    errs = replay_errors(
        "paddle",
        "hyperparameters",
        "float64",
        replay=lambda *a: replay_paddle(*a, accumulated=False)[0],
    )
    assert any(np.any(e > 0) for e in errs)


def test_timm_nadamw_is_not_optax_bias_correction():
    """timm's momentum term over 1 − β1^t, not optax's 1 − β1^(t+1): the
    latter is ~4e-4 away at step 1 with the defaults."""
    rec = recorded("timm-nadamw", "defaults")
    ours = replay_timm_nadamw(rec["initial"][0], rec["grads"][0], "float64", rec["kwargs"])
    optax_like = replay_timm_nadamw(
        rec["initial"][0], rec["grads"][0], "float64", rec["kwargs"], momentum_to="t+1"
    )
    theta = rec["float64"][0].reshape(len(ours), -1)
    assert np.array_equal(ours, theta)
    assert np.abs(optax_like[0] - theta[0]).max() > 1e-4


def test_timm_legacy_is_torch_with_a_float64_product():
    """With ∏μ in float32 (torch.optim.NAdam's state) a float64 replay leaves
    timm's legacy Nadam by ~4e-11."""
    off = _worst(
        "timm-nadam-legacy",
        "defaults",
        "float64",
        lambda *a: replay_timm_legacy(*a, float32_product=True)[0],
    )
    assert off > 1e3 * REPLAY_TOLERANCE


# -- the installed libraries ---------------------------------------------------------------------


def _installed(optimizer):
    import importlib.util

    if optimizer == "paddle":
        if importlib.util.find_spec("paddle") is None:
            pytest.skip("paddlepaddle not installed (pip install .[paddle])")
    else:
        if importlib.util.find_spec("torch") is None:
            pytest.skip("torch not installed (pip install .[crosscheck])")
        if timm_dir() is None:
            pytest.skip("timm not installed (pip install --no-deps timm==1.0.31)")


def test_installed_paddle_reproduces_the_recording(tmp_path):
    """paddle run now, in a subprocess by the committed script (paddle stays
    out of this process), gives the committed recording, and nadam_ref's
    profile follows the live run."""
    _installed("paddle")
    case = "hyperparameters"
    r = subprocess.run(
        [
            sys.executable,
            str(RECORDER),
            "--only",
            "paddle",
            "--cases",
            case,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    live, rec = recorded("paddle", case, tmp_path), recorded("paddle", case)
    for dtype in DTYPES:
        for a, b in zip(live[dtype], rec[dtype]):
            # Bit for bit with the same paddle on a CPU like the recording's; paddle's
            # vectorised kernels round differently with other instruction sets (AVX-512).
            assert units(a, b).max() <= REPLAY_TOLERANCE, (dtype, live["versions"])
        # and nadam_ref's profile against the live run
        ours = run_profile("paddle", "paddle", live, dtype)
        assert max(units(a, b).max() for a, b in zip(ours, live[dtype])) <= PROFILE_TOLERANCE


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", ["timm-nadamw", "timm-nadam-legacy"])
def test_installed_timm_reproduces_the_recording(optimizer, dtype):
    """timm's optimizer files, loaded by path and run now, give the committed
    recording: bit for bit where timm, torch and torch's CPU kernel level are
    those recorded, within the replay tolerance otherwise; nadam_ref's profile
    follows the live run."""
    _installed(optimizer)
    from paddle_timm_cases import run, versions

    rec = recorded(optimizer, "hyperparameters")
    live = run(optimizer, rec["initial"], rec["grads"], dtype, rec["kwargs"])
    same = versions(optimizer) == rec["versions"]
    for a, b in zip(live["theta"], rec[dtype]):
        if same:
            assert np.array_equal(a, b)
        else:
            assert units(a, b).max() <= REPLAY_TOLERANCE, versions(optimizer)
    ours = run_profile(optimizer, optimizer, rec, dtype)
    assert max(units(a, b).max() for a, b in zip(ours, live["theta"])) <= PROFILE_TOLERANCE


# -- nadam_ref's profiles against the recordings ---------------------------------------------

#: the library's keyword → nadam_ref.NAdam's (torch's) keyword
_RENAME = {"learning_rate": "lr", "epsilon": "eps", "schedule_decay": "momentum_decay"}


def nadam_ref_options(optimizer: str, kwargs: dict) -> dict:
    """The library's keyword arguments in nadam_ref.NAdam's vocabulary; what
    the library leaves at its default, the profile's default gives."""
    from nadam_ref import profiles

    kwargs, out = dict(kwargs), {}
    if "beta1" in kwargs or "beta2" in kwargs:  # paddle's two keywords are torch's betas
        d = profiles.get(optimizer).defaults
        out["betas"] = (kwargs.pop("beta1", d["beta1"]), kwargs.pop("beta2", d["beta2"]))
    for key, value in kwargs.items():
        out[_RENAME.get(key, key)] = tuple(value) if key == "betas" else value
    return out


def run_profile(profile: str, optimizer: str, rec: dict, dtype: str, backend: str = "numba"):
    """θ after every step of nadam_ref.NAdam(profile=...) fed the recorded gradients."""
    import nadam_ref

    arrays = [np.array(x, dtype) for x in rec["initial"]]
    opt = nadam_ref.NAdam(
        arrays, profile=profile, backend=backend, **nadam_ref_options(optimizer, rec["kwargs"])
    )
    params = opt.param_groups[0]["params"]
    out = [np.empty((len(rec["grads"][0]), *a.shape), a.dtype) for a in arrays]
    for t in range(len(out[0])):
        for p, g in zip(params, rec["grads"]):
            p.grad = np.array(g[t], dtype)
        opt.step()
        for o, a in zip(out, arrays):
            o[t] = a
    return out


#: nadam_ref's profile vs the recording, in :func:`units`; measured: at most 2 (float32, γ 1e-2)
PROFILE_TOLERANCE = 4.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer,case", ALL_CASES)
def test_profile_matches_the_recording(optimizer, case, dtype):
    rec = recorded(optimizer, case)
    ours = run_profile(optimizer, optimizer, rec, dtype)
    worst = max(float(units(a, b).max()) for a, b in zip(ours, rec[dtype]))
    assert worst <= PROFILE_TOLERANCE, f"{optimizer}/{case}/{dtype}: {worst:.3g} units"


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_profile_numba_gives_the_numpy_bits(optimizer):
    rec = recorded(optimizer, "hyperparameters")
    for dtype in DTYPES:
        ours = run_profile(optimizer, optimizer, rec, dtype, backend="numba")
        ref = run_profile(optimizer, optimizer, rec, dtype, backend="numpy")
        assert all(np.array_equal(a, b) for a, b in zip(ours, ref)), dtype


@pytest.mark.parametrize(
    "optimizer,other,dtype,at_least",
    [
        # paddle's float32-rounded β1, β2, ε, ψ: 2.9e-9 in float64
        ("paddle", "torch", "float64", 1e-9),
        # timm NAdamW's 1 − β1^t against optax's 1 − β1^(t+1): 1.5e-3
        ("timm-nadamw", "optax", "float64", 1e-3),
        ("timm-nadamw", "optax", "float32", 1e-3),
        # the legacy Nadam's float64 ∏μ against torch's float32 one: 3.7e-11
        ("timm-nadam-legacy", "torch", "float64", 1e-11),
    ],
)
def test_nearest_other_profile_is_far(optimizer, other, dtype, at_least):
    """The recordings tell the profiles apart: each is farther than
    ``at_least`` from the profile it is nearest to (figures in
    docs/real_implementations.md)."""
    rec = recorded(optimizer, "defaults")
    kwargs = nadam_ref_options(optimizer, rec["kwargs"])
    import nadam_ref

    arrays = [np.array(x, dtype) for x in rec["initial"]]
    if other == "optax":
        kwargs = {"weight_decay": 1e-2, "decoupled_weight_decay": True, **kwargs}
        kwargs.setdefault("lr", 1e-3)
    opt = nadam_ref.NAdam(arrays, profile=other, **kwargs)
    worst = 0.0
    for t in range(len(rec["grads"][0])):
        for p, g in zip(opt.param_groups[0]["params"], rec["grads"]):
            p.grad = np.array(g[t], dtype)
        opt.step()
        worst = max(worst, max(float(np.abs(a - b[t]).max()) for a, b in zip(arrays, rec[dtype])))
    assert worst > at_least


# -- the golden side -------------------------------------------------------------------------

GOLDEN = DATA / "golden_frameworks"
GOLDEN_RECORDER = DATA / "record_golden_frameworks.py"


def _suite_case(name):
    pytest.importorskip("mpmath", reason="the golden tools need mpmath")
    from nadam_ref.golden.suite import load_suite_case

    return load_suite_case(name)


#: With torch's defaults these three compute the same float32 arithmetic up to
#: where their scalars are rounded (torch: double, float32 ∏μ; paddle: float32;
#: timm legacy: double, double ∏μ), which moves float32 θ by well under an ulp
#: a step: a float32 golden case, whose tolerance must let a correct float32
#: NAdam round, cannot tell them apart, and each passes the others' float32
#: cases.  In float64 every pair differs at step 1.
SAME_IN_FLOAT32 = {"torch", "paddle", "timm-nadam-legacy"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_real_library_passes_its_golden_case_and_fails_every_other_at_step_1(optimizer, dtype):
    """The real library on its profile's golden case's inputs
    (tests/data/golden_frameworks/, by record_golden_frameworks.py) passes
    that case, and fails every other profile's case of the same dtype at its
    first step, except in float32 the profiles of :data:`SAME_IN_FLOAT32`."""
    from nadam_ref import profiles
    from nadam_ref.golden import verify

    path = GOLDEN / f"{optimizer}--{optimizer}-{dtype}.npz"
    report = verify(_suite_case(f"{optimizer}-{dtype}"), path)
    assert report.passed, str(report)
    for other in sorted(profiles.PROFILES):
        if other == optimizer:
            continue
        report = verify(_suite_case(f"{other}-{dtype}"), path, diagnose=False)
        if dtype == "float32" and {optimizer, other} <= SAME_IN_FLOAT32:
            assert report.passed, (other, str(report))
        else:
            assert not report.passed and report.first_failing_step == 1, (other, str(report))


def test_older_real_frameworks_fail_the_new_profiles_at_step_1():
    """torch, tf-keras legacy, Keras 3 and optax recorded on their own golden
    cases fail the paddle and timm cases of the same dtype at step 1 (torch
    in float32 excepted, as above)."""
    from nadam_ref.golden import verify

    for framework in ("torch", "tf-keras-legacy", "keras3", "optax"):
        for dtype in DTYPES:
            path = GOLDEN / f"{framework}--{framework}-{dtype}.npz"
            for other in OPTIMIZERS:
                report = verify(_suite_case(f"{other}-{dtype}"), path, diagnose=False)
                if dtype == "float32" and {framework, other} <= SAME_IN_FLOAT32:
                    assert report.passed, (framework, other)
                else:
                    assert not report.passed and report.first_failing_step == 1, (framework, other)


def _replay_on_case(optimizer, case):
    from paddle_timm_cases import library_kwargs

    kwargs = library_kwargs(optimizer, case.groups[0]["hyperparameters"])
    return [
        REPLAYS[optimizer](x0, g, case.dtype.name, kwargs).reshape(case.steps, *x0.shape)
        for x0, g in zip(case.params0, case.grads)
    ]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_golden_generate_for_the_new_profiles(optimizer, dtype, tmp_path):
    """``nadam-ref golden generate --profile ...`` writes a case that this
    module's independent replay of the library passes and the replays of the
    other two libraries fail (in float32, paddle's and timm legacy's pass each
    other's: :data:`SAME_IN_FLOAT32`)."""
    pytest.importorskip("mpmath", reason="the golden tools need mpmath")
    from nadam_ref.cli import main as nadam_ref_main  # the `nadam-ref` command
    from nadam_ref.golden import load, verify

    path = tmp_path / "case.json"
    args = ["golden", "generate", "--profile", optimizer, "--dtype", dtype, "--steps", "12"]
    args += ["--shape", "4", "--shape", "2,3", "--seed", "5", "--out", str(path)]
    assert nadam_ref_main(args) == 0
    case = load(path)
    assert case.profile == optimizer and case.steps == 12 and case.shapes == [(4,), (2, 3)]
    report = verify(case, _replay_on_case(optimizer, case), diagnose=False)
    assert report.passed, str(report)
    for other in OPTIMIZERS:
        if other == optimizer:
            continue
        try:
            others = _replay_on_case(other, case)
        except ValueError:  # paddle has no decoupled weight decay (timm NAdamW's default)
            continue
        report = verify(case, others, diagnose=False)
        same = dtype == "float32" and {optimizer, other} <= SAME_IN_FLOAT32
        assert report.passed == same, other


def test_live_paddle_matches_its_golden_case(tmp_path):
    """paddle run now on its float64 golden case by the committed script (in
    a subprocess) passes the case."""
    from nadam_ref.golden import verify

    _installed("paddle")
    case = "paddle-float64"
    r = subprocess.run(
        [sys.executable, str(GOLDEN_RECORDER), "--only", "paddle", "--out", str(tmp_path)]
        + ["--cases", case],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = verify(_suite_case(case), tmp_path / f"paddle--{case}.npz", diagnose=False)
    assert report.passed, str(report)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", ["timm-nadamw", "timm-nadam-legacy"])
def test_live_timm_matches_its_golden_case(optimizer, dtype):
    """timm run now (in this process: it needs only torch) on its profile's
    golden case passes the case."""
    from paddle_timm_cases import library_kwargs, run

    from nadam_ref.golden import verify

    _installed(optimizer)
    case = _suite_case(f"{optimizer}-{dtype}")
    kwargs = library_kwargs(optimizer, case.groups[0]["hyperparameters"])
    theta = run(optimizer, case.params0, case.grads, case.dtype, kwargs, steps=case.steps)["theta"]
    report = verify(case, theta, diagnose=False)
    assert report.passed, str(report)
