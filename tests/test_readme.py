"""The README, executed: every snippet and command in it runs as written.

How the README's code is run (read this before adding a section):

* Each ``## `` section is one test, run top to bottom in a fresh scratch copy of
  the clone: a temporary directory with links to the clone's files, so that
  ``benchmarks/...`` or ``tests/...`` resolve, while the files a snippet writes land
  in the scratch directory.  The snippets of a section share one Python namespace;
  nothing carries over from another section, so a section defines every name it uses.
* ```` ```python ```` blocks run in this process (Numba's CUDA simulator is on, as
  everywhere in the suite); ruff formats and lints them like any code
  (``ruff format README.md``).
* ```` ```bash ```` blocks run with ``bash -e``: every command must succeed.
* ```` ```console ```` blocks are a shell session: each ``$ command`` runs, and the
  lines after it, if any, are its output: they must appear in that order (runs of
  spaces compare as one; a line ``...`` stands for any number of lines, and ``...``
  within a line for any text, e.g. a time).  A command
  must exit with status 0, or N when its line ends with the comment ``# exits N``.
* ```` ```text ```` blocks are not run (output, file layouts).  Every code block is
  fenced with one of these four languages: an indented block or a fence without a
  language fails :func:`test_every_code_block_is_fenced_with_a_language`.
* To skip a block, put Sybil's skip directive, an HTML comment, on the line before it:
  ``<!-- skip: next "why" -->`` always (a command that installs packages, opens a
  GUI or runs for minutes), or ``<!-- skip: next if(not has("torch"), reason="needs
  torch") -->`` when something optional is missing; ``has(module)`` says whether a
  module can be imported, ``which(program)`` whether a program is on PATH (e.g. "cc",
  "node"), and ``cuda()`` whether the cuda backend can run here (a GPU or the
  simulator).  ``<!-- skip: start "why" -->`` ... ``<!-- skip: end -->``
  skips every block between them.  A skipped block must not define what later
  blocks of its section need.
* Commands that would change the environment or recurse (``pip install``, ``pytest``,
  ``jupyter lab``, ``.ci/run``) are refused unless skipped.

The two setup commands at the top install packages, so they are skipped there
and checked by :func:`test_setup_commands_are_what_ci_runs` instead: the test command
is the one ``.ci/run`` runs, and the demo command runs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

import pytest

pytest.importorskip("sybil", reason="the README is run with sybil (the test extra)")

from sybil import Document  # noqa: E402
from sybil.evaluators.skip import Skipper  # noqa: E402
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LANGUAGES = ("python", "bash", "console", "text")
EXIT_STATUS = re.compile(r"#\s*exits\s+(\d+)\s*$")


def _env() -> dict[str, str]:
    """The shell of a newcomer who installed this checkout: its ``python3`` and
    ``nadam-ref`` first on PATH, this checkout's nadam_ref imported."""
    path = [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    pythonpath = [str(REPO), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PATH": os.pathsep.join(p for p in path if p),
        "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p),
        "PYTHONIOENCODING": "utf-8",
    }


#: Commands the suite must never run: they would change the environment it runs in
#: (pip install), or run the suite inside itself.  The README marks them skipped.
FORBIDDEN = re.compile(r"\bpip3?\s+install\b|\bpytest\b|\bjupyter\s+lab\b|\.ci/run\b")


def _shell(command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    if FORBIDDEN.search(command):
        raise AssertionError(
            f"refusing to run {command!r} from the README: mark it skipped (see this file's "
            "docstring)"
        )
    return subprocess.run(
        ["bash", "-e", "-c", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _run_bash(example) -> None:
    done = _shell(example.parsed)
    if done.returncode != 0:
        raise AssertionError(
            f"README line {example.line}: bash block exited {done.returncode}\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


def _session(text: str) -> list[tuple[str, list[str]]]:
    """A console block as (command, expected output lines) pairs."""
    commands: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"a console block starts with a '$ ' command, not {line!r}")
    return [(command, [e for e in expected if e.strip()]) for command, expected in commands]


def _squeeze(line: str) -> str:
    return " ".join(line.split())


def _appears_in_order(expected: list[str], actual: list[str]) -> bool:
    """Whether ``expected`` matches ``actual``: a ``...`` line matches any lines, ``...``
    within a line any text."""
    patterns = [
        None
        if _squeeze(e) == "..."
        else re.compile(".*".join(re.escape(part) for part in _squeeze(e).split("...")))
        for e in expected
    ]
    actual = [a for a in (_squeeze(a) for a in actual) if a]

    def match(i: int, j: int) -> bool:
        if i == len(patterns):
            return j == len(actual)
        if patterns[i] is None:
            return any(match(i + 1, k) for k in range(j, len(actual) + 1))
        return j < len(actual) and patterns[i].fullmatch(actual[j]) and match(i + 1, j + 1)

    return bool(match(0, 0))


def _run_console(example) -> None:
    for command, expected in _session(example.parsed):
        status = EXIT_STATUS.search(command)
        done = _shell(command)
        where = f"README line {example.line}: $ {command}"
        wanted = int(status.group(1)) if status else 0
        if done.returncode != wanted:
            raise AssertionError(
                f"{where}\nexited {done.returncode}, not {wanted}\n{done.stdout}\n{done.stderr}"
            )
        if expected and not _appears_in_order(expected, done.stdout.splitlines()):
            raise AssertionError(
                f"{where}\nprinted:\n{done.stdout}\nnot what the README shows:\n"
                + "\n".join(expected)
            )


PARSERS = [
    PythonCodeBlockParser(),
    CodeBlockParser("bash", _run_bash),
    CodeBlockParser("console", _run_console),
    SkipParser(),
]


def _fences(text: str):
    """(line number, language, body lines) of each fenced block, and the other lines."""
    blocks, prose, inside = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        if inside is None and line.startswith("```"):
            inside = (number, line[3:].strip(), [])
        elif inside is not None and line.startswith("```"):
            blocks.append(inside)
            inside = None
        elif inside is not None:
            inside[2].append(line)
        else:
            prose.append((number, line))
    assert inside is None, f"README line {inside[0]}: a fence that is never closed"
    return blocks, prose


def _sections(text: str) -> list[tuple[str, int, int]]:
    """(title, first character, end) of the text before the first ``## `` heading and of
    each ``## `` section, headings inside code blocks aside."""
    _, prose = _fences(text)
    offsets = [0]
    for line in text.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    starts = [(offsets[n - 1], line[3:].strip()) for n, line in prose if line.startswith("## ")]
    bounds = [(0, "introduction"), *starts, (len(text), None)]
    return [(title, a, b) for (a, title), (b, _) in zip(bounds, bounds[1:]) if b > a]


def has(module: str) -> bool:
    """Whether ``module`` can be imported here (for skip conditions)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def which(program: str) -> bool:
    """Whether ``program`` is on PATH (for skip conditions)."""
    return shutil.which(program) is not None


def cuda() -> bool:
    """Whether ``backend="cuda"`` can run here: numba-cuda, and a GPU or the simulator."""
    if not has("numba_cuda"):
        return False
    from nadam_ref import backend_cuda

    return backend_cuda.SIMULATOR or backend_cuda.cuda.is_available()


SECTIONS = _sections(README.read_text(encoding="utf-8"))


@pytest.fixture
def scratch_clone(tmp_path, monkeypatch):
    for entry in REPO.iterdir():
        if entry.name not in (".git", "__pycache__", ".pytest_cache", ".hypothesis"):
            (tmp_path / entry.name).symlink_to(entry)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("title", "start", "end"), SECTIONS, ids=[s[0] for s in SECTIONS])
def test_readme_section_runs_as_written(title, start, end, scratch_clone):
    document = Document.parse(str(README), *PARSERS)
    document.namespace.update(has=has, which=which, cuda=cuda, __name__="__readme__")
    ran, skipped = 0, []
    for example in document:
        if not start <= example.start < end:
            continue
        try:
            example.evaluate()
        except SkipTest as reason:
            skipped.append(f"line {example.line}: {reason}")
        else:
            ran += not isinstance(example.region.evaluator, Skipper)  # a block, not a directive
    if not ran:
        pytest.skip("; ".join(skipped) or "no code in this section")


def test_every_code_block_is_fenced_with_a_language():
    """So that none escapes the test above: an indented block, or a fence without one of
    the languages, would not be run."""
    blocks, prose = _fences(README.read_text(encoding="utf-8"))
    for number, language, _ in blocks:
        assert language in LANGUAGES, f"README line {number}: fence language {language!r}"
    previous = ""
    for number, line in prose:
        assert not (line.startswith("    ") and not previous.strip()), (
            f"README line {number}: an indented code block; fence it as ```python, "
            "```bash or ```console so that it is run"
        )
        previous = line
    assert sum(language == "python" for _, language, _ in blocks) >= 5


def test_commands_say_python3():
    """Plain Debian and Ubuntu have no ``python`` (only ``python3``) outside a venv."""
    text = README.read_text(encoding="utf-8")
    plain = re.compile(r"(?<![\w/.-])python\s+(?:-[mcW]\b|[\w./-]+\.py\b)")  # a command
    lines = [n for n, line in enumerate(text.splitlines(), 1) if plain.search(line)]
    assert not lines, f"README lines {lines}: say python3"


def _commands(line: str) -> list[list[str]]:
    """The commands of a shell line (split at ``&&``, comment dropped), as words."""
    words = shlex.split(line, comments=True)
    commands, current = [], []
    for word in words:
        if word == "&&":
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [c for c in [*commands, current] if c]


def test_setup_commands_are_what_ci_runs(scratch_clone):
    blocks, _ = _fences(README.read_text(encoding="utf-8"))
    number, language, lines = blocks[0]
    assert language == "bash", f"README line {number}: the setup commands come first"
    venv, main_job, tests = (line for line in lines if line.strip())
    assert _commands(venv)[0][:3] == ["python3", "-m", "venv"]
    install, demo = _commands(main_job)
    assert install == ["python3", "-m", "pip", "install", "."]
    ci = [c for line in (REPO / ".ci" / "run").read_text().splitlines() for c in _commands(line)]
    quiet = {"--quiet", "-q"}
    for command in _commands(tests):  # the same commands, .ci/run only quieter
        assert [w for w in command if w not in quiet] in [
            [w for w in c if w not in quiet] for c in ci
        ], f"{shlex.join(command)} is not in .ci/run"
    assert demo[:3] == ["python3", "-m", "nadam_ref"] and demo[3] == "demo"
    done = _shell(shlex.join(demo), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "backend=numba" in done.stdout and "Reached the minimizer" in done.stdout
