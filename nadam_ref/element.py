"""The per-element NAdam update, written once.

This one plain-Python function is the whole arithmetic of a step:

* the NumPy reference (:mod:`nadam_ref.backend_numpy`) calls it on whole arrays;
* the Numba CPU backend compiles it with ``njit`` and calls it per element;
* the CUDA backend compiles it as a device function.

Because every constant arrives in the parameter's dtype (see
:class:`nadam_ref.schedule.Coefficients`) and the operations are the same
IEEE operations in the same order, all three give the same bits.  The order
below is therefore part of the contract; change it and every backend and the
golden files change with it.

The algorithm box (torch documentation), with the schedule's scalars folded in::

    g_t ← −g_t                                  if maximizing
    θ   ← θ·(1 − γλ)                            decoupled weight decay
    g_t ← g_t + λθ                              L2 weight decay
    m_t ← β1·m_{t−1} + (1 − β1)·g_t
    v_t ← β2·v_{t−1} + (1 − β2)·g_t²
    m̂_t ← μ_{t+1}/(1 − ∏_{t+1})·m_t + (1 − μ_t)/(1 − ∏_t)·g_t
    v̂_t ← v_t / (1 − β2^t)
    θ_t ← θ_{t−1} − γ·m̂_t / (√v̂_t + ε)

The last line can be rounded two ways, and the frameworks differ.  Keras
subtracts γ·m̂_t/(√v̂_t + ε) at once (one rounding of θ per step); torch adds
m̂_t's two terms separately, −γ(1 − μ_t)/(1 − ∏_t)·(g_t/d) and then
−γμ_{t+1}/(1 − ∏_{t+1})·(m_t/d) (two roundings).  In float32, θ's rounding
errors accumulate as a random walk, so the two orders drift about 5e-6 apart
in 500 steps at unit scale, while a run in the framework's own order stays
within 3e-7 of it.  ``split_update`` picks torch's order.

The denominator too: √(v̂_t) + ε as written, or √v_t / √(1 − β2^t) + ε
(``split_denominator``), as torch's foreach path and timm's optimizers round it.
"""

from __future__ import annotations

import numpy as np


def nadam_element(
    param,
    grad,
    exp_avg,
    exp_avg_sq,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    lr,
    eps,
    weight_decay,
    decay_factor,
    momentum_weight,
    grad_weight,
    momentum_step,
    grad_step,
    bias_correction2,
    bias_correction2_sqrt,
    maximize,
    split_update,
    split_denominator,
):
    """One NAdam step for one element (or, in NumPy, a whole array).

    Returns the new (θ, m, v).  The coefficient arguments are the fields of
    :class:`nadam_ref.schedule.Coefficients`, in order.
    """
    if maximize:
        grad = -grad
    if decay_factor != 1:
        param = param * decay_factor
    if weight_decay != 0:
        grad = grad + weight_decay * param
    exp_avg = beta1 * exp_avg + one_minus_beta1 * grad
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * grad * grad
    if split_denominator:
        denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
    else:
        denom = np.sqrt(exp_avg_sq / bias_correction2) + eps
    if split_update:
        param = param - grad_step * (grad / denom)
        param = param - momentum_step * (exp_avg / denom)
    else:
        m_hat = momentum_weight * exp_avg + grad_weight * grad
        param = param - lr * m_hat / denom
    return param, exp_avg, exp_avg_sq
