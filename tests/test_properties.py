"""Property-based tests for bad input (issue 7): the optimizers' constructors, `optimizers.build`,
`optimizers.schedules.build` and the sweep's argument parser.

Two properties throughout: every invalid value raises a clear error (the expected type, one line,
naming the argument or flag and, where the code prints it, the value), and no valid value crashes (an
optimizer constructs and steps; bounded hyperparameters give finite parameters; a valid command line
parses and the search spaces, optimizers and schedules it leads to build).

`sweeps.adam_vs_sgd.main` is only ever called with input that `cli.parse` has just rejected: with
valid input it would start a real sweep.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import itertools
import math
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
import pytest
import ray
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from optsweep import optimizers
from optsweep.errors import OptsweepError
from optsweep.optimizers import schedules
from optsweep.sweeps import adam_vs_sgd, cli
from optsweep.sweeps.runner import study
from optsweep.sweeps.search import spaces
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables import data, models
from optsweep.vocabulary import CONFIRM_SEED_BASE

NAN = float("nan")
INF = float("inf")
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
LARGEST_BELOW_ONE = math.nextafter(1.0, 0.0)

FAST = settings(
    max_examples=25,
    deadline=None,
    database=None,  # nothing written to the repository
    suppress_health_check=[HealthCheck.too_slow],
)
FEW = settings(FAST, max_examples=10)


def _assert_clear(message: str, *needles: str) -> None:
    """One line that contains every needle (argument or flag name, allowed range, value)."""
    assert message and "\n" not in message and "\r" not in message, repr(message)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


# --- optimizers: the hyperparameters and their valid ranges ---------------------------------------

LR, NONNEG, UNIT, BETAS = "lr", "nonnegative", "unit interval", "betas"
RANGE_TEXT = {LR: ">= 0", NONNEG: ">= 0", UNIT: "[0, 1]"}

HYPERPARAMETERS: dict[str, dict[str, str]] = {
    "sgd": {"lr": LR, "momentum": NONNEG, "dampening": UNIT, "weight_decay": NONNEG},
    "adam": {"lr": LR, "betas": BETAS, "eps": NONNEG, "weight_decay": NONNEG},
    "adamw": {"lr": LR, "betas": BETAS, "eps": NONNEG, "weight_decay": NONNEG},
    "adagrad": {
        "lr": LR,
        "lr_decay": NONNEG,
        "weight_decay": NONNEG,
        "initial_accumulator_value": NONNEG,
        "eps": NONNEG,
    },
    "rmsprop": {"lr": LR, "alpha": UNIT, "eps": NONNEG, "weight_decay": NONNEG, "momentum": NONNEG},
    "lamb": {"lr": LR, "betas": BETAS, "eps": NONNEG, "weight_decay": NONNEG},
    "lars": {
        "lr": LR,
        "momentum": NONNEG,
        "weight_decay": NONNEG,
        "trust_coefficient": NONNEG,
        "eps": NONNEG,
    },
}
# Switches that must stay False (torch features optsweep does not implement).
UNSUPPORTED = ("capturable", "differentiable")


def _signature(name: str) -> dict[str, Any]:
    cls = optimizers.optimizer_class(name)
    return {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in ("self", "params")
    }


def _switches(name: str) -> list[str]:
    """Boolean options that may be True freely (nesterov is coupled to momentum, drawn separately)."""
    return [
        arg
        for arg, default in _signature(name).items()
        if default is False and arg not in UNSUPPORTED and arg != "nesterov"
    ]


# Valid values. Booleans and ints are accepted where torch accepts them (as 0/1 and exact numbers).
NONNEG_VALID = st.one_of(
    st.floats(min_value=0.0, max_value=1e308),
    st.sampled_from([0, 0.0, -0.0, 1e308, 5e-324]),
    st.integers(0, 10**6),
    st.booleans(),
)
UNIT_VALID = st.one_of(st.floats(0.0, 1.0), st.sampled_from([0, 1, 0.0, 1.0, True, False, 5e-324]))
BETA_VALID = st.one_of(
    st.floats(0.0, 1.0, exclude_max=True), st.sampled_from([0, 0.0, False, LARGEST_BELOW_ONE])
)
ONE_ELEMENT_SHAPES = st.sampled_from([(), (1,), (1, 1)])
WRONG_SHAPES = st.sampled_from([(0,), (2,), (2, 1), (3, 3)])


def _tensor(value: float, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.full(shape, float(value), dtype=torch.float64)


LR_VALID = st.one_of(NONNEG_VALID, st.builds(_tensor, st.floats(0.0, 1e308), ONE_ELEMENT_SHAPES))


@st.composite
def betas_valid(draw: st.DrawFn, beta: st.SearchStrategy[Any] = BETA_VALID) -> Any:
    b1, b2 = draw(beta), draw(beta)
    form = draw(st.sampled_from(["tuple", "list", "tensors"]))
    if form == "tensors":
        return (_tensor(b1, draw(ONE_ELEMENT_SHAPES)), _tensor(b2, draw(ONE_ELEMENT_SHAPES)))
    return (b1, b2) if form == "tuple" else [b1, b2]


VALID: dict[str, st.SearchStrategy[Any]] = {
    LR: LR_VALID,
    NONNEG: NONNEG_VALID,
    UNIT: UNIT_VALID,
    BETAS: betas_valid(),
}

# Bounded valid values, for "finite parameters for finite inputs": lr <= 10, eps >= 1e-8, grads of
# magnitude >= 0.1, so nothing overflows float32 in two steps.
BOUNDED: dict[str, st.SearchStrategy[Any]] = {
    "lr": st.one_of(st.floats(0.0, 10.0), st.builds(_tensor, st.floats(0.0, 10.0), ONE_ELEMENT_SHAPES)),
    "momentum": st.floats(0.0, 2.0),
    "dampening": st.floats(0.0, 1.0),
    "weight_decay": st.floats(0.0, 10.0),
    "eps": st.floats(1e-8, 1.0),
    "lr_decay": st.floats(0.0, 10.0),
    "initial_accumulator_value": st.floats(0.0, 10.0),
    "trust_coefficient": st.floats(0.0, 10.0),
    # alpha >= 0.01: see test_centered_rmsprop_stays_finite_with_a_steady_gradient for smaller ones.
    "alpha": st.floats(0.01, 1.0),
    "betas": betas_valid(),
}

NEGATIVE = st.one_of(st.floats(max_value=-5e-324), st.integers(-(10**9), -1))  # -inf included
NONNEG_INVALID = st.one_of(NEGATIVE, st.sampled_from([NAN, INF]))
UNIT_INVALID = st.one_of(
    NEGATIVE, st.floats(min_value=1.0, exclude_min=True), st.integers(2, 10**9), st.just(NAN)
)
BETA_INVALID = st.one_of(
    NEGATIVE, st.floats(min_value=1.0), st.integers(1, 10**9), st.sampled_from([NAN, True])
)


@st.composite
def valid_hyperparameters(draw: st.DrawFn, name: str, bounded: bool = False) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for arg, kind in HYPERPARAMETERS[name].items():
        if draw(st.booleans()):
            kwargs[arg] = draw(BOUNDED[arg] if bounded else VALID[kind])
    if name == "adagrad" and not bounded and "initial_accumulator_value" in kwargs:
        # Larger values overflow a float32 accumulator: test_huge_initial_accumulator_value_is_clear.
        kwargs["initial_accumulator_value"] = min(kwargs["initial_accumulator_value"], FLOAT32_MAX)
    for switch in _switches(name):
        if draw(st.booleans()):
            kwargs[switch] = True
    if "nesterov" in _signature(name) and draw(st.booleans()):
        kwargs["nesterov"] = True
        kwargs["momentum"] = draw(st.floats(1e-3, 2.0) if bounded else st.floats(5e-324, 1e308))
        if "dampening" in kwargs:
            kwargs["dampening"] = 0.0
    return kwargs


COORDINATES = st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3)
GRADIENTS = st.lists(
    st.tuples(st.floats(0.1, 2.0), st.booleans()).map(lambda t: t[0] if t[1] else -t[0]),
    min_size=3,
    max_size=3,
)


def _run(
    name: str, kwargs: dict[str, Any], values: list[float], grads: list[float], steps: int = 2
) -> torch.Tensor:
    param = torch.nn.Parameter(torch.tensor(values, dtype=torch.float32))
    optimizer = optimizers.optimizer_class(name)([param], **kwargs)
    for _ in range(steps):
        param.grad = torch.tensor(grads, dtype=torch.float32)
        optimizer.step()
    return param.detach()


def _construct(name: str, **kwargs: Any) -> torch.optim.Optimizer:
    return optimizers.optimizer_class(name)([torch.nn.Parameter(torch.ones(3))], **kwargs)


def test_every_numeric_hyperparameter_is_covered() -> None:
    """A new numeric hyperparameter must get a range here, or it escapes these properties."""
    for name in optimizers.names():
        numeric = {
            arg
            for arg, default in _signature(name).items()
            if isinstance(default, (int, float, tuple)) and not isinstance(default, bool)
        }
        assert numeric == set(HYPERPARAMETERS[name]), name


# --- optimizers: no valid value crashes ------------------------------------------------------------


PER_OPTIMIZER = settings(FAST, max_examples=15)
ALL_OPTIMIZERS = pytest.mark.parametrize("name", optimizers.names())


@ALL_OPTIMIZERS
@PER_OPTIMIZER
@given(data=st.data())
def test_valid_hyperparameters_construct_and_step(name: str, data: st.DataObject) -> None:
    """The whole valid range, huge and subnormal values included: overflow to inf is allowed, an
    exception is not."""
    kwargs = data.draw(valid_hyperparameters(name), label="kwargs")
    _run(name, kwargs, data.draw(COORDINATES), data.draw(GRADIENTS))


@ALL_OPTIMIZERS
@PER_OPTIMIZER
@given(data=st.data())
def test_bounded_valid_hyperparameters_give_finite_parameters(name: str, data: st.DataObject) -> None:
    kwargs = data.draw(valid_hyperparameters(name, bounded=True), label="kwargs")
    result = _run(name, kwargs, data.draw(COORDINATES), data.draw(GRADIENTS))
    assert torch.isfinite(result).all(), (name, kwargs, result)


@ALL_OPTIMIZERS
@PER_OPTIMIZER
@given(data=st.data())
def test_zero_lr_leaves_parameters_unchanged(name: str, data: st.DataObject) -> None:
    kwargs = data.draw(valid_hyperparameters(name, bounded=True), label="kwargs")
    kwargs["lr"] = data.draw(st.sampled_from([0, 0.0, False, torch.tensor(0.0), torch.zeros(1)]))
    values = data.draw(COORDINATES)
    result = _run(name, kwargs, values, data.draw(GRADIENTS))
    assert torch.equal(result, torch.tensor(values, dtype=torch.float32)), (name, kwargs)


@settings(FEW, max_examples=5)
@given(alpha=st.floats(0.5, 0.9), seed=st.integers(0, 2**16), eps=st.floats(1e-8, 1e-6))
@example(alpha=0.5, seed=0, eps=1e-8)  # NaN from step 22 on
def test_centered_rmsprop_stays_finite_with_a_steady_gradient(alpha: float, seed: int, eps: float) -> None:
    """E[g^2] - E[g]^2 is >= 0 in exact arithmetic, so the denominator is >= eps and every step is
    finite; a constant gradient makes it cancel to rounding noise after a few dozen steps."""
    grad = torch.randn(32, generator=torch.Generator().manual_seed(seed))
    param = torch.nn.Parameter(torch.zeros(32))
    optimizer = optimizers.RMSprop([param], lr=1e-3, alpha=alpha, eps=eps, centered=True)
    for _ in range(200):
        param.grad = grad.clone()
        optimizer.step()
    assert torch.isfinite(param).all(), param


@FEW
@given(
    name=st.sampled_from([n for n in optimizers.names() if "nesterov" in _signature(n)]),
    values=COORDINATES,
    grads=GRADIENTS,
    data=st.data(),
)
def test_nesterov_with_positive_momentum_is_valid(
    name: str, values: list[float], grads: list[float], data: st.DataObject
) -> None:
    momentum = data.draw(st.one_of(st.floats(5e-324, 1e308), st.integers(1, 10**6), st.just(True)))
    _run(name, {"nesterov": True, "momentum": momentum}, values, grads)


# --- optimizers: every invalid value is a clear ValueError -----------------------------------------


@st.composite
def invalid_hyperparameter(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(kwargs with one invalid value, what the message must contain)."""
    arg = draw(st.sampled_from(sorted(HYPERPARAMETERS[name])))
    kind = HYPERPARAMETERS[name][arg]
    if kind == BETAS:
        betas, needles = draw(invalid_betas())
        return {"betas": betas}, needles
    if kind == LR:
        form = draw(st.sampled_from(["number", "tensor value", "tensor shape"]))
        if form == "tensor value":
            value = _tensor(draw(st.one_of(st.floats(max_value=-5e-324), st.sampled_from([NAN, INF]))), ())
            return {"lr": value}, ("lr", ">= 0")
        if form == "tensor shape":
            value = torch.full(draw(WRONG_SHAPES), draw(st.floats(0.0, 1.0)))
            return {"lr": value}, ("lr", "1-element")
    value = draw(UNIT_INVALID if kind == UNIT else NONNEG_INVALID)
    return {arg: value}, (arg, RANGE_TEXT[kind], str(value))


