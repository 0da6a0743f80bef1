"""The confirmation stage (issue 20, item 1): after the search, each optimizer's chosen configuration is
retrained on fresh seeds to the full budget. Its flags through every door, its place in the study's
identity, and end to end: fused and unfused, the seeds disjoint from the search's, the same count per
optimizer, full epochs, the search's choice recorded and confirmed, a Ctrl-C in the stage then a resume
that does not run the search again."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ray import tune

import optsweep
from optsweep import analysis
from optsweep.errors import OptsweepError
from optsweep.sweeps import adam_vs_sgd, cli, study_file
from optsweep.sweeps.record import identity
from optsweep.sweeps.runner import confirmation, study, tuner
from optsweep.sweeps.runner.plan import prepare
from optsweep.sweeps.spec import StudySpec
from optsweep.vocabulary import CONFIRM, CONFIRM_SEED_BASE, DIVERGED, SEARCH, STAGE_COLUMN

# 3 configurations x 2 search seeds per optimizer, 4 epochs (rungs at epochs 1 and 3), 3 confirmation seeds.
ARGV = ["--smoke", "--optimizers", "sgd,adam", "--num-samples", "3", "--seeds", "2", "--max-epochs", "4"]
ARGV += ["--lr-max", "0.05", "--confirm-seeds", "3"]


def _parse(*argv: str) -> StudySpec:
    return cli.parse(list(argv), "test", "test", adam_vs_sgd.DEFAULTS)


@pytest.fixture
def ray_must_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sweep reached Ray before rejecting its input")

    monkeypatch.setattr(study, "_connect_ray", started)


# ------------------------------------------------------------------------------------ no Ray needed
def test_confirmation_seeds_are_fresh_and_stable() -> None:
    assert confirmation.seeds(3) == [10_000, 10_001, 10_002]
    assert confirmation.seeds(10)[:3] == confirmation.seeds(3)  # the i-th seed never changes
    assert confirmation.seeds(0) == []
    assert not set(confirmation.seeds(10)) & set(range(CONFIRM_SEED_BASE))  # any search's seeds


def test_the_headline_default_confirms_on_10_seeds_and_smoke_has_no_confirmation(tmp_path: Path) -> None:
    default = _parse("--storage-path", str(tmp_path))
    assert (default.seeds, default.confirm_seeds) == (3, 10)
    assert _parse("--smoke", "--storage-path", str(tmp_path)).confirm_seeds == 0
    assert _parse("--smoke", "--confirm-seeds", "2", "--storage-path", str(tmp_path)).confirm_seeds == 2
    assert "--confirm-seeds N" in cli.build_parser("p", "d", adam_vs_sgd.DEFAULTS).format_help()


BAD = [
    (["--confirm-seeds", "-1"], "--confirm-seeds -1 is invalid: it must be an integer >= 0"),
    (["--confirm-seeds", "ten"], "argument --confirm-seeds: invalid int value: 'ten'"),
    (
        ["--seeds", "10001"],
        "--seeds 10001 is invalid: it must be an integer >= 1, at most 10000 (the confirmation seeds start "
        "at 10000)",
    ),
]


@pytest.mark.usefixtures("ray_must_not_start")
@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_confirmation_flags_are_one_line_before_ray(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert adam_vs_sgd.main([*argv, "--storage-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_the_study_file_door(tmp_path: Path) -> None:
    file = tmp_path / "study.yaml"
    file.write_text("optimizers: [adam]\nconfirm_seeds: 4\n")
    assert study_file.load(file).confirm_seeds == 4
    assert study_file.load(file).seeds == 3  # the spec's default, as the API's
    file.write_text("optimizers: [adam]\nconfirm_seeds: '4'\n")
    with pytest.raises(
        OptsweepError,
        match=r"^confirm_seeds '4' is invalid: it must be an integer >= 0 .*\(in .*study.yaml\)$",
    ):
        study_file.load(file)
    file.write_text("optimizers: [adam]\nconfirm_seeds: -2\n")
    with pytest.raises(OptsweepError, match="^confirm_seeds -2 is invalid"):
        study_file.load(file)


@pytest.mark.parametrize("value", [-1, 2.5, True, "3"])
def test_the_python_door_refuses_bad_values_before_ray(value: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"^confirm_seeds {value!r} is invalid: it must be an integer >= 0"):
        optsweep.Study("digits", optimizers=["adam"], confirm_seeds=value).plan(str(tmp_path))


def test_the_python_door_defaults_match_the_headline_study(tmp_path: Path) -> None:
    args = optsweep.Study("digits", optimizers=["adam"]).plan(str(tmp_path)).args
    assert (args.num_samples, args.seeds, args.confirm_seeds) == (24, 3, 10)
    assert optsweep.Study("digits", confirm_seeds=0).plan(str(tmp_path)).args.confirm_seeds == 0


def test_confirm_seeds_is_part_of_the_identity(tmp_path: Path) -> None:
    recorded = prepare(_parse("--storage-path", str(tmp_path))).identity()
    assert recorded["confirm_seeds"] == 10
    other = prepare(_parse("--storage-path", str(tmp_path), "--confirm-seeds", "3")).identity()
    assert identity.differences(recorded, other) == ["confirm_seeds 10 -> 3"]


@pytest.mark.usefixtures("ray_must_not_start")
def test_a_study_recorded_before_the_confirmation_stage_resumes_with_confirm_seeds_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = tmp_path / "adam_vs_sgd"
    (experiment / "search").mkdir(parents=True)
    (experiment / "search" / "tuner.pkl").write_bytes(b"")  # the study has started: its record is binding
    old = prepare(_parse("--storage-path", str(tmp_path))).identity()
    del old["confirm_seeds"]
    assert identity.differences(old, prepare(_parse("--confirm-seeds", "0")).identity()) == []
    (experiment / study.STUDY_FILE).write_text(json.dumps(old))
    assert adam_vs_sgd.main(["--storage-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "(confirm_seeds 0 -> 10) (it predates the confirmation stage: pass --confirm-seeds 0)" in err
    assert err.count("\n") == 1


def test_no_confirmation_seeds_no_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = prepare(_parse("--smoke", "--storage-path", str(tmp_path)))
    assert plan.args.confirm_seeds == 0
    stages = []
    monkeypatch.setattr(tuner, "run_search", lambda plan: stages.append("search"))
    monkeypatch.setattr(confirmation, "run", lambda plan: stages.append("confirm"))
    study.run_stages(plan)
    assert stages == ["search"]  # the search, as before, and nothing after it
    assert not list(tmp_path.iterdir())


def test_a_recorded_choice_of_every_optimizer_skips_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["--smoke", "--optimizers", "sgd,adam", "--confirm-seeds", "2", "--storage-path", str(tmp_path)]
    plan = prepare(_parse(*argv))
    stages = []
    monkeypatch.setattr(tuner, "run_search", lambda plan: stages.append("search"))
    monkeypatch.setattr(confirmation, "run", lambda plan: stages.append("confirm"))
    experiment = plan.args.experiment_dir
    Path(experiment).mkdir(parents=True)
    confirmation.write_choice(experiment, {"seeds": [10_000], "optimizers": {"sgd": []}})
    study.run_stages(plan)
    assert stages == ["search", "confirm"]  # adam's choice is missing: the search resumes
    confirmation.write_choice(experiment, {"seeds": [10_000], "optimizers": {"sgd": [], "adam": []}})
    study.run_stages(plan)
    assert stages == ["search", "confirm", "confirm"]


def test_progress_lines_say_which_stage_runs(tmp_path: Path) -> None:
    target = optsweep.Target("acc", "max")
    one_stage = _parse("--smoke", "--storage-path", str(tmp_path))
    two_stages = _parse("--smoke", "--confirm-seeds", "2", "--storage-path", str(tmp_path))
    assert [line.label for line in tuner.callbacks(one_stage, target)[:2]] == ["sgd", "adam"]
    assert [line.label for line in tuner.callbacks(two_stages, target)[:2]] == ["sgd search", "adam search"]
    assert confirmation._callbacks(two_stages, {"sgd": 2}, target)[0].label == "sgd confirm"


# ------------------------------------------------------------------------------------- end to end
class InterruptOnce(tune.Callback):
    """Ctrl-C (SIGINT to this process) at the first result of a confirmation trial, once: the fault
    point is a known moment of the stage, not a race with the clock (the marker file fires it once,
    also when Tune restores this callback with the experiment)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        try:
            self.marker.rename(self.marker.with_name(self.marker.name + ".fired"))
        except FileNotFoundError:
            return
        os.kill(os.getpid(), signal.SIGINT)


