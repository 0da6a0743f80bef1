"""Our optimizers under `torch.compile`: the user's compiled `opt.step` and a compiled training step.

Each compiles with inductor (as a user would) through a counting backend; the trajectory is compared
with eager torch.optim (our eager step for LAMB and LARS, which have no torch twin) and the number of
compiled graphs must not grow with the step count.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch._dynamo
from optimizer_cases import TORCH_REFERENCES, clone_problem, make_problem, ours
from torch._dynamo.testing import CompileCounterWithBackend

from optsweep import optimizers

STEPS = 12
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}  # float32, the bar

# One case per optimizer that switches on most of its branches (each case costs a compile).
CASES: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "maximize": True},
    "adam": {"lr": 0.01, "betas": (0.85, 0.99), "weight_decay": 0.1, "amsgrad": True, "maximize": True},
    "adamw": {"lr": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.95)},
    "adagrad": {"lr": 0.1, "lr_decay": 0.5, "weight_decay": 0.1, "initial_accumulator_value": 0.1},
    "rmsprop": {"lr": 0.01, "weight_decay": 0.1, "centered": True, "momentum": 0.1},
    "lamb": {"lr": 0.02, "betas": (0.85, 0.99), "weight_decay": 0.1, "maximize": True},
    "lars": {"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": True},
}
# Graphs of a compiled step: 1, or 2 for the momentum-buffer optimizers, whose first step creates the
# buffers (torch.optim.SGD compiles twice too); none after that.
MAX_GRAPHS = {"sgd": 2, "lars": 2}


def _reference(name: str, groups: list[dict[str, Any]], kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    if name in TORCH_REFERENCES:
        return TORCH_REFERENCES[name](groups, **kwargs, foreach=False)
    return ours(name)(groups, **kwargs, fused=False)


def _assert_close(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    deviation = 0.0
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got.detach(), want.detach(), **TOLERANCE)
        deviation = max(deviation, float((got.detach() - want.detach()).abs().max()))
    return deviation


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(CASES))
def test_compiled_opt_step_matches_eager_and_compiles_once(name: str) -> None:
    """`torch.compile(opt.step)`: float32, two param groups, a complex parameter, one without a grad."""
    kwargs = CASES[name]
    problem = make_problem(torch.float32, complex_param=True, second_group={"lr": 0.003})
    twin = clone_problem(problem)
    reference = _reference(name, twin.groups, copy.deepcopy(kwargs))
    optimizer = ours(name)(problem.groups, **copy.deepcopy(kwargs))
    counter = CompileCounterWithBackend("inductor")
    compiled_step = torch.compile(optimizer.step, backend=counter, fullgraph=True)  # no graph breaks

    graphs = []
    for _ in range(STEPS):
        for opt, prob, step in ((reference, twin, reference.step), (optimizer, problem, compiled_step)):
            opt.zero_grad()
            prob.loss().backward()
            step()
        graphs.append(counter.frame_count)
        _assert_close(problem.params, twin.params)
    assert 1 <= graphs[-1] <= MAX_GRAPHS.get(name, 1), graphs
    assert graphs[2] == graphs[-1], f"recompiled after step 3: graphs per step {graphs}"
    assert torch.equal(problem.frozen, twin.frozen)
    for param in problem.params:
        if "step" in optimizer.state[param]:
            assert float(optimizer.state[param]["step"]) == STEPS


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(CASES))
def test_compiled_training_step_with_scheduled_tensor_lr(name: str) -> None:
    """A compiled function that runs forward, backward, `opt.step()` and `opt.zero_grad()`, between eager
    steps before and after it, with a tensor lr that a scheduler changes in place every step (and
    tensor betas)."""
    kwargs = {**CASES[name], "lr": torch.tensor(CASES[name]["lr"])}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(torch.tensor(beta) for beta in kwargs["betas"])
    problem = make_problem(torch.float32, complex_param=True)
    twin = clone_problem(problem)
    reference = _reference(name, twin.groups, copy.deepcopy(kwargs))
    optimizer = ours(name)(problem.groups, **copy.deepcopy(kwargs))
    schedulers = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9) for o in (reference, optimizer)]
    counter = CompileCounterWithBackend("inductor")

    @torch.compile(backend=counter)
    def training_step() -> torch.Tensor:
        loss = problem.loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    def eager_step() -> None:  # the same order as the compiled one: grads are zeroed after the step
        problem.loss().backward()
        optimizer.step()
        optimizer.zero_grad()

    graphs = []
    for step in range(STEPS):
        reference.zero_grad()
        twin.loss().backward()
        reference.step()
        compiled = 2 <= step < STEPS - 2  # two eager steps, then compiled ones, then eager again
        training_step() if compiled else eager_step()
        for scheduler in schedulers:
            scheduler.step()
        graphs.append(counter.frame_count)
        _assert_close(problem.params, twin.params)
    assert graphs[4] == graphs[-1], f"recompiled while training: graphs per step {graphs}"
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)


def test_compiled_step_keeps_counts_in_tensors() -> None:
    """What makes the compiled step safe: nothing in the step that changes per step is a Python number
    dynamo would guard on; the counts are per-parameter tensors, as in torch.optim."""
    param = torch.zeros(3, requires_grad=True)
    optimizer = optimizers.Adam([param], lr=0.1)
    param.grad = torch.ones(3)
    optimizer.step()
    assert isinstance(optimizer.state[param]["step"], torch.Tensor)
    assert optimizer.state[param]["step"].dim() == 0
