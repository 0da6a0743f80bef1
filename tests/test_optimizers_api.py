"""Drop-in behaviour: signatures, validation, registry, state dicts, schedulers, fallbacks."""

from __future__ import annotations

import inspect
import io
import re
import warnings
from typing import Any

import pytest
import torch
from optimizer_cases import TORCH_REFERENCES, clone_problem, make_problem, ours, run_steps
from torch.testing._internal.common_optimizers import OptimizerErrorEnum, optim_db

from optsweep import optimizers
from optsweep.optimizers import _engine

ALL = optimizers.names()


@pytest.mark.parametrize("name", list(TORCH_REFERENCES))
def test_signature_matches_torch(name: str) -> None:
    """Every torch argument exists with the same default and kind (positional order included)."""
    theirs = inspect.signature(TORCH_REFERENCES[name].__init__).parameters
    mine = inspect.signature(ours(name).__init__).parameters
    for arg, param in theirs.items():
        assert arg in mine, f"{name} lacks torch's argument {arg}"
        assert mine[arg].default == param.default, f"{name}.{arg} default"
        assert mine[arg].kind == param.kind, f"{name}.{arg} kind"
    assert list(mine)[: len(theirs)] == list(theirs)


def _torch_error_inputs(name: str) -> list[Any]:
    info = next(i for i in optim_db if i.optim_cls is TORCH_REFERENCES[name])
    cases = []
    for error_input in info.optim_error_inputs_func(device="cpu", dtype=torch.float32):
        if error_input.error_on != OptimizerErrorEnum.CONSTRUCTION_ERROR:
            continue
        oi = error_input.optimizer_error_input
        cases.append(
            pytest.param(name, oi, error_input.error_type, error_input.error_regex, id=f"{name}-{oi.desc}")
        )
    return cases


TORCH_ERROR_CASES = [case for name in TORCH_REFERENCES for case in _torch_error_inputs(name)]
# torch only rejects a tensor lr together with foreach=True because its foreach kernels can't take one;
# ours can, so those inputs are valid here.
FOREACH_TENSOR_LIMITATION = re.compile(r"as a Tensor is not supported for capturable=False and foreach=True")


@pytest.mark.parametrize(("name", "optim_input", "error_type", "regex"), TORCH_ERROR_CASES)
def test_torch_error_inputs_rejected_like_torch(
    name: str, optim_input: Any, error_type: type, regex: str
) -> None:
    params = optim_input.params if optim_input.params is not None else [torch.zeros(2, requires_grad=True)]
    if FOREACH_TENSOR_LIMITATION.search(regex):
        ours(name)(params, **optim_input.kwargs)
        return
    expectation = pytest.warns if issubclass(error_type, Warning) else pytest.raises
    with expectation(error_type, match=regex):
        ours(name)(params, **optim_input.kwargs)


INVALID = [
    ("sgd", {"lr": -0.1}, "lr"),
    ("sgd", {"lr": float("nan")}, "lr"),
    ("sgd", {"momentum": -0.5}, "momentum"),
    ("sgd", {"weight_decay": -1e-4}, "weight_decay"),
    ("sgd", {"dampening": 1.5}, "dampening"),
    ("sgd", {"nesterov": True}, "momentum"),
    ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "dampening"),
    ("adam", {"eps": -1e-8}, "eps"),
    ("adam", {"betas": (1.0, 0.999)}, r"betas\[0\]"),
    ("adam", {"betas": (0.9, -0.1)}, r"betas\[1\]"),
    ("adam", {"betas": (0.9,)}, "betas"),
    ("adam", {"lr": torch.tensor([0.1, 0.2])}, "lr"),
    ("adamw", {"weight_decay": -0.01}, "weight_decay"),
    ("adam", {"differentiable": True}, "differentiable"),
    ("adam", {"capturable": True}, "capturable"),
    ("adagrad", {"lr_decay": -1.0}, "lr_decay"),
    ("adagrad", {"initial_accumulator_value": -0.1}, "initial_accumulator_value"),
    ("adagrad", {"eps": -1.0}, "eps"),
    ("rmsprop", {"alpha": 1.5}, "alpha"),
    ("rmsprop", {"alpha": -0.1}, "alpha"),
    ("rmsprop", {"momentum": -0.1}, "momentum"),
    ("lamb", {"betas": (0.9, 1.0)}, r"betas\[1\]"),
    ("lamb", {"eps": -1.0}, "eps"),
    ("lamb", {"lr": -1.0}, "lr"),
    ("lars", {"trust_coefficient": -1e-3}, "trust_coefficient"),
    ("lars", {"momentum": 0.0, "nesterov": True}, "momentum"),
    ("lars", {"weight_decay": float("inf")}, "weight_decay"),
]


