"""What may change between two steps of one optimizer, and what a step does then.

A step of the default (Numba) backend skips work it has done before when the
arrays, their shapes, dtypes and flags, and the group options are the ones
it last checked.  Each test changes one thing between steps and requires
what the full path gives: the NumPy reference backend's bits (an optimizer
twin on ``backend="numpy"`` fed the same changes, itself checked against
values derived by hand in tests/test_optimizer.py and against torch), or the
same error, with the message naming the same thing, and parameters and state
left as they were.
"""

from __future__ import annotations

import numpy as np
import pytest

from nadam_ref import NAdam, Parameter, keras, profiles
from nadam_ref.functional import NonFiniteError

RNG = np.random.default_rng(16)


def _random(shape, dtype, scale=1.0):
    """A fresh array (0-d included) of ``dtype``; complex ones with both parts random."""
    x = RNG.standard_normal(shape) * scale
    if np.dtype(dtype).kind == "c":
        x = x + 1j * RNG.standard_normal(shape) * scale
    return np.array(x, dtype=dtype)


def _arrays(shapes, dtype):
    return [_random(s, dtype) for s in shapes]


class Twins:
    """The same optimizer on the Numba backend and on the NumPy reference,
    stepped with the same gradients and the same edits."""

    def __init__(
        self, shapes=((3,), (2, 4), ()), dtype=np.float64, groups=None, parameter=Parameter,
        **options,
    ):  # fmt: skip
        self.thetas = _arrays(shapes, dtype)
        self.opts, self.params = [], []
        for backend in ("numba", "numpy"):
            params = [parameter(t.copy()) for t in self.thetas]
            spec = (
                [{"params": [params[i] for i in idx], **extra} for idx, extra in groups]
                if groups is not None
                else params
            )
            self.opts.append(NAdam(spec, backend=backend, **options))
            self.params.append(params)

    def each(self, edit):
        """Apply ``edit(opt, params)`` to both twins."""
        for opt, params in zip(self.opts, self.params):
            edit(opt, params)

    def grads(self, scale=1.0):
        """Give every parameter a fresh gradient (new arrays, the same values for both)."""
        values = [_random(t.shape, t.dtype, scale) for t in self.thetas]
        for params in self.params:
            for p, g in zip(params, values):
                p.grad = g.copy()

    def step(self, steps=1, new_grads=True):
        for _ in range(steps):
            if new_grads:
                self.grads()
            for opt in self.opts:
                opt.step()
            self.same()

    def same(self):
        ours, ref = self.opts
        for p, q in zip(*self.params):
            assert p.data.shape == q.data.shape
            _bits_equal(p.data, q.data)
            assert (p in ours.state) == (q in ref.state)
            if p in ours.state:
                s, r = ours.state[p], ref.state[q]
                _bits_equal(s["exp_avg"], r["exp_avg"])
                _bits_equal(s["exp_avg_sq"], r["exp_avg_sq"])
                assert s["step"] == r["step"] and s["mu_product"] == r["mu_product"]
                assert type(s["step"]) is type(r["step"])

    def fails_alike(self, error, match):
        """Both twins' steps raise ``error`` with the same message (matching
        ``match``); neither changes anything."""
        messages = []
        for opt, params in zip(self.opts, self.params):
            before = _snapshot(opt, params)
            with pytest.raises(error, match=match) as caught:
                opt.step()
            messages.append(str(caught.value))
            after = _snapshot(opt, params)
            assert len(before) == len(after)
            for a, b in zip(before, after):
                _bits_equal(a, b)
        assert messages[0] == messages[1]


def _bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _snapshot(opt, params):
    out = [p.data.copy() for p in params]
    for p in params:
        s = opt.state.get(p)
        if s is not None:
            out += [s["exp_avg"].copy(), s["exp_avg_sq"].copy(), np.asarray(s["step"])]
    return out


def _count_plans(monkeypatch) -> list:
    """A list that grows by one at every full step (functional.plan_step) from now on."""
    from nadam_ref import functional

    planned, full = [], functional.plan_step
    monkeypatch.setattr(functional, "plan_step", lambda *a, **k: planned.append(1) or full(*a, **k))
    return planned


# -- the same arrays, and new ones ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_many_steps_with_new_gradients_give_the_reference_bits(dtype):
    twins = Twins(dtype=dtype)
    twins.step(12)


def test_the_same_gradient_arrays_refilled_in_place():
    twins = Twins()
    twins.grads()
    for _ in range(6):
        twins.each(lambda opt, params: [p.grad.__imul__(0.5) for p in params])
        for opt in twins.opts:
            opt.step()
        twins.same()


def test_a_parameter_array_replaced_by_a_new_one():
    twins = Twins()
    twins.step(3)
    fresh = RNG.standard_normal(3)
    twins.each(lambda opt, params: setattr(params[0], "data", fresh.copy()))
    twins.step(3)


def test_views_and_arrays_compiled_code_cannot_address_fall_back_alike():
    twins = Twins(shapes=((4, 3), (5,), (6,)))
    twins.step(2)

    def odd_grads(opt, params):
        params[0].grad = np.ascontiguousarray(params[0].grad.T).T  # transposed view
        params[1].grad = np.broadcast_to(params[1].grad[:1], (5,))  # stride 0, read-only
        raw = np.zeros(6 * 8 + 1, np.uint8)[1:].view(np.float64)  # misaligned
        raw[...] = params[2].grad
        params[2].grad = raw

    for _ in range(3):
        twins.grads()
        twins.each(odd_grads)
        for opt in twins.opts:
            opt.step()
        twins.same()


def test_parameters_in_the_other_byte_order():
    twins = Twins(dtype=np.dtype(np.float64).newbyteorder())
    twins.step(3)


def test_a_read_only_gradient_is_fine():
    twins = Twins()
    twins.step(2)
    twins.grads()
    twins.each(lambda opt, params: params[1].grad.setflags(write=False))
    for opt in twins.opts:
        opt.step()
    twins.same()


def test_a_gradient_set_to_none_skips_its_parameter():
    twins = Twins()
    twins.step(2)
    twins.grads()
    twins.each(lambda opt, params: setattr(params[1], "grad", None))
    for opt in twins.opts:
        opt.step()
    twins.same()
    twins.step(2)


def test_zero_size_and_mixed_dtype_parameters():
    twins = Twins(shapes=((0,), (3,), (2, 0)))
    twins.step(3)
    mixed = Twins(groups=[([0, 1, 2], {})])
    mixed.each(lambda opt, params: None)
    mixed.step(2)


# -- bad changes: the same error as the full path, and nothing changed ----------------------------


def test_gradient_reallocated_with_another_shape():
    twins = Twins()
    twins.step(2)
    twins.grads()
    twins.each(lambda opt, params: setattr(params[1], "grad", np.ones((4, 2))))
    twins.fails_alike(ValueError, r"gradient of .* has shape \(4, 2\)")


def test_gradient_reshaped_in_place():
    twins = Twins()
    twins.step(2)
    twins.grads()
    twins.each(lambda opt, params: setattr(params[1].grad, "shape", (4, 2)))
    twins.fails_alike(ValueError, r"has shape \(4, 2\)")


def test_gradient_of_another_dtype_or_not_an_array():
    twins = Twins()
    twins.step(2)
    twins.grads()
    twins.each(lambda opt, params: setattr(params[0], "grad", params[0].grad.astype(np.float32)))
    twins.fails_alike(TypeError, "dtype float32")
    twins.each(lambda opt, params: setattr(params[0], "grad", [1.0, 2.0, 3.0]))
    twins.fails_alike(TypeError, "must be an array, got list")


def test_parameter_made_read_only_or_reshaped_in_place():
    twins = Twins()
    twins.step(2)
    twins.grads()
    twins.each(lambda opt, params: params[0].data.setflags(write=False))
    twins.fails_alike(ValueError, "read-only")
    twins.each(lambda opt, params: params[0].data.setflags(write=True))
    twins.step(1, new_grads=False)

    def reshape(opt, params):
        params[1].data.shape = (8,)
        params[1].grad = params[1].grad.reshape(8)

    twins.each(reshape)
    twins.fails_alike(ValueError, r"exp_avg of .* has shape \(2, 4\)")


def test_state_arrays_replaced_or_edited():
    twins = Twins()
    twins.step(2)
    twins.each(lambda opt, params: opt.state[params[0]].__setitem__("exp_avg", np.full(3, 0.25)))
    twins.step(2)
    twins.each(lambda opt, params: setattr(opt.state[params[1]]["exp_avg_sq"], "shape", (8,)))
    twins.fails_alike(ValueError, r"exp_avg_sq of .* has shape \(8,\)")
    twins.each(lambda opt, params: setattr(opt.state[params[1]]["exp_avg_sq"], "shape", (2, 4)))
    twins.each(lambda opt, params: opt.state[params[1]]["exp_avg"].setflags(write=False))
    twins.fails_alike(ValueError, "exp_avg of .* read-only")
    twins.each(lambda opt, params: opt.state[params[1]]["exp_avg"].setflags(write=True))
    twins.step(2)
    twins.each(lambda opt, params: opt.state[params[0]].__setitem__("step", np.float64(40)))
    twins.step(2)


def test_state_dicts_edited_in_any_way_between_steps():
    """A repeated step finds each state's m and v again only where its dict changed
    (CPython's version tag of the dict): every kind of edit is seen, even one that puts
    the same objects back or goes past dict's own methods."""
    twins = Twins()
    twins.step(3)
    edits = [
        lambda opt, params: opt.state[params[0]].update(exp_avg=np.full(3, 0.5)),
        lambda opt, params: dict.__setitem__(
            opt.state[params[1]], "exp_avg_sq", np.full((2, 4), 0.125)
        ),
        lambda opt, params: opt.state[params[2]].__setitem__(
            "exp_avg", opt.state[params[2]].pop("exp_avg")
        ),
        lambda opt, params: opt.state.__setitem__(params[0], dict(opt.state[params[0]])),
        lambda opt, params: opt.state.__delitem__(params[1]),  # its state starts again
        # an equal number, another object: as if loaded
        lambda opt, params: opt.state[params[1]].__setitem__(
            "mu_product", opt.state[params[1]]["mu_product"] * 1.0
        ),
    ]
    for edit in edits:
        twins.grads()
        twins.each(edit)
        for opt in twins.opts:
            opt.step()
        twins.same()
        twins.step(2)


class _CountingState(dict):
    """A state dict that counts the entries set through it."""

    def __init__(self, *args):
        super().__init__(*args)
        self.set = []

    def __setitem__(self, key, value):
        self.set.append(key)
        super().__setitem__(key, value)


def test_a_state_dict_subclass_gets_its_entries_through_its_own_setitem():
    """A repeated step stores the new step and ∏μ in exact dicts from compiled code;
    a state of a dict subclass gets them through its own __setitem__, as in a full step."""
    twins = Twins()
    twins.step(3)
    twins.each(
        lambda opt, params: opt.state.__setitem__(params[1], _CountingState(opt.state[params[1]]))
    )
    twins.step(4)
    counts = [opt.state[params[1]].set for opt, params in zip(twins.opts, twins.params)]
    assert counts[0] == counts[1] == ["step", "mu_product"] * 4


def test_a_repeated_step_holds_its_arrays_only_while_it_runs():
    """A step that found θ and g in compiled code holds them until its update, and
    lets go after it, or when a later group's check fails: no reference is left over."""
    import sys

    twins = Twins(groups=[([0, 1], {}), ([2], {"lr": 0.1})])
    twins.step(4)
    ours = twins.params[0]
    before = [sys.getrefcount(a) for p in ours for a in (p.data, p.grad)]
    for _ in range(3):
        twins.opts[0].step()
    assert [sys.getrefcount(a) for p in ours for a in (p.data, p.grad)] == before
    twins.each(lambda opt, params: setattr(params[2], "grad", np.ones(5)))  # group 1: bad
    twins.fails_alike(ValueError, r"gradient of param_groups\[1\]")
    assert [sys.getrefcount(a) for p in ours for a in (p.data, p.grad)] == before


def test_the_gradients_of_a_past_step_are_not_kept_alive():
    """Once a step's update has run, nothing of the optimizer holds that step's
    gradient arrays (a training loop gives new ones each step)."""
    import gc
    import weakref

    twins = Twins()
    twins.step(2)  # the second is the first repeat: read through Python, then remembered
    gone = [weakref.ref(p.grad) for p in twins.params[0]]
    twins.step(3)
    gc.collect()
    assert [ref() for ref in gone] == [None] * len(gone)


def test_a_gradient_deleted_from_its_parameter():
    twins = Twins()
    twins.step(3)
    twins.each(lambda opt, params: delattr(params[1], "grad"))
    twins.fails_alike(AttributeError, "grad")


class _Tagged(Parameter):
    """A Parameter subclass that only adds an attribute."""

    def __init__(self, data, grad=None):
        super().__init__(data, grad)
        self.tag = "mine"


class _Shadowed(Parameter):
    """A Parameter subclass whose data is a property over another attribute: what the
    step must read is the property's value, not the slot's."""

    def __init__(self, data, grad=None):
        super().__init__(data, grad)  # data set through the property below
        Parameter.data.__set__(self, np.zeros_like(data))  # and the slot another array

    @property
    def data(self):
        return self._mine

    @data.setter
    def data(self, value):
        self._mine = value


@pytest.mark.parametrize("parameter", [_Tagged, _Shadowed])
def test_parameter_subclasses(monkeypatch, parameter):
    twins = Twins(parameter=parameter)
    planned = _count_plans(monkeypatch)
    twins.step(5)
    assert len(planned) == 5 + 1  # repeated, reading the attributes through Python
    twins.each(lambda opt, params: setattr(params[0], "data", np.full(3, 2.0)))
    twins.step(2)


def test_a_repeated_step_skips_the_full_checks(monkeypatch):
    """Steps over the inputs the last one checked do not plan them again (and a
    change makes the next step a full one)."""
    twins = Twins()
    planned = _count_plans(monkeypatch)
    twins.step(3)
    assert len(planned) == 3 + 1  # the NumPy twin plans every step, the Numba one the first
    twins.each(lambda opt, params: opt.param_groups[0].__setitem__("eps", 1e-3))
    twins.step(2)
    assert len(planned) == 4 + 2 + 1  # and the first after the edit


def test_a_bad_parameter_in_a_later_group_leaves_the_earlier_groups_alone():
    twins = Twins(groups=[([0, 1], {}), ([2], {"lr": 0.1})])
    twins.step(2)
    twins.grads()
    twins.each(lambda opt, params: setattr(params[2], "grad", np.ones(2)))
    twins.fails_alike(ValueError, r"gradient of param_groups\[1\]")


# -- group options, groups and loaded state -----------------------------------------------------


def test_group_options_edited_between_steps():
    twins = Twins(groups=[([0, 1], {}), ([2], {"lr": 0.1})])
    twins.step(2)
    edits = [
        ("lr", 0.05),
        ("lr", np.float32(0.05)),  # equal to no float64 value above: its own bits
        ("betas", (0.8, 0.99)),
        ("eps", 1e-3),
        ("weight_decay", 0.1),
        ("decoupled_weight_decay", True),
        ("momentum_decay", 0.5),
        ("maximize", True),
    ]
    for key, value in edits:
        twins.each(
            lambda opt, params, key=key, value=value: opt.param_groups[0].__setitem__(key, value)
        )
        twins.step(2)


def test_betas_as_a_list_edited_in_place():
    twins = Twins()
    twins.each(lambda opt, params: opt.param_groups[0].__setitem__("betas", [0.9, 0.999]))
    twins.step(2)
    twins.each(lambda opt, params: opt.param_groups[0]["betas"].__setitem__(1, 0.5))
    twins.step(2)
    twins.each(lambda opt, params: opt.param_groups[0]["betas"].__setitem__(0, 1.5))
    twins.fails_alike(ValueError, "Invalid beta parameter at index 0")


@pytest.mark.parametrize(
    "key, value, error, match",
    [
        ("lr", -1.0, ValueError, "Invalid learning rate"),
        ("lr", True, ValueError, "lr must be a real number"),
        ("lr", float("nan"), ValueError, "Invalid learning rate"),
        ("eps", "1e-8", ValueError, "eps must be a real number"),
        ("betas", (0.9,), ValueError, "betas must be a pair"),
        ("capturable", True, ValueError, "capturable=True is not supported"),
        ("differentiable", True, ValueError, "differentiable=True is not supported"),
        ("foreach", "yes", ValueError, "foreach must be None, True or False"),
    ],
)
def test_invalid_group_option_set_between_steps(key, value, error, match):
    twins = Twins()
    twins.step(2)
    twins.grads()
    twins.each(lambda opt, params: opt.param_groups[0].__setitem__(key, value))
    twins.fails_alike(error, match)


