"""The README's "Bring your own model" example, verbatim, as a new user runs it: saved as a file in an
empty directory outside the repo and run with the installed project (issue 10)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- byo-example"


def byo_example() -> str:
    text = README.read_text()
    assert MARKER in text, "the README lost its bring-your-own-model example"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert block is not None
    return block.group(1)


def test_the_example_is_complete_code() -> None:
    compile(byo_example(), "compare_optimizers.py", "exec")  # a syntax slip fails here in milliseconds


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_bring_your_own_model_example_runs_verbatim_outside_the_repo(tmp_path: Path) -> None:
    (tmp_path / "compare_optimizers.py").write_text(byo_example())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, "compare_optimizers.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = tmp_path / "results" / "my-study" / "report"
    summary = pd.read_csv(report / "summary.csv")
    assert set(summary["optimizer"]) == {"adam", "sgd"}
    assert "test_mse_mean" in summary.columns
    assert (report / "report.md").exists()
    assert "adam" in done.stdout and "sgd" in done.stdout  # the verdict and the table were printed
