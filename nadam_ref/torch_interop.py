"""nadam_ref inside torch: a real ``torch.optim.Optimizer``, and state conversion.

:class:`NAdam` is a ``torch.optim.Optimizer`` subclass that updates torch
tensors in place with nadam_ref's kernels, so it drops into an existing torch
training script (LR schedulers, ``zero_grad``, optimizer hooks,
``torch.amp.GradScaler``, ``torch.save(opt.state_dict())``)::

    opt = nadam_ref.torch_interop.NAdam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        sched.step()

CPU tensors are handed to the Numba backend as zero-copy NumPy views
(``tensor.detach().numpy()`` shares the tensor's memory), CUDA tensors to the
cuda backend, which views them through ``__cuda_array_interface__``; nothing
is copied.  The state is torch's, in torch's layout (``step`` and
``mu_product`` as scalar tensors, ``exp_avg`` and ``exp_avg_sq`` like the
parameter), so state dicts pass between this class and ``torch.optim.NAdam``
both ways.

For a :class:`nadam_ref.NAdam` on NumPy arrays, :func:`from_torch_state_dict`
and :func:`to_torch_state_dict` convert the same layout to arrays and back::

    opt = nadam_ref.NAdam(arrays, scalar_dtype=np.float32)
    opt.load_state_dict(from_torch_state_dict(torch_opt.state_dict()))
    ...
    torch_opt.load_state_dict(to_torch_state_dict(opt.state_dict()))

torch stores ``step`` and ``mu_product`` as float32 tensors (float64 when
torch's default dtype is float64), so a float64 ∏μ is rounded to float32 on
the way to torch.

Importing this module imports torch if it is installed; ``import nadam_ref``
never does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from . import functional, profiles
from .optimizer import TORCH_ONLY_OPTIONS, _ParamName, check_torch_flags

try:
    import torch

    _Optimizer = torch.optim.Optimizer
except ImportError:  # the converters below need no torch until they build tensors
    torch = None
    _Optimizer = object


#: The arithmetic :class:`NAdam` can follow: ``"torch"`` stores step and ∏μ
#: as torch does (float32 scalar tensors), and so reproduces torch.optim.NAdam;
#: ``"reference"`` stores them in float64, the reference's double precision.
PROFILES = ("torch", "reference")

#: Backends by the device type of the tensors they update.
_BACKENDS_FOR_DEVICE = {"cpu": ("numba", "numpy"), "cuda": ("cuda",)}


class NAdam(_Optimizer):
    r"""``torch.optim.NAdam`` computed by nadam_ref's kernels.

    The signature is torch.optim.NAdam's; the algorithm is that of
    :class:`nadam_ref.NAdam` (μ_t = β1(1 − ½·0.96^(tψ)), bias-corrected
    Nesterov momentum; see :mod:`nadam_ref.schedule` and
    :mod:`nadam_ref.element`), run by :func:`nadam_ref.functional.plan_step`.

    Args:
        params, lr, betas, eps, weight_decay, momentum_decay,
        decoupled_weight_decay, maximize: as in torch.optim.NAdam.  ``lr``
            may be a one-element tensor, as in torch; whatever
            ``param_groups[i]["lr"]`` holds at a step (an LR scheduler writes
            it) is the step's learning rate.
        foreach: accepted for compatibility and kept in the groups; nadam_ref
            always updates a group's tensors in one fused multi-tensor pass
            with the arithmetic of torch's for-loop (``foreach=False``)
            implementation.
        capturable, differentiable: must be False (ValueError otherwise):
            the kernels update tensors in place outside autograd and outside
            CUDA graphs.
        profile: the arithmetic is that of :mod:`nadam_ref.profiles`' ``torch``
            profile.  ``"torch"`` (default) keeps ``step`` and ``mu_product`` as
            torch does (float32 tensors, or the dtype torch's own
            ``load_state_dict`` gave them) and so reproduces torch.optim.NAdam:
            within 2e-6 in float32 and 1e-14 in float64 over hundreds of steps
            (tests/test_torch_optimizer.py).  ``"reference"`` keeps them in
            float64 (the profile's ``scalar_state="float64"``, the reference
            that ``nadam_ref.NAdam(profile=None)`` computes).
        backend: None (default) picks by device: ``"numba"`` for CPU tensors,
            ``"cuda"`` for CUDA tensors.  ``"numpy"`` runs the readable NumPy
            reference on CPU tensors (the same bits as ``"numba"``).

    Sparse gradients raise RuntimeError (as in torch); dtypes other than
    float32, float64, complex64 and complex128 raise TypeError naming the
    parameter.  A step that raises changes no parameter and no state.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        profile: str = "torch",
        backend: str | None = None,
    ) -> None:
        if torch is None:
            raise ImportError("nadam_ref.torch_interop.NAdam needs torch (pip install torch)")
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {list(PROFILES)}")
        if backend is not None:
            functional.get_backend(backend)  # an unknown name fails here
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        check_torch_flags(foreach, capturable, differentiable)
        functional.check_hyperparameters(_number(lr), betas, eps, weight_decay, momentum_decay)
        self.profile = profile
        self.backend = backend
        self._views: dict = {}  # parameter → kept views (see _kept_views)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=False,
            differentiable=False,
        )
        super().__init__(params, defaults)

    def _scalar_dtype(self):
        """The torch dtype in which fresh state stores ``step`` and ``mu_product``."""
        if self.profile == "reference" or torch.get_default_dtype() == torch.float64:
            return torch.float64
        return torch.float32  # torch.optim.NAdam's choice

    def step(self, closure: Callable[[], Any] | None = None):
        """Take one NAdam step for every parameter that has a gradient.

        ``closure`` (optional) re-evaluates the model and returns the loss,
        which is returned.  Every input is checked before any tensor changes.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plans = [plan for g, group in enumerate(self.param_groups) for plan in self._plan(g, group)]
        for plan, entries in plans:
            steps, mu_products = plan.run()
            for (p, state), step, mu_product in zip(entries, steps, mu_products):
                _store(state, "step", step)
                _store(state, "mu_product", mu_product)
                self.state[p] = state
        return loss

    def _plan(self, g: int, group: dict) -> list:
        """The checked plans of one group's step (one per backend and scalar
        dtype, in practice one), each with its (parameter, state) pairs."""
        check_torch_flags(
            group["foreach"], group["capturable"], group["differentiable"], f"param_groups[{g}]: "
        )
        lr = _number(group["lr"])
        beta1, beta2 = (_number(b) for b in group["betas"])
        buckets: dict[tuple, list] = {}
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            name = _TensorName(g, i, p)
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"NAdam does not support sparse gradients ({name} has a sparse gradient)"
                )
            backend = self._backend_for(p, name)
            state = self.state.get(p) or self._fresh_state(p)  # stored only after the step
            scalar_dtype = (
                np.float64 if self.profile == "reference" else _numpy_dtype(state["mu_product"])
            )
            key = (backend, scalar_dtype, _numpy_dtype(p))
            buckets.setdefault(key, []).append((name, p, state))
        # The arithmetic is the torch profile's, with step and ∏μ in scalar_dtype.
        torch_profile = profiles.get("torch")
        hp = torch_profile.hyperparameters(
            dict(
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                momentum_decay=group["momentum_decay"],
                decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
                maximize=bool(group["maximize"]),
            )
        )
        plans = []
        for (backend, scalar_dtype, dtype), items in buckets.items():
            options = torch_profile.plan_options(
                hp, dtype, {"scalar_state": np.dtype(scalar_dtype).name}
            )
            view = _host_view if backend != "cuda" else _device_view
            kept = [self._kept_views(view, name, p, s) for name, p, s in items]
            plan = functional.plan_step(
                [k[0] for k in kept],
                [view(p.grad, "gradient of ", name) for name, p, _ in items],
                [k[1] for k in kept],
                [k[2] for k in kept],
                [s["step"].item() for _, _, s in items],
                [s["mu_product"].item() for _, _, s in items],
                backend=backend,
                names=[name for name, _, _ in items],
                **options,
            )
            plans.append((plan, [(p, s) for _, p, s in items]))
        return plans

    def _kept_views(self, view, name, p, state) -> tuple:
        """Views of θ, m and v for the backend, kept between steps.

        Making a view and describing it to the backend costs about 20 µs a
        tensor, more than the update of a small one, so the views of the
        parameter and its state are kept, and made afresh only when the
        parameter's memory or the state tensors have changed (``p.data = ...``,
        ``load_state_dict``).  Gradients are viewed afresh at every step: a
        kept view would keep a gradient alive after ``zero_grad()`` drops it.
        """
        where = (p.data_ptr(), p.shape, p.stride(), p.dtype, p.device)
        kept = self._views.get(p)
        if (
            kept is not None
            and kept[0] == where
            and kept[1] is state["exp_avg"]
            and kept[2] is state["exp_avg_sq"]
        ):
            return kept[3]
        views = (
            view(p, "", name),
            view(state["exp_avg"], "exp_avg of ", name),
            view(state["exp_avg_sq"], "exp_avg_sq of ", name),
        )
        self._views[p] = (where, state["exp_avg"], state["exp_avg_sq"], views)
        return views

    def _backend_for(self, p, name) -> str:
        allowed = _BACKENDS_FOR_DEVICE.get(p.device.type, ())
        backend = self.backend or (allowed[0] if allowed else None)
        if backend not in allowed:
            raise ValueError(
                f"{name} is on device {p.device}; backend {backend!r} updates "
                + (
                    f"tensors on {p.device.type} only with {list(allowed)}"
                    if allowed
                    else "CPU tensors (numba, numpy) and CUDA tensors (cuda) only"
                )
            )
        return backend

    def _fresh_state(self, p) -> dict:
        scalar = self._scalar_dtype()
        return {
            "step": torch.tensor(0.0, dtype=scalar),
            "mu_product": torch.tensor(1.0, dtype=scalar),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def __getstate__(self) -> dict:
        # torch pickles an optimizer as its defaults, state and groups; ours adds two choices
        return {**super().__getstate__(), "profile": self.profile, "backend": self.backend}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._views = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict`` (a torch.optim.NAdam state dict loads
        here and back); with ``profile="reference"`` step and ∏μ are then
        kept in float64 whatever dtype they were saved in."""
        super().load_state_dict(state_dict)
        self._views.clear()  # of the state tensors just replaced
        if self.profile == "reference":
            for state in self.state.values():
                for key in ("step", "mu_product"):
                    if key in state:
                        state[key] = state[key].to(torch.float64)


