"""The study spec under its three doors (issue 21): one table of bad values goes through the Python API,
a study file and the command line; each is refused in one line that names the setting as that door spells
it, before Ray starts. Also: one set of defaults, the study file every study writes (study.yaml) and the
`optsweep` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

import optsweep
from optsweep import console
from optsweep.analysis.html_report import rerun_command
from optsweep.errors import OptsweepError
from optsweep.sweeps import spec, study_file
from optsweep.sweeps.record import reproduce
from optsweep.vocabulary import STUDY_YAML

REPO = Path(__file__).resolve().parents[1]

# (setting, bad value, the flag's text or None where no flag can say it, what the message says)
BAD_VALUES: list[tuple[str, Any, str | None, str]] = [
    ("num_samples", 0, "0", "is invalid: it must be an integer >= 1"),
    ("num_samples", "3", None, "is invalid: it must be an integer >= 1"),
    ("seeds", 10001, "10001", "at most 10000"),
    ("confirm_seeds", -1, "-1", "is invalid: it must be an integer >= 0"),
    ("max_epochs", 1.5, None, "is invalid: it must be an integer >= 1"),
    ("fuse", 2.5, None, "is invalid: it must be an integer >= 0"),
    ("fuse", True, None, "is invalid: it must be an integer >= 0"),
    ("max_concurrent", 0, "0", "is invalid: it must be an integer >= 1"),
    ("cpus_per_worker", 0, "0", "is invalid: it must be a finite number > 0"),
    ("cpus_per_worker", "1", None, "is invalid: it must be a finite number > 0"),
    ("scheduler", "foo", "foo", "is invalid: it must be asha or fifo"),
    ("search", "optuno", "optuno", "is invalid: it must be random, grid or optuna"),
    ("mode", "ps", "ps", "is invalid: it must be sync, zero1, async-ps"),
    ("log_to", ["tensorbord"], "tensorbord", "unknown tracking backend 'tensorbord' in"),
    ("log_to", "tensorboard", None, "is invalid: it must be a list of tensorboard"),
    ("trust_storage", "no", None, "is invalid: it must be true or false"),
    ("optimizers", ["adma"], "adma", "unknown optimizer 'adma' in"),
    ("schedules", ["cosine", "linear"], "cosine,linear", "unknown schedule 'linear' in"),
    ("name", "a/b", "a/b", "is invalid: it must be letters, digits"),
    ("lr_min", -1, "-1", "is invalid: it must be a finite number > 0"),
    ("search_spaces", {"adma": {"lr": 0.1}}, None, "has a space for 'adma', which is none of the optimizers"),
    ("search_spaces", {"Adam": {"lr": 0.1}}, None, "(labels are lowercase: adam)"),
    ("task", "mnsit", "mnsit", "unknown task 'mnsit' in"),
]
IDS = [f"{setting}={value!r}" for setting, value, _, _ in BAD_VALUES]


@pytest.fixture
def ray_must_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the study reached Ray before refusing its input")

    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


def _one_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.usefixtures("ray_must_not_start")
@pytest.mark.parametrize(("setting", "value", "flag_text", "says"), BAD_VALUES, ids=IDS)
def test_the_python_door(setting: str, value: Any, flag_text: str | None, says: str, tmp_path: Path) -> None:
    with pytest.raises(OptsweepError) as refused:
        optsweep.Study(**{setting: value}).run(str(tmp_path))
    message = str(refused.value)
    assert says in message and "\n" not in message
    assert f"--{setting.replace('_', '-')}" not in message  # named as Python names it
    assert setting in message
    assert isinstance(refused.value, ValueError)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.usefixtures("ray_must_not_start")
@pytest.mark.parametrize(("setting", "value", "flag_text", "says"), BAD_VALUES, ids=IDS)
def test_the_study_file_door(
    setting: str,
    value: Any,
    flag_text: str | None,
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    if setting == "log_to" and isinstance(value, str):
        value = 7  # a file's string is a comma-separated list; a number is the file's type mistake
        says = "is invalid: it must be a list of tensorboard"
    file = tmp_path / "study.yaml"
    file.write_text(yaml.safe_dump({setting: value}))
    err = _one_line(capsys, console.main(["run", str(file), "--storage-path", str(tmp_path / "out")]))
    assert says in err and setting in err and str(file) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("ray_must_not_start")
@pytest.mark.parametrize(("setting", "value", "flag_text", "says"), BAD_VALUES, ids=IDS)
def test_the_command_line_door(
    setting: str, value: Any, flag_text: str | None, says: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if flag_text is None:
        pytest.skip(f"no flag can give {setting}={value!r} (the flag's type already refuses it or has none)")
    flag = f"--{setting.replace('_', '-')}"
    err = _one_line(capsys, console.main(["run", flag, flag_text, "--storage-path", str(tmp_path / "out")]))
    assert says in err and flag in err
    assert not (tmp_path / "out").exists()


def test_every_door_has_the_same_defaults(tmp_path: Path) -> None:
    file = tmp_path / "empty.yaml"
    file.write_text("")
    from_file = study_file.load(file)
    from_python = optsweep.Study().spec
    from_flags = spec.build({})
    for built in (from_file, from_python, from_flags):
        assert (built.num_samples, built.seeds, built.confirm_seeds) == (24, 3, 10)
        assert built.optimizers == ("sgd", "adam", "adamw") and built.task == "digits"
    assert from_file.name == "empty" and from_python.name == "study"


def test_a_flag_overrides_the_file_and_a_cross_setting_error_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    file = tmp_path / "s.yaml"
    file.write_text("lr_min: 0.5\n")
    code = console.main(["run", str(file), "--lr-max", "0.1", "--storage-path", str(tmp_path / "out")])
    err = _one_line(capsys, code)
    assert "--lr-min 0.5 is greater than --lr-max 0.1" in err


def test_relative_paths_in_a_study_file_are_the_files(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    file = tmp_path / "s.yaml"
    file.write_text(
        "task: code/my_task.py:build\npython_path: [code]\noptimizers: [adam, code/opt.py:Lion]\n"
    )
    loaded = study_file.load(file)
    assert loaded.task == f"{tmp_path / 'code' / 'my_task.py'}:build"
    assert loaded.python_path == (str(tmp_path / "code"),)
    assert loaded.optimizers == ("adam", f"{tmp_path / 'code' / 'opt.py'}:Lion")


def test_a_task_object_or_a_script_class_gets_no_study_file_and_says_why(tmp_path: Path) -> None:
    plan = optsweep.Study(optimizers=["adam"], num_samples=2).plan(str(tmp_path))
    values, why = reproduce.study_file(plan.args, plan.task, plan.contenders, task_is_named=False)
    assert values is None and "Task object" in why
    values, why = reproduce.study_file(plan.args, plan.task, plan.contenders, task_is_named=True)
    assert values is not None and why == ""
    assert values["num_samples"] == 2 and "trust_storage" not in values and "address" not in values


def test_plan_writes_nothing(tmp_path: Path) -> None:
    optsweep.Study(num_samples=2).plan(str(tmp_path / "results"))
    assert not (tmp_path / "results").exists()


def test_the_command_refuses_an_unknown_subcommand(capsys: pytest.CaptureFixture) -> None:
    err = _one_line(capsys, console.main(["frobnicate"]))
    assert "unknown command 'frobnicate'" in err


def test_optsweep_report_writes_a_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from analysis_fixtures import standard_experiment

    experiment = standard_experiment(tmp_path / "exp")
    assert console.main(["report", str(experiment)]) == 0
    assert (experiment / "report" / "report.md").exists()
    assert capsys.readouterr().out.strip().endswith("report.md")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_reproduce_command_reruns_the_study_from_an_empty_directory(tmp_path: Path) -> None:
    """A study whose task is a local module by import path (not installed, not a file path), run from the
    user's directory; its report's command, run from another empty directory, finds the same study (any
    difference in its settings would be refused) and resumes it."""
    user_dir, elsewhere = tmp_path / "user", tmp_path / "elsewhere"
    user_dir.mkdir()
    elsewhere.mkdir()
    shutil.copy(REPO / "examples" / "wine_classifier.py", user_dir / "wine_task.py")
    (user_dir / "wine.yaml").write_text(
        "task: wine_task:build_task\ntask_args: {hidden: 8, max_epochs: 2}\noptimizers: [adam, sgd]\n"
        "search_spaces: {sgd: {lr: {log_uniform: [0.01, 0.1]}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    first = subprocess.run(
        [sys.executable, "-m", "optsweep", "run", "wine.yaml", "--smoke", "--storage-path", "results"],
        cwd=user_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    experiment = user_dir / "results" / "wine-smoke"
    written = yaml.safe_load((experiment / STUDY_YAML).read_text())
    assert written["python_path"] == [str(user_dir)] and written["task"] == "wine_task:build_task"
    assert written["search_spaces"] == {"sgd": {"lr": {"log_uniform": [0.01, 0.1]}}}
    command = rerun_command(experiment)
    assert command == ["optsweep", "run", str(experiment / STUDY_YAML)]
    again = subprocess.run(
        [sys.executable, "-m", "optsweep", *command[1:]],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "holds a study with other settings" not in again.stderr
    assert "Report:" in again.stdout and list(elsewhere.iterdir()) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_session")
def test_a_run_refused_before_any_trial_leaves_no_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64"):  # no node has 64 CPUs for one trial
        optsweep.Study(num_samples=2, seeds=1, cpus_per_worker=64).run(str(tmp_path / "results"))
    assert not (tmp_path / "results").exists()


def test_a_users_modules_named_like_optsweeps_layers_change_nothing(tmp_path: Path) -> None:
    for shadow in ("optimizers", "analysis", "sweeps", "trainables"):
        (tmp_path / f"{shadow}.py").write_text(
            f"raise ImportError('the user\\'s own {shadow}.py was imported')\n"
        )
    program = (
        "import optsweep\n"
        "from optsweep import analysis, optimizers\n"
        "plan = optsweep.Study(num_samples=2, seeds=1).plan('results')\n"
        "print(len(plan.contenders), optimizers.names()[0], analysis.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=170
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "sgd", "optsweep.analysis"]


def test_python_m_sweeps_help_names_the_installed_command(capsys: pytest.CaptureFixture) -> None:
    from optsweep.sweeps import __main__ as sweeps_main

    assert sweeps_main.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "optsweep run --help" in out and "sweeps/adam_vs_sgd.py" not in out
