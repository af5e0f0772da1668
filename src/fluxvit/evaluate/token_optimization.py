"""Token Optimization (TO): for a token budget N, choose the sampling grid (T, R) whose
selected N tokens give the best accuracy.

The search is cheap by construction: every candidate grid is scored on a subset of the
validation videos, and only the best few are scored on all of them. The choice is stored with
the checkpoint, so ``eval``/``predict --budget N`` use it by default.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fluxvit.errors import CheckpointError, ConfigError
from fluxvit.flux.grid import Grid

log = logging.getLogger(__name__)

META_KEY = "token_optimization"

# score(grid, subset) -> top-1 accuracy (%); subset=True scores on the cheap subset only.
ScoreFn = Callable[[Grid, bool], float]


@dataclass(frozen=True)
class SearchSpace:
    """Candidate frame counts and resolutions; grids sampling more than ``max_factor`` x N
    patches are skipped (their decoding and embedding cost stops paying off)."""

    frames: tuple[int, ...] = (2, 4, 6, 8, 12, 16, 24)
    sizes: tuple[int, ...] = (112, 140, 168, 196, 224, 252, 280)
    max_factor: float = 8.0

    def candidates(self, budget: int, patch_size: int) -> list[Grid]:
        """Every grid with at least ``budget`` and at most ``max_factor * budget`` patches."""
        out = []
        for t in self.frames:
            for r in self.sizes:
                g = Grid(t, r, budget=budget)
                if budget <= g.num_patches(patch_size) <= self.max_factor * budget:
                    out.append(g)
        if not out:
            raise ConfigError(
                f"no candidate grid has between {budget} and {int(self.max_factor * budget)} tokens "
                f"(frames {self.frames}, sizes {self.sizes})"
            )
        return out


def plain_grids(budget: int, default: Grid, patch_size: int) -> dict[str, Grid]:
    """The usual ways to meet a budget without selection, from the default grid (T, R):
    ``fewer_frames`` keeps R and drops frames; ``lower_resolution`` keeps T and shrinks R.
    Each samples the largest grid with at most ``budget`` tokens."""
    _, h, w = default.patch_grid(patch_size)
    out = {}
    frames = min(default.frames, budget // (h * w))
    if frames >= 1:
        out["fewer_frames"] = Grid(frames, default.height, default.width)
    side = math.isqrt(budget // default.frames) if budget >= default.frames else 0
    side = min(side, h)
    if side >= 1:
        out["lower_resolution"] = Grid(default.frames, side * patch_size)
    return out


@dataclass
class BudgetChoice:
    """The outcome of the search for one budget."""

    budget: int
    best: Grid
    accuracy: float
    trials: list[dict] = field(default_factory=list)  # {"grid", "stage", "top1"}

    def to_dict(self) -> dict:
        return {"grid": f"{self.best.frames}x{self.best.height}x{self.best.width}",
                "top1": round(self.accuracy, 3), "trials": self.trials}


def optimize_budget(
    budget: int,
    candidates: Sequence[Grid],
    score: ScoreFn,
    refine_top: int = 3,
    patch_size: int = 14,
) -> BudgetChoice:
    """Two-stage search over ``candidates`` for ``budget``: all on the subset, the best
    ``refine_top`` on the full split. Ties go to the grid with fewer patches (cheaper)."""
    trials = []
    coarse = []
    for g in candidates:
        acc = score(g.with_budget(budget), True)
        trials.append({"grid": str(g.with_budget(None)), "stage": "subset", "top1": round(acc, 3)})
        coarse.append((acc, g))
    coarse.sort(key=lambda ag: (-ag[0], ag[1].num_patches(patch_size)))
    finalists = [g for _, g in coarse[:refine_top]]
    fine = []
    for g in finalists:
        acc = score(g.with_budget(budget), False)
        trials.append({"grid": str(g.with_budget(None)), "stage": "full", "top1": round(acc, 3)})
        fine.append((acc, g))
    fine.sort(key=lambda ag: (-ag[0], ag[1].num_patches(patch_size)))
    acc, best = fine[0]
    log.info("budget %d: best grid %s (top-1 %.2f) of %d candidates", budget, best, acc, len(candidates))
    return BudgetChoice(budget, best.with_budget(budget), acc, trials)


def stored_grid(meta: dict | None, budget: int) -> Grid | None:
    """The grid Token Optimization stored for ``budget`` in a checkpoint's metadata, if any.

    Metadata comes with the file and is not trusted: a malformed record is a
    :class:`CheckpointError`, not a crash."""
    record = (meta or {}).get(META_KEY) or {}
    choice = record.get(str(budget)) if isinstance(record, dict) else record
    if not choice:
        return None
    try:
        return Grid.parse(choice["grid"], budget=budget)
    except (TypeError, KeyError, ConfigError) as e:
        raise CheckpointError(f"the checkpoint's stored Token Optimization record for {budget} tokens is "
                              f"malformed ({e})") from None


def choices_metadata(choices: dict[int, BudgetChoice], existing: dict | None = None) -> dict:
    """Merge ``choices`` into a checkpoint's stored TO record (without the trial logs)."""
    record = dict((existing or {}).get(META_KEY) or {})
    for budget, c in choices.items():
        record[str(budget)] = {k: v for k, v in c.to_dict().items() if k != "trials"}
    return {META_KEY: record}
