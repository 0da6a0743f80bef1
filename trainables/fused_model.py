"""K copies of one model as one (horizontal fusion, HFTA): stacked weights, one vmapped forward.

Each member's parameters and buffers are stacked along a leading member dimension ``[K, ...]``
(`torch.func.stack_module_state`) and a single forward runs `torch.func.functional_call` under
`torch.vmap` over that dimension. BatchNorm keeps per-member running statistics: the buffers are
stacked too, and the forward updates each member's slice in place.

A model fuses when its forward runs under vmap: no data-dependent Python control flow, no randomness
(dropout would draw the same or different numbers than an unfused run; neither matches it), no
in-place updates of unstacked state. `FusedModel.check` runs the model's forward and loss under vmap
on two examples and refuses a model that fails with one line saying why.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

Loss = Callable[[Tensor, Tensor], Tensor]


class UnfusableModelError(ValueError):
    """A model that cannot be fused; the message is one line saying why."""


class FusedModel:
    """The K members' models as stacked tensors (`params`, `buffers`: name -> ``[K, ...]``)."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        if not models:
            raise UnfusableModelError("a fused model needs at least one member")
        first = models[0]
        if not any(True for _ in first.parameters()):
            raise UnfusableModelError(f"model {type(first).__name__} has no parameters to train")
        for name, param in first.named_parameters():
            if not param.is_floating_point():
                raise UnfusableModelError(f"parameter {name} is {param.dtype}, not floating point")
        if any(not p.requires_grad for p in first.parameters()):
            raise UnfusableModelError("the model has frozen parameters (requires_grad=False)")
        self.num_members = len(models)
        params, buffers = stack_module_state(list(models))
        self.params: dict[str, Tensor] = params  # leaves that require grad
        self.buffers: dict[str, Tensor] = buffers
        self._frozen: dict[int, list[tuple[Tensor, Tensor]]] = {}  # member -> (live slice, saved copy)
        # The template whose forward is called with each member's tensors; it holds no data itself.
        self._template = copy.deepcopy(first).to("meta")

    def _call(self, params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Tensor) -> Tensor:
        return functional_call(self._template, (params, buffers), (inputs,))

    def train(self) -> None:
        self._template.train()

    def eval(self) -> None:
        self._template.eval()

    def losses(self, inputs: Tensor, targets: Tensor, loss: Loss) -> Tensor:
        """Each member's mean loss on its own batch, ``[K]``: inputs ``[K, B, ...]``, targets ``[K, B, ...]``.
        Their sum is what to differentiate: each member's gradient is then its own loss's."""

        def member_loss(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return loss(self._call(p, b, x), y)

        return torch.vmap(member_loss, randomness="error")(self.params, self.buffers, inputs, targets)

    def outputs(self, inputs: Tensor) -> Tensor:
        """Every member's outputs on the same batch, ``[K, B, ...]`` (evaluation)."""
        return torch.vmap(self._call, in_dims=(0, 0, None), randomness="error")(
            self.params, self.buffers, inputs
        )

    def member_state_dict(self, member: int) -> dict[str, Tensor]:
        """Member `member`'s weights and buffers as a state dict of the unfused model (copies)."""
        state = {name: t[member].detach().clone() for name, t in self.params.items()}
        state |= {name: t[member].clone() for name, t in self.buffers.items()}
        return state

    def freeze(self, member: int) -> None:
        """Keep member `member`'s buffers (BatchNorm statistics) at their present values: call
        `restore_frozen` after each training step (not before the backward pass, which may read the
        buffers it saved). Its parameters are the optimizer's to freeze."""
        if member not in self._frozen:
            self._frozen[member] = [(t[member], t[member].clone()) for t in self.buffers.values()]

    @torch.no_grad()
    def restore_frozen(self) -> None:
        for pairs in self._frozen.values():
            for live, saved in pairs:
                live.copy_(saved)

    @classmethod
    def check(cls, model: nn.Module, inputs: Tensor, targets: Tensor, loss: Loss) -> None:
        """Refuse, with one line, a model whose training and evaluation forward does not run under vmap
        (tried on copies with two members and the first two examples)."""
        trial = cls([copy.deepcopy(model), copy.deepcopy(model)])
        try:
            trial.train()
            x, y = inputs[:2], targets[:2]
            trial.losses(torch.stack([x, x]), torch.stack([y, y]), loss).sum().backward()
            trial.eval()
            with torch.no_grad():
                trial.outputs(x)
        except Exception as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UnfusableModelError(
                f"model {type(model).__name__} cannot be fused: its forward fails under torch.vmap "
                f"({type(error).__name__}: {detail})"
            ) from None
