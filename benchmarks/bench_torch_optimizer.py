"""``optimizer.step()`` of torch.optim.NAdam against nadam_ref.torch_interop.NAdam,
side by side in one run, on the parameters of real torch models.

Contenders, each with its own copy of the model's parameters and the same
fixed gradients, one step each in turn, round after round (medians; absolute
times drift between runs on a shared machine, ratios within a run do not):

* ``torch loop``    — ``torch.optim.NAdam(..., foreach=False)``;
* ``torch foreach`` — ``torch.optim.NAdam(..., foreach=True)``;
* ``nadam_ref``     — ``nadam_ref.torch_interop.NAdam`` (numba backend on CPU
  tensors through zero-copy NumPy views).

Models: ``mlp`` — a 4-layer MLP of width 2048 (16.8 million float32
parameters in 8 tensors); ``deep`` — 200 layers of width 64 (0.8 million
parameters in 400 tensors), where the per-tensor overhead shows.

Usage::

    python benchmarks/bench_torch_optimizer.py                  # both models, 15 rounds
    python benchmarks/bench_torch_optimizer.py --models mlp --repeats 25
    python benchmarks/bench_torch_optimizer.py --threads 1     # one thread each: no oversubscription

Results go to ``benchmarks/results/bench_torch_optimizer.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# This checkout's nadam_ref, whichever copy is installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]
import torch  # noqa: E402
from _timing import format_seconds, format_table, interleaved_times, machine, median, write_json  # noqa: E402

from nadam_ref.torch_interop import NAdam  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_torch_optimizer.json"


def build(model: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if model == "mlp":
        widths = [2048] * 5
    elif model == "deep":
        widths = [64] * 201
    else:
        raise ValueError(f"unknown model {model!r}")
    layers = [torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    return torch.nn.Sequential(*layers)


def contenders(model: str) -> tuple[dict, int, int]:
    """The step functions of one model (and its parameter and tensor counts)."""
    base = build(model)
    grads = [torch.randn_like(p) * 1e-2 for p in base.parameters()]
    makers = {
        "torch loop": lambda ps: torch.optim.NAdam(ps, lr=1e-3, foreach=False),
        "torch foreach": lambda ps: torch.optim.NAdam(ps, lr=1e-3, foreach=True),
        "nadam_ref": lambda ps: NAdam(ps, lr=1e-3),
    }
    steps = {}
    for name, make in makers.items():
        params = [p.detach().clone().requires_grad_() for p in base.parameters()]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        steps[name] = make(params).step
    n = sum(p.numel() for p in base.parameters())
    return steps, n, len(grads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,deep", help="comma-separated: mlp, deep")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per model")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for both torch and numba (default: theirs)",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        __import__("numba").set_num_threads(args.threads)
    results = {
        "machine": machine(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": __import__("numba").get_num_threads(),
        "models": {},
    }
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        steps, n, tensors = contenders(model)
        times = interleaved_times(steps, repeats=args.repeats, warmup=2)
        medians = {name: median(t) for name, t in times.items()}
        ours = medians["nadam_ref"]
        ratios = {
            f"{name} / nadam_ref": medians[name] / ours for name in ("torch loop", "torch foreach")
        }
        results["models"][model] = {
            "parameters": n,
            "tensors": tensors,
            "repeats": args.repeats,
            "median_s": medians,
            "times_s": times,
            "ratios": ratios,
        }
        rows.append(
            [
                f"{model} ({n / 1e6:.1f}M in {tensors})",
                *(format_seconds(medians[k]) for k in ("torch loop", "torch foreach", "nadam_ref")),
                f"{ratios['torch loop / nadam_ref']:.2f}x",
                f"{ratios['torch foreach / nadam_ref']:.2f}x",
            ]
        )
    print(
        format_table(
            ["model", "torch loop", "torch foreach", "nadam_ref", "loop / ours", "foreach / ours"],
            rows,
        )
    )
    print(
        "\nmedians of interleaved rounds; 'X / ours' = X's step time / nadam_ref's (> 1: ours is faster)"
    )
    print(f"wrote {write_json(args.out, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
