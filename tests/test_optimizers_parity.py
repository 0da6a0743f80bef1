"""Our optimizers follow torch.optim's reference (for-loop) implementation step for step."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from optimizer_cases import (
    TORCH_REFERENCES,
    all_cases,
    case_id,
    clone_problem,
    make_problem,
    ours,
    run_steps,
    tolerances,
)

STEPS = 30
DTYPES = [torch.float32, torch.float64]
SECOND_GROUP = {"lr": 0.003, "weight_decay": 0.02}


def _cases() -> list[Any]:
    return [
        pytest.param(name, kwargs, id=f"{name}-{case_id(kwargs)}")
        for name in TORCH_REFERENCES
        for kwargs in all_cases(name)
    ]


def _in_dtype(value: Any, dtype: torch.dtype) -> Any:
    """Tensor hyperparameters in the run's dtype: with a float32 tensor lr, torch's reference computes
    its step size in float32, which would blur a float64 comparison to ~1e-8."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype)
    if isinstance(value, tuple):
        return tuple(_in_dtype(v, dtype) for v in value)
    return value


def _compare(
    name: str, kwargs: dict[str, Any], dtype: torch.dtype, *, fused: bool, steps: int = STEPS
) -> None:
    kwargs = {key: _in_dtype(value, dtype) for key, value in kwargs.items()}
    problem = make_problem(dtype, complex_param=True, second_group=SECOND_GROUP)
    reference_problem = clone_problem(problem)
    reference = TORCH_REFERENCES[name](reference_problem.groups, **copy.deepcopy(kwargs), foreach=False)
    optimizer = ours(name)(problem.groups, **copy.deepcopy(kwargs), fused=fused)
    initial = problem.params[0].detach().clone()

    expected = run_steps(reference, reference_problem, steps)
    actual = run_steps(optimizer, problem, steps)
    for step, (got, want) in enumerate(zip(actual, expected, strict=True)):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, **tolerances(dtype), msg=lambda m, s=step: f"step {s + 1}: {m}")
    # The parameters moved (unless lr is 0), and the one without a gradient was skipped.
    lr_is_zero = float(torch.as_tensor(kwargs.get("lr", 1.0))) == 0.0
    assert torch.equal(actual[-1][0], initial) == lr_is_zero
    assert torch.equal(problem.frozen.detach(), reference_problem.frozen.detach())
    _assert_same_state(optimizer.state_dict(), reference.state_dict(), dtype)


def _assert_same_state(ours_sd: dict[str, Any], torch_sd: dict[str, Any], dtype: torch.dtype) -> None:
    """Same state layout as torch (keys, shapes, step counts) and the same values."""
    assert ours_sd["state"].keys() == torch_sd["state"].keys()
    for index, torch_state in torch_sd["state"].items():
        assert ours_sd["state"][index].keys() == torch_state.keys(), f"param {index}"
        for key, value in torch_state.items():
            # Relative to the tensor's scale: elements that result from cancellation carry absolute, not
            # relative, rounding error. In float32, centered RMSprop's sqrt(E[g^2] - E[g]^2) amplifies
            # one-ulp differences into its momentum buffer (3.3e-5 of its scale after 30 steps, while the
            # parameters stay within 3e-5), so the float32 state bar is 1e-4 of the tensor's scale.
            tol = tolerances(dtype)
            scale_rtol = tol["rtol"] if dtype == torch.float64 else 1e-4
            atol = max(tol["atol"], scale_rtol * float(value.abs().max()))
            torch.testing.assert_close(ours_sd["state"][index][key], value, rtol=tol["rtol"], atol=atol)
    for group, torch_group in zip(ours_sd["param_groups"], torch_sd["param_groups"], strict=True):
        assert group["params"] == torch_group["params"]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(("name", "kwargs"), _cases())
def test_eager_step_matches_torch_reference(name: str, kwargs: dict[str, Any], dtype: torch.dtype) -> None:
    _compare(name, kwargs, dtype, fused=False)


# Compiling costs seconds per variant, so the compiled step is checked on the richest case per optimizer.
RICH_CASES = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "maximize": True},
    "adam": {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True},
    "adamw": {"lr": torch.tensor(0.01), "weight_decay": 0.1, "betas": (0.8, 0.95)},
    "adagrad": {"lr": 0.1, "lr_decay": 0.5, "weight_decay": 0.1, "initial_accumulator_value": 0.1},
    "rmsprop": {"weight_decay": 0.1, "centered": True, "momentum": 0.1, "maximize": True},
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(RICH_CASES))
def test_compiled_step_matches_torch_reference(name: str, dtype: torch.dtype) -> None:
    _compare(name, RICH_CASES[name], dtype, fused=True, steps=12)


def test_default_dampening_first_step_copies_gradient() -> None:
    """torch's SGD starts the momentum buffer as a copy of the gradient, not (1 - dampening) * grad."""
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = ours("sgd")([p], lr=0.1, momentum=0.9, dampening=0.5)
    p.grad = torch.tensor([0.5, 0.25])
    opt.step()
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], torch.tensor([0.5, 0.25]))
    p.grad = torch.tensor([1.0, 1.0])
    opt.step()
    torch.testing.assert_close(
        opt.state[p]["momentum_buffer"], torch.tensor([0.9 * 0.5 + 0.5, 0.9 * 0.25 + 0.5])
    )
