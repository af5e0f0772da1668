"""Sampling grids: how many frames (T) at which resolution (R), and the tokens they make.

A :class:`Grid` is the small value object that travels with a batch: the sampling (T, H, W)
and, optionally, the token budget N the clip is cut to after patch embedding. A
:class:`FluxGrid` is the family of grids Flux training draws from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fluxvit.errors import ConfigError

_GRID_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)(?:\s*[xX]\s*(\d+))?\s*$")


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
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"grid {name} must be a positive integer, got {value!r}")
        if self.budget is not None and (not isinstance(self.budget, int) or self.budget < 1):
            raise ConfigError(f"token budget must be a positive integer, got {self.budget!r}")

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
        grids = []
        for t in range(self.frames[0], self.frames[1] + 1, self.frames[2]):
            for r in range(self.sizes[0], self.sizes[1] + 1, self.sizes[2]):
                g = Grid(t, r)
                if self.min_tokens <= g.num_patches(self.patch_size) <= self.max_tokens:
                    grids.append(g)
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