@st.composite
def invalid_betas(draw: st.DrawFn) -> tuple[Any, tuple[str, ...]]:
    problem = draw(st.sampled_from(["length", "range", "tensor range", "mixed", "tensor shape"]))
    if problem == "length":
        betas = draw(st.lists(BETA_VALID, max_size=4).filter(lambda b: len(b) != 2))
        return draw(st.sampled_from([tuple(betas), betas])), ("betas", "pair")
    index = draw(st.integers(0, 1))
    if problem == "mixed":
        betas = [draw(BETA_VALID), draw(BETA_VALID)]
        betas[index] = _tensor(betas[index], ())
        return tuple(betas), ("betas", "Tensors")
    if problem == "tensor shape":
        betas = [_tensor(draw(BETA_VALID), ()), _tensor(draw(BETA_VALID), ())]
        betas[index] = torch.full(draw(WRONG_SHAPES), 0.5)
        return tuple(betas), (f"betas[{index}]", "1-element")
    bad = draw(BETA_INVALID)
    betas = [draw(BETA_VALID), draw(BETA_VALID)]
    betas[index] = bad
    if problem == "tensor range":
        return tuple(_tensor(b, ()) for b in betas), (f"betas[{index}]", "[0, 1)")
    return tuple(betas), (f"betas[{index}]", "[0, 1)", str(bad))


