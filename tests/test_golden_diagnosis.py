"""The verifier's diagnosis: every candidate under every profile, the catalogue
of real bugs, composite explanations, "unexplained", dtype mismatches in plain
words.

Each bug is implemented here, in a plain NumPy NAdam written from the
algorithm box with the bug as a switch, independently of nadam_ref's code; the
timm NAdamW trajectory is timm's own, recorded (tests/data/timm/).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpmath", reason="the golden tools need mpmath (the 'golden' extra)")

from nadam_ref.golden import load, make_case, verify  # noqa: E402
from nadam_ref.golden.cli import main as golden_main  # noqa: E402
from nadam_ref.golden.reference import replay  # noqa: E402
from nadam_ref.golden.suite import suite_path  # noqa: E402
from nadam_ref.profiles import PROFILES  # noqa: E402

HERE = Path(__file__).resolve().parent
TIMM = HERE / "data" / "timm"
EXAMPLES = HERE.parent / "examples"


def plain_nadam(
    case,
    *,
    psi=None,
    prod_float32=False,
    mu_twice=False,
    prod_init_0=False,
    float32_hyperparameters=False,
    adam=False,
    mu_t_for_next=False,
    step_from_zero=False,
):
    """A plain float64 NAdam from the algorithm box (one θ update), with real
    ports' bugs as switches; ``psi=inf`` is the constant μ = β1 of optax."""
    hp = case.hyperparameters
    b1, b2, lr, eps = hp["beta1"], hp["beta2"], hp["lr"], hp["eps"]
    psi = hp["momentum_decay"] if psi is None else psi
    if float32_hyperparameters:  # a port that holds its hyperparameters as C floats
        b1, b2, lr, eps, psi = (float(np.float32(x)) for x in (b1, b2, lr, eps, psi))
    out = []
    for i, p0 in enumerate(case.params0):
        theta = p0.astype(np.float64).copy()
        m, v = np.zeros_like(theta), np.zeros_like(theta)
        prod = 0.0 if prod_init_0 else 1.0
        rows = []
        for t in range(1, case.steps + 1):
            g = case.grads[i][t - 1]
            s = t - 1 if step_from_zero else t
            warm = 0.0 if np.isinf(psi) else 0.5 * 0.96 ** (s * psi)
            warm_next = 0.0 if np.isinf(psi) else 0.5 * 0.96 ** ((s + 1) * psi)
            mu, mu_next = b1 * (1 - warm), b1 * (1 - warm_next)
            prod = prod * mu
            if prod_float32:
                prod = float(np.float32(prod))
            prod_next = prod * mu * mu_next if mu_twice else prod * mu_next
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            denom = np.sqrt(v / (1 - b2**s)) + eps
            if adam:
                m_hat = m / (1 - b1**t)
            elif mu_t_for_next:
                m_hat = mu * m / (1 - prod) + (1 - mu) * g / (1 - prod)
            else:
                m_hat = mu_next * m / (1 - prod_next) + (1 - mu) * g / (1 - prod)
            theta = theta - lr * m_hat / denom
            rows.append(theta.copy())
        out.append(np.array(rows))
    return out


@pytest.fixture(scope="module")
def torch_case():
    # float64 state, small gradients (ε matters next to √v̂ ≈ 1e-4)
    return make_case(
        "torch-state64",
        profile="torch",
        dtype="float64",
        shapes=[(6,)],
        steps=30,
        seed=99,
        grad_scale=1e-4,
        profile_options={"scalar_state": "float64"},
    )


@pytest.fixture(scope="module")
def optax_case():
    return make_case("optax", profile="optax", dtype="float64", shapes=[(6,)], steps=30, seed=98)


def test_plain_nadam_passes_both_cases(torch_case, optax_case):
    assert verify(torch_case, plain_nadam(torch_case)).passed
    assert verify(optax_case, plain_nadam(optax_case, psi=np.inf)).passed


