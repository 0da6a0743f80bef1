"""benchmarks/sweep_overhead.py: its building blocks (no Ray), and its --quick mode end to end (the test
session's Ray; no timing asserted)."""

from __future__ import annotations

import importlib.util
import re
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
    planned = bench.study("t", 3, 2, "cnn")
    configs = bench.trial_configs(planned, str(tmp_path), 2)
    args = planned.plan(str(tmp_path), **bench.run_options(1, 2)).args
    assert [c["__configuration"] for c in configs] == [0, 1, 2]
    assert {(c["optimizer"], c["seed"]) for c in configs} == {(bench.OPTIMIZER, 0)}
    assert all(c["settings"] == args.settings() for c in configs)
    assert len({c["lr"] for c in configs}) == 3
    assert all(bench.LR_RANGE[0] <= c["lr"] <= bench.LR_RANGE[1] for c in configs)
    assert {c["schedule"] for c in configs} <= set(bench.SCHEDULES)


def test_plain_trial_times_its_checkpoints(bench: ModuleType, tmp_path: Path) -> None:
    save = checkpoints.save
    config = bench.trial_configs(bench.study("t", 1, 1, "mlp"), str(tmp_path), 1)[0]
    timing = bench.plain_trial(config)
    assert checkpoints.save is save  # the timing hook is undone
    assert 0 < timing.save_s < timing.compute_s
    assert 0 < timing.copy_s < timing.compute_s
    assert timing.val_acc > 0.1  # chance is 0.1


def test_process_roles(bench: ModuleType) -> None:
    assert bench.process_role(["ray::ImplicitFunc.train"]) == "Tune trial processes"
    assert bench.process_role(["ray::IDLE"]) == "idle workers"
    assert bench.process_role(["ray::RayTrainWorker.__init__"]) == "ray::RayTrainWorker"
    assert bench.process_role(["/venv/lib/ray/core/src/ray/raylet/raylet", "--node_id=x"]) == "raylet"
    assert bench.process_role(["/venv/bin/python", "-u", "/venv/lib/ray/_private/log_monitor.py"]) == (
        "other Ray daemons"
    )


def _tune_run(bench: ModuleType, ray_start_s: float, wall_s: float) -> object:
    return bench.TuneRun(ray_start_s, wall_s, [1.0], {}, {}, {"driver": 1.0, "Tune trial processes": 3.0})


def test_each_study_run_is_compared_with_the_plain_runs_around_it(bench: ModuleType) -> None:
    plain = [bench.PlainRun(0.0, wall, cpu, []) for wall, cpu in ((10.0, 4.0), (12.0, 4.0), (14.0, 2.0))]
    m = bench.Measurements(plain, [_tune_run(bench, 1.0, 13.0), _tune_run(bench, 2.0, 15.0)])
    assert m.baseline_s(0) == 11.0 and m.baseline_s(1) == 13.0
    assert m.ratio == pytest.approx((13.0 + 15.0) / (11.0 + 13.0))
    assert m.tune[1].without_ray_start_s == 13.0
    assert m.cpu_ratio == pytest.approx(8.0 / (4.0 + 3.0))
    assert len(bench.describe_load(m, cores=2)) == 1  # loads of 0: no warning


def test_study_output_lines_are_timed_as_they_arrive(bench: ModuleType) -> None:
    out = bench.TimedLines()
    out.write("Ray: started a local")
    assert out.first("Ray: ") is None  # not a whole line yet
    out.write(" Ray\nStarting adam\n[adam 1/1] 0/2")
    assert [line for _, line in out.lines] == ["Ray: started a local Ray", "Starting adam"]
    assert out.first("Ray: ") is not None and out.first("[") is None


