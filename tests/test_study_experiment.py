"""A study is one Tune experiment per stage, every optimizer's trials in it (issue 22, item 1): end to end,
a 3-optimizer study runs its optimizers' trials at the same time, gives the same trials table twice, and a
Ctrl-C stops every optimizer resumably; Tune's queue of waiting trials is the cluster's trial slots."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from optsweep.sweeps import adam_vs_sgd, cli
from optsweep.sweeps.record import layout
from optsweep.sweeps.runner import study
from optsweep.sweeps.runner.plan import prepare
from optsweep.sweeps.spec import StudySpec


def test_the_queue_holds_as_many_trials_as_the_cluster_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials are created round-robin over the optimizers; a queue of the cluster's trial slots fills the
    cluster in equal shares (Tune's own queue for a searcher is one trial)."""
    import dataclasses

    import ray

    from optsweep.sweeps.cluster import feasibility
    from optsweep.sweeps.runner import tuner

    cluster = feasibility.Cluster(nodes=[{"CPU": 8.0, "GPU": 1.0}])
    monkeypatch.setattr(feasibility, "snapshot", lambda local: cluster)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    args = StudySpec(name="x", optimizers=("sgd", "adam", "adamw"))
    assert tuner.queue_share(args) == 8
    assert tuner.optimizer_share(args) == 3  # ceil(8 / 3): how many fused groups keep an optimizer busy
    assert tuner.queue_share(dataclasses.replace(args, cpus_per_worker=2.0, workers_per_trial=2)) == 2
    assert tuner.queue_share(dataclasses.replace(args, gpus_per_worker=0.5)) == 2  # 2 GPU slots
    cluster = feasibility.Cluster(nodes=[{"CPU": 8.0}], node_types=[({"CPU": 8.0}, 10)])
    assert tuner.queue_share(args) == tuner.AUTOSCALING_QUEUE  # the queue makes the autoscaler add nodes


def test_a_study_an_older_optsweep_ran_per_optimizer_is_refused_in_one_line_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sweep reached Ray before refusing the old layout")

    monkeypatch.setattr(study, "_connect_ray", started)
    argv = ["--smoke", "--storage-path", str(tmp_path)]
    record = prepare(cli.parse(argv, "t", "t", adam_vs_sgd.DEFAULTS)).identity()
    experiment = tmp_path / "adam_vs_sgd-smoke"
    (experiment / "sgd").mkdir(parents=True)
    (experiment / "sgd" / "tuner.pkl").write_bytes(b"")  # an optimizer's own experiment
    (experiment / study.STUDY_FILE).write_text(json.dumps(record))
    assert adam_vs_sgd.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "one Tune experiment per optimizer (sgd/)" in err and f"optsweep report {experiment}" in err
    assert not (experiment / "search").exists()
    assert layout.per_optimizer_experiments(str(experiment), ["sgd", "adam"]) == ["sgd"]
    (experiment / "adam-confirm").mkdir()
    (experiment / "adam-confirm" / "tuner.pkl").write_bytes(b"")
    assert layout.per_optimizer_experiments(str(experiment), ["sgd", "adam"]) == ["sgd", "adam-confirm"]


@pytest.mark.parametrize("label", layout.RESERVED)
def test_no_optimizer_may_take_the_name_of_a_study_directory(label: str, tmp_path: Path) -> None:
    from optsweep.errors import OptsweepError
    from optsweep.sweeps.search import contenders

    with pytest.raises(OptsweepError, match=f"optimizer label '{label}' is invalid: search, confirm, report"):
        contenders.resolve({label: "adam"}, {})


