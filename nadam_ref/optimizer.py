"""The torch-style optimizer: :class:`Parameter` and :class:`NAdam`.

The class keeps parameter groups and per-parameter state and hands each step
to :mod:`nadam_ref.functional`, as ``torch.optim.NAdam`` hands its work to
``torch.optim._functional.nadam``.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from . import backend as contract
from . import functional, profiles

#: Options a parameter group may override, with torch's defaults.
GROUP_OPTIONS = (
    "lr",
    "betas",
    "eps",
    "weight_decay",
    "momentum_decay",
    "decoupled_weight_decay",
    "maximize",
)
STATE_KEYS = ("step", "mu_product", "exp_avg", "exp_avg_sq")
#: torch.optim.NAdam's keywords about how torch runs a step, not what it computes, with
#: torch's defaults.  Accepted so that torch code runs unchanged (see check_torch_flags).
TORCH_ONLY_OPTIONS = {"foreach": None, "capturable": False, "differentiable": False}


def check_torch_flags(
    foreach=None, capturable=False, differentiable=False, where: str = ""
) -> None:
    """torch's ``foreach`` (None, True or False) has no effect: a step is always one
    fused pass per group and dtype, with the arithmetic of torch's for-loop.
    ``capturable`` and ``differentiable`` must be False: ValueError otherwise."""
    if foreach is not None and not isinstance(foreach, (bool, np.bool_)):
        raise ValueError(f"{where}foreach must be None, True or False, got {foreach!r}")
    if differentiable:
        raise ValueError(
            f"{where}differentiable=True is not supported: nadam_ref updates arrays and tensors "
            "in place outside autograd; use torch.optim.NAdam to differentiate through a step"
        )
    if capturable:
        raise ValueError(
            f"{where}capturable=True is not supported: nadam_ref's step reads its scalars on "
            "the host and cannot be captured in a CUDA graph"
        )


class _Default:
    """The value of an option not given: the profile's default (torch's without a profile)."""

    def __repr__(self) -> str:
        return "<the profile's default>"


DEFAULT: Any = _Default()


def refuse_copy(value, what: str) -> None:
    """A parameter is updated in place: a Python list or number, or a NumPy scalar, would
    become a new array that the caller never sees, so it is refused (TypeError naming it)."""
    if isinstance(value, (list, tuple, int, float, complex, np.generic)):
        kind = type(value).__name__
        kind = f"NumPy {kind} scalar" if isinstance(value, np.generic) else f"Python {kind}"
        raise TypeError(
            f"{what} is a {kind}, which cannot be updated in place (the optimizer would update "
            "a copy that you never see); pass a NumPy array, e.g. np.array(...)"
        )


class Parameter:
    """An array being optimized, and its gradient.

    ``data`` is updated in place by :meth:`NAdam.step`, so any view of the
    array you passed in sees every update.  ``grad`` is None (the parameter
    is skipped) or an array of the same shape and dtype.  On the ``"cuda"``
    backend a NumPy ``data`` is copied to the device when the optimizer takes
    it: ``data`` becomes the device array, read back with ``np.asarray(p.data)``.
    A Python list or number, which no update could reach, is a TypeError.
    """

    # data and grad in the object itself, where a step over many parameters finds
    # them without a dictionary; other attributes may still be set (__dict__).
    __slots__ = ("data", "grad", "__dict__", "__weakref__")

    def __init__(self, data, grad=None):
        if isinstance(data, Parameter):
            raise TypeError("data is already a Parameter")
        refuse_copy(data, "a Parameter's data")
        # Device arrays stay where they are: anything with __cuda_array_interface__, and
        # Numba's device arrays (whose simulator stand-ins lack the interface).
        if not (
            hasattr(data, "__cuda_array_interface__") or getattr(data, "__cuda_ndarray__", False)
        ):
            data = np.asarray(data)
            if data.dtype.kind not in "fc":
                raise TypeError(
                    f"a Parameter must hold a floating or complex array, got dtype {data.dtype}"
                )
        self.data = data
        self.grad = grad

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


def as_parameter(p) -> Parameter:
    """Wrap a plain array (kept, not copied) as a Parameter."""
    return p if isinstance(p, Parameter) else Parameter(p)


class NAdam:
    r"""NAdam with the interface of ``torch.optim.NAdam``, on NumPy arrays.

    For t = 1, 2, …, with γ = lr, (β1, β2) = betas, ψ = momentum_decay::

        g_t ← ∇f(θ_{t−1})  (+ λθ_{t−1} with L2 weight decay; θ ← θ(1 − γλ) first if decoupled)
        μ_t ← β1(1 − ½·0.96^(tψ)),   μ_{t+1} ← β1(1 − ½·0.96^((t+1)ψ))
        m_t ← β1 m_{t−1} + (1 − β1) g_t
        v_t ← β2 v_{t−1} + (1 − β2) g_t²
        m̂_t ← μ_{t+1} m_t / (1 − ∏_{i≤t+1} μ_i) + (1 − μ_t) g_t / (1 − ∏_{i≤t} μ_i)
        v̂_t ← v_t / (1 − β2^t)
        θ_t ← θ_{t−1} − γ m̂_t / (√v̂_t + ε)

    Args:
        params: parameters (:class:`Parameter` or arrays, which are wrapped)
            or dicts defining parameter groups, each with a ``"params"`` entry
            and any of the options below overridden.
        lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay,
        maximize: as in torch.
        foreach, capturable, differentiable: torch.optim.NAdam's, accepted so
            that torch code runs unchanged.  ``foreach`` has no effect (a step
            is one fused pass per group and dtype, with the arithmetic of
            torch's for-loop); ``capturable=True`` and ``differentiable=True``
            raise ValueError (no CUDA graphs, no autograd here), in the
            constructor or in a parameter group.
        scalar_dtype: dtype in which each parameter's step count and ∏μ are
            stored.  float64 (the default) is the reference; float32 stores
            them as torch does, which reproduces torch's trajectories.
        profile: compute what this framework computes (a name of
            :data:`nadam_ref.profiles.PROFILES`: ``"torch"``, ``"keras3"``,
            ``"paddle"``, …): its defaults for the hyperparameters not given,
            its roundings, its schedule and update form.  None (the default)
            is the float64 reference, torch's arithmetic with float64 scalars.
            A hyperparameter the profile fixes (Keras 3's ψ = 1), or a
            feature it lacks (weight decay, maximize), is a ValueError;
            ``scalar_dtype`` is the torch profile's ``scalar_state`` option
            (float32 unless given) and no other profile's.
        backend: ``"numba"`` (the default: compiled, bit-identical to the
            reference), ``"numpy"`` (the readable reference) or ``"cuda"``.
        check_finite: if True, a step whose gradients, parameters or state
            hold a NaN or an infinity raises
            :class:`nadam_ref.functional.NonFiniteError` (a ValueError) naming
            the parameter and the first bad index, and changes nothing.  By
            default (False) non-finite values propagate exactly as in torch.

    Learning-rate schedules: each step uses ``param_groups[i]["lr"]`` as it
    is at that moment, so a schedule sets it before each step, as torch's
    schedulers do.  With γ₀ the group's initial lr and t the number of
    scheduler steps taken so far (0 before the first), torch's schedulers
    set::

        StepLR(step_size, gamma)          γ_t = γ₀ · gamma^⌊t / step_size⌋
        MultiStepLR(milestones, gamma)    γ_t = γ₀ · gamma^(number of milestones ≤ t)
        ExponentialLR(gamma)              γ_t = γ₀ · gamma^t
        CosineAnnealingLR(T_max, eta_min) γ_t = η_min + (γ₀ − η_min)(1 + cos(π t / T_max)) / 2
        LambdaLR(f)                       γ_t = γ₀ · f(t)

    for example ``group["lr"] = 1e-2 * 0.5 ** (t // 100)`` before step t + 1
    is StepLR(step_size=100, gamma=0.5) stepped after every optimizer step
    (tests/test_torch_optimizer.py checks these against torch's runs; torch
    evaluates CosineAnnealingLR recursively, within 1e-15 of the closed
    form).  torch's scheduler objects need a ``torch.optim.Optimizer``: use
    :class:`nadam_ref.torch_interop.NAdam` for them.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = DEFAULT,
        betas: tuple[float, float] = DEFAULT,
        eps: float = DEFAULT,
        weight_decay: float = DEFAULT,
        momentum_decay: float = DEFAULT,
        decoupled_weight_decay: bool = DEFAULT,
        *,
        foreach: bool | None = None,
        maximize: bool = DEFAULT,
        capturable: bool = False,
        differentiable: bool = False,
        scalar_dtype: DTypeLike | None = None,
        profile: str | None = None,
        backend: str = "numba",
        check_finite: bool = False,
    ):
        check_torch_flags(foreach, capturable, differentiable)
        self.profile = profiles.get("torch" if profile is None else profile)
        self.profile_name = profile
        if scalar_dtype is not None and self.profile.name != "torch":
            raise ValueError(
                f"profile {profile!r} decides where the step and ∏μ are stored; "
                "scalar_dtype applies to the torch profile only"
            )
        if self.profile.name == "torch":
            default = np.float64 if profile is None else self.profile.options["scalar_state"]
            self.scalar_dtype = np.dtype(default if scalar_dtype is None else scalar_dtype)
            if self.scalar_dtype not in functional.REAL_DTYPES:
                raise ValueError(
                    f"scalar_dtype must be float32 or float64, got {self.scalar_dtype}"
                )
            self._profile_options = {"scalar_state": self.scalar_dtype.name}
        else:
            self.scalar_dtype = None  # the profile's, per parameter dtype
            self._profile_options = {}
        given = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )
        given = {k: v for k, v in given.items() if v is not DEFAULT}
        # torch's checks first (they name the bad value), then what the profile allows
        merged = {**_from_profile(self.profile.hyperparameters()), **given}
        functional.check_hyperparameters(
            merged["lr"],
            merged["betas"],
            merged["eps"],
            merged["weight_decay"],
            merged["momentum_decay"],
        )
        self.defaults = _from_profile(self.profile.hyperparameters(_to_profile(given)))
        functional.get_backend(backend)  # an unknown name fails here, not at the first step
        self.backend = backend
        self.check_finite = bool(check_finite)
        #: (group options, dtype) → plan_step's arithmetic options, as the profile gives them
        self._plan_options: dict[tuple, dict] = {}
        #: id(group) → what the last step of that group checked (:class:`_Repeat`)
        self._repeats: dict[int, _Repeat] = {}
        self.state: dict[Parameter, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, (np.ndarray, Parameter, dict)):
            raise TypeError(
                "params must be an iterable of parameters or of dicts defining parameter groups, "
                f"got a single {type(params).__name__}"
            )
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- parameter groups ------------------------------------------------------------------

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own options (others from the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError('a parameter group must have a "params" entry')
        params = param_group["params"]
        if isinstance(params, (np.ndarray, Parameter)):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("parameters must be given in an ordered collection, not a set")
        index = len(self.param_groups)
        params = [_take(p, f"param_groups[{index}]['params'][{i}]") for i, p in enumerate(params)]
        seen = {id(p.data) for g in self.param_groups for p in g["params"]}
        own = set()
        for i, p in enumerate(params):
            if id(p.data) in seen:
                raise ValueError(
                    f"param_groups[{index}]['params'][{i}]: some parameters appear in more than "
                    "one parameter group"
                )
            if id(p.data) in own:
                raise ValueError(
                    f"param_groups[{index}]['params'][{i}]: a parameter group holds the same "
                    "parameter twice"
                )
            own.add(id(p.data))
        backend = contract.get(self.backend)
        # A backend may keep parameters elsewhere (CUDA: NumPy arrays move to the device);
        # the Parameters take the new arrays only once the whole group has been checked.
        datas = backend.take_params([p.data for p in params])
        for i, data in enumerate(datas):
            functional.check_array(backend, data, str(_ParamName(index, i, Parameter(data))))
        group = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        group["betas"] = (
            tuple(group["betas"]) if isinstance(group["betas"], (list, tuple)) else group["betas"]
        )
        self._check_group(group, index)
        for p, data in zip(params, datas):
            p.data = data
        group["params"] = params
        self.param_groups.append(group)

    def _check_group(self, group: dict, index: int) -> dict:
        """Check a group's options (torch's rules, then the profile's); return
        them in the profile's vocabulary."""
        where = f"param_groups[{index}]"
        check_torch_flags(
            **{k: group.get(k, v) for k, v in TORCH_ONLY_OPTIONS.items()}, where=f"{where}: "
        )
        functional.check_hyperparameters(
            group["lr"],
            group["betas"],
            group["eps"],
            group["weight_decay"],
            group["momentum_decay"],
            where=where,
        )
        try:
            return self.profile.hyperparameters(_to_profile({k: group[k] for k in GROUP_OPTIONS}))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def _options(self, group: dict, index: int, dtype: np.dtype) -> dict:
        """plan_step's arithmetic for parameters of (real) ``dtype`` in ``group``
        (kept per group options and dtype: a step asks for it every time)."""
        key = (tuple(repr(group[k]) for k in GROUP_OPTIONS), dtype)
        options = self._plan_options.get(key)
        if options is None:
            hp = self._check_group(group, index)
            options = self.profile.plan_options(hp, dtype, self._profile_options)
            if len(self._plan_options) > 64:
                self._plan_options.clear()
            self._plan_options[key] = options
        return options

    def _state_dtype(self, group: dict, index: int, dtype: np.dtype) -> np.dtype:
        """The dtype a parameter's step and ∏μ are stored in."""
        return np.dtype(self._options(group, index, dtype)["scalar_dtype"])

    # -- stepping --------------------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (set them to None, or to zeros in place)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad[...] = 0

    def step(self, closure: Callable[[], Any] | None = None):
        """Take one NAdam step for every parameter that has a gradient.

        ``closure`` (optional) recomputes the loss and the gradients; its
        return value is returned.  Every input is checked before anything is
        updated: if this raises, parameters and state are as they were.
        """
        loss = closure() if closure is not None else None
        backend = functional.get_backend(self.backend)
        plans: list = []
        repeats: dict = {}
        try:
            self._plan_groups(backend, plans, repeats)
        except BaseException:
            for plan, live, _ in plans:
                if live is None:  # a repeated group's plan holds its arrays (_RepeatedPlan)
                    plan.release()
            raise
        self._repeats = repeats  # groups gone or not repeatable are forgotten
        for plan, live, states in plans:
            steps, mu_products = plan.run()
            if live is None:  # a repeated group: its plan stored them (see _RepeatedPlan)
                continue
            for (_, p), s, step, mu_product in zip(live, states, steps, mu_products):
                s["step"], s["mu_product"] = step, mu_product
                if self.state.get(p) is not s:  # a new state (else the table stays unmodified)
                    self.state[p] = s
        return loss

    def _plan_groups(self, backend, plans: list, repeats: dict) -> None:
        """Plan every group's step into ``plans`` (checking everything; nothing
        is updated), and note in ``repeats`` the groups whose next step may
        repeat this one (:class:`_Repeat`)."""
        for g, group in enumerate(self.param_groups):
            kept = self._repeats.get(id(group))
            again = kept.plan(self, g, group) if kept is not None else None
            if again is not None:
                plans.append(again)
                repeats[id(group)] = kept
                continue
            first = len(plans)
            self._check_group(group, g)
            live = [(i, p) for i, p in enumerate(group["params"]) if p.grad is not None]
            # One plan per set of arithmetic options (a profile may compute in each dtype).
            # A complex parameter is updated as its real view: it shares the real dtype's plan.
            by_dtype: dict[np.dtype, list] = {}
            batches: dict[int, tuple[dict, list]] = {}
            for i, p in live:
                batch = by_dtype.get(p.data.dtype)
                if batch is None:
                    real = np.zeros(0, p.data.dtype).real.dtype
                    options = self._options(group, g, real)
                    batch = by_dtype[p.data.dtype] = batches.setdefault(id(options), (options, []))[
                        1
                    ]
                batch.append((i, p))
            for options, batch in batches.values():
                states = [
                    self.state.get(p) or self._fresh_state(backend, p, options) for _, p in batch
                ]
                plan = functional.plan_step(
                    [p.data for _, p in batch],
                    [p.grad for _, p in batch],
                    [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states],
                    [s["step"] for s in states],
                    [s["mu_product"] for s in states],
                    backend=self.backend,
                    names=[_ParamName(g, i, p) for i, p in batch],
                    check_finite=self.check_finite,
                    **options,
                )
                plans.append((plan, batch, states))
            kept = _Repeat.after(self, g, group, plans[first:])
            if kept is not None:
                repeats[id(group)] = kept

    def _repeater(self) -> Callable[[Any], bool] | None:
        """After a step of an optimizer of one parameter, its next steps, for a
        caller that alone holds the optimizer and changes nothing but the
        gradient between steps (:func:`nadam_ref.minimize`: planned once per
        run).  ``again(grad)`` sets the parameter's gradient and takes the
        step :meth:`step` would take, if ``grad`` is an array that step reads
        as it is (an ndarray of θ's dtype and shape, dense), and says whether
        it did; if not, nothing has changed, and :meth:`step` (whose checks
        name what is wrong) is the way on.  None if the last step left
        nothing to repeat (see :class:`_Repeat`)."""
        kept = self._repeats.get(id(self.param_groups[0])) if len(self.param_groups) == 1 else None
        if kept is None or len(kept.params) != 1:
            return None
        p = kept.params[0]
        state = self.state[p]
        arrays = [p.data, None, state["exp_avg"], state["exp_avg_sq"]]
        batch = kept.batch

        def again(grad) -> bool:
            arrays[1] = grad
            if not batch.read(arrays):
                return False
            p.grad = grad
            kept.step, kept.mu_product = batch.step(kept.step, kept.mu_product)
            state["step"], state["mu_product"] = kept.step, kept.mu_product
            return True

        return again

    @staticmethod
    def _fresh_state(backend, p: Parameter, options: dict) -> dict[str, Any]:
        one = np.dtype(options["scalar_dtype"]).type
        return {
            "step": one(0),
            "mu_product": one(1),
            "exp_avg": backend.zeros_like(p.data),
            "exp_avg_sq": backend.zeros_like(p.data),
        }

    # -- saving and restoring ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state in torch's layout, as copies::

            {"state": {index: {"step", "mu_product", "exp_avg", "exp_avg_sq"}},
             "param_groups": [{"lr", "betas", ..., "params": [index, ...]}]}

        Parameters are numbered across groups in order; parameters that never
        had a gradient have no entry in ``"state"``.
        """
        to_host = contract.get(self.backend).to_host
        state, groups, index = {}, [], 0
        for group in self.param_groups:
            indices = []
            for p in group["params"]:
                if p in self.state:
                    s = self.state[p]
                    state[index] = {
                        "step": s["step"],
                        "mu_product": s["mu_product"],
                        "exp_avg": np.array(to_host(s["exp_avg"])),
                        "exp_avg_sq": np.array(to_host(s["exp_avg_sq"])),
                    }
                indices.append(index)
                index += 1
            groups.append(
                {
                    **copy.deepcopy({k: v for k, v in group.items() if k != "params"}),
                    "params": indices,
                }
            )
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: group options and per-parameter state.

        Arrays are copied and cast to each parameter's dtype; ``step`` and
        ``mu_product`` to ``scalar_dtype``.  Everything is checked before
        anything changes; a mismatch raises ValueError saying what differs.
        """
        # The rules every state_dict follows (shared with nadam_ref.checkpoint), then
        # whether it fits this optimizer.
        check_layout(state_dict, "state_dict")
        saved_groups = check_param_groups(state_dict["param_groups"], "loaded")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, "
                f"the optimizer has {len(self.param_groups)}"
            )
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"loaded param_groups[{g}] has {len(saved['params'])} parameters, "
                    f"the optimizer's group has {len(group['params'])}"
                )
        check_state(saved_groups, state_dict["state"], "loaded")
        from_host = contract.get(self.backend).from_host
        params_by_index, new_groups = {}, []
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            new = {
                **copy.deepcopy({k: v for k, v in saved.items() if k != "params"}),
                "params": group["params"],
            }
            self._check_group(new, g)
            new_groups.append((g, new))
            for i, p in zip(saved["params"], group["params"]):
                params_by_index[i] = p
        group_of = {id(p): (g, new) for g, new in new_groups for p in new["params"]}
        new_state = {}
        for key, s in state_dict["state"].items():
            p = params_by_index[key]
            g, new = group_of[id(p)]
            scalar = self._state_dtype(new, g, p.dtype).type
            entry = {
                "step": scalar(_scalar(s["step"], "")),
                "mu_product": scalar(_scalar(s["mu_product"], "")),
            }
            for name in ("exp_avg", "exp_avg_sq"):
                array = np.asarray(to_numpy(s[name]))
                if array.shape != p.shape:
                    raise ValueError(
                        f"loaded state[{key!r}]['{name}'] has shape {array.shape}, the parameter has {p.shape}"
                    )
                if array.dtype.kind == "c" and p.dtype.kind != "c":
                    raise ValueError(
                        f"loaded state[{key!r}]['{name}'] has dtype {array.dtype}, which cannot hold {p.dtype}"
                    )
                entry[name] = from_host(array, p.data)
            new_state[p] = entry
        for group, (_, new) in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self.state = new_state

    def __repr__(self) -> str:
        where = (
            f"scalar_dtype={self.scalar_dtype.name}"
            if self.profile_name is None
            else f"profile={self.profile_name!r}"
            + (f", scalar_dtype={self.scalar_dtype.name}" if self.scalar_dtype else "")
        )
        lines = [f"NAdam (backend={self.backend!r}, {where})"]
        for i, group in enumerate(self.param_groups):
            opts = ", ".join(f"{k}={group[k]!r}" for k in GROUP_OPTIONS)
            lines.append(f"  group {i}: {len(group['params'])} params, {opts}")
        return "\n".join(lines)


