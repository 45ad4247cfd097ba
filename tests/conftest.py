"""Test-wide settings that must be in place before the frameworks are imported."""

import os

# Keras 3 is checked on the torch backend (docs/frameworks.md, "Environment"); it reads this at import.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Without a GPU the CUDA backend is tested with Numba's simulator, which must be
# chosen before numba.cuda is first imported.  Set NUMBA_ENABLE_CUDASIM=0 to use a real GPU.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