@ALL_OPTIMIZERS
@PER_OPTIMIZER
@given(data=st.data())
def test_invalid_hyperparameter_is_a_clear_value_error(name: str, data: st.DataObject) -> None:
    kwargs, needles = data.draw(invalid_hyperparameter(name), label="case")
    with pytest.raises(ValueError) as info:
        _construct(name, **kwargs)
    _assert_clear(str(info.value), *needles)


@FEW
@given(
    name=st.sampled_from([n for n in optimizers.names() if "betas" in _signature(n)]),
    index=st.integers(0, 1),
    bad=BETA_INVALID,
)
def test_invalid_beta1_beta2_through_build_is_clear(name: str, index: int, bad: Any) -> None:
    arg = ("beta1", "beta2")[index]
    with pytest.raises(ValueError) as info:
        optimizers.build(name, [torch.nn.Parameter(torch.ones(2))], **{arg: bad})
    message = str(info.value)
    _assert_clear(message, "[0, 1)", str(bad))
    assert arg in message or f"betas[{index}]" in message, message


@FEW
@given(name=st.sampled_from(["sgd", "lars"]), data=st.data())
def test_nesterov_without_momentum_is_clear(name: str, data: st.DataObject) -> None:
    if name == "sgd" and data.draw(st.booleans(), label="bad dampening"):
        kwargs = {"momentum": data.draw(st.floats(1e-3, 10.0)), "dampening": data.draw(st.floats(1e-9, 1.0))}
        needles: tuple[str, ...] = ("Nesterov", "dampening")
    else:
        kwargs = {"momentum": data.draw(st.sampled_from([0, 0.0, -0.0, False]))}
        needles = ("Nesterov", "momentum")
    with pytest.raises(ValueError) as info:
        _construct(name, nesterov=True, **kwargs)
    _assert_clear(str(info.value), *needles)


