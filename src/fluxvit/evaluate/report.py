"""Reports: markdown tables and accuracy-vs-GFLOPs plots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fluxvit.atomic import atomic_write


def format_gflops(v: float) -> str:
    """GFLOPs with the digits that matter: 440, 83.1, 0.0481 (a nano model at 64 tokens)."""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.3g}"


def markdown_cell(value: object, limit: int = 200) -> str:
    """``value`` as the text of one markdown table cell or list item: one line (whitespace
    collapsed), at most ``limit`` characters (cut with an ellipsis), and ``\\``, ``|`` and ``<``
    escaped, so that a class name or a path from a user's files cannot break the table."""
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple]) -> str:
    """``columns``: (key, header) or (key, header, formatter) tuples. Without a formatter,
    floats print with 1 decimal; a missing value or None prints as an en dash; every cell is
    made safe by :func:`markdown_cell`."""

    def cell(v, fmt) -> str:
        if v is None:
            return "–"
        if fmt is not None:
            return markdown_cell(fmt(v))
        if isinstance(v, float):
            return f"{v:.1f}"
        return markdown_cell(v)

    columns = [(c[0], c[1], c[2] if len(c) > 2 else None) for c in columns]
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(r.get(k), fmt) for k, _, fmt in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def plot_accuracy_vs_gflops(
    series: dict[str, Sequence[tuple[float, ...]]],
    path: str | os.PathLike,
    title: str = "accuracy vs compute",
    xlabel: str = "GFLOPs per view",
) -> Path:
    """One line per method through its (GFLOPs, top-1 %) points, or (GFLOPs, mean top-1, sd)
    points drawn with error bars; log-scaled x. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    markers = "osD^v<>"
    for i, (name, points) in enumerate(series.items()):
        pts = sorted(p for p in points if p[1] is not None)
        if not pts:
            continue
        if all(len(p) > 2 for p in pts):  # (x, y, sd): error bars of one sd
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        marker=markers[i % len(markers)], capsize=3, label=name)
        else:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)], label=name)
    ax.set_xscale("log")
    # Tick the measured points themselves, in plain numbers (0.048, not 4.8 x 10^-2), when
    # there are few of them; otherwise the log locator's ticks, still in plain numbers.
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    xs = sorted({float(format_gflops(p[0])) for pts in series.values() for p in pts if p[1] is not None and p[0] > 0})
    if 0 < len(xs) <= 8:
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_gflops(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
