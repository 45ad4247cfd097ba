"""Replaying a golden case in floating point with the core's own functions.

This is the float reference the golden files are checked against, and the
engine the verifier's diagnosis uses to try other profiles and known
mistakes: it runs :func:`nadam_ref.schedule.step_coefficients` and
:func:`nadam_ref.element.nadam_element` (what :func:`nadam_ref.functional.plan_step`
and the NumPy backend run, minus the input checks) with a profile's rules.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..element import nadam_element
from ..functional import as_real
from ..schedule import step_coefficients
from .format import arithmetic

QUANTITIES = ("param", "exp_avg", "exp_avg_sq", "mu_product")


def replay(
    case,
    *,
    rules: list[dict] | None = None,
    hook: Callable | None = None,
    element: Callable = nadam_element,
    step_offset: int = 0,
    steps: int | None = None,
    start: Callable | None = None,
    scalars_hook: Callable | None = None,
) -> dict[str, list[np.ndarray]]:
    """Run ``case`` in its dtype and return the recorded trajectory, shaped as
    ``case.expected``.

    ``rules`` overrides the case's per-parameter rules; ``hook(coefficients,
    scalars, t)`` may return changed coefficients; ``element`` replaces the
    element update; ``step_offset`` shifts the t the schedule sees; ``steps``
    stops early (only recorded steps up to it are returned); ``start(step,
    mu_product, m, v)`` may return a changed starting state (a checkpoint
    restored wrongly); ``scalars_hook(scalars)`` may change the schedule's
    values that the coefficients are computed from (the stored step and ∏μ
    stay the schedule's own).  The learning rate of step s is the rule's
    ``lr_schedule[s − 1]`` where the case has a schedule.
    """
    rules = case.rules if rules is None else rules
    last = case.steps if steps is None else min(steps, case.steps)
    record = [s for s in case.record_steps if s <= last]
    where = {s: r for r, s in enumerate(record)}
    out = {q: [] for q in QUANTITIES}
    for i, p0 in enumerate(case.params0):
        rule = rules[i]
        options = arithmetic(rule)
        theta = np.array(p0, copy=True)
        step0, mu_product0, m0, v0 = case.start_state(i)
        if start is not None:
            step0, mu_product0, m0, v0 = start(step0, mu_product0, m0, v0)
        m, v = np.array(m0, dtype=theta.dtype), np.array(v0, dtype=theta.dtype)
        rt, rm, rv = as_real(theta), as_real(m), as_real(v)
        state = np.dtype(rule["scalar_dtype"]).type
        step, mu_product = state(step0), state(mu_product0)
        lrs = rule.get("lr_schedule")
        traj = {q: np.zeros((len(record),) + theta.shape, theta.dtype) for q in QUANTITIES[:3]}
        traj["mu_product"] = np.zeros(len(record))
        with np.errstate(all="ignore"):
            for t in range(1, last + 1):
                g = theta.copy() if case.grads is None else case.grads[i][t - 1]
                scalars, coef = step_coefficients(
                    state(step + step_offset),
                    mu_product,
                    dtype=rt.dtype,
                    **{**options, "lr": rule["lr"] if lrs is None else lrs[t - 1]},
                    scalars_hook=scalars_hook,
                )
                if hook is not None:
                    coef = hook(coef, scalars, t)
                rt[...], rm[...], rv[...] = element(rt, as_real(np.asarray(g)), rm, rv, *coef)
                step, mu_product = state(scalars.step - step_offset), scalars.mu_product
                if t in where:
                    r = where[t]
                    traj["param"][r], traj["exp_avg"][r], traj["exp_avg_sq"][r] = theta, m, v
                    traj["mu_product"][r] = mu_product
        for q in QUANTITIES:
            out[q].append(traj[q])
    return out
