"""nadam_ref: the reference implementation of the NAdam optimizer.

* :class:`NAdam` and :class:`Parameter`: the interface of ``torch.optim.NAdam`` on arrays;
* :mod:`nadam_ref.keras`: the interface of ``tf.keras.optimizers.Nadam``;
* :func:`minimize`: NAdam as a ``scipy.optimize`` method;
* :func:`save` / :func:`load`: pickle-free checkpoints of a ``state_dict``;
* :mod:`nadam_ref.golden`: the exact oracle, golden vectors and their verifier;
* :mod:`nadam_ref.functional`: the functional core every front end calls;
* :mod:`nadam_ref.schedule` and :mod:`nadam_ref.element`: the formulas, written once.
"""

import importlib

from .functional import nadam
from .optimizer import NAdam, Parameter

__version__ = "0.1.0"

# Imported on first use, so that ``import nadam_ref`` does not pull in SciPy.
_LAZY = {
    "minimize": "nadam_ref.optimize",
    "save": "nadam_ref.checkpoint",
    "load": "nadam_ref.checkpoint",
}
#: The public submodules: each is an attribute after ``import nadam_ref``
#: (``nadam_ref.golden.load(...)``), imported when first used, so that importing
#: the package stays cheap (no SciPy, Numba, mpmath or torch until needed).
SUBMODULES = (
    "backend",
    "backend_cuda",
    "backend_numba",
    "backend_numba_repeat",
    "backend_numpy",
    "checkpoint",
    "cli",
    "element",
    "functional",
    "golden",
    "keras",
    "optimize",
    "optimizer",
    "profiles",
    "schedule",
    "torch_interop",
)

__all__ = ["NAdam", "Parameter", "nadam", "minimize", "save", "load", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'nadam_ref' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *SUBMODULES})
