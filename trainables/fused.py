"""Fused trials: K configurations and seeds of one task trained at once in one process.

Each member is a `TrainConfig` that could run alone through `trainables.loop.train`; fused, it keeps
everything that run would have: its initial weights (its seed), its data order (its seed's shuffle,
the very `ShardedLoader` order), its optimizer hyperparameters and LR schedule, its divergence check
and its per-epoch metrics under the same keys. The members share one vmapped forward/backward
(`fused_model.FusedModel`; the loss is the sum of the members' mean losses, so each member's gradient
is its own) and one optimizer step (`optimizers.members.FusedOptimizer`: each member's scalars through
the optimizer's own formulas). A member that diverges is frozen and reported diverged; the others go on.

What must be equal within a group (`check_configs`): the task and its arguments, the budget (epochs,
batch size), gradient clipping, the divergence bound, the optimizer and its code-path switches. Not
fused (refused with one line): multi-worker modes, mixed precision (amp=True; with amp=None fused
members train in full precision, where the unfused loop turns AMP on on CUDA), user optimizer classes,
models whose forward does not run under vmap. LAMB and LARS fuse: their per-tensor trust ratios are
norms over each member's own tensors. The optimizer step can run compiled (`FusedGroup(compiled=True)`,
`FusedOptimizer(compiled=True)`; default eager).

`FusedGroup` is the group as an object that a Tune trial drives: one epoch at a time (`run_epoch`),
checkpointed and restored (`state_dict`, `load_state_dict`: weights, BatchNorm statistics, optimizer
state and step count, LR schedules, best so far, statuses; a restored group goes on bit for bit as the
uninterrupted one), and shrunk (`drop`: members whose configurations were eliminated leave, and so do
diverged ones at the end of their epoch; the stacked tensors are rebuilt without them, so the group's
compute shrinks, and the others' results are unchanged bit for bit: every member's computation is its
own). `train_fused` runs a group to the end.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from optsweep import vocabulary as v
from optsweep.optimizers import members as fused_members
from optsweep.optimizers import schedules

from . import data, optimizer_choice
from .config import TrainConfig
from .fused_model import FusedModel, UnfusableModelError
from .loop import diverged_metrics, nonfinite_validation, seed_everything, training_diverged
from .tasks import LOSS_METRIC, Task, build_task, param_groups

__all__ = ["FusedGroup", "FusedMember", "UnfusableModelError", "check_configs", "train_fused"]

# Settings every member of a group shares (they shape the group's batches and steps).
_SHARED_SETTINGS = (
    "optimizer",
    "optimizer_class",
    "task",
    "task_args",
    "data_dir",
    "max_epochs",
    "batch_size",
    "grad_clip",
    "divergence_loss",
)


@dataclass
class FusedMember:
    """One member's outcome: its configuration, its per-epoch reports (the keys of an unfused trial's)
    and its status (`completed` or `diverged`)."""

    config: TrainConfig
    reports: list[dict[str, Any]] = field(default_factory=list)
    status: str = v.COMPLETED


def check_configs(configs: Sequence[TrainConfig]) -> None:
    """Refuse, with one line, configurations that cannot train as one fused group."""
    if not configs:
        raise ValueError("a fused group needs at least one configuration")
    first = configs[0]
    for config in configs:
        if config.mode != "sync" or config.workers != 1:
            raise ValueError(
                f"fused trials run one process each: mode {config.mode!r} with {config.workers} worker(s) "
                "cannot be fused (use mode 'sync' and workers 1)"
            )
        if config.amp:
            raise ValueError("fused trials train in full precision: amp=True cannot be fused (use amp=False)")
        if config.optimizer_class is not None:
            raise ValueError(
                f"optimizer {config.optimizer_class!r} is a user class: only optsweep's optimizers "
                "take per-member hyperparameters"
            )
        for name in _SHARED_SETTINGS:
            if getattr(config, name) != getattr(first, name):
                raise ValueError(
                    f"fused members must share {name}: {getattr(first, name)!r} vs {getattr(config, name)!r}"
                )


class FusedGroup:
    """A fused group trained one epoch at a time, that can be checkpointed, restored and shrunk.

    Members are numbered 0..len(configs)-1 for the group's life. Between epochs the stacked tensors
    (weights, buffers, optimizer state) and the training loaders hold exactly the active members: a
    member that diverged or was dropped leaves the stack at the end of its epoch (diverged) or at once
    (`drop`), and the others go on as they would have with it (each member's computation is its own;
    the rebuilt stacks hold the same values). A member that left keeps its weights as they were when
    it left (`member_state_dict`, on the CPU).
    """

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        task: Task | None = None,
        device: torch.device | None = None,
        node_id: str = "local",
        *,
        compiled: bool = False,
    ) -> None:
        """`compiled`: run the members' optimizer step compiled (`optimizers.members.FusedOptimizer`:
        the same update function through the engine's `torch.compile` machinery); False runs it eagerly."""
        check_configs(configs)
        self.compiled = compiled
        self.configs: list[TrainConfig] = list(configs)
        first = self.configs[0]
        if task is None:
            task = build_task(first.task, first.task_args, data_dir=first.data_dir)
        self.task = task
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.node_id = node_id
        self._target = task.target
        batch_size = first.batch_size or task.batch_size
        self.max_epochs: int = first.max_epochs or task.max_epochs
        self.epoch: int = 0
        count = len(self.configs)
        splits, models = _member_models(task, [c.seed for c in self.configs], self.device)
        # Every member's training loader (its seed's order); the stack uses the active members'.
        self._all_loaders = [
            data.make_loader(splits.train, batch_size, shuffle=True, seed=c.seed) for c in self.configs
        ]
        probe_x, probe_y = next(iter(self._all_loaders[0]))
        FusedModel.check(models[0], probe_x.to(self.device), probe_y.to(self.device), task.loss)
        self._eval_loaders = {
            prefix: data.make_loader(split, batch_size, shuffle=False, seed=first.seed)
            for prefix, split in ((v.VAL_PREFIX, splits.val), (v.TEST_PREFIX, splits.test))
            if split is not None
        }
        # A member's model with no data of its own: copies of it are loaded with a member's tensors
        # when the stacks are rebuilt. Its param groups (e.g. no decay on biases) name the tensors.
        self._template = copy.deepcopy(models[0])
        names = {id(p): name for name, p in self._template.named_parameters()}
        self._group_names = [
            ({k: val for k, val in group.items() if k != "params"}, [names[id(p)] for p in group["params"]])
            for group in param_groups(self._template, task.weight_decay)
        ]
        self._stack: list[int] = list(range(count))  # member of each stacked slot
        self._model: FusedModel | None = FusedModel(models)
        del models
        # One optimizer per member over placeholders (its hyperparameters; its scheduler changes its LR).
        groups = self._stacked_groups(self._model)
        self._member_optimizers = [
            optimizer_choice.build(c.optimizer, fused_members.placeholder_groups(groups), c.hparams)
            for c in self.configs
        ]
        self._optimizer: fused_members.FusedOptimizer | None = fused_members.FusedOptimizer(
            groups, self._member_optimizers, compiled=compiled
        )
        total_steps = self.max_epochs * len(self._all_loaders[0])
        self._schedulers = [
            schedules.build(
                c.schedule,
                member,
                total_steps,
                **({"mode": self._target.mode} if c.schedule == "plateau" else {}),
            )
            for c, member in zip(self.configs, self._member_optimizers, strict=True)
        ]
        self._bound = first.divergence_bound(task.divergence_loss)
        self._statuses = [v.COMPLETED] * count
        self._best = [math.nan] * count
        self._retired: dict[int, dict[str, torch.Tensor]] = {}  # left the stack: weights, on the CPU

    # ------------------------------------------------------------------------------ the members
    def active(self) -> list[int]:
        """The members still training (not diverged, not dropped), in order."""
        return [k for k, status in enumerate(self._statuses) if status == v.COMPLETED]

    def status(self, member: int) -> str:
        """`completed` (training or finished), `diverged`, or `stopped_early` once dropped."""
        return self._statuses[member]

    @property
    def finished(self) -> bool:
        return self.epoch >= self.max_epochs or not self.active()

    @property
    def num_stacked(self) -> int:
        """Members whose tensors the stacks hold (the active ones, between epochs)."""
        return len(self._stack)

    def member_state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member `member`'s weights and buffers as the unfused model's state dict (copies); for a
        member that left the stack, as they were when it left (on the CPU)."""
        if member in self._retired:
            return {name: t.clone() for name, t in self._retired[member].items()}
        if not 0 <= member < len(self.configs):
            raise IndexError(f"no member {member} in a group of {len(self.configs)}")
        assert self._model is not None
        return self._model.member_state_dict(self._stack.index(member))

    # ------------------------------------------------------------------------------- training
    def run_epoch(self) -> dict[int, dict[str, Any]]:
        """Train the active members one epoch; member -> that epoch's metrics (the keys of an unfused
        trial's report). A member that diverges is reported this epoch (diverged flag set) and never
        again. A finished group trains nothing and returns {}."""
        if self.finished:
            return {}
        assert self._model is not None and self._optimizer is not None
        epoch = self.epoch + 1
        slots = list(range(len(self._stack)))
        loaders = [self._all_loaders[k] for k in self._stack]
        for loader in loaders:
            loader.set_epoch(epoch)
        lrs = [float(self._member_optimizers[k].param_groups[0]["lr"]) for k in self._stack]
        schedulers = [self._schedulers[k] for k in self._stack]
        started = time.perf_counter()
        run = _train_epoch(
            self._model,
            self._optimizer,
            schedulers,
            loaders,
            self.task,
            self._bound,
            self.device,
            slots,
            self.configs[0].grad_clip,
        )
        elapsed = time.perf_counter() - started
        evaluated = _evaluate(self._model, self._eval_loaders, self.task, self.device)
        target = self._target
        results: dict[int, dict[str, Any]] = {}
        for slot, k in enumerate(self._stack):
            seconds = run.diverged_after_s.get(slot, elapsed)
            metrics: dict[str, Any] = {
                v.EPOCH: epoch,
                v.LR: lrs[slot],
                v.EPOCH_TIME_S: seconds,
                v.SAMPLES_PER_S: run.samples[slot] / seconds if seconds > 0 else 0.0,
                v.NODE_ID: self.node_id,
            }
            reason = (
                training_diverged(epoch, self._bound)
                if slot in run.diverged_after_s
                else nonfinite_validation(evaluated[slot], target, epoch)
            )
            if reason is not None:
                self._statuses[k] = v.DIVERGED
                print(f"member {k} diverged: {reason}", file=sys.stderr, flush=True)  # in the trial's log
                metrics |= diverged_metrics(target, self._best[k], reason)
            else:
                score = evaluated[slot][target.key]
                if schedules.needs_metric(self._schedulers[k]):
                    self._schedulers[k].step(score)
                if math.isnan(self._best[k]) or target.better(score, self._best[k]):
                    self._best[k] = score
                metrics |= {
                    v.TRAIN_LOSS: run.train_loss[slot],
                    **evaluated[slot],
                    target.best_key: _finite_or(self._best[k], target.worst),
                    v.DIVERGED_FLAG: False,
                }
            results[k] = metrics
        self.epoch = epoch
        self._restack()  # the diverged members leave
        return results

    def drop(self, members: Iterable[int]) -> None:
        """The members leave the group (status `stopped_early`): the stacks are rebuilt without them,
        so the next epochs cost only the remaining members. Dropping a member that diverged or was
        dropped already changes nothing."""
        members = set(members)
        for k in members:
            if not 0 <= k < len(self.configs):
                raise IndexError(f"no member {k} in a group of {len(self.configs)}")
        for k in sorted(members):
            if self._statuses[k] == v.COMPLETED:
                self._statuses[k] = v.STOPPED_EARLY
        self._restack()

    def _restack(self) -> None:
        """Rebuild the stacks (model, optimizer) to hold only the active members, if they hold others;
        the members that leave keep their weights (on the CPU)."""
        keep = self.active()
        if keep == self._stack:
            return
        assert self._model is not None and self._optimizer is not None
        for slot, k in enumerate(self._stack):
            if k not in keep:
                self._retired[k] = {n: t.cpu() for n, t in self._model.member_state_dict(slot).items()}
        slots = [self._stack.index(k) for k in keep]
        if not keep:
            self._model = self._optimizer = None
        else:
            tensors = {**self._model.params, **self._model.buffers}
            model = self._fused_model([{n: t[s] for n, t in tensors.items()} for s in slots])
            self._optimizer = self._optimizer.select(slots, self._stacked_groups(model))
            self._model = model
        self._stack = keep

    def _fused_model(self, members: Sequence[dict[str, torch.Tensor]]) -> FusedModel:
        """A FusedModel of copies of the template holding each member's tensors (by name)."""
        modules = []
        with torch.no_grad():
            for tensors in members:
                module = copy.deepcopy(self._template)
                for name, tensor in (*module.named_parameters(), *module.named_buffers()):
                    tensor.copy_(tensors[name])
                modules.append(module)
        return FusedModel(modules)

    def _stacked_groups(self, model: FusedModel) -> list[dict[str, Any]]:
        """The task's param groups over `model`'s stacked parameters."""
        return [
            {**options, "params": [model.params[name] for name in names]}
            for options, names in self._group_names
        ]

    # ---------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything the group needs to go on exactly as it would have (copies: plain tensors, lists
        and dicts, so `torch.load(weights_only=True)` reads it). Data orders are not recorded: each
        member's loader draws its epoch's order from its seed and the epoch."""
        stacked: dict[str, Any] = {"members": list(self._stack)}
        if self._model is not None and self._optimizer is not None:
            stacked |= {
                "params": {n: t.detach().clone() for n, t in self._model.params.items()},
                "buffers": {n: t.clone() for n, t in self._model.buffers.items()},
                "optimizer": self._optimizer.state_dict(),
            }
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "seeds": [c.seed for c in self.configs],
            "statuses": list(self._statuses),
            "best": list(self._best),
            "stack": stacked,
            "retired": {k: {n: t.clone() for n, t in w.items()} for k, w in self._retired.items()},
            "optimizers": [o.state_dict() for o in self._member_optimizers],
            "schedulers": [copy.deepcopy(s.state_dict()) for s in self._schedulers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()` of a group of the same configurations (tensors are copied to
        this group's device; weights of members that left stay on the CPU)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"fused group state version {state.get('version')!r}, expected {_STATE_VERSION}")
        seeds = [c.seed for c in self.configs]
        if list(state["seeds"]) != seeds:
            raise ValueError(f"the saved group has members with seeds {state['seeds']}, this one {seeds}")
        stack = [int(k) for k in state["stack"]["members"]]
        statuses = list(state["statuses"])
        if stack != [k for k, status in enumerate(statuses) if status == v.COMPLETED]:
            raise ValueError("the saved group's stacked members are not its active members")
        if stack:
            tensors = {**state["stack"]["params"], **state["stack"]["buffers"]}
            model = self._fused_model([{n: t[s] for n, t in tensors.items()} for s in range(len(stack))])
            optimizer = fused_members.FusedOptimizer(
                self._stacked_groups(model),
                [self._member_optimizers[k] for k in stack],
                compiled=self.compiled,
            )
            optimizer.load_state_dict(state["stack"]["optimizer"])
            self._model, self._optimizer = model, optimizer
        else:
            self._model = self._optimizer = None
        for member, saved in zip(self._member_optimizers, state["optimizers"], strict=True):
            member.load_state_dict(saved)
        for scheduler, saved in zip(self._schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(copy.deepcopy(saved))
        self._stack = stack
        self._statuses = statuses
        self._best = [float(b) for b in state["best"]]
        self._retired = {
            int(k): {n: t.detach().cpu().clone() for n, t in w.items()} for k, w in state["retired"].items()
        }
        self.epoch = int(state["epoch"])


_STATE_VERSION = 1


def train_fused(
    configs: Sequence[TrainConfig],
    task: Task | None = None,
    device: torch.device | None = None,
    report: Callable[[int, dict[str, Any]], None] | None = None,
    node_id: str = "local",
    *,
    compiled: bool = False,
) -> list[FusedMember]:
    """Train `configs` as one fused group to the end; each member's reports equal (within float
    rounding) those of `loop.train(config, sessions.LocalSession())`. `report(member, metrics)` is
    called with each member's metrics every epoch. Raises a one-line ValueError (UnfusableModelError
    for the model, optimizers.members.FusionError for the optimizer) when the group cannot be fused.
    `compiled`: the optimizer step runs compiled (see FusedGroup)."""
    group = FusedGroup(configs, task=task, device=device, node_id=node_id, compiled=compiled)
    outcomes = [FusedMember(config=c) for c in group.configs]
    while not group.finished:
        for k, metrics in sorted(group.run_epoch().items()):
            outcomes[k].reports.append(metrics)
            if report is not None:
                report(k, metrics)
    for k, outcome in enumerate(outcomes):
        outcome.status = group.status(k)
    return outcomes


def _member_models(
    task: Task, seeds: Sequence[int], device: torch.device
) -> tuple[Any, list[torch.nn.Module]]:
    """The task's splits and each member's model, initialised as `loop.train` initialises it: seeded,
    then the data built (which may draw random numbers), then the model."""
    models = []
    splits = None
    rebuild = True
    for seed in seeds:
        seed_everything(seed)
        if rebuild:
            splits = task.data()
            # Data whose building draws no random numbers is built once for all members; otherwise
            # each member rebuilds it so that its model starts from the random state it has unfused.
            rebuild = _rng_state() != _seeded_state(seed)
        models.append(task.model().to(device))
    return splits, models


def _rng_state() -> tuple[Any, ...]:
    numpy_state = np.random.get_state()
    return (
        torch.random.get_rng_state().numpy().tobytes(),
        random.getstate(),
        numpy_state[1].tobytes(),
        numpy_state[2:],
    )


def _seeded_state(seed: int) -> tuple[Any, ...]:
    """The random state right after seed_everything(seed) (the present state is kept)."""
    saved = (torch.random.get_rng_state(), random.getstate(), np.random.get_state())
    seed_everything(seed)
    state = _rng_state()
    torch.random.set_rng_state(saved[0])
    random.setstate(saved[1])
    np.random.set_state(saved[2])
    return state


@dataclass
class _EpochRun:
    train_loss: dict[int, float]
    samples: dict[int, int]
    diverged_after_s: dict[int, float]  # members that diverged this epoch: seconds until then


def _train_epoch(
    model: FusedModel,
    optimizer: fused_members.FusedOptimizer,
    schedulers: Sequence[schedules.Scheduler],
    loaders: Sequence[data.ShardedLoader],
    task: Task,
    bound: float,
    device: torch.device,
    active: Sequence[int],
    grad_clip: float | None,
) -> _EpochRun:
    model.train()
    started = time.perf_counter()
    live = list(active)
    totals = dict.fromkeys(live, 0.0)
    samples = dict.fromkeys(live, 0)
    diverged: dict[int, float] = {}
    batches = 0
    for inputs, targets in _member_batches(loaders):
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        losses = model.losses(inputs, targets, task.loss)
        values = losses.detach().double().cpu().tolist()
        for k in list(live):
            if not math.isfinite(values[k]) or values[k] > bound:  # as loop.train: before its step
                diverged[k] = time.perf_counter() - started
                live.remove(k)
                optimizer.freeze(k)
                model.freeze(k)
        if not live:
            model.restore_frozen()
            break
        optimizer.zero_grad()
        losses.sum().backward()
        if grad_clip is not None:
            _clip_each_member(optimizer.params, grad_clip)
        optimizer.step()
        # A frozen member's forward still moves its BatchNorm statistics; put them back only after the
        # backward pass (which may read the buffers it saved).
        model.restore_frozen()
        for k in live:
            if not schedules.needs_metric(schedulers[k]):
                schedulers[k].step()
            totals[k] += values[k]
            samples[k] += targets.shape[1]
        batches += 1
    optimizer.zero_grad()
    return _EpochRun(
        train_loss={k: totals[k] / max(batches, 1) for k in live},
        samples=samples,
        diverged_after_s=diverged,
    )


@torch.no_grad()
def _clip_each_member(params: Sequence[torch.Tensor], max_norm: float) -> None:
    """`torch.nn.utils.clip_grad_norm_` for each member: each member's gradients scaled so that their
    total norm (over all its tensors) is at most `max_norm`."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    count = grads[0].shape[0]
    per_tensor = torch.stack([g.reshape(count, -1).norm(dim=1) for g in grads], dim=1)  # [K, tensors]
    total = per_tensor.norm(dim=1)
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(count, *([1] * (grad.ndim - 1))))


