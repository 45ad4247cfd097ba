"""nadam_ref.keras.Nadam against the real Keras optimizers.

* Recorded trajectories (tests/data/keras/*.npz, written by
  tests/data/record_keras.py) of ``tf_keras.optimizers.legacy.Nadam`` and
  Keras 3's ``keras.optimizers.Nadam``: matched at every step, within 2e-6 in
  float32 (unit scale) and 1e-12 in float64; the other schedule misses by
  orders of magnitude.
* Live runs against the installed libraries (skipped, with the reason, when
  tensorflow/tf_keras or Keras 3 on the torch backend is absent).
* get_weights/set_weights interchange with the real optimizers, the config,
  the documented members, and errors.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import warnings

import numpy as np
import pytest

from nadam_ref import Parameter
from nadam_ref.keras import Nadam

DATA = pathlib.Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
import record_keras  # noqa: E402  (the recorded cases, their shapes and keyword arguments)

# Keras 3's torch backend converts tensors with np.array(x), which NumPy 2 flags; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword"
)

TOLERANCE = {"float32": 2e-6, "float64": 1e-12}
OTHER = {"legacy": "keras3", "keras3": "legacy"}


def load(case: str) -> dict[str, np.ndarray]:
    with np.load(DATA / "keras" / f"{case}.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


RECORDINGS = {case: load(case) for case in record_keras.CASES}
RECORDED = [
    (case, opt, dtype)
    for case, spec in record_keras.CASES.items()
    for opt in spec.get("optimizers", ["legacy", "keras3"])
    for dtype in ("float32", "float64")
]


def replay(case: str, opt: str, dtype: str, schedule: str, *, wrap=lambda x: x):
    """Run nadam_ref on a recorded case; returns (max |θ − recorded θ| per step, optimizer, variables)."""
    rec = RECORDINGS[case]
    n = len(record_keras.SHAPES)
    variables = [wrap(rec[f"initial/{i}"].astype(dtype)) for i in range(n)]
    grads = [rec[f"grads/{i}"] for i in range(n)]
    opt_ = Nadam(**record_keras.kwargs_for(case, opt), schedule=schedule)
    errors = np.empty(record_keras.STEPS)
    for t in range(record_keras.STEPS):
        opt_.apply_gradients(
            [
                (None if np.isnan(g[t]).all() else g[t].astype(dtype), v)
                for g, v in zip(grads, variables)
            ]
        )
        errors[t] = max(
            np.abs(
                (v.data if isinstance(v, Parameter) else v) - rec[f"{opt}/{dtype}/theta/{i}"][t]
            ).max()
            for i, v in enumerate(variables)
        )
    return errors, opt_, variables


# -- recorded trajectories ---------------------------------------------------------------------------


def test_recordings_are_complete_and_compact():
    total = sum((DATA / "keras" / f"{case}.npz").stat().st_size for case in record_keras.CASES)
    assert total < 5e6
    for case, opt, dtype in RECORDED:
        rec = RECORDINGS[case]
        assert rec[f"{opt}/{dtype}/theta/0"].shape == (record_keras.STEPS, *record_keras.SHAPES[0])
        assert rec[f"{opt}/{dtype}/theta/0"].dtype == np.dtype(dtype)
    assert record_keras.STEPS >= 300
    versions = json.loads(str(RECORDINGS["plain"]["versions"]))
    assert versions["keras_backend"] == "torch"


@pytest.mark.parametrize("case, opt, dtype", RECORDED)
def test_matches_recording_at_every_step(case, opt, dtype):
    errors, nadam, variables = replay(case, opt, dtype, opt)
    tol = TOLERANCE[dtype]
    assert errors.max() <= tol, f"step {errors.argmax() + 1}: {errors.max():.3g} > {tol}"
    rec = RECORDINGS[case]
    # The final optimizer state, too.
    if opt == "legacy":
        # get_weights in optimizer_v2's order: iterations, momentum_cache, m..., v... (creation order)
        ours = nadam.get_weights()
        theirs = [rec[f"legacy/{dtype}/weights/{k}"] for k in range(len(ours))]
        assert f"legacy/{dtype}/weights/{len(ours)}" not in rec
        for k, (a, b) in enumerate(zip(ours, theirs)):
            assert np.shape(a) == b.shape and np.asarray(a).dtype == b.dtype, k
            assert np.abs(np.asarray(a, np.float64) - b).max() <= tol, k
    else:
        assert nadam.iterations == int(rec[f"keras3/{dtype}/iterations"])
        assert abs(nadam.weights[1][()] - rec[f"keras3/{dtype}/u_product"]) <= tol
        for i, v in enumerate(variables):
            for slot in ("m", "v"):
                assert (
                    np.abs(nadam.get_slot(v, slot) - rec[f"keras3/{dtype}/{slot}/{i}"]).max() <= tol
                )


@pytest.mark.parametrize("case, opt, dtype", RECORDED)
def test_wrong_schedule_misses_the_recording_by_orders_of_magnitude(case, opt, dtype):
    errors, _, _ = replay(case, opt, dtype, OTHER[opt])
    assert errors.max() > 100 * TOLERANCE[dtype]
    assert errors.max() > 1e-3  # the schedules differ by ~4e-3 here, far above float32 rounding


def test_parameters_are_updated_like_arrays():
    errors, _, variables = replay("missing_grads", "legacy", "float64", "legacy", wrap=Parameter)
    assert errors.max() <= TOLERANCE["float64"]
    assert all(isinstance(v, Parameter) for v in variables)


def test_the_two_real_schedules_differ():
    """The size of the difference, from the recordings alone (the README's figure)."""
    rec = RECORDINGS["plain"]
    for dtype in ("float32", "float64"):
        final = max(
            np.abs(
                rec[f"legacy/{dtype}/theta/{i}"][-1] - rec[f"keras3/{dtype}/theta/{i}"][-1]
            ).max()
            for i in range(len(record_keras.SHAPES))
        )
        assert 1e-3 < final < 1e-2


# -- live against the installed libraries ------------------------------------------------------------


@pytest.fixture(scope="module")
def tf_keras():
    tf = pytest.importorskip(
        "tensorflow", reason="tensorflow-cpu is not installed (crosscheck extra)"
    )
    tfk = pytest.importorskip("tf_keras", reason="tf-keras is not installed (crosscheck extra)")
    return tf, tfk


@pytest.fixture(scope="module")
def keras3():
    keras = pytest.importorskip("keras", reason="keras 3 is not installed (crosscheck extra)")
    if not keras.__version__.startswith("3") or keras.backend.backend() != "torch":
        pytest.skip(
            f"needs Keras 3 on the torch backend, found keras {keras.__version__} on {keras.backend.backend()}"
        )
    return keras


def problem(shapes, steps, dtypes, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    initial = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    grads = [(scale * rng.standard_normal((steps, *s))).astype(d) for s, d in zip(shapes, dtypes)]
    return initial, grads


def run_tf(tf, opt, initial, grads, steps, variables=None):
    variables = variables or [tf.Variable(x) for x in initial]
    out = []
    for t in range(steps):
        opt.apply_gradients([(tf.constant(g[t]), v) for g, v in zip(grads, variables)])
        out.append([v.numpy().copy() for v in variables])
    return out, variables


def run_ours(opt, initial, grads, steps, variables=None):
    variables = variables or [x.copy() for x in initial]
    out = []
    for t in range(steps):
        opt.apply_gradients([(g[t], v) for g, v in zip(grads, variables)])
        out.append([v.copy() for v in variables])
    return out, variables


def max_error(a, b):
    return max(np.abs(x - y).max() for ra, rb in zip(a, b) for x, y in zip(ra, rb))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_live_legacy_with_clipvalue_then_clipnorm(tf_keras, dtype):
    tf, tfk = tf_keras
    kwargs = dict(
        learning_rate=0.02,
        beta_1=0.8,
        beta_2=0.99,
        epsilon=1e-5,
        clipvalue=1.5,
        clipnorm=2.0,
        schedule_decay=0.05,
    )
    initial, grads = problem([(4,), (2, 3)], 60, [dtype] * 2, seed=1, scale=2.0)
    theirs, _ = run_tf(tf, tfk.optimizers.legacy.Nadam(**kwargs), initial, grads, 60)
    ours, _ = run_ours(Nadam(**kwargs), initial, grads, 60)
    assert max_error(ours, theirs) <= TOLERANCE[dtype]


def test_live_legacy_mixed_dtypes_share_one_momentum_cache(tf_keras):
    """The cache takes the first variable's dtype (float64 here); float32
    variables read it cast to float32 and never write it."""
    tf, tfk = tf_keras
    initial, grads = problem([(3,), (5,)], 50, ["float64", "float32"], seed=2)
    opt_tf = tfk.optimizers.legacy.Nadam(learning_rate=0.01)
    theirs, _ = run_tf(tf, opt_tf, initial, grads, 50)
    opt = Nadam(learning_rate=0.01)
    ours, _ = run_ours(opt, initial, grads, 50)
    for t in range(50):
        assert np.abs(ours[t][0] - theirs[t][0]).max() <= TOLERANCE["float64"]
        assert np.abs(ours[t][1] - theirs[t][1]).max() <= TOLERANCE["float32"]
    assert opt.weights[1].dtype == np.float64
    assert opt.get_weights()[1] == opt_tf.get_weights()[1]


def test_live_legacy_minimize_with_grad_loss_and_callable_var_list(tf_keras):
    tf, tfk = tf_keras
    x0 = np.array([1.5, -0.5, 2.0])
    target = np.array([0.3, 0.1, -1.0])
    var_tf = tf.Variable(x0)
    opt_tf = tfk.optimizers.legacy.Nadam(learning_rate=0.1)
    x = x0.copy()
    opt = Nadam(learning_rate=0.1)
    for _ in range(20):
        opt_tf.minimize(
            lambda: tf.reduce_sum((var_tf - target) ** 2),
            lambda: [var_tf],
            grad_loss=tf.constant(3.0, tf.float64),
        )
        opt.minimize(
            lambda: (np.sum((x - target) ** 2), [2 * (x - target)]), lambda: [x], grad_loss=3.0
        )
    assert opt.iterations == int(opt_tf.iterations.numpy()) == 20
    assert np.abs(x - var_tf.numpy()).max() <= 1e-12


def run_keras3_live(keras3, kwargs, initial, grads, steps, dtype):
    """θ after each step of the real Keras 3 Nadam fed ``grads``."""
    variables = [keras3.Variable(x, dtype=dtype) for x in initial]
    opt = keras3.optimizers.Nadam(**kwargs)
    theirs = []
    for t in range(steps):
        opt.apply_gradients(
            [(keras3.ops.convert_to_tensor(g[t]), v) for g, v in zip(grads, variables)]
        )
        theirs.append([keras3.ops.convert_to_numpy(v.value).copy() for v in variables])
    return theirs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_live_keras3_with_global_clipnorm_and_weight_decay(keras3, dtype):
    kwargs = dict(
        learning_rate=0.005, beta_1=0.85, epsilon=1e-6, global_clipnorm=1.0, weight_decay=0.1
    )
    initial, grads = problem([(6,), (2, 2)], 60, [dtype] * 2, seed=3)
    theirs = run_keras3_live(keras3, kwargs, initial, grads, 60, dtype)
    ours, _ = run_ours(Nadam(**kwargs, schedule="keras3"), initial, grads, 60)
    assert max_error(ours, theirs) <= TOLERANCE[dtype]


@pytest.mark.parametrize("seed", range(4))
def test_live_random_settings_both_generations(tf_keras, keras3, seed):
    """Random hyperparameters and one random clipper, float32 and float64, against both libraries."""
    tf, tfk = tf_keras
    rng = np.random.default_rng([seed, 77])
    kwargs = dict(
        learning_rate=float(10 ** rng.uniform(-4, -1.5)),
        beta_1=float(rng.uniform(0.5, 0.99)),
        beta_2=float(rng.uniform(0.9, 0.9999)),
        epsilon=float(10 ** rng.uniform(-8, -4)),
    )
    clipper = ["clipnorm", "clipvalue", "global_clipnorm", None][seed]
    if clipper:
        kwargs[clipper] = float(rng.uniform(0.5, 2.0))
    psi = float(10 ** rng.uniform(-3, -1))
    for dtype in ("float32", "float64"):
        initial, grads = problem([(5,), (2, 3)], 30, [dtype] * 2, seed=100 + seed, scale=2.0)
        theirs, _ = run_tf(
            tf, tfk.optimizers.legacy.Nadam(**kwargs, schedule_decay=psi), initial, grads, 30
        )
        ours, _ = run_ours(Nadam(**kwargs, schedule_decay=psi), initial, grads, 30)
        assert max_error(ours, theirs) <= TOLERANCE[dtype], (kwargs, psi, dtype)

        # Keras 3 also takes decoupled weight decay
        kwargs3 = {**kwargs, "weight_decay": float(rng.uniform(0.01, 0.3))} if seed % 2 else kwargs
        theirs = run_keras3_live(keras3, kwargs3, initial, grads, 30, dtype)
        ours, _ = run_ours(Nadam(**kwargs3, schedule="keras3"), initial, grads, 30)
        assert max_error(ours, theirs) <= TOLERANCE[dtype], (kwargs3, dtype)


# -- state interchange ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_from_tf_keras_continue_here_and_back(tf_keras, dtype):
    tf, tfk = tf_keras
    kwargs = dict(learning_rate=0.01, clipnorm=1.0)
    initial, grads = problem([(3,), (2, 2)], 40, [dtype] * 2, seed=4, scale=2.0)
    first = [g[:20] for g in grads]
    second = [g[20:] for g in grads]

    # tf_keras for 20 steps, then both continue from its state.
    opt_tf = tfk.optimizers.legacy.Nadam(**kwargs)
    _, tf_vars = run_tf(tf, opt_tf, initial, first, 20)
    opt = Nadam(**kwargs)
    ours_vars = [v.numpy().copy() for v in tf_vars]
    opt.build(ours_vars)
    opt.set_weights(opt_tf.get_weights())
    assert opt.iterations == 20
    theirs, _ = run_tf(tf, opt_tf, None, second, 20, variables=tf_vars)
    ours, _ = run_ours(opt, None, second, 20, variables=ours_vars)
    assert max_error(ours, theirs) <= TOLERANCE[dtype]

    # The other way round: nadam_ref for 20 steps, then tf_keras continues.
    opt = Nadam(**kwargs)
    _, ours_vars = run_ours(opt, initial, first, 20)
    opt_tf = tfk.optimizers.legacy.Nadam(**kwargs)
    tf_vars = [tf.Variable(v) for v in ours_vars]
    opt_tf._create_all_weights(tf_vars)  # what its first apply_gradients does
    opt_tf.set_weights(opt.get_weights())
    assert int(opt_tf.iterations.numpy()) == 20
    theirs, _ = run_tf(tf, opt_tf, None, second, 20, variables=tf_vars)
    ours, _ = run_ours(opt, None, second, 20, variables=ours_vars)
    assert max_error(ours, theirs) <= TOLERANCE[dtype]
    # One continuous run agrees with the two halves.
    whole, _ = run_ours(Nadam(**kwargs), initial, grads, 40)
    assert max_error(whole[20:], ours) == 0


def test_keras3_state_continues_here(keras3):
    initial, grads = problem([(4,), (3,)], 30, ["float64"] * 2, seed=5)
    variables = [keras3.Variable(x, dtype="float64") for x in initial]
    opt_k = keras3.optimizers.Nadam(learning_rate=0.01)
    for t in range(15):
        opt_k.apply_gradients(
            [(keras3.ops.convert_to_tensor(g[t]), v) for g, v in zip(grads, variables)]
        )
    ours_vars = [keras3.ops.convert_to_numpy(v.value).copy() for v in variables]
    opt = Nadam(learning_rate=0.01, schedule="keras3")
    opt.build(ours_vars)
    # Keras 3 orders its variables differently; optimizer_v2's order here.
    state = lambda v: keras3.ops.convert_to_numpy(v.value)  # noqa: E731
    opt.set_weights(
        [state(opt_k.iterations), state(opt_k._u_product)]
        + [state(m) for m in opt_k._momentums]
        + [state(v) for v in opt_k._velocities]
    )
    for t in range(15, 30):
        opt_k.apply_gradients(
            [(keras3.ops.convert_to_tensor(g[t]), v) for g, v in zip(grads, variables)]
        )
        opt.apply_gradients([(g[t], v) for g, v in zip(grads, ours_vars)])
        for a, b in zip(ours_vars, variables):
            assert np.abs(a - state(b)).max() <= TOLERANCE["float64"]


# -- config ------------------------------------------------------------------------------------------


def test_config_has_tf_keras_legacy_keys_and_values(tf_keras):
    _, tfk = tf_keras
    for kwargs in (
        {},
        {"clipnorm": 1.0, "clipvalue": 0.5},
        {"global_clipnorm": 2.0, "learning_rate": 0.1},
        {"schedule_decay": 0.01, "beta_1": 0.8, "epsilon": 1e-6, "name": "opt"},
    ):
        theirs = tfk.optimizers.legacy.Nadam(**kwargs).get_config()
        ours = Nadam(**kwargs).get_config()
        assert list(ours) == list(theirs)
        assert ours == theirs
        # Each side reads the other's config.
        assert Nadam.from_config(theirs).get_config() == theirs
        back = tfk.optimizers.legacy.Nadam.from_config(dict(ours)).get_config()
        if ours["decay"] == 0.004:
            assert back == ours
        else:
            # tf_keras's own quirk: a lone `decay` keyword is overwritten by
            # schedule_decay's default, so its config does not round-trip ψ.
            assert back == {**ours, "decay": 0.004}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"learning_rate": 0.05, "beta_1": 0.7, "beta_2": 0.95, "epsilon": 1e-5, "name": "n"},
        {"decay": 0.02, "clipvalue": 1.0, "clipnorm": 3.0},
        {"schedule": "keras3", "global_clipnorm": 1.0, "weight_decay": 0.01},
        {"schedule": "keras3", "epsilon": 0.0},
    ],
)
def test_config_round_trip(kwargs):
    opt = Nadam(**kwargs)
    config = opt.get_config()
    copy = dict(config)
    again = Nadam.from_config(config)
    assert config == copy  # from_config does not change its argument
    assert again.get_config() == config
    assert again.schedule == opt.schedule and again.momentum_decay == opt.momentum_decay
    assert json.loads(json.dumps(config)) == config


