"""LAMB and LARS have no torch reference: check them against the papers' formulas, written here
independently in plain NumPy float64, and against steps computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from optimizer_cases import clone_problem, make_problem, run_steps

from optsweep import optimizers


def lamb_reference(
    problem, steps: int, lr: float, betas, eps: float, weight_decay: float
) -> list[np.ndarray]:
    """You et al. 2019, Algorithm 2, per parameter tensor ("layer"), phi = identity."""
    b1, b2 = betas
    state = [(np.zeros(p.shape), np.zeros(p.shape)) for p in problem.params]
    for t in range(1, steps + 1):
        for p in problem.params:
            p.grad = None
        problem.loss().backward()
        for i, p in enumerate(problem.params):
            x, g = p.detach().numpy().copy(), p.grad.numpy()
            m, v = state[i]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            state[i] = (m, v)
            r = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
            u = r + weight_decay * x
            x_norm, u_norm = np.linalg.norm(x), np.linalg.norm(u)
            ratio = x_norm / u_norm if x_norm > 0 and u_norm > 0 else 1.0
            with torch.no_grad():
                p.copy_(torch.from_numpy(x - lr * ratio * u))
    return [p.detach().numpy().copy() for p in problem.params]


def lars_reference(
    problem, steps: int, lr: float, momentum: float, eta: float, eps: float, weight_decay: float
):
    """You, Gitman & Ginsburg 2017, Algorithm 1 with a constant global LR: v = m*v + lr*local_lr*(g + wd*w);
    w = w - v."""
    velocity = [np.zeros(p.shape) for p in problem.params]
    for _ in range(steps):
        for p in problem.params:
            p.grad = None
        problem.loss().backward()
        for i, p in enumerate(problem.params):
            w, g = p.detach().numpy().copy(), p.grad.numpy()
            w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
            local_lr = (
                eta * w_norm / (g_norm + weight_decay * w_norm + eps) if w_norm > 0 and g_norm > 0 else 1.0
            )
            velocity[i] = momentum * velocity[i] + lr * local_lr * (g + weight_decay * w)
            with torch.no_grad():
                p.copy_(torch.from_numpy(w - velocity[i]))
    return [p.detach().numpy().copy() for p in problem.params]


LAMB_CASES = [
    {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.0},
    {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": 0.1},
]
LARS_CASES = [
    {"lr": 1.0, "momentum": 0.9, "trust_coefficient": 1e-3, "eps": 1e-8, "weight_decay": 0.0},
    {"lr": 5.0, "momentum": 0.5, "trust_coefficient": 2e-2, "eps": 1e-6, "weight_decay": 5e-3},
    {"lr": 2.0, "momentum": 0.0, "trust_coefficient": 1e-2, "eps": 1e-8, "weight_decay": 1e-3},
]


# The compiled step is checked in float64, the sharper test (float32 compiles are covered for Adam/SGD).
MODES = [
    pytest.param(torch.float64, False, id="float64-eager"),
    pytest.param(torch.float32, False, id="float32-eager"),
    pytest.param(torch.float64, True, id="float64-compiled"),
]


def _assert_matches(actual: list[torch.Tensor], expected: list[np.ndarray], dtype: torch.dtype) -> None:
    rtol = 1e-9 if dtype == torch.float64 else 3e-5
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(got.double().numpy(), want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize(("dtype", "fused"), MODES)
@pytest.mark.parametrize("kwargs", LAMB_CASES, ids=["plain", "weight_decay"])
def test_lamb_matches_paper_formula(kwargs: dict, dtype: torch.dtype, fused: bool) -> None:
    reference = make_problem(torch.float64, complex_param=False)
    problem = make_problem(dtype, complex_param=False)
    expected = lamb_reference(reference, 25, **kwargs)
    actual = run_steps(optimizers.LAMB(problem.params, **kwargs, fused=fused), problem, 25)[-1]
    _assert_matches(actual, expected, dtype)


@pytest.mark.parametrize(("dtype", "fused"), MODES)
@pytest.mark.parametrize("kwargs", LARS_CASES, ids=["paper", "weight_decay", "no_momentum"])
def test_lars_matches_paper_formula(kwargs: dict, dtype: torch.dtype, fused: bool) -> None:
    reference = make_problem(torch.float64, complex_param=False)
    problem = make_problem(dtype, complex_param=False)
    eta = kwargs["trust_coefficient"]
    expected = lars_reference(
        reference, 25, kwargs["lr"], kwargs["momentum"], eta, kwargs["eps"], kwargs["weight_decay"]
    )
    actual = run_steps(optimizers.LARS(problem.params, **kwargs, fused=fused), problem, 25)[-1]
    _assert_matches(actual, expected, dtype)


def _step(opt: torch.optim.Optimizer, p: torch.Tensor, grad: list[float]) -> list[float]:
    p.grad = torch.tensor(grad, dtype=torch.float64)
    opt.step()
    return p.detach().tolist()


def test_lars_two_steps_by_hand() -> None:
    w = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    opt = optimizers.LARS([w], lr=1.0, momentum=0.9, trust_coefficient=1e-3, eps=0.0)
    # ||w|| = 5, ||g|| = 1: local lr 5e-3, velocity [0.003, 0.004]
    assert _step(opt, w, [0.6, 0.8]) == pytest.approx([2.997, 3.996], abs=1e-15)
    # ||w|| = 4.995, ||g|| = 1: velocity 0.9*[0.003, 0.004] + 4.995e-3*[0, 1] = [0.0027, 0.008595]
    assert _step(opt, w, [0.0, 1.0]) == pytest.approx([2.9943, 3.987405], abs=1e-15)


def test_lamb_first_step_by_hand() -> None:
    w = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    opt = optimizers.LAMB([w], lr=0.1, eps=0.0)
    # m_hat = g, v_hat = g^2, r = sign(g) = [1, -1]; trust ratio ||w|| / ||r|| = 5 / sqrt(2)
    shift = 0.1 * 5 / math.sqrt(2)
    assert _step(opt, w, [0.6, -0.8]) == pytest.approx([3 - shift, 4 + shift], abs=1e-15)

    w2 = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    opt2 = optimizers.LAMB([w2], lr=0.1, eps=0.0, weight_decay=0.1)
    u = [1 + 0.3, -1 + 0.4]  # r + wd * w
    ratio = 5 / math.hypot(*u)
    assert _step(opt2, w2, [0.6, -0.8]) == pytest.approx(
        [3 - 0.1 * ratio * u[0], 4 - 0.1 * ratio * u[1]], abs=1e-15
    )


def test_trust_ratio_is_one_for_zero_weights_or_gradients() -> None:
    zero = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    lamb = optimizers.LAMB([zero], lr=0.1, eps=0.0)
    assert _step(lamb, zero, [0.6, -0.8]) == pytest.approx([-0.1, 0.1], abs=1e-15)

    zero = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    lars = optimizers.LARS([zero], lr=0.5, momentum=0.0)
    assert _step(lars, zero, [0.6, -0.8]) == pytest.approx([-0.3, 0.4], abs=1e-15)

    w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    lars = optimizers.LARS([w], lr=0.5, momentum=0.0, weight_decay=0.1)
    # zero gradient: ratio 1, the step is the weight decay alone
    assert _step(lars, w, [0.0, 0.0]) == pytest.approx([1 - 0.05, 2 - 0.1], abs=1e-15)


@pytest.mark.parametrize("name", ["lamb", "lars"])
def test_update_size_does_not_depend_on_gradient_scale(name: str) -> None:
    """The point of layer-wise trust ratios: the step size is set by ||w||, not by ||g||."""
    results = []
    for scale in (1.0, 1e4):
        problem = make_problem(torch.float64, complex_param=False)
        opt = optimizers.build(name, problem.params, lr=0.1, eps=0.0)
        for p in problem.params:
            p.grad = torch.sin(torch.arange(1, p.numel() + 1, dtype=torch.float64)).reshape(p.shape) * scale
        opt.step()
        results.append([p.detach().clone() for p in problem.params])
    for small, large in zip(*results, strict=True):
        torch.testing.assert_close(small, large, rtol=1e-6, atol=1e-12)


def test_state_dict_layout() -> None:
    problem = make_problem(torch.float32, complex_param=False)
    lamb = optimizers.LAMB(problem.params)
    run_steps(lamb, problem, 1)
    for p in problem.params:
        assert set(lamb.state[p]) == {"step", "exp_avg", "exp_avg_sq"}
    lars_problem = clone_problem(problem)
    lars = optimizers.LARS(lars_problem.params)
    run_steps(lars, lars_problem, 1)
    for p in lars_problem.params:
        assert set(lars.state[p]) == {"momentum_buffer"}
