"""Diagnosis: which other profile, or which known mistake, explains an output
that fails its golden case.

Everything in :data:`MISTAKES` below is DELIBERATELY WRONG: each is a bug
seen in NAdam ports, implemented here only so that the verifier can
recognise it.  Nothing else in nadam_ref uses them.  Each candidate is a
replay of the case (:func:`nadam_ref.golden.reference.replay`) with other
rules, a changed coefficient or (for ε inside the square root) a wrong
element update; the verifier scores each against the output in units of the
case's tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..element import nadam_element
from ..schedule import Coefficients
from .profiles import PROFILES


@dataclass
class Candidate:
    """One alternative explanation: ``kind`` is "profile" or "mistake"."""

    name: str
    label: str
    kind: str
    replay: dict = field(default_factory=dict)


def _with_weights(coef, momentum_weight: float, grad_weight: float):
    a = type(coef.lr)
    lr = float(coef.lr)
    return coef._replace(
        momentum_weight=a(momentum_weight),
        grad_weight=a(grad_weight),
        momentum_step=a(lr * momentum_weight),
        grad_step=a(lr * grad_weight),
    )


# -- the mistakes (WRONG ON PURPOSE) ------------------------------------------------------


def mistake_mu_t_for_mu_next(coef, s, t):
    """MISTAKE: μ_t and ∏_t used where NAdam has μ_{t+1} and ∏_{t+1}."""
    return _with_weights(coef, float(s.mu) / (1 - float(s.mu_product)), float(coef.grad_weight))


def mistake_no_v_bias_correction(coef, s, t):
    """MISTAKE: v̂ = v (the division by 1 − β2^t forgotten)."""
    return coef._replace(bias_correction2=type(coef.bias_correction2)(1))


def mistake_no_m_bias_correction(coef, s, t):
    """MISTAKE: m̂ = μ_{t+1}·m + (1 − μ_t)·g (the divisions by 1 − ∏μ forgotten)."""
    return _with_weights(coef, float(s.mu_next), 1 - float(s.mu))


def mistake_eps_inside_sqrt(param, grad, exp_avg, exp_avg_sq, *coefs):
    """MISTAKE: denominator √(v̂ + ε) instead of √v̂ + ε.

    The correct element update, with its step Δ = γ·m̂/(√v̂ + ε) rescaled to
    γ·m̂/√(v̂ + ε); m and v are those of the correct update.
    """
    c = Coefficients(*coefs)
    new_param, exp_avg, exp_avg_sq = nadam_element(param, grad, exp_avg, exp_avg_sq, *c)
    if c.decay_factor != 1:
        param = param * c.decay_factor
    v_hat = exp_avg_sq / c.bias_correction2
    step = (param - new_param) * ((np.sqrt(v_hat) + c.eps) / np.sqrt(v_hat + c.eps))
    return param - step, exp_avg, exp_avg_sq


def candidates(case) -> list[Candidate]:
    """The other profiles (with the case's hyperparameters where the profile
    allows them) and the known mistakes, as replays of ``case``."""
    out: list[Candidate] = []
    dtype = np.dtype(case.dtype)
    # Other profiles, and the torch profile's other scalar-state option.
    for name, prof in PROFILES.items():
        options_list = [None]
        if name == "torch":
            options_list = [{"scalar_state": "float32"}, {"scalar_state": "float64"}]
        for opts in options_list:
            if name == case.profile and (
                opts is None or opts == {**prof.options, **case.profile_options}
            ):
                continue
            rules = [None] * len(case.params0)
            try:
                for g in case.groups:
                    # what the case's own profile fixes (Keras 3's ψ = 1) is not
                    # the user's choice: the candidate takes its own default
                    fixed = set(prof.fixed) | set(PROFILES[case.profile].fixed)
                    given = {k: v for k, v in g["hyperparameters"].items() if k not in fixed}
                    hp = prof.hyperparameters(given)
                    for i in g["params"]:
                        rules[i] = prof.rules(hp, dtype, opts)
            except ValueError:
                continue  # the profile cannot express this case (weight decay, maximize)
            label = f"profile {name}" + (f" (scalar_state={opts['scalar_state']})" if opts else "")
            out.append(
                Candidate(
                    name if not opts else f"{name}:{opts['scalar_state']}",
                    label,
                    "profile",
                    {"rules": rules},
                )
            )
    rules = case.rules
    psi = rules[0]["momentum_decay"]
    if np.isfinite(psi):
        for factor in (10.0, 0.1, 250.0, 0.0):
            new = psi * factor if factor else 0.0
            if new == psi:
                continue
            out.append(
                Candidate(
                    f"psi:{new:g}",
                    f"mistake: ψ off (momentum_decay = {new:g} instead of {psi:g})",
                    "mistake",
                    {
                        "rules": [
                            {**r, "momentum_decay": r["momentum_decay"] * factor} for r in rules
                        ]
                    },
                )
            )
        out.append(
            Candidate(
                "wrong-schedule",
                "mistake: wrong schedule (μ_t and ∏_t used where μ_{t+1} and ∏_{t+1} belong)",
                "mistake",
                {"hook": mistake_mu_t_for_mu_next},
            )
        )
        out.append(
            Candidate(
                "step-from-0",
                "mistake: step counted from 0 (schedule and bias correction at t − 1)",
                "mistake",
                {"step_offset": -1},
            )
        )
    out.append(
        Candidate(
            "eps-inside-sqrt",
            "mistake: ε inside the square root (√(v̂ + ε))",
            "mistake",
            {"element": mistake_eps_inside_sqrt},
        )
    )
    out.append(
        Candidate(
            "no-v-bias-correction",
            "mistake: bias correction of v missing (v̂ = v)",
            "mistake",
            {"hook": mistake_no_v_bias_correction},
        )
    )
    if np.isfinite(psi):
        out.append(
            Candidate(
                "no-m-bias-correction",
                "mistake: bias correction of m missing (no division by 1 − ∏μ)",
                "mistake",
                {"hook": mistake_no_m_bias_correction},
            )
        )
    if np.zeros(0, dtype).real.dtype == np.float64:
        if any(np.dtype(r["scalar_dtype"]) != np.float32 for r in rules):
            out.append(
                Candidate(
                    "float32-state",
                    "mistake: float32 scalars (step and ∏μ stored in float32)",
                    "mistake",
                    {"rules": [{**r, "scalar_dtype": np.dtype(np.float32)} for r in rules]},
                )
            )
        out.append(
            Candidate(
                "float32-scalars",
                "mistake: float32 scalars (the whole schedule computed in float32)",
                "mistake",
                {
                    "rules": [
                        {
                            **r,
                            "scalar_dtype": np.dtype(np.float32),
                            "compute_dtype": np.dtype(np.float32),
                        }
                        for r in rules
                    ]
                },
            )
        )
    return out
