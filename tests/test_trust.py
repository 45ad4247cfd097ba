"""Trust under bad input, faults and long runs (issue 9).

* non-finite gradients propagate exactly as in torch by default, and
  ``check_finite=True`` refuses them before anything changes;
* a step or a ``load_state_dict`` that raises leaves parameters and state
  bit-identical, on every backend that imports;
* invalid hyperparameters always raise ValueError (hypothesis);
* 10^6 steps in float32 and float64 stay finite while ∏μ, β2^t and 0.96^(tψ)
  underflow to 0 harmlessly.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nadam_ref import NAdam, Parameter, functional
from nadam_ref.functional import BACKENDS, NonFiniteError
from nadam_ref.schedule import FLAGS, Coefficients, StepScalars, advance, coefficients

# -- backends --------------------------------------------------------------------------------


def _backend_params():
    out = []
    for name in BACKENDS:
        try:
            functional.get_backend(name)
        except Exception as e:  # a backend still being written, or no GPU/simulator
            out.append(
                pytest.param(
                    name, marks=pytest.mark.skip(reason=f"backend {name!r} does not import: {e!r}")
                )
            )
        else:
            out.append(name)
    return out


BACKEND_PARAMS = _backend_params()


def on_backend(name: str, host: np.ndarray):
    """A copy of ``host`` as an array the backend updates in place."""
    module = functional.get_backend(name)
    if module.is_array(host):
        return host.copy()
    if hasattr(module, "from_host"):
        return module.from_host(host, module.zeros_like(host))
    pytest.skip(f"backend {name!r} offers no way to put a host array on it")


def to_host(name: str, array) -> np.ndarray:
    return np.array(getattr(functional.get_backend(name), "to_host", np.asarray)(array))


def bits(a) -> tuple:
    a = np.asarray(a)
    return a.dtype.str, a.shape, a.tobytes()


def snapshot(opt: NAdam) -> dict:
    """Every bit of an optimizer's parameters, state and options."""
    params = [p for g in opt.param_groups for p in g["params"]]
    return {
        "params": [bits(to_host(opt.backend, p.data)) for p in params],
        "state": {
            params.index(p): {
                k: bits(
                    to_host(opt.backend, v) if k in ("exp_avg", "exp_avg_sq") else np.asarray(v)
                )
                for k, v in s.items()
            }
            for p, s in opt.state.items()
        },
        "groups": [
            (
                copy.deepcopy({k: v for k, v in g.items() if k != "params"}),
                [id(p) for p in g["params"]],
            )
            for g in opt.param_groups
        ],
    }


def make_problem(backend: str, seed: int = 0, **options):
    """Two groups, three parameters (float32 and float64), two steps taken; a
    fourth parameter has never had a gradient, so it has no state yet."""
    rng = np.random.default_rng(seed)
    hosts = [
        rng.standard_normal((3, 4)).astype(np.float32),
        rng.standard_normal(5),
        rng.standard_normal((2, 2)).astype(np.float32),
        rng.standard_normal(3),
    ]
    params = [Parameter(on_backend(backend, h)) for h in hosts]
    opt = NAdam(
        [{"params": params[:2]}, {"params": params[2:], "lr": 1e-2, "weight_decay": 0.1}],
        backend=backend,
        **options,
    )
    grads = lambda: [rng.standard_normal(h.shape).astype(h.dtype) for h in hosts]  # noqa: E731
    for _ in range(2):
        for p, g in zip(params[:3], grads()):
            p.grad = on_backend(backend, g)
        opt.step()
    for p, g in zip(params, grads()):
        p.grad = on_backend(backend, g)
    return opt, params


# -- non-finite values ----------------------------------------------------------------------


def test_check_finite_names_parameter_and_first_bad_index():
    opt, params = make_problem("numpy", check_finite=True)
    before = snapshot(opt)
    bad = params[2].grad
    bad[1, 1] = np.inf
    bad[1, 0] = np.nan  # first in C order: (1, 0)
    with pytest.raises(
        NonFiniteError, match=r"gradient of param_groups\[1\]\['params'\]\[0\].*index \(1, 0\): nan"
    ):
        opt.step()
    assert snapshot(opt) == before
    assert isinstance(NonFiniteError("x"), ValueError)


