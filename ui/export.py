"""Meeting exports: the comparison as one PNG figure and the numbers as CSV (no Streamlit here)."""

from __future__ import annotations

import datetime as dt
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DISCLAIMER = "Research software - NOT FOR DIAGNOSTIC USE"


def comparison_png(
    base_rgb: np.ndarray,
    panels: list[tuple[str, np.ndarray, str]],
    title: str,
    subtitle: str,
    footer_lines: list[str] | None = None,
) -> bytes:
    """One figure: the slice, then one CAM panel per model with its verdict; title, date, disclaimer."""
    n = 1 + len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 4.2), dpi=120, facecolor="white")
    axes = np.atleast_1d(axes)
    axes[0].imshow(base_rgb)
    axes[0].set_title("Input slice", fontsize=10)
    for ax, (name, rgb, caption) in zip(axes[1:], panels):
        ax.imshow(rgb)
        ax.set_title(f"{name}\n{caption}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    fig.suptitle(f"{title}\n{subtitle}", fontsize=11, y=0.99)
    text = [f"{stamp} · CT Severity Studio · {DISCLAIMER}"] + (footer_lines or [])
    fig.text(0.5, 0.01, "\n".join(text), ha="center", va="bottom", fontsize=8, color="#B00020")
    fig.tight_layout(rect=(0, 0.06 + 0.02 * len(footer_lines or []), 1, 0.9))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def numbers_csv(rows: list[dict]) -> bytes:
    df = pd.DataFrame(rows)
    df.insert(0, "note", DISCLAIMER)
    return df.to_csv(index=False).encode()


def curves_png(histories: dict[str, list[dict]], title: str = "Training curves") -> bytes:
    """Loss and accuracy per epoch (train dotted, validation solid) for one or more runs, as PNG."""
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4), dpi=120, facecolor="white")
    for name, hist in histories.items():
        x = list(range(1, len(hist) + 1))
        for split, style in (("train", ":"), ("val", "-")):
            ax_l.plot(x, [h.get(f"{split}_loss") for h in hist], style, marker="o", ms=3, label=f"{name} {split}")
            ax_a.plot(x, [h.get(f"{split}_acc") for h in hist], style, marker="o", ms=3, label=f"{name} {split}")
    ax_l.set(title="Loss", xlabel="epoch")
    ax_a.set(title="Accuracy", xlabel="epoch", ylim=(0, 1.02))
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title} · {dt.datetime.now():%Y-%m-%d %H:%M} · {DISCLAIMER}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    plt.close(fig)
    return buf.getvalue()
