"""nadam_ref.torch_interop.NAdam, a real torch.optim.Optimizer, against
torch.optim.NAdam 2.13; and torch's LR schedulers applied to nadam_ref.NAdam.

* Recordings (tests/data/schedules/torch-*.npz, written by
  tests/data/record_schedules.py): torch.optim.NAdam with StepLR and
  CosineAnnealingLR.  Checked without torch: the schedulers' closed forms
  (as nadam_ref.NAdam's docstring gives them) against the learning rates torch
  used, and nadam_ref.NAdam driven by those formulas against torch's θ.
* Live (skipped without torch): torch_interop.NAdam with the real schedulers,
  state dicts to and from a real torch.optim.NAdam (through torch.save),
  hooks, zero_grad, torch.amp.GradScaler, the errors.

Tolerances are the torch profile's (tests/test_torch_crosscheck.py): 2e-6 in
float32 and 1e-14 in float64 at every step of 500.
"""

from __future__ import annotations

import io
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch_cases
from test_torch_crosscheck import TOLERANCE, formula_trajectory, worst_step

import nadam_ref

DATA = pathlib.Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
import record_schedules  # noqa: E402

CASES = sorted(record_schedules.TORCH_CASES)


def recorded(case: str, dtype: str):
    with np.load(DATA / "schedules" / f"torch-{case}.npz", allow_pickle=False) as f:
        n = sum(len(g["params"]) for g in torch_cases.CASES[record_schedules.TORCH_CASES[case][0]])
        return (
            [f[f"{dtype}/param{i}/initial"] for i in range(n)],
            [f[f"{dtype}/param{i}/grads"] for i in range(n)],
            [f[f"{dtype}/param{i}/theta"] for i in range(n)],
            f[f"{dtype}/lr"],
            str(f["torch_version"]),
        )


def scheduled_lr(case: str, base_lrs: list[float], t: int) -> list[float]:
    """Each group's learning rate after ``t`` scheduler steps, by the closed
    forms of the torch documentation (as nadam_ref.NAdam's docstring gives them)."""
    _, name, kw = record_schedules.TORCH_CASES[case]
    if name == "StepLR":
        return [lr * kw["gamma"] ** (t // kw["step_size"]) for lr in base_lrs]
    assert name == "CosineAnnealingLR"
    eta_min, t_max = kw["eta_min"], kw["T_max"]
    return [eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t / t_max)) / 2 for lr in base_lrs]


def base_lrs(case: str) -> list[float]:
    groups = torch_cases.CASES[record_schedules.TORCH_CASES[case][0]]
    return [g["options"].get("lr", 2e-3) for g in groups]


# -- recorded, no torch needed ----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_scheduler_formulas_give_the_learning_rates_torch_used(case):
    *_, lrs, _ = recorded(case, "float64")
    assert len(lrs) >= 200
    ours = np.array([scheduled_lr(case, base_lrs(case), t) for t in range(len(lrs))])
    assert np.abs(ours / lrs - 1).max() <= 1e-12
    assert len(np.unique(lrs[:, 0])) > 4  # the schedule does change the rate


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_nadam_ref_with_scheduled_lr_matches_torch_recording(case, dtype):
    """nadam_ref.NAdam (NumPy arrays) with param_groups[g]["lr"] set by the
    scheduler's formula before each step follows torch + the real scheduler."""
    params0, grads, theta, _, _ = recorded(case, dtype)
    problem = record_schedules.TORCH_CASES[case][0]
    arrays = [np.array(x) for x in params0]
    opt = nadam_ref.NAdam(torch_cases.param_groups(problem, arrays), scalar_dtype=np.float32)
    params = [p for g in opt.param_groups for p in g["params"]]
    ours = [np.empty_like(t) for t in theta]
    for t in range(len(theta[0])):
        for group, lr in zip(opt.param_groups, scheduled_lr(case, base_lrs(case), t)):
            group["lr"] = lr
        for p, g in zip(params, grads):
            p.grad = np.array(g[t]) if torch_cases.has_grad(g[t]) else None
        opt.step()
        for traj, x in zip(ours, arrays):
            traj[t] = x
    step, err = worst_step(ours, theta)
    assert err <= TOLERANCE[dtype], f"{case}/{dtype}: {err:.3g} from torch at step {step}"
    # the schedule matters: a constant rate misses the recording by far more
    fixed, _ = _run_constant_lr(problem, params0, grads)
    assert worst_step(fixed, theta)[1] > 100 * TOLERANCE[dtype]


