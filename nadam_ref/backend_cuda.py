"""The Numba CUDA backend: the element update on the GPU, many arrays per launch.

:func:`nadam_ref.element.nadam_element` itself is compiled as a CUDA device
function (``cuda.jit(device=True)``) and called once per element by one kernel,
so the GPU runs the very arithmetic of the NumPy reference.

One launch for a whole step
---------------------------
A network has hundreds of parameter arrays; launching a kernel for each costs
more than the update of a small one.  As torch's multi-tensor apply does, the
kernel takes *tables* instead of arrays: for parameter j the device addresses of
θ, g, m, v and its size n_j, and one row of coefficients (the
:class:`nadam_ref.schedule.Coefficients` of that parameter, its flags as
0/1).  Each parameter is cut into chunks of ``CHUNK`` elements; block b of the
grid updates chunk b, whose parameter and first element two more tables give::

    chunk c of parameter j  →  elements [c·CHUNK, min((c+1)·CHUNK, n_j))

so the grid has Σ_j ⌈n_j / CHUNK⌉ blocks and a step is one launch per dtype
(float32 and float64 arrays need separate kernels).  The address tables are
uploaded once and reused while the arrays stay put; the coefficient rows change
every step and are a few bytes each.

A step is bound by memory traffic (28 bytes per float32 element), and memory
stays busy only with many loads in flight.  So within its chunk a thread takes
``ILP`` elements at a time, ``blockDim.x`` apart so that a warp's accesses stay
contiguous, and issues all their loads before it updates the first.

Arrays
------
Parameters and state are C-contiguous device arrays kept on the device between
steps.  Any object with ``__cuda_array_interface__`` (CuPy, torch CUDA tensors)
is used in place through a zero-copy Numba view; NumPy parameters are copied to
the device when the optimizer takes them (:func:`take_params`), so read them
back from ``Parameter.data`` with ``np.asarray(p.data)`` (Numba device arrays
copy themselves to the host) or ``p.data.copy_to_host()``.  Gradients may be on
the device or on the host; host gradients are copied to the device each step,
all of a launch in one transfer.  ``state_dict()`` returns host arrays
(:func:`to_host`) and ``load_state_dict`` copies them back (:func:`from_host`),
so a state saved on a CPU backend loads here and back.  Complex arrays are
updated as their interleaved (real, imaginary) pairs, as ``torch.view_as_real``
does: a C-contiguous complex array of n elements is read as 2n reals.

Bit-exactness on a real GPU
---------------------------
CUDA compilers contract ``a*b + c`` into one fused multiply-add by default; NVVM
does so even with fastmath off (its ``-fma=1`` default), and numba-cuda 0.30
offers no switch (NVIDIA/numba-cuda#118).  A fused a·b + c is rounded once
instead of twice, so the last bits would differ from NumPy's.  This backend
therefore compiles its kernel with ``-fma=0``: while it compiles, under Numba's
compiler lock, Numba's call into NVVM gets ``fma=False`` added, and the kernel's
code library keeps that option for any later recompilation.  Then every
operation is the correctly rounded IEEE operation NumPy performs (Numba's
defaults already keep ``-prec-div=1``, ``-prec-sqrt=1`` and no flush-to-zero),
in the same order, and a GPU step gives the NumPy reference's bits.  The PTX
then holds ``mul.rn``/``add.rn`` (which ptxas never fuses) and no ``fma``; the
backend checks this when it builds a kernel and refuses a kernel that still
has one.  The cost is nil: the update is bound by memory traffic.

Without a GPU
-------------
Set ``NUMBA_ENABLE_CUDASIM=1`` before Numba is first imported to run this
backend on Numba's CUDA simulator (slow: a Python thread per CUDA thread; for
tests).  The kernel code is the same; only the two helpers that turn an
address into an array have Python stand-ins there.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .element import nadam_element
from .schedule import FLAGS, Coefficients

try:
    from numba import cuda
    from numba.cuda.core import config as _cuda_config
    from numba.cuda.np.numpy_support import carray
except ImportError as error:  # pragma: no cover - numba-cuda is a dependency of the extra
    raise ImportError(
        "the cuda backend needs numba-cuda (tested with 0.30), which nadam_ref's cuda extra "
        "installs: from the clone, pip install '.[cuda]' (CUDA 13 driver; '.[cuda12]' for CUDA 12)"
    ) from error

#: True when Numba's CUDA simulator stands in for a GPU (NUMBA_ENABLE_CUDASIM=1).
SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)

#: Threads per block, and elements per block (a chunk).  The simulator runs a
#: Python thread per CUDA thread, so it gets tiny blocks that still exercise
#: several chunks per array and several elements per thread.
THREADS = 4 if SIMULATOR else 256
CHUNK = 24 if SIMULATOR else 256 * 16
#: Elements a thread loads before it updates the first (see :func:`_nadam_kernel`).
ILP = 4

#: Complex dtypes and the real dtype of their parts; the real dtypes have kernels.
_REAL_OF = {
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float64),
    np.dtype(np.complex64): np.dtype(np.float32),
    np.dtype(np.complex128): np.dtype(np.float64),
}

_NO_DEVICE = (
    "the cuda backend found no usable CUDA GPU ({reason}). To run it without a GPU, "
    "use Numba's CUDA simulator (slow, for testing): set the environment variable "
    "NUMBA_ENABLE_CUDASIM=1 before numba is first imported, e.g. "
    "NUMBA_ENABLE_CUDASIM=1 python your_script.py"
)

if SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as _DeviceArray

    _CTYPES = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}

    def _pointer(address, like):
        """The address as a pointer to ``like``'s dtype (simulator: a host address)."""
        return ctypes.cast(int(address), ctypes.POINTER(_CTYPES[np.dtype(like.dtype)]))

    def _address(array) -> int:
        return array.__array_interface__["data"][0]

