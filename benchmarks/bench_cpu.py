"""CPU benchmark: the Numba backend against the NumPy reference, torch and the
memory roofline, side by side in one run.

For each case every contender takes one step in turn, round after round, and
the table shows medians and ratios (docs/frameworks.md, "Measuring speed":
absolute times drift by 2× between runs on a shared machine, ratios within
one run do not):

* ``numba step``   — ``NAdam(..., backend="numba").step()``, the whole step a
  user pays for: checks, schedule, coefficients and the compiled pass;
* ``numba update`` — the compiled pass alone (``backend_numba.update`` with
  the step already planned), to show what the Python around it costs;
* ``numpy step``   — the readable reference, ``backend="numpy"``;
* ``torch loop`` / ``torch foreach`` — ``torch.optim.NAdam`` with
  ``foreach=False`` / ``True`` (when torch is installed);
* ``roofline``     — a Numba ``prange`` pass over arrays of the same total
  size that reads four arrays and writes three, as a NAdam step must, and
  does nothing else: the fastest a step can be on this memory system.

Cases: (a) one 1e7-element tensor, float32 and float64; (b) 500 tensors of
1000 float32; (c) 1e3, 1e5 and 1e7 float32 elements, to show how cost grows;
(d) one 1e8-element float32 tensor, which no cache holds; (k) the Keras-style
front end, ``keras.Nadam.apply_gradients`` (both schedules) on one
1e7-element float32 variable, beside the roofline.  ``first`` times
the first step of a fresh process twice, with an empty Numba cache (cold:
compiles) and then with the cache the first one wrote (warm: loads).
``arithmetic`` measures what the update's arithmetic costs apart from
memory: nanoseconds an element on one core with the arrays in L2 (2^15
elements, below the parallel threshold), a one-element step's fixed cost
taken off, beside the roofline's nanoseconds an element at 1e7 on all cores;
where the arithmetic divided by the cores exceeds the memory's, a step
cannot reach the roofline (float64 on AVX-512 Xeons: three divisions and a
square root an element, fixed by the frameworks' rounding).

Usage::

    python benchmarks/bench_cpu.py                       # all cases, 15 rounds
    python benchmarks/bench_cpu.py --cases a,b --repeats 25
    python benchmarks/bench_cpu.py --out /tmp/bench.json

Results go to ``benchmarks/results/bench_cpu.json`` by default (git-ignored).
Targets (2-core machine): (a), (d) at least 0.85 of the roofline and 3× torch
foreach; (b) 4× torch foreach; (k) 0.8 of the roofline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from numba import njit, prange

# This checkout's nadam_ref, whichever copy is installed (an editable install can point elsewhere).
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]
from _timing import format_seconds, format_table, interleaved_times, machine, median, write_json  # noqa: E402

from nadam_ref import backend_numba, functional, keras  # noqa: E402
from nadam_ref.optimizer import NAdam, Parameter  # noqa: E402

try:
    import torch
except ImportError:  # torch is optional here
    torch = None

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_cpu.json"

#: case letter → [(label, tensor sizes, dtype)]
CASES = {
    "a": [("a: 1e7 float32", [10**7], np.float32), ("a: 1e7 float64", [10**7], np.float64)],
    "b": [("b: 500 x 1000 float32", [1000] * 500, np.float32)],
    "c": [
        ("c: 1e3 float32", [10**3], np.float32),
        ("c: 1e5 float32", [10**5], np.float32),
        ("c: 1e7 float32", [10**7], np.float32),
    ],
    "d": [("d: 1e8 float32", [10**8], np.float32)],
    "k": [("k: keras 1e7 float32", [10**7], np.float32)],
}
TARGETS = {  # case letter → (least fraction of the roofline, least speed-up over torch foreach)
    "a": (0.85, 3.0),
    "b": (None, 4.0),
    "d": (0.85, 3.0),
    "k": (0.8, None),
}


@njit(parallel=True, cache=True)
def empty_parallel_call(a):
    """A parallel loop of no work (``a``: one element a thread): what a parallel
    call costs beyond its work, as waking the threads that slept since the last."""
    for i in prange(a.size):
        a[i] += 1.0


@njit(parallel=True, cache=True)
def streaming_pass(a, b, c, d):
    """Read a, b, c, d once and write a, c, d once: a NAdam step's traffic,
    with one addition per written element (no constants, so no dtype change)."""
    for i in prange(a.size):
        x = a[i]
        y = b[i]
        a[i] = x + y
        c[i] = c[i] + y
        d[i] = d[i] + x


def contenders(sizes: list[int], dtype, torch_threads: int) -> dict:
    """The step functions of one case, sharing θ and the gradients."""
    rng = np.random.default_rng(0)
    thetas = [rng.standard_normal(n, dtype=np.float64).astype(dtype) for n in sizes]
    grads = [(rng.standard_normal(n, dtype=np.float64) * 1e-2).astype(dtype) for n in sizes]
    steps = {}
    for backend in ("numba", "numpy"):
        params = [Parameter(t, g) for t, g in zip(thetas, grads)]
        steps[f"{backend} step"] = NAdam(params, backend=backend).step
    # The compiled pass alone, on a step planned once.
    plan = functional.plan_step(
        thetas,
        grads,
        [np.zeros_like(t) for t in thetas],
        [np.zeros_like(t) for t in thetas],
        [0.0] * len(sizes),
        [1.0] * len(sizes),
        lr=2e-3,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        backend="numba",
    )
    steps["numba update"] = lambda: backend_numba.update(
        plan.params, plan.grads, plan.exp_avgs, plan.exp_avg_sqs, plan.coefficients
    )
    if torch is not None:
        torch.set_num_threads(torch_threads)
        for foreach in (False, True):
            tensors = [torch.from_numpy(t) for t in thetas]
            for t, g in zip(tensors, grads):
                t.grad = torch.from_numpy(g)
            opt = torch.optim.NAdam(tensors, lr=2e-3, foreach=foreach)

            def torch_step(opt=opt):
                with torch.no_grad():
                    opt.step()

            steps[f"torch {'foreach' if foreach else 'loop'}"] = torch_step
    total = sum(sizes)
    stream = [np.ones(total, dtype) for _ in range(4)]
    stream[1][:] = 1e-6
    steps["roofline"] = lambda: streaming_pass(*stream)
    return steps


def keras_contenders(sizes: list[int], dtype) -> dict:
    """``keras.Nadam.apply_gradients`` with each schedule (on its default, numba,
    backend), beside the roofline pass of the same traffic: the Keras-style
    front end's whole step (checks, profile, schedule, the compiled pass)."""
    rng = np.random.default_rng(0)
    steps = {}
    for schedule in ("legacy", "keras3"):
        variables = [rng.standard_normal(n, dtype=np.float64).astype(dtype) for n in sizes]
        grads = [(rng.standard_normal(n, dtype=np.float64) * 1e-2).astype(dtype) for n in sizes]
        opt = keras.Nadam(schedule=schedule)
        pairs = list(zip(grads, variables))
        steps[f"keras {schedule}"] = lambda opt=opt, pairs=pairs: opt.apply_gradients(pairs)
    stream = [np.ones(sum(sizes), dtype) for _ in range(4)]
    stream[1][:] = 1e-6
    steps["roofline"] = lambda: streaming_pass(*stream)
    return steps


