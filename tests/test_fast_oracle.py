"""The fast exact oracle against the mpmath oracle (the reference): the same
bits on random and adversarial cases, a rigorous error bound on single
steps through every branch of nadam_element, the fallback where the bound
cannot decide, and sharded (processes, Dask) generation giving the same bytes.
The shipped suite is regenerated through the fast path, byte for byte, by
tests/test_golden.py::test_suite_regenerates_byte_for_byte (the 10⁵-step case
over its first steps by the test after it, its later rows pinned by a digest)."""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import textwrap

import numpy as np
import pytest

pytest.importorskip("mpmath", reason="the golden tools need mpmath (the 'golden' extra)")

from nadam_ref import element  # noqa: E402
from nadam_ref.golden import fast_oracle as fo  # noqa: E402
from nadam_ref.golden import load, oracle  # noqa: E402
from nadam_ref.golden.cli import main as golden_main  # noqa: E402
from nadam_ref.golden.format import to_npz  # noqa: E402
from nadam_ref.golden.generate import make_case  # noqa: E402
from nadam_ref.schedule import Coefficients  # noqa: E402

E = oracle.Exact


def _both(name="c", **options):
    """The case by both methods: (fast bytes, mpmath bytes, fast stats)."""
    stats = {}
    fast = make_case(name, method="fast", stats=stats, **options)
    slow = make_case(name, method="mpmath", **options)
    return to_npz(fast), to_npz(slow), stats


# -- the transcription covers nadam_element --------------------------------------------------


def test_every_branch_and_coefficient_of_nadam_element_is_transcribed():
    """A branch or coefficient added to nadam_element (or Coefficients) fails
    here until the fast kernel transcribes it."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(element.nadam_element)))
    branches = tuple(ast.unparse(node.test) for node in ast.walk(tree) if isinstance(node, ast.If))
    assert branches == fo.TRANSCRIBED_BRANCHES
    assert Coefficients._fields == tuple(
        f for f in Coefficients._fields if f in fo.NUMERIC_FIELDS + fo.FLAG_FIELDS
    )
    assert set(Coefficients._fields) == set(fo.NUMERIC_FIELDS + fo.FLAG_FIELDS)


def _exact_state(rng, n, scale):
    """Exact numbers that are not doubles (as a carried state is): a double plus
    a random 2⁻⁷⁰-relative tail."""
    base = rng.standard_normal(n) * scale
    tail = rng.standard_normal(n)
    return np.array([E(float(b)) * (1 + E(float(t)) * E(2) ** -70) for b, t in zip(base, tail)])


def _as_dd(x):
    """Exact numbers as the kernel's (h, l, e) rows."""
    out = np.zeros((3, len(x)))
    for i, xi in enumerate(x):
        h = float(xi)
        lo = float(xi - h)
        out[:, i] = h, lo, abs(lo) * 2.0**-53
    return out


@pytest.mark.parametrize("single", [True, False], ids=["float32", "float64"])
def test_one_step_matches_mpmath_in_every_branch_combination(single):
    """Each of the 64 combinations of maximize, decoupled decay, L2 decay,
    split update, split denominator and closed loop, from carried (non-double) states: the kernel's
    bound holds (|X − x_mp| ≤ E, checked in mpmath) and every value it reports
    is the mpmath value correctly rounded, in the case's dtype and in float64."""
    rng = np.random.default_rng(5)
    n = 40
    dtype = np.float32 if single else np.float64
    reported = 0
    for maximize, decay, l2, split, sdenom, closed in itertools.product([False, True], repeat=6):
        b1, b2, lr, lam = E(0.9), E(0.999), E(float(rng.uniform(1e-4, 1e-2))), E(0.05)
        mu, mu_next, prod = E(0.45), E(0.4502), E(0.45)
        wm = mu_next / (1 - prod * mu_next)
        wg = (1 - mu) / (1 - prod)
        coef = Coefficients(
            beta1=b1,
            one_minus_beta1=1 - b1,
            beta2=b2,
            one_minus_beta2=1 - b2,
            lr=lr,
            eps=E(1e-8),
            weight_decay=lam if l2 else E(0),
            decay_factor=1 - lr * lam if decay else E(1),
            momentum_weight=wm,
            grad_weight=wg,
            momentum_step=lr * wm,
            grad_step=lr * wg,
            bias_correction2=1 - b2**3,
            bias_correction2_sqrt=oracle.ctx.sqrt(1 - b2**3),
            maximize=maximize,
            split_update=split,
            split_denominator=sdenom,
        )
        theta = _exact_state(rng, n, 1.0)
        m = _exact_state(rng, n, 0.3)
        v = np.abs(_exact_state(rng, n, 0.1))
        grad = theta if closed else oracle.to_exact(rng.standard_normal(n))
        args = [x if isinstance(x, bool) else np.array(x, dtype=object) for x in coef]
        want = element.nadam_element(theta, grad, m, v, *args)
        table, flags, ok = fo.coefficient_table(coef)
        assert ok
        flags[4], flags[5] = closed, True
        th, mm, vv = _as_dd(theta), _as_dd(m), _as_dd(v)
        g = np.array([float(x) for x in grad])
        th64, v64, bad, rec = np.zeros(n), np.zeros(n), np.zeros(n, np.uint8), np.zeros((3, n))
        fo._kernel(table, flags, g, th, mm, vv, th64, v64, bad, rec, single)
        assert not bad.any()
        for j, (dd, x) in enumerate(zip((th, mm, vv), want)):
            for i in range(n):
                assert abs(E(dd[0, i]) + E(dd[1, i]) - x[i]) <= E(dd[2, i])
                assert dd[2, i] <= 2.0**-80 * (abs(dd[0, i]) + 1)
                assert rec[j, i] == oracle.round_to(x[i], dtype)
                reported += 1
        for i in range(n):
            assert th64[i] == oracle.round_to(want[0][i], np.float64)
            assert v64[i] == oracle.round_to(want[2][i], np.float64)
    assert reported == 64 * 3 * n


