"""Seeded weights in the official FluxViT release's exact format, and seeded test videos.

``official_state_dict()`` returns a state dict with exactly the key names and shapes that the
release's ``fluxvit_small_patch14(num_classes=400)`` produces (246 tensors), filled with values
from a seeded generator, drawn so that every part of the network changes the logits: layer-scale
gammas of 0.1-0.5 (not 1e-5), norm weights around 1, nonzero biases, a large positional table,
depth-wise convolutions that are not the identity.

``make_input()`` returns a normalised-looking video whose frames are a still base image plus
small per-patch noise and, optionally, abrupt changes ("steps") on chosen patches. With
``salient=n`` every contiguous frame group that the release's selector forms (4 groups if
T % 4 == 0, 2 if T is even and > 2, 1 if T == 2) gets exactly ``n`` tokens whose motion score is
far above all others, so the set selected for ``num_tokens = n * groups`` has a wide margin.

The golden logits in ``golden_official.json`` were computed by the official implementation run
on CPU with these weights and inputs; the numbers are all that is kept of that run.
"""

from __future__ import annotations

import torch

WEIGHTS_SEED = 20250611

EMBED_DIM = 384
DEPTH = 12
NUM_CLASSES = 400
CLIP_DIM = 768
MLP_DIM = 4 * EMBED_DIM
POS_GRID = (24, 18, 18)
PATCH = 14
NUM_PROJECTORS = 3  # projectors and classifier heads, one per training budget
NUM_ALIGN = 2  # final_clip_decoder_for_projs


def official_shapes(num_classes: int = NUM_CLASSES) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every tensor of the release's FluxViT-S/14, in its state_dict order."""
    c, m, d = EMBED_DIM, MLP_DIM, CLIP_DIM
    t, h, w = POS_GRID
    out: list[tuple[str, tuple[int, ...]]] = [
        ("cls_token", (1, 1, c)),
        ("pos_embed", (1, 1 + t * h * w, c)),
        ("gpe_proj.depthwise_conv.weight", (c, 1, 1, 1, 1)),
        ("gpe_proj.depthwise_conv.bias", (c,)),
        ("patch_embed.proj.weight", (c, 3, 1, PATCH, PATCH)),
        ("patch_embed.proj.bias", (c,)),
        ("patch_embed.norm.weight", (c,)),
        ("patch_embed.norm_before.weight", (3 * PATCH * PATCH,)),
    ]
    for i in range(DEPTH):
        b = f"blocks.{i}."
        out += [
            (b + "norm1.weight", (c,)),
            (b + "attn.qkv.weight", (3 * c, c)),
            (b + "attn.proj.weight", (c, c)),
            (b + "attn.proj.bias", (c,)),
            (b + "attn.lpe.depthwise_conv.weight", (c, 1, 1, 1, 1)),
            (b + "attn.lpe.depthwise_conv.bias", (c,)),
            (b + "attn.q_norm.weight", (c,)),
            (b + "attn.k_norm.weight", (c,)),
            (b + "ls1.gamma", (c,)),
            (b + "norm2.weight", (c,)),
            (b + "mlp.fc1.weight", (m, c)),
            (b + "mlp.fc1.bias", (m,)),
            (b + "mlp.fc2.weight", (c, m)),
            (b + "mlp.fc2.bias", (c,)),
            (b + "ls2.gamma", (c,)),
        ]
    for i in range(NUM_PROJECTORS):
        p = f"clip_projector.{i}."
        for n in ("norm1_q", "norm1_k", "norm1_v"):
            out += [(p + n + ".weight", (c,)), (p + n + ".bias", (c,))]
        out += [
            (p + "cross_attn.q_bias", (c,)),
            (p + "cross_attn.k_bias", (c,)),
            (p + "cross_attn.v_bias", (c,)),
            (p + "cross_attn.q.weight", (c, c)),
            (p + "cross_attn.k.weight", (c, c)),
            (p + "cross_attn.v.weight", (c, c)),
            (p + "cross_attn.proj.weight", (d, c)),
            (p + "cross_attn.proj.bias", (d,)),
        ]
    for i in range(NUM_PROJECTORS):
        out += [(f"head.{i}.weight", (num_classes, d)), (f"head.{i}.bias", (num_classes,))]
    out += [("fc_norm.weight", (d,)), ("fc_norm.bias", (d,))]
    for i in range(NUM_ALIGN):
        p = f"final_clip_decoder_for_projs.{i}."
        out += [
            (p + "head.weight", (d, d)),
            (p + "head.bias", (d,)),
            (p + "norm.weight", (d,)),
            (p + "norm.bias", (d,)),
        ]
    return out


