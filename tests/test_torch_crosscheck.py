"""nadam_ref against torch.optim.NAdam 2.13: recorded trajectories (always) and
live runs (where torch is installed), plus state handed back and forth.

Tolerances are those the foundation issue sets: with ``scalar_dtype=float32``
(torch's float32 step and ∏μ) float64 within 1e-14 and float32 within 2e-6 of
torch at every step; with the float64 default, within 1e-13 of an independent
float64 evaluation of the algorithm box written below.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from torch_cases import CASES, STEPS, has_grad, param_groups, run_torch

import nadam_ref
from nadam_ref.torch_interop import from_torch_state_dict, to_torch_state_dict

DATA = pathlib.Path(__file__).parent / "data" / "torch"
TOLERANCE = {"float32": 2e-6, "float64": 1e-14}


def recorded(case: str, dtype: str):
    with np.load(DATA / f"{case}.npz", allow_pickle=False) as f:
        n = sum(len(g["params"]) for g in CASES[case])
        return (
            [f[f"{dtype}/param{i}/initial"] for i in range(n)],
            [f[f"{dtype}/param{i}/grads"] for i in range(n)],
            [f[f"{dtype}/param{i}/theta"] for i in range(n)],
        )


def run_nadam_ref(case, params0, grads, steps=STEPS, *, first=0, state=None, **kwargs):
    """θ after each step of nadam_ref.NAdam fed the recorded gradients."""
    arrays = [np.array(x) for x in params0]  # copies, and 0-d stays an array
    opt = nadam_ref.NAdam(param_groups(case, arrays), **kwargs)
    if state is not None:
        opt.load_state_dict(state)
    params = [p for g in opt.param_groups for p in g["params"]]
    trajectory = [np.empty((steps, *x.shape), x.dtype) for x in arrays]
    for t in range(steps):
        for p, g in zip(params, grads):
            p.grad = np.array(g[first + t]) if has_grad(g[first + t]) else None
        opt.step()
        for traj, x in zip(trajectory, arrays):
            traj[t] = x
    return trajectory, opt


def max_error(a, b) -> float:
    return max(float(np.max(np.abs(x - y), initial=0.0)) for x, y in zip(a, b))


def worst_step(a, b):
    """(step, error) of the largest difference, for the failure message."""
    errs = np.max([np.abs(x - y).reshape(len(x), -1).max(axis=1) for x, y in zip(a, b)], axis=0)
    return int(errs.argmax()) + 1, float(errs.max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_recorded_torch_with_float32_scalars(case, dtype):
    params0, grads, theta = recorded(case, dtype)
    ours, _ = run_nadam_ref(case, params0, grads, scalar_dtype=np.float32)
    step, err = worst_step(ours, theta)
    assert err <= TOLERANCE[dtype], f"{case}/{dtype}: {err:.3g} from torch at step {step}"


def test_float64_scalars_are_what_separates_float64_runs():
    """The tolerance has teeth: with float64 ∏μ a float64 run is ~1e-11 from
    torch (its float32 ∏μ, docs/frameworks.md), far outside 1e-14."""
    params0, grads, theta = recorded("plain", "float64")
    ours, _ = run_nadam_ref("plain", params0, grads, scalar_dtype=np.float64)
    assert 1e-13 < max_error(ours, theta) < 1e-8


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_live_torch(case, dtype):
    torch = pytest.importorskip("torch", reason="torch not installed (pip install .[crosscheck])")
    params0, grads, theta = recorded(case, dtype)
    live, _ = run_torch(case, dtype)
    if torch.__version__.split("+")[0] == "2.13.0":
        # The recording is what this torch computes: bit for bit on a CPU like the one
        # it was recorded on; torch's kernels are vectorised per instruction set, and on
        # an AVX-512 CPU they round differently (within an ulp or two, float64 too).
        step, err = worst_step(live, theta)
        assert err <= TOLERANCE[dtype], f"live torch {err:.3g} from its recording at step {step}"
    ours, _ = run_nadam_ref(case, params0, grads, scalar_dtype=np.float32)
    step, err = worst_step(ours, live)
    assert err <= TOLERANCE[dtype], f"{case}/{dtype}: {err:.3g} from live torch at step {step}"


def formula_trajectory(case, params0, grads):
    """An independent float64 evaluation of the torch algorithm box, element
    by element with Python floats, with every scalar in double precision."""
    options = [g["options"] for g in CASES[case] for _ in g["params"]]
    trajectory = []
    for x0, g_seq, opts in zip(params0, grads, options):
        lr = opts.get("lr", 2e-3)
        b1, b2 = opts.get("betas", (0.9, 0.999))
        eps, wd = opts.get("eps", 1e-8), opts.get("weight_decay", 0.0)
        psi = opts.get("momentum_decay", 4e-3)
        decoupled, maximize = opts.get("decoupled_weight_decay", False), opts.get("maximize", False)
        # complex numbers are pairs of reals
        theta = [
            float(c)
            for z in np.ravel(x0)
            for c in ((z.real, z.imag) if np.iscomplexobj(x0) else (z,))
        ]
        m, v = [0.0] * len(theta), [0.0] * len(theta)
        t, prod = 0, 1.0
        out = []
        for g_row in g_seq:
            if has_grad(g_row):
                t += 1
                mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
                mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
                prod *= mu
                grad = [
                    float(c)
                    for z in np.ravel(g_row)
                    for c in ((z.real, z.imag) if np.iscomplexobj(g_row) else (z,))
                ]
                for i, g in enumerate(grad):
                    g = -g if maximize else g
                    if decoupled:
                        theta[i] *= 1 - lr * wd
                    else:
                        g += wd * theta[i]
                    m[i] = b1 * m[i] + (1 - b1) * g
                    v[i] = b2 * v[i] + (1 - b2) * g * g
                    m_hat = mu_next * m[i] / (1 - prod * mu_next) + (1 - mu) * g / (1 - prod)
                    v_hat = v[i] / (1 - b2**t)
                    theta[i] -= lr * m_hat / (v_hat**0.5 + eps)
            out.append(np.array(theta))
        trajectory.append(np.array(out))
    return trajectory


@pytest.mark.parametrize("case", sorted(CASES))
def test_float64_default_matches_the_formula(case):
    params0, grads, _ = recorded(case, "float64")
    ours, _ = run_nadam_ref(case, params0, grads)
    ours = [t.view(np.float64).reshape(len(t), -1) for t in ours]  # complex as (re, im) pairs
    step, err = worst_step(ours, formula_trajectory(case, params0, grads))
    assert err <= 1e-13, f"{case}: {err:.3g} from the formula at step {step}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["groups_and_missing_grads", "complex", "decoupled_weight_decay"])
def test_torch_state_continues_here(case, dtype):
    """torch stopped at step 200, its state converted and loaded here, continued
    200 steps, matches torch's own uninterrupted run."""
    pytest.importorskip("torch", reason="torch not installed (pip install .[crosscheck])")
    params0, grads, _ = recorded(case, dtype)
    full, state = run_torch(case, dtype, steps=400, state_at=200)
    at_200 = [np.array(traj[199]) for traj in full]
    ours, _ = run_nadam_ref(
        case,
        at_200,
        grads,
        steps=200,
        first=200,
        state=from_torch_state_dict(state),
        scalar_dtype=np.float32,
    )
    step, err = worst_step(ours, [traj[200:] for traj in full])
    assert err <= TOLERANCE[dtype], f"{err:.3g} after handing over, at step {200 + step}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["groups_and_missing_grads", "complex", "maximize"])