def test_config_reads_lr_and_decay_aliases():
    with pytest.warns(UserWarning, match="lr"):
        opt = Nadam(lr=0.3)
    assert opt.get_config()["learning_rate"] == 0.3 and opt.lr == 0.3
    assert Nadam.from_config({"lr": 0.2}).learning_rate == 0.2
    assert Nadam(decay=0.01).momentum_decay == 0.01
    assert Nadam(schedule_decay=0.01).get_config()["decay"] == 0.01
    assert Nadam(schedule="keras3", decay=0.01).momentum_decay == 1.0
    assert Nadam(epsilon=0).epsilon == 1e-7  # tf_keras: `epsilon or backend_config.epsilon()`


# -- documented members ------------------------------------------------------------------------------


def test_minimize_first_step_by_hand():
    """The example of the tf_keras docstring (9.8), and the step derived by hand."""
    opt = Nadam(learning_rate=0.2)
    var1 = np.array(10.0, dtype=np.float32)
    count = opt.minimize(lambda: (var1**2 / 2, [var1.copy()]), [var1])
    assert count == 1 and f"{var1:.1f}" == "9.8"
    # g = 10: m = 1, v = 0.1, v̂ = 100; m̄ = (1 − μ1) g / (1 − μ1) + μ2 m / (1 − μ1 μ2)
    b1 = float(np.float32(0.9))
    mu1, mu2 = (b1 * (1 - 0.5 * 0.96 ** (0.004 * t)) for t in (1, 2))
    expected = 10 - 0.2 * (10 + mu2 * 1 / (1 - mu1 * mu2)) / (math.sqrt(100) + 1e-7)
    assert abs(float(var1) - expected) <= 2e-6


