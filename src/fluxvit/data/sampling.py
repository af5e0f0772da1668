"""Which frames a clip reads: plain, seeded functions returning frame indices.

* :func:`segment_indices` — TSN-style training sampling (the Kinetics/SSv2 practice of the
  release's "sparse" datasets): cut the video into ``t`` equal segments and take one random frame
  from each, so a clip always spans the whole video whatever ``t`` the Flux grid asks for.
* :func:`segment_views` — the test-time counterpart: ``num_clips`` evenly spaced, deterministic
  views, view ``k`` taking the point ``(k + 1) / (num_clips + 1)`` of every segment (the release's
  Kinetics), or ``k / num_clips`` (its SSv2: ``offsets="start"``).
* :func:`dense_indices` / :func:`dense_views` — ``t`` consecutive frames ``stride`` apart from a
  random (training) or evenly spaced (testing) start.

Videos shorter than the clip repeat frames (indices stay sorted and inside [0, num_frames)).
Randomness comes only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fluxvit.errors import ConfigError
from fluxvit.typecheck import show

# Where test clip k of K sits in each segment: "between" at (k + 1) / (K + 1) (the release's
# Kinetics datasets: one clip takes the segment centres), "start" at k / K (its SSv2 dataset:
# two clips at 0 and 1/2).
VIEW_OFFSETS = ("between", "start")
DEFAULT_VIEW_OFFSETS = "between"


def _check(num_frames: int, t: int) -> None:
    if num_frames < 1:
        raise ConfigError(f"cannot sample from a video with {num_frames} frames")
    if t < 1:
        raise ConfigError(f"a clip needs at least one frame, got {t}")


def segment_indices(num_frames: int, t: int, generator: torch.Generator) -> torch.Tensor:
    """(t,) int64: one uniformly random frame from each of ``t`` equal segments of the video.

    Segment i holds the whole frames [floor(i n / t), floor((i + 1) n / t)): with real-valued
    edges a frame cut by an edge would belong to two segments and could be drawn twice, although
    a video of n >= t frames always has t distinct ones to give. The edges are integer arithmetic:
    a float ``linspace`` puts 31 at 30.999..., and its floor moves a frame into the wrong segment."""
    _check(num_frames, t)
    edges = (torch.arange(t + 1, dtype=torch.int64) * num_frames).div(t, rounding_mode="floor").double()
    u = torch.rand(t, generator=generator, dtype=torch.float64)
    return (edges[:-1] + u * (edges[1:] - edges[:-1])).floor().long().clamp_(0, num_frames - 1)


def segment_views(num_frames: int, t: int, num_clips: int, offsets: str = DEFAULT_VIEW_OFFSETS) -> torch.Tensor:
    """(num_clips, t) int64: evenly spaced deterministic views; with ``offsets`` "between" view k
    sits at (k+1)/(num_clips+1) of every segment, so the views interleave and one view takes the
    segment centres; with "start" at k/num_clips (one view: the segments' first frames)."""
    _check(num_frames, t)
    return segment_positions(num_frames, t, num_clips, offsets).floor().long().clamp_(0, num_frames - 1)


def check_view_offsets(offsets: str) -> str:
    """``offsets`` if it is one of :data:`VIEW_OFFSETS`, else one :class:`ConfigError` line."""
    if offsets not in VIEW_OFFSETS:
        raise ConfigError(f"view offsets {show(offsets)} is not one of {', '.join(VIEW_OFFSETS)}")
    return offsets


def segment_positions(length: float, t: int, num_clips: int, offsets: str = DEFAULT_VIEW_OFFSETS) -> torch.Tensor:
    """(num_clips, t) float64 in [0, length): where :func:`segment_views` samples before it rounds
    down to a frame, for a span of ``length`` frames, or seconds (the windows of a long video,
    :mod:`fluxvit.data.windows`, sample by time)."""
    if t < 1:
        raise ConfigError(f"a clip needs at least one frame, got {t}")
    if num_clips < 1:
        raise ConfigError(f"need at least one clip per video, got {num_clips}")
    check_view_offsets(offsets)
    edges = torch.linspace(0, length, t + 1, dtype=torch.float64)
    k = torch.arange(num_clips, dtype=torch.float64)
    frac = (k + 1) / (num_clips + 1) if offsets == "between" else k / num_clips  # (K,)
    return edges[:-1] + frac[:, None] * (edges[1:] - edges[:-1])  # (K, t)


def _dense_window(num_frames: int, t: int, stride: int) -> int:
    if stride < 1:
        raise ConfigError(f"dense sampling stride must be positive, got {stride}")
    return (t - 1) * stride + 1  # frames the window spans


def dense_indices(num_frames: int, t: int, stride: int, generator: torch.Generator) -> torch.Tensor:
    """(t,) int64: ``t`` frames ``stride`` apart from a uniformly random start."""
    _check(num_frames, t)
    span = _dense_window(num_frames, t, stride)
    start = int(torch.randint(max(num_frames - span, 0) + 1, (), generator=generator))
    return (start + torch.arange(t) * stride).clamp_(max=num_frames - 1)


def dense_views(num_frames: int, t: int, stride: int, num_clips: int) -> torch.Tensor:
    """(num_clips, t) int64: dense windows whose starts are evenly spaced over the video."""
    _check(num_frames, t)
    if num_clips < 1:
        raise ConfigError(f"need at least one clip per video, got {num_clips}")
    span = _dense_window(num_frames, t, stride)
    room = max(num_frames - span, 0)
    starts = torch.linspace(0, room, num_clips, dtype=torch.float64) if num_clips > 1 else torch.tensor([room / 2])
    idx = starts.round().long()[:, None] + torch.arange(t) * stride
    return idx.clamp_(max=num_frames - 1)


# ----------------------------------------------------------------------------- thin wrappers
@dataclass(frozen=True)
class SegmentSampler:
    """Segment (TSN) sampling: ``sample`` for training, ``views`` for testing (at ``view_offsets``
    of the segments: :data:`VIEW_OFFSETS`)."""

    view_offsets: str = DEFAULT_VIEW_OFFSETS

    def __post_init__(self) -> None:
        check_view_offsets(self.view_offsets)

    def sample(self, num_frames: int, t: int, generator: torch.Generator) -> torch.Tensor:
        """(t,) frame indices."""
        return segment_indices(num_frames, t, generator)

    def views(self, num_frames: int, t: int, num_clips: int) -> torch.Tensor:
        """(num_clips, t) frame indices."""
        return segment_views(num_frames, t, num_clips, self.view_offsets)


@dataclass(frozen=True)
class DenseSampler:
    """Dense sampling: ``t`` frames ``stride`` apart."""

    stride: int = 4

    def sample(self, num_frames: int, t: int, generator: torch.Generator) -> torch.Tensor:
        """(t,) frame indices."""
        return dense_indices(num_frames, t, self.stride, generator)

    def views(self, num_frames: int, t: int, num_clips: int) -> torch.Tensor:
        """(num_clips, t) frame indices."""
        return dense_views(num_frames, t, self.stride, num_clips)
