"""The Numba CPU backend: the element update compiled once, run as one fused,
parallel pass over all of a step's arrays.

:func:`nadam_ref.element.nadam_element` — the very function the NumPy
reference calls on whole arrays — is compiled with ``numba.njit`` and called
per element inside a ``prange`` loop.  Each element of θ, g, m and v is read
once and θ, m, v are written once: no temporaries, so a step moves the least
memory it can (4 reads and 3 writes per element) and adds only a few small
index arrays to the process's memory.

Multi-tensor: :func:`update` makes one compiled call per set of arrays that
share a dtype and their :class:`~nadam_ref.schedule.Coefficients` (in practice
one call per parameter group and dtype), not one per parameter.  The call
receives a table describing every array — its address, and for arrays that
are not contiguous its shape and strides — and splits the work into chunks
spread over the cores.  Contiguous arrays take a unit-stride loop that LLVM
vectorises; any other view (transposed, sliced with steps, negative strides,
the real view of a complex array, a broadcast gradient) is walked along its
strides and updated in place.

Repeated steps (:class:`DenseBatch`, :class:`StateMemo`): a step whose
inputs are the ones the last step checked reads them in compiled code from
the Python objects themselves (NumPy's array struct; CPython's list, tuple
and dict objects and a dict's version tag; a Parameter's slots) and stores
the new step and ∏μ in each state through CPython's ``PyDict_SetItem``: over
many tensors, Python's own reading costs as much as the update.  Each layout
is checked once against what Python sees; where one differs (another
interpreter or build), Python reads instead, with the same bits.

Why the results are the same bits as NumPy's:

* every constant the element function uses arrives in the array's dtype
  (docs/frameworks.md, "Numerics": Numba types ``1 - b1`` with a float32
  ``b1`` as float64, NumPy 2 keeps float32), and the kernel adds no
  arithmetic of its own;
* ``fastmath`` is off, so LLVM neither reorders nor contracts ``a·b + c``
  into a fused multiply-add; ``sqrt`` and ``/`` are IEEE-exact in both;
* ``error_model="numpy"``: 0/0 gives NaN and x/0 ±inf as in NumPy, where
  Numba's default would raise ZeroDivisionError (and, checking every
  division, keep LLVM from vectorising the loop).

The compiled functions take a step's :class:`~nadam_ref.schedule.Coefficients`
as one (named) tuple and hand it on unpacked, so no argument list here
restates their order.

The element function is inlined into the loop at Numba's IR level
(``inline="always"``): called as a separate compiled function it is not
vectorised, and the step runs several times slower.

Compiled code is cached on disk (``cache=True``): a second process loads it
instead of compiling.  The cache only saves time: where Numba finds no
writable place for it (a read-only install without a writable home
directory), the functions are compiled in memory, with one warning that says
how to set ``NUMBA_CACHE_DIR``.  Arrays that compiled code cannot address element by
element — misaligned data, strides that are not a multiple of the item size,
non-native byte order — are handed to the NumPy reference, which gives the
same bits.
"""

from __future__ import annotations

import operator
import sys
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, set_parallel_chunksize, typeof
from numba.core import cgutils, types
from numba.extending import intrinsic, overload, register_jitable

from . import backend_numpy, schedule
from .element import nadam_element
from .schedule import Coefficients

#: Elements per unit of parallel work: large enough that scheduling costs
#: nothing next to the arithmetic, small enough to balance two or more cores.
CHUNK = 1 << 15
#: Below this many elements in one call, threads cost more than they save.
PARALLEL_THRESHOLD = 1 << 16


def _njit(function=None, **options):
    """``numba.njit(function, cache=True, **options)``, or without the disk
    cache when Numba has nowhere to write it (it then raises "cannot cache
    function ...: no locator available" as the function is decorated)."""
    if function is None:
        return lambda f: _njit(f, **options)
    try:
        return njit(function, cache=True, **options)
    except RuntimeError as error:
        if "cannot cache" not in str(error):
            raise
    _warn_no_cache(function)
    return njit(function, **options)


_warned_no_cache = False


def _warn_no_cache(function) -> None:
    global _warned_no_cache
    if not _warned_no_cache:
        _warned_no_cache = True
        warnings.warn(
            "nadam_ref: Numba has no writable place for its disk cache of compiled code "
            f"(not beside {function.__code__.co_filename}, nor in NUMBA_CACHE_DIR or the user's "
            "cache directory), so the Numba backend compiles in memory and every new process "
            "compiles again (a few seconds). Set NUMBA_CACHE_DIR to a writable directory "
            "to keep the compiled code.",
            RuntimeWarning,
            stacklevel=1,  # raised while the module is imported: no caller to point at
        )


_element_fields = _njit(nadam_element, inline="always", error_model="numpy")


def _unpacking(element, name: str):
    """``element`` taking the coefficients as one tuple: ``f(θ, g, m, v, coef)``
    calls ``element(θ, g, m, v, coef.beta1, …)`` in the order of
    :class:`~nadam_ref.schedule.Coefficients`, which the source below is
    written from (Numba cannot inline a call with ``*coef``)."""
    fields = ", ".join(f"coef.{field}" for field in Coefficients._fields)
    source = f"def {name}(theta, grad, exp_avg, exp_avg_sq, coef):\n"
    source += f"    return element(theta, grad, exp_avg, exp_avg_sq, {fields})\n"
    namespace = {"element": element}
    exec(compile(source, f"<nadam_ref.backend_numba.{name}>", "exec"), namespace)  # noqa: S102
    return namespace[name]


_element = njit(_unpacking(_element_fields, "_element"), inline="always", error_model="numpy")


