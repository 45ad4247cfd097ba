"""Profiles drive every front end: the same bits from NAdam(profile=...),
keras.Nadam, the golden float reference, on every backend; each checked
against the exact oracle (the golden cases' expected values) and against
values derived by hand here."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("mpmath", reason="the golden tools need mpmath (the 'golden' extra)")

from nadam_ref import NAdam, Parameter, keras, profiles  # noqa: E402
from nadam_ref.golden import load, make_case, verify  # noqa: E402
from nadam_ref.golden.reference import replay  # noqa: E402
from nadam_ref.golden.suite import suite_path  # noqa: E402

SEVEN = (
    "torch",
    "tf-keras-legacy",
    "keras3",
    "optax",
    "paddle",
    "timm-nadamw",
    "timm-nadam-legacy",
)


def test_the_seven_profiles_are_declared_and_a_typo_lists_them():
    assert set(SEVEN) <= set(profiles.PROFILES)
    with pytest.raises(ValueError, match="choose one of") as error:
        profiles.get("kera3")
    assert all(name in str(error.value) for name in SEVEN)


def _torch_options(hp: dict) -> dict:
    """A case's hyperparameters as NAdam keywords."""
    out = {k: v for k, v in hp.items() if k not in ("beta1", "beta2")}
    out["betas"] = (hp["beta1"], hp["beta2"])
    return out


def _run_nadam(case, backend: str, profile: str | None = None) -> list[np.ndarray]:
    """θ after every step, from NAdam(profile=case.profile) fed the case's gradients."""
    params = [Parameter(np.array(p0)) for p0 in case.params0]
    opt = NAdam(
        params,
        profile=profile or case.profile,
        backend=backend,
        **_torch_options(case.hyperparameters),
        **(
            {"scalar_dtype": case.profile_options["scalar_state"]}
            if "scalar_state" in case.profile_options
            else {}
        ),
    )
    out = []
    for t in range(case.steps):
        for p, g in zip(params, case.grads):
            p.grad = np.array(g[t]) if backend != "cuda" else _to_device(g[t])
        opt.step()
        out.append([np.array(np.asarray(_host(p.data))) for p in params])
    return out


def _to_device(a):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else a


def _run_keras(case) -> list[list[np.ndarray]]:
    schedule = {"tf-keras-legacy": "legacy", "keras3": "keras3"}[case.profile]
    hp = case.hyperparameters
    kwargs = dict(learning_rate=hp["lr"], beta_1=hp["beta1"], beta_2=hp["beta2"], epsilon=hp["eps"])
    if schedule == "legacy":
        kwargs["schedule_decay"] = hp["momentum_decay"]
    if hp["weight_decay"]:
        kwargs["weight_decay"] = hp["weight_decay"]
    opt = keras.Nadam(schedule=schedule, **kwargs)
    variables = [np.array(p0) for p0 in case.params0]
    out = []
    for t in range(case.steps):
        opt.apply_gradients([(np.array(g[t]), v) for g, v in zip(case.grads, variables)])
        out.append([v.copy() for v in variables])
    return out


def _as_recording(case, run) -> list[np.ndarray]:
    """The run's θ at the case's recorded steps, shaped as case.expected["param"]."""
    return [np.array([run[s - 1][i] for s in case.record_steps]) for i in range(len(case.params0))]


KERAS_CASES = [
    "keras3-float32",
    "keras3-float64",
    "weight-decay-keras3",
    "tf-keras-legacy-float32",
    "tf-keras-legacy-float64",
]


@pytest.mark.parametrize("name", KERAS_CASES)
def test_nadam_profile_keras_nadam_and_golden_case_agree_bit_for_bit(name):
    """NAdam(profile=...), keras.Nadam(schedule=...) (both on numba) and the
    golden case's float reference give the same θ, m, v bits at every step,
    and pass the case (the exact oracle within its derived tolerance)."""
    case = load(suite_path(name))
    reference = replay(case)
    ours = _as_recording(case, _run_nadam(case, "numba"))
    theirs = _as_recording(case, _run_keras(case))
    for i in range(len(case.params0)):
        np.testing.assert_array_equal(ours[i], reference["param"][i])
        np.testing.assert_array_equal(theirs[i], reference["param"][i])
    assert verify(case, ours, diagnose=False).passed
    assert verify(case, theirs, diagnose=False).passed


