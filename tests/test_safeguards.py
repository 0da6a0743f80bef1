"""What a new user hits on day one, without a running Ray: damaged experiments refused or repaired,
trials that can never fit, bad addresses, signals, damaged or planted files, permissions, the Ray token,
checkpoint retention and report files (issue 11). The end-to-end halves are in test_sweep_faults.py."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import ray

import optsweep
from optsweep.analysis import atomic
from optsweep.sweeps import adam_vs_sgd, spec
from optsweep.sweeps.cluster import feasibility, interrupts, ray_connect, retention, storage_guard
from optsweep.sweeps.record import resume, trust
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables import checkpoints, sessions
from optsweep.trainables.trial import IncompleteTrialConfigError, run_trial


@pytest.fixture
def ray_must_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sweep reached Ray before rejecting its input")

    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


# ----------------------------------------------------------------- item 1: never train without a config
@pytest.mark.parametrize(
    ("config", "missing"),
    [
        ({}, "lacks optimizer, lr, settings, seed"),
        ({"optimizer": "sgd", "lr": 0.1, "seed": 0, "settings": {}}, "lacks settings (empty)"),
        ({"optimizer": "sgd", "lr": 0.1, "settings": {"max_epochs": 1}}, "lacks seed"),
    ],
)
def test_a_trial_refuses_a_config_without_what_every_study_sets(config: dict[str, Any], missing: str) -> None:
    with pytest.raises(IncompleteTrialConfigError, match=re.escape(missing)):
        run_trial(config)


def _state(trial_ids: list[str]) -> str:
    trials = [
        [json.dumps({"trial_id": t, "status": "RUNNING", "config": {"optimizer": "sgd"}}), "{}"]
        for t in trial_ids
    ]
    return json.dumps({"trial_data": trials, "runner_data": {}})


def test_an_experiment_where_no_trial_started_is_started_afresh(tmp_path: Path) -> None:
    experiment = tmp_path / "search"
    experiment.mkdir()
    (experiment / "tuner.pkl").write_bytes(b"tuner")  # killed right after Tune created the experiment
    plan = resume.prepare_restore(experiment, "search")
    assert not plan.restore and not experiment.exists()
    assert "no trial had started; starting the search afresh" in plan.notes[0]


def test_a_damaged_newest_state_is_set_aside_for_the_older_whole_one(tmp_path: Path) -> None:
    experiment = tmp_path / "sgd"
    experiment.mkdir()
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(_state(["a", "b"]))
    newest = experiment / "experiment_state-2026-01-02_00-00-00.json"
    newest.write_text(_state(["a", "b"])[:40])  # torn write
    plan = resume.prepare_restore(experiment, "sgd")
    assert plan.restore and "is unreadable" in plan.notes[0]
    assert resume.state_file_tune_restores(experiment).name == "experiment_state-2026-01-01_00-00-00.json"
    assert (experiment / f".{newest.name}.damaged").is_file()  # kept, out of Tune's way


@pytest.mark.parametrize("state", [None, "", "[]", json.dumps({"trial_data": []})])
def test_a_damaged_experiment_with_trial_results_is_refused(tmp_path: Path, state: str | None) -> None:
    experiment = tmp_path / "sgd"
    (experiment / "run_trial_x_00000").mkdir(parents=True)
    (experiment / "run_trial_x_00000" / "params.json").write_text("{}")
    if state is not None:
        (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(state)
    with pytest.raises(resume.DamagedExperimentError, match=r"cannot resume search .* move .* aside"):
        resume.prepare_restore(experiment, "search")
    assert (experiment / "run_trial_x_00000" / "params.json").is_file()  # nothing deleted


def test_tune_restores_the_greatest_state_name_not_the_newest_file(tmp_path: Path) -> None:
    old = tmp_path / "experiment_state-2026-01-01_00-00-00.json"
    new = tmp_path / "experiment_state-2026-01-02_00-00-00.json"
    new.write_text(_state(["a"]))
    old.write_text(_state(["a"]))  # rewritten last, as on a resume
    os.utime(old, (time.time() + 60, time.time() + 60))
    assert resume.state_file_tune_restores(tmp_path) == new


# ------------------------------------------------------------------------ item 3: trials that never fit
TWO_CPUS = feasibility.Cluster(nodes=[{"CPU": 2.0, "memory": 8e9}])


def test_a_worker_group_that_fills_the_node_exactly_fits() -> None:
    feasibility.check(TWO_CPUS, workers=2, cpus_per_worker=1.0, gpus_per_worker=0.0)
    feasibility.check(TWO_CPUS, workers=1, cpus_per_worker=2.0, gpus_per_worker=0.0)


@pytest.mark.parametrize(
    ("workers", "cpus", "gpus", "message"),
    [
        (
            3,
            1.0,
            0.0,
            "a trial needs 3 workers x 1 CPU (--workers-per-trial 3) but this machine's Ray can place"
            " only 2 such workers at once",
        ),
        (1, 4.0, 0.0, "a worker needs 4 CPU (--cpus-per-worker 4, --gpus-per-worker 0) but the largest node"),
        (1, 1.0, 1.0, "a worker needs 1 CPU, 1 GPU"),
    ],
)
def test_trials_that_can_never_be_placed_are_refused(
    workers: int, cpus: float, gpus: float, message: str
) -> None:
    with pytest.raises(feasibility.InfeasibleTrialsError, match="wait forever") as refused:
        feasibility.check(TWO_CPUS, workers, cpus, gpus)
    assert message in str(refused.value)


def test_an_autoscaling_cluster_is_judged_by_what_it_can_grow_to() -> None:
    head_only = [{"CPU": 2.0}]
    gpu_nodes = feasibility.Cluster(nodes=head_only, node_types=[({"CPU": 8.0, "GPU": 1.0}, 4)], local=False)
    feasibility.check(gpu_nodes, workers=4, cpus_per_worker=4.0, gpus_per_worker=1.0)
    with pytest.raises(feasibility.InfeasibleTrialsError, match="only 4 such workers"):
        feasibility.check(gpu_nodes, workers=5, cpus_per_worker=4.0, gpus_per_worker=1.0)
    with pytest.raises(feasibility.InfeasibleTrialsError, match="largest node type"):
        feasibility.check(gpu_nodes, workers=1, cpus_per_worker=1.0, gpus_per_worker=2.0)


def test_trials_waiting_for_minutes_get_a_note_once_per_period() -> None:
    now = [0.0]
    said: list[str] = []
    watch = feasibility.WaitingForResources(
        "2 workers x 1 CPU", 180.0, clock=lambda: now[0], free_resources=lambda: {"CPU": 0.0}, say=said.append
    )
    trial = SimpleNamespace(trial_id="t1", status="RUNNING", last_result={})
    for now[0] in (10.0, 100.0, 179.0):
        watch.on_step_end(0, [trial])
    assert said == []
    now[0] = 181.0
    watch.on_step_end(0, [trial])
    now[0] = 200.0
    watch.on_step_end(0, [trial])
    assert len(said) == 1 and "1 trial(s) have waited 3 min" in said[0] and "2 workers x 1 CPU" in said[0]
    # progress resets the clock: a trial that reports is not waiting
    trial.last_result = {"training_iteration": 1}
    now[0] = 1000.0
    watch.on_step_end(0, [trial, SimpleNamespace(trial_id="t2", status="PENDING", last_result={})])
    assert len(said) == 1


# -------------------------------------------------------------------------------- item 5: --address
@pytest.mark.usefixtures("ray_must_not_start")
@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--address", "not an address"], None, "--address 'not an address' is invalid: give host:port"),
        (["--address", "127.0.0.1:1"], None, "--address 127.0.0.1:1: no Ray cluster answers there"),
        ([], "127.0.0.1:1", "RAY_ADDRESS 127.0.0.1:1: no Ray cluster answers there"),
    ],
)
@pytest.mark.timeout(60)
def test_a_bad_address_fails_fast_in_one_line(
    argv: list[str],
    env: str | None,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if env is not None:
        monkeypatch.setenv("RAY_ADDRESS", env)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert adam_vs_sgd.main(["--smoke", *argv, "--storage-path", str(tmp_path)]) == 2
    err = _one_line_error(capsys)
    assert message in err
    assert "resume" not in err  # nothing ran, so there is nothing to resume


# -------------------------------------------------------------------------------- item 6: signals
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_outside_tune_stops_the_study_at_once(signum: int, code: int) -> None:
    with interrupts.StopOnSignal(), pytest.raises(interrupts.StudyInterrupted) as stopped:
        signal.raise_signal(signum)
    assert stopped.value.exit_code == code


def test_a_signal_during_tune_stops_it_gracefully_and_a_second_forces() -> None:
    with interrupts.StopOnSignal() as stop:
        with pytest.raises(interrupts.StudyInterrupted), interrupts.tune_running():
            signal.raise_signal(signal.SIGINT)  # Tune is asked to stop (SIGUSR1); no exception yet
            reached = True
        assert reached and stop.received == signal.SIGINT
    with interrupts.StopOnSignal(), pytest.raises(interrupts.StudyInterrupted), interrupts.tune_running():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # forced: raises here
        pytest.fail("the second signal did not force")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


# ---------------------------------------------------------------- item 7: damaged study.json / tuner.pkl
@pytest.mark.usefixtures("ray_must_not_start")
@pytest.mark.parametrize(
    ("content", "problem"), [("", "empty"), ('{"num_sam', "not a JSON object"), ("[]", "not a JSON object")]
)
def test_a_damaged_study_record_is_one_line_with_the_way_out(
    content: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = tmp_path / "adam_vs_sgd-smoke"
    experiment.mkdir()
    (experiment / "study.json").write_text(content)
    assert adam_vs_sgd.main(["--smoke", "--storage-path", str(tmp_path)]) == 2
    err = _one_line_error(capsys)
    assert f"study.json is damaged ({problem}" in err and "move it aside" in err


def test_only_the_tuner_pkl_this_study_wrote_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(trust.STATE_DIR_ENV, str(tmp_path / "state"))
    experiment = tmp_path / "exp"
    (experiment / "sgd").mkdir(parents=True)
    (experiment / "sgd" / "tuner.pkl").write_bytes(b"what Tune wrote")
    with pytest.raises(trust.UntrustedExperimentError, match="rerun with --trust-storage"):
        trust.check(str(experiment), "sgd", trust_storage=False)  # no record: written elsewhere
    trust.check(str(experiment), "sgd", trust_storage=True)  # vouched for: recorded from now on
    trust.check(str(experiment), "sgd", trust_storage=False)
    trust.pin(str(experiment), "sgd")  # what the study does when it creates an experiment
    trust.check(str(experiment), "sgd", trust_storage=False)
    record = next((tmp_path / "state").rglob("*.json"))
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert stat.S_IMODE(record.parent.stat().st_mode) == 0o700
    (experiment / "sgd" / "tuner.pkl").write_bytes(b"planted")
    for vouched in (False, True):  # a replaced file is refused even from trusted storage
        with pytest.raises(trust.UntrustedExperimentError, match="is not the file this study wrote"):
            trust.check(str(experiment), "sgd", trust_storage=vouched)


# ---------------------------------------------------------------- item 8: permissions, planted checkpoints
@pytest.mark.usefixtures("ray_must_not_start")
def test_an_experiment_directory_others_may_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    experiment = tmp_path / "adam_vs_sgd-smoke"
    experiment.mkdir()
    experiment.chmod(0o777)
    assert adam_vs_sgd.main(["--smoke", "--storage-path", str(tmp_path)]) == 2
    assert f"{experiment} (mode 0777) can be written by everyone" in _one_line_error(capsys)
    with pytest.raises(AssertionError, match="reached Ray"):  # vouched for: it goes on
        adam_vs_sgd.main(["--smoke", "--trust-storage", "--storage-path", str(tmp_path)])
    experiment.chmod(0o1777)  # sticky, like /tmp: others cannot replace what is in it
    trust.check_local_permissions(str(experiment))


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_checkpoint_is_refused_and_the_previous_one_used(tmp_path: Path) -> None:
    import hashlib

    for epoch in (1, 2):
        checkpoints.save(tmp_path / f"checkpoint_{epoch:06d}", {"epoch": epoch}, rank=0)
    marker = tmp_path / "code-ran"
    payload = pickle.dumps({"epoch": 2, "x": _Planted(marker)})
    state = tmp_path / "checkpoint_000002" / checkpoints.STATE_FILE
    state.write_bytes(payload)  # with a matching digest: whoever planted it could write that too
    state.with_name(state.name + ".sha256").write_text(hashlib.sha256(payload).hexdigest())
    found = sessions.LocalSession(tmp_path).latest_checkpoint()
    assert found.state is not None and found.state["epoch"] == 1
    assert found.unusable == ["checkpoint_000002"]
    assert not marker.exists()


# ------------------------------------------------------------------------------- item 9: the Ray token
def test_the_ray_token_is_created_private_and_a_readable_one_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    ray_connect.ensure_private_token()
    token = tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) >= 32
    assert capsys.readouterr().err == ""
    token.chmod(0o644)
    ray_connect.ensure_private_token()
    assert "auth_token (mode 0644) is readable by other users" in capsys.readouterr().err


# --------------------------------------------------------------------------- item 10: disk and retention
def test_finished_trials_keep_only_their_newest_checkpoints(tmp_path: Path) -> None:
    for epoch in (1, 2, 3):
        (tmp_path / f"checkpoint_{epoch:06d}").mkdir()
    (tmp_path / "result.json").write_text("{}")
    assert retention.prune(str(tmp_path), keep=1) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000003", "result.json"]
    assert retention.prune(str(tmp_path), keep=0) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_study_whose_checkpoints_will_not_fit_is_warned_about(tmp_path: Path) -> None:
    said: list[str] = []
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    assert not retention.warn_if_short(str(tmp_path), 1000, 10, 2, keep=1, say=said.append)
    assert retention.warn_if_short(str(tmp_path), free // 5, 10, 2, keep=1, say=said.append)
    assert "10 trials to go, --keep-checkpoints 1" in said[0] and "--keep-checkpoints 0" in said[0]
    assert retention.forecast_bytes(100, trials_left=10, running=2, keep=1) == 100 * (10 + 2)


# -------------------------------------------------------------------------- item 11: small things
def test_report_files_get_ordinary_permissions_and_a_killed_writers_temp_is_cleaned(tmp_path: Path) -> None:
    old_mask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "report.md", "hello")
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644
    stale = tmp_path / ".report.md.abcd1234.md"
    stale.write_text("")  # what a kill during the write leaves
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / ".report.md.efgh5678.md"
    fresh.write_text("")  # another writer's, in progress
    atomic.write_text(tmp_path / "report.md", "again")
    assert not stale.exists() and fresh.exists()


@pytest.mark.usefixtures("ray_must_not_start")
def test_a_bad_min_free_setting_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(storage_guard.MIN_FREE_ENV, "abc")
    assert adam_vs_sgd.main(["--smoke", "--storage-path", str(tmp_path)]) == 2
    err = _one_line_error(capsys)
    assert "OPTSWEEP_MIN_FREE_MB='abc' is invalid" in err and "resumable" not in err


@pytest.mark.usefixtures("ray_must_not_start")
def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "mnist.tar"
    a_file.write_text("x")
    assert adam_vs_sgd.main(["--smoke", "--data-dir", str(a_file), "--storage-path", str(tmp_path)]) == 2
    assert f"--data-dir {a_file} is a file: it must be a directory" in _one_line_error(capsys)


def test_a_foreign_tune_experiment_gets_no_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from optsweep.analysis import report

    trial = tmp_path / "exp" / "train_fn" / "train_fn_abcde_00000_0"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({"width": 64, "lr": 0.1}))
    (trial / "result.json").write_text(json.dumps({"training_iteration": 1, "loss": 0.5}) + "\n")
    assert report.main([str(tmp_path / "exp")]) == 2
    err = _one_line_error(capsys)
    assert "not an optsweep experiment" in err and "'optimizer' and 'settings'" in err
    assert not (tmp_path / "exp" / "report").exists()


def test_the_notebook_example_path_is_the_default_results_folder() -> None:

    notebook = Path(adam_vs_sgd.__file__).parents[1] / "analysis" / "notebooks" / "adam_vs_sgd.ipynb"
    example = f"OPTSWEEP_EXPERIMENT={spec.DEFAULT_STORAGE}/{adam_vs_sgd.DEFAULTS.name} "
    assert example in notebook.read_text()


def test_a_failed_first_run_does_not_block_the_corrected_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first run that failed before any optimizer's experiment existed left study.json (with its
    wrong settings) and the lock file: the corrected command replaces the record and goes on to Ray."""

    def reached_ray(*args: object, **kwargs: object) -> None:
        raise RuntimeError("reached Ray")

    monkeypatch.setattr(ray, "init", reached_ray)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    experiment = tmp_path / "adam_vs_sgd-smoke"
    experiment.mkdir()
    (experiment / "study.json").write_text(json.dumps({"task": "digits", "num_samples": 8}))
    (experiment / ".optsweep.lock").write_text("pid 1")
    with pytest.raises(RuntimeError, match="reached Ray"):
        adam_vs_sgd.main(["--smoke", "--storage-path", str(tmp_path)])
    assert json.loads((experiment / "study.json").read_text())["num_samples"] == 2
    # Once the study's experiment exists, other settings are refused as before.
    (experiment / "search").mkdir()
    (experiment / "search" / "tuner.pkl").write_bytes(b"x")
    assert adam_vs_sgd.main(["--smoke", "--num-samples", "3", "--storage-path", str(tmp_path)]) == 2
    assert "holds a study with other settings" in _one_line_error(capsys)


