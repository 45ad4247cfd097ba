"""Diagnosis: which profile, which known mistake, or which profile *plus* a
mistake explains an output that fails its golden case.

A *candidate* is a profile (every profile, the case's own included, and
torch with either scalar state) with at most one mistake from
:data:`MISTAKES`.  Each is a replay of the case
(:func:`nadam_ref.golden.reference.replay`), the core's own functions with
one declared thing changed: the profile's rules, the schedule's values handed
to the coefficients, the state the run starts from, the step the schedule
sees, or the element update.  The verifier scores every candidate against
the output in units of the case's tolerance.

Everything in :data:`MISTAKES` is DELIBERATELY WRONG: each is a bug found in
real NAdam ports, implemented here only so that the verifier can recognise
it.  Nothing else in nadam_ref uses them.  The real ones:

* μ_t counted twice in ∏_{t+1} (∏_t·μ_t·μ_{t+1} with ∏_t already holding
  μ_t): torch.optim.NAdam before 2.0 (fixed in pytorch pull request 92699),
  and TorchSharp;
* ∏μ initialised to 0 instead of 1 (TorchSharp issue 1154): 1 − ∏ is then 1
  and the momentum is never bias-corrected;
* the hyperparameters rounded to float32 in a float64 run (paddle's NAdam
  kernel takes β1, β2, ε and ψ as C ``float``);
* plain Adam shipped as NAdam (no Nesterov look-ahead);
* and the classic slips: μ_t where μ_{t+1} belongs, the step counted from
  0, ε inside the square root, a bias correction left out, ψ off by a
  factor, scalars in float32, and on a resume the step count, ∏μ or m and v
  not restored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..element import nadam_element
from ..profiles import PROFILES
from ..schedule import Coefficients, StepScalars
from .generate import group_rules


@dataclass
class Candidate:
    """One explanation to try: ``profile`` (with its option, e.g.
    "torch:float64") and ``mistake`` (a name in :data:`MISTAKES`, or None)."""

    name: str
    label: str
    profile: str
    mistake: str | None
    replay: dict = field(default_factory=dict)


# -- the mistakes (WRONG ON PURPOSE) ------------------------------------------------------
# Each changes one declared thing of a replay: a scalars hook changes the values of
# nadam_ref.schedule.StepScalars that the coefficients are computed from, a start hook the
# state the run begins with, a rule change what the profile declares.


def _like(x, value):
    """``value`` in the number type of ``x`` (the compute or state dtype)."""
    return type(x)(value)


def mistake_mu_twice(s: StepScalars) -> StepScalars:
    """MISTAKE: ∏_{t+1} computed as ∏_t·μ_t·μ_{t+1}, μ_t counted twice
    (torch before 2.0, TorchSharp)."""
    return s._replace(mu_product_next=s.mu_product_next * _like(s.mu_product_next, s.mu))


def mistake_mu_t_for_mu_next(s: StepScalars) -> StepScalars:
    """MISTAKE: μ_t and ∏_t used where NAdam has μ_{t+1} and ∏_{t+1}
    (with a constant μ, as optax: the momentum term divided by 1 − β1^t, as
    AlgoPerf's NAdamW and timm.optim.NAdamW do)."""
    return s._replace(mu_next=s.mu, mu_product_next=_like(s.mu_product_next, s.mu_product))


def mistake_no_v_bias_correction(s: StepScalars) -> StepScalars:
    """MISTAKE: v̂ = v (the division by 1 − β2^t forgotten)."""
    return s._replace(bias_correction2=_like(s.bias_correction2, 1))


def mistake_no_m_bias_correction(s: StepScalars) -> StepScalars:
    """MISTAKE: m̂ = μ_{t+1}·m + (1 − μ_t)·g (the divisions by 1 − ∏μ forgotten)."""
    return s._replace(
        mu_product=_like(s.mu_product, 0), mu_product_next=_like(s.mu_product_next, 0)
    )


def mistake_no_nesterov(s: StepScalars) -> StepScalars:
    """MISTAKE (with ψ = ∞, so that ∏_t = β1^t): plain Adam, m̂ = m/(1 − β1^t):
    no look-ahead μ_{t+1} (taken as 1, over 1 − ∏_t) and no gradient term
    (its weight 1 − μ_t taken as 0)."""
    return s._replace(
        mu=_like(s.mu, 1),
        mu_next=_like(s.mu_next, 1),
        mu_product_next=_like(s.mu_product_next, s.mu_product),
    )


def start_prod_zero(step, mu_product, m, v):
    """MISTAKE: ∏μ initialised to 0 instead of 1 (TorchSharp issue 1154)."""
    return step, 0.0, m, v


def start_step_reset(step, mu_product, m, v):
    """MISTAKE on a resume: the step count not restored (the schedule starts again at t = 1)."""
    return 0.0, mu_product, m, v


def start_prod_reset(step, mu_product, m, v):
    """MISTAKE on a resume: ∏μ not restored (starts again at 1)."""
    return step, 1.0, m, v


def start_moments_reset(step, mu_product, m, v):
    """MISTAKE on a resume: m and v not restored (start again at 0)."""
    return step, mu_product, np.zeros_like(m), np.zeros_like(v)


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


def _f32(x: float) -> float:
    return float(np.float32(x))


_HYPER = ("lr", "beta1", "beta2", "eps", "momentum_decay", "weight_decay")


def rules_float32_hyperparameters(rule: dict) -> dict:
    """MISTAKE in a float64 run: lr, β1, β2, ε, ψ and λ held as float32 (paddle's
    kernel takes β1, β2, ε and ψ as C float; a port storing them as ``float``)."""
    out = {**rule, **{k: _f32(rule[k]) for k in _HYPER}}
    if "lr_schedule" in rule:
        out["lr_schedule"] = np.asarray(rule["lr_schedule"]).astype(np.float32).astype(np.float64)
    return out


@dataclass(frozen=True)
class Mistake:
    """A catalogued bug: ``make(rules, case)`` returns the replay's keyword
    arguments for a candidate whose profile computes ``rules``, or None where
    the mistake changes nothing (or cannot happen) in that case."""

    name: str
    label: str
    make: Callable


def _scalars(hook):
    return lambda rules, case: {"scalars_hook": hook}


def _float64_only(make):
    def inner(rules, case):
        real = np.zeros(0, case.dtype).real.dtype
        return make(rules, case) if real == np.float64 else None

    return inner


def _rules_change(change):
    def make(rules, case):
        new = [change(r) for r in rules]
        return None if all(_same(a, b) for a, b in zip(new, rules)) else {"rules": new}

    return make


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _resume(hook):
    return lambda rules, case: {"start": hook} if case.start is not None else None


def _adam(rules, case):
    inf = float("inf")
    return {
        "rules": [{**r, "momentum_decay": inf} for r in rules],
        "scalars_hook": mistake_no_nesterov,
    }


def _psi_off(factor):
    def make(rules, case):
        if not all(np.isfinite(r["momentum_decay"]) for r in rules):
            return None
        new = [{**r, "momentum_decay": r["momentum_decay"] * factor} for r in rules]
        return None if all(_same(a, b) for a, b in zip(new, rules)) else {"rules": new}

    return make


def _state(dtype_keys):
    def change(r):
        return {**r, **{k: np.dtype(np.float32) for k in dtype_keys}}

    return _float64_only(_rules_change(change))


#: The catalogue, real ports' bugs first (a tie goes to the earlier one).
MISTAKES: list[Mistake] = [
    Mistake("mu-twice", "μ_t counted twice in ∏_{t+1}", _scalars(mistake_mu_twice)),
    Mistake(
        "prod-init-0",
        "∏μ initialised to 0 (no bias correction of m)",
        lambda rules, case: {"start": start_prod_zero},
    ),
    Mistake(
        "float32-hyperparameters",
        "hyperparameters rounded to float32",
        _float64_only(_rules_change(rules_float32_hyperparameters)),
    ),
    Mistake("adam", "plain Adam (no Nesterov term)", _adam),
    Mistake("wrong-schedule", "μ_t for μ_{t+1}", _scalars(mistake_mu_t_for_mu_next)),
    Mistake("step-from-0", "step counted from 0", lambda rules, case: {"step_offset": -1}),
    Mistake(
        "eps-inside-sqrt",
        "ε inside the square root (√(v̂ + ε))",
        lambda rules, case: {"element": mistake_eps_inside_sqrt},
    ),
    Mistake("no-v-bias-correction", "v not bias-corrected", _scalars(mistake_no_v_bias_correction)),
    Mistake("no-m-bias-correction", "m not bias-corrected", _scalars(mistake_no_m_bias_correction)),
    Mistake("resume-step-reset", "step count not restored on resume", _resume(start_step_reset)),
    Mistake("resume-prod-reset", "∏μ not restored on resume", _resume(start_prod_reset)),
    Mistake("resume-moments-reset", "m and v not restored on resume", _resume(start_moments_reset)),
    *(
        Mistake(f"psi×{factor:g}", f"ψ multiplied by {factor:g}", _psi_off(factor))
        for factor in (10.0, 0.1, 250.0, 0.0)
    ),
    Mistake(
        "float32-state",
        "step and ∏μ stored in float32",
        _state(("scalar_dtype",)),
    ),
    Mistake(
        "float32-scalars",
        "the schedule computed in float32",
        _state(("scalar_dtype", "compute_dtype")),
    ),
]


# -- the candidates ------------------------------------------------------------------------


def profile_variants():
    """(name, profile, options, label) for every profile, torch with either scalar state."""
    for name, prof in PROFILES.items():
        if "scalar_state" in prof.options:
            for state in ("float32", "float64"):
                yield (
                    f"{name}:{state}",
                    prof,
                    {"scalar_state": state},
                    f"{name} (step and ∏μ in {state})",
                )
        else:
            yield name, prof, {}, name


def _profile_rules(case, prof, options) -> list[dict] | None:
    """The rules ``prof`` computes for the case's inputs (its hyperparameters where the
    profile allows them), or None when the profile cannot express the case."""
    dtype = np.dtype(case.dtype)
    rules = [None] * len(case.params0)
    # What the case's profile fixes (Keras 3's ψ = 1) is not the user's choice:
    # the candidate takes its own default.
    fixed = set(prof.fixed) | set(PROFILES[case.profile].fixed)
    try:
        for g in case.groups:
            given = {k: v for k, v in g["hyperparameters"].items() if k not in fixed}
            hp = prof.hyperparameters(given)
            rule = group_rules(prof, hp, g.get("lr_schedule"), dtype, options)
            for i in g["params"]:
                rules[i] = rule
    except ValueError:
        return None  # weight decay or maximize the profile does not have
    return rules


def candidates(case, exclude_profiles=()) -> list[Candidate]:
    """Every profile variant alone (but the case's own), and every profile
    variant, the case's own included, with each applicable mistake."""
    out: list[Candidate] = []
    own_options = {**PROFILES[case.profile].options, **case.profile_options}
    for name, prof, options, plabel in profile_variants():
        if prof.name in exclude_profiles:
            continue
        own = prof.name == case.profile and options == {
            k: v for k, v in own_options.items() if k in options
        }
        rules = case.rules if own else _profile_rules(case, prof, options)
        if rules is None:
            continue
        if not own:
            out.append(Candidate(name, f"the {plabel} profile", name, None, {"rules": rules}))
        for mistake in MISTAKES:
            replay = mistake.make(rules, case)
            if replay is None:
                continue
            replay = {"rules": rules, **replay}
            cname = mistake.name if own else f"{name}+{mistake.name}"
            label = f"{case.profile if own else plabel} + {mistake.label}"
            out.append(Candidate(cname, label, name, mistake.name, replay))
    return out
