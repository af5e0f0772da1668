"""Model assembly: one constructor per architecture name, :func:`create_model` building any of
them fresh or from a checkpoint, and the checks that make loading an untrusted file safe."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from fluxvit import limits
from fluxvit.errors import CheckpointError, ConfigError, reason
from fluxvit.models.checkpoint import read_checkpoint, save_checkpoint
from fluxvit.models.fluxvit import FluxViT, FluxViTConfig
from fluxvit.models.hub import resolve
from fluxvit.models.pos_embed import interpolate_table
from fluxvit.models.release import convert_official_state_dict, release_num_classes
from fluxvit.models.state_dict import count_modules
from fluxvit.typecheck import show

_REGISTRY: dict[str, Callable[[], FluxViTConfig]] = {}
DEFAULT_NUM_CLASSES = 400  # Kinetics-400, the release's; used when neither caller nor file says


def register_model(fn: Callable[[], FluxViTConfig]) -> Callable[[], FluxViTConfig]:
    """Register ``fn`` (returning the architecture's :class:`FluxViTConfig`) under its name."""
    _REGISTRY[fn.__name__] = fn
    return fn


@register_model
def fluxvit_small_patch14() -> FluxViTConfig:
    """FluxViT-S/14, the release's shapes: 384 wide, 6 heads, positional table 24x18x18."""
    return FluxViTConfig(embed_dim=384, depth=12, num_heads=6, pos_grid=(24, 18, 18))


@register_model
def fluxvit_base_patch14() -> FluxViTConfig:
    """FluxViT-B/14, the release's shapes: 768 wide, 12 heads, positional table 32x20x20."""
    return FluxViTConfig(embed_dim=768, depth=12, num_heads=12, pos_grid=(32, 20, 20))


@register_model
def fluxvit_tiny_patch14() -> FluxViTConfig:
    """FluxViT-Ti/14 for CPU work: 192 wide, 3 heads, depth 12, budgets 1024/512/256."""
    return FluxViTConfig(
        embed_dim=192, depth=12, num_heads=3, pos_grid=(16, 12, 12), clip_embed_dim=384,
        pool_heads=8, head_budgets=(1024, 512, 256), default_grid=(8, 168), init_values=0.1,
    )


@register_model
def fluxvit_nano_patch14() -> FluxViTConfig:
    """FluxViT-N/14 for CPU training and the demo: 96 wide, 3 heads, depth 6, budgets 256/128/64."""
    return FluxViTConfig(
        embed_dim=96, depth=6, num_heads=3, pos_grid=(16, 8, 8), clip_embed_dim=192,
        pool_heads=4, head_budgets=(256, 128, 64), default_grid=(8, 112), init_values=0.1,
    )


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def model_config(name: str, **overrides) -> FluxViTConfig:
    """The config of architecture ``name`` with ``overrides`` applied (checked)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {show(name)}; registered: {', '.join(list_models())}")
    cfg = _REGISTRY[name]()
    cfg = FluxViTConfig.from_dict({**cfg.to_dict(), **overrides}) if overrides else cfg
    # the classifiers are (heads x clip width x classes) floats: a door for any count a user types
    limits.NUM_CLASSES.check(cfg.num_classes, "model config 'num_classes'")
    return cfg


def create_model(
    name: str,
    num_classes: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    reset_heads: bool = False,
    **overrides,
) -> FluxViT:
    """Build a registered FluxViT, optionally loading ``checkpoint``.

    ``checkpoint``: an official release file (.pth/.bin; raw state dict or under
    ``model``/``module``) or this project's checkpoint (.safetensors file or directory).
    ``num_classes`` defaults to the checkpoint's (or 400 without one). With ``reset_heads``
    the classifiers are re-initialised when the class count differs (fine-tuning); otherwise a
    mismatch is an error. Nothing is ever unpickled beyond tensors.
    """
    if checkpoint is None:
        if num_classes is not None:
            overrides["num_classes"] = num_classes
        model = FluxViT(model_config(name, **overrides))
        model.name = name
        return model
    return load_into(name, checkpoint, num_classes=num_classes, reset_heads=reset_heads, **overrides)


def load_into(
    name: str,
    path: str | os.PathLike,
    num_classes: int | None = None,
    reset_heads: bool = False,
    **overrides,
) -> FluxViT:
    """Build architecture ``name`` and load ``path`` into it (see :func:`create_model`)."""
    state, meta = read_checkpoint(path)
    official = meta.get("format") == "official"
    if meta.get("model") and meta["model"] != name:
        raise CheckpointError(f"{path}: is a checkpoint for {meta['model']}, not {name}")
    _check_finite(state, path)
    saved_cfg = meta.get("config") or {}
    if official:
        ckpt_classes = release_num_classes(state)
    else:
        _check_against_weights(name, saved_cfg, state, path)
        head = state.get("heads.0.weight")
        ckpt_classes = int(head.shape[0]) if head is not None and head.dim() == 2 else None
    want = num_classes if num_classes is not None else ckpt_classes or DEFAULT_NUM_CLASSES
    cfg = model_config(name, **{**saved_cfg, **overrides, "num_classes": want})
    if official:
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
    model.checkpoint_path = str(path)  # named by errors about what the weights compute
    return model


def _check_finite(state: dict[str, torch.Tensor], path) -> None:
    """Weights holding NaN or inf (a diverged run, a corrupted file) would turn every output
    into NaN; refused at load, naming the first such tensor."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: weights contain NaN or inf (first: {show(key)})")


