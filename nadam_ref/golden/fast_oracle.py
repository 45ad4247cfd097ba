"""The fast exact oracle: the same correctly rounded values as
:mod:`nadam_ref.golden.oracle`, a few thousand times faster.

The mpmath oracle spends nearly all its time on the per-element update,
:func:`nadam_ref.element.nadam_element` evaluated on NumPy object arrays of
216-bit numbers.  The per-step *scalars* (μ_t, ∏μ in its state dtype, the bias
corrections, the coefficients) are shared by every element and cheap, so this
module keeps computing them exactly, with
:func:`nadam_ref.golden.oracle.exact_coefficients`, once per step.  Only the
element update is replaced, by a Numba-compiled transcription of
``nadam_element`` in double-double arithmetic (about 106 bits) that carries,
for every value x, an approximation X = xh + xl and a bound E with

    |X − x*| + |x_mp − x*| ≤ E,

x* being the exact result of the update on the inputs and on the mpmath
coefficients, and x_mp the value the mpmath oracle computes.  The carried
state θ, m, v stays unrounded from step to step, exactly as in
:func:`nadam_ref.golden.oracle.exact_run`; only reported values are rounded.

Error bounds (u = 2⁻⁵³)
-----------------------
Every double-double operation below has a relative error under 32u²:
accurate addition 3u² and multiplication 7u² (AccurateDWPlusDW and
DWTimesDW1 in Joldes, Muller and Popescu, "Tight and rigorous error bounds for
basic building blocks of double-word arithmetic", ACM TOMS 44, 2017), division
and square root by one correction from an exact residual, under 20u² by the
same kind of analysis; each mpmath operation rounds to 219 bits, 2⁻²¹⁸
relative.  One operation z = x ∘ y therefore adds at most ε·(|Z| + propagated
error) with ε = 2⁻⁹⁷ = 512u² (a margin of 16) to the propagated error::

    x ± y:  E_x + E_y
    x · y:  |X|·E_y + |Y|·E_x + 2·E_x·E_y
    x / y:  (E_x + E_y·(|X| + E_x)/L)/L,    L = |Y| − E_y > 0 (else: fall back)
    √x:     E_x/√L,                         L = X − E_x > 0 (exact zeros stay exact)

Each bound is evaluated in float64 and multiplied by 1 + 2⁻⁴⁸, which covers
its own dozen roundings.  Values are kept inside [2⁻⁴⁰⁰, 2⁴⁰⁰] (or exactly 0),
so no product or error term under- or overflows.

Rounding and Ziv's strategy
---------------------------
A value is reported (rounded to the case's dtype, and to float64 for the
tolerance bound of :mod:`nadam_ref.golden.tolerance`, which the mpmath oracle
feeds with float64 conversions of its exact values) only when the whole
interval [X − E, X + E] lies strictly inside one rounding cell of the target
format; then x_mp rounds to the same number.  A sum or product of exact values
whose double-double result is exact (every rounding inside it checked to be 0,
as at the first steps from a zero state, where v = (1 − β2)·g² is often a
double-double) keeps E = 0: an exact tie then rounds to even, as mpmath does,
and an exact zero is +0, as mpmath's zero is.  Where the interval touches a cell boundary (a tie, or a
value within about E of one), where a value leaves the safe range (subnormal
results, overflow, NaN or ∞, a zero divisor, a gradient out of range), the
element is *flagged*: its whole trajectory is recomputed with the mpmath
oracle, and those values are the ones reported.  ``stats["fallback"]``
counts the flagged elements.

Every branch of ``nadam_element`` is transcribed (:data:`TRANSCRIBED_BRANCHES`);
the tests compare the kernel with the mpmath path on every combination of
them, so a new branch in ``nadam_element`` fails there until it is added here.

Sharding
--------
Elements are independent, so a case splits into element ranges of
:data:`CHUNK` elements run in worker processes (``workers``; forked on Linux)
or on a Dask cluster (``scheduler``) and merged into the same arrays, bit for
bit the single-process result.  Only ``record_steps`` are kept, and a range's
tolerance bound runs beside its kernel, so memory grows with the recorded
steps, not with the steps run.

Measured (benchmarks/bench_oracle.py, a shared 2-core machine): the mpmath
oracle 2.5e3 to 4.5e3 element-steps/s, this one 5e5 to 3e6 per process (170
to 600 times faster in the same run); 1e8 element-steps of float32 in 46 s on
2 workers.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from mpmath.libmp import from_float, mpf_sub, round_nearest, to_float

from .. import profiles
from ..backend_numba import _njit  # the disk cache where Numba can write one
from ..functional import as_real
from ..schedule import Coefficients
from . import oracle
from .tolerance import ToleranceBound, finish

#: The ``if`` conditions of :func:`nadam_ref.element.nadam_element` that the
#: kernel transcribes (a test compares this with the function's source).
TRANSCRIBED_BRANCHES = (
    "maximize",
    "decay_factor != 1",
    "weight_decay != 0",
    "split_denominator",
    "split_update",
)
#: The numeric fields of :class:`nadam_ref.schedule.Coefficients`, in the
#: order of the kernel's coefficient table.
NUMERIC_FIELDS = (
    "beta1",
    "one_minus_beta1",
    "beta2",
    "one_minus_beta2",
    "lr",
    "eps",
    "weight_decay",
    "decay_factor",
    "momentum_weight",
    "grad_weight",
    "momentum_step",
    "grad_step",
    "bias_correction2",
    "bias_correction2_sqrt",
)
FLAG_FIELDS = ("maximize", "split_update", "split_denominator")
assert set(NUMERIC_FIELDS + FLAG_FIELDS) == set(Coefficients._fields)
(B1, OMB1, B2, OMB2, LR, EPS, WD, DF, WM, WG, MS, GS, BC2, BC2S) = range(len(NUMERIC_FIELDS))

#: Elements per range (a shard, and the unit the tolerance bound runs on).
CHUNK = 1 << 16
# ε of the module docstring, the float64 rounding allowance, the safe range.
_EPS_OP = 2.0**-97
_FUDGE = 1.0 + 2.0**-48
_LO, _HI = 2.0**-400, 2.0**400
_SHRINK = 1.0 - 2.0**-50

# -- double-double arithmetic (pairs h + l; results exact or within 32u² relative) -------


@_njit
def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@_njit
def _fast_two_sum(a, b):  # |a| ≥ |b|
    s = a + b
    return s, b - (s - a)


@_njit
def _two_prod(a, b):  # Dekker's exact product (no FMA), |a|, |b| < 2^996
    p = a * b
    t = 134217729.0 * a
    ah = t - (t - a)
    al = a - ah
    t = 134217729.0 * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@_njit
def _dd_add(xh, xl, yh, yl):  # AccurateDWPlusDW, 3u²
    sh, sl = _two_sum(xh, yh)
    th, tl = _two_sum(xl, yl)
    c = sl + th
    vh, vl = _fast_two_sum(sh, c)
    w = tl + vl
    return _fast_two_sum(vh, w)


@_njit
def _dd_mul(xh, xl, yh, yl):  # DWTimesDW1, 7u²
    ch, cl1 = _two_prod(xh, yh)
    cl2 = xh * yl + xl * yh
    return _fast_two_sum(ch, cl1 + cl2)


@_njit
def _dd_div(xh, xl, yh, yl, inv):
    # q1 ≈ x/y (inv = 1/yh), then one correction from the residual x − q1·y.
    q1 = xh * inv
    ph, pl = _two_prod(yh, q1)
    rh, rl = _dd_add(xh, xl, -ph, -(pl + yl * q1))
    return _fast_two_sum(q1, rh * inv)


@_njit
def _dd_sqrt(xh, xl, inv):
    # q = √xh (inv = 1/q), then one Newton correction (x − q²)/(2q) from the exact q².
    q = math.sqrt(xh)
    ph, pl = _two_prod(q, q)
    rh, rl = _dd_add(xh, xl, -ph, -pl)
    return _fast_two_sum(q, rh * (0.5 * inv))


# -- the same operations on bounded values (h, l, e) -------------------------------------


@_njit
def _in_range(h):
    a = abs(h)
    return a == 0.0 or (a >= _LO and a <= _HI)


@_njit
def _add(xh, xl, xe, yh, yl, ye):
    if xe == 0.0 and ye == 0.0:
        return _add_exact(xh, xl, yh, yl)
    zh, zl = _dd_add(xh, xl, yh, yl)
    prop = xe + ye
    return zh, zl, (prop + _EPS_OP * (abs(zh) + prop)) * _FUDGE


@_njit
def _add_exact(xh, xl, yh, yl):
    """x + y of exact x, y: AccurateDWPlusDW with its two roundings checked;
    the error bound is 0 when neither rounded (the sum is a double-double)."""
    sh, sl = _two_sum(xh, yh)
    th, tl = _two_sum(xl, yl)
    c, ec = _two_sum(sl, th)
    vh, vl = _fast_two_sum(sh, c)
    w, ew = _two_sum(tl, vl)
    zh, zl = _fast_two_sum(vh, w)
    if ec == 0.0 and ew == 0.0:
        return zh, zl, 0.0
    return zh, zl, _EPS_OP * abs(zh) * _FUDGE


@_njit
def _mul(xh, xl, xe, yh, yl, ye):
    if xe == 0.0 and ye == 0.0:
        return _mul_exact(xh, xl, yh, yl)
    zh, zl = _dd_mul(xh, xl, yh, yl)
    prop = abs(xh) * ye + abs(yh) * xe + 2.0 * xe * ye
    return zh, zl, (prop + _EPS_OP * (abs(zh) + prop)) * _FUDGE


@_njit
def _mul_exact(xh, xl, yh, yl):
    """x · y of exact x, y: DWTimesDW1 with its roundings checked (and the
    term xl·yl it drops); the error bound is 0 when the product is exact."""
    ch, cl1 = _two_prod(xh, yh)
    a, ea = _two_prod(xh, yl)
    b, eb = _two_prod(xl, yh)
    cl2, e2 = _two_sum(a, b)
    cl3, e3 = _two_sum(cl1, cl2)
    zh, zl = _fast_two_sum(ch, cl3)
    if xl * yl == 0.0 and ea == 0.0 and eb == 0.0 and e2 == 0.0 and e3 == 0.0:
        return zh, zl, 0.0
    return zh, zl, _EPS_OP * abs(zh) * _FUDGE


@_njit
def _div(xh, xl, xe, yh, yl, ye):
    """x/y, and ok = False when |y| is not bounded away from 0."""
    low = (abs(yh) * _SHRINK - ye) * _SHRINK  # ≤ |y| for every y within ye of Y
    if not low > 0.0:
        return 0.0, 0.0, 0.0, False
    inv = 1.0 / yh
    zh, zl = _dd_div(xh, xl, yh, yl, inv)
    if ye <= abs(yh) * 2.0**-20:  # then 1/low ≤ |inv|·(1 + 2⁻¹⁸), without a division
        inv_low = abs(inv) * (1.0 + 2.0**-18)
    else:
        inv_low = 1.0 / low
    prop = (xe + ye * (abs(xh) + xe) * inv_low) * inv_low
    return zh, zl, (prop + _EPS_OP * (abs(zh) + prop)) * _FUDGE, True


@_njit
def _sqrt(xh, xl, xe):
    if xh == 0.0 and xe == 0.0:
        return 0.0, 0.0, 0.0, True
    low = (xh * _SHRINK - xe) * _SHRINK  # ≤ every x within xe of X
    if not low > 0.0:
        return 0.0, 0.0, 0.0, False
    inv = 1.0 / math.sqrt(xh)
    zh, zl = _dd_sqrt(xh, xl, inv)
    if xe <= xh * 2.0**-20:  # then 1/√low ≤ inv·(1 + 2⁻¹⁸)
        prop = xe * inv * (1.0 + 2.0**-18)
    else:
        prop = xe / math.sqrt(low)
    return zh, zl, (prop + _EPS_OP * (abs(zh) + prop)) * _FUDGE, True


@_njit
def _ufp(a):
    """The unit in the first place of a > 0 (the power of two ≤ a < its double),
    in three operations (Rump, Ogita and Oishi 2008); a < 2^900."""
    q = (2.0**52 + 1.0) * a
    return abs(q - (1.0 - 2.0**-53) * q)


@_njit
def _round(h, lo, e, single):
    """Round X = h + lo (error bound e) to float32 (``single``) or float64.

    Returns (value, ok); ok is False unless every number within e of X
    rounds to value (the interval is strictly inside one rounding cell)."""
    if h == 0.0:
        return 0.0, e == 0.0  # an exact zero is +0, as mpmath's 0 is
    if single:
        if abs(h) >= 2.0**127:
            return 0.0, False  # near float32 overflow: leave it to mpmath
        r = np.float64(np.float32(h))
        p, min_normal = 24, 2.0**-126
    else:
        r = h
        p, min_normal = 53, 2.0**-1022
    s = 1.0 if h > 0.0 else -1.0
    ls = s * lo
    a = abs(r)
    if a == 0.0:  # a float32 underflow to ±0: X must lie strictly in (0, 2^-150)
        up = 2.0**-149
        dist_up = (0.5 * up - abs(h)) - ls
        dist_dn = abs(h) + ls
        return r, dist_up * _SHRINK > e and dist_dn * _SHRINK > e
    if a < min_normal:
        up = dn = 2.0**-149  # float32 subnormals (float64 ones are out of the safe range)
    else:
        f = _ufp(a)
        up = f * 2.0 ** (1 - p)  # the spacing above a, and below it unless a is a power of 2
        dn = 0.5 * up if (a == f and a > min_normal) else up
    w = a - abs(h)  # exact (Sterbenz): r is within half a cell of h
    dist_up = (0.5 * up + w) - ls
    dist_dn = (0.5 * dn - w) + ls
    if dist_up * _SHRINK > e and dist_dn * _SHRINK > e:
        return r, True
    if e == 0.0 and (dist_up == 0.0 or dist_dn == 0.0):
        # An exact tie (these differences are exact when this small): to even.
        if (a / up) % 2.0 == 0.0:
            return r, True
        return s * (a + up if dist_up == 0.0 else a - dn), True
    return r, False


@_njit(nogil=True)
def _kernel(C, flags, g_in, th, m, v, th64, v64, bad, rec, single):
    """One step of ``nadam_element`` on every element not yet flagged.

    C: the coefficient table [14, 3] (h, l, e per :data:`NUMERIC_FIELDS`);
    flags: (maximize, decay_factor != 1, weight_decay != 0, split_update,
    closed loop, record this step, split_denominator); g_in: the step's gradients (float64,
    exact); th, m, v: the carried state [3, n] (h, l, e), updated in place;
    th64, v64: θ and v correctly rounded to float64 (for the tolerance);
    bad: set to 1 where the element needs the mpmath path; rec [3, n]: θ, m, v
    rounded to the case's dtype, on recorded steps.
    """
    maximize, decay, l2, split, closed, record, sdenom = (
        flags[0],
        flags[1],
        flags[2],
        flags[3],
        flags[4],
        flags[5],
        flags[6],
    )
    n = th.shape[1]
    for i in range(n):
        if bad[i]:
            continue
        ph, pl, pe = th[0, i], th[1, i], th[2, i]
        if closed:
            gh, gl, ge = ph, pl, pe  # the gradient of ½‖θ‖² is θ itself
        else:
            gh, gl, ge = g_in[i], 0.0, 0.0
        ok = _in_range(gh)
        # -- nadam_element, line by line --
        if maximize:
            gh, gl = -gh, -gl
        if decay:
            ph, pl, pe = _mul(ph, pl, pe, C[DF, 0], C[DF, 1], C[DF, 2])
            ok &= _in_range(ph)
        if l2:
            wh, wl, we = _mul(C[WD, 0], C[WD, 1], C[WD, 2], ph, pl, pe)
            gh, gl, ge = _add(gh, gl, ge, wh, wl, we)
            ok &= _in_range(wh) and _in_range(gh)
        ah, al, ae = _mul(C[B1, 0], C[B1, 1], C[B1, 2], m[0, i], m[1, i], m[2, i])
        bh, bl, be = _mul(C[OMB1, 0], C[OMB1, 1], C[OMB1, 2], gh, gl, ge)
        mh, ml, me = _add(ah, al, ae, bh, bl, be)
        ok &= _in_range(ah) and _in_range(bh) and _in_range(mh)
        ah, al, ae = _mul(C[B2, 0], C[B2, 1], C[B2, 2], v[0, i], v[1, i], v[2, i])
        bh, bl, be = _mul(C[OMB2, 0], C[OMB2, 1], C[OMB2, 2], gh, gl, ge)
        bh, bl, be = _mul(bh, bl, be, gh, gl, ge)
        vh, vl, ve = _add(ah, al, ae, bh, bl, be)
        ok &= _in_range(ah) and _in_range(bh) and _in_range(vh)
        if sdenom:
            qh, ql, qe, ok2 = _sqrt(vh, vl, ve)
            sh, sl, se, ok1 = _div(qh, ql, qe, C[BC2S, 0], C[BC2S, 1], C[BC2S, 2])
        else:
            qh, ql, qe, ok1 = _div(vh, vl, ve, C[BC2, 0], C[BC2, 1], C[BC2, 2])
            sh, sl, se, ok2 = _sqrt(qh, ql, qe)
        dh, dl, de = _add(sh, sl, se, C[EPS, 0], C[EPS, 1], C[EPS, 2])
        ok &= ok1 and ok2 and _in_range(qh) and _in_range(sh) and _in_range(dh)
        if split:
            qh, ql, qe, ok1 = _div(gh, gl, ge, dh, dl, de)
            qh, ql, qe = _mul(C[GS, 0], C[GS, 1], C[GS, 2], qh, ql, qe)
            ok &= ok1 and _in_range(qh)
            ph, pl, pe = _add(ph, pl, pe, -qh, -ql, qe)
            qh, ql, qe, ok1 = _div(mh, ml, me, dh, dl, de)
            qh, ql, qe = _mul(C[MS, 0], C[MS, 1], C[MS, 2], qh, ql, qe)
            ok &= ok1 and _in_range(qh) and _in_range(ph)
            ph, pl, pe = _add(ph, pl, pe, -qh, -ql, qe)
        else:
            ah, al, ae = _mul(C[WM, 0], C[WM, 1], C[WM, 2], mh, ml, me)
            bh, bl, be = _mul(C[WG, 0], C[WG, 1], C[WG, 2], gh, gl, ge)
            ok &= _in_range(ah) and _in_range(bh)
            ah, al, ae = _add(ah, al, ae, bh, bl, be)  # m̂
            ah, al, ae = _mul(C[LR, 0], C[LR, 1], C[LR, 2], ah, al, ae)
            qh, ql, qe, ok1 = _div(ah, al, ae, dh, dl, de)
            ok &= ok1 and _in_range(ah) and _in_range(qh)
            ph, pl, pe = _add(ph, pl, pe, -qh, -ql, qe)
        ok &= _in_range(ph)
        # -- the reported values --
        t64, ok1 = _round(ph, pl, pe, False)
        w64, ok2 = _round(vh, vl, ve, False)
        ok &= ok1 and ok2
        if record:
            if single:
                rt, ok1 = _round(ph, pl, pe, True)
                rm, ok2 = _round(mh, ml, me, True)
                rv, ok3 = _round(vh, vl, ve, True)
            else:
                rt, ok1 = t64, True
                rm, ok2 = _round(mh, ml, me, False)
                rv, ok3 = w64, True
            ok &= ok1 and ok2 and ok3
            rec[0, i], rec[1, i], rec[2, i] = rt, rm, rv
        if not ok:
            bad[i] = 1
            th64[i] = v64[i] = 0.0  # finite stand-ins; the mpmath path replaces them
            continue
        th[0, i], th[1, i], th[2, i] = ph, pl, pe
        m[0, i], m[1, i], m[2, i] = mh, ml, me
        v[0, i], v[1, i], v[2, i] = vh, vl, ve
        th64[i], v64[i] = t64, w64


# -- one element range ---------------------------------------------------------------------


def coefficient_table(coef: Coefficients) -> tuple[np.ndarray, np.ndarray, bool]:
    """The exact coefficients as the kernel's double-double table [14, 3]
    (h, l and a bound on |h + l − c|), its flags (the branches
    ``nadam_element`` takes, decided on the exact values as it decides them),
    and whether every coefficient lies in the kernel's safe range."""
    table = np.zeros((len(NUMERIC_FIELDS), 3))
    ok = True
    for k, name in enumerate(NUMERIC_FIELDS):
        c = oracle.Exact(getattr(coef, name))._mpf_
        h = to_float(c, rnd=round_nearest)
        ok = ok and math.isfinite(h) and (h == 0.0 or _LO <= abs(h) <= _HI)
        if not ok:
            break
        lo = to_float(mpf_sub(c, from_float(h)), rnd=round_nearest)  # c − h, exact
        # lo = RN(c − h), a normal number: |c − h − lo| ≤ ½ulp(lo) ≤ 2⁻⁵³·|lo|
        table[k] = h, lo, abs(lo) * 2.0**-53
    flags = np.array(
        [
            bool(coef.maximize),
            bool(coef.decay_factor != 1),
            bool(coef.weight_decay != 0),
            bool(coef.split_update),
            False,
            False,
            bool(coef.split_denominator),
        ],
        dtype=np.bool_,
    )
    return table, flags, ok