@pytest.mark.parametrize(
    "switch, name",
    [
        ({"mu_twice": True}, "mu-twice"),
        ({"prod_init_0": True}, "prod-init-0"),
        ({"float32_hyperparameters": True}, "float32-hyperparameters"),
        ({"adam": True}, "adam"),
        ({"mu_t_for_next": True}, "wrong-schedule"),
        ({"step_from_zero": True}, "step-from-0"),
    ],
)
def test_each_real_bug_fails_within_the_first_steps_and_is_named(torch_case, switch, name):
    report = verify(torch_case, plain_nadam(torch_case, **switch))
    assert not report.passed and report.first_failing_step <= 3, str(report)
    d = report.diagnosis
    assert d.best is not None and name in d.names, str(report)
    assert "unexplained" not in d.verdict, d.verdict
    assert "times closer" in d.verdict or "exactly" in d.verdict, d.verdict


@pytest.mark.parametrize(
    "switch, name",
    [
        ({"adam": True}, "adam"),
        ({"prod_init_0": True}, "prod-init-0"),
        ({"float32_hyperparameters": True}, "float32-hyperparameters"),
    ],
)
def test_bugs_are_tried_under_optax_too(optax_case, switch, name):
    report = verify(optax_case, plain_nadam(optax_case, psi=np.inf, **switch))
    assert not report.passed and report.first_failing_step <= 3
    assert name in report.diagnosis.names, str(report)


def test_a_composite_explanation_names_the_profile_and_the_bug(optax_case):
    """A torch-style NAdam (ψ = 0.004) with the ∏μ double count, checked
    against an optax case: another profile plus a mistake."""
    report = verify(optax_case, plain_nadam(optax_case, mu_twice=True, psi=4e-3))
    d = report.diagnosis
    assert d.matches and any(n.endswith("+mu-twice") and n.startswith("torch") for n in d.names), d
    assert "torch" in d.label and "μ_t counted twice" in d.label


def test_unexplained_output_says_so_with_the_three_closest(torch_case):
    rng = np.random.default_rng(3)
    good = plain_nadam(torch_case)
    noisy = [
        a + 1e-6 * rng.standard_normal(a.shape) * np.arange(1, len(a) + 1)[:, None] for a in good
    ]
    d = verify(torch_case, noisy).diagnosis
    assert d.best is None and "unexplained" in d.verdict, d.verdict
    assert d.verdict.count(" at ") >= 3 and "the case itself" in d.verdict, d.verdict


def test_dtype_mismatches_in_plain_words():
    case = load(suite_path("torch-float64"))
    # a float32 output against a float64 case
    as32 = [a.astype(np.float32) for a in replay(case)["param"]]
    report = verify(case, as32)
    assert not report.passed and any("float32" in n and "float64" in n for n in report.notes), (
        report
    )
    # a float64 port whose ∏μ is float64, against torch's default float32-state case
    state64 = load(suite_path("torch-float64-state64"))
    report = verify(case, state64.expected["param"])
    assert not report.passed and report.diagnosis.best == "torch:float64", str(report)
    assert any("float32 tensors" in n and "torch-float64-state64" in n for n in report.notes), (
        report
    )


