"""Token Optimization (TO): for a token budget N, choose the sampling grid (T, R) whose
selected N tokens give the best accuracy.

The search is cheap by construction: every candidate grid is scored on a subset of the
validation videos, and only the best few are scored on all of them; each stage is one pass over
the videos for every grid and budget, so each video is decoded once per stage
(:func:`fluxvit.evaluate.runner.token_optimization_scorer`). The choice is stored with
the checkpoint, so ``eval``/``predict --budget N`` use it by default.

The search is also guarded against its own noise. With a few hundred validation videos, the
best of a dozen grids beats the model's default grid by a video or two by chance alone, and
that "gain" need not carry over to new videos. So the default grid (with selection) is kept
unless the best grid beats it by more than ``min_gain_se`` standard errors of the *paired*
difference: on the same videos, b = videos only the candidate gets right, c = videos only the
default gets right; the gain b - c must exceed ``min_gain_se * sqrt(b + c)`` (McNemar). The
paper picks the plain argmax (``min_gain_se=0``); with Kinetics' ~20k validation videos the
guard costs little: if two grids disagree on 1,000 videos, 2 SE is 63 videos, 0.3 points.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from fluxvit.errors import CheckpointError, ConfigError
from fluxvit.flux.grid import Grid
from fluxvit.limits import GRID_TOKENS
from fluxvit.typecheck import in_range, show

log = logging.getLogger(__name__)

META_KEY = "token_optimization"
# each budget's finalists scored on the whole split: {tokens: {grid: top-1}} (what fluxvit serve trades among)
SCORES_KEY = "token_optimization_scores"


@dataclass(frozen=True)
class Score:
    """Top-1 of one grid, with each video's outcome (video id -> correct) for paired tests."""

    correct: dict[Hashable, bool]

    @property
    def top1(self) -> float:
        return 100.0 * sum(self.correct.values()) / max(len(self.correct), 1)

    def paired_gain(self, reference: Score) -> tuple[int, float]:
        """(b - c, sqrt(b + c)) over the videos both scored: the net videos this grid gets
        right that ``reference`` gets wrong, and the standard error of that count."""
        shared = self.correct.keys() & reference.correct.keys()
        b = sum(self.correct[v] and not reference.correct[v] for v in shared)
        c = sum(reference.correct[v] and not self.correct[v] for v in shared)
        return b - c, math.sqrt(b + c)


# score(grid, subset) -> Score; subset=True scores on the cheap subset only.
ScoreFn = Callable[[Grid, bool], Score]
# score_many(grids, subset) -> {grid: Score}: several grids in one pass over the videos.
ScoreManyFn = Callable[[Sequence[Grid], bool], dict[Grid, Score]]