def test_docstring_examples_run():
    import doctest

    import nadam_ref.keras

    result = doctest.testmod(nadam_ref.keras)
    assert result.attempted >= 4 and result.failed == 0


def test_slots_weights_and_iterations():
    a, b = np.ones(3), np.zeros((2, 2))
    opt = Nadam()
    assert opt.get_slot_names() == ["m", "v"]
    assert opt.iterations == 0 and len(opt.weights) == 1
    opt.apply_gradients([(np.full(3, 0.5), a), (None, b)])
    assert opt.iterations == 1
    assert [w.shape for w in opt.weights] == [(), (), (3,), (3,)]
    assert opt.variables() == opt.weights or all(
        x is y for x, y in zip(opt.variables(), opt.weights)
    )
    # (1 − β1)·g and (1 − β2)·g², with β rounded to float32 as optimizer_v2 stores it
    np.testing.assert_allclose(opt.get_slot(a, "m"), (1 - float(np.float32(0.9))) * 0.5, rtol=1e-15)
    np.testing.assert_allclose(
        opt.get_slot(a, "v"), (1 - float(np.float32(0.999))) * 0.25, rtol=1e-15
    )
    with pytest.raises(KeyError):
        opt.get_slot(b, "m")
    opt.apply_gradients([(np.full(3, 0.5), a), (np.ones((2, 2)), b)])
    # b's slots come after a's, m then v, in creation order
    assert opt.weights[4] is opt.get_slot(b, "m") and opt.weights[5] is opt.get_slot(b, "v")
    extra = opt.add_slot(a, "extra", initializer="ones")
    assert opt.get_slot_names() == ["m", "v", "extra"] and opt.weights[-1] is extra
    assert opt.add_slot(a, "extra") is extra
    w = opt.add_weight("scratch", (2,), dtype=np.float64, initializer=0.5)
    assert w.dtype == np.float64 and (w == 0.5).all() and all(x is not w for x in opt.weights)
    got = opt.get_weights()
    got[2][:] = 99  # copies
    assert not (opt.get_slot(a, "m") == 99).any()


