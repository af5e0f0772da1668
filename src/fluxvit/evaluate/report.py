"""Reports: markdown tables and accuracy-vs-GFLOPs plots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """``columns``: (key, header) pairs; floats print with 1 decimal, None as an en dash."""

    def cell(v) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.1f}"
        return str(v)

    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def plot_accuracy_vs_gflops(
    series: dict[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike,
    title: str = "accuracy vs compute",
    xlabel: str = "GFLOPs per view",
) -> Path:
    """One line per method through its (GFLOPs, top-1 %) points; log-scaled x. Written
    atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    markers = "osD^v<>"
    for i, (name, points) in enumerate(series.items()):
        pts = sorted(p for p in points if p[1] is not None)
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)], label=name)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
