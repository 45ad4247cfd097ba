"""nadam_ref.minimize: NAdam as a scipy.optimize method, and the demo command.

The minima are known in closed form (Rosenbrock: x = 1; the quadratic: its
centre; Beale: (3, 1/2); Rosenbrock with x_0 ≤ 0.8: (0.8, 0.64)); trajectories
are compared with nadam_ref.NAdam stepped by hand, and with torch.optim.NAdam;
call counts with counters kept by the test.
"""

from __future__ import annotations

import inspect
import io
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
from scipy.optimize import Bounds, OptimizeResult, rosen, rosen_der

import nadam_ref
from nadam_ref import NAdam, Parameter
from nadam_ref import optimize as nopt
from nadam_ref.optimize import minimize

# -- the test problems ----------------------------------------------------------------------

CURVATURES = np.logspace(0, 4, 6)  # condition number 1e4
CENTRE = np.arange(1.0, 7.0)


def quadratic(x):
    """½ Σ a_i (x_i − c_i)², curvatures a_i from 1 to 1e4: minimum 0 at c."""
    return 0.5 * np.sum(CURVATURES * (x - CENTRE) ** 2)


def quadratic_der(x):
    return CURVATURES * (x - CENTRE)


def beale(x):
    """Beale's function: minimum 0 at (3, 1/2)."""
    X, Y = x
    return (1.5 - X + X * Y) ** 2 + (2.25 - X + X * Y**2) ** 2 + (2.625 - X + X * Y**3) ** 2


def beale_der(x):
    X, Y = x
    t1, t2, t3 = 1.5 - X + X * Y, 2.25 - X + X * Y**2, 2.625 - X + X * Y**3
    return np.array(
        [
            2 * t1 * (Y - 1) + 2 * t2 * (Y**2 - 1) + 2 * t3 * (Y**3 - 1),
            2 * t1 * X + 4 * t2 * X * Y + 6 * t3 * X * Y**2,
        ]
    )


def with_gradient(fun, der):
    """The jac=True form: fun returning (value, gradient)."""
    return lambda x: (fun(x), der(x))


# name: (fun, der, x0, minimizer, options, tolerance on max|x − x*|, iteration budget)
PROBLEMS = {
    "rosen-2d": (
        rosen,
        rosen_der,
        np.array([-1.2, 1.0]),
        np.ones(2),
        dict(lr=0.01, gtol=1e-3),
        5e-3,
        5_000,
    ),
    "rosen-10d": (
        rosen,
        rosen_der,
        np.array([-1.2, 1.0] * 5),
        np.ones(10),
        dict(lr=0.01, gtol=1e-3),
        5e-3,
        8_000,
    ),
    "quadratic": (
        quadratic,
        quadratic_der,
        np.zeros(6),
        CENTRE,
        dict(lr=0.1, gtol=1e-4),
        1e-6,
        500,
    ),
    "beale": (
        beale,
        beale_der,
        np.array([1.0, 1.0]),
        np.array([3.0, 0.5]),
        dict(lr=0.1, gtol=1e-4),
        1e-3,
        400,
    ),
}
# (how jac is given, the form scipy.optimize.minimize can pass on); "3-point" reaches a
# custom method only through the finite_diff_method option, since SciPy turns the string into None.
JAC_FORMS = ["callable", "True", "None", "2-point", "3-point"]


def jac_arguments(form, fun, der, through_scipy):
    if form == "callable":
        return fun, der, {}
    if form == "True":
        return with_gradient(fun, der), True, {}
    if form == "None":
        return fun, None, {}
    if through_scipy:
        return fun, form, {"finite_diff_method": form}
    return fun, form, {}


def run(fun, x0, jac, through_scipy, options, bounds=None, callback=None):
    if through_scipy:
        return scipy.optimize.minimize(
            fun, x0, method=minimize, jac=jac, bounds=bounds, callback=callback, options=options
        )
    return minimize(fun, x0, jac=jac, bounds=bounds, callback=callback, **options)


def hand_trajectory(der, x0, steps, bounds=None, **options):
    """Step nadam_ref.NAdam by hand, as a user would: the iterates x_1 … x_steps."""
    p = Parameter(np.array(x0) if bounds is None else np.clip(x0, bounds[0], bounds[1]))
    optimizer = NAdam([p], **options)
    out = []
    for _ in range(steps):
        p.grad = der(p.data.copy())
        optimizer.step()
        if bounds is not None:
            np.clip(p.data, bounds[0], bounds[1], out=p.data)
        out.append(p.data.copy())
    return out


# -- reaching the minima --------------------------------------------------------------------

# Each problem with each jac form through each call form, except: jac="2-point" through
# SciPy, which SciPy turns into None (the "None" case; test_jac_string_through_scipy...);
# and the 10-D Rosenbrock function, whose finite differences cost 11 or 21 evaluations a
# step, gets two finite-difference runs: SciPy's default (None, which is 2-point) through
# SciPy, and "3-point" directly.
CASES = [
    (problem, form, through_scipy)
    for problem in PROBLEMS
    for form in JAC_FORMS
    for through_scipy in (False, True)
    if not (form == "2-point" and through_scipy)
    and (
        problem != "rosen-10d"
        or form in ("callable", "True")
        or (form, through_scipy) in (("None", True), ("3-point", False))
    )
]


