"""The functional core: one NAdam step over lists of arrays, as torch's
``torch.optim._functional.nadam`` is to ``torch.optim.NAdam``.

Every front end (the torch-style :class:`nadam_ref.NAdam`, the Keras-style
:class:`nadam_ref.keras.Nadam`, :func:`nadam_ref.minimize`, the golden tools)
calls this module; none re-derives a formula.  A step has two phases:

1. :func:`plan_step` checks every input and computes the schedule, changing
   nothing, so that bad input fails before any array is touched;
2. :meth:`StepPlan.run` hands the arrays and their coefficients to a backend,
   which updates θ, m and v in place.

:func:`nadam` does both.  Complex arrays are updated as pairs of reals (as
``torch.view_as_real`` does): real and imaginary parts are separate elements.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from . import backend as contract
from .backend import BACKENDS, as_real  # noqa: F401 - re-exported
from .schedule import Coefficients, StepScalars, step_coefficients


def get_backend(name: str) -> ModuleType:
    """The backend module called ``name`` (imported on first use); what it
    provides is declared in :mod:`nadam_ref.backend`."""
    return contract.get(name).module


def is_real(value) -> bool:
    """A real number as a hyperparameter: a Python or NumPy int or float, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def check_hyperparameters(lr, betas, eps, weight_decay, momentum_decay, *, where: str = "") -> None:
    """Raise ValueError naming the first invalid hyperparameter (torch's rules:
    lr, eps, weight_decay, momentum_decay ≥ 0 and 0 ≤ β < 1; NaN is invalid)."""
    prefix = f"{where}: " if where else ""

    def real(name, value):
        if not is_real(value):
            raise ValueError(f"{prefix}{name} must be a real number, got {value!r}")
        return float(value)

    if not 0.0 <= real("lr", lr):
        raise ValueError(f"{prefix}Invalid learning rate: {lr}")
    if not 0.0 <= real("eps", eps):
        raise ValueError(f"{prefix}Invalid epsilon value: {eps}")
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"{prefix}betas must be a pair (beta1, beta2), got {betas!r}") from None
    for i, beta in enumerate((beta1, beta2)):
        if not 0.0 <= real(f"betas[{i}]", beta) < 1.0:
            raise ValueError(f"{prefix}Invalid beta parameter at index {i}: {beta}")
    if not 0.0 <= real("weight_decay", weight_decay):
        raise ValueError(f"{prefix}Invalid weight_decay value: {weight_decay}")
    if not 0.0 <= real("momentum_decay", momentum_decay):
        raise ValueError(f"{prefix}Invalid momentum_decay value: {momentum_decay}")


def is_nadam_dtype(dtype: np.dtype) -> bool:
    """NAdam updates float32, float64, complex64 and complex128 arrays (in
    either byte order); not float16, whose range cannot hold v, nor the
    platform-dependent long double."""
    return dtype.kind in "fc" and dtype.itemsize in ((4, 8) if dtype.kind == "f" else (8, 16))


#: The real dtypes NAdam computes in (a complex array is updated as pairs of them).
REAL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The dtypes NAdam updates, in either byte order, so that checking an
#: array's dtype is one set lookup.
_NADAM_DTYPES = frozenset(
    d
    for t in (np.float32, np.float64, np.complex64, np.complex128)
    for d in (np.dtype(t), np.dtype(t).newbyteorder())
)


def check_array(backend: ModuleType, array, name: str, *, of=None) -> None:
    """A parameter or state array must be a floating (or complex) array the
    backend can update in place.  Errors name it ``name``, or ``name`` of
    ``of`` (``check_array(backend, m, "exp_avg", of=name)``)."""
    if not backend.is_array(array):
        raise TypeError(
            f"{_label(name, of)} must be an array this backend updates in place, got {type(array).__name__}"
        )
    if array.dtype not in _NADAM_DTYPES and not is_nadam_dtype(np.dtype(array.dtype)):
        raise TypeError(
            f"{_label(name, of)} has dtype {array.dtype}; NAdam needs float32, float64, complex64 or complex128"
        )
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        raise ValueError(f"{_label(name, of)} is a read-only array; NAdam updates it in place")