def test_nadam_ref_state_continues_in_torch(case, dtype):
    torch = pytest.importorskip("torch", reason="torch not installed (pip install .[crosscheck])")
    params0, grads, _ = recorded(case, dtype)
    full, _ = run_nadam_ref(case, params0, grads, steps=400, scalar_dtype=np.float32)
    head, opt = run_nadam_ref(case, params0, grads, steps=200, scalar_dtype=np.float32)
    tensors = [torch.tensor(traj[-1].copy()) for traj in head]
    topt = torch.optim.NAdam(param_groups(case, tensors), foreach=False)
    topt.load_state_dict(to_torch_state_dict(opt.state_dict()))
    errs = []
    for t in range(200, 400):
        for p, g in zip(tensors, grads):
            p.grad = torch.tensor(g[t]) if has_grad(g[t]) else None
        topt.step()
        errs.append(
            max(float(np.abs(p.detach().numpy() - traj[t]).max()) for p, traj in zip(tensors, full))
        )
    assert max(errs) <= TOLERANCE[dtype], f"{max(errs):.3g} after handing over to torch"


@pytest.mark.parametrize("scalar_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["groups_and_missing_grads", "complex"])
def test_resume_from_state_dict_is_bit_identical(case, scalar_dtype):
    params0, grads, _ = recorded(case, "float32")
    full, _ = run_nadam_ref(case, params0, grads, steps=60, scalar_dtype=scalar_dtype)
    head, opt = run_nadam_ref(case, params0, grads, steps=25, scalar_dtype=scalar_dtype)
    state = opt.state_dict()
    tail, _ = run_nadam_ref(
        case,
        [traj[-1] for traj in head],
        grads,
        steps=35,
        first=25,
        state=state,
        scalar_dtype=scalar_dtype,
    )
    for a, b in zip(full, tail):
        assert np.array_equal(a[25:], b)
