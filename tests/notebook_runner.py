"""Run a committed analysis notebook on an experiment directory, as a user does, and hand back what it
showed: the tests of every notebook (the headline's and the published findings') share this."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

EXPERIMENT_ENV = "OPTSWEEP_EXPERIMENT"


def executed_outputs(
    notebook_path: Path, experiment: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch, timeout: int = 240
) -> list[Any]:
    """Every code cell's outputs after running the notebook (committed without outputs) on `experiment`;
    fails on a cell that raised."""
    notebook = nbformat.read(notebook_path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    monkeypatch.setenv(EXPERIMENT_ENV, str(experiment))
    resources = {"metadata": {"path": str(workdir)}}
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources=resources).execute()
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def images(outputs: list[Any]) -> int:
    return len([o for o in outputs if "image/png" in o.get("data", {})])


def printed(outputs: list[Any]) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
