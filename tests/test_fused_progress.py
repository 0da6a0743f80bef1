"""The progress line counts a fused group (one Tune trial) as its members."""

from __future__ import annotations

import io

from test_progress import _Trial

from optsweep.sweeps.monitoring.progress import ProgressLine


def test_a_fused_group_counts_as_its_members() -> None:
    members = [
        {"__configuration": c, "seed": s, "lr": lr, "schedule": "constant"}
        for c, lr in enumerate((1e-3, 3.0))
        for s in range(2)
    ]
    group = _Trial("g_00000", "RUNNING", {}, {"optimizer": "adam", "settings": {}, "__members": members})
    out = io.StringIO()
    progress = ProgressLine("adam", total=6, max_epochs=4, stream=out)
    # Tune hands callbacks flattened results; epoch 1: member 3 diverges; epoch 2: member 2 left (stopped).
    epoch1 = {"epoch": 1, "best_val_acc": 0.8}
    for k, (best, diverged) in enumerate([(0.5, False), (0.6, False), (0.8, False), (0.1, True)]):
        metrics = {"epoch": 1, "best_val_acc": best, "diverged": diverged}
        epoch1 |= {f"members/{k}/{key}": value for key, value in metrics.items()}
    progress.on_trial_result(1, [group], group, epoch1)
    epoch2 = {"epoch": 2, "members": {str(k): {"epoch": 2, "best_val_acc": 0.7 + k / 10} for k in (0, 1)}}
    group.last_result = epoch2
    progress.on_trial_result(2, [group], group, epoch2)
    progress.on_experiment_end([group])
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("[adam] 2/6 done (0 completed, 1 stopped, 1 diverged), 2 running, 2 pending; ")
    assert "best val_acc 0.8000 (adam-c02 seed 0: lr=3" in line
