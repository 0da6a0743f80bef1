"""benchmarks/fused_trials.py runs (its --quick mode) and measures what it says: no timing asserted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "fused_trials.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fused_trials", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_members_differ_in_lr_and_seed_and_share_the_rest(bench: ModuleType) -> None:
    configs = bench.configs(4, "mlp", 2)
    assert len({c.hparams["lr"] for c in configs}) == 4
    assert [c.seed for c in configs] == [0, 1, 2, 3]
    low, high = bench.LR_RANGE
    assert all(low <= c.hparams["lr"] <= high for c in configs)
    assert {(c.optimizer, c.max_epochs, c.task_args["model"]) for c in configs} == {("adam", 2, "mlp")}


def test_quick_run_prints_a_row_per_k_and_the_headline(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    results = bench.main(["--quick", "--device", "cpu"])
    assert sorted(results) == [1, 4]
    for measured in results.values():
        for mode in ("fused", "loop", "plain", "fused_cpu", "loop_cpu", "plain_cpu"):
            assert measured[mode] > 0
        assert measured["worst"] < 1e-4  # the fused members' last val metric is the loop's
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("fused throughput at K=4: ")
    assert [line.split()[0] for line in lines[-3:-1]] == ["1", "4"]
