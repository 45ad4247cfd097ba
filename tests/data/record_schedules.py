"""Record real optimizers run with learning-rate schedules, for the tests.

    python tests/data/record_schedules.py          # everything (torch, tf_keras, Keras 3)
    python tests/data/record_schedules.py torch    # only the torch cases

writes ``tests/data/schedules/<framework>-<case>.npz``.

torch (``torch-<case>.npz``, read by tests/test_torch_optimizer.py):
``torch.optim.NAdam`` (2.13, CPU, foreach=False) with a real scheduler stepped
after every optimizer step, on the parameters and open-loop gradients of
tests/torch_cases.py.  Each file holds, for float32 and float64::

    <dtype>/param<i>/initial, <dtype>/param<i>/grads, <dtype>/param<i>/theta
    <dtype>/lr                 [STEPS, groups]: param_groups[g]["lr"] at each step
    torch_version

Keras (``keras-<case>.npz``, read by tests/test_keras_schedules.py), three
optimizers on the variables and gradients of tests/data/record_keras.py's
``plain`` problem, each with the case's schedule from its own library:

* ``legacy``: ``tf_keras.optimizers.legacy.Nadam``, given
  ``lambda: schedule(opt.iterations)`` (it refuses schedule objects);
* ``tf_keras``: ``tf_keras.optimizers.Nadam`` (the non-legacy class), given
  the ``tf_keras.optimizers.schedules`` object;
* ``keras3``: Keras 3's ``keras.optimizers.Nadam`` (torch backend), given the
  ``keras.optimizers.schedules`` object.

::

    initial/<i>, grads/<i>                 as in record_keras.py
    <opt>/<dtype>/theta/<i>                θ after every step
    <opt>/<dtype>/lr                       the schedule's value at each step, as the
                                           optimizer computed it (in the variable dtype)
    <opt>/config                           JSON: the optimizer's get_config()
    versions                               JSON: the library versions used
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 on torch, chosen before keras loads
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
import record_keras  # noqa: E402
import torch_cases  # noqa: E402

OUT = HERE / "schedules"

#: torch case → (torch_cases problem, scheduler class name, its keyword arguments)
TORCH_CASES = {
    "steplr": ("plain", "StepLR", {"step_size": 100, "gamma": 0.5}),
    "cosine": ("groups_and_missing_grads", "CosineAnnealingLR", {"T_max": 400, "eta_min": 1e-4}),
}
TORCH_STEPS = torch_cases.STEPS

#: Keras case → (schedule class name, its keyword arguments); the same in both generations.
KERAS_CASES = {
    "exponential": (
        "ExponentialDecay",
        {"initial_learning_rate": 0.01, "decay_steps": 30, "decay_rate": 0.7},
    ),
    "piecewise": (
        "PiecewiseConstantDecay",
        {"boundaries": [60, 150], "values": [0.01, 0.003, 0.0007]},
    ),
    "cosine": ("CosineDecay", {"initial_learning_rate": 0.01, "decay_steps": 250, "alpha": 0.05}),
}
KERAS_STEPS = record_keras.STEPS


def run_torch(case: str, dtype: str, steps: int = TORCH_STEPS, *, optimizer=None):
    """θ after every step and the learning rate of every group at every step.

    ``optimizer`` (default ``torch.optim.NAdam``) is the optimizer class, so
    that the tests can run nadam_ref.torch_interop.NAdam the same way.
    """
    import torch

    problem, scheduler, kwargs = TORCH_CASES[case]
    params0, grads = torch_cases.problem(problem, dtype)
    tensors = [torch.tensor(x.copy()) for x in params0]
    groups = torch_cases.param_groups(problem, tensors)
    opt = (optimizer or torch.optim.NAdam)(groups, foreach=False)
    sched = getattr(torch.optim.lr_scheduler, scheduler)(opt, **kwargs)
    trajectory = [np.empty((steps, *x.shape), x.dtype) for x in params0]
    lrs = np.empty((steps, len(opt.param_groups)))
    for t in range(steps):
        for p, g in zip(tensors, grads):
            p.grad = torch.tensor(g[t]) if torch_cases.has_grad(g[t]) else None
        lrs[t] = [group["lr"] for group in opt.param_groups]
        opt.step()
        sched.step()
        for traj, p in zip(trajectory, tensors):
            traj[t] = p.detach().numpy()
    return trajectory, lrs


def keras_schedule(case: str, generation: str):
    """The case's schedule object from tf_keras (``legacy``, ``tf_keras``) or Keras 3."""
    if generation in ("legacy", "tf_keras"):
        import tf_keras as k
    else:
        import keras as k
    name, kwargs = KERAS_CASES[case]
    return getattr(k.optimizers.schedules, name)(**copy.deepcopy(kwargs))


