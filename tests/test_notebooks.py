"""Every tutorial runs top to bottom, with its defaults and with other parameters.

Each notebook has one cell tagged ``parameters`` (papermill's convention); the
values of a run are injected in a cell right after it, as papermill does, and
every printed number, sentence and assert of the notebook is computed from
them, so running with other values checks that nothing is hard-coded. The
notebooks check their numbers with asserts against independent sources (hand
computations, the real frameworks, exact arithmetic): an assert that fails is
a cell that fails, and the test fails with that cell's traceback.

After the notebook's own cells the test runs a few of its own in the same
kernel: the exercises' check functions must accept a solution written here
and reject a wrong answer, and every figure must have been drawn (matplotlib's
Agg backend, so no image is rendered unless ``NADAM_TUTORIAL_FIGURES=DIR`` asks
for PNGs of every figure, to look at them, and for each run's CPU seconds).

A notebook's runs share one kernel, one after another: its defaults first, in
a fresh kernel, then each other parameter set after ``%reset -f`` (every name
the run before defined is gone) and ``plt.close("all")``.  What carries over is
what modules hold: imports (torch, TensorFlow and JAX took most of each run's
time when every run started a kernel of its own), compiled code, module
settings.  After a run that fails, the next one gets a fresh kernel.

Notebooks share the CPU: ``NADAM_NOTEBOOK_WORKERS`` kernels at a time (default 2).
Kernels import this checkout's nadam_ref (its root is put first on PYTHONPATH)
and run in ``tutorials/``, as ``jupyter lab tutorials/`` would.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat (the test extra) runs the notebooks")
nbclient = pytest.importorskip("nbclient", reason="nbclient (the test extra) runs the notebooks")
pytest.importorskip("ipykernel", reason="ipykernel (the test extra) provides the python3 kernel")
pytest.importorskip("matplotlib", reason="the notebooks draw with matplotlib")

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))

#: Seconds one cell may take before the run is abandoned.
CELL_TIMEOUT = 240


class Source(str):
    """A parameter value given as Python source (``Source("math.inf")``), not as a literal."""


INF = Source("math.inf")

#: Other values for each notebook (its defaults run too).
PARAMETER_SETS: dict[str, list[dict]] = {
    "01": [
        dict(lr=0.01, beta1=0.8, momentum_decay=1.0, steps=6, weight_decay=0.01, eps=1e-3),
        dict(
            lr=0.5,
            beta1=0.99,
            beta2=0.9,
            momentum_decay=INF,
            steps=1,
            picture_step=1,
            theta0=[-3.0, 0.02],
            curvature=[0.1, 500.0],
            constant_grad_steps=20,
            backend="numba",
        ),
    ],
    "02": [
        dict(
            momentum_decay=0.004,
            lr=0.08,
            beta1=0.8,
            maxiter=800,
            stiffness=100.0,
            batch_size=128,
            max_epochs=2,
            target_loss=0.5,
            seed=3,
            backend="numba",
            weight_decay=0.0,
            sgd_momentum=0.5,
        ),
        dict(
            momentum_decay=INF,
            gtol=1e-2,
            x0=[1.5, 2.0],
            maxiter=1000,
            train_lr=0.1,
            sgd_lr=0.3,
            eps=1e-6,
            beta2=0.99,
            stiffness=1e6,
            batch_size=16,
            max_epochs=1,
        ),
    ],
    "03": [
        dict(
            frameworks=["torch", "keras 3", "optax"],
            lr=5e-3,
            beta1=0.8,
            eps=1e-8,
            steps=100,
            n_params=100,
            seed=7,
            exact_steps=60,
            exact_params=5,
        ),
        dict(
            frameworks=[],
            steps=40,
            n_params=20,
            grad_scale=1.0,
            grad_bias=0.0,
            beta2=0.99,
            exact_steps=50,
            exact_params=3,
            seed=3,
        ),
    ],
    "04": [
        dict(dtype="float64", shapes=[[3]], steps=12, seed=4, lr=1e-2, momentum_decay=0.04),
        dict(
            shapes=[[2, 2], [5]],
            steps=8,
            lr=1e-3,
            beta1=0.8,
            beta2=0.99,
            eps=1e-7,
            tiny_grad_scale=1e-8,
            seed=9,
        ),
    ],
    "05": [
        dict(
            bench_sizes=[100, 10**4],
            bench_repeats=3,
            steps=2,
            weight_decay=0.0,
            fma_elements=2000,
            seed=1,
            lr=1e-3,
        ),
        dict(
            bench_sizes=[10**3],
            bench_repeats=3,
            steps=3,
            beta1=0.8,
            beta2=0.99,
            momentum_decay=1.0,
            fma_elements=10_000,
            eps=1e-6,
        ),
    ],
}

#: Run after each notebook with its defaults: its exercises' checks must accept a
#: solution written here and reject a wrong answer.
EXERCISE_CHECKS: dict[str, str] = {
    "01": """
