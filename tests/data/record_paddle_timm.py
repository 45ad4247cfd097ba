"""Record the real paddle and timm NAdams on the cases of tests/paddle_timm_cases.py.

    python tests/data/record_paddle_timm.py              # all three optimizers
    python tests/data/record_paddle_timm.py --only paddle [--cases defaults] [--out DIR]

writes ``tests/data/paddle/<case>.npz`` (``paddle.optimizer.NAdam``) and
``tests/data/timm/<optimizer>--<case>.npz`` (``timm.optim.NAdamW``,
``timm.optim.NAdamLegacy``).  Each file holds::

    config                      JSON: the optimizer, the case and its keyword arguments
    versions                    JSON: the library versions (and torch's CPU kernel level)
    initial/<i>                 θ₀ of parameter i (float64 holding float32 values)
    grads/<i>                   [STEPS, *shape] float32 gradients
    <dtype>/theta/<i>           θ after every step, float32 and float64 runs
    <dtype>/trace/<name>        the library's scalar state after every step (paddle:
                                momentum_decay_pow = 0.96^t, beta2_pow, mu_product;
                                timm legacy: m_schedule)

Recorded with paddlepaddle 3.3.1 (CPU wheel) and timm 1.0.31 on torch
2.13.0+cpu.  timm is loaded by file path (see tests/paddle_timm_cases.py: it
needs only torch, not torchvision); paddle and timm each run in their own
subprocess, so neither library's import affects the other's arithmetic.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from paddle_timm_cases import CASES, OPTIMIZERS, problem, run, versions  # noqa: E402


def recording_path(optimizer: str, case: str, out: pathlib.Path = HERE) -> pathlib.Path:
    """Where the recording of ``optimizer`` on ``case`` lives under ``out``."""
    if optimizer == "paddle":
        return pathlib.Path(out) / "paddle" / f"{case}.npz"
    return pathlib.Path(out) / "timm" / f"{optimizer}--{case}.npz"


def record(optimizer: str, out: pathlib.Path, cases=None) -> None:
    for case, kwargs in CASES[optimizer].items():
        if cases and case not in cases:
            continue
        params0, grads = problem(optimizer, case)
        arrays = {
            "config": np.array(
                json.dumps({"optimizer": optimizer, "case": case, "kwargs": kwargs})
            ),
            "versions": np.array(json.dumps(versions(optimizer))),
        }
        for i, (x0, g) in enumerate(zip(params0, grads)):
            arrays[f"initial/{i}"] = x0
            arrays[f"grads/{i}"] = g
        for dtype in ("float32", "float64"):
            result = run(optimizer, params0, grads, dtype, kwargs)
            for i, theta in enumerate(result["theta"]):
                arrays[f"{dtype}/theta/{i}"] = theta
            for name, values in result["trace"].items():
                arrays[f"{dtype}/trace/{name}"] = values
        path = recording_path(optimizer, case, out)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)
        print("wrote", path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=OPTIMIZERS)
    p.add_argument("--cases", nargs="+", help="record only these cases")
    p.add_argument("--out", default=str(HERE), help="folder holding paddle/ and timm/")
    p.add_argument("--optimizer", help=argparse.SUPPRESS)  # one optimizer, in this process
    args = p.parse_args(argv)
    if args.optimizer:
        record(args.optimizer, pathlib.Path(args.out), args.cases)
        return 0
    extra = ["--out", args.out] + (["--cases", *args.cases] if args.cases else [])
    status = 0
    for optimizer in args.only or OPTIMIZERS:
        r = subprocess.run([sys.executable, __file__, "--optimizer", optimizer, *extra])
        status = status or r.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
