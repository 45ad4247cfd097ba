"""The scalar half of NAdam: the momentum schedule μ_t, its running product ∏μ,
and the bias corrections.

Everything here is computed once per step (per parameter), never per element.
The per-element half lives in :mod:`nadam_ref.element`; this module hands it a
:class:`Coefficients` tuple already rounded to the parameter's dtype, so the
element code contains no constants of its own (see REFERENCE.md §3: a literal
``1 - b1`` is typed float64 by Numba but float32 by NumPy).

The schedule (Dozat 2016, in the symbols of the torch documentation)::

    μ_t      = β1 · (1 − ½ · 0.96^(t·ψ))          momentum coefficient of step t
    ∏_t      = μ_1 · μ_2 · … · μ_t                 kept in the optimizer's state
    m̂ weight = μ_{t+1} / (1 − ∏_{t+1})            on the running average m_t
    g weight = (1 − μ_t) / (1 − ∏_t)               on the fresh gradient g_t
    v̂ scale  = 1 − β2^t                            bias correction of v_t

ψ (``momentum_decay``) sets how fast μ_t warms up from β1/2 towards β1:
torch and tf-keras's legacy Nadam use ψ = 0.004, Keras 3 effectively uses
ψ = 1, and ψ = ∞ gives the constant μ_t = β1 of optax.nadam.
"""

from __future__ import annotations

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
    try:
        dt = np.dtype(dtype)
    except TypeError:
        if callable(dtype):
            return dtype
        raise
    if dt.kind == "O" and callable(dtype) and dtype is not object:
        return dtype
    return dt.type


def momentum_coefficient(
    t, beta1, momentum_decay, *, base=MOMENTUM_BASE, dtype: DTypeLike = np.float64
):
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


def advance(
    step,
    mu_product,
    beta1: float,
    beta2: float,
    momentum_decay: float,
    *,
    compute_dtype: DTypeLike = np.float64,
    state_dtype: DTypeLike = np.float64,
    base: float = MOMENTUM_BASE,
) -> StepScalars:
    """Advance the stored schedule state (t−1, ∏_{i<t} μ_i) by one step.

    ``state_dtype`` is the dtype in which the step counter and ∏μ are *stored*;
    ``compute_dtype`` is the dtype of every other scalar.  torch keeps the step
    and ∏μ as float32 tensors but computes everything else as Python floats
    (``state_dtype=float32, compute_dtype=float64``); both Keras generations
    compute in the variable's dtype; the reference uses float64 throughout.
    """
    f = scalar_type(compute_dtype)
    s = scalar_type(state_dtype)
    # s(...) around each result: a no-op for NumPy scalars, a rounding for the
    # exact oracle's numbers, whose products are otherwise exact.
    step = s(s(step) + s(1))
    t = f(step)
    mu = momentum_coefficient(t, beta1, momentum_decay, base=base, dtype=f)
    mu_next = momentum_coefficient(t + f(1), beta1, momentum_decay, base=base, dtype=f)
    # Rounded to the state dtype *before* it is used, as torch's float32 tensor is.
    mu_product = s(s(mu_product) * s(mu))
    mu_product_next = f(mu_product) * mu_next
    bias_correction2 = f(1) - f(beta2) ** t
    return StepScalars(step, mu, mu_next, mu_product, mu_product_next, bias_correction2)


class Coefficients(NamedTuple):
    """Everything the element update needs besides the four arrays, in the
    order :func:`nadam_ref.element.nadam_element` takes them, each already
    converted to the parameter's dtype."""

    beta1: np.floating
    one_minus_beta1: np.floating
    beta2: np.floating
    one_minus_beta2: np.floating
    lr: np.floating
    eps: np.floating
    weight_decay: np.floating  # λ of L2 decay (0 when decay is decoupled)
    decay_factor: np.floating  # 1 − γλ of decoupled decay (1 otherwise)
    momentum_weight: np.floating  # μ_{t+1} / (1 − ∏_{t+1})
    grad_weight: np.floating  # (1 − μ_t) / (1 − ∏_t)
    momentum_step: np.floating  # γ·μ_{t+1} / (1 − ∏_{t+1}), for the split update
    grad_step: np.floating  # γ·(1 − μ_t) / (1 − ∏_t), for the split update
    bias_correction2: np.floating  # 1 − β2^t
    maximize: bool
    split_update: bool  # apply m̂ to θ in its two parts, as torch does


def coefficients(
    scalars: StepScalars,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    split_update: bool = True,
    compute_dtype: DTypeLike = np.float64,
    dtype: DTypeLike = np.float64,
) -> Coefficients:
    """The step's element coefficients: computed in ``compute_dtype``, then
    rounded once to ``dtype``, the (real) dtype of the parameter.

    ``split_update`` chooses how θ takes the step (see
    :func:`nadam_ref.element.nadam_element`): in two parts as torch does, or
    at once as both Keras generations do.
    """
    f = scalar_type(compute_dtype)
    a = scalar_type(dtype)
    one = f(1)
    lr, beta1, beta2, lam = f(lr), f(beta1), f(beta2), f(weight_decay)
    mu, mu_next = f(scalars.mu), f(scalars.mu_next)
    one_minus_product, one_minus_product_next = (
        one - f(scalars.mu_product),
        one - f(scalars.mu_product_next),
    )
    return Coefficients(
        beta1=a(beta1),
        one_minus_beta1=a(one - beta1),
        beta2=a(beta2),
        one_minus_beta2=a(one - beta2),
        lr=a(lr),
        eps=a(eps),
        weight_decay=a(0 if decoupled_weight_decay else lam),
        decay_factor=a(one - lr * lam if decoupled_weight_decay else one),
        momentum_weight=a(mu_next / one_minus_product_next),
        grad_weight=a((one - mu) / one_minus_product),
        # γ multiplied in first, in the order torch evaluates its addcdiv values
        momentum_step=a(lr * mu_next / one_minus_product_next),
        grad_step=a(lr * (one - mu) / one_minus_product),
        bias_correction2=a(scalars.bias_correction2),
        maximize=bool(maximize),
        split_update=bool(split_update),
    )
