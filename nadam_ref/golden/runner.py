"""The conformance runner: run another implementation's program over golden
cases and say, case by case, whether it passes (``nadam-ref golden run``).

    nadam-ref golden run --suite --profile torch -- ./nadam {case} {out}

For each case the runner writes the case's inputs to a file, runs the
command with ``{case}`` replaced by that file's path and ``{out}`` by the
path where the program must write its output, waits (at most ``--timeout``
seconds), reads the output and verifies it (:func:`nadam_ref.golden.verify`,
with the diagnosis on failure).  A crash, a non-zero exit, a hang or an
unreadable output is that case's error; the other cases still run.
``{name}``, ``{profile}`` and ``{dtype}`` are replaced too.

Input forms (``--input-form``)
------------------------------
``safetensors`` (the default; readable in C with the standard library): an
8-byte little-endian header length N, N bytes of JSON, then the raw
little-endian arrays at the byte ranges the header gives.  The header's
``__metadata__`` holds strings: ``case.name``, ``case.profile``,
``case.dtype`` (float32, float64, complex64, complex128), ``case.loop``
(``open``, or ``closed:sphere``: the gradient of every step is θ itself and
there is no ``grad.{i}``), ``case.steps``, ``case.parameters`` (n), and
``option.K`` for each of the profile's options (``option.scalar_state``:
the dtype torch stores its step and ∏μ in).  Tensors, for each parameter
i < n, in the case's real dtype (F32 or F64; a complex array has a trailing
axis of 2, (real, imag), as ``torch.view_as_real``)::

    param.{i}        θ at the start                         shape
    grad.{i}         the gradient of each step               [steps, *shape]
    exp_avg.{i}      m at the start (zeros unless resuming)  shape
    exp_avg_sq.{i}   v at the start (zeros unless resuming)  shape

and in F64: ``lr.{i}`` ([steps], the learning rate of each step, as given
to the framework), ``step.{i}`` and ``mu_product.{i}`` ([]: the stored
step count k and ∏_{j≤k} μ_j, 0 and 1 unless resuming; the case's step s
is then the optimizer's step k + s), and the hyperparameters as given to
the framework: ``beta1.{i}``, ``beta2.{i}``, ``eps.{i}``,
``momentum_decay.{i}`` (ψ; inf for a constant μ = β1), ``weight_decay.{i}``,
``decoupled_weight_decay.{i}`` and ``maximize.{i}`` (1 or 0), all [].

``json`` or ``npz``: the golden case itself (:mod:`nadam_ref.golden.format`).

Output forms (``--output-form``, the suffix of ``{out}``)
---------------------------------------------------------
``safetensors`` (the default): tensors ``param.{i}``, θ after every step
([steps, *shape], complex with a trailing axis of 2), and optionally
``exp_avg.{i}``, ``exp_avg_sq.{i}`` (same shape) and ``mu_product.{i}``
([steps]); F32 or F64.  ``csv``: one line per step, all parameters'
elements in order (write float64 with 17 significant digits, float32 with
9, and every number reads back exactly).  ``npz`` / ``npy``: as
``nadam-ref golden verify`` reads them.

Exit status: 0 every case passed, 1 some failed (or had an error), 2 the
runner could not run (bad arguments, no such case, the command not found).
``--junit FILE`` writes JUnit XML (what CI systems display), ``--json
FILE`` the same results as JSON.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..functional import as_real
from .format import Case, GoldenFormatError, save
from .verifier import Report, verify

INPUT_FORMS = ("safetensors", "json", "npz")
OUTPUT_FORMS = ("safetensors", "csv", "npz", "npy")
PLACEHOLDERS = ("{case}", "{out}", "{name}", "{profile}", "{dtype}")
#: Seconds a case's program may run (generous: the 10⁵-step case in plain Python takes a while).
DEFAULT_TIMEOUT = 600.0
#: How much of a program's stderr a report keeps.
TAIL = 2000


class RunnerError(Exception):
    """The runner cannot run at all (exit status 2)."""


@dataclass
class CaseResult:
    """One case's outcome: ``status`` is "pass", "fail" or "error"."""

    case: str
    profile: str
    dtype: str
    status: str
    seconds: float
    report: Report | None = None
    error: str | None = None
    stdout: str = ""
    stderr: str = ""

    @property
    def first_failure(self) -> str | None:
        r = self.report
        return None if r is None or r.first_failure is None else str(r.first_failure)

    @property
    def diagnosis(self) -> str | None:
        r = self.report
        return None if r is None or r.diagnosis is None else str(r.diagnosis)

    def line(self) -> str:
        """One line for the terminal."""
        head = f"{self.status.upper():<5} {self.case} ({self.profile}, {self.dtype}, {self.seconds:.2f} s)"
        if self.status == "error":
            return f"{head}: {self.error}"
        if self.status == "fail":
            text = f"{head}\n      first failure: {self.first_failure}"
            if self.diagnosis:
                text += f"\n      diagnosis: {self.diagnosis}"
            for note in self.report.notes:
                text += f"\n      note: {note}"
            return text
        return head

    def to_dict(self) -> dict:
        r = self.report
        out = {
            "case": self.case,
            "profile": self.profile,
            "dtype": self.dtype,
            "status": self.status,
            "seconds": round(self.seconds, 4),
            "error": self.error,
            "first_failure": None,
            "diagnosis": None,
            "notes": [] if r is None else list(r.notes),
            "max_ratio": None if r is None else {k: _finite(v) for k, v in r.max_ratio.items()},
            "stderr_tail": self.stderr,
        }
        if r is not None and r.first_failure is not None:
            f = r.first_failure
            out["first_failure"] = {
                "step": f.step,
                "optimizer_step": f.resumed_at + f.step,
                "quantity": f.quantity,
                "parameter": f.parameter,
                "index": list(f.index),
                "expected": _finite(f.expected),
                "actual": _finite(f.actual),
                "error": _finite(f.error),
                "tolerance": _finite(f.tolerance),
                "ulps": _finite(f.ulps),
                "text": str(f),
            }
        if r is not None and r.diagnosis is not None:
            d = r.diagnosis
            out["diagnosis"] = {
                "verdict": d.verdict,
                "explained": d.best is not None,
                "best": d.best,
                "label": d.label,
                "matches": d.matches,
                "case_score": _finite(d.expected_score),
                "closest": [
                    {"name": k, "score": _finite(v)}
                    for k, v in sorted(d.scores.items(), key=lambda kv: kv[1])[:3]
                ],
            }
        return out


