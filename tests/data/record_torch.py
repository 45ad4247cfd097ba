"""Record torch.optim.NAdam's trajectories on the cases of tests/torch_cases.py.

    python tests/data/record_torch.py        # writes tests/data/torch/<case>.npz

Each file holds, for float32 and float64, the initial parameters, the
gradients fed in (NaN rows: no gradient that step) and θ after every step.
Recorded with torch 2.13.0 (CPU build, foreach=False); the torch version is
stored in each file.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from torch_cases import CASES, problem, run_torch  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "torch"


def main() -> None:
    import torch

    OUT.mkdir(exist_ok=True)
    for case in CASES:
        arrays = {"torch_version": np.array(torch.__version__)}
        for dtype in ("float32", "float64"):
            params0, grads = problem(case, dtype)
            trajectory, _ = run_torch(case, dtype)
            for i, (x0, g, traj) in enumerate(zip(params0, grads, trajectory)):
                arrays[f"{dtype}/param{i}/initial"] = x0
                arrays[f"{dtype}/param{i}/grads"] = g
                arrays[f"{dtype}/param{i}/theta"] = traj
        np.savez_compressed(OUT / f"{case}.npz", **arrays)
        print("wrote", OUT / f"{case}.npz")


if __name__ == "__main__":
    main()