def run_range(
    rule: dict,
    dtype,
    params0: np.ndarray,
    grads: np.ndarray | None,
    record_steps: Sequence[int],
    feedback: float = 0.0,
    start: dict | None = None,
    tick: Callable | None = None,
) -> dict:
    """The oracle's trajectory and tolerances for one flat range of elements.

    ``params0``: shape [k] in the case's dtype; ``grads``: [steps, k], or None
    for the closed loop; ``start``: the checkpoint to resume from, as
    :func:`nadam_ref.golden.oracle.exact_run` takes it for one parameter
    (``{"step": k, "mu_product": ∏μ, "exp_avg": [k], "exp_avg_sq": [k]}``).
    Returns ``expected`` and ``tolerance`` laid out as ``exact_run`` and
    :func:`nadam_ref.golden.tolerance.finish` lay them out for a parameter of
    shape [k], plus ``flagged`` (indices recomputed by the mpmath path).
    """
    dtype = np.dtype(dtype)
    real = np.zeros(0, dtype).real.dtype
    single = real == np.float32
    record = sorted(set(int(s) for s in record_steps))
    recorded = set(record)
    steps = record[-1]
    k = len(params0)
    real_shape = (k, 2) if dtype.kind == "c" else (k,)
    n = math.prod(real_shape)
    p0 = np.ascontiguousarray(as_real(params0)).reshape(n).astype(np.float64)
    th, m, v = np.zeros((3, n)), np.zeros((3, n)), np.zeros((3, n))
    th[0] = p0
    to_state = oracle.state_rounding(rule.get("state_dtype"))
    state_dtype = rule.get("state_dtype") or np.float64
    start_m = None
    if start is None:
        step, mu_product = to_state(0), to_state(1)
    else:  # a checkpoint, taken exactly as θ₀ is
        step, mu_product = to_state(start["step"]), to_state(start["mu_product"])
        start_m = np.ascontiguousarray(as_real(np.asarray(start["exp_avg"])))
        m[0] = start_m.reshape(n)
        v[0] = np.ascontiguousarray(as_real(np.asarray(start["exp_avg_sq"]))).reshape(n)
    th64, v64 = p0.copy(), v[0].copy()
    bad = np.zeros(n, np.uint8)
    rec = np.zeros((3, n))
    out = {q: np.empty((len(record), n)) for q in ("param", "exp_avg", "exp_avg_sq")}
    mu_products = []
    bound = ToleranceBound(
        [rule], [real], feedback, start_m=None if start is None else [start_m], record=record
    )
    lrs = rule.get("lr_schedule")
    closed = grads is None
    row = 0
    for t in range(1, steps + 1):
        rule_t = rule if lrs is None else {**rule, "lr": float(lrs[t - 1])}
        scalars, coef = oracle.exact_coefficients(rule_t, step, mu_product, to_state)
        table, flags, ok = coefficient_table(coef)
        if not ok:
            bad[:] = 1
        flags[4], flags[5] = closed, t in recorded
        th_old = th64.copy()
        if closed:
            g = th_old
        else:
            g = np.ascontiguousarray(as_real(grads[t - 1])).reshape(n).astype(np.float64)
        _kernel(table, flags, g, th, m, v, th64, v64, bad, rec, single)
        bound(
            0,
            t,
            coef,
            scalars,
            th_old.reshape(real_shape),
            g.reshape(real_shape),
            th64.reshape(real_shape),
            None,
            v64.reshape(real_shape),
        )
        step, mu_product = scalars.step, scalars.mu_product
        if t in recorded:
            for j, q in enumerate(("param", "exp_avg", "exp_avg_sq")):
                out[q][row] = rec[j]
            mu_products.append(oracle.round_to(mu_product, state_dtype))
            row += 1
        if tick is not None:
            tick(t)

    def complexify(a):
        return oracle._back(a.reshape((len(record),) + real_shape).astype(real), dtype)

    expected = {q: [complexify(out[q])] for q in out}
    expected["mu_product"] = [np.array(mu_products, dtype=np.float64)]
    tolerance = finish(bound, expected, record, [dtype])
    flagged = np.flatnonzero(bad)
    if dtype.kind == "c":
        flagged = np.unique(flagged // 2)
    if len(flagged):
        # Ziv's strategy: these elements' whole trajectories, by the mpmath path.
        sub, sub_tol = _mpmath_elements(
            rule, params0, grads, record, feedback, start, flagged, dtype
        )
        for q in ("param", "exp_avg", "exp_avg_sq"):
            expected[q][0][:, flagged] = sub[q][0]
            tolerance[q][0][:, flagged] = sub_tol[q][0]
    return {"expected": expected, "tolerance": tolerance, "flagged": flagged}


def _mpmath_elements(rule, params0, grads, record, feedback, start, index, dtype):
    """Trajectory and tolerances of the elements ``index`` of a flat parameter
    (``params0`` [k], ``grads`` [steps, k] or None, ``start`` as
    :func:`run_range` takes it), by the mpmath oracle."""
    real = np.zeros(0, dtype).real.dtype
    sub_start = None
    if start is not None:
        sub_start = {
            "step": [start["step"]],
            "mu_product": [start["mu_product"]],
            "exp_avg": [np.asarray(start["exp_avg"])[index]],
            "exp_avg_sq": [np.asarray(start["exp_avg_sq"])[index]],
        }
    bound = ToleranceBound(
        [rule],
        [real],
        feedback,
        start_m=None if start is None else [as_real(sub_start["exp_avg"][0])],
        record=record,
    )
    exact = oracle.exact_run(
        [rule],
        [params0[index]],
        [None if grads is None else grads[:, index]],
        record,
        observe=bound,
        start=sub_start,
    )
    return exact, finish(bound, exact, record, [dtype])


def check_elements(case, indices: Sequence[Sequence[int]]) -> int:
    """Recompute elements of a generated case with the mpmath oracle, from the
    case's own inputs, and compare them with the file.

    ``indices[i]``: flat element indices of parameter i.  Returns how many of
    those elements differ from the file in any bit of any recorded expected
    value or tolerance (0 when the file is what the mpmath oracle gives)."""
    record = list(case.record_steps)
    feedback = 1.0 if case.loop != "open" else 0.0
    rows = len(record)
    differ = 0
    for i, idx in enumerate(indices):
        idx = np.array(sorted(set(int(j) for j in idx)), dtype=np.int64)
        if not len(idx):
            continue
        flat = case.params0[i].reshape(-1)
        grads = None if case.grads is None else case.grads[i].reshape(case.steps, -1)
        start = None
        if case.start is not None:
            start = {
                "step": case.start["step"][i],
                "mu_product": case.start["mu_product"][i],
                "exp_avg": np.asarray(case.start["exp_avg"][i]).reshape(-1),
                "exp_avg_sq": np.asarray(case.start["exp_avg_sq"][i]).reshape(-1),
            }
        exact, tol = _mpmath_elements(
            case.rules[i], flat, grads, record, feedback, start, idx, case.dtype
        )
        same = np.ones(len(idx), bool)
        for q in ("param", "exp_avg", "exp_avg_sq"):
            for mine, file in ((exact, case.expected), (tol, case.tolerance)):
                a = np.ascontiguousarray(mine[q][0].reshape(rows, -1))
                b = np.ascontiguousarray(file[q][i].reshape(rows, -1)[:, idx])
                bits_a = a.view(np.uint8).reshape(rows, len(idx), -1)
                same &= np.all(bits_a == b.view(np.uint8).reshape(bits_a.shape), axis=(0, 2))
        for mine, file in ((exact, case.expected), (tol, case.tolerance)):
            if mine["mu_product"][0].tobytes() != file["mu_product"][i].tobytes():
                same[:] = False
        differ += int(np.count_nonzero(~same))
    return differ


def _run_task(task: tuple) -> tuple:
    index, start, result = task[0], task[1], run_range(*task[2:])
    return index, start, result


# -- whole cases -----------------------------------------------------------------------------


def fast_run(
    rules: Sequence[dict],
    params0: Sequence[np.ndarray],
    grads: Sequence[np.ndarray | None],
    record_steps: Sequence[int],
    *,
    feedback: float = 0.0,
    start: dict | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool | None = False,
    chunk: int | None = None,
) -> tuple[dict, dict, dict]:
    """The exact trajectory and tolerances of a case, by the fast path.

    Arguments as :func:`nadam_ref.golden.oracle.exact_run` (``start``
    included; ``feedback``: as :class:`nadam_ref.golden.tolerance.ToleranceBound`'s).  Returns
    (expected, tolerance, stats): the first two exactly what ``exact_run``
    followed by ``finish`` return, and stats = {"elements", "element_steps",
    "fallback", "flagged": [(parameter, flat index), ...], "seconds"}.

    ``workers`` > 1 runs element ranges of ``chunk`` elements in that many
    processes; ``scheduler`` (a Dask scheduler address, or a
    ``distributed.Client``) runs them on a Dask cluster instead.
    ``progress``: a tqdm bar (None: only where stderr is a terminal).
    """
    start_time = time.perf_counter()
    chunk = chunk or CHUNK
    record = sorted(set(int(s) for s in record_steps))
    steps = record[-1]
    tasks = []
    expected = {q: [] for q in ("param", "exp_avg", "exp_avg_sq", "mu_product")}
    tolerance = {q: [] for q in expected}
    for i, (rule, p0, g) in enumerate(zip(rules, params0, grads)):
        dtype = np.dtype(p0.dtype)
        flat = np.asarray(p0).reshape(-1)
        gflat = None if g is None else np.asarray(g).reshape(len(g), -1)
        size = max(1, chunk // (2 if dtype.kind == "c" else 1))
        if workers > 1 or scheduler is not None:  # at least a range per worker
            size = min(size, max(256, -(-len(flat) // max(workers, 2))))
        for a in range(0, max(len(flat), 1), size):
            b = min(a + size, len(flat))
            part = None
            if start is not None:
                part = {
                    "step": start["step"][i],
                    "mu_product": start["mu_product"][i],
                    "exp_avg": np.asarray(start["exp_avg"][i]).reshape(-1)[a:b],
                    "exp_avg_sq": np.asarray(start["exp_avg_sq"][i]).reshape(-1)[a:b],
                }
            tasks.append(
                (
                    i,
                    a,
                    rule,
                    dtype,
                    flat[a:b],
                    None if gflat is None else np.ascontiguousarray(gflat[:steps, a:b]),
                    record,
                    feedback,
                    part,
                )
            )
        shape = (len(record),) + tuple(np.shape(p0))
        for q in ("param", "exp_avg", "exp_avg_sq"):
            expected[q].append(np.empty(shape, dtype))
            tolerance[q].append(np.empty(shape, dtype))
        expected["mu_product"].append(None)
        tolerance["mu_product"].append(None)
    total = steps * sum(int(np.size(p)) for p in params0)
    flagged = []
    bar = _bar(total, progress)

    def collect(i, a, result):
        for q in ("param", "exp_avg", "exp_avg_sq"):
            for part, src in ((expected, result["expected"]), (tolerance, result["tolerance"])):
                dst = part[q][i].reshape(len(record), -1)
                dst[:, a : a + src[q][0].shape[1]] = src[q][0]
        expected["mu_product"][i] = result["expected"]["mu_product"][0]
        tolerance["mu_product"][i] = result["tolerance"]["mu_product"][0]
        flagged.extend((i, a + int(j)) for j in result["flagged"])
        bar.update(steps * result["expected"]["param"][0].shape[1])

    try:
        if scheduler is not None:
            _run_dask(tasks, scheduler, collect, workers)
        elif workers > 1 and len(tasks) > 1:
            _run_processes(tasks, workers, collect)
        else:
            for task in tasks:
                collect(*_run_task(task))
    finally:
        bar.close()
    stats = {
        "elements": sum(int(np.size(p)) for p in params0),
        "element_steps": total,
        "fallback": len(flagged),
        "flagged": flagged,
        "seconds": time.perf_counter() - start_time,
    }
    return expected, tolerance, stats


def _bar(total, progress):
    if progress is False:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="el·step",
        unit_scale=True,
        disable=None if progress is None else False,
        smoothing=0,
    )


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _run_processes(tasks, workers, collect):
    import multiprocessing
    import sys
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # On Linux, fork: a worker starts in milliseconds with the kernel already
    # compiled here (a spawned one imports NumPy, Numba and mpmath again and
    # loads the kernel, seconds on a loaded machine).  The workers use neither
    # threads nor locks of the parent.  Elsewhere, spawn.
    if sys.platform.startswith("linux"):
        _warm_up()
        context = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending, queue = set(), list(tasks)
        while queue or pending:
            while queue and len(pending) < 2 * workers:  # bounded: inputs are pickled per task
                pending.add(pool.submit(_run_task, queue.pop(0)))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                collect(*f.result())


def _run_dask(tasks, scheduler, collect, workers):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ImportError(
            "--scheduler needs Dask's distributed (pip install 'nadam_ref[distributed]')"
        ) from None
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        window = 2 * max(workers, sum(client.nthreads().values()), 1)
        queue = list(tasks)
        batch = as_completed()
        for _ in range(min(window, len(queue))):
            batch.add(client.submit(_run_task, queue.pop(0), pure=False))
        for future in batch:
            collect(*future.result())
            future.release()
            if queue:
                batch.add(client.submit(_run_task, queue.pop(0), pure=False))
    finally:
        if client is not scheduler:
            client.close()


def _warm_up() -> None:
    """Compile the kernel (or load it from Numba's cache) with a two-element run."""
    rule = _CALIBRATION_RULE
    run_range(rule, np.float32, np.ones(2, np.float32), np.ones((1, 2), np.float32), [1])


#: torch's defaults for float32 parameters, as the torch profile declares them.
_CALIBRATION_RULE = profiles.get("torch").rules(profiles.get("torch").hyperparameters(), np.float32)


def estimate_seconds(element_steps: int, workers: int = 1) -> tuple[float, float]:
    """A time estimate for ``element_steps`` on ``workers`` processes, from
    a short calibration run here: (seconds, element-steps per second per worker)."""
    rng = np.random.default_rng(0)
    rule = _CALIBRATION_RULE
    n, steps = 1 << 14, 8
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal((steps, n)).astype(np.float32)
    _warm_up()
    t0 = time.perf_counter()
    run_range(rule, np.float32, p0, g, [steps])
    rate = n * steps / (time.perf_counter() - t0)
    return element_steps / (rate * max(1, min(workers, os.cpu_count() or 1))), rate
