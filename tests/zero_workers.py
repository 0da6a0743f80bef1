"""Process bodies for the ZeRO-1 tests and benchmark: torch.distributed (gloo) workers started with
torch.multiprocessing. Every step uses a global batch that does not depend on the number of workers
(rank r takes rows r::world), so runs with different worker counts follow the same trajectory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from optsweep import optimizers
from optsweep.trainables import zero

HPARAMS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    "adam": {"lr": 0.01, "amsgrad": True},
    "adamw": {"lr": 0.01, "weight_decay": 0.05},
    "adagrad": {"lr": 0.05},
    "rmsprop": {"lr": 0.01, "momentum": 0.5, "centered": True},
    "lamb": {"lr": 0.01},
    "lars": {"lr": 0.1, "momentum": 0.9},
}
"""Settings that give each optimizer all its state tensors (momentum, max_exp_avg_sq, grad_avg, ...)."""
GLOBAL_BATCH = 12  # divisible by 1, 2, 3 and 4 workers


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 24), nn.Tanh(), nn.Linear(24, 4)
    ).double()


def groups(net: nn.Module) -> list[dict[str, Any]]:
    """Two groups, as the loop builds them: decay for matrices, none for biases."""
    weights = [p for p in net.parameters() if p.ndim > 1]
    biases = [p for p in net.parameters() if p.ndim <= 1]
    return [{"params": weights, "weight_decay": 0.01}, {"params": biases, "weight_decay": 0.0}]


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    inputs = torch.randn(GLOBAL_BATCH, 16, generator=generator, dtype=torch.float64)
    return inputs, torch.randint(0, 4, (GLOBAL_BATCH,), generator=generator)


def local_gradients(net: nn.Module, step: int, rank: int, world: int) -> None:
    """This rank's gradient, all-reduced to the mean over ranks (what DDP does)."""
    inputs, targets = batch(step)
    first = next(net.parameters())
    inputs, targets = inputs.to(first.device, first.dtype), targets.to(first.device)
    net.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(inputs[rank::world]), targets[rank::world]).backward()
    if world > 1:
        for p in net.parameters():
            dist.all_reduce(p.grad)
            p.grad /= world


def builder(name: str, **extra: Any) -> zero.BuildOptimizer:
    return lambda g: optimizers.build(name, g, **HPARAMS[name], **extra)


def init(rank: int, world: int, address: str, device: str = "cpu") -> torch.device:
    """Join the process group: gloo on the CPU, NCCL with one GPU per rank for `device` "cuda"."""
    torch.set_num_threads(1)
    if device == "cuda":
        torch.cuda.set_device(rank)
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=world)
    return torch.device(f"cuda:{rank}") if device == "cuda" else torch.device("cpu")


def equality(
    rank: int,
    world: int,
    address: str,
    out: str,
    steps: int,
    device: str = "cpu",
    names: tuple[str, ...] | None = None,
    compiled: bool = False,
) -> None:
    """For every optimizer (or `names`): a sharded and an unsharded copy step on the same gradients;
    rank 0 saves both runs' parameters and full states (and each rank its shard's state bytes).
    `compiled`: the optimizers' compiled step (`fused=True`), on float32 parameters."""
    where = init(rank, world, address, device)
    results = {}
    extra = {"fused": True} if compiled else {}
    dtype = torch.float32 if compiled else torch.float64
    for name in names or optimizers.names():
        sharded_net, plain_net = model().to(where, dtype), model().to(where, dtype)
        sharded = zero.ShardedOptimizer(groups(sharded_net), builder(name, **extra))
        plain = builder(name, **extra)(groups(plain_net))
        for step in range(steps):
            for net, optimizer in ((sharded_net, sharded), (plain_net, plain)):
                local_gradients(net, step, rank, world)
                optimizer.step()
        state = sharded.state_dict()  # collective
        local_bytes = torch.tensor([zero.state_bytes(sharded)], dtype=torch.int64)
        all_bytes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
        all_bytes = [b.to(where) for b in all_bytes]
        dist.all_gather(all_bytes, local_bytes.to(where))
        results[name] = {
            "sharded_params": [p.detach().cpu() for p in sharded_net.parameters()],
            "plain_params": [p.detach().cpu() for p in plain_net.parameters()],
            "sharded_state": state,
            "plain_state": _cpu(plain.state_dict()),
            "state_bytes": [int(b.item()) for b in all_bytes],
            "plain_bytes": zero.state_bytes(plain),
        }
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _cpu(item) for k, item in value.items()}
    if isinstance(value, list):
        return [_cpu(item) for item in value]
    return value


def train_and_save(
    rank: int, world: int, address: str, name: str, start: str | None, out: str, steps: int
) -> None:
    """Train `steps` steps sharded over `world` workers from checkpoint `start` (or scratch); rank 0
    saves the parameters and the consolidated optimizer state to `out`."""
    init(rank, world, address)
    net = model()
    optimizer = zero.ShardedOptimizer(groups(net), builder(name))
    first = 0
    if start:
        saved = torch.load(start, weights_only=True)
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        first = saved["step"]
    for step in range(first, first + steps):
        local_gradients(net, step, rank, world)
        optimizer.step()
    state = optimizer.state_dict()
    if rank == 0:
        torch.save({"model": net.state_dict(), "optimizer": state, "step": first + steps}, out)
    dist.destroy_process_group()


def spawn(fn: Any, world: int, *args: Any) -> None:
    """Run `fn(rank, world, address, *args)` in `world` fresh processes (gloo over a file store)."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as directory:
        address = f"file://{Path(directory) / 'store'}"
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        mp.spawn(fn, args=(world, address, *args), nprocs=world, join=True)


class ProcessGroupSession:
    """A loop Session for a plain torch.distributed process (no Ray): DDP model, reports kept in memory."""

    node_id = "local"

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world_size = rank, world
        self.device = torch.device("cpu")
        self.reports: list[dict[str, Any]] = []
        self.checkpoint_files: list[list[str]] = []

    def prepare_model(self, net: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(net)

    def latest_checkpoint(self) -> Any:
        from optsweep.trainables.sessions import Restored

        return Restored()

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        self.checkpoint_files.append(sorted(os.listdir(checkpoint_dir)) if checkpoint_dir else [])
        if checkpoint_dir and self.rank == 0:
            from optsweep.trainables import checkpoints

            state, _ = checkpoints.load(checkpoint_dir, 0)
            self.last_state = state

    def should_stop(self, epoch: int) -> bool:
        return False


def loop_run(rank: int, world: int, address: str, mode: str, out: str) -> None:
    """The real training loop on digits in `mode` over a gloo group; rank 0 saves reports and state."""
    from optsweep.trainables import loop
    from optsweep.trainables.config import TrainConfig

    init(rank, world, address)
    config = TrainConfig(
        optimizer="lamb",
        hparams={"lr": 0.01, "weight_decay": 0.01},
        schedule="cosine",
        max_epochs=3,
        grad_clip=1.0,
        workers=world,
        mode=mode,
    )
    session = ProcessGroupSession(rank, world)
    loop.train(config, session)
    if rank == 0:
        torch.save({"reports": session.reports, "state": session.last_state}, out)
    dist.destroy_process_group()