@pytest.mark.parametrize("problem, form, through_scipy", CASES)
def test_reaches_known_minimum(problem, form, through_scipy):
    fun, der, x0, minimizer, options, tolerance, budget = PROBLEMS[problem]
    x0_before = x0.copy()
    f, jac, extra = jac_arguments(form, fun, der, through_scipy)
    res = run(f, x0, jac, through_scipy, {**options, **extra, "maxiter": budget})
    assert isinstance(res, OptimizeResult)
    assert res.success and res.status == 0, res.message
    assert res.nit <= budget
    assert np.max(np.abs(res.x - minimizer)) <= tolerance
    assert res.fun == pytest.approx(fun(res.x), rel=0, abs=0)
    assert res.fun <= 1e-4
    np.testing.assert_allclose(
        res.jac, der(res.x), rtol=1e-4, atol=1e-4 if form in ("callable", "True") else 1e-2
    )
    assert np.max(np.abs(res.jac)) <= options["gtol"]
    np.testing.assert_array_equal(x0, x0_before)  # x0 is never modified


def test_finite_difference_forms_agree_with_their_definitions():
    """2-point is a forward difference, 3-point a central one, with SciPy's steps
    h = ε^(1/2) or ε^(1/3) · sign(x) · max(1, |x|): the first gradient, by hand."""
    x0 = np.array([-1.2, 1.0])
    for method, power in (("2-point", 1 / 2), ("3-point", 1 / 3)):
        res = minimize(rosen, x0, jac=method, maxiter=0, gtol=0)
        h = (
            np.finfo(float).eps ** power
            * np.where(x0 >= 0, 1.0, -1.0)
            * np.maximum(1.0, np.abs(x0))
        )
        expected = []
        for i in range(2):
            e = np.zeros(2)
            e[i] = h[i]
            if method == "2-point":
                expected.append((rosen(x0 + e) - rosen(x0)) / ((x0[i] + h[i]) - x0[i]))
            else:
                expected.append((rosen(x0 + e) - rosen(x0 - e)) / ((x0[i] + h[i]) - (x0[i] - h[i])))
        np.testing.assert_array_equal(res.jac, expected)
        np.testing.assert_allclose(
            res.jac, rosen_der(x0), rtol=1e-6 if method == "2-point" else 1e-9
        )


def test_finite_diff_rel_step_sets_the_step():
    x0 = np.array([-1.2, 1.0])
    res = minimize(rosen, x0, jac="2-point", finite_diff_rel_step=1e-3, maxiter=0, gtol=0)
    h = 1e-3 * x0  # a given relative step is not widened to max(1, |x|)
    expected = [
        (rosen(x0 + np.eye(2)[i] * h[i]) - rosen(x0)) / ((x0[i] + h[i]) - x0[i]) for i in range(2)
    ]
    np.testing.assert_array_equal(res.jac, expected)


def test_jac_string_through_scipy_becomes_two_point():
    """scipy.optimize.minimize hands a custom method jac=None for '3-point'; the
    documented way through is options={'finite_diff_method': '3-point'}."""
    x0 = np.array([-1.2, 1.0])
    as_none = scipy.optimize.minimize(
        rosen, x0, method=minimize, jac="3-point", options={"maxiter": 3}
    )
    two = minimize(rosen, x0, jac="2-point", maxiter=3)
    three = scipy.optimize.minimize(
        rosen, x0, method=minimize, options={"maxiter": 3, "finite_diff_method": "3-point"}
    )
    direct_three = minimize(rosen, x0, jac="3-point", maxiter=3)
    np.testing.assert_array_equal(as_none.x, two.x)
    np.testing.assert_array_equal(three.x, direct_three.x)
    assert three.nfev == 4 * 5 and as_none.nfev == 4 * 3


# -- the trajectory is NAdam stepped by hand ------------------------------------------------


@pytest.mark.parametrize("through_scipy", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_trajectory_equals_hand_stepped_nadam(through_scipy, dtype):
    x0 = np.array([-1.2, 1.0, 0.5, -0.3], dtype=dtype)
    options = dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01, momentum_decay=0.01)

    def der(x):
        return rosen_der(x).astype(dtype)

    seen = []
    res = run(
        rosen,
        x0,
        der,
        through_scipy,
        {**options, "maxiter": 300, "gtol": 0},
        callback=lambda intermediate_result: seen.append(intermediate_result.x),
    )
    hand = hand_trajectory(der, x0, 300, **options)
    assert res.nit == len(seen) == 300 and res.status == 1 and not res.success
    assert res.x.dtype == np.dtype(dtype)
    for k, (a, b) in enumerate(zip(seen, hand), start=1):
        assert a.dtype == b.dtype and np.array_equal(a, b), f"iterate {k} differs"
    np.testing.assert_array_equal(res.x, hand[-1])


