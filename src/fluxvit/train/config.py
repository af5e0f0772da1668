"""Training configuration as data: defaults -> a YAML file -> ``key=value`` overrides.

Every section is a dataclass; :func:`load_config` builds the defaults, merges the YAML file,
then applies dotted overrides (``optim.lr=3e-4``, ``flux.frames=[4,8,2]``), checks every key,
type and range (each numeric field states its range in its metadata, :func:`_meta`; counts of
resources also count against the caps of :mod:`fluxvit.limits`), and validates the combination
(:func:`validate`: choices, values that relate to each other, every grid the run will use
against the token cap) so that a wrong setting ends in one
:class:`~fluxvit.errors.ConfigError` line before any work starts. :func:`save_config` writes
the final config beside the run.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fluxvit import limits
from fluxvit.atomic import write_text
from fluxvit.data.augment import ERASING_MODES
from fluxvit.data.sampling import DEFAULT_VIEW_OFFSETS, VIEW_OFFSETS
from fluxvit.data.transforms import DEFAULT_RESIZE, RESIZE_MODES
from fluxvit.errors import ConfigError
from fluxvit.files import read_text
from fluxvit.flux.grid import GRID_PER, FluxGrid, Grid, check_run_grid
from fluxvit.typecheck import bounds, coerce, in_range, show

PRECISIONS = ("fp32", "bf16", "fp16")  # fp16 trains with a gradient scaler (GPUs without bf16: V100, T4)
WANDB_MODES = ("online", "offline")
DATA_SOURCES = ("csv", "synthetic")
DEVICES = "auto, cpu, cuda, cuda:N"
_DEVICE_RE = re.compile(r"^(?:auto|cpu|cuda(?::\d{1,3})?)$")  # as fluxvit.placement reads it
_FLUX = FluxGrid()  # the family's defaults are FluxGrid's


def _meta(lo: float | None = None, hi: float | None = None, above: float | None = None, *,
          below: float | None = None, cap: limits.Limit | None = None) -> dict:
    """A field's range as :func:`~fluxvit.typecheck.bounds` states it, plus two extras checked by
    :func:`_check_field`: ``below`` (an open upper end, ``value < below``) and ``cap`` (a
    :class:`~fluxvit.limits.Limit` the value counts against, read when checked)."""
    meta = dict(bounds(lo, hi, above))
    if below is not None:
        meta["below"] = below
    if cap is not None:
        meta["cap"] = cap
    return meta


_POSITIVE = bounds(lo=1)  # counts of steps, clips, frames, tokens
_WEIGHT = bounds(lo=0)  # loss weights, alphas, learning rates that may be 0
_PROBABILITY = bounds(0, 1)


@dataclass
class ModelConfig:
    """The student: a registered architecture, optionally initialised from a checkpoint."""

    name: str = "fluxvit_nano_patch14"
    checkpoint: str | None = None  # fine-tune from this (ours or an official release file)
    num_classes: int | None = field(default=None, metadata=_meta(1, cap=limits.NUM_CLASSES))  # default: the data's
    # override the architecture's per-head budgets
    head_budgets: list[int] | None = field(default=None, metadata=_meta(1, cap=limits.GRID_TOKENS))
    drop_path: float = field(default=0.0, metadata=_meta(0, below=1))
    grad_checkpointing: bool = False


@dataclass
class RandomErasingConfig:
    """Random erasing after normalisation (the release's --reprob/--remode/--recount): with
    probability ``prob`` a clip gets ``count`` boxes (2-33% of the frame, aspect 0.3-3.3), the same
    boxes on every frame (``per_clip``; false: boxes drawn per frame), filled by ``mode``: const
    (zeros), rand (one normal colour per box) or pixel (normal noise per pixel)."""

    prob: float = field(default=0.0, metadata=_PROBABILITY)
    mode: str = "pixel"
    count: int = field(default=1, metadata=bounds(1, 16))
    per_clip: bool = True


@dataclass
class DataConfig:
    """Where clips come from. ``source``: ``csv`` (annotation files, decoded by the data
    pipeline) or ``synthetic`` (the synthetic benchmark rendered in memory, no files)."""

    source: str = "synthetic"
    train: str | None = None  # train annotation file (csv source)
    val: str | None = None  # validation annotation file (csv source)
    root: str | None = None  # video root; default: the annotation file's folder
    variant: str = "default"  # synthetic: how the benchmark's clips are built (`fluxvit synth --variant`)
    classes: list[str] | None = None  # synthetic: class subset (default: the variant's)
    train_per_class: int = field(default=48, metadata=_POSITIVE)  # synthetic: training clips per class
    val_per_class: int = field(default=16, metadata=_POSITIVE)  # synthetic: validation clips per class
    size: int = field(default=112, metadata=bounds(lo=32))  # synthetic: rendered frame size (px, even)
    frames: int = field(default=16, metadata=bounds(lo=2))  # synthetic: rendered frames per clip
    batch_size: int = field(default=8, metadata=_meta(1, cap=limits.BATCH_SIZE))  # clips per rank per micro-step
    workers: int = field(default=0, metadata=_meta(0, cap=limits.WORKERS))  # DataLoader worker processes
    # csv: keep up to this many GiB of decoded frames in memory per process, so each video is
    # decoded once rather than every epoch (small datasets, few cores); 0: no cache
    cache_gb: float = field(default=0.0, metadata=bounds(lo=0))
    flip: bool = True  # random horizontal flip (turn off for direction-sensitive classes)
    # Random resized crop: the fraction of the frame's area and the aspect-ratio range (w/h) of
    # the box. The defaults are the release's (Kinetics); data whose evidence is small or
    # pixel-fine wants a narrower range ([1, 1] and [1, 1]: the whole frame, no crop). Their
    # ranges (0 < min <= max <= 1; 0 < min <= max) are checked as pairs by validate().
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    # RandAugment as timm spells it (the release: rand-m7-n4-mstd0.5-inc1); null: none
    rand_augment: str | None = None
    random_erasing: RandomErasingConfig = field(default_factory=lambda: RandomErasingConfig())
    # augmented samples of each video per step (the release's --num_sample): data.batch_size clips
    # per rank hold batch_size / repeated_aug videos, each decoded once and augmented this many times
    repeated_aug: int = field(default=1, metadata=_meta(1, cap=limits.BATCH_SIZE))
    # how frames are resized: release (bilinear without antialiasing in training, OpenCV's linear
    # filter at test time, as the release) or antialias (antialiased bilinear); recorded in the
    # checkpoint, so evaluation resizes as training did
    resize: str = DEFAULT_RESIZE
    # where a video's test clips sit in its segments: between ((k+1)/(K+1), the release's
    # Kinetics) or start (k/K, its SSv2); recorded in the checkpoint like resize
    view_offsets: str = DEFAULT_VIEW_OFFSETS


@dataclass
class FluxConfig:
    """Sampling grids. Flux draws one (T, R) per batch from the family; ``fixed`` (``TxR``)
    pins every batch to one grid, as the fixed-grid baseline does."""

    # start, stop (incl.), step
    frames: list[int] = field(default_factory=lambda: list(_FLUX.frames), metadata=_POSITIVE)
    sizes: list[int] = field(default_factory=lambda: list(_FLUX.sizes), metadata=_POSITIVE)
    min_tokens: int = field(default=_FLUX.min_tokens, metadata=_POSITIVE)
    max_tokens: int = field(default=_FLUX.max_tokens, metadata=_POSITIVE)
    fixed: str | None = None
    # step: one grid per optimiser step on every rank; rank_batch: each rank draws its own (the release)
    grid_per: str = "step"

    def grids(self, patch_size: int) -> tuple[Grid, ...]:
        """The grids a student of ``patch_size`` is trained on (checked)."""
        if self.fixed is not None:
            grid = Grid.parse(self.fixed)
            grid.check_patch(patch_size)
            return (grid,)
        return FluxGrid(tuple(self.frames), tuple(self.sizes), self.min_tokens, self.max_tokens, patch_size).grids


@dataclass
class ObjectiveConfig:
    """What is minimised. ``fixed``/``flux``: cross-entropy at one budget through one head;
    ``flux_multi``: every head at its own budget + feature alignment; ``distill``: UMT-style
    token and pooled-feature alignment to a frozen teacher."""

    name: str = "flux_multi"
    # fixed/flux/distill: tokens kept (default: fixed keeps all, flux the middle head's, distill head 0's)
    budget: int | None = field(default=None, metadata=_meta(1, cap=limits.GRID_TOKENS))
    head: int | None = field(default=None, metadata=bounds(lo=0))  # fixed/flux: head trained (default: nearest)
    align_weight: float = field(default=1.0, metadata=_WEIGHT)  # flux_multi: weight of the alignment loss
    # distill: the teacher: a registered FluxViT architecture (with teacher_checkpoint), or
    # hf:DIR, a transformers vision model (CLIP, SigLIP, VideoMAE) saved in the local folder DIR
    teacher: str | None = None
    teacher_checkpoint: str | None = None  # distill: a FluxViT teacher's weights
    teacher_grid: str | None = None  # distill: TxR the teacher sees (default: the batch grid)
    token_weight: float = field(default=1.0, metadata=_WEIGHT)  # distill: token-feature alignment weight
    pooled_weight: float = field(default=1.0, metadata=_WEIGHT)  # distill: pooled-feature alignment weight
    # distill: cross-entropy on head 0 as well (0: pure distillation)
    supervised_weight: float = field(default=0.0, metadata=_WEIGHT)
    # distill: the teacher's layers aligned (negative: from the last), one student projection each
    teacher_layers: list[int] = field(default_factory=lambda: [-1], metadata=bounds(-1024, 1023))
    # distill: the share of the student's tokens masked (Unmasked Teacher's 0.8 keeps a fifth); null: the budget
    mask_ratio: float | None = field(default=None, metadata=_meta(0, below=1))


@dataclass
class OptimConfig:
    """AdamW with layer-wise lr decay, cosine schedule with linear warm-up, and regularisers."""

    lr: float = field(default=1e-3, metadata=bounds(above=0))  # peak learning rate (scaled for the global batch)
    min_lr: float = field(default=1e-6, metadata=_WEIGHT)  # the cosine's end (at most lr)
    warmup_lr: float = field(default=1e-6, metadata=_WEIGHT)  # the warm-up's start (at most lr)
    warmup_steps: int = field(default=0, metadata=bounds(lo=0))
    weight_decay: float = field(default=0.05, metadata=_WEIGHT)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata=_meta(0, below=1))
    eps: float = field(default=1e-8, metadata=bounds(above=0))
    layer_decay: float = field(default=0.75, metadata=bounds(hi=1, above=0))  # lr scale per layer below the top
    clip_grad: float | None = field(default=None, metadata=bounds(lo=0))  # max global grad norm (0 or null: off)
    accum_steps: int = field(default=1, metadata=_POSITIVE)  # micro-batches per optimiser step
    label_smoothing: float = field(default=0.1, metadata=_meta(0, below=1))
    mixup: float = field(default=0.0, metadata=_WEIGHT)  # mixup alpha (0: off)
    cutmix: float = field(default=0.0, metadata=_WEIGHT)  # cutmix alpha (0: off)
    mixup_prob: float = field(default=1.0, metadata=_PROBABILITY)
    mixup_switch_prob: float = field(default=0.5, metadata=_PROBABILITY)  # chance of cutmix when both are on


@dataclass
class EvalConfig:
    """Validation during and after training: one view per clip at one grid and budget."""

    every: int = field(default=0, metadata=bounds(lo=0))  # steps between validations (0: only at the end)
    grid: str | None = None  # TxR (default: the architecture's default grid)
    # tokens (default: head 0's budget, capped by the grid)
    budget: int | None = field(default=None, metadata=_meta(1, cap=limits.GRID_TOKENS))
    max_clips: int | None = field(default=None, metadata=_POSITIVE)  # null: every clip


@dataclass
class LoggingConfig:
    """Where the run's metrics go besides metrics.jsonl (and TensorBoard, ``tensorboard: true``)."""

    wandb: str | None = None  # a Weights & Biases project (pip install 'fluxvit[wandb]'); null: off
    wandb_mode: str = "online"  # online | offline (written under the run's folder, synced later)


@dataclass
class TrainConfig:
    """A whole training run."""

    out_dir: str = "runs/train"
    seed: int = field(default=0, metadata=_meta(0, below=2**63))
    steps: int = field(default=100, metadata=_POSITIVE)  # optimiser steps
    precision: str = "fp32"  # fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # keep an EMA of the weights (e.g. 0.9999); 0 or null: none (1 would never leave the initial weights)
    ema_decay: float | None = field(default=None, metadata=_meta(0, below=1))
    log_every: int = field(default=1, metadata=_POSITIVE)
    ckpt_every: int = field(default=50, metadata=_POSITIVE)
    keep_last: int = field(default=2, metadata=_POSITIVE)
    max_bad_steps: int = field(default=5, metadata=_POSITIVE)  # consecutive non-finite losses that stop the run
    tensorboard: bool = False
    progress: bool | None = None  # progress bar (default: when stderr is a terminal)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    flux: FluxConfig = field(default_factory=FluxConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- reading YAML
class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only, no tags that build objects) that also refuses a key
    written twice in one mapping, which PyYAML would silently resolve to the last value."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *base' then overriding a key is YAML's merge, not a duplicate
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # an unhashable key: the base class says what is wrong with it
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads 1e-3 and 1.0e3 as strings (its floats need a dot and a signed exponent); read
# them as the numbers everyone means, in files as in --set overrides.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    """Plain data from YAML ``text``; :class:`ConfigError` (no location) if it cannot be read."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError("not valid YAML (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"not valid YAML ({str(e).split(';')[0][:120]})") from None


