"""The torch-style interface of nadam_ref.NAdam, checked against values
derived by hand from the algorithm box."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nadam_ref
from nadam_ref import NAdam, Parameter


def first_step_by_hand(theta0, g, lr=2e-3, b1=0.9, b2=0.999, eps=1e-8, psi=4e-3):
    """θ_1 from the algorithm box at t = 1 with m_0 = v_0 = 0:
    m_1 = (1−β1)g, v̂_1 = g², (1−μ_1)g/(1−μ_1) = g, so
    θ_1 = θ_0 − γ·(μ_2(1−β1)/(1−μ_1μ_2) + 1)·g/(|g| + ε)."""
    mu1 = b1 * (1 - 0.5 * 0.96 ** (1 * psi))
    mu2 = b1 * (1 - 0.5 * 0.96 ** (2 * psi))
    return theta0 - lr * (mu2 * (1 - b1) / (1 - mu1 * mu2) + 1) * g / (abs(g) + eps)


def test_first_step_matches_hand_derivation():
    x = np.array([1.0, -2.0, 0.5])
    g = np.array([0.3, -4.0, 1e-3])
    opt = NAdam([x], lr=0.01)
    opt.param_groups[0]["params"][0].grad = g
    opt.step()
    expected = [first_step_by_hand(a, b, lr=0.01) for a, b in zip([1.0, -2.0, 0.5], g)]
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-15)


def test_step_updates_in_place_so_views_see_it():
    base = np.zeros((2, 3))
    view = base[1]
    p = Parameter(view)
    assert p.data is view
    opt = NAdam([p], lr=0.1)
    p.grad = np.ones(3)
    opt.step()
    assert np.all(base[1] < 0) and np.all(base[0] == 0)
    assert np.all(view == base[1])


def test_plain_arrays_are_wrapped():
    x = np.ones(3, dtype=np.float32)
    opt = NAdam([x])
    p = opt.param_groups[0]["params"][0]
    assert isinstance(p, Parameter) and p.data is x


@pytest.mark.parametrize(
    "bad",
    [
        np.arange(3),
        np.array([True, False]),
        np.arange(3, dtype=np.uint8),
        np.ones(2, dtype=np.float16),
        np.ones(2, dtype=np.longdouble),
        np.ones(2, dtype=np.clongdouble),
    ],
)
def test_only_float32_float64_and_their_complex_types_are_accepted(bad):
    with pytest.raises(TypeError, match="dtype"):
        NAdam([bad])


def test_params_must_be_an_iterable_of_parameters():
    with pytest.raises(TypeError, match="iterable"):
        NAdam(np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        NAdam([])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1e-3}, "Invalid learning rate: -0.001"),
        ({"lr": math.nan}, "Invalid learning rate: nan"),
        ({"eps": -1.0}, "Invalid epsilon value: -1.0"),
        ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
        ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
        ({"weight_decay": -0.5}, "Invalid weight_decay value: -0.5"),
        ({"momentum_decay": -4e-3}, "Invalid momentum_decay value: -0.004"),
        ({"betas": (0.9,)}, "betas must be a pair"),
        ({"lr": "0.1"}, "lr must be a real number"),
    ],
)
def test_invalid_hyperparameters_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        NAdam([np.ones(2)], **kwargs)


def test_param_groups_override_defaults_and_are_checked():
    a, b = np.ones(2), np.ones(2)
    opt = NAdam([{"params": [a]}, {"params": [b], "lr": 0.5, "betas": [0.5, 0.9]}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 0.5
    assert opt.param_groups[1]["betas"] == (0.5, 0.9)
    assert opt.param_groups[1]["momentum_decay"] == 4e-3
    with pytest.raises(ValueError, match=r"param_groups\[2\]: Invalid epsilon"):
        opt.add_param_group({"params": [np.ones(1)], "eps": -1})
    assert len(opt.param_groups) == 2


def test_a_parameter_in_two_groups_and_groups_without_params_are_errors():
    a = np.ones(2)
    opt = NAdam([a])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [opt.param_groups[0]["params"][0]]})
    with pytest.raises(ValueError, match='"params"'):
        opt.add_param_group({"lr": 0.1})
    with pytest.raises(ValueError, match="twice"):
        opt.add_param_group({"params": [np.ones(1)] * 2})


def test_step_returns_the_closure_loss_and_calls_it_once():
    x = np.array([3.0])
    opt = NAdam([x], lr=0.1)
    p = opt.param_groups[0]["params"][0]
    calls = []

    def closure():
        calls.append(1)
        p.grad = 2 * x
        return float(x[0] ** 2)

    assert opt.step(closure) == 9.0
    assert calls == [1]
    np.testing.assert_allclose(x, [first_step_by_hand(3.0, 6.0, lr=0.1)], atol=1e-15)
    assert opt.step() is None


def test_parameters_without_grad_are_skipped_and_get_no_state():
    a, b = np.ones(2), np.ones(2)
    opt = NAdam([a, b], lr=0.1)
    pa, pb = opt.param_groups[0]["params"]
    pa.grad = np.ones(2)
    opt.step()
    assert pa in opt.state and pb not in opt.state
    assert np.array_equal(b, np.ones(2))
    assert set(opt.state_dict()["state"]) == {0}


def test_zero_grad():
    opt = NAdam([np.ones(2)])
    p = opt.param_groups[0]["params"][0]
    g = np.ones(2)
    p.grad = g
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and np.array_equal(g, [0.0, 0.0])
    opt.zero_grad()
    assert p.grad is None


def test_lr_zero_leaves_theta_but_moves_the_moments():
    x = np.array([1.0, 2.0])
    opt = NAdam([x], lr=0.1)
    p = opt.param_groups[0]["params"][0]
    p.grad = np.array([1.0, -1.0])
    opt.step()
    after_one = x.copy()
    opt.param_groups[0]["lr"] = 0.0  # a schedule edits the groups between steps
    p.grad = np.array([2.0, 2.0])
    opt.step()
    assert np.array_equal(x, after_one)
    # m_2 = β1·(1−β1)·g_1 + (1−β1)·g_2, by hand
    np.testing.assert_allclose(
        opt.state[p]["exp_avg"], [0.9 * 0.1 + 0.1 * 2, 0.9 * -0.1 + 0.1 * 2], atol=1e-16
    )
    assert opt.state[p]["step"] == 2


def test_invalid_group_edit_fails_before_anything_changes():
    a, b = np.ones(2), np.ones(2)
    opt = NAdam([{"params": [a]}, {"params": [b]}], lr=0.1)
    for p in (opt.param_groups[0]["params"][0], opt.param_groups[1]["params"][0]):
        p.grad = np.ones(2)
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[1\]: Invalid learning rate"):
        opt.step()
    assert np.array_equal(a, np.ones(2)) and opt.state == {}


@pytest.mark.parametrize(
    "grad, error, message",
    [
        (np.ones(3), ValueError, "shape"),
        (np.ones(2, dtype=np.float32), TypeError, "dtype"),
        ([1.0, 1.0], TypeError, "must be an array"),
    ],
)
def test_bad_grad_is_an_error_before_anything_changes(grad, error, message):
    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    opt = NAdam([a, b], lr=0.1)
    pa, pb = opt.param_groups[0]["params"]
    pa.grad = pb.grad = np.ones(2)
    opt.step()
    before = opt.state_dict()
    a0, b0 = a.copy(), b.copy()
    pb.grad = grad
    with pytest.raises(error, match=message):
        opt.step()
    assert np.array_equal(a, a0) and np.array_equal(b, b0)
    after = opt.state_dict()
    for i in (0, 1):
        for key in ("step", "mu_product", "exp_avg", "exp_avg_sq"):
            assert np.array_equal(before["state"][i][key], after["state"][i][key])


def test_state_dict_layout_and_copies():
    x = np.ones(3, dtype=np.float32)
    opt = NAdam([{"params": [np.ones(1)]}, {"params": [x], "lr": 0.01}])
    p = opt.param_groups[1]["params"][0]
    p.grad = np.ones(3, dtype=np.float32)
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == [0] and sd["param_groups"][1]["params"] == [1]
    assert set(sd["state"]) == {1}
    assert set(sd["state"][1]) == {"step", "mu_product", "exp_avg", "exp_avg_sq"}
    assert sd["state"][1]["step"] == 1 and sd["state"][1]["exp_avg"].dtype == np.float32
    mu1 = 0.9 * (1 - 0.5 * 0.96**0.004)
    assert sd["state"][1]["mu_product"] == pytest.approx(mu1, rel=1e-15)
    sd["state"][1]["exp_avg"][:] = 99
    sd["param_groups"][1]["lr"] = 5.0
    assert not np.any(opt.state[p]["exp_avg"] == 99)
    assert opt.param_groups[1]["lr"] == 0.01


def test_load_state_dict_checks_and_casts():
    x64 = np.ones(3)
    opt = NAdam([x64], lr=0.1)
    opt.param_groups[0]["params"][0].grad = np.full(3, 0.5)
    opt.step()
    sd = opt.state_dict()

    x32 = np.ones(3, dtype=np.float32)
    other = NAdam([x32], scalar_dtype=np.float32)
    other.load_state_dict(sd)
    p = other.param_groups[0]["params"][0]
    assert other.state[p]["exp_avg"].dtype == np.float32
    assert other.state[p]["step"].dtype == np.float32
    assert other.param_groups[0]["lr"] == 0.1

    with pytest.raises(ValueError, match="has 1 parameter groups, the optimizer has 2"):
        NAdam([{"params": [np.ones(3)]}, {"params": [np.ones(1)]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match="has 1 parameters"):
        NAdam([np.ones(3), np.ones(3)]).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        NAdam([np.ones(4)]).load_state_dict(sd)
    bad = {**sd, "state": {0: {**sd["state"][0], "mu_product": 2.0}}}
    target = NAdam([np.ones(3)])
    with pytest.raises(ValueError, match=r"mu_product.*\[0, 1\]"):
        target.load_state_dict(bad)
    assert target.state == {} and target.param_groups[0]["lr"] == 2e-3


def test_float32_scalar_state_is_stored_in_float32():
    opt = NAdam([np.ones(2)], scalar_dtype=np.float32)
    p = opt.param_groups[0]["params"][0]
    p.grad = np.ones(2)
    opt.step()
    assert opt.state[p]["step"].dtype == np.float32
    # torch rounds ∏μ to float32 as it is stored
    mu1 = 0.9 * (1 - 0.5 * 0.96**0.004)
    assert opt.state[p]["mu_product"] == np.float32(mu1)


def test_complex_parameters_are_pairs_of_reals():
    z = np.array([1 + 2j, -1 - 1j])
    opt = NAdam([z], lr=0.1)
    opt.param_groups[0]["params"][0].grad = np.array([0.5 - 2j, 3 + 0j])
    opt.step()
    expected_re = [first_step_by_hand(1.0, 0.5, lr=0.1), first_step_by_hand(-1.0, 3.0, lr=0.1)]
    expected_im = [first_step_by_hand(2.0, -2.0, lr=0.1), -1.0]  # a zero gradient leaves it
    np.testing.assert_allclose(z.real, expected_re, atol=1e-15)
    np.testing.assert_allclose(z.imag, expected_im, atol=1e-15)


def test_unknown_backend_and_scalar_dtype_are_errors():
    with pytest.raises(ValueError, match="unknown backend"):
        NAdam([np.ones(1)], backend="fortran")
    with pytest.raises(ValueError, match="scalar_dtype"):
        NAdam([np.ones(1)], scalar_dtype=np.float16)


def test_read_only_parameter_is_rejected():
    x = np.ones(2)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        NAdam([x])


def test_functional_core_is_exported():
    x, g = np.array([1.0]), np.array([2.0])
    m, v = np.zeros(1), np.zeros(1)
    steps, prods = nadam_ref.nadam(
        [x], [g], [m], [v], [0.0], [1.0], lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8
    )
    assert steps == [1.0]
    np.testing.assert_allclose(x, [first_step_by_hand(1.0, 2.0, lr=0.1)], atol=1e-15)
