"""The scalar half of NAdam: the momentum schedule μ_t, its running product ∏μ,
and the bias corrections.

Everything here is computed once per step (per parameter), never per element.
The per-element half lives in :mod:`nadam_ref.element`; this module hands it a
:class:`Coefficients` tuple already rounded to the parameter's dtype, so the
element code contains no constants of its own (a literal ``1 - b1`` is typed
float64 by Numba but float32 by NumPy: docs/frameworks.md, "Numerics").

The schedule (Dozat 2016, in the symbols of the torch documentation)::

    μ_t      = β1 · (1 − ½ · 0.96^(t·ψ))          momentum coefficient of step t
    ∏_t      = μ_1 · μ_2 · … · μ_t                 kept in the optimizer's state
    m̂ weight = μ_{t+1} / (1 − ∏_{t+1})            on the running average m_t
    g weight = (1 − μ_t) / (1 − ∏_t)               on the fresh gradient g_t
    v̂ scale  = 1 − β2^t                            bias correction of v_t

ψ (``momentum_decay``) sets how fast μ_t warms up from β1/2 towards β1:
torch and tf-keras's legacy Nadam use ψ = 0.004, Keras 3 effectively uses
ψ = 1, and ψ = ∞ gives the constant μ_t = β1 of optax.nadam.

Two variants that real frameworks compute (each a switch below, chosen by a
profile, :mod:`nadam_ref.profiles`):

* accumulated powers (paddle): 0.96^t and β2^t are not evaluated from t but
  kept as running products, multiplied by 0.96 and β2 once per step in the
  state dtype; then μ_t = β1(1 − ½·(0.96^t)^ψ) and
  μ_{t+1} = β1(1 − ½·(0.96^t)^ψ·0.96^ψ);
* the momentum term's bias correction to t (AlgoPerf / timm NAdamW):
  m̂ weight = μ_{t+1} / (1 − ∏_t) instead of μ_{t+1} / (1 − ∏_{t+1}).
"""

from __future__ import annotations

import typing
from typing import NamedTuple

import numpy as np
from numpy.typing import DTypeLike

#: The base of the momentum warm-up, 0.96 in every framework.
MOMENTUM_BASE = 0.96


def scalar_type(dtype):
    """The function that converts a number to ``dtype``: the NumPy scalar type
    of a dtype, or ``dtype`` itself when it is some other callable (a number
    type such as an mpmath context's ``mpf``, or a rounding function), which
    is how :mod:`nadam_ref.golden.oracle` runs these same formulas exactly."""
    if callable(dtype) and not isinstance(dtype, type):
        return dtype  # a rounding function (which may name its dtype, for np.dtype to find)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        if callable(dtype):
            return dtype
        raise
    if dt.kind == "O" and callable(dtype) and dtype is not object:
        return dtype
    return dt.type


def momentum_coefficient(t, beta1, momentum_decay, base=MOMENTUM_BASE, dtype=np.float64):
    """μ_t = β1 · (1 − ½ · base^(t·ψ)), evaluated in ``dtype``.

    With ψ = 0 every μ_t is β1/2; as t·ψ grows μ_t rises towards β1.
    """
    f = scalar_type(dtype)
    return f(beta1) * (f(1) - f(0.5) * f(base) ** (f(t) * f(momentum_decay)))


class StepScalars(NamedTuple):
    """The schedule's values for one step t (all in the compute dtype except
    ``step`` and ``mu_product``, which are stored in the state dtype)."""

    step: np.floating  # t, as stored in the optimizer state
    mu: np.floating  # μ_t
    mu_next: np.floating  # μ_{t+1}
    mu_product: np.floating  # ∏_{i≤t} μ_i, as stored in the optimizer state
    mu_product_next: np.floating  # ∏_{i≤t+1} μ_i
    bias_correction2: np.floating  # 1 − β2^t


#: (factor, state dtype) → [1, factor, factor², …] as running products in that dtype.
_POWERS: dict[tuple, list] = {}


def accumulated_power(factor, t: int, state) -> object:
    """factor^t as a framework that keeps it as a running product holds it:
    1 multiplied by ``factor`` t times, each product rounded by ``state`` (the
    state dtype, or the exact oracle's rounding function).

    A running product depends only on t, so it is derived from the stored
    step rather than stored: the sequence is kept per (factor, dtype) and
    extended as t grows, one multiplication per step, as the framework does.
    """
    dtype = getattr(state, "dtype", state)  # the oracle's rounding names its dtype
    try:
        key = (float(factor), np.dtype(dtype))
    except TypeError:
        key = None
    s = scalar_type(key[1] if key is not None else state)
    seq = _POWERS.setdefault(key, [s(1)]) if key is not None else [s(1)]
    while len(seq) <= t:
        seq.append(s(seq[-1] * s(factor)))
    return seq[t] if key is None else scalar_type(state)(float(seq[t]))  # float(): exact


