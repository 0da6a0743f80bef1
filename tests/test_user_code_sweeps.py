"""Tasks and user code through the real Ray sweep and the report (issue 10): the language-model and
regression tasks give verdicts on their min metrics, MNIST-format data from disk, both examples (the
Python API in-process; the study file as a user runs it, from outside the repo), and a user's training
step that fails is reported per trial with the user's own traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from torch import nn

import optsweep
from optsweep import analysis
from optsweep.trainables import tasks

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("task", "task_args", "metric"),
    [
        ("pydoc_lm", {"corpus_fraction": 0.05, "width": 32, "layers": 1, "max_epochs": 2}, "perplexity"),
        ("diabetes", {"hidden": 16, "max_epochs": 4}, "mse"),
    ],
)
def test_min_metric_tasks_sweep_to_a_verdict(task: str, task_args: dict, metric: str, tmp_path: Path) -> None:
    result = optsweep.Study(
        task,
        task_args=task_args,
        optimizers=["adam", "sgd"],
        num_samples=2,
        seeds=2,
        confirm_seeds=0,  # the search's table: 2 x 2 trials per optimizer
        scheduler="fifo",
        name=task,
    ).run(str(tmp_path))
    assert analysis.target_of(result.experiment_dir) == optsweep.Target(metric, "min")
    trials = result.trials
    assert len(trials) == 8 and set(trials["optimizer"]) == {"adam", "sgd"}
    finished = trials[trials["status"] == "completed"]
    assert len(finished) >= 4, trials[["optimizer", "status", "lr"]].to_string()
    assert (
        finished[f"best_val_{metric}"] <= finished[f"final_val_{metric}"] + 1e-12
    ).all()  # min: best is lowest
    assert f"test_{metric}_mean" in result.summary.columns
    assert (
        " beats " in result.verdict
        or "no significant difference" in result.verdict
        or "cannot" in result.verdict
    )
    best = result.summary.set_index("optimizer")["mean"]
    lowest = finished.groupby("optimizer")[f"best_val_{metric}"].min()
    assert (best >= lowest - 1e-12).all()  # a mean over seeds can't beat the single best seed
    report = (result.report_dir / "report.md").read_text()
    assert metric in report and "lower is better" in report


def _write_idx(path: Path, array: np.ndarray) -> None:
    import struct

    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("task", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_format_data_from_disk_sweeps(task: str, folder: str, tmp_path: Path) -> None:
    """The torchvision tasks read real MNIST-format files (here generated: no download is possible).
    CIFAR-10's loader checks its files' md5 sums, so it cannot be fed generated files."""
    raw = tmp_path / "data" / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, size=(5200, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(5200) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, size=(50, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(50) % 10)
    result = optsweep.Study(
        task,
        optimizers=["adam"],
        num_samples=1,
        seeds=1,
        confirm_seeds=0,
        max_epochs=1,
        scheduler="fifo",
        name=task,
    ).run(str(tmp_path / "results"), data_dir=str(tmp_path / "data"))
    assert list(result.trials["status"]) == ["completed"]
    assert result.trials["task"].tolist() == [task]


@pytest.mark.timeout(300)
def test_the_wine_example_runs_through_the_python_api(tmp_path: Path) -> None:
    task = tasks.build_task(f"{REPO / 'examples' / 'wine_classifier.py'}:build_task", {"max_epochs": 3})
    result = optsweep.Study(
        task, optimizers=["adam", "sgd"], num_samples=2, seeds=1, confirm_seeds=0, name="wine"
    ).run(str(tmp_path))
    assert set(result.trials["optimizer"]) == {"adam", "sgd"}
    assert result.trials["status"].isin(["completed", "stopped_early", "diverged"]).all()
    assert (tmp_path / "wine" / "report" / "report.md").exists()


@pytest.mark.timeout(400)
def test_the_lion_study_file_runs_from_outside_the_repo(tmp_path: Path) -> None:
    """As a user runs it: `python -m sweeps <file> --smoke` in a directory of their own."""
    study_file = REPO / "examples" / "lion_vs_adam.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "optsweep.sweeps", str(study_file), "--smoke", "--seeds", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    trials = pd.read_csv(tmp_path / "optsweep_results" / "lion_vs_adam-smoke" / "report" / "trials.csv")
    assert set(trials["optimizer"]) == {"adam", "lion"}
    lion = trials[trials["optimizer"] == "lion"]
    assert lion["lr"].between(1e-5, 1e-2).all()  # Lion's own declared space
    assert "Report:" in done.stdout


class _FailingLoss:
    """A user's loss that breaks on the second training batch (the early check passes)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, outputs, targets):
        self.calls += 1
        if self.calls > 3:
            raise ArithmeticError("my_custom_loss_is_broken")
        return nn.functional.cross_entropy(outputs, targets)


@pytest.mark.timeout(300)
def test_a_failing_user_training_step_is_reported_per_trial_with_its_traceback(tmp_path: Path) -> None:
    digits = tasks.build_task("digits")
    task = tasks.Task(name="broken", model=digits.model, data=digits.data, loss=_FailingLoss(), max_epochs=2)
    result = optsweep.Study(
        task, optimizers=["adam"], num_samples=1, seeds=1, confirm_seeds=0, scheduler="fifo", name="broken"
    ).run(str(tmp_path))
    assert list(result.trials["status"]) == ["error"]
    assert "my_custom_loss_is_broken" in str(result.trials["error_message"].iloc[0])
    trial_dir = Path(result.experiment_dir) / result.trials["trial_dir"].iloc[0]
    logged = "".join(p.read_text(errors="replace") for p in trial_dir.glob("error.txt"))
    assert "test_user_code_sweeps.py" in logged and "in __call__" in logged  # the user's own frame
    assert "ArithmeticError: my_custom_loss_is_broken" in logged
