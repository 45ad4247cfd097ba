"""The exact oracle: NAdam evaluated in arbitrary precision.

The oracle does not restate the algorithm.  It runs the very functions every
backend runs, :func:`nadam_ref.schedule.advance`,
:func:`nadam_ref.schedule.coefficients` and
:func:`nadam_ref.element.nadam_element`, on NumPy object arrays of mpmath
numbers carried at :data:`DIGITS` significant decimal digits (about 216 bits,
four times float64's 53).  Every value it reports is then rounded once, to
nearest-even, into the case's dtype: a *correctly rounded* result of exact
arithmetic on the case's inputs.

Inputs are binary floating-point numbers (θ₀, the gradients, and the
hyperparameters as the framework actually holds them, see
:mod:`nadam_ref.profiles`), and they are taken exactly.  The only
roundings the oracle applies on the way are the ones a profile declares part
of the algorithm: the stored step counter and ∏μ, kept in the state dtype
(torch keeps ∏μ in a float32 tensor even for float64 parameters).  The
remaining error of the oracle itself, after 10⁵ steps, is about
10⁵ · 2⁻²¹⁶ relative, far below half an ulp of float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import mpmath
import numpy as np
from mpmath.libmp import mpf_pos, round_nearest
from numpy.typing import DTypeLike

from ..element import nadam_element
from ..functional import as_real
from ..schedule import step_coefficients
from .format import arithmetic

#: Significant decimal digits the oracle carries (the issue asks for ≥ 60).
DIGITS = 65

# A private mpmath context, so that the precision and the method below do not
# touch the global ``mpmath.mp`` of the user's program.
ctx = mpmath.MPContext()
ctx.dps = DIGITS
#: The oracle's number type.
Exact = ctx.mpf
# np.sqrt on an object array calls each element's .sqrt(); mpf has none.
Exact.sqrt = lambda self: ctx.sqrt(self)


def to_exact(array) -> np.ndarray:
    """A float array as an object array of exact numbers (each float taken exactly)."""
    array = np.asarray(array)
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, x in enumerate(array.reshape(-1).tolist()):
        flat[i] = Exact(x)
    return out


def round_to(x, dtype: DTypeLike):
    """``x`` rounded to nearest (ties to even) in ``dtype`` (float32 or float64),
    overflowing to ±inf and underflowing through the subnormals as IEEE 754 does."""
    dtype = np.dtype(dtype)
    t = dtype.type
    if not ctx.isfinite(x):
        return t(float(x))
    big, limit, tiny = _limits(dtype)
    if abs(x) >= limit:
        return t(np.inf) if x > 0 else t(-np.inf)
    with np.errstate(over="ignore"):
        r = t(float(x))
    if not np.isfinite(r):
        r = t(big) if x > 0 else t(-big)
    # float(x) rounds correctly to float64 (mpmath rounds to nearest) in the
    # normal range; a second rounding to float32, or a subnormal, can be off by
    # one where the first landed on a tie.  Inside float32's normal range one
    # rounding to 24 bits (mpmath's nearest, ties to even) is exact; elsewhere
    # settle it among the neighbours.
    if dtype == np.float64 and abs(r) >= tiny:
        return r
    if dtype == np.float32 and abs(r) > tiny and isinstance(x, Exact):
        return t(float(ctx.make_mpf(mpf_pos(x._mpf_, 24, round_nearest))))
    best, best_err = r, None
    bits = np.uint64 if dtype.itemsize == 8 else np.uint32
    for c in (np.nextafter(r, t(-np.inf)), r, np.nextafter(r, t(np.inf))):
        if not np.isfinite(c):
            continue
        err = abs(Exact(float(c)) - x)
        if (
            best_err is None
            or err < best_err
            or (err == best_err and int(np.array(c).view(bits)) % 2 == 0)
        ):
            best, best_err = c, err
    return best


@cache
def _limits(dtype: np.dtype) -> tuple:
    """max, the magnitude from which IEEE rounds to ±inf (max + ½ulp(max),
    inclusive: max's last bit is odd), and the smallest normal number."""
    info = np.finfo(dtype)
    big = Exact(float(info.max))
    below = Exact(float(np.nextafter(info.max, dtype.type(0))))
    return info.max, big + (big - below) / 2, info.tiny


def round_array(array: np.ndarray, dtype: DTypeLike) -> np.ndarray:
    """An object array of exact numbers, each correctly rounded to ``dtype``."""
    out = np.empty(array.shape, dtype=dtype)
    flat = out.reshape(-1)
    for i, x in enumerate(array.reshape(-1)):
        flat[i] = round_to(x, dtype)
    return out


def state_rounding(dtype: DTypeLike | None) -> Callable:
    """The oracle's ``state_dtype``: exact numbers, rounded to ``dtype`` as a
    stored state is (or kept exact when ``dtype`` is None).  The function
    names its ``dtype``, for the running products of
    :func:`nadam_ref.schedule.accumulated_power`."""
    if dtype is None:
        return Exact

    def rounded(x):
        return Exact(float(round_to(Exact(x) if not isinstance(x, Exact) else x, dtype)))

    rounded.dtype = np.dtype(dtype)
    return rounded


def exact_run(
    rules: Sequence[dict],
    params0: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    record_steps: Sequence[int],
    *,
    observe: Callable | None = None,
    start: dict | None = None,
) -> dict[str, list[np.ndarray]]:
    """Run NAdam exactly on each parameter and return the recorded trajectory.

    ``rules[i]`` holds parameter i's arithmetic keyword arguments of
    :func:`nadam_ref.functional.plan_step` (a profile's
    :meth:`~nadam_ref.profiles.Profile.rules`) plus ``state_dtype``, the
    dtype its step and ∏μ are stored in (None: kept exact); the oracle
    computes in exact arithmetic whatever the rules' compute dtype.  ``grads[i]`` has shape [steps, *shape].

    Returns, for each quantity "param", "exp_avg", "exp_avg_sq" and
    "mu_product", one array per parameter shaped [len(record_steps), *shape]
    (∏μ: [len(record_steps)]), each value correctly rounded to the
    parameter's dtype (∏μ: to its state dtype, or float64 if exact).
    ``observe(i, t, coefficients, scalars, θ_{t−1}, g_t, θ_t, m_t, v_t)``, if
    given, is called after each step with the exact values (real views);
    :mod:`nadam_ref.golden.tolerance` uses it.  ``grads[i]`` may be None for
    the closed-loop objective ½‖θ‖², whose gradient is θ itself.

    Format version 2: a rule's ``lr_schedule`` (if any) gives the learning
    rate of each step; ``start`` (``{"step", "mu_product", "exp_avg",
    "exp_avg_sq"}``, one entry per parameter) resumes from a checkpoint,
    taken exactly like θ₀ (``record_steps`` then count from the checkpoint).
    """
    record = set(int(s) for s in record_steps)
    steps = max(record)
    out: dict[str, list] = {"param": [], "exp_avg": [], "exp_avg_sq": [], "mu_product": []}
    for i, (rule, p0, g) in enumerate(zip(rules, params0, grads)):
        dtype = np.dtype(p0.dtype)
        real_dtype = as_real(np.zeros(1, dtype)).dtype
        to_state = state_rounding(rule.get("state_dtype"))
        theta = to_exact(as_real(np.array(p0)))
        if start is None:
            m = to_exact(np.zeros(theta.shape))
            v = to_exact(np.zeros(theta.shape))
            step, mu_product = to_state(0), to_state(1)
        else:
            m = to_exact(as_real(np.array(start["exp_avg"][i])))
            v = to_exact(as_real(np.array(start["exp_avg_sq"][i])))
            step, mu_product = to_state(start["step"][i]), to_state(start["mu_product"][i])
        lrs = rule.get("lr_schedule")
        traj = {k: [] for k in out}
        for t in range(1, steps + 1):
            grad = theta if g is None else to_exact(as_real(np.array(g[t - 1])))
            rule_t = rule if lrs is None else {**rule, "lr": float(lrs[t - 1])}
            theta_new, m, v, scalars, coef = exact_step(
                rule_t, theta, grad, m, v, step, mu_product, to_state
            )
            if observe is not None:
                observe(i, t, coef, scalars, theta, grad, theta_new, m, v)
            theta = theta_new
            step, mu_product = scalars.step, scalars.mu_product
            if t in record:
                traj["param"].append(_back(round_array(theta, real_dtype), dtype))
                traj["exp_avg"].append(_back(round_array(m, real_dtype), dtype))
                traj["exp_avg_sq"].append(_back(round_array(v, real_dtype), dtype))
                state = rule.get("state_dtype") or np.float64
                traj["mu_product"].append(round_to(mu_product, state))
        shape = tuple(p0.shape)
        for k in ("param", "exp_avg", "exp_avg_sq"):
            out[k].append(np.array(traj[k], dtype=dtype).reshape((len(traj[k]),) + shape))
        out["mu_product"].append(np.array(traj["mu_product"], dtype=np.float64))
    return out


def exact_step(rule: dict, theta, grad, m, v, step, mu_product, to_state: Callable | None = None):
    """One exact step from any state: object arrays θ, g, m, v (real views),
    the stored step t−1 and ∏_{i<t} μ_i.  Returns (θ, m, v, scalars, coefficients)."""
    scalars, coef = exact_coefficients(rule, step, mu_product, to_state)
    # Scalars as 0-d object arrays: an mpf times an ndarray would first
    # try (slowly) to read the whole array as one number; 0-d object arrays
    # come back as bare numbers, hence the asarray.
    args = [x if isinstance(x, bool) else np.array(x, dtype=object) for x in coef]
    theta, m, v = (np.asarray(x, dtype=object) for x in nadam_element(theta, grad, m, v, *args))
    return theta, m, v, scalars, coef


def exact_coefficients(rule: dict, step, mu_product, to_state: Callable | None = None):
    """The exact schedule scalars and element coefficients of the step after
    the stored step t−1 and ∏_{i<t} μ_i: (scalars, coefficients), shared by
    every element (:mod:`nadam_ref.golden.fast_oracle` uses them as they are)."""
    to_state = to_state or state_rounding(rule.get("state_dtype"))
    scalars, coef = step_coefficients(
        step,
        mu_product,
        **{
            **arithmetic(rule),
            # In exact arithmetic the two ways of applying the step agree.
            "split_update": False,
            "compute_dtype": Exact,
            "scalar_dtype": to_state,
            "dtype": Exact,
        },
    )
    return scalars, coef


def _back(real: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Undo :func:`nadam_ref.functional.as_real` for complex dtypes."""
    if dtype.kind == "c":
        return np.ascontiguousarray(real).view(dtype)[..., 0]
    return real
