"""The report's Plotly figures, one function each; every function returns ``None`` when it has no data.

All of them take the tidy per-trial frame (``clear_tune.aggregate.trials_frame``) and/or the per-config
summary, so the report shows exactly what the tables show, and the experiment's select metric
(``select_metric``: what chose the configs; the valid scores shown are that metric's).

Example:
    >>> from clear_tune.aggregate import trials_frame
    >>> frame = trials_frame([{"trial_id": "a", "status": "completed", "wall_start": 0.0, "wall_end": 60.0,
    ...     "epochs_run": 2, "curve": [{"epoch": 1, "valid": {"recall@20": 0.1}}], "valid": {"recall@20": 0.1}}])
    >>> best_so_far_figure(frame).data[0].y.tolist()
    [0.1]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clear_tune.aggregate import VARIANT_NAMES, VARIANTS, Table, best_configs, short_name
from clear_tune.config import DEFAULT_SELECT_METRIC

STATUS_COLORS = {"completed": "#2a9d8f", "pruned": "#e9c46a", "failed": "#e76f51"}
VARIANT_COLORS = {"full": "#264653", "no_projection": "#e76f51", "dynamic": "#2a9d8f"}
_LAYOUT: dict[str, Any] = dict(
    template="plotly_white",
    margin=dict(l=60, r=20, t=80, b=50),
    height=420,
    font=dict(size=12),
    legend=dict(font=dict(size=11)),
)


def heatmap_figures(summary: pd.DataFrame, select_metric: str = DEFAULT_SELECT_METRIC) -> list[tuple[str, go.Figure]]:
    """Fig. 4: the valid select metric over λ × k, one heatmap per dataset × backbone; hover has mean ± std and
    seeds."""
    valid, test, name = f"valid.{select_metric}", f"test.{select_metric}", short_name(select_metric)
    fixed = summary[summary["variant"] == "full"]
    figures = []
    for (dataset, backbone), cells in fixed.groupby(["dataset", "backbone"]):
        best = best_configs(cells, by=("strength", "k"), metric=valid)
        grid = cells.groupby(["strength", "k"])[["n_completed", "n_pruned", "n_failed"]].sum().reset_index()
        grid = grid.merge(best, on=["strength", "k"], how="left", suffixes=("", "_best"))
        lambdas, ks = sorted(grid["strength"].unique()), sorted(grid["k"].unique())
        z = np.full((len(lambdas), len(ks)), np.nan)
        text = np.full(z.shape, "not run", dtype=object)
        hover = np.full(z.shape, "not run", dtype=object)
        for row in grid.itertuples():  # one per grid cell (at most a few dozen)
            i, j = lambdas.index(row.strength), ks.index(row.k)
            v_mean, v_std = _get(grid, row.Index, f"{valid}.mean"), _get(grid, row.Index, f"{valid}.std")
            t_mean, t_std = _get(grid, row.Index, f"{test}.mean"), _get(grid, row.Index, f"{test}.std")
            seeds = grid.loc[row.Index, "seeds"] if "seeds" in grid.columns else None
            if row.n_completed > 0 and np.isfinite(v_mean):
                z[i, j] = v_mean
                text[i, j] = f"{v_mean:.4f}"
                hover[i, j] = (
                    f"λ={row.strength:g}, k={row.k}<br>valid {name} {_ms(v_mean, v_std)}<br>"
                    f"test {name} {_ms(t_mean, t_std)}<br>seeds {seeds} (n={int(row.n_completed)})"
                )
            else:
                state = "pruned" if row.n_pruned else "failed"
                text[i, j] = state
                hover[i, j] = f"λ={row.strength:g}, k={row.k}<br>{state}: no completed seed"
        finite = z[np.isfinite(z)]
        # a single value (or none) would give Plotly a degenerate colour range around 0
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        if high - low < 1e-12:
            low, high = low * 0.95, high * 1.05 + 1e-9
        noise = _seed_noise(grid, f"{valid}.std")
        flat = finite.size > 1 and np.isfinite(noise) and finite.max() - finite.min() < noise
        note = (
            "hover: valid/test mean ± std, seeds; grey = pruned / failed / not run"
            if not flat
            else f"NO EFFECT beyond seed noise: the cell means span {finite.max() - finite.min():.4f}, less than "
            f"the seeds' typical std {noise:.4f}; colours are spread over ± that std so noise is not painted"
        )
        if flat:  # a colour scale spanning only the noise would paint it as a strong effect
            centre = float(finite.mean())
            low, high = centre - noise, centre + noise
        fig = go.Figure(
            go.Heatmap(
                z=z,
                zmin=low,
                zmax=high,
                x=[f"k={k}" for k in ks],
                y=[f"λ={lam:g}" for lam in lambdas],
                text=text,
                texttemplate="%{text}",
                customdata=hover,
                hovertemplate="%{customdata}<extra></extra>",
                colorscale="Blues",
                colorbar=dict(title=f"valid {name}"),
                xgap=2,
                ygap=2,
            )
        )
        fig.update_layout(
            **_LAYOUT,
            title=f"Valid {name} over λ × k — {dataset} · {backbone}<br><sup>{note}</sup>",
            plot_bgcolor="#e5e5e5",
        )
        figures.append((f"heatmap-{dataset}-{backbone}", fig))
    return figures


def ablation_figure(ablation: Table) -> go.Figure | None:
    """Fig. 3: test R@20 and N@20 per variant (error bars: sample std over seeds)."""
    data = ablation.data.dropna(subset=["test.recall@20.mean"])
    if data.empty:
        return None
    group = data["dataset"] + " · " + data["backbone"]
    fig = go.Figure()
    for (metric, name), color in zip(
        (("test.recall@20", "test R@20"), ("test.ndcg@20", "test N@20")), ("#264653", "#8ab17d")
    ):
        fig.add_trace(
            go.Bar(
                marker_color=color,
                x=[group, data["variant"].map(VARIANT_NAMES)],
                y=data[f"{metric}.mean"],
                name=name,
                error_y=dict(type="data", array=data[f"{metric}.std"].fillna(0)),
                customdata=np.stack([data["config_label"], data["n_seeds"]], axis=1),
                hovertemplate="%{customdata[0]}<br>" + name + " %{y:.4f} (n=%{customdata[1]})<extra></extra>",
            )
        )
    if "p_users_t_corrected" in data:  # the corrected p over users of each variant against the full model
        labels = [f"p={p:.3g}" if np.isfinite(p) else "" for p in data["p_users_t_corrected"].astype(float)]
        fig.data[0].update(text=labels, textposition="outside")
    fig.update_layout(
        **_LAYOUT,
        barmode="group",
        title=(
            "Ablation (paper Fig. 3)<br><sup>test metrics of each variant's best-valid config, mean ± std over seeds; "
            "p: paired t-test over users against the full model, corrected</sup>"
        ),
    )
    return fig


def generalization_figure(generalization: Table) -> go.Figure | None:
    """Table 3 as bars: each backbone without projection vs with CLEAR, test R@20 and N@20."""
    data = generalization.data[generalization.data["model"] != "improvement %"].dropna(subset=["test.recall@20.mean"])
    if data.empty:
        return None
    fig = go.Figure()
    with_clear = data["model"].str.endswith("+ CLEAR")
    for is_clear, name, color in ((False, "backbone", "#e76f51"), (True, "backbone + CLEAR", "#264653")):
        part = data[with_clear == is_clear]
        x_group = part["dataset"] + " · " + part["backbone"]
        fig.add_trace(
            go.Bar(
                x=[np.concatenate([x_group, x_group]), ["R@20"] * len(part) + ["N@20"] * len(part)],
                y=np.concatenate([part["test.recall@20.mean"], part["test.ndcg@20.mean"]]),
                error_y=dict(
                    type="data",
                    array=np.concatenate([part["test.recall@20.std"], part["test.ndcg@20.std"]]).astype(float),
                ),
                name=name,
                marker_color=color,
                hovertemplate="%{x}: %{y:.4f}<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        **_LAYOUT,
        barmode="group",
        title="Generalization (paper Table 3)<br><sup>test metrics, mean ± std over seeds</sup>",
    )
    return fig


def spectrum_figure(
    frame: pd.DataFrame,
    records: dict[str, dict[str, Any]],
    summary: pd.DataFrame,
    select_metric: str = DEFAULT_SELECT_METRIC,
) -> go.Figure | None:
    """Fig. 5: singular values of the cross-covariance before/after projection for each chosen CLEAR config."""
    chosen = best_configs(summary, where=summary["projection_active"].astype(bool), metric=f"valid.{select_metric}")
    fig = go.Figure()
    for config in chosen.itertuples():
        trials = frame[
            (frame["config_key"] == config.config_key)
            & (frame["dataset"] == config.dataset)
            & (frame["backbone"] == config.backbone)
            & (frame["status"] == "completed")
        ]
        spectra: list[Any] = [records[t].get("spectrum") for t in trials["trial_id"] if records[t].get("spectrum")]
        if not spectra:
            continue
        last = spectra[0][-1]  # the last refresh of the first seed: the projection the model ended with
        index = np.arange(1, len(last["before"]) + 1)
        label = f"{config.dataset} · {config.config_label}"
        fig.add_trace(go.Scatter(x=index, y=last["before"], mode="lines+markers", name=f"before — {label}"))
        fig.add_trace(
            go.Scatter(x=index, y=last["after"], mode="lines+markers", name=f"after — {label}", line=dict(dash="dash"))
        )
    if not fig.data:
        return None
    fig.update_layout(
        **_LAYOUT,
        title=(
            "Singular values of C before / after projection (paper Fig. 5)"
            "<br><sup>last refresh of the chosen config's first seed</sup>"
        ),
        xaxis_title="index i",
        yaxis_title="σ_i",
        yaxis_type="log",
    )
    return fig


def learning_curves_figure(
    frame: pd.DataFrame, records: dict[str, dict[str, Any]], select_metric: str = DEFAULT_SELECT_METRIC
) -> go.Figure | None:
    """The valid select metric per evaluation for every trial; pruned trials dashed and ending in an ✕ where they
    were cut."""
    metric, name = select_metric, short_name(select_metric)
    fig = go.Figure()
    shown: set[str] = set()
    for trial in frame.itertuples():
        curve = records[trial.trial_id].get("curve") or []
        points = [(c["epoch"], (c.get("valid") or {}).get(metric)) for c in curve]
        points = [(e, v) for e, v in points if v is not None]
        if not points:
            continue
        epochs, values = zip(*points)
        status = trial.status
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=values,
                mode="lines",
                name=status,
                legendgroup=status,
                showlegend=status not in shown,
                line=dict(
                    color=STATUS_COLORS.get(status, "#888"),
                    width=1.2,
                    dash={"pruned": "dash", "failed": "dot"}.get(status, "solid"),
                ),
                opacity=0.8,
                hovertemplate=(
                    f"{trial.trial_id}<br>{trial.config_label}<br>epoch %{{x}}: %{{y:.4f}}<extra>{status}</extra>"
                ),
            )
        )
        shown.add(status)
        if status != "completed":
            fig.add_trace(
                go.Scatter(
                    x=[epochs[-1]],
                    y=[values[-1]],
                    mode="markers",
                    showlegend=False,
                    legendgroup=status,
                    marker=dict(symbol="x", size=9, color=STATUS_COLORS.get(status, "#888")),
                    hovertemplate=f"{trial.trial_id} {status} at epoch %{{x}}<br>{trial.reason}<extra></extra>",
                )
            )
    if not fig.data:
        return None
    fig.update_layout(
        **_LAYOUT,
        title=f"Learning curves: valid {name} per trial<br><sup>pruned: dashed, ✕ where cut; failed: dotted</sup>",
        xaxis_title="epoch",
        yaxis_title=f"valid {name}",
    )
    return fig


def parallel_coordinates_figure(frame: pd.DataFrame, select_metric: str = DEFAULT_SELECT_METRIC) -> go.Figure | None:
    """All trials with a validation score: backbone, variant, k, λ, ρ, seed, epochs, status and the valid select
    metric."""
    valid, label = f"valid.{select_metric}", f"valid {short_name(select_metric)}"
    if valid not in frame.columns:
        return None
    data = frame.dropna(subset=[valid])
    if data.empty:
        return None
    backbones = sorted(data["backbone"].unique())
    statuses = [s for s in STATUS_COLORS if s in set(data["status"])]
    dimensions = [
        dict(
            label="backbone",
            values=data["backbone"].map(backbones.index),
            tickvals=list(range(len(backbones))),
            ticktext=backbones,
        ),
        dict(
            label="variant",
            values=data["variant"].map(VARIANTS.index),
            tickvals=list(range(len(VARIANTS))),
            ticktext=["fixed k", "λ = 0", "dynamic"],
        ),
        dict(label="k", values=data["k"]),
        dict(label="λ", values=data["strength"]),
        dict(label="ρ (dynamic)", values=data["energy"]),
        dict(label="seed", values=data["seed"]),
        dict(label="epochs run", values=data["epochs_run"]),
        dict(
            label="status",
            values=data["status"].map(statuses.index),
            tickvals=list(range(len(statuses))),
            ticktext=statuses,
        ),
        dict(label=label, values=data[valid]),
    ]
    fig = go.Figure(
        go.Parcoords(
            line=dict(color=data[valid], colorscale="Viridis", showscale=True, colorbar=dict(title=label)),
            dimensions=dimensions,
        )
    )
    hidden = len(frame) - len(data)
    note = f" ({hidden} trial(s) without a valid score not shown)" if hidden else ""
    fig.update_layout(
        **{**_LAYOUT, "margin": dict(l=60, r=60, t=120, b=40)},
        title=f"All trials{note}<br><sup>drag along an axis to filter</sup>",
    )
    return fig


def timeline_figure(frame: pd.DataFrame) -> go.Figure | None:
    """Gantt of trials per node / GPU (CPU lane when a trial had no GPU), coloured by status."""
    data = frame.dropna(subset=["wall_start", "wall_end"]).copy()
    if data.empty:
        return None
    node = data["node_ip"].fillna(data["node_id"]).fillna("local").astype(str)
    data["lane"] = node + np.where(data["gpu_ids"].astype(str) != "", " · GPU " + data["gpu_ids"].astype(str), " · CPU")
    data["start"] = pd.to_datetime(data["wall_start"], unit="s", utc=True)
    data["end"] = pd.to_datetime(data["wall_end"], unit="s", utc=True)
    data["minutes"] = (data["wall_end"] - data["wall_start"]) / 60
    fig = px.timeline(
        data,
        x_start="start",
        x_end="end",
        y="lane",
        color="status",
        color_discrete_map=STATUS_COLORS,
        hover_data={
            "trial_id": True,
            "config_label": True,
            "epochs_run": True,
            "reason": True,
            "minutes": ":.2f",
            "lane": False,
            "start": False,
            "end": False,
        },
    )
    lanes = sorted(data["lane"].unique())
    fig.update_yaxes(categoryorder="array", categoryarray=lanes[::-1], title="node · device")
    fig.update_layout(
        **{**_LAYOUT, "height": max(300, 120 + 38 * len(lanes))},
        title="Timeline of trials per node / device (UTC)<br><sup>pruned trials end early and free their device</sup>",
    )
    return fig


def best_so_far_figure(frame: pd.DataFrame, select_metric: str = DEFAULT_SELECT_METRIC) -> go.Figure | None:
    """Best valid select metric of completed trials so far vs wall-clock hours and vs GPU-hours (CPU-hours without
    GPUs)."""
    valid, name = f"valid.{select_metric}", short_name(select_metric)
    data = frame.dropna(subset=["wall_start", "wall_end"])
    done = (
        data[(data["status"] == "completed") & data[valid].notna()].sort_values("wall_end")
        if valid in data
        else data.iloc[0:0]
    )
    if done.empty:
        return None
    t0 = data["wall_start"].min()
    events = done["wall_end"].to_numpy()
    best = np.maximum.accumulate(done[valid].to_numpy())
    # resource-hours used by all trials up to each event time: each trial's overlap with [t0, t] x its devices
    devices = np.maximum(data["n_gpus"].to_numpy(), 1)
    elapsed = np.clip(
        np.minimum(data["wall_end"].to_numpy()[None, :], events[:, None]) - data["wall_start"].to_numpy()[None, :],
        0,
        None,
    )
    used = (elapsed * devices[None, :]).sum(axis=1) / 3600  # (n_events,)
    unit = "GPU-hours" if data["n_gpus"].gt(0).any() else "CPU trial-hours"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("vs wall-clock time", f"vs {unit}"), horizontal_spacing=0.1)
    hover = [f"{t}<br>{label}" for t, label in zip(done["trial_id"], done["config_label"])]
    for col, x in ((1, (events - t0) / 3600), (2, used)):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=best,
                mode="lines+markers",
                line_shape="hv",
                name=f"best valid {name}",
                showlegend=False,
                text=hover,
                hovertemplate="%{text}<br>best %{y:.4f} at %{x:.3f} h<extra></extra>",
                line=dict(color="#264653"),
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(title_text="hours since the search started", row=1, col=1)
    fig.update_xaxes(title_text=unit, row=1, col=2)
    fig.update_yaxes(title_text=f"best valid {name} so far", row=1, col=1)
    fig.update_layout(**_LAYOUT, title=f"Best valid {name} so far (completed trials)")
    return fig


def _seed_noise(grid: pd.DataFrame, std_column: str) -> float:
    """The typical spread between seeds in a heatmap: the median over cells of the std over seeds (NaN without)."""
    if std_column not in grid.columns:
        return math.nan
    stds = pd.to_numeric(grid[std_column], errors="coerce").dropna()
    return float(stds.median()) if not stds.empty else math.nan


def _get(frame: pd.DataFrame, index: Any, column: str) -> float:
    if column not in frame.columns:
        return math.nan
    value = frame.loc[index, column]
    return float(value) if value is not None and pd.notna(value) else math.nan


def _ms(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f} (1 seed)"
