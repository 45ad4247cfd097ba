"""The golden suite shipped in the package (``nadam_ref/golden/suite/``):
its case list, and its regeneration (``nadam-ref golden generate --suite``).

Every case is generated from the entries below by the exact oracle, with a
fixed seed, so the same NumPy and mpmath reproduce every byte.  Small cases
are JSON, large ones ``.npz``.  The long case (10⁵ steps) records every step
up to 100 and every 100th step after, to keep the package small.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

from .format import Case, load, save

LONG_STEPS = 100_000

#: name → (file extension, options of :func:`nadam_ref.golden.generate.make_case`)
SUITE: dict[str, tuple[str, dict]] = {}


def _add(name, ext="json", **options):
    SUITE[name] = (ext, options)


def _add_defaults(*names: str) -> None:
    """A case per profile and dtype: the framework's default hyperparameters."""
    for profile in names:
        for dtype in ("float32", "float64"):
            _add(
                f"{profile}-{dtype}",
                profile=profile,
                dtype=dtype,
                shapes=[(7,)],
                steps=30,
                seed=1,
                description=f"{profile} with its default hyperparameters, {dtype}",
            )


# Each profile with its framework's default hyperparameters, float32 and float64
# (the recordings in tests/data/golden_frameworks/ use these cases' inputs).
_add_defaults("torch", "tf-keras-legacy", "keras3", "optax")
_add(
    "torch-float64-state64",
    profile="torch",
    dtype="float64",
    shapes=[(7,)],
    steps=30,
    seed=1,
    profile_options={"scalar_state": "float64"},
    description="torch with step and ∏μ kept in float64 (torch's default dtype set to float64)",
)
# Shapes, from a scalar to a few thousand elements.
_add(
    "shape-scalar",
    profile="torch",
    dtype="float32",
    shapes=[()],
    steps=20,
    seed=2,
    description="a 0-d parameter",
)
_add(
    "shape-2d",
    profile="keras3",
    dtype="float64",
    shapes=[(4, 3)],
    steps=10,
    seed=3,
    description="a 4×3 matrix",
)
_add(
    "shape-large-float32",
    "npz",
    profile="torch",
    dtype="float32",
    shapes=[(2500,)],
    steps=4,
    seed=4,
    description="2500 elements",
)
_add(
    "shape-large-float64",
    "npz",
    profile="keras3",
    dtype="float64",
    shapes=[(40, 50)],
    steps=3,
    seed=5,
    description="a 40×50 matrix",
)
# Edge cases.
_add(
    "zero-gradients",
    profile="torch",
    dtype="float64",
    shapes=[(4,)],
    steps=6,
    seed=6,
    grad_kind="zeros",
    description="all gradients zero: m = v = 0, θ unchanged",
)
_add(
    "tiny-gradients-float64",
    profile="torch",
    dtype="float64",
    shapes=[(4,)],
    steps=8,
    seed=7,
    grad_scale=1e-30,
    description="gradients of about 1e-30: v ≈ 1e-63, the step is ε-dominated",
)
_add(
    "tiny-gradients-float32",
    profile="torch",
    dtype="float32",
    shapes=[(4,)],
    steps=8,
    seed=7,
    grad_scale=1e-30,
    description="gradients of about 1e-30 in float32: g² underflows, v = 0",
)
_add(
    "huge-gradients-float64",
    profile="torch",
    dtype="float64",
    shapes=[(4,)],
    steps=8,
    seed=8,
    grad_scale=1e30,
    description="gradients of about 1e30: v ≈ 1e57",
)
_add(
    "huge-gradients-float32",
    profile="keras3",
    dtype="float32",
    shapes=[(4,)],
    steps=8,
    seed=8,
    grad_scale=1e18,
    description="gradients of about 1e18 in float32 (1e30 would overflow g² in every float32 framework)",
)
_add(
    "eps-dominated",
    profile="torch",
    dtype="float32",
    shapes=[(5,)],
    steps=10,
    seed=9,
    grad_scale=1e-10,
    description="√v̂ ≈ 1e-10 ≪ ε = 1e-8: the step is ε-dominated",
)
_add(
    "lr-zero",
    profile="torch",
    dtype="float32",
    shapes=[(5,)],
    steps=5,
    seed=10,
    hyperparameters={"lr": 0.0},
    description="lr = 0: θ never moves, m and v still do",
)
_add(
    "beta1-zero",
    profile="torch",
    dtype="float64",
    shapes=[(5,)],
    steps=10,
    seed=11,
    hyperparameters={"beta1": 0.0},
    description="β1 = 0: μ_t = 0, no momentum",
)
_add(
    "psi-zero",
    profile="torch",
    dtype="float64",
    shapes=[(5,)],
    steps=10,
    seed=12,
    hyperparameters={"momentum_decay": 0.0},
    description="ψ = 0: μ_t = β1/2 for every t",
)
_add(
    "complex64",
    profile="torch",
    dtype="complex64",
    shapes=[(3,)],
    steps=10,
    seed=13,
    description="complex parameters, updated as (real, imag) pairs as torch.view_as_real does",
)
_add(
    "complex128",
    profile="torch",
    dtype="complex128",
    shapes=[(2, 2)],
    steps=10,
    seed=14,
    description="complex parameters, float64 parts",
)
_add(
    "param-groups",
    profile="torch",
    dtype="float32",
    shapes=[(3,), (2, 2), ()],
    steps=12,
    seed=15,
    groups=[
        {"hyperparameters": {"lr": 1e-2, "weight_decay": 0.1}, "params": [0, 2]},
        {"hyperparameters": {"lr": 3e-3, "momentum_decay": 1e-2}, "params": [1]},
    ],
    description="three parameters in two groups with their own lr, weight decay and ψ",
)
_add(
    "weight-decay-l2",
    profile="torch",
    dtype="float32",
    shapes=[(6,)],
    steps=15,
    seed=16,
    hyperparameters={"weight_decay": 0.05},
    description="L2 weight decay: g ← g + λθ",
)
_add(
    "weight-decay-decoupled-torch",
    profile="torch",
    dtype="float64",
    shapes=[(6,)],
    steps=15,
    seed=17,
    hyperparameters={"weight_decay": 0.05, "decoupled_weight_decay": True},
    description="decoupled weight decay: θ ← θ(1 − γλ) first",
)
_add(
    "weight-decay-keras3",
    profile="keras3",
    dtype="float32",
    shapes=[(6,)],
    steps=15,
    seed=18,
    hyperparameters={"weight_decay": 0.004, "decoupled_weight_decay": True},
    description="Keras 3 weight_decay (decoupled)",
)
_add(
    "weight-decay-optax-nadamw",
    profile="optax",
    dtype="float64",
    shapes=[(6,)],
    steps=15,
    seed=19,
    hyperparameters={"weight_decay": 1e-4, "decoupled_weight_decay": True},
    description="optax.nadamw",
)
_add(
    "maximize",
    profile="torch",
    dtype="float32",
    shapes=[(6,)],
    steps=10,
    seed=20,
    hyperparameters={"maximize": True},
    description="maximize: the gradient's sign flipped",
)
_add(
    "closed-loop-sphere",
    profile="torch",
    dtype="float64",
    shapes=[(4,)],
    steps=60,
    seed=21,
    loop="closed:sphere",
    hyperparameters={"lr": 0.05},
    description="closed loop on f(θ) = ½‖θ‖²: the gradient at each step is θ itself",
)
_add(
    "long-run",
    "npz",
    profile="torch",
    dtype="float64",
    shapes=[(2,)],
    steps=LONG_STEPS,
    seed=22,
    grad_kind="choice",
    record_steps=list(range(1, 101)) + list(range(200, LONG_STEPS + 1, 100)),
    description="10⁵ steps on two elements, gradients ±2^k (k = −2..1); recorded at steps 1..100 and every 100th",
)