@intrinsic
def _pointer(typingctx, address):
    """An integer address as a ``void*``, for :func:`numba.carray`."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@_njit(error_model="numpy")
def _run_chunk(
    tensor,
    start,
    stop,
    itemsize,
    bases,
    spans,
    offsets,
    ndims,
    shapes,
    strides,
    coef,
):
    """Update elements [start, stop) (in C order) of tensor ``tensor`` in place."""
    dtype = np.dtype(type(coef.beta1))  # the coefficients are in the arrays' dtype
    if ndims[tensor] == 0:
        # All four arrays dense with equal strides: a unit-stride loop over
        # views that begin at the chunk (an index from 0 lets LLVM vectorise).
        n = stop - start
        skip = start * itemsize
        theta = carray(_pointer(bases[tensor, 0] + skip), n, dtype)
        grad = carray(_pointer(bases[tensor, 1] + skip), n, dtype)
        m = carray(_pointer(bases[tensor, 2] + skip), n, dtype)
        v = carray(_pointer(bases[tensor, 3] + skip), n, dtype)
        for j in range(n):
            theta[j], m[j], v[j] = _element(theta[j], grad[j], m[j], v[j], coef)
        return
    theta = carray(_pointer(bases[tensor, 0]), spans[tensor, 0], dtype)
    grad = carray(_pointer(bases[tensor, 1]), spans[tensor, 1], dtype)
    m = carray(_pointer(bases[tensor, 2]), spans[tensor, 2], dtype)
    v = carray(_pointer(bases[tensor, 3]), spans[tensor, 3], dtype)
    nd = ndims[tensor]
    # Strided: walk runs along the last axis, finding where each run starts by
    # unravelling its C-order index over the shape.  Offsets and strides are
    # in elements, from the lowest address each array touches.
    last = shapes[tensor, nd - 1]
    s0 = strides[tensor, 0, nd - 1]
    s1 = strides[tensor, 1, nd - 1]
    s2 = strides[tensor, 2, nd - 1]
    s3 = strides[tensor, 3, nd - 1]
    k = start
    while k < stop:
        o0 = offsets[tensor, 0]
        o1 = offsets[tensor, 1]
        o2 = offsets[tensor, 2]
        o3 = offsets[tensor, 3]
        rest = k
        for d in range(nd - 1, -1, -1):
            i = rest % shapes[tensor, d]
            rest //= shapes[tensor, d]
            o0 += i * strides[tensor, 0, d]
            o1 += i * strides[tensor, 1, d]
            o2 += i * strides[tensor, 2, d]
            o3 += i * strides[tensor, 3, d]
        run = min(last - k % last, stop - k)
        for r in range(run):
            a0 = o0 + r * s0
            a2 = o2 + r * s2
            a3 = o3 + r * s3
            theta[a0], m[a2], v[a3] = _element(
                theta[a0],
                grad[o1 + r * s1],
                m[a2],
                v[a3],
                coef,
            )
        k += run


@_njit
def _chunks(sizes, chunk):
    """The work of a step as pieces, (tensor, first element, end element),
    each at most ``chunk`` elements of one tensor, and the pieces grouped into
    units of about ``chunk`` elements: unit u is pieces [units[u], units[u + 1]).
    A large tensor is split over several units; many small tensors share one,
    so that each unit is worth handing to a thread."""
    total = 0
    for i in range(sizes.shape[0]):
        total += (sizes[i] + chunk - 1) // chunk
    pieces = np.empty((total, 3), np.int64)
    units = np.empty(total + 1, np.int64)
    c = 0
    u = 0
    filled = chunk  # elements in the unit being filled: a full one, so the first piece opens a unit
    for i in range(sizes.shape[0]):
        for start in range(0, sizes[i], chunk):
            stop = min(start + chunk, sizes[i])
            if filled + stop - start > chunk:
                units[u] = c
                u += 1
                filled = 0
            pieces[c, 0] = i
            pieces[c, 1] = start
            pieces[c, 2] = stop
            filled += stop - start
            c += 1
    units[u] = c
    return pieces, units[: u + 1]


@_njit(parallel=True, error_model="numpy")
def _update_parallel(
    sizes,
    itemsize,
    bases,
    spans,
    offsets,
    ndims,
    shapes,
    strides,
    coef,
):
    """Every tensor of the table, in units of about CHUNK elements spread over the cores."""
    pieces, units = _chunks(sizes, CHUNK)
    for u in prange(units.shape[0] - 1):
        for c in range(units[u], units[u + 1]):
            _run_chunk(
                pieces[c, 0],
                pieces[c, 1],
                pieces[c, 2],
                itemsize,
                bases,
                spans,
                offsets,
                ndims,
                shapes,
                strides,
                coef,
            )


@_njit(error_model="numpy")
def _update_serial(
    sizes,
    itemsize,
    bases,
    spans,
    offsets,
    ndims,
    shapes,
    strides,
    coef,
):
    """Every tensor of the table on this thread (small steps, where starting
    threads would cost more than the work)."""
    for i in range(sizes.shape[0]):
        _run_chunk(
            i,
            0,
            sizes[i],
            itemsize,
            bases,
            spans,
            offsets,
            ndims,
            shapes,
            strides,
            coef,
        )


# -- describing the arrays ------------------------------------------------------------------


class _Layout:
    """Where one array's elements lie, in elements from the lowest address the
    array touches (``base``, in bytes): how far it spans, where element
    [0, …, 0] is, and the strides.  ``dense`` arrays fill their span.
    ``geometry`` is the array's shape and strides in bytes, as it was read."""

    __slots__ = (
        "size",
        "base",
        "span",
        "offset",
        "shape",
        "strides",
        "dense_strides",
        "compilable",
        "geometry",
        "ref",
    )

    def __init__(self, array: np.ndarray):
        itemsize = array.itemsize
        data = array.__array_interface__["data"][0]
        low = high = data
        for n, s in zip(array.shape, array.strides):
            if s < 0:
                low += s * (n - 1)
            else:
                high += s * (n - 1)
        self.size = array.size
        self.base = low
        self.span = (high - low) // itemsize + 1
        self.offset = (data - low) // itemsize
        self.shape = array.shape
        self.strides = tuple(s // itemsize for s in array.strides)
        self.geometry = array.shape + array.strides
        #: the strides if the array is dense: four dense arrays with equal
        #: strides are walked as one flat run each, in memory order
        self.dense_strides = self.strides if self.span == self.size else None
        # Compiled code addresses whole, aligned, native-order elements only.
        self.compilable = bool(
            array.dtype.isnative
            and array.flags.aligned
            and low % itemsize == 0
            and all(s % itemsize == 0 for s in array.strides)
        )
        self.ref = None  # a weak reference to the array while _layouts holds the layout


#: id(array) → its layout.  Reading an array's address costs about 2 µs, a
#: lookup here a tenth of that, and many small parameters make it count.  The
#: entry is the array's: it is dropped when the array dies (by the weak
#: reference's callback, which CPython runs before the array's memory, and
#: so its id, can be reused).  The address cannot change while the array
#: lives: NumPy refuses to resize an array that has a weak reference (short
#: of ``resize(refcheck=False)``, which it documents as unsafe).  Its shape
#: and strides can (``a.shape = ...``), so a lookup compares them.
_layouts: dict[int, _Layout] = {}


def _layout(array: np.ndarray) -> _Layout:
    key = id(array)
    layout = _layouts.get(key)
    if layout is not None and layout.geometry == array.shape + array.strides:
        return layout
    layout = _Layout(array)
    try:
        layout.ref = weakref.ref(array, lambda _, key=key: _forget(key))
    except TypeError:  # a subclass without weak references: not remembered
        return layout
    _layouts[key] = layout
    return layout


def _forget(key: int) -> None:
    """An array with a layout died: drop its layout, and the kept tables,
    which may describe it (so that they hold no memory for the dead; the
    next step rebuilds what it needs)."""
    _layouts.pop(key, None)
    _tables.clear()


def _strided_shape(layouts) -> tuple[list[int], list[list[int]]]:
    """The shape and per-array strides of a strided tensor, with size-1 axes
    dropped and neighbouring axes merged wherever all four arrays allow, so
    that runs along the last axis are as long as possible."""
    shape: list[int] = []
    strides: list[list[int]] = [[], [], [], []]
    for d, n in enumerate(layouts[0].shape):
        if n == 1:
            continue
        if shape and all(s[-1] == lay.strides[d] * n for s, lay in zip(strides, layouts)):
            shape[-1] *= n
            for s, lay in zip(strides, layouts):
                s[-1] = lay.strides[d]
            continue
        shape.append(n)
        for s, lay in zip(strides, layouts):
            s.append(lay.strides[d])
    return shape, strides


#: How many tables :func:`_table` keeps: one per batch of a step (in practice
#: one per parameter group and dtype), for the few optimizers of a process.
_TABLES_KEPT = 16
#: flat tuple of a batch's layouts (θ, g, m, v of each tensor) → its table;
#: emptied whenever an array with a layout dies (:func:`_forget`).
_tables: OrderedDict[tuple, tuple] = OrderedDict()


def _table(layouts: tuple) -> tuple:
    """The arrays describing a batch to the compiled code, and its number of
    elements, from its layouts (θ, g, m, v of each tensor in turn).

    A layout object stands for fixed values (see :func:`_layout`), so the
    table of the same layouts is the same: kept, a step of the same arrays as
    the last one skips building it, which costs more than the update of many
    small tensors.
    """
    table = _tables.get(layouts)
    if table is not None:
        _tables.move_to_end(layouts)
        return table
    count = len(layouts) // 4
    quads = [layouts[4 * i : 4 * i + 4] for i in range(count)]
    # Tensors whose four arrays are not dense with equal strides are walked along their strides.
    described = {
        i: _strided_shape(quad)
        for i, quad in enumerate(quads)
        if quad[0].dense_strides is None
        or not (
            quad[0].dense_strides
            == quad[1].dense_strides
            == quad[2].dense_strides
            == quad[3].dense_strides
        )
    }
    depth = max((len(shape) for shape, _ in described.values()), default=1)
    ndims = np.zeros(count, np.int64)
    shapes = np.ones((count, depth), np.int64)
    strides = np.zeros((count, 4, depth), np.int64)
    for i, (shape, per_array) in described.items():
        ndims[i] = len(shape)
        shapes[i, : len(shape)] = shape
        strides[i, :, : len(shape)] = per_array
    sizes = np.array([quad[0].size for quad in quads], np.int64).reshape(count)
    bases, spans, offsets = (
        np.array([getattr(lay, field) for lay in layouts], np.int64).reshape(count, 4)
        for field in ("base", "span", "offset")
    )
    table = (sizes, bases, spans, offsets, ndims, shapes, strides), int(sizes.sum())
    _tables[layouts] = table
    if len(_tables) > _TABLES_KEPT:
        _tables.popitem(last=False)
    return table


def _run(layouts: tuple, itemsize: int, coef: Coefficients) -> None:
    """One compiled call over a batch: tensors of one dtype and coefficients."""
    arrays, total = _table(layouts)
    _launch(arrays, total, itemsize, coef)


def _launch(arrays: tuple, total: int, itemsize: int, coef: Coefficients) -> None:
    """The compiled pass over a table of ``total`` elements."""
    args = (arrays[0], np.int64(itemsize), *arrays[1:], coef)
    if total < PARALLEL_THRESHOLD:
        _update_serial(*args)
        return
    # Threads take units one at a time rather than a fixed share each: on a
    # shared machine a thread that loses its core then delays one unit, not half the step.
    previous = set_parallel_chunksize(1)
    try:
        _update_parallel(*args)
    finally:
        set_parallel_chunksize(previous)


def update(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    exp_avgs: Sequence[np.ndarray],
    exp_avg_sqs: Sequence[np.ndarray],
    coefficients: Sequence[Coefficients],
) -> None:
    """Update each real-valued (θ, m, v) in place with its own coefficients:
    one compiled call per (dtype, coefficients) set."""
    batches: dict[tuple, list] = {}  # (dtype, coefficients) → layouts of its tensors, flat
    by_numpy = []
    last_coef, last_dtype, batch = None, None, None
    for param, grad, exp_avg, exp_avg_sq, coef in zip(
        params, grads, exp_avgs, exp_avg_sqs, coefficients
    ):
        if param.size == 0:
            continue
        layouts = lp, lg, lm, lv = (
            _layout(param),
            _layout(grad),
            _layout(exp_avg),
            _layout(exp_avg_sq),
        )
        if not (lp.compilable and lg.compilable and lm.compilable and lv.compilable):
            by_numpy.append((param, grad, exp_avg, exp_avg_sq, coef))
            continue
        # Parameters of a step share one coefficients object: comparing by identity first
        # finds the batch of the one before without hashing the coefficients.
        if coef is not last_coef or param.dtype != last_dtype:
            batch = batches.setdefault((param.dtype, coef), [])
            last_coef, last_dtype = coef, param.dtype
        batch += layouts
    for (dtype, coef), layouts in batches.items():
        _run(tuple(layouts), dtype.itemsize, coef)
    if by_numpy:
        backend_numpy.update(*map(list, zip(*by_numpy)))


def is_array(x) -> bool:
    """Arrays this backend reads and updates: NumPy arrays."""
    return isinstance(x, np.ndarray)


def zeros_like(x: np.ndarray) -> np.ndarray:
    """A fresh zero state array for parameter ``x``."""
    return np.zeros_like(x)


# -- a step over arrays read by compiled code ----------------------------------------------------
#
# Over many small parameters a step's cost is Python's, and much of it is reading arrays:
# an array's shape, strides and flags, read from Python, are new tuples and objects, a few
# hundred nanoseconds an array, and its address (``__array_interface__``) a dict.  Compiled
# code reads them from the array objects themselves, given their addresses (``id``, in
# CPython): NumPy lays out every ndarray as the struct PyArrayObject_fields of its C API
# (numpy/ndarraytypes.h, unchanged since NumPy 1.7 and part of its ABI), read here as 64-bit
# words.  :func:`_struct_readable` checks, once, that the words read are the ones Python sees;
# where they are not (another interpreter, a 32-bit or big-endian machine), nothing uses them.

#: The words of PyArrayObject_fields on a 64-bit machine: refcount, type, data, nd,
#: dimensions, strides, base, descr, flags (nd and flags are C ints: the low half of a word).
_TYPE, _DATA, _NDIM, _DIMS, _DESCR, _FLAGS = 1, 2, 3, 4, 7, 8
#: NPY_ARRAY_C_CONTIGUOUS, NPY_ARRAY_ALIGNED and NPY_ARRAY_WRITEABLE (numpy/ndarraytypes.h).
_C_CONTIGUOUS, _ALIGNED, _WRITEABLE = 0x0001, 0x0100, 0x0400


@_njit
def _read_dense(addresses, ndarray_type, descr, itemsize, sizes, bases):
    """Fill the table of n tensors (``sizes``, ``bases``) from the objects at
    ``addresses``: every θ, then every g, every m, every v.  Returns the
    number of elements when all are ndarrays (not subclasses) whose dtype is
    the object at ``descr``, C-contiguous and aligned, each of its θ's shape,
    θ, m and v writeable; otherwise −1 − i, i the first tensor that is not
    (the table is then meaningless)."""
    n = sizes.shape[0]
    total = 0
    for j in range(4 * n):  # the type first: only an ndarray has the words read below
        if carray(_pointer(addresses[j]), 2, np.int64)[_TYPE] != ndarray_type:
            return -1 - j % n
    for i in range(n):
        theta = carray(_pointer(addresses[i]), 9, np.int64)
        nd = theta[_NDIM] & 0xFFFFFFFF
        dims = carray(_pointer(theta[_DIMS]), nd, np.int64)
        size = 1
        for d in range(nd):
            size *= dims[d]
        for k in range(4):
            obj = carray(_pointer(addresses[k * n + i]), 9, np.int64)
            need = _C_CONTIGUOUS | _ALIGNED | (0 if k == 1 else _WRITEABLE)
            if (
                obj[_DESCR] != descr
                or (obj[_FLAGS] & need) != need
                or obj[_DATA] % itemsize != 0
                or (obj[_NDIM] & 0xFFFFFFFF) != nd
            ):
                return -1 - i
            other = carray(_pointer(obj[_DIMS]), nd, np.int64)
            for d in range(nd):
                if other[d] != dims[d]:
                    return -1 - i
            bases[i, k] = obj[_DATA]
        sizes[i] = size
        total += size
    return total


class _Direct:
    """A compiled function called straight, not through Numba's dispatcher,
    for arguments whose types are those of the first call, always.

    The dispatcher finds the types of every argument on every call (about a
    microsecond for a tuple of arrays), which is much of what a repeated step
    of a small problem costs.  The first call goes through it (compiling or
    loading from the disk cache); then the machine code compiled for those
    types is called directly.  Where this Numba keeps its compiled code
    elsewhere, every call goes through the dispatcher."""

    __slots__ = ("dispatcher", "entry")

    def __init__(self, dispatcher):
        self.dispatcher, self.entry = dispatcher, None

    def __call__(self, *args):
        if self.entry is not None:
            return self.entry(*args)
        result = self.dispatcher(*args)
        try:
            self.entry = self.dispatcher.overloads[tuple(map(typeof, args))].entry_point
        except (AttributeError, KeyError):
            pass
        return result


class DenseBatch:
    """The table of a batch of n tensors, all four arrays of each dense in C
    order, refilled by :meth:`read` from the arrays themselves each step (the
    table of the last step's batch is kept: no allocation a step), and the
    batch's arithmetic (``plan_step``'s options), for :meth:`step`."""

    __slots__ = (
        "dtype", "itemsize", "arrays", "total", "arithmetic", "rules", "state_type", "update",
        "update_parallel", "scratch", "tag_ids", "kinds",
    )  # fmt: skip

    def __init__(self, count: int, dtype: np.dtype, arithmetic: dict | None = None):
        self.dtype, self.itemsize = dtype, dtype.itemsize  # dtype held: its id names it
        self.arrays = (
            np.zeros(count, np.int64),  # sizes
            np.zeros((count, 4), np.int64),  # bases
            np.zeros((count, 4), np.int64),  # spans (unused by dense tensors)
            np.zeros((count, 4), np.int64),  # offsets
            np.zeros(count, np.int64),  # ndims: 0, dense
            np.ones((count, 1), np.int64),  # shapes
            np.zeros((count, 4, 1), np.int64),  # strides
        )
        self.total = 0
        self.scratch, self.tag_ids = np.zeros(4 * count, np.int64), np.zeros(0, np.int64)
        self.kinds = np.zeros(4, np.int64)  # _KINDS and the parameters' type (read_kept)
        if arithmetic is not None:
            self.use(arithmetic)
            # Their argument types are this batch's, always.
            self.update = _Direct(_scheduled_update)
            self.update_parallel = _Direct(_scheduled_update_parallel)

    def use(self, arithmetic: dict) -> None:
        """Step with ``arithmetic`` (``plan_step``'s options) from now on: the
        profile's of the first, with other values (a scheduled learning rate)."""
        rules = schedule_rules(arithmetic, self.dtype)
        if hasattr(self, "rules") and _kinds(rules) != _kinds(self.rules):
            raise ValueError("a batch's arithmetic may change its values, not its kinds")
        self.arithmetic, self.rules = arithmetic, rules
        self.state_type = np.dtype(arithmetic["scalar_dtype"]).type

    def read(self, arrays: list) -> bool:
        """Whether ``arrays`` (every θ, then every g, every m, every v) are
        NumPy arrays (not subclasses) of the batch's dtype, C-contiguous and
        aligned, each of its θ's shape, θ, m and v writeable; if so the table
        now describes them.  The arrays must stay alive until :meth:`run`."""
        if not _STRUCT_READABLE:
            return False
        if _LIST_READABLE and type(arrays) is list:  # its item pointers, read in compiled code
            self.total = _read_list_table(
                id(arrays), _LIST, _NDARRAY, id(self.dtype), self.itemsize, *self.arrays[:2]
            )
        else:
            if len(arrays) != 4 * self.arrays[0].shape[0]:
                return False
            addresses = np.fromiter(map(id, arrays), np.int64, len(arrays))
            self.total = _read_table(
                addresses, _NDARRAY, id(self.dtype), self.itemsize, *self.arrays[:2]
            )
        return self.total >= 0

    def read_rows(self, pairs: list, rows: list, tags: tuple) -> bool:
        """:meth:`read` of the arrays in ``pairs``, a list of (θ, g) tuples,
        and ``rows``, a list of (m, v, *tagged) tuples, if each row's tagged
        items are the very objects ``tags`` (a step's scalar state: one pair
        of objects for the whole batch).  Read in compiled code: a step over
        many tensors then never touches their arrays from Python."""
        if not (_ROWS_READABLE and type(pairs) is list and type(rows) is list):
            for row in rows:  # gathered in Python
                if len(row) != 2 + len(tags) or not all(map(operator.is_, row[2:], tags)):
                    return False
            if not all(len(pair) == 2 for pair in pairs):
                return False
            thetas, grads = zip(*pairs) if pairs else ((), ())
            exp_avgs, exp_avg_sqs = [r[0] for r in rows], [r[1] for r in rows]
            return self.read([*thetas, *grads, *exp_avgs, *exp_avg_sqs])
        tag_ids = self.tag_ids
        if tag_ids.shape[0] != len(tags):
            tag_ids = self.tag_ids = np.zeros(len(tags), np.int64)
        for k, tag in enumerate(tags):
            tag_ids[k] = id(tag)
        self.total = _read_rows_table(
            id(pairs), id(rows), tag_ids, _KINDS, id(self.dtype), self.itemsize,
            *self.arrays[:2], self.scratch,
        )  # fmt: skip
        return self.total >= 0

    @staticmethod
    def remember(params: list, table: dict, states: list, rows: list, held=None) -> StateMemo:
        """A :class:`StateMemo` of what a step read, for :meth:`read_kept`."""
        return StateMemo(params, table, states, rows, held)

    def read_kept(self, params: list, table: dict, memo: StateMemo, parameter: type) -> bool:
        """:meth:`read` of the θ and g of ``params`` (Parameters, exactly of
        type ``parameter``) and of the m and v in ``memo``, if ``params`` and
        the state ``table`` are the memo's, and neither the table nor any
        state was modified since :meth:`StateMemo.record`: then each state
        holds the m, v, step and ∏μ it held then.  False where this
        interpreter's objects are not as read (see above)."""
        if not (
            _KEPT_READABLE
            and type(params) is list
            and isinstance(table, dict)
            and _slots_readable(parameter)
        ):
            return False
        kinds = self.kinds
        if kinds[3] != id(parameter):
            kinds = self.kinds = np.array([*_KINDS, id(parameter)], np.int64)
        self.total = _read_kept_table(
            id(params), id(table), kinds, memo.memo, memo.versions, memo.table, id(self.dtype),
            self.itemsize, *self.arrays[:2], self.scratch,
        )  # fmt: skip
        return self.total >= 0

    def run(self, coef: Coefficients) -> None:
        """The update of the arrays last read, with ``coef``."""
        _launch(self.arrays, self.total, self.itemsize, coef)

    def step(self, step, mu_product) -> tuple:
        """The step after the stored (t−1, ∏_{i<t} μ_i), schedule and update
        in one compiled call, of the arrays last read: returns the new step
        and ∏μ in the state dtype, as :func:`nadam_ref.schedule.advance` does."""
        s = self.state_type
        if type(step) is not s or type(mu_product) is not s:  # the types self.update takes
            step, mu_product = s(step), s(mu_product)
        if self.total < PARALLEL_THRESHOLD:
            new_step, new_product = self.update(
                self.arrays, self.itemsize, step, mu_product, self.rules
            )
        else:
            previous = set_parallel_chunksize(1)  # as _launch, and why
            try:
                new_step, new_product = self.update_parallel(
                    self.arrays, self.itemsize, step, mu_product, self.rules
                )
            finally:
                set_parallel_chunksize(previous)
        return s(new_step), s(new_product)


_NDARRAY = id(np.ndarray)
_read_table = _Direct(_read_dense)  # always called with the same argument types

#: The words of a list object (PyListObject): refcount, type, size, items (PyObject**);
#: of a tuple object (PyTupleObject): refcount, type, size, then its items.
_LIST_SIZE, _LIST_ITEMS = 2, 3
_TUPLE_SIZE, _TUPLE_ITEMS = 2, 3
_LIST, _TUPLE = id(list), id(tuple)


@_njit
def _list_items(address, list_type, n):
    """(whether the object at ``address`` is a list of ``n`` items, their
    addresses): read from the list object (``id`` called from Python costs
    some 40 ns an object, and a step over 500 tensors has 2000)."""
    words = carray(_pointer(address), 4, np.int64)
    if words[1] != list_type or words[_LIST_SIZE] != n:
        return False, words[:0]
    return True, carray(_pointer(words[_LIST_ITEMS]), n, np.int64)


@_njit
def _tuple_items(address, tuple_type, n):
    """(whether the object at ``address`` is a tuple of ``n`` items, their addresses)."""
    words = carray(_pointer(address), _TUPLE_ITEMS, np.int64)
    if words[1] != tuple_type or words[_TUPLE_SIZE] != n:
        return False, words[:0]
    return True, carray(_pointer(address), _TUPLE_ITEMS + n, np.int64)[_TUPLE_ITEMS:]


@_njit
def _read_list(list_address, list_type, ndarray_type, descr, itemsize, sizes, bases):
    """:func:`_read_dense` of the objects in the Python list at ``list_address``."""
    ok, addresses = _list_items(list_address, list_type, 4 * sizes.shape[0])
    if not ok:
        return -1
    return _read_dense(addresses, ndarray_type, descr, itemsize, sizes, bases)


_read_list_table = _Direct(_read_list)


@_njit
def _same_items(list_address, list_type, ids):
    """Whether the Python list at ``list_address`` holds exactly the objects
    whose addresses are ``ids``, in order (read from the list object: no
    object is touched)."""
    ok, items = _list_items(list_address, list_type, ids.shape[0])
    if not ok:
        return False
    for i in range(ids.shape[0]):
        if items[i] != ids[i]:
            return False
    return True


_same_items_direct = _Direct(_same_items)


class Objects:
    """A list of objects, held, that a later list can be compared with by
    identity, item by item, in compiled code (a Python loop over 500
    parameters costs some 40 µs)."""

    __slots__ = ("objects", "ids")

    def __init__(self, objects):
        self.objects = list(objects)
        self.ids = np.fromiter(map(id, self.objects), np.int64, len(self.objects))

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, i):
        return self.objects[i]

    def same(self, items) -> bool:
        """Whether ``items`` holds these very objects, in this order."""
        if _LIST_READABLE and type(items) is list:
            return _same_items_direct(id(items), _LIST, self.ids)
        return len(items) == len(self.objects) and all(map(operator.is_, items, self.objects))


