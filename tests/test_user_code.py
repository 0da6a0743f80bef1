"""A user's own task and optimizer: bad user code is one line before Ray starts; study files; the Python
API's checks (issue 10). The end-to-end sweeps of user code are in test_user_code_sweeps.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import optsweep
from optsweep.sweeps import __main__ as sweeps_main
from optsweep.sweeps import adam_vs_sgd, cli, study_file
from optsweep.sweeps.runner import study
from optsweep.sweeps.runner.plan import prepare
from optsweep.trainables import tasks

REPO = Path(__file__).resolve().parents[1]

GOOD_TASK = """
import torch
from torch import nn
from torch.utils.data import TensorDataset
import optsweep

def data():
    x = torch.randn(64, 4)
    y = (x.sum(1) > 0).long()
    return optsweep.TaskData(TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:]))

def build_task(hidden: int = 8, **_ignored):
    return optsweep.Task(name="toy", model=lambda: nn.Sequential(nn.Linear(4, hidden), nn.ReLU(),
                         nn.Linear(hidden, 2)), data=data, max_epochs=2)

def wrong_output():
    return optsweep.Task(name="wrong", model=lambda: nn.Linear(4, 3), data=data,
                         loss=nn.functional.mse_loss, metrics={"acc": optsweep.ACCURACY})

def wrong_input():
    return optsweep.Task(name="shape", model=lambda: nn.Linear(7, 2), data=data)

def raises():
    raise RuntimeError("the data server is down")

def not_a_task():
    return 42

def missing_metric():
    return optsweep.Task(name="x", model=lambda: nn.Linear(4, 2), data=data,
                         target=optsweep.Target("f1", "max"))

class NoSpace(torch.optim.SGD):
    pass

class WithSpace(torch.optim.SGD):
    search_space = {"lr": {"log_uniform": [1e-3, 1e-1]}, "betas": {"choice": [1, 2]}}