def test_trajectory_with_decoupled_decay_scalar_dtype_and_bounds_equals_hand_stepped():
    x0 = np.array([-1.2, 1.0, 2.0])
    box = (np.array([-2.0, -1.0, -np.inf]), np.array([0.7, 0.45, 1.5]))
    options = dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, scalar_dtype=np.float32)
    seen = []
    minimize(
        rosen,
        x0,
        jac=rosen_der,
        bounds=Bounds(*box),
        maxiter=200,
        gtol=0,
        callback=lambda xk: seen.append(xk),
        **options,
    )
    hand = hand_trajectory(rosen_der, x0, 200, bounds=box, **options)
    assert all(np.array_equal(a, b) for a, b in zip(seen, hand)) and len(seen) == 200


def test_trajectory_matches_torch_nadam():
    """An independent implementation: torch.optim.NAdam on float64 tensors.  With
    ∏μ kept in float32 as torch keeps it, the two agree to rounding (REFERENCE §2)."""
    torch = pytest.importorskip("torch", reason="torch is needed for the cross-check")
    x0 = np.array([-1.2, 1.0, 0.3])
    seen = []
    minimize(
        rosen,
        x0,
        jac=rosen_der,
        lr=0.01,
        maxiter=200,
        gtol=0,
        scalar_dtype=np.float32,
        callback=lambda xk: seen.append(xk),
    )
    theta = torch.tensor(x0, dtype=torch.float64)
    opt = torch.optim.NAdam([theta], lr=0.01, foreach=False)
    for k in range(200):
        theta.grad = torch.from_numpy(rosen_der(theta.detach().numpy().copy()))
        opt.step()
        np.testing.assert_allclose(seen[k], theta.detach().numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "cuda"])
def test_other_backends_give_the_same_trajectory(backend):
    """The backends are bit-identical to the NumPy reference; through minimize too,
    bounds included (on CUDA x and g cross to and from the device each step)."""
    from nadam_ref import functional

    try:
        module = functional.get_backend(backend)
        getattr(module, "require_device", lambda: None)()
    except (ImportError, RuntimeError) as error:
        pytest.skip(f"backend {backend!r} unavailable here: {error}")
    bounds = [(-2.0, 0.7), (-1.0, 0.45), (None, None)]
    # With and without bounds, float64 and float32, a fixed lr (on Numba every step
    # after the first is the repeated one, planned once) and a schedule (full steps).
    for dtype, box, lr in (
        (np.float64, bounds, 0.05),
        (np.float32, None, 0.05),
        (np.float64, None, lambda k: 0.05 / k**0.5),
    ):
        x0 = np.array([-1.2, 1.0, 0.5], dtype)
        options = dict(jac=rosen_der, lr=lr, maxiter=60, gtol=0, bounds=box, return_all=True)
        reference = minimize(rosen, x0, backend="numpy", **options)
        res = minimize(rosen, x0, backend=backend, **options)
        assert res.nit == reference.nit == 60
        for k, (a, b) in enumerate(zip(res.allvecs, reference.allvecs)):
            assert a.dtype == dtype and np.array_equal(a, b), f"iterate {k} differs"
        assert box is None or max(x[1] for x in res.allvecs) == 0.45  # the projection ran


# -- counting -------------------------------------------------------------------------------


class Counted:
    def __init__(self, f):
        self.f, self.calls, self.points = f, 0, []

    def __call__(self, x, *args):
        self.calls += 1
        self.points.append(np.array(x))
        return self.f(x, *args)


@pytest.mark.parametrize("form", JAC_FORMS)
@pytest.mark.parametrize("through_scipy", [False, True])
def test_evaluation_counts(form, through_scipy):
    fun, der = Counted(beale), Counted(beale_der)
    f, jac, extra = jac_arguments(form, fun, der, through_scipy)
    if form == "True":
        both = Counted(f)
        f = both
    res = run(
        f, np.array([1.0, 1.0]), jac, through_scipy, {"lr": 0.1, "maxiter": 30, "gtol": 0, **extra}
    )
    assert res.nit == 30
    points = res.nit + 1  # x0 and each iterate
    if form == "callable":
        assert (res.nfev, res.njev) == (fun.calls, der.calls) == (points, points)
    elif form == "True":
        assert res.nfev == res.njev == both.calls == points
    else:
        per_point = {"None": 3, "2-point": 3, "3-point": 5}[form]  # n = 2
        assert fun.calls == res.nfev == per_point * points and res.njev == points


def test_args_are_passed_to_fun_and_jac():
    def fun(x, a, b):
        return a * np.sum((x - b) ** 2)

    def jac(x, a, b):
        return 2 * a * (x - b)

    res = minimize(fun, [0.0, 0.0], args=(3.0, 2.0), jac=jac, lr=0.1, gtol=1e-6)
    assert res.success and np.allclose(res.x, 2.0, atol=1e-6)
    res = scipy.optimize.minimize(
        fun, [0.0, 0.0], args=(3.0, 2.0), method=minimize, options={"lr": 0.1, "gtol": 1e-6}
    )
    assert res.success and np.allclose(res.x, 2.0, atol=1e-5)


