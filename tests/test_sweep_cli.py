"""Bad input to the headline study exits with one clear line before Ray starts; --smoke semantics."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

from optsweep.sweeps import adam_vs_sgd, cli
from optsweep.sweeps.record import identity
from optsweep.sweeps.runner import study
from optsweep.sweeps.runner.plan import prepare
from optsweep.sweeps.search import spaces
from optsweep.sweeps.spec import StudySpec

SCRIPT = Path(adam_vs_sgd.__file__)


def _parse(*argv: str) -> StudySpec:
    return cli.parse(list(argv), "test", "test", adam_vs_sgd.DEFAULTS)


BAD_INPUTS = [
    (["--optimizers", "sgd,adamm"], "unknown optimizer 'adamm' in --optimizers; valid: sgd, adam"),
    (["--optimizers", "sgd,sgd"], "--optimizers lists sgd more than once"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet' in --dataset; valid: digits"),
    (["--model", "vit"], "unknown model 'vit' in --model; valid: mlp, cnn, resnet18"),
    (["--schedules", "cosine,linear"], "unknown schedule 'linear' in --schedules; valid: constant"),
    (["--num-samples", "0"], "--num-samples 0 is invalid: it must be an integer >= 1"),
    (["--seeds", "0"], "--seeds 0 is invalid"),
    (["--max-epochs", "-1"], "--max-epochs -1 is invalid"),
    (["--workers-per-trial", "0"], "--workers-per-trial 0 is invalid"),
    (["--batch-size", "0"], "--batch-size 0 is invalid"),
    (["--max-concurrent", "0"], "--max-concurrent 0 is invalid"),
    (["--lr-min", "0.1", "--lr-max", "0.01"], "--lr-min 0.1 is greater than --lr-max 0.01"),
    (["--lr-min", "5"], "--lr-min 5 is greater than --lr-max 1 (the other end is sgd's default)"),
    (["--lr-min", "-1"], "--lr-min -1 is invalid: it must be a finite number > 0"),
    (["--cpus-per-worker", "0"], "--cpus-per-worker 0 is invalid"),
    (["--gpus-per-worker", "1"], "needs 1 GPUs per trial, but this machine has 0"),
    (["--name", "a/b"], "--name 'a/b' is invalid"),
    (["--scheduler", "hyperband"], "--scheduler 'hyperband' is invalid: it must be asha or fifo"),
    (["--num-samples", "many"], "argument --num-samples: invalid int value: 'many'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
]


@pytest.fixture
def ray_must_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sweep reached Ray before rejecting its input")

    monkeypatch.setattr(study, "_connect_ray", started)


@pytest.mark.usefixtures("ray_must_not_start")
@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_before_ray_starts(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = adam_vs_sgd.main([*argv, "--storage-path", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.usefixtures("ray_must_not_start")
def test_unwritable_storage_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert adam_vs_sgd.main(["--storage-path", str(blocker / "results")]) == 2
    err = capsys.readouterr().err
    assert f"--storage-path {blocker / 'results'} is not writable" in err
    assert err.count("\n") == 1


@pytest.mark.usefixtures("ray_must_not_start")
def test_missing_dataset_offline_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = adam_vs_sgd.main(
        ["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--storage-path", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: cifar10 is not in ") and err.count("\n") == 1


@pytest.mark.timeout(120)
def test_bad_input_from_the_command_line_has_no_traceback(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--optimizers", "adamx", "--storage-path", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: unknown optimizer 'adamx' in --optimizers; "
        "valid: sgd, adam, adamw, adagrad, rmsprop, lamb, lars, or an import path (my_pkg.opt:Lion)"
    ]
    assert "Traceback" not in run.stderr


def test_smoke_shrinks_the_study_and_explicit_flags_win(tmp_path: Path) -> None:
    smoke = _parse("--smoke", "--storage-path", str(tmp_path))
    assert (smoke.num_samples, smoke.seeds, smoke.max_epochs) == (2, 1, 2)
    assert smoke.name == "adam_vs_sgd-smoke"
    tuned = _parse("--smoke", "--seeds", "2", "--optimizers", "sgd", "--storage-path", str(tmp_path))
    assert (tuned.num_samples, tuned.seeds, tuned.optimizers) == (2, 2, ("sgd",))
    default = _parse("--storage-path", str(tmp_path))
    assert (default.num_samples, default.seeds, default.max_epochs) == (24, 3, None)  # None: the task's
    assert prepare(default).args.max_epochs == 20  # the digits task's budget
    assert default.storage_path == str(tmp_path)
    assert default.trials_per_optimizer == 72
    assert (default.confirm_seeds, smoke.confirm_seeds) == (10, 0)  # smoke: the search stage only


def test_lr_range_override_applies_to_every_optimizer(tmp_path: Path) -> None:
    args = _parse("--lr-min", "1e-4", "--lr-max", "1e-2", "--storage-path", str(tmp_path))
    for optimizer in args.optimizers:
        space = spaces.space_for(optimizer, lr_range=args.lr_range(optimizer))
        lrs = [c["lr"] for c in spaces.sample_configurations(space, 200, seed=0)]
        assert min(lrs) >= 1e-4 and max(lrs) <= 1e-2


def test_configurations_are_reproducible_and_independent_per_optimizer() -> None:
    adam = spaces.sample_configurations(spaces.space_for("adam"), 5, seed=0)
    assert adam == spaces.sample_configurations(spaces.space_for("adam"), 5, seed=0)
    assert adam != spaces.sample_configurations(spaces.space_for("adam"), 5, seed=1)
    adamw = spaces.sample_configurations(spaces.space_for("adamw"), 5, seed=0)
    assert [c["lr"] for c in adam] != [c["lr"] for c in adamw]
    sgd = spaces.sample_configurations(spaces.space_for("sgd"), 400, seed=0)
    zero_decay = sum(c["weight_decay"] == 0.0 for c in sgd) / len(sgd)
    assert 0.15 < zero_decay < 0.35  # "log-uniform including 0"
    assert {c["nesterov"] for c in sgd} == {True, False}
    assert all(0.5 <= c["momentum"] <= 0.99 for c in sgd)
    assert {c["schedule"] for c in sgd} == set(spaces.SCHEDULES)


def test_every_registered_optimizer_has_a_search_space_its_constructor_accepts() -> None:
    import torch

    from optsweep import optimizers

    for name in optimizers.names():
        for config in spaces.sample_configurations(spaces.space_for(name), 20, seed=0):
            hparams = {k: v for k, v in config.items() if k != "schedule"}
            optimizers.build(name, [torch.zeros(2, requires_grad=True)], **hparams)


@pytest.mark.usefixtures("ray_must_not_start")
def test_rerun_with_other_study_settings_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = tmp_path / "adam_vs_sgd"
    (experiment / "search").mkdir(parents=True)
    (experiment / "search" / "tuner.pkl").write_bytes(b"")  # the study has started: its record is binding
    recorded = prepare(_parse("--storage-path", str(tmp_path))).identity()
    recorded["num_samples"] = 8
    (experiment / study.STUDY_FILE).write_text(json.dumps(recorded))
    assert adam_vs_sgd.main(["--storage-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds a study with other settings (num_samples 8 -> 24)" in err
    assert err.count("\n") == 1


@pytest.mark.usefixtures("ray_must_not_start")
def test_a_record_from_before_tasks_is_compared_in_its_own_terms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """study.json written before tasks named a dataset and a model: the same study is recognised (it would
    resume), another one is refused naming the difference."""
    experiment = tmp_path / "adam_vs_sgd"
    (experiment / "search").mkdir(parents=True)
    (experiment / "search" / "tuner.pkl").write_bytes(b"")
    legacy = {
        "optimizers": ["sgd", "adam", "adamw"],
        "num_samples": 24,
        "seeds": 5,
        "max_epochs": 20,
        "dataset": "digits",
        "model": "cnn",
        "batch_size": 64,
        "schedules": ["constant", "step", "cosine", "warmup_cosine"],
        "lr_min": None,
        "lr_max": None,
        "scheduler": "asha",
        "search": "random",
        "search_seed": 0,
        "workers_per_trial": 1,
        "created": "2026-11-20T10:00:00+0000",
    }
    # The legacy study's own budget: 5 search seeds, and no confirmation stage back then.
    same = ("--seeds", "5", "--confirm-seeds", "0")
    current = prepare(_parse("--storage-path", str(tmp_path), "--model", "cnn", *same)).identity()
    assert identity.differences(legacy, current) == []
    # The training mode joined the record later: a study recorded without it ran synchronously.
    assert identity.differences({**current, "mode": "zero1"}, current) == ["mode 'zero1' -> 'sync'"]
    assert identity.differences({k: v for k, v in current.items() if k != "mode"}, current) == []
    other = prepare(_parse("--storage-path", str(tmp_path), "--model", "mlp", *same)).identity()
    assert identity.differences(legacy, other) == ["task_args {'model': 'cnn'} -> {}"]
    (experiment / study.STUDY_FILE).write_text(json.dumps(legacy))
    assert adam_vs_sgd.main(["--storage-path", str(tmp_path)]) == 2
    assert "task_args {'model': 'cnn'} -> {}" in capsys.readouterr().err


@pytest.mark.usefixtures("ray_must_not_start")
def test_a_second_sweep_on_the_same_experiment_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = tmp_path / "adam_vs_sgd"
    experiment.mkdir()
    with open(experiment / study.LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 4242")
        held.flush()
        assert adam_vs_sgd.main(["--storage-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "another sweep (pid 4242) is running on" in err
    assert err.count("\n") == 1