def advance(
    step,
    mu_product,
    beta1: float,
    beta2: float,
    momentum_decay: float,
    compute_dtype: DTypeLike = np.float64,
    state_dtype: DTypeLike = np.float64,
    base: float = MOMENTUM_BASE,
    accumulated_powers: bool = False,
) -> StepScalars:
    """Advance the stored schedule state (t−1, ∏_{i<t} μ_i) by one step.

    ``state_dtype`` is the dtype in which the step counter and ∏μ are *stored*;
    ``compute_dtype`` is the dtype of every other scalar.  torch keeps the step
    and ∏μ as float32 tensors but computes everything else as Python floats
    (``state_dtype=float32, compute_dtype=float64``); both Keras generations
    compute in the variable's dtype; the reference uses float64 throughout.

    ``accumulated_powers``: 0.96^t and β2^t are running products kept in the
    state dtype (paddle; see :func:`accumulated_power`) rather than powers of t.
    """
    f = scalar_type(compute_dtype)
    s = scalar_type(state_dtype)
    # s(...) around each result: a no-op for NumPy scalars, a rounding for the
    # exact oracle's numbers, whose products are otherwise exact.
    step = s(s(step) + s(1))
    t = f(step)
    if accumulated_powers:
        n = int(step)
        warm = f(0.5) * f(accumulated_power(base, n, state_dtype)) ** f(momentum_decay)
        mu = f(beta1) * (f(1) - warm)
        mu_next = f(beta1) * (f(1) - warm * f(base) ** f(momentum_decay))
        bias_correction2 = f(1) - f(accumulated_power(beta2, n, state_dtype))
    else:
        mu = momentum_coefficient(t, beta1, momentum_decay, base=base, dtype=f)
        mu_next = momentum_coefficient(t + f(1), beta1, momentum_decay, base=base, dtype=f)
        bias_correction2 = f(1) - f(beta2) ** t
    # Rounded to the state dtype *before* it is used, as torch's float32 tensor is.
    mu_product = s(s(mu_product) * s(mu))
    mu_product_next = f(mu_product) * mu_next
    return StepScalars(step, mu, mu_next, mu_product, mu_product_next, bias_correction2)


class Coefficients(NamedTuple):
    """Everything the element update needs besides the four arrays, in the
    order :func:`nadam_ref.element.nadam_element` takes them, each already
    converted to the parameter's dtype.  This class is the one statement of
    that order: every backend derives its argument lists from its fields."""

    beta1: np.floating
    one_minus_beta1: np.floating
    beta2: np.floating
    one_minus_beta2: np.floating
    lr: np.floating
    eps: np.floating
    weight_decay: np.floating  # λ of L2 decay (0 when decay is decoupled)
    decay_factor: np.floating  # 1 − γλ of decoupled decay (1 otherwise)
    momentum_weight: np.floating  # μ_{t+1} / (1 − ∏_{t+1})  (or / (1 − ∏_t))
    grad_weight: np.floating  # (1 − μ_t) / (1 − ∏_t)
    momentum_step: np.floating  # γ·momentum_weight, for the split update
    grad_step: np.floating  # γ·grad_weight, for the split update
    bias_correction2: np.floating  # 1 − β2^t
    bias_correction2_sqrt: np.floating  # √(1 − β2^t), for the split denominator
    maximize: bool
    split_update: bool  # apply m̂ to θ in its two parts, as torch does
    split_denominator: bool  # √v/√(1 − β2^t) + ε rather than √(v/(1 − β2^t)) + ε


#: The fields of :class:`Coefficients` that are flags; the others are numbers.
FLAGS = tuple(name for name, kind in typing.get_type_hints(Coefficients).items() if kind is bool)

#: The two bias corrections of the momentum term (see :func:`coefficients`).
MOMENTUM_CORRECTIONS = ("next", "current")


def check_momentum_correction(momentum_correction: str) -> None:
    """ValueError unless ``momentum_correction`` is one of :data:`MOMENTUM_CORRECTIONS`."""
    if momentum_correction not in MOMENTUM_CORRECTIONS:
        raise ValueError(
            f"momentum_correction must be one of {MOMENTUM_CORRECTIONS}, got {momentum_correction!r}"
        )