def test_group_added_and_parameter_appended_between_steps():
    twins = Twins()
    twins.step(2)
    extra = RNG.standard_normal((3, 2))
    more = RNG.standard_normal(5)

    def add(opt, params):
        params.append(Parameter(extra.copy()))
        opt.add_param_group({"params": [params[-1]], "lr": 0.02})

    def append(opt, params):
        params.append(Parameter(more.copy()))
        opt.param_groups[0]["params"].append(params[-1])

    twins.each(add)
    twins.thetas.append(extra)
    twins.step(2)
    twins.each(append)
    twins.thetas.append(more)
    twins.step(2)


def test_loaded_state_is_used_by_the_next_step():
    twins = Twins()
    twins.step(3)
    saved = twins.opts[1].state_dict()
    twins.step(2)
    twins.each(lambda opt, params: opt.load_state_dict(saved))
    twins.step(3)


def test_check_finite_switched_on_between_steps():
    twins = Twins()
    twins.step(2)
    twins.each(lambda opt, params: setattr(opt, "check_finite", True))
    twins.grads()
    twins.each(lambda opt, params: params[1].grad.__setitem__((1, 2), np.nan))
    twins.fails_alike(NonFiniteError, r"gradient of .* is not finite at index \(1, 2\)")


@pytest.mark.parametrize("profile", [None, "keras3", "paddle"])
def test_a_learning_rate_schedule_repeats_with_each_lr(monkeypatch, profile):
    """lr set before every step (torch's schedulers do so) keeps the step a
    repeated one, with that lr: the reference's bits; a bad lr fails alike."""
    twins = Twins(dtype=np.float32, profile=profile)
    planned = _count_plans(monkeypatch)
    for k in range(8):
        twins.each(lambda opt, params, k=k: opt.param_groups[0].__setitem__("lr", 0.1 * 0.5**k))
        twins.step()
    assert len(planned) == 8 + 1  # the NumPy twin plans every step, the Numba one the first
    twins.grads()
    twins.each(lambda opt, params: opt.param_groups[0].__setitem__("lr", -0.5))
    twins.fails_alike(ValueError, "Invalid learning rate")


def test_lr_edit_between_steps_matches_a_hand_derived_second_step():
    """θ_2 after θ_1 with lr γ1 and then γ2, from the algorithm box by hand (float64)."""
    theta0, g1, g2 = 0.75, 0.5, -0.25
    b1, b2, eps, psi, lr1, lr2 = 0.9, 0.999, 1e-8, 4e-3, 0.01, 0.03
    x = np.array([theta0])
    p = Parameter(x)
    opt = NAdam([p], lr=lr1)
    mu = [b1 * (1 - 0.5 * 0.96 ** (t * psi)) for t in (1, 2, 3)]
    theta, m, v, prod = theta0, 0.0, 0.0, 1.0
    for t, (g, lr) in enumerate(((g1, lr1), (g2, lr2)), start=1):
        p.grad = np.array([g])
        opt.param_groups[0]["lr"] = lr
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        prod *= mu[t - 1]
        m_hat = mu[t] * m / (1 - prod * mu[t]) + (1 - mu[t - 1]) * g / (1 - prod)
        theta -= lr * m_hat / (np.sqrt(v / (1 - b2**t)) + eps)
        assert x[0] == pytest.approx(theta, rel=1e-14)


# -- the compiled schedule -----------------------------------------------------------------------
#
# A repeated step computes its schedule in compiled code (nadam_ref.backend_numba, the same
# functions of nadam_ref.schedule compiled by Numba); the full path computes it in Python with
# NumPy scalars.  Every profile's rules, with each option the profile allows, must give the
# reference's bits, also far into a run (large t: the powers 0.96^(tψ) and β2^t).

