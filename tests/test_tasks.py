"""trainables.tasks: building tasks by name, import path and file path; one-line errors for bad tasks;
Task validation; weight-decay parameter groups; metrics exact across batches."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import mean_absolute_error, mean_squared_error
from torch import nn
from torch.utils.data import TensorDataset

from optsweep.trainables import data, loop
from optsweep.trainables.tasks import (
    ACCURACY,
    MAE,
    MSE,
    PERPLEXITY,
    Metric,
    Task,
    TaskData,
    TaskError,
    build_task,
    check,
    param_groups,
    token_cross_entropy,
)
from optsweep.vocabulary import Target

USER_TASKS = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset

from optsweep.vocabulary import Target
from optsweep.trainables.tasks import MSE, Task, TaskData


def make(hidden=4, data_dir=None):
    """A regression task from outside optsweep."""
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    y = x.sum(dim=1)
    return Task(
        name=f"user-{hidden}-{data_dir}",
        model=lambda: nn.Sequential(nn.Linear(3, hidden), nn.Linear(hidden, 1), nn.Flatten(0)),
        data=lambda: TaskData(TensorDataset(x, y), TensorDataset(x, y)),
        loss=nn.functional.mse_loss,
        metrics={"mse": MSE},
        target=Target("mse", "min"),
    )


def raises():
    raise RuntimeError("boom in the factory")


def not_a_task():
    return 42


READY = make()
'''


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def _one_line_error(spec: str, args: dict[str, Any] | None = None, *, naming: str) -> str:
    with pytest.raises(TaskError) as error:
        build_task(spec, args)
    message = str(error.value)
    assert "\n" not in message
    assert naming in message
    return message


# ----------------------------------------------------------------------------------- build_task


def test_build_task_by_builtin_name() -> None:
    task = build_task("digits", {"model": "cnn", "max_epochs": 3})
    assert (task.name, task.max_epochs, task.target) == ("digits-cnn", 3, Target("acc", "max"))


def test_build_task_by_module_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "optsweep_test_user_tasks.py", USER_TASKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    task = build_task("optsweep_test_user_tasks:make", {"hidden": 7})
    assert task.name == "user-7-None"
    check(task)
    assert build_task("optsweep_test_user_tasks:READY").name == "user-4-None"  # a Task object itself


def test_build_task_by_file_path_passes_data_dir_to_factories_that_take_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "my_task.py", USER_TASKS)
    assert build_task(f"{path}:make", data_dir="/data").name == "user-4-/data"
    assert build_task(f"{path}:make", {"data_dir": "/mine"}, data_dir="/data").name == "user-4-/mine"
    check(build_task(f"{path}:make"))


def test_build_task_bad_specs_are_one_line_errors_naming_the_bad_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "user_tasks.py", USER_TASKS)
    _one_line_error("no_such_task", naming="'no_such_task'")
    _one_line_error("diabetes", {"hiden": 8}, naming="'hiden'")
    _one_line_error(f"{path}:raises", naming="RuntimeError: boom in the factory")
    _one_line_error(f"{path}:not_a_task", naming="returned int")
    _one_line_error("optsweep_no_such_module:make", naming="'optsweep_no_such_module'")
    _one_line_error(f"{path}:missing", naming="'missing'")
    _one_line_error(f"{tmp_path / 'absent.py'}:make", naming="absent.py")
    _one_line_error(f"{path}:READY", {"hidden": 3}, naming="hidden")
    _one_line_error(f"{path}:", naming=f"{path}:")
    broken = _write(tmp_path, "broken_tasks.py", "raise ImportError('a dependency is missing')\n")
    _one_line_error(f"{broken}:make", naming="a dependency is missing")


# ----------------------------------------------------------------------------------------- check


def _regression_task(**overrides: Any) -> Task:
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    y = x.sum(dim=1)
    fields: dict[str, Any] = {
        "name": "regression",
        "model": lambda: nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)),
        "data": lambda: TaskData(TensorDataset(x, y), TensorDataset(x, y), TensorDataset(x, y)),
        "loss": F.mse_loss,
        "metrics": {"mse": MSE, "mae": MAE},
        "target": Target("mse", "min"),
    }
    return Task(**(fields | overrides))


def _check_error(task: Task, naming: str) -> None:
    with pytest.raises(TaskError, match=naming) as error:
        check(task)
    assert "\n" not in str(error.value)


def test_check_accepts_a_task_that_fits_together() -> None:
    check(_regression_task())


def test_check_refuses_a_model_whose_output_does_not_fit_the_loss() -> None:
    # (B, 1) outputs against (B,) targets: mse_loss would broadcast them to (B, B) and train on nonsense.
    _check_error(_regression_task(model=lambda: nn.Linear(3, 1)), r"output \(shape \(2, 1\)\) does not fit")
    labels = (torch.arange(8) + 4) % 5  # the first label, 4, is no class of two logits
    classes = TensorDataset(torch.randn(8, 3), labels)
    two_logits = _regression_task(
        model=lambda: nn.Linear(3, 2),
        data=lambda: TaskData(classes, classes),
        loss=F.cross_entropy,
        metrics={"acc": ACCURACY},
        target=Target("acc", "max"),
    )
    _check_error(two_logits, "does not fit the loss")
    _check_error(
        _regression_task(model=lambda: nn.Linear(4, 1)), r"fails on a batch of inputs of shape \(2, 3\)"
    )


def test_check_refuses_a_loss_that_is_not_a_finite_differentiable_scalar() -> None:
    _check_error(_regression_task(loss=lambda o, t: (o - t) ** 2), "scalar")
    _check_error(_regression_task(loss=lambda o, t: (o - t).sum() * math.nan), "not finite")
    _check_error(_regression_task(loss=lambda o, t: torch.tensor(1.0)), "gradient")


def test_check_refuses_a_failing_metric() -> None:
    def three_values(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return outputs.reshape(3)

    _check_error(_regression_task(metrics={"mse": MSE, "odd": Metric(three_values)}), "metric 'odd'")


def test_check_refuses_data_that_are_not_input_target_pairs() -> None:
    x = torch.randn(4, 3)
    only_inputs = TensorDataset(x)
    _check_error(_regression_task(data=lambda: TaskData(only_inputs, only_inputs)), r"not \(inputs, target\)")
    _check_error(_regression_task(data=lambda: (x, x)), "not a TaskData")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_check_refuses_an_empty_split(split: str) -> None:
    full, empty = (
        TensorDataset(torch.randn(4, 3), torch.randn(4)),
        TensorDataset(torch.empty(0, 3), torch.empty(0)),
    )
    splits = {"train": full, "val": full, "test": full} | {split: empty}
    _check_error(_regression_task(data=lambda: TaskData(**splits)), f"the {split} split is empty")


def test_check_reports_factories_that_raise() -> None:
    def broken() -> nn.Module:
        raise RuntimeError("no weights")

    _check_error(_regression_task(model=broken), "building its model raised RuntimeError: no weights")
    _check_error(_regression_task(model=lambda: nn.Identity()), "no trainable parameters")


# ------------------------------------------------------------------------------ Task validation


@pytest.mark.parametrize(
    ("overrides", "naming"),
    [
        ({"target": Target("r2", "max")}, "does not report the target metric 'r2'"),
        ({"weight_decay": "biases"}, "weight_decay rule 'biases'"),
        ({"batch_size": 0}, "batch_size 0"),
        ({"max_epochs": True}, "max_epochs True"),
        ({"metrics": {"mse": MSE, "loss": MAE}}, "'loss' is reserved"),
        ({"metrics": {"mse": mean_squared_error}}, "metric 'mse' must be an optsweep Metric"),
        ({"target": "mse"}, "must be an optsweep Target"),
        ({"divergence_loss": 0.0}, "divergence_loss 0.0"),
        ({"name": " "}, "task name ' '"),
        ({"model": nn.Linear(3, 1).weight}, "model must be callable"),
    ],
)
def test_task_validation(overrides: dict[str, Any], naming: str) -> None:
    with pytest.raises(TaskError, match=naming):
        _regression_task(**overrides)


def test_task_may_target_its_loss_and_reports_the_loss_first() -> None:
    task = _regression_task(target=Target("loss", "min"))
    assert task.metric_names == ("loss", "mse", "mae")
    assert task.describe()["metrics"] == ["loss", "mse", "mae"]


# ---------------------------------------------------------------------------------- param_groups


def _mixed_model() -> nn.Module:
    model = nn.Sequential(
        nn.Embedding(10, 4), nn.Conv1d(4, 4, 3), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.LayerNorm(4)
    )
    model[3].bias.requires_grad_(False)  # frozen: in no group
    return model


def test_matrices_only_decays_exactly_the_parameters_with_two_or_more_dims() -> None:
    model = _mixed_model()
    decayed, plain = param_groups(model, "matrices_only")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [id(p) for p in decayed["params"]] == [id(p) for p in trainable if p.ndim >= 2]
    assert [id(p) for p in plain["params"]] == [id(p) for p in trainable if p.ndim < 2]
    assert len(decayed["params"]) == 3 and len(plain["params"]) == 5
    (everything,) = param_groups(model, "all")
    assert [id(p) for p in everything["params"]] == [id(p) for p in trainable]
    with pytest.raises(TaskError, match="'nope'"):
        param_groups(model, "nope")


def test_matrices_only_groups_take_the_optimizers_weight_decay_except_the_plain_group() -> None:
    model = _mixed_model()
    before = {id(p): p.detach().clone() for p in model.parameters()}
    optimizer = torch.optim.SGD(param_groups(model, "matrices_only"), lr=0.1, weight_decay=1.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p in model.parameters():
        if p.requires_grad and p.ndim >= 2:
            torch.testing.assert_close(p.detach(), 0.9 * before[id(p)])  # p - lr * wd * p
        else:
            torch.testing.assert_close(p.detach(), before[id(p)])


# --------------------------------------------------------------------------------------- metrics


def _evaluate(task: Task, dataset: TensorDataset, batch_size: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = task.model()
    loader = data.make_loader(dataset, batch_size, shuffle=False, seed=0)
    return loop.evaluate(model, loader, task, torch.device("cpu"), use_amp=False)


def _assert_same_across_batches(whole: dict[str, float], batched: dict[str, float]) -> None:
    """Metrics sum per-element values in float64: exact. The loss is a float32 mean per batch."""
    assert batched.keys() == whole.keys()
    for name in whole:
        assert batched[name] == pytest.approx(whole[name], rel=1e-6 if name == "loss" else 1e-12)


def test_language_model_metrics_are_exact_across_batches_and_match_a_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 7, (11, 5), generator=generator)
    targets = torch.randint(0, 7, (11, 5), generator=generator)
    dataset = TensorDataset(tokens, targets)
    task = Task(
        name="tokens",
        model=lambda: nn.Embedding(7, 7),
        data=lambda: TaskData(dataset, dataset),
        loss=token_cross_entropy,
        metrics={"perplexity": PERPLEXITY, "acc": ACCURACY},
        target=Target("perplexity", "min"),
    )
    whole, batched = _evaluate(task, dataset, 11), _evaluate(task, dataset, 3)
    _assert_same_across_batches(whole, batched)
    torch.manual_seed(0)
    with torch.no_grad():
        logits = task.model()(tokens)
    cross_entropy = float(F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1)))
    assert whole["loss"] == pytest.approx(cross_entropy, rel=1e-6)
    assert whole["perplexity"] == pytest.approx(math.exp(cross_entropy), rel=1e-6)
    assert whole["acc"] == pytest.approx(float((logits.argmax(-1) == targets).float().mean()))


def test_regression_metrics_are_exact_across_batches_and_match_scikit_learn() -> None:
    task = _regression_task()
    x = torch.randn(13, 3, generator=torch.Generator().manual_seed(1))
    y = torch.randn(13, generator=torch.Generator().manual_seed(2))
    dataset = TensorDataset(x, y)
    whole, batched = _evaluate(task, dataset, 13), _evaluate(task, dataset, 4)
    _assert_same_across_batches(whole, batched)
    torch.manual_seed(0)
    predicted = task.model()(x).detach().numpy()
    assert whole["mse"] == pytest.approx(mean_squared_error(y.numpy(), predicted), rel=1e-6)
    assert whole["mae"] == pytest.approx(mean_absolute_error(y.numpy(), predicted), rel=1e-6)
    assert whole["loss"] == pytest.approx(whole["mse"], rel=1e-6)


def test_perplexity_of_a_diverged_model_is_finite() -> None:
    assert math.isfinite(PERPLEXITY.report(1e6))
    assert PERPLEXITY.report(math.log(5.0)) == pytest.approx(5.0)