class _TensorName(_ParamName):
    """``param_groups[g]['params'][i] (tensor of shape (…), torch.float32)``,
    formatted only when an error is raised."""

    __slots__ = ()

    def __str__(self) -> str:
        p = self.param
        return (
            f"param_groups[{self.group}]['params'][{self.index}] "
            f"(tensor of shape {tuple(p.shape)}, {p.dtype}, on {p.device})"
        )


def _number(x) -> float:
    """A hyperparameter as a Python float (torch allows one-element tensors for lr)."""
    return float(x.item()) if hasattr(x, "item") else x


def _numpy_dtype(tensor) -> type:
    """float64 for float64 and complex128 tensors, float32 otherwise."""
    return np.float64 if tensor.dtype in (torch.float64, torch.complex128) else np.float32


def _host_view(tensor, what: str, name):
    """A CPU tensor's memory as a NumPy array (no copy): updates land in the
    tensor.  Errors name it ``what`` + ``name`` (formatted only then)."""
    if tensor.device.type != "cpu":
        raise ValueError(f"{what}{name} is on {tensor.device}, not on the CPU like its parameter")
    try:
        return tensor.detach().numpy()
    except (TypeError, RuntimeError) as error:  # bfloat16, conjugate/negative bits set
        raise TypeError(f"{what}{name} cannot be updated in place by nadam_ref: {error}") from None


def _device_view(tensor, what: str, name):
    """A CUDA tensor, detached: the cuda backend views it through ``__cuda_array_interface__``."""
    if tensor.device.type != "cuda":
        raise ValueError(
            f"{what}{name} is on {tensor.device}, not on a CUDA device like its parameter"
        )
    return tensor.detach()


def _store(state: dict, key: str, value) -> None:
    """Write a new step or ∏μ into its scalar tensor, in place as torch does."""
    state[key].fill_(float(value))


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
