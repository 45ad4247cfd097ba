"""What a newcomer meets first: the package as installed, imported and run
from the shell.

* a read-only install with no writable home directory (a container user such
  as ``nobody``) still runs the Numba backend: it compiles in memory;
* every public submodule is an attribute of ``nadam_ref`` after one import,
  loaded only when first used;
* ``nadam-ref --version`` and the project's metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import nadam_ref

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, env: dict | None = None, prefix: tuple = (), **kwargs):
    return subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
        **kwargs,
    )


# -- a read-only install ---------------------------------------------------------------------


def _read_only_copy(tmp_path: Path) -> tuple[Path, Path]:
    """The package copied as pip would install it (no __pycache__, hence no
    Numba cache files), then made read-only, and a read-only home directory."""
    site = tmp_path / "site-packages"
    shutil.copytree(
        REPO / "nadam_ref", site / "nadam_ref", ignore=shutil.ignore_patterns("__pycache__")
    )
    home = tmp_path / "home"
    home.mkdir()
    for path in [home, site, *site.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return site, home


def _as_unprivileged() -> tuple:
    """A command prefix under which file permissions apply to this process."""
    if os.geteuid() != 0:
        return ()
    # Root without capabilities is an unprivileged user for file access: it cannot write a
    # directory whose write bits are off, even its own.  (`runuser -u nobody` would need an
    # interpreter that nobody can read; this one may live under /root.)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make the install read-only")
    return (setpriv, "--inh-caps=-all", "--bounding-set=-all", "--")


def test_read_only_install_without_a_home_compiles_in_memory(tmp_path):
    site, home = _read_only_copy(tmp_path)
    prefix = _as_unprivileged()
    probe = run_python(
        f"open({str(site / 'nadam_ref' / 'probe')!r}, 'w')", prefix=prefix, cwd=tmp_path
    )
    assert probe.returncode != 0 and "PermissionError" in probe.stderr  # really read-only
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(site), PYTHONIOENCODING="utf-8")
    done = subprocess.run(
        [
            *prefix,
            sys.executable,
            "-W",
            "always",  # so that a warning repeated per compiled function would show
            "-c",
            textwrap.dedent(
                """
                import sys

                import numpy as np
                import nadam_ref

                assert nadam_ref.__file__.startswith(sys.argv[1]), nadam_ref.__file__
                rng = np.random.default_rng(0)
                w = rng.standard_normal(1000)
                reference, w0 = w.copy(), w.copy()
                numba_opt = nadam_ref.NAdam([w], lr=0.01)  # the default backend, numba
                numpy_opt = nadam_ref.NAdam([reference], lr=0.01, backend="numpy")
                for _ in range(3):
                    g = rng.standard_normal(1000)
                    for opt in (numba_opt, numpy_opt):
                        opt.param_groups[0]["params"][0].grad = g
                        opt.step()
                assert np.array_equal(w, reference), "numba and numpy disagree"
                assert np.all(w != w0), "not updated in place"
                print("stepped")
                """
            ),
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "stepped" in done.stdout
    assert done.stderr.count("RuntimeWarning") == 1, (
        done.stderr
    )  # one warning, not one per function
    assert "NUMBA_CACHE_DIR" in done.stderr and "compiles in memory" in done.stderr
    assert not list(site.rglob("*.nbi")) and not list(home.rglob("*"))  # nothing was written


# -- the package's attributes ----------------------------------------------------------------


def test_every_public_submodule_is_an_attribute_loaded_on_first_use():
    modules = {p.stem for p in (REPO / "nadam_ref").glob("*.py")} - {"__init__", "__main__"}
    packages = {p.parent.name for p in (REPO / "nadam_ref").glob("*/__init__.py")}
    assert set(nadam_ref.SUBMODULES) == modules | packages  # a new module must be listed
    done = run_python(
        """
        import sys
        import nadam_ref

        heavy = ("scipy", "numba", "mpmath", "torch", "jsonschema", "tqdm")
        loaded = sorted(m for m in heavy if m in sys.modules)
        assert not loaded, f"import nadam_ref loaded {loaded}"
        case = nadam_ref.golden.load(nadam_ref.golden.suite_path("torch-float32"))
        assert case.steps == 30 and case.profile == "torch", case
        for name in nadam_ref.SUBMODULES:
            module = getattr(nadam_ref, name)
            assert module.__name__ == "nadam_ref." + name, module
            assert name in dir(nadam_ref)
        assert callable(nadam_ref.backend_cuda.kernel_ptx)
        assert callable(nadam_ref.torch_interop.from_torch_state_dict)
        try:
            nadam_ref.no_such_module
        except AttributeError as error:
            assert "no_such_module" in str(error)
        else:
            raise AssertionError("an unknown attribute was found")
        print("ok")
        """,
        env={"PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# -- the command line and the metadata ---------------------------------------------------------


def test_version_option():
    for option in ("--version", "-V"):
        done = subprocess.run(
            [sys.executable, "-m", "nadam_ref", option],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"nadam-ref {nadam_ref.__version__}"


def test_built_metadata_has_the_version_dependencies_and_project_urls(tmp_path):
    # The metadata pip writes for a wheel, built from this checkout's pyproject.toml.
    done = run_python(
        f"""
        import setuptools.build_meta as build
        print(build.prepare_metadata_for_build_wheel({str(tmp_path)!r}))
        """,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    metadata = (tmp_path / done.stdout.split()[-1] / "METADATA").read_text()
    fields = [line.split(": ", 1) for line in metadata.splitlines() if ": " in line]
    assert ["Version", nadam_ref.__version__] in fields  # one version, written in __init__.py
    requires = {value.split(">")[0] for key, value in fields if key == "Requires-Dist"}
    assert {"numpy", "numba", "scipy", "tqdm"} <= requires
    urls = dict(value.split(", ", 1) for key, value in fields if key == "Project-URL")
    assert "torch.optim.NAdam" in urls and all(u.startswith("https://") for u in urls.values())
    assert any(key == "Classifier" for key, _ in fields)


# -- the golden command line -------------------------------------------------------------------


def nadam_ref_cli(*argv, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "nadam_ref", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8"},
    )


def test_generate_suite_writes_to_the_current_directory_never_the_package(tmp_path):
    from nadam_ref.golden import suite_path

    shipped = {p.name: p.stat().st_mtime_ns for p in suite_path().iterdir()}
    # One case by name and one by the file name that `golden list` prints.
    done = nadam_ref_cli(
        "golden", "generate", "--suite", "--only", "lr-zero", "shape-2d.json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr-zero.json", "shape-2d.json"]
    for name in ("lr-zero.json", "shape-2d.json"):
        assert (tmp_path / name).read_bytes() == suite_path(name).read_bytes()  # same bytes
    assert {p.name: p.stat().st_mtime_ns for p in suite_path().iterdir()} == shipped
    out = tmp_path / "elsewhere"
    assert nadam_ref_cli("golden", "generate", "--suite", "--only", "lr-zero", "--out", str(out))
    assert [p.name for p in out.iterdir()] == ["lr-zero.json"]
    done = nadam_ref_cli("golden", "generate", "--suite", "--only", "no-such-case", cwd=tmp_path)
    assert done.returncode == 2 and "unknown suite case 'no-such-case'" in done.stderr


def test_verify_takes_a_suite_case_by_name_or_by_file_name(tmp_path):
    from nadam_ref.golden import load, suite_path

    case = load(suite_path("tf-keras-legacy-float64"))
    # A correct output derived from the case itself: its expected θ, which passes exactly.
    np.savez(tmp_path / "out.npz", *case.expected["param"])
    for name in ("tf-keras-legacy-float64", "tf-keras-legacy-float64.json"):
        done = nadam_ref_cli("golden", "verify", name, "out.npz", cwd=tmp_path)
        assert done.returncode == 0 and done.stdout.startswith("PASS"), done.stdout + done.stderr
    done = nadam_ref_cli("golden", "verify", "tf-keras-legacy-float64.npz", "out.npz", cwd=tmp_path)
    assert done.returncode == 2 and "no such file, nor a suite case" in done.stderr


def test_a_wrong_row_count_is_named_once_when_every_step_is_recorded():
    from nadam_ref.golden import GoldenFormatError, load, suite_path, verify

    case = load(suite_path("torch-float64"))  # 30 steps, every one recorded
    assert case.steps == len(case.record_steps) == 30
    with pytest.raises(GoldenFormatError) as error:
        verify(case, {"param": [case.expected["param"][0][:29]]})
    assert str(error.value).endswith("has 29 rows; expected 30, one per step")
    case = load(suite_path("long-run"))  # 10⁵ steps, some recorded
    assert len(case.record_steps) < case.steps
    with pytest.raises(GoldenFormatError) as error:
        verify(case, {"param": [case.expected["param"][0][:3]]})
    expected = f"expected 100000 (every step) or {len(case.record_steps)} (the recorded steps)"
    assert str(error.value).endswith(expected)


# -- without numba-cuda ------------------------------------------------------------------------

#: Runs a script as if numba-cuda were not installed: its import hook (which makes
#: ``numba.cuda`` numba-cuda's) is removed and the package cannot be found.
WITHOUT_NUMBA_CUDA = """
import importlib.abc, runpy, sys

