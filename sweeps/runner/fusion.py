"""Which optimizers of a study train fused, how many members a group may hold, and how members are packed.

A fused group (`trainables.fused_trial`) trains several (configuration, seed) members of one optimizer
as one Tune trial; every member's results equal the same trial run alone (`trainables.fused`), so fusion
changes how fast a study runs, never what it finds.

Who fuses: random search (Optuna proposes configurations one at a time from earlier results, so they
cannot be packed up front), single-process trials (`--workers-per-trial 1`, `--mode sync`), optsweep's
own optimizers (they take per-member hyperparameters; a user's class does not), and a model whose
forward runs under `torch.vmap`. Anything else runs unfused, and the study says why in one line.

The group size K (the rule): a member needs its weights, their gradients, up to two optimizer-state
tensors per weight and a saved copy (5 x the parameter bytes), plus its activations for one batch and
their gradients (2 x the bytes of every module's output, measured with one forward pass). K is the
number of members that fit in half of this machine's free device memory (the first CUDA device's when
there is one, else the free RAM shared by its CPUs' trials), capped at `MAX_GROUP` (beyond it a group's
step is already long enough that per-trial overhead is negligible, and a larger group only waits longer
at each rung). `--fuse K` sets K instead (e.g. on a cluster whose head node, where the study is planned,
has no GPU).

Packing: members are ordered by configuration and seed, so a configuration's seeds stay together, and
split into as few groups of at most K as needed, but into at least as many as the optimizer's share of
the trial slots (so that every slot trains). Members whose optimizers differ in code-path switches
(e.g. Nesterov on and off, weight decay zero or not) cannot share a step: they are packed separately.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from optsweep.optimizers import members as fused_members
from optsweep.sweeps.search.contenders import Contender
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables import data, optimizer_choice
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.fused_model import FusedModel, UnfusableModelError
from optsweep.trainables.tasks import Task, param_groups
from optsweep.vocabulary import CONFIGURATION_KEY

MAX_GROUP = 128
STATE_COPIES = 5  # weights, gradients, two optimizer-state tensors, a frozen member's saved copy
MEMORY_SHARE = 0.5  # of the free device memory, for a node's fused groups together


@dataclass(frozen=True)
class Fusion:
    """An optimizer's fusion decision: `group_size` K > 0 (fused), or 0 with `reason` (unfused)."""

    group_size: int
    reason: str | None = None

    @property
    def fused(self) -> bool:
        return self.group_size > 0


def decide(args: StudySpec, task: Task, contenders: Sequence[Contender]) -> dict[str, Fusion]:
    """Each optimizer's fusion (by label); the model is probed once, on this machine's CPU."""
    if args.fuse == 0:
        return {c.label: Fusion(0, "--no-fuse") for c in contenders}
    study_reason = _study_reason(args)
    if study_reason is not None:
        return {c.label: Fusion(0, study_reason) for c in contenders}
    try:
        model, batch = _probe(task, args)
    except UnfusableModelError as error:
        return {c.label: Fusion(0, str(error)) for c in contenders}
    size = args.fuse or group_size(
        model, batch, _device(args), cpus_per_trial=args.cpus_per_worker, gpus_per_trial=args.gpus_per_worker
    )
    decisions = {}
    for contender in contenders:
        reason = _optimizer_reason(contender, model, task)
        decisions[contender.label] = Fusion(0, reason) if reason else Fusion(size)
    return decisions


def _study_reason(args: StudySpec) -> str | None:
    if args.search == "optuna":
        return (
            f"--search {args.search} proposes each configuration from the results before it, so "
            "configurations cannot be packed into groups up front"
        )
    if args.workers_per_trial != 1 or args.mode != "sync":
        return (
            f"a fused group trains in one process; --workers-per-trial {args.workers_per_trial} "
            f"--mode {args.mode} trains each trial across workers"
        )
    return None


def _optimizer_reason(contender: Contender, model: torch.nn.Module, task: Task) -> str | None:
    if contender.cls is not None or optimizer_choice.is_reference(contender.reference):
        return (
            f"{contender.reference} is a user's optimizer class: only optsweep's optimizers take "
            "per-member hyperparameters"
        )
    hparams = {"lr": 1e-3}
    instance = optimizer_choice.build(
        contender.reference, fused_members.placeholder_groups(param_groups(model, task.weight_decay)), hparams
    )
    return fused_members.unfusable_reason(instance)


