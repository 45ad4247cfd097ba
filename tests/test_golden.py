"""Golden vectors: the exact oracle, the suite, the format, the verifier and
its diagnosis, checked against independent sources: mpmath, the real
frameworks' recorded (and live) trajectories, and a plain NAdam written in
this file with each known mistake switched on."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpmath", reason="the golden tools need mpmath (the 'golden' extra)")

from nadam_ref import NAdam, Parameter, functional  # noqa: E402
from nadam_ref.golden import (  # noqa: E402
    GoldenFormatError,
    load,
    loads,
    make_case,
    oracle,  # noqa: E402
    save,
    verify,
)
from nadam_ref.golden.cli import main as golden_main  # noqa: E402
from nadam_ref.golden.format import to_json, to_npz  # noqa: E402
from nadam_ref.golden.generate import draw_inputs  # noqa: E402
from nadam_ref.golden.reference import replay  # noqa: E402
from nadam_ref.golden.suite import SUITE, case_file, suite_path  # noqa: E402
from nadam_ref.golden.suite import generate as generate_suite_case  # noqa: E402

HERE = Path(__file__).resolve().parent
RECORDINGS = HERE / "data" / "golden_frameworks"
RECORDER = HERE / "data" / "record_golden_frameworks.py"
PROFILE_NAMES = ("torch", "tf-keras-legacy", "keras3", "optax")


# -- the oracle ------------------------------------------------------------------------------


def _rule(**hp):
    base = dict(
        lr=1e-3,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
        maximize=False,
        momentum_base=0.96,
        state_dtype=np.float64,
    )
    return {**base, **hp}


def test_oracle_matches_a_hand_derived_first_step():
    """Step 1 from θ = 1, g = 2 with torch's defaults, derived by hand in mpmath:
    m = 0.2, v = 0.004, μ1 = 0.9(1 − ½·0.96^0.004), ∏1 = μ1, v̂ = g²."""
    import mpmath

    with mpmath.workdps(80):
        f = mpmath.mpf
        mu1 = f(0.9) * (1 - f("0.5") * f(0.96) ** f(0.004))
        mu2 = f(0.9) * (1 - f("0.5") * f(0.96) ** (2 * f(0.004)))
        m = (1 - f(0.9)) * 2
        v = (1 - f(0.999)) * 4
        vhat = v / (1 - f(0.999))
        mhat = mu2 * m / (1 - mu1 * mu2) + (1 - mu1) * 2 / (1 - mu1)
        theta = 1 - f(2e-3) * mhat / (mpmath.sqrt(vhat) + f(1e-8))
        want = float(theta)
    out = oracle.exact_run(
        [_rule(lr=2e-3, state_dtype=None)], [np.array([1.0])], [np.array([[2.0]])], [1]
    )
    assert out["param"][0][0, 0] == want
    assert out["exp_avg"][0][0, 0] == float(mpmath.mpf(1 - mpmath.mpf(0.9)) * 2)


def test_round_to_is_correct_rounding_for_float32():
    """Ties and near-ties: 1 + 2⁻²⁴ (a tie → even, 1), 1 + 2⁻²⁴ + tiny (→ up),
    overflow beyond the largest float32, and a subnormal."""
    E = oracle.Exact
    assert oracle.round_to(E(1) + E(2) ** -24, np.float32) == np.float32(1)
    assert oracle.round_to(E(1) + E(2) ** -24 + E(2) ** -80, np.float32) == np.nextafter(
        np.float32(1), np.float32(2)
    )
    assert (
        oracle.round_to(E(1) + 3 * E(2) ** -24, np.float32)
        == np.float32(1) + 2 * np.float32(2) ** -23
    )
    assert oracle.round_to(E(2) ** 129, np.float32) == np.inf
    assert oracle.round_to(E(2) ** -140, np.float32) == np.float32(2.0**-140)
    assert oracle.round_to(E(2) ** -160, np.float32) == 0


def _single_step(rng, split, fresh):
    n = 16
    theta = rng.standard_normal(n)
    scale = 10 ** rng.uniform(-6, 2)
    hp = dict(
        lr=float(10 ** rng.uniform(-4, -2)),
        beta1=float(rng.uniform(0, 0.99)),
        beta2=float(rng.uniform(0.9, 0.9999)),
        eps=1e-8,
        momentum_decay=4e-3,
    )
    m, v, steps, prods = np.zeros(n), np.zeros(n), [np.float64(0)], [np.float64(1)]
    if not fresh:
        for _ in range(int(rng.integers(1, 40))):
            steps, prods = functional.nadam(
                [theta], [rng.standard_normal(n) * scale], [m], [v], steps, prods, **hp
            )
    g = rng.standard_normal(n) * scale
    out = [theta.copy(), g.copy(), m.copy(), v.copy()]
    functional.nadam([out[0]], [out[1]], [out[2]], [out[3]], steps, prods, split_update=split, **hp)
    E = oracle.to_exact
    T, M, V, _, _ = oracle.exact_step(
        _rule(**hp),
        E(theta),
        E(g),
        E(m),
        E(v),
        oracle.Exact(float(steps[0])),
        oracle.Exact(float(prods[0])),
    )
    exact = [oracle.round_array(X, np.float64) for X in (T, M, V)]
    return hp, theta, g, m, out, exact


def test_float64_first_step_within_one_ulp_of_exact():
    """Random θ, g and hyperparameters, a first step (the start of every golden
    trajectory), θ applied at once: θ, m and v within 1 ulp of the correctly
    rounded exact result."""
    rng = np.random.default_rng(2024)
    for _ in range(60):
        _, _, _, _, out, exact = _single_step(rng, split=False, fresh=True)
        for got, want in zip((out[0], out[2], out[3]), exact):
            assert np.all(np.abs(got - want) <= np.spacing(np.abs(want)))


def test_float64_single_step_from_any_state_within_one_ulp_of_its_terms():
    """From states left by earlier random steps, in both update orders.  v is
    within 1 ulp; m = β1·m + (1−β1)·g and θ − Δ can cancel, and a cancelled
    result carries the rounding of its terms, so m and θ are within 1 ulp of
    their terms' size (the condition-aware statement of 1 ulp)."""
    rng = np.random.default_rng(7)
    for trial in range(60):
        hp, theta, g, m, out, (T, M, V) = _single_step(rng, split=bool(trial % 2), fresh=False)
        assert np.all(np.abs(out[3] - V) <= np.spacing(V))
        m_scale = hp["beta1"] * np.abs(m) + (1 - hp["beta1"]) * np.abs(g)
        assert np.all(np.abs(out[2] - M) <= np.spacing(m_scale))
        t_scale = np.maximum(np.abs(theta), np.abs(T)) + 4 * np.abs(theta - T)
        assert np.all(np.abs(out[0] - T) <= np.spacing(t_scale))