@_njit
def _read_rows(pairs_address, rows_address, tags, kinds, descr, itemsize, sizes, bases, scratch):
    """:func:`_read_dense` of the arrays held by two Python lists of n tuples:
    (θ, g) in the first, (m, v, *tagged) in the second, each tagged item the
    object at the address in ``tags``; −1 if the lists or tuples are not so.
    ``kinds`` holds the addresses of the types list, tuple and ndarray;
    ``scratch`` (4n words) takes the addresses read."""
    n = sizes.shape[0]
    pairs_ok, pairs = _list_items(pairs_address, kinds[0], n)
    rows_ok, rows = _list_items(rows_address, kinds[0], n)
    if not (pairs_ok and rows_ok):
        return -1
    for i in range(n):
        pair_ok, pair = _tuple_items(pairs[i], kinds[1], 2)
        row_ok, row = _tuple_items(rows[i], kinds[1], 2 + tags.shape[0])
        if not (pair_ok and row_ok):
            return -1
        for k in range(tags.shape[0]):
            if row[2 + k] != tags[k]:
                return -1
        scratch[i], scratch[n + i] = pair[0], pair[1]
        scratch[2 * n + i], scratch[3 * n + i] = row[0], row[1]
    return _read_dense(scratch, kinds[2], descr, itemsize, sizes, bases)


