"""Sharded optimizer state (ZeRO-1): optimizer-state bytes per worker and step time, optsweep's
`trainables.zero.ShardedOptimizer` against the unsharded optimizer and torch's
`torch.distributed.optim.ZeroRedundancyOptimizer` (the peer), measured in the same run.

    python benchmarks/sharded_state.py [--workers 1,2] [--optimizer adam] [--model resnet18|mlp]
                                       [--repeats N] [--out results.json] [--quick]

For each worker count N it starts N processes (gloo on the CPU, NCCL with --device cuda and N GPUs),
gives every worker the same gradients (the all-reduce before the step is the same for all three and is
left out) and times, interleaved in random order in each repeat: the unsharded optimizer's step, the
sharded step (local step + the owners' parameter broadcasts) and ZeroRedundancyOptimizer's step (the
same two parts). Step time is the slowest worker's, median over repeats. State bytes are the tensors in
each worker's optimizer state after the first steps (the largest worker's). Every figure is also given
as a ratio against the unsharded optimizer and ZeroRedundancyOptimizer of the same run. The last line
is `state bytes per worker: <ratio to unsharded>` for the largest worker count. `--quick` (the suite's
smoke run): the MLP, 3 repeats after 1 warm-up step (flags given explicitly still win).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optsweep import optimizers
from optsweep.trainables import zero

KINDS = ("unsharded", "sharded", "torch_zero")
QUICK = {"model": "mlp", "repeats": 3, "warmup": 1}


def build_model(name: str) -> nn.Module:
    if name == "resnet18":
        import torchvision

        return torchvision.models.resnet18()
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
        )
    raise SystemExit(f"Invalid --model: {name!r}; allowed: resnet18, mlp")


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    inner = optimizer.optim if isinstance(optimizer, ZeroRedundancyOptimizer) else optimizer
    return zero.state_bytes(inner)


def _worker(rank: int, world: int, address: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(f"cuda:{rank}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", init_method=address, rank=rank, world_size=world
    )
    torch.manual_seed(0)
    template = build_model(args.model).to(device)
    hparams = {"lr": 1e-3}
    cls = optimizers.optimizer_class(args.optimizer)
    runs: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
    for kind in KINDS:
        model = build_model(args.model).to(device)
        model.load_state_dict(template.state_dict())
        params = list(model.parameters())
        if kind == "unsharded":
            optimizer = optimizers.build(args.optimizer, params, **hparams)
        elif kind == "sharded":
            optimizer = zero.ShardedOptimizer(
                params, lambda g: optimizers.build(args.optimizer, g, **hparams)
            )
        else:
            optimizer = ZeroRedundancyOptimizer(params, optimizer_class=cls, **hparams)
        generator = torch.Generator().manual_seed(1)
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator).to(device) * 1e-2
        runs[kind] = (model, optimizer)
    order = list(KINDS)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    rng = random.Random(7)  # the same order on every worker
    for repeat in range(args.warmup + args.repeats):
        rng.shuffle(order)
        for kind in order:
            _, optimizer = runs[kind]
            dist.barrier()
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = torch.tensor([time.perf_counter() - started], dtype=torch.float64)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest worker's
            if repeat >= args.warmup:
                times[kind].append(float(elapsed))
    # The three runs took the same steps from the same gradients: their parameters must agree.
    reference = list(runs["unsharded"][0].parameters())
    agree = {
        kind: max(
            float((a - b).detach().abs().max())
            for a, b in zip(runs[kind][0].parameters(), reference, strict=True)
        )
        for kind in ("sharded", "torch_zero")
    }
    state = torch.tensor([_state_bytes(runs[kind][1]) for kind in KINDS], dtype=torch.int64)
    gathered = [torch.zeros_like(state) for _ in range(world)]
    dist.all_gather(gathered, state)
    if rank == 0:
        result = {
            "workers": world,
            "step_s": {kind: statistics.median(times[kind]) for kind in KINDS},
            "state_bytes_max": {kind: max(int(g[i]) for g in gathered) for i, kind in enumerate(KINDS)},
            "state_bytes_per_worker": {kind: [int(g[i]) for g in gathered] for i, kind in enumerate(KINDS)},
            "max_abs_diff_vs_unsharded": agree,
            "params": sum(p.numel() for p in reference),
        }
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def measure(world: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "result.json")
        address = f"file://{Path(directory) / 'store'}"
        mp.spawn(_worker, args=(world, address, args, out), nprocs=world, join=True)
        return json.loads(Path(out).read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--optimizer", default="adam", choices=optimizers.names())
    parser.add_argument("--model", default=None, help="resnet18 (11.7M params, the default) or mlp (1.6M)")
    parser.add_argument("--repeats", type=int, default=None, help="default 20")
    parser.add_argument("--warmup", type=int, default=None, help="default 3")
    parser.add_argument("--quick", action="store_true", help="the MLP, 3 repeats, 1 warm-up step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else {"model": "resnet18", "repeats": 20, "warmup": 3}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        counts = sorted({int(n) for n in args.workers.split(",")})
    except ValueError:
        raise SystemExit(f"Invalid --workers: {args.workers!r}; give comma-separated integers >= 1") from None
    if not counts or counts[0] < 1:
        raise SystemExit(f"Invalid --workers: {args.workers!r}; give comma-separated integers >= 1")
    if args.device == "cuda" and torch.cuda.device_count() < counts[-1]:
        raise SystemExit(
            f"Invalid --workers: {counts[-1]} workers need {counts[-1]} GPUs; "
            f"found {torch.cuda.device_count()}"
        )
    if args.repeats < 1:
        raise SystemExit(f"Invalid --repeats: {args.repeats}; must be >= 1")
    build_model(args.model)  # bad names fail here, before any process starts
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    results = []
    print(
        f"{args.optimizer} on {args.model}, {args.device}, {args.threads} thread(s) per worker, "
        f"median of {args.repeats} steps"
    )
    print(
        f"{'workers':>7} {'kind':>11} {'state MB/worker':>16} {'vs unsharded':>13} {'step ms':>9} "
        f"{'vs unsharded':>13} {'vs torch ZeRO':>14} {'max |diff|':>11}"
    )
    for world in counts:
        result = measure(world, args)
        results.append(result)
        base_bytes = result["state_bytes_max"]["unsharded"]
        base_step = result["step_s"]["unsharded"]
        peer_step = result["step_s"]["torch_zero"]
        for kind in KINDS:
            state = result["state_bytes_max"][kind]
            step = result["step_s"][kind]
            diff = result["max_abs_diff_vs_unsharded"].get(kind, 0.0)
            print(
                f"{world:>7} {kind:>11} {state / 2**20:>16.2f} {state / base_bytes:>13.3f} "
                f"{step * 1e3:>9.2f} {step / base_step:>13.2f} {step / peer_step:>14.2f} {diff:>11.2e}"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    last = results[-1]
    ratio = last["state_bytes_max"]["sharded"] / last["state_bytes_max"]["unsharded"]
    print(
        f"sharded step time vs ZeroRedundancyOptimizer ({last['workers']} workers): "
        f"{last['step_s']['sharded'] / last['step_s']['torch_zero']:.2f}"
    )
    print(f"state bytes per worker: {ratio:.3f}")


if __name__ == "__main__":
    main()
