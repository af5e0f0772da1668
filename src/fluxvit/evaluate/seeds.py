"""Results over several seeds: mean and spread per cell, and paired comparisons of two methods.

One run of an experiment on a small test split says little: with 160 test clips one clip is
0.6 points, and a different seed of the data and the training moves a cell by several points.
What the claims of the demo rest on is therefore measured over seeds, and two methods are
compared *paired*: on the same seed, the same clips.

* :func:`mean_sd` - the mean and the sample standard deviation (n - 1) of a cell over seeds.
* :func:`paired` - method A against method B from each seed's per-clip outcomes: the
  difference in points per seed (its mean, sd and worst seed), and over all (seed, clip) pairs
  the mean difference with its standard error, and the clips only one of the two got right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

Outcomes = Mapping[str, bool]  # clip id -> whether the method got it right


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of ``values``; the sd of one value is 0."""
    if not values:
        raise ValueError("mean_sd of no values")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def format_mean_sd(values: Sequence[float], digits: int = 1) -> str:
    """``"71.9 ± 2.3"`` (the value alone for one seed)."""
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


@dataclass(frozen=True)
class PairedDifference:
    """Method A minus method B, in accuracy points, on the same seeds and clips.

    ``per_seed``: A's minus B's top-1 on each seed's clips that both were scored on. ``pairs``:
    (seed, clip) pairs in all; ``mean`` the mean of the per-pair differences (x 100, i.e. the
    pooled accuracy difference) and ``se`` its standard error; ``only_a`` / ``only_b``: pairs
    that only A / only B got right (the pairs where the two differ)."""

    per_seed: tuple[float, ...]
    pairs: int
    mean: float
    se: float
    only_a: int
    only_b: int

    @property
    def seed_mean(self) -> float:
        return mean_sd(self.per_seed)[0]

    @property
    def seed_sd(self) -> float:
        return mean_sd(self.per_seed)[1]

    @property
    def worst_seed(self) -> float:
        return min(self.per_seed)

    def to_dict(self) -> dict:
        return {**asdict(self), "per_seed": list(self.per_seed), "seed_mean": self.seed_mean,
                "seed_sd": self.seed_sd, "worst_seed": self.worst_seed}

    def __str__(self) -> str:
        return (f"{self.seed_mean:+.1f} (worst seed {self.worst_seed:+.1f}; pooled {self.mean:+.1f} "
                f"± {self.se:.1f} SE, {self.only_a} vs {self.only_b} clips)")


def paired(a: Sequence[Outcomes], b: Sequence[Outcomes]) -> PairedDifference:
    """Compare the per-clip outcomes of method ``a`` with ``b``, seed by seed (``a[i]`` and
    ``b[i]`` are the same seed; a clip counts only where both were scored)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired: {len(a)} and {len(b)} seeds; give the same, at least one")
    per_seed, diffs = [], []
    for oa, ob in zip(a, b):
        common = [clip for clip in oa if clip in ob]
        if not common:
            raise ValueError("paired: a seed where the two methods share no clip")
        d = [int(bool(oa[c])) - int(bool(ob[c])) for c in common]
        per_seed.append(100.0 * sum(d) / len(d))
        diffs.extend(d)
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((x - mean) ** 2 for x in diffs) / (n - 1) if n > 1 else 0.0
    return PairedDifference(tuple(per_seed), n, 100.0 * mean, 100.0 * math.sqrt(var / n),
                            only_a=sum(1 for x in diffs if x > 0), only_b=sum(1 for x in diffs if x < 0))
