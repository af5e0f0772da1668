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
    placement: Placement = Placement(),
) -> TOReport:
    """Search each budget, compare it with the plain ways of meeting it, store the choices in
    ``save_to`` (a fluxvit checkpoint), with the device and precision they were measured in.
    Two passes over the videos in all (:func:`~fluxvit.evaluate.token_optimization.search_budgets`).
    The model's default grid is kept unless a grid beats it by more than ``min_gain_se`` standard errors (see
    :mod:`fluxvit.evaluate.token_optimization`)."""
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
    out.mkdir(parents=True, exist_ok=True)
    series = {METHODS[m]: [(r.get(f"{m}_gflops", r["gflops"]), r.get(m)) for r in rows] for m in METHODS}
    plot = plot_accuracy_vs_gflops(series, out / "token_optimization.png",
                                   title=f"{model.name}: accuracy vs compute ({annotations.csv.name})")
    md = out / "report.md"
    write_text(md, f"# Token Optimization\n\nCheckpoint model: `{model.name}`; data: `{annotations.csv}`; "
                  f"views {views}; measured on {placement}.\n\n{table}\n\n"
                  "![accuracy vs GFLOPs](token_optimization.png)\n")
    saved = None
    if save_to is not None:
        if Path(save_to).suffix == ".safetensors" or Path(save_to).is_dir():
            # merged with what the file holds when written: concurrent runs keep each other's budgets
            saved = update_checkpoint(model, save_to,
                                      lambda meta: choices_metadata(choices, meta, placement.to_dict()))
            log.info("stored Token Optimization choices in %s", saved)
        else:
            log.warning("%s is not a fluxvit checkpoint: choices not stored (convert it first)", save_to)
    return TOReport(rows, choices, table, md, plot, saved)


__all__ = ["token_optimization_report", "compare_budget", "plain_accuracies", "TOReport"]