else:
    from numba.cuda import types as _types
    from numba.cuda.cudadrv.devicearray import DeviceNDArray as _DeviceArray
    from numba.cuda.extending import intrinsic

    @intrinsic
    def _pointer(typingctx, address, like):
        """The device address ``address`` (an integer) as a pointer to
        ``like``'s dtype, for :func:`carray` to view."""
        if not isinstance(address, _types.Integer) or not isinstance(like, _types.Array):
            return None
        pointer = _types.CPointer(like.dtype)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(pointer))

        return pointer(address, like), codegen

    def _address(array) -> int:
        return array.device_ctypes_pointer.value or 0

    def _add_numpy_sqrt() -> None:
        """Teach numba-cuda ``np.sqrt`` of a float32/float64 scalar, which the
        element function uses: numba-cuda 0.30 types it but its CUDA ufunc table
        has no loop for it.  The loop is libdevice's ``sqrt``/``sqrtf``, exactly
        what ``math.sqrt`` compiles to: correctly rounded under ``-prec-sqrt=1``,
        Numba's default, as NumPy's is."""
        import math

        from numba.cuda import ufuncs
        from numba.cuda.mathimpl import get_unary_impl_for_fn_and_ty

        def sqrt_loop(context, builder, signature, args):
            lower = get_unary_impl_for_fn_and_ty(math.sqrt, signature.args[0])
            return lower(context, builder, signature, args)

        loops = ufuncs.ufunc_db().setdefault(np.sqrt, {})
        loops.setdefault("f->f", sqrt_loop)
        loops.setdefault("d->d", sqrt_loop)

    _add_numpy_sqrt()


#: The element update, compiled for the device (not rewritten).
_element = cuda.jit(device=True)(nadam_element)


def _row_reader():
    """A function of a coefficient row (:class:`~nadam_ref.schedule.Coefficients`
    in the arrays' dtype, flags as 0/1) returning the element update's
    coefficient arguments, written from the fields of ``Coefficients``."""
    values = ", ".join(
        f"k[{i}] != 0" if name in FLAGS else f"k[{i}]"
        for i, name in enumerate(Coefficients._fields)
    )
    namespace: dict = {}
    source = f"def _row_coefficients(k):\n    return ({values},)\n"
    exec(compile(source, "<nadam_ref.backend_cuda._row_coefficients>", "exec"), namespace)  # noqa: S102
    return namespace["_row_coefficients"]


_row_coefficients = cuda.jit(device=True)(_row_reader())