_PROFILE_OPTIONS = (
    {},
    {"weight_decay": 0.25},
    {"weight_decay": 0.25, "decoupled_weight_decay": True},
    {"maximize": True},
    {"lr": 0.5, "betas": (0.5, 0.75), "eps": 1e-3},
)


# Small batches take one compiled call on one thread (schedule and update); batches of
# backend_numba.PARALLEL_THRESHOLD elements or more spread the update over the cores.
_BATCHES = {"small": ((3,), (2, 4), ()), "over the cores": ((300, 250), (7,))}


@pytest.mark.parametrize("batch", _BATCHES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("profile", [None, *profiles.PROFILES])
def test_every_profile_repeated_gives_the_reference_bits(profile, dtype, batch):
    from nadam_ref import backend_numba_repeat

    shapes = _BATCHES[batch]
    total = sum(int(np.prod(s)) for s in shapes)
    assert (total >= backend_numba_repeat.PARALLEL_THRESHOLD) == (batch == "over the cores")
    ran = 0
    for options in _PROFILE_OPTIONS:
        try:
            twins = Twins(shapes=shapes, dtype=dtype, profile=profile, **options)
        except ValueError:  # an option this profile's framework lacks
            continue
        twins.step(6)
        state = twins.opts[1].state_dict()
        for entry in state["state"].values():  # far into a run, as a loaded state
            entry["step"] = entry["step"] * 0 + 123_456
            entry["mu_product"] = entry["mu_product"] * 0 + 1e-30
        twins.each(lambda opt, params, state=state: opt.load_state_dict(state))
        twins.step(4)
        ran += 1
    assert ran >= 2


# -- minimize's repeated step (NAdam._repeater) ----------------------------------------------------


def test_the_repeater_takes_the_steps_step_would_and_refuses_what_it_cannot_read():
    """``again(grad)`` steps as step() does, and refuses (changing nothing) a gradient
    it cannot take as it is; step() then gives the reference's bits or its error."""
    twins = Twins(shapes=((5,),))
    twins.step(2)
    ours, ref = twins.opts
    again = ours._repeater()
    assert again is not None
    p, q = twins.params[0][0], twins.params[1][0]
    for _ in range(3):
        g = _random((5,), np.float64)
        assert again(g.copy())
        q.grad = g.copy()
        ref.step()
        twins.same()
    refused = (
        _random((10,), np.float64)[::2],  # strided
        _random((5,), np.float32),  # another dtype
        _random((1, 5), np.float64),  # another shape
        list(_random((5,), np.float64)),  # not an array
    )
    for g in refused:
        before = _snapshot(ours, [p])
        assert not again(g)
        for a, b in zip(before, _snapshot(ours, [p])):
            _bits_equal(a, b)
        twins.each(lambda opt, params, g=g: setattr(params[0], "grad", g))
        if isinstance(g, np.ndarray) and g.shape == (5,) and g.dtype == np.float64:
            twins.step(new_grads=False)  # the full path takes a strided gradient
        else:
            twins.fails_alike((TypeError, ValueError), "gradient of")


# -- the Keras-style front end ---------------------------------------------------------------------


class KerasTwins:
    """nadam_ref.keras.Nadam on Numba and on the NumPy reference, fed the same
    gradients and edits; ``step`` passes ``grads_and_vars`` as a zip, as Keras code does."""

    def __init__(self, shapes=((3,), (2, 4)), dtype=np.float32, **options):
        self.values = _arrays(shapes, dtype)
        self.vars = [[v.copy() for v in self.values] for _ in range(2)]
        self.opts = [keras.Nadam(backend=b, **options) for b in ("numba", "numpy")]

    def step(self, steps=1, grads=None):
        for _ in range(steps):
            values = grads or [_random(v.shape, v.dtype) for v in self.values]
            for opt, variables in zip(self.opts, self.vars):
                opt.apply_gradients(zip([g.copy() for g in values], variables))
            self.same()

    def same(self):
        for a, b in zip(*self.vars):
            _bits_equal(a, b)
        ours, ref = (opt.get_weights() for opt in self.opts)
        assert len(ours) == len(ref)
        for a, b in zip(ours, ref):
            _bits_equal(a, b)

    def fails_alike(self, pairs_of, error, match):
        messages = []
        for opt, variables in zip(self.opts, self.vars):
            before = [w.copy() for w in opt.get_weights()] + [v.copy() for v in variables]
            with pytest.raises(error, match=match) as caught:
                opt.apply_gradients(pairs_of(variables))
            messages.append(str(caught.value))
            after = [w.copy() for w in opt.get_weights()] + [v.copy() for v in variables]
            for a, b in zip(before, after):
                _bits_equal(a, b)
        assert messages[0] == messages[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "options",
    [{"schedule": "legacy"}, {"schedule": "keras3"}, {"schedule": "keras3", "weight_decay": 0.1}],
)
def test_keras_repeated_steps_give_the_reference_bits(options, dtype):
    twins = KerasTwins(dtype=dtype, **options)
    twins.step(5)
    # far into a run, as loaded weights
    for opt in twins.opts:
        weights = opt.get_weights()
        weights[0] = 123_456
        opt.set_weights(weights)
    twins.step(3)


def test_keras_a_repeated_step_skips_the_full_checks(monkeypatch):
    twins = KerasTwins()
    planned = _count_plans(monkeypatch)
    twins.step(3)
    assert len(planned) == 3 + 1  # the NumPy twin plans every step, the Numba one the first
    for opt in twins.opts:
        opt.epsilon = 1e-3
    twins.step(2)
    assert len(planned) == 4 + 2 + 1  # and the first after the edit


def test_keras_a_scheduled_learning_rate_steps_with_each_value(monkeypatch):
    twins = KerasTwins(learning_rate=lambda step: 1e-2 / (1 + step), schedule="keras3")
    planned = _count_plans(monkeypatch)
    twins.step(6)
    assert len(planned) == 6 + 1  # a new lr each step, and still the repeated step
    for opt in twins.opts:
        opt.learning_rate = 0.5  # set between steps: a number again
    twins.step(2)


def test_keras_what_changes_between_steps_takes_the_full_path():
    twins = KerasTwins(dtype=np.float64)
    twins.step(2)
    # a gradient of another dtype, shape, or not an array: the same error, nothing changed
    for bad, error in (
        (lambda v: _random(v.shape, np.float32), TypeError),
        (lambda v: _random((7,), np.float64), ValueError),
        (lambda v: "x", TypeError),
    ):
        twins.fails_alike(
            lambda variables, bad=bad: [(bad(v), v) for v in variables], error, "grads_and_vars"
        )
    twins.step(1)
    # a strided gradient, a read-only one: the full path takes them, with the same bits
    base = [_random((2 * v.size,), v.dtype) for v in twins.values]
    for opt, variables in zip(twins.opts, twins.vars):
        opt.apply_gradients([(b[::2].reshape(v.shape), v) for b, v in zip(base, variables)])
    twins.same()
    # a None gradient, then fewer variables, then a new variable
    for opt, variables in zip(twins.opts, twins.vars):
        opt.apply_gradients([(None, variables[0]), (np.ones_like(variables[1]), variables[1])])
    twins.same()
    for opt, variables in zip(twins.opts, twins.vars):
        opt.apply_gradients([(np.ones_like(variables[1]), variables[1])])
    twins.same()
    twins.values.append(_random((4,), np.float64))
    for variables in twins.vars:
        variables.append(twins.values[-1].copy())
    twins.step(2)
    # a hyperparameter set, weights loaded, a variable made read-only
    for opt in twins.opts:
        opt.beta_1 = 0.5
    twins.step(2)
    for opt in twins.opts:
        weights = opt.get_weights()
        weights[1] = np.float32(0.25) if weights[1].dtype == np.float32 else 0.25
        opt.set_weights(weights)
    twins.step(2)
    for variables in twins.vars:
        variables[0].flags.writeable = False
    twins.fails_alike(
        lambda variables: [(np.ones_like(v), v) for v in variables], ValueError, "read-only"
    )


def test_repeated_steps_call_compiled_code_past_numba_s_dispatcher():
    """The figures of benchmarks/bench_overhead.py need the repeated step's two compiled
    calls to skip the dispatcher's typing of their arguments (backend_numba_repeat._Direct), and
    the arrays' ids read from their list in compiled code:
    this Numba must still offer the compiled code of a signature (else every call goes
    through the dispatcher, correct but some 3 µs slower); and the direct call must
    give what the dispatcher gives."""
    from nadam_ref import backend_numba_repeat

    twins = Twins(shapes=((4,),))
    twins.step(3)
    kept = next(iter(twins.opts[0]._repeats.values()))
    assert kept.batch.update.entry is not None
    # and the arrays' ids are read from the lists that hold them, in compiled code
    assert (
        backend_numba_repeat._ROWS_READABLE
        and backend_numba_repeat._read_rows_table.entry is not None
    )
    p = twins.params[0][0]
    state = twins.opts[0].state[p]
    arrays = [p.data, p.grad, state["exp_avg"], state["exp_avg_sq"]]
    addresses = np.array([id(a) for a in arrays], np.int64)
    table = (backend_numba_repeat._NDARRAY, id(kept.batch.dtype), 8, *kept.batch.arrays[:2])
    listed = backend_numba_repeat._read_list_table(id(arrays), backend_numba_repeat._LIST, *table)
    assert listed == backend_numba_repeat._read_dense(addresses, *table) == 4
    scalars = (state["step"], state["mu_product"])
    assert kept.batch.read_rows([(p.data, p.grad)], [(*arrays[2:], *scalars)], scalars)
    assert kept.batch.total == 4 and list(kept.batch.arrays[1][0]) == [
        a.__array_interface__["data"][0] for a in arrays
    ]
    # a row whose step is another object, even an equal one, is not read
    other = (np.float64(float(scalars[0])), scalars[1])
    assert not kept.batch.read_rows([(p.data, p.grad)], [(*arrays[2:], *other)], scalars)


def test_after_its_first_repeat_a_step_reads_the_parameters_slots_and_kept_states(monkeypatch):
    """The rows of the states are read through Python at the first repeated step only;
    the next steps read each Parameter's data and grad from its slots and check each
    state dict's version tag, in compiled code (what benchmarks/bench_overhead.py's
    figures for many tensors need: both layouts must read as this CPython lays them out)."""
    from nadam_ref import backend_numba_repeat

    assert backend_numba_repeat._KEPT_READABLE and backend_numba_repeat._slots_readable(Parameter)
    assert backend_numba_repeat._SETITEM is not None  # the new step and ∏μ stored in compiled code
    assert backend_numba_repeat._REFERENCES is not None  # θ and g held until the update
    rows = []
    read_rows = backend_numba_repeat.DenseBatch.read_rows
    monkeypatch.setattr(
        backend_numba_repeat.DenseBatch, "read_rows", lambda *a: rows.append(1) or read_rows(*a)
    )
    twins = Twins()
    twins.step(6)
    assert len(rows) == 1 and backend_numba_repeat._read_kept_table.entry is not None
    twins.each(lambda opt, params: opt.state[params[0]].__setitem__("exp_avg", np.zeros(3)))
    twins.step(3)
    assert len(rows) == 2  # the edited state is seen, read again once, then kept


def test_without_reading_the_list_the_ids_are_gathered_in_python(monkeypatch):
    """Where the list object's layout is not the one read (another interpreter build),
    the repeated step gathers the arrays' ids in Python: the same bits and refusals."""
    from nadam_ref import backend_numba_repeat

    monkeypatch.setattr(backend_numba_repeat, "_LIST_READABLE", False)
    monkeypatch.setattr(backend_numba_repeat, "_ROWS_READABLE", False)
    twins = Twins()
    planned = _count_plans(monkeypatch)
    twins.step(3)
    assert len(planned) == 3 + 1  # repeated from Python's reading too
    twins.grads()
    twins.each(lambda opt, params: setattr(params[1], "grad", params[1].grad.T.copy().T))
    twins.step(new_grads=False)  # a Fortran-ordered gradient: refused, the full path takes it
    twins.step(2)
    # a state's step replaced by an equal number: not the object stored, so a full step
    twins.each(
        lambda opt, params: opt.state[params[2]].__setitem__(
            "step", type(opt.state[params[2]]["step"])(float(opt.state[params[2]]["step"]))
        )
    )
    before = len(planned)
    twins.step()
    assert len(planned) == before + 2