@pytest.mark.parametrize("where", ["param", "exp_avg", "exp_avg_sq"])
def test_check_finite_covers_parameters_and_state(where):
    opt, params = make_problem("numpy", check_finite=True)
    target = params[1]
    array = target.data if where == "param" else opt.state[target][where]
    array[3] = -np.inf
    before = snapshot(opt)
    name = r"param_groups\[0\]\['params'\]\[1\]"
    prefix = "" if where == "param" else f"{where} of "
    with pytest.raises(NonFiniteError, match=rf"^{prefix}{name}.*index \(3,\): -inf"):
        opt.step()
    assert snapshot(opt) == before


def test_check_finite_in_functional_core_complex():
    """Complex arrays are checked as they are: the index is the complex index."""
    p = np.zeros((2, 3), np.complex64)
    g = np.ones((2, 3), np.complex64)
    g[0, 2] = complex(1, np.nan)
    m, v = np.zeros_like(p), np.zeros_like(p)
    with pytest.raises(NonFiniteError, match=r"gradient of w is not finite at index \(0, 2\)"):
        functional.nadam(
            [p],
            [g],
            [m],
            [v],
            [0.0],
            [1.0],
            lr=1e-3,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            names=["w"],
            check_finite=True,
        )
    assert not p.any() and not m.any() and not v.any()


def test_check_finite_is_off_by_default_and_stored():
    opt, params = make_problem("numpy")
    assert opt.check_finite is False
    params[0].grad[0, 0] = np.nan
    opt.step()
    assert (
        np.isnan(params[0].data[0, 0]) and np.isfinite(np.delete(params[0].data.ravel(), 0)).all()
    )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf/inf and inf−inf are the point here
def test_non_finite_gradients_propagate_as_in_torch():
    """NaN, +inf and -inf at different steps and elements: θ and v follow
    torch.optim.NAdam (float32, step and ∏μ stored in float32 as torch does)
    value for value, with NaN and ±inf in the same places.  m is non-finite in
    the same places too, with one known difference: torch updates m with
    ``lerp`` (m + (1−β1)(g − m)), which turns an infinite m into NaN at the next
    finite gradient (∞ − ∞), while nadam_ref's β1·m + (1−β1)·g keeps it ±∞.
    θ is NaN in both from the step at which m became infinite, so the
    trajectories agree."""
    torch = pytest.importorskip("torch", reason="torch is needed to compare NaN propagation")
    rng = np.random.default_rng(1)
    theta0 = rng.standard_normal(8).astype(np.float32)
    grads = rng.standard_normal((12, 8)).astype(np.float32)
    grads[2, 0] = np.nan
    grads[3, 1] = np.inf
    grads[4, 2] = -np.inf
    grads[5, 3] = np.inf
    grads[5, 4] = -np.inf
    grads[7, 5] = np.nan
    for options in (
        {},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
    ):
        t = torch.nn.Parameter(torch.from_numpy(theta0.copy()))
        topt = torch.optim.NAdam([t], lr=1e-2, foreach=False, **options)
        p = Parameter(theta0.copy())
        opt = NAdam([p], lr=1e-2, scalar_dtype=np.float32, **options)
        for g in grads:
            t.grad = torch.from_numpy(g.copy())
            topt.step()
            p.grad = g.copy()
            opt.step()
            ts = topt.state[t]
            m, tm = opt.state[p]["exp_avg"], ts["exp_avg"].numpy()
            np.testing.assert_array_equal(np.isfinite(m), np.isfinite(tm))
            lerp_nan = np.isinf(m) & np.isnan(tm)
            assert np.isnan(p.data[lerp_nan]).all()
            for ours, theirs in (
                (p.data, t.detach().numpy()),
                (np.where(lerp_nan, np.nan, m), tm),
                (opt.state[p]["exp_avg_sq"], ts["exp_avg_sq"].numpy()),
            ):
                np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
                np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(theirs))
                np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs))
                np.testing.assert_allclose(ours, theirs, rtol=2e-6, atol=1e-7, equal_nan=True)
        # the non-finite values really were reached (the test is not vacuous)
        assert np.isnan(p.data[[0, 1, 2, 3, 4, 5]]).all() and np.isfinite(p.data[[6, 7]]).all()


# -- atomic steps ---------------------------------------------------------------------------


def _wrong_shape(opt, params):
    params[3].grad = on_backend(opt.backend, np.zeros(4))