def _label(name, of) -> str:
    return f"{name} of {of}" if of is not None else str(name)


# The arrays of every backend have tuple shapes and NumPy dtypes, compared
# directly below: a step checks every array, and each conversion costs.


def check_grad(backend: ModuleType, param, grad, name: str) -> None:
    """A gradient must be an array of its parameter's shape and dtype."""
    # A backend may read gradients from more places than it updates (CUDA: host or device).
    if not contract.of(backend).is_grad_array(grad):
        raise TypeError(f"gradient of {name} must be an array, got {type(grad).__name__}")
    if grad.shape != param.shape:
        raise ValueError(
            f"gradient of {name} has shape {tuple(grad.shape)}, but the parameter has shape {tuple(param.shape)}"
        )
    if grad.dtype != param.dtype:
        raise TypeError(
            f"gradient of {name} has dtype {grad.dtype}, but the parameter has dtype {param.dtype}"
        )


def check_parameter(backend: ModuleType, param, grad, exp_avg, exp_avg_sq, name: str) -> None:
    """Everything a step needs of one parameter's arrays: θ, m and v arrays
    the backend updates in place (:func:`check_array`), g one it reads, all
    four of θ's shape and dtype.  Raises TypeError or ValueError naming the
    first problem (in that order: θ, g, m, v)."""
    check_array(backend, param, name)
    check_grad(backend, param, grad, name)
    for state, what in ((exp_avg, "exp_avg"), (exp_avg_sq, "exp_avg_sq")):
        check_array(backend, state, what, of=name)
        if state.shape != param.shape or state.dtype != param.dtype:
            raise ValueError(
                f"{what} of {name} has shape {tuple(state.shape)} and dtype {state.dtype}; "
                f"expected {tuple(param.shape)} and {param.dtype}"
            )


class NonFiniteError(ValueError):
    """A step with ``check_finite=True`` met a NaN or an infinity."""


