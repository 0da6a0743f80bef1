"""What optsweep's entry points import: every Tune trial process (and every confirmation stage's new one)
pays for its imports, seconds each on a small machine, and so does every `--help`. The trackers (MLflow,
W&B, TensorBoard), torchvision (which imports torch's compiler, torch._dynamo), scikit-learn and
torch._dynamo itself are imported only where used. Each check runs a fresh process with `-X importtime`
and reads the modules it imported; no wall-clock figure is asserted (benchmarks/startup.py prints them).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY_AND_OPTIONAL = ("torchvision", "sklearn", "torch._dynamo", "mlflow", "wandb", "matplotlib")
TRACKERS_AND_DATA = ("mlflow", "wandb", "tensorboardX", "tensorboard", "torchvision", "sklearn")
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$")


def imported_by(argv: list[str], cwd: Path) -> set[str]:
    """Every module a fresh `python -X importtime ARGV` imported (its exit status must be 0)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], cwd=cwd, capture_output=True, text=True, timeout=170
    )
    modules = {m.group(1) for m in map(IMPORT_LINE.match, done.stderr.splitlines()) if m}
    program_errors = [line for line in done.stderr.splitlines() if not IMPORT_LINE.match(line)]
    assert done.returncode == 0, "\n".join(program_errors[-20:])
    return modules


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of `names` (packages) were imported, themselves or any of their submodules."""
    return [name for name in names if any(m == name or m.startswith(name + ".") for m in modules)]


@pytest.mark.timeout(180)
def test_a_trial_process_imports_no_heavy_optional_module(tmp_path: Path) -> None:
    modules = imported_by(
        ["-c", "import optsweep.trainables.trial, optsweep.trainables.fused_trial"], tmp_path
    )
    assert "optsweep.trainables.fused" in modules  # the probe sees what the trial imports
    assert loaded(modules, HEAVY_AND_OPTIONAL) == []


HELP_COMMANDS = [[str(REPO / "sweeps" / "adam_vs_sgd.py"), "--help"], ["-m", "optsweep", "--help"]]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("argv", HELP_COMMANDS, ids=["adam_vs_sgd.py --help", "optsweep --help"])
def test_help_imports_no_tracker_torchvision_or_sklearn(argv: list[str], tmp_path: Path) -> None:
    modules = imported_by(argv, tmp_path)
    assert "optsweep" in modules
    assert loaded(modules, TRACKERS_AND_DATA) == []


@pytest.mark.timeout(180)
def test_the_task_type_and_the_names_the_command_line_lists_import_no_torch(tmp_path: Path) -> None:
    """`optsweep.Task` and the built-in tasks', models' and datasets' names cost no torch import (a light
    `--help` needs them); torch comes with building a task."""
    probe = (
        "import optsweep; optsweep.Task, optsweep.TaskData, optsweep.ACCURACY; "
        "from optsweep.trainables import builtin_tasks, data, models, tasks; "
        "builtin_tasks.names(), data.dataset_names(), models.model_names()"
    )
    modules = imported_by(["-c", probe], tmp_path)
    assert "optsweep.trainables.task_types" in modules
    assert loaded(modules, ("torch", "numpy", *TRACKERS_AND_DATA, "ray")) == []


@pytest.mark.timeout(180)
def test_a_task_built_by_name_brings_torch_but_no_tracker(tmp_path: Path) -> None:
    probe = (
        "from optsweep.trainables import tasks; "
        "task = tasks.build_task('pydoc_lm', {'layers': 1}); task.model(); "
        "assert tasks.build_task('digits').loss.__name__ == 'cross_entropy'"
    )
    modules = imported_by(["-c", probe], tmp_path)
    assert "optsweep.trainables.language_model" in modules and "torch" in modules
    assert loaded(modules, TRACKERS_AND_DATA) == []


@pytest.mark.timeout(180)
def test_tracking_imports_no_backend_until_a_study_logs(tmp_path: Path) -> None:
    modules = imported_by(
        ["-c", "from optsweep.sweeps.monitoring import tracking; tracking.for_study"], tmp_path
    )
    assert "optsweep.sweeps.monitoring.tracking" in modules
    assert loaded(modules, ("ray", "optsweep.sweeps.monitoring.tracking_callbacks", *TRACKERS_AND_DATA)) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_startup_benchmark_quick_prints_every_entry_point_against_torch(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "startup.py"), "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert re.search(r"load average \(1, 5, 15 min\) before [\d.]+ [\d.]+ [\d.]+, after", lines[0]), lines[0]
    rows = {}
    for line in lines[2:]:
        row = re.fullmatch(r"\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line)
        assert row, line
        rows[row.group(1)] = tuple(float(x) for x in row.groups()[1:])
    expected = {
        "import torch",
        "python sweeps/adam_vs_sgd.py --help",
        "python -m optsweep --help",
        "import optsweep; optsweep.Task",
        "import optsweep.trainables.fused_trial",
        "from optsweep.sweeps.runner import study",
    }
    assert set(rows) == expected
    assert rows["import torch"][2] == 1.0
    for median, minimum, _ in rows.values():
        assert median == minimum > 0  # one round: the median is the only figure