# -- whole cases: random and adversarial -----------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(profile="torch", dtype="float32", shapes=[(40,), (3, 2)], steps=25, seed=1),
        dict(profile="torch", dtype="float64", shapes=[(30,)], steps=20, seed=2),
        dict(profile="keras3", dtype="float32", shapes=[(30,)], steps=20, seed=3),
        dict(profile="tf-keras-legacy", dtype="float64", shapes=[(20,)], steps=15, seed=4),
        dict(profile="optax", dtype="float32", shapes=[(20,)], steps=15, seed=5),
        dict(profile="torch", dtype="complex64", shapes=[(10,)], steps=12, seed=6),
        dict(
            profile="torch",
            dtype="float32",
            shapes=[(12,)],
            steps=15,
            seed=7,
            hyperparameters={"weight_decay": 0.1, "maximize": True},
        ),
        dict(
            profile="torch",
            dtype="float64",
            shapes=[(12,)],
            steps=15,
            seed=8,
            hyperparameters={"weight_decay": 0.1, "decoupled_weight_decay": True},
        ),
        dict(
            profile="torch",
            dtype="float32",
            shapes=[(6,)],
            steps=40,
            seed=9,
            loop="closed:sphere",
            hyperparameters={"lr": 0.05, "weight_decay": 0.01},
        ),
        dict(
            profile="torch",
            dtype="float32",
            shapes=[(8,)],
            steps=30,
            seed=10,
            record_steps=[1, 7, 30],
            grad_kind="choice",
        ),
    ],
    ids=lambda o: f"{o['profile']}-{o['dtype']}-{o['seed']}",
)
def test_random_cases_equal_the_mpmath_oracle(options):
    fast, slow, stats = _both(**options)
    assert fast == slow
    assert stats["fallback"] == 0  # the bound decides every ordinary element


@pytest.mark.parametrize(
    "dtype, scale",
    [
        ("float64", 1e30),  # v ≈ 1e60: inside the double-double range
        ("float64", 1e150),  # g² ≈ 1e300: out of range, every element falls back
        ("float64", 1e-200),  # tiny: falls back
        ("float32", 1e18),
        ("float32", 1e-30),  # g² underflows float32: v = 0, θ ε-dominated
        ("float32", 1e-41),  # subnormal gradients, subnormal m
    ],
)
def test_huge_tiny_and_subnormal_gradients_equal_the_mpmath_oracle(dtype, scale):
    fast, slow, stats = _both(
        profile="torch", dtype=dtype, shapes=[(6,)], steps=6, seed=11, grad_scale=scale
    )
    assert fast == slow
    if scale in (1e150, 1e-200):
        assert stats["fallback"] == 6


