"""The Numba CPU backend gives exactly the NumPy reference's bits.

Every test runs the same steps twice, once on each backend, from identical
copies, and compares θ, m and v with ``np.array_equal`` after every step: not a
tolerance, the same bits.  The NumPy backend applies the element function to
whole arrays with NumPy's ufuncs; the Numba backend compiles it and runs it
per element in a parallel loop, so agreement checks the compiled arithmetic,
the dtype of every constant (docs/frameworks.md, "Numerics") and the array addressing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("numba", reason="the Numba backend needs numba")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nadam_ref import backend_numba, functional
from nadam_ref.optimizer import NAdam, Parameter

REAL = (np.float32, np.float64)
ALL = (np.float32, np.float64, np.complex64, np.complex128)


def random_array(rng, shape, dtype, scale=1.0):
    dtype = np.dtype(dtype)
    x = rng.standard_normal(shape) * scale
    if dtype.kind == "c":
        x = x + 1j * rng.standard_normal(shape) * scale
    return np.asarray(x).astype(dtype)


def assert_same(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert np.array_equal(a, b, equal_nan=True), (
        f"{what}: {np.sum(a != b)} elements differ, largest |a−b| = {np.nanmax(np.abs(a - b))}"
    )


def run_both(make_arrays, steps, grads, **options):
    """Run ``steps`` steps of the functional core on each backend.

    ``make_arrays()`` returns fresh (params, exp_avgs, exp_avg_sqs) lists (views
    allowed); ``grads(step)`` the gradients of that step.  Compares θ, m, v
    after every step and returns the Numba run's final params.
    """
    runs = {}
    for backend in ("numpy", "numba"):
        params, ms, vs = make_arrays()
        runs[backend] = (params, ms, vs, [0.0] * len(params), [1.0] * len(params))
    for t in range(steps):
        g = grads(t)
        for backend, (params, ms, vs, st_, mp) in runs.items():
            new_steps, new_mp = functional.nadam(
                params, g, ms, vs, st_, mp, backend=backend, **options
            )
            runs[backend] = (params, ms, vs, new_steps, new_mp)
        ref, fast = runs["numpy"], runs["numba"]
        for i in range(len(ref[0])):
            for k, name in enumerate(("θ", "m", "v")):
                assert_same(fast[k][i], ref[k][i], f"step {t + 1}, parameter {i}, {name}")
    return runs["numba"][0]


def simple_case(shapes, dtype, seed=0, scale=1.0, steps=4, grad_scale=1.0, **options):
    rng = np.random.default_rng(seed)
    init = [random_array(rng, s, dtype, scale) for s in shapes]
    grads = [[random_array(rng, s, dtype, grad_scale) for s in shapes] for _ in range(steps)]

    def make():
        return (
            [x.copy() for x in init],
            [np.zeros_like(x) for x in init],
            [np.zeros_like(x) for x in init],
        )

    return run_both(make, steps, lambda t: grads[t], **options)


BASE = dict(lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8)


# -- every option of the foundation ------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"maximize": True, "weight_decay": 0.01},
        {"split_update": False},
        {
            "split_update": False,
            "weight_decay": 0.05,
            "decoupled_weight_decay": True,
            "maximize": True,
        },
        {"scalar_dtype": np.float32},
        # Keras-style: every scalar computed in float32 (as both Keras generations do for float32)
        {
            "scalar_dtype": np.float32,
            "compute_dtype": np.float32,
            "split_update": False,
            "momentum_decay": 1.0,
        },
        {"momentum_base": float(np.float32(0.96)), "eps": 1e-7, "lr": 1e-3},
    ],
    ids=[
        "plain",
        "l2",
        "decoupled",
        "maximize",
        "at_once",
        "at_once_all",
        "scalar32",
        "keras3_32",
        "legacy_base",
    ],
)
def test_options_bit_identical(dtype, options):
    # 70 000 elements: the parallel kernel, several chunks; 5 and (): the serial one.
    simple_case([(70_000,), (5,), ()], dtype, **{**BASE, **options})
    simple_case([(3, 7)], dtype, seed=1, **{**BASE, **options})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow and 0/0 warnings
def test_nonfinite_values_propagate_as_in_numpy():
    def make():
        p = np.array([1.0, -2.0, 3.0, 0.0, 5.0, 0.0], np.float32)
        return [p], [np.zeros_like(p)], [np.zeros_like(p)]

    g = np.array([np.nan, np.inf, -np.inf, 0.0, 1e-45, 3e38], np.float32)
    run_both(make, 3, lambda t: [g], **BASE)
    # eps = 0 and a zero gradient: 0/0 = NaN in NumPy; Numba must not raise ZeroDivisionError.
    run_both(make, 2, lambda t: [np.zeros(6, np.float32)], **{**BASE, "eps": 0.0})


# -- property tests --------------------------------------------------------------------------


shapes = st.lists(st.integers(0, 9), min_size=0, max_size=4).map(tuple) | st.sampled_from(
    [(40_000,), (300, 257), (1,), (66_000,)]
)


@pytest.mark.filterwarnings(
    "ignore::RuntimeWarning"
)  # extreme gradient scales overflow in NumPy too
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape_list=st.lists(shapes, min_size=1, max_size=4),
    dtype=st.sampled_from(ALL),
    lr=st.floats(0.0, 1.0),
    beta1=st.floats(0.0, 0.999),
    beta2=st.floats(0.0, 0.9999),
    eps=st.sampled_from([0.0, 1e-30, 1e-8, 1e-3]),
    weight_decay=st.sampled_from([0.0, 1e-4, 0.5]),
    momentum_decay=st.sampled_from([0.0, 4e-3, 1.0, 1e3]),
    decoupled=st.booleans(),
    maximize=st.booleans(),
    split_update=st.booleans(),
    scalar_dtype=st.sampled_from([np.float32, np.float64]),
    grad_exponent=st.integers(-40, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_bit_identical(
    shape_list,
    dtype,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    momentum_decay,
    decoupled,
    maximize,
    split_update,
    scalar_dtype,
    grad_exponent,
    seed,
):
    simple_case(
        shape_list,
        dtype,
        seed=seed,
        steps=3,
        grad_scale=10.0**grad_exponent,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        momentum_decay=momentum_decay,
        decoupled_weight_decay=decoupled,
        maximize=maximize,
        split_update=split_update,
        scalar_dtype=scalar_dtype,
    )


# -- views: updated in place, through their strides -------------------------------------------


def _transposed(rng, dtype):
    # θ, m, v and g all in Fortran order: dense with equal strides, the unit-stride path.
    base = random_array(rng, (300, 257), dtype)
    like = lambda: np.zeros((257, 300), dtype, order="F")  # noqa: E731
    return base.T, base, like(), like(), np.asfortranarray(random_array(rng, (257, 300), dtype))


def _mixed_orders(rng, dtype):
    # θ transposed, m and v in C order: the strided path.
    base = random_array(rng, (300, 257), dtype)
    return (
        base.T,
        base,
        np.zeros((257, 300), dtype),
        np.zeros((257, 300), dtype),
        random_array(rng, (257, 300), dtype),
    )


def _stepped(rng, dtype):
    base = random_array(rng, (400, 401), dtype)
    grad_base = random_array(rng, (800, 401), dtype)
    return (
        base[::3, 1::2],
        base,
        np.zeros((134, 200), dtype),
        np.zeros((134, 200), dtype),
        grad_base[::6, ::-2][:, :200],
    )


def _reversed(rng, dtype):
    base = random_array(rng, (50_000,), dtype)
    m_base, v_base = np.zeros(100_000, dtype), np.zeros(50_000, dtype)
    return base[::-1], base, m_base[::2], v_base[::-1], random_array(rng, (50_000,), dtype)


def _broadcast_grad(rng, dtype):
    base = random_array(rng, (64, 1000), dtype)
    row = random_array(rng, (1000,), dtype)
    return base, base, np.zeros_like(base), np.zeros_like(base), np.broadcast_to(row, base.shape)


def _middle_of_3d(rng, dtype):
    base = random_array(rng, (6, 70, 90), dtype)
    shape = (4, 57, 13)
    return (
        base[1:5, 3:60, ::7],
        base,
        np.zeros(shape, dtype),
        np.zeros(shape, dtype, order="F"),
        np.asfortranarray(random_array(rng, shape, dtype)),
    )


VIEWS = {
    "transposed": _transposed,
    "mixed_orders": _mixed_orders,
    "stepped": _stepped,
    "reversed": _reversed,
    "broadcast_grad": _broadcast_grad,
    "middle_of_3d": _middle_of_3d,
}


def element_indices(view: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Flat (C-order) indices into the contiguous ``base`` of each element of ``view``."""
    offset = (
        view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    ) // base.itemsize
    index = np.full(view.shape, offset, np.int64)
    for d, (n, s) in enumerate(zip(view.shape, view.strides)):
        index = index + (np.arange(n) * (s // base.itemsize)).reshape(
            [-1 if k == d else 1 for k in range(view.ndim)]
        )
    return index


@pytest.mark.parametrize("dtype", ALL, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(VIEWS))
def test_noncontiguous_views_updated_in_place(name, dtype):
    made = []

    def make():
        # Made identically for each backend; the view's base is kept so that
        # the elements outside the view can be checked untouched.
        param, base, m, v, grad = VIEWS[name](np.random.default_rng(len(name)), dtype)
        made.append((param, base, base.copy(), grad))
        return [param], [m], [v]

    # the gradient view itself, strides and all (a product would be a contiguous copy)
    run_both(make, 3, lambda t: [made[0][3]], **{**BASE, "weight_decay": 0.01})
    for param, base, before, _ in made:
        assert np.shares_memory(param, base)
        inside = element_indices(param, base).ravel()
        outside = np.ones(base.size, bool)
        outside[inside] = False
        assert np.array_equal(base.reshape(-1)[outside], before.reshape(-1)[outside]), (
            "elements outside the view changed"
        )
        assert np.all(base.reshape(-1)[inside] != before.reshape(-1)[inside]), (
            "the view was not updated in place"
        )


@pytest.mark.parametrize("kind", ["unaligned", "big_endian"])
def test_arrays_compiled_code_cannot_address_match_numpy(kind):
    # These go to the NumPy reference inside the backend: the same bits all the same.
    def array(values):
        if kind == "big_endian":
            return values.astype(">f8")
        buffer = bytearray(values.nbytes + 1)
        out = np.ndarray(values.shape, np.float64, buffer, offset=1)
        out[...] = values
        assert not out.flags.aligned
        return out

    rng = np.random.default_rng(3)
    init, grads = rng.standard_normal(1000), [rng.standard_normal(1000) for _ in range(3)]

    def make():
        return [array(init)], [array(np.zeros(1000))], [array(np.zeros(1000))]

    run_both(make, 3, lambda t: [array(grads[t])], **BASE)


# -- many parameters: one compiled call per (dtype, coefficients) --------------------------


def test_many_small_parameters_in_groups_one_call_per_group_and_dtype(monkeypatch):
    calls = []
    for name in ("_update_parallel", "_update_serial"):
        kernel = getattr(backend_numba, name)
        monkeypatch.setattr(
            backend_numba,
            name,
            lambda *args, _kernel=kernel: (calls.append(len(args[0])), _kernel(*args))[1],
        )
    dtypes = [np.float32, np.float64, np.complex64]

    def make_optimizer(backend):
        rng_ = np.random.default_rng(11)
        groups = []
        for g in range(3):
            params = [
                Parameter(random_array(rng_, (int(rng_.integers(1, 40)), 3), dtypes[i % 3]))
                for i in range(60)
            ]
            groups.append({"params": params, "lr": 1e-3 * (g + 1), "weight_decay": 0.01 * g})
        return NAdam(groups, backend=backend, decoupled_weight_decay=True)

    reference, fast = make_optimizer("numpy"), make_optimizer("numba")
    for t in range(4):
        calls.clear()
        for opt in (reference, fast):
            grads_rng = np.random.default_rng(100 + t)
            for group in opt.param_groups:
                for i, p in enumerate(group["params"]):
                    # every fifth parameter skips step 2: its step count, hence coefficients, differ
                    p.grad = (
                        None
                        if (t == 1 and i % 5 == 0)
                        else random_array(grads_rng, p.shape, p.dtype)
                    )
            opt.step()
        # complex64 runs as float32: per group, {float32, float64} × {on schedule, one step behind}
        assert len(calls) == (3 * 2 if t < 2 else 3 * 4), calls
        for g_ref, g_fast in zip(reference.param_groups, fast.param_groups):
            for p_ref, p_fast in zip(g_ref["params"], g_fast["params"]):
                assert_same(p_fast.data, p_ref.data, f"step {t + 1} θ")
                if p_ref in reference.state:
                    for key in ("exp_avg", "exp_avg_sq"):
                        assert_same(
                            fast.state[p_fast][key],
                            reference.state[p_ref][key],
                            f"step {t + 1} {key}",
                        )


# -- memory and the disk cache -----------------------------------------------------------------


def test_peak_extra_memory_under_1mb_for_1e7_elements():
    n = 10**7
    rng = np.random.default_rng(5)
    p = Parameter(rng.standard_normal(n, dtype=np.float32))
    p.grad = rng.standard_normal(n, dtype=np.float32)
    opt = NAdam([p], backend="numba")
    opt.step()  # state allocated, code loaded
    opt.step()  # and the repeated step's (tests/test_repeated_steps.py)
    before = p.data[:8].copy()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - start < 1_000_000, f"a step allocated {peak - start} bytes at its peak"
    assert not np.array_equal(p.data[:8], before)


def test_second_process_loads_compiled_code_from_disk():
    script = textwrap.dedent(
        """
        import numpy as np
        from nadam_ref import backend_numba
        from nadam_ref.optimizer import NAdam, Parameter
        for dtype in (np.float32, np.float64):
            for n in (10, 100_000):
                p = Parameter(np.ones(n, dtype)); p.grad = np.ones(n, dtype)
                NAdam([p], backend="numba").step()
        kernels = [backend_numba._update_parallel, backend_numba._update_serial]
        print(sum(sum(k.stats.cache_misses.values()) for k in kernels),
              sum(sum(k.stats.cache_hits.values()) for k in kernels))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}
    # The first process fills the cache (if this test run has not already); the second must only load.
    for _attempt in range(2):
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        assert out.returncode == 0, out.stderr
    misses, hits = map(int, out.stdout.split()[-2:])
    assert misses == 0 and hits == 4, out.stdout
