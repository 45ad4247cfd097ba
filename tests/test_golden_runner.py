"""The conformance runner (``nadam-ref golden run``), format version 2
(learning-rate schedules, resumes) and the example ports in C and JavaScript.

Numbers are checked against independent sources: values derived by hand in
mpmath in this file, a plain NumPy NAdam written here from the algorithm box,
and the two ports in examples/, which nobody derived from nadam_ref's code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpmath", reason="the golden tools need mpmath (the 'golden' extra)")

from nadam_ref.golden import GoldenFormatError, load, loads, oracle, verify  # noqa: E402
from nadam_ref.golden.cli import main as golden_main  # noqa: E402
from nadam_ref.golden.format import to_json, to_npz  # noqa: E402
from nadam_ref.golden.reference import replay  # noqa: E402
from nadam_ref.golden.runner import write_inputs  # noqa: E402
from nadam_ref.golden.suite import SUITE, suite_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


# -- format version 2 ------------------------------------------------------------------------


def _first_step_by_hand(theta, g, m, v, k, prod, lr, b1=0.9, b2=0.999, eps=1e-8, psi=4e-3):
    """NAdam's step k + 1 from a checkpoint (θ, m, v, stored step k, ∏_{i≤k} μ_i),
    written out in mpmath from the algorithm box (∏ kept exact)."""
    import mpmath

    with mpmath.workdps(80):
        f = mpmath.mpf
        t = k + 1
        mu = f(b1) * (1 - f("0.5") * f(0.96) ** (t * f(psi)))
        mu_next = f(b1) * (1 - f("0.5") * f(0.96) ** ((t + 1) * f(psi)))
        prod_t = f(prod) * mu
        m = f(b1) * f(m) + (1 - f(b1)) * f(g)
        v = f(b2) * f(v) + (1 - f(b2)) * f(g) ** 2
        mhat = mu_next * m / (1 - prod_t * mu_next) + (1 - mu) * f(g) / (1 - prod_t)
        vhat = v / (1 - f(b2) ** t)
        return float(f(theta) - f(lr) * mhat / (mpmath.sqrt(vhat) + f(eps))), float(prod_t)


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
        state_dtype=None,
    )
    return {**base, **hp}


def test_oracle_resumes_from_a_checkpoint_as_derived_by_hand():
    """From step k = 700 with given θ, m, v and ∏μ, one exact step equals the
    hand derivation (the schedule uses t = 701, not 1)."""
    start = {"step": [700], "mu_product": [3.5e-35], "exp_avg": [np.array([0.03])],
             "exp_avg_sq": [np.array([2e-3])]}  # fmt: skip
    out = oracle.exact_run(
        [_rule(lr=2e-3)], [np.array([0.7])], [np.array([[-0.4]])], [1], start=start
    )
    want, prod = _first_step_by_hand(0.7, -0.4, 0.03, 2e-3, 700, 3.5e-35, 2e-3)
    assert out["param"][0][0, 0] == want
    assert out["mu_product"][0][0] == prod


def test_oracle_takes_the_learning_rate_of_each_step():
    """Two steps with lr 1e-2 then 1e-4 (a schedule) against the hand derivation."""
    import mpmath

    rule = _rule(lr=5.0, lr_schedule=np.array([1e-2, 1e-4]))
    out = oracle.exact_run([rule], [np.array([1.0])], [np.array([[2.0], [-1.0]])], [1, 2])
    theta1, prod1 = _first_step_by_hand(1.0, 2.0, 0.0, 0.0, 0, 1.0, 1e-2)
    assert out["param"][0][0, 0] == theta1
    with mpmath.workdps(80):
        m1 = (1 - mpmath.mpf(0.9)) * 2
        v1 = (1 - mpmath.mpf(0.999)) * 4
    # (θ1 is the correctly rounded exact value; the oracle carries it exactly, so
    # compare the second step with a tolerance of a few ulps of float64)
    theta2, _ = _first_step_by_hand(theta1, -1.0, m1, v1, 1, prod1, 1e-4)
    assert abs(out["param"][0][1, 0] - theta2) <= 4 * np.spacing(theta2)
    lr_5 = oracle.exact_run([_rule(lr=5.0)], [np.array([1.0])], [np.array([[2.0]])], [1])
    assert lr_5["param"][0][0, 0] != theta1  # the schedule, not the base rate, is used


def _plain_nadam(case, *, ignore_schedule=False, restart_step=False, restart_prod=False):
    """A plain float64 torch-style NAdam (∏μ in float32 as torch stores it) from
    the algorithm box, resuming from the case's checkpoint, with the usual
    resume and schedule mistakes as switches."""
    out = []
    for i, p0 in enumerate(case.params0):
        hp = case.group_of(i)["hyperparameters"]
        b1, b2, eps, psi = hp["beta1"], hp["beta2"], hp["eps"], hp["momentum_decay"]
        lam = hp["weight_decay"]
        k, prod, m, v = case.start_state(i)
        k = 0 if restart_step else k
        prod = np.float32(1 if restart_prod else prod)
        theta, m, v = p0.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
        rows = []
        for s in range(case.steps):
            t = k + s + 1
            lr = hp["lr"] if ignore_schedule else case.learning_rates(i)[s]
            g = case.grads[i][s] + lam * theta
            mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
            mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
            prod = np.float32(prod * np.float32(mu))
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            denom = np.sqrt(v / (1 - b2**t)) + eps
            theta = theta - lr * (1 - mu) / (1 - float(prod)) * (g / denom)
            theta = theta - lr * mu_next / (1 - float(prod) * mu_next) * (m / denom)
            rows.append(theta.copy())
        out.append(np.array(rows))
    return out


def test_resume_and_schedule_case_passes_a_plain_port_and_catches_resume_mistakes():
    case = load(suite_path("resume-schedule-torch-float64"))
    assert case.version == 2 and case.start["step"] == [50, 50]
    assert verify(case, _plain_nadam(case), diagnose=False).passed
    for mistake in ("ignore_schedule", "restart_step", "restart_prod"):
        report = verify(case, _plain_nadam(case, **{mistake: True}), diagnose=False)
        assert not report.passed and report.first_failing_step <= 2, mistake
        assert "optimizer step 51" in str(report.first_failure), str(report)


def test_v2_round_trips_and_v1_files_still_load(tmp_path):
    case = load(suite_path("resume-schedule-torch-float64"))
    for data in (to_json(case).encode(), to_npz(case)):
        back = loads(data)
        assert back.start["step"] == case.start["step"]
        for q in ("exp_avg", "exp_avg_sq"):
            for a, b in zip(back.start[q], case.start[q]):
                assert a.tobytes() == b.tobytes()
        for a, b in zip(back.groups, case.groups):
            assert np.array_equal(a["lr_schedule"], b["lr_schedule"])
        assert verify(back, replay(back), diagnose=False).passed
    v1 = json.loads(suite_path("torch-float32").read_text())
    assert v1["version"] == 1 and load(suite_path("torch-float32")).version == 1


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["groups"][0]["lr_schedule"].pop(), "groups/0/lr_schedule"),
        (lambda d: d["groups"][0]["lr_schedule"].__setitem__(3, -1.0), "groups/0/lr_schedule"),
        (lambda d: d.update(version=1), "needs format version 2"),
        (lambda d: d["start"]["exp_avg"][0].pop(), "start/exp_avg/0"),
        (lambda d: d["start"].pop("mu_product"), "start"),
        (lambda d: d.update(version=3), "version"),
    ],
)
def test_v2_loader_names_the_bad_field(edit, field):
    doc = json.loads(suite_path("resume-schedule-torch-float64").read_text())
    edit(doc)
    with pytest.raises(GoldenFormatError) as info:
        loads(json.dumps(doc).encode())
    assert field in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_suite_has_schedule_and_resume_cases_per_profile():
    cases = {n: load(suite_path(n)) for n in SUITE if n.startswith(("schedule-", "resume-"))}
    scheduled = {c.profile for c in cases.values() if any("lr_schedule" in g for g in c.groups)}
    resumed = {c.profile for c in cases.values() if c.start is not None}
    assert scheduled >= {"torch", "tf-keras-legacy", "keras3", "optax"}
    assert resumed >= {"torch", "tf-keras-legacy", "keras3", "optax"}
    # the schedules really change every step, and the float32 profiles hold them in float32
    keras = cases["schedule-warmup-cosine-keras3-float32"]
    lrs = keras.learning_rates(0)
    assert len(set(lrs.tolist())) > 20 and lrs[0] == 0
    held = keras.rules[0]["lr_schedule"]
    assert np.array_equal(held, lrs.astype(np.float32).astype(np.float64))


# -- the safetensors input ------------------------------------------------------------------


def test_safetensors_input_holds_the_case(tmp_path):
    """Read back with the safetensors library: every input bit, the checkpoint, the schedule."""
    from safetensors import safe_open

    case = load(suite_path("resume-schedule-torch-float64"))
    path = write_inputs(case, tmp_path / "c.safetensors")
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
        got = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert meta["case.profile"] == "torch" and meta["case.steps"] == "20"
    assert meta["option.scalar_state"] == "float32" and meta["case.parameters"] == "2"
    assert got["grad.1"].shape == (20, 2, 2) and got["grad.1"].tobytes() == case.grads[1].tobytes()
    assert got["step.0"] == 50 and got["mu_product.1"] == case.start["mu_product"][1]
    assert got["exp_avg_sq.1"].tobytes() == case.start["exp_avg_sq"][1].tobytes()
    assert np.array_equal(got["lr.1"], case.groups[1]["lr_schedule"])
    assert got["weight_decay.0"] == 0.01 and got["lr.1"][0] != got["lr.0"][0]
    c64 = load(suite_path("complex64"))
    write_inputs(c64, tmp_path / "z.safetensors")
    with safe_open(str(tmp_path / "z.safetensors"), "np") as f:
        z = f.get_tensor("param.0")
    assert z.dtype == np.float32 and z.shape == (3, 2)
    assert np.array_equal(z[:, 0] + 1j * z[:, 1], c64.params0[0])


# -- the runner, with programs that misbehave ----------------------------------------------------

PROGRAM = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    import numpy as np
    name, case, out = sys.argv[1:4]
    def expected():  # the case's own expected θ, from the JSON case
        doc = json.load(open(case))
        return np.array(doc["expected"]["param"][0]).reshape(len(doc["record_steps"]), -1)
    if name == "torch-float32":  # a correct output
        np.save(out, expected())
    elif name == "torch-float64":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif name == "keras3-float32":
        print("bad input", file=sys.stderr); sys.exit(3)
    elif name == "keras3-float64":  # hangs, with a child that keeps the pipes open
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        time.sleep(60)
    elif name == "optax-float32":
        open(out, "wb").write(os.urandom(300))
    elif name == "optax-float64":
        pass  # writes nothing
    elif name == "tf-keras-legacy-float32":  # off by a lot from step 1
        np.save(out, expected() + 1e-3)
    """
)