@pytest.mark.parametrize("name", optimizers.names())
def test_unsupported_switches_are_clear(name: str) -> None:
    for switch in UNSUPPORTED:
        if switch in _signature(name):
            with pytest.raises(ValueError) as info:
                _construct(name, **{switch: True})
            _assert_clear(str(info.value), switch, "must be False")


@FEW
@given(
    case=st.sampled_from([(n, arg) for n in optimizers.names() for arg in sorted(HYPERPARAMETERS[n])]),
    huge=st.integers(2**1024, 2**1100),
    index=st.integers(0, 1),
)
@example(case=("adam", "lr"), huge=10**400, index=0)
def test_integers_too_large_for_a_float_are_a_clear_value_error(
    case: tuple[str, str], huge: int, index: int
) -> None:
    """10**400 is not a float: a ValueError naming the argument, not an OverflowError about ints."""
    name, arg = case
    kwargs: dict[str, Any] = {arg: huge}
    needle = arg
    if arg == "betas":
        kwargs["betas"] = (huge, 0.9) if index == 0 else (0.9, huge)
        needle = f"betas[{index}]"
    with pytest.raises(ValueError) as info:
        _construct(name, **kwargs)
    _assert_clear(str(info.value), needle)


@FEW
@given(
    value=st.floats(min_value=FLOAT32_MAX, exclude_min=True, max_value=1e308),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
)
@example(value=1e39, dtype=torch.float32)
def test_huge_initial_accumulator_value_is_clear(value: float, dtype: torch.dtype) -> None:
    """A finite initial_accumulator_value that the parameters' dtype cannot hold either works or is a
    ValueError naming it, never torch's RuntimeError about a conversion overflow."""
    param = torch.nn.Parameter(torch.ones(3, dtype=dtype))
    try:
        optimizer = optimizers.Adagrad([param], initial_accumulator_value=value)
    except ValueError as error:
        _assert_clear(str(error), "initial_accumulator_value")
        return
    param.grad = torch.ones_like(param)
    optimizer.step()


# --- optimizers.build: names and unknown hyperparameters -------------------------------------------

IDENTIFIERS = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)


@FAST
@given(name=st.sampled_from(optimizers.names()), key=IDENTIFIERS)
def test_build_rejects_unknown_hyperparameters_listing_valid_ones(name: str, key: str) -> None:
    valid = _signature(name)
    if key in valid or key in ("beta1", "beta2"):
        return
    with pytest.raises(ValueError) as info:
        optimizers.build(name, [torch.nn.Parameter(torch.ones(2))], **{key: 0.1})
    _assert_clear(str(info.value), key, "valid:", *valid)


@FEW
@given(
    name=st.sampled_from([n for n in optimizers.names() if "betas" not in _signature(n)]),
    arg=st.sampled_from(["beta1", "beta2"]),
    value=BETA_VALID,
)
@example(name="sgd", arg="beta1", value=0.9)
def test_build_rejects_beta1_beta2_for_optimizers_without_betas(name: str, arg: str, value: Any) -> None:
    with pytest.raises(ValueError) as info:
        optimizers.build(name, [torch.nn.Parameter(torch.ones(2))], **{arg: value})
    _assert_clear(str(info.value), arg, "valid:")


@FEW
@given(
    name=st.sampled_from([n for n in optimizers.names() if "betas" in _signature(n)]),
    b1=BETA_VALID,
    b2=BETA_VALID,
)
def test_build_beta1_beta2_become_betas(name: str, b1: Any, b2: Any) -> None:
    optimizer = optimizers.build(name, [torch.nn.Parameter(torch.ones(2))], beta1=b1, beta2=b2)
    assert optimizer.param_groups[0]["betas"] == (b1, b2)


@FEW
@given(
    name=st.sampled_from([n for n in optimizers.names() if "betas" in _signature(n)]),
    betas=betas_valid(),
    arg=st.sampled_from(["beta1", "beta2"]),
    value=BETA_VALID,
)
def test_build_rejects_betas_together_with_beta1_beta2(name: str, betas: Any, arg: str, value: Any) -> None:
    with pytest.raises(ValueError) as info:
        optimizers.build(name, [torch.nn.Parameter(torch.ones(2))], betas=betas, **{arg: value})
    _assert_clear(str(info.value), "betas", "beta1/beta2")


@FAST
@given(name=st.text(max_size=12))
def test_build_rejects_unknown_optimizer_names(name: str) -> None:
    if name.strip().lower() in optimizers.names():
        return
    with pytest.raises(ValueError) as info:
        optimizers.build(name, [torch.nn.Parameter(torch.ones(2))])
    _assert_clear(str(info.value), repr(name), "valid optimizers", *optimizers.names())


@FEW
@given(
    name=st.sampled_from(optimizers.names()),
    spelling=st.sampled_from([str.upper, str.title, lambda s: f"  {s}\t"]),
)
def test_build_accepts_any_case_and_surrounding_space(name: str, spelling: Any) -> None:
    built = optimizers.build(spelling(name), [torch.nn.Parameter(torch.ones(2))])
    assert type(built) is optimizers.optimizer_class(name)


# --- optimizers.schedules.build --------------------------------------------------------------------


def _sgd(lr: float = 0.1) -> torch.optim.Optimizer:
    return optimizers.SGD([torch.nn.Parameter(torch.ones(2))], lr=lr)


