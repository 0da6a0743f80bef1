"""The step machinery every optsweep optimizer shares.

An optimizer subclass declares its state (`_init_state`), the host-side scalars of one step
(`_scalars`, float64 Python maths, as torch.optim's reference loop does it), its static switches
(`_flags`) and a list-level update function built from `optimizers.transforms`. This module
gathers the parameters that have gradients, buckets them by device, dtype and step count, and runs the
update function either eagerly or compiled with `torch.compile`.

Why compile: a per-tensor chain of element-wise ops reads and writes each state tensor several times;
inductor fuses the chain into one pass per tensor, which is what torch's `fused=True` kernels do by
hand. That only pays when the step moves enough memory to amortise the compile (~2 s with a warm
on-disk cache, ~25 s cold for ResNet-18), so by default buckets of at least `COMPILE_MIN_NUMEL`
elements are compiled and small ones run eagerly. Where compilation fails (no C++ compiler, no
Triton) the step falls back to eager with the same formulas and warns once.

When the user compiles the step (`torch.compile(opt.step)`, or a compiled training step that calls
it), dynamo traces `step()` itself. The eager path's host-side step counts would be Python numbers
that change every step (dynamo would guard on them and recompile, or reuse a graph with a stale bias
correction), so a traced step takes another path (`_traced_group`): no plans, scalars computed in the
graph from each parameter's `step` tensor, state created by `_init_group` outside the graph. Eager
plans notice steps counted by a compiled one through the count tensor's version counter.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

COMPILE_MIN_NUMEL = 1 << 20
"""Default (`fused=None`) compiles buckets of at least this many elements (~1M, 4 MiB in fp32)."""

_COMPILE_ENV = "OPTSWEEP_COMPILE"  # "auto" (default), "always" or "never"

RECOMPILE_LIMIT = 64
"""Compiled variants kept per update function before new variants run eagerly."""

_compiled_fns: dict[Callable[..., None], Callable[..., None]] = {}
_compile_broken_on: set[str] = set()  # device types where compilation failed once


def compile_mode() -> str:
    mode = os.environ.get(_COMPILE_ENV, "auto").strip().lower()
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"Invalid {_COMPILE_ENV}={mode!r}; allowed: auto, always, never")
    return mode


def _compiled(update: Callable[..., None]) -> Callable[..., None]:
    if update not in _compiled_fns:
        _compiled_fns[update] = torch.compile(update, fullgraph=True)
    return _compiled_fns[update]


_warned_recompile_limit = False


def _warn_once_recompile_limit(optimizer: str) -> None:
    global _warned_recompile_limit
    _warned_recompile_limit = True
    warnings.warn(
        f"optsweep: the {optimizer} step has been compiled for {RECOMPILE_LIMIT} variants in this process; "
        "new variants run the eager step (same formulas, slower).",
        RuntimeWarning,
        stacklevel=5,
    )


def _real_view(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _scalar_dtype(dtype: torch.dtype) -> torch.dtype:
    # Low-precision params get fp32 scalars, as torch's eager kernels compute with fp32 scalars.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _Bucket:
    """Parameters of one group that share device, dtype and step count: one update call per step.

    Built once and reused while the group's parameters-with-gradients, their state and the group's
    switches stay the same (a step must cost little more than its kernel); only the gradients, which
    `zero_grad()` replaces every iteration, are gathered anew each step.
    """

    __slots__ = (
        "compiled_with",
        "complex",
        "counts",
        "counts_version",
        "device",
        "first_count",
        "first_state",
        "numel",
        "originals",
        "params",
        "state_lists",
        "step",
    )

    def __init__(self, device: torch.device, is_complex: bool, step: float) -> None:
        self.device = device
        self.complex = is_complex
        self.step = step  # the host-side count (all `steps` tensors hold it)
        self.originals: list[Tensor] = []  # the parameters, to read their .grad each step
        self.params: list[Tensor] = []  # real views of them
        self.state_lists: list[list[Tensor] | None] = []  # per name in _state_names, None if unused
        # If the optimizer counts steps: one tensor whose elements are the params' `step` state tensors
        # (0-dim views into it, as torch.optim keeps one tensor per param), so one add counts them all.
        self.counts: Tensor | None = None
        self.counts_version = 0  # counts._version after our last add: anything else bumps it
        self.first_state: dict[str, Any] = {}  # the first param's state and its `step` view of counts
        self.first_count: Tensor | None = None
        self.numel = 0
        self.compiled_with: dict[str, bool] | None = None  # flags of the last compiled call

    def grads(self) -> list[Tensor]:
        grads = [p.grad for p in self.originals]
        return [torch.view_as_real(g) for g in grads] if self.complex else grads  # type: ignore[misc]


class _Plan:
    """The buckets of one param group, valid while `key` (which params have grads, state names) holds."""

    __slots__ = ("buckets", "key", "reusable")

    def __init__(self, key: tuple[Any, ...], buckets: list[_Bucket], reusable: bool) -> None:
        self.key = key
        self.buckets = buckets
        self.reusable = reusable


class FusableOptimizer(torch.optim.Optimizer):
    """Base of optsweep's optimizers; see the module docstring."""

    # Subclasses set these.
    _update: Callable[..., None]
    _state_names: tuple[str, ...]  # per-tensor state passed to _update, in order (a subset may be None)
    _counts_steps: bool = True  # keeps a per-parameter `step` tensor like torch.optim (SGD/LARS don't)
    # The update reduces over whole tensors (LARS/LAMB trust ratios): its `_update` takes `batch_dims`,
    # the leading dimensions of independent tensors that each get their own norm (fused members).
    _per_tensor_norms: bool = False

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _active_state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        """State tensors this group uses; the others are passed to _update as None."""
        return self._state_names

    def _scalars(self, group: dict[str, Any], step: float | Tensor) -> tuple[Any, ...]:
        """Per-step scalars, a NamedTuple of the update function. `step` is the 1-based count (a Python
        float eagerly, the param's count tensor when traced), or 0.0 for a step that creates the state
        of an optimizer without step counts (its first step)."""
        raise NotImplementedError

    def _flags(self, group: dict[str, Any]) -> dict[str, bool]:
        raise NotImplementedError

    def _is_fresh(self, state: dict[str, Any], group: dict[str, Any]) -> bool:
        return len(state) == 0

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform a single optimization step. `closure` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if torch.compiler.is_compiling():
            # Traced by dynamo (`torch.compile(opt.step)`, a compiled training step): a step whose
            # counts stay in tensors, so no Python value changes from step to step (see _traced_group).
            for group in self.param_groups:
                self._traced_group(group)
            return loss
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._plans = {}  # the state tensors were replaced

    # Param-group keys torch.optim added over time, with the values its __setstate__ fills into an
    # older state dict's groups; subclasses list theirs.
    _group_defaults: ClassVar[dict[str, Any]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling and load_state_dict: fill in flags missing from older state dicts and turn
        a numeric `step` (very old checkpoints) into a tensor, as torch.optim does."""
        super().__setstate__(state)
        self._plans = {}
        for group in self.param_groups:
            for key, value in self._group_defaults.items():
                group.setdefault(key, value)
            self._fix_group(group)
            for param in group["params"]:
                param_state = self.state.get(param)
                if param_state and "step" in param_state and not torch.is_tensor(param_state["step"]):
                    param_state["step"] = torch.tensor(float(param_state["step"]), dtype=step_counter().dtype)

    def _fix_group(self, group: dict[str, Any]) -> None:
        """Group settings an optimizer imposes on whatever state dict it loads (AdamW's decay)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._plans = {}

    def _step_group(self, group: dict[str, Any]) -> None:
        plan = self._plan_for(group)
        flags = self._flags(group)
        for bucket in plan.buckets:
            if bucket.counts is not None:
                bucket.counts += 1
                bucket.step += 1
                bucket.counts_version = bucket.counts._version
            scalars = self._scalars(group, bucket.step)
            grads = bucket.grads()
            if self._should_compile(group, bucket.device, bucket.numel):
                scalar_tensor = torch.tensor(
                    scalars, dtype=_scalar_dtype(bucket.params[0].dtype), device=bucket.device
                )
                if self._run_compiled(bucket, grads, scalar_tensor, flags):
                    continue
            type(self)._update(bucket.params, grads, *bucket.state_lists, scalars, **flags)

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        steps: list[Tensor],
        *state_lists: list[Tensor | None],
    ) -> None:
        """Gather the group's parameters with gradients, their step counts and state tensors, creating
        the state of counting optimizers; a missing momentum buffer is listed as None.

        Used by the traced step. Dynamo runs a method of this name eagerly instead of tracing it (as for
        torch.optim's) and guards on the state it leaves, so the state it creates is never re-created
        by a graph and the graph holds for every later step. It must append the tensors themselves
        (not views) so that dynamo finds their sources.
        """
        active = self._active_state_names(group)
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if self._counts_steps and self._is_fresh(self.state.get(param, {}), group):
                self._init_state(param, group)
            state = self.state.get(param, {})
            params.append(param)
            grads.append(param.grad)
            if self._counts_steps:
                steps.append(state["step"])
            for name, tensors in zip(self._state_names, state_lists, strict=True):
                if name in active:
                    tensors.append(state.get(name))

    def _traced_group(self, group: dict[str, Any]) -> None:
        """One group's step as dynamo traces it: per parameter, with scalars computed from its step
        tensor (torch.optim's compiled path does the same), and buffers created in the graph."""
        params: list[Tensor] = []
        grads: list[Tensor] = []
        steps: list[Tensor] = []
        state_lists: list[list[Tensor | None]] = [[] for _ in self._state_names]
        self._init_group(group, params, grads, steps, *state_lists)
        active = self._active_state_names(group)
        flags = self._flags(group)
        if steps:
            torch._foreach_add_(steps, 1)
        for i, param in enumerate(params):
            if self._counts_steps:
                step: Tensor | float = steps[i]
            else:
                step = 1.0
                for name, tensors in zip(self._state_names, state_lists, strict=True):
                    if name in active and tensors[i] is None:
                        tensors[i] = self.state[param][name] = zeros_like(param)
                        step = 0.0  # a state-creating step, as in the eager path
            states = [
                [_real_view(tensors[i])] if name in active else None  # type: ignore[arg-type]
                for name, tensors in zip(self._state_names, state_lists, strict=True)
            ]
            type(self)._update(
                [_real_view(param)], [_real_view(grads[i])], *states, self._scalars(group, step), **flags
            )

    def _plan_for(self, group: dict[str, Any]) -> _Plan:
        plans: dict[int, _Plan] = self.__dict__.setdefault("_plans", {})
        key = (tuple(p.grad is not None for p in group["params"]), self._active_state_names(group))
        plan = plans.get(id(group))
        if plan is None or plan.key != key or not self._counts_current(plan):
            plan = self._build_plan(group, key)
            if plan.reusable:
                plans[id(group)] = plan
            else:
                plans.pop(id(group), None)
        return plan

    def _counts_current(self, plan: _Plan) -> bool:
        """Whether the plan's host-side step counts still hold: a compiled `opt.step` (which counts in
        the state tensors only), dynamo moving the counts to the device, or a user's edit changes
        them behind its back."""
        for bucket in plan.buckets:
            if bucket.counts is not None and (
                bucket.counts._version != bucket.counts_version
                or bucket.first_state.get("step") is not bucket.first_count
            ):
                return False
        return True

    def _build_plan(self, group: dict[str, Any], key: tuple[Any, ...]) -> _Plan:
        """Create missing state and bucket the parameters that have gradients."""
        active = self._active_state_names(group)
        buckets: dict[tuple[torch.device, torch.dtype, float], _Bucket] = {}
        any_fresh = False
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            # .get: optimizers without state for a param (SGD without momentum) must not create an entry.
            fresh = self._is_fresh(self.state.get(param, {}), group)
            if fresh:
                self._init_state(param, group)
                any_fresh = True
            # Counted steps are advanced in _step_group; without counts, 0.0 marks a state-creating step.
            step = float(self.state[param]["step"]) if self._counts_steps else 0.0 if fresh else 1.0
            bucket_key = (param.device, param.dtype, step)
            if bucket_key not in buckets:
                buckets[bucket_key] = _Bucket(param.device, param.is_complex(), step)
            bucket = buckets[bucket_key]
            bucket.originals.append(param)
            bucket.params.append(_real_view(param))
            bucket.numel += param.numel()
        for bucket in buckets.values():
            if self._counts_steps:
                first = self.state[bucket.originals[0]]["step"]
                bucket.counts = torch.full(
                    (len(bucket.originals),), bucket.step, dtype=first.dtype, device=first.device
                )
                for i, param in enumerate(bucket.originals):
                    self.state[param]["step"] = bucket.counts[i]
                bucket.counts_version = bucket.counts._version
                bucket.first_state = self.state[bucket.originals[0]]
                bucket.first_count = bucket.first_state["step"]
            for name in self._state_names:
                if name in active:
                    bucket.state_lists.append([_real_view(self.state[p][name]) for p in bucket.originals])
                else:
                    bucket.state_lists.append(None)
        # A state-creating step of an optimizer without step counts is special (see _scalars): rebuild.
        return _Plan(key, list(buckets.values()), reusable=self._counts_steps or not any_fresh)

    def _should_compile(self, group: dict[str, Any], device: torch.device, numel: int) -> bool:
        if device.type in _compile_broken_on:
            return False
        mode = compile_mode()
        if mode != "auto":
            return mode == "always"
        if group.get("fused") is not None:
            return bool(group["fused"])
        return numel >= COMPILE_MIN_NUMEL

    def _run_compiled(
        self, bucket: _Bucket, grads: list[Tensor], scalars: Tensor, flags: dict[str, bool]
    ) -> bool:
        import torch._dynamo  # only the compiled path needs it: importing it costs 1.5 s per process

        compiled = _compiled(type(self)._update)
        try:
            if bucket.compiled_with == flags:  # the same variant as last step: dynamo's cache hits
                compiled(bucket.params, grads, *bucket.state_lists, scalars, **flags)
            else:
                # A new variant (flags, shapes, dtype) may compile a new graph; a process that runs many
                # trials (Ray actor reuse) needs more of them than dynamo's default 8 per function.
                with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                    compiled(bucket.params, grads, *bucket.state_lists, scalars, **flags)
                bucket.compiled_with = dict(flags)
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            if not _warned_recompile_limit:
                _warn_once_recompile_limit(type(self).__name__)
            return False
        except Exception as error:  # a missing compiler surfaces as many different exception types
            _compile_broken_on.add(bucket.device.type)
            warnings.warn(
                f"optsweep: compiling the {type(self).__name__} step on {bucket.device.type} failed "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "using the eager step (same formulas, slower) from now on.",
                RuntimeWarning,
                stacklevel=4,
            )
            return False
        return True


def hyper(value: float | Tensor) -> float | Tensor:
    """A hyperparameter for `_scalars`: a Python float (the eager step computes its scalars in float64
    on the host, like torch's loop), but a tensor stays a tensor while dynamo traces the step
    (converting it would be a data-dependent graph break)."""
    if type(value) is float:
        return value
    if isinstance(value, Tensor) and torch.compiler.is_compiling():
        return value
    return float(value)


def zeros_like(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)


def step_counter() -> Tensor:
    """A fresh per-parameter step count, on the CPU like torch.optim's non-fused optimizers keep it."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype)