def test_this_runs_resources_win_over_a_stored_trial_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from optsweep.trainables import trial

    seen: list[Any] = []
    monkeypatch.setattr(trial.loop, "train", lambda config, *args: seen.append(config))
    monkeypatch.setattr(trial.sessions, "TuneSession", lambda: None)
    stored = {"optimizer": "sgd", "lr": 0.1, "seed": 0, "settings": {"max_epochs": 1, "cpus_per_worker": 1.0}}
    run_trial(stored, run_settings={"cpus_per_worker": 0.5})
    assert seen[0].cpus_per_worker == 0.5 and stored["settings"]["cpus_per_worker"] == 1.0


def test_the_first_checkpoint_of_a_study_that_will_not_fit_triggers_one_warning(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint_000000"
    checkpoint.mkdir()
    (checkpoint / "state.pt").write_bytes(b"\0" * 100_000)
    said: list[str] = []
    forecast = retention.DiskForecast(str(tmp_path), trials_left=10**9, keep=1, say=said.append)
    running = [SimpleNamespace(status="RUNNING")]
    for _ in range(3):
        forecast.on_checkpoint(0, running, running[0], SimpleNamespace(path=str(checkpoint)))
    assert len(said) == 1 and "0.1 MB each, 1000000000 trials to go" in said[0]
    roomy = retention.DiskForecast(str(tmp_path), trials_left=2, keep=1, say=said.append)
    roomy.on_checkpoint(0, running, running[0], SimpleNamespace(path=str(checkpoint)))
    assert len(said) == 1


def test_signal_handling_stays_out_of_a_study_run_from_another_thread() -> None:
    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            with interrupts.StopOnSignal(), interrupts.tune_running():
                pass
        except BaseException as error:  # signal.signal raises ValueError off the main thread
            errors.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert errors == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_resumed_tuner_takes_this_runs_max_concurrent(tmp_path: Path) -> None:
    """Tune restores the stored TuneConfig with its searcher and scheduler; Ray 2.60 has no public setter,
    so the study sets this run's per-optimizer cap on them in place: the searcher's live cap, or, under
    per-configuration halving (which caps the running trials itself), the scheduler's."""
    from ray import tune

    from optsweep.sweeps import _ray_compat
    from optsweep.sweeps.early_stopping.halving import ConfigurationHalving
    from optsweep.sweeps.runner import safeguards
    from optsweep.sweeps.search.study_search import PerOptimizerSearch, PresetTrials

    def tuner(scheduler: Any) -> tune.Tuner:
        searcher = PerOptimizerSearch({"sgd": PresetTrials([{"x": 1}])}, {"sgd": 1}, max_live=3)
        return tune.Tuner(
            lambda config: None,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="t"),
        )

    args = StudySpec(name="x", storage_path=str(tmp_path), max_concurrent=1)
    fifo = tuner(None)
    safeguards.restored(fifo, args)
    assert _ray_compat.restored_tune_config(fifo).search_alg.max_live == 1
    halving = tuner(ConfigurationHalving(optsweep.Target("acc", "max"), 4, 2, 1, max_running=3))
    safeguards.restored(halving, args)
    config = _ray_compat.restored_tune_config(halving)
    assert config.scheduler.max_running == 1 and config.search_alg.max_live is None