def _schedule_args(name: str) -> list[str]:
    return list(inspect.signature(schedules.SCHEDULES[name]).parameters)[2:]


def _run_schedule(scheduler: Any, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """Every LR the optimizer gets over `steps` steps."""
    lrs = []
    for _ in range(steps):
        optimizer.step()
        if schedules.needs_metric(scheduler):
            scheduler.step(0.5)
        else:
            scheduler.step()
        lrs += [float(group["lr"]) for group in optimizer.param_groups]
    return lrs


@FAST
@given(name=st.sampled_from(schedules.names()), total_steps=st.integers(1, 10**9))
def test_schedules_accept_every_positive_total_steps(name: str, total_steps: int) -> None:
    optimizer = _sgd()
    scheduler = schedules.build(name, optimizer, total_steps)
    for lr in _run_schedule(scheduler, optimizer, min(total_steps, 3)):
        assert math.isfinite(lr) and lr >= 0, (name, total_steps, lr)


@FAST
@given(
    name=st.sampled_from(schedules.names()),
    total_steps=st.one_of(
        st.integers(-(10**9), 0),
        st.booleans(),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.none(),
    ),
)
def test_schedules_reject_invalid_total_steps(name: str, total_steps: Any) -> None:
    with pytest.raises(ValueError) as info:
        schedules.build(name, _sgd(), total_steps)
    _assert_clear(str(info.value), "total_steps", repr(total_steps))


@FAST
@given(name=st.text(max_size=15))
def test_schedules_reject_unknown_names(name: str) -> None:
    if name in schedules.names():
        return
    with pytest.raises(ValueError) as info:
        schedules.build(name, _sgd(), 10)
    _assert_clear(str(info.value), repr(name), "valid schedules", *schedules.names())


@FAST
@given(name=st.sampled_from(schedules.names()), key=IDENTIFIERS)
def test_schedules_reject_unknown_arguments_listing_valid_ones(name: str, key: str) -> None:
    allowed = _schedule_args(name)
    if key in allowed:
        return
    with pytest.raises(ValueError) as info:
        schedules.build(name, _sgd(), 10, **{key: 1})
    _assert_clear(str(info.value), key, repr(name), "valid:", *allowed)


NOT_POSITIVE = st.one_of(st.floats(max_value=0.0), st.just(NAN))


@FAST
@given(
    case=st.one_of(
        st.tuples(
            st.just(("warmup_cosine", "warmup_fraction")),
            st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0), st.just(NAN)),
        ),
        st.tuples(st.just(("warmup_cosine", "warmup_start_factor")), NOT_POSITIVE),
        st.tuples(st.just(("exponential", "final_factor")), NOT_POSITIVE),
    ),
    total_steps=st.integers(1, 1000),
)
def test_schedule_arguments_it_validates_reject_bad_values(case: Any, total_steps: int) -> None:
    (name, arg), value = case
    with pytest.raises(ValueError) as info:
        schedules.build(name, _sgd(), total_steps, **{arg: value})
    _assert_clear(str(info.value), arg)


@FAST
@given(
    fraction=st.floats(0.0, 1.0, exclude_min=True, exclude_max=True),
    start=st.floats(1e-300, 1.0),  # subnormal ones: test_subnormal_warmup_start_factor_is_rejected
    final=st.floats(1e-6, 1.0),
    total_steps=st.integers(1, 1000),
)
def test_schedule_arguments_in_range_work(
    fraction: float, start: float, final: float, total_steps: int
) -> None:
    for name, kwargs in (
        ("warmup_cosine", {"warmup_fraction": fraction, "warmup_start_factor": start}),
        ("exponential", {"final_factor": final}),
    ):
        optimizer = _sgd()
        scheduler = schedules.build(name, optimizer, total_steps, **kwargs)
        for lr in _run_schedule(scheduler, optimizer, min(total_steps, 3)):
            assert math.isfinite(lr) and lr >= 0, (name, kwargs, lr)


@FEW
@given(start=st.floats(min_value=1.0, exclude_min=True), total_steps=st.integers(1, 1000))
@example(start=1.5, total_steps=10)
def test_warmup_start_factor_above_one_names_the_argument(start: float, total_steps: int) -> None:
    """> 1 (inf included) is rejected by torch's LinearLR with a message that doesn't name it."""
    with pytest.raises(ValueError) as info:
        schedules.build("warmup_cosine", _sgd(), total_steps, warmup_start_factor=start)
    _assert_clear(str(info.value), "warmup_start_factor")


@FEW
@given(start=st.floats(5e-324, 1e-312), total_steps=st.integers(1, 100))
@example(start=1e-320, total_steps=100)
def test_subnormal_warmup_start_factor_is_rejected(start: float, total_steps: int) -> None:
    """A start factor so small that 1 / (warmup_steps * start) overflows passes `> 0` and makes the
    first warmup step's LR inf (or NaN where base_lr * start rounds to 0)."""
    try:
        optimizer = _sgd()
        scheduler = schedules.build("warmup_cosine", optimizer, total_steps, warmup_start_factor=start)
    except ValueError as error:
        _assert_clear(str(error), "warmup_start_factor")
        return
    for lr in _run_schedule(scheduler, optimizer, min(total_steps, 3)):
        assert math.isfinite(lr), (start, total_steps, lr)


@FEW
@given(total_steps=st.integers(1, 1000))
@example(total_steps=10)
def test_infinite_final_factor_is_rejected(total_steps: int) -> None:
    """final_factor=inf passes `> 0` and makes the LR infinite after the first step."""
    with pytest.raises(ValueError) as info:
        schedules.build("exponential", _sgd(), total_steps, final_factor=INF)
    _assert_clear(str(info.value), "final_factor")


