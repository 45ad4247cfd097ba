"""Learning-rate schedules in the NumPy front ends: ``nadam_ref.minimize``
with ``lr`` a callable of the iteration."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nadam_ref


def nadam_box(grads, lrs, x0, b1=0.9, b2=0.999, eps=1e-8, psi=4e-3):
    """The torch algorithm box in Python floats, written out here: x after
    each step with gradient ``grads[k]`` and learning rate ``lrs[k]``."""
    x, m, v, prod, out = list(x0), [0.0] * len(x0), [0.0] * len(x0), 1.0, []
    for t, (g_row, lr) in enumerate(zip(grads, lrs), start=1):
        mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        prod *= mu
        for i, g in enumerate(g_row):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat = mu_next * m[i] / (1 - prod * mu_next) + (1 - mu) * g / (1 - prod)
            x[i] -= lr * m_hat / ((v[i] / (1 - b2**t)) ** 0.5 + eps)
        out.append(list(x))
    return np.array(out)


def test_minimize_takes_lr_as_a_callable_of_the_iteration():
    """On a linear objective the gradient is the same everywhere, so the
    closed loop is an open one and the iterates follow the box exactly."""
    c = np.array([1.5, -0.25, 3.0])
    x0 = np.array([0.3, -1.0, 2.0])
    schedule = lambda k: 0.05 * 0.5 ** (k // 10)  # noqa: E731
    iterates = []
    res = nadam_ref.minimize(
        lambda x: float(c @ x),
        x0,
        jac=lambda x: c,
        lr=schedule,
        maxiter=40,
        gtol=0.0,
        callback=lambda xk: iterates.append(xk.copy()),
    )
    assert res.nit == 40
    expected = nadam_box([c] * 40, [schedule(k) for k in range(1, 41)], x0)
    assert np.abs(np.array(iterates) - expected).max() <= 1e-13
    # iteration k used lr(k): a schedule shifted by one iteration is far off
    shifted = nadam_box([c] * 40, [schedule(k) for k in range(40)], x0)
    assert np.abs(np.array(iterates) - shifted).max() > 1e-3
    assert np.array_equal(x0, [0.3, -1.0, 2.0])


@pytest.mark.parametrize("bad", [math.nan, -1e-3, "0.1", math.inf, None])
def test_minimize_names_a_bad_scheduled_lr(bad):
    calls = []

    def fun(x):
        calls.append(x.copy())
        return float(x @ x)

    with pytest.raises(ValueError, match=r"lr\(3\) must be a finite real number"):
        nadam_ref.minimize(
            fun, [1.0, 2.0], jac=lambda x: 2 * x, lr=lambda k: 0.01 if k < 3 else bad
        )
    assert len(calls) == 3  # x0 and the two steps before iteration 3