def test_fun_may_keep_or_modify_the_x_it_receives():
    kept = []

    def fun(x):
        kept.append(x)
        value = float(np.sum(x**2))
        x[...] = 1e9  # must not disturb the run
        return value

    res = minimize(fun, [1.0, -1.0], jac=lambda x: 2 * x, lr=0.1, maxiter=3, gtol=0)
    hand = hand_trajectory(lambda x: 2 * x, np.array([1.0, -1.0]), 3, lr=0.1)
    np.testing.assert_array_equal(res.x, hand[-1])
    assert len({id(x) for x in kept}) == len(kept)


def test_tol_of_scipy_minimize_is_gtol_and_xtol_ftol_stop():
    x0 = np.array([-1.2, 1.0])
    loose = scipy.optimize.minimize(
        rosen, x0, method=minimize, jac=rosen_der, tol=1.0, options={"lr": 0.01}
    )
    assert loose.success and np.max(np.abs(rosen_der(loose.x))) <= 1.0
    assert np.max(np.abs(rosen_der(loose.x))) > 1e-3  # stopped early: tol was used
    seen = []
    res = minimize(
        rosen, x0, jac=rosen_der, lr=0.01, gtol=0, xtol=1e-4, callback=lambda xk: seen.append(xk)
    )
    assert res.success and "xtol" in res.message
    assert (
        np.max(np.abs(seen[-1] - seen[-2]))
        <= 1e-4
        < min(np.max(np.abs(a - b)) for a, b in zip(seen[1:-1], seen[:-2]))
    )
    fs = []
    res = minimize(
        rosen,
        x0,
        jac=rosen_der,
        lr=0.01,
        gtol=0,
        ftol=1e-9,
        callback=lambda intermediate_result: fs.append(intermediate_result.fun),
    )
    assert res.success and "ftol" in res.message
    assert abs(fs[-1] - fs[-2]) <= 1e-9 * max(1, abs(fs[-1]), abs(fs[-2]))


def test_l2_weight_decay_minimizes_the_regularized_objective():
    """½(x − 3)² + ½λx² with λ = 1 is smallest at x = 3/2; gtol judges its gradient."""
    res = minimize(
        lambda x: 0.5 * float((x[0] - 3) ** 2),
        [0.0],
        jac=lambda x: x - 3,
        lr=0.05,
        weight_decay=1.0,
        gtol=1e-7,
        maxiter=3000,
    )
    assert res.success and abs(res.x[0] - 1.5) <= 1e-6
    assert res.jac[0] == pytest.approx(-1.5, abs=1e-6)  # jac stays ∇f


def test_already_converged_x0_takes_no_step():
    res = minimize(rosen, [1.0, 1.0], jac=rosen_der)
    assert res.success and res.nit == 0 and res.nfev == 1 and np.array_equal(res.x, [1.0, 1.0])


def test_return_all():
    res = minimize(beale, [1.0, 1.0], jac=beale_der, lr=0.1, maxiter=5, gtol=0, return_all=True)
    hand = hand_trajectory(beale_der, np.array([1.0, 1.0]), 5, lr=0.1)
    assert len(res.allvecs) == 6 and np.array_equal(res.allvecs[0], [1.0, 1.0])
    assert all(np.array_equal(a, b) for a, b in zip(res.allvecs[1:], hand))


# -- callbacks ------------------------------------------------------------------------------


@pytest.mark.parametrize("through_scipy", [False, True])
def test_modern_callback_receives_intermediate_result(through_scipy):
    results = []

    def callback(intermediate_result):
        results.append(intermediate_result)

    res = run(
        beale,
        np.array([1.0, 1.0]),
        beale_der,
        through_scipy,
        {"lr": 0.1, "maxiter": 10, "gtol": 0},
        callback=callback,
    )
    hand = hand_trajectory(beale_der, np.array([1.0, 1.0]), 10, lr=0.1)
    assert [r.nit for r in results] == list(range(1, 11))
    for r, x in zip(results, hand):
        assert isinstance(r, OptimizeResult)
        np.testing.assert_array_equal(r.x, x)
        assert r.fun == beale(x)
        np.testing.assert_array_equal(r.jac, beale_der(x))
    assert res.fun == results[-1].fun


@pytest.mark.parametrize("through_scipy", [False, True])
def test_legacy_callback_receives_copies_of_xk(through_scipy):
    received = []

    def callback(xk):
        received.append(xk)
        xk[...] = 123.0  # a copy: the run goes on undisturbed

    run(
        beale,
        np.array([1.0, 1.0]),
        beale_der,
        through_scipy,
        {"lr": 0.1, "maxiter": 4, "gtol": 0},
        callback=callback,
    )
    assert len(received) == 4 and all(np.all(x == 123.0) for x in received)
    seen = []
    res = run(
        beale,
        np.array([1.0, 1.0]),
        beale_der,
        through_scipy,
        {"lr": 0.1, "maxiter": 4, "gtol": 0},
        callback=seen.append,
    )  # a builtin method: the legacy form
    np.testing.assert_array_equal(
        res.x, hand_trajectory(beale_der, np.array([1.0, 1.0]), 4, lr=0.1)[-1]
    )
    assert len(seen) == 4


