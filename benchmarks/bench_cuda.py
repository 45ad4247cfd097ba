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

A timing says nothing if the kernel computes something else, so after the
timed rounds the script replays the same steps with the CPU backend and says
whether the GPU's parameters are bit-identical to it (they must be: the
kernel is compiled without FMA contraction), and how far each torch contender
ended from nadam_ref.

Usage (needs a CUDA GPU and numba-cuda, the ``cuda`` extra; exits with status 2 and a
one-line message where either is missing)::

    python benchmarks/bench_cuda.py                    # both cases, 30 rounds
    python benchmarks/bench_cuda.py --cases big --repeats 50
    python benchmarks/bench_cuda.py --out /tmp/bench_cuda.json
    python benchmarks/bench_cuda.py --simulate         # no GPU: tiny cases on Numba's
                                                       # simulator; checks the script, times mean nothing

Results go to ``benchmarks/results/bench_cuda.json`` by default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import (  # noqa: E402
    cuda_backend,
    format_seconds,
    format_table,
    interleaved_times,
    machine,
    write_json,
)

# This checkout's nadam_ref, whichever copy is installed (imported in main, after
# --simulate has had its say: the simulator is chosen before Numba is imported).
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

BYTES_PER_ELEMENT = 7 * 4  # float32: read θ, g, m, v; write θ, m, v
CASES = {"big": [100_000_000], "many": [10_000] * 500}
#: --simulate: the same shapes of problem, small enough for a Python thread per CUDA thread.
SIMULATED_CASES = {"big": [600], "many": [20] * 12}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_cuda.json"


def no_gpu(reason: str) -> None:
    print(
        f"bench_cuda.py: {reason}; nothing measured. Run it on a machine with a CUDA GPU "
        "(or with --simulate to check the script itself).",
        file=sys.stderr,
    )
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="big,many", help="comma-separated: big, many")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"JSON results (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="run tiny cases on Numba's CUDA simulator (no GPU; the times mean nothing)",
    )
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASES)}")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")

    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    if args.simulate and not simulated:
        if "numba" in sys.modules:
            parser.error("--simulate must be chosen before numba is imported")
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    elif simulated and not args.simulate:
        no_gpu(
            "NUMBA_ENABLE_CUDASIM is set, so Numba would simulate the GPU; unset it, or pass --simulate"
        )
    cuda_backend("bench_cuda.py")  # numba-cuda, or a line naming the extra and exit 2
    from numba import cuda

    if not cuda.is_available():
        no_gpu("no CUDA GPU or driver found")
    try:
        import torch
    except ImportError:
        torch = None
    torch_cuda = not args.simulate and torch is not None and torch.cuda.is_available()

    device = cuda.get_current_device()
    name = getattr(device, "name", b"Numba CUDA simulator")
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "device": name.decode() if isinstance(name, bytes) else str(name),
        "compute_capability": list(device.compute_capability),
        "simulated": args.simulate,
        "versions": versions(torch),
        "machine": machine(),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "notes": [],
        "cases": {},
    }
    if args.simulate:
        result["notes"].append(
            "Numba's CUDA simulator, tiny cases: checks the script; the times mean nothing"
        )
    if not torch_cuda:
        result["notes"].append("torch with CUDA not available: torch contenders skipped")
    print(f"device: {result['device']} (cc {result['compute_capability']}); {result['versions']}")
    for note in result["notes"]:
        print(f"note: {note}")
    sizes = SIMULATED_CASES if args.simulate else CASES
    for case in cases:
        result["cases"][case] = run_case(
            case, sizes[case], args.repeats, args.warmup, torch if torch_cuda else None
        )
    path = write_json(args.out, result)
    print(f"\nwrote {path}")
    return 0