def _finite(x):
    """JSON has no inf or nan: as strings, like the golden format."""
    if isinstance(x, complex):
        return [_finite(x.real), _finite(x.imag)]
    x = float(x)
    return x if np.isfinite(x) else ("nan" if np.isnan(x) else ("inf" if x > 0 else "-inf"))


# -- the program's inputs ------------------------------------------------------------------


def write_inputs(case: Case, path: Path, form: str = "safetensors") -> Path:
    """Write ``case``'s inputs to ``path`` in ``form`` (see the module's docstring)."""
    if form in ("json", "npz"):
        return save(case, path)
    if form != "safetensors":
        raise RunnerError(f"unknown input form {form!r}; choose one of {list(INPUT_FORMS)}")
    from safetensors.numpy import save_file

    real = np.dtype(np.zeros(0, case.dtype).real.dtype)
    tensors = {}
    for i, p0 in enumerate(case.params0):
        step, mu_product, m, v = case.start_state(i)
        hp = case.group_of(i)["hyperparameters"]
        tensors[f"param.{i}"] = _real(p0, real)
        if case.grads is not None:
            tensors[f"grad.{i}"] = _real(case.grads[i], real)
        tensors[f"exp_avg.{i}"] = _real(m, real)
        tensors[f"exp_avg_sq.{i}"] = _real(v, real)
        tensors[f"lr.{i}"] = case.learning_rates(i)
        tensors[f"step.{i}"] = np.array(step, np.float64)
        tensors[f"mu_product.{i}"] = np.array(mu_product, np.float64)
        for k in ("beta1", "beta2", "eps", "momentum_decay", "weight_decay"):
            tensors[f"{k}.{i}"] = np.array(hp[k], np.float64)
        for k in ("decoupled_weight_decay", "maximize"):
            tensors[f"{k}.{i}"] = np.array(1.0 if hp[k] else 0.0)
    metadata = {
        "format": "nadam-ref-golden-input",
        "version": "2",
        "case.name": case.name,
        "case.profile": case.profile,
        "case.dtype": case.dtype.name,
        "case.loop": case.loop,
        "case.steps": str(case.steps),
        "case.parameters": str(len(case.params0)),
        **{f"option.{k}": str(v) for k, v in case.profile_options.items()},
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def _real(a, real: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(as_real(np.asarray(a))).astype(real, copy=False)


# -- running one case ----------------------------------------------------------------------


def expand(command: Sequence[str], values: dict) -> list[str]:
    """``command`` with each placeholder replaced (plain text replacement, so
    other braces in the arguments stay as they are)."""
    out = []
    for arg in command:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", str(value))
        out.append(arg)
    return out


def run_case(
    case: Case,
    command: Sequence[str],
    workdir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    input_form: str = "safetensors",
    output_form: str = "safetensors",
    diagnose: bool = True,
    exclude_profiles: Sequence[str] = (),
) -> CaseResult:
    """Run ``command`` on one case in ``workdir`` and verify what it wrote."""
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = write_inputs(case, workdir / f"case.{input_form}", input_form)
    out = workdir / f"out.{output_form}"
    if out.exists():
        out.unlink()
    argv = expand(
        command,
        {
            "case": inputs,
            "out": out,
            "name": case.name,
            "profile": case.profile,
            "dtype": case.dtype.name,
        },
    )
    started = time.perf_counter()
    result = CaseResult(case.name, case.profile, case.dtype.name, "error", 0.0)
    with open(workdir / "stdout", "wb") as so, open(workdir / "stderr", "wb") as se:
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=so, stderr=se, start_new_session=True
            )
        except (FileNotFoundError, PermissionError, OSError) as e:
            raise RunnerError(f"cannot start {shlex.join(argv[:1])}: {e.strerror or e}") from None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            _kill_group(proc)
    result.seconds = time.perf_counter() - started
    result.stdout = _tail(workdir / "stdout")
    result.stderr = _tail(workdir / "stderr")
    if rc is None:
        result.error = f"hang: still running after {timeout:g} s (killed)"
    elif rc < 0:
        result.error = f"crashed: killed by signal {_signal_name(-rc)}"
    elif rc != 0:
        last = result.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        result.error = f"exited with status {rc}: {last[0][:300]}"
    elif not out.exists():
        result.error = f"wrote no output (expected {out.name})"
    if result.error:
        return result
    try:
        result.report = verify(case, out, diagnose=diagnose, exclude_profiles=exclude_profiles)
    except GoldenFormatError as e:
        result.error = f"unreadable output: {e}"
        return result
    except OSError as e:
        result.error = f"unreadable output: {e}"
        return result
    result.status = "pass" if result.report.passed else "fail"
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the program and anything it started (its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return str(n)


def _tail(path: Path) -> str:
    data = path.read_bytes()[-TAIL:]
    return data.decode("utf-8", errors="replace")


# -- running many --------------------------------------------------------------------------


def run(
    cases: Sequence[tuple[str, Callable[[], Case]]],
    command: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    input_form: str = "safetensors",
    output_form: str = "safetensors",
    workdir: Path | None = None,
    diagnose: bool = True,
    exclude_profiles: Sequence[str] = (),
    progress: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Run ``command`` over ``cases`` ((name, loader) pairs: a case that cannot
    be read is that case's error); ``progress(result)`` after each."""
    if input_form not in INPUT_FORMS:
        raise RunnerError(f"unknown input form {input_form!r}; choose one of {list(INPUT_FORMS)}")
    if output_form not in OUTPUT_FORMS:
        raise RunnerError(
            f"unknown output form {output_form!r}; choose one of {list(OUTPUT_FORMS)}"
        )
    text = " ".join(command)
    for needed in ("{case}", "{out}"):
        if needed not in text:
            raise RunnerError(
                f"the command must contain {needed} (where the runner puts the "
                f"{'case inputs' if needed == '{case}' else 'output path'}); got {shlex.join(command)}"
            )
    results = []
    with tempfile.TemporaryDirectory(prefix="nadam-ref-run-") as tmp:
        base = Path(workdir) if workdir is not None else Path(tmp)
        for n, (name, loader) in enumerate(cases):
            try:
                case = loader()
            except (GoldenFormatError, OSError, ValueError) as e:
                result = CaseResult(
                    name, "?", "?", "error", 0.0, error=f"cannot read the case: {e}"
                )
            else:
                result = run_case(
                    case,
                    command,
                    base / f"{n:03d}-{_safe(name)}",
                    timeout=timeout,
                    input_form=input_form,
                    output_form=output_form,
                    diagnose=diagnose,
                    exclude_profiles=exclude_profiles,
                )
            results.append(result)
            if progress is not None:
                progress(result)
    return results


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]


def exit_status(results: Sequence[CaseResult]) -> int:
    return 0 if results and all(r.status == "pass" for r in results) else 1


def summary(results: Sequence[CaseResult]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "error")}
    seconds = sum(r.seconds for r in results)
    return (
        f"{len(results)} case{'s' if len(results) != 1 else ''}: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['error']} errors ({seconds:.1f} s in the program)"
    )


# -- reports -------------------------------------------------------------------------------


def write_json(results: Sequence[CaseResult], path, command: Sequence[str]) -> None:
    doc = {
        "command": list(command),
        "summary": {
            "total": len(results),
            **{s: sum(r.status == s for r in results) for s in ("pass", "fail", "error")},
        },
        "cases": [r.to_dict() for r in results],
    }
    Path(path).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def _xml_text(text: str) -> str:
    """Text XML 1.0 can hold (a program's stderr may contain any bytes)."""
    return "".join(
        c
        if c in "\t\n\r" or ("\x20" <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c > "\uffff"
        else "?"
        for c in text
    )


def write_junit(results: Sequence[CaseResult], path, command: Sequence[str]) -> None:
    """JUnit XML: one <testsuite> with one <testcase> per case; a failing case
    has a <failure> (its first failure and diagnosis), a case whose program
    crashed, hung or wrote garbage an <error>."""
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "error")}
    seconds = f"{sum(r.seconds for r in results):.3f}"
    attrs = dict(
        tests=str(len(results)),
        failures=str(counts["fail"]),
        errors=str(counts["error"]),
        time=seconds,
    )
    root = ET.Element("testsuites", name="nadam-ref golden run", **attrs)
    suite = ET.SubElement(
        root,
        "testsuite",
        name="nadam-ref golden",
        skipped="0",
        timestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        hostname=socket.gethostname() or "localhost",
        **attrs,
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="command", value=_xml_text(shlex.join(command)))
    for r in results:
        tc = ET.SubElement(
            suite, "testcase", classname=f"golden.{r.profile}", name=r.case, time=f"{r.seconds:.3f}"
        )
        if r.status == "fail":
            message = r.first_failure or "output out of tolerance"
            if r.diagnosis:
                message += f"; diagnosis: {r.diagnosis}"
            el = ET.SubElement(tc, "failure", message=_xml_text(message), type="GoldenMismatch")
            el.text = _xml_text(str(r.report))
        elif r.status == "error":
            el = ET.SubElement(
                tc, "error", message=_xml_text(r.error or "error"), type="ProgramError"
            )
            el.text = _xml_text(r.stderr)
        if r.stdout:
            ET.SubElement(tc, "system-out").text = _xml_text(r.stdout)
        if r.stderr:
            ET.SubElement(tc, "system-err").text = _xml_text(r.stderr)
    ET.indent(root)
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def progress_printer(
    total: int, stream=None
) -> tuple[Callable[[CaseResult], None], Callable[[], None]]:
    """(callback, close): a tqdm bar on a terminal (when tqdm is installed),
    each case's line as it finishes either way."""
    stream = stream or sys.stdout
    bar = None
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="case", file=sys.stderr, leave=False)
        except ImportError:
            bar = None

    def callback(result: CaseResult) -> None:
        if bar is not None:
            bar.set_postfix_str(result.case[:30])
            bar.write(result.line(), file=stream)
            bar.update(1)
        else:
            print(result.line(), file=stream, flush=True)

    def close() -> None:
        if bar is not None:
            bar.close()

    return callback, close