@dataclass(frozen=True)
class SearchSpace:
    """Candidate frame counts and resolutions; grids sampling fewer than N or more than
    ``max_factor`` x N patches are skipped (the latter's decoding and embedding cost stops paying
    off), so one space serves every budget, from a nano model's 64 tokens to FluxViT-B's 3072.
    These are the defaults of ``fluxvit optimize`` too."""

    frames: tuple[int, ...] = (2, 4, 6, 8, 12, 16, 24)
    sizes: tuple[int, ...] = (56, 70, 84, 98, 112, 140, 168, 196, 224, 252, 280)
    max_factor: float = 8.0

    def __post_init__(self) -> None:
        for name in ("frames", "sizes"):
            values = getattr(self, name)
            if not isinstance(values, (tuple, list)) or not values:
                raise ConfigError(f"search space {name} must be a non-empty list of integers, got {show(values)}")
            for v in values:
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ConfigError(f"search space {name} {show(tuple(values))}: {show(v)} is not a positive integer")
            object.__setattr__(self, name, tuple(values))
        if isinstance(self.max_factor, bool) or not isinstance(self.max_factor, (int, float)):
            raise ConfigError(f"search space max_factor must be a number, got {show(self.max_factor)}")
        in_range(self.max_factor, "max_factor", lo=1, what="search space")  # a grid has >= budget patches

    def candidates(self, budget: int, patch_size: int) -> list[Grid]:
        """Every grid with at least ``budget`` and at most ``max_factor * budget`` patches. The
        budget and the space's largest grid are checked against the cap
        :data:`~fluxvit.limits.GRID_TOKENS` first."""
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise ConfigError(f"token budget must be a positive integer, got {show(budget)}")
        GRID_TOKENS.check(budget, f"token budget {budget}")
        Grid(max(self.frames), max(self.sizes)).check_size(patch_size)
        out = []
        for t in self.frames:
            for r in self.sizes:
                g = Grid(t, r, budget=budget)
                if budget <= g.num_patches(patch_size) <= self.max_factor * budget:
                    out.append(g)
        if not out:
            raise ConfigError(
                f"no candidate grid has between {budget} and {self.max_factor * budget:g} tokens "
                f"(frames {show(self.frames)}, sizes {show(self.sizes)})"
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
    """The outcome of the search for one budget. ``reference`` is the model's default grid (None
    when it has fewer patches than the budget); ``challenger`` the best other grid, with its
    paired gain over the reference in videos and in standard errors."""

    budget: int
    best: Grid
    accuracy: float
    reference: Grid | None = None
    reference_accuracy: float | None = None
    challenger: Grid | None = None
    gain_videos: int = 0
    gain_se: float = 0.0
    trials: list[dict] = field(default_factory=list)  # {"grid", "stage", "top1"}

    @property
    def kept_reference(self) -> bool:
        return self.reference is not None and self.best == self.reference

    def decision(self) -> str:
        """One line for reports: why this grid."""
        if self.reference is None:
            return "best of the candidates (default grid too small)"
        if self.challenger is None:
            return "default grid is the best"
        videos = "video" if abs(self.gain_videos) == 1 else "videos"
        gain = f"{self.challenger.with_budget(None)} {self.gain_videos:+d} {videos} ({self.gain_se:.1f} SE)"
        return f"kept default: {gain}" if self.kept_reference else f"switched: {gain}"

    def to_dict(self) -> dict:
        return {"grid": self.best.shape,
                "top1": round(self.accuracy, 3), "decision": self.decision(), "trials": self.trials}


def search_budgets(
    candidates: dict[int, Sequence[Grid]],
    score_many: ScoreManyFn,
    refine_top: int = 3,
    patch_size: int = 14,
    reference: Grid | None = None,
    min_gain_se: float = 2.0,
    also_full: Sequence[Grid] = (),
) -> tuple[dict[int, BudgetChoice], dict[Grid, Score]]:
    """Two-stage search for every budget at once, in two passes over the videos (so a scorer
    that decodes each video once per pass decodes it twice per search, not once per grid):

    1. every budget's ``candidates`` on the subset;
    2. each budget's best ``refine_top``, the ``reference`` grid (the model's default) cut to the
       budget, and ``also_full`` (e.g. the report's plain grids) on the full split.

    Ties go to the grid with fewer patches (cheaper). The reference is kept unless the best grid
    beats it by more than ``min_gain_se`` standard errors of the paired difference (module
    docstring). Returns each budget's choice and every stage-2 score."""
    if not min_gain_se >= 0:
        raise ConfigError(f"min_gain_se must be >= 0 standard errors, got {min_gain_se}")
    candidates = {budget: [g.with_budget(budget) for g in grids] for budget, grids in candidates.items()}

    def ranked(budget: int, scores: dict[Grid, Score], grids: Sequence[Grid]) -> list[Grid]:
        return sorted(grids, key=lambda g: (-scores[g].top1, g.num_patches(patch_size)))

    coarse = score_many(_unique(g for grids in candidates.values() for g in grids), True)
    finalists, references = {}, {}
    for budget, grids in candidates.items():
        finalists[budget] = ranked(budget, coarse, grids)[:refine_top]
        ref = reference.with_budget(budget) if reference is not None else None
        if ref is not None and ref.num_patches(patch_size) >= budget:
            references[budget] = ref
            if ref not in finalists[budget]:
                finalists[budget].append(ref)
    fine = score_many(_unique([*(g for f in finalists.values() for g in f), *also_full]), False)

    choices = {}
    for budget, grids in candidates.items():
        trials = [{"grid": str(g.with_budget(None)), "stage": "subset", "top1": round(coarse[g].top1, 3)}
                  for g in grids]
        trials += [{"grid": str(g.with_budget(None)), "stage": "full", "top1": round(fine[g].top1, 3)}
                   for g in finalists[budget]]
        order = ranked(budget, fine, finalists[budget])
        best = order[0]
        choice = BudgetChoice(budget, best, fine[best].top1, trials=trials)
        ref = references.get(budget)
        if ref is not None:
            choice.reference, choice.reference_accuracy = ref, fine[ref].top1
            challenger = next((g for g in order if g != ref), None)
            if challenger is not None:
                gain, se = fine[challenger].paired_gain(fine[ref])
                choice.challenger, choice.gain_videos = challenger, gain
                choice.gain_se = gain / se if se > 0 else 0.0
                if best != ref and gain <= min_gain_se * se:
                    choice.best, choice.accuracy = ref, fine[ref].top1
        log.info("budget %d: %s (top-1 %.2f) of %d candidates; %s", budget, choice.best, choice.accuracy,
                 len(grids), choice.decision())
        choices[budget] = choice
    return choices, fine


def _unique(grids) -> list[Grid]:
    return list(dict.fromkeys(grids))


def optimize_budget(
    budget: int,
    candidates: Sequence[Grid],
    score: ScoreFn,
    refine_top: int = 3,
    patch_size: int = 14,
    reference: Grid | None = None,
    min_gain_se: float = 2.0,
) -> BudgetChoice:
    """:func:`search_budgets` for one budget with a scorer of one grid at a time."""
    choices, _ = search_budgets({budget: candidates}, lambda grids, subset: {g: score(g, subset) for g in grids},
                                refine_top, patch_size, reference, min_gain_se)
    return choices[budget]


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


def choices_metadata(choices: dict[int, BudgetChoice], existing: dict | None = None,
                     measured_on: dict | None = None) -> dict:
    """Merge ``choices`` into a checkpoint's stored TO record (without the trial logs);
    ``measured_on`` (device and dtype of the search) is stored with each choice."""
    stored = (existing or {}).get(META_KEY)
    if stored is not None and not isinstance(stored, dict):  # a malformed record (untrusted file): replaced
        log.warning("the checkpoint's Token Optimization record is not a mapping (%s); replaced by this search's",
                    type(stored).__name__)
        stored = None
    record = dict(stored or {})
    for budget, c in choices.items():
        record[str(budget)] = {k: v for k, v in c.to_dict().items() if k != "trials"} | (measured_on or {})
    return {META_KEY: record}


def scores_metadata(choices: dict[int, BudgetChoice], existing: dict | None = None) -> dict:
    """Merge into a checkpoint's record the whole-split top-1 of each budget's finalists (the
    candidates the search scored on the whole split, the default grid among them; not the plain
    grids a report compares with), by budget (a budget searched again replaces its grids)."""
    stored = (existing or {}).get(SCORES_KEY)
    record = dict(stored) if isinstance(stored, dict) else {}
    for budget, choice in choices.items():
        record[str(budget)] = {t["grid"]: t["top1"] for t in choice.trials if t["stage"] == "full"}
    return {SCORES_KEY: record}


def _percentage(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:  # NaN too
        raise ConfigError(f"top-1 {show(value)} is not a percentage")
    return float(value)


def stored_choices(meta: dict | None) -> dict[Grid, float | None]:
    """Every budget's stored choice: its grid (with the budget) and the top-1 it measured, if
    recorded; empty when the checkpoint stores none. Untrusted: a malformed record (a budget that
    is not a plain positive integer, no grid, a top-1 that is not a percentage) is a
    :class:`CheckpointError`."""
    record = (meta or {}).get(META_KEY)
    if not isinstance(record, dict):
        return {}
    out = {}
    for key, choice in record.items():
        if not (isinstance(key, str) and re.fullmatch(r"[1-9][0-9]{0,8}", key)) or not choice:
            raise CheckpointError(f"the checkpoint's stored Token Optimization record has a malformed entry "
                                  f"{show(key)}")
        grid = stored_grid(meta, int(key))
        try:
            top1 = choice.get("top1")
            out[grid] = None if top1 is None else _percentage(top1)
        except (AttributeError, ConfigError) as e:
            raise CheckpointError(f"the checkpoint's stored Token Optimization record for {key} tokens is "
                                  f"malformed ({e})") from None
    return out


def stored_scores(meta: dict | None, patch_size: int) -> dict[Grid, float]:
    """The whole-split top-1 of each grid (with its budget) among the finalists a checkpoint's Token Optimization
    scored; empty when it stores none. Untrusted: a malformed record is a :class:`CheckpointError`."""
    record = (meta or {}).get(SCORES_KEY)
    if record is None:
        return {}
    out = {}
    try:
        for tokens, grids in record.items():
            for text, top1 in grids.items():
                value = _percentage(top1)
                grid = Grid.parse(text, budget=int(tokens))
                grid.num_tokens(patch_size)
                out[grid] = value
    except (AttributeError, TypeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint's stored Token Optimization scores are malformed ({e})") from None
    return out