def _run_constant_lr(problem, params0, grads):
    arrays = [np.array(x) for x in params0]
    opt = nadam_ref.NAdam(torch_cases.param_groups(problem, arrays), scalar_dtype=np.float32)
    params = [p for g in opt.param_groups for p in g["params"]]
    out = [np.empty((len(grads[0]), *x.shape), x.dtype) for x in arrays]
    for t in range(len(grads[0])):
        for p, g in zip(params, grads):
            p.grad = np.array(g[t]) if torch_cases.has_grad(g[t]) else None
        opt.step()
        for traj, x in zip(out, arrays):
            traj[t] = x
    return out, opt


def test_import_nadam_ref_does_not_import_torch():
    code = (
        "import sys, nadam_ref, nadam_ref.keras, nadam_ref.optimize, nadam_ref.checkpoint; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- live torch -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch not installed (pip install .[crosscheck])")


@pytest.fixture(scope="module")
def NAdam(torch):
    from nadam_ref.torch_interop import NAdam

    return NAdam


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_torch_interop_with_real_scheduler_matches_torch(torch, NAdam, case, dtype):
    _, _, theta, lrs, version = recorded(case, dtype)
    live, live_lrs = record_schedules.run_torch(case, dtype)
    if torch.__version__.split("+")[0] == version.split("+")[0]:
        # The same torch gives the recorded bits in float64; in float32 its kernels are
        # vectorised for the CPU they run on (AVX2, AVX-512), and another CPU rounds
        # differently: 1–2 ulp (6e-8, 1.2e-7) on an AVX-512 machine against this recording.
        if dtype == "float64":
            assert all(np.array_equal(a, b) for a, b in zip(live, theta))
        else:
            step, err = worst_step(live, theta)
            assert err <= 4 * np.finfo(np.float32).eps, f"torch {err:.3g} from its recording"
        assert np.array_equal(live_lrs, lrs)
    ours, our_lrs = record_schedules.run_torch(case, dtype, optimizer=NAdam)
    assert np.array_equal(our_lrs, live_lrs)  # the scheduler drove ours exactly as torch's
    step, err = worst_step(ours, live)
    assert err <= TOLERANCE[dtype], f"{case}/{dtype}: {err:.3g} from torch at step {step}"


def _interop(NAdam, **kwargs):
    """NAdam with the numpy backend: the readable reference, the same bits as numba."""
    return lambda groups, **kw: NAdam(groups, **{**kw, **kwargs})


def test_numba_and_numpy_backends_give_the_same_bits(NAdam):
    a, _ = record_schedules.run_torch("cosine", "float32", steps=50, optimizer=NAdam)
    b, _ = record_schedules.run_torch(
        "cosine", "float32", steps=50, optimizer=_interop(NAdam, backend="numpy")
    )
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def run(opt_factory, case, dtype, steps, *, first=0, params=None, state=None):
    """θ trajectory of an optimizer on a torch_cases problem (open loop)."""
    import torch

    params0, grads = torch_cases.problem(case, dtype)
    tensors = [torch.tensor(np.array(x)) for x in (params if params is not None else params0)]
    opt = opt_factory(torch_cases.param_groups(case, tensors))
    if state is not None:
        opt.load_state_dict(state)
    out = [np.empty((steps, *x.shape), x.dtype) for x in params0]
    for t in range(steps):
        for p, g in zip(tensors, grads):
            row = g[first + t]
            p.grad = torch.tensor(row) if torch_cases.has_grad(row) else None
        opt.step()
        for traj, p in zip(out, tensors):
            traj[t] = p.detach().numpy()
    return out, opt


