"""Procedural clips for training tests: a square of the class's colour moving in the class's
direction over a noisy background (two cues, so that a nano model learns it in seconds)."""

from __future__ import annotations

import torch

from fluxvit.data.sources import TensorClipSource
from fluxvit.data.transforms import TrainTransform

DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) per class: right, left, down, up
COLOURS = ((1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.2, 0.2, 1.0), (1.0, 1.0, 0.2))
NAMES = ["red_right", "green_left", "blue_down", "yellow_up"]


def moving_square(label: int, generator: torch.Generator, size: int = 56, frames: int = 8) -> torch.Tensor:
    """uint8 (F, size, size, 3): a square crossing a noisy background in class direction."""
    dy, dx = DIRECTIONS[label]
    side, speed = size // 5, max(size // 16, 2)
    span = size - side - speed * (frames - 1)
    y0 = int(torch.randint(0, size - side, (), generator=generator))
    x0 = int(torch.randint(0, size - side, (), generator=generator))
    if dy:  # start where the square stays in view for the whole clip
        y0 = int(torch.randint(0, span, (), generator=generator)) + (speed * (frames - 1) if dy < 0 else 0)
    if dx:
        x0 = int(torch.randint(0, span, (), generator=generator)) + (speed * (frames - 1) if dx < 0 else 0)
    colour = torch.tensor(COLOURS[label]) * (0.8 + 0.2 * torch.rand((), generator=generator))
    video = torch.rand(frames, size, size, 3, generator=generator) * 0.3
    for f in range(frames):
        y, x = y0 + dy * speed * f, x0 + dx * speed * f
        video[f, y:y + side, x:x + side] = colour
    return (video * 255).round().to(torch.uint8)


def toy_source(per_class: int, seed: int, size: int = 56, frames: int = 8) -> TensorClipSource:
    g = torch.Generator().manual_seed(seed)
    videos, labels = [], []
    for i in range(per_class * len(NAMES)):
        labels.append(i % len(NAMES))
        videos.append(moving_square(labels[-1], g, size, frames))
    # Mild crops (64-100% of the area): the square must stay in view.
    return TensorClipSource(videos, labels, list(NAMES), TrainTransform(scale=(0.64, 1.0), ratio=(1.0, 1.0), flip=0.0))


def toy_config(out_dir, name: str = "flux", steps: int = 100, **sections) -> dict:
    """A nano run on 56-px toy clips; ``sections`` update the config's sections (dicts) or keys."""
    cfg = {
        "out_dir": str(out_dir),
        "steps": steps,
        "ckpt_every": 1000,
        "seed": 0,
        "progress": False,
        "data": {"batch_size": 8},
        "flux": {"fixed": "8x56"} if name == "fixed" else
        {"frames": [4, 8, 2], "sizes": [42, 70, 14], "min_tokens": 64, "max_tokens": 160},
        "objective": {"name": name, **({"budget": 64} if name == "flux" else {})},  # the toy's largest head
        "eval": {"grid": "8x56"},
        "model": {"head_budgets": [64, 48, 32]},
        "optim": {"lr": 1e-3, "warmup_steps": 5, "label_smoothing": 0.0, "layer_decay": 1.0},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg
