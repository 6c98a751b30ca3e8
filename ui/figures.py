"""Plotly figure builders (pure functions of data, no Streamlit)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

LABEL_COLORS = {"mild": "#4FB3BF", "severe": "#E4572E", "unlabelled": "#8A8F98"}


def _layout(fig: go.Figure, title: str, height: int = 300) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.0, font=dict(size=14)),
        height=height,
        margin=dict(l=10, r=10, t=40, b=10),
        template="plotly_dark",
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def label_balance(counts: dict[str, int], unit: str = "cases") -> go.Figure:
    names = [k for k in ("mild", "severe", "unlabelled") if counts.get(k)]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[counts[k] for k in names],
            marker_color=[LABEL_COLORS[k] for k in names],
            text=[counts[k] for k in names],
            textposition="auto",
        )
    )
    fig.update_yaxes(title=unit)
    return _layout(fig, f"Label balance ({unit})")


def involvement_histogram(
    values: Sequence[float], labels: Sequence[str], threshold_pct: float, title: str = "Lung involvement"
) -> go.Figure:
    df = pd.DataFrame({"involvement": values, "label": labels}).dropna(subset=["involvement"])
    fig = go.Figure()
    for lab in ("mild", "severe", "unlabelled", "—"):
        sub = df[df["label"] == lab]
        if len(sub):
            fig.add_trace(
                go.Histogram(
                    x=sub["involvement"], name=lab, marker_color=LABEL_COLORS.get(lab, "#8A8F98"),
                    xbins=dict(start=0, end=100, size=2.5), opacity=0.85,
                )
            )
    fig.add_vline(x=threshold_pct, line_dash="dash", line_color="#E6E9EF", annotation_text=f"cut {threshold_pct:g} %")
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title="% of lung involved", range=[0, 100])
    fig.update_yaxes(title="count")
    return _layout(fig, title)


def slice_curve(
    series: dict[str, Sequence[float | None]],
    current: int | None = None,
    threshold_pct: float | None = None,
    title: str = "Involvement by slice (0 = most superior)",
) -> go.Figure:
    fig = go.Figure()
    for name, ys in series.items():
        y = np.array([np.nan if v is None else v for v in ys], dtype=float)
        fig.add_trace(go.Scatter(x=np.arange(len(y)), y=y, mode="lines+markers", name=name, marker=dict(size=4)))
    if threshold_pct is not None:
        fig.add_hline(y=threshold_pct, line_dash="dash", line_color="#E4572E", annotation_text=f"{threshold_pct:g} %")
    if current is not None:
        fig.add_vline(x=current, line_color="#E6E9EF", line_width=1)
    fig.update_xaxes(title="slice")
    fig.update_yaxes(title="% of lung in slice")
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return _layout(fig, title, height=260)
