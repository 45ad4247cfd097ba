"""Timing helpers shared by the benchmark scripts (and :func:`cuda_backend`,
which the CUDA ones start with).

Benchmarks here compare implementations *side by side in one run*: on a
shared machine absolute times drift by 2× between runs (docs/frameworks.md, "Measuring speed"), so
only ratios taken in the same run mean anything.  :func:`interleaved_times`
therefore runs the contenders round-robin — one call of each, then the next
round — so that a burst of load from elsewhere hits all of them alike, and
reports medians.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def interleaved_times(
    contenders: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each contender, ``repeats`` rounds, round-robin.

    Each contender is first called ``warmup`` times untimed (compilation,
    first-touch allocation).  ``sync`` (e.g. a device synchronisation) is
    called after every timed call, inside the timing.
    """
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
            if sync is not None:
                sync()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            if sync is not None:
                sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def format_seconds(seconds: float) -> str:
    """A duration with a unit that keeps three significant figures readable."""
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def machine() -> dict:
    """What the numbers were measured on."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` as indented JSON, creating the folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def cuda_backend(script: str):
    """``nadam_ref.backend_cuda``; without numba-cuda, one line on stderr saying
    which extra to install, and exit status 2 (nothing measured)."""
    try:
        from nadam_ref import backend_cuda
    except ImportError as error:
        print(f"{script}: {error}; nothing measured.", file=sys.stderr)
        raise SystemExit(2) from None
    return backend_cuda