# -- format version 2: learning-rate schedules and resumes ----------------------------------
# The learning rate each step gets from the framework's own schedulers (step t = 1, 2, …;
# a scheduler stepped once per optimizer step), computed here once, in Python floats:
# the case stores the values, and a port is handed them.


def _step_decay(lr, steps, every, gamma):
    """torch.optim.lr_scheduler.StepLR(step_size=every, gamma)."""
    return [lr * gamma ** ((t - 1) // every) for t in range(1, steps + 1)]


def _cosine(lr, steps, lr_min=0.0):
    """torch.optim.lr_scheduler.CosineAnnealingLR(T_max=steps, eta_min=lr_min), closed form."""
    return [
        lr_min + (lr - lr_min) * (1 + math.cos(math.pi * (t - 1) / steps)) / 2
        for t in range(1, steps + 1)
    ]


def _linear_warmup(lr, steps, warmup, start_factor):
    """torch.optim.lr_scheduler.LinearLR(start_factor, total_iters=warmup)."""
    return [
        lr * (start_factor + (1 - start_factor) * min(t - 1, warmup) / warmup)
        for t in range(1, steps + 1)
    ]


def _warmup_cosine(peak, steps, warmup, init=0.0):
    """optax.warmup_cosine_decay_schedule(init, peak, warmup, decay_steps=steps, end_value=0),
    and Keras 3's CosineDecay(warmup_target=peak, warmup_steps=warmup) from 0: linear from
    ``init`` to ``peak`` over ``warmup`` steps, then a cosine down to 0 at ``steps``."""
    out = []
    for t in range(1, steps + 1):
        c = t - 1  # optax and Keras count the steps already taken
        if c < warmup:
            out.append(init + (peak - init) * c / warmup)
        else:
            out.append(peak * (1 + math.cos(math.pi * (c - warmup) / (steps - warmup))) / 2)
    return out


def _piecewise(steps, boundaries, values):
    """keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values) at iterations t − 1."""
    return [values[sum(t - 1 > b for b in boundaries)] for t in range(1, steps + 1)]


for _name, _profile, _dtype, _schedule, _what in (
    (
        "schedule-step-torch-float32",
        "torch",
        "float32",
        _step_decay(2e-3, 30, 10, 0.5),
        "StepLR(10, 0.5)",
    ),
    (
        "schedule-cosine-torch-float64",
        "torch",
        "float64",
        _cosine(2e-3, 30),
        "CosineAnnealingLR(30)",
    ),
    (
        "schedule-warmup-torch-float32",
        "torch",
        "float32",
        _linear_warmup(2e-3, 30, 10, 0.1),
        "LinearLR(0.1, 10)",
    ),
    (
        "schedule-warmup-cosine-keras3-float32",
        "keras3",
        "float32",
        _warmup_cosine(1e-3, 30, 5),
        "CosineDecay with 5 warm-up steps",
    ),
    (
        "schedule-step-tf-keras-legacy-float64",
        "tf-keras-legacy",
        "float64",
        _piecewise(30, [10, 20], [1e-3, 5e-4, 1e-4]),
        "PiecewiseConstantDecay([10, 20])",
    ),
    (
        "schedule-warmup-cosine-optax-float64",
        "optax",
        "float64",
        _warmup_cosine(1e-3, 30, 5),
        "warmup_cosine_decay_schedule(0, 1e-3, 5, 30)",
    ),
    (
        "schedule-cosine-optax-float32",
        "optax",
        "float32",
        _warmup_cosine(1e-3, 30, 0),
        "cosine_decay_schedule(1e-3, 30)",
    ),
):
    _add(
        _name,
        profile=_profile,
        dtype=_dtype,
        shapes=[(7,)],
        steps=30,
        seed=30,
        lr_schedule=_schedule,
        description=f"{_profile}, {_dtype}: the learning rate of {_what}, a new value every step",
    )
for _name, _profile, _dtype, _after in (
    ("resume-torch-float32", "torch", "float32", 1000),
    ("resume-torch-float64", "torch", "float64", 100),
    ("resume-tf-keras-legacy-float32", "tf-keras-legacy", "float32", 100),
    ("resume-keras3-float64", "keras3", "float64", 100),
    ("resume-optax-float64", "optax", "float64", 100),
):
    _add(
        _name,
        profile=_profile,
        dtype=_dtype,
        shapes=[(7,)],
        steps=20,
        seed=31,
        resume_after=_after,
        description=f"{_profile}, {_dtype}: resumes from a checkpoint taken after {_after} steps "
        "(θ, m, v, the step count and ∏μ as the framework stores them)",
    )
_add(
    "resume-schedule-torch-float64",
    profile="torch",
    dtype="float64",
    shapes=[(3,), (2, 2)],
    steps=20,
    seed=32,
    resume_after=50,
    groups=[
        {
            "hyperparameters": {"weight_decay": 0.01},
            "params": [0],
            "lr_schedule": _cosine(2e-3, 70),
        },
        {"hyperparameters": {"lr": 1e-3}, "params": [1], "lr_schedule": _cosine(1e-3, 70)},
    ],
    description="torch, float64, two parameter groups, each with a 70-step CosineAnnealingLR: "
    "resumes from the checkpoint after step 50",
)

# The profiles of paddle and timm: defaults in both dtypes, a schedule, a resume.
_add_defaults("paddle", "timm-nadamw", "timm-nadam-legacy")
_add(
    "schedule-step-paddle-float32",
    profile="paddle",
    dtype="float32",
    shapes=[(7,)],
    steps=30,
    seed=30,
    lr_schedule=_step_decay(2e-3, 30, 10, 0.5),
    description="paddle, float32: the learning rate of paddle.optimizer.lr.StepDecay(2e-3, 10, 0.5)",
)
_add(
    "schedule-warmup-cosine-timm-nadamw-float64",
    profile="timm-nadamw",
    dtype="float64",
    shapes=[(7,)],
    steps=30,
    seed=30,
    lr_schedule=_warmup_cosine(1e-3, 30, 5),
    description="timm-nadamw, float64: a cosine schedule after 5 linear warm-up steps from 0",
)
_add(
    "resume-timm-nadam-legacy-float32",
    profile="timm-nadam-legacy",
    dtype="float32",
    shapes=[(7,)],
    steps=20,
    seed=31,
    resume_after=100,
    description="timm-nadam-legacy, float32: resumes from a checkpoint taken after 100 steps",
)


def case_file(name: str) -> str:
    return f"{name}.{SUITE[name][0]}"


def generate(name: str, method: str = "fast") -> Case:
    """Generate the suite case ``name`` with the exact oracle (``method``: see
    :func:`nadam_ref.golden.generate.make_case`; both give the same bytes)."""
    from .generate import make_case  # needs mpmath; loading the suite does not

    ext, options = SUITE[name]
    return make_case(
        name,
        generated_by=f"nadam-ref golden generate --suite --only {name}",
        method=method,
        **options,
    )


def suite_name(name: str) -> str:
    """The suite case ``name`` names: a case's name (``torch-float32``) or its
    file's (``torch-float32.json``, as ``nadam-ref golden list`` prints it)."""
    if name in SUITE:
        return name
    stem, _, ext = str(name).rpartition(".")
    if stem in SUITE and SUITE[stem][0] == ext:
        return stem
    raise ValueError(f"unknown suite case {name!r}; 'nadam-ref golden list' shows them")


def write_suite(out_dir, names=None, *, progress=None, method: str = "fast") -> list[Path]:
    """Regenerate the suite (or the cases ``names``, by name or file name) into ``out_dir``."""
    names = [suite_name(n) for n in names] if names else list(SUITE)  # all checked first
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        case = generate(name, method)
        path = out / case_file(name)
        save(case, path)
        paths.append(path)
        if progress:
            progress(path)
    return paths


def suite_path(name: str | None = None) -> Path:
    """The shipped suite's directory, or the file of case ``name`` (a case's
    name or its file name)."""
    base = Path(str(resources.files("nadam_ref.golden").joinpath("suite")))
    if name is None:
        return base
    return base / case_file(suite_name(name))


def suite_cases() -> list[str]:
    """Names of the suite's cases."""
    return list(SUITE)


def load_suite_case(name: str) -> Case:
    return load(suite_path(name))