assert check_psi(math.log(2) / (100 * math.log(1 / 0.96))) is True
assert check_psi(0.004) is False and check_psi(None) is None
def _v_hat(grads, b2):
    v = 0.0
    for g in grads:
        v = b2 * v + (1 - b2) * g * g
    return v / (1 - b2 ** len(grads))
assert check_v_hat(_v_hat) is True
assert check_v_hat(lambda grads, b2: sum(g * g for g in grads) / len(grads)) is False
assert check_first_factor(lambda b1: 1 + b1 * (1 - b1) / (1 - b1 * b1)) is True
assert check_first_factor(lambda b1: 1.0) is False
""",
    "02": """
assert check_lr(0.05) is True and check_lr(1e-4) is False and check_lr(None) is None
def _grad_b(z, y):
    d = softmax(z)
    d[np.arange(len(y)), y] -= 1
    return d.mean(axis=0)
assert check_grad_b(_grad_b) is True
assert check_grad_b(lambda z, y: softmax(z).mean(axis=0)) is False
""",
    "03": """
_mu = lambda t: beta1 * (1 - 0.5 * 0.96**t)
assert check_F(1 + (1 - beta1) * _mu(2) / (1 - _mu(1) * _mu(2))) is True
assert check_F(1.0) is False and check_F(None) is None
_right = KNOWN[seed % 4]
assert check_framework(_right) is True and check_framework(None) is None
assert check_framework(next(n for n in KNOWN if schedules[n] != schedules[_right])) is False
""",
    "04": """
assert check_port(tiny_nadam) is True
assert check_port(mystery_port) is False and check_port(None) is None
assert check_scale(1e-7) is True and check_scale(1.0) is False and check_scale(None) is None
""",
    "05": """
assert check_fma(lambda a, b, c: (a.astype(np.float64) * b + c).astype(np.float32)) is True
assert check_fma(lambda a, b, c: a * b + c) is False and check_fma(my_fma) is None
assert check_bytes(56) is True and check_bytes(28) is False and check_bytes(None) is None
""",
}

#: The figures each notebook draws at least (static figures; sliders may add more).
MIN_FIGURES = {"01": 3, "02": 4, "03": 1, "04": 1, "05": 1}

FIGURE_REPORT = """
import json as _json, os as _os
import matplotlib.pyplot as _plt
_drawn, _out = [], _os.environ.get("NADAM_TUTORIAL_FIGURES")
for _k, _n in enumerate(_plt.get_fignums()):
    _fig = _plt.figure(_n)
    _drawn.append(sum(len(_a.lines) + len(_a.collections) + len(_a.images) + len(_a.patches)
                      for _a in _fig.axes))
    if _out:
        _fig.savefig(_os.path.join(_out, f"RUN-{_k}.png"), dpi=80, bbox_inches="tight")
if _out:  # the run's CPU seconds (the kernel's since it started, or since RESET), to see its cost
    import resource as _resource
    _use = [_resource.getrusage(_w) for _w in (_resource.RUSAGE_SELF, _resource.RUSAGE_CHILDREN)]
    _cpu = sum(_u.ru_utime + _u.ru_stime for _u in _use) - globals().get("_run_cpu_start", 0)
    with open(_os.path.join(_out, "RUN-cpu.txt"), "w") as _f:
        print(f"{_cpu:.1f}", file=_f)