def run_legacy(case: str, dtype: str, steps: int = KERAS_STEPS):
    """tf_keras's legacy Nadam refuses a LearningRateSchedule ("The Nadam
    optimizer does not support tf.keras.optimizers.LearningRateSchedules");
    it takes a callable of no arguments, called once per step, and casts its
    value to the variable's dtype.  The schedule is given the way that allows:
    ``lambda: schedule(opt.iterations)``."""
    import tensorflow as tf
    import tf_keras

    initial, grads = record_keras.problem("plain")
    variables = [tf.Variable(x.astype(dtype)) for x in initial]
    schedule = keras_schedule(case, "legacy")
    opt = tf_keras.optimizers.legacy.Nadam(learning_rate=lambda: schedule(opt.iterations))
    trajectory = [np.empty((steps, *x.shape), dtype) for x in initial]
    lrs = np.empty(steps, dtype)
    for t in range(steps):
        # what the step below uses (Nadam's _prepare_local reads the hyperparameter, not
        # _decayed_lr, whose time decay would apply Nadam's `decay`, ψ, to the lr)
        lrs[t] = opt._get_hyper("learning_rate", tf.as_dtype(dtype)).numpy()
        opt.apply_gradients(
            [(tf.constant(g[t].astype(dtype)), v) for g, v in zip(grads, variables)]
        )
        for traj, v in zip(trajectory, variables):
            traj[t] = v.numpy()
    return trajectory, lrs, opt.get_config()


def run_tf_keras(case: str, dtype: str, steps: int = KERAS_STEPS):
    """tf_keras's (non-legacy) Nadam, which takes the schedule object: the
    Keras 3 arithmetic, with the schedule's value held in a variable of the
    schedule's dtype and cast to the variable's."""
    import tensorflow as tf
    import tf_keras

    initial, grads = record_keras.problem("plain")
    variables = [tf.Variable(x.astype(dtype)) for x in initial]
    opt = tf_keras.optimizers.Nadam(learning_rate=keras_schedule(case, "tf_keras"))
    trajectory = [np.empty((steps, *x.shape), dtype) for x in initial]
    lrs = np.empty(steps, dtype)
    for t in range(steps):
        opt.apply_gradients(
            [(tf.constant(g[t].astype(dtype)), v) for g, v in zip(grads, variables)]
        )
        lrs[t] = tf.cast(opt.learning_rate, dtype).numpy()  # set by this step's apply_gradients
        for traj, v in zip(trajectory, variables):
            traj[t] = v.numpy()
    config = opt.get_config()
    config.pop("is_legacy_optimizer", None)
    return trajectory, lrs, config


def run_keras3(case: str, dtype: str, steps: int = KERAS_STEPS):
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError("set KERAS_BACKEND=torch")
    initial, grads = record_keras.problem("plain")
    variables = [keras.Variable(x.astype(dtype), dtype=dtype) for x in initial]
    opt = keras.optimizers.Nadam(learning_rate=keras_schedule(case, "keras3"))
    trajectory = [np.empty((steps, *x.shape), dtype) for x in initial]
    lrs = np.empty(steps, dtype)
    for t in range(steps):
        # what update_step uses: ops.cast(learning_rate, variable.dtype), the schedule
        # called with the iteration count before this step's increment
        lr = keras.ops.cast(opt.learning_rate, dtype)
        opt.apply_gradients(
            [(keras.ops.convert_to_tensor(g[t].astype(dtype)), v) for g, v in zip(grads, variables)]
        )
        lrs[t] = keras.ops.convert_to_numpy(lr)
        for traj, v in zip(trajectory, variables):
            traj[t] = keras.ops.convert_to_numpy(v.value)
    return trajectory, lrs, opt.get_config()


def record_torch() -> None:
    import torch

    for case in TORCH_CASES:
        arrays = {"torch_version": np.array(torch.__version__)}
        problem = TORCH_CASES[case][0]
        for dtype in ("float32", "float64"):
            params0, grads = torch_cases.problem(problem, dtype)
            trajectory, lrs = run_torch(case, dtype)
            for i, (x0, g, traj) in enumerate(zip(params0, grads, trajectory)):
                arrays[f"{dtype}/param{i}/initial"] = x0
                arrays[f"{dtype}/param{i}/grads"] = g
                arrays[f"{dtype}/param{i}/theta"] = traj
            arrays[f"{dtype}/lr"] = lrs
        save(f"torch-{case}", arrays)


def record_keras_cases() -> None:
    initial, grads = record_keras.problem("plain")
    for case in KERAS_CASES:
        arrays = {"versions": np.array(json.dumps(record_keras.versions()))}
        for i, (x0, g) in enumerate(zip(initial, grads)):
            arrays[f"initial/{i}"] = x0
            arrays[f"grads/{i}"] = g
        for opt, run in (
            ("legacy", run_legacy),
            ("tf_keras", run_tf_keras),
            ("keras3", run_keras3),
        ):
            for dtype in ("float32", "float64"):
                trajectory, lrs, config = run(case, dtype)
                for i, traj in enumerate(trajectory):
                    arrays[f"{opt}/{dtype}/theta/{i}"] = traj
                arrays[f"{opt}/{dtype}/lr"] = lrs
            arrays[f"{opt}/config"] = np.array(json.dumps(config, default=float))
        save(f"keras-{case}", arrays)


def save(name: str, arrays: dict) -> None:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.npz"
    np.savez_compressed(path, **arrays)
    print("wrote", path, f"{path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["torch", "keras"]
    if "torch" in chosen:
        record_torch()
    if "keras" in chosen:
        record_keras_cases()