def _wrong_dtype(opt, params):
    params[3].grad = on_backend(opt.backend, np.zeros(3, np.float32))


def _not_an_array(opt, params):
    params[3].grad = [0.0, 0.0, 0.0]


def _bad_group_option(opt, params):
    opt.param_groups[1]["lr"] = -1.0


def _non_finite(opt, params):
    opt.check_finite = True
    g = to_host(opt.backend, params[3].grad)
    g[2] = np.nan
    params[3].grad = on_backend(opt.backend, g)


FAULTS = {
    "grad of wrong shape": (_wrong_shape, ValueError),
    "grad of wrong dtype": (_wrong_dtype, TypeError),
    "grad not an array": (_not_an_array, TypeError),
    "invalid group option": (_bad_group_option, ValueError),
    "non-finite grad with check_finite": (_non_finite, NonFiniteError),
}


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_failed_step_changes_nothing(backend, fault):
    """The fault is in the *last* parameter of the *last* group, after three
    parameters (one of them never stepped before) that would have been
    updated; none is, no state is created, and a twin optimizer that never
    saw the fault takes the same next step bit for bit."""
    opt, params = make_problem(backend)
    twin, twin_params = make_problem(backend)
    good = params[3].grad
    make_fault, error = FAULTS[fault]
    make_fault(opt, params)
    before = snapshot(opt)
    with pytest.raises(error):
        opt.step()
    assert snapshot(opt) == before
    # undo the fault and carry on: no trace of the failed step remains
    opt.check_finite = False
    opt.param_groups[1]["lr"] = twin.param_groups[1]["lr"]
    params[3].grad = good
    opt.step()
    twin.step()
    assert snapshot(opt)["params"] == snapshot(twin)["params"]
    assert snapshot(opt)["state"] == snapshot(twin)["state"]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_closure_that_raises_changes_nothing(backend):
    opt, params = make_problem(backend)
    before = snapshot(opt)

    def closure():
        params[0].grad = on_backend(backend, np.ones((3, 4), np.float32))
        raise RuntimeError("loss blew up")

    with pytest.raises(RuntimeError, match="loss blew up"):
        opt.step(closure)
    assert snapshot(opt) == before


def _mutations():
    """Ways to spoil a valid state_dict, each with the text its error names."""

    def state(sd):
        return sd["state"]

    return {
        "not a dict": (lambda sd: [sd], "state_dict"),
        "extra top-level key": (lambda sd: {**sd, "extra": 1}, "state_dict"),
        "one group missing": (
            lambda sd: {**sd, "param_groups": sd["param_groups"][:1]},
            "parameter groups",
        ),
        "group lacks lr": (lambda sd: _edit(sd, lambda s: s["param_groups"][1].pop("lr")), "lr"),
        "negative lr": (
            lambda sd: _edit(sd, lambda s: s["param_groups"][1].update(lr=-1.0)),
            "learning rate",
        ),
        "beta of 1": (
            lambda sd: _edit(sd, lambda s: s["param_groups"][0].update(betas=(0.9, 1.0))),
            "beta",
        ),
        "params not a list": (
            lambda sd: _edit(sd, lambda s: s["param_groups"][0].update(params=7)),
            "params",
        ),
        "params wrong length": (
            lambda sd: _edit(sd, lambda s: s["param_groups"][0].update(params=[0])),
            "parameters",
        ),
        "params repeated": (
            lambda sd: _edit(sd, lambda s: s["param_groups"][1].update(params=[0, 1])),
            "params",
        ),
        "unhashable index": (
            lambda sd: _edit(sd, lambda s: s["param_groups"][1].update(params=[[2], 3])),
            "params",
        ),
        "maximize not a bool": (
            lambda sd: _edit(sd, lambda s: s["param_groups"][0].update(maximize="no")),
            "maximize",
        ),
        "state for unknown parameter": (
            lambda sd: _edit(sd, lambda s: state(s).update({9: state(s)[0]})),
            "9",
        ),
        "state lacks exp_avg": (lambda sd: _edit(sd, lambda s: state(s)[2].pop("exp_avg")), "keys"),
        "exp_avg of wrong shape": (
            lambda sd: _edit(sd, lambda s: state(s)[2].update(exp_avg=np.zeros(3))),
            "shape",
        ),
        "complex exp_avg for a real parameter": (
            lambda sd: _edit(sd, lambda s: state(s)[1].update(exp_avg=np.zeros(5, complex))),
            "dtype",
        ),
        "exp_avg of strings": (
            lambda sd: _edit(sd, lambda s: state(s)[1].update(exp_avg=np.array(["a"] * 5))),
            "dtype",
        ),
        "negative step": (lambda sd: _edit(sd, lambda s: state(s)[0].update(step=-1.0)), "step"),
        "fractional step": (lambda sd: _edit(sd, lambda s: state(s)[0].update(step=1.5)), "step"),
        "step not a number": (lambda sd: _edit(sd, lambda s: state(s)[0].update(step="2")), "step"),
        "mu_product above 1": (
            lambda sd: _edit(sd, lambda s: state(s)[0].update(mu_product=1.5)),
            "mu_product",
        ),
        "mu_product NaN": (
            lambda sd: _edit(sd, lambda s: state(s)[0].update(mu_product=np.nan)),
            "mu_product",
        ),
    }


