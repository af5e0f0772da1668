"""Sampling grids: how many frames (T) at which resolution (R), and the tokens they make.

A :class:`Grid` is the small value object that travels with a batch: the sampling (T, H, W)
and, optionally, the token budget N the clip is cut to after patch embedding. A
:class:`FluxGrid` is the family of grids Flux training draws from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fluxvit import limits
from fluxvit.errors import ConfigError

_GRID_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)(?:\s*[xX]\s*(\d+))?\s*$")


def check_budget(budget: int | None) -> None:
    """A token budget is a positive integer (or None: keep every token)."""
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
        raise ConfigError(f"token budget must be a positive integer, got {budget!r:.40}")


@dataclass(frozen=True)
class Grid:
    """A spatiotemporal sampling grid and an optional token budget.

    ``frames`` x ``height`` x ``width`` pixels are sampled; with a patch size ``p`` (tubelet 1)
    they make ``frames * (height // p) * (width // p)`` tokens. ``budget`` (if set) is the number
    of tokens kept after selection; ``None`` keeps them all.
    """

    frames: int
    height: int
    width: int | None = None
    budget: int | None = None

    def __post_init__(self) -> None:
        if self.width is None:
            object.__setattr__(self, "width", self.height)
        for name in ("frames", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"grid {name} must be a positive integer, got {value!r:.40}")
        check_budget(self.budget)

    @classmethod
    def parse(cls, text: str, budget: int | None = None) -> Grid:
        """Parse ``"8x224"`` (T x R, square) or ``"8x224x320"`` (T x H x W)."""
        text = str(text)
        shown = repr(text) if len(text) <= 40 else repr(text[:40]) + "..."
        m = _GRID_RE.match(text)
        if not m:
            raise ConfigError(f"grid {shown} is not of the form TxR or TxHxW (e.g. 8x224)")
        if any(len(g) > 6 for g in m.groups() if g):  # also keeps int() within its digit limit
            raise ConfigError(f"grid {shown} has a number too large for frames or pixels")
        t, h, w = int(m.group(1)), int(m.group(2)), m.group(3)
        return cls(t, h, int(w) if w else h, budget)

    def __str__(self) -> str:
        size = f"{self.height}" if self.height == self.width else f"{self.height}x{self.width}"
        return f"{self.frames}x{size}" + (f"@{self.budget}" if self.budget else "")

    @property
    def shape(self) -> str:
        """``TxHxW``, every side written out: how reports, JSON and stored choices name a grid."""
        return f"{self.frames}x{self.height}x{self.width}"

    def check_patch(self, patch_size: int) -> None:
        """Raise :class:`ConfigError` unless H and W are multiples of ``patch_size``."""
        for name in ("height", "width"):
            value = getattr(self, name)
            if value % patch_size:
                raise ConfigError(
                    f"resolution {name} {value} is not a multiple of the patch size {patch_size}"
                )

    def patch_grid(self, patch_size: int) -> tuple[int, int, int]:
        """(T, h, w): the token grid for ``patch_size`` (checked)."""
        self.check_patch(patch_size)
        return self.frames, self.height // patch_size, self.width // patch_size

    def num_patches(self, patch_size: int) -> int:
        """Tokens the grid makes before selection."""
        t, h, w = self.patch_grid(patch_size)
        return t * h * w

    def check_size(self, patch_size: int) -> int:
        """The grid's patches (tokens before selection), refused in one line over the cap
        :data:`~fluxvit.limits.GRID_TOKENS`: what a door checks before sampling or allocating."""
        from fluxvit.limits import GRID_TOKENS

        n = self.num_patches(patch_size)
        GRID_TOKENS.check(n, f"grid {self.with_budget(None)}")
        return n

    def num_tokens(self, patch_size: int) -> int:
        """Tokens that reach the transformer: the budget, or all of the grid's patches."""
        total = self.num_patches(patch_size)
        if self.budget is None:
            return total
        if self.budget > total:
            raise ConfigError(
                f"token budget {self.budget} is larger than the {total} tokens of grid {self.frames}x"
                f"{self.height}x{self.width}"
            )
        return self.budget

    def with_budget(self, budget: int | None) -> Grid:
        return Grid(self.frames, self.height, self.width, budget)


# How a multi-rank run draws its grids (flux.grid_per): one per optimiser step, the same on every
# rank; or one per rank's local batch, so a step mixes as many grids as there are ranks (the release)
GRID_PER = ("step", "rank_batch")


@dataclass(frozen=True)
class FluxGrid:
    """The family of grids Flux samples from.

    Every (T, R) with T in ``frames`` (start, stop, step; inclusive) and R in ``sizes``
    (inclusive) whose token count ``T * (R // patch)**2`` lies in ``[min_tokens, max_tokens]``.
    The release's K400 recipe: T 6..24 step 2, R 112..336 step 28, tokens 2048..6144.
    """

    frames: tuple[int, int, int] = (6, 24, 2)
    sizes: tuple[int, int, int] = (112, 336, 28)
    min_tokens: int = 2048
    max_tokens: int = 6144
    patch_size: int = 14
    _grids: tuple[Grid, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("frames", "sizes"):
            start, stop, step = getattr(self, name)
            if start < 1 or stop < start or step < 1:
                raise ConfigError(f"flux {name} range {getattr(self, name)} is empty or not positive")
        if self.sizes[0] % self.patch_size or self.sizes[2] % self.patch_size:
            raise ConfigError(
                f"flux sizes {self.sizes} are not multiples of the patch size {self.patch_size}"
            )
        from fluxvit.limits import GRID_TOKENS

        # Tokens grow with T and with R, so the largest grid listed has at most the fewer of
        # max_tokens and the ranges' far corner: checked against the cap before any listing, and
        # each loop stops at its first grid over max_tokens. The listing is thus bounded by the
        # cap (some 2 x cap steps), whatever the ranges (frames 1..1e9) say.
        p = self.patch_size
        (t0, t1, ts), (r0, r1, rs) = self.frames, self.sizes
        corner = (t0 + (t1 - t0) // ts * ts) * ((r0 + (r1 - r0) // rs * rs) // p) ** 2
        GRID_TOKENS.check(min(corner, self.max_tokens),
                          f"flux grids of frames {self.frames} and sizes {self.sizes} up to {self.max_tokens} tokens")
        grids = []
        for t in range(t0, t1 + 1, ts):
            if t * (r0 // p) ** 2 > self.max_tokens:
                break
            for r in range(r0, r1 + 1, rs):
                tokens = t * (r // p) ** 2
                if tokens > self.max_tokens:
                    break
                if tokens >= self.min_tokens:
                    grids.append(Grid(t, r))
        if not grids:
            raise ConfigError(
                f"no grid with frames {self.frames} and sizes {self.sizes} has between "
                f"{self.min_tokens} and {self.max_tokens} tokens"
            )
        object.__setattr__(self, "_grids", tuple(grids))

    @property
    def grids(self) -> tuple[Grid, ...]:
        """All admissible grids, ordered by (T, R)."""
        return self._grids

    def check_budget(self, budget: int) -> None:
        """Raise unless at least one grid has ``budget`` tokens or more."""
        most = max(g.num_patches(self.patch_size) for g in self._grids)
        if budget > most:
            raise ConfigError(f"token budget {budget} is larger than any flux grid's tokens (max {most})")


def check_run_grid(grid: str | Grid, patch: int, key: str, budget: int | None = None) -> Grid:
    """``grid`` (``TxR`` text or a Grid), a grid the run uses, checked: its form, H and W
    multiples of ``patch``, its tokens and frame pixels within the caps, ``budget`` within its
    tokens. Errors name ``key``."""
    try:
        grid = Grid.parse(grid) if isinstance(grid, str) else grid
        grid.check_patch(patch)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    limits.GRID_TOKENS.check(grid.num_patches(patch), f"{key} {grid}")
    limits.FRAME_PIXELS.check(grid.height * grid.width, f"{key} {grid}")
    if budget is not None:
        try:
            grid.with_budget(budget).num_tokens(patch)
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None
    return grid
