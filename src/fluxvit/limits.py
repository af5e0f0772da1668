"""The resource policy: one named cap for every resource a user's input can make fluxvit spend.

A hostile or mistaken input (a 200 KB file of 8192x8192 frames, ``--views 2000x3``,
``--workers 10000``, ``flux.frames: [1, 1e9, 1]``) must end in one line, not in a machine out of
memory. Every door that takes such an input checks it against a :class:`Limit` from this module
*before* the work starts (a video's size from its stream header, a grid's tokens from its shape),
and the places that allocate check again as they go (a decoded frame larger than its header said).

Each cap has a default generous for real work (4K frames, the paper's largest grids, a machine's
cores many times over) and a setting to raise it: the environment variable ``FLUXVIT_MAX_<NAME>``
(read when checked, so DataLoader workers and ``torchrun`` ranks inherit it). A refusal names the
value, the cap and the variable::

    clip.mp4: 67108864 pixels per frame is more than the cap of 16777216 (raise it with FLUXVIT_MAX_FRAME_PIXELS)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from fluxvit.errors import ConfigError, FluxViTError


@dataclass(frozen=True)
class Limit:
    """A cap on one resource: ``name`` (its setting is ``FLUXVIT_MAX_<NAME>``), the default, and
    ``unit``, which says what is counted (``"pixels per frame"``)."""

    name: str
    default: int
    unit: str

    @property
    def setting(self) -> str:
        return f"FLUXVIT_MAX_{self.name.upper()}"

    def value(self) -> int:
        """The cap in force: the setting if set (a positive integer), else the default."""
        text = os.environ.get(self.setting)
        if text is None or not text.strip():
            return self.default
        try:
            number = float(text)
            cap = int(number) if math.isfinite(number) and len(text) <= 40 else -1  # 1e400 is inf
        except (ValueError, OverflowError):
            cap = -1
        if cap < 1:
            raise ConfigError(f"{self.setting}={text!r}: must be a positive integer")
        return cap

    def check(self, amount: float, subject: str, error: type[FluxViTError] = ConfigError) -> None:
        """Raise ``error`` naming ``subject`` if ``amount`` is over the cap (or not a finite number)."""
        cap = self.value()
        if (isinstance(amount, float) and not math.isfinite(amount)) or amount > cap:  # ints: no float()
            shown = f"{amount:g}" if isinstance(amount, float) else str(amount)
            shown = shown if len(shown) <= 24 else f"{shown[:10]}...({len(shown)} digits)"
            raise error(f"{subject}: {shown} {self.unit} is more than the cap of {cap} "
                        f"(raise it with {self.setting})")


# Decoded video. A 4K UHD frame is 8.3 M pixels and 16 of them make 133 M: both fit, with room for
# DCI 4K; an 8192x8192 frame (201 MB as RGB) or a 64-frame 4K clip do not.
FRAME_PIXELS = Limit("frame_pixels", 4096 * 4096, "pixels per frame")
CLIP_PIXELS = Limit("clip_pixels", 2**27, "decoded pixels in one clip")
# The packet index kept per reader (timestamps of every frame of recently read videos): a 2-hour
# 30 fps video's index is ~3 MB of Python ints; 64 MB holds the recent videos of a whole eval.
INDEX_CACHE_BYTES = Limit("index_cache_bytes", 64 * 2**20, "bytes of frame index cached")

# Model inputs. 2**17 tokens is 8x the largest grid of the paper's recipes (24x364: 16224 tokens).
GRID_TOKENS = Limit("grid_tokens", 2**17, "tokens in one sampling grid")
VIEWS = Limit("views", 64, "views per video")  # the paper tests with at most 4x3 = 12
BATCH_SIZE = Limit("batch_size", 1024, "videos per forward")
NUM_CLASSES = Limit("num_classes", 100_000, "classes")
# A distillation teacher's size, as its config.json says it, checked before anything is allocated:
# InternVideo2's 6B is the largest teacher in the paper's line of work.
TEACHER_PARAMETERS = Limit("teacher_parameters", 8_000_000_000, "parameters in a teacher")

# Long videos and streams classified window by window (fluxvit.data.windows): a window or stride of
# at most an hour; at most 100 K windows in one video's plan (a day at one a second); the frames the
# windows open at once hold (window / stride of them when they overlap) within 2**28 pixels.
WINDOW_SECONDS = Limit("window_seconds", 3600, "seconds per window or stride")
WINDOWS = Limit("windows", 100_000, "windows per video")
WINDOW_BUFFER_PIXELS = Limit("window_buffer_pixels", 2**28, "decoded pixels held for the open windows")

# Processes and generated data.
WORKERS = Limit("workers", 64, "worker processes")
SYNTH_CLIPS = Limit("synth_clips", 1_000_000, "synthetic clips")
# Videos one dataset lists (an annotation file, or a folder of class folders as it is scanned):
# Kinetics-710 is ~660 K videos, SSv2 ~220 K; each listed video costs a few hundred bytes.
LISTED_VIDEOS = Limit("listed_videos", 2_000_000, "videos listed")

# Outputs held in memory until their one atomic write: ``fluxvit features --tokens`` (FluxViT-S,
# 2048 tokens, one view: 3.4 MB a video, so 2 GiB is ~600 videos; split bigger sets into files).
FEATURE_BYTES = Limit("feature_bytes", 2 * 2**30, "bytes of features in memory")
# ``fluxvit eval --report``: the confusion matrix is classes x classes (in memory and in
# confusion.csv); 4096 classes (Kinetics-710 is 710) is 134 MB of counts and a 33 MB CSV.
CONFUSION_CLASSES = Limit("confusion_classes", 4096, "classes in one confusion matrix")

# Files read whole into memory (YAML configs, annotation lists, class lists): a Kinetics-700 or
# SSv2 list is ~10 MB.
TEXT_FILE_BYTES = Limit("text_file_bytes", 256 * 2**20, "bytes")

ALL = (FRAME_PIXELS, CLIP_PIXELS, INDEX_CACHE_BYTES, GRID_TOKENS, VIEWS, BATCH_SIZE, NUM_CLASSES, TEACHER_PARAMETERS,
       WORKERS,
       SYNTH_CLIPS, TEXT_FILE_BYTES, FEATURE_BYTES, CONFUSION_CLASSES, LISTED_VIDEOS, WINDOW_SECONDS, WINDOWS,
       WINDOW_BUFFER_PIXELS)


def describe() -> str:
    """Every cap in force, one per line (for ``fluxvit env`` style listings and the README)."""
    return "\n".join(f"{lim.setting:<32} {lim.value():>12}  {lim.unit}" for lim in ALL)
