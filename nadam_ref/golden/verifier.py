"""The verifier: does another implementation's output meet a golden case?

:func:`verify` compares each recorded step's θ (and m, v, ∏μ where the
output has them) with the correctly rounded exact values, element by element,
against the case's tolerances.  It reports the first step and element that
leave tolerance, the error in ulps, which quantity left first (within a step
in the order they are computed: m, v, θ), and, on failure, a diagnosis: the
other profile or known mistake (:mod:`nadam_ref.golden.diagnosis`) whose
replay comes closest to the output.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import diagnosis as _diagnosis
from .format import Case, GoldenFormatError, loads
from .reference import replay

#: Within a step, the order the quantities are computed in.
ORDER = ("exp_avg", "exp_avg_sq", "param", "mu_product")
NAMES = {"exp_avg": "m", "exp_avg_sq": "v", "param": "θ", "mu_product": "∏μ"}
#: The diagnosis replays at most this many steps (the long case has 10⁵).
DIAGNOSIS_STEPS = 2000
#: A candidate explains an output when it is at least this many times closer than the case.
CLEARLY = 10.0


@dataclass
class Failure:
    """Where an output first leaves tolerance."""

    step: int
    quantity: str
    parameter: int
    index: tuple
    expected: complex | float
    actual: complex | float
    error: float
    tolerance: float
    ulps: float
    #: steps the case's checkpoint had taken before its step 1 (0: a fresh start)
    resumed_at: int = 0

    def __str__(self) -> str:
        where = f"parameter {self.parameter}" + (
            f" element {list(self.index)}" if self.index else ""
        )
        step = f"step {self.step}" + (
            f" (optimizer step {self.resumed_at + self.step})" if self.resumed_at else ""
        )
        return (
            f"{step}, {NAMES[self.quantity]} ({self.quantity}) of {where}: expected {self.expected!r}, "
            f"got {self.actual!r}, error {self.error:.3g} = {self.ulps:.4g} ulps > tolerance {self.tolerance:.3g}"
        )


@dataclass
class Diagnosis:
    """The closest explanation of a failing output; ``scores`` maps each
    candidate's name to its largest error in units of tolerance (≤ 1: it
    would pass as that candidate), ``expected_score`` the same for the case."""

    verdict: str
    best: str | None
    label: str | None
    matches: bool
    scores: dict = field(default_factory=dict)
    expected_score: float = math.inf
    steps: int = 0
    also: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The best candidate and every other one that explains the output as well."""
        return ([self.best] if self.best else []) + list(self.also)

    def __str__(self) -> str:
        return self.verdict