def test_runner_reports_each_fault_per_case_and_never_hangs(tmp_path, capsys):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    names = ["torch-float32", "torch-float64", "keras3-float32", "keras3-float64",
             "optax-float32", "optax-float64", "tf-keras-legacy-float32"]  # fmt: skip
    junit, report = tmp_path / "junit.xml", tmp_path / "report.json"
    started = time.monotonic()
    rc = golden_main(
        [
            "run",
            *names,
            "--input-form",
            "json",
            "--output-form",
            "npy",
            "--timeout",
            "3",
            "--junit",
            str(junit),
            "--json",
            str(report),
            "--no-diagnosis",
            "--",
            sys.executable,
            str(prog),
            "{name}",
            "{case}",
            "{out}",
        ]  # fmt: skip
    )
    assert time.monotonic() - started < 30
    assert rc == 1
    results = {c["case"]: c for c in json.loads(report.read_text())["cases"]}
    assert results["torch-float32"]["status"] == "pass"
    assert "signal SIGSEGV" in results["torch-float64"]["error"]
    assert "status 3" in results["keras3-float32"]["error"]
    assert "bad input" in results["keras3-float32"]["error"]
    assert (
        "hang" in results["keras3-float64"]["error"] and "3 s" in results["keras3-float64"]["error"]
    )
    assert "unreadable output" in results["optax-float32"]["error"]
    assert "no output" in results["optax-float64"]["error"]
    fail = results["tf-keras-legacy-float32"]
    assert fail["status"] == "fail" and fail["first_failure"]["step"] == 1
    # JUnit, read by a JUnit reader
    junitparser = pytest.importorskip("junitparser")
    xml = junitparser.JUnitXml.fromfile(str(junit))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    cases = {c.name: c for s in suites for c in s}
    assert set(cases) == set(names)
    kinds = {n: [type(r).__name__ for r in c.result] for n, c in cases.items()}
    assert kinds["torch-float32"] == [] and kinds["tf-keras-legacy-float32"] == ["Failure"]
    assert all(kinds[n] == ["Error"] for n in names[1:6])
    assert sum(s.failures for s in suites) == 1 and sum(s.errors for s in suites) == 5
    out = capsys.readouterr().out
    assert "7 cases: 1 passed, 1 failed, 5 errors" in out


