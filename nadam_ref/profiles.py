"""Profiles: what each framework actually computes, in the core's terms.

A profile is the single, complete declaration of one framework's NAdam
arithmetic.  It turns the hyperparameters a user gives that framework into
the keyword arguments of :func:`nadam_ref.functional.plan_step` that
reproduce it; every front end (:class:`nadam_ref.NAdam` with ``profile=``,
:class:`nadam_ref.keras.Nadam`, the golden generator, verifier and oracle)
takes its arithmetic from here.  The facts behind each declaration, with the
measurements that established them, are in docs/frameworks.md.

================== ====== ===== ========= ========= ============================ ==========
profile            ψ      θ     compute   step, ∏μ  rounded to float32           other
================== ====== ===== ========= ========= ============================ ==========
torch              given  split float64   float32   —                            —
tf-keras-legacy    given  one   param     param     lr, β1, β2, 0.96             —
keras3             1      one   param     param     lr                           1 − β, 1 − γλ
optax              ∞      one   param     (β1^t)    —                            —
paddle             given  one   param     param     β1, β2, ε, ψ                 powers
timm-nadamw        ∞      one   float64   (β1^t)    —                            √v/√c, 1 − β1^t
timm-nadam-legacy  given  split float64   float64   —                            √v/√c
================== ====== ===== ========= ========= ============================ ==========

"param" is the parameter's dtype.  "1 − β": computed in double and rounded
once to the parameter's dtype, rather than subtracted in the compute dtype;
"1 − γλ": the decoupled-decay factor computed in float32.  "powers": 0.96^t
and β2^t kept as running products in the parameter's dtype.  "√v/√c": the
denominator √v/√(1 − β2^t) + ε instead of √(v/(1 − β2^t)) + ε.  "1 − β1^t":
the momentum term divided by 1 − ∏_t instead of 1 − ∏_{t+1}.

Entry points: :data:`PROFILES` (name → :class:`Profile`) and :func:`get`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Hyperparameter names, in the torch vocabulary.
HYPERPARAMETERS = (
    "lr",
    "beta1",
    "beta2",
    "eps",
    "momentum_decay",
    "weight_decay",
    "decoupled_weight_decay",
    "maximize",
)
#: What a profile may round (to float32, or to the parameter's dtype): the
#: numeric hyperparameters and the base 0.96 of the momentum warm-up.
ROUNDABLE = ("lr", "beta1", "beta2", "eps", "momentum_decay", "weight_decay", "momentum_base")
#: Where a profile computes its scalars and stores its step and ∏μ:
#: "param" is the parameter's (real) dtype.
DTYPES = ("param", "float32", "float64")


@dataclass(frozen=True)
class Profile:
    """What one framework computes.

    Interface:
        ``defaults``: the framework's default hyperparameters;
        ``fixed``: hyperparameters the framework does not let one change;
        ``weight_decay``: the kinds it supports (``"l2"``, ``"decoupled"``);
        ``maximize``: whether it has maximize;
        ``options``: named choices of the profile and their defaults (torch's
        ``scalar_state``: the dtype its step and ∏μ tensors have).

    Arithmetic (each knob separately):
        ``split_update``: θ takes the step in torch's two parts, or at once;
        ``compute_dtype``: the dtype of the schedule's scalars ("param" or
        "float64": Python floats);
        ``state_dtype``: the dtype the step and ∏μ are stored in, or None when
        the framework keeps no ∏μ (it computes β1^t afresh: the oracle keeps
        the product exact, a float run keeps it in the compute dtype);
        ``float32``: hyperparameters held as float32 whatever the dtype;
        ``cast``: hyperparameters converted to the parameter's dtype;
        ``one_minus_beta``: ``"compute"`` (1 − β subtracted in the compute
        dtype) or ``"float64"`` (computed in double from the given β, then
        rounded once to the parameter's dtype);
        ``decay_factor_dtype``: the dtype 1 − γλ is computed in, if not the
        compute dtype;
        ``split_denominator``: √v/√(1 − β2^t) + ε rather than √(v/(1 − β2^t)) + ε;
        ``momentum_correction``: ``"next"`` (momentum term over 1 − ∏_{t+1})
        or ``"current"`` (over 1 − ∏_t);
        ``accumulated_powers``: 0.96^t and β2^t as running products.
    """

    name: str
    description: str
    defaults: dict
    fixed: dict = field(default_factory=dict)
    weight_decay: tuple = ()
    maximize: bool = False
    options: dict = field(default_factory=dict)
    split_update: bool = False
    compute_dtype: str = "param"
    state_dtype: str | None = "param"
    float32: tuple = ()
    cast: tuple = ()
    one_minus_beta: str = "compute"
    decay_factor_dtype: str | None = None
    split_denominator: bool = False
    momentum_correction: str = "next"
    accumulated_powers: bool = False

    def __post_init__(self):
        for key in (*self.float32, *self.cast):
            if key not in ROUNDABLE:
                raise ValueError(f"profile {self.name!r}: cannot round {key!r}")
        if self.one_minus_beta not in ("compute", "float64"):
            raise ValueError(f"profile {self.name!r}: one_minus_beta {self.one_minus_beta!r}")

    def hyperparameters(self, given: dict | None = None) -> dict:
        """The full set of hyperparameters: defaults, then ``given``; checked
        against what the framework supports (ValueError naming the field)."""
        hp = {
            "weight_decay": 0.0,
            "decoupled_weight_decay": False,
            "maximize": False,
            **self.defaults,
        }
        for key, value in (given or {}).items():
            if key not in HYPERPARAMETERS:
                raise ValueError(
                    f"unknown hyperparameter {key!r}; expected one of {list(HYPERPARAMETERS)}"
                )
            hp[key] = value
        for key, value in self.fixed.items():
            if hp[key] != value:
                raise ValueError(f"profile {self.name!r} fixes {key} = {value!r}; got {hp[key]!r}")
        if hp["weight_decay"]:
            kind = "decoupled" if hp["decoupled_weight_decay"] else "l2"
            if kind not in self.weight_decay:
                raise ValueError(f"profile {self.name!r} has no {kind} weight decay")
        if hp["maximize"] and not self.maximize:
            raise ValueError(f"profile {self.name!r} has no maximize")
        return {
            k: (bool(v) if k in ("decoupled_weight_decay", "maximize") else float(v))
            for k, v in hp.items()
        }

    def rules(self, hp: dict, dtype, options: dict | None = None) -> dict:
        """The keyword arguments of :func:`nadam_ref.functional.plan_step` that
        reproduce the framework for parameters of ``dtype``, with each
        hyperparameter rounded as the framework holds it (as Python floats,
        so the exact oracle takes them exactly), plus ``state_dtype`` for the
        oracle (the dtype ∏μ is stored in; None when there is no such state).
        ``hp`` comes from :meth:`hyperparameters`.
        """
        real = np.dtype(np.zeros(0, dtype).real.dtype)
        opts = {**self.options, **(options or {})}
        unknown = set(opts) - set(self.options)
        if unknown:
            raise ValueError(f"profile {self.name!r} has no options {sorted(unknown)}")

        def resolve(name):
            return real if name == "param" else np.dtype(name)

        rule = {k: hp[k] for k in HYPERPARAMETERS}
        rule["momentum_base"] = 0.96
        for k in self.float32:
            rule[k] = float(np.float32(rule[k]))
        for k in self.cast:
            rule[k] = float(real.type(rule[k]))
        compute = resolve(self.compute_dtype)
        state_name = opts.get("scalar_state", self.state_dtype)
        state = None if state_name is None else resolve(state_name)
        rule.update(
            split_update=self.split_update,
            split_denominator=self.split_denominator,
            momentum_correction=self.momentum_correction,
            accumulated_powers=self.accumulated_powers,
            one_minus_beta1=None,
            one_minus_beta2=None,
            decay_factor_dtype=None
            if self.decay_factor_dtype is None
            else np.dtype(self.decay_factor_dtype),
            scalar_dtype=compute if state is None else state,
            compute_dtype=compute,
            state_dtype=state,
        )
        if self.one_minus_beta == "float64":
            # From the β the user gave (not a rounded copy), in double, then
            # rounded once to the parameter's dtype.
            for k in ("beta1", "beta2"):
                rule[f"one_minus_{k}"] = float(real.type(1.0 - float(hp[k])))
        return rule

    def plan_options(self, hp: dict, dtype, options: dict | None = None) -> dict:
        """:meth:`rules` without the oracle's ``state_dtype``: exactly the
        arithmetic keyword arguments of :func:`nadam_ref.functional.plan_step`."""
        rule = self.rules(hp, dtype, options)
        del rule["state_dtype"]
        return rule


_TORCH_DEFAULTS = dict(lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3)
_KERAS_DEFAULTS = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7)
_INF = float("inf")

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "torch",
            "torch.optim.NAdam 2.13 (foreach=False): step and ∏μ stored as float32 tensors "
            "(option scalar_state='float64': torch with float64 default dtype), θ updated in two parts",
            defaults=_TORCH_DEFAULTS,
            weight_decay=("l2", "decoupled"),
            maximize=True,
            options={"scalar_state": "float32"},
            split_update=True,
            compute_dtype="float64",
            state_dtype="float32",
        ),
        Profile(
            "tf-keras-legacy",
            "tf_keras.optimizers.legacy.Nadam (optimizer_v2, the tf.keras doc page): ψ = decay = 0.004, "
            "lr, β1, β2 and 0.96 held in float32",
            defaults={**_KERAS_DEFAULTS, "momentum_decay": 4e-3},
            # lr, β1, β2 are float32 variables and tf.cast(0.96, float64) goes
            # through float32; ψ (the `decay` keyword) is cast to the dtype.
            float32=("lr", "beta1", "beta2", "momentum_base"),
            cast=("momentum_decay",),
        ),
        Profile(
            "keras3",
            "keras.optimizers.Nadam (Keras 3 on the torch backend, and tf_keras >= 2.11 non-legacy): "
            "μ_t = β1(1 − ½·0.96^t), learning rate held in float32, 1 − β rounded once from double, "
            "decoupled weight_decay with a float32 factor",
            defaults={**_KERAS_DEFAULTS, "momentum_decay": 1.0},
            fixed=dict(momentum_decay=1.0),
            weight_decay=("decoupled",),
            # learning_rate is a float32 variable; β1, β2 and 0.96 are cast to
            # the variable's dtype; u_product is a variable of that dtype.
            float32=("lr",),
            cast=("beta1", "beta2", "momentum_base"),
            one_minus_beta="float64",
            decay_factor_dtype="float32",
        ),
        Profile(
            "optax",
            "optax.nadam 0.2.8 (eps_root = 0; optax.nadamw for decoupled weight decay): μ_t = β1 for every t",
            defaults=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=_INF),
            fixed=dict(momentum_decay=_INF),
            weight_decay=("decoupled",),
            # β1^t is computed afresh each step, so there is no stored ∏μ to round.
            state_dtype=None,
        ),
        Profile(
            "paddle",
            "paddle.optimizer.NAdam 3.3.1: β1, β2, ε, ψ passed as C++ float; 0.96^t, β2^t and ∏μ "
            "running products in the parameter's dtype; θ updated at once",
            defaults=_TORCH_DEFAULTS,
            # lr is a tensor of the parameter's dtype, 0.96 a static_cast to it.
            float32=("beta1", "beta2", "eps", "momentum_decay"),
            cast=("lr", "momentum_base"),
            accumulated_powers=True,
        ),
        Profile(
            "timm-nadamw",
            "timm.optim.NAdamW 1.0.31 (AlgoPerf's NAdamW): μ = β1, momentum term over 1 − β1^t, "
            "denominator √v/√(1 − β2^t) + ε, decoupled weight decay on by default",
            defaults=dict(
                lr=1e-3,
                beta1=0.9,
                beta2=0.999,
                eps=1e-8,
                momentum_decay=_INF,
                weight_decay=1e-2,
                decoupled_weight_decay=True,
            ),
            fixed=dict(momentum_decay=_INF, decoupled_weight_decay=True),
            weight_decay=("decoupled",),
            maximize=True,
            compute_dtype="float64",
            state_dtype=None,
            split_denominator=True,
            momentum_correction="current",
        ),
        Profile(
            "timm-nadam-legacy",
            "timm.optim.NAdamLegacy 1.0.31 (the old timm Nadam): torch's arithmetic with the "
            "schedule product a Python float and the denominator √v/√(1 − β2^t) + ε",
            defaults=_TORCH_DEFAULTS,
            weight_decay=("l2",),
            split_update=True,
            compute_dtype="float64",
            state_dtype="float64",
            split_denominator=True,
        ),
    )
}


def get(name: str) -> Profile:
    """The profile called ``name`` (ValueError listing the known ones otherwise)."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
