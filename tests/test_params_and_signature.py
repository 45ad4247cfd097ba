"""Code written for torch runs unchanged, and what a parameter may be.

* ``nadam_ref.NAdam`` takes ``torch.optim.NAdam``'s whole signature (read from
  torch itself): ``foreach`` has no effect, ``capturable=True`` and
  ``differentiable=True`` are refused with a clear error, as
  :class:`nadam_ref.torch_interop.NAdam` does;
* a parameter is an array updated in place (a NumPy array or view, a 0-d
  array, a device array); a Python list or number would be copied into an
  array the caller never sees, so both front ends refuse it, naming the
  parameter; so do all the other errors about a parameter.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import nadam_ref
from nadam_ref.keras import Nadam
from nadam_ref.optimizer import GROUP_OPTIONS, TORCH_ONLY_OPTIONS


def _run(opt, params, grads):
    for g in grads:
        for p, gi in zip(opt.param_groups[0]["params"], g):
            p.grad = gi
        opt.step()
    return [np.array(p) for p in params]


# -- torch's signature ---------------------------------------------------------------------


def test_every_keyword_of_torch_nadam_is_accepted_with_torchs_default():
    torch = pytest.importorskip("torch")
    ours = inspect.signature(nadam_ref.NAdam).parameters
    theirs = inspect.signature(torch.optim.NAdam).parameters
    for name, p in theirs.items():
        if name != "self":
            assert name in ours, f"nadam_ref.NAdam lacks torch's {name!r}"
            assert ours[name].kind == p.kind, name  # positional or keyword-only, as in torch
    for name in TORCH_ONLY_OPTIONS:
        assert ours[name].default == theirs[name].default, name
    mine = nadam_ref.NAdam([np.zeros(1)]).defaults  # the hyperparameters given none
    torchs = torch.optim.NAdam([torch.zeros(1, requires_grad=True)]).defaults
    assert {k: mine[k] for k in GROUP_OPTIONS} == {k: torchs[k] for k in GROUP_OPTIONS}


def test_torch_code_runs_unchanged_and_matches_torch():
    """Every keyword of torch.optim.NAdam at torch's own defaults, passed as torch code
    would: the trajectory is torch's (float64, step and ∏μ stored as torch stores them)."""
    torch = pytest.importorskip("torch")
    defaults = {
        name: p.default
        for name, p in inspect.signature(torch.optim.NAdam).parameters.items()
        if name not in ("self", "params")
    }
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(7)
    grads = rng.standard_normal((20, 7))
    w = w0.copy()
    opt = nadam_ref.NAdam([w], **defaults, scalar_dtype=np.float32)
    _run(opt, [w], [[g] for g in grads])
    t = torch.tensor(w0, requires_grad=True)
    topt = torch.optim.NAdam([t], **defaults)
    for g in grads:
        t.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(w, t.detach().numpy(), rtol=0, atol=1e-14)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_foreach_has_no_effect(backend):
    rng = np.random.default_rng(1)
    params0 = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5)]
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in params0] for _ in range(5)]
    results = []
    for foreach in (None, False, True):
        params = [p.copy() for p in params0]
        opt = nadam_ref.NAdam(params, foreach=foreach, backend=backend)
        results.append(_run(opt, params, grads))
    for other in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0], other))
    assert not np.array_equal(results[0][0], params0[0])  # the steps did move θ


@pytest.mark.parametrize("flag", ["capturable", "differentiable"])
def test_capturable_and_differentiable_are_refused_clearly(flag):
    w = np.zeros(3)
    with pytest.raises(ValueError, match=f"{flag}=True is not supported"):
        nadam_ref.NAdam([w], **{flag: True})
    nadam_ref.NAdam([w], **{flag: False})  # torch's default is accepted
    opt = nadam_ref.NAdam([w])
    with pytest.raises(ValueError, match=rf"param_groups\[1\]: {flag}=True is not supported"):
        opt.add_param_group({"params": [np.zeros(2)], flag: True})
    assert len(opt.param_groups) == 1  # the group was not added


def test_foreach_must_be_none_or_a_bool():
    with pytest.raises(ValueError, match="foreach must be None, True or False"):
        nadam_ref.NAdam([np.zeros(3)], foreach="yes")


# -- what a parameter may be ------------------------------------------------------------------

