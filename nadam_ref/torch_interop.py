"""Convert optimizer state between ``torch.optim.NAdam`` and :class:`nadam_ref.NAdam`.

Both use the same layout (``{"state": {i: {...}}, "param_groups": [...]}``),
so conversion is tensors ↔ arrays plus torch's extra group flags.  A torch run
can therefore be stopped, continued here, and handed back::

    opt = nadam_ref.NAdam(arrays, scalar_dtype=np.float32)
    opt.load_state_dict(from_torch_state_dict(torch_opt.state_dict()))
    ...
    torch_opt.load_state_dict(to_torch_state_dict(opt.state_dict()))

torch stores ``step`` and ``mu_product`` as float32 tensors (REFERENCE.md §2),
so a float64 ∏μ is rounded to float32 on the way to torch.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

#: Group flags torch.optim.NAdam has and nadam_ref does not use.
TORCH_ONLY_OPTIONS = {"foreach": None, "capturable": False, "differentiable": False}


def from_torch_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A torch.optim.NAdam ``state_dict()`` as a nadam_ref one (NumPy arrays)."""
    state = {}
    for index, s in state_dict["state"].items():
        state[int(index)] = {
            "step": np.float64(_tensor_value(s["step"])),
            "mu_product": np.float64(_tensor_value(s["mu_product"])),
            "exp_avg": s["exp_avg"].detach().cpu().numpy().copy(),
            "exp_avg_sq": s["exp_avg_sq"].detach().cpu().numpy().copy(),
        }
    groups = []
    for g in state_dict["param_groups"]:
        group = {k: copy.deepcopy(v) for k, v in g.items() if k not in TORCH_ONLY_OPTIONS}
        group["lr"] = float(_tensor_value(group["lr"]))
        group["betas"] = tuple(float(_tensor_value(b)) for b in group["betas"])
        group.setdefault("decoupled_weight_decay", False)
        group.setdefault("maximize", False)
        groups.append(group)
    return {"state": state, "param_groups": groups}


def to_torch_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A nadam_ref ``state_dict()`` as torch.optim.NAdam's ``load_state_dict`` expects."""
    import torch

    scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    state = {}
    for index, s in state_dict["state"].items():
        state[index] = {
            "step": torch.tensor(float(s["step"]), dtype=scalar),
            "mu_product": torch.tensor(float(s["mu_product"]), dtype=scalar),
            "exp_avg": torch.from_numpy(np.array(s["exp_avg"])),
            "exp_avg_sq": torch.from_numpy(np.array(s["exp_avg_sq"])),
        }
    groups = [{**TORCH_ONLY_OPTIONS, **copy.deepcopy(g)} for g in state_dict["param_groups"]]
    return {"state": state, "param_groups": groups}


def _tensor_value(x) -> float:
    return float(x.item()) if hasattr(x, "item") else float(x)
