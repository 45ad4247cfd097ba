"""Train a small torch MLP on scikit-learn's bundled digits, twice: with
torch.optim.NAdam and with nadam_ref.torch_interop.NAdam, from the same
initial weights, with the same mini-batches and a cosine learning-rate
schedule; print how far apart the two runs end up.

    python examples/train_digits.py            # 300 steps, well under a minute on 2 cores
    python examples/train_digits.py --steps 600

The data ship inside scikit-learn (``sklearn.datasets.load_digits``: 1797
8×8 images, 10 classes), so nothing is downloaded.  Because nadam_ref runs
torch's arithmetic (its ``"torch"`` profile), the two loss curves and the two
sets of weights agree to float32 rounding, although each step's rounding
feeds back into the next forward pass.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from nadam_ref.torch_interop import NAdam


def digits(seed: int = 0):
    """Standardised features and labels, split into train and test halves."""
    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order])
    half = len(x) // 2
    return (x[:half], y[:half]), (x[half:], y[half:])


def train(optimizer_class, steps: int = 300, batch: int = 64, seed: int = 0) -> dict:
    """Train a 64-128-10 MLP for ``steps`` mini-batch steps with NAdam and a
    cosine schedule; return the loss at every step, the test accuracy, and
    the final weights."""
    (x, y), (x_test, y_test) = digits(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = optimizer_class(model.parameters(), lr=1e-2, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-4)
    batches = np.random.default_rng(seed + 1).integers(0, len(x), size=(steps, batch))
    losses = []
    for idx in batches:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    weights = [p.detach().clone() for p in model.parameters()]
    return {"losses": np.array(losses), "accuracy": accuracy, "weights": weights}


def compare(steps: int = 300) -> dict:
    """Both optimizers from the same start: the largest differences between
    their loss curves and their final weights, and each run's accuracy and time."""
    runs = {}
    for name, cls in (("torch.optim.NAdam", torch.optim.NAdam), ("nadam_ref", NAdam)):
        start = time.perf_counter()
        runs[name] = train(cls, steps)
        runs[name]["seconds"] = time.perf_counter() - start
    a, b = runs["torch.optim.NAdam"], runs["nadam_ref"]
    return {
        "steps": steps,
        "loss_distance": float(np.abs(a["losses"] - b["losses"]).max()),
        "weight_distance": max(
            (p - q).abs().max().item() for p, q in zip(a["weights"], b["weights"])
        ),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    # A model this small gains nothing from threads, which on a busy machine cost a lot.
    torch.set_num_threads(1)
    result = compare(parser.parse_args().steps)
    for name, run in result["runs"].items():
        print(
            f"{name:18s} loss {run['losses'][0]:.4f} -> {run['losses'][-1]:.4f}, "
            f"test accuracy {run['accuracy']:.3f}, {run['seconds']:.1f} s"
        )
    print(f"largest loss difference over {result['steps']} steps: {result['loss_distance']:.3g}")
    print(f"largest weight difference at the end:        {result['weight_distance']:.3g}")


if __name__ == "__main__":
    main()
