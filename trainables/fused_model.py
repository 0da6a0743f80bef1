"""K copies of one model as one (horizontal fusion, HFTA): stacked weights, one vmapped forward.

Each member's parameters and buffers are stacked along a leading member dimension ``[K, ...]``
(`torch.func.stack_module_state`) and a single forward runs `torch.func.functional_call` under
`torch.vmap` over that dimension. BatchNorm keeps per-member running statistics: the buffers are
stacked too, and the forward updates each member's slice in place. Tied weights (a language model's
output layer sharing its token embedding) are stacked once and given under each of their names, so
they stay tied within each member and get the sum of both uses' gradients, as unfused.

A model fuses when its forward runs under vmap: no data-dependent Python control flow (``if`` on a
tensor's value, ``.item()``, boolean-mask indexing), no in-place updates of unstacked state, and no
random numbers. Randomness is refused, not batched: a fused member cannot draw the numbers its run
alone would draw (vmap's ``randomness="different"`` gives each member its own dropout masks, but
from the group's one generator, so a member's masks, and its metrics, would depend on which group
and slot it trained in, and would not equal its run alone). The equivalence fused trials promise,
each member's metrics equal to its configuration trained alone, therefore holds for every model that
fuses; a model with dropout > 0 in training (e.g. ``pydoc_lm`` with ``dropout=0.1``; its default
is 0) is refused with one line and trains unfused. `FusedModel.check` runs the model's forward and
loss under vmap on two examples and refuses a model that fails with one line naming it and why.

Built-in models that fuse: the MLP, the CNN (BatchNorm) and the ``pydoc_lm`` transformer
(`scaled_dot_product_attention`: on the CPU, PyTorch has no vmap rule for its attention kernel and
runs it once per member, on that member's tensors as the unfused model does; the matrix products
around it are batched).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from optsweep.errors import OptsweepError

Loss = Callable[[Tensor, Tensor], Tensor]


class UnfusableModelError(OptsweepError):
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
        # Tied tensors (a language model's output layer sharing the token embedding) are stacked once,
        # under their first name; every other name they go by is an alias of that one.
        self._aliases: dict[str, str] = _tied_aliases(first)
        self._state_keys = list(first.state_dict())
        self._frozen: dict[int, list[tuple[Tensor, Tensor]]] = {}  # member -> (live slice, saved copy)
        # The template whose forward is called with each member's tensors; it holds no data itself.
        self._template = copy.deepcopy(first).to("meta")

    def _call(self, params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Tensor) -> Tensor:
        # The template's tied tensors came apart when it moved to the meta device: every name is given
        # its tensor, an alias the very tensor of the name it is tied to.
        tensors = params | buffers
        tensors |= {alias: tensors[name] for alias, name in self._aliases.items()}
        return functional_call(self._template, tensors, (inputs,))

    def train(self) -> None:
        self._template.train()

    def eval(self) -> None:
        self._template.eval()

    def losses(self, inputs: Tensor, targets: Tensor, loss: Loss) -> Tensor:
        """Each member's mean loss on its own batch, ``[K]``: inputs ``[K, B, ...]``, targets ``[K, B, ...]``.
        Their sum is what to differentiate: each member's gradient is then its own loss's."""

        def member_loss(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return loss(self._call(p, b, x), y)

        with _no_fallback_warning():
            return torch.vmap(member_loss, randomness="error")(self.params, self.buffers, inputs, targets)

    def outputs(self, inputs: Tensor) -> Tensor:
        """Every member's outputs on the same batch, ``[K, B, ...]`` (evaluation)."""
        with _no_fallback_warning():
            return torch.vmap(self._call, in_dims=(0, 0, None), randomness="error")(
                self.params, self.buffers, inputs
            )

    def member_state_dict(self, member: int) -> dict[str, Tensor]:
        """Member `member`'s weights and buffers as a state dict of the unfused model (copies; the keys
        of its `state_dict()`, tied weights under each of their names, as `load_state_dict` wants)."""
        tensors = self.params | self.buffers
        state = {}
        for key in self._state_keys:
            name = self._aliases.get(key, key)
            if name in tensors:
                state[key] = tensors[name][member].detach().clone()
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
            raise UnfusableModelError(
                f"model {type(model).__name__} cannot be fused: {_why_not(error)}"
            ) from None


def _why_not(error: Exception) -> str:
    """One line: why a forward failed under vmap, in the model's terms where the error is known."""
    text = str(error).strip()
    if "random operation" in text and "randomness" in text:
        return (
            "its forward draws random numbers (dropout > 0?): under torch.vmap a fused member cannot draw "
            "the numbers of its run alone, so its metrics would not equal that run's (dropout 0 fuses)"
        )
    if "data-dependent control flow" in text or ".item()" in text:
        return (
            "its forward uses a tensor's value in Python (data-dependent control flow or .item()), "
            "which torch.vmap cannot batch"
        )
    detail = text.splitlines()[0] if text else ""
    return f"its forward fails under torch.vmap ({type(error).__name__}: {detail})"


@contextlib.contextmanager
def _no_fallback_warning() -> Iterator[None]:
    """Silence PyTorch's "performance drop ... batching rule" warning (an operator, the CPU attention
    kernel, run once per member under vmap): the results are right, and it asks users to file issues."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet")
        yield


def _tied_aliases(model: nn.Module) -> dict[str, str]:
    """Every second (third, ...) name of a tensor the model holds under several names -> its first
    name (the one `named_parameters()` and `named_buffers()` give)."""
    aliases: dict[str, str] = {}
    for named in (model.named_parameters, model.named_buffers):
        first_name: dict[int, str] = {}
        for name, tensor in named(remove_duplicate=False):
            first = first_name.setdefault(id(tensor), name)
            if first != name:
                aliases[name] = first
    return aliases
