"""benchmarks/fused_trials.py runs and measures what it says (no timing asserted): part (b), training
throughput, in its --quick mode; part (a), the study fused and unfused, its report comparison on
hand-made tables and (slow) end to end on a tiny study through its command line."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "fused_trials.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fused_trials", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_members_differ_in_lr_and_seed_and_share_the_rest(bench: ModuleType) -> None:
    configs = bench.configs(4, "mlp", 2)
    assert len({c.hparams["lr"] for c in configs}) == 4
    assert [c.seed for c in configs] == [0, 1, 2, 3]
    low, high = bench.LR_RANGE
    assert all(low <= c.hparams["lr"] <= high for c in configs)
    assert {(c.optimizer, c.max_epochs, c.task_args["model"]) for c in configs} == {("adam", 2, "mlp")}


def test_quick_run_prints_a_row_per_k_and_the_headline(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    results = bench.main(["--part", "b", "--quick", "--device", "cpu"])
    assert results.study is None
    assert sorted(results.throughput) == [1, 4]
    for measured in results.throughput.values():
        for mode in ("fused", "loop", "plain", "fused_cpu", "loop_cpu", "plain_cpu"):
            assert measured[mode] > 0
        assert measured["worst"] < 1e-4  # the fused members' last val metric is the loop's
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("fused throughput at K=4: ")
    assert [line.split()[0] for line in lines[-3:-1]] == ["1", "4"]


def test_the_study_commands_differ_only_in_fusion_and_name(bench: ModuleType, tmp_path: Path) -> None:
    fused = bench.study_command("fused", tmp_path, ["--smoke"], None)
    unfused = bench.study_command("unfused", tmp_path, ["--smoke"], None)
    assert fused[1].endswith("sweeps/adam_vs_sgd.py") and fused[2] == "--smoke"
    assert fused[-4:] == ["--storage-path", str(tmp_path), "--name", "fused"]
    assert unfused[-5:] == ["--no-fuse", "--storage-path", str(tmp_path), "--name", "unfused"]
    assert bench.study_command("fused", tmp_path, [], 8)[-6:-4] == ["--fuse", "8"]


def test_flags_after_study_args_go_to_the_study(bench: ModuleType) -> None:
    assert bench.split_study_args(["--part", "a", "--study-args", "--smoke", "--repeats", "2"]) == (
        ["--part", "a"],
        ["--smoke", "--repeats", "2"],
    )
    assert bench.split_study_args(["--quick"]) == (["--quick"], [])
    with pytest.raises(SystemExit):
        bench.main(["--part", "a", "--study-args", "--name", "x"])  # the benchmark names the runs


def _experiment(root: Path, trials: list[dict], best: list[dict]) -> Path:
    """A report as the analysis writes it: trials.csv (hyperparameters between seed and status) and
    summary.csv (the configuration between config_id and n_seeds)."""
    report = root / "report"
    report.mkdir(parents=True)
    pd.DataFrame(trials).to_csv(report / "trials.csv", index=False)
    pd.DataFrame(best).to_csv(report / "summary.csv", index=False)
    return root


def _trial(trial_id: str, config_id: str, lr: float, seed: int, status: str, epochs: int, acc: float) -> dict:
    return {
        "trial_id": trial_id,
        "optimizer": "adam",
        "seed": seed,
        "lr": lr,
        "schedule": "cosine",
        "status": status,
        "epochs": epochs,
        "best_val_acc": acc,
        "time_s": 1.0,
        "config_id": config_id,
    }


def _best(config_id: str, lr: float, mean: float) -> dict:
    return {
        "optimizer": "adam",
        "config_id": config_id,
        "lr": lr,
        "schedule": "cosine",
        "n_seeds": 2,
        "mean": mean,
    }


def test_reports_are_compared_on_hyperparameters_not_on_configuration_ids(
    bench: ModuleType, tmp_path: Path
) -> None:
    unfused = [
        _trial("a_0", "adam-c01", 0.01, 0, "stopped_early", 1, 0.5),
        _trial("a_1", "adam-c01", 0.01, 1, "stopped_early", 1, 0.6),
        _trial("a_2", "adam-c02", 0.002, 0, "completed", 4, 0.9),
        _trial("a_3", "adam-c02", 0.002, 1, "completed", 4, 0.92),
    ]
    # Fused: other trial ids and the configuration ids the other way round, the same trials.
    fused = [
        _trial("b_0-000", "adam-c02", 0.01, 0, "stopped_early", 1, 0.5),
        _trial("b_0-001", "adam-c02", 0.01, 1, "stopped_early", 1, 0.6 + 1e-7),
        _trial("b_1-000", "adam-c01", 0.002, 0, "completed", 4, 0.9),
        _trial("b_1-001", "adam-c01", 0.002, 1, "completed", 4, 0.92),
    ]
    same = bench.compare_reports(
        _experiment(tmp_path / "f", fused, [_best("adam-c01", 0.002, 0.91)]),
        _experiment(tmp_path / "u", unfused, [_best("adam-c02", 0.002, 0.91)]),
        ("adam wins", "adam wins"),
    )
    assert (same.joined, same.unmatched, same.differing) == (4, 0, 0)
    assert same.largest_metric_diff == pytest.approx(1e-7)
    assert same.identical and same.same_conclusion
    assert bench.comparison_lines(same)[-1] == "  same conclusion; identical to float rounding"

    fused[1] = _trial("b_0-001", "adam-c02", 0.01, 1, "stopped_early", 3, 0.6)  # stopped later
    fused[3] = _trial("b_1-001", "adam-c01", 0.002, 2, "completed", 4, 0.92)  # another seed
    differ = bench.compare_reports(
        _experiment(tmp_path / "f2", fused, [_best("adam-c02", 0.01, 0.55)]),
        _experiment(tmp_path / "u2", unfused, [_best("adam-c02", 0.002, 0.91)]),
        ("sgd wins", "adam wins"),
    )
    assert (differ.joined, differ.unmatched, differ.differing) == (3, 2, 1)
    assert differ.best_differing == ("adam",)
    assert differ.largest_mean_diff == pytest.approx(0.36)
    assert not differ.same_verdict and not differ.same_conclusion and not differ.identical
    lines = bench.comparison_lines(differ)
    assert "VERDICTS DIFFER" in lines[0] and "BEST CONFIGURATION DIFFERS for adam" in lines[1]
    assert "1 with differing status/epochs (status 0, epochs 1)" in lines[2]
    assert lines[3] == "  CONCLUSIONS DIFFER; not identical"


def test_float_drift_keeps_the_conclusion_but_not_identity(bench: ModuleType, tmp_path: Path) -> None:
    """Which seed of a configuration diverges, the metrics and the verdict's numbers may drift apart
    (float32 rounding); the early-stopping decisions and the verdict's wording may not."""
    unfused = [
        _trial("a_0", "adam-c01", 0.5, 0, "diverged", 3, 0.5),
        _trial("a_1", "adam-c01", 0.5, 1, "stopped_early", 3, 0.6),
    ]
    fused = [
        _trial("b_0-000", "adam-c01", 0.5, 0, "stopped_early", 3, 0.52),
        _trial("b_0-001", "adam-c01", 0.5, 1, "diverged", 3, 0.6),
    ]
    verdicts = (
        "adam (0.969 ± 0.004, 2 seeds) has the highest mean",
        "adam (0.972 ± 0.006, 2 seeds) has the highest mean",
    )
    drift = bench.compare_reports(
        _experiment(tmp_path / "f", fused, [_best("adam-c01", 0.5, 0.56)]),
        _experiment(tmp_path / "u", unfused, [_best("adam-c01", 0.5, 0.55)]),
        verdicts,
    )
    assert (drift.differing, drift.status_differing, drift.epochs_differing) == (2, 2, 0)
    assert drift.same_conclusion and not drift.identical
    assert bench.comparison_lines(drift)[0].startswith("  verdicts differ only in their numbers: ")
    assert (
        bench.verdict_shape(verdicts[0])
        == bench.verdict_shape(verdicts[1])
        == "adam (...) has the highest mean"
    )
    assert bench.verdict_shape("adam beats sgd") != bench.verdict_shape("sgd beats adam")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_part_a_runs_a_tiny_study_fused_and_unfused_end_to_end(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCHMARK), "--part", "a", "--study-timeout", "240"]
    command += [
        "--keep-results",
        str(tmp_path),
        "--study-args",
        "--smoke",
        "--optimizers",
        "adam",
        "--seeds",
        "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=570, cwd=BENCHMARK.parents[1])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"fused study speed-up: \d+\.\dx", lines[-1]), lines[-1]
    assert re.search(
        r"round 1: fused [0-9.]+ s wall, [0-9.]+ s CPU .* \| unfused [0-9.]+ s wall", done.stdout
    )
    assert "  same verdict\n  same best configuration per optimizer" in done.stdout
    # 2 configurations x 2 seeds, every one found in both tables, none stopped differently
    assert "4 in both, 0 unmatched, 0 with differing status/epochs (status 0, epochs 0)" in done.stdout
    assert "  same conclusion; identical to float rounding" in done.stdout
    for label in ("fused", "unfused"):
        assert (tmp_path / "round1" / label / "report" / "trials.csv").is_file()


def test_rounds_alternate_and_each_side_keeps_its_best(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    walls = {("fused", 1): 30.0, ("unfused", 1): 150.0, ("unfused", 2): 120.0, ("fused", 2): 40.0}
    order = []

    def run_study(label: str, round_: int, root: Path, *_: object) -> object:
        order.append((label, round_))
        verdict = "adam (0.97) wins" if label == "fused" else "adam (0.98) wins"
        return bench.StudyRun(
            label, round_, root / label, root / f"{label}.log", 0, False, walls[label, round_], 2.0, 1.0,
            True, 0, 1.0, verdict,
        )  # fmt: skip

    for label in ("fused", "unfused"):
        (tmp_path / label / "report").mkdir(parents=True)  # a finished run has its report
    monkeypatch.setattr(bench, "run_study", run_study)
    monkeypatch.setattr(
        bench, "compare_reports", lambda *a: bench.Comparison(a[2], (), 0.0, 4, 0, 0, 0, 0, "m", 0.0)
    )
    result = bench.study_benchmark(["--smoke"], repeats=2, timeout_s=10, keep=tmp_path)
    assert order == [("fused", 1), ("unfused", 1), ("unfused", 2), ("fused", 2)]
    assert result.speed_up == pytest.approx(120.0 / 30.0)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "fused study speed-up: 4.0x"
    assert "verdict, fused: adam (0.97) wins" in lines and "verdict, unfused: adam (0.98) wins" in lines
    assert (
        lines.count("  verdicts differ only in their numbers: 'adam (0.97) wins' vs 'adam (0.98) wins'") == 2
    )


def test_the_wall_time_is_split_at_the_studys_own_output_lines(bench: ModuleType) -> None:
    lines = [
        (6.0, "2026-12-07 12:54:16,695\tWARNING authentication_token_setup.py:85 -- Token authentication"),
        (9.5, "Ray: started a local Ray on this machine (loopback only): 1 node(s), 2 CPUs, 0 GPUs"),
        (10.0, "Starting sgd: 2 configurations x 1 seeds = 2 trials"),
        (10.1, "[sgd 1/1] 0/2 done (0 completed), 0 running, 2 pending"),
        (30.0, "[sgd 1/1] 2/2 done (2 completed), 0 running, 0 pending"),
        (30.5, ""),
        (32.0, "Done in 0.5 min. sgd (0.9, 1 seed) is the only optimizer"),
        (32.1, "Report: /tmp/x/report/report.md"),
    ]
    phases = bench.wall_time_phases(lines, 33.0)
    assert list(phases) == list(bench.PHASES)
    expected = [6.0, 3.5, 0.5, 20.0, 2.0, 1.0]
    assert [phases[name] for name in bench.PHASES] == pytest.approx(expected)
    assert sum(phases.values()) == pytest.approx(33.0)
    assert "training 20.0 s" in bench.describe_phases(phases)


def test_phases_without_their_marker_lines_are_said_to_be_unknown(bench: ModuleType) -> None:
    lines = [
        (9.5, "Ray: joined the cluster at 10.0.0.5:6379"),
        (10.0, "Starting adam: ..."),
        (20.0, "[adam] 1/1"),
    ]
    phases = bench.wall_time_phases(lines, 25.0)
    assert phases["imports and planning"] is None and phases["Ray start"] is None  # no Ray log line
    assert phases["training"] == pytest.approx(10.0) and phases["report"] is None and phases["exit"] is None
    assert (
        "not told apart by the output: imports and planning, Ray start, report, exit"
        in bench.describe_phases(phases)
    )
