"""GPU benchmark: the Numba CUDA backend against torch.optim.NAdam on CUDA and
a device-to-device copy moving the same bytes, side by side in one run.

Contenders, each timed per step with the device synchronised after it (so a
time is what a training loop pays: host work, launches and device work):

* ``nadam_ref step``   — ``NAdam(..., backend="cuda").step()``: checks, the
  schedule and coefficients of every parameter (Python, in the functional
  core), then the kernel: one launch per dtype for all parameters;
* ``nadam_ref update`` — the backend alone on an already planned step
  (``StepPlan.run()``: tables, coefficient upload, launch);
* ``torch foreach`` / ``torch loop`` — ``torch.optim.NAdam`` with
  ``foreach=True`` / ``False``; ``torch fused`` where this torch has it;
* ``d2d copy``         — one device-to-device copy of 3.5·N float32: it reads
  and writes 28 bytes per parameter element in all, as a NAdam step must
  (read θ, g, m, v; write θ, m, v): the memory roofline.

Cases: ``big`` — one tensor of 1e8 float32; ``many`` — 500 tensors of 1e4
float32.  Every contender has its own arrays.  Contenders run round-robin
(one step each, then the next round) and the table shows medians, the
effective bandwidth (bytes a step must move / time) and ratios.

Targets (issue 4): ``nadam_ref step`` at least 0.8 of the copy's bandwidth,
and faster than ``torch foreach``.

Usage (needs a CUDA GPU; exits with a message where there is none)::

    python benchmarks/bench_cuda.py                    # both cases, 30 rounds
    python benchmarks/bench_cuda.py --cases big --repeats 50
    python benchmarks/bench_cuda.py --out /tmp/bench_cuda.json

Results go to ``benchmarks/results/bench_cuda.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

BYTES_PER_ELEMENT = 7 * 4  # float32: read θ, g, m, v; write θ, m, v
CASES = {"big": [100_000_000], "many": [10_000] * 500}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_cuda.json"


def no_gpu(reason: str) -> None:
    print(f"bench_cuda.py: {reason}; nothing measured. Run it on a machine with a CUDA GPU.", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="big,many", help="comma-separated: big, many")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"JSON results (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASES)}")

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        no_gpu("NUMBA_ENABLE_CUDASIM is set, so Numba would simulate the GPU; unset it")
    from numba import cuda

    if not cuda.is_available():
        no_gpu("no CUDA GPU or driver found")
    try:
        import torch
    except ImportError:
        torch = None
    torch_cuda = torch is not None and torch.cuda.is_available()

    device = cuda.get_current_device()
    result = {
        "device": device.name.decode() if isinstance(device.name, bytes) else str(device.name),
        "compute_capability": list(device.compute_capability),
        "versions": versions(torch),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "repeats": args.repeats,
        "notes": [] if torch_cuda else ["torch with CUDA not available: torch contenders skipped"],
        "cases": {},
    }
    print(f"device: {result['device']} (cc {device.compute_capability}); {result['versions']}")
    for case in cases:
        result["cases"][case] = run_case(case, CASES[case], args.repeats, args.warmup, torch if torch_cuda else None)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return result


def versions(torch) -> dict:
    import numba

    try:
        from importlib.metadata import version

        numba_cuda = version("numba-cuda")
    except Exception:  # noqa: BLE001 - informational only
        numba_cuda = "?"
    return {
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_cuda": numba_cuda,
        "torch": getattr(torch, "__version__", None),
    }


def run_case(case: str, sizes: list[int], repeats: int, warmup: int, torch) -> dict:
    from numba import cuda

    from nadam_ref import NAdam, functional

    n = sum(sizes)
    rng = np.random.default_rng(0)
    print(f"\ncase {case}: {len(sizes)} tensor(s), {n:.3g} float32 elements, {n * BYTES_PER_ELEMENT / 1e9:.2f} GB a step")

    def host_arrays():
        return [rng.standard_normal(s, dtype=np.float32) for s in sizes]

    contenders, keep = {}, []

    # nadam_ref: parameters and gradients on the device, the gradients set once.
    params0, grads0 = host_arrays(), host_arrays()
    opt = NAdam([cuda.to_device(x) for x in params0], lr=1e-3, backend="cuda")
    params = opt.param_groups[0]["params"]
    for p, g in zip(params, grads0):
        p.grad = cuda.to_device(g)
    contenders["nadam_ref step"] = opt.step

    # The same backend on a step planned once: what the Python around it costs.
    up_params = [cuda.to_device(x) for x in params0]
    up_grads = [cuda.to_device(g) for g in grads0]
    backend = functional.get_backend("cuda")
    plan = functional.plan_step(
        up_params, up_grads, [backend.zeros_like(p) for p in up_params], [backend.zeros_like(p) for p in up_params],
        [0.0] * len(sizes), [1.0] * len(sizes), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, backend="cuda",
    )
    contenders["nadam_ref update"] = plan.run
    keep += [up_params, up_grads, plan]

    if torch is not None:
        for name, options in (("torch foreach", {"foreach": True}), ("torch loop", {"foreach": False}),
                              ("torch fused", {"fused": True})):
            tensors = [torch.tensor(x, device="cuda", requires_grad=True) for x in params0]
            for t, g in zip(tensors, grads0):
                t.grad = torch.tensor(g, device="cuda")
            try:
                topt = torch.optim.NAdam(tensors, lr=1e-3, **options)
            except (TypeError, RuntimeError, ValueError) as error:
                print(f"  {name}: not available in this torch ({error})")
                continue
            contenders[name] = topt.step
            keep.append((tensors, topt))

    # The roofline: one copy whose reads and writes add up to a step's traffic.
    copy_elements = n * BYTES_PER_ELEMENT // (2 * 4)
    src = cuda.device_array(copy_elements, np.float32)
    dst = cuda.device_array(copy_elements, np.float32)
    contenders["d2d copy"] = lambda: dst.copy_to_device(src)

    def sync():
        cuda.synchronize()
        if torch is not None:
            torch.cuda.synchronize()

    times = interleaved(contenders, repeats, warmup, sync)
    copy_time = statistics.median(times["d2d copy"])
    foreach = statistics.median(times["torch foreach"]) if "torch foreach" in times else None
    rows = {}
    print(f"  {'contender':18} {'median':>10} {'min':>10} {'GB/s':>8} {'of copy':>8} {'vs torch foreach':>17}")
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {
            "median_s": med,
            "min_s": min(ts),
            "effective_GBps": n * BYTES_PER_ELEMENT / med / 1e9,
            "bandwidth_of_copy": copy_time / med,
            "speedup_vs_torch_foreach": (foreach / med) if foreach else None,
        }
        r = rows[name]
        vs = f"{r['speedup_vs_torch_foreach']:.2f}x" if foreach else "-"
        print(f"  {name:18} {med * 1e3:8.3f}ms {min(ts) * 1e3:8.3f}ms {r['effective_GBps']:8.0f} "
              f"{r['bandwidth_of_copy']:8.2f} {vs:>17}")
    step = rows["nadam_ref step"]
    targets = {
        "step_at_least_0.8_of_copy_bandwidth": step["bandwidth_of_copy"] >= 0.8,
        "step_faster_than_torch_foreach": (step["speedup_vs_torch_foreach"] or 0) > 1 if foreach else None,
    }
    print(f"  targets: {targets}")
    return {"tensors": len(sizes), "elements": n, "bytes_per_step": n * BYTES_PER_ELEMENT,
            "contenders": rows, "targets": targets}


def interleaved(contenders: dict, repeats: int, warmup: int, sync) -> dict[str, list[float]]:
    """Seconds per call of each contender, round-robin, synchronised inside the timing."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
            sync()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


if __name__ == "__main__":
    main()
