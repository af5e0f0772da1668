"""Where a model fails: the confusion matrix of an evaluation, each class's precision, recall
and F1, the most-confused pairs, and the report folder of ``fluxvit eval --report DIR``.

The metrics are plain functions of (true, predicted) class ids. :func:`write_report` turns an
:class:`~fluxvit.evaluate.runner.EvalResult` measured with ``per_video_top`` into a folder:

    report.md        the run (checkpoint, data, grid, budget, views, device and dtype), top-1,
                     top-5, macro-F1, videos evaluated and broken, the most-confused pairs, the
                     per-class table (worst F1 first), links to the files below
    predictions.csv  one row per evaluated video: path, label, the top classes with their
                     probabilities, correct (top-1: 1 or 0)
    per_class.csv    every class: precision, recall, F1, support, times predicted
    confusion.csv    the whole matrix, rows = true class, columns = predicted, with class names
    confusion.png    the matrix; above PLOT_CLASSES classes, the sub-matrix of the classes in
                     the most-confused pairs

Precision is undefined for a class never predicted, recall for a class without videos: left
empty (CSV) or a dash (markdown), never a made-up 0. F1 = 2 TP / (2 TP + FP + FN) is defined
for every class that occurs as a label or a prediction, and macro-F1 is its mean over those
classes (scikit-learn's default).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fluxvit import limits
from fluxvit.atomic import atomic_directory, atomic_write, write_text
from fluxvit.data.annotations import Annotations
from fluxvit.data.datasets import records_of
from fluxvit.errors import ConfigError
from fluxvit.evaluate.report import markdown_cell, markdown_table
from fluxvit.files import inside, new_or_empty_directory

REPORT, PREDICTIONS, PER_CLASS, CONFUSION, PLOT = (
    "report.md", "predictions.csv", "per_class.csv", "confusion.csv", "confusion.png")
TOP = 5  # classes per video in predictions.csv (what evaluate(per_video_top=TOP) keeps)
PLOT_CLASSES = 30  # more than this many on an axis are unreadable: plot the most-confused ones
PAIRS = 20  # most-confused pairs listed in report.md
BROKEN_LISTED = 50  # broken videos named in report.md (all are counted)


@dataclass(frozen=True)
class ClassMetrics:
    """One class's row: ``precision`` (of the videos predicted as it, the share that are it),
    ``recall`` (of its videos, the share predicted as it), ``f1`` - fractions in [0, 1], None
    where undefined - ``support`` (its videos) and ``predicted`` (videos predicted as it)."""

    index: int
    name: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    predicted: int


def confusion_matrix(true: Iterable[int], predicted: Iterable[int], num_classes: int) -> np.ndarray:
    """(K, K) int64 counts for ``num_classes`` K: entry [t, p] is how many videos of class t
    were predicted as p (rows true, columns predicted; it sums to the number of pairs). Class
    ids outside 0..K-1, or lists of unequal length, are a ConfigError; K is capped by
    :data:`~fluxvit.limits.CONFUSION_CLASSES`."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"a confusion matrix needs a positive number of classes, got {num_classes!r}")
    limits.CONFUSION_CLASSES.check(num_classes, "confusion matrix")
    t = np.asarray(list(true), dtype=np.int64).reshape(-1)
    p = np.asarray(list(predicted), dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ConfigError(f"confusion matrix: {len(t)} true labels but {len(p)} predictions")
    outside = (t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ConfigError(f"confusion matrix: pair {i} ({t[i]}, {p[i]}) names a class outside 0..{num_classes - 1}")
    k = num_classes
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def class_metrics(confusion: np.ndarray, names: Sequence[str] | None = None) -> list[ClassMetrics]:
    """Precision, recall, F1, support and predictions of every class of ``confusion`` (K, K),
    named by ``names`` (K of them; default the class ids)."""
    confusion = np.asarray(confusion)
    names = _checked_names(names, len(confusion))
    tp = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    out = []
    for c in range(len(confusion)):
        hit, n_true, n_pred = int(tp[c]), int(support[c]), int(predicted[c])
        wrong = n_true + n_pred - 2 * hit  # FN + FP
        out.append(ClassMetrics(
            c, names[c],
            precision=hit / n_pred if n_pred else None,
            recall=hit / n_true if n_true else None,
            f1=2 * hit / (2 * hit + wrong) if n_true or n_pred else None,
            support=n_true, predicted=n_pred))
    return out


def macro_f1(metrics: Sequence[ClassMetrics]) -> float | None:
    """The mean F1 over the classes that occur (as a label or a prediction); None if none does."""
    scores = [m.f1 for m in metrics if m.f1 is not None]
    return sum(scores) / len(scores) if scores else None


def most_confused(confusion: np.ndarray, n: int | None = PAIRS) -> list[tuple[int, int, int]]:
    """The ``n`` (None: all) largest off-diagonal entries of ``confusion`` as (true, predicted,
    count), most videos first, ties by class ids; only pairs that happened (count > 0)."""
    off = np.array(confusion, dtype=np.int64, copy=True)
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    counts = off[t, p]
    order = np.lexsort((p, t, -counts))[: None if n is None else max(n, 0)]
    return [(int(t[i]), int(p[i]), int(counts[i])) for i in order]


def plot_classes(confusion: np.ndarray, max_classes: int = PLOT_CLASSES) -> list[int]:
    """The classes (ids, ascending) a readable plot of ``confusion`` shows: all of them when
    there are at most ``max_classes``; else those of the most-confused pairs, taken pair by
    pair (most videos first; a pair whose two classes no longer fit is passed over) until
    ``max_classes`` are chosen; with no confusion at all, the classes with the most videos."""
    k = len(confusion)
    if k <= max_classes:
        return list(range(k))
    chosen: set[int] = set()
    for t, p, _ in most_confused(confusion, None):
        if len(chosen | {t, p}) <= max_classes:
            chosen |= {t, p}
        if len(chosen) == max_classes:
            break
    if not chosen:
        support = np.asarray(confusion).sum(1)
        chosen = {int(c) for c in np.lexsort((np.arange(k), -support))[:max_classes] if support[c] > 0}
    return sorted(chosen)


def plot_confusion(confusion: np.ndarray, names: Sequence[str], classes: Sequence[int], path: str | os.PathLike,
                   title: str = "confusion matrix") -> Path:
    """PNG of ``confusion`` restricted to ``classes`` (rows true, columns predicted), counts
    written in the cells, class names on both axes; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    classes = list(classes)
    sub = np.asarray(confusion)[np.ix_(classes, classes)]
    n = max(len(classes), 1)
    side = max(4.5, 0.34 * n + 3.0)  # inches: about a third of an inch a class, room for the names
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=110)
    try:
        image = ax.imshow(sub, cmap="Blues", vmin=0, vmax=max(int(sub.max(initial=0)), 1))
        labels = [_short(names[c], 28) for c in classes]
        ax.set_xticks(range(len(classes)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), labels, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
        top = sub.max(initial=0)
        for (i, j), v in np.ndenumerate(sub):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6 if n > 15 else 8,
                        color="white" if v > top / 2 else "black")
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="videos", ticks=MaxNLocator(integer=True))
        fig.tight_layout()
        path = Path(path)
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the report folder
def check_report_dir(path: str | os.PathLike, num_classes: int, data: str | os.PathLike | None = None) -> Path:
    """``path`` if it is a new or an empty folder (a report is never written over another, nor
    into a folder holding anything else) outside the folder dataset ``data`` (a folder there
    would be read as one more class), and a confusion matrix of ``num_classes`` is within
    :data:`~fluxvit.limits.CONFUSION_CLASSES`; else one-line ConfigError."""
    limits.CONFUSION_CLASSES.check(num_classes, f"report {path}")
    if data is not None and os.path.isdir(data) and inside(path, data):
        raise ConfigError(f"report {path}: is inside the dataset folder {data}, whose folders are read as its "
                          "classes; choose a report folder outside it")
    return new_or_empty_directory(path, "report folder")


def class_names(model, annotations: Annotations | None = None) -> list[str]:
    """The model's K class names: its own, else the annotation file's class list, else the ids."""
    k = model.num_classes
    for names in (getattr(model, "class_names", None), annotations.classes if annotations is not None else None):
        if names and len(names) == k:
            return [str(n) for n in names]
    return [str(i) for i in range(k)]


def write_report(
    out_dir: str | os.PathLike, result, annotations: Annotations, names: Sequence[str], checkpoint: str,
    selector: str | None = None,
) -> Path:
    """Write the report folder (see the module's docstring) of ``result``, an
    :class:`~fluxvit.evaluate.runner.EvalResult` of ``annotations`` measured with
    ``per_video_top`` (video id = annotation row), for a model of the classes ``names``: the
    folder atomically, whole or not at all (:func:`~fluxvit.atomic.atomic_directory`). ``out_dir`` must be new or empty
    (:func:`check_report_dir`). Returns the path of report.md."""
    if result.per_video_top is None:
        raise ConfigError("a failure report needs each video's top classes: evaluate(..., per_video_top=5)")
    names = [str(n) for n in names]  # as many as the model's classes (an empty list: confusion_matrix refuses)
    out = check_report_dir(out_dir, len(names), annotations.csv)
    records = records_of(annotations)
    rows = sorted(result.per_video_top.items())
    confusion = confusion_matrix([records[v].label for v, _ in rows], [top[0][0] for _, top in rows], len(names))
    metrics = class_metrics(confusion, names)

    k = max((len(top) for _, top in rows), default=min(TOP, len(names)))
    table = [["path", "label", *(f"{key}{i}" for i in range(1, k + 1) for key in ("top", "prob")), "correct"]]
    for vid, top in rows:
        label = records[vid].label
        cells = [cell for c, p in top for cell in (names[c], f"{p:.5f}")]
        table.append([str(records[vid].path), names[label], *cells, int(top[0][0] == label)])
    shown = plot_classes(confusion)
    title = (f"confusion matrix, {len(names)} classes" if len(shown) == len(names) else
             f"confusion matrix: {len(shown)} of {len(names)} classes (those of the most-confused pairs)")
    with atomic_directory(out) as tmp:  # the folder appears whole: an interrupted one is no report
        _write_csv(tmp / PREDICTIONS, table)
        _write_csv(tmp / PER_CLASS, [["id", "class", "precision", "recall", "f1", "support", "predicted"]] + [
            [m.index, m.name, _fraction(m.precision), _fraction(m.recall), _fraction(m.f1), m.support, m.predicted]
            for m in metrics])
        _write_csv(tmp / CONFUSION, [["true \\ predicted", *names]] +
                   [[names[t], *confusion[t].tolist()] for t in range(len(names))])
        plot_confusion(confusion, names, shown, tmp / PLOT, title)
        write_text(tmp / REPORT, _markdown(result, annotations, names, checkpoint, selector, confusion,
                                           metrics, len(shown)))
    return out / REPORT


def _markdown(result, annotations: Annotations, names: Sequence[str], checkpoint: str, selector: str | None,
              confusion: np.ndarray, metrics: list[ClassMetrics], plotted: int) -> str:
    f1 = macro_f1(metrics)
    lines = [
        "# Evaluation report: where the model fails", "",
        f"- checkpoint: {_code(checkpoint)}",
        f"- data: {_code(annotations.csv)} ({len(annotations)} videos listed)",
        f"- grid {result.grid}, budget {result.budget} tokens" + (f" (selector {selector})" if selector else "")
        + f", views {result.views_per_video} (clips x crops)",
        f"- device {result.device}, dtype {result.dtype}", "",
        f"**top-1 {result.top1:.2f}%, top-5 {result.top5:.2f}%, macro-F1 "
        f"{'–' if f1 is None else f'{f1:.3f}'}** over {result.videos} videos evaluated; "
        f"{result.broken} broken (skipped).", "",
        f"Files: [per-video predictions]({PREDICTIONS}), [per-class metrics]({PER_CLASS}), "
        f"[confusion matrix]({CONFUSION}) (rows true, columns predicted), [its plot]({PLOT}).", "",
        "## Most-confused pairs", "",
    ]
    support = confusion.sum(1)
    pairs = [{"true": names[t], "predicted": names[p], "videos": n,
              "share": f"{100 * n / support[t]:.1f}%"} for t, p, n in most_confused(confusion, PAIRS)]
    lines += [markdown_table(pairs, [("true", "true"), ("predicted", "predicted as"), ("videos", "videos"),
                                     ("share", "of the true class")]) if pairs
              else "No video was misclassified.", ""]
    note = "" if plotted == len(names) else f" ({plotted} of {len(names)} classes: those of the most-confused pairs)"
    lines += [f"![confusion matrix]({PLOT}){note}", "", "## Per class (worst F1 first)", ""]
    off = np.array(confusion, copy=True)
    np.fill_diagonal(off, 0)
    rows = []
    for m in sorted((m for m in metrics if m.f1 is not None), key=lambda m: (m.f1, -m.support, m.index)):
        worst = int(off[m.index].argmax())
        rows.append({"name": m.name, "precision": m.precision, "recall": m.recall, "f1": m.f1,
                     "support": m.support, "predicted": m.predicted,
                     "mistaken": f"{names[worst]} ({off[m.index, worst]})" if off[m.index, worst] else None})
    three = lambda v: f"{v:.3f}"  # noqa: E731
    lines += [markdown_table(rows, [("name", "class"), ("precision", "precision", three), ("recall", "recall", three),
                                    ("f1", "F1", three), ("support", "videos"), ("predicted", "predicted"),
                                    ("mistaken", "most often mistaken for")]), ""]
    if result.broken_videos:
        lines += ["## Broken videos (skipped)", ""]
        lines += [f"- {markdown_cell(line)}" for line in result.broken_videos[:BROKEN_LISTED]]
        if len(result.broken_videos) > BROKEN_LISTED:
            lines.append(f"- ... and {len(result.broken_videos) - BROKEN_LISTED} more")
        lines.append("")
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[list]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return write_text(path, buffer.getvalue())


def _checked_names(names: Sequence[str] | None, k: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(k)]
    names = [str(n) for n in names]
    if len(names) != k:
        raise ConfigError(f"{len(names)} class names for {k} classes")
    if not names:
        raise ConfigError("a failure report needs at least one class")
    return names


def _fraction(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.4f}"


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _code(text) -> str:
    return "`" + _short(str(text), 400).replace("`", "'") + "`"


__all__ = ["ClassMetrics", "confusion_matrix", "class_metrics", "macro_f1", "most_confused", "plot_classes",
           "plot_confusion", "check_report_dir", "class_names", "write_report"]