def check_finite_array(module: ModuleType, array, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` and the first (C-order)
    index holding a NaN or an infinity; complex arrays are checked part by part."""
    host = np.asarray(contract.of(module).to_host(array))
    bad = ~np.isfinite(host)
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad.ravel())), host.shape))
        raise NonFiniteError(f"{what} is not finite at index {index}: {host[index].item()!r}")


@dataclass
class StepPlan:
    """A checked step, ready to run: the arrays (as real views) and their
    coefficients, and the schedule state each parameter will have after it."""

    backend: ModuleType
    params: list
    grads: list
    exp_avgs: list
    exp_avg_sqs: list
    coefficients: list[Coefficients]
    scalars: list[StepScalars]

    def run(self) -> tuple[list, list]:
        """Update θ, m and v in place; return the new steps and ∏μ values."""
        if self.params:
            self.backend.update(
                self.params, self.grads, self.exp_avgs, self.exp_avg_sqs, self.coefficients
            )
        return [s.step for s in self.scalars], [s.mu_product for s in self.scalars]


def plan_step(
    params: Sequence,
    grads: Sequence,
    exp_avgs: Sequence,
    exp_avg_sqs: Sequence,
    steps: Sequence,
    mu_products: Sequence,
    *,
    backend: str = "numpy",
    names: Sequence[str] | None = None,
    check_finite: bool = False,
    **arithmetic: Any,
) -> StepPlan:
    """Check a step's inputs and compute its schedule; change nothing.

    ``steps[i]`` and ``mu_products[i]`` are parameter i's stored step count
    t−1 and ∏_{j<t} μ_j.  ``arithmetic`` is what the step computes: the
    keyword arguments of :func:`nadam_ref.schedule.step_coefficients` (lr,
    beta1, beta2, eps are required; weight_decay, momentum_decay,
    decoupled_weight_decay, maximize, and the rounding rules: scalar_dtype,
    the dtype the steps and ∏μ are stored in, compute_dtype, split_update,
    split_denominator, momentum_correction, one_minus_beta1/2,
    decay_factor_dtype, accumulated_powers, momentum_base).  A framework's
    rules come from its profile: ``plan_step(..., **profile.plan_options(hp,
    dtype))`` (:mod:`nadam_ref.profiles`).  Raises TypeError or ValueError,
    naming the parameter, for anything a step cannot use.

    By default NaN and ±inf in a gradient propagate into θ, m and v exactly as
    in torch.  ``check_finite=True`` instead raises :class:`NonFiniteError`
    (a ValueError) naming the array and its first bad index if any gradient,
    parameter or state array holds one, before anything is updated.
    """
    module = contract.get(backend)
    # (set arithmetic, not inspect's bind: this runs every step)
    unknown, missing = arithmetic.keys() - _ARITHMETIC, _REQUIRED - arithmetic.keys()
    if unknown or missing:
        raise TypeError(
            f"plan_step: unknown arithmetic options {sorted(unknown)}" if unknown
            else f"plan_step: missing the arithmetic options {sorted(missing)}"
        )  # fmt: skip
    check_hyperparameters(
        arithmetic["lr"],
        (arithmetic["beta1"], arithmetic["beta2"]),
        arithmetic["eps"],
        arithmetic.get("weight_decay", 0.0),
        arithmetic.get("momentum_decay", 4e-3),
    )
    n = len(params)
    if not all(len(x) == n for x in (grads, exp_avgs, exp_avg_sqs, steps, mu_products)):
        raise ValueError(
            "params, grads, exp_avgs, exp_avg_sqs, steps and mu_products must have equal lengths"
        )
    names = list(names) if names is not None else [f"parameter {i}" for i in range(n)]
    plan = StepPlan(module, [], [], [], [], [], [])
    adopt, real = module.adopt, module.as_real  # see nadam_ref.backend
    # Parameters at the same point of the schedule share their scalars and coefficients
    # (computed once, and one object, so that a backend can batch them cheaply).
    shared: dict[tuple, tuple[StepScalars, Coefficients]] = {}
    for name, param, grad, m, v, step, mu_product in zip(
        names, params, grads, exp_avgs, exp_avg_sqs, steps, mu_products
    ):
        if adopt is not None:
            param, grad, m, v = adopt(param), adopt(grad), adopt(m), adopt(v)
        check_parameter(module, param, grad, m, v, name)
        if check_finite:
            check_finite_array(module, grad, f"gradient of {name}")
            check_finite_array(module, param, name)
            check_finite_array(module, m, f"exp_avg of {name}")
            check_finite_array(module, v, f"exp_avg_sq of {name}")
        if param.dtype.kind == "c":  # all four share the dtype: checked above
            param, grad, m, v = real(param), real(grad), real(m), real(v)
        try:  # float() is exact for the stored step and ∏μ (float32 or float64)
            key = (float(step), float(mu_product), param.dtype)
        except (TypeError, ValueError):
            key = None
        if key is None or key not in shared:
            scalars, coefs = step_coefficients(step, mu_product, dtype=param.dtype, **arithmetic)
            if key is not None:
                shared[key] = scalars, coefs
        else:
            scalars, coefs = shared[key]
        plan.params.append(param)
        plan.grads.append(grad)
        plan.exp_avgs.append(m)
        plan.exp_avg_sqs.append(v)
        plan.scalars.append(scalars)
        plan.coefficients.append(coefs)
    return plan


#: The arithmetic keywords :func:`plan_step` takes (those of step_coefficients), and the required ones.
_PARAMETERS = inspect.signature(step_coefficients).parameters
_ARITHMETIC = frozenset(_PARAMETERS) - {"step", "mu_product", "dtype"}
_REQUIRED = frozenset(k for k in _ARITHMETIC if _PARAMETERS[k].default is inspect.Parameter.empty)


def nadam(
    params: Sequence,
    grads: Sequence,
    exp_avgs: Sequence,
    exp_avg_sqs: Sequence,
    steps: Sequence,
    mu_products: Sequence,
    **options,
) -> tuple[list, list]:
    """One NAdam step, in place: :func:`plan_step` then :meth:`StepPlan.run`.

    Returns the new steps and ∏μ values, to be stored by the caller.
    """
    return plan_step(params, grads, exp_avgs, exp_avg_sqs, steps, mu_products, **options).run()
