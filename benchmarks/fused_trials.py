"""Training throughput of fused trials against the same trials trained one after another.

    python benchmarks/fused_trials.py [--model mlp|cnn] [--epochs E] [--ks 1 8 32] [--full] [--quick]
        [--threads T] [--device cpu|cuda]

For each K: K configurations of Adam on the digits task (log-uniform lr in 3e-4..3e-3 from a fixed
seed, seeds 0..K-1), trained E epochs

- fused: `trainables.fused.train_fused`, all K members in one process at once;
- loop: `trainables.loop.train` with a `LocalSession`, the K configurations one after another in this
  process (the project's one training loop, which also writes a staging checkpoint every epoch);
- plain: the same K trainings in a minimal loop (model, `ShardedLoader`, optimizer, schedule, the
  same per-epoch evaluation, no checkpoints): the peer without any of the loop's bookkeeping.

Throughput is member-epochs per second (K * E / wall-clock seconds, data and model set-up included);
the ratios are fused over each peer, all measured in this run. `--full` adds K = 128; `--quick` runs
K = 1 and 4 for one epoch (a smoke test). The fused members' last validation metrics are checked
against the loop's (largest relative difference printed). The last line is the headline: the fused
speed-up over the plain loop at the largest K.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from collections.abc import Sequence

import torch

from optimizers import schedules
from optsweep import vocabulary as v
from trainables import data, loop, optimizer_choice
from trainables.config import TrainConfig
from trainables.fused import train_fused
from trainables.sessions import LocalSession
from trainables.tasks import Task, build_task, param_groups

OPTIMIZER = "adam"
LR_RANGE = (3e-4, 3e-3)


def configs(count: int, model: str, epochs: int) -> list[TrainConfig]:
    rng = random.Random(0)
    low, high = (math.log(x) for x in LR_RANGE)
    return [
        TrainConfig(
            optimizer=OPTIMIZER,
            hparams={"lr": math.exp(rng.uniform(low, high))},
            seed=seed,
            task="digits",
            task_args={"model": model},
            max_epochs=epochs,
            amp=False,
        )
        for seed in range(count)
    ]


def plain_train(config: TrainConfig, task: Task, device: torch.device) -> float:
    """A minimal training of `config` (no checkpoints, no reports); returns the last val accuracy."""
    loop.seed_everything(config.seed)
    splits = task.data()
    model = task.model().to(device)
    batch_size = config.batch_size or task.batch_size
    loader = data.make_loader(splits.train, batch_size, shuffle=True, seed=config.seed)
    val = data.make_loader(splits.val, batch_size, shuffle=False, seed=config.seed)
    optimizer = optimizer_choice.build(
        config.optimizer, param_groups(model, task.weight_decay), config.hparams
    )
    epochs = config.max_epochs or task.max_epochs
    scheduler = schedules.build(config.schedule, optimizer, epochs * len(loader))
    score = math.nan
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        model.train()
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            loss = task.loss(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        score = loop.evaluate(model, val, task, device, use_amp=False)[task.target.metric]
    return score


def measure(count: int, model: str, epochs: int, device: torch.device) -> dict[str, float]:
    group = configs(count, model, epochs)
    task = build_task("digits", {"model": model})
    started = time.perf_counter()
    fused = train_fused(group, task=task, device=device)
    fused_s = time.perf_counter() - started

    started = time.perf_counter()
    alone = []
    for config in group:
        session = LocalSession(device=device)
        loop.train(config, session, task=task)
        alone.append(session.reports[-1])
    loop_s = time.perf_counter() - started

    started = time.perf_counter()
    for config in group:
        plain_train(config, task, device)
    plain_s = time.perf_counter() - started

    key = task.target.key
    worst = max(
        abs(m.reports[-1][key] - a[key]) / max(abs(a[key]), 1e-12) for m, a in zip(fused, alone, strict=True)
    )
    assert all(m.status == v.COMPLETED for m in fused), "a member diverged: the benchmark's lrs are too large"
    member_epochs = count * epochs
    return {
        "fused": member_epochs / fused_s,
        "loop": member_epochs / loop_s,
        "plain": member_epochs / plain_s,
        "worst": worst,
    }


def main(argv: Sequence[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--full", action="store_true", help="add K = 128")
    parser.add_argument("--quick", action="store_true", help="K = 1 and 4, one epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    ks = sorted(set(args.ks + ([128] if args.full else [])))
    epochs = args.epochs
    if args.quick:
        ks, epochs = [1, 4], 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"digits {args.model}, {OPTIMIZER}, {epochs} epoch(s), device {device}, "
        f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'K':>4} {'fused':>10} {'loop':>10} {'plain':>10}  (member-epochs/s)  fused/loop fused/plain  "
        "worst val diff"
    )
    results: dict[int, dict[str, float]] = {}
    for count in ks:
        r = measure(count, args.model, epochs, device)
        results[count] = r
        print(
            f"{count:>4} {r['fused']:>10.2f} {r['loop']:>10.2f} {r['plain']:>10.2f}  {'':17}  "
            f"{r['fused'] / r['loop']:>9.2f}x {r['fused'] / r['plain']:>10.2f}x  {r['worst']:.1e}",
            flush=True,
        )
    largest = results[ks[-1]]
    print(f"fused throughput at K={ks[-1]}: {largest['fused'] / largest['plain']:.1f}x the plain loop's")
    return results


if __name__ == "__main__":
    main()
