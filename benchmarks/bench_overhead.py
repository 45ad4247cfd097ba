"""The fixed cost of a step: small problems, many tensors and ``minimize``,
each beside what it should be compared with, in one run.

The large-tensor kernel runs at the memory limit (``bench_cpu.py``); what else
a step costs is Python, paid per step and per parameter.  Each case times its
contenders round-robin (``_timing.interleaved_times``) and prints medians and
the ratios that count (absolute times drift by 2× between runs on a shared
machine; ratios within one run do not):

* ``tiny``    — ``NAdam.step`` on one 2-element float64 parameter, against a
  minimal hand-written NumPy NAdam loop (:class:`HandNAdam`) on the same
  array.  Target: ≤ 1.5× the hand-written step.
* ``keras``   — ``nadam_ref.keras.Nadam.apply_gradients`` on the same
  parameter, against the hand-written loop with Keras's one-part θ update.
* ``many``    — 500 tensors × 1000 float32: ``NAdam.step`` against the
  same-traffic roofline (``bench_cpu.streaming_pass`` over one array of the
  same total size: 4 reads and 3 writes per element) and
  ``torch.optim.NAdam(foreach=True)``.  Targets: ≥ 0.25 of the roofline,
  ≥ 20× torch foreach.  ``many, new grads`` gives every parameter a different
  gradient array each step (as a training loop does), torch the same.
  Also timed, after torch's step: an empty parallel Numba call, the cost of
  waking the threads that slept through it (NAdam.step runs after the
  roofline here, and finds them awake).
* ``many10k`` — 10 000 tensors × 100 float32, against torch foreach (target
  ≥ 20×) and the roofline.
* ``minimize`` — ``nadam_ref.minimize`` on a 2-D quadratic whose objective
  and gradient cost about a microsecond: the time per iteration beyond the
  objective's own calls, against the hand-written step (target ≤ 2×).
* ``first``   — a fresh process that imports and takes one step (Numba's
  on-disk cache filled, as from the second run on), against a fresh process
  doing the same with the hand-written loop and with torch.
* ``--callgrind`` (optional, slow): instructions per tiny step, counted by
  valgrind's callgrind, for ``NAdam.step`` and the hand-written loop: a
  deterministic figure, free of timing noise.

The hand-written loop restates NAdam's formulas on purpose: it is the
comparison, the least a Python step over NumPy arrays can cost.  The script
checks that it computes what ``NAdam`` computes before timing it.

Usage::

    python benchmarks/bench_overhead.py                     # every case, 15 rounds
    python benchmarks/bench_overhead.py --cases tiny,many --repeats 31
    python benchmarks/bench_overhead.py --callgrind --out /tmp/overhead.json

Results go to ``benchmarks/results/bench_overhead.json`` by default (git-ignored).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

# This checkout's nadam_ref, whichever copy is installed (an editable install can point elsewhere).
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]
from _timing import format_seconds, format_table, interleaved_times, machine, median, write_json  # noqa: E402
from bench_cpu import empty_parallel_call, streaming_pass  # noqa: E402

import nadam_ref  # noqa: E402
from nadam_ref import backend_numba_repeat, functional, keras  # noqa: E402
from nadam_ref.optimizer import NAdam, Parameter  # noqa: E402

try:
    import torch
except ImportError:  # torch is optional here
    torch = None

DEFAULT_OUT = HERE / "results" / "bench_overhead.json"
CASES = ("tiny", "keras", "many", "many10k", "minimize", "first")
#: Iterations of minimize (and of the loops it is compared with) in one timed call.
MINIMIZE_ITERATIONS = 2000


class HandNAdam:
    """A minimal hand-written NAdam on one NumPy array (torch's algorithm and
    defaults, θ updated in torch's two parts or, with ``split=False``, at once
    as Keras does): in-place NumPy operations and Python-float scalars, no
    checks.  The yardstick for the fixed cost of a step."""

    def __init__(
        self, theta, grad, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, psi=4e-3, split=True
    ):
        self.theta, self.grad = theta, grad
        self.m, self.v = np.zeros_like(theta), np.zeros_like(theta)
        self.lr, self.beta1, self.beta2, self.eps, self.psi, self.split = (
            lr,
            beta1,
            beta2,
            eps,
            psi,
            split,
        )
        self.t, self.mu_product = 0, 1.0

    def step(self) -> None:
        lr, b1, b2, eps, psi = self.lr, self.beta1, self.beta2, self.eps, self.psi
        self.t += 1
        t = self.t
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
        self.mu_product *= mu
        g, m, v, theta = self.grad, self.m, self.v, self.theta
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * g * g
        denom = np.sqrt(v / (1.0 - b2**t))
        denom += eps
        if self.split:
            theta -= (lr * (1.0 - mu) / (1.0 - self.mu_product)) * g / denom
            theta -= (lr * mu_next / (1.0 - self.mu_product * mu_next)) * m / denom
        else:
            m_hat = (mu_next / (1.0 - self.mu_product * mu_next)) * m
            m_hat += ((1.0 - mu) / (1.0 - self.mu_product)) * g
            theta -= lr * m_hat / denom


def _tiny_arrays():
    return np.array([0.5, -1.5]), np.array([0.1, -0.2])


def _check_hand_loop() -> float:
    """The hand-written loop computes what NAdam computes: largest relative
    difference of θ after 20 steps (both run in float64)."""
    theta, grad = _tiny_arrays()
    ours, hand = theta.copy(), theta.copy()
    p = Parameter(ours, grad)
    opt = NAdam([p])
    loop = HandNAdam(hand, grad)
    for _ in range(20):
        opt.step()
        loop.step()
    diff = float(np.max(np.abs(ours - hand) / np.abs(ours)))
    if diff > 1e-12:
        raise RuntimeError(f"the hand-written loop differs from NAdam by {diff:.3g}: fix it")
    return diff


def _case(label: str, contenders: dict, repeats: int, ratios: dict, warmup: int = 2) -> dict:
    """Time ``contenders`` round-robin; ``ratios`` maps a name to (numerator, denominator)
    contender names or to a function of the medians."""
    times = interleaved_times(contenders, repeats=repeats, warmup=warmup)
    medians = {name: median(t) for name, t in times.items()}
    out = {}
    for name, how in ratios.items():
        out[name] = how(medians) if callable(how) else medians[how[0]] / medians[how[1]]
    return {
        "label": label,
        "repeats": repeats,
        "median_s": medians,
        "times_s": times,
        "ratios": out,
    }


def case_tiny(repeats: int) -> dict:
    inner = 200  # steps per timed call: a step is microseconds, the clock's overhead is not nothing
    contenders = {}
    theta, grad = _tiny_arrays()
    opt = NAdam([Parameter(theta, grad)])
    contenders["NAdam.step"] = lambda: [opt.step() for _ in range(inner)]
    theta, grad = _tiny_arrays()
    opt_np = NAdam([Parameter(theta, grad)], backend="numpy")
    contenders["NAdam.step (numpy backend)"] = lambda: [opt_np.step() for _ in range(inner)]
    theta, grad = _tiny_arrays()
    hand = HandNAdam(theta, grad)
    contenders["hand-written"] = lambda: [hand.step() for _ in range(inner)]
    r = _case(
        "tiny: one 2-element float64 parameter",
        contenders,
        repeats,
        {
            "NAdam.step / hand-written": ("NAdam.step", "hand-written"),
            "NAdam.step (numpy backend) / hand-written": (
                "NAdam.step (numpy backend)",
                "hand-written",
            ),
        },
    )
    r["per_step_s"] = {k: v / inner for k, v in r["median_s"].items()}
    r["targets"] = [_target("NAdam.step / hand-written", r["ratios"], at_most=1.5)]
    return r


def case_keras(repeats: int) -> dict:
    inner = 200
    theta, grad = _tiny_arrays()
    opt = keras.Nadam()
    pairs = [(grad, theta)]
    theta_h, grad_h = _tiny_arrays()
    hand = HandNAdam(theta_h, grad_h, lr=1e-3, split=False)
    contenders = {
        "Nadam.apply_gradients": lambda: [opt.apply_gradients(pairs) for _ in range(inner)],
        "hand-written (one-part θ update)": lambda: [hand.step() for _ in range(inner)],
    }
    r = _case(
        "keras: one 2-element float64 variable",
        contenders,
        repeats,
        {
            "apply_gradients / hand-written": (
                "Nadam.apply_gradients",
                "hand-written (one-part θ update)",
            )
        },
    )
    r["per_step_s"] = {k: v / inner for k, v in r["median_s"].items()}
    r["targets"] = []
    return r


def _many_contenders(count: int, size: int, new_grads: bool, torch_threads: int) -> dict:
    rng = np.random.default_rng(0)
    thetas = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    # Two sets of gradients: with new_grads each step swaps every parameter's gradient to
    # the other set's array (a new array object each step, as autograd gives), without
    # timing any allocation.
    grad_sets = [[(rng.standard_normal(size) * 1e-2).astype(np.float32) for _ in range(count)]]
    grad_sets.append([g.copy() for g in grad_sets[0]] if new_grads else grad_sets[0])
    contenders = {}
    params = [Parameter(t.copy(), g) for t, g in zip(thetas, grad_sets[0])]
    opt = NAdam(params)
    turn = [0]

    def ours():
        if new_grads:
            turn[0] ^= 1
            for p, g in zip(params, grad_sets[turn[0]]):
                p.grad = g
        opt.step()

    contenders["NAdam.step"] = ours
    # The compiled pass alone, over a table read once: what the Python around it costs.
    plan = functional.plan_step(
        [p.data for p in params],
        grad_sets[0],
        [np.zeros_like(t) for t in thetas],
        [np.zeros_like(t) for t in thetas],
        [0.0] * count,
        [1.0] * count,
        lr=2e-3,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        backend="numba",
    )
    batch = backend_numba_repeat.DenseBatch(count, np.dtype(np.float32))
    if not batch.read([*plan.params, *plan.grads, *plan.exp_avgs, *plan.exp_avg_sqs]):
        raise RuntimeError("the benchmark's arrays should make a dense table")
    # The table holds addresses only: the lambda keeps the plan, and so its arrays, alive.
    contenders["kernel alone"] = lambda plan=plan: batch.run(plan.coefficients[0])
    if torch is not None:
        torch.set_num_threads(torch_threads)
        tensors = [torch.from_numpy(t.copy()) for t in thetas]
        torch_grads = [[torch.from_numpy(g) for g in s] for s in grad_sets]
        for t, g in zip(tensors, torch_grads[0]):
            t.grad = g
        topt = torch.optim.NAdam(tensors, lr=2e-3, foreach=True)
        tturn = [0]

        def theirs():
            if new_grads:
                tturn[0] ^= 1
                for t, g in zip(tensors, torch_grads[tturn[0]]):
                    t.grad = g
            with torch.no_grad():
                topt.step()

        contenders["torch foreach"] = theirs
        # Right after torch's step, as NAdam.step is in a training loop: the Numba threads
        # slept through it, and a parallel call first wakes them (then the roofline finds
        # them awake, as NAdam.step does here, after the roofline).
        idle = np.zeros(2)
        contenders["empty parallel call"] = lambda: empty_parallel_call(idle)
    stream = [np.ones(count * size, np.float32) for _ in range(4)]
    stream[1][:] = 1e-6
    contenders["roofline"] = lambda: streaming_pass(*stream)
    return contenders


def case_many(count: int, size: int, repeats: int, torch_threads: int, new_grads=False) -> dict:
    label = f"{count} x {size} float32" + (", new grads each step" if new_grads else "")
    ratios = {
        "roofline / NAdam.step": ("roofline", "NAdam.step"),
        "kernel alone / NAdam.step": ("kernel alone", "NAdam.step"),
    }
    if torch is not None:
        ratios["torch foreach / NAdam.step"] = ("torch foreach", "NAdam.step")
    r = _case(label, _many_contenders(count, size, new_grads, torch_threads), repeats, ratios)
    r["per_parameter_python_s"] = (
        r["median_s"]["NAdam.step"] - r["median_s"]["kernel alone"]
    ) / count
    r["targets"] = []
    if not new_grads:
        if count == 500:
            r["targets"].append(_target("roofline / NAdam.step", r["ratios"], at_least=0.25))
        if torch is not None:
            r["targets"].append(_target("torch foreach / NAdam.step", r["ratios"], at_least=20))
    return r


def _quadratic(x):
    """A 2-D quadratic, f = x0² + 10·x1², whose value costs about a microsecond."""
    a, b = x.tolist()
    return a * a + 10.0 * b * b


def _quadratic_grad(x):
    a, b = x.tolist()
    return np.array([2.0 * a, 20.0 * b])


def case_minimize(repeats: int) -> dict:
    n = MINIMIZE_ITERATIONS
    x0 = np.array([1.0, 1.0])
    last = {}

    def run_minimize():
        res = nadam_ref.minimize(_quadratic, x0, jac=_quadratic_grad, lr=1e-3, gtol=0.0, maxiter=n)
        last["res"] = res

    def objective_alone():
        # The objective's own calls: one value and one gradient per iteration.
        x = x0.copy()
        for _ in range(n):
            _quadratic(x)
            _quadratic_grad(x)

    theta, grad = _tiny_arrays()
    hand = HandNAdam(theta, grad, lr=1e-3)

    def hand_steps():
        for _ in range(n):
            hand.step()

    def hand_loop():
        x = x0.copy()
        loop = HandNAdam(x, np.zeros(2), lr=1e-3)
        for _ in range(n):
            loop.grad = _quadratic_grad(x)
            loop.step()
            _quadratic(x)

    contenders = {
        "minimize": run_minimize,
        "objective alone": objective_alone,
        "hand-written step": hand_steps,
        "hand-written loop": hand_loop,
    }

    def overhead_ratio(m):
        return (m["minimize"] - m["objective alone"]) / m["hand-written step"]

    r = _case(
        f"minimize: 2-D quadratic, {n} iterations",
        contenders,
        repeats,
        {
            "minimize overhead / hand-written step": overhead_ratio,
            "minimize / hand-written loop": ("minimize", "hand-written loop"),
        },
        warmup=1,
    )
    res = last["res"]
    if res.nit != n or res.nfev != n + 1:
        raise RuntimeError(f"minimize ran {res.nit} iterations ({res.nfev} calls), not {n}")
    m = r["median_s"]
    r["per_iteration_s"] = {k: v / n for k, v in m.items()}
    r["per_iteration_s"]["minimize overhead"] = (m["minimize"] - m["objective alone"]) / n
    r["targets"] = [_target("minimize overhead / hand-written step", r["ratios"], at_most=2.0)]
    return r


FIRST_STEP_SCRIPTS = {
    "nadam_ref": """
        import numpy as np
        from nadam_ref import NAdam, Parameter
        p = Parameter(np.array([0.5, -1.5]), np.array([0.1, -0.2]))
        NAdam([p]).step()
    """,
    "hand-written": """
        import numpy as np
        from bench_overhead_hand import HandNAdam
        HandNAdam(np.array([0.5, -1.5]), np.array([0.1, -0.2])).step()
    """,
    "torch": """
        import torch
        p = torch.tensor([0.5, -1.5], dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor([0.1, -0.2], dtype=torch.float64)
        torch.optim.NAdam([p]).step()
    """,
}


def _first_step_script(body: str) -> str:
    return (
        "import time\nt0 = time.perf_counter()\n"
        + textwrap.dedent(body)
        + "\nprint(time.perf_counter() - t0)\n"
    )


def case_first(rounds: int = 3) -> dict:
    """Seconds from the first import to the end of the first step, in fresh
    processes (median of ``rounds``, round-robin), Numba's cache filled first."""
    with tempfile.TemporaryDirectory() as tmp:
        # The hand-written loop as a module the fresh process can import.
        source = Path(__file__).read_text()
        start = source.index("class HandNAdam")
        end = source.index("\n\n\ndef _tiny_arrays")
        Path(tmp, "bench_overhead_hand.py").write_text(
            "import numpy as np\n\n\n" + source[start:end] + "\n"
        )
        path = os.pathsep.join(p for p in (str(ROOT), tmp, os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp, "numba")), "PYTHONPATH": path}

        def run(name):
            done = subprocess.run(
                [sys.executable, "-c", _first_step_script(FIRST_STEP_SCRIPTS[name])],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            return float(done.stdout.strip().splitlines()[-1])

        names = [n for n in FIRST_STEP_SCRIPTS if n != "torch" or torch is not None]
        cold = run("nadam_ref")  # compiles, and fills the cache
        times = {n: [] for n in names}
        for _ in range(rounds):
            for n in names:
                times[n].append(run(n))
    medians = {n: statistics.median(t) for n, t in times.items()}
    ratios = {"nadam_ref / hand-written": medians["nadam_ref"] / medians["hand-written"]}
    if "torch" in medians:
        ratios["nadam_ref / torch"] = medians["nadam_ref"] / medians["torch"]
    return {
        "label": "first step in a fresh process (import + step, Numba cache filled)",
        "repeats": rounds,
        "median_s": medians,
        "times_s": times,
        "cold_cache_s": cold,
        "ratios": ratios,
        "targets": [],
    }


CALLGRIND_SCRIPT = """
import os, sys
sys.path[:0] = {paths!r}
import numpy as np
from bench_overhead import HandNAdam, _tiny_arrays
from nadam_ref import NAdam, Parameter
theta, grad = _tiny_arrays()
ours = NAdam([Parameter(theta, grad)]).step
theta, grad = _tiny_arrays()
hand = HandNAdam(theta, grad).step
for _ in range(20):  # warm: compiled code loaded, caches filled
    ours()
    hand()
os.getppid()  # callgrind dumps its counts here (startup), ...
for _ in range({steps}):
    ours()
os.getppid()  # ... here (NAdam.step), ...
for _ in range({steps}):
    hand()
os.getppid()  # ... and here (the hand-written step)
"""


def callgrind_counts(steps: int = 500) -> dict:
    """Instructions per tiny step, for ``NAdam.step`` and the hand-written
    loop, counted by callgrind in one process: it dumps its counts (and starts
    afresh) at each call of ``getppid``, which the script makes only between
    the phases (startup, ``steps`` of ours, ``steps`` of the hand-written loop)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return {"error": "valgrind is not installed"}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp, "cg.out")
        script = CALLGRIND_SCRIPT.format(paths=[str(HERE), str(ROOT)], steps=steps)
        subprocess.run(
            [
                valgrind,
                "--tool=callgrind",
                "--dump-before=getppid",
                f"--callgrind-out-file={log}",
                sys.executable,
                "-c",
                script,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        totals = []
        # cg.out.1, .2, .3: one per getppid call, in order; cg.out: the rest, to the exit.
        for dump in sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.suffix[1:])):
            match = re.search(r"^(?:summary|totals):\s*(\d+)", dump.read_text(), re.MULTILINE)
            totals.append(int(match.group(1)))
    out = {"NAdam.step": totals[1] / steps, "hand-written": totals[2] / steps}
    out["NAdam.step / hand-written"] = out["NAdam.step"] / out["hand-written"]
    return out


def _target(what: str, ratios: dict, at_most=None, at_least=None) -> dict:
    value = ratios[what]
    if at_most is not None:
        return {"what": f"{what} <= {at_most}", "value": value, "met": value <= at_most}
    return {"what": f"{what} >= {at_least}", "value": value, "met": value >= at_least}


def _print_case(r: dict) -> None:
    per = r.get("per_step_s") or r.get("per_iteration_s")
    rows = []
    for name, m in r["median_s"].items():
        rows.append([name, format_seconds(m), format_seconds(per[name]) if per else ""])
    if per and "minimize overhead" in per:
        rows.append(["minimize overhead", "", format_seconds(per["minimize overhead"])])
    unit = "per step" if "per_step_s" in r else "per iteration" if per else ""
    print(f"== {r['label']} ({r['repeats']} rounds)")
    print(format_table(["contender", "median of a timed call", unit], rows))
    for name, value in r["ratios"].items():
        print(f"   {name}: {value:.3g}")
    if "per_parameter_python_s" in r:
        print(
            f"   Python per parameter (step − kernel alone): {format_seconds(r['per_parameter_python_s'])}"
        )
    for t in r["targets"]:
        print(f"   target {t['what']}: {t['value']:.3g} {'met' if t['met'] else 'NOT met'}")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}"
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per case")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=os.cpu_count(),
        help="torch.set_num_threads (default: all cores)",
    )
    parser.add_argument(
        "--callgrind", action="store_true", help="also count instructions per tiny step (slow)"
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"JSON results (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    results = {
        "machine": machine(),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "numba_threads": __import__("numba").get_num_threads(),
        "torch": torch.__version__ if torch is not None else None,
        "hand_written_check_rel_diff": _check_hand_loop(),
        "cases": {},
    }
    runners = {
        "tiny": lambda: [case_tiny(args.repeats)],
        "keras": lambda: [case_keras(args.repeats)],
        "many": lambda: [
            case_many(500, 1000, args.repeats, args.torch_threads),
            case_many(500, 1000, args.repeats, args.torch_threads, new_grads=True),
        ],
        "many10k": lambda: [case_many(10_000, 100, max(3, args.repeats // 2), args.torch_threads)],
        "minimize": lambda: [case_minimize(args.repeats)],
        "first": lambda: [case_first()],
    }
    for name in chosen:
        for r in runners[name]():
            results["cases"][r["label"]] = r
            _print_case(r)
    if args.callgrind:
        results["callgrind_instructions_per_tiny_step"] = counts = callgrind_counts()
        print("== instructions per tiny step (callgrind)")
        print("   " + ", ".join(f"{k}: {v:.4g}" for k, v in counts.items()) + "\n")
    targets = [(r["label"], t) for r in results["cases"].values() for t in r["targets"]]
    results["targets"] = [{"case": label, **t} for label, t in targets]
    print(
        "targets: "
        + (
            "; ".join(
                f"{label}: {t['what']} = {t['value']:.3g} {'met' if t['met'] else 'NOT met'}"
                for label, t in targets
            )
            or "none run"
        )
    )
    path = write_json(args.out, results)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
