"""Record what the real frameworks compute on golden cases' inputs.

For each (framework, suite case) pair below, run the framework's own NAdam on
the case's θ₀ and gradients with the case's hyperparameters, and write θ
after every step as ``tests/data/golden_frameworks/<framework>--<case>.npz``
(arrays ``param_0``, ``param_1``, … shaped [steps, *shape]: the plain ACTUAL
form ``nadam-ref golden verify`` reads).

    python tests/data/record_golden_frameworks.py [--out DIR] [--only FRAMEWORK ...] [--cases CASE ...]

Each framework runs in its own subprocess (Keras 3 needs KERAS_BACKEND=torch
before import, and TensorFlow and JAX are best kept apart).  Versions used
for the committed recordings: torch 2.13.0 (CPU), tf-keras 2.21 legacy Nadam,
Keras 3.15.1 on torch, optax 0.2.8 with jax (x64 enabled for float64),
paddlepaddle 3.3.1 (CPU), timm 1.0.31 (NAdamW, NAdamLegacy; its optimizer
files loaded by path as tests/paddle_timm_cases.py explains, so torchvision is
not needed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "golden_frameworks"

#: framework → the suite cases it is recorded on
RECORDINGS = {
    "torch": [
        "torch-float32",
        "torch-float64",
        "torch-float64-state64",
        "weight-decay-l2",
        "weight-decay-decoupled-torch",
        "maximize",
        "complex64",
        "param-groups",
    ],
    "tf-keras-legacy": ["tf-keras-legacy-float32", "tf-keras-legacy-float64"],
    "keras3": ["keras3-float32", "keras3-float64", "weight-decay-keras3"],
    "optax": ["optax-float32", "optax-float64", "weight-decay-optax-nadamw"],
    "paddle": ["paddle-float32", "paddle-float64"],
    "timm-nadamw": ["timm-nadamw-float32", "timm-nadamw-float64"],
    "timm-nadam-legacy": ["timm-nadam-legacy-float32", "timm-nadam-legacy-float64"],
}


def _groups(case):
    for g in case.groups:
        yield g["hyperparameters"], g["params"]


def record_torch(case) -> list[np.ndarray]:
    import torch

    default = torch.get_default_dtype()
    if case.profile_options.get("scalar_state") == "float64":
        torch.set_default_dtype(torch.float64)  # torch then keeps step and ∏μ in float64
    try:
        return _run_torch(case)
    finally:
        torch.set_default_dtype(default)


def _run_torch(case) -> list[np.ndarray]:
    import torch

    params = [torch.tensor(p.copy()) for p in case.params0]
    groups = []
    for hp, idx in _groups(case):
        groups.append(
            {
                "params": [params[i] for i in idx],
                "lr": hp["lr"],
                "betas": (hp["beta1"], hp["beta2"]),
                "eps": hp["eps"],
                "weight_decay": hp["weight_decay"],
                "momentum_decay": hp["momentum_decay"],
                "decoupled_weight_decay": hp["decoupled_weight_decay"],
                "maximize": hp["maximize"],
            }
        )
    opt = torch.optim.NAdam(groups, foreach=False)
    out = [[] for _ in params]
    for t in range(case.steps):
        for i, p in enumerate(params):
            p.grad = torch.tensor(case.grads[i][t].copy())
        opt.step()
        for i, p in enumerate(params):
            out[i].append(p.detach().numpy().copy())
    return [np.array(x) for x in out]


def record_tf_keras_legacy(case) -> list[np.ndarray]:
    import tensorflow as tf
    import tf_keras

    ((hp, _),) = _groups(case)
    variables = [tf.Variable(p.copy()) for p in case.params0]
    opt = tf_keras.optimizers.legacy.Nadam(
        learning_rate=hp["lr"],
        beta_1=hp["beta1"],
        beta_2=hp["beta2"],
        epsilon=hp["eps"],
        schedule_decay=hp["momentum_decay"],
    )
    out = [[] for _ in variables]
    for t in range(case.steps):
        opt.apply_gradients([(tf.constant(case.grads[i][t]), v) for i, v in enumerate(variables)])
        for i, v in enumerate(variables):
            out[i].append(v.numpy().copy())
    return [np.array(x) for x in out]


def record_keras3(case) -> list[np.ndarray]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    ((hp, _),) = _groups(case)
    dtype = case.dtype.name
    variables = [keras.Variable(p.copy(), dtype=dtype) for p in case.params0]
    kwargs = {}
    if hp["weight_decay"]:
        kwargs["weight_decay"] = hp["weight_decay"]
    opt = keras.optimizers.Nadam(
        learning_rate=hp["lr"], beta_1=hp["beta1"], beta_2=hp["beta2"], epsilon=hp["eps"], **kwargs
    )
    out = [[] for _ in variables]
    for t in range(case.steps):
        opt.apply_gradients(
            [
                (keras.ops.convert_to_tensor(case.grads[i][t], dtype=dtype), v)
                for i, v in enumerate(variables)
            ]
        )
        for i, v in enumerate(variables):
            out[i].append(keras.ops.convert_to_numpy(v.value).copy())
    return [np.array(x) for x in out]


def record_optax(case) -> list[np.ndarray]:
    import jax

    if case.dtype.name == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    ((hp, _),) = _groups(case)
    if hp["weight_decay"]:
        opt = optax.nadamw(
            hp["lr"], b1=hp["beta1"], b2=hp["beta2"], eps=hp["eps"], weight_decay=hp["weight_decay"]
        )
    else:
        opt = optax.nadam(hp["lr"], b1=hp["beta1"], b2=hp["beta2"], eps=hp["eps"])
    params = [jnp.asarray(p) for p in case.params0]
    state = opt.init(params)
    out = [[] for _ in params]
    for t in range(case.steps):
        grads = [jnp.asarray(case.grads[i][t]) for i in range(len(params))]
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        for i, p in enumerate(params):
            out[i].append(np.asarray(p).copy())
    return [np.array(x) for x in out]


def _paddle_timm(optimizer: str):
    def record(case) -> list[np.ndarray]:
        sys.path.insert(0, str(HERE.parent))
        from paddle_timm_cases import library_kwargs, run

        ((hp, _),) = _groups(case)
        kwargs = library_kwargs(optimizer, hp)
        return run(optimizer, case.params0, case.grads, case.dtype, kwargs, steps=case.steps)[
            "theta"
        ]

    return record


RECORDERS = {
    "torch": record_torch,
    "tf-keras-legacy": record_tf_keras_legacy,
    "keras3": record_keras3,
    "optax": record_optax,
    # paddle.optimizer.NAdam, timm.optim.NAdamW, timm.optim.NAdamLegacy
    "paddle": _paddle_timm("paddle"),
    "timm-nadamw": _paddle_timm("timm-nadamw"),
    "timm-nadam-legacy": _paddle_timm("timm-nadam-legacy"),
}


def recording_path(out: Path, framework: str, case: str) -> Path:
    return Path(out) / f"{framework}--{case}.npz"


def _record_one(framework: str, case_name: str, out: Path) -> None:
    from nadam_ref.golden.suite import load_suite_case

    case = load_suite_case(case_name)
    trajectories = RECORDERS[framework](case)
    for i, a in enumerate(trajectories):
        if a.dtype != case.dtype or a.shape != (case.steps,) + case.shapes[i]:
            raise SystemExit(f"{framework} on {case_name}: got {a.dtype} {a.shape}")
    np.savez_compressed(
        recording_path(out, framework, case_name),
        **{f"param_{i}": a for i, a in enumerate(trajectories)},
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--only", nargs="+", choices=sorted(RECORDERS))
    p.add_argument("--cases", nargs="+", help="record only these suite cases")
    p.add_argument("--framework", help=argparse.SUPPRESS)  # one framework, in this process
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.framework:
        for case_name in RECORDINGS[args.framework]:
            if args.cases and case_name not in args.cases:
                continue
            _record_one(args.framework, case_name, out)
            print(f"recorded {recording_path(out, args.framework, case_name)}")
        return 0
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    status = 0
    for framework in args.only or RECORDERS:
        extra = ["--cases", *args.cases] if args.cases else []
        r = subprocess.run(
            [sys.executable, __file__, "--framework", framework, "--out", str(out), *extra], env=env
        )
        status = status or r.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
