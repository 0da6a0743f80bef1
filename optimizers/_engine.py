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
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo
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
    """Parameters of one group that share device, dtype and step count: one update call."""

    __slots__ = ("grads", "numel", "params", "states")

    def __init__(self, n_states: int) -> None:
        self.params: list[Tensor] = []
        self.grads: list[Tensor] = []
        self.states: list[list[Tensor]] = [[] for _ in range(n_states)]
        self.numel = 0


class FusableOptimizer(torch.optim.Optimizer):
    """Base of optsweep's optimizers; see the module docstring."""

    # Subclasses set these.
    _update: Callable[..., None]
    _state_names: tuple[str, ...]  # per-tensor state passed to _update, in order (a subset may be None)
    _counts_steps: bool = True  # keeps a per-parameter `step` tensor like torch.optim (SGD/LARS don't)

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _active_state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        """State tensors this group uses; the others are passed to _update as None."""
        return self._state_names

    def _scalars(self, group: dict[str, Any], step: float) -> tuple[float, ...]:
        """Per-step scalars. `step` is the 1-based count, or 0.0 for a step that creates the state of an
        optimizer without step counts (its first step)."""
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
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        names = self._state_names
        active = self._active_state_names(group)
        buckets: dict[tuple[torch.device, torch.dtype, float], _Bucket] = {}
        params_with_grad = [p for p in group["params"] if p.grad is not None]
        steps = self._advance_steps(params_with_grad, group)
        for param, step in zip(params_with_grad, steps, strict=True):
            grad = param.grad
            if grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            bucket = buckets.get((param.device, param.dtype, step))
            if bucket is None:
                bucket = buckets[(param.device, param.dtype, step)] = _Bucket(len(active))
            bucket.params.append(_real_view(param))
            bucket.grads.append(_real_view(grad))
            for i, name in enumerate(active):
                bucket.states[i].append(_real_view(self.state[param][name]))
            bucket.numel += param.numel()

        flags = self._flags(group)
        for (device, _, step), bucket in buckets.items():
            scalars = self._scalars(group, step)
            by_name = dict(zip(active, bucket.states, strict=True))
            state_lists = [by_name.get(name) for name in names]
            if self._should_compile(group, device, bucket.numel):
                real_dtype = bucket.params[0].dtype
                scalar_tensor = torch.tensor(scalars, dtype=_scalar_dtype(real_dtype), device=device)
                if self._run_compiled(device, bucket, state_lists, scalar_tensor, flags):
                    continue
            type(self)._update(bucket.params, bucket.grads, *state_lists, scalars, **flags)

    def _advance_steps(self, params: list[Tensor], group: dict[str, Any]) -> list[float]:
        """Create missing state, count the step, and return each parameter's step count."""
        steps: list[float] = []
        for param in params:
            # .get: optimizers without state for a param (SGD without momentum) must not create an entry.
            fresh = self._is_fresh(self.state.get(param, {}), group)
            if fresh:
                self._init_state(param, group)
            if self._counts_steps:
                step = self.state[param]["step"]
                step += 1
                steps.append(float(step))
            else:
                steps.append(0.0 if fresh else 1.0)
        return steps

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
        self,
        device: torch.device,
        bucket: _Bucket,
        state_lists: list[list[Tensor] | None],
        scalars: Tensor,
        flags: dict[str, bool],
    ) -> bool:
        try:
            # Each variant (flags, shapes, dtype) of an update function is one compiled graph; a process
            # that runs many trials (Ray actor reuse) needs more than dynamo's default 8 per function.
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                _compiled(type(self)._update)(bucket.params, bucket.grads, *state_lists, scalars, **flags)
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            if not _warned_recompile_limit:
                _warn_once_recompile_limit(type(self).__name__)
            return False
        except Exception as error:  # a missing compiler surfaces as many different exception types
            _compile_broken_on.add(device.type)
            warnings.warn(
                f"optsweep: compiling the {type(self).__name__} step on {device.type} failed "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "using the eager step (same formulas, slower) from now on.",
                RuntimeWarning,
                stacklevel=4,
            )
            return False
        return True


def zeros_like(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)


def step_counter() -> Tensor:
    """A fresh per-parameter step count, on the CPU like torch.optim's non-fused optimizers keep it."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype)
