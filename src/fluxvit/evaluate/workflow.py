"""The Token Optimization workflow: search every budget, compare with the usual ways of meeting
it, store the choices with the checkpoint, and write the table and the plot."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from fluxvit import distributed
from fluxvit.atomic import write_text
from fluxvit.data.annotations import Annotations
from fluxvit.evaluate.report import format_gflops, markdown_table, plot_accuracy_vs_gflops
from fluxvit.evaluate.runner import EvalResult, Views, evaluate, token_optimization_scorer
from fluxvit.evaluate.token_optimization import (
    BudgetChoice,
    Score,
    SearchSpace,
    choices_metadata,
    plain_grids,
    scores_metadata,
    search_budgets,
)
from fluxvit.flux.grid import Grid
from fluxvit.models.checkpoint import update_checkpoint
from fluxvit.placement import Placement

log = logging.getLogger(__name__)

METHODS = {
    "fewer_frames": "fewer frames",
    "lower_resolution": "lower resolution",
    "selection": "selection from the default grid",
    "to": "Token Optimization",
}
COLUMNS = [("budget", "tokens"), ("gflops", "GFLOPs", format_gflops), ("fewer_frames", "fewer frames"),
           ("lower_resolution", "lower res."), ("selection", "selection"), ("to", "TO"), ("to_grid", "TO grid"),
           ("decision", "why (best other grid vs default, paired)")]


@dataclass
class TOReport:
    rows: list[dict]
    choices: dict[int, BudgetChoice]
    table: str
    markdown: Path
    plot: Path
    checkpoint: Path | None
    latency: dict | None = None  # with a latency target: the grid and budget chosen for it


def plain_accuracies(model, annotations: Annotations, budget: int, views: Views, workers: int = 0,
                     **run) -> dict[str, tuple[Grid, EvalResult]]:
    """The usual ways to meet ``budget`` without selection, from the model's default grid
    (:func:`~fluxvit.evaluate.token_optimization.plain_grids`), each evaluated (``run``: more
    :func:`evaluate` arguments, e.g. placement and batch size): name -> (grid, result)."""
    return {name: (g, evaluate(model, annotations, g, views, workers=workers, **run))
            for name, g in plain_grids(budget, model.default_grid, model.patch_size).items()}


def compare_budget(model, budget: int, choice: BudgetChoice, plain: dict[str, tuple[Grid, Score]]) -> dict:
    """One table row: top-1 of each way of meeting ``budget`` and their GFLOPs (paper count);
    ``plain``: the plain grids' scores (name -> (grid, score))."""
    row: dict = {"budget": budget, "gflops": model.estimate_flops(budget).paper / 1e9}
    for name, (g, score) in plain.items():
        row[name], row[f"{name}_gflops"], row[f"{name}_grid"] = score.top1, model.estimate_flops(g).paper / 1e9, str(g)
    # The default grid cut to the budget was scored by the search (None: it has too few tokens).
    row["selection"] = choice.reference_accuracy
    row["to"], row["to_grid"] = choice.accuracy, str(choice.best.with_budget(None))
    row["decision"] = choice.decision()
    return row