def _probe(task: Task, args: StudySpec) -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """The task's model and one training batch; UnfusableModelError if the model does not run under vmap."""
    splits = task.data()
    model = task.model()
    batch_size = args.batch_size or task.batch_size
    inputs, targets = next(iter(data.make_loader(splits.train, batch_size, shuffle=False, seed=0)))
    FusedModel.check(model, inputs, targets, task.loss)
    return model, (inputs, targets)


def _device(args: StudySpec) -> torch.device:
    return (
        torch.device("cuda")
        if args.gpus_per_worker > 0 and torch.cuda.is_available()
        else torch.device("cpu")
    )


def member_bytes(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    """The memory one member needs (see the module docstring)."""
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    activations = 0

    def count(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal activations
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor):
                activations += tensor.numel() * tensor.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model(batch[0])
    finally:
        for hook in hooks:
            hook.remove()
    return STATE_COPIES * parameters + buffers + 2 * activations


def free_memory(device: torch.device) -> int:
    """Free memory of `device`: the CUDA device's, or this machine's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def group_size(
    model: torch.nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    *,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
) -> int:
    """K by the module docstring's rule: members that fit in a trial's share of half the free memory."""
    if device.type == "cuda":
        trials_sharing = 1.0 / gpus_per_trial if gpus_per_trial > 0 else 1.0
    else:
        trials_sharing = max(1.0, (os.cpu_count() or 1) / cpus_per_trial)
    budget = MEMORY_SHARE * free_memory(device) / trials_sharing
    return max(1, min(MAX_GROUP, int(budget // member_bytes(model, batch))))


def pack(
    members: Sequence[dict[str, Any]],
    signatures: Sequence[Any],
    group_size: int,
    parallel: int,
) -> list[list[dict[str, Any]]]:
    """Split `members` (in configuration, seed order) into groups of at most `group_size` with equal
    `signatures`, into at least `parallel` groups where there are enough members."""
    classes: dict[Any, list[dict[str, Any]]] = {}
    for member, signature in zip(members, signatures, strict=True):
        classes.setdefault(signature, []).append(member)
    wanted = max(math.ceil(len(members) / group_size), min(parallel, len(members)))
    groups = []
    for same in classes.values():
        count = max(math.ceil(len(same) / group_size), round(wanted * len(same) / len(members)), 1)
        bounds = [round(i * len(same) / count) for i in range(count + 1)]
        groups += [same[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    return groups


def plan_groups(
    optimizer: str,
    configurations: Sequence[dict[str, Any]],
    seeds: int,
    settings: dict[str, Any],
    task: Task,
    group_size_: int,
    parallel: int,
) -> list[list[dict[str, Any]]]:
    """The fused groups of one optimizer's study: each member is a configuration's hyperparameters with
    its `seed` and `__configuration`, as an unfused trial's config has them."""
    members = [
        {**hparams, "seed": seed, CONFIGURATION_KEY: number}
        for number, hparams in enumerate(configurations)
        for seed in range(seeds)
    ]
    return pack_members(optimizer, members, settings, task, group_size_, parallel)


def pack_members(
    optimizer: str,
    members: Sequence[dict[str, Any]],
    settings: dict[str, Any],
    task: Task,
    group_size_: int,
    parallel: int,
) -> list[list[dict[str, Any]]]:
    """`members` (each what an unfused trial's config holds besides `optimizer` and `settings`, in
    configuration and seed order) packed into fused groups (see `pack`)."""
    template = task.model()
    groups = param_groups(template, task.weight_decay)
    signatures = []
    for member in members:
        config = TrainConfig.from_trial_config({"optimizer": optimizer, "settings": settings, **member})
        instance = optimizer_choice.build(
            config.optimizer, fused_members.placeholder_groups(groups), config.hparams
        )
        signatures.append(fused_members.fusion_signature(instance))
    return pack(members, signatures, group_size_, parallel)