# ----------------------------------------------------------------------------- merging
def _merge(obj: Any, values: dict, prefix: str = "") -> None:
    """Set ``values`` (a nested dict) on the dataclass ``obj``, checking keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<top>'!r} must be a mapping")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {show(full)} (known here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{full}.")
        else:
            value = coerce(value, hints[key], full)
            _check_field(value, fields[key], full)
            setattr(obj, key, value)


def _check_field(value: Any, f: dataclasses.Field, key: str) -> None:
    """``value`` (already of the field's type) against the range in the field's metadata
    (:func:`_meta`); lists item by item, None passes. One :class:`ConfigError` naming ``key``."""
    lo, hi, above = f.metadata.get("range", (None, None, None))
    below, cap = f.metadata.get("below"), f.metadata.get("cap")
    in_range(value, key, None if below is not None else lo, hi, above)
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if v is None or isinstance(v, (bool, str)):
            continue
        if below is not None and not ((lo is None or v >= lo) and v < below):
            span = f"at least {_num(lo)} and less than {_num(below)}" if lo is not None else f"less than {_num(below)}"
            raise ConfigError(f"config key {key!r} must be {span}, got {show(v)}")
        if cap is not None:
            cap.check(v, f"config key {key!r}")


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def check_values(obj: Any, prefix: str = "") -> None:
    """Check the type and range of every field of the config dataclass ``obj`` and of its
    sections (a config built in code has not been through :func:`_merge`)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, f"{key}.")
            continue
        value = coerce(value, hints[f.name], key)
        _check_field(value, f, key)
        setattr(obj, f.name, value)


