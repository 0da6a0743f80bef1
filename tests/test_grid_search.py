"""Grid search (`search="grid"`): every combination of each optimizer's choices, crossed with the seeds,
one trial each; a range in the space, or grids of different sizes (unequal budgets), is one line."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import optsweep
from optsweep.sweeps.search import spaces

LRS = (1e-3, 1e-2, 1e-1)


def test_the_grid_is_every_combination_in_a_fixed_order() -> None:
    declared = {"lr": optsweep.Choice(LRS), "momentum": {"choice": [0.0, 0.9]}, "nesterov": False}
    space = spaces.SearchSpace("sgd", spaces.parse_space(declared))
    expected = [{"lr": lr, "momentum": m, "nesterov": False} for lr, m in itertools.product(LRS, (0.0, 0.9))]
    assert space.grid() == expected


def test_a_range_cannot_be_gridded() -> None:
    space = spaces.SearchSpace("adam", {"lr": optsweep.LogUniform(1e-4, 1e-1)})
    with pytest.raises(ValueError, match=r"^a grid search needs every hyperparameter .* adam's lr is"):
        space.grid()


def test_a_grid_study_plans_one_configuration_per_cell(tmp_path: Path) -> None:
    plan = optsweep.Study(
        optimizers=["sgd", "adam"],
        search_spaces={"sgd": {"lr": optsweep.Choice(LRS)}, "adam": {"lr": optsweep.Choice(LRS)}},
        schedules=["constant", "cosine"],
        search="grid",
        seeds=2,
    ).plan(str(tmp_path))
    assert plan.args.num_samples == len(LRS) * 2  # lr x schedule
    assert plan.args.trials_per_optimizer == len(LRS) * 2 * 2


def test_grids_of_different_sizes_are_refused(tmp_path: Path) -> None:
    study = optsweep.Study(
        optimizers=["sgd", "adam"],
        search_spaces={"sgd": {"lr": optsweep.Choice(LRS)}, "adam": {"lr": optsweep.Choice(LRS[:2])}},
        schedules=["constant"],
        search="grid",
    )
    with pytest.raises(ValueError, match=r"grids differ in size \(sgd 3, adam 2\)"):
        study.plan(str(tmp_path))


def test_a_built_in_space_with_ranges_is_refused_before_ray(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a grid search needs every hyperparameter"):
        optsweep.Study(optimizers=["sgd"], search="grid").plan(str(tmp_path))


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.usefixtures("ray_session")
def test_a_grid_study_trains_each_cell_once_per_seed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = optsweep.Study(
        "digits",
        task_args={"max_epochs": 2},
        optimizers=["sgd", "adam"],
        search_spaces={"sgd": {"lr": optsweep.Choice(LRS)}, "adam": {"lr": optsweep.Choice(LRS)}},
        schedules=["constant"],
        search="grid",
        scheduler="fifo",
        seeds=2,
        confirm_seeds=0,
        name="grid",
    ).run(str(tmp_path))
    trials = result.trials
    cells = trials.groupby(["optimizer", "lr"])["seed"].apply(sorted)
    assert {(o, lr) for o, lr in cells.index} == {(o, lr) for o in ("sgd", "adam") for lr in LRS}
    assert all(seeds == [0, 1] for seeds in cells), cells
    printed = capsys.readouterr().out  # the Python API says what the command line says
    assert "Done in " in printed and f"Report: {result.report_dir / 'report.md'}" in printed
