"""Sharded optimizer state (ZeRO stage 1, Rajbhandari et al. 2020) for any `torch.optim.Optimizer`.

With N data-parallel workers, `ShardedOptimizer` gives each worker the optimizer state of about 1/N of
the parameters: whole parameter tensors are assigned to workers, balanced by element count (greedy,
largest first, the same on every worker). After the gradient all-reduce (DDP's), each worker steps
its own optimizer over the tensors it owns only, then every owner broadcasts its updated tensors
(one flat buffer per owner and dtype) so that all workers hold the same parameters again.

Whole tensors keep every optimizer in `optimizers/` exact, LAMB's and LARS's per-tensor trust ratio
included: the update of a tensor depends only on that tensor, its gradient and its own state.

`state_dict()` is collective (every worker must call it) and returns the full, consolidated state in
the format of the unsharded optimizer over the same parameter groups, so a checkpoint written with N
workers loads with any other number, sharded or not; `load_state_dict` takes such a full state and keeps
this worker's part. Works with gloo (CPU) and NCCL (GPU): the parameters' device is used for the
broadcasts, and states travel through the object collectives on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist

DIRECT_NUMEL = 1 << 16
"""Tensors with at least this many elements are broadcast in place; smaller ones go in a flat bucket."""
BuildOptimizer = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]


def partition(numels: Sequence[int], world_size: int) -> list[int]:
    """The owner rank of each tensor: largest first, each to the least-loaded rank (lowest on ties)."""
    if world_size < 1:
        raise ValueError(f"Invalid world_size: {world_size}; must be >= 1")
    loads = [0] * world_size
    owners = [0] * len(numels)
    for index in sorted(range(len(numels)), key=lambda i: (-numels[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        owners[index] = rank
        loads[rank] += numels[index]
    return owners


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors this worker keeps as optimizer state (its shard's, for a ShardedOptimizer)."""
    inner = optimizer.local if isinstance(optimizer, ShardedOptimizer) else optimizer
    total = 0
    for per_param in inner.state.values():
        for value in per_param.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def _groups(params: Iterable[Any]) -> list[dict[str, Any]]:
    params = list(params)
    if not params:
        raise ValueError("ShardedOptimizer got an empty parameter list")
    if not isinstance(params[0], dict):
        params = [{"params": params}]
    return [{**group, "params": list(group["params"])} for group in params]


def _without_params(group: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in group.items() if key != "params"}


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    return value