def _edit(sd, change):
    sd = copy.deepcopy(sd)
    change(sd)
    return sd


MUTATIONS = _mutations()


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_failed_load_state_dict_changes_nothing(backend, mutation):
    opt, params = make_problem(backend)
    donor, _ = make_problem(backend, seed=5)
    spoil, named = MUTATIONS[mutation]
    bad = spoil(donor.state_dict())
    before = snapshot(opt)
    with pytest.raises(ValueError, match=named):
        opt.load_state_dict(bad)
    assert snapshot(opt) == before


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.integers(0, 5), max_size=3),
    st.dictionaries(st.integers(0, 4), st.none(), max_size=2),
    st.sampled_from(
        [
            np.zeros(3),
            np.zeros((2, 2), np.float32),
            np.array([np.nan] * 5),
            np.array(["x"]),
            np.zeros(5, complex),
        ]
    ),
)


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + (k,), v
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield path + (i,), v
            yield from _leaves(v, path + (i,))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # a NaN state that loads then steps
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_load_state_dict_with_random_junk_is_all_or_nothing(data):
    """Replace or delete any entry of a valid state_dict with junk: either
    ValueError and nothing changed, or it loads and the next step runs."""
    opt, params = make_problem("numpy")
    donor, _ = make_problem("numpy", seed=5)
    sd = donor.state_dict()
    sd["param_groups"] = [dict(g) for g in sd["param_groups"]]
    paths = [p for p, _ in _leaves(sd)]
    path = data.draw(st.sampled_from(paths))
    container = sd
    for key in path[:-1]:
        container = container[key]
    if isinstance(container, tuple):
        return  # betas: replaced as a whole at its own path
    if data.draw(st.booleans(), label="delete") and isinstance(container, dict):
        del container[path[-1]]
    else:
        container[path[-1]] = data.draw(junk, label="junk")
    before = snapshot(opt)
    try:
        opt.load_state_dict(sd)
    except ValueError:
        assert snapshot(opt) == before
    else:
        opt.step()  # whatever loaded is usable


# -- invalid hyperparameters ----------------------------------------------------------------

not_real = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.booleans(),
    st.complex_numbers(allow_nan=False).filter(lambda z: z.imag != 0),
    st.lists(st.floats(), max_size=2),
)
negative = st.floats(max_value=0.0, exclude_max=True, allow_infinity=True)
invalid_beta = st.one_of(
    negative, st.floats(min_value=1.0, allow_infinity=True), st.just(math.nan), not_real
)

invalid_options = st.one_of(
    st.fixed_dictionaries({"lr": st.one_of(negative, st.just(math.nan), not_real)}),
    st.fixed_dictionaries({"eps": st.one_of(negative, st.just(math.nan), not_real)}),
    st.fixed_dictionaries({"weight_decay": st.one_of(negative, st.just(math.nan), not_real)}),
    st.fixed_dictionaries({"momentum_decay": st.one_of(negative, st.just(math.nan), not_real)}),
    st.fixed_dictionaries({"betas": st.tuples(invalid_beta, st.floats(0.0, 0.999))}),
    st.fixed_dictionaries({"betas": st.tuples(st.floats(0.0, 0.999), invalid_beta)}),
    st.fixed_dictionaries(
        {
            "betas": st.one_of(
                st.none(),
                st.floats(),
                st.tuples(st.floats(0, 0.5)),
                st.tuples(st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0, 0.5)),
            )
        }
    ),
)


