"""Optimizers side by side (issue 12, item 4): `sweeps.runner.side_by_side` runs callables in threads with one
graceful stop (Tune's own, resumable) reaching every fit; end to end, a 3-optimizer study runs its
optimizers' trials at the same time, gives the same trials table twice, and a Ctrl-C stops every
optimizer resumably."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from optsweep.sweeps.cluster import interrupts
from optsweep.sweeps.runner import side_by_side
from optsweep.sweeps.spec import StudySpec

WAIT_S = 30.0


def _tune_event() -> threading.Event:
    """What a Tune fit does first in its thread: ask for the Event that ends its loop gracefully."""
    import ray.tune.tune

    return ray.tune.tune._setup_signal_catching()


def _fit_like(started: threading.Barrier | None = None, result: Any = None) -> Callable[[], Any]:
    """A runner that behaves like `Tuner.fit`: runs until its Event is set (gracefully stopped)."""

    def run() -> Any:
        event = _tune_event()
        if started is not None:
            started.wait(timeout=WAIT_S)
        assert event.wait(timeout=WAIT_S), "the graceful stop never reached this runner"
        return result

    return run


def _signal_after(started: threading.Barrier, signum: int) -> None:
    started.wait(timeout=WAIT_S)
    os.kill(os.getpid(), signum)


# ------------------------------------------------------------------------------------ unit tests
def test_runners_run_at_the_same_time_and_their_results_come_back_in_order() -> None:
    together = threading.Barrier(3)

    def runner(value: int) -> Callable[[], int]:
        def run() -> int:
            _tune_event()  # set up: the next runner may start
            together.wait(timeout=WAIT_S)  # all three must be running at once to pass
            return value

        return run

    assert side_by_side.run([runner(1), runner(2), runner(3)], names=["a", "b", "c"]) == [1, 2, 3]


def test_one_runner_runs_in_the_calling_thread_with_nothing_wrapped() -> None:
    import ray.tune.tune

    original = ray.tune.tune._setup_signal_catching
    seen: list[Any] = []

    def run() -> str:
        seen.append((threading.current_thread(), ray.tune.tune._setup_signal_catching))
        return "done"

    assert side_by_side.run([run]) == ["done"]
    assert seen == [(threading.current_thread(), original)]
    assert side_by_side.run([]) == []


def test_an_error_in_one_runner_stops_the_others_gracefully_then_surfaces() -> None:
    started = threading.Barrier(3)

    def failing() -> None:
        _tune_event()
        started.wait(timeout=WAIT_S)
        raise ValueError("bad optimizer")

    began = time.monotonic()
    with pytest.raises(ValueError, match="bad optimizer"):
        side_by_side.run([_fit_like(started), failing, _fit_like(started)], names=["sgd", "adam", "adamw"])
    assert time.monotonic() - began < WAIT_S  # the others returned because their Event was set


def test_every_runner_that_failed_is_named() -> None:
    def failing(message: str) -> Callable[[], None]:
        def run() -> None:
            raise RuntimeError(message)

        return run

    with pytest.raises(RuntimeError) as raised:
        side_by_side.run([failing("one"), failing("two")], names=["sgd", "adam"])
    other = "two" if str(raised.value) == "one" else "one"
    assert any(f"failed: RuntimeError: {other}" in note for note in raised.value.__notes__)


def test_a_keyboard_interrupt_in_a_runner_surfaces_as_such() -> None:
    def interrupted() -> None:
        raise interrupts.StudyInterrupted(signal.SIGINT)

    with pytest.raises(interrupts.StudyInterrupted) as raised:
        side_by_side.run([_fit_like(), interrupted])
    assert raised.value.exit_code == 130


def test_sigusr1_stops_every_fit_gracefully_and_the_handler_is_put_back() -> None:
    started = threading.Barrier(4)
    before = signal.getsignal(signal.SIGUSR1)
    stopper = threading.Thread(target=_signal_after, args=(started, signal.SIGUSR1))
    stopper.start()
    results = side_by_side.run([_fit_like(started, "a"), _fit_like(started, "b"), _fit_like(started, "c")])
    stopper.join()
    assert results == ["a", "b", "c"]
    assert signal.getsignal(signal.SIGUSR1) is before


def test_a_fit_that_starts_after_the_stop_stops_at_once() -> None:
    stop = side_by_side.SharedStop()
    stop.request()
    event = threading.Event()
    stop.register(event)
    assert event.is_set() and stop.fits == 1


def test_the_second_signal_leaves_at_once_without_waiting_for_the_fits() -> None:
    """What the study's second Ctrl-C does: its handler raises in the waiting (main) thread."""
    release = threading.Event()
    started = threading.Barrier(3)
    events: list[threading.Event] = []

    def stubborn() -> None:  # a fit still writing its last snapshot
        events.append(_tune_event())
        started.wait(timeout=WAIT_S)
        release.wait(timeout=WAIT_S)

    def force(signum: int, frame: Any) -> None:
        raise interrupts.StudyInterrupted(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, force)
    stopper = threading.Thread(target=_signal_after, args=(started, signal.SIGINT))
    stopper.start()
    try:
        began = time.monotonic()
        with pytest.raises(interrupts.StudyInterrupted):
            side_by_side.run([stubborn, stubborn])
        assert time.monotonic() - began < WAIT_S / 2
        assert len(events) == 2 and all(event.is_set() for event in events)  # asked to stop, too
    finally:
        signal.signal(signal.SIGINT, previous)
        release.set()
        stopper.join()