def _nadam_kernel(addresses, sizes, chunk_params, chunk_starts, table, chunk):
    """Update chunk ``blockIdx.x`` (and every ``gridDim.x``-th after it).

    ``addresses[j]`` holds the device addresses of θ, g, m, v of parameter j,
    ``sizes[j]`` its number of (real) elements, ``table[j]`` its coefficients
    in the order of :class:`nadam_ref.schedule.Coefficients` (flags as 0/1);
    chunk c covers elements ``chunk_starts[c]`` up to ``chunk_starts[c] + chunk``
    of parameter ``chunk_params[c]``.

    A thread takes ``ILP`` elements at a time, ``blockDim.x`` apart (so a warp's
    accesses stay contiguous), and loads all of them before it updates the
    first.  The compiler cannot know that the arrays do not overlap, so it
    keeps every load after the stores before it: a thread that loaded one
    element at a time would have one element's loads in flight, too few to
    keep the memory busy.
    """
    theta = cuda.local.array(ILP, table.dtype)
    grads = cuda.local.array(ILP, table.dtype)
    m = cuda.local.array(ILP, table.dtype)
    v = cuda.local.array(ILP, table.dtype)
    for c in range(cuda.blockIdx.x, chunk_params.size, cuda.gridDim.x):
        j = chunk_params[c]
        n = sizes[j]
        param = carray(_pointer(addresses[j, 0], table), n)
        grad = carray(_pointer(addresses[j, 1], table), n)
        exp_avg = carray(_pointer(addresses[j, 2], table), n)
        exp_avg_sq = carray(_pointer(addresses[j, 3], table), n)
        # Read once per chunk (for all the compiler knows, a store to θ could change them).
        coef = _row_coefficients(table[j])
        start = chunk_starts[c]
        stop = min(start + chunk, n)
        stride = cuda.blockDim.x
        for first in range(start + cuda.threadIdx.x, stop, ILP * stride):
            for u in range(ILP):
                i = first + u * stride
                if i < stop:
                    theta[u], grads[u], m[u], v[u] = param[i], grad[i], exp_avg[i], exp_avg_sq[i]
            for u in range(ILP):
                if first + u * stride < stop:
                    theta[u], m[u], v[u] = _element(theta[u], grads[u], m[u], v[u], *coef)
            for u in range(ILP):
                i = first + u * stride
                if i < stop:
                    param[i], exp_avg[i], exp_avg_sq[i] = theta[u], m[u], v[u]


def _signature(dtype) -> str:
    name = np.dtype(dtype).name
    return f"void(uint64[:, ::1], int64[::1], int32[::1], int64[::1], {name}[:, ::1], int64)"


@contextlib.contextmanager
def _without_fma_contraction():
    """Compile with NVVM's ``-fma=0`` (see the module docstring).

    numba-cuda builds its NVVM options inside the compiler, so for the duration
    of a compilation its call into NVVM is wrapped to add ``fma=False``.  The
    compiler lock is held throughout, so no other compilation sees the wrapper.
    """
    from numba.cuda.core.compiler_lock import global_compiler_lock
    from numba.cuda.cudadrv import nvvm

    with global_compiler_lock:
        compile_ir = nvvm.compile_ir

        def compile_ir_without_fma(llvmir, **options):
            return compile_ir(llvmir, **{**options, "fma": False})

        nvvm.compile_ir = compile_ir_without_fma
        try:
            yield
        finally:
            nvvm.compile_ir = compile_ir


def fma_instructions(ptx: str) -> list[str]:
    """The lines of ``ptx`` that are fused multiply-adds (``fma.*`` / ``mad.*`` on floats)."""
    return [
        line.strip()
        for line in ptx.splitlines()
        if line.strip().startswith(("fma.", "mad.f", "mad.rn"))
    ]


