"""The README's "Bring your own model" example, verbatim, as a new user runs it: saved as a file in an
empty directory outside the repo and run with the installed project (issue 10). The README stays a
front door (issue 21): short, its set-up commands the ones CI runs; the reference lives in docs/
(tests/test_docs.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = "<!-- byo-example"
# About 200 lines: what the product is, set-up, the headline study, bring your own model, links.
FRONT_DOOR_LINES = 250


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


def test_the_readme_stays_a_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= FRONT_DOOR_LINES, "move reference material to docs/ (the MkDocs site)"
    headings = [line for line in lines if line.startswith("## ")]
    for section in ("## The headline study", "## Bring your own model", "## Documentation"):
        assert any(h.startswith(section) for h in headings), section


def test_the_set_up_commands_are_the_ones_ci_runs() -> None:
    """.ci/run installs and tests with the README's quick start, verbatim."""
    quick_start = re.search(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)
    assert quick_start is not None
    commands = [line.split("  #")[0].strip() for line in quick_start.group(1).splitlines()]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    set_up = [c for c in commands if c.startswith("pip ")]
    assert set_up == ["pip install -e .", 'pip install -e ".[test]" && pytest']
    assert all(c in ci for c in set_up)