def _saved(torch, opt):
    """opt.state_dict() through torch.save / torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["groups_and_missing_grads", "complex", "decoupled_weight_decay"])
def test_state_dicts_pass_both_ways_through_torch_save(torch, NAdam, case, dtype):
    torch_opt = lambda groups: torch.optim.NAdam(groups, foreach=False)  # noqa: E731
    full, _ = run(torch_opt, case, dtype, 400)
    # torch for 200 steps, saved, loaded here, continued for 200
    head, t_opt = run(torch_opt, case, dtype, 200)
    tail, ours = run(
        NAdam, case, dtype, 200, first=200, params=[h[-1] for h in head], state=_saved(torch, t_opt)
    )
    step, err = worst_step(tail, [f[200:] for f in full])
    assert err <= TOLERANCE[dtype], f"torch → nadam_ref: {err:.3g} at step {200 + step}"
    # nadam_ref for 200 steps, saved, loaded into torch, continued for 200
    head, n_opt = run(NAdam, case, dtype, 200)
    saved = _saved(torch, n_opt)
    assert saved["param_groups"][0].keys() == t_opt.state_dict()["param_groups"][0].keys()
    # torch's layout: the same keys, and step / ∏μ as float32 tensors (torch's
    # load_state_dict below keeps these very step tensors and counts on in them)
    s = saved["state"][0]
    assert set(s) == {"step", "mu_product", "exp_avg", "exp_avg_sq"}
    assert s["step"].dtype == s["mu_product"].dtype == torch.float32 and s["step"].item() == 200
    tail, _ = run(torch_opt, case, dtype, 200, first=200, params=[h[-1] for h in head], state=saved)
    step, err = worst_step(tail, [f[200:] for f in full])
    assert err <= TOLERANCE[dtype], f"nadam_ref → torch: {err:.3g} at step {200 + step}"


def test_reference_profile_keeps_float64_scalars(torch, NAdam):
    """profile="reference" is the float64 algorithm box (an independent
    evaluation in Python floats); the torch profile's float32 ∏μ is what
    separates torch from it (REFERENCE: ~1e-11 apart in float64)."""
    params0, grads = torch_cases.problem("plain", "float64")
    formula = formula_trajectory("plain", params0, grads)
    for profile, expect_close in (("reference", True), ("torch", False)):
        ours, opt = run(_interop(NAdam, profile=profile), "plain", "float64", torch_cases.STEPS)
        flat = [t.reshape(len(t), -1) for t in ours]
        err = worst_step(flat, formula)[1]
        if expect_close:
            assert err <= 1e-13, err
            assert opt.state[opt.param_groups[0]["params"][0]]["mu_product"].dtype == torch.float64
        else:
            assert 1e-13 < err < 1e-8, err


def _model(torch, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def test_hooks_zero_grad_and_closure(torch, NAdam):
    model = _model(torch)
    opt = NAdam(model.parameters(), lr=1e-2)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", o)))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", o)))
    x = torch.randn(5, 6)

    def closure():
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == [("pre", opt), ("post", opt)]
    assert isinstance(loss, torch.Tensor) and loss.requires_grad
    assert all(p.grad is not None for p in model.parameters())
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    assert isinstance(opt, torch.optim.Optimizer)


def test_grad_scaler_steps_and_skips_as_with_torch(torch, NAdam):
    """torch.amp.GradScaler unscales the gradients, then calls step() or,
    after an inf, skips it; both optimizers end in the same place."""
    models = [_model(torch), _model(torch)]
    opts = [
        torch.optim.NAdam(models[0].parameters(), lr=1e-2),
        NAdam(models[1].parameters(), lr=1e-2),
    ]
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**10) for _ in models]
    torch.manual_seed(1)
    batches = [torch.randn(5, 6) for _ in range(30)]
    for t, x in enumerate(batches):
        for model, opt, scaler in zip(models, opts, scalers):
            opt.zero_grad()
            loss = model(x).square().mean() * (math.inf if t == 7 else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    assert scalers[0].get_scale() == scalers[1].get_scale() < 2.0**10  # one step was skipped
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert (a - b).abs().max().item() <= TOLERANCE["float32"]
    p = next(models[1].parameters())
    assert opts[1].state[p]["step"].item() == len(batches) - 1


def test_replaced_parameter_memory_is_updated(torch, NAdam):
    """``p.data = ...`` between steps: the step updates the new memory, as torch's does."""
    a = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(a.detach().clone())
    opts = [torch.optim.NAdam([a], foreach=False), NAdam([b])]
    for t in range(6):
        if t == 3:
            new = torch.randn(4, 3)
            a.data, b.data = new.clone(), new.clone()
        for p, opt in ((a, opts[0]), (b, opts[1])):
            p.grad = torch.full((4, 3), 0.1 * (t + 1))
            opt.step()
    assert (a - b).abs().max().item() <= TOLERANCE["float32"]


def test_non_contiguous_and_complex_parameters_match_torch(torch, NAdam):
    torch.manual_seed(2)
    base = [torch.randn(3, 5).t(), torch.randn(4, dtype=torch.complex64)]  # a transposed leaf
    pairs = [
        [
            torch.nn.Parameter(x.clone() if x.is_contiguous() else x.clone().t().contiguous().t())
            for x in base
        ]
        for _ in range(2)
    ]
    assert not pairs[1][0].is_contiguous()
    opts = [torch.optim.NAdam(pairs[0], lr=1e-2, foreach=False), NAdam(pairs[1], lr=1e-2)]
    for _ in range(100):
        grads = [torch.randn_like(x) for x in base]
        for params, opt in zip(pairs, opts):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(*pairs):
        assert (a - b).abs().max().item() <= TOLERANCE["float32"]
    assert opts[1].state[pairs[1][0]]["exp_avg"].stride() == pairs[1][0].stride()


def test_tensor_lr_and_lr_changed_between_steps(torch, NAdam):
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    opts = [
        torch.optim.NAdam([a], lr=torch.tensor(0.01), foreach=False),
        NAdam([b], lr=torch.tensor(0.01)),
    ]
    for t in range(10):
        for p, opt in ((a, opts[0]), (b, opts[1])):
            opt.param_groups[0]["lr"].fill_(0.01 / (t + 1))
            p.grad = torch.full((3,), 0.5)
            opt.step()
    assert (a - b).abs().max().item() <= TOLERANCE["float32"]
    with pytest.raises(ValueError, match="1-element"):
        NAdam([a], lr=torch.tensor([0.1, 0.2]))