class ShardedOptimizer(torch.optim.Optimizer):
    """ZeRO-1: wrap the optimizer `build(param_groups)` makes so that this worker keeps the state of its
    shard only (see the module docstring). Its `param_groups` hold every parameter (a schedule, gradient
    clipping and `GradScaler` see the whole model); their hyperparameters reach the worker's own
    optimizer (`local`) before each step. With no process group (or one worker) it shards over one."""

    def __init__(
        self,
        params: Iterable[Any],
        build: BuildOptimizer,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        groups = _groups(params)
        distributed = dist.is_available() and dist.is_initialized()
        self.process_group = process_group
        self.world_size = dist.get_world_size(process_group) if distributed else 1
        self.rank = dist.get_rank(process_group) if distributed else 0
        self._all = [p for group in groups for p in group["params"]]
        self.owners = partition([p.numel() for p in self._all], self.world_size)
        owner_of = {id(p): rank for p, rank in zip(self._all, self.owners, strict=True)}
        local_groups = [
            {**_without_params(g), "params": [p for p in g["params"] if owner_of[id(p)] == self.rank]}
            for g in groups
        ]
        self.local_to_global = [index for index, p in enumerate(self._all) if owner_of[id(p)] == self.rank]
        self.local = build(local_groups)
        # The full view, with the hyperparameters (defaults filled in) of the worker's own optimizer.
        full = [
            {**_without_params(local), "params": g["params"]}
            for g, local in zip(groups, self.local.param_groups, strict=True)
        ]
        super().__init__(full, defaults=dict(self.local.defaults))
        self._partitioned = True
        # Per owner rank: large tensors are broadcast in place, one by one; small ones as one flat buffer
        # per (dtype, device) (one message instead of many, for a copy that costs little).
        self._direct: list[list[torch.Tensor]] = []
        self._buckets: list[list[list[torch.Tensor]]] = []
        for rank in range(self.world_size):
            by_kind: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
            direct = []
            for p, owner in zip(self._all, self.owners, strict=True):
                if owner == rank and p.numel() >= DIRECT_NUMEL:
                    direct.append(p)
                elif owner == rank:
                    by_kind.setdefault((p.dtype, p.device), []).append(p)
            self._direct.append(direct)
            self._buckets.append(list(by_kind.values()))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_partitioned", False):
            raise NotImplementedError(
                "ShardedOptimizer partitions its parameters once: give every parameter group to the "
                "constructor (add_param_group after it is not supported)"
            )
        super().add_param_group(param_group)

    def _sync_hyperparameters(self, to_local: bool) -> None:
        for full, local in zip(self.param_groups, self.local.param_groups, strict=True):
            source, target = (full, local) if to_local else (local, full)
            for key, value in source.items():
                if key != "params":
                    target[key] = value

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync_hyperparameters(to_local=True)
        self.local.step()
        self._sync_hyperparameters(to_local=False)
        self._share_parameters()
        return loss

    def _share_parameters(self) -> None:
        """Every owner broadcasts its updated tensors; the others copy them in."""
        if self.world_size == 1:
            return
        pending = []
        for rank, direct in enumerate(self._direct):
            source = self._global_rank(rank)
            for t in direct:
                pending.append(
                    (
                        rank,
                        [],
                        t,
                        dist.broadcast(t.detach(), src=source, group=self.process_group, async_op=True),
                    )
                )
        for rank, buckets in enumerate(self._buckets):
            for tensors in buckets:
                if rank == self.rank:
                    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
                else:
                    flat = torch.empty(
                        sum(t.numel() for t in tensors), dtype=tensors[0].dtype, device=tensors[0].device
                    )
                work = dist.broadcast(
                    flat, src=self._global_rank(rank), group=self.process_group, async_op=True
                )
                pending.append((rank, tensors, flat, work))
        for rank, tensors, flat, work in pending:
            work.wait()
            if rank != self.rank:
                offset = 0
                for t in tensors:
                    t.copy_(flat[offset : offset + t.numel()].view_as(t))
                    offset += t.numel()

    def _global_rank(self, rank: int) -> int:
        if self.process_group is None:
            return rank
        return dist.get_global_rank(self.process_group, rank)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The full optimizer state (collective: every worker calls it), in the unsharded format."""
        local = self.local.state_dict()
        mine = {self.local_to_global[i]: _to_cpu(s) for i, s in local["state"].items()}
        if self.world_size > 1:
            parts: list[Any] = [None] * self.world_size
            dist.all_gather_object(parts, mine, group=self.process_group)
        else:
            parts = [mine]
        state: dict[int, Any] = {}
        for part in parts:
            state.update(part)
        groups, start = [], 0
        for group in self.param_groups:
            count = len(group["params"])
            groups.append({**_without_params(group), "params": list(range(start, start + count))})
            start += count
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        """Load a full state (from `state_dict()` with any number of workers, or an unsharded optimizer
        over the same parameter groups) and keep this worker's part."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"])
            for s, g in zip(saved_groups, self.param_groups, strict=False)
        ):
            raise ValueError(
                "optimizer state does not fit: its parameter groups have "
                f"{[len(s['params']) for s in saved_groups]} parameters, this model's "
                f"{[len(g['params']) for g in self.param_groups]}"
            )
        saved_ids = [i for group in saved_groups for i in group["params"]]
        local_index = {g: i for i, g in enumerate(self.local_to_global)}
        local_state = {
            local_index[g]: state_dict["state"][saved_ids[g]]
            for g in self.local_to_global
            if saved_ids[g] in state_dict["state"]
        }
        local_groups = []
        for full, saved, local in zip(self.param_groups, saved_groups, self.local.param_groups, strict=True):
            full.update(_without_params(saved))
            ids = [local_index[id_of] for id_of in self._global_ids(full) if id_of in local_index]
            local_groups.append({**_without_params(saved), "params": ids})
            assert len(ids) == len(local["params"])
        self.local.load_state_dict({"state": local_state, "param_groups": local_groups})
        self._sync_hyperparameters(to_local=False)

    def _global_ids(self, group: dict[str, Any]) -> list[int]:
        position = {id(p): i for i, p in enumerate(self._all)}
        return [position[id(p)] for p in group["params"]]