def _value(key: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    z = torch.randn(shape, generator=g, dtype=torch.float32)
    if key in ("cls_token", "pos_embed"):
        return 0.5 * z
    if key.endswith("ls1.gamma") or key.endswith("ls2.gamma"):
        u = torch.rand(shape, generator=g, dtype=torch.float32)
        return 0.1 + 0.4 * u
    if key.endswith("depthwise_conv.weight"):
        return 1.0 + 0.1 * z
    if key.endswith("_bias") or key.endswith(".bias"):
        return 0.05 * z if "norm" in key.rsplit(".", 2)[-2] else 0.02 * z
    if key.endswith(".weight") and len(shape) == 1:  # RMSNorm / LayerNorm scales
        return 1.0 + 0.1 * z
    if key == "patch_embed.proj.weight":
        return 0.05 * z
    if len(shape) == 2:  # Linear: keeps activations near unit scale (std 0.02-0.04)
        return (0.8 / shape[1] ** 0.5) * z
    raise AssertionError(f"no rule for {key} {shape}")


def official_state_dict(seed: int = WEIGHTS_SEED, num_classes: int = NUM_CLASSES) -> dict[str, torch.Tensor]:
    """Seeded random weights with the release's exact key names and shapes (fp32, CPU)."""
    g = torch.Generator().manual_seed(seed)
    return {key: _value(key, shape, g) for key, shape in official_shapes(num_classes)}


def release_groups(frames: int) -> int:
    """Number of contiguous frame groups the release's selector forms for ``frames`` frames."""
    if frames % 4 == 0:
        return 4
    if frames == 2:
        return 1
    return 2


def make_input(
    batch: int, frames: int, size: int, seed: int, salient: int | None = None
) -> torch.Tensor:
    """Seeded video (batch, 3, frames, size, size), values roughly N(0, 1).

    Rows are drawn one after another, so ``make_input(1, ...)`` equals row 0 of
    ``make_input(2, ...)`` with the same arguments.

    ``salient``: tokens per selector group (see the module docstring) that get an abrupt change
    against the previous frame of the group; a change on a group's second frame also makes its
    first frame salient (the release scores a group's first frame with the second frame's
    change), so it counts twice. Needs an even ``frames`` with at least 2 frames per group.
    """
    if size % PATCH:
        raise ValueError(f"size {size} is not a multiple of {PATCH}")
    g = torch.Generator().manual_seed(seed)
    side = size // PATCH
    n_patch = side * side
    rows = []
    for _ in range(batch):
        base = torch.randn(3, 1, size, size, generator=g)
        video = base.repeat(1, frames, 1, 1)
        # small per-patch, per-frame jitter, of a per-patch amplitude in [0.005, 0.05]
        jitter_amp = 0.005 + 0.045 * torch.rand(1, 1, side, 1, side, 1, generator=g)
        jitter = torch.randn(3, frames, side, PATCH, side, PATCH, generator=g) * jitter_amp
        video = video + jitter.reshape(3, frames, size, size)
        if salient is not None:
            video = video + _steps(frames, side, n_patch, salient, g)
        rows.append(video)
    return torch.stack(rows)


def _steps(frames: int, side: int, n_patch: int, salient: int, g: torch.Generator) -> torch.Tensor:
    groups = release_groups(frames)
    per = frames // groups
    if frames % groups or per < 2:
        raise ValueError(f"{frames} frames: the release's selector needs >= 2 frames per group")
    if not 0 <= salient <= per * n_patch:
        raise ValueError(f"salient {salient} out of range for {per}x{n_patch} tokens per group")
    out = torch.zeros(3, frames, side, PATCH, side, PATCH)
    for grp in range(groups):
        # k patches step on the group's 2nd frame (2 tokens each), m (frame, patch) pairs later
        lo = max(0, -(-(salient - (per - 2) * n_patch) // 2))
        hi = min(n_patch, salient // 2)
        if per == 2 and salient % 2:
            raise ValueError("with 2 frames per group, salient must be even")
        k = lo + int(torch.randint(hi - lo + 1, (1,), generator=g))
        m = salient - 2 * k
        first = torch.randperm(n_patch, generator=g)[:k].tolist()
        later = torch.randperm((per - 2) * n_patch, generator=g)[:m].tolist() if per > 2 else []
        events = [(1, p) for p in first] + [(2 + e // n_patch, e % n_patch) for e in later]
        for t, p in sorted(events):
            amp = 0.8 + 1.2 * float(torch.rand((), generator=g))
            pattern = amp * torch.randn(3, 1, PATCH, PATCH, generator=g)
            f0 = grp * per + t
            out[:, f0:, p // side, :, p % side, :] += pattern  # persists: one change only
    return out.reshape(3, frames, side * PATCH, side * PATCH)
