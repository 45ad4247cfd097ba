"""A repeated step on the Numba backend: what the last step checked, found
again in compiled code, from the Python objects that hold it.

A step over many small tensors costs what Python costs: finding each
parameter's arrays through attribute and key lookups, and an array's
address, shape and flags through Python (new tuples and objects, a few
hundred nanoseconds an array), costs as much as the update itself.  A step
whose inputs are the ones the last step checked (see
:class:`nadam_ref.optimizer._Repeat`) reads them here from the objects
themselves, given their addresses (``id``, in CPython): NumPy's array
struct; CPython's list, tuple and dict objects and a dict's version tag; a
Parameter's slots.  It stores the new step and ∏μ in each state through
CPython's ``PyDict_SetItem``, and runs the schedule and the update in one
compiled call (:class:`DenseBatch`).

Each layout is checked once against what Python sees (``_*_readable``);
where one differs (another interpreter or build), Python reads instead, with
the same bits.
"""

from __future__ import annotations

import operator
import sys
import weakref

import numpy as np
from llvmlite import ir
from numba import carray, set_parallel_chunksize, typeof
from numba.core import cgutils, types
from numba.extending import intrinsic

from .backend_numba import (
    PARALLEL_THRESHOLD,
    _kinds,
    _launch,
    _njit,
    _pointer,
    _scheduled_update,
    _scheduled_update_parallel,
    schedule_rules,
)
from .schedule import Coefficients

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
    order, refilled each step from the objects that hold them (:meth:`read`
    from a list of the arrays, :meth:`read_rows` from the parameters' and
    states' tuples, :meth:`read_kept` from the Parameters and a memo; the
    table of the last step's batch is kept: no allocation a step), and the
    batch's arithmetic (``plan_step``'s options), for :meth:`step`."""

    __slots__ = (
        "dtype", "itemsize", "arrays", "total", "arithmetic", "rules", "state_type", "update",
        "update_parallel", "scratch", "tag_ids", "kinds", "held", "holding",
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
        self.held, self.holding = 0, np.zeros(2 * count, np.int64)  # see read_kept
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
    def remember(
        params: list, table: dict, group: dict, states: list, rows: list, held=None
    ) -> StateMemo:
        """A :class:`StateMemo` of what a step read, for :meth:`read_kept`."""
        return StateMemo(params, table, group, states, rows, held)

    def read_kept(
        self, params: list, table: dict, memo: StateMemo, parameter: type, group: dict | None
    ) -> bool:
        """:meth:`read` of the θ and g of ``params`` (Parameters, exactly of
        type ``parameter``) and of the m and v in ``memo``, if ``params`` and
        the state ``table`` are the memo's, and neither the table nor any
        state was modified since :meth:`StateMemo.record`: then each state
        holds the m, v, step and ∏μ it held then; and ``group`` (unless
        None) is the memo's, unmodified since: then each of its options is
        the object it was.  False where this interpreter's objects are not
        as read (see above)."""
        if not (
            _REFERENCES is not None
            and type(params) is list
            and isinstance(table, dict)
            and _slots_readable(parameter)
        ):
            return False
        if self.held:  # what an earlier read held, if its step never ran
            self.release()
        kinds = self.kinds
        if kinds[3] != id(parameter):
            kinds = self.kinds = np.array([*_KINDS, id(parameter)], np.int64)
        self.total = _read_kept_table(
            id(params), id(table), 0 if group is None else id(group), kinds, memo.memo,
            memo.versions, memo.table, id(self.dtype), self.itemsize, *self.arrays[:2],
            self.scratch, _REFERENCES[0], self.holding,
        )  # fmt: skip
        if self.total < 0:
            return False
        # Every θ and g held (as a list of them would) until release(): the update writes
        # through their addresses.
        self.held = self.holding.shape[0]
        return True

    def release(self) -> None:
        """Let go of the arrays :meth:`read_kept` held (after the update, or
        when the step that read them stops before it)."""
        if self.held:
            held, self.held = self.held, 0
            _count_references_direct(_REFERENCES[1], self.holding, held)

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
def _read_kept(params_address, table_address, group_address, kinds, memo, versions, table,
               descr, itemsize, sizes, bases, scratch, incref, holding):  # fmt: skip
    """:func:`_read_dense` of the θ and g in the slots of the Parameters in
    the list at ``params_address`` and of the m and v a memo recorded, if
    nothing the memo recorded has changed: the list holds the memo's
    Parameters (``memo[i, 0]``, each exactly of the type ``kinds[3]``), the
    dict at ``table_address`` (parameter → state) is the memo's with the
    version tag recorded (``table``: address, tag), so each parameter's state
    is the memo's (``memo[i, 1]``), and each state has the tag recorded
    (``versions[i]``), so it holds the m and v recorded (``memo[i, 2:]``) and
    the step and ∏μ stored; and, if ``group_address`` is not 0, the dict
    there (the parameter group) is the memo's with its tag recorded
    (``table[2:]``), so every option is the object it was.  Then each θ and
    g is held (their addresses in ``holding``); else −1."""
    n = sizes.shape[0]
    ok, param_items = _list_items(params_address, kinds[0], n)
    if not ok or table_address != table[0]:
        return -1
    if carray(_pointer(table_address), 4, np.int64)[_DICT_VERSION] != table[1]:
        return -1
    if group_address != 0 and (
        group_address != table[2]
        or carray(_pointer(group_address), 4, np.int64)[_DICT_VERSION] != table[3]
    ):
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
    total = _read_dense(scratch, kinds[2], descr, itemsize, sizes, bases)
    if total >= 0:  # every θ and g held (``incref``: Py_IncRef) until the update
        for i in range(2 * n):
            holding[i] = scratch[i]
            _call_c1(incref, scratch[i])
    return total


@_njit
def _record_versions(memo, versions, table):
    for i in range(memo.shape[0]):
        versions[i] = carray(_pointer(memo[i, 1]), 4, np.int64)[_DICT_VERSION]
    for k in (0, 2):  # the state table's tag, and the group's
        table[k + 1] = carray(_pointer(table[k]), 4, np.int64)[_DICT_VERSION]


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


@intrinsic
def _call_c1(typingctx, function, a):
    """``function(a)``: a C function of one pointer returning nothing."""
    if not all(isinstance(x, types.Integer) for x in (function, a)):
        return None

    def codegen(context, builder, signature, args):
        pointer = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t]).as_pointer()
        builder.call(
            builder.inttoptr(args[0], pointer), [builder.inttoptr(args[1], cgutils.voidptr_t)]
        )
        return context.get_dummy_value()

    return types.none(function, a), codegen


@_njit
def _count_references(function, addresses, n):
    """``function(object)`` for the first ``n`` addresses: CPython's Py_IncRef
    or Py_DecRef (the GIL is held)."""
    for i in range(n):
        _call_c1(function, addresses[i])


_count_references_direct = _Direct(_count_references)


def _reference_counting() -> tuple[int, int] | None:
    """The addresses of Py_IncRef and Py_DecRef, if :func:`_count_references`
    counts references through them as Python sees it; else None."""
    try:
        import ctypes

        incref, decref = (
            ctypes.cast(f, ctypes.c_void_p).value
            for f in (ctypes.pythonapi.Py_IncRef, ctypes.pythonapi.Py_DecRef)
        )
        held = [np.zeros(1), np.zeros(2)]
        counts = [sys.getrefcount(x) for x in held]
        addresses = np.array([id(x) for x in held], np.int64)
        _count_references(incref, addresses, 2)
        if [sys.getrefcount(x) for x in held] != [c + 1 for c in counts]:
            return None
        _count_references(decref, addresses, 2)
        return (incref, decref) if [sys.getrefcount(x) for x in held] == counts else None
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
#: Py_IncRef and Py_DecRef: a step that found θ and g in compiled code holds them until its
#: update (nothing else does: code run before it, a finalizer say, could rebind them).
_REFERENCES = _reference_counting() if _KEPT_READABLE else None
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
        "params", "table_object", "group", "states", "rows", "held", "memo", "versions", "table",
        "values",
    )  # fmt: skip

    def __init__(self, params: list, table: dict, group: dict, states: list, rows: list, held=None):
        # Held, so that the addresses stay theirs (and ``held``: what else the step read).
        self.params, self.table_object, self.states = list(params), table, list(states)
        self.rows, self.held = rows, held
        self.memo = np.array(
            [(id(p), id(s), id(r[0]), id(r[1])) for p, s, r in zip(params, states, rows)],
            np.int64,
        ).reshape(len(self.states), 4)
        self.versions = np.zeros(len(self.states), np.int64)
        self.table = np.array([id(table), 0, id(group), 0], np.int64)
        self.group = group
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
        self.held = None  # the arrays of the step that made the memo: its update has run
        self.record()

    def record(self) -> None:
        """Note the version tags now (after the step that wrote the states)."""
        _record_versions_direct(self.memo, self.versions, self.table)
