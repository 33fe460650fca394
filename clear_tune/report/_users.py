"""The report's view over users: how the chosen CLEAR config's gain over λ = 0 spreads across users.

A mean gain of a few percent can come from many users gaining a little or a few gaining a lot; the violin of
per-user differences (each user's test value of the select metric, averaged over the seeds both configs share)
shows which, per dataset x backbone, with the corrected p-value of the test over users in its name.

Example:
    >>> from clear_tune.aggregate import config_summary, trials_frame
    >>> frame = trials_frame([])
    >>> user_gain_figure(frame, frame, lambda trial_id: None) is None
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from clear_tune.aggregate import best_configs, short_name
from clear_tune.aggregate._select import GROUP
from clear_tune.aggregate._significance import PerUserLoader, config_users
from clear_tune.config import DEFAULT_SELECT_METRIC


def user_gain_figure(
    frame: pd.DataFrame,
    summary: pd.DataFrame,
    load: PerUserLoader,
    *,
    select_metric: str = DEFAULT_SELECT_METRIC,
    generalization: Any = None,
) -> go.Figure | None:
    """Violins of per-user test differences (best CLEAR config − best λ = 0 config), one per dataset x backbone."""
    if frame.empty or summary.empty or "projection_active" not in summary:
        return None
    chooser = f"valid.{select_metric}"
    active = summary["projection_active"].astype(bool)
    base, clear = (
        best_configs(summary, where=~active, metric=chooser),
        best_configs(summary, where=active, metric=chooser),
    )
    pvalues = {}
    if generalization is not None and "p_users_t_corrected" in generalization.data:
        rows = generalization.data[generalization.data["model"] == "improvement %"]
        pvalues = {(r.dataset, r.backbone): r.p_users_t_corrected for r in rows.itertuples()}
    fig = go.Figure()
    for dataset, backbone in summary[list(GROUP)].drop_duplicates().sort_values(list(GROUP)).itertuples(index=False):
        b = base[(base["dataset"] == dataset) & (base["backbone"] == backbone)]
        c = clear[(clear["dataset"] == dataset) & (clear["backbone"] == backbone)]
        if b.empty or c.empty:
            continue
        done = frame[frame["status"] == "completed"]
        seeds = sorted(
            set(done[done["config_key"] == b.iloc[0]["config_key"]]["seed"])
            & set(done[done["config_key"] == c.iloc[0]["config_key"]]["seed"])
        )
        a_users = config_users(frame, b.iloc[0]["config_key"], seeds, metric=select_metric, split="test", load=load)
        c_users = config_users(frame, c.iloc[0]["config_key"], seeds, metric=select_metric, split="test", load=load)
        if a_users is None or c_users is None or not np.array_equal(a_users[0], c_users[0]):
            continue
        diff = c_users[1] - a_users[1]
        p = pvalues.get((dataset, backbone), np.nan)
        label = f"{dataset} · {backbone}" + (f" (p={p:.3g})" if np.isfinite(p) else "")
        fig.add_trace(
            go.Violin(
                y=diff,
                name=label,
                box_visible=True,
                meanline_visible=True,
                points=False,
                hovertemplate="%{y:.4f}<extra>" + label + "</extra>",
            )
        )
    if not fig.data:
        return None
    fig.update_layout(
        template="plotly_white",
        height=420,
        showlegend=False,
        title=f"Per-user gain of CLEAR over λ = 0 (test {short_name(select_metric)})<br><sup>each user's "
        "difference, averaged over shared seeds; p: paired t-test over users, corrected</sup>",
        yaxis_title=f"Δ {short_name(select_metric)} per user",
    )
    return fig