_read_rows_table = _Direct(_read_rows)


def _struct_readable() -> bool:
    """Whether :func:`_read_dense` reads what Python sees: tried on arrays
    that it must accept and on ones it must refuse."""
    if (
        sys.implementation.name != "cpython"
        or sys.maxsize != 2**63 - 1
        or sys.byteorder != "little"
    ):
        return False
    try:
        base = np.arange(24.0).reshape(2, 3, 4)
        good = [base, base[1], np.zeros(()), np.zeros(0)]
        batch = DenseBatch(len(good), np.dtype(np.float64))
        sizes, bases = batch.arrays[0], batch.arrays[1]
        addresses = np.array([id(a) for a in good * 4], np.int64)
        if _read_dense(addresses, _NDARRAY, id(batch.dtype), 8, sizes, bases) != sum(
            a.size for a in good
        ):
            return False
        if list(sizes) != [a.size for a in good] or any(
            bases[i, 0] != a.__array_interface__["data"][0] for i, a in enumerate(good[:3])
        ):
            return False
        locked = base.copy()
        locked.flags.writeable = False
        for bad in (base.T, base[:, ::2], locked, base.astype(np.float32), base.reshape(4, 6)):
            quad = [base, bad if bad is not locked else base, base, base]
            if bad is locked:
                quad[2] = locked
            addresses = np.array([id(a) for a in quad], np.int64)
            one = DenseBatch(1, np.dtype(np.float64))
            if _read_dense(addresses, _NDARRAY, id(one.dtype), 8, *one.arrays[:2]) != -1:
                return False
        return True
    except Exception:  # noqa: BLE001 - anything unexpected: do without
        return False


