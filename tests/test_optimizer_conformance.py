"""The torch.optim.Optimizer contract, checked on all seven optimizers (our own tests, not PyTorch's):
hooks, deepcopy and pickling, zero_grad, closures, maximize, tensor lr, complex parameters, error
inputs, named parameters, and state that follows its parameters to another dtype or device.

Where torch.optim has a twin, the behaviour is compared with torch's; otherwise with a closed-form
statement of the contract (maximizing f is minimizing -f, a complex parameter is a pair of reals).
"""

from __future__ import annotations

import copy
import io
import pickle
import re
from typing import Any

import pytest
import torch
from optimizer_cases import TORCH_REFERENCES, clone_problem, make_problem, ours, run_steps, tolerances
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.testing._internal.common_optimizers import OptimizerErrorEnum, get_error_inputs_for_all_optims

from optsweep import optimizers

ALL = optimizers.names()
# One configuration per optimizer that exercises its state (momentum, moments, accumulators).
KWARGS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    "adam": {"lr": 0.01, "weight_decay": 0.01, "amsgrad": True},
    "adamw": {"lr": 0.01},
    "adagrad": {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
    "rmsprop": {"lr": 0.01, "momentum": 0.5, "centered": True},
    "lamb": {"lr": 0.02, "weight_decay": 0.01},
    "lars": {"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-3},
}
EXACT = {"rtol": 0.0, "atol": 0.0}


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _build(name: str, groups: Any, **overrides: Any) -> torch.optim.Optimizer:
    return ours(name)(groups, **{**KWARGS[name], **overrides})


def _assert_same(actual: list[torch.Tensor], expected: list[torch.Tensor], **tolerance: float) -> None:
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got.detach(), want.detach(), **(tolerance or EXACT))


