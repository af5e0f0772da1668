"""Mixup and CutMix for video batches, clip-consistent (one box for all frames), seeded.

Both turn class ids into soft targets (B, K) with label smoothing folded in, as timm's
``Mixup`` does for the release; the mixing partner of sample i is sample B-1-i (a flipped
batch), so no extra randomness decides pairs.
"""

from __future__ import annotations

import math

import torch

from fluxvit.typecheck import in_range


def smooth_one_hot(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Class ids (B,) -> smoothed one-hot (B, K): 1 - s + s/K on the class, s/K elsewhere."""
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, device=target.device)
    return out.scatter_(1, target[:, None], 1.0 - smoothing + off)


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha) from two seeded Gamma draws (torch has no seeded Beta)."""
    a = torch._standard_gamma(torch.tensor([alpha, alpha], dtype=torch.float64), generator=generator)
    return float(a[0] / a.sum())


def mix_batch(
    video: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """video (B, 3, T, H, W), target (B,) -> mixed video, soft targets (B, K).

    With probability ``prob`` the batch is mixed: by CutMix (a box of area 1 - lam, the same
    in every frame) when ``cutmix`` > 0 and (``mixup`` is 0 or a coin with ``switch_prob``
    says so), else by Mixup with lam ~ Beta(mixup, mixup). Otherwise only smoothing applies.
    """
    for key, value, lo, hi in (("mixup", mixup, 0, None), ("cutmix", cutmix, 0, None), ("prob", prob, 0, 1),
                               ("switch_prob", switch_prob, 0, 1), ("smoothing", smoothing, 0, 1),
                               ("num_classes", num_classes, 1, None)):
        in_range(value, key, lo, hi, what="mixup")
    soft = smooth_one_hot(target, num_classes, smoothing)
    coin = torch.rand(2, generator=generator, dtype=torch.float64)
    if (mixup <= 0 and cutmix <= 0) or float(coin[0]) >= prob:
        return video, soft
    use_cutmix = cutmix > 0 and (mixup <= 0 or float(coin[1]) < switch_prob)
    lam = _beta(cutmix if use_cutmix else mixup, generator)
    partner = video.flip(0)
    if use_cutmix:
        h, w = video.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy = int(torch.randint(h, (1,), generator=generator))
        cx = int(torch.randint(w, (1,), generator=generator))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        video = video.clone()
        video[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the box as clipped at the border
    else:
        video = video * lam + partner * (1.0 - lam)
    return video, soft * lam + soft.flip(0) * (1.0 - lam)
