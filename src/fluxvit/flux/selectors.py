"""Token selectors: which ``num_tokens`` of a clip's ``T * L`` patch tokens to keep.

Every selector is a plain function

    select(embeddings, num_tokens, generator=None) -> kept   # (B, T, L, C) -> (B, N) int64

returning, for each clip, ``num_tokens`` distinct flat indices into ``T * L`` in increasing
order, so that kept tokens stay in their original space-time order (``group_dynamic_release``,
for comparisons with the release, can return a few fewer: its per-group rounding). They run under
``torch.no_grad`` semantics: scores never carry gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fluxvit.errors import ConfigError

Selector = Callable[..., torch.Tensor]


def num_groups(frames: int) -> int:
    """Temporal groups of the group-dynamic selector for ``frames`` frames.

    4 when T is a multiple of 4 (and T >= 8), 2 when T is even and > 2, else 1. This is the
    release's rule wherever the release runs; it crashes at T = 4 (one-frame groups) and
    refuses odd T, where we use 2 groups and 1 group.
    """
    if frames % 4 == 0 and frames >= 8:
        return 4
    if frames % 2 == 0 and frames > 2:
        return 2
    return 1


def _check(embeddings: torch.Tensor, num_tokens: int) -> tuple[int, int, int]:
    if embeddings.dim() != 4:
        raise ConfigError(f"selector expects embeddings (B, T, L, C), got shape {tuple(embeddings.shape)}")
    b, t, l, _ = embeddings.shape
    if not 1 <= num_tokens <= t * l:
        raise ConfigError(f"token budget {num_tokens} is outside 1..{t * l} for a clip of {t}x{l} tokens")
    return b, t, l


def _keep_top(scores: torch.Tensor, shares: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Boolean mask (B, G, M) keeping the ``shares[g]`` highest scores of each group g.

    Tie rule: among tokens whose scores are exactly equal at the cut, the earlier ones (in
    space-time order) are kept. Ties are common, not a corner case: a group's first frame reuses
    the score of the group's first pair, so frames 0 and 1 of every group tie at every position,
    and static regions of a decoded video score exactly 0. The release leaves this to an unstable
    ``argsort``, which has no rule: on CPU it kept the later of a straddling pair in 19 of 44
    cases (tests/models/golden_ties.json), and CUDA sorts differently again, so no fixed rule can
    match it on such inputs. Ours is one rule, the same on every device, and it exports: it is
    computed with top-k, comparisons and a cumulative sum (no sort; ONNX has no stable sort):
    the cut's score v is the share-th largest; keep every score above v, then the first
    (share - #above) of those equal to v. NaN scores count as +inf.

    ``shares`` are plain integers (a tensor is read once): every size here is a Python int, so
    ``torch.export`` traces the selection with static shapes.
    """
    counts = [int(s) for s in (shares.tolist() if isinstance(shares, torch.Tensor) else shares)]
    scores = torch.nan_to_num(scores, nan=float("inf"))
    share = torch.tensor(counts, dtype=torch.long, device=scores.device)
    largest = torch.topk(scores, max(counts), dim=-1).values  # (B, G, max share), descending
    # (B, G, 1); a share of 0 (a budget below the group count) reads the largest and keeps none
    cut = largest.gather(-1, (share - 1).clamp(min=0).expand(*scores.shape[:-1])[..., None])
    above = scores > cut
    at_cut = scores == cut
    room = share[:, None] - above.sum(dim=-1, keepdim=True)  # places left for tokens at the cut
    return above | (at_cut & (torch.cumsum(at_cut.long(), dim=-1) <= room))


