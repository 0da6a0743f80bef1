"""The large-batch study (sweeps/large_batch.py, analysis/large_batch.py): the lr rules as the papers
state them, the analysis on hand-made tables whose answers are known, one-line errors for bad flags,
and the study's --smoke end to end with its notebook."""

from __future__ import annotations

import math
import os
from pathlib import Path

import notebook_runner
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from optsweep.analysis import large_batch as lb
from optsweep.errors import OptsweepError
from optsweep.sweeps import large_batch as study
from optsweep.trainables.large_batch_task import bayes_accuracy, build_task
from optsweep.vocabulary import Target

ACC = Target("acc", "max")
PERPLEXITY = Target("perplexity", "min")
NOTEBOOK = Path(__file__).resolve().parents[1] / "analysis" / "notebooks" / "large_batch.ipynb"
RECORD = {
    "base_batch": 256,
    "lr_factors": [0.25, 0.5, 1.0, 2.0, 4.0],
    "optimizers": {"sgd": {"base_lr": 0.1, "rule": "linear"}, "lamb": {"base_lr": 0.01, "rule": "sqrt"}},
}


# ------------------------------------------------------------------------------------- lr rules


def test_the_linear_rule_is_goyal_et_al_s() -> None:
    # Goyal et al. 2017, Sec. 2.1 and Table 1: lr 0.1 for 256 images, so 0.1 * k n / 256; 3.2 at 8k.
    assert study.scaled_lr(0.1, 8192, 256, "linear") == pytest.approx(3.2)
    assert study.scaled_lr(0.1, 256, 256, "linear") == pytest.approx(0.1)
    assert study.scaled_lr(0.1, 128, 256, "linear") == pytest.approx(0.05)


def test_the_square_root_rule() -> None:
    assert study.scaled_lr(0.01, 16384, 256, "sqrt") == pytest.approx(0.08)  # sqrt(64) = 8


def test_the_grid_is_the_factors_around_the_rule_s_lr() -> None:
    contender = study.Contender(0.1, "linear", {})
    assert study.lr_grid(contender, 1024, 256, (0.5, 1.0, 2.0)) == [0.2, 0.4, 0.8]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.1, 0, 256, "linear"), "batch size 0 is invalid"),
        ((0.1, 256, 0, "linear"), "base batch 0 is invalid"),
        ((-1.0, 256, 256, "linear"), "base lr -1.0 is invalid"),
        ((0.1, 256, 256, "cubic"), "unknown lr scaling rule 'cubic'; valid: linear, sqrt"),
    ],
)
def test_bad_rule_arguments_are_one_line(args: tuple, message: str) -> None:
    with pytest.raises(OptsweepError, match=f"^{message}"):
        study.scaled_lr(*args)


def test_the_record_s_rule_is_the_same_rule() -> None:
    for batch in (256, 1024, 16384):
        assert lb.scaled_lr(RECORD, "sgd", batch) == pytest.approx(study.scaled_lr(0.1, batch, 256, "linear"))
        assert lb.scaled_lr(RECORD, "lamb", batch) == pytest.approx(study.scaled_lr(0.01, batch, 256, "sqrt"))


# ------------------------------------------------------------------------------------- the task


def test_the_teacher_task_is_deterministic_and_large() -> None:
    first, second = build_task(n_train=4096).data(), build_task(n_train=4096).data()
    assert len(first.train) == 4096
    for a, b in zip(first.train.tensors, second.train.tensors, strict=True):
        assert a.equal(b)
    assert not first.train.tensors[0][:64].equal(first.val.tensors[0][:64])  # splits are independent


def test_the_noise_rate_matches_the_bayes_accuracy() -> None:
    # With noise only, the teacher's own labels score bayes_accuracy: measured on noisy vs clean labels.
    noisy = build_task(n_train=20000, label_noise=0.3, data_seed=5).data().train.tensors[1]
    clean = build_task(n_train=20000, label_noise=0.0, data_seed=5).data().train.tensors[1]
    agreement = float((noisy == clean).float().mean())
    assert agreement == pytest.approx(bayes_accuracy(0.3, 5), abs=0.01)  # 0.76; sd of the estimate 0.003