def kernel_ptx(dtype="float32", cc: tuple[int, int] = (9, 0), *, contract: bool = False) -> str:
    """The PTX of this backend's kernel for compute capability ``cc``, compiled
    as at run time (contraction off), or with NVVM's default ``-fma=1`` when
    ``contract`` is True, to show what the backend avoids.

    Needs libNVVM (e.g. the ``nvidia-nvvm`` wheel) but no GPU; not available
    under the simulator.  The kernel's code is compiled with a fresh device
    function, so that the one the backend launches keeps its own compilation.
    """
    if SIMULATOR:
        raise RuntimeError("kernel_ptx needs Numba's real CUDA target: unset NUMBA_ENABLE_CUDASIM")
    from types import FunctionType, SimpleNamespace

    from numba.cuda import dispatcher
    from numba.cuda.core.compiler_lock import global_compiler_lock

    element = cuda.jit(device=True)(nadam_element)
    kernel = FunctionType(
        _nadam_kernel.__code__, {**globals(), "_element": element}, "_nadam_kernel"
    )
    # A device function is compiled for the current GPU's compute capability; there may be none.
    device = SimpleNamespace(compute_capability=tuple(cc))
    context = contextlib.nullcontext() if contract else _without_fma_contraction()
    with global_compiler_lock, context:
        current = dispatcher.get_current_device
        dispatcher.get_current_device = lambda: device
        try:
            ptx, _ = cuda.compile_ptx(
                kernel, _signature(dtype), device=False, opt=True, cc=tuple(cc)
            )
        finally:
            dispatcher.get_current_device = current
    return ptx


_lock = threading.RLock()
_kernels: dict[np.dtype, object] = {}


def _kernel(dtype: np.dtype):
    """The compiled kernel for real ``dtype`` (compiled on first use)."""
    with _lock:
        kernel = _kernels.get(dtype)
        if kernel is not None:
            return kernel
        signature = _signature(dtype)
        if SIMULATOR:
            kernel = cuda.jit(signature)(_nadam_kernel)
        else:
            # An explicit signature compiles now (inside the context) and forbids
            # any later compilation of other signatures, which would contract.
            with _without_fma_contraction():
                kernel = cuda.jit(signature)(_nadam_kernel)
            for overload in kernel.overloads.values():
                library = overload.library
                library._nvvm_options["fma"] = False  # for PTX made later (another GPU)
                fused = fma_instructions(library.get_asm_str())
                if fused:
                    raise RuntimeError(
                        "the cuda backend could not turn off FMA contraction with this numba-cuda "
                        f"version; its kernel would not match the CPU bit for bit ({fused[0]!r})"
                    )
        _kernels[dtype] = kernel
        return kernel


# -- where arrays live --------------------------------------------------------------------


def require_device() -> None:
    """Raise RuntimeError, saying how to use the simulator, if there is no GPU."""
    if SIMULATOR:
        return
    if not cuda.is_available():
        try:
            reason = str(cuda.cuda_error() or "").strip().splitlines()[-1].rstrip(".")
        except Exception:  # noqa: BLE001 - only for the message
            reason = "no CUDA driver or device"
        raise RuntimeError(_NO_DEVICE.format(reason=reason or "no CUDA driver or device"))


def is_device_array(x) -> bool:
    """A Numba device array (the form this backend updates)."""
    return isinstance(x, _DeviceArray)


def _is_foreign_device_array(x) -> bool:
    if SIMULATOR or is_device_array(x):
        return False
    try:
        return hasattr(x, "__cuda_array_interface__")
    except RuntimeError:  # torch: a CUDA tensor that requires grad (its detached view has one)
        return True


def _check_layout(x) -> None:
    if not x.is_c_contiguous():
        raise TypeError(
            f"the cuda backend updates C-contiguous device arrays; got one of shape "
            f"{tuple(x.shape)} with strides {tuple(x.strides)} (make it contiguous first)"
        )


def adopt(x):
    """``x`` in the form this backend updates: Numba device arrays as they are,
    other ``__cuda_array_interface__`` objects as zero-copy Numba views (so
    updates land in the original), anything else (host arrays) unchanged.
    Raises TypeError for a device array that is not C-contiguous."""
    if not is_device_array(x):
        if not _is_foreign_device_array(x):
            return x  # a host array
        if callable(getattr(x, "detach", None)):
            x = x.detach()  # torch: the same memory, without autograd
        x = _view(x)
    _check_layout(x)
    return x


#: ``__cuda_array_interface__`` stream values that name a default stream (1: the legacy
#: one, 2: the per-thread one).  Work on them is ordered before this backend's launches,
#: which go to the default stream too.
_DEFAULT_STREAMS = (1, 2)