@settings(max_examples=200, deadline=None)
@given(options=invalid_options)
def test_invalid_hyperparameters_always_raise_value_error(options):
    """Whatever is wrong (negative, NaN, β outside [0, 1), not a real number,
    not a pair), every entry point says ValueError and changes nothing."""
    w = np.ones(3)
    with pytest.raises(ValueError):
        NAdam([w], **options)
    opt = NAdam([w])
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [np.ones(2)], **options})
    assert len(opt.param_groups) == 1
    kwargs = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3)
    for key, value in options.items():
        if key == "betas":
            try:
                kwargs["beta1"], kwargs["beta2"] = value
            except (TypeError, ValueError):
                return  # not a pair: the functional core takes β1 and β2 separately
        else:
            kwargs[key] = value
    p, g = np.ones(3), np.ones(3)
    m, v = np.zeros(3), np.zeros(3)
    with pytest.raises(ValueError):
        functional.nadam([p], [g], [m], [v], [0.0], [1.0], **kwargs)
    assert (p == 1).all() and not m.any() and not v.any()


# -- long runs ------------------------------------------------------------------------------

LONG_STEPS = 10**6
CHUNK = 10**5
TARGET = (1.0, -3.0, 1e-3, 0.0, 2.0)
# per-element gradient scales: ordinary, huge (g² near float32's top), tiny
# (g² subnormal in float32, far below ε² in float64), ordinary, and exactly 0
SCALE = (1.0, 1e15, 1e-20, 1.0, 0.0)

LONG_CONFIGS = {
    # name: (parameter dtype, stored step/∏μ dtype, compute dtype, split_update)
    "float32, torch's scalars": (np.float32, np.float32, np.float64, True),
    "float64 reference": (np.float64, np.float64, np.float64, True),
}
HYPER = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3)


@pytest.fixture(scope="module")
def element_loop():
    """The element function itself, compiled with Numba and driven over a
    table of per-step coefficients (10^6 steps cost a Python loop ~60 s;
    this, well under a second)."""
    numba = pytest.importorskip(
        "numba", reason="the 10^6-step run compiles the element update with Numba"
    )
    from nadam_ref.element import nadam_element

    element = numba.njit(nadam_element)

    @numba.njit
    def run(theta, m, v, target, scale, c, split):
        finite = True
        for k in range(c[0].shape[0]):
            g = (theta - target) * scale
            theta, m, v = element(
                theta,
                g,
                m,
                v,
                c[0][k],
                c[1][k],
                c[2][k],
                c[3][k],
                c[4][k],
                c[5][k],
                c[6][k],
                c[7][k],
                c[8][k],
                c[9][k],
                c[10][k],
                c[11][k],
                c[12][k],
                c[13][k],
                False,
                split,
                False,
            )
            for i in range(theta.shape[0]):
                finite &= np.isfinite(theta[i]) and np.isfinite(m[i]) and np.isfinite(v[i])
        return theta, m, v, finite

    return run


def _schedule_table(start: int, n: int, mu_product, sd, cd, dtype):
    """The schedule of steps start+1 … start+n as arrays: :func:`advance`
    called step by step (vectorising it over t would change the last bit of
    0.96^(tψ): NumPy's SIMD ``power`` rounds differently from the scalar one),
    then :func:`coefficients` on the arrays at once (only + − × ÷, exact either way)."""
    s = np.dtype(sd).type
    out = {k: [] for k in StepScalars._fields}
    step, product = s(start), s(mu_product)
    for _k in range(n):
        sc = advance(
            step,
            product,
            HYPER["beta1"],
            HYPER["beta2"],
            HYPER["momentum_decay"],
            compute_dtype=cd,
            state_dtype=sd,
        )
        for name, value in zip(StepScalars._fields, sc):
            out[name].append(value)
        step, product = sc.step, sc.mu_product
    scalars = StepScalars(
        *(
            np.array(out[name], dtype=sd if name in ("step", "mu_product") else cd)
            for name in StepScalars._fields
        )
    )
    coef = coefficients(
        scalars,
        lr=HYPER["lr"],
        beta1=HYPER["beta1"],
        beta2=HYPER["beta2"],
        eps=HYPER["eps"],
        compute_dtype=cd,
        dtype=dtype,
    )
    # every number of the coefficients, in their order (the three flags follow them)
    numbers = [c for name, c in zip(Coefficients._fields, coef) if name not in FLAGS]
    table = tuple(
        np.ascontiguousarray(np.broadcast_to(np.asarray(c, dtype), (n,))) for c in numbers
    )
    return scalars, coef, table


