"""The fused step compiled (`FusedOptimizer(compiled=True)`, `FusedGroup(compiled=True)`): the same update
functions through the engine's compile machinery, equal to the eager fused step in float32, and an LR
that a schedule changes every step (per-member scalars are tensor inputs) never recompiles.

That the eager fused step equals each member's unfused run is tested in test_fused.py/test_fused_units.py.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters
from torch.utils.data import TensorDataset

from optsweep import optimizers
from optsweep.optimizers import _engine, members
from optsweep.optimizers.members import FusedOptimizer, placeholder_groups
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.fused import FusedGroup
from optsweep.trainables.tasks import Task, TaskData

K = 3
STEPS = 5
TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}  # float32: the compiled kernels may round differently
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")

# Per optimizer, K members that differ in every hyperparameter and share the code-path switches
# (most branches on: weight decay, momentum, nesterov, amsgrad, centered).
MEMBERS: dict[str, list[dict[str, Any]]] = {
    "sgd": [
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
        {"lr": 0.02, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-1},
        {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3},
    ],
    "adam": [
        {"lr": 1e-2, "betas": (0.9, 0.999), "weight_decay": 1e-2, "amsgrad": True},
        {"lr": 3e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-1, "amsgrad": True},
        {"lr": 5e-3, "betas": (0.95, 0.9), "weight_decay": 1e-3, "amsgrad": True},
    ],
    "adamw": [
        {"lr": 1e-2, "weight_decay": 1e-2},
        {"lr": 2e-2, "betas": (0.8, 0.95), "weight_decay": 1e-1},
        {"lr": 5e-3, "betas": (0.85, 0.99), "eps": 1e-6, "weight_decay": 0.3},
    ],
    "adagrad": [
        {"lr": 0.05, "lr_decay": 0.1, "weight_decay": 1e-2, "initial_accumulator_value": 0.1},
        {"lr": 0.02, "lr_decay": 0.0, "weight_decay": 1e-1, "initial_accumulator_value": 0.0},
        {"lr": 0.1, "lr_decay": 1e-3, "weight_decay": 1e-3, "eps": 1e-8},
    ],
    "rmsprop": [
        {"lr": 1e-2, "centered": True, "momentum": 0.5, "weight_decay": 1e-2},
        {"lr": 3e-3, "centered": True, "momentum": 0.9, "alpha": 0.9, "weight_decay": 1e-1},
        {"lr": 2e-2, "centered": True, "momentum": 0.1, "alpha": 0.95, "eps": 1e-6, "weight_decay": 1e-3},
    ],
    "lamb": [
        {"lr": 1e-2, "weight_decay": 1e-2},
        {"lr": 5e-3, "betas": (0.8, 0.99), "eps": 1e-7, "weight_decay": 1e-1},
        {"lr": 2e-2, "betas": (0.95, 0.9), "weight_decay": 1e-3},
    ],
    "lars": [
        {"lr": 5.0, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
        {"lr": 2.0, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-2, "trust_coefficient": 2e-3},
        {"lr": 8.0, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-4, "eps": 1e-6},
    ],
}
# Per-member LR factor per step (each member's own schedule).
DECAY = (0.9, 0.7, 1.1)


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    members._warned_eager_on_cpu.clear()  # each test sees its warnings


def test_every_optimizer_has_a_case() -> None:
    assert sorted(MEMBERS) == sorted(optimizers.names())


def _stacked(device: torch.device) -> list[torch.Tensor]:
    """Tiny stacked parameters of two ranks (a weight matrix and two biases per member): two buckets."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(K, 6, 4), (K, 4), (K, 6)]
    return [torch.randn(s, generator=generator).to(device).requires_grad_() for s in shapes]


def _fused(name: str, params: list[torch.Tensor], compiled: bool) -> FusedOptimizer:
    groups = [{"params": params}]
    members = [optimizers.build(name, placeholder_groups(groups), **copy.deepcopy(h)) for h in MEMBERS[name]]
    return FusedOptimizer(groups, members, compiled=compiled)


def _schedules(optimizer: FusedOptimizer) -> list[torch.optim.lr_scheduler.LRScheduler]:
    return [
        torch.optim.lr_scheduler.LambdaLR(member, lambda step, gamma=gamma: gamma**step)
        for member, gamma in zip(optimizer.members, DECAY, strict=True)
    ]


def _graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def compiles_on(name: str, device: torch.device) -> bool:
    """LAMB and LARS fused steps run eagerly on the CPU (an inductor C++ bug, see optimizers.members)."""
    return not (optimizers.optimizer_class(name)._per_tensor_norms and device.type == "cpu")