def test_bad_task_arguments_are_one_line() -> None:
    with pytest.raises(ValueError, match="^large_batch task: label_noise 1.5 is invalid"):
        build_task(label_noise=1.5)


# ------------------------------------------------------------------------------------- analysis


def _table(means: dict[str, dict[int, float]], reference: float) -> pd.DataFrame:
    rows = [
        {"optimizer": o, "batch_size": b, "mean": m, "difference": m - reference}
        for o, by_batch in means.items()
        for b, m in by_batch.items()
    ]
    return pd.DataFrame(rows)


def test_where_scaling_breaks_on_a_known_table() -> None:
    table = _table(
        {
            "sgd": {256: 0.85, 1024: 0.845, 4096: 0.80, 16384: 0.50},  # within 0.01 up to 1024
            "lars": {256: 0.85, 1024: 0.85, 4096: 0.841, 16384: 0.70},  # 4096 within (0.009 short)
            "lamb": {256: 0.86, 1024: 0.86, 4096: 0.85, 16384: 0.845},  # never more than 0.005 short
            "adam": {256: 0.83, 1024: 0.85, 4096: 0.85, 16384: 0.85},  # short already at the smallest
            "odd": {256: 0.85, 1024: 0.70, 4096: 0.85, 16384: 0.85},  # breaks at 1024, recovery ignored
        },
        reference=0.85,
    )
    limits = lb.scaling_limits(table, ACC, tolerance=0.01).set_index("optimizer")
    assert limits.loc["sgd"].tolist() == [1024, 4096]
    assert limits.loc["lars"].tolist() == [4096, 16384]
    assert limits.loc["lamb"].tolist() == [16384, None]
    assert limits.loc["adam"].tolist() == [None, 256]
    assert limits.loc["odd"].tolist() == [256, 1024]
    record = {"batch_sizes": [256, 1024, 4096, 16384], "optimizers": {}}
    said = " ".join(lb.conclusions(limits.reset_index(), table, record))
    assert "sgd (? rule): holds up to B = 1024, breaks at B = 4096." in said
    assert "LARS extends SGD's linear scaling here (holds up to 4096 vs 1024)" in said
    assert "LAMB extends" in said and "lamb (? rule): holds at every batch size run, up to 16384." in said


def test_where_scaling_breaks_for_a_metric_to_minimise() -> None:
    table = _table({"sgd": {256: 5.0, 1024: 5.2, 4096: 6.0}}, reference=5.0)  # perplexity: higher is worse
    limits = lb.scaling_limits(table, PERPLEXITY, tolerance=0.5).set_index("optimizer")
    assert limits.loc["sgd"].tolist() == [1024, 4096]


def test_a_diverged_batch_size_does_not_hold() -> None:
    table = _table({"sgd": {256: 0.85, 1024: math.nan}}, reference=0.85)
    assert lb.scaling_limits(table, ACC).set_index("optimizer").loc["sgd"].tolist() == [256, 1024]


def _seeds(values: dict[tuple[str, int], list[float]], lrs: dict[tuple[str, int], float]) -> pd.DataFrame:
    rows = [
        {
            "batch_size": b,
            "optimizer": o,
            "config_id": f"{o}-c01",
            "reported_from": "confirm",
            "lr": lrs[(o, b)],
            "trial_id": f"{o}-{b}-{i}",
            "seed": 10000 + i,
            "status": "completed" if not math.isnan(v) else "diverged",
            "test": v,
            "val": v + 0.01,
        }
        for (o, b), vs in values.items()
        for i, v in enumerate(vs)
    ]
    return pd.DataFrame(rows)