# --- the sweep's argument parser ------------------------------------------------------------------

INT_FLAGS = ("--num-samples", "--seeds", "--max-epochs", "--batch-size", "--workers-per-trial")
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
KNOWN_FLAGS = [
    option
    for action in cli.build_parser("t", "t", adam_vs_sgd.DEFAULTS)._actions
    for option in action.option_strings
]


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties") / "results"


def _parse(storage: Path, argv: list[str]) -> StudySpec:
    return cli.parse([*argv, "--storage-path", str(storage)], "test", "test", adam_vs_sgd.DEFAULTS)


def _rejected(storage: Path, argv: list[str]) -> str:
    with pytest.raises(OptsweepError) as info:
        _parse(storage, argv)
    return str(info.value)


def _field(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


@st.composite
def csv_text(draw: st.DrawFn, items: list[str]) -> str:
    """`items` as a user might type them: any case, spaces around, stray empty items."""
    spelled = [draw(st.sampled_from([i, i.upper(), i.title(), f" {i} "])) for i in items]
    return ",".join(spelled) + draw(st.sampled_from(["", ",", ", ,"]))


@st.composite
def valid_command_line(draw: st.DrawFn) -> tuple[list[str], dict[str, Any]]:
    """(argv, the StudySpec fields it sets). Everything here must parse."""
    argv: list[str] = []
    expected: dict[str, Any] = {}

    def give(flag: str, text: str, value: Any) -> None:
        argv.append(f"{flag}={text}")
        expected[_field(flag)] = value

    chosen = list(adam_vs_sgd.DEFAULTS.optimizers)
    if draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(optimizers.names()), min_size=1, unique=True))
        give("--optimizers", draw(csv_text(chosen)), tuple(chosen))
    if draw(st.booleans()):
        chosen_schedules = draw(st.lists(st.sampled_from(schedules.names()), min_size=1, unique=True))
        give("--schedules", draw(csv_text(chosen_schedules)), tuple(chosen_schedules))
    for flag in (*INT_FLAGS, "--max-concurrent"):
        if draw(st.booleans()):
            # Search seeds stop below the confirmation seeds (CONFIRM_SEED_BASE): they must stay disjoint.
            value = draw(st.integers(1, CONFIRM_SEED_BASE if flag == "--seeds" else 10**6))
            give(flag, draw(st.sampled_from([str(value), f"+{value}", f" {value} "])), value)
    if draw(st.booleans()):
        value = draw(st.integers(0, 2**32 - 1))
        give("--search-seed", str(value), value)
    for flag, choices in (("--scheduler", ("asha", "fifo")), ("--search", ("random", "optuna"))):
        if draw(st.booleans()):
            value = draw(st.sampled_from(choices))
            give(flag, value, value)
    # --dataset and --model are shorthands for the task and its model argument.
    if draw(st.booleans()):
        dataset = draw(st.sampled_from(data.dataset_names()))
        argv.append(f"--dataset={dataset}")
        expected["task"] = dataset
    if draw(st.booleans()):
        model = draw(st.sampled_from(models.model_names()))
        argv.append(f"--model={model}")
        expected["task_args"] = {"model": model}
    if draw(st.booleans()):
        value = draw(st.floats(0.01, 64.0))
        give("--cpus-per-worker", repr(value), value)
    if draw(st.booleans()):
        give("--address", "auto", "auto")
        if draw(st.booleans()):
            value = draw(st.floats(0.0, 8.0))
            give("--gpus-per-worker", repr(value), value)
    elif draw(st.booleans()):
        give("--gpus-per-worker", "0", 0.0)
    lows = [spaces.SPACES[o]["lr"].low for o in chosen]  # type: ignore[attr-defined]
    highs = [spaces.SPACES[o]["lr"].high for o in chosen]  # type: ignore[attr-defined]
    mode = draw(st.sampled_from(["none", "both", "min", "max"]))
    if mode == "both":
        low = draw(st.floats(1e-8, 10.0))
        give("--lr-min", repr(low), low)
        high = draw(st.floats(low, 10.0))
        give("--lr-max", repr(high), high)
    elif mode == "min":
        low = draw(st.floats(1e-8, min(highs)))
        give("--lr-min", repr(low), low)
    elif mode == "max":
        high = draw(st.floats(max(lows), 100.0))
        give("--lr-max", repr(high), high)
    if draw(st.booleans()):
        name = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True))
        give("--name", name, name)
    if draw(st.booleans()):
        argv.append("--smoke")
    return argv, expected


@FAST
@given(case=valid_command_line())
def test_cli_accepts_valid_command_lines(storage: Path, case: tuple[list[str], dict[str, Any]]) -> None:
    """Parses to exactly the values given, and what the sweep builds from them does not crash."""
    argv, expected = case
    args = _parse(storage, argv)
    for field, value in expected.items():
        assert getattr(args, field) == value, field
    assert args.storage_path == os.path.abspath(storage)
    for optimizer in args.optimizers:
        space = spaces.space_for(optimizer, lr_range=args.lr_range(optimizer), schedules=args.schedules)
        low, high = space.params["lr"].low, space.params["lr"].high  # type: ignore[attr-defined]
        for config in spaces.sample_configurations(space, 2, args.search_seed):
            assert low * (1 - 1e-9) <= config["lr"] <= high * (1 + 1e-9)
            hparams = {k: v for k, v in config.items() if k != "schedule"}
            built = optimizers.build(optimizer, [torch.nn.Parameter(torch.ones(2))], **hparams)
            schedules.build(config["schedule"], built, (args.max_epochs or 20) * 3)
    if args.search == "optuna":
        optuna.samplers.TPESampler(seed=args.search_seed)


