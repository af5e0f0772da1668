"""How a model's test inputs are made from a video, as its checkpoint records it.

A model is evaluated the way it was trained: the resize filter (``data.resize``) and where the
test clips sit in the video's segments (``data.view_offsets``) are written into every checkpoint
the trainer saves (the ``preprocessing`` record of its metadata) and into exported artifacts, and
every evaluation path (eval, predict, optimize, features, serve, latency) builds its transform
and sampler from :func:`preprocessing_of`. A checkpoint without the record (the official
release's weights) gets the release's own: :data:`~fluxvit.data.transforms.DEFAULT_RESIZE` and
:data:`~fluxvit.data.sampling.DEFAULT_VIEW_OFFSETS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fluxvit.data.sampling import DEFAULT_VIEW_OFFSETS, SegmentSampler, check_view_offsets
from fluxvit.data.transforms import DEFAULT_RESIZE, EvalTransform, check_resize
from fluxvit.errors import CheckpointError, ConfigError

META_KEY = "preprocessing"  # the checkpoint metadata's record


@dataclass(frozen=True)
class Preprocessing:
    """``resize`` (:data:`~fluxvit.data.transforms.RESIZE_MODES`) and ``view_offsets``
    (:data:`~fluxvit.data.sampling.VIEW_OFFSETS`)."""

    resize: str = DEFAULT_RESIZE
    view_offsets: str = DEFAULT_VIEW_OFFSETS

    def __post_init__(self) -> None:
        check_resize(self.resize)
        check_view_offsets(self.view_offsets)

    def transform(self, num_crops: int) -> EvalTransform:
        """The test transform with ``num_crops`` crops per clip."""
        return EvalTransform(num_crops=num_crops, resize=self.resize)

    def sampler(self) -> SegmentSampler:
        """The test-time frame sampler."""
        return SegmentSampler(view_offsets=self.view_offsets)

    def to_meta(self) -> dict:
        """The record a checkpoint stores under :data:`META_KEY`."""
        return {"resize": self.resize, "view_offsets": self.view_offsets}

    @classmethod
    def from_meta(cls, record: object, source: str = "the checkpoint") -> Preprocessing:
        """The record of a checkpoint's metadata (None: the release's defaults); a malformed
        record is one :class:`CheckpointError` naming ``source``."""
        if record is None:
            return cls()
        if not isinstance(record, dict) or not set(record) <= {"resize", "view_offsets"}:
            raise CheckpointError(f"{source}: its {META_KEY!r} record is not {{resize, view_offsets}}")
        try:
            return cls(record.get("resize", DEFAULT_RESIZE), record.get("view_offsets", DEFAULT_VIEW_OFFSETS))
        except (ConfigError, TypeError) as e:
            raise CheckpointError(f"{source}: {META_KEY}: {e}") from None


def preprocessing_of(model, view_offsets: str | None = None) -> Preprocessing:
    """How ``model`` (a FluxViT or an exported artifact) wants its inputs, from its checkpoint's
    record; ``view_offsets`` overrides the recorded one."""
    meta = getattr(model, "checkpoint_meta", None) or {}
    source = str(getattr(model, "checkpoint_path", None) or "the checkpoint")
    pre = Preprocessing.from_meta(meta.get(META_KEY), source)
    if view_offsets is not None:
        pre = Preprocessing(pre.resize, check_view_offsets(view_offsets))
    return pre


def set_view_offsets(model, view_offsets: str | None):
    """``model`` with its recorded preprocessing's ``view_offsets`` replaced (None: as it is), so
    that every path evaluating it, and a checkpoint saved from it (Token Optimization's), sample
    the test clips there. Returns the model."""
    if view_offsets is not None:
        pre = preprocessing_of(model, view_offsets)
        model.checkpoint_meta = {**(getattr(model, "checkpoint_meta", None) or {}), META_KEY: pre.to_meta()}
    return model
