"""Host work of a CUDA step, measured on a machine without a GPU.

A step of ``NAdam(..., backend="cuda")`` is host work (checks, the schedule,
the coefficient rows and the kernel's tables: Python), an upload of the rows,
a kernel launch, and the device's work.  For many small tensors the host work
decides whether the step beats ``torch.optim.NAdam`` (whose foreach path
spends its own host time on per-parameter Python), so it is worth measuring
where no GPU is lent.

Here real Numba ``DeviceNDArray`` objects wrap host memory, and the calls that
need a GPU are replaced by stand-ins that do nothing: the upload of the
coefficient rows, the kernel launch, and allocation.  What remains is every
line of Python a real step runs.  On a GPU add the upload and the launch (tens
of microseconds a step, whatever the number of parameters).

Side by side in one run, round-robin, for ``--params`` tensors of
``--elements`` float32 each:

* ``cuda step (host)``  — ``NAdam(..., backend="cuda").step()`` as above;
* ``numba step``        — the CPU backend's whole step on the same number of
  host arrays (host work and the update itself, which for small arrays is
  little);
* ``plan_step (cuda)``  — the functional core's checks and schedule alone.

Usage::

    python benchmarks/bench_cuda_host.py                 # 500 tensors of 10 000 elements
    python benchmarks/bench_cuda_host.py --params 100 --repeats 50
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from pathlib import Path

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"  # the real backend's code paths, not the simulator's

import numpy as np  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from _timing import (  # noqa: E402
    cuda_backend,
    format_seconds,
    format_table,
    interleaved_times,
    machine,
    median,
    write_json,
)

from nadam_ref import NAdam, functional  # noqa: E402

# numba-cuda is needed even without a GPU: without it, one line naming the extra, exit 2.
backend_cuda = cuda_backend("bench_cuda_host.py")

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_cuda_host.json"


class _HostMemory:
    """Stands in for device memory: a host buffer with a device pointer's attributes."""

    def __init__(self, nbytes: int):
        self.buffer = np.zeros(max(nbytes, 1), np.uint8)
        self.device_pointer = self.buffer.ctypes.data
        self.device_ctypes_pointer = ctypes.c_size_t(self.device_pointer)


def _device_array(shape, dtype):
    """A real Numba DeviceNDArray (C-contiguous) over host memory."""
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    strides = tuple(
        int(np.prod(shape[i + 1 :], dtype=np.int64)) * dtype.itemsize for i in range(len(shape))
    )
    return DeviceNDArray(
        shape, strides, dtype, gpu_data=_HostMemory(int(np.prod(shape)) * dtype.itemsize)
    )


class _NoLaunch:
    """A kernel whose launch does nothing; counts launches."""

    launches = 0

    def __getitem__(self, configuration):
        return self

    def __call__(self, *args):
        _NoLaunch.launches += 1


class _NoGpu:
    """The two ``numba.cuda`` calls a step makes, without a GPU."""

    @staticmethod
    def to_device(array):
        return _device_array(np.shape(array), np.asarray(array).dtype)

    @staticmethod
    def device_array(shape, dtype):
        return _device_array(shape, dtype)


def _without_gpu() -> None:
    """Point the backend's GPU calls at the stand-ins (for this process only)."""
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    backend_cuda.require_device = lambda: None
    backend_cuda.zeros_like = lambda x: _device_array(x.shape, x.dtype)
    backend_cuda._kernel = lambda dtype: _NoLaunch()
    backend_cuda.cuda = _NoGpu()
    DeviceNDArray.copy_to_device = lambda self, array, stream=0: None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=int, default=500, help="number of tensors (default 500)")
    parser.add_argument(
        "--elements", type=int, default=10_000, help="elements per tensor (default 10 000)"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"JSON results (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    if args.params < 1 or args.elements < 1 or args.repeats < 1:
        parser.error("--params, --elements and --repeats must be at least 1")
    _without_gpu()
    n, size = args.params, args.elements
    rng = np.random.default_rng(0)

    cuda_opt = NAdam([_device_array(size, np.float32) for _ in range(n)], lr=1e-3, backend="cuda")
    for p in cuda_opt.param_groups[0]["params"]:
        p.grad = _device_array(size, np.float32)
    # The CPU backend on arrays so small that its step is nearly all host work.
    numba_opt = NAdam(
        [rng.standard_normal(1, dtype=np.float32) for _ in range(n)], lr=1e-3, backend="numba"
    )
    for p in numba_opt.param_groups[0]["params"]:
        p.grad = rng.standard_normal(1, dtype=np.float32)
    arrays = [[_device_array(size, np.float32) for _ in range(n)] for _ in range(4)]
    options = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, backend="cuda")
    contenders = {
        "cuda step (host)": cuda_opt.step,
        f"numba step ({n} × 1 element)": numba_opt.step,
        "plan_step (cuda)": lambda: functional.plan_step(*arrays, [1.0] * n, [0.9] * n, **options),
    }
    times = interleaved_times(contenders, repeats=args.repeats, warmup=2)
    medians = {name: median(ts) for name, ts in times.items()}
    rows = [[name, format_seconds(t), f"{t / n * 1e6:.2f} µs"] for name, t in medians.items()]
    print(f"{n} float32 tensors of {size} elements; median of {args.repeats} interleaved rounds")
    print(format_table(["contender", "per step", "per parameter"], rows))
    ratio = medians["cuda step (host)"] / medians[f"numba step ({n} × 1 element)"]
    print(f"cuda step host work / numba step: {ratio:.2f}; launches stubbed: {_NoLaunch.launches}")
    path = write_json(
        args.out,
        {
            "machine": machine(),
            "params": n,
            "elements": size,
            "repeats": args.repeats,
            "median_s": medians,
            "cuda_host_over_numba_step": ratio,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
