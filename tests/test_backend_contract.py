"""The backend contract (nadam_ref/backend.py): what every backend provides,
and that the front ends reach a backend only through it."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der

from nadam_ref import NAdam, Parameter, backend_numpy, minimize
from nadam_ref import backend as contract

HOOKS = set(contract.Hooks.__dataclass_fields__) - {"module"}


@pytest.mark.parametrize("name", sorted(contract.BACKENDS))
def test_every_backend_defines_the_required_functions_and_only_declared_hooks(name):
    try:
        hooks = contract.get(name)
    except ImportError as error:  # numba-cuda missing: nothing to check
        pytest.skip(str(error))
    module = hooks.module
    for required in contract.REQUIRED:
        assert callable(getattr(module, required)), required
    public = {
        k
        for k, v in vars(module).items()
        if callable(v)
        and not k.startswith("_")
        and getattr(v, "__module__", None) == module.__name__
    }
    # Every optional hook a backend defines is the one the front ends get.
    for k in public & (HOOKS - set(contract.REQUIRED)):
        assert getattr(hooks, k) is getattr(module, k), k
    # The contract's optional hooks are the ones the issue lists, and assign.
    assert HOOKS - set(contract.REQUIRED) == {
        "is_grad_array", "adopt", "as_real", "take_params", "to_host", "from_host", "assign"
    }  # fmt: skip


def test_a_module_without_a_required_function_is_refused_by_name():
    module = types.ModuleType("half_a_backend")
    module.update = backend_numpy.update
    module.is_array = backend_numpy.is_array
    with pytest.raises(TypeError, match="zeros_like"):
        contract.of(module)


class Box(np.ndarray):
    """The arrays of a backend that keeps its arrays apart from NumPy's (as
    CUDA keeps device arrays): a host array is not one of them."""


def _boxed_backend() -> types.ModuleType:
    """A backend written against the contract only: its own array type, no
    hook beyond the ones declared, NumPy's arithmetic underneath."""
    m = types.ModuleType("nadam_ref_test_boxed_backend")
    m.update = backend_numpy.update
    m.is_array = lambda x: isinstance(x, Box)
    m.zeros_like = lambda x: np.zeros_like(np.asarray(x)).view(Box)
    m.take_params = lambda arrays: [
        a if isinstance(a, Box) else np.array(a).view(Box) for a in arrays
    ]
    m.to_host = lambda a: np.array(a).view(np.ndarray)
    m.from_host = lambda a, like: np.array(a, dtype=like.dtype).view(Box)
    m.is_grad_array = lambda x: isinstance(x, np.ndarray)
    return m


@pytest.fixture
def boxed(monkeypatch):
    module = _boxed_backend()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(contract.BACKENDS, "boxed", module.__name__)
    yield "boxed"
    contract._hooks.pop(module.__name__, None)


def test_front_ends_reach_a_backend_only_through_the_contract(boxed):
    """minimize with bounds (gradients from the host, θ read back and clipped
    in place) and NAdam's state_dict round trip on the boxed backend give the
    NumPy reference's bits."""
    x0 = np.array([-1.2, 1.0, 0.5])
    options = dict(
        jac=rosen_der, lr=0.05, maxiter=40, gtol=0, bounds=[(-2, 0.7), (-1, 0.45), (None, None)]
    )
    want = minimize(rosen, x0, backend="numpy", **options)
    got = minimize(rosen, x0, backend=boxed, **options)
    np.testing.assert_array_equal(got.x, want.x)

    params = [Parameter(np.linspace(-1, 1, 5)), Parameter(np.ones(3, np.float32))]
    opt = NAdam(params, backend=boxed, lr=0.1)
    assert all(isinstance(p.data, Box) for p in params)
    reference = [np.array(p.data) for p in params]
    ref_opt = NAdam([Parameter(r) for r in reference], backend="numpy", lr=0.1)
    for k in range(3):
        for p, q in zip(params, ref_opt.param_groups[0]["params"]):
            g = np.cos(np.arange(p.data.size) + k).astype(p.dtype)
            p.grad, q.grad = g, g.copy()
        opt.step()
        ref_opt.step()
    sd = opt.state_dict()
    assert all(type(s["exp_avg"]) is np.ndarray for s in sd["state"].values())
    again = NAdam([Parameter(np.array(p.data)) for p in params], backend=boxed, lr=0.1)
    again.load_state_dict(sd)
    assert all(isinstance(s["exp_avg"], Box) for s in again.state.values())
    for p, q in zip(params, ref_opt.param_groups[0]["params"]):
        np.testing.assert_array_equal(np.asarray(p.data), q.data)