def test_tunes_hook_is_put_back_after_a_run() -> None:
    import ray.tune.tune

    original = ray.tune.tune._setup_signal_catching
    with pytest.raises(ValueError):
        side_by_side.run([lambda: None, _raise_value_error])
    assert ray.tune.tune._setup_signal_catching is original
    # Outside a run's threads the wrapped hook hands out plain Events that nothing sets.
    assert not _tune_event().is_set()


def _raise_value_error() -> None:
    raise ValueError("x")


def test_concurrent_writes_stay_whole_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)

    def chatty(name: str) -> Callable[[], None]:
        def run() -> None:
            _tune_event()
            for i in range(200):
                print(f"[{name}]", "line", i, "of", 200)  # print writes its pieces one by one
                sys.stdout.write(f"[{name}] partial ")
                sys.stdout.write("then whole\n")

        return run

    side_by_side.run([chatty("sgd"), chatty("adam"), chatty("adamw")])
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 * 400
    for line in lines:
        name = line.split("]")[0] + "]"
        assert line in {f"{name} line {i} of 200" for i in range(200)} | {f"{name} partial then whole"}, line
    assert sys.stdout is out


def test_runners_set_up_one_at_a_time_until_their_fit_begins() -> None:
    """Tune's registries are plain dicts: `with_parameters`, `Tuner(...)` and the start of `fit` run in one
    runner at a time; the fits' loops run together."""
    active, most = [], [0]
    lock = threading.Lock()
    together = threading.Barrier(3)

    def runner() -> None:
        with lock:
            active.append(1)
            most[0] = max(most[0], len(active))
        time.sleep(0.05)  # setting up
        with lock:
            active.pop()
        _tune_event()  # the fit's loop begins
        together.wait(timeout=WAIT_S)

    side_by_side.run([runner, runner, runner])
    assert most[0] == 1


def test_each_runner_has_its_own_namespace_in_tunes_registry() -> None:
    """Every optimizer's trainable is registered as `run_trial`; Tune looks it up by name for each trial
    actor, in the fit's thread, so each runner must see its own registration."""
    import ray.tune.registry

    keys: list[bytes] = []

    def runner() -> None:
        keys.append(ray.tune.registry._make_key("job", "trainable_class", "run_trial"))
        _tune_event()

    side_by_side.run([runner, runner])
    outside = ray.tune.registry._make_key("job", "trainable_class", "run_trial")
    assert len(set(keys)) == 2 and outside not in keys
    assert outside == b"TuneRegistry:job:trainable_class/run_trial"  # put back after the run


def test_tune_running_is_the_main_threads_business() -> None:
    """A fit in a runner thread neither installs signal handlers (it cannot) nor ends the study itself."""
    with interrupts.StopOnSignal() as handler:
        seen: list[bool] = []

        def in_thread() -> None:
            with interrupts.tune_running():
                seen.append(handler._in_tune)

        with interrupts.tune_running():
            side_by_side.run([in_thread, in_thread])
            with interrupts.tune_running():  # nested in the main thread: the outer one still runs Tune
                pass
            assert handler._in_tune
        assert seen == [True, True] and not handler._in_tune


