"""``nadam-ref golden list|generate|verify``: the golden vectors from the shell.

    nadam-ref golden list
    nadam-ref golden generate --suite [--out DIR] [--only CASE ...]
    nadam-ref golden generate --profile torch --dtype float32 --steps 50 --shape 3,4 --seed 0 --out case.json
    nadam-ref golden generate --shape 1000000 --steps 100 --record-steps 1,10,100 --workers 2 --out big.npz
    nadam-ref golden verify CASE ACTUAL
    nadam-ref golden run [CASE ... | --suite] [--profile P] [--junit FILE] [--json FILE] -- COMMAND ARGS...

CASE is a golden file, or a suite case by its name (``torch-float32``) or its
file name (``torch-float32.json``, as ``list`` prints it); ACTUAL is another
implementation's output: a golden-format file, or θ per step as ``.npy``
([steps, *shape], one parameter), ``.npz`` (one such array per parameter, in
order) or ``.csv`` (one row per step).  verify exits 0 when the output meets
the case's tolerances, 1 when it does not, 2 when a file cannot be read.
run runs COMMAND on each case ({case}: the inputs, {out}: where to write θ
after each step; see :mod:`nadam_ref.golden.runner`) and exits 0 when every
case passes, 1 when one fails or errs, 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from ..profiles import PROFILES
from .format import GoldenFormatError


def _shape(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "()", "scalar"):
        return ()
    try:
        shape = tuple(int(x) for x in text.strip("()[]").split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a shape is integers separated by commas (e.g. 3,4), got {text!r}"
        ) from None
    if any(n < 0 for n in shape):
        raise argparse.ArgumentTypeError(f"a shape cannot have negative sizes: {text!r}")
    return shape


def _steps(text: str) -> list[int]:
    """'1,10,50-100,200-1000:100' → the listed steps, ranges inclusive."""
    out = []
    try:
        for item in text.split(","):
            span, _, stride = item.partition(":")
            a, _, b = span.partition("-")
            lo, hi = int(a), int(b or a)
            out.extend(range(lo, hi + 1, int(stride or 1)))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"record steps are integers and ranges A-B[:STRIDE] separated by commas, got {text!r}"
        ) from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"record steps must be ≥ 1, got {text!r}")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nadam-ref golden", description="Golden test vectors for NAdam."
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the suite's cases")

    g = sub.add_parser("generate", help="generate one case, or the whole suite (--suite)")
    g.add_argument(
        "--suite",
        action="store_true",
        help="regenerate the suite shipped in the package, into --out or the current directory",
    )
    g.add_argument(
        "--only",
        nargs="+",
        metavar="CASE",
        help="with --suite: only these cases (names or file names)",
    )
    g.add_argument(
        "--out",
        help="output file (.json or .npz) for one case; directory for --suite "
        "(default: the current directory; the installed suite is never written)",
    )
    g.add_argument("--name", default=None, help="the case's name (default: from the options)")
    g.add_argument(
        "--profile",
        default="torch",
        help=f"one of {', '.join(sorted(PROFILES))} (default torch)",
    )
    g.add_argument("--dtype", default="float32", help="float32, float64, complex64 or complex128")
    g.add_argument("--steps", type=int, default=10)
    g.add_argument(
        "--shape",
        type=_shape,
        action="append",
        help="a parameter's shape, e.g. 3,4; repeat for several",
    )
    g.add_argument("--seed", type=int, default=0)
    for name in ("lr", "beta1", "beta2", "eps", "momentum-decay", "weight-decay"):
        g.add_argument(f"--{name}", type=float, default=None, help="(default: the profile's)")
    g.add_argument("--decoupled", action="store_true", help="decoupled weight decay")
    g.add_argument("--maximize", action="store_true")
    g.add_argument(
        "--scalar-state",
        choices=("float32", "float64"),
        help="torch: dtype of the stored step and ∏μ",
    )
    g.add_argument(
        "--grad-kind", default="normal", choices=("normal", "zeros", "constant", "choice")
    )
    g.add_argument("--grad-scale", type=float, default=1.0)
    g.add_argument(
        "--closed-loop",
        action="store_true",
        help="gradient = θ (f = ½‖θ‖²) instead of stored gradients",
    )
    g.add_argument(
        "--lr-schedule",
        metavar="FILE",
        help="the learning rate of each step: a text file of numbers, one per step "
        "(with --resume-after K: K + steps of them)",
    )
    g.add_argument(
        "--resume-after",
        type=int,
        default=0,
        metavar="K",
        help="the case resumes from the exact state after K steps (a checkpoint)",
    )
    g.add_argument(
        "--record-steps",
        type=_steps,
        default=None,
        metavar="STEPS",
        help="steps to record, e.g. 1,10,50-100 or 10-100:10 (default: every step)",
    )
    g.add_argument(
        "--method",
        choices=("fast", "mpmath"),
        default="fast",
        help="fast: compiled double-double with mpmath fallback (the same bits); "
        "mpmath: the reference oracle (default fast)",
    )
    g.add_argument(
        "--workers", type=int, default=1, help="processes for the fast oracle (default 1)"
    )
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the fast oracle on a Dask cluster (needs the 'distributed' extra)",
    )
    g.add_argument(
        "--stats",
        metavar="FILE",
        help="write the fast oracle's statistics as JSON, with the elements it handed to mpmath",
    )

    v = sub.add_parser("verify", help="check an implementation's output against a case")
    v.add_argument("case", help="a golden file, or a suite case by name or file name (see 'list')")
    v.add_argument("actual", help="the output: golden-format file, or θ per step as .npy/.npz/.csv")
    v.add_argument("--no-diagnosis", action="store_true", help="skip the diagnosis of a failure")
    v.add_argument(
        "--exclude-profile",
        action="append",
        default=[],
        metavar="P",
        help="the diagnosis leaves profile P out of its candidates (repeatable)",
    )

    from .runner import DEFAULT_TIMEOUT, INPUT_FORMS, OUTPUT_FORMS

    r = sub.add_parser(
        "run",
        help="run a program over cases and verify each output",
        usage="nadam-ref golden run [CASE ... | --suite] [options] -- COMMAND ARGS...",
        description="Runs COMMAND once per case. In ARGS, {case} is replaced by the case's "
        "inputs (a file in --input-form), {out} by the file the program writes θ after every "
        "step to (in --output-form); also {name}, {profile}, {dtype}.",
    )
    r.add_argument("cases", nargs="*", metavar="CASE", help="golden files or suite case names")
    r.add_argument("--suite", action="store_true", help="every case of the shipped suite")
    r.add_argument(
        "--profile", action="append", help="only the cases of this profile (repeat for several)"
    )
    r.add_argument("--dtype", action="append", help="only the cases of this dtype (repeatable)")
    r.add_argument(
        "--exclude", action="append", default=[], help="leave out this case (repeatable)"
    )
    r.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds one case may run before it is killed (default {DEFAULT_TIMEOUT:g})",
    )
    r.add_argument("--input-form", choices=INPUT_FORMS, default="safetensors")
    r.add_argument("--output-form", choices=OUTPUT_FORMS, default="safetensors")
    r.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    r.add_argument("--json", metavar="FILE", help="write the results as JSON")
    r.add_argument("--keep", metavar="DIR", help="keep each case's inputs and outputs in DIR")
    r.add_argument("--no-diagnosis", action="store_true", help="skip the diagnosis of failures")
    r.add_argument(
        "--exclude-profile",
        action="append",
        default=[],
        metavar="P",
        help="the diagnosis leaves profile P out of its candidates (repeatable)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = []
    if argv[:1] == ["run"] and "--" in argv:
        k = argv.index("--")
        argv, command = argv[:k], argv[k + 1 :]
    args = parser().parse_args(argv)
    args.program = command
    try:
        return {"list": _list, "generate": _generate, "verify": _verify, "run": _run}[args.command](
            args
        )
    except BrokenPipeError:  # e.g. `nadam-ref golden list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except GoldenFormatError as e:
        print(f"nadam-ref golden: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"nadam-ref golden: {e}", file=sys.stderr)
        return 2


def _list(args) -> int:
    from .suite import SUITE, case_file, suite_path

    print(f"{'case':<30} {'profile':<16} {'dtype':<10} {'shapes':<18} {'steps':>6}  file")
    for name, (_ext, o) in SUITE.items():
        shapes = ";".join(",".join(map(str, s)) or "()" for s in o.get("shapes", [(3,)]))
        print(
            f"{name:<30} {o.get('profile', 'torch'):<16} {o.get('dtype', 'float32'):<10} {shapes:<18} "
            f"{o.get('steps', 10):>6}  {case_file(name)}"
        )
    print(f"\n{len(SUITE)} cases in {suite_path()}")
    return 0


def _generate(args) -> int:
    from .suite import write_suite

    if args.workers < 1:
        raise ValueError(f"--workers must be ≥ 1, got {args.workers}")
    if args.suite:
        write_suite(
            Path(args.out or "."),
            args.only,
            progress=lambda p: print(f"wrote {p}"),
            method=args.method,
        )
        return 0
    if args.only:
        raise ValueError("--only goes with --suite")
    if not args.out:
        raise ValueError("generate needs --out FILE (.json or .npz), or --suite")
    from .format import save
    from .generate import make_case

    hp = {
        k: getattr(args, k)
        for k in ("lr", "beta1", "beta2", "eps", "momentum_decay", "weight_decay")
        if getattr(args, k) is not None
    }
    if args.decoupled:
        hp["decoupled_weight_decay"] = True
    if args.maximize:
        hp["maximize"] = True
    shapes = args.shape or [(3,)]
    name = args.name or f"{args.profile}-{args.dtype}-seed{args.seed}"
    argv_out = sys.argv[1:] if sys.argv and sys.argv[0].endswith("nadam-ref") else []
    element_steps = args.steps * sum(math.prod(s) for s in shapes)
    if args.method == "fast" and element_steps >= 1_000_000 and args.scheduler is None:
        from .fast_oracle import estimate_seconds

        seconds, rate = estimate_seconds(element_steps, args.workers)
        print(
            f"{element_steps:.3g} element-steps: about {_duration(seconds)} on "
            f"{args.workers} worker(s) (calibrated here: {rate:.3g} element-steps/s each)",
            file=sys.stderr,
        )
    stats = {}
    case = make_case(
        name,
        profile=args.profile,
        dtype=args.dtype,
        shapes=shapes,
        steps=args.steps,
        seed=args.seed,
        hyperparameters=hp,
        profile_options={"scalar_state": args.scalar_state} if args.scalar_state else None,
        grad_kind=args.grad_kind,
        grad_scale=args.grad_scale,
        loop="closed:sphere" if args.closed_loop else "open",
        record_steps=args.record_steps,
        generated_by=" ".join(["nadam-ref", *argv_out]) if argv_out else "",
        lr_schedule=_schedule_file(args.lr_schedule) if args.lr_schedule else None,
        resume_after=args.resume_after,
        method=args.method,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=None,  # a bar where stderr is a terminal
        stats=stats,
    )
    path = save(case, args.out)
    print(f"wrote {path}: {case!r}")
    if stats and args.stats:
        Path(args.stats).write_text(json.dumps({**stats, "flagged": stats["flagged"]}) + "\n")
    if stats:
        print(
            f"fast oracle: {stats['element_steps']:.3g} element-steps in "
            f"{_duration(stats['seconds'])}, {stats['fallback']} of {stats['elements']} "
            "elements recomputed by the mpmath path"
        )
    return 0


def _schedule_file(path: str) -> list[float]:
    """Numbers separated by white space or commas, one per step."""
    text = Path(path).read_text()
    try:
        return [float(x) for x in text.replace(",", " ").split()]
    except ValueError as e:
        raise ValueError(f"--lr-schedule {path}: not a list of numbers ({e})") from None


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _verify(args) -> int:
    from .format import load
    from .suite import suite_path
    from .verifier import verify

    case_path = Path(args.case)
    if not case_path.exists():
        try:
            case_path = suite_path(args.case)
        except ValueError:
            raise FileNotFoundError(
                f"{args.case}: no such file, nor a suite case ('nadam-ref golden list' shows them)"
            ) from None
    case = load(case_path)
    report = verify(
        case, args.actual, diagnose=not args.no_diagnosis, exclude_profiles=args.exclude_profile
    )
    print(report)
    return 0 if report.passed else 1


def _run(args) -> int:
    from .format import load
    from .runner import (
        RunnerError,
        exit_status,
        progress_printer,
        run,
        summary,
        write_json,
        write_junit,
    )
    from .suite import SUITE, suite_path

    if not args.program:
        print(
            "nadam-ref golden run: give the program after --, e.g. -- ./nadam {case} {out}",
            file=sys.stderr,
        )
        return 2
    names = list(args.cases)
    if args.suite:
        names += [n for n in SUITE if n not in names]
    if not names:
        print("nadam-ref golden run: name cases, or --suite", file=sys.stderr)
        return 2
    selected = []
    for name in names:
        path = Path(name)
        if not path.exists():
            try:
                path = suite_path(name)  # a suite case by its name or its file's name
            except ValueError:
                print(f"nadam-ref golden run: no file and no suite case {name!r}", file=sys.stderr)
                return 2
            name = path.stem
            opts = SUITE[name][1]
            profile, dtype = opts.get("profile", "torch"), opts.get("dtype", "float32")
        else:
            profile = dtype = None  # known once loaded
        if name in args.exclude:
            continue
        selected.append((name, path, profile, dtype))

    def wanted(case):
        return (not args.profile or case.profile in args.profile) and (
            not args.dtype or case.dtype.name in args.dtype
        )

    # Suite cases are filtered by their declared profile and dtype before loading;
    # files after loading (one that does not match is not run).
    cases = []
    for name, path, profile, dtype in selected:
        if profile is not None and (
            (args.profile and profile not in args.profile)
            or (args.dtype and dtype not in args.dtype)
        ):
            continue
        cases.append((name, path, profile is None))
    loaders = []
    for name, path, check in cases:
        if check:
            try:
                case = load(path)
            except (GoldenFormatError, OSError) as e:
                print(f"nadam-ref golden run: {e}", file=sys.stderr)
                return 2
            if not wanted(case):
                continue
            loaders.append((name, lambda case=case: case))
        else:
            loaders.append((name, lambda path=path: load(path)))
    if not loaders:
        print("nadam-ref golden run: no case matches the selection", file=sys.stderr)
        return 2
    callback, close = progress_printer(len(loaders))
    try:
        results = run(
            loaders,
            args.program,
            timeout=args.timeout,
            input_form=args.input_form,
            output_form=args.output_form,
            workdir=Path(args.keep) if args.keep else None,
            diagnose=not args.no_diagnosis,
            exclude_profiles=args.exclude_profile,
            progress=callback,
        )
    except RunnerError as e:
        print(f"nadam-ref golden run: {e}", file=sys.stderr)
        return 2
    finally:
        close()
    print(summary(results))
    if args.junit:
        write_junit(results, args.junit, args.program)
    if args.json:
        write_json(results, args.json, args.program)
    return exit_status(results)