def stopping_callback(modern, after):
    """A callback raising StopIteration on its ``after``-th call, and the x it saw."""
    calls = []

    def stop(x):
        calls.append(np.copy(x))
        if len(calls) == after:
            raise StopIteration

    if modern:

        def callback(intermediate_result):
            stop(intermediate_result.x)
    else:

        def callback(xk):
            stop(xk)

    return callback, calls


@pytest.mark.parametrize("modern", [True, False])
@pytest.mark.parametrize("through_scipy", [False, True])
def test_stop_iteration_ends_the_run_with_status_99(modern, through_scipy):
    callback, calls = stopping_callback(modern, 5)
    res = run(
        rosen, np.array([-1.2, 1.0]), rosen_der, through_scipy, {"lr": 0.01}, callback=callback
    )
    assert (
        res.status == 99 and not res.success and res.message == "`callback` raised `StopIteration`."
    )
    assert res.nit == 5 and np.array_equal(res.x, calls[-1]) and res.fun == rosen(calls[-1])
    # the status and message SciPy itself gives, with one of its own methods
    callback, _ = stopping_callback(modern, 5)
    own = scipy.optimize.minimize(
        rosen, [-1.2, 1.0], method="BFGS", jac=rosen_der, callback=callback
    )
    assert (own.status, own.message, own.nit) == (res.status, res.message, res.nit)


def test_other_callback_errors_propagate():
    def callback(xk):
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        minimize(rosen, [0.0, 0.0], jac=rosen_der, callback=callback)


# -- bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form, through_scipy, bounds_form",
    [
        ("callable", False, "Bounds"),
        ("callable", True, "pairs"),
        ("2-point", False, "pairs"),
        ("2-point", True, "Bounds"),
    ],
)
def test_bounds_by_projection(form, through_scipy, bounds_form):
    """Rosenbrock with x_0 ≤ 0.8: the minimum is on the bound, at (0.8, 0.64), f = 0.04."""
    fun = Counted(rosen)
    f, jac, extra = jac_arguments(form, fun, rosen_der, through_scipy)
    bounds = (
        Bounds([-2.0, -np.inf], [0.8, np.inf])
        if bounds_form == "Bounds"
        else [(-2.0, 0.8), (None, None)]
    )
    seen = []
    res = run(
        f,
        np.array([-1.2, 1.0]),
        jac,
        through_scipy,
        {"lr": 0.01, "gtol": 1e-4, "maxiter": 5000, **extra},
        bounds=bounds,
        callback=lambda xk: seen.append(xk),
    )
    assert res.success, res.message
    np.testing.assert_allclose(res.x, [0.8, 0.64], atol=1e-4)
    assert res.fun == pytest.approx(0.04, abs=1e-6)
    assert res.jac[0] < -0.3  # the gradient still points out of the box, as at any bounded minimum
    assert all(-2.0 <= x[0] <= 0.8 for x in seen)
    assert max(x[0] for x in seen) == 0.8  # the bound was reached
    # finite differences never evaluate fun outside the bounds
    assert all(-2.0 <= x[0] <= 0.8 for x in fun.points)


def test_x0_outside_bounds_is_projected_and_float32_bounds_round_inwards():
    seen = []
    res = minimize(rosen, [5.0, 1.0], jac=rosen_der, bounds=[(0.0, 0.8), (0.0, 0.7)], maxiter=0)
    np.testing.assert_array_equal(res.x, [0.8, 0.7])
    x0 = np.array([0.0, 0.0], dtype=np.float32)
    res = minimize(
        lambda x: -float(np.sum(x)),
        x0,
        jac=lambda x: -np.ones(2),
        lr=0.1,
        maxiter=100,
        bounds=[(-1, 0.1), (-1, 0.3)],
        callback=lambda xk: seen.append(xk),
    )
    assert res.x.dtype == np.float32
    # the float32 values nearest to 0.1 and 0.3 that do not exceed them
    assert float(res.x[0]) <= 0.1 < float(np.nextafter(res.x[0], np.float32(1)))
    assert float(res.x[1]) <= 0.3 < float(np.nextafter(res.x[1], np.float32(1)))
    assert all(np.all(x <= np.array([0.1, 0.3])) for x in seen)


# -- non-finite objectives ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("through_scipy", [False, True])
def test_non_finite_objective_returns_last_finite_x(bad, through_scipy):
    def fun(x):
        return float(np.sum((x - 2.0) ** 2)) if x[0] < 0.5 else bad

    def der(x):
        return 2 * (x - 2.0)

    hand = hand_trajectory(der, np.zeros(2), 20, lr=0.1)
    k = next(i for i, x in enumerate(hand, start=1) if x[0] >= 0.5)  # the first step past 0.5
    res = run(fun, np.zeros(2), der, through_scipy, {"lr": 0.1})
    assert not res.success and res.status == 3
    assert f"iteration {k}" in res.message and str(bad) in res.message
    assert res.nit == k
    np.testing.assert_array_equal(res.x, hand[k - 2])
    assert res.fun == fun(hand[k - 2]) and math.isfinite(res.fun)


