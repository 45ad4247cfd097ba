"""Record the real Keras Nadam optimizers' trajectories for tests/test_keras.py.

    python tests/data/record_keras.py        # writes tests/data/keras/<case>.npz

Two optimizers are recorded on every case, in float32 and float64:

* ``legacy``: ``tf_keras.optimizers.legacy.Nadam`` (tensorflow-cpu + tf-keras),
  the optimizer_v2 class the tf.keras documentation page describes;
* ``keras3``: ``keras.optimizers.Nadam`` (Keras 3, on the torch backend).

Gradients are drawn once from a seeded generator (in float32, so the float64
runs see exactly the same values) and fed to both open loop; a NaN row means
"no gradient for this variable at this step" (the pair is passed as
``(None, variable)``).  Each file holds::

    config                     JSON: the case's keyword arguments (see CASES)
    initial/<i>                θ_0 of variable i (float64 holding float32 values)
    grads/<i>                  [STEPS, *shape] float32 gradients, NaN rows = None
    <opt>/<dtype>/theta/<i>    θ after every step, [STEPS, *shape]
    legacy/<dtype>/weights/<k> the legacy optimizer's get_weights() at the end
    keras3/<dtype>/m/<i>, v/<i>, u_product, iterations   Keras 3's final state
    versions                   JSON: the library versions used

The cases cover default and non-default hyperparameters, clipnorm, clipvalue,
global_clipnorm, variables of several shapes, variables that miss gradients
(including one that gets its first gradient late, which changes the order of
the legacy optimizer's weights), and Keras 3's decoupled weight_decay.
"""

from __future__ import annotations

import json
import os
import pathlib

# Keras 3 must run on the torch backend, chosen before keras is first imported.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "keras"
STEPS = 300
SHAPES = [(5,), (3, 4), (2, 2, 3)]
# Gradient scale per variable: with clipnorm=1 some gradients are clipped and some not.
SCALES = [1.0, 0.3, 3.0]

#: case → (keyword arguments shared by both optimizers, legacy-only, keras3-only,
#: which optimizers run it, which gradients are missing)
CASES: dict[str, dict] = {
    "plain": {"kwargs": {}},
    "hyperparameters": {
        "kwargs": {"learning_rate": 0.01, "beta_1": 0.85, "beta_2": 0.995, "epsilon": 1e-6},
        "legacy_kwargs": {"schedule_decay": 0.01},
    },
    "clipnorm": {"kwargs": {"clipnorm": 1.0}},
    "clipvalue": {"kwargs": {"clipvalue": 0.5}},
    "global_clipnorm": {"kwargs": {"global_clipnorm": 2.0}},
    # variable 1 misses every third gradient, variable 2 gets none before step 50
    "missing_grads": {"kwargs": {"learning_rate": 0.003}, "missing": {1: "every3", 2: "first50"}},
    # decoupled weight decay exists in Keras 3 only
    "weight_decay": {"kwargs": {"weight_decay": 0.2}, "optimizers": ["keras3"]},
}


def problem(case: str):
    """θ_0 (float64 arrays holding float32 values) and float32 gradients with NaN rows."""
    rng = np.random.default_rng([20261121, sorted(CASES).index(case)])
    initial, grads = [], []
    for i, (shape, scale) in enumerate(zip(SHAPES, SCALES)):
        initial.append(rng.standard_normal(shape).astype(np.float32).astype(np.float64))
        g = (scale * rng.standard_normal((STEPS, *shape))).astype(np.float32)
        missing = CASES[case].get("missing", {}).get(i)
        if missing == "every3":
            g[2::3] = np.nan
        elif missing == "first50":
            g[:50] = np.nan
        grads.append(g)
    return initial, grads


def kwargs_for(case: str, optimizer: str) -> dict:
    spec = CASES[case]
    return {**spec["kwargs"], **spec.get(f"{optimizer}_kwargs", {})}