def test_get_gradients_and_get_updates():
    x = np.array([1.0, 2.0])
    opt = Nadam()
    loss = lambda: (float(np.sum(x**2)), [2 * x])  # noqa: E731
    np.testing.assert_array_equal(opt.get_gradients(loss, [x])[0], [2.0, 4.0])
    assert opt.get_updates(loss, [x]) == [1]
    assert x[0] < 1.0
    with pytest.raises(ValueError, match="None"):
        opt.get_gradients(lambda: (0.0, [None]), [x])


def test_hyperparameters_can_be_set():
    opt = Nadam()
    opt.learning_rate = 0.5
    opt.beta_1 = 0.8
    assert opt.lr == 0.5 and opt.get_config()["beta_1"] == 0.8
    with pytest.raises(ValueError):
        opt.beta_2 = 1.5
    assert opt.beta_2 == 0.999


# -- errors --------------------------------------------------------------------------------------------


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="momentum_cache"):
        Nadam(momentum_cache=0.5)
    with pytest.raises(TypeError, match="use_ema"):
        Nadam(use_ema=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clipnorm": -1.0}, "clipnorm"),
        ({"clipnorm": 1.0, "global_clipnorm": 1.0}, "global_clipnorm"),
        ({"schedule": "keras3", "clipnorm": 1.0, "clipvalue": 1.0}, "Only one"),
        ({"decay": 0.01, "schedule_decay": 0.02}, "same setting"),
        ({"schedule": "keras4"}, "schedule"),
        ({"beta_1": 1.0}, "beta"),
        ({"learning_rate": -0.1}, "learning rate"),
    ],
)
def test_invalid_settings_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Nadam(**kwargs)


