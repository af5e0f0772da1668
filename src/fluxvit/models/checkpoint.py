"""Checkpoint I/O: this project's safetensors format, and conversion of official release files.

Our format is a ``.safetensors`` file whose header metadata carries a JSON record (model name,
config, class names, each head's budget, anything a tool stores with it, such as Token
Optimization's best grid per budget), or a directory with ``config.json`` + ``model.safetensors``.
Official files (``.pth``/``.bin``) are read with ``torch.load(weights_only=True)`` only, and go
through :func:`convert_official_state_dict`, the one place that knows the release's key names.
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fluxvit.errors import CheckpointError, ConfigError
from fluxvit.models.fluxvit import FluxViT, FluxViTConfig
from fluxvit.models.pos_embed import interpolate_table

log = logging.getLogger(__name__)

META_KEY = "fluxvit"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
RELEASE_HEAD_BUDGETS = (3072, 2048, 1024)  # the release's engine sends the largest budget to head 0
_WRAPPERS = ("model", "module", "state_dict", "model_state")
_PREFIXES = ("module.", "backbone.", "encoder.", "model.")


# ---------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read any supported checkpoint -> (state dict in *our* key names, metadata).

    Metadata has ``format`` ("fluxvit" or "official") and, for our files, ``model``, ``config``,
    ``classes`` and whatever else was stored.
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
    if is_official_state_dict(state):
        return state, {"format": "official"}
    return state, {"format": "fluxvit"}


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


# The metadata fields a loader acts on, and the JSON type each must have.
_META_TYPES = {"model": str, "config": dict, "classes": list}


def _checked_meta(meta: dict, path: Path) -> dict:
    for key, kind in _META_TYPES.items():
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise CheckpointError(f"{path}: metadata field {key!r} is not a {kind.__name__}")
    return meta


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    _check_safetensors_header(path)
    try:
        state = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({_first_line(e)})") from None
    meta = _json_object(raw_meta[META_KEY], path, "fluxvit metadata") if META_KEY in raw_meta else {}
    return state, meta


def _check_safetensors_header(path: Path) -> None:
    """Validate the header before the library allocates anything: declared sizes and offsets
    must fit the file, not overlap, and match dtype x shape (a forged header is refused)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file (no header)")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > min(size - 8, 100 * 2**20):
                raise CheckpointError(f"{path}: safetensors header declares {n} bytes, file has {size}")
            text = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None
    header = _json_object(text, path, "safetensors header")
    itemsize = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1}
    body = size - 8 - n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = (int(v) for v in info["data_offsets"])
            numel = 1
            for d in info["shape"]:
                numel *= int(d)
            nbytes = numel * itemsize[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: safetensors entry {name!r} is malformed") from None
        if not 0 <= start <= end <= body or end - start != nbytes:
            raise CheckpointError(
                f"{path}: safetensors entry {name!r} declares bytes {start}..{end} (file body {body})"
            )
        spans.append((start, end, name))
    spans.sort()
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise CheckpointError(f"{path}: safetensors entries {a!r} and {b!r} overlap")


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
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)[:160]})") from None
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---------------------------------------------------------------------------- conversion
def is_official_state_dict(state: dict[str, torch.Tensor]) -> bool:
    """Recognise a release checkpoint by its key names."""
    return any(k.startswith(("clip_projector.", "gpe_proj.", "patch_embed.norm_before")) for k in state)


def _official_name(key: str) -> str:
    """Map one release key to ours (names only)."""
    renames = [
        ("gpe_proj.depthwise_conv.", "pos_embed.proj."),
        ("patch_embed.norm_before.", "patch_embed.norm_pixels."),
        (".attn.lpe.depthwise_conv.", ".attn.lpe."),
        ("clip_projector.", "projectors."),
        (".norm1_q.", ".norm_q."),
        (".norm1_k.", ".norm_k."),
        (".norm1_v.", ".norm_v."),
        (".cross_attn.q_bias", ".q.bias"),
        (".cross_attn.k_bias", ".k.bias"),
        (".cross_attn.v_bias", ".v.bias"),
        (".cross_attn.", "."),
        ("final_clip_decoder_for_projs.", "align_projs."),
    ]
    for old, new in renames:
        key = key.replace(old, new)
    if key.startswith("head."):
        key = "heads." + key[len("head."):]
    if key.startswith("align_projs.") and ".head." in key:
        key = key.replace(".head.", ".fc.")
    return key


