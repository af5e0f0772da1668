"""Checkpoint files: reading any supported file into a state dict and its metadata, and writing
this project's format. Nothing here builds a model (that is :mod:`fluxvit.models.registry`) or
knows the release's key names (that is :mod:`fluxvit.models.release`).

Our format is a ``.safetensors`` file whose header metadata carries a JSON record (model name,
config, class names, each head's budget, and whatever a tool stores with it, such as Token
Optimization's best grid per budget), or a directory with ``config.json`` + ``model.safetensors``.
PyTorch files (``.pth``/``.bin``, the release's) are read with ``torch.load(weights_only=True)``.

Untrusted files: a forged safetensors header (sizes beyond the file, overlapping or gapped
entries, a shape whose byte count overflows or does not match its offsets, a header declaring
terabytes, JSON nested without end) is refused by the safetensors library itself before it
allocates anything (``tests/models/test_checkpoint.py`` checks each case), so no header guard of
our own sits in front of it; only a file the OS will not let us read is opened here first, since
the library calls that "No such file or directory". The metadata record is ours to check: its JSON and field types here,
its config against the weights in :func:`fluxvit.models.registry.load_into`.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from fluxvit.atomic import atomic_write, write_text
from fluxvit.errors import CheckpointError, reason
from fluxvit.models.release import is_official_state_dict

log = logging.getLogger(__name__)

META_KEY = "fluxvit"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# Training frameworks wrap a state dict under a key and prefix its names (DDP's "module.").
_WRAPPERS = ("model", "module", "state_dict", "model_state")
_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
# The metadata fields a loader acts on, and the JSON type each must have.
_META_TYPES = {"model": str, "config": dict, "classes": list}


# ---------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read any supported checkpoint -> (state dict, metadata).

    Metadata has ``format``: "fluxvit" (our key names; for our files also ``model``, ``config``,
    ``classes`` and whatever else was stored) or "official" (the release's key names, see
    :mod:`fluxvit.models.release`).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_dir():
        weights, cfg_file = path / WEIGHTS_NAME, path / CONFIG_NAME
        if not weights.is_file():
            raise CheckpointError(f"{path}: directory has no {WEIGHTS_NAME}")
        meta = _read_json(cfg_file) if cfg_file.is_file() else {}
        state, file_meta = _read_safetensors(weights)
        return state, _checked_meta({**file_meta, **meta, "format": "fluxvit"}, path)
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path)
        return state, _checked_meta({**meta, "format": "fluxvit"}, path)
    state = _read_torch(path)
    return state, {"format": "official" if is_official_state_dict(state) else "fluxvit"}


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable config ({e})") from None
    return _json_object(text, path, "config")


def _json_object(text: str | bytes, path: Path, what: str) -> dict:
    """A JSON object from an untrusted checkpoint; one-line CheckpointError otherwise (also for
    nesting deep enough to exhaust the parser's recursion)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: {what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: {what} is not a JSON object")
    return obj


def _checked_meta(meta: dict, path: Path) -> dict:
    for key, kind in _META_TYPES.items():
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise CheckpointError(f"{path}: metadata field {key!r} is not a {kind.__name__}")
    return meta


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:  # the library reports a file it may not read as "No such file or directory": ask the OS
        with open(path, "rb"):
            pass
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({reason(e)})") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({reason(e)})") from None
    meta = _json_object(raw_meta[META_KEY], path, "fluxvit metadata") if META_KEY in raw_meta else {}
    return state, meta


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it may not read; a refusal below says it in one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler names the first forbidden thing it met: a GLOBAL means the
        # file asks to import (and maybe run) Python code; anything else is just not a pickle.
        detail = _weights_only_reason(e)
        if "GLOBAL" in detail or "global" in detail:
            raise CheckpointError(
                f"{path}: refused to load: it holds Python objects beyond tensors, which could run "
                f"code ({detail[:120]})"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail[:120]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            # garbage that happens to parse as pickle opcodes trips the unpickler's own stack and
            # memo lookups (measured on 3000 random 1000-byte files: 196 IndexError, 28 KeyError)
            IndexError, KeyError, TypeError, AttributeError, OverflowError, struct.error) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason(e)})") from None
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: does not contain a state dict of tensors")
    state = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        state[key] = value
    return state


def _weights_only_reason(e: BaseException) -> str:
    """The one informative line of torch's long weights-only error message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("Trying to load", "Unsupported", "Unpickling", "Unsupported global")):
            return ln
    return lines[-1] if lines else type(e).__name__


# ---------------------------------------------------------------------------- writing
def save_checkpoint(model, path: str | os.PathLike, classes: list[str] | None = None,
                    extra: dict | None = None) -> Path:
    """Save ``model`` (a FluxViT) as safetensors with its config, class names and budgets; atomic.

    ``path`` ending in ``.safetensors`` writes one self-describing file; otherwise a directory
    with ``config.json`` and ``model.safetensors``. ``extra`` is merged into the metadata
    record, over ``model.checkpoint_meta`` (what an earlier load of the same file carried).
    """
    path = Path(path)
    classes = classes if classes is not None else model.class_names
    meta = {
        **model.checkpoint_meta,
        **(extra or {}),
        "model": model.name,
        "config": model.config.to_dict() | {"head_budgets": list(model.budgets)},
        "classes": list(classes) if classes else None,
        "head_budgets": list(model.budgets),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = path if path.suffix == ".safetensors" else path / WEIGHTS_NAME
    try:
        with atomic_write(weights) as tmp:
            save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
        if weights != path:
            write_text(path / CONFIG_NAME, json.dumps(meta, indent=2))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path}: could not write the checkpoint ({reason(e)})") from None
    return path
