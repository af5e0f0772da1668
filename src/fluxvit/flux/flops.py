"""The FLOPs model: multiply-adds of a FluxViT forward, part by part.

The formula is stated in :meth:`fluxvit.models.FluxViT.estimate_flops`; this module is the
arithmetic, so that budgets can be priced without building a model.

Which number the paper reports: its GFLOPs for FluxViT-S/B at 3072/2048/1024/512 tokens
(154/83/32/13 and 440/255/108/49) are the transformer encoder's multiply-adds at N tokens
(+ class token): this count is within 2.5% of all eight. The full forward (patch embedding over
the sampled grid, attention-pooling projector, classifier) is within 1.2% of seven of them and
4.5% above the S-512 figure, so the paper's column is the encoder. We report both.
"""

from __future__ import annotations

from dataclasses import dataclass

from fluxvit.errors import ConfigError
from fluxvit.limits import GRID_TOKENS


@dataclass(frozen=True)
class FlopsBreakdown:
    """Multiply-adds of one view, by part."""

    patch_embed: int
    blocks: int
    projector: int
    head: int

    @property
    def paper(self) -> int:
        """The paper's GFLOPs convention: the transformer encoder at the token budget."""
        return self.blocks

    @property
    def total(self) -> int:
        """Everything one forward multiplies: embedding, encoder, projector, classifier."""
        return self.patch_embed + self.blocks + self.projector + self.head


def transformer_macs(
    *,
    patches: int,
    tokens: int,
    width: int,
    depth: int,
    mlp_ratio: float = 4.0,
    patch_pixels: int = 3 * 14 * 14,
    clip_dim: int = 768,
    num_classes: int = 400,
) -> FlopsBreakdown:
    """Multiply-adds of one view: ``patches`` embedded, ``tokens`` (+1 class token) transformed.

    Both are positive integers, at most the cap :data:`~fluxvit.limits.GRID_TOKENS` (a count
    beyond it prices a forward that no door of fluxvit would run)."""
    for name, value in (("tokens", tokens), ("patches", patches)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"FLOPs count: {name} must be a positive integer, got {value!r:.40}")
        GRID_TOKENS.check(value, "FLOPs count")
    n = tokens + 1
    c = width
    hidden = int(c * mlp_ratio)
    block = n * (4 * c * c + 2 * c * hidden) + 2 * n * n * c
    return FlopsBreakdown(
        patch_embed=patches * patch_pixels * c,
        blocks=depth * block,
        projector=2 * n * c * c + c * c + n * c + c * clip_dim,
        head=clip_dim * num_classes,
    )