def _unchanged(torch, opt, params, before):
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert len(opt.state) == 0


def test_errors_are_clear_and_change_nothing(torch, NAdam):
    good = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="differentiable=True is not supported"):
        NAdam([good], differentiable=True)
    with pytest.raises(ValueError, match="capturable=True is not supported"):
        NAdam([good], capturable=True)
    with pytest.raises(ValueError, match="unknown profile 'keras'"):
        NAdam([good], profile="keras")
    with pytest.raises(ValueError, match="Invalid learning rate"):
        NAdam([good], lr=-1.0)
    with pytest.raises(ValueError, match="updates tensors on cpu only with"):
        good.grad = torch.ones(3)
        NAdam([good], backend="cuda").step()

    # a sparse gradient, on the second parameter: raised before the first is touched
    emb = torch.nn.Embedding(5, 2, sparse=True)
    first = torch.nn.Parameter(torch.ones(3))
    opt = NAdam([first, emb.weight])
    first.grad = torch.ones(3)
    emb(torch.tensor([1, 2])).sum().backward()
    before = [first.detach().clone(), emb.weight.detach().clone()]
    with pytest.raises(RuntimeError, match=r"sparse gradients .*params'\]\[1\]"):
        opt.step()
    _unchanged(torch, opt, [first, emb.weight], before)

    # dtypes NAdam does not update
    for dtype, match in (
        (torch.bfloat16, "cannot be updated in place"),
        (torch.float16, "float16"),
    ):
        bad = torch.nn.Parameter(torch.ones(2, dtype=dtype))
        opt = NAdam([first, bad])
        bad.grad = torch.ones(2, dtype=dtype)
        with pytest.raises(TypeError, match=match) as info:
            opt.step()
        assert "param_groups[0]['params'][1]" in str(info.value)
        _unchanged(torch, opt, [first, bad], [first.detach().clone(), bad.detach().clone()])

    # a state dict saying differentiable=True is refused at the step
    opt = NAdam([first])
    sd = opt.state_dict()
    sd["param_groups"][0]["differentiable"] = True
    opt.load_state_dict(sd)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: differentiable=True"):
        opt.step()


def test_training_example_follows_torch(torch):
    """examples/train_digits.py: a real model trained closed loop (each step's
    rounding feeds the next forward pass) stays within float32 rounding of torch."""
    pytest.importorskip("sklearn", reason="scikit-learn not installed (pip install .[crosscheck])")
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
    import train_digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script does: a tiny model, a busy machine
    try:
        result = train_digits.compare(steps=200)
    finally:
        torch.set_num_threads(threads)
    assert result["loss_distance"] <= TOLERANCE["float32"], result["loss_distance"]
    assert result["weight_distance"] <= TOLERANCE["float32"], result["weight_distance"]
    ours = result["runs"]["nadam_ref"]
    assert ours["losses"][-1] < 0.05 * ours["losses"][0] and ours["accuracy"] > 0.9


@pytest.mark.parametrize("name", ["MultiStepLR", "ExponentialLR", "LambdaLR"])
def test_documented_formulas_of_other_schedulers(torch, name):
    """The closed forms nadam_ref.NAdam's docstring gives, against torch's schedulers."""
    sched_kwargs, formula = {
        "MultiStepLR": (
            {"milestones": [3, 7], "gamma": 0.1},
            lambda t: 0.1 ** sum(m <= t for m in (3, 7)),
        ),
        "ExponentialLR": ({"gamma": 0.9}, lambda t: 0.9**t),
        "LambdaLR": ({"lr_lambda": lambda t: 1 / (t + 1)}, lambda t: 1 / (t + 1)),
    }[name]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = getattr(torch.optim.lr_scheduler, name)(opt, **sched_kwargs)
    for t in range(12):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * formula(t), rel=1e-15)
        opt.step()
        sched.step()


def test_the_optimizer_pickles_as_torch_optimizers_do(torch, NAdam):
    """copy.deepcopy and torch.save(opt) pickle the optimizer object itself
    (not its state_dict): the copy keeps its profile and steps on."""
    import copy

    model = _model(torch)
    opt = NAdam(model.parameters(), lr=1e-2, profile="reference")
    x = torch.randn(5, 6)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    twin = copy.deepcopy(opt)
    assert twin.profile == "reference" and twin.backend is None
    p, q = opt.param_groups[0]["params"][0], twin.param_groups[0]["params"][0]
    q.grad = p.grad.clone()
    opt.step()
    twin.step()
    assert torch.equal(p, q)
    assert twin.state[q]["mu_product"].dtype == torch.float64
