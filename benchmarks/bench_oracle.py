"""Oracle benchmark: the mpmath oracle against the fast oracle, side by side in
one run, in element-steps per second (elements × steps / seconds).

Both produce a case's exact trajectory *and* its tolerances (the work of
``make_case`` after the inputs are drawn):

* ``mpmath``      — :func:`nadam_ref.golden.oracle.exact_run` with the
  tolerance bound, the reference;
* ``fast``        — :func:`nadam_ref.golden.fast_oracle.fast_run`, one process;
* ``fast ×N``     — the same on N worker processes (``--workers``).

Cases: torch's defaults, float32 and float64, at 1e4 elements (every
contender; the fast result is checked bit for bit against mpmath's) and at
1e6 elements (the fast ones; the mpmath path would take hours there, so its
row is its 1e4 rate, which does not depend on the size: object arrays cost the
same per element).  The fallback column is the fraction of elements the fast
path handed back to mpmath.

Usage::

    python3 benchmarks/bench_oracle.py                    # 10 steps, 2 rounds, 2 workers
    python3 benchmarks/bench_oracle.py --steps 20 --repeats 3 --workers 2 --out /tmp/o.json

Results go to ``benchmarks/results/bench_oracle.json`` by default (git-ignored).
Target (issue 19): ≥ 1e6 element-steps/s on 2 cores, aim 1e7.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]
from _timing import format_seconds, format_table, interleaved_times, machine, median, write_json  # noqa: E402

from nadam_ref.golden import fast_oracle, oracle  # noqa: E402
from nadam_ref.golden.generate import draw_inputs  # noqa: E402
from nadam_ref.golden.tolerance import ToleranceBound, finish  # noqa: E402
from nadam_ref.profiles import get as get_profile  # noqa: E402


def _inputs(dtype, n, steps, seed=0):
    profile = get_profile("torch")
    rule = profile.rules(profile.hyperparameters({}), dtype)
    p0, g = draw_inputs(np.random.default_rng(seed), dtype, [(n,)], steps)
    return rule, p0, g


def _mpmath(rule, p0, g, record):
    real = np.zeros(0, p0[0].dtype).real.dtype
    bound = ToleranceBound([rule], [real], record=record)
    exact = oracle.exact_run([rule], p0, g, record, observe=bound)
    return exact, finish(bound, exact, record, [p0[0].dtype])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_oracle.json"))
    args = ap.parse_args(argv)
    steps, record = args.steps, [args.steps]
    # Compile the kernel (or load it from the cache) before any timing.
    rule, p0, g = _inputs(np.float32, 4, 2)
    fast_oracle.run_range(rule, np.float32, p0[0], g[0], [2])
    rows, results = [], []
    for dtype in ("float32", "float64"):
        rates = {}
        for n in (10_000, 1_000_000):
            rule, p0, g = _inputs(dtype, n, steps)
            stats = {}

            def fast(workers, rule=rule, p0=p0, g=g, stats=stats):
                out = fast_oracle.fast_run([rule], p0, g, record, workers=workers)
                stats.update(out[2])
                return out

            contenders = {
                "fast": lambda: fast(1),
                f"fast ×{args.workers}": lambda: fast(args.workers),
            }
            if n == 10_000:
                contenders = {"mpmath": lambda a=(rule, p0, g): _mpmath(*a, record), **contenders}
            times = interleaved_times(contenders, args.repeats, warmup=0)
            if n == 10_000:
                want = _mpmath(rule, p0, g, record)
                got = fast_oracle.fast_run([rule], p0, g, record)
                same = all(
                    a.tobytes() == b.tobytes()
                    for part in (0, 1)
                    for q in want[part]
                    for a, b in zip(want[part][q], got[part][q])
                )
                if not same:
                    raise SystemExit(f"fast and mpmath oracles differ ({dtype}, {n} elements)")
            for name, ts in times.items():
                rate = n * steps / median(ts)
                rates.setdefault(name, rate)
                base = rates["mpmath"]
                rows.append(
                    [
                        dtype,
                        f"{n:.0e}",
                        name,
                        format_seconds(median(ts)),
                        f"{rate:.3g}",
                        f"{rate / base:.0f}×",
                        "" if name == "mpmath" else f"{stats['fallback'] / n:.2g}",
                    ]
                )
                results.append(
                    dict(
                        dtype=dtype,
                        elements=n,
                        steps=steps,
                        contender=name,
                        seconds=ts,
                        element_steps_per_s=rate,
                        vs_mpmath=rate / base,
                        fallback=None if name == "mpmath" else stats["fallback"],
                    )
                )
            if n == 1_000_000:
                rows.append([dtype, "1e+06", "mpmath (its 1e4 rate)", "", f"{base:.3g}", "1×", ""])
    print(f"torch defaults, {steps} steps, median of {args.repeats} rounds")
    print(
        format_table(
            ["dtype", "elements", "oracle", "time", "element-steps/s", "vs mpmath", "fallback"],
            rows,
        )
    )
    path = write_json(args.out, {"machine": machine(), "steps": steps, "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
