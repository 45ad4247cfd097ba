r"""The Keras-style Nadam: the interface of ``tf.keras.optimizers.Nadam`` on NumPy arrays.

:class:`Nadam` reproduces what the two generations of Keras really compute,
on the functional core (:func:`nadam_ref.functional.plan_step`), with the
step applied to θ at once (``split_update=False``) as both generations do::

    t   ← iterations + 1
    μ_t ← β1 · (1 − ½ · 0.96^(ψ·t)),   μ_{t+1} ← β1 · (1 − ½ · 0.96^(ψ·(t+1)))
    ∏_t ← ∏_{t−1} · μ_t                                 the shared momentum cache
    m_t ← β1 m_{t−1} + (1 − β1) g_t
    v_t ← β2 v_{t−1} + (1 − β2) g_t²
    m̄_t ← (1 − μ_t) g_t / (1 − ∏_t) + μ_{t+1} m_t / (1 − ∏_t · μ_{t+1})
    θ_t ← θ_{t−1} − γ m̄_t / (√(v_t / (1 − β2^t)) + ε)

The two schedules differ only in ψ:

* ``schedule="legacy"`` (the default): ψ = ``schedule_decay`` = 0.004, the
  formula on the tf.keras documentation page, as ``tf_keras.optimizers.legacy.Nadam``
  (optimizer_v2) computes it.  μ_t warms up from β1/2 towards β1 over
  thousands of steps (for β1 = 0.9: μ_1 ≈ 0.4501, μ_300 ≈ 0.472, μ_1000 ≈ 0.518).
* ``schedule="keras3"``: ψ = 1, i.e. μ_t = β1 (1 − ½·0.96^t), as Keras 3's
  ``keras.optimizers.Nadam`` and tf_keras's non-legacy ``Nadam`` compute it.
  μ_1 = 0.468, and μ_t is within 1 % of β1 after about 100 steps.

Fed the same 300 unit-scale gradients with the default hyperparameters, the
two real optimizers end 2.4e-3 apart in θ (up to 4.1e-3 along the way),
about 7 % of the 3.5e-2 that θ moved: a difference of algorithm, not of
rounding.  nadam_ref reproduces each of them to within 3e-7 in float32 and
3e-16 in float64 over those steps (tests/test_keras.py).

The documentation page's sentence "the variables always store theta +
beta_1 * m / sqrt(v) instead of theta" does not describe the code of either
generation: the variables hold θ, here too.

The arithmetic is not written here: each schedule runs its profile
(:mod:`nadam_ref.profiles`: ``tf-keras-legacy`` and ``keras3``) through the
functional core, by default on the compiled ``"numba"`` backend.  What this
module adds is Keras's interface and state: the shared ∏μ, the slots, the
clipping.  The facts (docs/frameworks.md):

* Both generations keep one shared ∏μ (``momentum_cache`` in optimizer_v2,
  ``u_product`` in Keras 3), in the dtype of the first variable of the first
  step (optimizer_v2 counts only variables with a gradient), advanced once
  per :meth:`Nadam.apply_gradients`, and compute
  every scalar in each variable's dtype.
* optimizer_v2 stores learning_rate, beta_1 and beta_2 as float32 variables,
  and ``tf.cast(0.96, tf.float64)`` goes through float32: a float64 run uses
  float32-rounded γ, β1, β2 and 0.96.  Keras 3 stores only the learning rate
  as a float32 variable: a float64 run uses float32-rounded γ.
* Gradients are clipped first: optimizer_v2 applies ``clipvalue``, then
  ``clipnorm`` (per gradient), then ``global_clipnorm`` (clipnorm together
  with global_clipnorm is an error); Keras 3 accepts only one of the three.
  ``weight_decay`` (Keras 3's, decoupled; optimizer_v2 has none, and here the
  legacy schedule takes Keras 3's as an extension) then shrinks
  θ ← θ·(1 − λγ), with 1 − λγ computed in float32 as Keras 3's torch backend
  does.
* Keras 3 on the torch backend (the one recorded) has two more roundings that
  matter: it passes 1 − β1 and 1 − β2 as double numbers (rounded once to the
  variable's dtype, where optimizer_v2 subtracts in that dtype), and its
  ``ops.maximum``/``ops.minimum`` of a tensor and a Python float return
  float32 and ``ops.clip`` makes float32 bounds, so clipnorm's max(‖g‖, c),
  global_clipnorm's scale and clipvalue's ±c are float32-rounded even for
  float64 gradients.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import operator
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from . import functional, profiles
from .optimizer import Parameter, refuse_copy

SCHEDULES = ("legacy", "keras3")
#: The profile (:mod:`nadam_ref.profiles`) each schedule's arithmetic comes from.
PROFILE_OF = {"legacy": "tf-keras-legacy", "keras3": "keras3"}
#: Keyword arguments accepted besides the named ones (the seed page's list, plus Keras 3's).
KWARGS = (
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "lr",
    "decay",
    "schedule_decay",
    "weight_decay",
)
#: Slots every variable gets, in the order optimizer_v2 creates them.
SLOT_NAMES = ("m", "v")
DEFAULT_SCHEDULE_DECAY = 0.004
DEFAULT_EPSILON = 1e-7  # tf_keras's backend_config.epsilon(), used when epsilon is 0 or None


class Nadam:
    r"""Nadam with the interface of ``tf.keras.optimizers.Nadam``, on NumPy arrays.

    Variables are NumPy float32 or float64 arrays (updated in place, so every
    view of them sees the update) or :class:`nadam_ref.Parameter` objects.
    The optimizer's state is keyed by the variable object, as Keras keys it.

    Args:
        learning_rate: γ: a non-negative number (``lr`` is an alias that wins,
            as in tf_keras), a Keras ``LearningRateSchedule`` (Keras 3's
            ``keras.optimizers.schedules`` or tf_keras's), or a callable.  See
            "Learning-rate schedules" below.
        beta_1, beta_2: β1 and β2, in [0, 1).
        epsilon: ε; 0 or None means 1e-7 with the legacy schedule, as in tf_keras.
        name: the optimizer's name (kept in the config).
        schedule: ``"legacy"`` (μ_t = β1(1 − ½·0.96^(ψt)), the documented
            optimizer_v2 Nadam) or ``"keras3"`` (μ_t = β1(1 − ½·0.96^t)).
        backend: the functional core's backend, ``"numba"`` (the default),
            ``"numpy"`` (the readable reference, the same bits).
        **kwargs: ``clipnorm`` (clip each gradient to this L2 norm),
            ``clipvalue`` (clip each element to [−c, c]), ``global_clipnorm``
            (scale all gradients together to this L2 norm), ``lr``,
            ``schedule_decay`` or its alias ``decay`` (ψ of the legacy
            schedule, default 0.004), ``weight_decay`` (decoupled decay λ:
            θ ← θ(1 − λγ) before each step, as Keras 3 does; optimizer_v2
            has none, so with the legacy schedule this is an extension).
            Anything else is a TypeError naming it.

    Example::

        >>> import numpy as np
        >>> from nadam_ref.keras import Nadam
        >>> opt = Nadam(learning_rate=0.2)
        >>> var1 = np.array(10.0, dtype=np.float32)
        >>> loss = lambda: (var1 ** 2 / 2.0, [var1.copy()])   # (value, gradients)
        >>> step_count = opt.minimize(loss, [var1])
        >>> step_count, "{:.1f}".format(var1)
        (1, '9.8')

    Learning-rate schedules: at each :meth:`apply_gradients` the schedule is
    evaluated as Keras evaluates it, at the iteration count before the
    step (0 at the first step): a ``LearningRateSchedule`` object, or any
    callable of one argument, is called with that count; a callable of no
    arguments (Keras's own convention for callables) is called with none.
    The value, in the dtype it was computed in (float32 for Keras's
    schedules, whose arithmetic is the real object's own), is then cast to
    each variable's dtype, as ``ops.cast(learning_rate, variable.dtype)``
    (Keras 3) and ``tf.cast(learning_rate(), var_dtype)`` (optimizer_v2) do:
    it is *not* rounded through the float32 variable in which both
    generations hold a learning rate given as a number.  So with Keras 3 a
    callable returning the Python float 0.01 runs a float64 variable with
    γ = 0.01 exactly, while ``learning_rate=0.01`` runs it with
    float32(0.01); optimizer_v2's ``tf.cast`` turns a Python number into a
    float32 tensor first, so there (``schedule="legacy"``) a Python float
    from a callable is float32-rounded too, and a NumPy float64 is not.
    ``tf_keras.optimizers.legacy.Nadam`` itself refuses schedule objects
    ("does not support tf.keras.optimizers.LearningRateSchedules"); its users
    pass ``lambda: schedule(opt.iterations)``, which is what a schedule
    object computes here with ``schedule="legacy"``.
    :meth:`get_config` serialises a schedule object as Keras does (its own
    library's ``keras.optimizers.schedules.serialize``: a dict with
    ``module``, ``class_name``, ``config``, ``registered_name``) and a callable
    as its current value (as optimizer_v2 does); :meth:`from_config` rebuilds
    a serialised schedule with tf_keras (``schedule="legacy"``) or Keras 3.

    Note on ``decay``: tf_keras's legacy Nadam overwrites a lone ``decay``
    keyword with ``schedule_decay``'s default 0.004 (so ``Nadam(decay=0.01)``
    there runs with ψ = 0.004, and its own config does not round-trip a
    non-default ψ).  Here ``decay`` and ``schedule_decay`` both set ψ; giving
    both with different values is a ValueError.
    """

    def __init__(
        self,
        learning_rate: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float | None = 1e-7,
        name: str = "Nadam",
        *,
        schedule: str = "legacy",
        backend: str = "numba",
        **kwargs: Any,
    ):
        for key in kwargs:
            if key not in KWARGS:
                raise TypeError(
                    f"Unexpected keyword argument passed to optimizer: {key}. Allowed kwargs are {sorted(KWARGS)}."
                )
        for key, value in kwargs.items():
            if value is not None and not functional.is_real(value):
                raise TypeError(f"{key} must be a real number or None, got {value!r}")
            if value is not None and not value >= 0:
                raise ValueError(f"Expected {key} >= 0, received: {value}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")
        if "lr" in kwargs:
            warnings.warn(
                "The `lr` argument is deprecated, use `learning_rate` instead.", stacklevel=2
            )
            learning_rate = kwargs["lr"]
        decays = {k: kwargs[k] for k in ("decay", "schedule_decay") if kwargs.get(k) is not None}
        if len(decays) == 2 and decays["decay"] != decays["schedule_decay"]:
            raise ValueError(
                f"decay and schedule_decay are the same setting (ψ); got decay={decays['decay']} "
                f"and schedule_decay={decays['schedule_decay']}"
            )
        clipnorm, clipvalue, global_clipnorm = (
            kwargs.get(k) for k in ("clipnorm", "clipvalue", "global_clipnorm")
        )
        if schedule == "legacy":
            if clipnorm is not None and global_clipnorm is not None:
                raise ValueError(
                    f"Cannot accept both `clipnorm` and `global_clipnorm`. "
                    f"Received: `clipnorm`={clipnorm}, `global_clipnorm`={global_clipnorm}."
                )
            epsilon = epsilon or DEFAULT_EPSILON
        elif sum(c is not None for c in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}"
            )
        schedule_decay = next(iter(decays.values()), DEFAULT_SCHEDULE_DECAY)
        weight_decay = kwargs.get("weight_decay")
        functional.check_hyperparameters(
            _number_or_zero(learning_rate),
            (beta_1, beta_2),
            epsilon,
            weight_decay or 0.0,
            schedule_decay,
        )

        self._name = name
        self._schedule = schedule
        self._hyper = {
            "learning_rate": learning_rate,
            "decay": schedule_decay,
            "beta_1": beta_1,
            "beta_2": beta_2,
            "epsilon": epsilon,
        }
        self._clipnorm, self._clipvalue, self._global_clipnorm = (
            clipnorm,
            clipvalue,
            global_clipnorm,
        )
        self._weight_decay = weight_decay
        self._profile = profiles.get(PROFILE_OF[schedule])
        if weight_decay and schedule == "legacy":
            # optimizer_v2 has no weight decay; here the legacy schedule may take Keras 3's
            # (θ ← θ·(1 − λγ) first, the factor in float32): an extension, named as one.
            self._profile = dataclasses.replace(
                self._profile,
                name="tf-keras-legacy with Keras 3's weight_decay",
                weight_decay=("decoupled",),
                decay_factor_dtype=profiles.get("keras3").decay_factor_dtype,
            )
        self._hyperparameters()  # what the profile does not allow fails here
        #: (this step's lr, dtype) → plan_step's arithmetic options, as the profile gives
        #: them (emptied when a hyperparameter is set): a step asks for them every time
        self._plan_options: dict[tuple, dict] = {}
        #: what the last step checked, for the next (see :class:`_Repeat`)
        self._repeat: _Repeat | None = None
        functional.get_backend(backend)
        self._backend = backend
        # State, in optimizer_v2's creation order: iterations, momentum cache, then slots.
        self._iterations = np.zeros((), np.int64)
        self._momentum_cache: np.ndarray | None = None
        self._weights: list[np.ndarray] = [self._iterations]
        self._slots: dict[int, dict[str, np.ndarray]] = {}
        self._variables: dict[int, Any] = {}  # id → variable, keeps the keys' objects alive
        self._slot_names = list(SLOT_NAMES)

    # -- hyperparameters -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def schedule(self) -> str:
        """``"legacy"`` or ``"keras3"``: which Keras generation's μ_t this optimizer follows."""
        return self._schedule

    @property
    def momentum_decay(self) -> float:
        """ψ in μ_t = β1(1 − ½·0.96^(ψt)): ``decay`` for the legacy schedule, 1 for keras3."""
        return self._hyper["decay"] if self._schedule == "legacy" else 1.0

    def _set_hyper(self, key: str, value) -> None:
        trial = {**self._hyper, key: value}
        functional.check_hyperparameters(
            _number_or_zero(trial["learning_rate"]),
            (trial["beta_1"], trial["beta_2"]),
            trial["epsilon"],
            self._weight_decay or 0.0,
            trial["decay"],
        )
        self._hyper[key] = value
        self._plan_options.clear()  # computed from the old value
        self._repeat = None

    learning_rate = property(
        lambda self: self._hyper["learning_rate"],
        lambda self, v: self._set_hyper("learning_rate", v),
        doc="γ",
    )
    lr = learning_rate  # tf_keras's backwards-compatible alias
    beta_1 = property(
        lambda self: self._hyper["beta_1"], lambda self, v: self._set_hyper("beta_1", v), doc="β1"
    )
    beta_2 = property(
        lambda self: self._hyper["beta_2"], lambda self, v: self._set_hyper("beta_2", v), doc="β2"
    )
    epsilon = property(
        lambda self: self._hyper["epsilon"], lambda self, v: self._set_hyper("epsilon", v), doc="ε"
    )
    decay = property(
        lambda self: self._hyper["decay"],
        lambda self, v: self._set_hyper("decay", v),
        doc="ψ of the legacy schedule (``schedule_decay``)",
    )
    clipnorm = property(lambda self: self._clipnorm)
    clipvalue = property(lambda self: self._clipvalue)
    global_clipnorm = property(lambda self: self._global_clipnorm)
    weight_decay = property(lambda self: self._weight_decay)

    # -- state ---------------------------------------------------------------------------------

    @property
    def iterations(self) -> int:
        """The number of steps this optimizer has applied."""
        return int(self._iterations)

    @property
    def weights(self) -> list[np.ndarray]:
        """The state arrays, in the order created: iterations, the momentum
        cache (∏μ), then each variable's slots ("m" of every variable of the
        first step, then "v" of each; later variables append theirs)."""
        return list(self._weights)

    def variables(self) -> list[np.ndarray]:
        """The state arrays in the order created (the same list as :attr:`weights`)."""
        return list(self._weights)

    def get_slot_names(self) -> list[str]:
        """A list of names for this optimizer's slots: ``["m", "v"]`` (plus any added by :meth:`add_slot`)."""
        return list(self._slot_names)

    def get_slot(self, var, slot_name: str) -> np.ndarray:
        """The live slot array ``slot_name`` of ``var``; KeyError if it has none."""
        slots = self._slots.get(id(var))
        if slots is None or self._variables.get(id(var)) is not var:
            raise KeyError(
                f"the optimizer has no slots for this variable ({_describe(var)}); "
                "it has not been stepped or built with it"
            )
        if slot_name not in slots:
            raise KeyError(f"the variable has no slot {slot_name!r}; it has {sorted(slots)}")
        return slots[slot_name]

    def add_slot(
        self, var, slot_name: str, initializer="zeros", shape: Sequence[int] | None = None
    ) -> np.ndarray:
        """Add a slot array for ``var`` (or return the existing one) and append it to :attr:`weights`.

        ``initializer`` is ``"zeros"``, ``"ones"``, a number, a callable
        ``(shape, dtype) → array``, or an array of the slot's shape.
        """
        data = _data(var)
        slots = self._slots.get(id(var), {})
        if slot_name in slots:
            return slots[slot_name]
        slot = _initial_value(
            initializer, tuple(data.shape) if shape is None else tuple(shape), data.dtype, slot_name
        )
        self._register(var, {slot_name: slot})
        return slot

    def add_weight(
        self,
        name: str,
        shape: Sequence[int],
        dtype: DTypeLike = None,
        initializer="zeros",
        trainable: bool | None = None,
        synchronization=None,
        aggregation=None,
    ) -> np.ndarray:
        """A new array (float32 unless ``dtype`` is given) filled by ``initializer``.

        As in optimizer_v2, the array is tracked under ``name`` but not added to
        :attr:`weights`; ``trainable``, ``synchronization`` and ``aggregation``
        are accepted for compatibility and have no effect on NumPy arrays.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {name!r}")
        weight = _initial_value(
            initializer, tuple(shape), np.dtype(np.float32 if dtype is None else dtype), name
        )
        self.__dict__.setdefault("_added_weights", {})[name] = weight
        return weight

    def build(self, var_list: Iterable) -> None:
        """Create the momentum cache and the "m", "v" slots of ``var_list``
        without taking a step (Keras 3's ``build``; optimizer_v2 does this on
        the first :meth:`apply_gradients`), e.g. before :meth:`set_weights`."""
        variables = list(var_list)
        for i, var in enumerate(variables):
            _check_variable(var, f"var_list[{i}]")
        self._create_slots(variables)

    def _create_slots(
        self,
        variables: list,
        fresh: dict[int, dict[str, np.ndarray]] | None = None,
        cache_dtype=None,
    ) -> None:
        """Create the momentum cache (first time; of ``cache_dtype`` or the first
        variable's dtype) and the missing slots of ``variables``, using the
        arrays in ``fresh`` (id → slots) where given."""
        if self._momentum_cache is None and variables:
            self._momentum_cache = np.ones((), cache_dtype or _data(variables[0]).dtype)
            self._weights.append(self._momentum_cache)
        new = [v for v in _unique(variables) if id(v) not in self._slots]
        fresh = fresh or {}
        fresh = {
            id(v): fresh.get(id(v)) or {name: np.zeros_like(_data(v)) for name in SLOT_NAMES}
            for v in new
        }
        for name in SLOT_NAMES:  # every m, then every v, as optimizer_v2 orders them
            for v in new:
                self._register(v, {name: fresh[id(v)][name]})

    def _register(self, var, slots: dict[str, np.ndarray]) -> None:
        self._variables[id(var)] = var
        for slot_name, array in slots.items():
            self._slots.setdefault(id(var), {})[slot_name] = array
            self._weights.append(array)
            if slot_name not in self._slot_names:
                self._slot_names.append(slot_name)

    def get_weights(self) -> list:
        """Copies of :attr:`weights` (0-d ones as NumPy scalars, as tf_keras returns them)."""
        return [w[()] if w.ndim == 0 else w.copy() for w in self._weights]

    def set_weights(self, weights: Sequence) -> None:
        """Load values into :attr:`weights`, in its order (iterations, momentum cache, slots).

        Each value must have its weight's shape; it is cast to the weight's
        dtype.  Everything is checked before anything changes.  Build the
        optimizer first (:meth:`build` or a step) so that the lists match.
        """
        weights = list(weights)
        if len(weights) != len(self._weights):
            raise ValueError(
                f"You called `set_weights(weights)` on optimizer {self._name} with a weight list of length "
                f"{len(weights)}, but the optimizer was expecting {len(self._weights)} weights "
                "(iterations, momentum cache, then the slots; call build(var_list) first)."
            )
        values = []
        for k, (w, target) in enumerate(zip(weights, self._weights)):
            value = np.asarray(_to_numpy(w))
            if value.dtype.kind not in "biuf":
                raise TypeError(
                    f"weights[{k}] has dtype {value.dtype}; a real number array is needed"
                )
            if value.shape != target.shape:
                raise ValueError(
                    f"Optimizer weight shape {target.shape} not compatible with "
                    f"provided weight shape {value.shape} (weights[{k}])."
                )
            if target is self._iterations and not (value == np.floor(value) and value >= 0):
                raise ValueError(
                    f"weights[0] is the iteration count and must be a whole number >= 0, got {value}"
                )
            values.append(value)
        for value, target in zip(values, self._weights):
            target[...] = value

    # -- stepping -------------------------------------------------------------------------------

    def apply_gradients(self, grads_and_vars: Iterable, name: str | None = None) -> int:
        """Apply one Nadam step to every variable that has a gradient.

        ``grads_and_vars`` is an iterable of ``(gradient, variable)`` pairs; a
        pair whose gradient is None is skipped (the step still counts for
        everyone: iterations and the momentum cache advance once per call).
        Gradients must be arrays of their variable's shape and dtype; they are
        not modified.  Returns the new value of :attr:`iterations`.

        Raises TypeError if ``grads_and_vars`` is malformed and ValueError if
        no variable has a gradient; on any error, variables and state are as
        they were.  An empty list is a no-op, as in both Keras generations.
        """
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string or None, got {name!r}")
        if not isinstance(grads_and_vars, (list, tuple, np.ndarray, Parameter, str, bytes, dict)):
            try:  # a zip or generator is read once: both paths below see the list
                grads_and_vars = list(grads_and_vars)
            except TypeError:
                pass  # _parse_pairs says what is wrong
        if self._repeat is not None and self._repeat.step(self, grads_and_vars):
            return self.iterations
        self._repeat = None
        pairs = _parse_pairs(grads_and_vars)
        if not pairs:
            return self.iterations
        live = [(g, v) for g, v in pairs if g is not None]
        if not live:
            raise ValueError(
                f"No gradients provided for any variable: {[_describe(v) for _, v in pairs]}."
            )
        seen = set()
        for _i, (_grad, var) in enumerate(live):
            if id(var) in seen:
                raise ValueError(f"{_describe(var)} appears twice in grads_and_vars")
            seen.add(id(var))
        grads = [_as_gradient(g, v, i) for i, (g, v) in enumerate(live)]
        variables = [v for _, v in live]
        grads = self._clip(grads)

        # Keras 3 builds its state on every variable passed; optimizer_v2 on those with a gradient.
        first = pairs[0][1] if self._schedule == "keras3" else variables[0]
        cache_dtype = (
            self._momentum_cache.dtype if self._momentum_cache is not None else _data(first).dtype
        )
        cache_value = (
            self._momentum_cache[()] if self._momentum_cache is not None else cache_dtype.type(1)
        )
        states = [
            self._slots.get(id(v)) or {n: np.zeros_like(_data(v)) for n in SLOT_NAMES}
            for v in variables
        ]
        learning_rate = self._learning_rate()
        plans, new_cache = [], None
        for dtype in _unique_dtypes(variables):
            idx = [i for i, v in enumerate(variables) if _data(v).dtype == dtype]
            options = self._options(learning_rate, dtype, cache_dtype)
            plan = functional.plan_step(
                [_data(variables[i]) for i in idx],
                [grads[i] for i in idx],
                [states[i]["m"] for i in idx],
                [states[i]["v"] for i in idx],
                [self._iterations[()]] * len(idx),
                [cache_value] * len(idx),
                backend=self._backend,
                names=[_Described(variables[i]) for i in idx],
                **options,
            )
            plans.append(plan)
            # The shared cache takes the ∏ computed in its own dtype (legacy) or,
            # with Keras 3, the one computed with the first variable's dtype.
            if new_cache is None and (self._schedule == "keras3" or dtype == cache_dtype):
                new_cache = plan.scalars[0].mu_product

        # Everything is checked; from here on nothing raises.
        self._create_slots(
            variables, fresh={id(v): s for v, s in zip(variables, states)}, cache_dtype=cache_dtype
        )
        for plan in plans:
            plan.run()
        if new_cache is not None:
            self._momentum_cache[...] = new_cache
        self._iterations += 1
        self._repeat = _Repeat.after(self, pairs, plans, cache_dtype)
        return self.iterations

    def _learning_rate(self) -> float | None:
        """This step's value of a scheduled learning rate (None if it is a number)."""
        learning_rate = self._hyper["learning_rate"]
        if not callable(learning_rate):
            return None
        return _learning_rate_value(learning_rate, int(self._iterations), self._schedule)

    def _options(self, learning_rate: float | None, dtype: np.dtype, cache_dtype) -> dict:
        """plan_step's arithmetic for variables of ``dtype`` this step (kept per
        lr and dtype: a step asks for it every time)."""
        lr = None if learning_rate is None else float(dtype.type(learning_rate))
        key = (lr, dtype, cache_dtype)
        options = self._plan_options.get(key)
        if options is None:
            profile = self._profile
            if lr is not None:
                # A schedule's value is cast to each variable's dtype, not held in the
                # float32 variable the profile's lr rounding stands for.
                profile = dataclasses.replace(
                    profile, float32=tuple(k for k in profile.float32 if k != "lr")
                )
            options = profile.plan_options(self._hyperparameters(lr), dtype)
            if self._schedule == "keras3":
                # One shared u_product, a variable of the first variable's dtype.
                options["scalar_dtype"] = cache_dtype
            if len(self._plan_options) > 64:  # a schedule's lr: a new value each step
                self._plan_options.clear()
            self._plan_options[key] = options
        return options

    def _hyperparameters(self, lr: float | None = None) -> dict:
        """The hyperparameters in the profile's (torch) vocabulary, checked by
        the profile; ``lr`` is this step's value of a scheduled learning rate."""
        h = self._hyper
        if lr is None:
            lr = _number_or_zero(h["learning_rate"])
        given = dict(lr=lr, beta1=h["beta_1"], beta2=h["beta_2"], eps=h["epsilon"])
        if self._schedule == "legacy":
            given["momentum_decay"] = h["decay"]
        if self._weight_decay:
            given.update(weight_decay=self._weight_decay, decoupled_weight_decay=True)
        return self._profile.hyperparameters(given)

    def _clip(self, grads: list[np.ndarray]) -> list[np.ndarray]:
        """Clip the gradients as the schedule's Keras generation does (new arrays)."""
        clipvalue, clipnorm, global_clipnorm = (
            self._clipvalue,
            self._clipnorm,
            self._global_clipnorm,
        )
        if self._schedule == "keras3":
            # Keras 3 accepts one clipper, and treats 0 as "off".
            if clipnorm:
                return [_clip_by_norm(g, clipnorm, float32_bound=True) for g in grads]
            if global_clipnorm:
                return _clip_by_global_norm(grads, global_clipnorm, float32_scale=True)
            if clipvalue:
                # ops.clip converts the Python bounds to float32 tensors (torch backend)
                c = np.float32(clipvalue)
                return [np.clip(g, -g.dtype.type(c), g.dtype.type(c)) for g in grads]
            return grads
        # optimizer_v2: clipvalue, then clipnorm, then global_clipnorm.
        if clipvalue is not None:
            grads = [np.clip(g, -clipvalue, clipvalue) for g in grads]
        if clipnorm is not None:
            grads = [_clip_by_norm(g, clipnorm) for g in grads]
        if global_clipnorm is not None:
            grads = _clip_by_global_norm(grads, global_clipnorm)
        return grads

    def minimize(
        self, loss: Callable[[], tuple], var_list, grad_loss=None, name: str | None = None
    ) -> int:
        """Minimize ``loss`` by updating ``var_list``: one step.

        With no automatic differentiation on NumPy arrays, ``loss`` is a
        callable taking no arguments that returns ``(value, gradients)``: the
        loss value and one gradient (or None) per variable of ``var_list``,
        in order.  ``var_list`` is a list or tuple of variables, or a callable
        returning one (called after ``loss``, for variables that ``loss``
        creates).  ``grad_loss`` (optional) is the gradient of the final
        objective with respect to the loss value: the gradients are
        multiplied by it.  Returns the new value of :attr:`iterations`.
        """
        if not callable(loss):
            raise TypeError(
                f"loss must be a callable returning (value, gradients), got {type(loss).__name__}"
            )
        value_and_grads = loss()
        if callable(var_list):
            var_list = var_list()
        grads = self._unpack_loss(value_and_grads, var_list)
        if grad_loss is not None:
            if not functional.is_real(grad_loss) and np.asarray(grad_loss).size != 1:
                raise ValueError(f"grad_loss must be a scalar for a scalar loss, got {grad_loss!r}")
            scale = float(np.asarray(grad_loss).reshape(()))
            grads = [
                None if g is None else np.asarray(g) * np.asarray(g).dtype.type(scale)
                for g in grads
            ]
        return self.apply_gradients(zip(grads, var_list), name=name)

    def get_gradients(self, loss: Callable[[], tuple], params) -> list:
        """The gradients of ``loss`` (a callable returning ``(value, gradients)``)
        with respect to ``params``; ValueError naming a variable whose gradient is None."""
        if not callable(loss):
            raise TypeError(
                f"loss must be a callable returning (value, gradients), got {type(loss).__name__}"
            )
        params = list(params)
        grads = self._unpack_loss(loss(), params)
        for g, p in zip(grads, params):
            if g is None:
                raise ValueError(
                    f"Variable {_describe(p)} has `None` for gradient. Please make sure that the loss "
                    "callable returns a gradient for every variable."
                )
        return grads

    def get_updates(self, loss: Callable[[], tuple], params) -> list[int]:
        """Compute the gradients of ``loss`` and apply them (one step); returns ``[iterations]``."""
        params = list(params)
        return [self.apply_gradients(zip(self.get_gradients(loss, params), params))]

    @staticmethod
    def _unpack_loss(value_and_grads, var_list) -> list:
        try:
            _, grads = value_and_grads
            grads = list(grads)
        except (TypeError, ValueError):
            raise TypeError(
                "the loss callable must return (value, gradients), with one gradient (or None) per variable"
            ) from None
        var_list = list(var_list)
        if len(grads) != len(var_list):
            raise ValueError(
                f"the loss callable returned {len(grads)} gradients for {len(var_list)} variables"
            )
        return grads

    # -- configuration ----------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, with the keys of tf_keras's legacy Nadam::

            {"name", ["clipnorm"], ["clipvalue"], ["global_clipnorm"],
             "learning_rate", "decay", "beta_1", "beta_2", "epsilon"}

        (bracketed keys only when set), plus ``"weight_decay"`` when set and
        ``"schedule"`` when it is not ``"legacy"``.  ``decay`` is ψ.
        """
        config: dict[str, Any] = {"name": self._name}
        for key in ("clipnorm", "clipvalue", "global_clipnorm"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        config.update(
            {k: self._hyper[k] for k in ("learning_rate", "decay", "beta_1", "beta_2", "epsilon")}
        )
        config["learning_rate"] = _serialize_learning_rate(
            self._hyper["learning_rate"], int(self._iterations)
        )
        if self._weight_decay is not None:
            config["weight_decay"] = self._weight_decay
        if self._schedule != "legacy":
            config["schedule"] = self._schedule
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict | None = None) -> Nadam:
        """The optimizer :meth:`get_config` describes (``lr`` is read as ``learning_rate``)."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        config = dict(config)
        if "lr" in config:
            config["learning_rate"] = config.pop("lr")
        if "learning_rate" in config:
            config["learning_rate"] = _deserialize_learning_rate(
                config["learning_rate"], config.get("schedule", "legacy"), custom_objects
            )
        return cls(**config)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"Nadam(name={self._name!r}, schedule={self._schedule!r}, {options}, iterations={self.iterations})"


# -- a step like the last one --------------------------------------------------------------------


class _Repeat:
    """What a full step checked, kept so that the next step over the same
    variables can tell, cheaply and exactly, that its inputs are the ones
    checked, and skip the checks (as :class:`nadam_ref.optimizer.NAdam`'s
    steps do: :class:`nadam_ref.optimizer._Repeat`).

    Kept on the ``"numba"`` backend, without gradient clipping, when every
    pair had a gradient and the variables share one dtype, float32 or
    float64 (with the legacy schedule, the momentum cache's).  The next
    step's inputs are the ones checked when

    * no hyperparameter was set since (setting one forgets this object);
    * ``grads_and_vars`` is a list or tuple of as many (gradient, variable)
      tuples or lists, the variables the very objects of that step, in order;
    * every variable's array (a Parameter's data as it is now), gradient and
      slot is exactly a NumPy array of the dtype, C-contiguous and aligned,
      of its variable's shape, variables and slots writeable: read in
      compiled code (:class:`nadam_ref.backend_numba_repeat.DenseBatch`).

    The slots and the two state arrays are never replaced once made, only
    written in place.  The step is then the full path's: schedule and update
    by the same functions, compiled into one call.  Anything else takes the
    full path, whose checks name what is wrong.
    """

    __slots__ = ("variables", "slots", "batch", "options", "dtype", "cache_dtype")

    @classmethod
    def after(cls, opt: Nadam, pairs: list, plans: list, cache_dtype) -> _Repeat | None:
        """What the full step just taken (of ``pairs``) lets the next skip, or None."""
        if (
            opt._backend != "numba"
            or len(plans) != 1
            or any(g is None for g, _ in pairs)
            or opt._clipnorm or opt._clipvalue or opt._global_clipnorm
        ):  # fmt: skip
            return None
        variables = [v for _, v in pairs]
        dtype = _data(variables[0]).dtype
        if dtype not in functional.REAL_DTYPES or (
            opt._schedule == "legacy" and dtype != cache_dtype
        ):
            return None
        from . import backend_numba_repeat  # imported by the step: its backend's

        kept = cls()
        kept.variables, kept.dtype, kept.cache_dtype = variables, dtype, cache_dtype
        slots = [opt._slots[id(v)] for v in variables]
        kept.slots = [s["m"] for s in slots] + [s["v"] for s in slots]
        kept.options = opt._options(opt._learning_rate(), dtype, cache_dtype)
        kept.batch = backend_numba_repeat.DenseBatch(len(variables), dtype, kept.options)
        return kept

    def step(self, opt: Nadam, items) -> bool:
        """Take this step of ``items`` (``grads_and_vars``) if its inputs are
        the ones checked, and say whether it did (if not, nothing changed)."""
        variables = self.variables
        if (
            type(items) not in (list, tuple)
            or len(items) != len(variables)
            or not all(map(_is_pair, items))
            or not all(map(operator.is_, map(_VARIABLE, items), variables))
        ):
            return False
        arrays = [*map(_data, variables), *map(_GRADIENT, items), *self.slots]
        if not self.batch.read(arrays):
            return False
        options = opt._options(opt._learning_rate(), self.dtype, self.cache_dtype)
        if options is not self.options:  # a scheduled learning rate's new value
            self.options = options
            self.batch.use(options)
        _, mu_product = self.batch.step(opt._iterations[()], opt._momentum_cache[()])
        opt._momentum_cache[...] = mu_product
        opt._iterations += 1
        return True


_GRADIENT, _VARIABLE = operator.itemgetter(0), operator.itemgetter(1)


def _is_pair(item) -> bool:
    return type(item) in (tuple, list) and len(item) == 2


# -- helpers -----------------------------------------------------------------------------------------


def _describe(var) -> str:
    data = var.data if isinstance(var, Parameter) else var
    shape = getattr(data, "shape", "?")
    dtype = getattr(data, "dtype", type(data).__name__)
    return f"{type(var).__name__}(shape={tuple(shape) if shape != '?' else shape}, dtype={dtype})"


def _data(var) -> np.ndarray:
    """The array of a variable (a Parameter's data, or the array itself)."""
    return var.data if isinstance(var, Parameter) else var


def _check_variable(var, what: str) -> None:
    """A variable is a writeable float32/float64 NumPy array or a Parameter holding one."""
    refuse_copy(var, what)  # as the torch-style NAdam does
    data = var.data if isinstance(var, Parameter) else var
    if not isinstance(data, np.ndarray):
        raise TypeError(
            f"{what} must be a NumPy array or a nadam_ref.Parameter, got {type(var).__name__}"
        )
    if data.dtype not in functional.REAL_DTYPES:
        raise TypeError(
            f"{what} has dtype {data.dtype}; Keras-style Nadam needs float32 or float64 variables"
        )
    if not data.flags.writeable:
        raise ValueError(f"{what} is a read-only array; Nadam updates it in place")


def _parse_pairs(grads_and_vars) -> list[tuple]:
    if isinstance(grads_and_vars, (np.ndarray, Parameter, str, bytes, dict)):
        raise TypeError(
            f"grads_and_vars must be an iterable of (gradient, variable) pairs, got {type(grads_and_vars).__name__}"
        )
    try:
        items = list(grads_and_vars)
    except TypeError:
        raise TypeError(
            f"grads_and_vars must be an iterable of (gradient, variable) pairs, got {type(grads_and_vars).__name__}"
        ) from None
    pairs = []
    for i, item in enumerate(items):
        if (
            isinstance(item, (np.ndarray, Parameter, str, bytes))
            or not isinstance(item, (tuple, list))
            or len(item) != 2
        ):
            raise TypeError(
                f"grads_and_vars[{i}] must be a (gradient, variable) pair, got {type(item).__name__}"
            )
        grad, var = item
        _check_variable(var, f"the variable of grads_and_vars[{i}]")
        pairs.append((grad, var))
    return pairs


def _as_gradient(grad, var, i: int) -> np.ndarray:
    data = _data(var)
    grad = _to_numpy(grad)
    if not isinstance(grad, np.ndarray):
        try:
            grad = np.asarray(grad)
        except Exception:  # noqa: BLE001 - anything NumPy cannot read is malformed input
            raise TypeError(
                f"the gradient of grads_and_vars[{i}] is not an array: {type(grad).__name__}"
            ) from None
    if grad.dtype.kind != "f":
        raise TypeError(
            f"the gradient of grads_and_vars[{i}] has dtype {grad.dtype}; a float array is needed"
        )
    functional.check_grad(functional.get_backend("numpy"), data, grad, _Described(var, i))
    return grad


class _Described:
    """A variable's name in error messages, ``grads_and_vars[i] (ndarray(shape=…, dtype=…))``
    or without the index, formatted only when one is raised (a step names every variable)."""

    __slots__ = ("var", "index")

    def __init__(self, var, index: int | None = None):
        self.var, self.index = var, index

    def __str__(self) -> str:
        described = _describe(self.var)
        return described if self.index is None else f"grads_and_vars[{self.index}] ({described})"


# -- learning-rate schedules ----------------------------------------------------------------------


def _is_keras_schedule(value) -> bool:
    """A ``LearningRateSchedule`` of Keras 3 or of tf_keras (found by its
    class's ancestry, so that neither library is imported to ask)."""
    return callable(value) and any(
        c.__name__ == "LearningRateSchedule" and c.__module__.split(".")[0] in ("keras", "tf_keras")
        for c in type(value).__mro__
    )


def _takes_step(fn) -> bool:
    """Whether a callable learning rate takes the step count (a schedule
    object, or a function of one argument) or, as Keras calls one, none."""
    if _is_keras_schedule(fn):
        return True
    try:
        inspect.signature(fn).bind(0)
    except TypeError:
        return False
    except ValueError:  # no signature to read (some builtins): give it the step
        return True
    return True


def _learning_rate_value(learning_rate: Callable, step: int, schedule: str) -> np.ndarray:
    """The scheduled learning rate of the step after ``step`` steps, as a 0-d array of
    the dtype it was computed in (float32 for Keras's schedules).

    Keras evaluates a schedule object at its iteration count before the
    step's increment (0 at the first step) and a callable with no
    arguments; nadam_ref also calls a callable of one argument with that
    count.  The value is then cast to each variable's dtype.
    """
    value = learning_rate(step) if _takes_step(learning_rate) else learning_rate()
    array = np.asarray(_to_numpy(value))
    if schedule == "legacy" and type(value) in (int, float):  # not np.float64, a float subclass
        # tf.cast(value, var_dtype) converts a Python number to a float32 tensor first
        array = np.asarray(np.float32(value))
    if (
        array.size != 1
        or array.dtype.kind not in "fiu"
        or not (np.isfinite(array) & (array >= 0)).all()
    ):
        raise ValueError(
            f"the learning rate schedule returned {value!r} at step {step}; "
            "it must return one finite real number >= 0"
        )
    return array.reshape(())


def _serialize_learning_rate(learning_rate, step: int):
    """``get_config``'s learning_rate: a schedule object serialised by its own
    library (the dict Keras writes), a callable's current value (as
    tf_keras's optimizer_v2 does), or the number."""
    if _is_keras_schedule(learning_rate):
        library = importlib.import_module(type(learning_rate).__module__.split(".")[0])
        return library.optimizers.schedules.serialize(learning_rate)
    if callable(learning_rate):
        return float(_learning_rate_value(learning_rate, step, "keras3"))
    return learning_rate


def _deserialize_learning_rate(learning_rate, schedule: str, custom_objects: dict | None):
    """A serialised schedule (a dict) as an object of the generation's library:
    tf_keras for ``"legacy"``, Keras 3 for ``"keras3"`` (as each generation's
    ``from_config`` does)."""
    if not isinstance(learning_rate, dict):
        return learning_rate
    name = "tf_keras" if schedule == "legacy" else "keras"
    try:
        library = importlib.import_module(name)
    except ImportError:
        raise ImportError(
            f"the config's learning_rate is a serialised Keras schedule; rebuilding it needs {name}"
        ) from None
    return library.optimizers.schedules.deserialize(learning_rate, custom_objects=custom_objects)


def _number_or_zero(learning_rate):
    """A learning rate as checked with the other hyperparameters: a schedule's
    values are checked as each step evaluates them."""
    return 0.0 if callable(learning_rate) else learning_rate


def _to_numpy(value):
    """NumPy view of a torch tensor or TensorFlow tensor, for convenience; other values as they are."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy") and callable(value.numpy) and not isinstance(value, np.ndarray):
        return value.numpy()
    return value


def _unique(variables: list) -> list:
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _unique_dtypes(variables: list) -> list[np.dtype]:
    out: list[np.dtype] = []
    for v in variables:
        if _data(v).dtype not in out:
            out.append(_data(v).dtype)
    return out


def _initial_value(initializer, shape: tuple, dtype: np.dtype, what: str) -> np.ndarray:
    if isinstance(initializer, str):
        if initializer == "zeros":
            return np.zeros(shape, dtype)
        if initializer == "ones":
            return np.ones(shape, dtype)
        raise ValueError(
            f"unknown initializer {initializer!r} for {what}; use 'zeros', 'ones', a number, a callable or an array"
        )
    if functional.is_real(initializer):
        return np.full(shape, initializer, dtype)
    value = initializer(shape, dtype) if callable(initializer) else initializer
    value = np.array(_to_numpy(value), dtype=dtype)
    if value.shape != shape:
        raise ValueError(f"the initial value of {what} has shape {value.shape}, expected {shape}")
    return value


def _clip_by_norm(g: np.ndarray, clipnorm: float, *, float32_bound: bool = False) -> np.ndarray:
    """``tf.clip_by_norm`` / Keras 3's ``_clip_by_norm``: g·c / max(‖g‖₂, c), in g's dtype.

    ``float32_bound``: Keras 3 on the torch backend takes ``ops.maximum`` of a
    tensor and a Python float in float32, so max(‖g‖₂, c) is float32-rounded
    even for float64 gradients.
    """
    f = g.dtype.type
    l2sum = np.sum(g * g, dtype=g.dtype)
    l2norm = np.sqrt(l2sum) if l2sum > 0 else l2sum
    bound = max(l2norm, f(clipnorm))
    if float32_bound:
        bound = f(np.float32(bound))
    return (g * f(clipnorm)) / bound


def _clip_by_global_norm(
    grads: list[np.ndarray], clipnorm: float, *, float32_scale: bool = False
) -> list[np.ndarray]:
    """``tf.clip_by_global_norm``: every g times c·min(1/N, 1/c), N = √(Σ‖g‖₂²),
    computed in the gradients' (common) dtype; a non-finite N makes every gradient NaN.

    ``float32_scale``: Keras 3 on the torch backend takes ``ops.minimum`` in
    float32 (as in :func:`_clip_by_norm`), so c·min(1/N, 1/c) is a float32 number.
    """
    dtype = np.result_type(*grads)
    f = dtype.type
    norm = np.sqrt(sum((np.sum(g * g, dtype=g.dtype).astype(dtype) for g in grads), f(0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        if float32_scale:
            scale = f(np.float32(clipnorm) * np.float32(min(f(1) / norm, f(1) / f(clipnorm)))) + (
                norm - norm
            )
        else:
            scale = f(clipnorm) * min(f(1) / norm, f(1) / f(clipnorm)) + (norm - norm)
    return [g * g.dtype.type(scale) for g in grads]
