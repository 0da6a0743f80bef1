"""Where the training loop runs: a plain process, a Tune trial (the single-worker fast path), or a
Ray Train worker. Each session tells the loop its rank and device, reports its metrics and
checkpoints, and finds the checkpoint to resume from (falling back past corrupt ones)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoints, decisions


@dataclass
class Restored:
    """What a session found to resume from: the training state (None: start from scratch), this rank's
    RNG states, and the checkpoints it had to skip because they were damaged."""

    state: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    unusable: list[str] = field(default_factory=list)


def _say(message: str) -> None:
    print(f"optsweep: {message}", file=sys.stderr, flush=True)


def _load_first_valid(candidates: Iterator[tuple[str, Any]], rank: int) -> Restored:
    """Load the newest candidate checkpoint that verifies; candidates yield (label, local directory)."""
    restored = Restored()
    for label, directory in candidates:
        try:
            restored.state, restored.rng = checkpoints.load(directory, rank)
        except checkpoints.CorruptCheckpointError as error:
            _say(f"checkpoint {label} is unusable ({error}); trying the previous one")
            restored.unusable.append(label)
            continue
        _say(f"resuming from checkpoint {label} (epoch {restored.state['epoch']})")
        return restored
    if restored.unusable:
        _say(f"none of the {len(restored.unusable)} checkpoint(s) is usable; training starts from scratch")
    return restored


class LocalSession:
    """A plain process without Ray (tests, the plain-loop baseline of the overhead benchmark).

    Reported checkpoints are kept under `checkpoint_root` as `checkpoint_<epoch>`.
    """

    rank = 0
    world_size = 1
    node_id = "local"

    def __init__(self, checkpoint_root: str | Path | None = None, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.checkpoint_root = Path(checkpoint_root) if checkpoint_root else None
        self.reports: list[dict[str, Any]] = []

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir and self.checkpoint_root:
            target = self.checkpoint_root / f"checkpoint_{metrics['epoch']:06d}"
            shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)

    def latest_checkpoint(self) -> Restored:
        if not self.checkpoint_root or not self.checkpoint_root.exists():
            return Restored()
        found = sorted(self.checkpoint_root.glob("checkpoint_*"), reverse=True)
        return _load_first_valid(((p.name, p) for p in found), self.rank)

    def should_stop(self, epoch: int) -> bool:
        return False


def _ray_checkpoint_candidates(checkpoint: Any) -> Iterator[tuple[str, Any]]:
    """The given Ray checkpoint, then its older siblings (Ray keeps the last few side by side)."""
    import pyarrow.fs
    from ray.train import Checkpoint

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent, name = path.rsplit("/", 1)
    siblings = [
        info.path
        for info in fs.get_file_info(pyarrow.fs.FileSelector(parent))
        if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_")
    ]
    ordered = [path, *sorted((p for p in siblings if p.rsplit("/", 1)[1] < name), reverse=True)]
    for candidate in ordered:
        label = candidate.rsplit("/", 1)[1]
        if fs.get_file_info(candidate).type != pyarrow.fs.FileType.Directory:
            yield label, f"{candidate} (missing)"  # checkpoints.load reports it as unusable
            continue
        with Checkpoint(path=candidate, filesystem=fs).as_directory() as directory:
            yield label, directory


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class TuneSession:
    """The single-worker fast path: the loop runs inside the Tune trial itself, no TorchTrainer."""

    rank = 0
    world_size = 1

    def __init__(self) -> None:
        import ray

        self.device = torch.device("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")
        self.node_id = _node_id()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    def latest_checkpoint(self) -> Restored:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        return (
            _load_first_valid(_ray_checkpoint_candidates(checkpoint), self.rank) if checkpoint else Restored()
        )

    def should_stop(self, epoch: int) -> bool:
        return False  # Tune stops single-worker trials itself (at their next report)


class TrainWorkerSession:
    """One data-parallel worker of a Ray Train TorchTrainer (DDP: gloo on CPU, NCCL on GPU)."""

    def __init__(self, trial_id: str, scheduler_decisions: str | None) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.node_id = _node_id()
        self.trial_id = trial_id
        self.scheduler_decisions = scheduler_decisions

    def prepare_model(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def latest_checkpoint(self) -> Restored:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        return (
            _load_first_valid(_ray_checkpoint_candidates(checkpoint), self.rank) if checkpoint else Restored()
        )

    def should_stop(self, epoch: int) -> bool:
        """Rank 0 asks whether Tune's scheduler stopped this trial at `epoch`; every rank gets the answer."""
        if self.scheduler_decisions is None:
            return False
        stop = torch.zeros(1, device=self.device)
        if self.rank == 0 and decisions.wait_for_stop_decision(
            self.scheduler_decisions, self.trial_id, epoch
        ):
            stop += 1
        torch.distributed.broadcast(stop, src=0)
        return bool(stop.item())