def versions(torch) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("numpy", "numba", "numba-cuda", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def run_case(case: str, sizes: list[int], repeats: int, warmup: int, torch) -> dict:
    from numba import cuda

    from nadam_ref import NAdam, functional

    n = sum(sizes)
    rng = np.random.default_rng(0)
    print(
        f"\ncase {case}: {len(sizes)} tensor(s), {n:.3g} float32 elements, {n * BYTES_PER_ELEMENT / 1e9:.3g} GB a step"
    )

    def host_arrays():
        return [rng.standard_normal(s, dtype=np.float32) for s in sizes]

    contenders = {}

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
        up_params,
        up_grads,
        [backend.zeros_like(p) for p in up_params],
        [backend.zeros_like(p) for p in up_params],
        [0.0] * len(sizes),
        [1.0] * len(sizes),
        lr=1e-3,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        backend="cuda",
    )
    contenders["nadam_ref update"] = plan.run

    torch_params = {}
    if torch is not None:
        for name, options in (
            ("torch foreach", {"foreach": True}),
            ("torch loop", {"foreach": False}),
            ("torch fused", {"fused": True}),
        ):
            tensors = [torch.tensor(x, device="cuda", requires_grad=True) for x in params0]
            for t, g in zip(tensors, grads0):
                t.grad = torch.tensor(g, device="cuda")
            try:
                topt = torch.optim.NAdam(tensors, lr=1e-3, **options)
            except (TypeError, RuntimeError, ValueError) as error:
                print(f"  {name}: not available in this torch ({error})")
                continue
            contenders[name] = topt.step
            torch_params[name] = tensors

    # The roofline: one copy whose reads and writes add up to a step's traffic.
    copy_elements = n * BYTES_PER_ELEMENT // (2 * 4)
    src = cuda.device_array(copy_elements, np.float32)
    dst = cuda.device_array(copy_elements, np.float32)
    contenders["d2d copy"] = lambda: dst.copy_to_device(src)

    def sync():
        cuda.synchronize()
        if torch is not None:
            torch.cuda.synchronize()

    times = interleaved_times(contenders, repeats=repeats, warmup=warmup, sync=sync)
    copy_time = statistics.median(times["d2d copy"])
    foreach = statistics.median(times["torch foreach"]) if "torch foreach" in times else None
    rows, table = {}, []
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
        table.append(
            [
                name,
                format_seconds(med),
                format_seconds(min(ts)),
                f"{r['effective_GBps']:.0f}",
                f"{r['bandwidth_of_copy']:.2f}",
                f"{r['speedup_vs_torch_foreach']:.2f}x" if foreach else "-",
            ]
        )
    print(
        format_table(["contender", "median", "min", "GB/s", "of copy", "vs torch foreach"], table)
    )

    # Every step contender ran warmup + repeats steps on the same inputs.
    steps = warmup + repeats
    gpu = [np.asarray(p.data) for p in params]
    cpu = NAdam([x.copy() for x in params0], lr=1e-3, backend="numba")
    for p, g in zip(cpu.param_groups[0]["params"], grads0):
        p.grad = g
    for _ in range(steps):
        cpu.step()
    identical = all(np.array_equal(a, p.data) for a, p in zip(gpu, cpu.param_groups[0]["params"]))
    print(
        f"  after {steps} steps, nadam_ref on the GPU is {'' if identical else 'NOT '}bit-identical "
        "to the CPU backend"
    )
    torch_distance = {
        name: max(
            float(np.max(np.abs(t.detach().cpu().numpy() - a), initial=0.0))
            for t, a in zip(tensors, gpu)
        )
        for name, tensors in torch_params.items()
    }
    for name, distance in torch_distance.items():
        print(f"  {name}: max |θ_torch − θ_nadam_ref| = {distance:.3g} (lr 1e-3, float32)")

    step = rows["nadam_ref step"]
    targets = {
        "step_at_least_0.8_of_copy_bandwidth": step["bandwidth_of_copy"] >= 0.8,
        "step_faster_than_torch_foreach": (step["speedup_vs_torch_foreach"] or 0) > 1
        if foreach
        else None,
        "bit_identical_to_cpu_backend": identical,
    }
    print(f"  targets: {targets}")
    return {
        "tensors": len(sizes),
        "elements": n,
        "bytes_per_step": n * BYTES_PER_ELEMENT,
        "steps": steps,
        "contenders": rows,
        "max_abs_difference_from_torch": torch_distance,
        "targets": targets,
    }


if __name__ == "__main__":
    raise SystemExit(main())
