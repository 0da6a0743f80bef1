"""One optimizer step for K fused members: per-member hyperparameters broadcast over the member dimension.

Fused trials (`trainables.fused`) train K copies of a model at once; each parameter carries a leading
member dimension ``[K, ...]``. Each member keeps its own optimizer instance of the project's class
over placeholder (empty) tensors, built with that member's hyperparameters: it validates them, holds
them in its param groups (where the member's own LR scheduler changes them, as it would in an
unfused run) and computes the member's named per-step scalars with the optimizer's own `_scalars`.
Each step the members' scalars are stacked into tensors of shape ``[K, 1, ..., 1]`` and the
optimizer's own update function (the formulas of `optimizers.transforms`) runs once for all members:
there is no second copy of the maths.

Switches that select code paths (``_flags``: nesterov, amsgrad, centered, whether there is weight
decay or momentum) must be equal within a fused group; `fusion_signature` is the key to group by.
Optimizers whose update reduces over a whole tensor (the LAMB and LARS trust ratios: a norm per
tensor) take the number of leading member dimensions (``batch_dims=1``), so that each member's norm is
over its own tensor only (`transforms.tensor_norm`).

The step can run compiled (``compiled=True``): the same update function, compiled by the engine's
machinery (`_engine`: one `torch.compile`d wrapper per update function, shared with the unfused
optimizers' compiled step, the same recompile limit and the same eager fallback with a warning where
compilation fails). The members' scalars go in as one tensor ``[fields, K, 1, ..., 1]``, so a changed
LR (a schedule) or step count changes only tensor values and never recompiles; a new bucket shape (a
group that shrank, another parameter rank) does. ``OPTSWEEP_COMPILE=never`` / ``always`` overrides
`compiled`, as it overrides the unfused optimizers' choice. Not compiled on the CPU: LAMB and LARS
(`_per_tensor_norms`), whose per-member norms inductor's C++ backend fails to compile in torch 2.14
(``KeyError: 'bufN'`` in its outer-loop fusion of a reduction with an in-place updated buffer,
pytorch/pytorch#196570); their fused step runs eagerly there, with a warning, rather than letting the
failure switch compilation off for every optimizer on the CPU. They compile on CUDA (Triton).

A member can be frozen (`freeze`): from then on its parameters and state keep the values they had.
A group can shrink (`select`: a new fused optimizer over some of the members, with their state and
step count) and be checkpointed (`state_dict`, `load_state_dict`: plain tensors, lists and dicts).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from . import _engine
from ._engine import FusableOptimizer


class FusionError(ValueError):
    """Members that cannot share one fused step; the message is one line for the user."""


def unfusable_reason(optimizer: torch.optim.Optimizer) -> str | None:
    """Why members of `optimizer`'s class cannot be fused, or None if they can."""
    cls = type(optimizer)
    if not isinstance(optimizer, FusableOptimizer):
        return (
            f"{cls.__name__} runs unfused: only optsweep's optimizers (optimizers.names()) take "
            "per-member hyperparameters"
        )
    return None


def fusion_signature(optimizer: torch.optim.Optimizer) -> tuple[Any, ...]:
    """Members whose optimizers have equal signatures can be fused: the class, and per param group the
    code-path switches and the state tensors in use."""
    reason = unfusable_reason(optimizer)
    if reason is not None:
        raise FusionError(reason)
    assert isinstance(optimizer, FusableOptimizer)
    return (
        type(optimizer),
        tuple(
            (tuple(sorted(optimizer._flags(g).items())), optimizer._active_state_names(g))
            for g in optimizer.param_groups
        ),
    )


