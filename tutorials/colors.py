"""One colour per framework and per optimizer, shared by every tutorial's figures.

A NAdam schedule is drawn in the colour of the framework that uses it: ψ = 0.004 in
torch's colour, ψ = 1 in Keras 3's, ψ = ∞ in optax's; a ψ of your own in nadam_ref's.
"""

COLORS = {
    "torch": "#e8710a",  # ψ = 0.004
    "tf-keras legacy": "#8c564b",  # ψ = 0.004, another float32 rounding order
    "keras 3": "#d62728",  # ψ = 1
    "optax": "#9467bd",  # ψ = ∞
    "nadam_ref": "#1f77b4",
    "numpy": "#6baed6",  # nadam_ref's NumPy reference backend
    "exact": "#000000",
    "Adam": "#2ca02c",
    "SGD with momentum": "#7f7f7f",
    "gradient descent": "#17becf",
    "BFGS": "#bcbd22",
}


def schedule_color(momentum_decay: float) -> str:
    """The colour of a NAdam schedule ψ: the framework's that uses it, else nadam_ref's."""
    return {0.004: COLORS["torch"], 1.0: COLORS["keras 3"], float("inf"): COLORS["optax"]}.get(
        float(momentum_decay), COLORS["nadam_ref"]
    )