def test_accuracy_by_batch_against_the_sgd_reference() -> None:
    values = {
        ("sgd", 256): [0.84, 0.85, 0.86],
        ("sgd", 1024): [0.80, 0.82, 0.81],
        ("lamb", 256): [0.90, 0.90, 0.91],  # better than SGD, but SGD stays the reference
        ("lamb", 1024): [0.85, 0.86, 0.84, math.nan],  # a diverged seed: counted, not averaged
    }
    lrs = {("sgd", 256): 0.1, ("sgd", 1024): 0.2, ("lamb", 256): 0.01, ("lamb", 1024): 0.08}
    table = lb.accuracy_by_batch(_seeds(values, lrs), ACC, RECORD).set_index(["optimizer", "batch_size"])
    assert table.attrs["reference"] == ("sgd", 256, pytest.approx(0.85))
    row = table.loc[("sgd", 1024)]
    assert row["mean"] == pytest.approx(0.81)
    assert row["difference"] == pytest.approx(-0.04)
    welch = scipy_stats.ttest_ind([0.80, 0.82, 0.81], [0.84, 0.85, 0.86], equal_var=False)
    low, high = welch.confidence_interval(0.95)
    assert (row["difference_ci_low"], row["difference_ci_high"]) == (pytest.approx(low), pytest.approx(high))
    t = scipy_stats.t.ppf(0.975, 2) * np.std([0.80, 0.82, 0.81], ddof=1) / math.sqrt(3)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(0.81 - t), pytest.approx(0.81 + t))
    # The chosen lr as a factor of the rule's lr: sgd at 1024 has 0.4 by the rule, chose 0.2 (x0.5).
    assert row["lr_factor"] == pytest.approx(0.5) and not row["at_grid_edge"]
    lamb = table.loc[("lamb", 1024)]  # sqrt rule: 0.02 at 1024, chose 0.08 = x4, the grid's edge
    assert (lamb["n_seeds"], lamb["n_diverged"], lamb["mean"]) == (3, 1, pytest.approx(0.85))
    assert lamb["lr_factor"] == pytest.approx(4.0) and lamb["at_grid_edge"]


def test_without_sgd_the_reference_is_the_best_at_the_smallest_batch() -> None:
    values = {("lamb", 256): [0.80, 0.80], ("lars", 256): [0.82, 0.82], ("lars", 1024): [0.7, 0.7]}
    lrs = {key: 1.0 for key in values}
    table = lb.accuracy_by_batch(_seeds(values, lrs), ACC)
    assert table.attrs["reference"][:2] == ("lars", 256)


def test_steps_to_target_on_known_curves() -> None:
    seeds = _seeds(
        {("sgd", 100): [0.9, 0.9], ("sgd", 400): [0.9, 0.9]},
        {("sgd", 100): 0.1, ("sgd", 400): 0.4},
    )
    accuracy = {  # val_acc per epoch of each trial
        "sgd-100-0": [0.5, 0.7, 0.82, 0.9],  # reaches 0.8 at epoch 3: 3 x 10 steps
        "sgd-100-1": [0.6, 0.81, 0.85, 0.9],  # epoch 2: 20 steps
        "sgd-400-0": [0.3, 0.5, 0.6, 0.81],  # epoch 4: 4 x 3 steps (ceil(1000 / 400))
        "sgd-400-1": [0.3, 0.5, 0.6, 0.7],  # never
    }
    curves = pd.DataFrame(
        [
            {"trial_id": trial, "epoch": epoch + 1, "val_acc": value}
            for trial, values in accuracy.items()
            for epoch, value in enumerate(values)
        ]
    )
    steps = lb.steps_to_target(curves, seeds, ACC, 0.8, n_train=1000).set_index("trial_id")
    assert steps["steps"].tolist() == [30, 20, 12, math.inf]
    summary = lb.steps_summary(steps.reset_index(), base_batch=100).set_index("batch_size")
    assert summary.loc[100, "median_steps"] == 25
    assert summary.loc[400, ["n_seeds", "n_reached"]].tolist() == [2, 1]
    assert math.isinf(summary.loc[400, "median_steps"]) and summary.loc[400, "efficiency"] == 0.0


