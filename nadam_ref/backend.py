"""The backend contract: what a backend module provides, declared once.

A backend is a module that updates θ, m and v in place from a step's
coefficients (:class:`nadam_ref.schedule.Coefficients`).  Three ship with
nadam_ref: ``"numpy"`` (the readable reference), ``"numba"`` (compiled CPU)
and ``"cuda"`` (compiled GPU).  Every front end reaches a backend through
:func:`get` and the :class:`Hooks` it returns, never by asking a module for
an attribute, so no front end knows which backend it runs on.

Required (:class:`Backend`): ``update``, ``is_array``, ``zeros_like``.

Optional, each with the default a backend on host NumPy arrays needs
(:class:`Hooks` lists them with their meaning):

============== =============================================== ======================
hook           meaning                                         default
============== =============================================== ======================
is_grad_array  arrays accepted as gradients (CUDA: host or     ``is_array``
               device arrays)
adopt          bring an accepted array into the form updated   none (arrays as given)
               (CUDA: a zero-copy view of a foreign array)
as_real        the real view of a complex array                ``backend.as_real``
take_params    the arrays to keep for new parameters (CUDA:    the arrays as given
               host arrays moved to the device)
to_host        the values of an array as a NumPy array (which  ``np.asarray``
               may share its memory)
from_host      a backend array from a NumPy array, in the      ``np.array(a, like.dtype)``
               dtype of ``like``
assign         write host values into an array, in place if    ``array[...] = values``
               the backend can; returns the array to keep
============== =============================================== ======================
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from .schedule import Coefficients

#: Backend name → module.
BACKENDS = {
    "numpy": "nadam_ref.backend_numpy",
    "numba": "nadam_ref.backend_numba",
    "cuda": "nadam_ref.backend_cuda",
}


class Backend(Protocol):
    """The functions every backend module defines."""

    def update(
        self,
        params: Sequence,
        grads: Sequence,
        exp_avgs: Sequence,
        exp_avg_sqs: Sequence,
        coefficients: Sequence[Coefficients],
    ) -> None:
        """Update each real-valued (θ, m, v) in place with its own coefficients,
        with the bits of :func:`nadam_ref.element.nadam_element`."""

    def is_array(self, x: Any) -> bool:
        """Whether ``x`` is an array this backend updates in place."""

    def zeros_like(self, x: Any) -> Any:
        """A fresh zero state array for parameter ``x``."""


def as_real(array):
    """A real view of a complex array, with a trailing axis of (real, imag),
    as ``torch.view_as_real``; real arrays are returned as they are (the
    contract's default ``as_real``)."""
    if np.dtype(array.dtype).kind != "c":
        return array
    return array[..., None].view(array.real.dtype)


def _assign(array, values):
    array[...] = values
    return array


@dataclass(frozen=True)
class Hooks:
    """A backend module with every hook of the contract resolved: its own
    function where it has one, the default otherwise (the table above)."""

    module: ModuleType
    update: Callable
    is_array: Callable[[Any], bool]
    zeros_like: Callable
    is_grad_array: Callable[[Any], bool]
    adopt: Callable | None
    as_real: Callable
    take_params: Callable[[list], list]
    to_host: Callable[[Any], np.ndarray]
    from_host: Callable[[np.ndarray, Any], Any]
    assign: Callable[[Any, np.ndarray], Any]


REQUIRED = ("update", "is_array", "zeros_like")

_hooks: dict[str, Hooks] = {}  # module name → its hooks


def get(name: str) -> Hooks:
    """The backend called ``name``, imported on first use, its hooks resolved."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    hooks = _hooks.get(BACKENDS[name])
    return hooks if hooks is not None else of(importlib.import_module(BACKENDS[name]))


def of(backend: ModuleType | Hooks) -> Hooks:
    """The hooks of a backend module (a :class:`Hooks` is returned as it is)."""
    if isinstance(backend, Hooks):
        return backend
    hooks = _hooks.get(backend.__name__)
    if hooks is not None and hooks.module is backend:
        return hooks
    own = vars(backend)
    missing = [f for f in REQUIRED if not callable(own.get(f))]
    if missing:
        raise TypeError(f"backend {backend.__name__} lacks {missing}, which every backend defines")
    hooks = _hooks[backend.__name__] = Hooks(
        module=backend,
        update=own["update"],
        is_array=own["is_array"],
        zeros_like=own["zeros_like"],
        is_grad_array=own.get("is_grad_array", own["is_array"]),
        adopt=own.get("adopt"),
        as_real=own.get("as_real", as_real),
        take_params=own.get("take_params", list),
        to_host=own.get("to_host", np.asarray),
        from_host=own.get("from_host", lambda a, like: np.array(a, dtype=like.dtype)),
        assign=own.get("assign", _assign),
    )
    return hooks