def placeholder_groups(groups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`groups` (param groups of stacked parameters) with each group's parameters replaced by one empty
    tensor: what a member's optimizer is built over, keeping the groups' options (e.g. no decay)."""
    return [{**group, "params": [torch.zeros(0)]} for group in groups]


class _Bucket:
    """Stacked parameters of one param group with equal rank, dtype and device: one update call a step.

    Its attributes `params`, `state_lists`, `device` and `compiled_with` are those that the engine's
    `FusableOptimizer._run_compiled` reads and writes of its own buckets, so that the compiled fused
    step goes through that very method."""

    __slots__ = ("compiled_with", "device", "dtype", "group", "ndim", "params", "state_lists")

    def __init__(
        self,
        group: int,
        ndim: int,
        dtype: torch.dtype,
        device: torch.device,
        params: list[Tensor],
        state_lists: list[list[Tensor] | None],
    ) -> None:
        self.group = group
        self.ndim = ndim
        self.dtype = dtype
        self.device = device
        self.params = params
        self.state_lists = state_lists
        self.compiled_with: dict[str, Any] | None = None  # flags of the last compiled call


_warned_eager_on_cpu: set[type] = set()


class FusedOptimizer:
    """The step of K members over stacked parameters.

    `groups`: param groups whose parameters have shape ``[K, ...]`` (the options of each group, such as
    a weight decay of 0, are read from the members' optimizers). `members`: K optimizers of one
    optsweep class, built over `placeholder_groups(groups)` with each member's hyperparameters.
    `compiled`: run the update compiled (see the module docstring); False runs it eagerly.
    """

    def __init__(
        self,
        groups: Sequence[dict[str, Any]],
        members: Sequence[torch.optim.Optimizer],
        *,
        compiled: bool = False,
    ) -> None:
        if not members:
            raise FusionError("a fused optimizer needs at least one member")
        signatures = {fusion_signature(member) for member in members}
        if len(signatures) > 1:
            raise FusionError(
                f"{type(members[0]).__name__} members differ in switches that select code paths "
                "(e.g. nesterov, amsgrad, centered, zero vs non-zero weight decay or momentum); "
                "group members by optimizers.members.fusion_signature"
            )
        self.members: list[FusableOptimizer] = list(members)  # type: ignore[arg-type]
        self.num_members = len(members)
        first = self.members[0]
        if len(first.param_groups) != len(groups):
            raise FusionError(
                f"members have {len(first.param_groups)} param groups, the stacked parameters {len(groups)}"
            )
        self._cls = type(first)
        self.compiled = compiled
        self._counted = first._counts_steps
        self._steps = 0
        self.frozen: dict[int, list[tuple[Tensor, Tensor]]] = {}  # member -> (live slice, saved copy)
        self.params: list[Tensor] = []
        self._state: dict[int, dict[str, Tensor]] = {}  # id(stacked param) -> state name -> [K, ...]
        buckets: dict[tuple[Any, ...], _Bucket] = {}
        for index, group in enumerate(groups):
            active = first._active_state_names(first.param_groups[index])
            for param in group["params"]:
                if param.ndim < 1 or param.shape[0] != self.num_members:
                    raise FusionError(
                        f"a stacked parameter of shape {tuple(param.shape)} has no leading member dimension "
                        f"of size {self.num_members}"
                    )
                state = self._initial_state(param, index, active)
                self._state[id(param)] = state
                self.params.append(param)
                key = (index, param.ndim, param.dtype, param.device)
                if key not in buckets:
                    buckets[key] = _Bucket(
                        index,
                        param.ndim,
                        param.dtype,
                        param.device,
                        [],
                        [[] if name in active else None for name in first._state_names],
                    )
                bucket = buckets[key]
                bucket.params.append(param)
                for name, tensors in zip(first._state_names, bucket.state_lists, strict=True):
                    if tensors is not None:
                        tensors.append(state[name])
        self._buckets = list(buckets.values())

    def _initial_state(self, param: Tensor, group: int, active: tuple[str, ...]) -> dict[str, Tensor]:
        """Each member's optimizer creates its own state (its initial values may depend on its
        hyperparameters, e.g. Adagrad's initial accumulator) for a member-sized tensor; stacked."""
        per_member: list[dict[str, Tensor]] = []
        for member in self.members:
            probe = torch.zeros_like(param[0])
            member._init_state(probe, member.param_groups[group])
            created = member.state.pop(probe)
            per_member.append({name: created[name] for name in active})
        return {name: torch.stack([m[name] for m in per_member]) for name in active}

    def state_of(self, param: Tensor) -> dict[str, Tensor]:
        """The stacked state tensors (name -> ``[K, ...]``) of stacked parameter `param`."""
        return self._state[id(param)]

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One step of every member (frozen members keep their parameters and state)."""
        self._steps += 1
        # Optimizers without step counts mark the step that creates their buffers with 0.0.
        step = float(self._steps) if self._counted else 0.0 if self._steps == 1 else 1.0
        tables: dict[int, tuple[type, Tensor]] = {}
        compile_now = self._should_compile()
        for bucket in self._buckets:
            grads = [p.grad for p in bucket.params]
            if any(g is None for g in grads):
                present = [i for i, g in enumerate(grads) if g is not None]
                if not present:
                    continue
                params = [bucket.params[i] for i in present]
                grads = [grads[i] for i in present]
                state_lists = [None if s is None else [s[i] for i in present] for s in bucket.state_lists]
                run = _Bucket(bucket.group, bucket.ndim, bucket.dtype, bucket.device, params, state_lists)
            else:
                run = bucket
            if bucket.group not in tables:
                tables[bucket.group] = self._scalar_table(bucket.group, step)
            named, table = tables[bucket.group]
            dtype = bucket.dtype if bucket.dtype in (torch.float32, torch.float64) else torch.float32
            columns = table.to(device=bucket.device, dtype=dtype).view(
                table.shape[0], self.num_members, *([1] * (bucket.ndim - 1))
            )
            flags: dict[str, Any] = self.members[0]._flags(self.members[0].param_groups[bucket.group])
            if self._cls._per_tensor_norms:
                flags = {**flags, "batch_dims": 1}
            if (
                compile_now
                and self._compilable_on(bucket.device)
                and self.members[0]._run_compiled(run, grads, columns, flags)  # type: ignore[arg-type]
            ):
                continue
            # Eager (or compilation failed, warned once): the same update function and formulas.
            self._cls._update(run.params, grads, *run.state_lists, named._make(columns.unbind(0)), **flags)
        self._restore_frozen()
        for member in self.members:
            member._opt_called = True  # type: ignore[attr-defined]  # LR schedulers check that a step ran

    def _should_compile(self) -> bool:
        """`compiled`, unless OPTSWEEP_COMPILE says otherwise (as for the unfused optimizers)."""
        mode = _engine.compile_mode()
        return self.compiled if mode == "auto" else mode == "always"

    def _compilable_on(self, device: torch.device) -> bool:
        if device.type in _engine._compile_broken_on:
            return False
        if self._cls._per_tensor_norms and device.type == "cpu":  # see the module docstring
            if self._cls not in _warned_eager_on_cpu:
                _warned_eager_on_cpu.add(self._cls)
                warnings.warn(
                    f"optsweep: the fused {self._cls.__name__} step runs eagerly on the CPU (inductor's C++ "
                    "backend fails on its per-member norms, pytorch/pytorch#196570); compiled on CUDA.",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return False
        return True

    def _scalar_table(self, group: int, step: float) -> tuple[type, Tensor]:
        """Every member's named scalars for this step, computed by its own optimizer in float64 on the
        host: (the NamedTuple class, a [fields, K] tensor)."""
        rows = [member._scalars(member.param_groups[group], step) for member in self.members]
        return type(rows[0]), torch.tensor(rows, dtype=torch.float64).T.contiguous()

    def freeze(self, member: int) -> None:
        """From now on member `member`'s parameters and optimizer state keep their present values."""
        if member in self.frozen:
            return
        slices: list[Tensor] = []
        for param in self.params:
            slices.append(param.data[member])
            slices.extend(state[member] for state in self._state[id(param)].values())
        self.frozen[member] = [(live, live.detach().clone()) for live in slices]

    def select(self, members: Sequence[int], groups: Sequence[dict[str, Any]]) -> FusedOptimizer:
        """A fused optimizer of only `members` (indices into this one's, in the order given) over
        `groups`: the same param groups as this optimizer's, whose stacked parameters hold those members.
        Their state tensors and the step count carry over, so that they go on exactly as they would
        have here; this optimizer is left as it was."""
        chosen = FusedOptimizer(groups, [self.members[k] for k in members], compiled=self.compiled)
        if len(chosen.params) != len(self.params):
            raise FusionError(
                f"{len(chosen.params)} stacked parameters, this optimizer has {len(self.params)}"
            )
        for old, new in zip(self.params, chosen.params, strict=True):
            index = torch.tensor(list(members), dtype=torch.long, device=old.device)
            for name, tensor in chosen._state[id(new)].items():
                tensor.copy_(self._state[id(old)][name].index_select(0, index))
        chosen._steps = self._steps
        return chosen

    def state_dict(self) -> dict[str, Any]:
        """The step count, the stacked state tensors (copies, one dict per stacked parameter in the
        order of `params`) and each member's optimizer state dict (its param groups: LR and
        hyperparameters as its scheduler left them). Frozen members are not recorded."""
        return {
            "steps": self._steps,
            "state": [
                {name: t.detach().clone() for name, t in self._state[id(p)].items()} for p in self.params
            ],
            "members": [member.state_dict() for member in self.members],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s values (tensors are copied into this optimizer's, on its device)."""
        if len(state["state"]) != len(self.params) or len(state["members"]) != self.num_members:
            raise ValueError(
                f"the saved fused optimizer has {len(state['members'])} members and {len(state['state'])} "
                f"stacked parameters, this one {self.num_members} and {len(self.params)}"
            )
        for param, saved in zip(self.params, state["state"], strict=True):
            live = self._state[id(param)]
            if set(saved) != set(live):
                raise ValueError(f"saved optimizer state {sorted(saved)}, expected {sorted(live)}")
            for name, tensor in live.items():
                tensor.copy_(saved[name])
        for member, saved in zip(self.members, state["members"], strict=True):
            member.load_state_dict(saved)
        self._steps = int(state["steps"])

    def _restore_frozen(self) -> None:
        for saved in self.frozen.values():
            for live, copy in saved:
                live.copy_(copy)