def test_non_finite_gradients_fall_back_to_mpmath():
    g = np.array([[1.0, np.inf, np.nan, -np.inf], [0.5, 0.5, 0.5, 0.5]], np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        fast, slow, stats = _both(
            profile="torch",
            dtype="float32",
            shapes=[(4,)],
            steps=2,
            params0=[np.ones(4, np.float32)],
            grads=[g],
        )
    assert fast == slow
    assert sorted(j for _, j in stats["flagged"]) == [1, 2, 3]


def test_exact_ties_round_to_even():
    """v = (1 − β2)·g² exactly on a rounding boundary: with β2 = 0.75 and
    g = 1 + 2⁻¹² (float32: g² has 25 bits) or g = 1 − 2⁻²⁷ (float64, 54 bits, which
    the tolerance's float64 view of v meets), v is a midpoint.  The kernel knows
    v is exact (its bound is 0) and rounds the tie to even, as mpmath does."""
    for dtype, g in (("float32", 1 + 2.0**-12), ("float64", 1 - 2.0**-27)):
        v = E(0.25) * E(g) ** 2
        r = oracle.round_to(v, dtype)
        half = E(float(np.spacing(np.array(r, dtype)))) / 2
        assert abs(v - E(float(r))) == half  # a tie indeed
        fast, slow, stats = _both(
            profile="torch",
            dtype=dtype,
            shapes=[(3,)],
            steps=2,
            hyperparameters={"beta2": 0.75},
            params0=[np.array([0.5, 0.5, 0.5], dtype)],
            grads=[np.array([[g, 1.5, -g], [g, g, g]], dtype=dtype)],
        )
        assert fast == slow and stats["fallback"] == 0


def test_rounding_is_decided_only_where_the_whole_interval_rounds_alike():
    """fo._round on values at, and 2⁻⁷⁰ to a few ulps from, rounding boundaries
    (float32 normal and subnormal, float64), with error bounds from 0 to large:
    a decided value is the correct rounding of both ends of [X − e, X + e]."""
    rng = np.random.default_rng(16)
    decided = undecided = 0
    for single, dtype in ((True, np.float32), (False, np.float64)):
        for _ in range(300):
            exp = int(rng.integers(-140, 30)) if single else int(rng.integers(-300, 300))
            r = dtype(rng.uniform(1, 2) * 2.0**exp) * rng.choice([-1, 1])
            nxt = np.nextafter(r, dtype(np.inf))
            mid = (E(float(r)) + E(float(nxt))) / 2
            for off in (0, 1, -1, 2**50, -(2**50), 2**60):
                x = mid + off * E(2) ** -70 * abs(mid)
                h = float(x)
                lo = float(x - h)
                if E(h) + E(lo) != x:
                    continue
                for e in (0.0, abs(h) * 2.0**-90, abs(h) * 2.0**-75, abs(h) * 2.0**-60):
                    value, ok = fo._round(h, lo, e, single)
                    if not ok:
                        undecided += 1
                        continue
                    decided += 1
                    for end in (x - E(e), x + E(e)):
                        assert value == oracle.round_to(end, dtype)
                    want = oracle.round_to(x, dtype)
                    assert np.array(value, dtype).tobytes() == np.array(want).tobytes()
    assert decided > 1000 and undecided > 100


def _first_step_size(lr):
    """K·lr with Δ₁ = lr·K·sign(g): torch's first step when ε = 0 (v̂ = g² exactly)."""
    rule = dict(
        lr=lr,
        beta1=0.9,
        beta2=0.999,
        eps=0.0,
        weight_decay=0.0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
        maximize=False,
        momentum_base=0.96,
        state_dtype=np.dtype(np.float32),
    )
    to_state = oracle.state_rounding(np.float32)
    _, coef = oracle.exact_coefficients(rule, to_state(0), to_state(1), to_state)
    return coef.momentum_weight * coef.one_minus_beta1 + coef.grad_weight


def test_values_near_rounding_boundaries_and_cancellation_equal_the_mpmath_oracle():
    """θ₁ = θ₀ − lr·K constructed (through lr) to land within about 2⁻⁵³ relative
    of a float32 midpoint, and θ₀ = RN(Δ₁) so that θ₁ = θ₀ − Δ₁ cancels to a
    few ulps of Δ₁: one parameter group per constructed element."""
    rng = np.random.default_rng(12)
    K = _first_step_size(1.0)
    params0, groups = [], []
    for k in range(6):
        theta0 = np.float32(rng.uniform(0.5, 2.0))
        target = E(float(theta0)) + E(float(np.spacing(theta0))) * (
            rng.integers(1, 8) + E(0.5)
        )  # a midpoint a few ulps above θ₀
        lr = float((E(float(theta0)) - target) / -K)  # θ₀ − lr·K·sign(g) with g < 0
        params0.append(np.array([theta0], np.float32))
        groups.append({"hyperparameters": {"lr": lr, "eps": 0.0}, "params": [k]})
    delta = float(0.01 * K)
    params0.append(np.array([np.float32(delta)], np.float32))  # θ₁ = RN(Δ) − Δ
    groups.append({"hyperparameters": {"lr": 0.01, "eps": 0.0}, "params": [6]})
    grads = [np.array([[-1.0], [0.5]], np.float32)] * 6 + [np.array([[1.0], [0.5]], np.float32)]
    fast, slow, stats = _both(
        profile="torch",
        dtype="float32",
        shapes=[(1,)] * 7,
        steps=2,
        groups=groups,
        params0=params0,
        grads=grads,
    )
    assert fast == slow
    case = load_bytes(fast)
    # the constructed values did land next to the boundaries
    for k in range(6):
        t1 = case.expected["param"][k][0, 0]
        assert abs(float(t1) - float(params0[k][0])) <= 8 * float(np.spacing(params0[k][0]))
    assert abs(case.expected["param"][6][0, 0]) <= 2.0**-24 * delta


def load_bytes(data: bytes):
    from nadam_ref.golden import loads

    return loads(data)


def test_schedule_and_resume_equal_the_mpmath_oracle():
    """Format version 2: a learning rate per step, and a resume from a checkpoint."""
    fast, slow, stats = _both(
        profile="keras3",
        dtype="float32",
        shapes=[(20,)],
        steps=8,
        seed=17,
        resume_after=5,
        lr_schedule=[1e-3 * (0.9**t) for t in range(13)],
    )
    assert fast == slow and stats["fallback"] == 0


def test_long_run_equals_the_mpmath_oracle():
    fast, slow, stats = _both(
        profile="torch",
        dtype="float32",
        shapes=[(3,)],
        steps=1500,
        seed=13,
        record_steps=[1, 10, 100, 1000, 1500],
    )
    assert fast == slow and stats["fallback"] == 0


# -- sharding, Dask, the command line --------------------------------------------------------


def test_workers_give_the_same_bytes(monkeypatch):
    """Element ranges of 7 elements in 2 processes, merged: the same file."""
    options = dict(profile="torch", dtype="complex64", shapes=[(9,), (5,)], steps=6, seed=14)
    one = to_npz(make_case("c", **options))
    monkeypatch.setattr(fo, "CHUNK", 14)  # 7 complex elements per range
    two = to_npz(make_case("c", workers=2, **options))
    assert one == two


def test_dask_local_cluster_gives_the_same_bytes(monkeypatch):
    distributed = pytest.importorskip("distributed")
    options = dict(profile="keras3", dtype="float32", shapes=[(20,)], steps=6, seed=15)
    one = to_npz(make_case("c", **options))
    monkeypatch.setattr(fo, "CHUNK", 6)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        stats = {}
        dask = to_npz(make_case("c", scheduler=client, stats=stats, **options))
    assert one == dask and stats["elements"] == 20


def test_cli_generates_a_large_case_with_record_steps(tmp_path, capsys):
    args = ["generate", "--shape", "300", "--steps", "8", "--record-steps", "1,4-8:2"]
    assert golden_main([*args, "--out", str(tmp_path / "f.npz")]) == 0
    out = capsys.readouterr().out
    assert "0 of 300 elements recomputed by the mpmath path" in out
    assert golden_main([*args, "--method", "mpmath", "--out", str(tmp_path / "m.npz")]) == 0
    stats = tmp_path / "stats.json"
    assert golden_main([*args, "--stats", str(stats), "--out", str(tmp_path / "s.npz")]) == 0
    assert json.loads(stats.read_text())["fallback"] == 0
    assert (tmp_path / "f.npz").read_bytes() == (tmp_path / "m.npz").read_bytes()
    assert load(tmp_path / "f.npz").record_steps == [1, 4, 6, 8]
    with pytest.raises(SystemExit):
        golden_main([*args[:-1], "0,3", "--out", str(tmp_path / "x.npz")])
    assert "record steps must be ≥ 1" in capsys.readouterr().err


def test_check_elements_recomputes_with_mpmath_and_finds_a_changed_bit():
    case = make_case("c", profile="torch", dtype="complex64", shapes=[(4, 5)], steps=5, seed=18)
    assert fo.check_elements(case, [[0, 7, 19]]) == 0
    case.tolerance["exp_avg"][0][2, 1, 2] = (
        np.nextafter(case.tolerance["exp_avg"][0][2, 1, 2].real, np.float32(1))
        + 1j * case.tolerance["exp_avg"][0][2, 1, 2].imag
    )
    assert fo.check_elements(case, [[0, 7, 19]]) == 1  # element 7 is [1, 2]


def test_progress_bar_and_estimate(capsys):
    rule = make_case("c", shapes=[(2,)], steps=1).rules[0]
    p0 = [np.zeros(100, np.float32)]
    g = [np.ones((3, 100), np.float32)]
    _, _, stats = fo.fast_run([rule], p0, g, [3], progress=True)
    assert "300/300" in capsys.readouterr().err
    seconds, rate = fo.estimate_seconds(10**6)
    assert rate > 1e4 and 0 < seconds < 10**6 / 1e4