class NoNumbaCuda(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "numba_cuda":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path[:] = [NoNumbaCuda()] + [
    f for f in sys.meta_path if type(f).__name__ != "NumbaCudaFinder"
]
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize(
    "argv",
    [["bench_cuda.py"], ["bench_cuda.py", "--simulate"], ["bench_cuda_host.py"]],
    ids=" ".join,
)
def test_cuda_benchmarks_without_numba_cuda_name_the_extra(argv, tmp_path):
    script = REPO / "benchmarks" / argv[0]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_NUMBA_CUDA, str(script), *argv[1:], "--out", os.devnull],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "NUMBA_ENABLE_CUDASIM": "0"},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr  # one line
    assert lines[0].startswith(f"{argv[0]}: the cuda backend needs numba-cuda")
    assert "pip install '.[cuda]'" in lines[0] and "nothing measured" in lines[0]


def test_cpu_benchmark_without_torch_prints_dashes_not_nan(tmp_path):
    """benchmarks/bench_cpu.py with torch hidden: its torch columns say "-", as the
    times do, never "nanx"."""
    hide_torch = WITHOUT_NUMBA_CUDA.replace('"numba_cuda"', '"torch"')
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            hide_torch,
            str(REPO / "benchmarks" / "bench_cpu.py"),
            "--cases",
            "b",
            "--repeats",
            "1",
            "--out",
            str(tmp_path / "cpu.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("b: 500 x 1000")]
    assert "nan" not in row.lower() and row.split()[-3:-1] == ["-", "-"], row


def test_cuda_backend_without_numba_cuda_says_how_to_install_it_from_the_clone(tmp_path):
    script = tmp_path / "use_cuda.py"
    script.write_text(
        textwrap.dedent(
            """
            import numpy as np
            import nadam_ref

            try:
                nadam_ref.NAdam([np.zeros(3, np.float32)], backend="cuda")
            except ImportError as error:
                print(error)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_NUMBA_CUDA, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "NUMBA_ENABLE_CUDASIM": "0"},
    )
    assert done.returncode == 0, done.stderr
    # The package is not on an index: the extra is installed from the clone.
    assert "needs numba-cuda" in done.stdout and "pip install '.[cuda]'" in done.stdout
    assert "nadam_ref[cuda]" not in done.stdout


def test_step_profile_takes_a_repeated_step_apart(tmp_path):
    """benchmarks/profile_step.py (the README's profile of a repeated step over many
    tensors) still finds in the optimizer the pieces it times: it runs, and reports each."""
    pytest.importorskip("torch")
    out = tmp_path / "profile.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "profile_step.py"),
            *("--count", "4", "--size", "50", "--rounds", "2", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["median_s"]) == {"settings", "read", "update", "store", "step", "wake"}
    assert all(len(t) == 2 for t in result["times_s"].values())
    assert "the four parts:" in done.stdout