def _search_state(experiment: Path) -> dict[str, float]:
    """Every file of the search experiment (not its trials) with its modification time."""
    return {str(path): path.stat().st_mtime for path in (experiment / "search").iterdir() if path.is_file()}


def _check_confirmation(experiment: Path, max_epochs: int, confirm_seeds: int) -> pd.DataFrame:
    trials = analysis.load(experiment)
    search = trials[trials[STAGE_COLUMN] == SEARCH]
    confirm = trials[trials[STAGE_COLUMN] == CONFIRM]
    choice = json.loads((experiment / confirmation.CHOICE_FILE).read_text())
    assert choice["seeds"] == confirmation.seeds(confirm_seeds)
    chosen_by_search = analysis.summarize(search).set_index("optimizer")["config_id"]
    for optimizer in ("sgd", "adam"):
        (entry,) = choice["optimizers"][optimizer]
        assert entry["config_id"] == chosen_by_search[optimizer]  # what the search chose
        rows = confirm[confirm["optimizer"] == optimizer]
        assert sorted(rows["seed"]) == confirmation.seeds(confirm_seeds)  # the same count for each
        assert set(rows["config_id"]) == {entry["config_id"]}  # the same configuration, same id
        for key, value in entry["hyperparameters"].items():
            assert (rows[key] == value).all(), key
        finished = rows[rows["status"] != DIVERGED]
        assert (finished["epochs"] == max_epochs).all() and (finished["status"] == "completed").all()
    assert (experiment / "confirm").is_dir() and not (experiment / "sgd-confirm").exists()
    assert not set(confirm["seed"]) & set(search["seed"])
    assert set(search["seed"]) == {0, 1}
    return trials


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("ray_session")
def test_a_ctrl_c_in_the_fused_confirmation_resumes_it_without_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "interrupt"
    marker.touch()
    callbacks = confirmation._callbacks
    monkeypatch.setattr(
        confirmation, "_callbacks", lambda *a, **k: [*callbacks(*a, **k), InterruptOnce(marker)]
    )
    argv = [*ARGV, "--fuse", "8", "--storage-path", str(tmp_path / "runs"), "--name", "fused"]
    assert adam_vs_sgd.main(argv) == 130
    experiment = tmp_path / "runs" / "fused"
    assert (experiment / confirmation.CHOICE_FILE).is_file()  # recorded before the stage started
    choice = (experiment / confirmation.CHOICE_FILE).read_text()
    searched = _search_state(experiment)
    out = capsys.readouterr().out
    assert "Confirming sgd: " in out and "in 1 fused group(s)" in out

    assert adam_vs_sgd.main(argv) == 0
    out = capsys.readouterr().out
    assert "Starting" not in out and "Resuming the search" not in out
    assert "The search has finished" in out and "Resuming the confirmation" in out
    assert (experiment / confirmation.CHOICE_FILE).read_text() == choice  # reused, not recomputed
    assert _search_state(experiment) == searched  # no search experiment was restored or rewritten
    _check_confirmation(experiment, max_epochs=4, confirm_seeds=3)
    report = pd.read_csv(experiment / "report" / "trials.csv")
    assert set(report[STAGE_COLUMN]) == {SEARCH, CONFIRM}

    assert adam_vs_sgd.main(argv) == 0  # a finished study just rewrites its report
    assert "Confirming" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("ray_session")
def test_an_unfused_confirmation_through_the_python_door(tmp_path: Path) -> None:
    # Optuna proposes configurations from earlier results, so nothing fuses (sweeps.runner.fusion).
    result = optsweep.Study(
        "digits",
        optimizers=["sgd", "adam"],
        num_samples=3,
        seeds=2,
        confirm_seeds=2,
        max_epochs=4,
        lr_max=0.05,
        search="optuna",
        name="unfused",
    ).run(storage_path=str(tmp_path))
    experiment = Path(result.experiment_dir)
    trials = _check_confirmation(experiment, max_epochs=4, confirm_seeds=2)
    confirm = trials[trials[STAGE_COLUMN] == CONFIRM]
    assert len(confirm) == 4 and not confirm["trial_id"].str.contains("-").any()  # unfused (no members)


def test_the_selection_quality_simulation_runs_and_more_search_seeds_choose_better() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import selection_quality

    rows = selection_quality.table(studies=2_000)
    for tau in selection_quality.TAUS:
        (five,) = [r for r in rows if r[:2] == (tau, 5)]
        (three,) = [r for r in rows if r[:2] == (tau, 3)]
        assert 0.9 < three[2] <= five[2] + 0.01 and five[3] < three[3]
