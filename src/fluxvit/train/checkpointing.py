"""Training checkpoints: everything needed to continue a run exactly.

A training checkpoint (``ckpt_000123.pt``) holds the model, the objective's trainable parts,
the optimiser, the schedule and sampler positions, the EMA weights and the RNG states (torch
CPU and CUDA, Python ``random``, numpy). It is written atomically (:mod:`fluxvit.atomic`), so a
crash never leaves a half-written checkpoint under the final name; the last ``keep``
are kept. Loading uses ``torch.load(weights_only=True)``: only tensors and plain containers.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from fluxvit.atomic import atomic_write
from fluxvit.errors import CheckpointError, reason
from fluxvit.files import regular_file

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt_(\d{9})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{step:09d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the complete training checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def rng_state() -> dict:
    """Every global RNG's state, in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def save_training_state(state: dict, directory: str | os.PathLike, step: int, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically; delete all but the last ``keep``."""
    directory = Path(directory)
    path = checkpoint_path(directory, step)
    writer = None
    try:
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            writer = _RecordingWriter(f)
            torch.save(state, writer)
            f.flush()
    except (OSError, RuntimeError) as e:
        cause = writer.error if writer is not None and writer.error is not None else e
        kept = [p.name for _, p in list_checkpoints(directory)]
        previous = f"; {kept[-1]} is kept" if kept else ""
        raise CheckpointError(f"{path}: could not write the training checkpoint ({reason(cause, 120)}){previous}") \
            from None
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


class _RecordingWriter:
    """A file wrapper that keeps the OS error of a failed write (a full disk: ENOSPC, a size
    limit: EFBIG), which torch.save reports only as a RuntimeError about stream positions."""

    def __init__(self, f) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self._f.flush()


def load_training_state(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_training_state` (tensors and plain data only).

    Every record of the file's zip archive must match the CRC-32 written with it (torch.load
    itself does not check them): a checkpoint damaged after it was written is refused rather
    than resumed from with wrong weights."""
    path = regular_file(path, "training checkpoint", CheckpointError)  # never a FIFO: zipfile would block
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        # a file object, not the path: torch.load hands a path named *.safetensors to another reader
        with open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({reason(e)})") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: damaged training checkpoint: record {damaged} fails its CRC check")
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{path}: not a fluxvit training checkpoint")
    return state