@pytest.mark.parametrize(
    "grads_and_vars",
    [
        5,
        [np.ones(3)],
        [(np.ones(3),)],
        [(np.ones(3), [1.0, 2.0, 3.0])],
        [(np.ones(3), np.ones(3, dtype=np.int64))],
        [(np.ones(3, np.float32), np.ones(3))],
        [("abc", np.ones(3))],
    ],
)
def test_malformed_grads_and_vars_is_a_type_error(grads_and_vars):
    with pytest.raises(TypeError):
        Nadam().apply_gradients(grads_and_vars)


def test_no_gradients_is_a_value_error_and_empty_is_a_no_op():
    opt = Nadam()
    with pytest.raises(ValueError, match="No gradients"):
        opt.apply_gradients([(None, np.ones(2)), (None, np.ones(3))])
    assert opt.apply_gradients([]) == 0 and opt.iterations == 0


def test_a_failed_step_changes_nothing():
    a, b = np.ones(3), np.ones(2)
    opt = Nadam(clipnorm=1.0)
    opt.apply_gradients([(np.ones(3), a), (np.ones(2), b)])
    before = opt.get_weights(), a.copy(), b.copy()
    g = np.full(3, 5.0)
    with pytest.raises(ValueError, match="shape"):
        opt.apply_gradients([(g, a), (np.ones(3), b)])
    with pytest.raises(ValueError, match="twice"):
        opt.apply_gradients([(g, a), (g, a)])
    after = opt.get_weights(), a, b
    for x, y in zip(before[0], after[0]):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(before[1], a)
    np.testing.assert_array_equal(before[2], b)
    assert (g == 5.0).all()  # clipping never writes into the caller's gradient


def test_set_weights_checks_before_loading():
    a = np.ones(3)
    opt = Nadam()
    opt.build([a])
    good = opt.get_weights()
    with pytest.raises(ValueError, match="length"):
        opt.set_weights(good[:-1])
    with pytest.raises(ValueError, match="shape"):
        opt.set_weights([good[0], good[1], np.ones(4), good[3]])
    with pytest.raises(ValueError, match="whole number"):
        opt.set_weights([np.int64(-1), *good[1:]])
    assert opt.iterations == 0 and (opt.get_slot(a, "m") == 0).all()
    opt.set_weights([np.int64(7), np.float64(0.25), np.full(3, 0.5), np.full(3, 2.0)])
    assert opt.iterations == 7 and opt.weights[1] == 0.25 and (opt.get_slot(a, "v") == 2.0).all()


def test_read_only_variable_is_refused():
    a = np.ones(3)
    a.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        Nadam().apply_gradients([(np.ones(3), a)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Nadam().apply_gradients([(np.ones(3), np.ones(3))])
