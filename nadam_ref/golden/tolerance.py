"""Tolerances: how far a *correct* implementation in a given dtype may be
from the correctly rounded exact trajectory, per step and per element.

Derivation (written into every golden file as ``tolerance_derivation``)
------------------------------------------------------------------------
Let u be the unit roundoff of the parameter's dtype (2⁻²⁴ for float32,
2⁻⁵³ for float64) and u_c that of the dtype the framework computes its
scalars in.  Each IEEE operation returns its exact result times (1 + δ),
|δ| ≤ u.  With M_t = β1·M_{t−1} + (1−β1)·|g_t| the momentum of |g| (an
upper bound on |m_t| that ignores cancellation), a step of
``nadam_element`` contributes at most

* m: 4 roundings (β1·m, (1−β1)·g, their sum, and 1−β1 itself), bounded by
  K_m·u·M_t with K_m = 8 (a factor 2 of margin);
* v: 5 roundings on non-negative terms, bounded by K_v·u·v_t, K_v = 10;
* m and v again when 1 − β is computed in a short compute dtype: u_c·κ(β)
  relative on the new term, κ(x) = x/(1 − x);
* the step Δ_t = γ·m̂_t/(√v̂_t + ε): about 8 roundings, K_Δ = 16, applied to
  Δmag_t = γ·(w_m·M_t + w_g·|g_t|)/(√v̂_t + ε); plus the scalars' own error
  when they are computed in a short dtype, which cancellation amplifies:
  1 − β2^t, 1 − ∏μ and 1 − μ_t lose κ = x/(1 − x) of relative accuracy, so
  the relative error of Δ gets 4·u_c·Σκ (pow and the products within 2 ulps,
  doubled), with κ(β2^t) weighted by t + 1 (β2^t of a rounded β2 is off by
  t·u_c relative);
* θ: each of the (at most two) roundings of θ is ≤ ½ ulp of θ.

Errors are then carried forward exactly as the recurrences carry them::

    E^m_t = β1·E^m_{t−1} + (1−β1)·(E^g_t + u_c·κ(β1)·|g_t|) + K_m·u·M_t
    E^v_t = β2·E^v_{t−1} + (1−β2)·(2|g_t|·E^g_t + u_c·κ(β2)·g_t²) + K_v·u·v_t
    E^Δ_t = γ·(w_m·E^m_t + w_g·E^g_t)/(√v̂+ε) + Δmag_t·(K_Δ·u + 4·u_c·Σκ + ½·E^v_t/v_t)
    E^θ_t = (1 − γλ_decoupled)·E^θ_{t−1} + E^Δ_t + ulp(θ)

where E^g_t = c·E^θ_{t−1} is the gradient's error fed back from θ (c = λ for
L2 weight decay, plus 1 for the closed-loop objective ½‖θ‖²; 0 for open-loop
gradients).  The stored tolerance adds one ulp of the expected value, since
the expected value is itself rounded: tol = E + ulp(expected).  ∏μ: a product
of t factors, each within 4·u_c + u_s relative (u_s: its storage dtype), so
tol = t·(4·u_c + u_s)·∏μ + ulp(∏μ).

These are worst-case (first-order) bounds: rounding errors that add up as a
random walk stay one to two orders below them, while every deliberate mistake
and every other framework's arithmetic leaves them within a few steps in the
suite's cases (the tests show both).
"""

from __future__ import annotations

import numpy as np

K_M, K_V, K_STEP = 8.0, 10.0, 16.0

DERIVATION = (
    "Worst-case first-order rounding bound, per element and step (nadam_ref.golden.tolerance): "
    "E_m = b1*E_m' + (1-b1)*E_g + 8u*M (M: momentum of |g|); E_v = b2*E_v' + 2(1-b2)|g|*E_g + 10u*v; "
    "(+ (1-b)*u_c*k(b)*|g| resp. g^2 for 1-b in the scalar dtype, k(x) = x/(1-x)); "
    "E_step = lr*(w_m*E_m + w_g*E_g)/(sqrt(vhat)+eps) + "
    "|step|*(16u + 4u_c*((t+1)k(b2^t) + k(mu_t) + k(prod_t) + k(prod_t+1)) + E_v/(2v)); "
    "E_theta = (1 - lr*wd_decoupled)*E_theta' + E_step + ulp(theta); E_g = c*E_theta' (c: L2 decay, +1 closed loop); "
    "tol = E + ulp(expected); mu_product: t*(4u_c+u_s)*prod + ulp. "
    "u: unit roundoff of the dtype, u_c: of the scalar dtype."
)


def unit_roundoff(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps) / 2