def _mask_to_indices(mask: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(B, T*L) boolean mask with ``num_tokens`` trues per row -> (B, N) increasing indices.

    The trues' positions, found by a top-k over keys that are distinct and decrease with the
    position (``T*L - i`` for a true, 0 for a false): the N largest are exactly the trues, sorted
    from the earliest. Same result as ``mask.nonzero()``, but of a shape known before the values
    (``nonzero`` is data-dependent), so the selection exports to ONNX and ``torch.export``.
    """
    b = mask.shape[0]
    flat = mask.reshape(b, -1)
    total = flat.shape[1]
    # float32 holds every integer up to 2**24 exactly, far above the largest grid (limits.GRID_TOKENS)
    keys = torch.arange(total, 0, -1, dtype=torch.float32, device=flat.device) * flat
    return torch.topk(keys, num_tokens, dim=-1, sorted=True).indices


def _equal_counts(total: int, groups: int) -> list[int]:
    base, extra = divmod(total, groups)
    return [base + (g < extra) for g in range(groups)]


def equal_shares(total: int, groups: int) -> torch.Tensor:
    """Split ``total`` into ``groups`` shares; the first ``total % groups`` get one more."""
    return torch.tensor(_equal_counts(total, groups), dtype=torch.long)


def _release_counts(total: int, frames: int, tokens_per_frame: int, groups: int) -> list[int]:
    """The release's per-group counts for a budget of ``total``: it is called with a masking
    ratio r = 1 - N / (T*L) and keeps ``int((1 - r) * (T/G) * L)`` in every group, in floating
    point: a few fewer than N on some grids (16x196 at 1024 keeps 4 x 255 = 1020; 24x224 at
    2048 keeps 4 x 511 = 2044), and the remainder of an N that G does not divide is dropped."""
    ratio = 1 - total / (frames * tokens_per_frame)
    share = int((1 - ratio) * (frames // groups * tokens_per_frame))
    if share < 1:
        raise ConfigError(f"with the release's rounding a budget of {total} keeps no token in each of {groups} groups")
    return [share] * groups


def release_shares(total: int, frames: int, tokens_per_frame: int, groups: int) -> torch.Tensor:
    """:func:`_release_counts` as a tensor (G,)."""
    return torch.tensor(_release_counts(total, frames, tokens_per_frame, groups), dtype=torch.long)


ROUNDINGS = ("exact", "release")


@torch.no_grad()
def group_dynamic_select(
    embeddings: torch.Tensor, num_tokens: int, generator: torch.Generator | None = None, rounding: str = "exact",
) -> torch.Tensor:
    """FluxViT's group-dynamic selector.

    The T frames form G contiguous groups (:func:`num_groups`). Inside a group, each patch is
    scored by the L2 distance between its embedding and the same position in the previous
    frame; the group's first frame reuses the score of the group's first pair. Each group keeps
    its share of ``num_tokens`` with the highest scores (ties: the earlier token, see
    :func:`_keep_top`). ``rounding="exact"``: equal shares that add up to exactly N (remainder to
    the earliest groups); ``"release"``: the release's per-group counts
    (:func:`release_shares`), for comparing with the release, which can keep fewer than N.
    A group of one frame (T = 1) scores patches by their distance to the frame's mean.

    Args:
        embeddings: (B, T, L, C) patch embeddings (after patch norm, before positions).
        num_tokens: N, 1 <= N <= T * L.
    Returns:
        (B, N') int64 flat indices into T * L, increasing; N' = N, or the release's count.
    """
    b, t, l = _check(embeddings, num_tokens)
    if rounding not in ROUNDINGS:
        raise ConfigError(f"selector rounding {rounding!r} is not one of {', '.join(ROUNDINGS)}")
    g = num_groups(t)
    x = embeddings.detach().reshape(b, g, t // g, l, -1)
    if t // g > 1:
        dist = torch.linalg.vector_norm(x[:, :, 1:] - x[:, :, :-1], dim=-1)  # (B, G, Tg-1, L)
        scores = torch.cat([dist[:, :, :1], dist], dim=2)
    else:
        scores = torch.linalg.vector_norm(x - x.mean(dim=3, keepdim=True), dim=-1)
    shares = _equal_counts(num_tokens, g) if rounding == "exact" else _release_counts(num_tokens, t, l, g)
    mask = _keep_top(scores.reshape(b, g, -1).float(), shares)
    return _mask_to_indices(mask, sum(shares))


@torch.no_grad()
def random_select(
    embeddings: torch.Tensor, num_tokens: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep a uniformly random ``num_tokens`` of each clip's tokens (seeded by ``generator``)."""
    b, t, l = _check(embeddings, num_tokens)
    noise = torch.rand(b, t * l, generator=generator).to(embeddings.device)
    keep = noise.argsort(dim=1)[:, :num_tokens]
    return keep.sort(dim=1).values


@torch.no_grad()
def uniform_select(
    embeddings: torch.Tensor, num_tokens: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Regular subsampling in space-time: ``num_tokens`` evenly spaced flat positions.

    Position i is ``floor((i + 1/2) * T*L / N)``; spacing >= 1 keeps them distinct.
    """
    b, t, l = _check(embeddings, num_tokens)
    total = t * l
    idx = (torch.arange(num_tokens, dtype=torch.float64) + 0.5) * (total / num_tokens)
    idx = idx.floor().long().clamp_(max=total - 1)
    return idx.to(embeddings.device).expand(b, num_tokens).contiguous()


@torch.no_grad()
def static_drop_select(
    embeddings: torch.Tensor, num_tokens: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Drop the patches that change least from the previous frame (run-length spirit).

    The first frame is always kept first (it has no previous frame); the remaining budget goes
    to the patches of later frames with the largest change, over the whole clip.
    """
    b, t, l = _check(embeddings, num_tokens)
    x = embeddings.detach().float()
    first = torch.full((b, 1, l), float("inf"), device=x.device)
    change = torch.linalg.vector_norm(x[:, 1:] - x[:, :-1], dim=-1)
    scores = torch.cat([first, change], dim=1).reshape(b, 1, t * l)
    mask = _keep_top(scores, [num_tokens])
    return _mask_to_indices(mask, num_tokens)


def release_group_dynamic_select(
    embeddings: torch.Tensor, num_tokens: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """:func:`group_dynamic_select` with the release's per-group counts (``rounding="release"``)."""
    return group_dynamic_select(embeddings, num_tokens, generator, rounding="release")


SELECTORS: dict[str, Selector] = {
    "group_dynamic": group_dynamic_select,
    "group_dynamic_release": release_group_dynamic_select,
    "random": random_select,
    "uniform": uniform_select,
    "static_drop": static_drop_select,
}


def get_selector(name: str | Selector) -> Selector:
    """A selector by name (``group_dynamic``, ``group_dynamic_release``, ``random``, ``uniform``,
    ``static_drop``) or as is."""
    if callable(name):
        return name
    try:
        return SELECTORS[name]
    except KeyError:
        raise ConfigError(f"unknown token selector {name!r}; choose from {', '.join(SELECTORS)}") from None