print("FIGURES " + _json.dumps(_drawn))
"""

#: Run in a notebook's kernel between two of its runs (the module docstring says why).
RESET = """
%reset -f
import matplotlib.pyplot as _plt, resource as _resource
_plt.close("all")
_use = [_resource.getrusage(_w) for _w in (_resource.RUSAGE_SELF, _resource.RUSAGE_CHILDREN)]
_run_cpu_start = sum(_u.ru_utime + _u.ru_stime for _u in _use)
del _plt, _resource, _use
"""


def _literal(value) -> str:
    return str(value) if isinstance(value, Source) else repr(value)


def _runs():
    for path in NOTEBOOKS:
        number = path.name[:2]
        for k, values in enumerate([{}, *PARAMETER_SETS.get(number, [])]):
            yield pytest.param(
                path, values, id=f"{path.stem}-{'defaults' if k == 0 else f'set{k}'}"
            )


RUNS = list(_runs())


def _parameters_cell(notebook) -> int:
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged 'parameters'; expected exactly one"
    return tagged[0]


def _prepare(path: Path, values: dict, run_id: str):
    notebook = nbformat.read(path, as_version=4)
    at = _parameters_cell(notebook)
    names = {
        name.id
        for node in ast.parse(notebook.cells[at].source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        for name in (target.elts if isinstance(target, ast.Tuple) else [target])
        if isinstance(name, ast.Name)
    }
    unknown = set(values) - names
    assert not unknown, f"{path.name}: no parameters named {sorted(unknown)}"
    if values:
        source = "# Injected parameters\n" + "\n".join(
            f"{k} = {_literal(v)}" for k, v in values.items()
        )
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = ["injected-parameters"]
        notebook.cells.insert(at + 1, cell)
    checks = None if values else EXERCISE_CHECKS.get(path.name[:2])
    for extra in (checks, FIGURE_REPORT.replace("RUN", run_id)):
        if extra:
            notebook.cells.append(nbformat.v4.new_code_cell(extra.strip()))
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{i}"
    return notebook


async def _execute(path: Path, runs: dict, limit: asyncio.Semaphore) -> dict:
    """Run ``runs`` ({run id: values}, the defaults first) of one notebook, in one
    kernel while they pass; {run id: (notebook, error)}."""
    results, todo = {}, list(runs.items())
    async with limit:
        while todo:
            client = nbclient.NotebookClient(
                nbformat.v4.new_notebook(),
                kernel_name="python3",
                timeout=CELL_TIMEOUT,
                resources={"metadata": {"path": str(TUTORIALS)}},
            )
            async with client.async_setup_kernel():
                fresh = True
                while todo:
                    run_id, values = todo.pop(0)
                    notebook = _prepare(path, values, run_id)
                    if not fresh:
                        client.nb = nbformat.v4.new_notebook(
                            cells=[nbformat.v4.new_code_cell(RESET.strip())]
                        )
                        await client.async_execute_cell(client.nb.cells[0], 0)
                    fresh = False
                    client.nb = notebook
                    client.reset_execution_trackers()
                    try:
                        for index, cell in enumerate(notebook.cells):
                            await client.async_execute_cell(
                                cell, index, execution_count=client.code_cells_executed + 1
                            )
                    except nbclient.exceptions.CellExecutionError as error:
                        results[run_id] = (notebook, error)
                        break  # the rest in a fresh kernel
                    results[run_id] = (notebook, None)
    return results


@pytest.fixture(scope="module")
def executed(request):
    """Execute every selected run, a few kernels at a time; {run id: (notebook, error)}."""
    selected = [
        item.callspec
        for item in request.session.items
        if item.originalname == "test_notebook_runs" and hasattr(item, "callspec")
    ]
    env = {
        "MPLBACKEND": "Agg",
        "PYTHONWARNINGS": "ignore:FigureCanvasAgg is non-interactive:UserWarning",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)

    async def run_all():
        limit = asyncio.Semaphore(int(os.environ.get("NADAM_NOTEBOOK_WORKERS", "2")))
        by_notebook: dict[Path, dict] = {}
        for spec in selected:  # in RUNS' order: a notebook's defaults come first
            by_notebook.setdefault(spec.params["path"], {})[spec.id] = spec.params["values"]
        # The later tutorials run longest; starting them first keeps both kernels busy.
        jobs = [_execute(path, runs, limit) for path, runs in reversed(by_notebook.items())]
        return {k: v for done in await asyncio.gather(*jobs) for k, v in done.items()}

    try:
        yield asyncio.run(run_all())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_all_five_tutorials_are_present():
    numbers = sorted(p.name[:2] for p in NOTEBOOKS)
    assert numbers == ["01", "02", "03", "04", "05"], [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    stale = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not stale, f"{path.name}: cells {stale} carry outputs; clear them before committing"
    _parameters_cell(notebook)


@pytest.mark.parametrize(("path", "values"), RUNS)
def test_notebook_runs(path: Path, values: dict, executed, request):
    notebook, error = executed[request.node.callspec.id]
    if error is not None:
        pytest.fail(
            f"{path.name} with {values or 'its defaults'} failed in a cell:\n{error}", pytrace=False
        )
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    report = [o["text"] for o in notebook.cells[-1].get("outputs", []) if o.get("name") == "stdout"]
    drawn = json.loads("".join(report).split("FIGURES ", 1)[1])
    assert len(drawn) >= MIN_FIGURES.get(path.name[:2], 1), f"{path.name} drew {len(drawn)} figures"
    assert all(drawn), f"{path.name}: figures {[i for i, n in enumerate(drawn) if not n]} are empty"
