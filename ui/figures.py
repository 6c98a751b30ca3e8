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
    ytitle: str = "% of lung in slice",
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
    fig.update_yaxes(title=ytitle)
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return _layout(fig, title, height=260)


PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
RUNTIME_COLORS = {"eager_cpu": "#4FB3BF", "ort_fp32": "#F2A541", "ort_int8": "#E4572E", "cuda_eager": "#76B041",
                  "cuda_amp": "#9B5DE5"}


def grouped_bars(df: pd.DataFrame, x: str, y: str, group: str, title: str, ytitle: str,
                 error: str | None = None, colors: dict[str, str] | None = None) -> go.Figure:
    fig = go.Figure()
    for g, sub in df.groupby(group, sort=False):
        err = None
        if error:
            err = dict(type="data", symmetric=False, array=(sub[error] - sub[y]).clip(lower=0).tolist())
        fig.add_trace(go.Bar(x=sub[x], y=sub[y], name=str(g), error_y=err,
                             marker_color=(colors or {}).get(str(g))))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title=ytitle)
    return _layout(fig, title, height=340)


def pareto(df: pd.DataFrame, x: str, y: str, label: str, title: str, xtitle: str, log_x: bool = False) -> go.Figure:
    fig = go.Figure(go.Scatter(x=df[x], y=df[y], mode="markers+text", text=df[label], textposition="top center",
                               marker=dict(size=12, color="#4FB3BF")))
    fig.update_xaxes(title=xtitle, type="log" if log_x else "linear")
    fig.update_yaxes(title="test accuracy (slices)", tickformat=".0%")
    return _layout(fig, title, height=340)


def sweep_lines(df: pd.DataFrame, title: str) -> go.Figure:
    fig = go.Figure()
    for (m, rt), sub in df.groupby(["model", "runtime"], sort=False):
        fig.add_trace(go.Scatter(x=sub["batch"], y=sub["images_per_s"], mode="lines+markers", name=f"{m} · {rt}"))
    sizes = sorted(int(b) for b in df["batch"].unique())
    fig.update_xaxes(title="batch size", type="log", tickvals=sizes, ticktext=[str(b) for b in sizes])  # no minor-tick labels
    fig.update_yaxes(title="images / s")
    return _layout(fig, title, height=340)


def run_curves(histories: dict[str, list[dict]], metric: str, title: str) -> go.Figure:
    """Train and validation curves (``metric`` = 'loss' or 'acc') of one or more runs, per epoch."""
    fig = go.Figure()
    for name, hist in histories.items():
        if not hist:
            continue
        x = list(range(1, len(hist) + 1))
        for split, dash in (("train", "dot"), ("val", "solid")):
            fig.add_trace(go.Scatter(x=x, y=[h.get(f"{split}_{metric}") for h in hist], mode="lines+markers",
                                     name=f"{name} · {split}", line=dict(dash=dash)))
    fig.update_xaxes(title="epoch (all stages in order)")
    fig.update_yaxes(title=metric, tickformat=".0%" if metric == "acc" else None)
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    return _layout(fig, title, height=320)


def confusion(conf: dict[str, int], title: str) -> go.Figure:
    z = [[conf["tn"], conf["fp"]], [conf["fn"], conf["tp"]]]
    fig = go.Figure(go.Heatmap(z=z, x=["pred mild", "pred severe"], y=["true mild", "true severe"], colorscale="Blues",
                               text=z, texttemplate="%{text}", showscale=False))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=260)


def roc(curves: dict[str, dict], title: str) -> go.Figure:
    fig = go.Figure()
    for name, c in curves.items():
        if c:
            fig.add_trace(go.Scatter(x=c["fpr"], y=c["tpr"], mode="lines", name=name))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="#8A8F98"), showlegend=False))
    fig.update_xaxes(title="1 - specificity", range=[0, 1])
    fig.update_yaxes(title="sensitivity", range=[0, 1.02])
    return _layout(fig, title, height=320)