def test_the_queue_share_splits_the_clusters_trial_slots_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import ray

    from optsweep.sweeps.cluster import feasibility
    from optsweep.sweeps.runner import tuner

    cluster = feasibility.Cluster(nodes=[{"CPU": 8.0, "GPU": 1.0}])
    monkeypatch.setattr(feasibility, "snapshot", lambda local: cluster)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    args = StudySpec(name="x", optimizers=("sgd", "adam", "adamw"))
    assert tuner.queue_share(args) == 3  # 8 slots: ceil(8 / 3)
    assert tuner.queue_share(dataclasses.replace(args, optimizers=("sgd",))) == 8
    assert tuner.queue_share(dataclasses.replace(args, cpus_per_worker=2.0, workers_per_trial=2)) == 1
    assert tuner.queue_share(dataclasses.replace(args, gpus_per_worker=0.5)) == 1  # 2 GPU slots
    cluster = feasibility.Cluster(nodes=[{"CPU": 8.0}], node_types=[({"CPU": 8.0}, 10)])
    assert tuner.queue_share(args) is None  # autoscaling: Tune's own queue makes it add nodes


# --------------------------------------------------------------------------- with a real Ray Tune
def _make_slow_trainable() -> Callable[..., None]:
    # Built inside a function so that cloudpickle ships it by value: Ray's workers cannot import tests/.
    def slow_trainable(config: dict[str, Any], marker: str = "") -> None:
        import tempfile

        from ray import tune

        checkpoint = tune.get_checkpoint()
        start = 0
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                start = int(Path(directory, "step").read_text())
        for step in range(start, 40):
            time.sleep(0.25)
            with tempfile.TemporaryDirectory() as directory:
                Path(directory, "step").write_text(str(step + 1))
                metrics = {"step": step + 1, "marker": marker}
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    return slow_trainable


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fits_in_threads_stop_resumably_and_resume_to_the_end(ray_session: None, tmp_path: Path) -> None:
    from ray import tune

    def trainable(name: str) -> Any:  # both named _slow_trainable, bound to different markers
        return tune.with_resources(tune.with_parameters(_make_slow_trainable(), marker=name), {"cpu": 0.5})

    def tuner(name: str) -> tune.Tuner:
        return tune.Tuner(
            trainable(name),
            tune_config=tune.TuneConfig(num_samples=1),
            run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0),
        )

    def results() -> dict[str, list[dict[str, Any]]]:
        found = {}
        for name in ("one", "two"):
            lines = [p.read_text().splitlines() for p in (tmp_path / name).glob("*/result.json")]
            found[name] = [json.loads(line) for line in (lines[0] if lines else [])]
        return found

    finished = threading.Event()

    def stop_when_both_report() -> None:  # what the study's first Ctrl-C raises
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(len(r) >= 2 for r in results().values()):
            if finished.wait(0.1):
                return
        os.kill(os.getpid(), signal.SIGUSR1)

    stopper = threading.Thread(target=stop_when_both_report, daemon=True)
    stopper.start()
    try:
        grids = side_by_side.run([tuner("one").fit, tuner("two").fit], names=["one", "two"])
    finally:
        finished.set()
        stopper.join()
    for grid in grids:  # stopped before the end, and not marked finished
        assert grid[0].metrics["step"] < 40
    for name in ("one", "two"):
        state = json.loads(next((tmp_path / name).glob("experiment_state-*.json")).read_text())
        statuses = [json.loads(trial[0])["status"] for trial in state["trial_data"]]
        assert statuses and "TERMINATED" not in statuses, statuses
    resumed = side_by_side.run(
        [
            tune.Tuner.restore(str(tmp_path / name), trainable(name), resume_unfinished=True).fit
            for name in ("one", "two")
        ]
    )
    for grid in resumed:
        assert grid[0].metrics["step"] == 40
    for name, lines in results().items():  # continued from its checkpoint, not started again
        assert {line["marker"] for line in lines} == {name}  # each fit ran its own trainable
        steps = [line["step"] for line in lines]
        assert steps.count(1) == 1 and sorted(set(steps)) == list(range(1, 41)), (name, steps)


# -------------------------------------------------------------------------------- end to end
# 3 configurations x 1 seed per optimizer, 4 epochs of the CNN (long enough for trials to overlap in
# time), rungs at epochs 1 and 3; an LR range in which nothing diverges on digits.
E2E_OPTIMIZERS = ("sgd", "adam", "adamw")
# Long enough that two optimizers' trials overlap by seconds (with 4 epochs an optimizer's trials all
# ran within ~2 s, and the 1 s resolution of Tune's timestamps made their overlap uncertain).
E2E_ARGV = ["--smoke", "--no-fuse", "--model", "cnn", "--num-samples", "3", "--seeds", "1"]
E2E_ARGV += ["--max-epochs", "12", "--lr-max", "0.05", "--optimizers", ",".join(E2E_OPTIMIZERS)]
E2E_ARGV += ["--name", "side"]
RUN_DEPENDENT = ["trial_id", "time_s", "node_id", "trial_dir", "tune_status", "error_message", "data_dir"]