def test_non_finite_objective_at_x0_and_non_finite_gradient():
    res = minimize(lambda x: math.nan, [1.0], jac=lambda x: x)
    assert not res.success and res.status == 3 and res.nit == 0 and "x0" in res.message
    res = minimize(
        lambda x: float(x[0] ** 2),
        [1.0, 1.0],
        lr=0.1,
        jac=lambda x: np.array([2 * x[0], math.nan if x[0] < 0.8 else 0.0]),
    )
    assert (
        not res.success
        and res.status == 3
        and "gradient" in res.message
        and "iteration" in res.message
    )
    assert res.nit >= 1


# -- bad input ------------------------------------------------------------------------------


BAD_X0 = [
    ([1.0, math.nan], ValueError, r"x0 must be finite; x0\[1\] is nan"),
    ([math.inf], ValueError, "x0 must be finite"),
    ([[1.0, 2.0], [3.0, 4.0]], ValueError, r"one-dimensional.*\(2, 2\)"),
    ([], ValueError, "empty"),
    ([[1.0], [2.0, 3.0]], ValueError, "1-D array of real numbers"),
    (["a", "b"], TypeError, "real numbers"),
    ([1 + 2j], TypeError, "complex"),
    (
        np.zeros(2, dtype=np.longdouble)
        if np.dtype(np.longdouble).itemsize > 8
        else np.array([None]),
        TypeError,
        "float32 or float64|real numbers",
    ),
]


@pytest.mark.parametrize("x0, error, match", BAD_X0)
def test_bad_x0(x0, error, match):
    with pytest.raises(error, match=match):
        minimize(rosen, x0, jac=rosen_der)


def test_scalar_and_integer_x0_are_accepted():
    res = minimize(
        lambda x: float((x[0] - 3) ** 2), 0, jac=lambda x: 2 * (x - 3), lr=0.1, gtol=1e-6
    )
    assert res.x.shape == (1,) and res.x.dtype == np.float64 and abs(res.x[0] - 3) < 1e-5


def fun_returning(value):
    return lambda x: value


@pytest.mark.parametrize(
    "fun, jac, error, match",
    [
        (fun_returning(np.zeros(2)), rosen_der, ValueError, r"fun must return a scalar.*\(2,\)"),
        (fun_returning(None), rosen_der, TypeError, "fun must return a real number"),
        (fun_returning("1.0"), rosen_der, TypeError, "fun must return a real number"),
        (fun_returning(1j), rosen_der, TypeError, "fun must return a real number"),
        (
            rosen,
            lambda x: np.zeros(3),
            ValueError,
            r"jac must return an array of x0's shape \(2,\), got shape \(3,\)",
        ),
        (rosen, lambda x: np.zeros((2, 1)), ValueError, r"shape \(2, 1\)"),
        (rosen, lambda x: None, TypeError, "jac must return real numbers"),
        (rosen, True, TypeError, "with jac=True, fun must return a pair"),
        (
            lambda x: (rosen(x), np.zeros(5)),
            True,
            ValueError,
            r"x0's shape \(2,\), got shape \(5,\)",
        ),
        (rosen, "4-point", ValueError, "jac must be a callable, True, None"),
        (rosen, 3, TypeError, "jac must be a callable"),
        ("rosen", rosen_der, TypeError, "fun must be callable"),
    ],
)
def test_bad_fun_and_jac(fun, jac, error, match):
    with pytest.raises(error, match=match):
        minimize(fun, [0.5, 0.5], jac=jac, maxiter=2)


def test_size_one_array_objective_is_accepted_as_scipy_does():
    res = minimize(lambda x: np.array([np.sum(x**2)]), [1.0], jac=lambda x: 2 * x, maxiter=2)
    assert isinstance(res.fun, float)


