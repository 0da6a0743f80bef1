"""The walkthrough notebook: committed without outputs, and it runs top to bottom on an experiment."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from analysis_fixtures import ACC, PERPLEXITY, Kind, standard_experiment
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "analysis" / "notebooks" / "adam_vs_sgd.ipynb"


def test_notebook_is_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", [ACC, PERPLEXITY], ids=["accuracy", "perplexity"])
def test_notebook_executes_against_an_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: Kind
) -> None:
    experiment = standard_experiment(tmp_path / "exp", kind=kind)
    monkeypatch.setenv("OPTSWEEP_EXPERIMENT", str(experiment))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, timeout=90, kernel_name="python3", resources=resources).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # lr sensitivity, learning curves, tuning budget, heatmap
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "show no significant difference" in printed
    assert "stopped early by the scheduler" in printed
    assert f"target {kind.target.label}" in printed
    # The caveats speak of the experiment's metric, the tables hold its columns.
    metric = "accuracy" if kind is ACC else "perplexity"
    assert f"chosen by its mean validation {metric} over the search seeds" in printed  # no confirmation
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert kind.target.best_key in tables
    assert "reported_from" in tables and "p_holm" in tables and "hyperparameters" in tables