def _trials(experiment: Path) -> Any:
    import pandas as pd

    trials = pd.read_csv(experiment / "report" / "trials.csv")
    comparable = trials.drop(columns=[c for c in RUN_DEPENDENT if c in trials.columns])
    return comparable.sort_values(["optimizer", "config_id", "seed"], ignore_index=True)


def _spans(experiment: Path) -> dict[str, tuple[float, float]]:
    """Per optimizer: when its first trial began training and its last trial's last result came
    (Tune's `timestamp`, whole seconds)."""
    spans = {}
    for optimizer in E2E_OPTIMIZERS:
        starts, ends = [], []
        for path in (experiment / optimizer).glob("*/result.json"):
            results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            starts.append(results[0]["timestamp"] - results[0]["time_this_iter_s"])
            ends.append(results[-1]["timestamp"])
        spans[optimizer] = (min(starts), max(ends))
    return spans


@pytest.fixture(scope="module")
def two_side_by_side_runs(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from optsweep.sweeps import adam_vs_sgd

    runs = []
    for run in ("first", "second"):
        storage = tmp_path_factory.mktemp(run)
        assert adam_vs_sgd.main([*E2E_ARGV, "--storage-path", str(storage)]) == 0
        runs.append(storage / "side")
    return runs[0], runs[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_optimizers_trials_run_at_the_same_time(two_side_by_side_runs: tuple[Path, Path]) -> None:
    for experiment in two_side_by_side_runs:
        spans = _spans(experiment)
        # One after another, each optimizer would start after the previous one's last result. (On 2 cores
        # the third optimizer may wait: an optimizer keeps the slots its trials hold while it has trials
        # to start, see tuner.queue_share.)
        overlaps = [
            min(spans[a][1], spans[b][1]) - max(spans[a][0], spans[b][0])
            for a in E2E_OPTIMIZERS
            for b in E2E_OPTIMIZERS
            if a < b
        ]
        assert max(overlaps) > 1, spans


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_same_command_gives_the_same_trials_table_side_by_side(
    two_side_by_side_runs: tuple[Path, Path],
) -> None:
    import pandas as pd

    first, second = two_side_by_side_runs
    trials = _trials(first)
    assert sorted(set(trials["optimizer"])) == sorted(E2E_OPTIMIZERS) and len(trials) == 9
    pd.testing.assert_frame_equal(trials, _trials(second))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ctrl_c_stops_every_optimizer_resumably_and_the_rerun_resumes_them_all(
    two_side_by_side_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess

    import pandas as pd
    import ray

    from optsweep.sweeps import adam_vs_sgd
    from optsweep.trainables import faults

    argv = [*E2E_ARGV, "--storage-path", str(tmp_path)]
    experiment = tmp_path / "side"
    # Ctrl-C once every optimizer has its first result (a known point: not a race with the machine's load);
    # Tune creates trials lazily, so some are created only after the restore.
    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    faults.signal_marker(fault_dir, signal.SIGINT, "group", results=1).touch()
    driver = subprocess.Popen(
        [sys.executable, adam_vs_sgd.__file__, *argv, "--address", ray.get_runtime_context().gcs_address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, faults.ENV: str(fault_dir)},
    )
    try:
        out = driver.communicate(timeout=300)[0].decode()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    assert driver.returncode == 130, out
    assert f"Run the same command again to resume {experiment}" in out
    assert not (experiment / "report").exists()
    for optimizer in E2E_OPTIMIZERS:  # every optimizer started once, and none after the Ctrl-C
        assert out.count(f"Starting {optimizer}:") == 1, out
    assert "Starting" not in out.split("SIGINT: stopping")[1], out
    unfinished = 0
    for optimizer in E2E_OPTIMIZERS:  # each one's state saved, its unfinished trials not ended
        state = json.loads(next((experiment / optimizer).glob("experiment_state-*.json")).read_text())
        statuses = [json.loads(trial[0])["status"] for trial in state["trial_data"]]
        unfinished += sum(status != "TERMINATED" for status in statuses)
    assert unfinished > 0

    assert adam_vs_sgd.main(argv) == 0
    out = capsys.readouterr().out
    for optimizer in E2E_OPTIMIZERS:
        assert f"Resuming {optimizer}" in out, out
    # Every trial ends where it ended uninterrupted: a seed restored while it waited at a rung waits on
    # paused (Tune would otherwise start it, and it would train one epoch past the rung).
    pd.testing.assert_frame_equal(_trials(experiment), _trials(two_side_by_side_runs[0]))