"""


@pytest.fixture
def ray_must_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sweep reached Ray before rejecting its input")

    monkeypatch.setattr(study, "_connect_ray", started)


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_code" / "my_task.py"
    path.parent.mkdir()
    path.write_text(GOOD_TASK)
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.usefixtures("ray_must_not_start")
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--task", "no_such_pkg.tasks:build"], "cannot import module 'no_such_pkg.tasks'"),
        (["--task", "{file}:nope"], "has no attribute 'nope'"),
        (["--task", "{file}"], "unknown task '{file}' in --task; built-in: digits"),
        (["--task", "{file}:"], "is not an import path"),
        (["--task", "{dir}/absent.py:build_task"], "no such file"),
        (["--task", "{file}:raises"], "its factory raised RuntimeError: the data server is down"),
        (["--task", "{file}:not_a_task"], "its factory returned int, not an optsweep Task"),
        (["--task", "{file}:wrong_output"], "does not fit the loss with targets of shape (2,)"),
        (["--task", "{file}:wrong_input"], "the model fails on a batch of inputs of shape (2, 4)"),
        (["--task", "{file}:missing_metric"], "does not report the target metric 'f1'; it reports: loss"),
        (["--task", "{file}:wrong_output", "--task-arg", "width=3"], "takes no argument 'width'"),
        (["--task", "diabetes", "--task-arg", "hiden=3"], "takes no argument 'hiden'"),
        (["--task-arg", "oops"], "--task-arg 'oops' is invalid: write KEY=VALUE"),
        (["--optimizers", "adam,{file}:NoSpace"], "optimizer '{file}:NoSpace' has no search space: declare"),
        (["--optimizers", "{file}:WithSpace"], "names betas, which WithSpace does not take; it takes:"),
        (["--optimizers", "{file}:data"], "is not a torch.optim.Optimizer subclass"),
        (["--optimizers", "adam,Adam"], "--optimizers lists adam more than once"),
    ],
)
def test_bad_user_code_is_one_line_before_ray_starts(
    flags: list[str],
    message: str,
    user_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = {"file": str(user_file), "dir": str(user_file.parent)}
    argv = [flag.format(**values) for flag in flags]
    code = adam_vs_sgd.main([*argv, "--smoke", "--storage-path", str(tmp_path / "results")])
    assert message.format(**values) in _one_line_error(capsys, code)


def test_a_user_task_and_optimizer_resolve_by_file_and_import_path(
    user_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(user_file.parent))
    argv = ["--task", "my_task:build_task", "--task-arg", "hidden=16"]
    argv += ["--optimizers", "adam,my_task:WithSpace"]
    args = cli.parse([*argv, "--storage-path", str(tmp_path)], "prog", "", adam_vs_sgd.DEFAULTS)
    assert args.labels == ("adam", "withspace")
    with pytest.raises(ValueError, match="names betas, which WithSpace does not take"):
        prepare(args)
    args = cli.parse(
        ["--task", f"{user_file}:build_task", "--optimizers", "sgd", "--storage-path", str(tmp_path)],
        "prog",
        "",
        adam_vs_sgd.DEFAULTS,
    )
    plan = prepare(args)
    assert plan.task.name == "toy" and plan.args.max_epochs == 2  # the task's own budget
    record = plan.identity()
    assert record["target"] == {"metric": "acc", "mode": "max"}
    assert record["task_description"]["metrics"] == ["loss", "acc"]
    assert record["optimizers"]["sgd"]["space"]["lr"] == {"log_uniform": [1e-3, 1.0]}


def test_study_file_with_flag_overrides(user_file: Path, tmp_path: Path) -> None:
    file = user_file.parent / "study.yaml"
    file.write_text(
        textwrap.dedent(
            """
            task: my_task.py:build_task       # beside this file
            task_args: {hidden: 12}
            optimizers: [adam, my_task.py:NoSpace]
            search_spaces:
              nospace:
                lr: {log_uniform: [1.0e-3, 1.0e-1]}
                momentum: {uniform: [0.0, 0.9]}
                nesterov: false
            num_samples: 3
            seeds: 2
            scheduler: fifo
            """
        )
    )
    defaults = study_file.load(file)
    assert defaults.name == "study" and defaults.task == f"{user_file}:build_task"
    args = cli.parse(["--seeds", "1", "--storage-path", str(tmp_path)], "prog", "", defaults)
    assert (args.seeds, args.num_samples, args.scheduler, args.task_args) == (1, 3, "fifo", {"hidden": 12})
    plan = prepare(args)
    assert [c.label for c in plan.contenders] == ["adam", "nospace"]
    space = plan.identity()["optimizers"]["nospace"]["space"]
    assert space == {
        "lr": {"log_uniform": [1e-3, 1e-1]},
        "momentum": {"uniform": [0.0, 0.9]},
        "nesterov": False,
    }


@pytest.mark.usefixtures("ray_must_not_start")
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("num_samples: [3", "is not valid YAML (line 2): expected ','"),
        ("- a", "must be a mapping of settings, not a list"),
        ("num_sample: 3", "unknown setting(s) num_sample in {file}; valid: name, optimizers"),
        ("seeds: three", "seeds 'three' is invalid: it must be an integer >= 1, at most 10000"),
        ("optimizers: 7", "optimizers 7 is invalid: it must be a non-empty list of sgd"),
        ("search_spaces: {adam: {lr: {gaussian: [0, 1]}}}", "unknown distribution 'gaussian'"),
        ("search_spaces: {adam: {lr: {log_uniform: [0, 1]}}}", "log_uniform [0, 1] is invalid"),
    ],
)
def test_bad_study_files_are_one_line(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(content + "\n")
    code = sweeps_main.main([str(file), "--storage-path", str(tmp_path / "results")])
    error = _one_line_error(capsys, code)
    assert message.format(file=file) in error
    assert str(file) in error  # the file is named: the user knows where to look


def test_the_python_api_checks_its_arguments_before_ray(tmp_path: Path) -> None:
    spec = f"{REPO / 'examples' / 'wine_classifier.py'}:build_task"
    task = tasks.build_task(spec, {"hidden": 8, "max_epochs": 2})
    plan = optsweep.Study(task, optimizers=["adam", torch_sgd_subclass()], search_spaces={
        "plainsgd": {"lr": optsweep.LogUniform(1e-3, 1e-1)}
    }).plan(str(tmp_path))
    assert [c.label for c in plan.contenders] == ["adam", "plainsgd"]
    assert plan.contenders[1].cls is not None and plan.task_is_named is False
    assert plan.identity()["task_args"] == {}
    with pytest.raises(ValueError, match="^scheduler 'hyperband' is invalid: it must be asha or fifo$"):
        optsweep.Study(task, scheduler="hyperband")
    with pytest.raises(ValueError, match="^unknown setting.s. gpus; valid: name, "):
        optsweep.Study(task).plan(str(tmp_path), gpus=1)
    with pytest.raises(ValueError, match="task_args are for a task given by name"):
        optsweep.Study(task, task_args={"hidden": 3})


def torch_sgd_subclass() -> type:
    import torch

    class PlainSGD(torch.optim.SGD):
        pass

    return PlainSGD
