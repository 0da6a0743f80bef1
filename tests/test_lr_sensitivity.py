"""The DeepOBS-protocol study (sweeps/lr_sensitivity.py, analysis/sensitivity.py): the good-lr width
estimator on hand-made curves with known widths, diverged points excluded and marked, the DeepOBS-style
final table on known seeds, the study's grid and flags, the smoke run end to end and its notebook."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import notebook_runner
import numpy as np
import pandas as pd
import pytest

from optsweep.analysis import sensitivity
from optsweep.sweeps import lr_sensitivity, study_file
from optsweep.vocabulary import COMPLETED, CONFIRM, DIVERGED, ERROR, SEARCH, Target

GRID = np.logspace(-5, 2, 36)  # DeepOBS's grid: 0.2 decades apart
X = np.log10(GRID)
ACC = Target("acc", "max")
LOSS = Target("loss", "min")
NOTEBOOK = Path(__file__).resolve().parents[1] / "analysis" / "notebooks" / "lr_sensitivity.ipynb"


def parabola(centre: float, curvature: float, top: float = 0.9) -> np.ndarray:
    """A sensitivity curve peaking at lr 10**centre: top - curvature * (log10 lr - centre)**2."""
    return top - curvature * (X - centre) ** 2


# ------------------------------------------------------------------------------------ the estimator


def test_the_width_of_a_parabola_within_5_percent_of_its_best_is_known() -> None:
    # 0.9 - 0.1 (x + 2)^2 >= 0.855 <=> |x + 2| <= 0.67: the grid points -2.6 .. -1.4, 7 points, 1.2 decades
    found = sensitivity.good_range(GRID, parabola(-2.0, 0.1))
    assert found.best_lr == pytest.approx(1e-2) and found.best_value == pytest.approx(0.9)
    assert found.threshold == pytest.approx(0.855)
    assert found.low_lr == pytest.approx(10**-2.6) and found.high_lr == pytest.approx(10**-1.4)
    assert found.good_points == 7 and found.width_decades == pytest.approx(1.2)
    # A flatter curve is wider: 0.9 - 0.01 (x + 2)^2 >= 0.855 <=> |x + 2| <= 2.12: 4.0 decades
    assert sensitivity.good_range(GRID, parabola(-2.0, 0.01)).width_decades == pytest.approx(4.0)


def test_the_order_of_the_points_does_not_matter_and_a_margin_replaces_the_tolerance() -> None:
    order = np.random.default_rng(0).permutation(len(GRID))
    shuffled = sensitivity.good_range(GRID[order], parabola(-2.0, 0.1)[order])
    assert shuffled == sensitivity.good_range(GRID, parabola(-2.0, 0.1))
    # margin 0.005: 0.1 (x + 2)^2 <= 0.005 <=> |x + 2| <= 0.22: -2.2 .. -1.8, 0.4 decades
    by_margin = sensitivity.good_range(GRID, parabola(-2.0, 0.1), margin=0.005)
    assert by_margin.threshold == pytest.approx(0.895) and by_margin.width_decades == pytest.approx(0.4)


def test_a_min_metric_is_good_below_its_threshold() -> None:
    loss = 1.0 + 0.1 * (X + 3.0) ** 2  # best 1.0 at 1e-3; within 5%: 0.1 (x + 3)^2 <= 0.05, |x + 3| <= 0.71
    found = sensitivity.good_range(GRID, loss, mode="min")
    assert found.best_lr == pytest.approx(1e-3) and found.threshold == pytest.approx(1.05)
    assert found.width_decades == pytest.approx(1.2) and found.good_points == 7


def test_a_diverged_point_is_never_good_and_ends_the_run() -> None:
    values = parabola(-2.0, 0.1)
    values[np.isclose(X, -1.6)] = np.nan  # diverged inside the good range: the run stops before it
    found = sensitivity.good_range(GRID, values)
    assert found.high_lr == pytest.approx(10**-1.8) and found.low_lr == pytest.approx(10**-2.6)
    assert found.width_decades == pytest.approx(0.8) and found.good_points == 5


def test_a_curve_with_only_its_best_point_good_has_width_zero_and_one_with_none_has_no_width() -> None:
    spike = np.full(len(GRID), 0.1)
    spike[20] = 0.95
    assert sensitivity.good_range(GRID, spike).width_decades == 0.0
    nothing = sensitivity.good_range(GRID, np.full(len(GRID), np.nan))
    assert nothing.good_points == 0 and math.isnan(nothing.width_decades) and math.isnan(nothing.best_lr)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tolerance": 1.5}, "invalid tolerance 1.5"),
        ({"margin": -0.1}, "invalid margin -0.1"),
        ({"mode": "up"}, "invalid mode 'up'"),
    ],
)
def test_bad_arguments_of_the_estimator_are_one_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sensitivity.good_range(GRID, parabola(-2.0, 0.1), **kwargs)
    with pytest.raises(ValueError, match="of one length"):
        sensitivity.good_range(GRID, parabola(-2.0, 0.1)[:-1])


# ------------------------------------------------------------------------------ tables of trials


def _trials(
    curves: dict[str, np.ndarray],
    *,
    seeds: int = 1,
    confirm: dict[str, list[float]] | None = None,
    noise: float = 0.0,
) -> pd.DataFrame:
    """A trials table: each optimizer's search at every grid lr on `seeds` seeds (NaN: diverged), and its
    confirmation seeds at its best lr with the given final values."""
    rng = np.random.default_rng(1)
    rows = []
    for optimizer, values in curves.items():
        for lr, value in zip(GRID, values, strict=True):
            for seed in range(seeds):
                final = value + noise * rng.standard_normal()
                rows.append(_row(optimizer, lr, seed, SEARCH, np.nan if np.isnan(value) else final))
        best = GRID[int(np.nanargmax(values))]
        for i, value in enumerate((confirm or {}).get(optimizer, [])):
            rows.append(_row(optimizer, best, 10_000 + i, CONFIRM, value))
    table = pd.DataFrame(rows)
    table.attrs["target"] = ACC
    return table


def _row(optimizer: str, lr: float, seed: int, stage: str, final: float) -> dict[str, object]:
    status = DIVERGED if np.isnan(final) else COMPLETED
    return {
        "trial_id": f"{optimizer}-{stage}-{lr:.3g}-{seed}",
        "optimizer": optimizer,
        "seed": seed,
        "lr": lr,
        "status": status,
        "best_val_acc": final,
        "final_val_acc": final,
        "max_epochs": 20,
        "stage": stage,
    }


def _diverging(curve: np.ndarray, above: float) -> np.ndarray:
    out = curve.copy()
    out[above < X] = np.nan
    return out


def test_widths_per_optimizer_exclude_and_count_diverged_points() -> None:
    trials = _trials(
        {"narrow": _diverging(parabola(-1.0, 0.1), 0.0), "wide": _diverging(parabola(-3.0, 0.01), 0.5)},
        confirm={"narrow": [0.90, 0.91, 0.89], "wide": [0.90, 0.90, 0.90]},
    )
    table = sensitivity.widths(trials).set_index(["optimizer", "rule"])
    narrow = table.loc[("narrow", sensitivity.RELATIVE_RULE)]
    assert narrow["width_decades"] == pytest.approx(1.2) and narrow["best_lr"] == pytest.approx(0.1)
    assert narrow["diverged_points"] == (X > 0.0).sum() and narrow["grid_points"] == 36
    wide = table.loc[("wide", sensitivity.RELATIVE_RULE)]
    assert wide["width_decades"] == pytest.approx(4.0) and wide["diverged_points"] == (X > 0.5).sum()
    # The spread rule: 2 x the confirmation seeds' std (0.01 for narrow) below the best; std 0 for wide
    spread = table.loc[("narrow", sensitivity.SPREAD_RULE)]
    assert spread["threshold"] == pytest.approx(0.9 - 2 * 0.01)
    assert spread["width_decades"] == pytest.approx(0.8)  # 0.1 (x + 1)^2 <= 0.02: |x + 1| <= 0.447
    assert table.loc[("wide", sensitivity.SPREAD_RULE)]["good_points"] == 1


def test_a_diverged_point_next_to_the_best_cuts_the_range_and_is_marked() -> None:
    curve = parabola(-2.0, 0.01)
    curve[np.isclose(X, -1.8)] = np.nan
    trials = _trials({"sgd": curve})
    row = sensitivity.widths(trials).iloc[0]
    assert row["high_lr"] == pytest.approx(1e-2) and row["diverged_points"] == 1
    points = sensitivity.points(trials)
    marked = points[points["marked"] == DIVERGED]
    assert len(marked) == 1 and marked["lr"].iloc[0] == pytest.approx(10**-1.8)
    assert marked["value"].isna().all()
    assert (points.loc[points["marked"] == "", "status"] == COMPLETED).all()


def test_a_diverged_seed_counts_as_the_worst_value_in_the_median_over_seeds() -> None:
    trials = _trials({"adam": parabola(-3.0, 0.05)}, seeds=3)
    at = np.isclose(trials["lr"], 10**-2.4)
    first_seed = trials.index[at & (trials["seed"] == 0)]
    trials.loc[first_seed, ["status", "final_val_acc"]] = [DIVERGED, np.nan]
    curve = sensitivity.search_curve(trials).set_index("lr")
    assert curve.loc[curve.index[np.isclose(curve.index, 10**-2.4)][0], "n_diverged"] == 1
    assert curve["value"].notna().all()  # one diverged seed of three: the median is a finished seed's value
    two = trials.index[at & (trials["seed"] == 1)]
    trials.loc[two, ["status", "final_val_acc"]] = [DIVERGED, np.nan]
    assert sensitivity.search_curve(trials)["value"].isna().sum() == 1  # two of three: the point is lost


def test_several_search_seeds_give_per_seed_widths() -> None:
    same = _trials({"sgd": parabola(-2.0, 0.1)}, seeds=3)  # identical seeds: each seed's width is 1.2
    row = sensitivity.widths(same).query("rule == @sensitivity.RELATIVE_RULE").iloc[0]
    assert row["n_seed_curves"] == 3
    assert (row["seed_width_min"], row["seed_width_max"]) == pytest.approx((1.2, 1.2))
    noisy = _trials({"sgd": parabola(-2.0, 0.1)}, seeds=3, noise=0.02)
    row = sensitivity.widths(noisy).query("rule == @sensitivity.RELATIVE_RULE").iloc[0]
    assert row["seed_width_min"] < row["seed_width_max"]  # seed noise moves the edges


def test_the_final_table_reports_median_quartiles_and_mean_std_of_the_confirmation_seeds() -> None:
    seeds = [0.90 + 0.01 * i for i in range(10)]
    trials = _trials({"momentum": parabola(-1.0, 0.1)}, confirm={"momentum": seeds})
    trials.loc[trials.index[-1], ["status", "final_val_acc"]] = [DIVERGED, np.nan]  # seed 0.99 diverged
    final = sensitivity.final_results(trials).iloc[0]
    x = np.array(seeds[:-1])
    assert final["stage"] == CONFIRM and final["n"] == 9 and final["n_diverged"] == 1
    assert final["lr"] == pytest.approx(0.1)
    assert final["median"] == pytest.approx(np.median(x))
    assert (final["q1"], final["q3"]) == pytest.approx((np.percentile(x, 25), np.percentile(x, 75)))
    assert final["mean"] == pytest.approx(x.mean()) and final["std"] == pytest.approx(x.std(ddof=1))
    assert final["ci_low"] < x.mean() < final["ci_high"]


def test_the_curves_figure_draws_every_seed_and_marks_diverged_points_on_the_strip() -> None:
    trials = _trials({"sgd": _diverging(parabola(-1.0, 0.1), 0.9)}, seeds=2, confirm={"sgd": [0.9, 0.91]})
    trials.loc[trials.index[3], "status"] = ERROR
    figure = sensitivity.plot_curves(trials)
    left = figure.axes[0]
    marks = [c for c in left.collections if len(c.get_offsets()) and np.allclose(c.get_offsets()[:, 1], 0.03)]
    marked_lrs = sorted(x for c in marks for x in c.get_offsets()[:, 0])
    expected = sorted([*np.repeat(GRID[X > 0.9], 2), trials["lr"].iloc[3]])
    assert marked_lrs == pytest.approx(expected)
    seeds_drawn = max(len(c.get_offsets()) for c in left.collections)
    assert seeds_drawn == 2 * 36  # every search seed, diverged ones as NaN (not drawn in the plot area)


def test_the_section_names_the_protocol_and_the_widths(tmp_path: Path) -> None:
    trials = _trials(
        {"adam": parabola(-3.0, 0.01), "sgd": parabola(-1.0, 0.1)},
        confirm={"adam": [0.9, 0.89], "sgd": [0.88, 0.9]},
    )
    text = sensitivity.render_section(trials, pd.DataFrame())
    assert "log grid of 36 points from 1e-05 to 100, 1 search seed(s)" in text
    assert "widest first: adam 4, sgd 1.2" in text
    assert "One search seed per lr" in text and "| adam | 0.001 | final val acc | confirm | 2 |" in text


# --------------------------------------------------------------------------- the study and its flags


def test_the_study_file_holds_deepobs_grid_for_every_optimizer_at_its_defaults() -> None:
    spec = study_file.load(lr_sensitivity.STUDY_FILE)
    assert spec.search == "grid" and spec.scheduler == "fifo" and spec.schedules == ("constant",)
    assert spec.seeds == 1 and spec.confirm_seeds == 10 and spec.labels == ("sgd", "adam", "momentum")
    grid = lr_sensitivity.lr_grid(1e-5, 1e2, 36)
    assert grid == pytest.approx(GRID, rel=1e-5) and len(set(grid)) == 36
    for label, space in spec.search_spaces.items():
        assert space["lr"]["choice"] == grid
        assert set(space) == ({"lr", "momentum"} if label == "momentum" else {"lr"})
    assert spec.search_spaces["momentum"]["momentum"] == 0.9


def test_the_grid_flags_and_smoke_rebuild_every_optimizers_space() -> None:
    defaults, rest = lr_sensitivity.study_defaults(["--smoke", "--optimizers", "sgd,adamw"])
    assert rest == ["--smoke", "--optimizers", "sgd,adamw", "--confirm-seeds", "2"]
    assert set(defaults["search_spaces"]) == {"sgd", "adamw"}
    assert defaults["search_spaces"]["adamw"]["lr"]["choice"] == [1e-05, 0.00215443, 0.464159, 100.0]
    defaults, rest = lr_sensitivity.study_defaults(
        ["--lr-min", "1e-3", "--lr-max", "1", "--lr-points", "4", "--confirm-seeds", "3"]
    )
    assert rest == ["--confirm-seeds", "3"]
    assert defaults["search_spaces"]["momentum"] == {
        "lr": {"choice": [0.001, 0.01, 0.1, 1.0]},
        "momentum": 0.9,
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr-points", "1"], "error: --lr-points 1 is invalid: it must be an integer >= 2"),
        (["--lr-min", "0"], "error: --lr-min 0.0 is invalid: it must be a finite number > 0"),
        (["--lr-min", "1", "--lr-max", "0.1"], "error: --lr-min 1 must be below --lr-max 0.1"),
        (["--lr-max", "big"], "error: argument --lr-max: invalid float value: 'big'"),
        (["--seeds", "0"], "error: --seeds 0 is invalid"),
    ],
)
def test_bad_flags_are_one_line_before_ray(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert lr_sensitivity.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


# ------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def smoke(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    storage = tmp_path_factory.mktemp("lr_sensitivity")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = lr_sensitivity.main(["--smoke", "--storage-path", str(storage)])
    assert code == 0, out.getvalue()
    (experiment,) = [p for p in storage.iterdir() if p.is_dir()]
    return experiment, out.getvalue()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_smoke_study_trains_the_grid_confirms_and_writes_the_section(smoke: tuple[Path, str]) -> None:
    experiment, printed = smoke
    assert "sgd runs unfused" not in printed and "adam runs unfused" not in printed
    assert "momentum runs unfused" in printed  # a user's class (see sweeps/lr_sensitivity_momentum.py)
    report = experiment / "report"
    trials = pd.read_csv(report / "trials.csv")
    search = trials[trials["stage"] == SEARCH]
    assert sorted(search.groupby("optimizer")["lr"].nunique().items()) == [
        ("adam", 4),
        ("momentum", 4),
        ("sgd", 4),
    ]
    confirm = trials[trials["stage"] == CONFIRM]
    assert sorted(confirm.groupby("optimizer")["seed"].nunique().items()) == [
        ("adam", 2),
        ("momentum", 2),
        ("sgd", 2),
    ]
    assert (search.loc[search["optimizer"] == "momentum", "momentum"] == 0.9).all()
    assert search["status"].isin([COMPLETED, DIVERGED]).all() and (search["lr"] == 100.0).sum() == 3
    text = (report / sensitivity.SECTION_FILE).read_text()
    assert "## Width of the good-lr range" in text and "## Final results at the chosen lr" in text
    assert (report / sensitivity.CURVES_FIGURE).stat().st_size > 0
    assert f"Learning-rate sensitivity (DeepOBS protocol): {report / sensitivity.SECTION_FILE}" in printed


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_notebook_executes_on_the_smoke_study(
    smoke: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment, _ = smoke
    outputs = notebook_runner.executed_outputs(NOTEBOOK, experiment, tmp_path, monkeypatch)
    assert notebook_runner.images(outputs) == 2
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "width_decades" in tables and "q1" in tables