def test_headline_and_quick_flags(bench: ModuleType) -> None:
    assert bench.ratio_line("", 1.234, 8) == "sweep overhead: tune/plain = 1.23x (8 trials)"
    opts = bench.parse_args(["--quick", "--trials", "3"])
    assert (opts.trials, opts.epochs, opts.repeats) == (3, bench.QUICK["epochs"], 1)
    assert opts.model == "mlp" and opts.skip_torchtrainer
    assert bench.parse_args([]).model == "cnn" and not bench.parse_args([]).skip_torchtrainer
    with pytest.raises(SystemExit):
        bench.parse_args(["--trials", "0"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_mode_runs_the_study_and_the_plain_loop_on_the_same_trials(
    bench: ModuleType, ray_session: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--quick` end to end, on the public API (`optsweep.Study(...).run`), in the test session's Ray."""
    # The plain side's spawned processes import the benchmark by its module name, as a script's would.
    monkeypatch.syspath_prepend(str(BENCHMARK.parent))  # spawned processes get the parent's sys.path
    bench.main(["--quick"])
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("  same trials (learning rates checked): ") for line in out), out
    assert re.fullmatch(r"sweep overhead: tune/plain = \d+\.\d\dx \(2 trials\)", out[-1]), out[-1]


SIDE_BY_SIDE = BENCHMARK.parent / "side_by_side.py"


@pytest.fixture(scope="module")
def side_by_side() -> ModuleType:
    spec = importlib.util.spec_from_file_location("side_by_side_benchmark", SIDE_BY_SIDE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_running_trials_are_read_from_the_studys_progress_lines(side_by_side: ModuleType) -> None:
    lines = [
        (1.0, "Starting sgd: 6 configurations x 2 seeds = 12 trials"),
        (2.0, "[sgd 1/3] 0/12 done (0 completed), 2 running, 10 pending; 0s, ETA unknown"),
        (3.0, "[adam 2/3] 0/12 done (0 completed), 0 running, 12 pending; 0s, ETA unknown"),
        (5.0, "[sgd 1/3] 12/12 done (8 completed, 4 stopped), 0 running, 0 pending; best val_acc 0.9"),
        (6.0, "[adam 2/3] 0/12 done (0 completed), 1 running, 11 pending; 4s, ETA unknown"),
        (9.0, "[adam 2/3] 12/12 done (12 completed), 0 running, 0 pending; best val_acc 0.9"),
        (9.5, "Done in 0.2 min. adam has the highest mean"),
    ]
    events = side_by_side.running_events(lines)
    assert events == [(2.0, "sgd", 2), (3.0, "adam", 0), (5.0, "sgd", 0), (6.0, "adam", 1), (9.0, "adam", 0)]
    # 2 slots: full from 2 to 5 only; under before 2 (1 s from the start at 1) and from 5 to 10.
    assert side_by_side.seconds_under(events, 2, 1.0, 10.0) == pytest.approx(1.0 + 5.0)
    assert side_by_side.seconds_under(events, 1, 1.0, 10.0) == pytest.approx(1.0 + 1.0 + 1.0)
    assert side_by_side.last_progress(lines) == 9.0
    assert side_by_side.last_progress(lines[:1]) is None


def test_trial_cpu_figures_leave_out_the_excluded_intervals(side_by_side: ModuleType) -> None:
    samples = [(0.0, 1.0, 2.0), (1.0, 2.0, 1.0), (2.0, 3.0, 0.0), (3.0, 4.0, 2.0)]
    found = side_by_side.figures(samples, 2, [(2.0, 3.0)])
    assert found["wall_s"] == 3.0
    assert found["utilisation"] == pytest.approx(5.0 / 6.0)
    assert found["under_full_s"] == 1.0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_side_by_side_quick_mode_runs_both_orders(
    side_by_side: ModuleType, ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--quick` end to end, on the public API, in the test session's Ray (no timing asserted)."""
    results = side_by_side.main(["--quick", "--storage", str(tmp_path)])
    assert sorted(results) == ["one after another", "side by side"]
    for found in results.values():
        assert found["wall_s"] > 0 and found["under_slots_s"] >= 0 and found["utilisation"] >= 0
    for name in ("side-by-side", "alone-sgd", "alone-adam", "alone-adamw"):
        assert (tmp_path / name / "report" / "trials.csv").is_file()
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("side by side: ")


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARK.parent / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sharded_state_quick_mode_shards_the_state(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARK.parent))  # its spawned workers import it by name
    _script("sharded_state").main(["--quick"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    ratio = float(re.fullmatch(r"state bytes per worker: (\d+\.\d+)", last)[1])  # type: ignore[index]
    assert 0.5 <= ratio < 1.0  # 2 workers: the largest holds at least half, less than all


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_optimizer_step_quick_mode_prints_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    _script("optimizer_step").main(["--quick"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("compile: cold skipped, warm ") and out[-5].startswith("optimizer_step: ")
