"""The NumPy reference backend: the element update applied to whole arrays.

Readable rather than fast: each line of :func:`nadam_ref.element.nadam_element`
makes a temporary array.  Every other backend must give the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .element import nadam_element
from .schedule import Coefficients


def update(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    exp_avgs: Sequence[np.ndarray],
    exp_avg_sqs: Sequence[np.ndarray],
    coefficients: Sequence[Coefficients],
) -> None:
    """Update each real-valued (θ, m, v) in place with its own coefficients."""
    for param, grad, exp_avg, exp_avg_sq, coef in zip(
        params, grads, exp_avgs, exp_avg_sqs, coefficients
    ):
        param[...], exp_avg[...], exp_avg_sq[...] = nadam_element(
            param, grad, exp_avg, exp_avg_sq, *coef
        )


def is_array(x) -> bool:
    """Arrays this backend reads and updates: NumPy arrays."""
    return isinstance(x, np.ndarray)


def zeros_like(x: np.ndarray) -> np.ndarray:
    """A fresh zero state array for parameter ``x``."""
    return np.zeros_like(x)
