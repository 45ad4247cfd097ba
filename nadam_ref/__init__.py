"""nadam_ref: the reference implementation of the NAdam optimizer.

* :class:`NAdam` and :class:`Parameter`: the interface of ``torch.optim.NAdam`` on arrays;
* :mod:`nadam_ref.functional`: the functional core every front end calls;
* :mod:`nadam_ref.schedule` and :mod:`nadam_ref.element`: the formulas, written once.
"""

from .functional import nadam
from .optimizer import NAdam, Parameter

__version__ = "0.1.0"

__all__ = ["NAdam", "Parameter", "nadam", "__version__"]
