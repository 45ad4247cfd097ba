"""Every tutorial notebook runs top to bottom.

The notebooks check their own numbers with asserts, so a notebook that runs is
a notebook whose printed numbers agree with their independent sources (hand
computations, the real frameworks, exact arithmetic); an assert that fails is
a cell that fails, and this test fails with the cell's traceback.

The notebooks are executed in a fresh ``python3`` kernel with ``tutorials/``
as the working directory, as ``jupyter lab tutorials/`` would run them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat (the test extra) runs the notebooks")
nbclient = pytest.importorskip("nbclient", reason="nbclient (the test extra) runs the notebooks")
pytest.importorskip("ipykernel", reason="ipykernel (the test extra) provides the python3 kernel")
pytest.importorskip("matplotlib", reason="the notebooks draw with matplotlib")

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))

#: Seconds one cell may take before the run is abandoned; each notebook is
#: written to finish in well under a minute on 2 cores.
CELL_TIMEOUT = 240


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch):
    # Figures go inline (as PNG outputs), whatever backend the environment names.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(TUTORIALS)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed in a cell:\n{error}", pytrace=False)
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    # Every notebook draws at least one figure.
    assert any(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ), f"{path.name} drew no figure"