def coefficients(
    scalars: StepScalars,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    split_update: bool = True,
    split_denominator: bool = False,
    momentum_correction: str = "next",
    one_minus_beta1: float | None = None,
    one_minus_beta2: float | None = None,
    decay_factor_dtype: DTypeLike | None = None,
    compute_dtype: DTypeLike = np.float64,
    dtype: DTypeLike = np.float64,
) -> Coefficients:
    """The step's element coefficients: computed in ``compute_dtype``, then
    rounded once to ``dtype``, the (real) dtype of the parameter.

    ``split_update`` chooses how θ takes the step (see
    :func:`nadam_ref.element.nadam_element`): in two parts as torch does, or
    at once as both Keras generations do.  ``split_denominator`` divides √v
    by √(1 − β2^t) (torch foreach, timm) instead of taking √(v/(1 − β2^t)).

    ``momentum_correction``: ``"next"`` divides the momentum term by
    1 − ∏_{t+1} (NAdam, every framework but one); ``"current"`` by 1 − ∏_t
    (AlgoPerf's NAdamW, timm.optim.NAdamW: with μ = β1 that is 1 − β1^t,
    where optax.nadamw has 1 − β1^(t+1)).

    ``one_minus_beta1``/``one_minus_beta2``: 1 − β as the framework holds it
    (Keras 3 on torch computes it in double and rounds it once to the
    variable's dtype), instead of subtracting in the compute dtype.
    ``decay_factor_dtype``: the dtype 1 − γλ is computed in (Keras 3:
    float32), if not the compute dtype.
    """
    f = scalar_type(compute_dtype)
    a = scalar_type(dtype)
    one = f(1)
    lr_f, beta1, beta2, lam = f(lr), f(beta1), f(beta2), f(weight_decay)
    mu, mu_next = f(scalars.mu), f(scalars.mu_next)
    one_minus_product = one - f(scalars.mu_product)
    if momentum_correction == "next":
        momentum_denominator = one - f(scalars.mu_product_next)
    else:
        momentum_denominator = one_minus_product
    if decoupled_weight_decay:
        if decay_factor_dtype is None:
            decay_factor = one - lr_f * lam
        else:  # float(): exact, and a number the oracle's type takes
            d = scalar_type(decay_factor_dtype)
            decay_factor = f(float(d(1) - d(lr) * d(weight_decay)))
    else:
        decay_factor = one
    bias_correction2 = f(scalars.bias_correction2)
    # (each value first, then the tuple: Numba compiles this function too)
    if one_minus_beta1 is None:
        one_minus_beta1 = one - beta1
    if one_minus_beta2 is None:
        one_minus_beta2 = one - beta2
    if decoupled_weight_decay:
        lam = f(0)  # no L2 term
    return Coefficients(
        beta1=a(beta1),
        one_minus_beta1=a(one_minus_beta1),
        beta2=a(beta2),
        one_minus_beta2=a(one_minus_beta2),
        lr=a(lr_f),
        eps=a(eps),
        weight_decay=a(lam),
        decay_factor=a(decay_factor),
        momentum_weight=a(mu_next / momentum_denominator),
        grad_weight=a((one - mu) / one_minus_product),
        # γ multiplied in first, in the order torch evaluates its addcdiv values
        momentum_step=a(lr_f * mu_next / momentum_denominator),
        grad_step=a(lr_f * (one - mu) / one_minus_product),
        bias_correction2=a(bias_correction2),
        bias_correction2_sqrt=a(np.sqrt(bias_correction2)),
        maximize=bool(maximize),
        split_update=bool(split_update),
        split_denominator=bool(split_denominator),
    )


def step_coefficients(
    step,
    mu_product,
    *,
    dtype: DTypeLike,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    split_update: bool = True,
    split_denominator: bool = False,
    momentum_correction: str = "next",
    one_minus_beta1: float | None = None,
    one_minus_beta2: float | None = None,
    decay_factor_dtype: DTypeLike | None = None,
    accumulated_powers: bool = False,
    scalar_dtype: DTypeLike = np.float64,
    compute_dtype: DTypeLike = np.float64,
    momentum_base: float = MOMENTUM_BASE,
    scalars_hook: typing.Callable[[StepScalars], StepScalars] | None = None,
) -> tuple[StepScalars, Coefficients]:
    """One step of the schedule from the stored (t−1, ∏_{i<t} μ_i), and the
    element coefficients for parameters of ``dtype``: :func:`advance` then
    :func:`coefficients`.  Every keyword but ``dtype`` is an arithmetic option
    of :func:`nadam_ref.functional.plan_step` (which a profile supplies,
    :meth:`nadam_ref.profiles.Profile.plan_options`); ``scalar_dtype`` is the
    dtype the step and ∏μ are stored in.  ``scalars_hook(scalars)``, if given,
    may change the values the coefficients are computed from (the golden
    diagnosis replays ports' mistakes so); the scalars returned are the
    schedule's own."""
    check_momentum_correction(momentum_correction)
    scalars = advance(
        step,
        mu_product,
        beta1,
        beta2,
        momentum_decay,
        compute_dtype=compute_dtype,
        state_dtype=scalar_dtype,
        base=momentum_base,
        accumulated_powers=accumulated_powers,
    )
    coefs = coefficients(
        scalars if scalars_hook is None else scalars_hook(scalars),
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
        split_update=split_update,
        split_denominator=split_denominator,
        momentum_correction=momentum_correction,
        one_minus_beta1=one_minus_beta1,
        one_minus_beta2=one_minus_beta2,
        decay_factor_dtype=decay_factor_dtype,
        compute_dtype=compute_dtype,
        dtype=dtype,
    )
    return scalars, coefs
