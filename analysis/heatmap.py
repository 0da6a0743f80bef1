"""The learning rate x weight decay heatmap: where in that plane each optimizer works."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from optsweep.analysis import metric_text
from optsweep.analysis.binning import axis_groups
from optsweep.analysis.summary import configurations
from optsweep.analysis.target import resolve
from optsweep.vocabulary import Target


def lr_wd_heatmap(trials: pd.DataFrame, *, target: Target | None = None) -> Figure | None:
    """Best configuration mean per (learning rate, weight decay) cell, one panel per optimizer that
    swept both (None if none did). "Best" and the colours follow the target's mode: better cells
    are brighter, and better is at the top of the colour bar, for max and min metrics alike.
    Grid values are shown as they are; random-search values are grouped into log bins with round
    edges, zero in a row/column of its own (`axis_groups`). A cell marked "*" holds a
    configuration with fewer finished seeds than the chosen ones need; "div k/n" cells had only
    configurations with a diverged seed (k of the n seeds run there diverged); blank cells were
    not tried."""
    target = resolve(trials, target)
    configs = configurations(trials, target=target)
    panels = []
    for optimizer, group in configs.groupby("optimizer", sort=True):
        tried = group[group["lr"].notna() & group["weight_decay"].notna()]
        tried = tried[tried["candidate"] | (tried["n_diverged"] > 0)]
        if tried["lr"].nunique() >= 2 and tried["weight_decay"].nunique() >= 2:
            panels.append((optimizer, tried))
    if not panels:
        return None
    fig = Figure(figsize=(4.8 * len(panels) + 1.4, 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    grids = [_heat_grid(tried, target) for _, tried in panels]
    values = np.concatenate([grid.mean.ravel() for grid in grids])
    vmin, vmax = (np.nanmin(values), np.nanmax(values)) if np.isfinite(values).any() else (0.0, 1.0)
    places = metric_text.decimals(values)
    cmap = "viridis" if target.mode == "max" else "viridis_r"  # bright is better either way
    image = None
    for ax, (optimizer, _), grid in zip(axes, panels, grids, strict=True):
        image = ax.imshow(grid.mean, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
        for (i, j), value in np.ndenumerate(grid.mean):
            if grid.diverged_only[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#f4c7c3", edgecolor="white"))
                label = f"div\n{grid.n_diverged[i, j]}/{grid.n_run[i, j]}"
                ax.text(j, i, label, ha="center", va="center", fontsize=7, color="#a50f15")
            elif not np.isnan(value):
                # viridis is dark at its low end, which is the worse end for both modes.
                worse_half = value < vmin + 0.5 * (vmax - vmin)
                dark_cell = worse_half if target.mode == "max" else not worse_half
                mark = "" if grid.eligible[i, j] else "*"
                ax.text(
                    j,
                    i,
                    f"{value:.{places}f}{mark}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark_cell else "black",
                )
        ax.set_xticks(range(len(grid.lr_labels)), grid.lr_labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(grid.wd_labels)), grid.wd_labels, fontsize=8)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("weight decay")
        ax.set_title(optimizer)
        ax.set_facecolor("#eeeeee")
    label = f"best configuration mean {metric_text.short_val(target)}"
    colorbar = fig.colorbar(image, ax=list(axes), label=f"{label} ({metric_text.direction(target)})")
    if target.mode == "min":
        colorbar.ax.invert_yaxis()  # better (lower) at the top, as for a max metric
    title = (
        "Learning rate x weight decay (*: too few finished seeds to be chosen; div k/n: k of n seeds "
        "diverged; blank: not tried)"
    )
    # About 12 characters of 10-point text per inch: wrap rather than crop a narrow (1-panel)
    # figure, never inside "div k/n".
    wrapped = textwrap.fill(title.replace("div k/n", "div\u00a0k/n"), width=int(12 * fig.get_figwidth()))
    fig.suptitle(wrapped.replace("\u00a0", " "), fontsize=10)
    return fig


@dataclass
class _HeatGrid:
    mean: np.ndarray  # best configuration mean per cell (wd rows, lr columns), NaN if none
    eligible: np.ndarray  # the cell's best configuration could be chosen
    diverged_only: np.ndarray  # every configuration in the cell had a diverged seed
    n_diverged: np.ndarray  # diverged seeds in the cell
    n_run: np.ndarray  # seeds with a result (finished or diverged) in the cell
    lr_labels: list[str]
    wd_labels: list[str]


def _heat_grid(configs: pd.DataFrame, target: Target) -> _HeatGrid:
    lr_keys, lr_labels = axis_groups(configs["lr"].to_numpy(dtype=float))
    wd_keys, wd_labels = axis_groups(configs["weight_decay"].to_numpy(dtype=float))
    shape = (len(wd_labels), len(lr_labels))
    flags = np.zeros(shape, dtype=bool)
    counts = np.zeros(shape, dtype=int)
    grid = _HeatGrid(
        np.full(shape, np.nan), flags.copy(), flags.copy(), counts.copy(), counts.copy(), lr_labels, wd_labels
    )
    for row, i, j in zip(configs.itertuples(index=False), wd_keys, lr_keys, strict=True):
        grid.n_diverged[i, j] += row.n_diverged
        grid.n_run[i, j] += row.n_diverged + row.n_seeds
        if row.candidate and target.better(row.mean, grid.mean[i, j]):
            grid.mean[i, j], grid.eligible[i, j] = row.mean, row.eligible
    grid.diverged_only = (grid.n_diverged > 0) & np.isnan(grid.mean)
    return grid