def _take(p, where: str) -> Parameter:
    """``p`` as a Parameter (an array is wrapped, not copied); errors name it ``where``."""
    refuse_copy(p, where)
    try:
        return as_parameter(p)
    except TypeError as error:
        raise TypeError(f"{where}: {error}") from None


class _ParamName:
    """``param_groups[g]['params'][i] (Parameter(...))`` for error messages,
    formatted only when one is raised: every step names every parameter, and
    formatting them all costs more than updating many small ones."""

    __slots__ = ("group", "index", "param")

    def __init__(self, group: int, index: int, param: Parameter):
        self.group, self.index, self.param = group, index, param

    def __str__(self) -> str:
        return f"param_groups[{self.group}]['params'][{self.index}] ({self.param!r})"


def _to_profile(options: dict) -> dict:
    """Group options (torch's names: ``betas``) as profile hyperparameters (``beta1``, ``beta2``)."""
    out = {k: v for k, v in options.items() if k != "betas"}
    if "betas" in options:
        out["beta1"], out["beta2"] = options["betas"]
    return out


def _from_profile(hp: dict) -> dict:
    """Profile hyperparameters as group options, in the order of :data:`GROUP_OPTIONS`."""
    return {k: (hp["beta1"], hp["beta2"]) if k == "betas" else hp[k] for k in GROUP_OPTIONS}