# -------------------------------------------------------------------------------- end to end
# 3 configurations x 1 seed per optimizer, 4 epochs of the CNN (long enough for trials to overlap in
# time), rungs at epochs 1 and 3; an LR range in which nothing diverges on digits.
E2E_OPTIMIZERS = ("sgd", "adam", "adamw")
# Long enough that two optimizers' trials overlap by seconds (with 4 epochs an optimizer's trials all
# ran within ~2 s, and the 1 s resolution of Tune's timestamps made their overlap uncertain).
E2E_ARGV = ["--smoke", "--no-fuse", "--model", "cnn", "--num-samples", "3", "--seeds", "1"]
E2E_ARGV += ["--max-epochs", "12", "--lr-max", "0.05", "--optimizers", ",".join(E2E_OPTIMIZERS)]
E2E_ARGV += ["--name", "one"]
RUN_DEPENDENT = ["trial_id", "time_s", "node_id", "trial_dir", "tune_status", "error_message", "data_dir"]


def _trials(experiment: Path) -> Any:
    import pandas as pd

    trials = pd.read_csv(experiment / "report" / "trials.csv")
    comparable = trials.drop(columns=[c for c in RUN_DEPENDENT if c in trials.columns])
    return comparable.sort_values(["optimizer", "config_id", "seed"], ignore_index=True)


def _spans(experiment: Path) -> dict[str, tuple[float, float]]:
    """Per optimizer: when its first trial began training and its last trial's last result came
    (Tune's `timestamp`, whole seconds)."""
    starts: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    for path in (experiment / "search").glob("*/result.json"):
        optimizer = json.loads((path.parent / "params.json").read_text())["optimizer"]
        results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        starts.setdefault(optimizer, []).append(results[0]["timestamp"] - results[0]["time_this_iter_s"])
        ends.setdefault(optimizer, []).append(results[-1]["timestamp"])
    return {optimizer: (min(starts[optimizer]), max(ends[optimizer])) for optimizer in E2E_OPTIMIZERS}


@pytest.fixture(scope="module")
def two_runs(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from optsweep.sweeps import adam_vs_sgd

    runs = []
    for run in ("first", "second"):
        storage = tmp_path_factory.mktemp(run)
        assert adam_vs_sgd.main([*E2E_ARGV, "--storage-path", str(storage)]) == 0
        runs.append(storage / "one")
    return runs[0], runs[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_optimizers_trials_run_at_the_same_time(two_runs: tuple[Path, Path]) -> None:
    for experiment in two_runs:
        spans = _spans(experiment)
        # One after another, each optimizer would start after the previous one's last result.
        overlaps = [
            min(spans[a][1], spans[b][1]) - max(spans[a][0], spans[b][0])
            for a in E2E_OPTIMIZERS
            for b in E2E_OPTIMIZERS
            if a < b
        ]
        assert max(overlaps) > 1, spans


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_same_command_gives_the_same_trials_table(
    two_runs: tuple[Path, Path],
) -> None:
    import pandas as pd

    first, second = two_runs
    trials = _trials(first)
    assert sorted(set(trials["optimizer"])) == sorted(E2E_OPTIMIZERS) and len(trials) == 9
    pd.testing.assert_frame_equal(trials, _trials(second))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ctrl_c_stops_every_optimizer_resumably_and_the_rerun_resumes_them_all(
    two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess

    import pandas as pd
    import ray

    from optsweep.sweeps import adam_vs_sgd
    from optsweep.trainables import faults

    argv = [*E2E_ARGV, "--storage-path", str(tmp_path)]
    experiment = tmp_path / "one"
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
    # The search's state saved, with unfinished trials of every optimizer not ended.
    state = json.loads(next((experiment / "search").glob("experiment_state-*.json")).read_text())
    configs = [json.loads(trial[0]) for trial in state["trial_data"]]
    unfinished = {c["config"]["optimizer"] for c in configs if c["status"] != "TERMINATED"}
    assert unfinished, [c["status"] for c in configs]

    assert adam_vs_sgd.main(argv) == 0
    out = capsys.readouterr().out
    assert "Resuming the search" in out, out
    # Every trial ends where it ended uninterrupted: a seed restored while it waited at a rung waits on
    # paused (Tune would otherwise start it, and it would train one epoch past the rung).
    pd.testing.assert_frame_equal(_trials(experiment), _trials(two_runs[0]))