@dataclass
class Report:
    passed: bool
    case: str
    profile: str
    quantities: tuple
    steps_checked: int
    first_failure: Failure | None
    max_ulps: dict
    max_ratio: dict
    diagnosis: Diagnosis | None = None
    #: plain-words remarks on the output (e.g. its dtype against the case's)
    notes: list = field(default_factory=list)

    @property
    def first_failing_step(self) -> int | None:
        return None if self.first_failure is None else self.first_failure.step

    def __str__(self) -> str:
        head = "PASS" if self.passed else "FAIL"
        checked = ", ".join(NAMES[q] for q in self.quantities)
        lines = [
            f"{head}: {self.case} (profile {self.profile}), {self.steps_checked} recorded steps, checked {checked}"
        ]
        for q in self.quantities:
            lines.append(
                f"  {NAMES[q]:>2}: max error {self.max_ulps[q]:.4g} ulps, {self.max_ratio[q]:.3g} of tolerance"
            )
        if self.first_failure is not None:
            lines.append(f"  first failure: {self.first_failure}")
        if self.diagnosis is not None:
            lines.append(f"  diagnosis: {self.diagnosis}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- reading an output ---------------------------------------------------------------------


def read_actual(actual, case: Case) -> dict[str, list[np.ndarray]]:
    """An implementation's output as {quantity: [array per parameter]}, rows
    at the case's recorded steps.

    Accepts a :class:`Case` (or a golden-format file), a path to an ``.npy``
    (one parameter, [steps, *shape]), an ``.npz`` (one such array per
    parameter, in order), a ``.csv`` (one row per step, all parameters'
    elements flattened and concatenated; an optional header line), or the
    same in memory: an array, a list of arrays, a dict {quantity: list}.
    """
    if isinstance(actual, (str, Path)):
        path = Path(actual)
        data = path.read_bytes()  # OSError if it cannot be read at all
        try:
            return _normalize(_read_bytes(data, path, case), case)
        except GoldenFormatError:
            raise
        except Exception as e:  # whatever a corrupted file provokes is a format error
            message = " ".join(str(e).split())[:120]
            raise GoldenFormatError(
                f"ACTUAL {path.name}: unreadable ({type(e).__name__}: {message})"
            ) from None
    return _normalize(actual, case)


def _normalize(actual, case: Case) -> dict[str, list[np.ndarray]]:
    if isinstance(actual, Case):
        out = {q: actual.expected[q] for q in ("param", "exp_avg", "exp_avg_sq", "mu_product")}
        if actual.record_steps != case.record_steps:
            raise GoldenFormatError("ACTUAL is a golden file recorded at other steps than the case")
    elif isinstance(actual, dict):
        out = {
            q: actual[q] for q in ("param", "exp_avg", "exp_avg_sq", "mu_product") if q in actual
        }
        if "param" not in out:
            raise GoldenFormatError("ACTUAL: a dict output needs at least 'param'")
    elif isinstance(actual, np.ndarray):
        out = {"param": [actual]}
    elif isinstance(actual, (list, tuple)):
        out = {"param": list(actual)}
    else:
        raise GoldenFormatError(f"ACTUAL: cannot read a {type(actual).__name__}")
    return {q: _rows(q, arrays, case) for q, arrays in out.items()}


def _rows(q: str, arrays, case: Case) -> list[np.ndarray]:
    n = len(case.params0)
    if len(arrays) != n:
        raise GoldenFormatError(
            f"ACTUAL: {len(arrays)} arrays for {NAMES[q]}, the case has {n} parameters"
        )
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.dtype.kind not in "fci":
            raise GoldenFormatError(
                f"ACTUAL: {NAMES[q]} of parameter {i} has dtype {a.dtype}, not numbers"
            )
        shape = () if q == "mu_product" else case.shapes[i]
        if a.shape[1:] != shape and a.size in (
            case.steps * math.prod(shape),
            len(case.record_steps) * math.prod(shape),
        ):
            a = a.reshape((-1,) + shape)
        if a.shape[1:] != shape:
            raise GoldenFormatError(
                f"ACTUAL: {NAMES[q]} of parameter {i} has shape {list(a.shape)}, "
                f"expected [steps, {', '.join(map(str, shape))}]"
            )
        if a.shape[0] == case.steps:
            a = a[np.array(case.record_steps) - 1]
        elif a.shape[0] != len(case.record_steps):
            expected = f"{case.steps}, one per step"
            if len(case.record_steps) != case.steps:
                expected = (
                    f"{case.steps} (every step) or {len(case.record_steps)} (the recorded steps)"
                )
            raise GoldenFormatError(
                f"ACTUAL: {NAMES[q]} of parameter {i} has {a.shape[0]} rows; expected {expected}"
            )
        out.append(a)
    return out


def _read_bytes(data: bytes, path: Path, case: Case):
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise GoldenFormatError(f"{path}: not a readable .npy ({type(e).__name__})") from None
    if suffix == ".npz":
        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
            files = list(z.files)
        except Exception as e:
            raise GoldenFormatError(f"{path}: not a readable .npz ({type(e).__name__})") from None
        if "meta" in files:
            return loads(data, source=str(path))
        arrays = []
        for k in files:
            try:
                arrays.append(z[k])
            except Exception as e:
                raise GoldenFormatError(
                    f"{path}: member {k!r} of the .npz is unreadable ({type(e).__name__})"
                ) from None
        return arrays
    if suffix == ".csv":
        return _read_csv(data, path, case)
    if suffix == ".safetensors":
        return _read_safetensors(data, path, case)
    return loads(data, source=str(path))


def _read_safetensors(data: bytes, path: Path, case: Case) -> dict:
    """A safetensors output: ``param.{i}`` (θ after each step, [steps, *shape];
    complex as a trailing (real, imag) axis of 2), optionally ``exp_avg.{i}``,
    ``exp_avg_sq.{i}`` and ``mu_product.{i}``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_safetensors

    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, TypeError) as e:
        message = " ".join(str(e).split())[:120]
        raise GoldenFormatError(
            f"{path.name}: not a readable safetensors file ({message})"
        ) from None
    n = len(case.params0)
    out = {}
    for q in ("param", "exp_avg", "exp_avg_sq", "mu_product"):
        names = [f"{q}.{i}" for i in range(n)]
        present = [k for k in names if k in tensors]
        if not present:
            continue
        if len(present) != n:
            missing = next(k for k in names if k not in tensors)
            raise GoldenFormatError(f"{path.name}: has {present[0]} but no tensor {missing!r}")
        arrays = [tensors[k] for k in names]
        if case.dtype.kind == "c" and q != "mu_product":
            arrays = [_complex_view(a, k, path) for a, k in zip(arrays, names)]
        out[q] = arrays
    if "param" not in out:
        found = ", ".join(sorted(tensors)[:6]) or "no tensors"
        raise GoldenFormatError(f"{path.name}: no tensor 'param.0' (found {found})")
    return out


def _complex_view(a: np.ndarray, name: str, path: Path) -> np.ndarray:
    if a.dtype.kind == "c":
        return a
    if a.ndim == 0 or a.shape[-1] != 2 or a.dtype not in (np.float32, np.float64):
        raise GoldenFormatError(
            f"{path.name}: {name} of a complex case must end in an axis of 2 (real, imag), "
            f"got shape {list(a.shape)} {a.dtype}"
        )
    a = np.ascontiguousarray(a)
    return a.view(np.complex64 if a.dtype == np.float32 else np.complex128)[..., 0]


def _read_csv(data: bytes, path: Path, case: Case):
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline="")))
    except csv.Error as e:
        raise GoldenFormatError(f"{path}: not a readable CSV ({e})") from None
    try:
        float(rows[0][0])
    except (IndexError, ValueError):
        rows = rows[1:]  # a header
    try:
        table = np.array([[float(x) for x in r] for r in rows if r], dtype=np.float64)
    except ValueError as e:
        raise GoldenFormatError(f"{path}: not a numeric CSV ({e})") from None
    sizes = [math.prod(s) * (2 if case.dtype.kind == "c" else 1) for s in case.shapes]
    if table.ndim != 2 or table.shape[1] != sum(sizes):
        raise GoldenFormatError(
            f"{path}: has {table.shape[-1] if table.ndim == 2 else 0} columns, "
            f"expected {sum(sizes)} (all parameters' elements)"
        )
    out, start = [], 0
    for s, size in zip(case.shapes, sizes):
        block = table[:, start : start + size]
        start += size
        if case.dtype.kind == "c":
            block = block[:, 0::2] + 1j * block[:, 1::2]
        out.append(block.astype(case.dtype).reshape((-1,) + s))
    return out


# -- comparing -----------------------------------------------------------------------------


def _excess(actual: np.ndarray, expected: np.ndarray, tol: np.ndarray):
    """Error, its ratio to tolerance (inf where non-finite values disagree), for real or complex."""
    a, e, t = np.asarray(actual), np.asarray(expected), np.asarray(tol)
    if e.dtype.kind == "c":
        parts = [(np.asarray(a).real, e.real, t.real), (np.asarray(a).imag, e.imag, t.imag)]
    else:
        parts = [(a.real if a.dtype.kind == "c" else a, e, t)]
    err = ratio = None
    for pa, pe, pt in parts:
        pa = pa.astype(np.float64)
        pe = pe.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(pa - pe)
            same = (pa == pe) | (np.isnan(pa) & np.isnan(pe))
            d = np.where(same, 0.0, np.where(np.isnan(d), np.inf, d))
            r = np.where(d == 0, 0.0, d / np.where(pt > 0, pt, np.finfo(np.float64).tiny))
        err = d if err is None else np.maximum(err, d)
        ratio = r if ratio is None else np.maximum(ratio, r)
    return err, ratio


def _ulps(err, expected, dtype):
    real = np.zeros(0, dtype).real.dtype
    e = np.abs(np.asarray(expected))
    with np.errstate(invalid="ignore", divide="ignore"):
        sp = np.spacing(np.where(np.isfinite(e), e, 0).astype(real)).astype(np.float64)
        return err / sp


def _state_dtype(case: Case, i: int):
    return case.rules[i].get("state_dtype") or np.float64


def score(
    case: Case, actual_param: list[np.ndarray], trajectory: list[np.ndarray], upto: int
) -> float:
    """Largest |actual − trajectory| in units of the case's θ tolerance, over recorded steps ≤ ``upto``."""
    rows = sum(1 for s in case.record_steps if s <= upto)
    worst = 0.0
    for i in range(len(case.params0)):
        _, r = _excess(
            actual_param[i][:rows], trajectory[i][:rows], case.tolerance["param"][i][:rows]
        )
        if r.size:
            worst = max(worst, float(np.max(r)))
    return worst


def verify(
    case: Case, actual, *, diagnose: bool = True, exclude_profiles: Sequence[str] = ()
) -> Report:
    """Check ``actual`` against ``case`` (see :func:`read_actual` for the
    forms ``actual`` may take); returns a :class:`Report`.  On failure the
    diagnosis tries every profile but those in ``exclude_profiles``."""
    got = read_actual(actual, case)
    quantities = tuple(q for q in ORDER if q in got)
    first, max_ulps, max_ratio = None, {}, {}
    ratios = {}
    for q in quantities:
        ratios[q] = []
        mu, mr = 0.0, 0.0
        for i in range(len(case.params0)):
            exp, tol = case.expected[q][i], case.tolerance[q][i]
            err, ratio = _excess(got[q][i], exp, tol)
            dtype = _state_dtype(case, i) if q == "mu_product" else case.dtype
            if err.size:
                mu = max(mu, float(np.max(_ulps(err, exp, dtype))))
                mr = max(mr, float(np.max(ratio)))
            ratios[q].append((err, ratio))
        max_ulps[q], max_ratio[q] = mu, mr
    for r, step in enumerate(case.record_steps):
        for q in quantities:
            for i in range(len(case.params0)):
                err, ratio = ratios[q][i]
                bad = np.flatnonzero(ratio[r].reshape(-1) > 1)
                if bad.size:
                    k = int(bad[0])
                    shape = case.expected[q][i].shape[1:]
                    index = tuple(int(x) for x in np.unravel_index(k, shape)) if shape else ()
                    exp = case.expected[q][i][r].reshape(-1)[k]
                    act = np.asarray(got[q][i][r]).reshape(-1)[k]
                    e = float(err[r].reshape(-1)[k])
                    dtype = _state_dtype(case, i) if q == "mu_product" else case.dtype
                    first = Failure(
                        step=step,
                        quantity=q,
                        parameter=i,
                        index=index,
                        expected=exp.item(),
                        actual=act.item(),
                        error=e,
                        tolerance=float(np.abs(case.tolerance[q][i][r].reshape(-1)[k])),
                        ulps=float(_ulps(np.array(e), exp, dtype)),
                        resumed_at=int(case.start["step"][i]) if case.start else 0,
                    )
                    break
            if first:
                break
        if first:
            break
    report = Report(
        first is None,
        case.name,
        case.profile,
        quantities,
        len(case.record_steps),
        first,
        max_ulps,
        max_ratio,
    )
    if first is not None:
        report.notes = dtype_notes(case, got["param"])
        if diagnose:
            report.diagnosis = diagnose_output(
                case, got["param"], first_step=first.step, exclude_profiles=exclude_profiles
            )
            report.notes += report.diagnosis.notes
    return report


def dtype_notes(case: Case, actual_param: list[np.ndarray]) -> list[str]:
    """Say in plain words when the output's precision cannot be the case's."""
    want = np.dtype(np.zeros(0, case.dtype).real.dtype)
    if want != np.float64:
        return []
    got = {np.dtype(np.zeros(0, np.asarray(a).dtype).real.dtype) for a in actual_param}
    if np.dtype(np.float32) in got:
        return [
            f"your output is float32 but this case is {case.dtype.name}: a float32 "
            "implementation cannot meet float64 tolerances; check it against the float32 "
            "cases, or compute in float64"
        ]
    real = [as_real_values(a) for a in actual_param]
    expected = [as_real_values(a) for a in case.expected["param"]]
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = all(np.array_equal(x.astype(np.float32).astype(np.float64), x) for x in real)
        trivially = all(
            np.array_equal(x.astype(np.float32).astype(np.float64), x) for x in expected
        )
    if narrow and not trivially:
        return [
            f"every θ in your output is a float32 number written as float64, but this case is "
            f"{case.dtype.name}: your implementation seems to compute in float32"
        ]
    return []


def as_real_values(a) -> np.ndarray:
    a = np.asarray(a)
    return (
        np.stack([a.real, a.imag]).astype(np.float64)
        if a.dtype.kind == "c"
        else a.astype(np.float64)
    )


def diagnose_output(
    case: Case,
    actual_param: list[np.ndarray],
    *,
    first_step: int = 1,
    exclude_profiles: Sequence[str] = (),
) -> Diagnosis:
    """Replay every candidate (:func:`nadam_ref.golden.diagnosis.candidates`)
    and name the one that explains the output, if one is clearly closer to it
    than the case itself (:data:`CLEARLY` times closer); otherwise say
    "unexplained" and list the three closest.  The replays run a few times
    past the first failing step (at least 100 steps, at most
    :data:`DIAGNOSIS_STEPS`)."""
    upto = min(case.steps, DIAGNOSIS_STEPS, max(100, 4 * first_step))
    expected_score = score(case, actual_param, case.expected["param"], upto)
    found, alone = [], {}
    cands = _diagnosis.candidates(case, exclude_profiles)
    for cand in cands:  # each profile alone first (the case's own: its float replay)
        if cand.mistake is None:
            alone[cand.profile] = replay(case, steps=upto, **cand.replay)["param"]
            found.append((score(case, actual_param, alone[cand.profile], upto), cand))
    for cand in cands:
        if cand.mistake is None:
            continue
        traj = replay(case, steps=upto, **cand.replay)["param"]
        if cand.profile not in alone:
            alone[cand.profile] = replay(case, steps=upto, rules=cand.replay["rules"])["param"]
        if all(np.array_equal(a, b, equal_nan=True) for a, b in zip(traj, alone[cand.profile])):
            continue  # the mistake changes nothing under this profile (e.g. ∏_{t+1} unused)
        found.append((score(case, actual_param, traj, upto), cand))
    if not found:
        return Diagnosis("unexplained: no alternative applies to this case", None, None, False)
    # Closest first; among those within tolerance the simplest explanation first:
    # another profile alone, then the case's own profile with one mistake, then another
    # profile with a mistake (and the catalogue's order, real bugs first, breaks ties).
    found.sort(key=lambda sc: (sc[0] > 1, _changes(case, sc[1]) if sc[0] <= 1 else 0, sc[0]))
    scores = {c.name: s for s, c in found}
    s, best = found[0]
    by = f"{expected_score / s:.3g} times closer than" if s else "infinitely closer than"
    if s <= 1.0 and s * CLEARLY <= expected_score:
        # other explanations, not the same mistake under yet another profile
        also = [
            c
            for sc, c in found[1:]
            if sc <= 1.0 and (c.mistake is None or c.mistake != best.mistake)
        ]
        if s == 0:
            verdict = (
                f"matches {best.label} exactly (the case itself is {expected_score:.3g} "
                "of tolerance away)"
            )
        else:
            verdict = (
                f"matches {best.label} (within its tolerance: {s:.3g}; {by} the case "
                f"itself, {expected_score:.3g})"
            )
        if also:
            verdict += "; equally consistent with " + "; ".join(c.label for c in also[:3])
            if len(also) > 3:
                verdict += f" and {len(also) - 3} more"
        diagnosis = Diagnosis(
            verdict,
            best.name,
            best.label,
            True,
            scores,
            expected_score,
            upto,
            [c.name for c in also],
        )
    elif s * CLEARLY <= expected_score:
        verdict = (
            f"closest to {best.label}: {s:.3g} of tolerance, {by} the case itself "
            f"({expected_score:.3g}), but not within tolerance"
        )
        diagnosis = Diagnosis(verdict, best.name, best.label, False, scores, expected_score, upto)
    else:
        three = "; ".join(f"{c.label} at {sc:.3g}" for sc, c in found[:3])
        verdict = (
            "unexplained: no profile or known mistake is clearly closer than the case itself "
            f"({expected_score:.3g} of tolerance); the closest: {three}"
        )
        diagnosis = Diagnosis(verdict, None, None, False, scores, expected_score, upto)
    diagnosis.notes = _state_notes(case, diagnosis)
    return diagnosis


def _changes(case: Case, cand) -> int:
    """How far a candidate is from the case: 0 another profile, 1 the case's own
    profile with a mistake, 2 another profile with a mistake."""
    if cand.mistake is None:
        return 0
    return 1 if "+" not in cand.name else 2


def _state_notes(case: Case, diagnosis: Diagnosis) -> list[str]:
    """Say in plain words when an output is torch's other scalar state."""
    if case.profile != "torch" or diagnosis.best not in ("torch:float32", "torch:float64"):
        return []
    if np.zeros(0, case.dtype).real.dtype != np.float64:
        return []
    state = case.profile_options.get("scalar_state", "float32")
    if diagnosis.best == "torch:float64" and state == "float32":
        return [
            "your output keeps the step and ∏μ in float64; this case follows torch's default, "
            "which stores them as float32 tensors even for float64 parameters (torch with "
            "float64 as its default dtype keeps them in float64: check your port against "
            "torch-float64-state64, or keep ∏μ in float32 as torch does)"
        ]
    if diagnosis.best == "torch:float32" and state == "float64":
        return [
            "your output keeps ∏μ in float32, as torch's default does even for float64 "
            "parameters; this case keeps it in float64 (torch with float64 as its default dtype)"
        ]
    return []