def _view(x):
    """A zero-copy Numba view of a ``__cuda_array_interface__`` object.

    By default Numba synchronises the stream the producer names (a host stall,
    here for every array at every step).  That is needed only when the
    producer works on a stream of its own: where it names a default stream,
    its pending work (a backward pass writing the gradient, say) already comes
    before this backend's kernel in the device's order."""
    interface = x.__cuda_array_interface__
    stream = interface.get("stream")
    return cuda.from_cuda_array_interface(interface, owner=x, sync=stream not in _DEFAULT_STREAMS)


def is_array(x) -> bool:
    """Arrays this backend updates in place: device arrays."""
    return is_device_array(x)


def is_grad_array(x) -> bool:
    """Gradients may be device arrays or host NumPy arrays (copied each step)."""
    return is_device_array(x) or isinstance(x, np.ndarray)


def as_real(x):
    """A real view of a complex array: (real, imaginary) pairs, interleaved.

    Host arrays get :func:`nadam_ref.functional.as_real`'s trailing axis; a
    (C-contiguous) device array is viewed flat, as 2n reals, since Numba's
    device arrays cannot add an axis.
    """
    dtype = np.dtype(x.dtype)
    if dtype.kind != "c":
        return x
    if isinstance(x, np.ndarray):
        return x[..., None].view(x.real.dtype)
    return x.reshape(x.size).view(_REAL_OF[dtype])


def _check_dtype(dtype, what: str) -> None:
    if np.dtype(dtype) not in _REAL_OF:
        raise TypeError(
            f"{what} has dtype {np.dtype(dtype)}; the cuda backend supports float32, float64, "
            "complex64 and complex128"
        )


def take_params(arrays: Sequence) -> list:
    """The arrays a parameter group keeps on this backend (the hook
    :meth:`nadam_ref.NAdam.add_param_group` calls).

    Device arrays are used in place (other ``__cuda_array_interface__``
    objects through zero-copy Numba views); NumPy arrays are copied to the
    device.  A group must be all host or all device arrays: a mix usually
    means some parameters were forgotten on the wrong side.
    """
    require_device()
    on_device = [is_device_array(a) or _is_foreign_device_array(a) for a in arrays]
    if any(on_device) and not all(on_device):
        host = [i for i, d in enumerate(on_device) if not d]
        device = [i for i, d in enumerate(on_device) if d]
        raise TypeError(
            "a parameter group mixes host and device arrays: parameters "
            f"{host} are host (NumPy) arrays, {device} are device arrays. Give the cuda backend "
            "a group of device arrays, or one of NumPy arrays, which it copies to the device"
        )
    taken = []
    for i, a in enumerate(arrays):
        a = adopt(a) if on_device[i] else np.asarray(a)
        _check_dtype(a.dtype, f"parameter {i}")
        taken.append(a if on_device[i] else cuda.to_device(np.array(a, order="C")))
    return taken


def zeros_like(x):
    """A fresh zero state array on the device, of ``x``'s shape and dtype."""
    require_device()
    if SIMULATOR:
        return cuda.to_device(np.zeros(tuple(x.shape), np.dtype(x.dtype)))
    from numba.cuda.cudadrv.driver import device_memset

    zeros = cuda.device_array(tuple(x.shape), np.dtype(x.dtype))
    if zeros.size:
        device_memset(zeros, 0, zeros.nbytes)
    return zeros


def to_host(a) -> np.ndarray:
    """A host NumPy copy of a device (or host) array."""
    if isinstance(a, np.ndarray):
        return np.array(a)
    return adopt(a).copy_to_host()


def from_host(array, like):
    """``array`` cast to ``like``'s dtype, as a new C-contiguous device array."""
    require_device()
    return cuda.to_device(np.array(array, dtype=np.dtype(like.dtype), order="C"))


def assign(array, values):
    """Write host ``values`` into the device array: in place for Numba's device
    arrays, else (another library's array) into a new one, which is returned."""
    if hasattr(array, "copy_to_device"):
        array.copy_to_device(np.ascontiguousarray(values, dtype=np.dtype(array.dtype)))
        return array
    return from_host(values, array)