@pytest.mark.parametrize(("name", "kwargs", "argument"), INVALID, ids=[f"{n}-{a}" for n, _, a in INVALID])
def test_invalid_hyperparameters_name_argument_and_range(
    name: str, kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ValueError, match=argument) as info:
        ours(name)([torch.zeros(2, requires_grad=True)], **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(r"must|requires|allowed|either", message), message


def test_fused_and_foreach_together_rejected_like_torch() -> None:
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        optimizers.Adam([torch.zeros(1, requires_grad=True)], fused=True, foreach=True)


# --- registry --------------------------------------------------------------------------------------


def test_registry_names_and_build() -> None:
    assert set(ALL) == {"sgd", "adam", "adamw", "adagrad", "rmsprop", "lamb", "lars"}
    p = torch.zeros(3, requires_grad=True)
    opt = optimizers.build("adam", [p], lr=0.01, beta1=0.8, beta2=0.95, weight_decay=0.1)
    assert isinstance(opt, optimizers.Adam)
    assert opt.param_groups[0]["betas"] == (0.8, 0.95)
    assert opt.param_groups[0]["lr"] == 0.01
    assert optimizers.build("ADAMW", [p]).param_groups[0]["weight_decay"] == 1e-2
    # beta2 alone keeps the default beta1
    assert optimizers.build("lamb", [p], beta2=0.9).param_groups[0]["betas"] == (0.9, 0.9)


def test_registry_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="Unknown optimizer 'adamx'") as info:
        optimizers.build("adamx", [torch.zeros(1, requires_grad=True)])
    for name in ALL:
        assert name in str(info.value)


def test_registry_unknown_hyperparameter_is_an_error() -> None:
    with pytest.raises(ValueError, match="momentun.*valid:.*momentum"):
        optimizers.build("sgd", [torch.zeros(1, requires_grad=True)], momentun=0.9)
    with pytest.raises(ValueError, match="betas or beta1/beta2"):
        optimizers.build("adam", [torch.zeros(1, requires_grad=True)], betas=(0.9, 0.99), beta1=0.9)


# --- state dicts ----------------------------------------------------------------------------------

RESUME_CASES = [
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.5, "centered": True}),
    ("lamb", {"lr": 0.01, "weight_decay": 0.01}),
    ("lars", {"lr": 1.0, "weight_decay": 1e-4}),
]