def _check_against_weights(name: str, saved: dict, state: dict[str, torch.Tensor], path) -> None:
    """The file's metadata (its model config, its head budgets) must describe the file's own
    tensors. Checked before anything is built, because metadata is untrusted: a forged
    ``depth: 1000000`` or ``mlp_ratio: 1e6`` would otherwise allocate without bound. Module
    counts are compared first, then every shape of the architecture built on the meta device,
    which allocates nothing."""
    budgets = state.get("head_budgets")
    heads = count_modules(state, "heads.")
    if budgets is not None and (budgets.dim() != 1 or budgets.is_floating_point() or budgets.numel() != heads):
        raise CheckpointError(f"{path}: head_budgets {tuple(budgets.shape)} does not match its {heads} heads")
    if not saved:
        return
    try:
        cfg = model_config(name, **saved)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the model config in its metadata is invalid ({reason(e)})") from None
    for what, prefix, n in (("blocks", "blocks.", cfg.depth), ("heads", "heads.", len(cfg.head_budgets)),
                            ("alignment projectors", "align_projs.", cfg.num_align_projs)):
        found = count_modules(state, prefix)
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
        raise CheckpointError(f"{path}: the model config in its metadata is invalid ({reason(e)})") from None
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
        raise CheckpointError(f"{path}: does not fit {model.name or 'this model'}: " + "; ".join(problems))
    model.load_state_dict(state, strict=not allow_missing)


def load_checkpoint(path: str | os.PathLike, num_classes: int | None = None) -> FluxViT:
    """Load one of our checkpoints (file or directory) without naming the architecture."""
    _, meta = read_checkpoint(path)
    if meta.get("format") != "fluxvit" or not meta.get("model"):
        raise CheckpointError(f"{path}: carries no model name; use create_model(NAME, checkpoint=...)")
    return create_model(meta["model"], num_classes=num_classes, checkpoint=path)


def from_pretrained(
    name_or_path: str | os.PathLike,
    num_classes: int | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | None = None,
    local_files_only: bool = False,
) -> FluxViT:
    """Load a checkpoint folder (what :meth:`FluxViT.save_pretrained` writes; any checkpoint
    :func:`load_checkpoint` reads) or a Hugging Face hub repo ``"user/name"`` in that layout.

    An existing local path is read as it is and never touches the network. Otherwise a repo id
    is fetched into the Hugging Face cache (at ``revision``, into ``cache_dir`` if given) with
    huggingface_hub (``pip install 'fluxvit[hub]'``); with ``HF_HUB_OFFLINE=1`` or
    ``local_files_only`` only the cache is read. Every failure is one :class:`CheckpointError` line.
    """
    folder = resolve(name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                     local_files_only=local_files_only)
    return load_checkpoint(folder, num_classes=num_classes)


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    name: str,
    num_classes: int | None = None,
    classes_file: str | os.PathLike | None = None,
) -> str:
    """Official release file -> our checkpoint at ``dst``; returns a one-line summary."""
    from fluxvit.data.annotations import read_classes  # the one reader of class lists (checked, bounded)

    classes = list(read_classes(classes_file)) if classes_file else None  # before the weights are read
    _, meta = read_checkpoint(src)
    if meta.get("format") != "official":
        raise CheckpointError(f"{src}: is not an official FluxViT release checkpoint")
    model = create_model(name, num_classes=num_classes, checkpoint=src)
    if classes is not None:
        if len(classes) != model.num_classes:
            raise CheckpointError(
                f"{classes_file}: lists {len(classes)} classes, the checkpoint has {model.num_classes}"
            )
    out = save_checkpoint(model, dst, classes=classes)
    return (f"wrote {out}: {name}, {model.num_classes} classes, heads at "
            f"{'/'.join(str(b) for b in model.budgets)} tokens")