def _result(label, sizes, dtype, repeats, times, medians, ratios) -> dict:
    """One case's entry in the JSON results."""
    return {
        "label": label,
        "dtype": np.dtype(dtype).name,
        "tensors": len(sizes),
        "elements": sum(sizes),
        "repeats": repeats,
        "median_s": medians,
        "times_s": times,
        "ratios": ratios,
    }


def run_keras_case(label: str, sizes: list[int], dtype, repeats: int) -> dict:
    times = interleaved_times(keras_contenders(sizes, dtype), repeats=repeats, warmup=2)
    medians = {name: median(t) for name, t in times.items()}
    ratios = {
        f"roofline / keras {s}": medians["roofline"] / medians[f"keras {s}"]
        for s in ("legacy", "keras3")
    }
    return _result(label, sizes, dtype, repeats, times, medians, ratios)


def run_case(label: str, sizes: list[int], dtype, repeats: int, torch_threads: int) -> dict:
    times = interleaved_times(contenders(sizes, dtype, torch_threads), repeats=repeats, warmup=2)
    medians = {name: median(t) for name, t in times.items()}
    numba = medians["numba step"]
    ratios = {"roofline / numba step": medians["roofline"] / numba}
    for name in ("numpy step", "torch loop", "torch foreach"):
        if name in medians:
            ratios[f"{name} / numba step"] = medians[name] / numba
    ratios["numba update / numba step"] = medians["numba update"] / numba
    return _result(label, sizes, dtype, repeats, times, medians, ratios)


