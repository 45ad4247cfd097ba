"""Profiles: what each framework actually computes, in the core's terms.

A profile turns the hyperparameters a user gives a framework into the exact
rules of its arithmetic, using only the knobs of
:func:`nadam_ref.functional.plan_step` (REFERENCE.md §2 has the facts, each
checked against the framework's source and runs):

============== ===== ===== ===================== ========================= ==================
profile        ψ     split compute dtype         ∏μ / step stored in       hyperparameters
============== ===== ===== ===================== ========================= ==================
torch          given yes   float64 (Python)      float32 (option: float64) as given
tf-keras-legacy given no   the variable's dtype  the variable's dtype      lr, β1, β2, 0.96 → float32
keras3         1     no    the variable's dtype  the variable's dtype      lr → float32; β1, β2, 0.96 → dtype
optax          ∞     no    the variable's dtype  (β1^t, no state)          as given
============== ===== ===== ===================== ========================= ==================

ψ is the ``momentum_decay`` of μ_t = β1(1 − ½·0.96^(tψ)): tf-keras's legacy
Nadam calls it ``decay`` (0.004), Keras 3 has no such factor (0.96^t, so
ψ = 1) and optax uses μ_t = β1 throughout (ψ = ∞).  "split" applies the step
to θ in torch's two roundings.  Weight decay: torch has L2 and decoupled,
Keras 3 decoupled (``weight_decay``), optax decoupled (``optax.nadamw``),
tf-keras legacy none; only torch has ``maximize``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Hyperparameter names of a golden case, in the torch vocabulary.
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


@dataclass(frozen=True)
class Profile:
    """What one framework computes.

    ``defaults``: the framework's default hyperparameters;
    ``fixed``: hyperparameters the framework does not let one change;
    ``weight_decay``: the kinds it supports (``"l2"``, ``"decoupled"``);
    ``maximize``: whether it has maximize.
    """

    name: str
    description: str
    defaults: dict
    fixed: dict = field(default_factory=dict)
    weight_decay: tuple = ()
    maximize: bool = False
    split_update: bool = False
    options: dict = field(default_factory=dict)

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
        hp = {
            k: (bool(v) if k in ("decoupled_weight_decay", "maximize") else float(v))
            for k, v in hp.items()
        }
        return hp

    def rules(self, hp: dict, dtype, options: dict | None = None) -> dict:
        """The keyword arguments of :func:`nadam_ref.functional.plan_step` that
        reproduce the framework for parameters of ``dtype``, with each
        hyperparameter rounded as the framework holds it (as Python floats,
        so the exact oracle takes them exactly), plus ``state_dtype`` for the
        oracle (the dtype ∏μ is stored in; None when there is no such state).
        """
        real = np.dtype(np.zeros(0, dtype).real.dtype)
        opts = {**self.options, **(options or {})}
        unknown = set(opts) - set(self.options)
        if unknown:
            raise ValueError(f"profile {self.name!r} has no options {sorted(unknown)}")
        rule = {k: hp[k] for k in HYPERPARAMETERS}
        rule["momentum_base"] = 0.96
        return _RULES[self.name](self, rule, real, opts)


def _f32(x: float) -> float:
    return float(np.float32(x))


def _torch(profile, r, real, opts):
    state = np.dtype(opts["scalar_state"])
    r.update(
        split_update=True, scalar_dtype=state, compute_dtype=np.dtype(np.float64), state_dtype=state
    )
    return r


def _tf_keras_legacy(profile, r, real, opts):
    # lr, β1, β2 are float32 variables and tf.cast(0.96, float64) goes through
    # float32; ψ (the `decay` keyword) and ε stay Python floats.
    for k in ("lr", "beta1", "beta2", "momentum_base"):
        r[k] = _f32(r[k])
    if real == np.float32:
        r["momentum_decay"] = _f32(r["momentum_decay"])
    r.update(split_update=False, scalar_dtype=real, compute_dtype=real, state_dtype=real)
    return r


def _keras3(profile, r, real, opts):
    # learning_rate is a float32 variable; β1, β2 and 0.96 are cast to the
    # variable's dtype; u_product is a variable of that dtype.
    r["lr"] = _f32(r["lr"])
    if real == np.float32:
        for k in ("beta1", "beta2", "momentum_base"):
            r[k] = _f32(r[k])
    r.update(split_update=False, scalar_dtype=real, compute_dtype=real, state_dtype=real)
    return r


def _optax(profile, r, real, opts):
    # β1^t is computed afresh each step, so there is no stored ∏μ to round.
    # Bias corrections are jnp float32 for float32 (x64 off), while 1 − β is
    # a Python double: the tolerance allows for the latter (κ(β)·u_c).
    r.update(split_update=False, scalar_dtype=real, compute_dtype=real, state_dtype=None)
    return r


_RULES = {"torch": _torch, "tf-keras-legacy": _tf_keras_legacy, "keras3": _keras3, "optax": _optax}

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "torch",
            "torch.optim.NAdam 2.13 (foreach=False): step and ∏μ stored as float32 tensors "
            "(option scalar_state='float64': torch with float64 default dtype), θ updated in two parts",
            defaults=dict(lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3),
            weight_decay=("l2", "decoupled"),
            maximize=True,
            split_update=True,
            options={"scalar_state": "float32"},
        ),
        Profile(
            "tf-keras-legacy",
            "tf_keras.optimizers.legacy.Nadam (optimizer_v2, the tf.keras doc page): ψ = decay = 0.004, "
            "lr, β1, β2 and 0.96 held in float32",
            defaults=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7, momentum_decay=4e-3),
        ),
        Profile(
            "keras3",
            "keras.optimizers.Nadam (Keras 3, and tf_keras >= 2.11 non-legacy): μ_t = β1(1 − ½·0.96^t), "
            "learning rate held in float32, decoupled weight_decay",
            defaults=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7, momentum_decay=1.0),
            fixed=dict(momentum_decay=1.0),
            weight_decay=("decoupled",),
        ),
        Profile(
            "optax",
            "optax.nadam 0.2.8 (eps_root = 0; optax.nadamw for decoupled weight decay): μ_t = β1 for every t",
            defaults=dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=float("inf")),
            fixed=dict(momentum_decay=float("inf")),
            weight_decay=("decoupled",),
        ),
    )
}


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (ValueError listing the known ones otherwise)."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
