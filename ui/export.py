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