# Invalid command lines: (argv, what the one-line message must contain).


@st.composite
def ints_below_one(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    flag = draw(st.sampled_from((*INT_FLAGS, "--max-concurrent")))
    value = draw(st.integers(-(10**12), 0))
    return [f"{flag}={value}"], (f"{flag} {value} is invalid", ">= 1")


def _unparsable(convert: Any) -> Any:
    def check(text: str) -> bool:
        try:
            convert(text)
        except ValueError:
            return True
        return False

    return check


@st.composite
def non_numbers(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    float_flags = ("--lr-min", "--lr-max", "--cpus-per-worker", "--gpus-per-worker")
    flag = draw(st.sampled_from((*INT_FLAGS, "--max-concurrent", "--search-seed", *float_flags)))
    is_int = flag not in float_flags
    kind = "int" if is_int else "float"
    text = draw(
        st.one_of(st.text(max_size=8), st.floats(allow_infinity=False, allow_nan=False).map(repr)).filter(
            _unparsable(int if is_int else float)
        )
    )
    return [f"{flag}={text}"], (f"argument {flag}", f"invalid {kind} value", repr(text))


@st.composite
def bad_floats(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    flag = draw(st.sampled_from(["--cpus-per-worker", "--gpus-per-worker", "--lr-min", "--lr-max"]))
    if flag == "--cpus-per-worker":
        value, rule = draw(st.one_of(st.floats(max_value=0.0), st.just(NAN))), "> 0"
    elif flag == "--gpus-per-worker":
        value, rule = draw(st.one_of(st.floats(max_value=-5e-324), st.just(NAN))), ">= 0"
    else:
        value = draw(st.one_of(st.floats(max_value=0.0), st.sampled_from([NAN, INF])))
        rule = "finite number > 0"
    return [f"{flag}={value!r}"], (f"{flag} {value:g} is invalid", rule)


@st.composite
def too_many_local_gpus(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    available = torch.cuda.device_count()
    value = draw(st.floats(min_value=float(available), exclude_min=True, max_value=1e6))
    return [f"--gpus-per-worker={value!r}"], ("--gpus-per-worker", "GPUs")


@st.composite
def lr_min_above_lr_max(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    high = draw(st.floats(1e-6, 10.0))
    low = high * (1 + draw(st.floats(1e-3, 100.0)))
    return [f"--lr-min={low!r}", f"--lr-max={high!r}"], ("--lr-min", "--lr-max", "lr-min <= lr-max")


@st.composite
def bad_lists(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    flag, kind, valid = draw(
        st.sampled_from(
            [
                ("--optimizers", "optimizer", optimizers.names()),
                ("--schedules", "schedule", schedules.names()),
            ]
        )
    )
    problem = draw(st.sampled_from(["unknown", "duplicate", "empty"]))
    if problem == "empty":
        return [f"{flag}={draw(st.text(alphabet=' ,', max_size=5))}"], (flag, "is empty", *valid)
    if problem == "duplicate":
        items = draw(st.lists(st.sampled_from(valid), min_size=1, unique=True))
        twice = draw(st.sampled_from(items))
        items.insert(draw(st.integers(0, len(items))), twice)
        return [f"{flag}={draw(csv_text(items))}"], (flag, twice, "more than once")
    unknown = draw(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789_-. ", min_size=1, max_size=10).filter(
            lambda s: s.strip() and s.strip().lower() not in valid
        )
    )
    items = draw(st.lists(st.sampled_from(valid), unique=True))
    items.insert(draw(st.integers(0, len(items))), unknown)
    return [f"{flag}={','.join(items)}"], (f"unknown {kind} {unknown.strip().lower()!r} in {flag}", "valid:")


@st.composite
def bad_names(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    name = draw(st.text(max_size=12).filter(lambda s: not re.fullmatch(NAME_PATTERN, s)))
    return [f"--name={name}"], (f"--name {name!r} is invalid",)


@st.composite
def unknown_choices(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    flag, valid = draw(
        st.sampled_from(
            [
                ("--dataset", data.dataset_names()),
                ("--model", models.model_names()),
                ("--scheduler", ["asha", "fifo"]),
                ("--search", ["random", "grid", "optuna"]),
            ]
        )
    )
    value = draw(st.text(max_size=10).filter(lambda s: s not in valid))
    if flag in ("--scheduler", "--search"):  # the spec's choices
        return [f"{flag}={value}"], (f"{flag} {value!r} is invalid: it must be", " or ")
    return [f"{flag}={value}"], (f"unknown {_field(flag)} {value!r} in {flag}", "valid:")


@st.composite
def unknown_flags(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    flag = "--" + draw(st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True))
    if any(known.startswith(flag) for known in KNOWN_FLAGS):  # an abbreviation of a real flag
        flag += "-x9"
    return [flag], ("unrecognized arguments", flag)


REJECTED = [
    ints_below_one(),
    non_numbers(),
    bad_floats(),
    too_many_local_gpus(),
    lr_min_above_lr_max(),
    bad_lists(),
    bad_names(),
    unknown_choices(),
    unknown_flags(),
]


@FAST
@given(case=st.one_of(*REJECTED))
def test_cli_rejects_invalid_values_in_one_line(
    storage: Path, case: tuple[list[str], tuple[str, ...]]
) -> None:
    argv, needles = case
    _assert_clear(_rejected(storage, argv), *needles)


@FEW
@given(case=st.one_of(*REJECTED), valid=valid_command_line())
def test_cli_rejects_invalid_values_among_valid_ones(
    storage: Path, case: tuple[list[str], tuple[str, ...]], valid: tuple[list[str], dict[str, Any]]
) -> None:
    """The bad value is still found (and named) when valid flags surround it."""
    argv, needles = case
    flags = {a.split("=")[0] for a in argv}
    others = [a for a in valid[0] if a.split("=")[0] not in flags and a != "--smoke"]
    if argv[0].startswith(("--lr-", "--optimizers", "--gpus")):  # they interact with other flags
        others = [a for a in others if not a.startswith(("--lr-", "--optimizers", "--address", "--gpus"))]
    message = _rejected(storage, [*others, *argv])
    _assert_clear(message, *needles)


@FEW
@given(
    high=st.floats(1e-6, 10.0),
    excess=st.one_of(st.floats(1e-12, 1e-7), st.floats(1e-3, 100.0)),
    only_min=st.booleans(),
)
@example(high=0.1, excess=1e-8, only_min=False)
def test_cli_lr_range_error_shows_values_that_contradict(
    storage: Path, high: float, excess: float, only_min: bool
) -> None:
    """The message must show an lr-min visibly greater than the lr-max (enough digits), not
    "--lr-min 0.1 is greater than --lr-max 0.1"."""
    if only_min:  # against SGD's default upper end
        high = spaces.SPACES["sgd"]["lr"].high  # type: ignore[attr-defined]
    low = high * (1 + excess)
    if not low > high:
        return
    argv = (
        ["--optimizers=sgd", f"--lr-min={low!r}"] if only_min else [f"--lr-min={low!r}", f"--lr-max={high!r}"]
    )
    message = _rejected(storage, argv)
    match = re.search(r"--lr-min (\S+) is greater than --lr-max ([^\s:]+)", message)
    assert match, message
    assert float(match.group(1)) > float(match.group(2)), message


@FEW
@given(
    flag=st.sampled_from(["--cpus-per-worker", "--gpus-per-worker"]),
    spelling=st.sampled_from(["inf", "1e999"]),
)
@example(flag="--cpus-per-worker", spelling="inf")
def test_cli_rejects_infinite_resources(storage: Path, flag: str, spelling: str) -> None:
    """--cpus-per-worker inf passes "> 0", and --gpus-per-worker inf passes ">= 0" on a cluster (the
    local-GPU check is skipped with --address): Ray cannot reserve infinite resources."""
    argv = [f"{flag}={spelling}"] + (["--address=auto"] if flag == "--gpus-per-worker" else [])
    _assert_clear(_rejected(storage, argv), flag)


@FEW
@given(
    name=st.tuples(
        st.sampled_from("abcXYZ019"),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=255, max_size=400),
    ).map("".join)
)
@example(name="a" * 256)
def test_cli_rejects_names_too_long_for_a_directory(storage: Path, name: str) -> None:
    """<storage-path>/<name> must be creatable: a name over NAME_MAX (255) passes the character check
    and then fails in study._exclusive with an OSError traceback."""
    assert len(name) > os.pathconf(storage.parent, "PC_NAME_MAX")
    _assert_clear(_rejected(storage, [f"--name={name}"]), "--name")


@FEW
@given(
    case=st.one_of(
        st.tuples(st.integers(-(2**40), -1), st.sampled_from(["random", "optuna"])),
        st.tuples(st.integers(2**32, 2**40), st.just("optuna")),
    )
)
@example(case=(-1, "random"))
def test_cli_rejects_search_seeds_the_searchers_cannot_use(storage: Path, case: tuple[int, str]) -> None:
    """numpy.random.default_rng (random search) refuses negative seeds and Optuna's TPESampler
    refuses seeds outside [0, 2**32 - 1]; both only fail after Ray has started."""
    seed, search = case
    _assert_clear(_rejected(storage, [f"--search-seed={seed}", f"--search={search}"]), "--search-seed")


def test_cli_negative_float_in_scientific_notation_names_the_flag(storage: Path) -> None:
    """argparse takes "-1e-3" for an option (its negative-number pattern has no exponent)."""
    with pytest.raises(OptsweepError) as info:
        cli.parse(["--lr-min", "-1e-3", "--storage-path", str(storage)], "t", "t", adam_vs_sgd.DEFAULTS)
    _assert_clear(str(info.value), "--lr-min")


# --- adam_vs_sgd.main: exit 2, one line on stderr, no Ray -------------------------------------------

_main_runs = itertools.count()


@FEW
@given(case=st.one_of(*REJECTED))
def test_main_rejects_bad_input_with_one_line_before_ray(
    storage: Path, case: tuple[list[str], tuple[str, ...]]
) -> None:
    argv, _ = case
    target = storage.parent / f"main-{next(_main_runs)}"
    full = [*argv, "--storage-path", str(target)]
    # Only input that parse rejects reaches main: valid input would start a real sweep.
    with pytest.raises(OptsweepError) as info:
        cli.parse(full, "t", "t", adam_vs_sgd.DEFAULTS)
    assert not target.exists()
    ray_was_up = ray.is_initialized()
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.object(study, "_connect_ray", side_effect=AssertionError("main started Ray")),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = adam_vs_sgd.main(full)
    assert code == 2
    assert out.getvalue() == ""
    assert err.getvalue() == f"error: {info.value}\n"
    assert ray.is_initialized() == ray_was_up
    assert not target.exists()  # nothing written