def convert_official_state_dict(
    state: dict[str, torch.Tensor], config: FluxViTConfig
) -> dict[str, torch.Tensor]:
    """Release state dict -> ours for ``config``: renames keys, reshapes the patch projection
    and the depth-wise convs, reorders the pixel norm, splits the positional table (resized to
    ``config.pos_grid`` when the release's grid differs) and records each head's budget."""
    out: dict[str, torch.Tensor] = {}
    p = config.patch_size
    for key, value in state.items():
        if key == "pos_embed":
            out["pos_embed.cls"] = value[:, :1].clone()
            out["pos_embed.table"] = _official_table(value[:, 1:], config)
            continue
        new = _official_name(key)
        if new == "patch_embed.proj.weight" and value.dim() == 5:
            value = value.reshape(value.shape[0], -1)  # conv (C, 3, 1, p, p) -> linear (C, 3pp)
        elif new == "patch_embed.norm_pixels.weight" and value.numel() == 3 * p * p:
            value = value.view(p, p, 3).permute(2, 0, 1).reshape(-1)  # (row, col, ch) -> (ch, row, col)
        elif new.endswith(".attn.lpe.weight") and value.dim() == 5:
            value = value.reshape(value.shape[0], 1, -1)
        out[new] = value
    if "head_budgets" not in out:
        out["head_budgets"] = torch.tensor(RELEASE_HEAD_BUDGETS[: _count_heads(out)], dtype=torch.long)
    return out


def _count_heads(state: dict[str, torch.Tensor]) -> int:
    return len({k.split(".")[1] for k in state if k.startswith("heads.")}) or len(RELEASE_HEAD_BUDGETS)


def _official_table(tokens: torch.Tensor, config: FluxViTConfig) -> torch.Tensor:
    """(1, t*h*w, C) release table -> (1, C, T, H, W) on ``config.pos_grid`` (resized if needed)."""
    m, c = tokens.shape[1], tokens.shape[2]
    candidates = [config.pos_grid, (24, 18, 18), (32, 20, 20), (16, 16, 16), (8, 16, 16)]
    for t, h, w in candidates:
        if t * h * w == m:
            break
    else:
        raise CheckpointError(f"cannot infer the positional grid of a table with {m} entries")
    table = tokens.reshape(1, t, h, w, c).permute(0, 4, 1, 2, 3)
    if (t, h, w) != tuple(config.pos_grid):
        log.info("resizing positional table %s -> %s", (t, h, w), tuple(config.pos_grid))
        table = interpolate_table(table, tuple(config.pos_grid))
    return table.contiguous()