def _member_batches(loaders: Sequence[data.ShardedLoader]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The members' batches stacked, ``[K, B, ...]``: member k's i-th batch is loader k's i-th batch.
    In-memory datasets are indexed once per step with every member's indices (the loaders' samplers
    give the order), others go through each member's loader."""
    first = loaders[0]
    if not isinstance(first.dataset, TensorDataset) or first.drop_last:
        for batch in zip(*loaders, strict=True):
            yield torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
        return
    inputs, targets = first.dataset.tensors
    order = torch.tensor([list(loader.sampler) for loader in loaders], dtype=torch.long)
    for start in range(0, order.shape[1], first.batch_size):
        batch = order[:, start : start + first.batch_size]
        yield inputs[batch], targets[batch]


@torch.no_grad()
def _evaluate(
    model: FusedModel, loaders: dict[str, data.ShardedLoader], task: Task, device: torch.device
) -> list[dict[str, float]]:
    """Every member's metrics on every evaluation split, computed as `loop.evaluate` computes them: one
    vmapped forward, then each member's loss and metrics by the same calls (in float32, as the loop
    does, so a batched reduction would round differently)."""
    model.eval()
    names = list(task.metrics)
    count = model.num_members
    results: list[dict[str, float]] = [{} for _ in range(count)]
    for prefix, loader in loaders.items():
        sums = torch.zeros(count, 2 * (1 + len(names)), dtype=torch.float64, device=device)
        for inputs, targets in loader:
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            outputs = model.outputs(inputs).float()
            examples = len(targets)
            for k in range(count):
                sums[k, 0] += task.loss(outputs[k], targets).double() * examples
                sums[k, 1] += examples
                for i, name in enumerate(names, start=1):
                    values = task.metrics[name].values(outputs[k], targets)
                    sums[k, 2 * i] += values.double().sum()
                    sums[k, 2 * i + 1] += values.numel()
        totals = sums.tolist()
        for k in range(count):
            means = [totals[k][2 * i] / max(totals[k][2 * i + 1], 1) for i in range(1 + len(names))]
            results[k][prefix + LOSS_METRIC] = means[0]
            for i, name in enumerate(names, start=1):
                results[k][prefix + name] = task.metrics[name].report(means[i])
    return results


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default