NOT_UPDATABLE = [
    ([1.0, 2.0, 3.0], "list"),
    ((1.0, 2.0), "tuple"),
    (1.0, "float"),
    (3, "int"),
    (np.float32(1.0), "float32"),
]


@pytest.mark.parametrize(("value", "kind"), NOT_UPDATABLE, ids=[k for _, k in NOT_UPDATABLE])
def test_torch_style_refuses_what_cannot_be_updated_in_place(value, kind):
    w = np.zeros(2)
    with pytest.raises(TypeError) as error:
        nadam_ref.NAdam([w, value])
    message = str(error.value)
    assert message.startswith("param_groups[0]['params'][1]") and kind in message
    assert "in place" in message
    opt = nadam_ref.NAdam([w])
    with pytest.raises(TypeError, match=r"^param_groups\[1\]\['params'\]\[0\]"):
        opt.add_param_group({"params": [value]})
    assert len(opt.param_groups) == 1


def test_a_list_of_numbers_is_not_three_parameters():
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\].*float"):
        nadam_ref.NAdam([1.0, 2.0, 3.0])


@pytest.mark.parametrize(("value", "kind"), NOT_UPDATABLE, ids=[k for _, k in NOT_UPDATABLE])
def test_keras_style_refuses_the_same(value, kind):
    opt = Nadam()
    w = np.zeros(2, dtype=np.float32)
    with pytest.raises(TypeError) as error:
        opt.apply_gradients([(np.ones(2, np.float32), w), (np.ones(2, np.float32), value)])
    message = str(error.value)
    assert "grads_and_vars[1]" in message and kind in message and "in place" in message
    assert np.all(w == 0) and int(opt.iterations) == 0  # nothing changed


def test_what_is_updated_in_place_is_accepted():
    base = np.zeros((4, 4))
    view = base[::2, 1:]  # a strided view: updating it updates base
    scalar = np.array(0.5)  # a 0-d array
    p = nadam_ref.Parameter(np.zeros(3, np.float32))
    opt = nadam_ref.NAdam([view, scalar, p], backend="numpy")
    for q in opt.param_groups[0]["params"]:
        q.grad = np.ones(q.shape, q.dtype)
    opt.step()
    # The first step with g = 1, by hand: m = 0.1, v̂ = 1, so θ moves by
    # lr·(μ2·m/(1 − μ1μ2) + (1 − μ1)·g/(1 − μ1)) / (1 + ε).
    mu1, mu2 = (0.9 * (1 - 0.5 * 0.96 ** (t * 4e-3)) for t in (1, 2))
    step = 2e-3 * (mu2 * 0.1 / (1 - mu1 * mu2) + 1) / (1 + 1e-8)
    assert np.allclose(base[::2, 1:], -step, rtol=1e-12) and np.all(base[1::2] == 0)
    assert np.isclose(scalar, 0.5 - step, rtol=1e-12) and np.allclose(p.data, -step, rtol=1e-6)
    k = Nadam()
    kv = np.zeros((2, 3), np.float32)
    k.apply_gradients([(np.ones(3, np.float32), kv[0])])  # a row view
    assert np.all(kv[0] < 0) and np.all(kv[1] == 0)


def test_every_error_about_a_parameter_names_it():
    good = np.zeros(3)
    cases = [
        (np.zeros(3, dtype=np.int64), TypeError, "int64"),
        (np.zeros(3, dtype=bool), TypeError, "bool"),
        (np.zeros(3).view(), None, None),
    ]
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    cases[2] = (read_only, ValueError, "read-only")
    for value, error, what in cases:
        with pytest.raises(error) as info:
            nadam_ref.NAdam([good, value])
        assert str(info.value).startswith("param_groups[0]['params'][1]"), str(info.value)
        assert what in str(info.value)
    opt = nadam_ref.NAdam([good, np.zeros(2)], backend="numpy")
    second = opt.param_groups[0]["params"][1]
    for grad, what in [(np.zeros(3), "shape"), (np.zeros(2, np.float32), "dtype"), ([0.0], "list")]:
        second.grad = grad
        with pytest.raises((TypeError, ValueError)) as info:
            opt.step()
        assert "param_groups[0]['params'][1]" in str(info.value) and what in str(info.value)