# -- the step -----------------------------------------------------------------------------

_TABLES_KEPT = 16
_tables: OrderedDict = OrderedDict()  # (dtype, addresses, sizes) → device tables
_staging: OrderedDict = OrderedDict()  # (dtype, size) → device buffer for host gradients


def _remember(cache: OrderedDict, key, make):
    value = cache.get(key)
    if value is None:
        value = make()
        cache[key] = value
        while len(cache) > _TABLES_KEPT:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return value


def _chunk_tables(addresses: np.ndarray, sizes: np.ndarray):
    """Device copies of the address and size tables and the chunk map."""
    counts = (sizes + CHUNK - 1) // CHUNK
    chunk_params = np.repeat(np.arange(sizes.size, dtype=np.int32), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    chunk_starts = (np.arange(chunk_params.size, dtype=np.int64) - first) * CHUNK
    return tuple(cuda.to_device(a) for a in (addresses, sizes, chunk_params, chunk_starts))


def update(
    params: Sequence,
    grads: Sequence,
    exp_avgs: Sequence,
    exp_avg_sqs: Sequence,
    coefficients: Sequence[Coefficients],
) -> None:
    """Update each real-valued (θ, m, v) in place on the device, with its own
    coefficients: one kernel launch per dtype.

    The arrays come as :func:`nadam_ref.functional.plan_step` checked them
    (C-contiguous device arrays of one dtype and size per parameter, the
    gradient possibly a host array); what is left to check is done before the
    first launch, so a failed call changes nothing.
    """
    require_device()
    launches: dict[np.dtype, list] = {}  # dtype → [(addresses, size, host grad, coefficients)]
    seen: dict[int, int] = {}
    for i, (p, g, m, v, c) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, coefficients)):
        size = p.size
        if size == 0:
            continue
        address = _address(p)
        if address in seen:
            raise ValueError(
                f"parameters {seen[address]} and {i} are the same array; a step updates each once"
            )
        seen[address] = i
        host = isinstance(g, np.ndarray)  # copied to the device in _launch
        addresses = [address, None if host else _address(g), _address(m), _address(v)]
        batch = launches.get(p.dtype)
        if batch is None:
            if p.dtype not in _KERNEL_DTYPES:
                raise TypeError(
                    f"parameter {i} has dtype {p.dtype}; the cuda kernel takes float32 or float64 arrays"
                )
            batch = launches[p.dtype] = []
        batch.append((addresses, size, g if host else None, c))
    with _lock:  # the kept tables and staging buffers are shared
        for dtype, items in launches.items():
            _launch(np.dtype(dtype), items)


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _launch(dtype: np.dtype, items: list) -> None:
    """One kernel launch for ``items``: (addresses of θ, g, m, v with None for
    a host gradient, size, the host gradient or None, coefficients)."""
    sizes = np.array([size for _, size, _, _ in items], dtype=np.int64)
    host = [j for j, item in enumerate(items) if item[2] is not None]
    if host:
        # All host gradients of the launch travel in one transfer, into a kept buffer.
        total = int(sizes[host].sum())
        staging = _remember(_staging, (dtype, total), lambda: cuda.device_array(total, dtype))
        staging.copy_to_device(np.concatenate([np.ravel(items[j][2]) for j in host]))
        address = _address(staging)
        for j in host:
            items[j][0][1] = address
            address += int(sizes[j]) * dtype.itemsize
    addresses = np.array([item[0] for item in items], dtype=np.uint64)
    key = (dtype, addresses.tobytes(), sizes.tobytes())
    tables = _remember(_tables, key, lambda: _chunk_tables(addresses, sizes))
    # Coefficients are already in the array's dtype; the flags become 0 / 1.  Parameters at
    # the same step share one Coefficients object: each distinct one is converted once.
    coefficients = [item[3] for item in items]
    distinct = {id(c): c for c in coefficients}
    row_of = {ident: row for row, ident in enumerate(distinct)}
    rows = np.array(list(distinct.values()), dtype=dtype)[[row_of[id(c)] for c in coefficients]]
    rows = cuda.to_device(rows)
    blocks = tables[2].size
    _kernel(dtype)[blocks, THREADS](*tables, rows, CHUNK)
