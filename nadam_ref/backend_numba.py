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

A step whose inputs are the ones the last step checked finds them in
compiled code, from the Python objects that hold them, and runs the schedule
and the update in one compiled call: :mod:`nadam_ref.backend_numba_repeat`.

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

import warnings
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from numba import carray, njit, prange, set_parallel_chunksize
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
