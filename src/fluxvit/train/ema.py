"""Exponential moving average of a model's weights (evaluated and saved beside the raw ones)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fluxvit.typecheck import in_range


class ModelEma:
    """A frozen copy of ``model`` updated as ``ema = decay * ema + (1 - decay) * model``.

    Floating-point parameters and buffers are averaged; integer buffers (head budgets) copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = in_range(decay, "decay", 0.0, 1.0, what="EMA")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            shadow = ema_state[name]
            if shadow.is_floating_point():
                shadow.lerp_(value.detach().to(shadow.dtype), 1.0 - self.decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