def _core_steps(theta, m, v, step, mu_product, n, sd, cd, split):
    """n steps through the real functional core, gradients from the same objective."""
    theta, m, v = theta.copy(), m.copy(), v.copy()
    steps, products = [step], [mu_product]
    target, scale = np.array(TARGET, theta.dtype), np.array(SCALE, theta.dtype)
    for _ in range(n):
        g = (theta - target) * scale
        steps, products = functional.nadam(
            [theta],
            [g],
            [m],
            [v],
            steps,
            products,
            **HYPER,
            scalar_dtype=sd,
            compute_dtype=cd,
            split_update=split,
        )
    return theta, m, v, steps[0], products[0]


@pytest.mark.parametrize("config", list(LONG_CONFIGS))
def test_million_steps_stay_finite_and_underflow_harmlessly(config, element_loop):
    """10^6 steps on five elements (ordinary, huge, tiny and zero gradients of
    a quadratic), driven by the Numba-compiled element function over the
    core's schedule; at the start, the end and around every underflow the real
    functional core takes the same 300 steps and must give the same bits."""
    dtype, sd, cd, split = LONG_CONFIGS[config]
    f, s_ = np.dtype(cd).type, np.dtype(sd).type
    target, scale = np.array(TARGET, dtype), np.array(SCALE, dtype)
    theta = np.array([0.5, 2.0, -1.0, 3.0, 2.0], dtype)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    mu_product = s_(1)
    window, first, windows = 300, {}, []  # first: the step at which each quantity reached its limit
    for start in range(0, LONG_STEPS, CHUNK):
        scalars, coef, table = _schedule_table(start, CHUNK, mu_product, sd, cd, dtype)
        t = scalars.step.astype(cd)
        for name, reached in (
            ("1 − ∏μ = 1", f(1) - scalars.mu_product.astype(cd) == 1),
            ("∏μ at its floor", scalars.mu_product <= 4 * np.finfo(sd).smallest_subnormal),
            ("1 − β2^t = 1", scalars.bias_correction2 == 1),
            ("β2^t = 0", f(HYPER["beta2"]) ** t == 0),
            ("μ_t = β1", scalars.mu == f(HYPER["beta1"])),
        ):
            if name not in first and reached.any():
                first[name] = start + 1 + int(np.argmax(reached))
        # windows checked against the real core: the first and last steps, and
        # around each limit reached in this chunk (disjoint, inside the chunk)
        starts = []
        for s in sorted({0, LONG_STEPS - window, *(t - window // 2 for t in first.values())}):
            if start <= s <= start + CHUNK - window and (not starts or s >= starts[-1] + window):
                starts.append(s)
        done = 0  # steps of this chunk taken
        for s in starts + [start + CHUNK]:
            if s > start + done:
                theta, m, v, finite = element_loop(
                    theta, m, v, target, scale, tuple(c[done : s - start] for c in table), split
                )
                assert finite, f"a non-finite value before step {s}"
                done = s - start
                mu_product = scalars.mu_product[done - 1]
            if s == start + CHUNK:
                break
            ours = _core_steps(theta, m, v, s_(s), mu_product, window, sd, cd, split)
            theta, m, v, finite = element_loop(
                theta, m, v, target, scale, tuple(c[done : done + window] for c in table), split
            )
            assert finite
            done += window
            mu_product = scalars.mu_product[done - 1]
            for a, b in zip(ours[:3], (theta, m, v)):
                assert bits(a) == bits(b), (
                    f"the functional core and the loop differ over steps {s}…{s + window}"
                )
            assert ours[3] == s + window and bits(ours[4]) == bits(mu_product)
            windows.append(s)
    assert len(windows) >= 5, windows

    # every limit was reached, where a hand estimate puts it.  ∏μ ≤ 0.9^t leaves
    # 1 − ∏μ = 1 by t = ln(ulp/4)/ln 0.9, and reaches the subnormals soon after;
    # there the product k·2^-p times μ_t rounds back to k ulps once k(1 − μ_t) < ½,
    # so it sticks at ≤ 4 ulps (float64: μ_t > ½ by then) or reaches 0 (float32: μ_t < ½ still)
    assert first["1 − ∏μ = 1"] <= math.log(float(np.finfo(cd).eps) / 4) / math.log(0.9) + 2
    tiny = math.log(float(np.finfo(sd).smallest_subnormal))
    assert (
        tiny / math.log(0.45) - 2 <= first["∏μ at its floor"] <= tiny / math.log(0.9) + 2
    )  # 0.45 ≤ μ_t ≤ 0.9
    assert scalars.mu_product[-1] == (0 if sd == np.float32 else np.finfo(sd).smallest_subnormal)
    log_beta2 = math.log(float(f(HYPER["beta2"])))
    t_half_ulp = (
        math.log(float(np.finfo(cd).eps) / 4) / log_beta2
    )  # 1 − β2^t rounds to 1 below half an ulp
    t_zero = (
        math.log(float(np.finfo(cd).smallest_subnormal)) - math.log(2)
    ) / log_beta2  # β2^t underflows
    assert abs(first["1 − β2^t = 1"] - t_half_ulp) <= 0.01 * t_half_ulp
    assert abs(first["β2^t = 0"] - t_zero) <= 0.01 * t_zero
    assert "μ_t = β1" in first
    # harmlessly: at the end the weights are exactly their limits μ_{t+1} = β1 and 1 − μ_t = 1 − β1
    assert scalars.step[-1] == LONG_STEPS and scalars.bias_correction2[-1] == 1
    assert coef.momentum_weight[-1] == dtype(f(HYPER["beta1"]))
    assert coef.grad_weight[-1] == dtype(f(1) - f(HYPER["beta1"]))
    # and the run converged where the objective says: θ = target for the ordinary elements
    ordinary = [0, 1, 3]
    np.testing.assert_allclose(theta[ordinary], target[ordinary], atol=10 * HYPER["lr"])
    assert theta[4] == dtype(2.0) and m[4] == 0 and v[4] == 0  # zero gradient: untouched
    assert (
        np.isfinite(theta).all()
        and np.isfinite(m).all()
        and np.isfinite(v).all()
        and (v >= 0).all()
    )


# -- the Keras-style front end --------------------------------------------------------------


def _keras_problem():
    keras_front = pytest.importorskip(
        "nadam_ref.keras", reason="the Keras-style front end is not there"
    )
    rng = np.random.default_rng(2)
    variables = [
        rng.standard_normal((2, 3)).astype(np.float32),
        rng.standard_normal(4),
        rng.standard_normal(3),
    ]
    opt = keras_front.Nadam(learning_rate=1e-2)
    opt.apply_gradients([(rng.standard_normal(v.shape).astype(v.dtype), v) for v in variables[:2]])
    grads = [rng.standard_normal(v.shape).astype(v.dtype) for v in variables]
    return opt, variables, grads


def _keras_snapshot(opt, variables):
    return [bits(v) for v in variables], [bits(w) for w in opt.get_weights()], opt.iterations


KERAS_FAULTS = {
    "gradient of wrong shape": lambda vs, gs: [
        (gs[0], vs[0]),
        (gs[1], vs[1]),
        (np.zeros(5), vs[2]),
    ],
    "gradient of wrong dtype": lambda vs, gs: [
        (gs[0], vs[0]),
        (gs[1], vs[1]),
        (gs[2].astype(np.float32), vs[2]),
    ],
    "gradient not an array": lambda vs, gs: [(gs[0], vs[0]), (gs[1], vs[1]), ("grad", vs[2])],
    "variable twice": lambda vs, gs: [(gs[0], vs[0]), (gs[1], vs[1]), (gs[1], vs[1])],
    "no gradient at all": lambda vs, gs: [(None, v) for v in vs],
    "not pairs": lambda vs, gs: [(gs[0], vs[0]), (gs[1], vs[1]), (gs[2],)],
}


@pytest.mark.parametrize("fault", list(KERAS_FAULTS))
def test_failed_apply_gradients_changes_nothing(fault):
    """The fault comes last, after two variables that would be updated and one
    (the third) that would get its first slots: nothing is updated or created."""
    opt, variables, grads = _keras_problem()
    before = _keras_snapshot(opt, variables)
    with pytest.raises((TypeError, ValueError)):
        opt.apply_gradients(KERAS_FAULTS[fault](variables, grads))
    assert _keras_snapshot(opt, variables) == before
    # and the next good step is the one a never-failed twin takes
    twin, twin_vars, twin_grads = _keras_problem()
    opt.apply_gradients(list(zip(grads, variables)))
    twin.apply_gradients(list(zip(twin_grads, twin_vars)))
    assert _keras_snapshot(opt, variables) == _keras_snapshot(twin, twin_vars)


# -- golden files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden_files():
    pytest.importorskip("nadam_ref.golden.format", reason="the golden file format is not there")
    import fuzz_loaders

    jsons, npzs = fuzz_loaders.golden_seeds()
    if not jsons:
        pytest.skip("no golden suite files to corrupt")
    return jsons, npzs


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_corrupted_golden_files_give_golden_format_error(golden_files, data):
    """Truncations, flipped bytes, insertions, splices, and JSON entries of any
    type replaced or deleted, in the JSON and the .npz form: either
    GoldenFormatError (a ValueError, one line, naming the field) or a case."""
    import fuzz_loaders

    from nadam_ref.golden.format import GoldenFormatError, loads

    jsons, npzs = golden_files
    form = data.draw(st.sampled_from(["json", "npz"]), label="form")
    seeds = jsons if form == "json" else npzs
    raw = data.draw(st.sampled_from(seeds), label="file")
    if data.draw(st.booleans(), label="structured"):
        edit = (
            fuzz_loaders.structured_golden_json
            if form == "json"
            else fuzz_loaders.structured_golden_npz
        )
        blob = edit(data, raw)
    else:
        blob = fuzz_loaders.mutate_bytes(data, raw, [s for s in seeds if s is not raw])
    try:
        with np.errstate(all="ignore"):
            loads(blob, source="corrupted")
    except GoldenFormatError as e:
        assert isinstance(e, ValueError) and "\n" not in str(e)


# -- every backend equals the NumPy reference -----------------------------------------------


@pytest.mark.filterwarnings(
    "ignore::RuntimeWarning"
)  # ε = 0 with a zero gradient gives 0/0, on purpose
@pytest.mark.parametrize(
    "backend", [b for b in BACKEND_PARAMS if getattr(b, "values", (b,))[0] != "numpy"]
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shapes=st.lists(st.sampled_from([(), (1,), (5,), (2, 3), (3, 1, 2)]), min_size=1, max_size=3),
    dtype=st.sampled_from([np.float32, np.float64, np.complex64]),
    steps=st.integers(1, 4),
    options=st.fixed_dictionaries(
        {
            "lr": st.sampled_from([0.0, 1e-3, 0.1]),
            "betas": st.tuples(
                st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.9, 0.999])
            ),
            "eps": st.sampled_from([0.0, 1e-8, 1.0]),
            "weight_decay": st.sampled_from([0.0, 0.01]),
            "momentum_decay": st.sampled_from([0.0, 4e-3, 1.0]),
            "decoupled_weight_decay": st.booleans(),
            "maximize": st.booleans(),
            "scalar_dtype": st.sampled_from([np.float32, np.float64]),
        }
    ),
    scale=st.sampled_from([1e-30, 1.0, 1e15]),
    seed=st.integers(0, 2**16),
)
def test_every_backend_equals_the_numpy_reference(
    backend, shapes, dtype, steps, options, scale, seed
):
    """Same problem, same gradients (including tiny and huge ones, ε = 0,
    β = 0, ψ = 0, maximize, both weight decays): the same bits as NumPy."""
    rng = np.random.default_rng(seed)

    def draw(shape):
        a = rng.standard_normal(shape) + (
            1j * rng.standard_normal(shape) if np.dtype(dtype).kind == "c" else 0
        )
        return np.asarray(a * scale).astype(dtype)

    hosts = [draw(s) for s in shapes]
    grads = [[draw(s) for s in shapes] for _ in range(steps)]
    results = []
    for name in ("numpy", backend):
        params = [Parameter(on_backend(name, h)) for h in hosts]
        opt = NAdam(params, backend=name, **options)
        with np.errstate(all="ignore"):
            for g_step in grads:
                for p, g in zip(params, g_step):
                    p.grad = on_backend(name, g)
                opt.step()
        results.append(snapshot(opt))
    assert results[1]["params"] == results[0]["params"]
    assert results[1]["state"] == results[0]["state"]
