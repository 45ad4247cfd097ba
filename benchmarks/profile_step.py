"""Where a repeated ``NAdam.step`` over many tensors spends its time.

Takes the step of ``bench_overhead.py``'s ``many`` case apart and times each
piece, in the order the step runs them, after what runs before it there (a
torch foreach step and a same-size memory pass, which leave the step's
arrays and objects out of cache):

* ``settings`` — the optimizer's own settings compared with the ones last
  checked (the group's options are unchanged while its dict is: its version
  tag, checked with the rest);
* ``read``     — every θ, g, m and v found and checked in compiled code
  (``DenseBatch.read_kept``: the group's, state table's and states' version
  tags, the Parameters' slots, each array's address, shape and flags);
* ``update``   — the schedule and the update, one compiled call (and letting
  go of the references to θ and g that the read took);
* ``store``    — the new step and ∏μ stored in every state, the tags recorded;
* ``step``     — a whole ``NAdam.step`` timed the same way, for the sum;
* ``wake``     — an empty parallel call right after torch's step alone: what
  waking the Numba threads that slept through it costs.

Usage::

    python benchmarks/profile_step.py                       # 500 x 1000 float32, 60 rounds
    python benchmarks/profile_step.py --count 10000 --size 100

Needs torch (the step it follows).  Prints medians; ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import operator
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from _timing import format_seconds, machine, median, write_json  # noqa: E402
from bench_cpu import empty_parallel_call, streaming_pass  # noqa: E402

from nadam_ref.optimizer import NAdam, Parameter  # noqa: E402


def profile(count: int, size: int, rounds: int, torch_threads: int) -> dict:
    import torch

    torch.set_num_threads(torch_threads)
    rng = np.random.default_rng(0)
    params = [
        Parameter(
            rng.standard_normal(size).astype(np.float32),
            (rng.standard_normal(size) * 1e-2).astype(np.float32),
        )
        for _ in range(count)
    ]
    opt = NAdam(params)
    for _ in range(3):  # a full step, the first repeat (read through Python), a memo'd one
        opt.step()
    (kept,) = opt._repeats.values()
    group = opt.param_groups[0]
    if kept.memo is None or not kept.batch.read_kept(
        group["params"], opt.state, kept.memo, Parameter, group
    ):
        raise RuntimeError("the step is not a memo'd repeat here: nothing to take apart")
    tensors = [torch.randn(size) for _ in range(count)]
    for t in tensors:
        t.grad = torch.randn(size) * 1e-2
    topt = torch.optim.NAdam(tensors, lr=2e-3, foreach=True)
    stream = [np.ones(count * size, np.float32) for _ in range(4)]
    idle = np.zeros(2)

    def before():
        with torch.no_grad():
            topt.step()
        streaming_pass(*stream)

    times: dict[str, list[float]] = {
        k: [] for k in ("settings", "read", "update", "store", "step", "wake")
    }
    for _ in range(rounds):
        before()
        t0 = time.perf_counter()
        assert all(map(operator.is_, kept._settings(opt), kept.options[-4:]))
        t1 = time.perf_counter()
        assert kept.batch.read_kept(group["params"], opt.state, kept.memo, Parameter, group)
        t2 = time.perf_counter()
        kept.step, kept.mu_product = kept.batch.step(kept.step, kept.mu_product)
        kept.batch.release()  # the references read_kept took, as the step lets go of them
        t3 = time.perf_counter()
        kept.memo.store(kept.step, kept.mu_product)
        t4 = time.perf_counter()
        for name, seconds in zip(
            ("settings", "read", "update", "store"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        ):
            times[name].append(seconds)
        before()
        t0 = time.perf_counter()
        opt.step()
        times["step"].append(time.perf_counter() - t0)
        with torch.no_grad():
            topt.step()
        t0 = time.perf_counter()
        empty_parallel_call(idle)
        times["wake"].append(time.perf_counter() - t0)
    return {
        "count": count,
        "size": size,
        "rounds": rounds,
        "median_s": {k: median(v) for k, v in times.items()},
        "times_s": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="tensors (default 500)")
    parser.add_argument(
        "--size", type=int, default=1000, help="float32 elements each (default 1000)"
    )
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args()
    result = profile(args.count, args.size, args.rounds, args.torch_threads)
    medians = result["median_s"]
    print(
        f"== a repeated NAdam.step over {args.count} x {args.size} float32, {args.rounds} rounds (medians)"
    )
    for name, seconds in medians.items():
        print(f"   {name:8s} {format_seconds(seconds)}")
    parts = sum(medians[k] for k in ("settings", "read", "update", "store"))
    print(
        f"   the four parts: {format_seconds(parts)}; the step beyond them: {format_seconds(medians['step'] - parts)}"
    )
    if args.out:
        write_json(args.out, {"machine": machine(), **result})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
