"""The building blocks of benchmarks/sweep_overhead.py, fast: no Ray cluster, one one-epoch trial."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from optsweep.trainables import checkpoints

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_overhead.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sweep_overhead", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look up their module
    spec.loader.exec_module(module)
    return module


def test_plain_configs_are_the_study_trials(bench: ModuleType, tmp_path: Path) -> None:
    from optsweep.sweeps import spaces, study

    args = bench.study_args(str(tmp_path), "t", 3, 2, "cnn", 1)
    space = spaces.space_for(
        bench.OPTIMIZER, lr_range=args.lr_range(bench.OPTIMIZER), schedules=args.schedules
    )
    first_seed = [t for t in study.random_search_trials(space, args) if t["seed"] == 0]
    expected = [{"optimizer": bench.OPTIMIZER, **t, "settings": args.settings()} for t in first_seed]
    assert bench.trial_configs(args) == expected
    assert len({c["lr"] for c in expected}) == 3


def test_plain_trial_times_its_checkpoints(bench: ModuleType, tmp_path: Path) -> None:
    save = checkpoints.save
    config = bench.trial_configs(bench.study_args(str(tmp_path), "t", 1, 1, "mlp", 1))[0]
    timing = bench.plain_trial(config)
    assert checkpoints.save is save  # the timing hook is undone
    assert 0 < timing.save_s < timing.compute_s
    assert 0 < timing.copy_s < timing.compute_s
    assert timing.val_acc > 0.1  # chance is 0.1


def test_process_roles(bench: ModuleType) -> None:
    assert bench._role(["ray::ImplicitFunc.train"]) == "Tune trial processes"
    assert bench._role(["ray::IDLE"]) == "idle workers"
    assert bench._role(["ray::RayTrainWorker.__init__"]) == "ray::RayTrainWorker"
    assert bench._role(["/venv/lib/ray/core/src/ray/raylet/raylet", "--node_id=x"]) == "raylet"
    assert bench._role(["/venv/bin/python", "-u", "/venv/lib/ray/_private/log_monitor.py"]) == (
        "other Ray daemons"
    )


def _tune_run(bench: ModuleType, ray_init_s: float, wall_s: float) -> object:
    return bench.TuneRun(ray_init_s, 0.0, wall_s, [1.0], {}, [], {"driver": 1.0, "Tune trial processes": 3.0})


def test_each_tune_run_is_compared_with_the_plain_runs_around_it(bench: ModuleType) -> None:
    plain = [bench.PlainRun(0.0, wall, cpu, []) for wall, cpu in ((10.0, 4.0), (12.0, 4.0), (14.0, 2.0))]
    m = bench.Measurements(plain, [_tune_run(bench, 1.0, 12.0), _tune_run(bench, 2.0, 13.0)])
    assert m.baseline_s(0) == 11.0 and m.baseline_s(1) == 13.0
    assert m.ratio == pytest.approx((13.0 + 15.0) / (11.0 + 13.0))
    assert m.cpu_ratio == pytest.approx(8.0 / (4.0 + 3.0))
    assert len(bench.describe_load(m, cores=2)) == 1  # loads of 0: no warning


def test_headline_and_quick_flags(bench: ModuleType) -> None:
    assert bench.ratio_line("", 1.234, 8) == "sweep overhead: tune/plain = 1.23x (8 trials)"
    opts = bench.parse_args(["--quick", "--trials", "3"])
    assert (opts.trials, opts.epochs, opts.repeats) == (3, bench.QUICK["epochs"], 1)
    with pytest.raises(SystemExit):
        bench.parse_args(["--trials", "0"])
