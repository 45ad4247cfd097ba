"""Problems on which nadam_ref is checked against the real paddle and timm NAdams.

Three real optimizers, run on the same kind of open-loop problem:

* ``paddle``: ``paddle.optimizer.NAdam`` (paddlepaddle 3.3.1, CPU build);
* ``timm-nadamw``: ``timm.optim.NAdamW`` (timm 1.0.31), the NAdamW of
  MLCommons AlgoPerf;
* ``timm-nadam-legacy``: ``timm.optim.NAdamLegacy`` (timm 1.0.31), the old
  timm Nadam.

Loading timm.  ``import timm`` imports torchvision, and PyPI's torchvision
wheels do not load beside a CPU build of torch 2.13 ("operator
torchvision::nms does not exist").  timm's optimizer files need only torch, so
:func:`timm_optim` loads ``timm/optim/nadamw.py`` and ``nadam.py`` by file path
(under a private package name, so their relative imports of ``_helpers`` and
``_types`` resolve) from wherever ``timm`` is installed, without running
``timm/__init__.py``.  timm itself therefore only has to be *installed*
(``pip install --no-deps timm==1.0.31`` suffices), never imported.

Each case runs three parameters of different shapes (5, 12 and 20 elements:
both the vectorised and the scalar loops of the libraries' CPU
kernels run) for :data:`STEPS` steps.  Gradients are drawn once, in float32,
from a seeded generator, so float32 and float64 runs see the same values;
θ₀ likewise.  Used by ``tests/data/record_paddle_timm.py`` (the committed
recordings), ``tests/data/record_golden_frameworks.py`` (the golden cases'
inputs) and ``tests/test_paddle_timm.py``.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

STEPS = 200
SHAPES = [(5,), (3, 4), (4, 5)]
#: gradient scale per parameter
SCALES = [1.0, 0.3, 3.0]
OPTIMIZERS = ("paddle", "timm-nadamw", "timm-nadam-legacy")

#: each optimizer's cases: keyword arguments in the library's own vocabulary
CASES: dict[str, dict[str, dict]] = {
    "paddle": {
        "defaults": {},
        "hyperparameters": {
            "learning_rate": 1e-2,
            "beta1": 0.85,
            "beta2": 0.99,
            "epsilon": 1e-6,
            "momentum_decay": 0.01,
        },
    },
    "timm-nadamw": {
        # NAdamW's defaults include weight_decay = 1e-2 (decoupled)
        "defaults": {},
        "hyperparameters": {"lr": 1e-2, "betas": (0.85, 0.99), "eps": 1e-6, "weight_decay": 0.05},
        "no-weight-decay": {"weight_decay": 0.0},
    },
    "timm-nadam-legacy": {
        "defaults": {},
        "hyperparameters": {
            "lr": 1e-2,
            "betas": (0.85, 0.99),
            "eps": 1e-6,
            "schedule_decay": 0.01,
            "weight_decay": 0.05,  # L2: g ← g + λθ
        },
    },
}


def problem(optimizer: str, case: str):
    """θ₀ (one float32-valued float64 array per parameter) and the gradients
    (float32, ``[STEPS, *shape]``) of ``case``."""
    seed = [20261201, OPTIMIZERS.index(optimizer), sorted(CASES[optimizer]).index(case)]
    rng = np.random.default_rng(seed)
    params0, grads = [], []
    for shape, scale in zip(SHAPES, SCALES):
        params0.append(rng.standard_normal(shape).astype(np.float32).astype(np.float64))
        grads.append((scale * rng.standard_normal((STEPS, *shape))).astype(np.float32))
    return params0, grads


def library_kwargs(optimizer: str, hp: dict) -> dict:
    """Hyperparameters in the torch vocabulary (a golden case's: ``lr``,
    ``beta1``, ``beta2``, ``eps``, ``momentum_decay``, ``weight_decay``,
    ``maximize``) as the real ``optimizer``'s keyword arguments."""
    if optimizer == "paddle":
        if hp.get("weight_decay") or hp.get("maximize"):
            raise ValueError("the paddle recordings have no weight decay and no maximize")
        return dict(
            learning_rate=hp["lr"],
            beta1=hp["beta1"],
            beta2=hp["beta2"],
            epsilon=hp["eps"],
            momentum_decay=hp["momentum_decay"],
        )
    common = dict(lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    if optimizer == "timm-nadamw":  # weight decay decoupled, as NAdamW's always is
        return dict(common, weight_decay=hp["weight_decay"], maximize=hp["maximize"])
    if hp.get("maximize"):
        raise ValueError("timm's NAdamLegacy has no maximize")
    # NAdamLegacy: weight decay is L2; ψ is called schedule_decay
    return dict(common, weight_decay=hp["weight_decay"], schedule_decay=hp["momentum_decay"])


# -- timm without `import timm` ----------------------------------------------------------------

_TIMM_PACKAGE = "_timm_optim_by_path"


def timm_dir() -> Path | None:
    """The installed ``timm/optim`` directory, found without importing timm."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "optim"


def timm_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("timm")
    except PackageNotFoundError:
        return None


def timm_optim():
    """A namespace with timm's ``NAdamW`` and ``NAdamLegacy`` classes, loaded
    from their files (needs only torch; see the module docstring)."""
    directory = timm_dir()
    if directory is None:
        raise ModuleNotFoundError("timm is not installed (pip install --no-deps timm==1.0.31)")
    if _TIMM_PACKAGE not in sys.modules:
        package = types.ModuleType(_TIMM_PACKAGE)
        package.__path__ = [str(directory)]  # relative imports inside resolve here
        sys.modules[_TIMM_PACKAGE] = package
    loaded = {}
    for name in ("nadamw", "nadam"):
        full = f"{_TIMM_PACKAGE}.{name}"
        if full not in sys.modules:
            spec = importlib.util.spec_from_file_location(full, directory / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            spec.loader.exec_module(module)
        loaded[name] = sys.modules[full]
    return types.SimpleNamespace(
        NAdamW=loaded["nadamw"].NAdamW, NAdamLegacy=loaded["nadam"].NAdamLegacy
    )


# -- running the real optimizers -----------------------------------------------------------------


def run(optimizer: str, params0, grads, dtype, kwargs: dict, steps: int | None = None) -> dict:
    """Run the real ``optimizer`` on θ₀ and the gradients in ``dtype``.

    Returns ``{"theta": [[steps, *shape] per parameter], "trace": {name:
    [steps] array}}``: θ after every step, and the scalar state the library
    keeps, after every step (paddle: its per-element accumulators 0.96^t,
    β2^t and ∏μ, first element; timm legacy: ``m_schedule``, ∏μ).
    """
    steps = len(grads[0]) if steps is None else steps
    dtype = np.dtype(dtype)
    params0 = [np.asarray(p, dtype) for p in params0]
    grads = [np.asarray(g, dtype) for g in grads]
    if optimizer == "paddle":
        return _run_paddle(params0, grads, dtype, kwargs, steps)
    return _run_timm(optimizer, params0, grads, kwargs, steps)


def _run_paddle(params0, grads, dtype, kwargs, steps):
    import paddle

    paddle.set_device("cpu")
    params = []
    for x in params0:
        p = paddle.create_parameter(list(x.shape), dtype.name)
        p.set_value(x.copy())
        params.append(p)
    # one optimizer per dtype: paddle makes its learning-rate tensor in the
    # first parameter's dtype
    opt = paddle.optimizer.NAdam(parameters=params, **kwargs)
    theta = [np.empty((steps, *x.shape), dtype) for x in params0]
    names = ("momentum_decay_pow", "beta2_pow", "mu_product")
    trace = {n: np.empty(steps, dtype) for n in names}
    for t in range(steps):
        for p, g in zip(params, grads):
            p._set_grad_ivar(paddle.to_tensor(g[t].copy()))
        opt.step()
        opt.clear_grad()
        for out, p in zip(theta, params):
            out[t] = p.numpy()
        for n in names:
            trace[n][t] = opt._accumulators[n][params[0].name].numpy().ravel()[0]
    return {"theta": theta, "trace": trace}


def _run_timm(optimizer, params0, grads, kwargs, steps):
    import torch

    optim = timm_optim()
    tensors = [torch.tensor(x.copy()) for x in params0]
    if optimizer == "timm-nadamw":
        # foreach=False is timm's own choice on the CPU (it follows torch's rule)
        opt = optim.NAdamW(tensors, foreach=False, **kwargs)
    else:
        opt = optim.NAdamLegacy(tensors, **kwargs)
    theta = [np.empty((steps, *x.shape), x.dtype) for x in params0]
    trace = {"m_schedule": np.empty(steps)} if optimizer == "timm-nadam-legacy" else {}
    for t in range(steps):
        for p, g in zip(tensors, grads):
            p.grad = torch.tensor(g[t].copy())
        opt.step()
        for out, p in zip(theta, tensors):
            out[t] = p.detach().numpy()
        if trace:
            trace["m_schedule"][t] = opt.state[tensors[0]]["m_schedule"]
    return {"theta": theta, "trace": trace}


def versions(optimizer: str) -> dict:
    """The library versions (and torch's CPU kernel level) a run depends on."""
    if optimizer == "paddle":
        import paddle

        return {"paddle": paddle.__version__}
    import torch

    return {
        "timm": timm_version(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