FIRST_STEP_SCRIPT = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    import numpy as np
    from nadam_ref import backend_numba
    from nadam_ref.optimizer import NAdam, Parameter
    t1 = time.perf_counter()
    params = [Parameter(np.ones(n, np.float32), np.full(n, 1e-3, np.float32)) for n in (10**6, 10)]
    NAdam(params, backend="numba").step()
    t2 = time.perf_counter()
    kernels = (backend_numba._update_parallel, backend_numba._update_serial)
    print(json.dumps({
        "import_s": t1 - t0, "first_step_s": t2 - t1,
        "cache_misses": sum(sum(k.stats.cache_misses.values()) for k in kernels),
        "cache_hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
    }))
    """
)


def first_steps() -> dict:
    """The first step of a new process, with an empty cache and then a filled one."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": path}
        for name in ("cold", "warm"):
            done = subprocess.run(
                [sys.executable, "-c", FIRST_STEP_SCRIPT],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            out[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def arithmetic_bound(repeats: int) -> dict:
    """ns per element: the update on one core in L2, and the roofline at 1e7 (see the docstring)."""
    import time

    import numba

    def best(fn, rounds):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(rounds):
                fn()
            times.append((time.perf_counter() - start) / rounds)
        return min(times)  # the least disturbed round: this measures the machine, not its load

    out = {}
    n_cache, n_memory = 1 << 15, 10**7
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(0)
        steps = {}
        for n in (1, n_cache):
            p = Parameter(
                rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
            )
            steps[n] = best(NAdam([p]).step, 2000)
        one_core = (steps[n_cache] - steps[1]) / (n_cache - 1)
        arrays = [np.ones(n_memory, dtype) for _ in range(4)]
        memory = best(lambda arrays=arrays: streaming_pass(*arrays), 5) / n_memory
        cores = numba.get_num_threads()
        out[np.dtype(dtype).name] = {
            "update_one_core_ns": one_core * 1e9,
            "update_all_cores_ns": one_core / cores * 1e9,
            "roofline_ns": memory * 1e9,
            "cores": cores,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        default="a,b,c,d,k,first,arithmetic",
        help="comma-separated, from a, b, c, d, k, first, arithmetic (default: all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=15,
        help="timed rounds per case (case d: a third, at least 3)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=os.cpu_count(),
        help="torch.set_num_threads (default: all cores)",
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"JSON results (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CASES) - {"first", "arithmetic"})
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from a, b, c, d, k, first, arithmetic")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    results = {
        "machine": machine(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "numba_threads": __import__("numba").get_num_threads(),
        "torch": torch.__version__ if torch is not None else None,
        "cases": {},
        "targets": [],
    }
    if "first" in chosen:
        results["first_step"] = first_steps()
        for name, r in results["first_step"].items():
            print(
                f"first step, {name} cache: import {format_seconds(r['import_s'])}, first step "
                f"{format_seconds(r['first_step_s'])} (kernels compiled {r['cache_misses']}, loaded {r['cache_hits']})"
            )
        print()

    if "arithmetic" in chosen:
        results["arithmetic"] = arithmetic_bound(args.repeats)
        for name, r in results["arithmetic"].items():
            print(
                f"arithmetic, {name}: the update {r['update_one_core_ns']:.2f} ns an element on "
                f"one core in L2, {r['update_all_cores_ns']:.2f} ns on {r['cores']}; the "
                f"roofline {r['roofline_ns']:.2f} ns: arithmetic / memory "
                f"{r['update_all_cores_ns'] / r['roofline_ns']:.2f}"
            )
        print()

    rows, keras_rows = [], []
    for letter in [c for c in chosen if c in CASES]:
        for label, sizes, dtype in CASES[letter]:
            if letter == "k":
                r = run_keras_case(label, sizes, dtype, args.repeats)
                results["cases"][label] = r
                m, q = r["median_s"], r["ratios"]
                keras_rows.append(
                    [label]
                    + [format_seconds(m[k]) for k in ("keras legacy", "keras keras3", "roofline")]
                    + [f"{q[f'roofline / keras {s}']:.2f}" for s in ("legacy", "keras3")]
                )
                print(f"done {label}", file=sys.stderr, flush=True)
                for s in ("legacy", "keras3"):
                    value = q[f"roofline / keras {s}"]
                    results["targets"].append(
                        {
                            "case": label,
                            "what": f"roofline / keras {s} >= {TARGETS['k'][0]}",
                            "value": value,
                            "met": value >= TARGETS["k"][0],
                        }
                    )
                continue
            repeats = max(3, args.repeats // 3) if sum(sizes) >= 10**8 else args.repeats
            r = run_case(label, sizes, dtype, repeats, args.torch_threads)
            results["cases"][label] = r
            m, q = r["median_s"], r["ratios"]
            rows.append(
                [
                    label,
                    *(
                        format_seconds(m[k]) if k in m else "-"
                        for k in (
                            "numba step",
                            "numba update",
                            "numpy step",
                            "torch loop",
                            "torch foreach",
                            "roofline",
                        )
                    ),
                    f"{q['roofline / numba step']:.2f}",
                    *(  # "-" where a contender did not run (no torch), as in the times
                        f"{q[k]:.1f}x" if k in q else "-"
                        for k in ("torch foreach / numba step", "torch loop / numba step")
                    ),
                    f"{q['numpy step / numba step']:.1f}x",
                ]
            )
            print(f"done {label}", file=sys.stderr, flush=True)
            least_roof, least_torch = TARGETS.get(letter, (None, None))
            if least_roof is not None:
                results["targets"].append(
                    {
                        "case": label,
                        "what": f"roofline / numba step >= {least_roof}",
                        "value": q["roofline / numba step"],
                        "met": q["roofline / numba step"] >= least_roof,
                    }
                )
            if least_torch is not None and "torch foreach / numba step" in q:
                value = q["torch foreach / numba step"]
                results["targets"].append(
                    {
                        "case": label,
                        "what": f"torch foreach / numba step >= {least_torch}",
                        "value": value,
                        "met": value >= least_torch,
                    }
                )
    if rows:
        print(
            format_table(
                [
                    "case",
                    "numba step",
                    "numba update",
                    "numpy step",
                    "torch loop",
                    "torch foreach",
                    "roofline",
                    "of roofline",
                    "vs foreach",
                    "vs loop",
                    "vs numpy",
                ],
                rows,
            )
        )
        print(
            "\nmedians of interleaved rounds; 'of roofline' = roofline time / numba step time, "
            "'vs X' = X time / numba step time"
        )
    if keras_rows:
        print()
        print(
            format_table(
                ["case", "keras legacy", "keras keras3", "roofline", "of roofline (legacy)",
                 "of roofline (keras3)"],
                keras_rows,
            )
        )  # fmt: skip
    for t in results["targets"]:
        print(
            f"target {t['case']}: {t['what']}: {t['value']:.2f} {'met' if t['met'] else 'NOT met'}"
        )
    path = write_json(args.out, results)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