# ---------------------------------------------------------------------------- into a model
def load_into(
    name: str,
    path: str | os.PathLike,
    num_classes: int | None = None,
    reset_heads: bool = False,
    **overrides,
) -> FluxViT:
    """Build architecture ``name`` and load ``path`` into it (see :func:`create_model`)."""
    from fluxvit.models.registry import model_config

    state, meta = read_checkpoint(path)
    head_key = "head.0.weight" if meta.get("format") == "official" and "head.0.weight" in state else "heads.0.weight"
    ckpt_classes = state[head_key].shape[0] if head_key in state and state[head_key].dim() == 2 else None
    if meta.get("model") and meta["model"] != name:
        raise CheckpointError(f"{path}: is a checkpoint for {meta['model']}, not {name}")
    saved_cfg = meta.get("config") or {}
    if meta.get("format") != "official":
        _check_against_weights(name, saved_cfg, state, path)
    base = {**saved_cfg, **overrides} if saved_cfg else overrides
    want = num_classes if num_classes is not None else ckpt_classes or 400
    cfg = model_config(name, **{**base, "num_classes": want})
    if meta.get("format") == "official":
        state = convert_official_state_dict(state, cfg)
    elif "pos_embed.table" in state and tuple(state["pos_embed.table"].shape[2:]) != tuple(cfg.pos_grid):
        state["pos_embed.table"] = interpolate_table(state["pos_embed.table"], tuple(cfg.pos_grid))
    if "head_budgets" in state:
        cfg.head_budgets = tuple(int(b) for b in state["head_budgets"].tolist())
    model = FluxViT(cfg)
    model.name = name
    if ckpt_classes is not None and ckpt_classes != want:
        if not reset_heads:
            raise CheckpointError(
                f"{path}: has {ckpt_classes} classes but num_classes={want} was asked "
                f"(fine-tuning: pass reset_heads=True)"
            )
        state = {k: v for k, v in state.items() if not k.startswith("heads.")}
    _load_checked(model, state, path, allow_missing=("heads.",) if reset_heads else ())
    classes = meta.get("classes")
    model.class_names = list(classes) if classes and len(classes) == want else None
    model.checkpoint_meta = {k: v for k, v in meta.items() if k not in ("config", "format")}
    return model


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered modules ``prefix<i>.`` the state dict holds (blocks, heads, ...)."""
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _check_against_weights(name: str, saved: dict, state: dict[str, torch.Tensor], path) -> None:
    """The file's metadata (its model config, its head budgets) must describe the file's own
    tensors. Checked before anything is built, because metadata is untrusted: a forged
    ``depth: 1000000`` or ``mlp_ratio: 1e6`` would otherwise allocate without bound. Module
    counts are compared first, then every shape of the architecture built on the meta device,
    which allocates nothing."""
    from fluxvit.models.registry import model_config

    budgets = state.get("head_budgets")
    heads = _count(state, "heads.")
    if budgets is not None and (budgets.dim() != 1 or budgets.is_floating_point() or budgets.numel() != heads):
        raise CheckpointError(f"{path}: head_budgets {tuple(budgets.shape)} does not match its {heads} heads")
    if not saved:
        return
    try:
        cfg = model_config(name, **saved)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the model config in its metadata is invalid ({_first_line(e)})") from None
    for what, prefix, n in (("blocks", "blocks.", cfg.depth), ("heads", "heads.", len(cfg.head_budgets)),
                            ("alignment projectors", "align_projs.", cfg.num_align_projs)):
        found = _count(state, prefix)
        if found != n:
            raise CheckpointError(f"{path}: its metadata describes {n} {what}, its weights hold {found}")
    table = state.get("pos_embed.table")  # its initial values are computed, not allocated on "meta"
    if table is None or tuple(table.shape) != (1, cfg.embed_dim, *cfg.pos_grid):
        raise CheckpointError(f"{path}: its metadata describes a positional table {(1, cfg.embed_dim, *cfg.pos_grid)}, "
                              f"its weights hold {None if table is None else tuple(table.shape)}")
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in FluxViT(cfg).state_dict().items()}
    except (ConfigError, RuntimeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path}: the model config in its metadata is invalid ({_first_line(e)})") from None
    for key, shape in shapes.items():
        if key in state and tuple(state[key].shape) != shape:
            raise CheckpointError(f"{path}: its metadata config does not match its weights: {key} is "
                                  f"{tuple(state[key].shape)} in the weights, {shape} in the config")


def _load_checked(model: FluxViT, state: dict[str, torch.Tensor], path, allow_missing=()) -> None:
    """Load ``state`` strictly, turning every mismatch into one plain sentence."""
    own = model.state_dict()
    wrong = [
        f"{k} (checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensors have other shapes, e.g. {', '.join(wrong[:2])}")
    if missing:
        problems.append(f"{len(missing)} tensors are missing, e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors are unknown, e.g. {', '.join(unexpected[:3])}")
    if problems:
        arch = getattr(model, "name", None) or "this model"
        raise CheckpointError(f"{path}: does not fit {arch}: " + "; ".join(problems))
    model.load_state_dict(state, strict=not allow_missing)


# ---------------------------------------------------------------------------- writing
def save_checkpoint(
    model: FluxViT,
    path: str | os.PathLike,
    classes: list[str] | None = None,
    extra: dict | None = None,
) -> Path:
    """Save ``model`` as safetensors with its config, class names and budgets; atomic.

    ``path`` ending in ``.safetensors`` writes one self-describing file; otherwise a directory
    with ``config.json`` and ``model.safetensors``. ``extra`` is merged into the metadata
    record (kept from an earlier load of the same checkpoint unless overridden).
    """
    path = Path(path)
    classes = classes if classes is not None else model.class_names
    meta = {
        **getattr(model, "checkpoint_meta", {}),
        **(extra or {}),
        "model": model.name,
        "config": model.config.to_dict() | {"head_budgets": list(model.budgets)},
        "classes": list(classes) if classes else None,
        "head_budgets": list(model.budgets),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(state, path, {META_KEY: json.dumps(meta)})
    else:
        path.mkdir(parents=True, exist_ok=True)
        _atomic_save(state, path / WEIGHTS_NAME, {META_KEY: json.dumps(meta)})
        tmp = path / f".{CONFIG_NAME}.part"
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, path / CONFIG_NAME)
    return path


def _atomic_save(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.part")
    try:
        save_file(state, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
        raise CheckpointError(f"{path}: could not write the checkpoint ({reason})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike, num_classes: int | None = None) -> FluxViT:
    """Load one of our checkpoints (file or directory) without naming the architecture."""
    _, meta = read_checkpoint(path)
    if meta.get("format") != "fluxvit" or not meta.get("model"):
        raise CheckpointError(f"{path}: carries no model name; use create_model(NAME, checkpoint=...)")
    from fluxvit.models.registry import create_model

    return create_model(meta["model"], num_classes=num_classes, checkpoint=path)


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    name: str,
    num_classes: int | None = None,
    classes_file: str | os.PathLike | None = None,
) -> str:
    """Official release file -> our checkpoint at ``dst``; returns a one-line summary."""
    _, meta = read_checkpoint(src)
    if meta.get("format") != "official":
        raise CheckpointError(f"{src}: is not an official FluxViT release checkpoint")
    from fluxvit.models.registry import create_model

    model = create_model(name, num_classes=num_classes, checkpoint=src)
    classes = None
    if classes_file:
        classes = [ln.strip() for ln in Path(classes_file).read_text().splitlines() if ln.strip()]
        if len(classes) != model.num_classes:
            raise CheckpointError(
                f"{classes_file}: lists {len(classes)} classes, the checkpoint has {model.num_classes}"
            )
    out = save_checkpoint(model, dst, classes=classes)
    return (f"wrote {out}: {name}, {model.num_classes} classes, heads at "
            f"{'/'.join(str(b) for b in model.budgets)} tokens")