# -- the state_dict rules, shared by load_state_dict and nadam_ref.checkpoint -----------------

_BOOL_OPTIONS = ("decoupled_weight_decay", "maximize")


def is_integer(x) -> bool:
    """An integer (not a bool)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def check_layout(state_dict, where: str, error: type[Exception] = ValueError) -> None:
    """The shape of a state_dict: ``{"state": {i: {the four STATE_KEYS}},
    "param_groups": [{...}]}``; raises ``error`` naming what is wrong."""
    if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
        raise error(f'{where} must be a dict with exactly the keys "state" and "param_groups"')
    if not isinstance(state_dict["param_groups"], (list, tuple)):
        raise error(f'{where}["param_groups"] must be a list')
    if not isinstance(state_dict["state"], dict):
        raise error(f'{where}["state"] must be a dict')
    for g, group in enumerate(state_dict["param_groups"]):
        if not isinstance(group, dict) or not all(isinstance(k, str) for k in group):
            raise error(f"{where} param_groups[{g}] must be a dict with string keys")
    for key, entry in state_dict["state"].items():
        if not is_integer(key) or key < 0:
            raise error(f"{where} state key {key!r} must be a parameter index (an integer ≥ 0)")
        if not isinstance(entry, dict) or set(entry) != set(STATE_KEYS):
            raise error(f"{where} state[{key}] must have exactly the keys {list(STATE_KEYS)}")


def check_param_groups(groups, where: str, error: type[Exception] = ValueError) -> list[dict]:
    """The parameter groups' options (every one of GROUP_OPTIONS, torch's
    rules) and indices (each listed once); returns them with betas a tuple."""
    if not isinstance(groups, (list, tuple)) or not groups:
        raise error(f"{where} 'param_groups' must be a non-empty list")
    out, seen = [], set()
    for g, group in enumerate(groups):
        field = f"{where} param_groups[{g}]"
        if not isinstance(group, dict):
            raise error(f"{field} must be an object")
        missing = [k for k in (*GROUP_OPTIONS, "params") if k not in group]
        if missing:
            raise error(f"{field} lacks {missing}")
        params = group["params"]
        if not isinstance(params, (list, tuple)) or not all(
            is_integer(i) and i >= 0 for i in params
        ):
            raise error(f"{field}['params'] must be a list of parameter indices, got {params!r}")
        if seen.intersection(params) or len(set(params)) != len(params):
            raise error(f"{field}['params'] repeats a parameter index")
        seen.update(params)
        for name in _BOOL_OPTIONS:
            if not isinstance(group[name], (bool, np.bool_)):
                raise error(f"{field}[{name!r}] must be true or false, got {group[name]!r}")
        betas = (
            tuple(group["betas"]) if isinstance(group["betas"], (list, tuple)) else group["betas"]
        )
        try:
            functional.check_hyperparameters(
                group["lr"],
                betas,
                group["eps"],
                group["weight_decay"],
                group["momentum_decay"],
                where=field,
            )
        except ValueError as e:
            raise error(str(e)) from None
        out.append({**group, "betas": betas, "params": list(params)})
    return out


def check_state(
    groups: list[dict], state: dict, where: str, error: type[Exception] = ValueError
) -> None:
    """The per-parameter state: every entry belongs to a listed parameter, its
    step is a whole number ≥ 0, ∏μ lies in [0, 1], and its moments are
    float32/float64/complex arrays of one shape and dtype."""
    listed = {i for group in groups for i in group["params"]}
    for i, entry in state.items():
        field = f"{where} state[{i}]"
        if i not in listed:
            raise error(f"{field} belongs to a parameter no group lists")
        step = _scalar(entry["step"], f"{field}['step']", error)
        mu_product = _scalar(entry["mu_product"], f"{field}['mu_product']", error)
        if not (math.isfinite(step) and step >= 0 and step == int(step)):
            raise error(f"{field}['step'] must be a whole number ≥ 0, got {entry['step']!r}")
        if not 0.0 <= mu_product <= 1.0:
            raise error(f"{field}['mu_product'] must lie in [0, 1], got {entry['mu_product']!r}")
        m, v = (np.asarray(to_numpy(entry[k])) for k in ("exp_avg", "exp_avg_sq"))
        for name, a in (("exp_avg", m), ("exp_avg_sq", v)):
            if not functional.is_nadam_dtype(a.dtype):
                raise error(
                    f"{field}[{name!r}] has dtype {a.dtype}; "
                    "expected float32, float64, complex64 or complex128"
                )
        if m.shape != v.shape or m.dtype != v.dtype:
            raise error(
                f"{field}: exp_avg has shape {m.shape} and dtype {m.dtype}, exp_avg_sq "
                f"shape {v.shape} and dtype {v.dtype}; they differ"
            )


def _scalar(value, name: str, error: type[Exception] = ValueError) -> float:
    try:
        array = np.asarray(to_numpy(value))
        if array.size != 1 or array.dtype.kind not in "biuf":
            raise TypeError
        return float(array.reshape(()))
    except (TypeError, ValueError):
        raise error(f"{name} must be a real number, got {value!r}") from None


def to_numpy(value):
    """NumPy view of a host array, or of a torch CPU tensor (for convenience)."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return value


