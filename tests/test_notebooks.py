"""Every notebook in notebooks/ runs top to bottom on small settings (JFLOW_NOTEBOOK_SMALL=1).

Each notebook ends with assertions on what it computed, so a notebook that runs but produces a
wrong result fails here too.
"""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("JFLOW_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("JFLOW_NOTEBOOK_OUT", str(tmp_path))
    # The kernel is a new process: it inherits this environment (MUJOCO_GL, the JAX cache), but
    # the notebooks choose their own XLA flags in their first cell, as a user's would.
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name}: commit notebooks without outputs"
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.parent)}},
    )
    client.execute()
    assert os.listdir(tmp_path), f"{path.name} wrote no pictures to JFLOW_NOTEBOOK_OUT"
