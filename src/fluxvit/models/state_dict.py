"""Questions about a state dict (name -> tensor) asked by the release converter and the loader.

Kept apart from :mod:`fluxvit.models.fluxvit` so that checkpoint I/O (which the release converter
is part of) does not import the architecture, and the architecture may call checkpoint I/O
(``FluxViT.save_pretrained``) without an import cycle.
"""

from __future__ import annotations

import torch


def count_modules(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered modules ``prefix<i>.`` a state dict holds (``blocks.``, ``heads.``)."""
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})