def reliability(p_severe: Sequence[float], labels: Sequence[int], title: str, bins: int = 10) -> go.Figure:
    """Reliability diagram: per bin of predicted P(severe), the share of slices that are severe (dot size: how
    many slices), beside the diagonal a calibrated model follows."""
    p, y = np.asarray(p_severe, float), np.asarray(labels, int)
    keep = y >= 0
    p, y = p[keep], y[keep]
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    xs, ys, ns = [], [], []
    for b in range(bins):
        m = which == b
        if m.any():
            xs.append(float(p[m].mean()))
            ys.append(float(y[m].mean()))
            ns.append(int(m.sum()))
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers+lines", name="observed",
                               marker=dict(size=[6 + 14 * np.sqrt(n / max(ns)) for n in ns] if ns else 6),
                               text=[f"{n} slices" for n in ns], hovertemplate="P %{x:.2f} → severe %{y:.2f}, %{text}"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="#8A8F98"), showlegend=False))
    fig.update_xaxes(title="predicted P(severe)", range=[0, 1])
    fig.update_yaxes(title="observed share severe", range=[0, 1.02])
    return _layout(fig, title, height=320)


def cv_bars(df: pd.DataFrame, best_classical: float | None) -> go.Figure:
    """Pooled out-of-fold ROC-AUC per model (± sd over repeats), classical references greyed, best one as a line."""
    classical = df["model"].str.startswith("classical")
    fig = go.Figure(go.Bar(
        x=df["model"], y=df["ROC-AUC"], error_y=dict(type="data", array=df["± sd"].fillna(0)),
        marker_color=["#8A8F98" if c else "#4FB3BF" for c in classical],
        text=[f"{v:.3f}" if v is not None else "" for v in df["ROC-AUC"]], textposition="outside"))
    if best_classical is not None:
        fig.add_hline(y=best_classical, line_dash="dash", line_color="#D9534F",
                      annotation_text=f"best classical {best_classical:.3f}", annotation_position="bottom right")
    lo = max(0.0, min([v for v in df["ROC-AUC"] if v is not None] + [1.0]) - 0.1)
    fig.update_yaxes(title="pooled out-of-fold ROC-AUC", range=[lo, 1.02])
    return _layout(fig, "Cross-validated ROC-AUC (mild vs severe)", height=340)


def scored_against_truth(truth: Sequence[float], scored: Sequence[float], labels: Sequence[str], score_name: str,
                         threshold_pct: float, title: str) -> go.Figure:
    """Each labelled slice: its stated involvement against what a model made of it (its learned involvement, on
    the same scale, or its P(severe)), coloured by its label; the severity cut and, for a learned involvement, the
    diagonal a perfect map would follow."""
    df = pd.DataFrame({"truth": truth, "scored": scored, "label": labels}).dropna(subset=["truth", "scored"])
    fig = go.Figure()
    for lab in ("mild", "severe", "unlabelled"):
        sub = df[df["label"].fillna("unlabelled") == lab]
        if len(sub):
            fig.add_trace(go.Scattergl(x=sub["truth"], y=sub["scored"], mode="markers", name=lab, opacity=0.7,
                                       marker=dict(size=5, color=LABEL_COLORS[lab])))
    same_scale = score_name.startswith("learned")
    if same_scale:
        fig.add_trace(go.Scatter(x=[0, 100], y=[0, 100], mode="lines", line=dict(dash="dot", color="#8A8F98"),
                                 name="learned = stated"))
    fig.add_vline(x=threshold_pct, line_dash="dash", line_color="#E6E9EF", annotation_text=f"cut {threshold_pct:g} %")
    fig.update_xaxes(title="stated involvement (% of lung)", range=[0, 100])
    fig.update_yaxes(title=score_name, range=[0, 100] if same_scale else [0, 1.02])
    return _layout(fig, title, height=360)