_STRUCT_READABLE = _struct_readable()


def _list_readable() -> bool:
    """Whether :func:`_read_list` reads a list's items as Python sees them
    (the layout of PyListObject differs in debug and free-threaded builds)."""
    if not _STRUCT_READABLE:
        return False
    try:
        good = [np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(2)] * 2
        batch = DenseBatch(2, np.dtype(np.float64))
        items = list(good)
        if _read_list(id(items), _LIST, _NDARRAY, id(batch.dtype), 8, *batch.arrays[:2]) != 5:
            return False
        if list(batch.arrays[1][:, 0]) != [a.__array_interface__["data"][0] for a in good[:2]]:
            return False
        short = good[:7]  # a list of another length is refused, not read past its end
        return _read_list(id(short), _LIST, _NDARRAY, id(batch.dtype), 8, *batch.arrays[:2]) < 0
    except Exception:  # noqa: BLE001 - anything unexpected: do without
        return False


_LIST_READABLE = _list_readable()
_KINDS = np.array([_LIST, _TUPLE, _NDARRAY], np.int64)


def _rows_readable() -> bool:
    """Whether :func:`_read_rows` reads lists of tuples as Python sees them,
    and refuses rows whose tagged items are other objects."""
    if not _LIST_READABLE:
        return False
    try:
        a, b, c, d = np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(2)
        tags = (1.5, object())
        tag_ids = np.array([id(t) for t in tags], np.int64)
        batch = DenseBatch(2, np.dtype(np.float64))

        pairs = [(a, c), (b, d)]

        def read(rows):
            return _read_rows(
                id(pairs), id(rows), tag_ids, _KINDS, id(batch.dtype), 8,
                *batch.arrays[:2], batch.scratch,
            )  # fmt: skip

        if read([(c, a, *tags), (d, b, *tags)]) != 5 or list(batch.arrays[1][0]) != [
            x.__array_interface__["data"][0] for x in (a, c, c, a)
        ]:
            return False
        if not read([(c, a, *tags), (d, b, tags[0], 1.5)]) == read([(c, a, *tags)]) == -1:
            return False
        held = Objects(pairs)
        return held.same(list(pairs)) and not held.same(pairs[::-1]) and not held.same(pairs[:1])
    except Exception:  # noqa: BLE001 - anything unexpected: do without
        return False