def token_optimization_report(
    model, annotations: Annotations, budgets: list[int], space: SearchSpace = SearchSpace(),
    views: Views = Views(), subset: float = 0.3, refine_top: int = 3, out_dir: str | os.PathLike = "runs/optimize",
    save_to: str | os.PathLike | None = None, progress: bool = False, workers: int = 0, min_gain_se: float = 2.0,
    placement: Placement = Placement(), latency_ms: float | None = None,
) -> TOReport:
    """Search each budget, compare it with the plain ways of meeting it, store the choices in
    ``save_to`` (a fluxvit checkpoint), with the device and precision they were measured in.
    Two passes over the videos in all (:func:`~fluxvit.evaluate.token_optimization.search_budgets`).
    The model's default grid is kept unless a grid beats it by more than ``min_gain_se`` standard errors (see
    :mod:`fluxvit.evaluate.token_optimization`). ``latency_ms``: also choose, among every grid and
    budget scored on the whole split, the most accurate whose end-to-end time (decode + preprocess
    + forward, measured here on the split's first readable video) fits that many ms."""
    score_many = token_optimization_scorer(model, annotations, views, subset, workers, progress, placement)
    plain = {b: plain_grids(b, model.default_grid, model.patch_size) for b in budgets}
    choices, scores = search_budgets(
        {b: space.candidates(b, model.patch_size) for b in budgets}, score_many, refine_top, model.patch_size,
        reference=model.default_grid, min_gain_se=min_gain_se,
        also_full=[g for grids in plain.values() for g in grids.values()])
    rows = [compare_budget(model, b, choices[b], {name: (g, scores[g]) for name, g in plain[b].items()})
            for b in budgets]
    out = Path(out_dir)
    table = markdown_table(rows, COLUMNS)
    if not distributed.current().is_main:  # under torchrun every rank searched; rank 0 writes
        return TOReport(rows, choices, table, out / "report.md", out / "token_optimization.png", None)
    latency = _latency_choice(model, annotations, scores, views, placement, latency_ms) if latency_ms else None
    out.mkdir(parents=True, exist_ok=True)
    series = {METHODS[m]: [(r.get(f"{m}_gflops", r["gflops"]), r.get(m)) for r in rows] for m in METHODS}
    plot = plot_accuracy_vs_gflops(series, out / "token_optimization.png",
                                   title=f"{model.name}: accuracy vs compute ({annotations.csv.name})")
    md = out / "report.md"
    write_text(md, f"# Token Optimization\n\nCheckpoint model: `{model.name}`; data: `{annotations.csv}`; "
                  f"views {views}; measured on {placement}.\n\n{table}\n\n"
                  + (f"{latency_line(latency)}\n\n" if latency else "")
                  + "![accuracy vs GFLOPs](token_optimization.png)\n")
    saved = None
    if save_to is not None:
        if Path(save_to).suffix == ".safetensors" or Path(save_to).is_dir():
            # merged with what the file holds when written: concurrent runs keep each other's budgets
            def changes(meta: dict) -> dict:
                record = choices_metadata(choices, meta, placement.to_dict())
                record |= scores_metadata(choices, meta)
                if latency:
                    targets = dict(meta.get(LATENCY_KEY) or {})
                    targets[f"{latency_ms:g}"] = latency
                    record[LATENCY_KEY] = targets
                return record

            saved = update_checkpoint(model, save_to, changes)
            log.info("stored Token Optimization choices in %s", saved)
        else:
            log.warning("%s is not a fluxvit checkpoint: choices not stored (convert it first)", save_to)
    return TOReport(rows, choices, table, md, plot, saved, latency)


LATENCY_KEY = "token_optimization_latency"  # checkpoint metadata: {target ms: the choice for it}


def _latency_choice(model, annotations: Annotations, scores: dict[Grid, Score], views: Views, placement: Placement,
                    target_ms: float) -> dict:
    """The most accurate scored grid and budget whose measured end-to-end ms fits ``target_ms``."""
    from fluxvit.evaluate.latency import choose_for_latency, measure_on_sample

    video, costs = measure_on_sample(model, [r.path for r in annotations.records], list(scores), views, placement)
    best = choose_for_latency({g: scores[g].top1 for g in scores}, {g: c.total_ms for g, c in costs.items()},
                              target_ms)
    return {"target_ms": target_ms, "grid": str(best.with_budget(None)), "budget": best.budget,
            "top1": round(scores[best].top1, 3), **costs[best].to_dict(), "video": str(video),
            **placement.to_dict()}


def latency_line(choice: dict) -> str:
    budget = choice["budget"] if choice["budget"] is not None else "all"
    return (f"Latency target {choice['target_ms']:g} ms end to end: grid {choice['grid']} at {budget} tokens, "
            f"top-1 {choice['top1']:.1f}%, {choice['total_ms']:.1f} ms (decode {choice['decode_ms']:.1f}, "
            f"preprocess {choice['preprocess_ms']:.1f}, forward {choice['forward_ms']:.1f}) on {choice['device']} "
            f"{choice['dtype']}")


__all__ = ["token_optimization_report", "compare_budget", "plain_accuracies", "TOReport"]
