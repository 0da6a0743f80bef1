"""ZeRO-1 (trainables.zero): sharded optimizer state equals the unsharded optimizer for every optimizer
with 2 gloo workers, keeps ~1/N of the state per worker, its consolidated checkpoints resume on another
worker count, and the real loop trains digits through a 2-worker TorchTrainer in mode zero1 (surviving a
killed worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import zero_workers
from torch import nn

from optsweep import optimizers
from optsweep.trainables import zero

STEPS = 6


def test_partition_balances_by_numel_and_is_deterministic() -> None:
    numels = [1000, 10, 600, 400, 5, 5]
    owners = zero.partition(numels, 2)
    loads = [sum(n for n, o in zip(numels, owners, strict=True) if o == r) for r in range(2)]
    assert owners == zero.partition(numels, 2)
    assert sorted(loads) == [1010, 1010]
    assert zero.partition(numels, 1) == [0] * len(numels)
    assert set(zero.partition([1, 1], 4)) == {0, 1}  # more workers than tensors: some own nothing
    with pytest.raises(ValueError, match="Invalid world_size: 0"):
        zero.partition(numels, 0)


def test_single_process_sharded_optimizer_is_the_optimizer() -> None:
    """Without a process group it shards over one worker: same steps, same state dict, tensor lr kept."""
    net_a, net_b = zero_workers.model(), zero_workers.model()
    sharded = zero.ShardedOptimizer(zero_workers.groups(net_a), zero_workers.builder("adam"))
    plain = zero_workers.builder("adam")(zero_workers.groups(net_b))
    scheduler = torch.optim.lr_scheduler.StepLR(sharded, step_size=2, gamma=0.5)
    reference = torch.optim.lr_scheduler.StepLR(plain, step_size=2, gamma=0.5)
    for step in range(5):
        for net, optimizer in ((net_a, sharded), (net_b, plain)):
            zero_workers.local_gradients(net, step, 0, 1)
            optimizer.step()
        scheduler.step()
        reference.step()
    for a, b in zip(net_a.parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sharded.local.param_groups[0]["lr"] == plain.param_groups[0]["lr"] == 0.01 * 0.25
    torch.testing.assert_close(sharded.state_dict()["state"], plain.state_dict()["state"])


def test_adding_a_parameter_group_later_is_refused() -> None:
    sharded = zero.ShardedOptimizer(zero_workers.groups(zero_workers.model()), zero_workers.builder("sgd"))
    with pytest.raises(NotImplementedError, match="add_param_group after it is not supported"):
        sharded.add_param_group({"params": [torch.zeros(2, requires_grad=True)]})


def test_load_refuses_a_state_of_another_model_in_one_line() -> None:
    sharded = zero.ShardedOptimizer(zero_workers.groups(zero_workers.model()), zero_workers.builder("sgd"))
    other = optimizers.build("sgd", nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"optimizer state does not fit: .*\[2\].*\[3, 3\]"):
        sharded.load_state_dict(other.state_dict())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_workers_sharded_equal_unsharded_for_every_optimizer(tmp_path: Path) -> None:
    out = tmp_path / "results.pt"
    zero_workers.spawn(zero_workers.equality, 2, str(out), STEPS)
    results = torch.load(out, weights_only=True)
    assert sorted(results) == sorted(optimizers.names())
    for name, result in results.items():
        for sharded, plain in zip(result["sharded_params"], result["plain_params"], strict=True):
            torch.testing.assert_close(sharded, plain, rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
        assert result["sharded_state"]["param_groups"] == result["plain_state"]["param_groups"], name
        torch.testing.assert_close(
            result["sharded_state"]["state"], result["plain_state"]["state"], rtol=0, atol=0
        )
        # Each worker keeps about half of the state; together exactly the unsharded state.
        assert sum(result["state_bytes"]) == result["plain_bytes"] > 0, name
        assert max(result["state_bytes"]) <= (1 / 2 + 0.05) * result["plain_bytes"], (
            name,
            result["state_bytes"],
        )


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_workers_sharded_match_unsharded_with_the_compiled_step(tmp_path: Path) -> None:
    """The optimizers' compiled step (fused=True): the sharded optimizer compiles its own buckets (other
    tensors together), so the kernels differ and the results agree to float32 rounding, not bit for bit."""
    out = tmp_path / "results.pt"
    zero_workers.spawn(zero_workers.equality, 2, str(out), STEPS, "cpu", ("adam", "lamb"), True)
    for name, result in torch.load(out, weights_only=True).items():
        for sharded, plain in zip(result["sharded_params"], result["plain_params"], strict=True):
            torch.testing.assert_close(
                sharded, plain, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
            )
        torch.testing.assert_close(
            result["sharded_state"]["state"], result["plain_state"]["state"], rtol=1e-5, atol=1e-6
        )


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["lamb"])  # per-tensor trust ratio and Adam moments
def test_consolidated_checkpoint_resumes_on_another_worker_count(tmp_path: Path, name: str) -> None:
    """3 steps on 2 workers, saved, then 3 more on 3 workers and on 1: both equal 6 straight steps."""
    half = tmp_path / "half.pt"
    zero_workers.spawn(zero_workers.train_and_save, 2, name, None, str(half), 3)
    on_three = tmp_path / "three.pt"
    zero_workers.spawn(zero_workers.train_and_save, 3, name, str(half), str(on_three), 3)
    # The reference: one plain (unsharded) process, 6 steps straight; and the 2-worker state loaded
    # into the plain optimizer, 3 more steps.
    straight_net = zero_workers.model()
    straight = zero_workers.builder(name)(zero_workers.groups(straight_net))
    for step in range(6):
        zero_workers.local_gradients(straight_net, step, 0, 1)
        straight.step()
    saved = torch.load(half, weights_only=True)
    plain_net = zero_workers.model()
    plain_net.load_state_dict(saved["model"])
    plain = zero_workers.builder(name)(zero_workers.groups(plain_net))
    plain.load_state_dict(saved["optimizer"])
    for step in range(3, 6):
        zero_workers.local_gradients(plain_net, step, 0, 1)
        plain.step()
    resumed = torch.load(on_three, weights_only=True)
    # float64 and batches split into equal parts: only summation order differs between worker counts.
    for key, value in straight_net.state_dict().items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(plain_net.state_dict()[key], value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        resumed["optimizer"]["state"], straight.state_dict()["state"], rtol=1e-9, atol=1e-12
    )


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.usefixtures("ray_session")
def test_zero1_trial_through_torch_trainer_learns_and_survives_a_killed_worker(
    tmp_path: Path, fault_dir: Path
) -> None:
    """The real loop in mode zero1 on 2 Ray Train workers (gloo): rank 1 dies in epoch 2, Train restarts
    the workers, each loads the consolidated epoch-1 state into its shard, and the run finishes."""
    from ray import tune

    from optsweep.trainables import faults
    from optsweep.trainables.config import TrainConfig
    from optsweep.trainables.trial import run_trial, trial_resources

    config = {
        "optimizer": "adam",
        "lr": 0.003,
        "seed": 1,
        "schedule": "cosine",
        "settings": {"max_epochs": 3, "workers": 2, "cpus_per_worker": 0.5, "mode": "zero1"},
    }
    marker = faults.crash_marker(fault_dir, rank=1, epoch=2)
    marker.touch()
    tuner = tune.Tuner(
        tune.with_resources(run_trial, trial_resources(TrainConfig.from_trial_config(config))),
        param_space=config,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max"),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="zero1", verbose=0),
    )
    result = tuner.fit()[0]
    assert marker.with_name(marker.name + ".fired").exists()
    assert result.error is None
    assert result.metrics["val_acc"] > 0.85
    rows = result.metrics_dataframe.to_dict("records")
    # Resumed from the epoch-1 checkpoint (from scratch, epoch 1 would have been reported twice).
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert (tmp_path / "zero1" / "train_runs").is_dir()  # it went through Ray Train


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL ZeRO-1 needs 2 GPUs (one per rank)")
def test_nccl_two_gpus_sharded_equal_unsharded_for_every_optimizer(tmp_path: Path) -> None:
    out = tmp_path / "results.pt"
    zero_workers.spawn(zero_workers.equality, 2, str(out), STEPS, "cuda")
    results = torch.load(out, weights_only=True)
    for name, result in results.items():
        for sharded, plain in zip(result["sharded_params"], result["plain_params"], strict=True):
            torch.testing.assert_close(sharded, plain, rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
        torch.testing.assert_close(result["sharded_state"]["state"], result["plain_state"]["state"])
        assert max(result["state_bytes"]) <= (1 / 2 + 0.05) * result["plain_bytes"], name


@pytest.mark.timeout(120)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sharded_optimizer_on_one_gpu_is_the_optimizer() -> None:
    """On CUDA without a process group (one worker): the same steps as the plain optimizer."""
    device = torch.device("cuda")
    net_a, net_b = zero_workers.model().to(device), zero_workers.model().to(device)
    sharded = zero.ShardedOptimizer(zero_workers.groups(net_a), zero_workers.builder("lamb"))
    plain = zero_workers.builder("lamb")(zero_workers.groups(net_b))
    for step in range(4):
        for net, optimizer in ((net_a, sharded), (net_b, plain)):
            zero_workers.local_gradients(net, step, 0, 1)
            optimizer.step()
    for a, b in zip(net_a.parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    state = sharded.state_dict()
    assert all(
        t.device.type == "cpu" for s in state["state"].values() for t in s.values() if torch.is_tensor(t)
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_training_loop_in_mode_zero1_equals_mode_sync(tmp_path: Path) -> None:
    """The real loop (DDP, a cosine schedule, gradient clipping, a checkpoint every epoch) on 2 gloo
    workers: mode zero1 reports the same metrics as mode sync and checkpoints the same full state."""
    runs = {}
    for mode in ("sync", "zero1"):
        zero_workers.spawn(zero_workers.loop_run, 2, mode, str(tmp_path / f"{mode}.pt"))
        runs[mode] = torch.load(tmp_path / f"{mode}.pt", weights_only=True)
    keys = ("epoch", "lr", "train_loss", "val_loss", "val_acc", "test_acc")
    for sync, sharded in zip(runs["sync"]["reports"], runs["zero1"]["reports"], strict=True):
        assert {k: sync[k] for k in keys} == {k: sharded[k] for k in keys}
    assert runs["zero1"]["reports"][-1]["val_acc"] > 0.7  # it learns (chance: 0.1) in 3 epochs
    sync_state, zero_state = runs["sync"]["state"], runs["zero1"]["state"]
    torch.testing.assert_close(zero_state["model"], sync_state["model"], rtol=0, atol=0)
    torch.testing.assert_close(
        zero_state["optimizer"]["state"], sync_state["optimizer"]["state"], rtol=0, atol=0
    )
    assert zero_state["optimizer"]["param_groups"] == sync_state["optimizer"]["param_groups"]


def _benchmark() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sharded_state.py"
    spec = importlib.util.spec_from_file_location("sharded_state", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0,2"], "Invalid --workers: '0,2'"),
        (["--workers", "two"], "Invalid --workers: 'two'"),
        (["--model", "vgg"], "Invalid --model: 'vgg'; allowed: resnet18, mlp"),
        (["--repeats", "0"], "Invalid --repeats: 0"),
    ],
)
def test_benchmark_refuses_bad_flags_before_starting_workers(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        _benchmark().main(argv)
