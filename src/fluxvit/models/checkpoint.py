"""Checkpoint files: reading any supported file into a state dict and its metadata, and writing
this project's format. Nothing here builds a model (that is :mod:`fluxvit.models.registry`) or
knows the release's key names (that is :mod:`fluxvit.models.release`).

Our format is a ``.safetensors`` file whose header metadata carries a JSON record (model name,
config, class names, each head's budget, and whatever a tool stores with it, such as Token
Optimization's best grid per budget), or a directory in the Hugging Face hub's layout:
``model.safetensors`` (the same self-describing file), ``config.json`` (the record again, for people
and the hub), ``classes.txt`` (one class a line) and ``README.md`` (the model card,
:mod:`fluxvit.models.card`). ``config.json`` is what a loader reads; ``classes.txt`` only when the
record has no class names (a folder made by hand). :mod:`fluxvit.models.hub` saves, resolves and
pushes such folders.
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
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from fluxvit import __version__
from fluxvit.atomic import atomic_write, locked, write_text
from fluxvit.errors import CheckpointError, FluxViTError, reason
from fluxvit.files import file_or_directory, read_text, regular_file
from fluxvit.models.card import is_ours, model_card
from fluxvit.models.release import is_official_state_dict

log = logging.getLogger(__name__)

META_KEY = "fluxvit"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CLASSES_NAME = "classes.txt"
CARD_NAME = "README.md"
FOLDER_FILES = (WEIGHTS_NAME, CONFIG_NAME, CLASSES_NAME, CARD_NAME)  # what a checkpoint folder holds
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
    path = file_or_directory(path, "checkpoint", CheckpointError)  # never a FIFO or a device
    if path.is_dir():
        weights, cfg_file = path / WEIGHTS_NAME, path / CONFIG_NAME
        if not weights.exists():
            raise CheckpointError(f"{path}: directory has no {WEIGHTS_NAME}")
        regular_file(weights, "checkpoint", CheckpointError)
        meta = _read_json(cfg_file) if cfg_file.exists() else {}
        state, file_meta = _read_safetensors(weights)
        meta = _checked_meta({**file_meta, **meta, "format": "fluxvit"}, path)
        return state, _with_classes_file(meta, path / CLASSES_NAME)
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path)
        return state, _checked_meta({**meta, "format": "fluxvit"}, path)
    state = _read_torch(path)
    return state, {"format": "official" if is_official_state_dict(state) else "fluxvit"}


def _read_json(path: Path) -> dict:
    return _json_object(read_text(path, "config", CheckpointError), path, "config")


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


def _with_classes_file(meta: dict, path: Path) -> dict:
    """``meta`` with the class names of ``classes.txt`` when it has none of its own; a file that
    disagrees with the record is reported (the record wins: it is what was saved)."""
    if not path.exists():
        return meta
    names = [ln.strip() for ln in read_text(path, "class list", CheckpointError).splitlines() if ln.strip()]
    if not meta.get("classes"):
        return {**meta, "classes": names} if names else meta
    if names != [str(c).strip() for c in meta["classes"]]:
        log.warning("%s: differs from the class names in %s, which are used", path, CONFIG_NAME)
    return meta


def _checked_meta(meta: dict, path: Path) -> dict:
    for key, kind in _META_TYPES.items():
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise CheckpointError(f"{path}: metadata field {key!r} is not a {kind.__name__}")
    classes = meta.get("classes")
    if classes is not None and not all(isinstance(c, str) and c.strip() for c in classes):
        bad = next(c for c in classes if not (isinstance(c, str) and c.strip()))
        raise CheckpointError(f"{path}: metadata field 'classes' holds {bad!r}, not a class name")
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
        "fluxvit_version": __version__,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = path if path.suffix == ".safetensors" else path / WEIGHTS_NAME
    try:
        with atomic_write(weights) as tmp:
            save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
        if weights != path:
            write_text(path / CONFIG_NAME, json.dumps(meta, indent=2))
            _write_folder_extras(path, meta)
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path}: could not write the checkpoint ({reason(e)})") from None
    return path


def _write_folder_extras(folder: Path, meta: dict) -> None:
    """``classes.txt`` (removed when the model has no class names, so that an earlier model's
    list never outlives it) and the model card, unless the folder's README.md is the user's own."""
    classes = folder / CLASSES_NAME
    if meta.get("classes"):
        write_text(classes, "".join(f"{c}\n" for c in meta["classes"]))
    elif classes.exists():
        classes.unlink()
    card = folder / CARD_NAME
    if card.exists():
        try:
            if not is_ours(read_text(card, "model card", CheckpointError)):
                log.info("%s: kept (not written by fluxvit)", card)
                return
        except FluxViTError:  # unreadable or not text: not ours either
            log.info("%s: kept (not a fluxvit model card)", card)
            return
    write_text(card, model_card(meta, folder.resolve().name or "path/to/folder"))


def update_checkpoint(model, path: str | os.PathLike, changes: Callable[[dict], dict]) -> Path:
    """Save ``model`` to ``path`` with ``changes(metadata)`` merged into its metadata, where
    ``metadata`` is what the file holds *now* (under a lock, read after the lock is taken): several
    processes updating one checkpoint at once (``fluxvit optimize`` runs for different budgets)
    each keep their changes instead of the last writer's alone."""
    path = Path(path)
    with locked(path):
        current = dict(model.checkpoint_meta)
        if path.exists():
            current.update(_stored_metadata(path))
        model.checkpoint_meta = {**model.checkpoint_meta, **changes(current)}
        return save_checkpoint(model, path)


def _stored_metadata(path: Path) -> dict:
    """The metadata of a fluxvit checkpoint, without reading its weights."""
    if path.is_dir():
        return _read_json(path / CONFIG_NAME) if (path / CONFIG_NAME).exists() else {}
    regular_file(path, "checkpoint", CheckpointError)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({reason(e)})") from None
    return _checked_meta(_json_object(raw[META_KEY], path, "fluxvit metadata"), path) if META_KEY in raw else {}