# --- hooks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_step_pre_and_post_hooks_run_around_the_step(name: str) -> None:
    problem = make_problem(torch.float32, complex_param=False)
    optimizer = _build(name, problem.groups)
    first = problem.params[0]
    seen: list[tuple[str, bool]] = []

    def pre_hook(opt: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        assert opt is optimizer
        seen.append(("pre", torch.equal(first, before)))

    def post_hook(opt: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append(("post", torch.equal(first, before)))

    pre = optimizer.register_step_pre_hook(pre_hook)
    post = optimizer.register_step_post_hook(post_hook)
    global_pre = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append(("global pre", opt is optimizer))
    )
    try:
        problem.loss().backward()
        before = first.detach().clone()
        optimizer.step()
    finally:
        global_pre.remove()
    assert seen == [("global pre", True), ("pre", True), ("post", False)]

    pre.remove()
    post.remove()
    seen.clear()
    optimizer.step()
    assert seen == []


def test_step_pre_hook_may_change_the_arguments() -> None:
    """A pre-hook returning (args, kwargs) replaces them (args start with the optimizer), as in
    torch.optim: here it injects a closure."""
    param = torch.ones(2, requires_grad=True)
    optimizer = optimizers.SGD([param], lr=0.1)
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        optimizer.zero_grad()
        loss = (param**2).sum()
        loss.backward()
        return loss

    optimizer.register_step_pre_hook(lambda opt, args, kwargs: ((opt, closure), {}))
    loss = optimizer.step()
    assert calls == [1]
    assert float(loss) == 2.0
    torch.testing.assert_close(param.detach(), torch.full((2,), 0.8))


@pytest.mark.parametrize("name", ALL)
def test_state_dict_and_load_state_dict_hooks(name: str) -> None:
    problem = make_problem(torch.float32, complex_param=False)
    optimizer = _build(name, problem.groups)
    run_steps(optimizer, problem, 2)
    events: list[str] = []

    optimizer.register_state_dict_pre_hook(lambda opt: events.append("sd pre"))

    def add_note(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        events.append("sd post")
        state_dict["note"] = "written by a hook"
        return state_dict

    optimizer.register_state_dict_post_hook(add_note)
    saved = optimizer.state_dict()
    saved = _round_trip(saved)  # load_state_dict keeps the tensors it is given: the reader needs its own
    assert saved["note"] == "written by a hook"
    assert events == ["sd pre", "sd post"]

    twin = clone_problem(problem)
    reader = _build(name, twin.groups)

    def drop_note(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        events.append("load pre")
        state_dict = dict(state_dict)
        state_dict.pop("note")
        return state_dict

    reader.register_load_state_dict_pre_hook(drop_note)
    reader.register_load_state_dict_post_hook(lambda opt: events.append(f"load post {len(opt.state)}"))
    reader.load_state_dict(saved)
    assert events[2:] == ["load pre", f"load post {len(optimizer.state)}"]
    _assert_same(run_steps(reader, twin, 3)[-1], run_steps(optimizer, problem, 3)[-1])


# --- copies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name", ALL)
def test_copied_optimizer_continues_exactly_like_the_original(name: str, how: str) -> None:
    """Copy the parameters and the optimizer together (as a checkpoint of the whole training state
    would): the copy steps its own parameters, and both continue bit for bit alike."""
    problem = make_problem(torch.float32, complex_param=True)
    optimizer = _build(name, problem.groups)
    run_steps(optimizer, problem, 3)  # state exists and the step plans are built
    if how == "deepcopy":
        copied_problem, copied = copy.deepcopy((problem, optimizer))
    else:
        copied_problem, copied = pickle.loads(pickle.dumps((problem, optimizer)))
    assert copied.param_groups[0]["params"][0] is copied_problem.params[0]
    expected = run_steps(optimizer, problem, 4)[-1]
    _assert_same(run_steps(copied, copied_problem, 4)[-1], expected)


# --- zero_grad and closures -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_zero_grad_sets_to_none_or_zeroes_in_place(name: str) -> None:
    problem = make_problem(torch.float32, complex_param=True)
    optimizer = _build(name, problem.groups)
    problem.loss().backward()
    grads = [p.grad for p in problem.params]
    optimizer.zero_grad(set_to_none=False)
    for param, grad in zip(problem.params, grads, strict=True):
        assert param.grad is grad
        assert not grad.any()
    assert problem.frozen.grad is None
    problem.loss().backward()
    optimizer.zero_grad()  # set_to_none=True by default
    assert all(p.grad is None for p in problem.params)
    before = [p.detach().clone() for p in problem.params]
    optimizer.step()  # nothing has a gradient: nothing moves, no state is created for it
    _assert_same(problem.params, before)


@pytest.mark.parametrize("name", list(TORCH_REFERENCES))
def test_closure_is_called_once_and_its_loss_returned_like_torch(name: str) -> None:
    problem = make_problem(torch.float64, complex_param=False)
    twin = clone_problem(problem)
    reference = TORCH_REFERENCES[name](twin.groups, **KWARGS[name], foreach=False)
    optimizer = _build(name, problem.groups)
    calls = []

    def closure_for(opt: torch.optim.Optimizer, prob: Any) -> Any:
        def closure() -> torch.Tensor:
            calls.append(opt)
            opt.zero_grad()
            loss = prob.loss()
            loss.backward()  # the step runs under no_grad; the closure must get grad mode back
            return loss

        return closure

    for _ in range(4):
        want = reference.step(closure_for(reference, twin))
        got = optimizer.step(closure_for(optimizer, problem))
        assert torch.equal(got, want)
    assert calls == [reference, optimizer] * 4
    _assert_same(problem.params, twin.params, rtol=1e-12, atol=1e-14)


# --- maximize, tensor lr, complex parameters -----------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_maximize_f_is_minimizing_minus_f(name: str) -> None:
    problem = make_problem(torch.float64, complex_param=True)
    twin = clone_problem(problem)
    maximizer = _build(name, problem.groups, maximize=True)
    minimizer = _build(name, twin.groups)
    for _ in range(5):
        maximizer.zero_grad()
        (-problem.loss()).backward()
        maximizer.step()
        minimizer.zero_grad()
        twin.loss().backward()
        minimizer.step()
    _assert_same(problem.params, twin.params)


@pytest.mark.parametrize("name", ALL)
def test_tensor_lr_steps_like_the_same_float_lr(name: str) -> None:
    problem = make_problem(torch.float64, complex_param=True)
    twin = clone_problem(problem)
    lr = KWARGS[name]["lr"]
    with_tensor = _build(name, problem.groups, lr=torch.tensor(lr, dtype=torch.float64))
    with_float = _build(name, twin.groups, lr=lr)
    _assert_same(run_steps(with_tensor, problem, 5)[-1], run_steps(with_float, twin, 5)[-1])
    assert isinstance(with_tensor.param_groups[0]["lr"], torch.Tensor)


@pytest.mark.parametrize("name", ALL)
def test_complex_parameter_steps_like_its_real_pair(name: str) -> None:
    """torch.optim treats a complex parameter as a tensor of (real, imag) pairs; so do ours."""
    generator = torch.Generator().manual_seed(1)
    start = torch.randn(4, 3, dtype=torch.complex128, generator=generator)
    complex_param = start.clone().requires_grad_()
    real_param = torch.view_as_real(start).clone().requires_grad_()
    complex_opt = _build(name, [complex_param])
    real_opt = _build(name, [real_param])
    for _ in range(5):
        grad = torch.randn(4, 3, 2, dtype=torch.float64, generator=generator)
        real_param.grad = grad.clone()
        complex_param.grad = torch.view_as_complex(grad.clone())
        real_opt.step()
        complex_opt.step()
    torch.testing.assert_close(
        torch.view_as_real(complex_param.detach()), real_param.detach(), rtol=1e-12, atol=1e-14
    )


# --- error inputs ----------------------------------------------------------------------------------------


def _generic_error_cases() -> list[Any]:
    cases = []
    for error_input in get_error_inputs_for_all_optims("cpu", torch.float32):
        assert error_input.error_on == OptimizerErrorEnum.CONSTRUCTION_ERROR
        oi = error_input.optimizer_error_input
        for name in ALL:
            cases.append(
                pytest.param(
                    name, oi, error_input.error_type, error_input.error_regex, id=f"{name}-{oi.desc}"
                )
            )
    return cases


@pytest.mark.parametrize(("name", "optim_input", "error_type", "regex"), _generic_error_cases())
def test_errors_every_torch_optimizer_raises(
    name: str, optim_input: Any, error_type: type, regex: str
) -> None:
    """torch's error inputs shared by all its optimizers (bad params, duplicates, names), on all seven;
    the per-optimizer ones are in test_optimizers_api.py."""
    params = optim_input.params if optim_input.params is not None else [torch.zeros(2, requires_grad=True)]
    expectation = pytest.warns if issubclass(error_type, Warning) else pytest.raises
    with expectation(error_type, match=regex):
        ours(name)(params, **optim_input.kwargs)


@pytest.mark.parametrize("name", ALL)
def test_refused_features_say_so_in_one_line(name: str) -> None:
    """Sparse gradients, differentiable=True and capturable=True are refused, never silently ignored."""
    param = torch.zeros(4, requires_grad=True)
    for flag in ("differentiable", "capturable"):
        if flag not in ours(name).__init__.__code__.co_varnames:
            continue
        with pytest.raises(ValueError, match=f"{flag}=True is not supported") as info:
            ours(name)([param], **{flag: True})
        assert "\n" not in str(info.value)
    optimizer = ours(name)([param])
    param.grad = torch.sparse_coo_tensor([[1]], [1.0], (4,))
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        optimizer.step()


@pytest.mark.parametrize("name", ALL)
def test_foreach_is_accepted_and_changes_nothing(name: str) -> None:
    """`foreach` selects one of torch's implementations; ours has one eager implementation, so any value
    is accepted, including with a tensor lr that torch refuses for foreach=True (its foreach kernels
    cannot take one; ours can). foreach=True with fused=True is refused like torch."""
    problem = make_problem(torch.float64, complex_param=False)
    results = []
    for foreach in (None, False, True):
        prob = clone_problem(problem)
        optimizer = _build(name, prob.groups, lr=torch.tensor(KWARGS[name]["lr"]), foreach=foreach)
        results.append(run_steps(optimizer, prob, 3)[-1])
    _assert_same(results[1], results[0])
    _assert_same(results[2], results[0])
    with pytest.raises(RuntimeError, match=re.escape("`fused` and `foreach` cannot be `True` together")):
        _build(name, problem.groups, foreach=True, fused=True)


@pytest.mark.parametrize("name", ALL)
def test_named_parameters_are_kept_in_the_state_dict(name: str) -> None:
    weight = torch.ones(3, requires_grad=True)
    optimizer = _build(name, [("weight", weight)])
    weight.grad = torch.ones(3)
    optimizer.step()
    assert optimizer.state_dict()["param_groups"][0]["param_names"] == ["weight"]


# --- moving an optimizer's state to other parameters ---------------------------------------------------


def _save_and_load_into(
    name: str, reference: bool, *, to: dict[str, Any]
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """Train 3 steps in float32 on the CPU, load the state into a copy of the parameters moved `to` a
    dtype/device, train 4 more steps there; the final parameters and the optimizer."""
    problem = make_problem(torch.float32, complex_param=False)
    cls = TORCH_REFERENCES[name] if reference else ours(name)
    extra = {"foreach": False} if reference else {}
    writer = cls(problem.groups, **KWARGS[name], **extra)
    run_steps(writer, problem, 3)
    buffer = io.BytesIO()
    torch.save(writer.state_dict(), buffer)
    buffer.seek(0)
    moved = clone_problem(problem)
    with torch.no_grad():
        moved.params = [p.detach().to(**to).requires_grad_() for p in moved.params]
        moved.frozen = moved.frozen.detach().to(**to).requires_grad_()
    moved.groups = [{"params": [*moved.params[:2], moved.frozen]}, {"params": moved.params[2:]}]
    reader = cls(moved.groups, **KWARGS[name], **extra)
    reader.load_state_dict(torch.load(buffer, weights_only=True))
    return run_steps(reader, moved, 4)[-1], reader


@pytest.mark.parametrize("name", list(TORCH_REFERENCES))
def test_state_follows_parameters_to_another_dtype_like_torch(name: str) -> None:
    actual, optimizer = _save_and_load_into(name, False, to={"dtype": torch.float64})
    expected, _ = _save_and_load_into(name, True, to={"dtype": torch.float64})
    # The first 3 steps ran in float32, where ours and torch's agree to float32 rounding.
    _assert_same(actual, expected, **tolerances(torch.float32))
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step":  # step counts keep their own dtype, as in torch.optim
                assert value.dtype == torch.float64, key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
@pytest.mark.parametrize("name", ALL)
def test_state_follows_parameters_between_cpu_and_cuda(name: str) -> None:
    """CPU-trained state loaded for CUDA parameters continues like the same run kept on the CPU."""
    on_cuda, optimizer = _save_and_load_into(name, False, to={"device": "cuda"})
    on_cpu, _ = _save_and_load_into(name, False, to={"device": "cpu"})
    _assert_same([p.cpu() for p in on_cuda], on_cpu, rtol=1e-5, atol=1e-6)
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step":
                assert value.is_cuda, key