def _parse_override(text: str) -> dict:
    """``a.b=value`` -> ``{"a": {"b": value}}``; the value is read as YAML (``3e-4``, ``[1,2]``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except ConfigError:
        value = raw  # not YAML: take the text as a string
    # YAML 1.1 reads 3e-4 as a string (it wants 3.0e-4); accept the usual float spellings.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            pass
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides; checked."""
    cfg = TrainConfig()
    if path is not None:
        path = Path(path)
        text = read_text(path, "config file", ConfigError)
        try:
            data = _load_yaml(text) or {}
            _merge(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def apply_overrides(settings: Any, overrides: list[str] | tuple[str, ...]) -> None:
    """``key=value`` texts (``--set``; dotted keys for sections) merged into the dataclass
    ``settings`` (a training config, the demo's settings), each value checked as it goes in; a
    bad one is one :class:`ConfigError` naming its text."""
    for text in overrides:
        values = _parse_override(text)
        try:
            _merge(settings, values)
        except ConfigError as e:
            raise ConfigError(f"--set {text}: {e}") from None


def config_from_dict(values: dict) -> TrainConfig:
    """A checked config from a nested dict (for in-process callers)."""
    cfg = TrainConfig()
    _merge(cfg, values)
    validate(cfg)
    return cfg


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write ``cfg`` as YAML (the final, merged config of a run)."""
    return write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ----------------------------------------------------------------------------- validation
def validate(cfg: TrainConfig) -> None:
    """Check every value (type and range), then the combination of settings; raise one
    :class:`ConfigError` line on the first problem. Nothing is built, read or written, and the
    grids are checked against :data:`~fluxvit.limits.GRID_TOKENS` from the ends of their ranges,
    so the check takes milliseconds whatever the ranges say."""
    from fluxvit.models.registry import model_config
    from fluxvit.train.objectives import OBJECTIVES

    check_values(cfg)
    obj = cfg.objective
    _check_choice("objective.name", obj.name, OBJECTIVES)
    _check_choice("precision", cfg.precision, PRECISIONS)
    _check_choice("flux.grid_per", cfg.flux.grid_per, GRID_PER)
    _check_choice("data.source", cfg.data.source, DATA_SOURCES)
    _check_choice("data.resize", cfg.data.resize, RESIZE_MODES)
    _check_choice("data.view_offsets", cfg.data.view_offsets, VIEW_OFFSETS)
    _check_choice("data.random_erasing.mode", cfg.data.random_erasing.mode, ERASING_MODES)
    _check_choice("logging.wandb_mode", cfg.logging.wandb_mode, WANDB_MODES)
    if not _DEVICE_RE.match(cfg.device.strip().lower()):
        raise ConfigError(f"device {cfg.device!r} is not one of {DEVICES}")
    if not cfg.out_dir.strip():
        raise ConfigError("out_dir is empty (give the folder the run is written to)")
    if cfg.data.source == "csv" and not cfg.data.train:
        raise ConfigError("data.source is 'csv' but data.train (the training annotation file) is not set")
    if cfg.model.checkpoint is not None and not Path(cfg.model.checkpoint).exists():
        raise ConfigError(f"model.checkpoint {cfg.model.checkpoint}: no such file")
    _check_optim(cfg.optim, cfg.steps)
    _check_data(cfg)

    overrides = {"head_budgets": cfg.model.head_budgets} if cfg.model.head_budgets else {}
    arch = model_config(cfg.model.name, **overrides)
    patch = arch.patch_size
    # The grids the student will see, then every budget against them.
    grids = _train_grids(cfg.flux, patch)
    most = max(g.num_patches(patch) for g in grids)
    where = f"the fixed grid {cfg.flux.fixed}" if cfg.flux.fixed is not None else "any flux grid"
    if obj.name == "fixed" and cfg.flux.fixed is None:
        raise ConfigError("objective 'fixed' needs flux.fixed (the one grid, e.g. 8x224)")
    for b in OBJECTIVES[obj.name].budgets(obj, arch.head_budgets):
        if b is None:
            continue
        if b < 1:
            raise ConfigError(f"token budget {b} must be positive")
        if b > most:
            raise ConfigError(f"token budget {b} is larger than {where} ({most} tokens)")
    if obj.head is not None and not 0 <= obj.head < len(arch.head_budgets):
        raise ConfigError(f"objective.head {obj.head} does not exist ({len(arch.head_budgets)} heads)")
    if obj.name == "flux_multi" and len(arch.head_budgets) > 1 + arch.num_align_projs:
        raise ConfigError(f"flux_multi needs {len(arch.head_budgets) - 1} alignment projectors, "
                          f"{cfg.model.name} has {arch.num_align_projs}")
    if cfg.eval.grid is not None:  # validation runs at the end, after training: checked now
        check_run_grid(cfg.eval.grid, patch, "eval.grid", cfg.eval.budget)
    if obj.name == "distill":
        _check_distill(obj, grids, model_config)


def _check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key} {value!r} is not one of {', '.join(choices)}")


MAX_MICRO_STEPS = 2**62  # the batch plan's micro-steps (fluxvit.data.batches.PlannedBatches)


def _check_optim(o: OptimConfig, steps: int) -> None:
    """The values of the optimiser that relate to each other or to ``steps`` (each range on
    its own is the field's)."""
    if len(o.betas) != 2:
        raise ConfigError(f"optim.betas must be two numbers, got {show(o.betas)}")
    if steps * o.accum_steps > MAX_MICRO_STEPS:
        raise ConfigError(f"steps x optim.accum_steps is {show(steps * o.accum_steps)} micro-batches, "
                          f"more than the {MAX_MICRO_STEPS} a run can plan")
    if o.lr * o.weight_decay >= 1:  # AdamW scales every weight by 1 - lr x weight_decay each step
        raise ConfigError(f"optim.lr x optim.weight_decay is {o.lr * o.weight_decay:g}; it must be below 1 "
                          f"(AdamW multiplies the weights by 1 - lr x weight_decay every step)")
    if o.min_lr > o.lr:  # the cosine would climb from lr to min_lr
        raise ConfigError(f"optim.min_lr {o.min_lr:g} is more than optim.lr {o.lr:g}")
    if o.warmup_steps and o.warmup_lr > o.lr:  # the warm-up would fall to lr
        raise ConfigError(f"optim.warmup_lr {o.warmup_lr:g} is more than optim.lr {o.lr:g}")


def _check_data(cfg: TrainConfig) -> None:
    d = cfg.data
    if d.batch_size % d.repeated_aug:
        raise ConfigError(f"data.batch_size {d.batch_size} is not a multiple of data.repeated_aug {d.repeated_aug} "
                          f"(the clips of a batch are its videos' augmentations)")
    if d.rand_augment is not None:
        from fluxvit.data.augment import parse_rand_augment

        parse_rand_augment(d.rand_augment)  # one line naming the text if it is not timm's form
    lo, hi = (d.crop_scale + [0.0, 0.0])[:2]
    if len(d.crop_scale) != 2 or not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"data.crop_scale must be [min, max] with 0 < min <= max <= 1, got {show(d.crop_scale)}")
    lo, hi = (d.crop_ratio + [0.0, 0.0])[:2]
    if len(d.crop_ratio) != 2 or not 0.0 < lo <= hi:
        raise ConfigError(f"data.crop_ratio must be [min, max] with 0 < min <= max, got {show(d.crop_ratio)}")
    if d.source != "synthetic":
        if d.variant != "default":
            raise ConfigError(f"data.variant {show(d.variant)}: chooses the synthetic benchmark; "
                              f"data.source {d.source} reads its clips from files (leave it out)")
        return
    # The synthetic benchmark is rendered in memory before training: its size, frames, class
    # list and clip count are checked here, as the renderer would, but before any of it.
    from fluxvit.data.synthetic import check_classes, get_variant

    try:
        variant = get_variant(d.variant)
    except ConfigError as e:
        raise ConfigError(f"data.variant: {e}") from None
    if d.size % 2:
        raise ConfigError(f"config key 'data.size' must be an even number of pixels, got {d.size}")
    limits.FRAME_PIXELS.check(d.size * d.size, f"config key 'data.size' {d.size}")
    longest = variant.frame_range(d.frames)[1]
    limits.CLIP_PIXELS.check(longest * d.size * d.size, f"data.frames {longest} x data.size {d.size}")
    try:
        names = check_classes(d.classes, variant)
    except ConfigError as e:
        raise ConfigError(f"data.classes: {e}") from None
    clips = (d.train_per_class + d.val_per_class) * len(names)
    limits.SYNTH_CLIPS.check(clips, f"data.train_per_class + data.val_per_class for {len(names)} classes")
    # (model.num_classes against the data's class count is the trainer's to check, once it has the
    # data: an in-process caller's clips replace the synthetic ones.)


def _train_grids(flux: FluxConfig, patch: int) -> tuple[Grid, ...]:
    """The grids a student of ``patch`` trains on, checked. A flux range's every value must fit
    a grid within the token cap (its end at the other range's start), which bounds the family
    before :class:`FluxGrid` lists it; the listed grids themselves are within ``max_tokens``."""
    if flux.fixed is not None:
        return (check_run_grid(flux.fixed, patch, "flux.fixed"),)
    for name in ("frames", "sizes"):
        value = getattr(flux, name)
        if len(value) != 3:
            raise ConfigError(f"flux.{name} must be [start, stop, step], got {show(value)}")
        if value[1] < value[0]:
            raise ConfigError(f"flux.{name} {show(value)}: stop {value[1]} is below start {value[0]}")
    if flux.min_tokens > flux.max_tokens:
        raise ConfigError(f"flux.min_tokens {flux.min_tokens} is more than flux.max_tokens {flux.max_tokens}")
    (t0, t1, ts), (r0, r1, rs) = flux.frames, flux.sizes
    t_last, r_last = t0 + (t1 - t0) // ts * ts, r0 + (r1 - r0) // rs * rs  # the ends the ranges reach
    limits.GRID_TOKENS.check(t_last * (r0 // patch) ** 2, f"flux.frames {show(flux.frames)}: a grid of "
                             f"{t_last} frames at {r0} px")
    limits.GRID_TOKENS.check(t0 * (r_last // patch) ** 2, f"flux.sizes {show(flux.sizes)}: a grid of "
                             f"{t0} frames at {r_last} px")
    limits.FRAME_PIXELS.check(r_last * r_last, f"flux.sizes {show(flux.sizes)}: a frame of {r_last} px")
    return flux.grids(patch)


def _check_distill(obj: ObjectiveConfig, grids: tuple[Grid, ...], model_config) -> None:
    """The distillation settings: the teacher (a registered FluxViT with its checkpoint, or an
    ``hf:DIR`` folder; its layers and the grids it sees, see
    :func:`~fluxvit.train.teachers.check_teacher`; no weights are read), some loss weight not 0,
    and at most one of ``budget`` and ``mask_ratio`` (both say how many tokens the student keeps)."""
    from fluxvit.train.teachers import check_teacher

    check_teacher(obj, grids, model_config)
    if obj.token_weight == obj.pooled_weight == obj.supervised_weight == 0:
        raise ConfigError("objective 'distill' has token_weight, pooled_weight and supervised_weight all 0: "
                          "nothing would be learned")
    if obj.mask_ratio is not None and obj.budget is not None:
        raise ConfigError(f"objective.budget {obj.budget} and objective.mask_ratio {obj.mask_ratio:g} both say how "
                          "many tokens the student keeps: set one of them")
