"""Problems on which nadam_ref is checked against torch.optim.NAdam.

Each case is a list of parameter groups; each group lists its parameters'
shapes (and whether they are complex) and its options.  Gradients are drawn
once from a seeded generator and fed to both optimizers (open loop), so
rounding differences cannot feed back through the objective.  A parameter
may be given no gradient at some steps (``skip_every``) or never (``never``).

Used by ``tests/data/record_torch.py`` to record torch's trajectories and by
``tests/test_torch_crosscheck.py`` to compare with them, and live with torch.
"""

from __future__ import annotations

import copy

import numpy as np

STEPS = 500

CASES = {
    "plain": [{"params": [{"shape": (7,)}, {"shape": (3, 4)}], "options": {"lr": 1e-2}}],
    "l2_weight_decay": [
        {
            "params": [{"shape": (6,)}, {"shape": (2, 3)}],
            "options": {"lr": 1e-2, "weight_decay": 0.05},
        }
    ],
    "decoupled_weight_decay": [
        {
            "params": [{"shape": (6,)}, {"shape": (2, 3)}],
            "options": {"lr": 1e-2, "weight_decay": 0.05, "decoupled_weight_decay": True},
        }
    ],
    "maximize": [
        {
            "params": [{"shape": (9,)}],
            "options": {"lr": 1e-2, "maximize": True, "weight_decay": 0.01},
        }
    ],
    "complex": [
        {"params": [{"shape": (5,), "complex": True}, {"shape": (4,)}], "options": {"lr": 1e-2}}
    ],
    "groups_and_missing_grads": [
        {
            "params": [{"shape": (4,)}, {"shape": (3,), "never": True}],
            "options": {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6},
        },
        {
            "params": [{"shape": (2, 2), "skip_every": 3}, {"shape": ()}],
            "options": {"lr": 1e-2, "momentum_decay": 0.02, "weight_decay": 0.01},
        },
    ],
}


def problem(case: str, dtype, seed: int = 0):
    """Initial parameters and the gradient sequence of ``case`` in ``dtype``.

    Returns ``(params0, grads)``: a list of arrays, and for each parameter an
    array ``[STEPS, *shape]`` of gradients with NaN rows where it gets none.
    """
    rng = np.random.default_rng([seed, sorted(CASES).index(case)])
    dtype = np.dtype(dtype)
    params0, grads = [], []
    for group in CASES[case]:
        for spec in group["params"]:
            shape = spec["shape"]
            if spec.get("complex"):
                cdtype = np.result_type(dtype, np.complex64)
                x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(cdtype)
                g = (
                    rng.standard_normal((STEPS, *shape)) + 1j * rng.standard_normal((STEPS, *shape))
                ).astype(cdtype)
            else:
                x = rng.standard_normal(shape).astype(dtype)
                g = rng.standard_normal((STEPS, *shape)).astype(dtype)
            if spec.get("never"):
                g[:] = np.nan
            if spec.get("skip_every"):
                g[:: spec["skip_every"]] = np.nan
            params0.append(x)
            grads.append(g)
    return params0, grads


def has_grad(g_row) -> bool:
    """A gradient row of NaN stands for 'no gradient at this step'."""
    return not np.isnan(g_row).all()


def run_torch(case: str, dtype, steps: int = STEPS, *, state_at: int | None = None):
    """Run torch.optim.NAdam (foreach=False, its CPU default) on ``case``.

    Returns the θ trajectory of each parameter, ``[steps, *shape]``, and, when
    ``state_at`` is given, torch's ``state_dict()`` after that many steps.
    """
    import torch

    params0, grads = problem(case, dtype)
    tensors = [torch.tensor(x.copy()) for x in params0]
    opt = torch.optim.NAdam(param_groups(case, tensors), foreach=False)
    trajectory = [np.empty((steps, *x.shape), x.dtype) for x in params0]
    saved = None
    for t in range(steps):
        for p, g in zip(tensors, grads):
            p.grad = torch.tensor(g[t]) if has_grad(g[t]) else None
        opt.step()
        for traj, p in zip(trajectory, tensors):
            traj[t] = p.detach().numpy()
        if state_at is not None and t + 1 == state_at:
            saved = copy.deepcopy(opt.state_dict())  # torch's holds live tensors
    return trajectory, saved


def param_groups(case: str, arrays):
    """The parameter groups of ``case`` over ``arrays`` (NumPy arrays or torch tensors)."""
    groups, k = [], 0
    for group in CASES[case]:
        n = len(group["params"])
        groups.append({"params": arrays[k : k + n], **group["options"]})
        k += n
    return groups