@pytest.mark.parametrize(
    "options, error, match",
    [
        (dict(lr=-1.0), ValueError, "Invalid learning rate"),
        (dict(betas=(0.9, 1.0)), ValueError, "Invalid beta parameter at index 1"),
        (dict(eps=-1e-8), ValueError, "Invalid epsilon"),
        (dict(maxiter=-1), ValueError, "maxiter must be a whole number"),
        (dict(maxiter=2.5), ValueError, "maxiter must be a whole number"),
        (dict(gtol=-1.0), ValueError, "gtol must be a real number"),
        (dict(ftol=math.nan), ValueError, "ftol must be a real number"),
        (dict(xtol="1e-3"), ValueError, "xtol must be a real number"),
        (dict(disp=-2), ValueError, "disp must be"),
        (dict(progress="yes"), ValueError, "progress must be"),
        (dict(backend="fortran"), ValueError, "unknown backend 'fortran'"),
        (dict(finite_diff_method="5-point"), ValueError, "finite_diff_method must be one of"),
        (dict(jac=None, finite_diff_rel_step=-1e-6), ValueError, "finite_diff_rel_step must be"),
        (
            dict(jac=None, finite_diff_rel_step=[1e-6] * 3),
            ValueError,
            "finite_diff_rel_step must be",
        ),
        (dict(jac="2-point", finite_diff_method="3-point"), ValueError, "disagree"),
        (dict(lrr=0.1), TypeError, r"unknown options \['lrr'\]"),
        (dict(hess=lambda x: np.eye(2)), ValueError, "uses no Hessian"),
        (dict(hessp=lambda x, p: p), ValueError, "uses no Hessian"),
        (
            dict(constraints={"type": "eq", "fun": lambda x: x[0]}),
            ValueError,
            "cannot handle constraints",
        ),
        (
            dict(constraints=[scipy.optimize.LinearConstraint([[1, 1]], 0, 1)]),
            ValueError,
            "cannot handle constraints",
        ),
        (dict(bounds=[(0, 1)]), ValueError, "bounds has 1 .* pairs, but x0 has 2"),
        (
            dict(bounds=[(0, 1), (2, 1)]),
            ValueError,
            "lower bound 2.0 exceeds upper bound 1.0 at index 1",
        ),
        (dict(bounds=[(0, 1), (0, 1, 2)]), ValueError, r"bounds\[1\] must be a \(min, max\) pair"),
        (dict(bounds=Bounds([0, 0, 0], [1, 1, 1])), ValueError, "bounds.lb and bounds.ub"),
        (dict(bounds=Bounds([math.nan, 0], [1, 1])), ValueError, "NaN"),
        (dict(bounds=3), TypeError, "bounds must be"),
    ],
)
def test_bad_options_fail_before_fun_is_called(options, error, match):
    fun = Counted(rosen)
    with pytest.raises(error, match=match):
        minimize(fun, [0.5, 0.5], **{"jac": rosen_der, **options})
    assert fun.calls == 0


def test_bad_options_through_scipy():
    with pytest.raises(ValueError, match="cannot handle constraints"):
        scipy.optimize.minimize(
            rosen, [0.5, 0.5], method=minimize, constraints={"type": "ineq", "fun": lambda x: x[0]}
        )
    with pytest.raises(ValueError, match="uses no Hessian"):
        scipy.optimize.minimize(
            rosen, [0.5, 0.5], method=minimize, jac=rosen_der, hess=scipy.optimize.rosen_hess
        )
    with pytest.raises(TypeError, match="unknown options"):
        scipy.optimize.minimize(rosen, [0.5, 0.5], method=minimize, options={"learning_rate": 0.1})


def test_signature_accepts_what_scipy_passes():
    """scipy.optimize.minimize calls a custom method with these keywords (see _minimize.py)."""
    parameters = inspect.signature(minimize).parameters
    for name in ("args", "jac", "hess", "hessp", "bounds", "constraints", "callback", "tol"):
        assert name in parameters
    assert nadam_ref.minimize is minimize


# -- display --------------------------------------------------------------------------------


def test_disp_prints_progress_lines_and_a_summary(capsys):
    res = minimize(beale, [1.0, 1.0], jac=beale_der, lr=0.1, maxiter=50, gtol=0, disp=10)
    out = capsys.readouterr().out
    lines = out.splitlines()
    rows = [line.split() for line in lines if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 10, 20, 30, 40, 50]
    assert float(rows[-1][1]) == pytest.approx(res.fun, rel=1e-8)
    assert "Maximum number of iterations has been exceeded." in out
    assert (
        "Iterations: 50" in out
        and "Function evaluations: 51" in out
        and "Gradient evaluations: 51" in out
    )
    assert "\r" not in out  # no bar when the output is not a terminal or a notebook
    minimize(beale, [1.0, 1.0], jac=beale_der, lr=0.1, maxiter=50)
    assert capsys.readouterr().out == ""


def test_disp_true_prints_about_ten_lines(capsys):
    minimize(beale, [1.0, 1.0], jac=beale_der, lr=0.1, maxiter=100, gtol=0, disp=True)
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.split() and line.split()[0].isdigit()
    ]
    assert len(rows) == 11


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_is_drawn_in_place_and_cleared(capsys):
    minimize(beale, [1.0, 1.0], jac=beale_der, lr=0.1, maxiter=50, gtol=0, progress=True)
    out = capsys.readouterr().out
    assert out.startswith("\r") and "50/50" in out and "100%" in out  # tqdm's bar, in place
    res = minimize(beale, [1.0, 1.0], jac=beale_der, lr=0.1, maxiter=50, gtol=0)
    assert f"f={res.fun:.4e}" in out  # the last redraw shows the final f
    assert out.endswith("\r") and out.rstrip("\r ").endswith("]")  # the last bar is blanked out


def test_bar_is_cleared_when_fun_raises(capsys):
    def fun(x):
        if x[0] > 1.3:
            raise RuntimeError("model diverged")
        return beale(x)

    with pytest.raises(RuntimeError, match="model diverged"):
        minimize(fun, [1.0, 1.0], jac=beale_der, lr=0.1, maxiter=50, gtol=0, progress=True)
    out = capsys.readouterr().out
    assert "|" in out and out.endswith("\r") and out.rstrip("\r ").endswith("]")