class ToleranceBound:
    """Accumulates the bounds above while the oracle runs (its ``observe``)."""

    def __init__(self, rules, real_dtypes, feedback: float = 0.0, start_m=None, record=None):
        self.rules, self.real_dtypes, self.feedback = rules, real_dtypes, feedback
        # Resuming from a checkpoint: |m_k| bounds the momentum M before the first step
        # (the checkpoint's values are taken exactly, so their errors start at 0).
        self.start_m = start_m
        # The steps whose bounds are kept (None: all); memory stays bounded on long runs.
        self.record = None if record is None else set(int(t) for t in record)
        self.state: dict[int, dict] = {}
        self.tol: dict[int, dict[int, dict[str, np.ndarray]]] = {}

    def __call__(self, i, t, coef, scalars, theta_old, grad, theta, m, v):
        rule = self.rules[i]
        u = unit_roundoff(self.real_dtypes[i])
        cdt = rule.get("compute_dtype") or self.real_dtypes[i]
        u_c = unit_roundoff(cdt)
        u_s = unit_roundoff(rule.get("state_dtype") or np.float64)
        f = lambda a: np.array(a, dtype=np.float64)  # noqa: E731 exact → float64, for bounds only
        th_old, g, th, vv = f(theta_old), f(grad), f(theta), f(v)
        st = self.state.get(i)
        if st is None:
            z = np.zeros_like(th)
            M0 = z if self.start_m is None else np.abs(np.asarray(self.start_m[i], np.float64))
            st = self.state[i] = dict(M=M0.reshape(th.shape), Em=z, Ev=z, Eth=z, prod_rel=0.0)
        lam = float(coef.weight_decay)
        decay = float(coef.decay_factor)
        c = lam + self.feedback
        gmag = np.abs(g) + lam * np.abs(th_old * decay)
        Eg = c * st["Eth"]
        b1, b2 = float(coef.beta1), float(coef.beta2)
        M = b1 * st["M"] + (1 - b1) * gmag
        # 1 − β computed in a short compute dtype loses κ(β) of relative accuracy
        # (optax computes it in double, its bias corrections in the dtype).
        Em = b1 * st["Em"] + (1 - b1) * (Eg + u_c * _kappa(b1) * gmag) + K_M * u * M
        Ev = b2 * st["Ev"] + (1 - b2) * (2 * gmag * Eg + u_c * _kappa(b2) * gmag**2) + K_V * u * vv
        bc2 = float(coef.bias_correction2)
        denom = np.sqrt(vv / bc2) + float(coef.eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            lr, wm, wg = float(coef.lr), float(coef.momentum_weight), float(coef.grad_weight)
            dmag = lr * (wm * M + wg * gmag) / denom
            # κ = x/(1 − x) for each cancellation of the schedule
            # (β2^t: up to t·u_c relative, as when β2 itself is rounded to the compute dtype)
            kappa = (float(scalars.step) + 1) * _kappa(float(1 - scalars.bias_correction2)) + sum(
                _kappa(float(x)) for x in (scalars.mu, scalars.mu_product, scalars.mu_product_next)
            )
            rel_v = np.where(vv > 0, Ev / np.where(vv > 0, vv, 1), 0.0)
            Estep = lr * (wm * Em + wg * Eg) / denom + dmag * (
                K_STEP * u + 4 * u_c * kappa + 0.5 * rel_v
            )
            Estep = np.where(np.isfinite(Estep), Estep, np.inf)
        Eth = (
            abs(decay) * st["Eth"]
            + Estep
            + np.spacing(np.maximum(np.abs(th), np.abs(th_old)).astype(self.real_dtypes[i]))
        )
        prod_rel = st["prod_rel"] + 4 * u_c + u_s
        st.update(M=M, Em=Em, Ev=Ev, Eth=Eth, prod_rel=prod_rel)
        if self.record is not None and t not in self.record:
            return
        self.tol.setdefault(i, {})[t] = dict(
            param=Eth, exp_avg=Em, exp_avg_sq=Ev, mu_product_rel=prod_rel
        )


def _kappa(x: float) -> float:
    return x / (1 - x) if x < 1 else np.inf


def finish(bound: ToleranceBound, expected: dict, record_steps, dtypes) -> dict:
    """Tolerance arrays shaped like ``expected``: the bounds at the recorded
    steps plus one ulp of each expected value."""
    out = {k: [] for k in ("param", "exp_avg", "exp_avg_sq", "mu_product")}
    for i, dtype in enumerate(dtypes):
        real = np.zeros(0, dtype).real.dtype
        for q in ("param", "exp_avg", "exp_avg_sq"):
            rows = []
            for r, t in enumerate(record_steps):
                e = bound.tol[i][t][q]
                exp = expected[q][i][r]
                ulp = _ulp(exp, real)
                if np.dtype(dtype).kind == "c":
                    e = e[..., 0] + 1j * e[..., 1]
                rows.append(e + ulp)
            arr = np.array(rows).reshape(expected[q][i].shape)
            out[q].append(arr.astype(dtype))
        rel = np.array([bound.tol[i][t]["mu_product_rel"] for t in record_steps])
        mp = expected["mu_product"][i]
        state = np.dtype(bound.rules[i].get("state_dtype") or np.float64)
        out["mu_product"].append(
            rel * np.abs(mp) + np.spacing(np.abs(mp).astype(state)).astype(np.float64)
        )
    return out


def _ulp(x: np.ndarray, real) -> np.ndarray:
    """ulp of each expected value (for complex: of the real and imaginary parts, as a complex pair)."""
    x = np.asarray(x)
    if x.dtype.kind == "c":
        return np.spacing(np.abs(x.real)).astype(np.float64) + 1j * np.spacing(
            np.abs(x.imag)
        ).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(x), np.spacing(np.abs(x)), 0).astype(np.float64)