def _serialized(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# The compiled step is resumed for two optimizers only, to bound compile time.
RESUME_PARAMS = [pytest.param(name, kwargs, False, id=f"{name}-eager") for name, kwargs in RESUME_CASES] + [
    pytest.param(name, kwargs, True, id=f"{name}-compiled", marks=pytest.mark.timeout(300))
    for name, kwargs in RESUME_CASES
    if name in ("adam", "sgd")
]


@pytest.mark.parametrize(("name", "kwargs", "fused"), RESUME_PARAMS)
def test_resume_from_state_dict_is_bit_for_bit(name: str, kwargs: dict[str, Any], fused: bool) -> None:
    problem = make_problem(torch.float32, complex_param=False)
    resumed = clone_problem(problem)

    straight = ours(name)(problem.groups, **kwargs, fused=fused)
    expected = run_steps(straight, problem, 14)

    first = ours(name)(resumed.groups, **kwargs, fused=fused)
    run_steps(first, resumed, 7)
    checkpoint = _serialized(
        {"params": [p.detach() for p in resumed.params], "optimizer": first.state_dict()}
    )

    fresh = clone_problem(resumed)
    with torch.no_grad():
        for p, saved in zip(fresh.params, checkpoint["params"], strict=True):
            p.copy_(saved)
    second = ours(name)(fresh.groups, **kwargs, fused=fused)
    second.load_state_dict(checkpoint["optimizer"])
    actual = run_steps(second, fresh, 7)
    for got, want in zip(actual[-1], expected[-1], strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("name", list(TORCH_REFERENCES))
def test_loads_torch_state_dict_and_continues_like_torch(name: str) -> None:
    """A checkpoint written by torch.optim continues identically under ours (same state layout)."""
    kwargs = {"lr": 0.01, "weight_decay": 0.01}
    if name in ("sgd", "rmsprop"):
        kwargs["momentum"] = 0.9
    problem = make_problem(torch.float64, complex_param=False)
    torch_opt = TORCH_REFERENCES[name](problem.groups, **kwargs, foreach=False)
    run_steps(torch_opt, problem, 5)

    twin = clone_problem(problem)
    mine = ours(name)(twin.groups, **kwargs)
    mine.load_state_dict(_serialized(torch_opt.state_dict()))
    expected = run_steps(torch_opt, problem, 10)
    actual = run_steps(mine, twin, 10)
    for got, want in zip(actual[-1], expected[-1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


# --- schedulers, groups, tensor lr ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(TORCH_REFERENCES))
def test_torch_lr_schedulers_drive_our_optimizers(name: str) -> None:
    problem = make_problem(torch.float64, complex_param=False)
    twin = clone_problem(problem)
    torch_opt = TORCH_REFERENCES[name](problem.groups, lr=0.05, foreach=False)
    mine = ours(name)(twin.groups, lr=0.05)
    cycle_momentum = name != "adagrad"  # Adagrad has no momentum for OneCycleLR to cycle
    schedules = [
        torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=20, cycle_momentum=cycle_momentum)
        for o in (torch_opt, mine)
    ]
    expected = run_steps(torch_opt, problem, 20, after_step=lambda _: schedules[0].step())
    actual = run_steps(mine, twin, 20, after_step=lambda _: schedules[1].step())
    assert [g["lr"] for g in mine.param_groups] == [g["lr"] for g in torch_opt.param_groups]
    for got, want in zip(actual[-1], expected[-1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def test_tensor_lr_follows_scheduler_updates_in_place() -> None:
    p = torch.ones(3, requires_grad=True)
    opt = optimizers.SGD([p], lr=torch.tensor(0.1))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for expected_lr in (0.1, 0.05):
        p.grad = torch.ones(3)
        before = p.detach().clone()
        opt.step()
        sched.step()
        torch.testing.assert_close(before - p.detach(), torch.full((3,), expected_lr))
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)


def test_param_groups_keep_their_own_hyperparameters() -> None:
    a, b = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = optimizers.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "weight_decay": 1.0}], lr=0.1)
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.full((2,), 0.9))
    torch.testing.assert_close(b.detach(), torch.full((2,), 1 - 0.5 * (1 + 1.0)))


def test_sparse_gradients_are_a_clear_error() -> None:
    p = torch.zeros(4, requires_grad=True)
    opt = optimizers.Adam([p])
    p.grad = torch.sparse_coo_tensor([[1]], [1.0], (4,), check_invariants=True)
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


# --- compiled step and its fallback ------------------------------------------------------------------


def test_default_compiles_only_large_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_compiled(update: Any) -> Any:
        def run(params: list[torch.Tensor], *args: Any, **kwargs: Any) -> None:
            calls.append(sum(p.numel() for p in params))
            update(params, *args, **kwargs)

        return run

    monkeypatch.setattr(_engine, "_compiled", fake_compiled)
    small = torch.zeros(10, requires_grad=True)
    large = torch.zeros(_engine.COMPILE_MIN_NUMEL, requires_grad=True)
    opt = optimizers.Adam([{"params": [small]}, {"params": [large]}])
    small.grad, large.grad = torch.ones_like(small), torch.ones_like(large)
    opt.step()
    assert calls == [_engine.COMPILE_MIN_NUMEL]
    monkeypatch.setenv("OPTSWEEP_COMPILE", "never")
    opt.step()
    assert len(calls) == 1
    monkeypatch.setenv("OPTSWEEP_COMPILE", "always")
    opt.step()
    assert len(calls) == 3


