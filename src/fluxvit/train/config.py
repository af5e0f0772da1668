"""Training configuration as data: defaults -> a YAML file -> ``key=value`` overrides.

Every section is a dataclass; :func:`load_config` builds the defaults, merges the YAML file,
then applies dotted overrides (``optim.lr=3e-4``, ``flux.frames=[4,8,2]``), checks every key
and type, and validates the combination (:func:`validate`) so that a wrong setting ends in one
:class:`~fluxvit.errors.ConfigError` line before any work starts. :func:`save_config` writes
the final config beside the run.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fluxvit.atomic import write_text
from fluxvit.errors import ConfigError
from fluxvit.flux.grid import FluxGrid, Grid
from fluxvit.typecheck import coerce, show

PRECISIONS = ("fp32", "bf16")
_FLUX = FluxGrid()  # the family's defaults are FluxGrid's


@dataclass
class ModelConfig:
    """The student: a registered architecture, optionally initialised from a checkpoint."""

    name: str = "fluxvit_nano_patch14"
    checkpoint: str | None = None  # fine-tune from this (ours or an official release file)
    num_classes: int | None = None  # default: the data's class count
    head_budgets: list[int] | None = None  # override the architecture's per-head budgets
    drop_path: float = 0.0
    grad_checkpointing: bool = False


@dataclass
class DataConfig:
    """Where clips come from. ``source``: ``csv`` (annotation files, decoded by the data
    pipeline) or ``synthetic`` (the synthetic benchmark rendered in memory, no files)."""

    source: str = "synthetic"
    train: str | None = None  # train annotation file (csv source)
    val: str | None = None  # validation annotation file (csv source)
    root: str | None = None  # video root; default: the annotation file's folder
    classes: list[str] | None = None  # synthetic: class subset (default: all)
    train_per_class: int = 48  # synthetic: training clips per class
    val_per_class: int = 16  # synthetic: validation clips per class
    size: int = 112  # synthetic: rendered frame size (px)
    frames: int = 16  # synthetic: rendered frames per clip
    batch_size: int = 8  # clips per rank per micro-step
    workers: int = 0  # DataLoader worker processes
    # csv: keep up to this many GiB of decoded frames in memory per process, so each video is
    # decoded once rather than every epoch (small datasets, few cores); 0: no cache
    cache_gb: float = 0.0
    flip: bool = True  # random horizontal flip (turn off for direction-sensitive classes)
    # Random resized crop: the fraction of the frame's area and the aspect-ratio range (w/h) of
    # the box. The defaults are the release's (Kinetics); data whose evidence is small or
    # pixel-fine wants a narrower range ([1, 1] and [1, 1]: the whole frame, no crop).
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])


@dataclass
class FluxConfig:
    """Sampling grids. Flux draws one (T, R) per batch from the family; ``fixed`` (``TxR``)
    pins every batch to one grid, as the fixed-grid baseline does."""

    frames: list[int] = field(default_factory=lambda: list(_FLUX.frames))  # start, stop (incl.), step
    sizes: list[int] = field(default_factory=lambda: list(_FLUX.sizes))
    min_tokens: int = _FLUX.min_tokens
    max_tokens: int = _FLUX.max_tokens
    fixed: str | None = None

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
    budget: int | None = None  # fixed/flux/distill: tokens kept (default: fixed keeps all, the others head 0's)
    head: int | None = None  # fixed/flux: head trained (default: the head nearest the budget)
    align_weight: float = 1.0  # flux_multi: weight of the alignment loss
    teacher: str | None = None  # distill: registered architecture of the teacher
    teacher_checkpoint: str | None = None  # distill: its weights
    teacher_grid: str | None = None  # distill: TxR the teacher sees (default: the batch grid)
    token_weight: float = 1.0  # distill: token-feature alignment weight
    pooled_weight: float = 1.0  # distill: pooled-feature alignment weight
    supervised_weight: float = 0.0  # distill: cross-entropy on head 0 as well (0: pure distillation)


@dataclass
class OptimConfig:
    """AdamW with layer-wise lr decay, cosine schedule with linear warm-up, and regularisers."""

    lr: float = 1e-3  # peak learning rate (already scaled for the global batch)
    min_lr: float = 1e-6
    warmup_lr: float = 1e-6
    warmup_steps: int = 0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    layer_decay: float = 0.75  # lr scale per layer below the top (1: off)
    clip_grad: float | None = None  # max global grad norm
    accum_steps: int = 1  # micro-batches per optimiser step
    label_smoothing: float = 0.1
    mixup: float = 0.0  # mixup alpha (0: off)
    cutmix: float = 0.0  # cutmix alpha (0: off)
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5  # chance of cutmix when both are on


@dataclass
class EvalConfig:
    """Validation during and after training: one view per clip at one grid and budget."""

    every: int = 0  # steps between validations (0: only at the end)
    grid: str | None = None  # TxR (default: the architecture's default grid)
    budget: int | None = None  # tokens (default: head 0's budget, capped by the grid)
    max_clips: int | None = None


@dataclass
class TrainConfig:
    """A whole training run."""

    out_dir: str = "runs/train"
    seed: int = 0
    steps: int = 100  # optimiser steps
    precision: str = "fp32"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    ema_decay: float | None = None  # keep an EMA of the weights (e.g. 0.9999)
    log_every: int = 1
    ckpt_every: int = 50
    keep_last: int = 2
    max_bad_steps: int = 5  # consecutive non-finite losses that stop the run
    tensorboard: bool = False
    progress: bool | None = None  # progress bar (default: when stderr is a terminal)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    flux: FluxConfig = field(default_factory=FluxConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

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
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key {show(full)} (known here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{full}.")
        else:
            setattr(obj, key, coerce(value, hints[key], full))


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
        if not path.exists():
            raise ConfigError(f"{path}: no such config file")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ConfigError(f"{path}: cannot read config ({reason})") from None
        try:
            data = _load_yaml(text) or {}
            _merge(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for text in overrides:
        values = _parse_override(text)
        try:
            _merge(cfg, values)
        except ConfigError as e:
            raise ConfigError(f"--set {text}: {e}") from None
    validate(cfg)
    return cfg


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
    """Check the combination of settings; raise one :class:`ConfigError` line on the first problem."""
    from fluxvit.models.registry import model_config
    from fluxvit.train.objectives import OBJECTIVES

    overrides = {"head_budgets": cfg.model.head_budgets} if cfg.model.head_budgets else {}
    arch = model_config(cfg.model.name, **overrides)
    patch = arch.patch_size
    obj = cfg.objective
    if obj.name not in OBJECTIVES:
        raise ConfigError(f"objective.name {obj.name!r} is not one of {', '.join(OBJECTIVES)}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision {cfg.precision!r} is not one of {', '.join(PRECISIONS)}")
    if cfg.data.source not in ("csv", "synthetic"):
        raise ConfigError(f"data.source {cfg.data.source!r} is not 'csv' or 'synthetic'")
    if cfg.data.source == "csv" and not cfg.data.train:
        raise ConfigError("data.source is 'csv' but data.train (the training annotation file) is not set")
    for key in ("steps", "log_every", "ckpt_every", "keep_last", "max_bad_steps"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.data.cache_gb < 0:
        raise ConfigError(f"data.cache_gb must be >= 0, got {cfg.data.cache_gb}")
    if cfg.data.batch_size < 1 or cfg.optim.accum_steps < 1:
        raise ConfigError("data.batch_size and optim.accum_steps must be >= 1")
    if not 0.0 <= cfg.model.drop_path < 1.0:
        raise ConfigError(f"model.drop_path {cfg.model.drop_path} is not in [0, 1)")
    if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay {cfg.ema_decay} is not in (0, 1)")
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas must be two numbers, got {cfg.optim.betas}")
    lo, hi = (cfg.data.crop_scale + [0.0, 0.0])[:2]
    if len(cfg.data.crop_scale) != 2 or not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"data.crop_scale must be [min, max] with 0 < min <= max <= 1, got {cfg.data.crop_scale}")
    lo, hi = (cfg.data.crop_ratio + [0.0, 0.0])[:2]
    if len(cfg.data.crop_ratio) != 2 or not 0.0 < lo <= hi:
        raise ConfigError(f"data.crop_ratio must be [min, max] with 0 < min <= max, got {cfg.data.crop_ratio}")
    for name in ("frames", "sizes"):
        if len(getattr(cfg.flux, name)) != 3:
            raise ConfigError(f"flux.{name} must be [start, stop, step], got {getattr(cfg.flux, name)}")

    # The grids the student will see, then every budget against them.
    most = max(g.num_patches(patch) for g in cfg.flux.grids(patch))
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
    if cfg.eval.grid is not None:
        eval_grid = Grid.parse(cfg.eval.grid)
        eval_grid.check_patch(patch)
        if cfg.eval.budget is not None:
            eval_grid.with_budget(cfg.eval.budget).num_tokens(patch)
    if obj.name == "distill":
        if not obj.teacher:
            raise ConfigError("objective 'distill' needs objective.teacher (a registered model name)")
        model_config(obj.teacher)  # unknown names fail here
        if not obj.teacher_checkpoint:
            raise ConfigError("objective 'distill' needs objective.teacher_checkpoint (the teacher's weights)")
        if not Path(obj.teacher_checkpoint).exists():
            raise ConfigError(f"teacher checkpoint {obj.teacher_checkpoint}: no such file")
        if obj.teacher_grid is not None:
            Grid.parse(obj.teacher_grid).check_patch(patch)
