"""Older checkpoints load like torch.optim's: flags added to torch.optim later get torch's defaults,
a numeric `step` becomes a tensor, and AdamW keeps decoupled weight decay whatever it loads."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from optimizer_cases import TORCH_REFERENCES, clone_problem, make_problem, ours, run_steps

from optsweep import optimizers

# The param-group keys each torch.optim class fills in for an older state dict (its __setstate__).
ADAM_KEYS = [
    "amsgrad",
    "maximize",
    "foreach",
    "capturable",
    "differentiable",
    "decoupled_weight_decay",
    "fused",
]
ADDED_LATER = {
    "sgd": ["nesterov", "maximize", "foreach", "differentiable", "fused"],
    "adam": ADAM_KEYS,
    "adamw": ADAM_KEYS,
    "adagrad": ["foreach", "maximize", "differentiable", "fused"],
    "rmsprop": ["momentum", "centered", "foreach", "maximize", "differentiable", "capturable"],
}
KWARGS = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    "adam": {"lr": 0.01, "weight_decay": 0.01},
    "adamw": {"lr": 0.01, "weight_decay": 0.1},
    "adagrad": {"lr": 0.1, "lr_decay": 0.01},
    "rmsprop": {"lr": 0.01, "alpha": 0.9},
}
OLD_STEP_TYPES = [float, int]


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _as_older_checkpoint(state_dict: dict[str, Any], keys: list[str], step_type: type) -> dict[str, Any]:
    """What an older torch wrote: groups without the later keys, `step` as a plain number."""
    old = _round_trip(state_dict)
    for group in old["param_groups"]:
        for key in keys:
            group.pop(key, None)
    for param_state in old["state"].values():
        if "step" in param_state:
            param_state["step"] = step_type(param_state["step"].item())
    return old


def _continue_both(
    name: str, checkpoint: dict[str, Any], problem: Any, *, ours_class: type | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.optim.Optimizer]:
    """Load `checkpoint` into a fresh torch.optim optimizer and into ours; run 10 steps of each."""
    kwargs = KWARGS[name]
    theirs_problem, ours_problem = clone_problem(problem), clone_problem(problem)
    theirs = TORCH_REFERENCES[name](theirs_problem.groups, **kwargs, foreach=False)
    mine = (ours_class or ours(name))(ours_problem.groups, **kwargs)
    theirs.load_state_dict(_round_trip(checkpoint))
    mine.load_state_dict(_round_trip(checkpoint))
    expected = run_steps(theirs, theirs_problem, 10)[-1]
    actual = run_steps(mine, ours_problem, 10)[-1]
    return actual, expected, mine


@pytest.mark.parametrize("step_type", OLD_STEP_TYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize("name", list(ADDED_LATER))
def test_older_torch_checkpoint_continues_like_torch(name: str, step_type: type) -> None:
    problem = make_problem(torch.float64, complex_param=False)
    writer = TORCH_REFERENCES[name](problem.groups, **KWARGS[name], foreach=False)
    run_steps(writer, problem, 5)
    checkpoint = _as_older_checkpoint(writer.state_dict(), ADDED_LATER[name], step_type)
    assert all(key not in checkpoint["param_groups"][0] for key in ADDED_LATER[name])

    actual, expected, mine = _continue_both(name, checkpoint, problem)
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    for key in ADDED_LATER[name]:
        assert key in mine.param_groups[0], key
    steps = [state["step"] for state in mine.state.values() if "step" in state]
    assert all(isinstance(step, torch.Tensor) for step in steps)
    # 5 + 10 steps for each param with a gradient (Adagrad also holds state for the frozen one).
    counted = [float(step) for step in steps if float(step) != 0]
    assert counted == ([15.0] * len(problem.params) if steps else [])


@pytest.mark.parametrize("source", ["adam", "adamw-without-the-key"])
def test_adamw_keeps_decoupled_weight_decay_after_loading_any_state_dict(source: str) -> None:
    """torch.optim.AdamW forces decoupled decay on load; an Adam state dict must not turn ours into Adam."""
    problem = make_problem(torch.float64, complex_param=False)
    writer_class = torch.optim.Adam if source == "adam" else torch.optim.AdamW
    writer = writer_class(problem.groups, **KWARGS["adamw"], foreach=False)
    run_steps(writer, problem, 3)
    checkpoint = _round_trip(writer.state_dict())
    if source != "adam":
        for group in checkpoint["param_groups"]:
            del group["decoupled_weight_decay"]

    actual, expected, mine = _continue_both("adamw", checkpoint, problem, ours_class=optimizers.AdamW)
    assert all(group["decoupled_weight_decay"] is True for group in mine.param_groups)
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    # Coupled decay (Adam's) would end elsewhere: the check above can tell the two apart.
    coupled = clone_problem(problem)
    adam = optimizers.Adam(coupled.groups, **KWARGS["adamw"])
    adam.load_state_dict(_round_trip(checkpoint))
    assert not torch.allclose(run_steps(adam, coupled, 10)[-1][0], actual[0])


@pytest.mark.parametrize(
    ("name", "kwargs", "keys"),
    [
        ("lamb", {"lr": 0.01, "weight_decay": 0.1}, ["maximize", "foreach", "fused"]),
        ("lars", {"lr": 0.5, "momentum": 0.9}, ["nesterov", "maximize", "foreach", "fused"]),
    ],
)
def test_our_own_optimizers_load_checkpoints_without_the_optional_flags(
    name: str, kwargs: dict[str, Any], keys: list[str]
) -> None:
    """LAMB and LARS have no torch twin: a checkpoint without their optional flags (and with a numeric
    step) continues exactly like the complete one."""
    problem = make_problem(torch.float64, complex_param=False)
    writer = ours(name)(problem.groups, **kwargs)
    run_steps(writer, problem, 4)
    complete = _round_trip(writer.state_dict())
    older = _as_older_checkpoint(writer.state_dict(), keys, float)
    trajectories = []
    for checkpoint in (complete, older):
        twin = clone_problem(problem)
        reader = ours(name)(twin.groups, **kwargs)
        reader.load_state_dict(checkpoint)
        trajectories.append(run_steps(reader, twin, 6)[-1])
    for got, want in zip(trajectories[1], trajectories[0], strict=True):
        assert torch.equal(got, want)
