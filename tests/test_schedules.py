"""LR schedules by name: built from torch.optim.lr_scheduler, checked against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from optsweep import optimizers
from optsweep.optimizers import schedules

BASE_LR = 0.1
TOTAL = 100


def _lrs(name: str, total: int = TOTAL, **kwargs: object) -> list[float]:
    """The LR in effect at each of `total` optimizer steps."""
    p = torch.zeros(1, requires_grad=True)
    opt = optimizers.SGD([p], lr=BASE_LR, momentum=0.9)
    scheduler = schedules.build(name, opt, total, **kwargs)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        scheduler.step()
    return lrs


def test_names() -> None:
    assert schedules.names() == [
        "constant",
        "step",
        "multistep",
        "exponential",
        "cosine",
        "warmup_cosine",
        "onecycle",
        "plateau",
    ]


def test_constant() -> None:
    assert _lrs("constant") == [BASE_LR] * TOTAL


def test_step_decays_by_gamma_every_third_of_the_run() -> None:
    lrs = _lrs("step")
    assert lrs[0] == lrs[32] == BASE_LR
    assert lrs[33] == pytest.approx(BASE_LR * 0.1)
    assert lrs[66] == pytest.approx(BASE_LR * 0.01)


def test_multistep_at_half_and_three_quarters() -> None:
    lrs = _lrs("multistep")
    assert lrs[49] == BASE_LR
    assert lrs[50] == pytest.approx(BASE_LR * 0.1)
    assert lrs[75] == pytest.approx(BASE_LR * 0.01)


def test_exponential_reaches_final_factor_at_the_end() -> None:
    lrs = _lrs("exponential", final_factor=0.01)
    assert lrs[0] == BASE_LR
    expected = [BASE_LR * 0.01 ** (t / TOTAL) for t in range(TOTAL)]
    assert lrs == pytest.approx(expected, rel=1e-9)


def test_cosine_closed_form() -> None:
    expected = [BASE_LR * (1 + math.cos(math.pi * t / TOTAL)) / 2 for t in range(TOTAL)]
    assert _lrs("cosine") == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_warmup_then_cosine() -> None:
    lrs = _lrs("warmup_cosine", warmup_fraction=0.1, warmup_start_factor=0.01)
    warmup = 10
    expected_warmup = [BASE_LR * (0.01 + (1 - 0.01) * t / warmup) for t in range(warmup)]
    assert lrs[:warmup] == pytest.approx(expected_warmup, rel=1e-9)
    expected_decay = [
        BASE_LR * (1 + math.cos(math.pi * t / (TOTAL - warmup))) / 2 for t in range(TOTAL - warmup)
    ]
    assert lrs[warmup:] == pytest.approx(expected_decay, rel=1e-6, abs=1e-12)
    assert max(lrs) == pytest.approx(BASE_LR)


def test_onecycle_peaks_at_the_base_lr_and_keeps_momentum() -> None:
    p = torch.zeros(1, requires_grad=True)
    opt = optimizers.SGD([p], lr=BASE_LR, momentum=0.9)
    scheduler = schedules.build("onecycle", opt, TOTAL)
    lrs = []
    for _ in range(TOTAL):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(BASE_LR / 25)
    assert max(lrs) == pytest.approx(BASE_LR)
    assert lrs.index(max(lrs)) == pytest.approx(0.3 * TOTAL, abs=1)
    assert opt.param_groups[0]["momentum"] == 0.9  # the swept momentum is not overridden


def test_plateau_is_stepped_with_a_metric() -> None:
    p = torch.zeros(1, requires_grad=True)
    opt = optimizers.Adam([p], lr=BASE_LR)
    scheduler = schedules.build("plateau", opt, TOTAL, patience=1, factor=0.5)
    assert schedules.needs_metric(scheduler)
    assert not schedules.needs_metric(schedules.build("cosine", opt, TOTAL))
    for accuracy in (0.5, 0.6, 0.6, 0.6):  # two epochs without improvement with patience 1 -> halve
        scheduler.step(accuracy)
    assert opt.param_groups[0]["lr"] == pytest.approx(BASE_LR / 2)


def test_bad_inputs_are_clear_errors() -> None:
    p = torch.zeros(1, requires_grad=True)
    opt = optimizers.SGD([p], lr=BASE_LR)
    with pytest.raises(ValueError, match="Unknown schedule 'cosin'.*constant, step"):
        schedules.build("cosin", opt, TOTAL)
    with pytest.raises(ValueError, match="total_steps.*>= 1"):
        schedules.build("cosine", opt, 0)
    with pytest.raises(ValueError, match="Unknown argument.*t_max.*valid: eta_min"):
        schedules.build("cosine", opt, TOTAL, t_max=5)
    with pytest.raises(ValueError, match="warmup_fraction"):
        schedules.build("warmup_cosine", opt, TOTAL, warmup_fraction=1.5)