def _small_case(profile: str, dtype: str):
    prof = profiles.get(profile)
    hp = {"lr": 3e-3, "beta1": 0.85, "beta2": 0.99, "eps": 1e-6}
    if "decoupled" in prof.weight_decay:
        hp.update(weight_decay=0.05, decoupled_weight_decay=True)
    elif "l2" in prof.weight_decay:
        hp.update(weight_decay=0.05)
    if "momentum_decay" not in prof.fixed:
        hp["momentum_decay"] = 0.01
    return make_case(
        f"{profile}-{dtype}", profile=profile, dtype=dtype, shapes=[(5,), (2, 3)], steps=12,
        seed=7, hyperparameters=hp,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("profile", SEVEN)
def test_every_profile_same_bits_on_every_backend_and_passes_its_case(profile, dtype):
    """Non-default hyperparameters (weight decay where the framework has it):
    numpy, numba and cuda (the simulator in CI) give the golden float
    reference's bits, which pass the exact oracle's case."""
    case = _small_case(profile, dtype)
    reference = replay(case)
    for backend in ("numpy", "numba", "cuda"):
        if backend == "cuda":
            pytest.importorskip("numba.cuda")
        ours = _as_recording(case, _run_nadam(case, backend))
        for i in range(len(case.params0)):
            np.testing.assert_array_equal(ours[i], reference["param"][i], err_msg=backend)
    assert verify(case, ours, diagnose=False).passed


def test_timm_nadamw_first_step_by_hand():
    """Step 1 of timm's NAdamW, written out: θ(1 − γλ) − γ/(1 − β1)·(β1·m + (1 − β1)·g)
    / (√v/√(1 − β2) + ε), m = (1 − β1)g, v = (1 − β2)g²; optax.nadamw divides the
    momentum term by 1 − β1² instead, a different number."""
    g, theta0 = np.array([0.3, -2.0, 5.0]), np.array([1.0, -0.5, 2.0])
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1
    m, v = (1 - b1) * g, (1 - b2) * g * g
    denom = np.sqrt(v) / math.sqrt(1 - b2) + eps
    want = theta0 * (1 - lr * wd) - lr / (1 - b1) * (b1 * m + (1 - b1) * g) / denom
    optax_like = theta0 * (1 - lr * wd) - lr * (b1 * m / (1 - b1**2) + (1 - b1) * g / (1 - b1)) / (
        np.sqrt(v / (1 - b2)) + eps
    )
    for name, expected in (("timm-nadamw", want), ("optax", optax_like)):
        p = Parameter(theta0.copy(), g.copy())
        NAdam([p], profile=name, lr=lr, weight_decay=wd, decoupled_weight_decay=True).step()
        np.testing.assert_allclose(p.data, expected, rtol=1e-14)
    assert np.abs(want - optax_like).max() > 1e-3


def test_paddle_rounds_what_its_kernel_takes_as_float():
    """paddle's kernel takes β1, β2, ε, ψ as C++ float: a float64 run holds them
    float32-rounded, while lr and 0.96 stay double; tf-keras-legacy rounds lr,
    β1, β2, 0.96 instead."""
    hp = profiles.get("paddle").hyperparameters(
        dict(lr=0.1, beta1=0.9, beta2=0.99, eps=1e-7, momentum_decay=0.003)
    )
    rule = profiles.get("paddle").rules(hp, np.float64)
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    assert (rule["beta1"], rule["beta2"], rule["eps"], rule["momentum_decay"]) == (
        f32(0.9),
        f32(0.99),
        f32(1e-7),
        f32(0.003),
    )
    assert rule["lr"] == 0.1 and rule["momentum_base"] == 0.96 and rule["accumulated_powers"]
    legacy = profiles.get("tf-keras-legacy").rules(hp, np.float64)
    assert legacy["lr"] == f32(0.1) and legacy["momentum_base"] == f32(0.96)
    assert legacy["eps"] == 1e-7


def test_paddle_powers_are_running_products():
    """0.96^t and β2^t as paddle holds them: multiplied once per step in the
    parameter's dtype, which after many steps differs from the power of t."""
    from nadam_ref.schedule import accumulated_power

    x = np.float32(1)
    for _ in range(1000):
        x = np.float32(x * np.float32(0.96))
    assert accumulated_power(np.float32(0.96), 1000, np.float32) == x
    assert x != np.float32(0.96) ** np.float32(1000)


def test_profile_fixes_and_lacks_are_clear_errors():
    w = Parameter(np.ones(3))
    with pytest.raises(ValueError, match="keras3.*fixes momentum_decay"):
        NAdam([w], profile="keras3", momentum_decay=4e-3)
    with pytest.raises(ValueError, match="no l2 weight decay"):
        NAdam([w], profile="optax", weight_decay=0.1)
    with pytest.raises(ValueError, match="no maximize"):
        NAdam([w], profile="paddle", maximize=True)
    with pytest.raises(ValueError, match="scalar_dtype applies to the torch profile only"):
        NAdam([w], profile="keras3", scalar_dtype=np.float32)
    with pytest.raises(ValueError, match="choose one of"):
        NAdam([w], profile="pytorch")
