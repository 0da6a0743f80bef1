"""The asynchronous parameter server (trainables.param_server): staleness-aware updates, convergence on
digits with recorded staleness, a killed worker replaced, a killed server resumed from its checkpoint,
and the --mode flag's checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from optsweep import vocabulary as v
from optsweep.errors import OptsweepError
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables import checkpoints, faults, param_server
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.sessions import LocalSession
from optsweep.trainables.tasks import build_task
from optsweep.trainables.trial import actor_bundles, trial_resources

EPOCHS = 4


def _config(**settings: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "optimizer": "adam",
        "hparams": {"lr": 0.003},
        "mode": "async-ps",
        "workers": 2,
        "cpus_per_worker": 0.5,
        "max_epochs": EPOCHS,
        "seed": 3,
    } | settings
    return TrainConfig(**values)


def _grads(server: param_server.ParameterServer, value: float) -> list[torch.Tensor]:
    return [torch.full_like(p, value) for p in server.params]


def test_staleness_recorded_and_lr_divided_by_it() -> None:
    """Driven in-process: a gradient 2 updates stale moves the parameters half as far with the aware lr."""
    task = build_task("digits", {})
    for aware, expected_scale in ((False, 1.0), (True, 0.5)):
        config = _config(optimizer="sgd", hparams={"lr": 0.1}, staleness_aware_lr=aware)
        server = param_server.ParameterServer(config, task, None, per_epoch=100, state=None)
        server.push(_grads(server, 0.0), pulled=0, loss=1.0, samples=1)
        server.push(_grads(server, 0.0), pulled=1, loss=1.0, samples=1)
        before = [p.detach().clone() for p in server.params]
        version, params, epoch, done = server.push(_grads(server, 1.0), pulled=0, loss=1.0, samples=1)
        assert (version, epoch, done) == (3, 1, False)
        assert server.counts == [2, 0, 1]  # staleness 0, 0, 2
        for old, new in zip(before, params, strict=True):
            torch.testing.assert_close(old - new, torch.full_like(old, 0.1 * expected_scale))


def test_diverging_gradient_ends_the_run() -> None:
    server = param_server.ParameterServer(_config(), build_task("digits", {}), None, per_epoch=10, state=None)
    *_, done = server.push(_grads(server, 0.0), pulled=0, loss=float("nan"), samples=1)
    assert done and server.wait_snapshot(1, timeout_s=1)["stats"][v.DIVERGED_FLAG]


def test_resources_name_the_server_and_every_worker() -> None:
    config = _config(workers=3, cpus_per_worker=1.0)
    assert trial_resources(config)["CPU"] == 0.0
    bundles = actor_bundles(config)
    assert len(bundles) == 4 and bundles[0]["CPU"] == 0.0 and all(b["CPU"] == 1.0 for b in bundles[1:])


def _check_learned(
    session: LocalSession, config: TrainConfig, *, restarts: tuple[int, int]
) -> dict[str, Any]:
    reports = session.reports
    last = reports[-1]
    task = build_task("digits", {})
    per_epoch = param_server.updates_per_epoch(len(task.data().train), task.batch_size, config.workers)
    assert [r[v.EPOCH] for r in reports] == list(range(1, EPOCHS + 1))
    assert last[v.UPDATES] == EPOCHS * per_epoch
    assert last[v.VAL_PREFIX + "acc"] > 0.85, last
    assert (last[param_server.WORKER_RESTARTS], last[param_server.SERVER_RESTARTS]) == restarts
    for report in reports:
        assert 0 <= report[v.STALENESS_P50] <= report[v.STALENESS_MAX]
    # The last checkpoint holds every update's staleness.
    state, _ = checkpoints.load(sorted(session.checkpoint_root.glob("checkpoint_*"))[-1], 0)
    counts = state[v.STALENESS_COUNTS]
    assert int(counts.sum()) == last[v.UPDATES]
    return last


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_session")
def test_converges_on_digits_with_staleness_and_survives_a_killed_worker(
    tmp_path: Path, fault_dir: Path
) -> None:
    marker = faults.crash_marker(fault_dir, rank=1, epoch=2)
    marker.touch()
    config = _config()
    session = LocalSession(tmp_path / "ckpt", device=torch.device("cpu"))
    param_server.run(config, session)
    assert marker.with_name(marker.name + ".fired").exists()  # the worker really died
    _check_learned(session, config, restarts=(1, 0))
    # Two workers pushing without waiting: in epoch 1 (both alive) a gradient is ~1 update stale on
    # average. (After the kill, the other worker runs alone until the replacement is up.)
    assert 0.5 < session.reports[0][v.STALENESS_MEAN] < 2.0, session.reports[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_session")
def test_killed_server_resumes_from_its_last_checkpoint(tmp_path: Path, fault_dir: Path) -> None:
    marker = param_server.server_crash_marker(fault_dir, epoch=3)
    marker.touch()
    config = _config()
    session = LocalSession(tmp_path / "ckpt", device=torch.device("cpu"))
    param_server.run(config, session)
    assert marker.with_name(marker.name + ".fired").exists()
    _check_learned(session, config, restarts=(0, 1))
    # The server died at its first update of epoch 3; the driver had checkpointed epoch 2, or (if the
    # server died before the driver fetched that snapshot) epoch 1, and the run went on from there.
    resumed = [r for r in session.reports if v.RESUMED_FROM_EPOCH in r]
    assert len(resumed) == 1 and resumed[0][v.RESUMED_FROM_EPOCH] == resumed[0][v.EPOCH] - 1 in (1, 2)


# The mode inside a Tune trial (the sweeps' path) is run end to end by tests/test_sync_vs_async.py.


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mode", "zero1"], "--mode zero1 shards the optimizer state across a trial's workers: it needs"),
        (["--mode", "ps"], "--mode 'ps' is invalid: it must be sync, zero1, async-ps"),
        (["--staleness-aware-lr"], "--staleness-aware-lr is for --mode async-ps"),
    ],
)
def test_mode_flag_checked_in_one_line(argv: list[str], message: str) -> None:
    from optsweep.sweeps import cli

    with pytest.raises(OptsweepError, match=message):
        cli.parse(argv, "prog", "description", StudySpec(name="modes"))
    argv = ["--mode", "async-ps", "--workers-per-trial", "3", "--staleness-aware-lr"]
    config = TrainConfig(**cli.parse(argv, "p", "d", StudySpec(name="modes")).settings())
    assert (config.mode, config.workers, config.staleness_aware_lr) == ("async-ps", 3, True)