_ROWS_READABLE = _rows_readable()


# -- unchanged since the last step: the parameters' slots and the states' version tags ----------
#
# A repeated step over many tensors must still find each parameter's arrays (a new gradient
# each step is the rule) and know that no state entry was replaced.  Reading them through
# Python (attribute and key lookups, about 0.3 µs a parameter when its objects are out of
# cache, as they are between training steps) costs as much as the update itself.  So compiled
# code reads the two words where a Parameter keeps ``data`` and ``grad`` (its __slots__), and
# each state dict's version tag: CPython gives every dict a 64-bit tag that changes, to a
# value no dict had before, with every modification of it, whatever makes it (PEP 509; in
# PyDictObject after the reference count, the type and the number of entries).  A state dict
# whose tag is the one recorded after the last step holds the objects it held then.  Both
# layouts are checked once, at import, against what Python sees; where either is not as
# read, nothing uses them (the step reads through Python).

#: The words of a Parameter: refcount, type, then its slots data and grad.
_PARAMETER_DATA, _PARAMETER_GRAD = 2, 3
#: The word of a dict object (PyDictObject) holding its version tag.
_DICT_VERSION = 3


@_njit
def _read_kept(params_address, table_address, kinds, memo, versions, table, descr, itemsize,
               sizes, bases, scratch):  # fmt: skip
    """:func:`_read_dense` of the θ and g in the slots of the Parameters in
    the list at ``params_address`` and of the m and v a memo recorded, if
    nothing the memo recorded has changed: the list holds the memo's
    Parameters (``memo[i, 0]``, each exactly of the type ``kinds[3]``), the
    dict at ``table_address`` (parameter → state) is the memo's with the
    version tag recorded (``table``: address, tag), so each parameter's state
    is the memo's (``memo[i, 1]``), and each state has the tag recorded
    (``versions[i]``), so it holds the m and v recorded (``memo[i, 2:]``) and
    the step and ∏μ stored.  Else −1."""
    n = sizes.shape[0]
    ok, param_items = _list_items(params_address, kinds[0], n)
    if not ok or table_address != table[0]:
        return -1
    if carray(_pointer(table_address), 4, np.int64)[_DICT_VERSION] != table[1]:
        return -1
    for i in range(n):
        if param_items[i] != memo[i, 0]:
            return -1
        if carray(_pointer(memo[i, 1]), 4, np.int64)[_DICT_VERSION] != versions[i]:
            return -1
        param = carray(_pointer(memo[i, 0]), 4, np.int64)
        if param[1] != kinds[3] or param[_PARAMETER_DATA] == 0 or param[_PARAMETER_GRAD] == 0:
            return -1  # another type, or a slot emptied (del p.grad)
        scratch[i] = param[_PARAMETER_DATA]
        scratch[n + i] = param[_PARAMETER_GRAD]
        scratch[2 * n + i] = memo[i, 2]
        scratch[3 * n + i] = memo[i, 3]
    return _read_dense(scratch, kinds[2], descr, itemsize, sizes, bases)


