"""Golden vectors for NAdam: an exact oracle, a portable file format, a
shipped suite, and a verifier that says where an implementation goes wrong.

* :func:`load` / :func:`save`: read and write a golden case (JSON or ``.npz``);
* :func:`verify`: check another implementation's output against a case;
* :func:`make_case`: generate a case with the exact oracle;
* :func:`suite_path` / :func:`suite_cases`: the suite shipped in the package.

The command line is ``nadam-ref golden list|generate|verify``.
"""

from .format import Case, GoldenFormatError, load, loads, save
from .suite import suite_cases, suite_path
from .verifier import Report, verify

__all__ = [
    "Case",
    "GoldenFormatError",
    "load",
    "loads",
    "save",
    "make_case",
    "verify",
    "Report",
    "suite_path",
    "suite_cases",
]


def __getattr__(name):
    # The oracle needs mpmath (the 'golden' extra); reading and verifying do not.
    if name == "make_case":
        from .generate import make_case

        return make_case
    raise AttributeError(f"module 'nadam_ref.golden' has no attribute {name!r}")