def run_legacy(case: str, dtype: str, steps: int = STEPS):
    """θ after every step and the final get_weights() of tf_keras's legacy Nadam."""
    import tensorflow as tf
    import tf_keras

    initial, grads = problem(case)
    variables = [tf.Variable(x.astype(dtype)) for x in initial]
    opt = tf_keras.optimizers.legacy.Nadam(**kwargs_for(case, "legacy"))
    trajectory = [np.empty((steps, *x.shape), dtype) for x in initial]
    for t in range(steps):
        pairs = []
        for g, v in zip(grads, variables):
            row = g[t]
            pairs.append((None if np.isnan(row).all() else tf.constant(row.astype(dtype)), v))
        opt.apply_gradients(pairs)
        for traj, v in zip(trajectory, variables):
            traj[t] = v.numpy()
    return trajectory, [np.asarray(w) for w in opt.get_weights()]


def run_keras3(case: str, dtype: str, steps: int = STEPS):
    """θ after every step and the final state of Keras 3's Nadam (torch backend)."""
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(
            f"Keras 3 runs on the {keras.backend.backend()} backend; set KERAS_BACKEND=torch"
        )
    initial, grads = problem(case)
    variables = [keras.Variable(x.astype(dtype), dtype=dtype) for x in initial]
    opt = keras.optimizers.Nadam(**kwargs_for(case, "keras3"))
    trajectory = [np.empty((steps, *x.shape), dtype) for x in initial]
    for t in range(steps):
        pairs = []
        for g, v in zip(grads, variables):
            row = g[t]
            pairs.append(
                (None if np.isnan(row).all() else keras.ops.convert_to_tensor(row.astype(dtype)), v)
            )
        opt.apply_gradients(pairs)
        for traj, v in zip(trajectory, variables):
            traj[t] = keras.ops.convert_to_numpy(v.value)
    state = {
        "m": [keras.ops.convert_to_numpy(opt._momentums[i].value) for i in range(len(variables))],
        "v": [keras.ops.convert_to_numpy(opt._velocities[i].value) for i in range(len(variables))],
        "u_product": keras.ops.convert_to_numpy(opt._u_product.value),
        "iterations": keras.ops.convert_to_numpy(opt.iterations.value),
    }
    return trajectory, state


def versions() -> dict:
    import keras
    import tensorflow as tf
    import tf_keras
    import torch

    return {
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "keras": keras.__version__,
        "torch": torch.__version__,
        "keras_backend": keras.backend.backend(),
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for case, spec in CASES.items():
        initial, grads = problem(case)
        arrays = {
            "config": np.array(json.dumps(spec)),
            "versions": np.array(json.dumps(versions())),
        }
        for i, (x0, g) in enumerate(zip(initial, grads)):
            arrays[f"initial/{i}"] = x0
            arrays[f"grads/{i}"] = g
        for dtype in ("float32", "float64"):
            if "legacy" in spec.get("optimizers", ["legacy", "keras3"]):
                trajectory, weights = run_legacy(case, dtype)
                for i, traj in enumerate(trajectory):
                    arrays[f"legacy/{dtype}/theta/{i}"] = traj
                for k, w in enumerate(weights):
                    arrays[f"legacy/{dtype}/weights/{k}"] = w
            if "keras3" in spec.get("optimizers", ["legacy", "keras3"]):
                trajectory, state = run_keras3(case, dtype)
                for i, traj in enumerate(trajectory):
                    arrays[f"keras3/{dtype}/theta/{i}"] = traj
                for i, (m, v) in enumerate(zip(state["m"], state["v"])):
                    arrays[f"keras3/{dtype}/m/{i}"] = m
                    arrays[f"keras3/{dtype}/v/{i}"] = v
                arrays[f"keras3/{dtype}/u_product"] = state["u_product"]
                arrays[f"keras3/{dtype}/iterations"] = state["iterations"]
        np.savez_compressed(OUT / f"{case}.npz", **arrays)
        print("wrote", OUT / f"{case}.npz", f"{(OUT / f'{case}.npz').stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
