"""Building one golden case: inputs, the exact oracle's trajectory, tolerances."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..functional import as_real
from ..profiles import get as get_profile
from . import fast_oracle, oracle
from .format import Case
from .tolerance import DERIVATION, ToleranceBound, finish

#: How gradients are drawn: N(0, 1)·scale, zeros, the constant scale, or
#: ±scale·2^k (k ∈ {−2, …, 1}; few distinct values, so long runs compress).
GRADIENT_KINDS = ("normal", "zeros", "constant", "choice")


def draw_inputs(rng, dtype, shapes, steps, *, grad_kind="normal", grad_scale=1.0, param_scale=1.0):
    """θ₀ and the gradient sequence, drawn from ``rng`` and rounded to ``dtype``."""
    dtype = np.dtype(dtype)

    def normal(shape):
        x = rng.standard_normal(shape)
        if dtype.kind == "c":
            x = x + 1j * rng.standard_normal(shape)
        return x

    params0 = [(normal(s) * param_scale).astype(dtype) for s in shapes]
    grads = []
    for s in shapes:
        full = (steps,) + tuple(s)
        if grad_kind == "normal":
            g = normal(full) * grad_scale
        elif grad_kind == "zeros":
            g = np.zeros(full)
        elif grad_kind == "constant":
            g = np.full(full, grad_scale)
        elif grad_kind == "choice":
            g = rng.choice([-1.0, 1.0], full) * grad_scale * np.exp2(rng.integers(-2, 2, full))
        else:
            raise ValueError(f"unknown gradient kind {grad_kind!r}; choose one of {GRADIENT_KINDS}")
        grads.append(np.asarray(g).astype(dtype))
    return params0, grads


def make_case(
    name: str,
    *,
    profile: str = "torch",
    dtype="float32",
    shapes: Sequence[Sequence[int]] = ((3,),),
    steps: int = 10,
    seed: int = 0,
    hyperparameters: dict | None = None,
    groups: Sequence[dict] | None = None,
    profile_options: dict | None = None,
    grad_kind: str = "normal",
    grad_scale: float = 1.0,
    param_scale: float = 1.0,
    loop: str = "open",
    record_steps: Sequence[int] | None = None,
    description: str = "",
    generated_by: str = "",
    params0=None,
    grads=None,
    lr_schedule: Sequence[float] | None = None,
    start: dict | None = None,
    resume_after: int = 0,
    method: str = "fast",
    workers: int = 1,
    scheduler=None,
    progress: bool | None = False,
    stats: dict | None = None,
) -> Case:
    """Generate a case: draw (or take) the inputs, run the exact oracle with
    the profile's rules, derive the tolerances.

    ``groups``: several parameter groups, each ``{"hyperparameters": {...},
    "params": [indices]}``; otherwise one group with ``hyperparameters``.
    ``loop="closed:sphere"`` uses the gradient θ (of ½‖θ‖²) instead of stored gradients.

    Format version 2: ``lr_schedule`` gives the learning rate of each step
    (for every group; a group may carry its own ``"lr_schedule"``), each
    held as the profile holds a learning rate; ``start`` resumes from a
    checkpoint ``{"step": [k], "mu_product": [∏μ], "exp_avg": [m],
    "exp_avg_sq": [v]}`` (one entry per parameter; ``params0`` is θ_k).
    ``resume_after=k`` makes that checkpoint: the exact oracle runs k steps
    (gradients from ``seed``), and the case resumes from its correctly rounded
    state, with new gradients (``seed + 1``); a schedule then covers all
    k + ``steps`` steps, the first k before the checkpoint.

    ``method``: ``"fast"`` (:mod:`nadam_ref.golden.fast_oracle`, the same
    bits) or ``"mpmath"`` (:mod:`nadam_ref.golden.oracle`, the reference);
    ``workers``, ``scheduler`` and ``progress`` go to
    :func:`nadam_ref.golden.fast_oracle.fast_run`, whose statistics (the
    fallback count among them) are put into ``stats`` when it is given.
    """
    if method not in ("fast", "mpmath"):
        raise ValueError(f"method must be 'fast' or 'mpmath', got {method!r}")
    if resume_after:
        if start is not None or params0 is not None:
            raise ValueError("resume_after makes the start itself; give no start or params0")

        def split(schedule, part):
            if schedule is None:
                return None
            if len(schedule) != resume_after + steps:
                raise ValueError(
                    f"with resume_after, lr_schedule covers all {resume_after} + {steps} steps; "
                    f"got {len(schedule)} values"
                )
            return list(schedule[:resume_after] if part == 0 else schedule[resume_after:])

        def split_groups(part):
            if not groups:
                return None
            return [
                {**g, "lr_schedule": split(g["lr_schedule"], part)} if "lr_schedule" in g else g
                for g in groups
            ]

        before = make_case(
            f"{name}-checkpoint",
            profile=profile,
            dtype=dtype,
            shapes=shapes,
            steps=resume_after,
            seed=seed,
            hyperparameters=hyperparameters,
            groups=split_groups(0),
            lr_schedule=split(lr_schedule, 0),
            profile_options=profile_options,
            grad_kind=grad_kind,
            grad_scale=grad_scale,
            param_scale=param_scale,
            loop=loop,
            record_steps=[resume_after],
            method=method,
            workers=workers,
            scheduler=scheduler,
        )
        e = before.expected
        start = {
            "step": [resume_after] * len(before.params0),
            "mu_product": [float(a[0]) for a in e["mu_product"]],
            "exp_avg": [a[0] for a in e["exp_avg"]],
            "exp_avg_sq": [a[0] for a in e["exp_avg_sq"]],
        }
        params0 = [a[0] for a in e["param"]]
        seed = seed + 1
        groups, lr_schedule = split_groups(1), split(lr_schedule, 1)
    prof = get_profile(profile)
    dtype = np.dtype(dtype)
    if dtype.name not in ("float32", "float64", "complex64", "complex128"):
        raise ValueError(f"dtype must be float32, float64, complex64 or complex128, got {dtype}")
    shapes = [tuple(int(n) for n in s) for s in shapes]
    if not shapes:
        raise ValueError("a case needs at least one parameter shape")
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if method == "mpmath":
        _check_size(shapes, steps)
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    if loop not in ("open", "closed:sphere"):
        raise ValueError(f"loop must be 'open' or 'closed:sphere', got {loop!r}")
    if loop != "open" and dtype.kind == "c":
        raise ValueError("the closed loop is defined for real dtypes only")
    if groups is None:
        groups = [
            {"hyperparameters": dict(hyperparameters or {}), "params": list(range(len(shapes)))}
        ]
    options = {**prof.options, **(profile_options or {})}
    full_groups, rules = [], [None] * len(shapes)
    for g in groups:
        hp = prof.hyperparameters(g.get("hyperparameters"))
        full = {"hyperparameters": hp, "params": list(g["params"])}
        schedule = g.get("lr_schedule", lr_schedule)
        if schedule is not None:
            full["lr_schedule"] = np.array([float(x) for x in schedule], dtype=np.float64)
            if len(full["lr_schedule"]) != steps:
                raise ValueError(
                    f"lr_schedule has {len(full['lr_schedule'])} values for {steps} steps"
                )
        full_groups.append(full)
        rule = group_rules(prof, hp, full.get("lr_schedule"), dtype, options)
        for i in g["params"]:
            rules[i] = dict(rule)
    if any(r is None for r in rules) or sorted(i for g in groups for i in g["params"]) != list(
        range(len(shapes))
    ):
        raise ValueError("the groups' params must list every parameter index exactly once")
    rng = np.random.default_rng(seed)
    drawn0, drawn_g = draw_inputs(
        rng,
        dtype,
        shapes,
        steps,
        grad_kind=grad_kind,
        grad_scale=grad_scale,
        param_scale=param_scale,
    )
    params0 = drawn0 if params0 is None else [np.asarray(p, dtype) for p in params0]
    grads = (
        None
        if loop != "open"
        else (drawn_g if grads is None else [np.asarray(g, dtype) for g in grads])
    )
    record = (
        list(range(1, steps + 1))
        if record_steps is None
        else sorted(set(int(s) for s in record_steps))
    )
    if not record or record[0] < 1 or record[-1] > steps:
        raise ValueError(f"record_steps must be steps in 1..{steps}, got {record_steps!r}")
    if start is not None:
        start = _check_start(start, params0, dtype)
    real_dtypes = [np.zeros(0, dtype).real.dtype] * len(shapes)
    feedback = 1.0 if loop != "open" else 0.0
    inputs = [None] * len(shapes) if grads is None else grads
    if method == "fast":
        exact, tolerance, run_stats = fast_oracle.fast_run(
            rules,
            params0,
            inputs,
            record,
            feedback=feedback,
            start=start,
            workers=workers,
            scheduler=scheduler,
            progress=progress,
        )
        if stats is not None:
            stats.update(run_stats)
    else:
        bound = ToleranceBound(
            rules,
            real_dtypes,
            feedback=feedback,
            start_m=None if start is None else [as_real(m) for m in start["exp_avg"]],
            record=record,
        )
        exact = oracle.exact_run(rules, params0, inputs, record, observe=bound, start=start)
        tolerance = finish(bound, exact, record, [dtype] * len(shapes))
    return Case(
        name=name,
        profile=profile,
        dtype=dtype,
        groups=full_groups,
        rules=rules,
        steps=steps,
        record_steps=record,
        params0=params0,
        grads=grads,
        expected=exact,
        tolerance=tolerance,
        description=description,
        profile_options=options,
        loop=loop,
        tolerance_derivation=DERIVATION,
        generated_by=generated_by,
        oracle_digits=oracle.DIGITS,
        start=start,
    )


def group_rules(prof, hp: dict, lr_schedule, dtype, options: dict | None = None) -> dict:
    """What ``prof`` computes for a group's hyperparameters ``hp`` in ``dtype``
    (:meth:`Profile.rules`), with the learning rate of each step of
    ``lr_schedule`` (or None) held as the framework holds a learning rate
    (e.g. rounded to float32)."""
    rule = prof.rules(hp, dtype, options)
    if lr_schedule is not None:
        rule["lr_schedule"] = np.array(
            [
                prof.rules(prof.hyperparameters({**hp, "lr": x}), dtype, options)["lr"]
                for x in lr_schedule
            ]
        )
    return rule


def _check_start(start: dict, params0, dtype) -> dict:
    """A checkpoint to resume from, its arrays in the case's dtype and shapes."""
    n = len(params0)
    out = {
        "step": [int(k) for k in start["step"]],
        "mu_product": [float(x) for x in start["mu_product"]],
    }
    for q in ("exp_avg", "exp_avg_sq"):
        out[q] = [np.array(a, dtype=dtype).reshape(p.shape) for a, p in zip(start[q], params0)]
    if any(len(out[k]) != n for k in out):
        raise ValueError(
            f"start needs one step, mu_product, exp_avg and exp_avg_sq per parameter ({n})"
        )
    if min(out["step"]) < 0:
        raise ValueError(f"start: a step count must be >= 0, got {out['step']}")
    return out


def _check_size(shapes, steps):
    n = steps * sum(math.prod(s) for s in shapes)
    if n > 5_000_000:
        raise ValueError(
            f"{n} element-steps is too many for the mpmath oracle (about 0.2 ms each); "
            "the fast one (method='fast') has no such limit"
        )
