"""NAdam as a ``scipy.optimize`` method: :func:`minimize`, and the ``demo`` command.

:func:`minimize` takes a SciPy-style objective ``fun(x, *args) -> float`` and
steps the torch-style :class:`nadam_ref.NAdam` on it, the same object you
would step by hand::

    θ_0 = x0 (projected onto the bounds, if any)
    for k = 1, 2, …, maxiter:
        g = ∇f(θ_{k−1})                  jac: a callable, True, or finite differences
        θ_k = NAdam step from θ_{k−1} with gradient g
        θ_k = clip(θ_k, lb, ub)           only when bounds are given
        stop when the gradient, f or θ has converged (gtol, ftol, xtol)

so ``minimize(...)`` and the loop above produce the same iterates, bit for bit.
It works both directly and as a custom method of SciPy::

    nadam_ref.minimize(rosen, x0, jac=rosen_der, lr=0.01, maxiter=5000)
    scipy.optimize.minimize(rosen, x0, method=nadam_ref.minimize, jac=rosen_der,
                            options={"lr": 0.01, "maxiter": 5000})

NAdam is a first-order method with a fixed learning rate: it does not search
along a line, and near a minimum it keeps moving by about ``lr`` until the
second-moment average v has caught up with the smaller gradients.  Choose
``lr`` about as large as the distance you can afford to overshoot by, and
``gtol`` in line with it.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from scipy.optimize import Bounds, OptimizeResult

# SciPy's own finite differencing: the function behind its "2-point" and
# "3-point" jac for BFGS, L-BFGS-B and trust-constr (via ScalarFunction).  It
# is not in scipy.optimize's public namespace, but has kept this signature
# since SciPy 0.19; the public approx_fprime offers forward differences only.
from scipy.optimize._numdiff import approx_derivative

from . import backend as contract
from . import functional
from .optimizer import NAdam, Parameter

#: The status codes of the result, as SciPy's quasi-Newton methods use them.
SUCCESS, MAXITER, NONFINITE, CALLBACK_STOP = 0, 1, 3, 99
FINITE_DIFFERENCES = ("2-point", "3-point")
DEFAULT_MAXITER = 10_000
DEFAULT_GTOL = 1e-5


def minimize(
    fun: Callable[..., Any],
    x0: ArrayLike,
    args: tuple = (),
    jac: Callable[..., Any] | bool | str | None = None,
    callback: Callable[..., Any] | None = None,
    *,
    bounds: Bounds | Sequence[tuple[float | None, float | None]] | None = None,
    constraints: Any = (),
    hess: Any = None,
    hessp: Any = None,
    lr: float | Callable[[int], float] = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maxiter: int | None = None,
    gtol: float | None = None,
    norm: float = math.inf,
    ftol: float = 0.0,
    xtol: float = 0.0,
    tol: float | None = None,
    disp: bool | int = False,
    progress: bool | None = None,
    return_all: bool = False,
    finite_diff_method: str | None = None,
    finite_diff_rel_step: float | ArrayLike | None = None,
    scalar_dtype: DTypeLike = np.float64,
    backend: str = "numba",
    **unknown_options: Any,
) -> OptimizeResult:
    r"""Minimize ``fun(x, *args)`` with NAdam, as a ``scipy.optimize`` method.

    Iteration k = 1, 2, … takes one step of :class:`nadam_ref.NAdam`
    (torch's algorithm and defaults) with the gradient g_k = ∇f(x_{k−1})::

        μ_k = β1 (1 − ½ · 0.96^(k·ψ))                      ψ = momentum_decay
        m_k = β1 m_{k−1} + (1 − β1) g_k,   v_k = β2 v_{k−1} + (1 − β2) g_k²
        x_k = x_{k−1} − lr · (μ_{k+1} m_k / (1 − ∏_{i≤k+1} μ_i) + (1 − μ_k) g_k / (1 − ∏_{i≤k} μ_i))
                         / (√(v_k / (1 − β2^k)) + eps)

    and, with ``bounds``, projects x_k onto the box (np.clip).

    Args:
        fun: the objective, ``fun(x, *args)`` returning one real number
            (a size-1 array is accepted, as SciPy does); with ``jac=True`` it
            returns ``(value, gradient)``.
        x0: the starting point, a scalar or 1-D sequence of finite real
            numbers.  float32 and float64 keep their dtype (the iteration
            then runs in it); other real dtypes become float64.  Never
            modified.
        args: extra arguments passed to ``fun`` and ``jac``.
        jac: the gradient: a callable ``jac(x, *args)`` returning an array
            of x's shape; ``True`` if ``fun`` returns it; ``None``,
            ``"2-point"`` or ``"3-point"`` for SciPy's finite differences
            (``scipy.optimize._numdiff.approx_derivative``, as BFGS uses
            them, kept inside the bounds).  ``scipy.optimize.minimize``
            turns ``"2-point"`` and ``"3-point"`` into None before calling a
            custom method: through it, pick the scheme with the
            ``finite_diff_method`` option.
        callback: called after each iteration, either as
            ``callback(intermediate_result)`` (when its only parameter has
            that name, as SciPy detects it) with an OptimizeResult holding
            ``x``, ``fun``, ``jac`` and ``nit``, or as ``callback(xk)``.
            Raising StopIteration ends the run with status 99.
        bounds: a :class:`scipy.optimize.Bounds` or a sequence of
            ``(min, max)`` pairs (None for no bound).  NAdam steps as if
            unbounded and each iterate, x0 included, is then projected onto
            the box.  m and v are not changed by the projection, so momentum
            pushing against an active bound persists until the gradient turns.
            Convergence is judged on the projected gradient
            ``x − clip(x − g, lb, ub)``, which vanishes at a bounded minimum.
        constraints: not supported (NAdam has no way to keep general
            constraints); anything but an empty sequence raises ValueError.
        hess, hessp: not used by a first-order method; must be None.
        lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay:
            NAdam's hyperparameters, with torch's defaults.  ``lr`` may be
            a callable of the iteration: ``lr(k)`` is the learning rate of
            iteration k = 1, 2, … (e.g. ``lambda k: 0.1 * 0.99**k``).
        maxiter: the most iterations (NAdam steps); default 10 000.
        gtol: stop successfully when ``‖g‖_norm ≤ gtol`` (default 1e-5, or
            ``tol`` when that is given, as scipy.optimize.minimize passes it).
            With L2 weight decay λ, NAdam minimizes f(x) + λ‖x‖²/2 and g is
            that function's gradient ∇f + λx; with decoupled decay no gradient
            vanishes at NAdam's fixed point, so rely on ftol, xtol or maxiter.
        norm: the order of that norm (default ∞, the largest |g_i|, as BFGS).
        ftol: stop successfully when ``|f_k − f_{k−1}| ≤ ftol·max(|f_k|, |f_{k−1}|, 1)``;
            0 (the default) disables the test.
        xtol: stop successfully when ``max_i |x_k − x_{k−1}|_i ≤ xtol``;
            0 (the default) disables the test.
        disp: False for silence; True for about ten progress lines and a
            summary; an integer N for a progress line every N iterations.
        progress: a tqdm progress bar (``tqdm.auto``: a widget in a
            notebook, a line redrawn in place in a terminal): None (the default) shows
            it when ``disp`` is on, the output is a terminal or a notebook,
            and the run has lasted over a second; True always; False never.
        return_all: also return ``allvecs``, the list of every iterate.
        finite_diff_method: ``"2-point"`` or ``"3-point"``, when ``jac`` is None.
        finite_diff_rel_step: the relative step of finite differences
            (SciPy's default when None).
        scalar_dtype: dtype of NAdam's step count and ∏μ (see NAdam).
        backend: NAdam's backend: ``"numba"`` (the default, as NAdam's), ``"numpy"``
            or ``"cuda"``; the same bits on each.

    Returns:
        An OptimizeResult with ``x`` (the last iterate), ``fun``, ``jac``
        (the gradient at x), ``nit`` (NAdam steps taken), ``nfev`` (every
        call of ``fun``, finite differences included), ``njev`` (gradient
        evaluations: calls of ``jac``, of ``fun`` with ``jac=True``, or
        finite-difference gradients), ``success``, ``status`` (0 converged,
        1 maxiter reached, 3 the objective or gradient became NaN or
        infinite, 99 the callback raised StopIteration) and ``message``.
        When the objective becomes non-finite, ``x`` and ``fun`` are those of
        the last iterate where it was finite.

    Raises:
        TypeError, ValueError: for bad input (x0, options, bounds, a ``fun``
            that returns no scalar, a ``jac`` of the wrong shape), naming it.
    """
    if unknown_options:
        raise TypeError(
            f"minimize got unknown options {sorted(unknown_options)}; NAdam's options are "
            f"{sorted(_option_names())}"
        )
    if hess is not None or hessp is not None:
        raise ValueError(
            "NAdam is a first-order method and uses no Hessian: hess and hessp must be None"
        )
    if constraints is not None and not (
        isinstance(constraints, (list, tuple)) and len(constraints) == 0
    ):
        raise ValueError(
            "NAdam cannot handle constraints (only bounds, by projection); "
            "use method='SLSQP', 'trust-constr' or 'COBYQA' for constrained problems"
        )
    x = _starting_point(x0)
    if not isinstance(args, tuple):
        args = (args,)
    maxiter = DEFAULT_MAXITER if maxiter is None else _count("maxiter", maxiter)
    if gtol is None:
        gtol = DEFAULT_GTOL if tol is None else tol
    gtol, ftol, xtol = (
        _tolerance(name, value) for name, value in (("gtol", gtol), ("ftol", ftol), ("xtol", xtol))
    )
    if not (isinstance(norm, (int, float, np.integer, np.floating)) and not isinstance(norm, bool)):
        raise ValueError(f"norm must be a number (the order of the gradient norm), got {norm!r}")
    every = _display_every(disp, maxiter)
    if progress not in (None, True, False):
        raise ValueError(f"progress must be None, True or False, got {progress!r}")
    box = _box(bounds, x.size, x.dtype)
    objective = _Objective(
        fun, jac, args, finite_diff_method, _rel_step(finite_diff_rel_step, x.size), box
    )
    call_back = _callback(callback)

    if box is not None:
        np.clip(x, box[0], box[1], out=x)
    param = Parameter(x)
    schedule = lr if callable(lr) else None
    # Hyperparameters and the backend are checked here, before fun is ever called.
    optimizer = NAdam(
        [param],
        lr=0.0 if schedule is not None else lr,  # a schedule's lr is set before each step
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        momentum_decay=momentum_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        scalar_dtype=scalar_dtype,
        backend=backend,
    )
    # With L2 weight decay NAdam descends f + λ‖x‖²/2, whose gradient gtol then judges.
    l2 = 0.0 if decoupled_weight_decay else float(weight_decay)
    device = _Device(functional.get_backend(backend))
    display = _Display(every, progress, maxiter, bool(disp))
    allvecs = [x.copy()] if return_all else None

    def result(x, f, g, status, message):
        display.close()
        res = OptimizeResult(
            x=np.array(x),
            fun=f,
            jac=g,
            nit=nit,
            nfev=objective.nfev,
            njev=objective.njev,
            status=status,
            success=status == SUCCESS,
            message=message,
        )
        if allvecs is not None:
            res.allvecs = allvecs
        if disp:
            display.summary(res)
        return res

    nit = 0
    again = None  # the optimizer's repeated step, once it has one
    try:
        f, g = objective(x)
        if not math.isfinite(f):
            return result(x, f, g, NONFINITE, f"The objective is {f} at x0; no step was taken.")
        if not np.isfinite(g).all():
            return result(
                x, f, g, NONFINITE, "The gradient is not finite at x0; no step was taken."
            )
        gnorm = _norm(_projected(x, g + l2 * x if l2 else g, box), norm)
        display.start(f, gnorm)
        if gnorm <= gtol:
            return result(x, f, g, SUCCESS, _converged("the gradient norm", gnorm, "gtol", gtol))

        while True:
            if nit >= maxiter:
                return result(x, f, g, MAXITER, "Maximum number of iterations has been exceeded.")
            x_previous, f_previous = x.copy(), f
            # Planned once: with a fixed lr every step after the first is the
            # repeated one (nothing but the gradient changes), unless g is not
            # an array it takes as it is.
            if again is None or not again(g):
                param.grad = device.grad(g, param.data)
                if schedule is not None:
                    optimizer.param_groups[0]["lr"] = _scheduled_lr(schedule, nit + 1)
                optimizer.step()
                again = optimizer._repeater() if schedule is None else None
            nit += 1
            x = device.read(param)
            if box is not None and device.project(param, x, box):
                x = device.read(param)
            if not np.isfinite(x).all():
                return result(
                    x_previous,
                    f_previous,
                    g,
                    NONFINITE,
                    f"The iterate became non-finite at iteration {nit}; x is that of iteration {nit - 1}.",
                )
            f_new, g_new = objective(x)
            if not math.isfinite(f_new):
                return result(
                    x_previous,
                    f_previous,
                    g,
                    NONFINITE,
                    f"The objective became {f_new} at iteration {nit}; "
                    f"x is that of iteration {nit - 1}, the last with a finite objective.",
                )
            f, g = f_new, g_new
            if allvecs is not None:
                allvecs.append(x.copy())
            gnorm = _norm(_projected(x, g + l2 * x if l2 else g, box), norm)
            # Without bounds a norm of order ≥ 1 is finite only if g is: one pass, not two.
            if (
                not (box is None and norm >= 1 and math.isfinite(gnorm))
                and not np.isfinite(g).all()
            ):
                return result(
                    x, f, g, NONFINITE, f"The gradient became non-finite at iteration {nit}."
                )
            display.update(nit, f, gnorm)
            try:
                call_back(x, f, g, nit)
            except StopIteration:
                return result(x, f, g, CALLBACK_STOP, "`callback` raised `StopIteration`.")
            if gnorm <= gtol:
                return result(
                    x, f, g, SUCCESS, _converged("the gradient norm", gnorm, "gtol", gtol)
                )
            if ftol > 0:
                change = abs(f - f_previous)
                if change <= ftol * max(abs(f), abs(f_previous), 1.0):
                    return result(
                        x,
                        f,
                        g,
                        SUCCESS,
                        _converged("the relative change of f", change, "ftol", ftol),
                    )
            if xtol > 0:
                change = float(np.max(np.abs(x - x_previous)))
                if change <= xtol:
                    return result(
                        x,
                        f,
                        g,
                        SUCCESS,
                        _converged("the largest change of x", change, "xtol", xtol),
                    )
    except BaseException:  # an error in fun, jac or callback, or Ctrl-C: leave no bar behind
        display.close()
        raise


def _option_names() -> set[str]:
    skip = {"fun", "x0", "args", "jac", "callback", "unknown_options"}
    return set(inspect.signature(minimize).parameters) - skip


def _converged(what: str, value: float, name: str, tolerance: float) -> str:
    return f"Optimization terminated successfully: {what} {value:.3g} <= {name} = {tolerance:g}."


# -- checking the input ---------------------------------------------------------------------


def _starting_point(x0) -> np.ndarray:
    """x0 as a fresh 1-D float32 or float64 array (as SciPy: a scalar becomes one element)."""
    try:
        x = np.asarray(x0)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"x0 must be convertible to a 1-D array of real numbers: {error}"
        ) from None
    if x.dtype.kind == "c":
        raise TypeError(
            "x0 is complex; minimize works on real numbers (split real and imaginary parts)"
        )
    if x.dtype.kind not in "biuf":
        raise TypeError(f"x0 must hold real numbers, got dtype {x.dtype}")
    if x.dtype.kind == "f" and x.dtype.itemsize > 8:
        raise TypeError(f"x0 has dtype {x.dtype}; NAdam runs in float32 or float64")
    x = np.atleast_1d(x)
    if x.ndim != 1:
        raise ValueError(
            f"x0 must be one-dimensional (a scalar or a flat sequence), got shape {x.shape}"
        )
    if x.size == 0:
        raise ValueError("x0 is empty; there is nothing to minimize")
    dtype = x.dtype if x.dtype in functional.REAL_DTYPES else np.dtype(np.float64)
    x = x.astype(dtype, copy=True)
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"x0 must be finite; x0[{bad[0]}] is {x[bad[0]]}")
    return x


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a whole number ≥ 0, got {value!r}")
    return int(value)


def _scheduled_lr(schedule: Callable[[int], float], k: int) -> float:
    value = schedule(k)
    try:  # a number, or a one-element array or tensor, but not a string
        lr = math.nan if isinstance(value, (str, bytes, bool)) else float(value)
    except (TypeError, ValueError):
        lr = math.nan
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr({k}) must be a finite real number ≥ 0, got {value!r}")
    return lr


def _tolerance(name: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not value >= 0
    ):
        raise ValueError(f"{name} must be a real number ≥ 0, got {value!r}")
    return float(value)


def _rel_step(value, n: int):
    """finite_diff_rel_step: None, or positive finite numbers (one, or one per element)."""
    if value is None:
        return None
    try:
        step = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        step = np.asarray(np.nan)
    if step.shape not in ((), (n,)) or not np.all(np.isfinite(step) & (step > 0)):
        raise ValueError(
            f"finite_diff_rel_step must be None or positive finite numbers (one, or one per element of x0), "
            f"got {value!r}"
        )
    return step


def _display_every(disp, maxiter: int) -> int:
    """Iterations between progress lines (0 for none)."""
    if disp is True:
        return max(1, maxiter // 10)
    if disp is False or disp is None:
        return 0
    if isinstance(disp, (int, np.integer)) and disp >= 0:
        return int(disp)
    raise ValueError(f"disp must be True, False or a whole number of iterations ≥ 0, got {disp!r}")


def _box(bounds, n: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
    """The bounds as two arrays of x's dtype, rounded inwards so that a
    clipped x lies inside the bounds as given."""
    if bounds is None:
        return None
    if isinstance(bounds, Bounds):
        try:
            lb, ub = (
                np.broadcast_to(np.asarray(b, dtype=np.float64), (n,))
                for b in (bounds.lb, bounds.ub)
            )
        except ValueError:
            raise ValueError(
                f"bounds.lb and bounds.ub must be scalars or have x0's length {n}, "
                f"got shapes {np.shape(bounds.lb)} and {np.shape(bounds.ub)}"
            ) from None
    else:
        try:
            pairs = list(bounds)
        except TypeError:
            raise TypeError(
                f"bounds must be a scipy.optimize.Bounds or a sequence of (min, max) pairs, got {type(bounds).__name__}"
            ) from None
        if len(pairs) != n:
            raise ValueError(f"bounds has {len(pairs)} (min, max) pairs, but x0 has {n} elements")
        lb, ub = np.empty(n), np.empty(n)
        for i, pair in enumerate(pairs):
            try:
                low, high = pair
                lb[i] = -np.inf if low is None else low
                ub[i] = np.inf if high is None else high
            except (TypeError, ValueError):
                raise ValueError(
                    f"bounds[{i}] must be a (min, max) pair of numbers or None, got {pair!r}"
                ) from None
    for name, b in (("lower", lb), ("upper", ub)):
        if np.any(np.isnan(b)):
            raise ValueError(
                f"a {name} bound is NaN (at index {int(np.flatnonzero(np.isnan(b))[0])})"
            )
    bad = np.flatnonzero(lb > ub)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"lower bound {lb[i]} exceeds upper bound {ub[i]} at index {i}")
    if np.any(lb == np.inf) or np.any(ub == -np.inf):
        raise ValueError("a lower bound of +inf or an upper bound of -inf leaves no feasible point")
    with np.errstate(over="ignore"):
        low, high = lb.astype(dtype), ub.astype(dtype)
    low = np.where(low < lb, np.nextafter(low, dtype.type(np.inf)), low)
    high = np.where(high > ub, np.nextafter(high, dtype.type(-np.inf)), high)
    if np.any(low > high):  # an interval narrower than float32 can hold
        raise ValueError(f"some bounds are too close together to hold a {dtype} value between them")
    return low, high


def _as_array(value) -> np.ndarray:
    """``np.asarray(value)``, or an object array where NumPy cannot make one
    (so that the caller's dtype check rejects it with its own message)."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        return np.asarray(None)


_FLOATS = (float, np.float64, np.float32)


def _scalar(value) -> float:
    """The objective's value as a float (SciPy accepts any size-1 real array)."""
    if type(value) in _FLOATS:  # the common answer, without making an array of it
        return float(value)
    array = _as_array(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"fun must return a real number, got {type(value).__name__} {value!r:.80}")
    if array.size != 1:
        raise ValueError(f"fun must return a scalar, got an array of shape {array.shape}")
    return float(array.reshape(()))


def _gradient(value, x: np.ndarray, where: str) -> np.ndarray:
    """A gradient as a fresh array of x's shape and dtype."""
    g = value if type(value) is np.ndarray else _as_array(value)
    if g.dtype.kind not in "biuf":
        raise TypeError(
            f"{where} must return real numbers, got {type(value).__name__} of dtype {g.dtype}"
        )
    if g.ndim == 0:
        g = g.reshape(1)
    if g.shape != x.shape:
        raise ValueError(
            f"{where} must return an array of x0's shape {x.shape}, got shape {g.shape}"
        )
    if g.dtype == x.dtype:  # nothing to round (errstate alone costs more than the copy)
        return g.astype(x.dtype, copy=True)
    with np.errstate(over="ignore"):  # an overflow to inf is caught as a non-finite gradient
        return g.astype(x.dtype, copy=True)


# -- evaluating the objective ---------------------------------------------------------------


class _Objective:
    """Calls ``fun`` and the gradient as SciPy's jac options ask, and counts
    the calls.  Each call gets its own copy of x, which it may keep."""

    def __init__(self, fun, jac, args, method, rel_step, box):
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}")
        if method is not None and method not in FINITE_DIFFERENCES:
            raise ValueError(
                f"finite_diff_method must be one of {FINITE_DIFFERENCES}, got {method!r}"
            )
        if isinstance(jac, str):
            if jac not in FINITE_DIFFERENCES:
                raise ValueError(
                    f"jac must be a callable, True, None, '2-point' or '3-point', got {jac!r}"
                )
            if method is not None and method != jac:
                raise ValueError(f"jac={jac!r} and finite_diff_method={method!r} disagree")
            method, jac = jac, None
        elif not (jac is None or jac is True or jac is False or callable(jac)):
            raise TypeError(
                f"jac must be a callable, True, None, '2-point' or '3-point', got {type(jac).__name__}"
            )
        if jac is False:
            jac = None  # as scipy.optimize.minimize treats it
        self.fun, self.jac, self.args = fun, jac, args
        self.method = method or "2-point"
        self.rel_step = rel_step
        self.bounds = box if box is not None else (-np.inf, np.inf)
        self.nfev = self.njev = 0

    def value(self, x: np.ndarray) -> float:
        self.nfev += 1
        return _scalar(self.fun(x.copy(), *self.args))

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """f(x) and ∇f(x); the gradient is NaN when f(x) is not finite."""
        if self.jac is True:
            self.nfev += 1
            self.njev += 1
            out = self.fun(x.copy(), *self.args)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError(
                    f"with jac=True, fun must return a pair (value, gradient), got {type(out).__name__}"
                )
            return _scalar(out[0]), _gradient(out[1], x, "fun (its gradient, with jac=True)")
        f = self.value(x)
        if not math.isfinite(f):
            return f, np.full_like(x, np.nan)
        self.njev += 1
        if self.jac is not None:
            return f, _gradient(self.jac(x.copy(), *self.args), x, "jac")
        g = approx_derivative(
            self.value,
            x,
            method=self.method,
            rel_step=self.rel_step,
            f0=f,
            bounds=self.bounds,
        )
        return f, _gradient(g, x, "the finite-difference gradient")


def _projected(x: np.ndarray, g: np.ndarray, box) -> np.ndarray:
    """The projected gradient x − clip(x − g): g where a step can move, 0 where a bound blocks it."""
    if box is None:
        return g
    with np.errstate(over="ignore", invalid="ignore"):
        return x - np.clip(x - g, box[0], box[1])


def _norm(g: np.ndarray, order: float) -> float:
    if order == math.inf:  # what np.linalg.norm computes for it, without its dispatch
        return float(np.abs(g).max())
    return float(np.linalg.norm(g.astype(np.float64), ord=order))


def _callback(callback) -> Callable[[np.ndarray, float, np.ndarray, int], None]:
    """callback(intermediate_result) or callback(xk), told apart as SciPy does."""
    if callback is None:
        return lambda x, f, g, nit: None
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    try:
        modern = set(inspect.signature(callback).parameters) == {"intermediate_result"}
    except (TypeError, ValueError):  # some builtins have no signature
        modern = False
    if modern:
        return lambda x, f, g, nit: callback(
            intermediate_result=OptimizeResult(x=np.copy(x), fun=f, jac=np.copy(g), nit=nit)
        )
    return lambda x, f, g, nit: callback(np.copy(x))


class _Device:
    """Moves x and g between the host, where ``fun`` runs, and the backend's
    arrays (the same NumPy arrays for "numpy" and "numba"), through the hooks
    of the backend contract (:mod:`nadam_ref.backend`)."""

    def __init__(self, backend):
        self.backend = contract.of(backend)
        self.host = self.backend.is_array(np.zeros(1))

    def grad(self, g: np.ndarray, like):
        if self.host:
            return g
        # a backend may take host gradients itself (CUDA copies them in its launch)
        return g if self.backend.is_grad_array(g) else self.backend.from_host(g, like)

    def read(self, param: Parameter) -> np.ndarray:
        if self.host:
            return param.data
        return np.asarray(self.backend.to_host(param.data))

    def project(self, param: Parameter, x: np.ndarray, box) -> bool:
        """Clip the parameter onto the box; say whether anything moved."""
        outside = (x < box[0]) | (x > box[1])
        if not outside.any():
            return False
        param.data = self.backend.assign(param.data, np.clip(x, box[0], box[1]))
        return True


# -- progress -------------------------------------------------------------------------------


def _interactive(stream: TextIO) -> bool:
    """Whether ``stream`` is shown live: a terminal, or a Jupyter notebook."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):
        pass
    ipython = sys.modules.get("IPython")
    shell = (
        ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    )
    return shell is not None and hasattr(shell, "kernel")


class _Display:
    """Progress lines every ``every`` iterations, and a tqdm progress bar
    (``tqdm.auto``: a widget in a notebook, a line redrawn in place in a terminal)."""

    BAR_DELAY = 1.0  # seconds before an automatic bar appears: short runs never show one
    BAR_INTERVAL = 0.2  # seconds between redraws (a notebook keeps every one in its output)

    def __init__(
        self,
        every: int,
        progress: bool | None,
        maxiter: int,
        disp: bool,
        stream: TextIO | None = None,
    ):
        self.stream = stream if stream is not None else sys.stdout
        self.every, self.maxiter = every, maxiter
        if progress is None:
            show, self.delay = disp and maxiter > 0 and _interactive(self.stream), self.BAR_DELAY
        else:
            show, self.delay = bool(progress) and maxiter > 0, 0.0
        self.bar = None
        if show:
            if self.stream is sys.stdout:
                from tqdm.auto import tqdm  # the notebook widget when run in Jupyter
            else:
                from tqdm import tqdm
            # Redraws are rate-limited here (BAR_INTERVAL) rather than by tqdm, so that the
            # last iteration is always drawn and f is formatted only for a redraw.
            self.bar = tqdm(
                total=maxiter,
                file=self.stream,
                delay=self.delay,
                mininterval=0,
                miniters=1,
                leave=False,
                unit="it",
            )
        self.drawn_at = -math.inf

    def start(self, f: float, gnorm: float) -> None:
        if self.every:
            self._print(f"{'iter':>8} {'f(x)':>16} {'|grad|':>11}")
            self._print(f"{0:>8} {f:>16.9e} {gnorm:>11.4e}")

    def update(self, nit: int, f: float, gnorm: float) -> None:
        if self.every and nit % self.every == 0:
            self._print(f"{nit:>8} {f:>16.9e} {gnorm:>11.4e}")
        if self.bar is not None:
            now = time.perf_counter()
            if now - self.drawn_at >= self.BAR_INTERVAL or nit == self.maxiter:
                self.drawn_at = now
                self.bar.set_postfix_str(f"f={f:.4e}", refresh=False)
                self.bar.update(nit - self.bar.n)  # tqdm draws only once its delay has passed

    def _print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)  # clears the bar, prints, redraws it
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()  # leave=False: the bar is cleared
            self.bar = None
        self.stream.flush()

    def summary(self, res: OptimizeResult) -> None:
        self._print(res.message)
        self._print(f"         Current function value: {res.fun:.9e}")
        self._print(f"         Iterations: {res.nit}")
        self._print(f"         Function evaluations: {res.nfev}")
        self._print(f"         Gradient evaluations: {res.njev}")


# -- the demo command -----------------------------------------------------------------------


def demo_main(argv: list[str]) -> int:
    """``nadam-ref demo``: minimize the n-dimensional Rosenbrock function

        f(x) = Σ_{i<n−1} 100 (x_{i+1} − x_i²)² + (1 − x_i)²,

    whose minimum is f = 0 at x = (1, …, 1), from SciPy's usual starting
    point (−1.2, 1, −1.2, 1, …), printing progress.  Exits 0 when the run
    converges to within ``--tol`` of the minimizer, 1 otherwise.
    """
    from scipy.optimize import rosen, rosen_der

    parser = argparse.ArgumentParser(
        prog="nadam-ref demo",
        description="Minimize the Rosenbrock function with NAdam (scipy.optimize-style) and print progress.",
    )
    parser.add_argument("--dim", type=int, default=2, help="dimension n >= 2 (default 2)")
    parser.add_argument(
        "--maxiter", type=int, default=20_000, help="most NAdam steps (default 20000)"
    )
    parser.add_argument("--lr", type=float, default=0.005, help="learning rate (default 0.005)")
    parser.add_argument(
        "--gtol", type=float, default=1e-4, help="stop when max |gradient| <= gtol (default 1e-4)"
    )
    parser.add_argument(
        "--every", type=int, default=None, help="a progress line every N steps (default maxiter/10)"
    )
    parser.add_argument(
        "--tol", type=float, default=1e-3, help="success when max |x - 1| <= tol (default 1e-3)"
    )
    parser.add_argument(
        "--jac",
        choices=("exact", "2-point", "3-point"),
        default="exact",
        help="gradient: scipy.optimize.rosen_der, or SciPy's finite differences (default exact)",
    )
    parser.add_argument(
        "--backend",
        default=inspect.signature(NAdam).parameters["backend"].default,  # NAdam's own: numba
        choices=sorted(functional.BACKENDS),
        help="NAdam backend (default: NAdam's, numba)",
    )
    options = parser.parse_args(argv)
    if options.dim < 2:
        parser.error("--dim must be at least 2")
    if options.maxiter < 0 or not options.lr > 0 or options.gtol < 0 or options.tol < 0:
        parser.error("--maxiter, --gtol and --tol must be >= 0 and --lr > 0")
    if options.every is not None and options.every < 1:
        parser.error("--every must be at least 1")

    x0 = np.array([-1.2, 1.0] * (options.dim // 2) + [-1.2] * (options.dim % 2))
    jac = rosen_der if options.jac == "exact" else options.jac
    print(
        f"Minimizing the {options.dim}-D Rosenbrock function with NAdam "
        f"(lr={options.lr:g}, maxiter={options.maxiter}, gtol={options.gtol:g}, jac={options.jac}, "
        f"backend={options.backend})"
    )
    print(
        f"x0 = {np.array2string(x0, precision=4)}, f(x0) = {rosen(x0):.6g}; the minimum is f = 0 at x = (1, ..., 1)"
    )
    start = time.perf_counter()
    try:
        res = minimize(
            rosen,
            x0,
            jac=jac,
            lr=options.lr,
            maxiter=options.maxiter,
            gtol=options.gtol,
            disp=options.every if options.every is not None else True,
            backend=options.backend,
        )
    except (ImportError, RuntimeError) as error:  # a backend that cannot run here
        print(f"nadam-ref demo: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    error = float(np.max(np.abs(res.x - 1.0)))
    print(f"x = {np.array2string(res.x, precision=6)}")
    print(f"f(x) = {res.fun:.3e}, max |x - 1| = {error:.3e}, {res.nit} steps in {seconds:.2f} s")
    if res.success and error <= options.tol:
        print(f"Reached the minimizer within {options.tol:g}.")
        return 0
    print(f"Did not reach the minimizer within {options.tol:g} ({res.message})")
    return 1