def test_trajectory_distance_from_exact_is_reported_and_small():
    """The float reference along whole trajectories, 10⁵ steps included:
    distance from the exact trajectory in ulps (printed with -s), well inside
    the derived tolerance."""
    for name in (
        "torch-float64",
        "keras3-float64",
        "closed-loop-sphere",
        "shape-large-float64",
        "long-run",
        "torch-float32",
        "keras3-float32",
        "optax-float32",
    ):
        case = load(suite_path(name))
        report = verify(case, replay(case), diagnose=False)
        print(
            f"{name}: float reference vs exact: θ {report.max_ulps['param']:.0f} ulps "
            f"({report.max_ratio['param']:.3f} of tolerance)"
        )
        assert report.passed and report.max_ratio["param"] < 0.7


# -- the suite -------------------------------------------------------------------------------


def test_suite_regenerates_byte_for_byte(tmp_path):
    """Every shipped case but the 10⁵-step one (the next test), regenerated
    through the CLI, has the same bytes."""
    names = [n for n in SUITE if n != "long-run"]
    assert golden_main(["generate", "--suite", "--only", *names, "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(case_file(n) for n in names)
    for name in names:
        assert (tmp_path / case_file(name)).read_bytes() == suite_path(name).read_bytes(), name


#: Steps of the 10⁵-step case that CI regenerates: ∏μ, kept in float32, underflows
#: to 0 between steps 100 and 200, and records thin to every 100th step after 100.
#: Every later step runs the same code (its scalars are exact, only ∏μ is rounded).
LONG_PREFIX = 2000
#: sha256 of the shipped long-run.npz, which pins the steps after LONG_PREFIX.  A
#: full regeneration (~50 s) after a deliberate change, then update this:
#: nadam-ref golden generate --suite --only long-run --out DIR; sha256sum DIR/long-run.npz
LONG_RUN_SHA256 = "6b776a3d52055851dab30e185632082136be571728c7b55f63190e9c36c288a7"


def test_long_case_regenerates_over_its_prefix_and_its_bytes_are_pinned(monkeypatch):
    """The 10⁵-step case: its inputs drawn again for every step, the oracle run
    by the suite's own generator over the first LONG_PREFIX steps, and that
    prefix, completed with the shipped later rows, is the shipped file byte for
    byte; the shipped file's digest pins those later rows."""
    path = suite_path("long-run")
    shipped = load(path)
    ext, options = SUITE["long-run"]
    params0, grads = draw_inputs(
        np.random.default_rng(options["seed"]),
        options["dtype"],
        options["shapes"],
        options["steps"],
        grad_kind=options["grad_kind"],
    )
    k = sum(s <= LONG_PREFIX for s in options["record_steps"])
    monkeypatch.setitem(
        SUITE,
        "long-run",
        (
            ext,
            {
                **options,
                "steps": LONG_PREFIX,
                "record_steps": options["record_steps"][:k],
                "params0": params0,
                "grads": [g[:LONG_PREFIX] for g in grads],
            },
        ),
    )
    prefix = generate_suite_case("long-run")
    assert prefix.record_steps == shipped.record_steps[:k] and k >= 100 + 10
    for part in ("expected", "tolerance"):
        for q, arrays in getattr(shipped, part).items():
            for i, (want, got) in enumerate(zip(arrays, getattr(prefix, part)[q])):
                assert got.tobytes() == want[:k].tobytes(), (part, q, i)
    mu_product = prefix.expected["mu_product"][0]
    assert mu_product[99] > 0 and mu_product[-1] == 0  # the underflow is inside the prefix
    whole = dataclasses.replace(
        prefix,
        steps=options["steps"],
        record_steps=options["record_steps"],
        grads=grads,
        **{
            part: {
                q: [np.concatenate([a, b[k:]]) for a, b in zip(arrays, getattr(shipped, part)[q])]
                for q, arrays in getattr(prefix, part).items()
            }
            for part in ("expected", "tolerance")
        },
    )
    assert to_npz(whole) == path.read_bytes()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LONG_RUN_SHA256


def test_suite_contents_cover_the_issue():
    cases = {name: load(suite_path(name)) for name in SUITE}
    total = sum(suite_path(n).stat().st_size for n in SUITE)
    assert total < 4_000_000
    from nadam_ref.profiles import PROFILES

    assert {c.profile for c in cases.values()} == set(PROFILES)
    assert {c.dtype.name for c in cases.values()} >= {
        "float32",
        "float64",
        "complex64",
        "complex128",
    }
    sizes = [int(np.prod(s)) for c in cases.values() for s in c.shapes]
    assert min(sizes) == 1 and max(sizes) >= 2000 and () in cases["shape-scalar"].shapes
    assert max(c.steps for c in cases.values()) >= 100_000
    hp = lambda n: cases[n].hyperparameters  # noqa: E731
    assert (
        hp("lr-zero")["lr"] == 0
        and hp("beta1-zero")["beta1"] == 0
        and hp("psi-zero")["momentum_decay"] == 0
    )
    assert len(cases["param-groups"].groups) == 2
    assert np.all(cases["zero-gradients"].grads[0] == 0)
    assert np.max(np.abs(cases["tiny-gradients-float64"].grads[0])) < 1e-29
    assert np.max(np.abs(cases["huge-gradients-float64"].grads[0])) > 1e29
    eps = cases["eps-dominated"]
    assert np.all(
        np.sqrt(eps.expected["exp_avg_sq"][0].astype(float)) < 0.1 * eps.hyperparameters["eps"]
    )
    # lr = 0: θ stays put, exactly
    assert np.all(cases["lr-zero"].expected["param"][0] == cases["lr-zero"].params0[0])


@pytest.mark.parametrize("name", [n for n in SUITE if n != "long-run"])
def test_suite_case_passes_the_float_reference_and_fails_when_perturbed(name):
    case = load(suite_path(name))
    assert verify(case, replay(case), diagnose=False).passed
    bad = [a.copy() for a in case.expected["param"]]
    k = len(case.record_steps) // 2
    bad[0][k] = bad[0][k] + 64 * np.maximum(case.tolerance["param"][0][k].real, 1e-30)
    report = verify(case, bad, diagnose=False)
    assert not report.passed and report.first_failure.step == case.record_steps[k]
    assert report.first_failure.quantity == "param"


def test_nadam_class_passes_torch_cases():
    """The public torch-style optimizer, with torch's float32 scalar state."""
    for name in ("torch-float32", "torch-float64", "param-groups", "complex64", "maximize"):
        case = load(suite_path(name))
        params = [Parameter(p.copy()) for p in case.params0]
        groups = [
            {
                "params": [params[i] for i in g["params"]],
                "lr": g["hyperparameters"]["lr"],
                "betas": (g["hyperparameters"]["beta1"], g["hyperparameters"]["beta2"]),
                "eps": g["hyperparameters"]["eps"],
                "weight_decay": g["hyperparameters"]["weight_decay"],
                "momentum_decay": g["hyperparameters"]["momentum_decay"],
                "maximize": g["hyperparameters"]["maximize"],
            }
            for g in case.groups
        ]
        opt = NAdam(groups, scalar_dtype=np.float32)
        traj = [[] for _ in params]
        for t in range(case.steps):
            for i, p in enumerate(params):
                p.grad = np.array(case.grads[i][t])
            opt.step()
            for i, p in enumerate(params):
                traj[i].append(p.data.copy())
        assert verify(case, [np.array(x) for x in traj], diagnose=False).passed, name


# -- recordings from the real frameworks -------------------------------------------------------


def _recordings():
    return sorted(RECORDINGS.glob("*.npz"))


@pytest.mark.parametrize("path", _recordings(), ids=lambda p: p.stem)
def test_recorded_framework_passes_its_profile(path):
    framework, case_name = path.stem.split("--")
    report = verify(load(suite_path(case_name)), path)
    assert report.passed, str(report)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", PROFILE_NAMES)
def test_recorded_framework_fails_the_other_profiles(framework, dtype):
    path = RECORDINGS / f"{framework}--{framework}-{dtype}.npz"
    for other in PROFILE_NAMES:
        if other != framework:
            report = verify(load(suite_path(f"{other}-{dtype}")), path, diagnose=False)
            assert not report.passed and report.first_failing_step == 1, (framework, other)


@pytest.mark.parametrize("framework", ["torch", "tf-keras-legacy", "keras3", "optax"])
def test_same_inputs_other_profile_is_diagnosed_as_the_framework(framework):
    """Same θ₀, gradients and hyperparameters, float64: a case generated for
    each other profile rejects the recording, and the diagnosis names the
    framework that produced it."""
    source = load(suite_path(f"{framework}-float64"))
    recorded = np.load(RECORDINGS / f"{framework}--{framework}-float64.npz")["param_0"]
    expected_name = "torch:float32" if framework == "torch" else framework
    for other in PROFILE_NAMES:
        if other == framework:
            continue
        from nadam_ref.profiles import get

        fixed = get(other).fixed
        hp = {k: v for k, v in source.hyperparameters.items() if k not in fixed}
        case = make_case(
            "x",
            profile=other,
            dtype="float64",
            shapes=source.shapes,
            steps=source.steps,
            hyperparameters=hp,
            params0=source.params0,
            grads=source.grads,
        )
        report = verify(case, recorded)
        assert not report.passed, other
        assert report.diagnosis.matches and report.diagnosis.best == expected_name, (
            other,
            str(report),
        )


def _recorder():
    """tests/data/record_golden_frameworks.py as a module (tests/data is no package)."""
    spec = importlib.util.spec_from_file_location("record_golden_frameworks", RECORDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_live_frameworks_match_the_recordings(tmp_path):
    """Run each framework now (one case each) and verify.  torch, tf-keras and
    Keras 3 record in this process, which imports them for other tests anyway
    (a subprocess each spent ~30 s importing them again); optax through the
    recorder's command line, whose subprocess keeps JAX apart from TensorFlow."""
    cases = {
        "torch": "torch-float64",
        "tf-keras-legacy": "tf-keras-legacy-float64",
        "keras3": "keras3-float32",
        "optax": "optax-float64",
    }
    modules = {"torch": "torch", "tf-keras-legacy": "tf_keras", "keras3": "keras", "optax": "optax"}
    missing = [f for f, m in modules.items() if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"frameworks not installed: {missing} (the 'crosscheck' extra)")
    recorder = _recorder()
    for framework in ("torch", "tf-keras-legacy", "keras3"):
        recorder._record_one(framework, cases[framework], tmp_path)
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run(
        [sys.executable, str(RECORDER), "--out", str(tmp_path), "--only", "optax"]
        + ["--cases", cases["optax"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{framework}--{case_name}.npz" for framework, case_name in cases.items()
    )
    for framework, case_name in cases.items():
        path = tmp_path / f"{framework}--{case_name}.npz"
        assert verify(load(suite_path(case_name)), path, diagnose=False).passed, framework


# -- deliberate mistakes ---------------------------------------------------------------------


def plain_nadam(
    case,
    *,
    psi_factor=1.0,
    mu_t_for_next=False,
    eps_inside=False,
    step_from_zero=False,
    no_v_correction=False,
    no_m_correction=False,
    float32_state=False,
):
    """A plain float64 NAdam written from the algorithm box, independent of
    nadam_ref's code, with the known mistakes as switches."""
    hp = case.hyperparameters
    b1, b2, lr, eps, psi = (
        hp["beta1"],
        hp["beta2"],
        hp["lr"],
        hp["eps"],
        hp["momentum_decay"] * psi_factor,
    )
    theta = case.params0[0].astype(np.float64).copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    prod = np.float32(1) if float32_state else 1.0
    out = []
    for t in range(1, case.steps + 1):
        g = case.grads[0][t - 1]
        s = t - 1 if step_from_zero else t
        mu = b1 * (1 - 0.5 * 0.96 ** (s * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((s + 1) * psi))
        prod = np.float32(prod * np.float32(mu)) if float32_state else prod * mu
        prod_next = float(prod) * mu_next
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        bc2 = 1.0 if no_v_correction else 1 - b2**s
        with np.errstate(divide="ignore", invalid="ignore"):
            v_hat = v / bc2
            denom = np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps
        if no_m_correction:
            m_hat = mu_next * m + (1 - mu) * g
        elif mu_t_for_next:
            m_hat = mu * m / (1 - float(prod)) + (1 - mu) * g / (1 - float(prod))
        else:
            m_hat = mu_next * m / (1 - prod_next) + (1 - mu) * g / (1 - float(prod))
        with np.errstate(divide="ignore", invalid="ignore"):
            theta = theta - lr * m_hat / denom
        out.append(theta.copy())
    return np.array(out)


@pytest.fixture(scope="module")
def mistake_case():
    # Small gradients, so that ε = 1e-8 matters next to √v̂ ≈ 1e-4.
    return make_case(
        "mistakes",
        profile="torch",
        dtype="float64",
        shapes=[(6,)],
        steps=40,
        seed=99,
        grad_scale=1e-4,
        profile_options={"scalar_state": "float64"},
    )


def test_plain_nadam_without_mistakes_passes(mistake_case):
    assert verify(mistake_case, plain_nadam(mistake_case)).passed


@pytest.mark.parametrize(
    "switch, name",
    [
        ({"mu_t_for_next": True}, "wrong-schedule"),
        ({"psi_factor": 10.0}, "psi×10"),
        ({"eps_inside": True}, "eps-inside-sqrt"),
        ({"step_from_zero": True}, "step-from-0"),
        ({"no_v_correction": True}, "no-v-bias-correction"),
        ({"no_m_correction": True}, "no-m-bias-correction"),
        ({"float32_state": True}, "float32-state"),
    ],
)
def test_each_mistake_is_caught_and_named(mistake_case, switch, name):
    report = verify(mistake_case, plain_nadam(mistake_case, **switch))
    assert not report.passed
    # (float32 state in a float64-state torch case is also exactly torch's own
    # default, named as that profile too)
    assert name in report.diagnosis.names, str(report)
    assert report.diagnosis.matches
    print(report.diagnosis)


# -- the format ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_case():
    return load(suite_path("param-groups"))


def test_json_and_npz_forms_hold_the_same_bits(small_case, tmp_path):
    a = loads(to_npz(small_case))
    b = loads(to_json(small_case).encode())
    for case in (a, b):
        for part in ("expected", "tolerance"):
            for q, arrays in getattr(small_case, part).items():
                for x, y in zip(arrays, getattr(case, part)[q]):
                    assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
        assert case.hyperparameters == small_case.hyperparameters and case.rules == small_case.rules
    save(small_case, tmp_path / "c.npz")
    assert (tmp_path / "c.npz").read_bytes() == to_npz(small_case)


def test_shipped_json_files_validate_against_the_shipped_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((suite_path().parent / "schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    # One validator for every file (jsonschema.validate checks the schema again each call).
    validator = jsonschema.validators.validator_for(schema)(schema)
    for name, (ext, _) in SUITE.items():
        if ext == "json":
            validator.validate(json.loads(suite_path(name).read_text()))


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d.pop("profile"), "profile"),
        (lambda d: d.update(dtype="float16"), "dtype"),
        (lambda d: d["rules"][0].update(beta1="x"), "rules/0/beta1"),
        (lambda d: d["params0"][0].append(1.0), "params0/0"),
        (lambda d: d.update(steps=0), "steps"),
        (lambda d: d.update(record_steps=[3, 2]), "record_steps"),
        (lambda d: d["groups"][0].update(params=[0]), "groups"),
        (lambda d: d.update(version=3), "version"),
    ],
)
def test_loader_names_the_bad_field(small_case, edit, field):
    doc = json.loads(to_json(small_case))
    edit(doc)
    with pytest.raises(GoldenFormatError) as info:
        loads(json.dumps(doc).encode())
    message = str(info.value)
    assert "\n" not in message and field in message, message


def test_loader_raises_only_golden_format_error_on_corruption(small_case):
    rng = np.random.default_rng(5)
    for data in (to_json(small_case).encode(), to_npz(small_case)):
        for _ in range(40):
            b = bytearray(data)
            kind = rng.integers(3)
            if kind == 0:
                b = b[: int(rng.integers(len(b)))]
            else:
                for _ in range(int(rng.integers(1, 8))):
                    b[int(rng.integers(len(b)))] = int(rng.integers(256))
            try:
                loads(bytes(b))
            except GoldenFormatError:
                pass


# -- the command line --------------------------------------------------------------------------


def test_cli_list_generate_verify(tmp_path, capsys):
    assert golden_main(["list"]) == 0
    assert "long-run" in capsys.readouterr().out
    case_path = tmp_path / "case.json"
    assert (
        golden_main(
            [
                "generate",
                "--profile",
                "keras3",
                "--dtype",
                "float32",
                "--steps",
                "6",
                "--shape",
                "2,3",
                "--shape",
                "4",
                "--seed",
                "3",
                "--out",
                str(case_path),
            ]
        )
        == 0
    )
    case = load(case_path)
    assert case.shapes == [(2, 3), (4,)] and case.steps == 6 and case.profile == "keras3"
    good = replay(case)["param"]
    np.savez(tmp_path / "good.npz", *good)
    capsys.readouterr()
    assert golden_main(["verify", str(case_path), str(tmp_path / "good.npz")]) == 0
    assert "PASS" in capsys.readouterr().out
    bad = [a.copy() for a in good]
    bad[1][2, 3] += 1e-3
    np.savez(tmp_path / "bad.npz", *bad)
    assert golden_main(["verify", str(case_path), str(tmp_path / "bad.npz")]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "step 3" in out and "parameter 1 element [3]" in out and "ulps" in out
    # one parameter as .npy and as CSV; a suite case by name
    one = make_case("one", profile="torch", dtype="float64", shapes=[(3,)], steps=5)
    save(one, tmp_path / "one.json")
    np.save(tmp_path / "one.npy", replay(one)["param"][0])
    np.savetxt(
        tmp_path / "one.csv", replay(one)["param"][0], delimiter=",", fmt="%.17g", header="a,b,c"
    )
    assert golden_main(["verify", str(tmp_path / "one.json"), str(tmp_path / "one.npy")]) == 0
    assert golden_main(["verify", str(tmp_path / "one.json"), str(tmp_path / "one.csv")]) == 0
    rec = RECORDINGS / "torch--torch-float32.npz"
    assert golden_main(["verify", "torch-float32", str(rec)]) == 0
    (tmp_path / "junk.json").write_text("{not json")
    assert golden_main(["verify", str(tmp_path / "junk.json"), str(rec)]) == 2


def test_report_names_the_quantity_that_left_first():
    """An output with m, v and θ: m is wrong from step 3, θ from step 5 → the
    report names m at step 3; with only v wrong, v."""
    case = load(suite_path("torch-float64"))
    good = replay(case)
    bad = {q: [a.copy() for a in arrays] for q, arrays in good.items()}
    bad["exp_avg"][0][2:, 4] *= 1 + 1e-9
    bad["param"][0][4:, 1] += 1e-9
    report = verify(case, bad, diagnose=False)
    assert (report.first_failure.step, report.first_failure.quantity) == (3, "exp_avg")
    assert report.first_failure.index == (4,) and "m (exp_avg)" in str(report)
    only_v = {q: [a.copy() for a in arrays] for q, arrays in good.items()}
    only_v["exp_avg_sq"][0][6, 0] *= 1 + 1e-9
    report = verify(case, only_v, diagnose=False)
    assert (report.first_failure.step, report.first_failure.quantity) == (7, "exp_avg_sq")