def _compare(name: str, device: torch.device, no_grad_at: int | None = None) -> float:
    eager_params = _stacked(device)
    compiled_params = [p.detach().clone().requires_grad_() for p in eager_params]
    eager, compiled = _fused(name, eager_params, False), _fused(name, compiled_params, True)
    schedules = _schedules(eager) + _schedules(compiled)
    generator = torch.Generator().manual_seed(1)
    before = _graphs()  # the counters add up over the process
    graphs: list[int] = []
    lrs: list[list[float]] = []
    deviation = 0.0
    for _ in range(STEPS):
        grads = [torch.randn(p.shape, generator=generator).to(device) for p in eager_params]
        for params, optimizer in ((eager_params, eager), (compiled_params, compiled)):
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad.clone()
            if len(graphs) == no_grad_at:
                params[-1].grad = None  # a bias without gradient this step: its bucket's other one goes on
            optimizer.step()
        for scheduler in schedules:
            scheduler.step()
        graphs.append(_graphs() - before)
        lrs.append([float(m.param_groups[0]["lr"]) for m in compiled.members])
        tensors = [
            (got, want)
            for got_param, want_param in zip(compiled_params, eager_params, strict=True)
            for got, want in [
                (got_param, want_param),
                *zip(compiled.state_of(got_param).values(), eager.state_of(want_param).values(), strict=True),
            ]
        ]
        for got, want in tensors:
            torch.testing.assert_close(got.detach(), want.detach(), **TOLERANCE)
            allowed = TOLERANCE["atol"] + TOLERANCE["rtol"] * want.detach().abs()
            deviation = max(deviation, float(((got.detach() - want.detach()).abs() / allowed).max()))
    assert device.type not in _engine._compile_broken_on, "compilation failed: the step ran eagerly"
    if not compiles_on(name, device):
        assert graphs[-1] == 0 and deviation == 0.0, (graphs, deviation)  # the eager step, as documented
        return deviation
    # One graph per bucket (two parameter ranks), all on the first step; the LRs changed every step.
    assert 1 <= graphs[0] <= 2, graphs
    if no_grad_at is None:
        assert graphs[-1] == graphs[0], f"recompiled when the LRs changed: graphs after each step {graphs}"
    else:  # the shorter list compiled (a new graph), the full one's graph came back after it
        assert graphs[no_grad_at] == graphs[0] + 1 == graphs[-1], graphs
    assert all(lrs[i] != lrs[i + 1] for i in range(STEPS - 1)), lrs
    # The members really differ (the comparison can fail).
    assert not torch.allclose(eager_params[0][0], eager_params[0][1])
    return deviation


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", optimizers.names())
def test_compiled_fused_step_equals_eager_fused_step_and_lr_changes_do_not_recompile(name: str) -> None:
    start = time.perf_counter()
    cpu = torch.device("cpu")
    if compiles_on(name, cpu):
        deviation = _compare(name, cpu)
    else:
        with pytest.warns(RuntimeWarning, match="runs eagerly on the CPU"):
            deviation = _compare(name, cpu)
    seconds = time.perf_counter() - start
    print(f"{name}: largest |compiled - eager| / tolerance {deviation:.2f} ({seconds:.1f} s)")


@CUDA
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", optimizers.names())
def test_compiled_fused_step_equals_eager_fused_step_on_cuda(name: str) -> None:
    deviation = _compare(name, torch.device("cuda"))
    print(f"{name} cuda: largest |compiled - eager| / tolerance {deviation:.2f}")


@pytest.mark.timeout(600)
def test_a_parameter_without_gradient_sits_the_compiled_step_out() -> None:
    """A step where one stacked parameter has no gradient: the compiled step updates the others (the
    bucket's shorter list, a new graph) and leaves it and its state as they were, as the eager step does."""
    _compare("adam", torch.device("cpu"), no_grad_at=2)


def _tiny_task() -> Task:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=generator)
    y = torch.randint(0, 3, (48,), generator=generator)
    split = TensorDataset(x, y)
    return Task(
        name="tiny",
        model=lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
        data=lambda: TaskData(split, split),
        batch_size=16,
        max_epochs=3,
    )


@pytest.mark.timeout(600)
def test_a_compiled_fused_group_trains_as_the_eager_one_and_shrinks() -> None:
    """FusedGroup(compiled=True): scheduled members with different LRs train as the eager group does,
    also after a member is dropped (the shrunk group's optimizer stays compiled, as a restored one is)."""
    configs = [
        TrainConfig(optimizer="adam", hparams={"lr": lr}, seed=seed, schedule=schedule, max_epochs=3)
        for lr, seed, schedule in ((1e-2, 0, "cosine"), (3e-3, 1, "constant"), (2e-2, 2, "exponential"))
    ]
    cpu = torch.device("cpu")
    before = _graphs()
    groups = {
        compiled: FusedGroup(configs, task=_tiny_task(), device=cpu, compiled=compiled)
        for compiled in (False, True)
    }
    reports: dict[bool, list[dict[int, dict[str, Any]]]] = {False: [], True: []}
    for epoch in range(3):
        for compiled, group in groups.items():
            if epoch == 1:
                group.drop([1])
            reports[compiled].append(group.run_epoch())
    assert groups[True].compiled and groups[True]._optimizer is not None and groups[True]._optimizer.compiled
    restored = FusedGroup(configs, task=_tiny_task(), device=cpu, compiled=True)
    restored.load_state_dict(groups[True].state_dict())
    assert restored._optimizer is not None and restored._optimizer.compiled
    assert _graphs() > before and "cpu" not in _engine._compile_broken_on
    for eager_epoch, compiled_epoch in zip(reports[False], reports[True], strict=True):
        assert sorted(eager_epoch) == sorted(compiled_epoch)
        for member, metrics in eager_epoch.items():
            for key, value in metrics.items():
                if isinstance(value, float) and not key.endswith(("time_s", "per_s")):
                    assert compiled_epoch[member][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