def _recorded_case(path, profile="optax", hp=None, steps=30, dtype="float64"):
    """A case of ``profile`` on a recording's inputs (its first ``steps`` steps),
    and the recorded θ."""
    z = np.load(path)
    n = sum(1 for k in z.files if k.startswith("initial/"))
    params0 = [z[f"initial/{i}"].astype(dtype) for i in range(n)]
    grads = [z[f"grads/{i}"][:steps].astype(dtype) for i in range(n)]
    case = make_case(
        f"{profile}-on-{path.stem}",
        profile=profile,
        dtype=dtype,
        shapes=[p.shape for p in params0],
        steps=steps,
        hyperparameters=hp or {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        params0=params0,
        grads=grads,
    )
    return case, [z[f"{dtype}/theta/{i}"][:steps] for i in range(n)]


def _timm_optax_case(recording):
    return _recorded_case(TIMM / recording)


@pytest.mark.parametrize(
    "recording, profile, name",
    [
        ("paddle/defaults.npz", "torch", "paddle"),
        ("timm/timm-nadam-legacy--defaults.npz", "torch", "timm-nadam-legacy"),
        ("timm/timm-nadam-legacy--defaults.npz", "tf-keras-legacy", "timm-nadam-legacy"),
    ],
)
def test_real_recording_against_another_profile_is_named(recording, profile, name):
    """paddle 3.3.1 and timm 1.0.31's NAdamLegacy, recorded with their defaults
    (torch's hyperparameters), against a float64 case of another profile on
    the same inputs: the diagnosis names the library's own profile."""
    path = HERE / "data" / recording
    if not path.exists():
        pytest.skip(f"no recording {recording}")
    hp = {"lr": 2e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "momentum_decay": 4e-3}
    case, recorded = _recorded_case(path, profile, hp)
    report = verify(case, recorded)
    assert not report.passed and report.first_failing_step <= 2, str(report)
    assert report.diagnosis.matches and name in report.diagnosis.names, str(report)


@pytest.mark.skipif(not TIMM.exists(), reason="no timm recordings")
def test_timm_nadamw_recording_is_named_against_an_optax_case():
    """timm.optim.NAdamW (timm 1.0.31, recorded with its defaults but no
    weight decay) against an optax case with the same inputs: named as the
    timm-nadamw profile."""
    if "timm-nadamw" not in PROFILES:
        pytest.skip("no timm-nadamw profile yet")
    case, recorded = _timm_optax_case("timm-nadamw--no-weight-decay.npz")
    report = verify(case, recorded)
    assert not report.passed and report.first_failing_step == 1
    assert report.diagnosis.best == "timm-nadamw" and report.diagnosis.matches, str(report)


@pytest.mark.skipif(not TIMM.exists(), reason="no timm recordings")
def test_timm_nadamw_without_its_profile_is_optax_plus_a_mistake():
    """The same, the timm-nadamw profile left out: optax with μ_t and ∏_t where
    μ_{t+1} and ∏_{t+1} belong (the momentum term over 1 − β1^t)."""
    case, recorded = _timm_optax_case("timm-nadamw--no-weight-decay.npz")
    report = verify(case, recorded, exclude_profiles=["timm-nadamw"])
    d = report.diagnosis
    assert not report.passed and report.first_failing_step == 1
    assert d.matches and d.label == "optax + μ_t for μ_{t+1}", str(report)
    assert d.scores[d.best] < 0.1, str(report)


# -- the example ports' bugs, named through the runner ---------------------------------------


def _names(tmp_path, selection, command):
    report = tmp_path / "r.json"
    rc = golden_main(["run", *selection, "--json", str(report), "--", *command])
    cases = json.loads(report.read_text())["cases"]
    return rc, [c for c in cases if c["status"] == "fail"]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_port_bug_is_named_by_the_runner(tmp_path):
    exe = tmp_path / "nadam"
    subprocess.run(
        ["cc", "-O2", "-std=c99", "-ffp-contract=off", "-o", str(exe),
         str(EXAMPLES / "c" / "nadam.c"), "-lm"],
        check=True,
    )  # fmt: skip
    sel = ["torch-float32", "torch-float64", "complex64", "schedule-cosine-torch-float64"]
    rc, failed = _names(tmp_path, sel, [str(exe), "--bug", "mu-twice", "{case}", "{out}"])
    assert rc == 1 and len(failed) == len(sel)
    for c in failed:
        assert c["diagnosis"]["best"] == "mu-twice", c["diagnosis"]["verdict"]


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js")
def test_js_port_bug_is_named_by_the_runner(tmp_path):
    js = str(EXAMPLES / "js" / "nadam.mjs")
    sel = ["optax-float32", "optax-float64", "schedule-warmup-cosine-optax-float64"]
    rc, failed = _names(tmp_path, sel, ["node", js, "--bug", "adam", "{case}", "{out}"])
    assert rc == 1 and len(failed) == len(sel)
    for c in failed:
        assert c["diagnosis"]["best"] == "adam", c["diagnosis"]["verdict"]