def test_scaling_efficiency_is_one_for_perfect_scaling() -> None:
    steps = pd.DataFrame(
        {
            "optimizer": ["sgd"] * 3,
            "batch_size": [100, 400, 1600],
            "trial_id": ["a", "b", "c"],
            "epoch": [4, 4, 8],
            "steps": [400.0, 100.0, 50.0],  # 4x the batch: 1/4 the steps, then only 1/2
        }
    )
    summary = lb.steps_summary(steps, base_batch=100).set_index("batch_size")
    assert summary["efficiency"].tolist() == pytest.approx([1.0, 1.0, 0.5])


# ------------------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-sizes", "0,256"], "--batch-sizes '0,256' is invalid: give comma-separated integers >= 1"),
        (["--batch-sizes", "256,256"], "--batch-sizes '256,256' lists a batch size more than once"),
        (["--lr-factors", "1,-2"], "--lr-factors '1,-2' is invalid: give comma-separated numbers > 0"),
        (["--batch-size", "64"], "--batch-size is fixed by this study"),
        (["--scheduler", "asha"], "--scheduler is fixed by this study"),
        (["--optimizers", "sgd,adamw"], "--optimizers 'sgd,adamw' is invalid: this study compares any of"),
        (["--full", "--smoke"], "give either --full or --smoke, not both"),
        (["--seeds", "0"], "--seeds"),
        (["--workers-per-trial", "3"], "--workers-per-trial 3 does not divide the batch size(s) 256, 1024"),
        (["--batch-sizes", "256,99999"], "--batch-sizes 99999 exceed the training set (16384 examples)"),
    ],
)
def test_bad_flags_are_one_line_before_ray(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert study.main([*argv, "--storage-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / study.NAME).exists()  # nothing written


def test_each_batch_size_is_one_grid_study_and_a_worker_trains_its_share() -> None:
    plan = study.plan(["--workers-per-trial", "4", "--storage-path", "/tmp/somewhere"])
    settings = plan.defaults(4096)
    assert settings["name"] == "b4096" and settings["storage_path"] == "/tmp/somewhere/large_batch"
    assert settings["batch_size"] == 1024  # per worker: 4 workers train a batch of 4096
    assert (settings["search"], settings["scheduler"], settings["schedules"]) == (
        "grid",
        "fifo",
        ("warmup_cosine",),
    )
    sgd_lrs = settings["search_spaces"]["sgd"]["lr"]["choice"]
    assert sgd_lrs == pytest.approx(
        [study.TEACHER.contenders["sgd"].base_lr * 16 * f for f in (0.25, 0.5, 1, 2, 4)]
    )  # linear rule: 4096 / 256
    assert plan.flags[-2:] == ["--workers-per-trial", "4"]


# ------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> Path:
    storage = tmp_path_factory.mktemp("large_batch")
    assert study.main(["--smoke", "--storage-path", str(storage)]) == 0
    return storage / f"{study.NAME}-smoke"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_smoke_study_writes_its_section(smoke: Path) -> None:
    report = smoke / "report"
    section = (report / lb.SECTION_FILE).read_text()
    assert "## Where scaling breaks" in section and "## Steps to the target" in section
    for figure in lb.FIGURES:
        assert (report / figure).stat().st_size > 1000
    table = pd.read_csv(report / lb.TABLE_FILE)
    batches = list(study.SMOKE.batch_sizes)
    assert sorted(set(table["batch_size"])) == batches
    assert set(table["optimizer"]) == set(study.SMOKE.contenders)
    # Each cell's lr is one of its grid's, scaled by the optimizer's rule.
    for row in table.itertuples():
        contender = study.SMOKE.contenders[row.optimizer]
        grid = study.lr_grid(contender, row.batch_size, study.SMOKE.base_batch, study.SMOKE.lr_factors)
        assert row.lr in grid
    steps = pd.read_csv(report / lb.STEPS_FILE)
    assert set(steps["batch_size"]) == set(batches)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_notebook_runs_on_the_smoke_study(
    smoke: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    outputs = notebook_runner.executed_outputs(NOTEBOOK, smoke, tmp_path, monkeypatch, timeout=120)
    assert notebook_runner.images(outputs) == 2
    assert "sgd (linear rule)" in notebook_runner.printed(outputs)
    assert os.environ["OPTSWEEP_EXPERIMENT"] == str(smoke)
