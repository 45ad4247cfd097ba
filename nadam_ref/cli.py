"""The ``nadam-ref`` command (also ``python -m nadam_ref``).

* ``nadam-ref demo``: minimize the Rosenbrock function with NAdam, printing progress;
* ``nadam-ref golden ...``: list, generate and verify golden test vectors;
* ``nadam-ref --version``: the installed version.

Each subcommand lives with the feature it drives; this module only dispatches.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand → (module, function taking the remaining argv and returning an exit code, help line)
COMMANDS = {
    "demo": (
        "nadam_ref.optimize",
        "demo_main",
        "minimize the Rosenbrock function and print progress",
    ),
    "golden": ("nadam_ref.golden.cli", "main", "list, generate and verify golden test vectors"),
}


def usage() -> str:
    lines = ["usage: nadam-ref COMMAND [options]  |  nadam-ref --version", "", "commands:"]
    lines += [f"  {name:<8} {help_line}" for name, (_, _, help_line) in COMMANDS.items()]
    lines.append("\n'nadam-ref COMMAND --help' describes each command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"nadam-ref {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"nadam-ref: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