# What a repeated step reads of each parameter and of its state, as tuples (one C call each).
_DATA_AND_GRAD = operator.attrgetter("data", "grad")
_STATE_ROW = operator.itemgetter("exp_avg", "exp_avg_sq", "step", "mu_product")


class _Repeat:
    """What a full step of one parameter group checked, kept so that the next
    step of the group can tell, cheaply and exactly, that its inputs are the
    ones checked, and then skip the checks.

    Kept for a group on the ``"numba"`` backend, without ``check_finite``,
    whose parameters all had a gradient and share one dtype, float32 or
    float64.  The next step's inputs are the same when

    * the group's options (torch's flags too), and the optimizer's backend,
      profile, scalar_dtype and check_finite, are the very objects checked (an
      edited option is a new object, and the values are immutable: ``betas``
      is a tuple) — or only ``lr`` is new, as a learning-rate schedule sets it
      before every step: the options are then checked as the full path checks
      them, and the step takes that lr's arithmetic;
    * the group holds the same Parameter objects, each with a gradient and
      its state, and every state holds the step and ∏μ objects the last step
      stored (one pair for the whole group);
    * every θ, g, m and v is exactly a NumPy array of the dtype, C-contiguous
      and aligned, of its θ's shape, θ, m and v writeable: read from the
      array objects in compiled code (:class:`nadam_ref.backend_numba_repeat.DenseBatch`).

    How the step finds them: at the first repeat, through Python (each
    Parameter's data and grad, each state's m, v, step and ∏μ, as tuples that
    compiled code checks); then, with a memo of what it found, in compiled
    code alone: each θ and g from its Parameter's slots, and the rest from
    the memo while the optimizer's state table and every state dict are
    unmodified since the memo was recorded (CPython's version tag of a dict
    changes with every modification: an edited state, however made, sends
    the step back to Python's reading); while the group dict is unmodified
    too, its options are not compared one by one.  A step over many tensors then makes
    no Python pass over its parameters but the one that stores the new step
    and ∏μ in each state.

    Then every check of the full path passes, and the step is the full
    path's: the schedule by the same functions of :mod:`nadam_ref.schedule`
    (compiled by Numba, with the update, into one call: tests/test_repeated_steps.py
    checks every profile's bits against the NumPy reference), the update by
    the same compiled pass.  Anything else takes the full path, whose checks
    name what is wrong.
    """

    __slots__ = (
        "group", "options", "params", "arithmetic", "batch", "step", "mu_product", "memo",
    )  # fmt: skip

    @classmethod
    def after(cls, opt: NAdam, index: int, group: dict, plans: list) -> _Repeat | None:
        """What the full step just planned (``plans``, of ``group``) lets the
        next step skip, or None when it must be a full one again."""
        if opt.backend != "numba" or opt.check_finite or len(plans) != 1:
            return None
        plan, batch, _ = plans[0]
        params = group["params"]
        dtype = params[0].data.dtype if params else None
        if (
            len(batch) != len(params)
            or dtype not in functional.REAL_DTYPES
            or type(group["betas"]) is not tuple
            or len({id(s) for s in plan.scalars}) != 1
        ):
            return None
        from . import backend_numba_repeat  # imported by the step: its backend's

        kept = cls()
        kept.group = group
        kept.options = _Repeat._options(opt, group)
        kept.params = backend_numba_repeat.Objects(params)
        kept.arithmetic = opt._options(group, index, dtype)
        kept.batch = backend_numba_repeat.DenseBatch(len(params), dtype, kept.arithmetic)
        kept.step, kept.mu_product = plan.scalars[0].step, plan.scalars[0].mu_product
        kept.memo = None  # the states as a repeated step leaves them (see _RepeatedPlan)
        return kept

    @staticmethod
    def _options(opt: NAdam, group: dict) -> list:
        """Everything a step's arithmetic and checks depend on besides the
        arrays; the group's lr first (see :meth:`plan`)."""
        return [
            *map(group.get, GROUP_OPTIONS),  # lr first
            *map(group.get, TORCH_ONLY_OPTIONS),
            *_Repeat._settings(opt),
        ]

    @staticmethod
    def _settings(opt: NAdam) -> tuple:
        """The optimizer's own settings a step depends on (the last of :meth:`_options`)."""
        return opt.backend, opt.check_finite, opt.profile, opt.scalar_dtype

    def plan(self, opt: NAdam, index: int, group: dict):
        """This step's plan of ``group`` (``param_groups[index]``) if its
        inputs are the ones checked, else None."""
        params = group["params"]
        if group is not self.group:
            return None
        memo = self.memo
        if (
            memo is not None
            and all(map(operator.is_, _Repeat._settings(opt), self.options[-4:]))
            and self.batch.read_kept(params, opt.state, memo, Parameter, group)
        ):  # the group unmodified (its tag): every option the object checked; see below
            return _RepeatedPlan(self, memo), None, memo.states
        options = self._options(opt, group)
        if not all(map(operator.is_, options, self.options)):
            # A learning-rate schedule sets lr before every step: with nothing
            # else new, the step repeats with that lr's arithmetic (_options
            # checks options it has not seen as a full step does: the same errors).
            if not (
                all(map(operator.is_, options[1:], self.options[1:]))
                and functional.is_real(options[0])  # else the full path says what it is
            ):
                return None
            self.arithmetic = opt._options(group, index, self.batch.dtype)
            self.batch.use(self.arithmetic)
            self.options = options
        # The parameters, state table and states as the last step left them (none
        # modified since: each state's m, v, step and ∏μ are the ones it stored), each
        # θ and g read from its Parameter, every array checked: in compiled code.  (θ
        # and g are then held until the update: DenseBatch.read_kept.)
        if memo is not None and self.batch.read_kept(params, opt.state, memo, Parameter, None):
            return _RepeatedPlan(self, memo), None, memo.states
        if not self.params.same(params):
            return None
        states = list(map(opt.state.get, params))
        pairs = list(map(_DATA_AND_GRAD, params))
        try:
            rows = list(map(_STATE_ROW, states))
        except (TypeError, KeyError):  # a parameter without state, or a state without an entry
            return None
        # Every array checked in compiled code, and every state's step and ∏μ the
        # pair stored (a gradient None is not an ndarray: refused too).
        if not self.batch.read_rows(pairs, rows, (self.step, self.mu_product)):
            return None
        memo = self.batch.remember(params, opt.state, group, states, rows, held=pairs)
        return _RepeatedPlan(self, memo), None, states


class _RepeatedPlan:
    """A repeated group's step, planned: run it (schedule and update in one
    compiled call: :meth:`nadam_ref.backend_numba_repeat.DenseBatch.step`) and store
    the new step and ∏μ in every state; the group's next step expects them,
    and the states' version tags as they are then (``memo``)."""

    __slots__ = ("kept", "memo")

    def __init__(self, kept: _Repeat, memo):
        self.kept, self.memo = kept, memo  # memo: the states, and what the update reads

    def run(self):
        kept = self.kept
        try:
            kept.step, kept.mu_product = kept.batch.step(kept.step, kept.mu_product)
        finally:
            kept.batch.release()
        self.memo.store(kept.step, kept.mu_product)  # in every state; then the tags recorded
        kept.memo = self.memo
        return kept.step, kept.mu_product

    def release(self) -> None:
        """The step stops before :meth:`run`: let go of what the plan holds."""
        self.kept.batch.release()
