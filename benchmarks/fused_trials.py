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
the ratios are fused over each peer, all measured in this run, by wall clock and by this process's
CPU time (which other work on a shared machine skews far less). With `--repeats R` the modes run in
R alternating rounds and each keeps its best. `--full` adds K = 128; `--quick` runs
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
from collections.abc import Callable, Sequence
from typing import Any

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


def _timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall-clock seconds, CPU seconds of this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure(count: int, model: str, epochs: int, device: torch.device, repeats: int) -> dict[str, float]:
    """Member-epochs per second of each mode (the best of `repeats` alternating rounds, by wall clock
    and by CPU time) and the largest relative difference of the last val metric, fused vs loop."""
    group = configs(count, model, epochs)
    task = build_task("digits", {"model": model})

    def run_loop() -> list[dict[str, Any]]:
        last = []
        for config in group:
            session = LocalSession(device=device)
            loop.train(config, session, task=task)
            last.append(session.reports[-1])
        return last

    modes: dict[str, Callable[[], Any]] = {
        "fused": lambda: train_fused(group, task=task, device=device),
        "loop": run_loop,
        "plain": lambda: [plain_train(config, task, device) for config in group],
    }
    wall = dict.fromkeys(modes, math.inf)
    cpu = dict.fromkeys(modes, math.inf)
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in modes.items():
            results[name], seconds, cpu_seconds = _timed(run)
            wall[name], cpu[name] = min(wall[name], seconds), min(cpu[name], cpu_seconds)
    fused, alone = results["fused"], results["loop"]
    assert all(m.status == v.COMPLETED for m in fused), "a member diverged: the benchmark's lrs are too large"
    key = task.target.key
    worst = max(
        abs(m.reports[-1][key] - a[key]) / max(abs(a[key]), 1e-12) for m, a in zip(fused, alone, strict=True)
    )
    member_epochs = count * epochs
    measured = {name: member_epochs / wall[name] for name in modes}
    measured |= {f"{name}_cpu": member_epochs / cpu[name] for name in modes}
    return measured | {"worst": worst}


def main(argv: Sequence[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--full", action="store_true", help="add K = 128")
    parser.add_argument("--quick", action="store_true", help="K = 1 and 4, one epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; the best is kept")
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
    print("member-epochs/s (best of the rounds); ratios: fused over the peer, by wall clock | by CPU time")
    print(
        f"{'K':>4} {'fused':>9} {'loop':>9} {'plain':>9}   {'fused/loop':>17} {'fused/plain':>17}  val diff"
    )
    measure(1, args.model, 1, device, 1)  # warm-up, not shown: first imports, data loading, allocator
    results: dict[int, dict[str, float]] = {}
    for count in ks:
        r = measure(count, args.model, epochs, device, args.repeats)
        results[count] = r
        print(
            f"{count:>4} {r['fused']:>9.2f} {r['loop']:>9.2f} {r['plain']:>9.2f}   "
            f"{r['fused'] / r['loop']:>7.2f}x | {r['fused_cpu'] / r['loop_cpu']:>6.2f}x "
            f"{r['fused'] / r['plain']:>7.2f}x | {r['fused_cpu'] / r['plain_cpu']:>6.2f}x  {r['worst']:.1e}",
            flush=True,
        )
    largest = results[ks[-1]]
    print(
        f"fused throughput at K={ks[-1]}: {largest['fused'] / largest['plain']:.1f}x the plain loop's "
        f"by wall clock, {largest['fused_cpu'] / largest['plain_cpu']:.1f}x by CPU time"
    )
    return results


if __name__ == "__main__":
    main()
