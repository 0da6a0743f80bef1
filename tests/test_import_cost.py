"""What a trial process imports before it trains: every Tune trial process (and every confirmation stage's
new one) pays for its imports, seconds each on a small machine. torchvision (which imports torch's
compiler, torch._dynamo), scikit-learn and torch._dynamo itself are imported only where used."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY_AND_OPTIONAL = ("torchvision", "sklearn", "torch._dynamo", "mlflow", "wandb", "matplotlib")


@pytest.mark.timeout(120)
def test_a_trial_process_imports_no_heavy_optional_module() -> None:
    probe = (
        "import sys, trainables.trial, trainables.fused_trial; "
        f"print(' '.join(m for m in {HEAVY_AND_OPTIONAL!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=110)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == [], loaded.stdout