def test_failed_compilation_falls_back_to_eager_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compiler(update: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

        return run

    monkeypatch.setattr(_engine, "_compiled", broken_compiler)
    monkeypatch.setattr(_engine, "_compile_broken_on", set())
    problem = make_problem(torch.float64, complex_param=False)
    twin = clone_problem(problem)
    kwargs = {"lr": 0.01, "weight_decay": 0.1}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        actual = run_steps(optimizers.Adam(problem.groups, **kwargs, fused=True), problem, 5)
    assert len([w for w in caught if "compiling the Adam step" in str(w.message)]) == 1
    expected = run_steps(optimizers.Adam(twin.groups, **kwargs, fused=False), twin, 5)
    for got, want in zip(actual[-1], expected[-1], strict=True):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="OPTSWEEP_COMPILE"):
        monkeypatch.setenv("OPTSWEEP_COMPILE", "sometimes")
        _engine.compile_mode()


@pytest.mark.parametrize("name", list(TORCH_REFERENCES))
def test_params_that_lose_and_regain_their_grad_match_torch(name: str) -> None:
    """The step reuses its per-group plan between steps; a param without a grad on some step must
    still be skipped exactly like torch does (its step count stays behind)."""
    problem = make_problem(torch.float64, complex_param=True)
    twin = clone_problem(problem)
    kwargs = {"lr": 0.01, "weight_decay": 0.01}
    reference = TORCH_REFERENCES[name](problem.groups, **kwargs, foreach=False)
    mine = ours(name)(twin.groups, **kwargs)
    for step in range(8):
        for opt, prob in ((reference, problem), (mine, twin)):
            opt.zero_grad()
            prob.loss().backward()
            if step in (2, 3):
                prob.params[1].grad = None
            opt.step()
    for got, want in zip(twin.params, problem.params, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def test_load_state_dict_into_a_stepping_optimizer_is_honoured() -> None:
    """The per-group plan built before a load_state_dict must not outlive it."""
    problem = make_problem(torch.float64, complex_param=False)
    opt = optimizers.Adam(problem.params, lr=0.01)
    run_steps(opt, problem, 3)
    saved = _serialized(opt.state_dict())
    params_at_3 = [p.detach().clone() for p in problem.params]
    run_steps(opt, problem, 2)  # the plan now counts 5 steps

    fresh_problem = clone_problem(problem)
    with torch.no_grad():
        for p, q, value in zip(problem.params, fresh_problem.params, params_at_3, strict=True):
            p.copy_(value)
            q.copy_(value)
    opt.load_state_dict(saved)
    fresh = optimizers.Adam(fresh_problem.params, lr=0.01)
    fresh.load_state_dict(_serialized(saved))  # its own copy: load_state_dict keeps the loaded tensors
    for got, want in zip(run_steps(opt, problem, 2)[-1], run_steps(fresh, fresh_problem, 2)[-1], strict=True):
        assert torch.equal(got, want)
    assert float(opt.state[problem.params[0]]["step"]) == 5


@pytest.mark.parametrize("name", ["adam", "adagrad", "rmsprop"])
def test_torch_continues_from_our_state_dict(name: str) -> None:
    """Our step counts are views into one tensor per bucket; torch.optim must still see one per param."""
    problem = make_problem(torch.float64, complex_param=False)
    mine = ours(name)(problem.groups, lr=0.01)
    run_steps(mine, problem, 4)
    twin = clone_problem(problem)
    theirs = TORCH_REFERENCES[name](twin.groups, lr=0.01, foreach=False)
    theirs.load_state_dict(_serialized(mine.state_dict()))
    expected = run_steps(mine, problem, 3)[-1]
    actual = run_steps(theirs, twin, 3)[-1]
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    steps = [float(s["step"]) for s in mine.state.values()]
    assert [float(s["step"]) for s in theirs.state.values()] == steps