def test_bar_shows_only_in_terminals_and_notebooks():
    assert nopt._interactive(Terminal()) and not nopt._interactive(io.StringIO())
    display = nopt._Display(every=0, progress=None, maxiter=10, disp=True, stream=Terminal())
    assert display.bar is not None and display.delay == nopt._Display.BAR_DELAY
    display.close()
    display = nopt._Display(every=0, progress=None, maxiter=10, disp=True, stream=io.StringIO())
    assert display.bar is None


def run_display(stream, steps, seconds_per_step, every=0):
    """Drive a display as minimize does, one update per (slow) iteration."""
    display = nopt._Display(every=every, progress=None, maxiter=steps, disp=True, stream=stream)
    display.start(1.0, 1.0)
    for nit in range(1, steps + 1):
        time.sleep(seconds_per_step)
        display.update(nit, 1.0 / nit, 1.0)
    display.close()
    return stream.getvalue()


def test_bar_appears_only_after_its_delay(monkeypatch):
    monkeypatch.setattr(nopt._Display, "BAR_DELAY", 0.3)
    assert run_display(Terminal(), 10, 0.001) == ""  # 10 ms: over before the delay
    out = run_display(Terminal(), 60, 0.01)  # 0.6 s: shown from about 0.3 s on
    assert "60/60" in out and "100%" in out
    first = int(re.search(r"(\d+)/60", out).group(1))
    assert first >= 2  # nothing drawn at the start (without the delay: 0/60, then 1/60)


def test_bar_redraws_at_most_every_interval(monkeypatch):
    monkeypatch.setattr(nopt._Display, "BAR_DELAY", 0.0)
    monkeypatch.setattr(nopt._Display, "BAR_INTERVAL", 0.1)
    start = time.perf_counter()
    out = run_display(Terminal(), 100, 0.003)
    seconds = time.perf_counter() - start
    redraws = out.count("it/s")  # each drawn bar shows the rate
    assert 2 <= redraws <= seconds / 0.1 + 3  # 100 iterations, a few redraws (and the last)
    assert "100/100" in out


def test_progress_lines_and_bar_do_not_overwrite_each_other(monkeypatch):
    monkeypatch.setattr(nopt._Display, "BAR_DELAY", 0.0)
    out = run_display(Terminal(), 20, 0.002, every=5)
    lines = [line.split("\r")[-1] for line in out.split("\n")]  # what stays on screen
    assert [int(line.split()[0]) for line in lines[1:-1]] == [0, 5, 10, 15, 20]


def test_bar_in_a_notebook_is_tqdms_widget(monkeypatch):
    """In a Jupyter kernel the bar is tqdm.notebook's widget (tqdm.auto), not text."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("ipywidgets", reason="tqdm draws a notebook bar with ipywidgets")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "from scipy.optimize import rosen, rosen_der\n"
            "import nadam_ref\n"
            "res = nadam_ref.minimize(rosen, [-1.2, 1.0], jac=rosen_der, lr=0.01, maxiter=200,\n"
            "                         gtol=0, progress=True)\n"
            "print(res.nit)"
        )
    ]
    repo = str(Path(__file__).resolve().parents[1])  # the kernel imports this checkout
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    printed = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    assert printed.strip() == "200" and "|" not in printed  # no text bar beside the widget


# -- the demo command -----------------------------------------------------------------------


def demo(*argv):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "nadam_ref", "demo", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_demo_command_minimizes_rosenbrock():
    done = demo("--every", "1000")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "2-D Rosenbrock" in out and "Optimization terminated successfully" in out
    assert "backend=numba" in out  # the default backend, as NAdam(params) has it
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows][:4] == [0, 1000, 2000, 3000]
    assert "Reached the minimizer within 0.001." in out
    x = [float(v) for v in out.split("x = [")[-1].split("]")[0].split()]
    assert np.max(np.abs(np.array(x) - 1)) <= 1e-3


def test_demo_failure_and_bad_arguments(capsys):
    assert nopt.demo_main(["--maxiter", "10", "--dim", "4"]) == 1
    out = capsys.readouterr().out
    assert "4-D Rosenbrock" in out and "Did not reach the minimizer" in out
    with pytest.raises(SystemExit) as exit_info:
        nopt.demo_main(["--dim", "1"])
    assert exit_info.value.code == 2 and "--dim must be at least 2" in capsys.readouterr().err


def test_demo_command_reports_an_unusable_backend():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "nadam_ref", "demo", "--backend", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if done.returncode == 0:
        pytest.skip("a CUDA GPU is usable here")
    assert (
        done.returncode == 2
        and done.stderr.startswith("nadam-ref demo: ")
        and "Traceback" not in done.stderr
    )


def test_demo_main_in_process(capsys):
    assert nopt.demo_main(["--dim", "3", "--lr", "0.1", "--maxiter", "5"]) == 1
    out = capsys.readouterr().out
    assert "3-D Rosenbrock" in out and "Iterations: 5" in out