@_njit
def _record_versions(memo, versions, table):
    for i in range(memo.shape[0]):
        versions[i] = carray(_pointer(memo[i, 1]), 4, np.int64)[_DICT_VERSION]
    table[1] = carray(_pointer(table[0]), 4, np.int64)[_DICT_VERSION]


_read_kept_table = _Direct(_read_kept)
_record_versions_direct = _Direct(_record_versions)


@intrinsic
def _call_c(typingctx, function, a, b, c):
    """``function(a, b, c)``: a C function of three pointers returning an int,
    called at its address (the pointers as integers)."""
    if not all(isinstance(x, types.Integer) for x in (function, a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        pointer = ir.FunctionType(ir.IntType(32), [cgutils.voidptr_t] * 3).as_pointer()
        called = builder.call(
            builder.inttoptr(args[0], pointer),
            [builder.inttoptr(x, cgutils.voidptr_t) for x in args[1:]],
        )
        return builder.sext(called, ir.IntType(64))

    return types.int64(function, a, b, c), codegen


@_njit
def _set_items(setitem, dict_type, memo, keys, values):
    """``state[keys[k]] = values[k]`` (objects at those addresses) for k = 0, 1
    in every state dict of the memo (``memo[i, 1]``), by ``setitem``
    (CPython's PyDict_SetItem: the GIL is held, as in any call from Python
    to compiled code, and it counts the references).  Returns how many
    states were set: all, or up to the first that is not exactly a dict
    (a subclass may have its own __setitem__: Python sets that one and the
    rest); −1 − i if setting state i failed (no memory)."""
    for i in range(memo.shape[0]):
        state = memo[i, 1]
        if carray(_pointer(state), 2, np.int64)[1] != dict_type:
            return i
        for k in range(2):
            if _call_c(setitem, state, keys[k], values[k]) != 0:
                return -1 - i
    return memo.shape[0]


_set_items_direct = _Direct(_set_items)
#: The keys a repeated step sets in every state, and PyDict_SetItem's address.
_STATE_KEYS = ("step", "mu_product")
_STATE_KEY_IDS = np.array([id(sys.intern(k)) for k in _STATE_KEYS], np.int64)
_DICT = id(dict)


def _dict_setitem() -> int | None:
    """PyDict_SetItem's address, if :func:`_set_items` sets values through it
    as Python does (the values and their reference counts); else None."""
    try:
        import ctypes

        address = ctypes.cast(ctypes.pythonapi.PyDict_SetItem, ctypes.c_void_p).value
        states = [{"step": 1.0, "mu_product": 2.0, "exp_avg": None}, {"step": 0, "mu_product": 0}]
        memo = np.array([(0, id(s), 0, 0) for s in states], np.int64)
        step, mu_product = np.float64(3.5), np.float64(0.25)  # new objects, counted
        counts = sys.getrefcount(step), sys.getrefcount(mu_product)
        values = np.array([id(step), id(mu_product)], np.int64)
        if _set_items(address, _DICT, memo, _STATE_KEY_IDS, values) != 2:
            return None
        if any(s["step"] is not step or s["mu_product"] is not mu_product for s in states):
            return None
        if (sys.getrefcount(step), sys.getrefcount(mu_product)) != (counts[0] + 2, counts[1] + 2):
            return None
        return address if list(states[0]) == ["step", "mu_product", "exp_avg"] else None
    except Exception:  # noqa: BLE001 - anything unexpected: do without
        return None


@_njit
def _words(address, n):
    return carray(_pointer(address), n, np.int64).copy()


def _versions_readable() -> bool:
    """Whether the word read as a dict's version tag changes with every kind
    of modification of that dict, to a value it never had, and with nothing else."""
    if not _LIST_READABLE:
        return False
    try:
        d, other = {"a": 1}, {}
        changes = (
            lambda: d.__setitem__("a", 2),
            lambda: dict.__setitem__(d, "b", 3),  # past any subclass: CPython's own
            lambda: d.pop("b"),
            lambda: d.update(a=4),
            lambda: d.setdefault("c", 5),
            lambda: d.__delitem__("c"),
            lambda: d.clear(),
        )
        seen = set()
        for change in changes:
            before = _words(id(d), 4)[_DICT_VERSION]
            other[len(other)] = 0  # another dict's change leaves this one's tag
            if _words(id(d), 4)[_DICT_VERSION] != before or before in seen:
                return False
            seen.add(before)
            change()
            if _words(id(d), 4)[_DICT_VERSION] == before:
                return False
        return True
    except Exception:  # noqa: BLE001 - anything unexpected: do without
        return False


_KEPT_READABLE = _versions_readable()
_SETITEM = _dict_setitem() if _KEPT_READABLE else None
_SLOTS_READABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # type → readable


def _slots_readable(parameter: type) -> bool:
    """Whether instances of ``parameter`` keep data and grad in the words read."""
    known = _SLOTS_READABLE.get(parameter)
    if known is None:
        try:
            p, data, grad = object.__new__(parameter), np.zeros(1), np.zeros(1)
            p.data, p.grad = data, grad
            words = _words(id(p), 4)
            known = words[_PARAMETER_DATA] == id(data) and words[_PARAMETER_GRAD] == id(grad)
        except Exception:  # noqa: BLE001 - anything unexpected: do without
            known = False
        _SLOTS_READABLE[parameter] = known = bool(known)
    return known


class StateMemo:
    """What a repeated step read through Python, kept for the next: the
    group's Parameters, the optimizer's state table (a dict, parameter →
    state) and each parameter's state dict, its m and v, and the version
    tags of the table and of every state as :meth:`record` last found them:
    what :meth:`DenseBatch.read_kept` checks.  ``rows`` are the states'
    (m, v, …) tuples, as :meth:`DenseBatch.read_rows` read them."""

    __slots__ = (
        "params", "table_object", "states", "rows", "held", "memo", "versions", "table", "values",
    )  # fmt: skip

    def __init__(self, params: list, table: dict, states: list, rows: list, held=None):
        # Held, so that the addresses stay theirs (and ``held``: what else the step read).
        self.params, self.table_object, self.states = list(params), table, list(states)
        self.rows, self.held = rows, held
        self.memo = np.array(
            [(id(p), id(s), id(r[0]), id(r[1])) for p, s, r in zip(params, states, rows)],
            np.int64,
        ).reshape(len(self.states), 4)
        self.versions = np.zeros(len(self.states), np.int64)
        self.table = np.array([id(table), 0], np.int64)
        self.values = np.zeros(2, np.int64)

    def store(self, step, mu_product) -> None:
        """``state["step"], state["mu_product"] = step, mu_product`` in every
        state (in compiled code where it can: see :func:`_set_items`), then
        :meth:`record`."""
        done = 0
        if _SETITEM is not None:
            self.values[0], self.values[1] = id(step), id(mu_product)
            done = _set_items_direct(_SETITEM, _DICT, self.memo, _STATE_KEY_IDS, self.values)
            if done < 0:
                raise MemoryError(f"could not store the step in state {-1 - done}")
        for state in self.states[done:]:
            state["step"], state["mu_product"] = step, mu_product
        self.record()

    def record(self) -> None:
        """Note the version tags now (after the step that wrote the states)."""
        _record_versions_direct(self.memo, self.versions, self.table)


# -- the schedule, compiled --------------------------------------------------------------------
#
# A step of a small problem costs what its scalars cost: the ~50 scalar operations of the
# schedule take longer in Python (about 20 µs) than a hand-written NumPy step over small
# arrays.  So that a repeated step costs a compiled call, Numba compiles the schedule too —
# the very functions of nadam_ref.schedule, as it compiles nadam_element: the number types
# they are given (schedule.scalar_type) arrive as Numba's number classes, and the
# running-product powers of accumulated_powers are multiplied out in a loop.


@overload(schedule.scalar_type)
def _scalar_type(dtype):
    if isinstance(dtype, types.NumberClass):
        return lambda dtype: dtype
    return None


@overload(schedule.accumulated_power)
def _accumulated_power(factor, t, state):
    # factor^t as the running product the Python function keeps: 1, then t
    # multiplications, each rounded to the state dtype (O(t): a paddle-profile
    # step at t = 10^4 spends some 10 µs here).
    def power(factor, t, state):
        p = state(1)
        for _ in range(t):
            p = state(p * state(factor))
        return p

    return power


for _function in (schedule.momentum_coefficient, schedule.advance, schedule.coefficients):
    register_jitable(error_model="numpy")(_function)


def _number_class(witness):
    """The scalar type of an empty array's dtype (None for None): how a dtype
    reaches compiled code (a Numba call types arrays cheaply, classes slowly)."""
    return None if witness is None else witness.dtype.type


@overload(_number_class)
def _number_class_compiled(witness):
    if witness is types.none:
        return lambda witness: None
    number = {types.float32: np.float32, types.float64: np.float64}.get(witness.dtype)
    if number is None:
        return None
    return lambda witness: number


def schedule_rules(arithmetic: dict, dtype: np.dtype) -> tuple:
    """``plan_step``'s arithmetic options, for parameters of ``dtype``, as
    :func:`_scheduled_update` takes them: numbers, flags, the 1 − β given
    (or None) and the dtypes (as empty arrays)."""
    o = arithmetic
    schedule.check_momentum_correction(o["momentum_correction"])
    decay_dtype = o["decay_factor_dtype"]
    # Numbers as floats (exact for any float32 or float64 value), so that the
    # argument types, and so the compiled code, depend on the profile alone.
    return (
        tuple(float(o[k]) for k in ("lr", "beta1", "beta2", "eps", "weight_decay")),
        (float(o["momentum_decay"]), float(o["momentum_base"])),
        (
            bool(o["decoupled_weight_decay"]),
            bool(o["maximize"]),
            bool(o["split_update"]),
            bool(o["split_denominator"]),
            o["momentum_correction"] == "next",
            bool(o["accumulated_powers"]),
        ),
        tuple(
            None if o[k] is None else float(o[k]) for k in ("one_minus_beta1", "one_minus_beta2")
        ),
        (
            np.zeros(0, o["compute_dtype"]),
            np.zeros(0, o["scalar_dtype"]),
            np.zeros(0, dtype),
            None if decay_dtype is None else np.zeros(0, decay_dtype),
        ),
    )


def _kinds(rules: tuple) -> tuple:
    """What the compiled code is specialised on: which values are None, and the dtypes."""
    return (
        rules[3][0] is None,
        rules[3][1] is None,
        *(w if w is None else w.dtype for w in rules[4]),
    )


@register_jitable(error_model="numpy")
def _schedule(step, mu_product, rules):
    """schedule.step_coefficients, compiled: (scalars, coefficients)."""
    (lr, beta1, beta2, eps, weight_decay), (momentum_decay, base), flags, given, dtypes = rules
    decoupled, maximize, split_update, split_denominator, to_next, accumulated = flags
    compute, state = _number_class(dtypes[0]), _number_class(dtypes[1])
    param, decay = _number_class(dtypes[2]), _number_class(dtypes[3])
    scalars = schedule.advance(
        step, mu_product, beta1, beta2, momentum_decay, compute, state, base, accumulated
    )
    correction = "next" if to_next else "current"
    coef = schedule.coefficients(
        scalars, lr, beta1, beta2, eps, weight_decay, decoupled, maximize, split_update,
        split_denominator, correction, given[0], given[1], decay, compute, param,
    )  # fmt: skip
    return scalars, coef


@_njit(error_model="numpy")
def _scheduled_update(table, itemsize, step, mu_product, rules):
    """One step of a table of dense tensors on this thread: the schedule from
    the stored (t−1, ∏_{i<t} μ_i), then the update; returns the new step and ∏μ."""
    scalars, coef = _schedule(step, mu_product, rules)
    sizes, bases, spans, offsets, ndims, shapes, strides = table
    _update_serial(sizes, itemsize, bases, spans, offsets, ndims, shapes, strides, coef)
    return scalars.step, scalars.mu_product


@_njit(error_model="numpy")
def _scheduled_update_parallel(table, itemsize, step, mu_product, rules):
    """:func:`_scheduled_update` over the cores, for tables of PARALLEL_THRESHOLD
    elements or more (called with the chunk size :func:`_launch` sets)."""
    scalars, coef = _schedule(step, mu_product, rules)
    sizes, bases, spans, offsets, ndims, shapes, strides = table
    _update_parallel(sizes, itemsize, bases, spans, offsets, ndims, shapes, strides, coef)
    return scalars.step, scalars.mu_product