def test_runner_exit_status_2_when_it_cannot_run(tmp_path, capsys):
    assert golden_main(["run", "torch-float32", "--", "true", "{case}"]) == 2  # no {out}
    assert golden_main(["run", "no-such-case", "--", "true", "{case}", "{out}"]) == 2
    missing = str(tmp_path / "does-not-exist")
    assert golden_main(["run", "torch-float32", "--", missing, "{case}", "{out}"]) == 2
    assert golden_main(["run", "--suite", "--profile", "nope", "--", "t", "{case}", "{out}"]) == 2
    assert "cannot start" in capsys.readouterr().err


# -- the example ports ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def c_port(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("c") / "nadam"
    cmd = [cc, "-O2", "-std=c99", "-Wall", "-ffp-contract=off", "-o", str(exe),
           str(EXAMPLES / "c" / "nadam.c"), "-lm"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return str(exe)


@pytest.fixture(scope="module")
def node():
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("no Node.js")
    return exe


def _run_json(tmp_path, selection, command):
    report = tmp_path / "r.json"
    rc = golden_main(["run", *selection, "--json", str(report), "--", *command])
    return rc, {c["case"]: c for c in json.loads(report.read_text())["cases"]}


def test_c_port_passes_every_torch_case(c_port, tmp_path):
    rc, results = _run_json(
        tmp_path, ["--suite", "--profile", "torch"], [c_port, "{case}", "{out}"]
    )
    assert rc == 0 and all(r["status"] == "pass" for r in results.values())
    assert {
        "long-run",
        "complex64",
        "resume-torch-float32",
        "schedule-cosine-torch-float64",
    } <= set(results)


def test_c_port_with_the_mu_twice_bug_fails_at_step_1(c_port, tmp_path):
    sel = ["torch-float32", "torch-float64", "param-groups"]
    rc, results = _run_json(tmp_path, sel, [c_port, "--bug", "mu-twice", "{case}", "{out}"])
    assert rc == 1
    for r in results.values():
        assert r["status"] == "fail" and r["first_failure"]["step"] == 1, r


def test_js_port_passes_every_optax_case(node, tmp_path):
    js = str(EXAMPLES / "js" / "nadam.mjs")
    rc, results = _run_json(
        tmp_path, ["--suite", "--profile", "optax"], [node, js, "{case}", "{out}"]
    )
    assert rc == 0 and len(results) >= 5, results


def test_js_port_with_the_adam_bug_fails_at_step_1(node, tmp_path):
    js = str(EXAMPLES / "js" / "nadam.mjs")
    rc, results = _run_json(
        tmp_path, ["optax-float32", "optax-float64"], [node, js, "--bug", "adam", "{case}", "{out}"]
    )
    assert rc == 1
    for r in results.values():
        assert r["status"] == "fail" and r["first_failure"]["step"] == 1, r


def test_cli_generates_a_scheduled_resumed_case(tmp_path):
    schedule = [1e-3 * 0.9**t for t in range(12)]
    (tmp_path / "lr.txt").write_text("\n".join(repr(x) for x in schedule))
    out = tmp_path / "case.json"
    argv = ["generate", "--profile", "torch", "--dtype", "float64", "--steps", "4",
            "--resume-after", "8", "--lr-schedule", str(tmp_path / "lr.txt"), "--out", str(out)]  # fmt: skip
    assert golden_main(argv) == 0
    case = load(out)
    assert case.version == 2 and case.start["step"] == [8]
    assert case.learning_rates(0).tolist() == schedule[8:]
    assert verify(case, _plain_nadam(case), diagnose=False).passed
    assert not verify(case, _plain_nadam(case, restart_step=True), diagnose=False).passed
    (tmp_path / "bad.txt").write_text("1e-3, x")
    argv[argv.index(str(tmp_path / "lr.txt"))] = str(tmp_path / "bad.txt")
    assert golden_main(argv) == 2


def test_schema_lists_every_profile():
    """The schema's profile names are the declared profiles (a case of any profile loads)."""
    from nadam_ref.profiles import PROFILES

    schema = json.loads((suite_path().parent / "schema.json").read_text())
    assert sorted(schema["properties"]["profile"]["enum"]) == sorted(PROFILES)
