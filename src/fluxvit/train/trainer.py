"""The training loop: :func:`train` runs a :class:`~fluxvit.train.config.TrainConfig` to the end.

One optimiser step = ``accum_steps`` micro-batches. Every micro-batch's grid and samples come
from the :class:`~fluxvit.data.batches.BatchPlan` (a function of seed, micro-step and rank), every
other random draw either from a generator seeded the same way (mixup) or from the global torch
RNG (drop path), whose state is checkpointed; so a resumed run continues bit for bit. Precision:
fp32, bf16 (autocast) or fp16 (autocast, and a gradient scaler whose loss scale is checkpointed
too). Only rank 0 writes files. The library logs; it never prints. (One module: the loop and the
assembly it needs, read top to bottom.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fluxvit import distributed
from fluxvit.data.augment import RandomErasing, parse_rand_augment
from fluxvit.data.batches import BatchPlan, batch_loader, seeded
from fluxvit.data.datasets import BrokenClips
from fluxvit.data.preprocessing import META_KEY as PREPROCESSING_KEY
from fluxvit.data.preprocessing import Preprocessing
from fluxvit.data.sources import ClipSource, csv_sources, synthetic_source
from fluxvit.data.transforms import TrainTransform
from fluxvit.errors import CheckpointError, ConfigError, FluxViTError, reason
from fluxvit.files import aside_name, file_or_directory, inside
from fluxvit.flux.grid import Grid
from fluxvit.models.checkpoint import save_checkpoint
from fluxvit.models.fluxvit import FluxViT
from fluxvit.models.registry import create_model
from fluxvit.placement import DTYPES
from fluxvit.train import checkpointing
from fluxvit.train.config import DataConfig, TrainConfig, config_from_dict, load_config, save_config
from fluxvit.train.config import validate as validate_config
from fluxvit.train.ema import ModelEma
from fluxvit.train.metrics import WANDB_DIR, MetricsWriter, WandbOptions, check_packages, read_metrics
from fluxvit.train.mixup import mix_batch
from fluxvit.train.objectives import OBJECTIVES, Learner, Objective
from fluxvit.train.optim import apply_lr, build_optimizer, cosine_lr, param_groups
from fluxvit.train.validation import validate

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
MODEL_NAME = "model.safetensors"
EMA_NAME = "model_ema.safetensors"
CKPT_DIR = "checkpoints"


class TrainingError(FluxViTError):
    """A run that cannot go on (too many non-finite losses in a row)."""


@dataclass
class TrainResult:
    """What a finished run left behind. ``metrics``: the last validation and run totals."""

    run_dir: Path
    checkpoint: Path | None  # the final model (safetensors, loadable with fluxvit.load_checkpoint)
    ema_checkpoint: Path | None
    steps: int
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # every validation record
    model: FluxViT | None = field(default=None, repr=False)  # the trained student, in memory


# ----------------------------------------------------------------------------- assembly
def train_transform(d: DataConfig) -> TrainTransform:
    """The training clips' transform ``cfg.data`` describes: crop, RandAugment, flip, random
    erasing, resized as ``data.resize`` says."""
    e = d.random_erasing
    return TrainTransform(
        scale=tuple(d.crop_scale), ratio=tuple(d.crop_ratio), flip=0.5 if d.flip else 0.0,
        augment=parse_rand_augment(d.rand_augment) if d.rand_augment else None,
        erase=RandomErasing(e.prob, e.mode, e.count, e.per_clip) if e.prob > 0 else None,
        resize=d.resize,
    )


def build_sources(cfg: TrainConfig) -> tuple[ClipSource, ClipSource | None]:
    """Training and validation clip sources from ``cfg.data``."""
    d = cfg.data
    transform = train_transform(d)
    if d.source == "synthetic":
        train = synthetic_source(d.classes, d.train_per_class, d.size, d.frames, cfg.seed, 0, transform, d.variant)
        val = synthetic_source(d.classes, d.val_per_class, d.size, d.frames, cfg.seed, 1, transform, d.variant)
        return train, val
    return csv_sources(d.train, d.val, d.root, transform, int(d.cache_gb * 2**30))


def build_model(cfg: TrainConfig, num_classes: int) -> FluxViT:
    """The student: fresh, or fine-tuned from ``model.checkpoint`` (positional table resized to
    the architecture's, heads re-initialised when the class count differs)."""
    m = cfg.model
    overrides: dict = {"drop_path_rate": m.drop_path}
    if m.head_budgets:
        overrides["head_budgets"] = tuple(m.head_budgets)
    model = create_model(m.name, num_classes=m.num_classes or num_classes, checkpoint=m.checkpoint,
                         reset_heads=m.checkpoint is not None, **overrides)
    model.set_grad_checkpointing(m.grad_checkpointing)
    # A new model: nothing of a fine-tuned checkpoint's record (its Token Optimization choices, its
    # preprocessing) applies to it. How its inputs are made travels with it, in memory and saved.
    model.checkpoint_meta = {PREPROCESSING_KEY: Preprocessing(cfg.data.resize, cfg.data.view_offsets).to_meta()}
    return model


def build_objective(cfg: TrainConfig, model: FluxViT) -> Objective:
    return OBJECTIVES[cfg.objective.name].from_config(cfg, model)


def tokens_per_clip(cfg: TrainConfig, model: FluxViT, grid: Grid) -> int:
    """Tokens one clip sends through the student's backbone in one step (all its forwards)."""
    return OBJECTIVES[cfg.objective.name].tokens_per_clip(cfg.objective, model.budgets,
                                                          grid.num_patches(model.patch_size))


def eval_setup(cfg: TrainConfig, model: FluxViT) -> tuple[Grid, list[int | None]]:
    """The validation grid and the budgets evaluated on it: ``eval.budget``, else the budgets
    the objective trains at (None: every token of the grid)."""
    grid = Grid.parse(cfg.eval.grid) if cfg.eval.grid else model.default_grid
    total = grid.num_patches(model.patch_size)
    budgets = ([cfg.eval.budget] if cfg.eval.budget is not None
               else OBJECTIVES[cfg.objective.name].budgets(cfg.objective, model.budgets))
    return grid, [None if b is None or b >= total else b for b in budgets]


def _progress(enabled: bool | None, total: int, initial: int):
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


# ----------------------------------------------------------------------------- the loop
def train(
    config: TrainConfig | dict | str | Path,
    train_data: ClipSource | None = None,
    val_data: ClipSource | None = None,
    resume: bool | str | Path = False,
    overrides: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
) -> TrainResult:
    """Train as ``config`` says; returns where the model went and the final metrics.

    ``config``: a :class:`TrainConfig`, a nested dict, or a YAML path (with ``overrides``,
    ``key=value``). ``train_data``/``val_data`` replace the sources ``config.data`` describes
    (in-process callers with their own clips). ``resume``: True continues from the newest
    checkpoint in ``<out_dir>/checkpoints`` (a fresh start when there is none), a path from that
    checkpoint; a run that already finished all its steps is returned as it is, untouched.
    Without ``resume``, an ``out_dir`` holding an earlier run is refused (its model, checkpoints
    and metrics are never overwritten or mixed with a new run's) unless ``overwrite``, which first
    moves that run's files aside to ``<out_dir>.old-N``. Under ``torchrun`` every rank calls this;
    only rank 0 writes.
    """
    if isinstance(config, TrainConfig):
        cfg = config
        validate_config(cfg)  # built in code: the same checks as a file's
    elif isinstance(config, dict):
        cfg = config_from_dict(config)
    else:
        cfg = load_config(config, overrides)
    _check_outside_data(cfg)
    info = distributed.setup(cfg.device)
    try:
        # on every rank, before any work: one line, not rank 0 failing alone later
        _check_precision(cfg.precision, info.device)
        check_packages(cfg.tensorboard, cfg.logging.wandb is not None)
        if not resume:
            _claim_run_dir(Path(cfg.out_dir), overwrite, info)
        return _run(cfg, info, train_data, val_data, resume)
    finally:
        distributed.teardown(info)


# what a run leaves in its folder (besides TensorBoard's events)
_RUN_FILES = (MODEL_NAME, EMA_NAME, METRICS_NAME, CONFIG_NAME, CKPT_DIR, WANDB_DIR, "tensorboard")


def amp_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a training ``precision`` (``fp32``: None, no autocast), from the
    one precision -> dtype table, :data:`fluxvit.placement.DTYPES`."""
    return None if precision == "fp32" else DTYPES[precision]


def _check_precision(precision: str, device: torch.device) -> None:
    """Refuse in one line a precision the run's device cannot train at: bf16 on a GPU without
    bf16 hardware (before compute capability 8.0: V100, T4), where fp16 (trained with a gradient
    scaler) is the reduced precision to use. (On a CPU torch autocasts to either.)"""
    if precision != "bf16" or device.type != "cuda" or torch.version.hip:  # ROCm GPUs all have bf16
        return
    if torch.cuda.get_device_capability(device) < (8, 0):
        raise ConfigError(f"precision bf16: {torch.cuda.get_device_name(device)} ({device}) has no bf16 support; "
                          "use precision: fp16 (or fp32)")


def _check_outside_data(cfg: TrainConfig) -> None:
    """The run's folder outside a folder dataset it reads (where it would be one more class)."""
    for key in ("train", "val"):
        folder = getattr(cfg.data, key)
        if cfg.data.source == "csv" and folder and Path(folder).is_dir() and inside(cfg.out_dir, folder):
            raise ConfigError(f"out_dir {cfg.out_dir}: is inside data.{key} {folder}, a folder dataset whose folders "
                              "are read as its classes; choose an out_dir outside it")


def _claim_run_dir(out: Path, overwrite: bool, info) -> None:
    """Refuse a folder that holds an earlier run, or (``overwrite``) move that run's files aside."""
    try:
        found = [name for name in _RUN_FILES if (out / name).exists()]
    except OSError as e:
        raise ConfigError(f"out_dir {out}: cannot access ({reason(e)})") from None
    if not found or found == ["tensorboard"]:
        return
    if not overwrite:
        what = "a finished run" if (out / MODEL_NAME).exists() else "an earlier run"
        raise ConfigError(f"out_dir {out}: holds {what} ({', '.join(found)}); continue it with --resume, choose "
                          "another out_dir, or pass --overwrite to move it aside first")
    if info.is_main:
        aside = aside_name(out)
        aside.mkdir(parents=True)
        for name in found:
            (out / name).rename(aside / name)
        log.warning("moved the earlier run in %s to %s", out, aside)
    distributed.barrier(info)


def _finished(cfg: TrainConfig, out: Path, model: FluxViT, start: int, history: list) -> TrainResult | None:
    """The result of a run that already did all its steps and saved its model (resumed: no work)."""
    model_path = out / MODEL_NAME
    if start < cfg.steps or not model_path.is_file():
        return None
    final: dict = {}
    if (out / METRICS_NAME).is_file():
        records = [r for r in read_metrics(out / METRICS_NAME) if r.get("final")]
        final = {k: v for k, v in (records[-1] if records else {}).items() if k != "final"}
    ema_path = out / EMA_NAME
    log.info("%s: finished all %d steps already; nothing to do", out, cfg.steps)
    return TrainResult(out, model_path, ema_path if ema_path.is_file() else None, cfg.steps, final, history, model)


def _run(cfg: TrainConfig, info, train_data, val_data, resume) -> TrainResult:
    out = Path(cfg.out_dir)
    ckpt_dir = out / CKPT_DIR
    torch.manual_seed(seeded(cfg.seed, 5, info.rank).initial_seed())  # drop path: per-rank stream
    if train_data is None:
        train_data, built_val = build_sources(cfg)
        val_data = val_data if val_data is not None else built_val
    if len(train_data) == 0:
        raise ConfigError("the training data has no clips")
    classes = list(train_data.classes)
    if cfg.model.num_classes is not None and cfg.model.num_classes < len(classes):
        raise ConfigError(f"model.num_classes {cfg.model.num_classes} is fewer than the training data's "
                          f"{len(classes)} classes")
    model = build_model(cfg, len(classes))
    objective = build_objective(cfg, model)
    learner = Learner(model, objective).to(info.device)
    depth = model.config.depth
    groups = param_groups({"model": model, "objective": objective}, depth, cfg.optim.weight_decay,
                          cfg.optim.layer_decay, model.no_weight_decay())
    optimizer = build_optimizer(groups, cfg.optim.lr, tuple(cfg.optim.betas), cfg.optim.eps)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None
    plan = BatchPlan(len(train_data), cfg.data.batch_size, cfg.flux.grids(model.patch_size), cfg.seed, info.rank,
                     info.world, cfg.flux.grid_per, cfg.data.repeated_aug)

    # fp16: gradients scaled against underflow (a disabled scaler passes everything through)
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp_dtype(cfg.precision) is torch.float16)
    start, counters, history = 0, {"skipped_steps": 0, "broken_clips": 0}, []
    resumed = _resume_state(resume, ckpt_dir)
    if resumed is not None:
        resume_from, state = resumed
        if state.get("plan") != plan.state_dict():
            raise CheckpointError(f"{resume_from}: was written by a run with other data, grids, seed or batch")
        try:
            learner.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if ema is not None and "ema" in state:
                ema.load_state_dict(state["ema"])
            if scaler.is_enabled() and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
            checkpointing.set_rng_state(state["rng"][min(info.rank, len(state["rng"]) - 1)])
            start, counters, history = int(state["step"]), dict(state["counters"]), list(state.get("history", []))
        except (RuntimeError, KeyError, IndexError, TypeError, ValueError) as e:
            raise CheckpointError(f"{resume_from}: does not fit this run ({reason(e)})") from None
        log.info("resumed from %s at step %d", resume_from, start)
        if scaler.is_enabled() and "scaler" not in state:
            log.info("%s: holds no fp16 loss scale (written by an fp32 or bf16 run); starting from the default",
                     resume_from)
        done = _finished(cfg, out, model, start, history)
        if done is not None:
            return done if info.is_main else dataclasses.replace(done, checkpoint=None, ema_checkpoint=None)
    if scaler.is_enabled():
        counters.setdefault("scaler_skipped_steps", 0)

    writer = None
    if info.is_main:
        wandb = None
        if cfg.logging.wandb is not None:
            wandb = WandbOptions(cfg.logging.wandb, cfg.logging.wandb_mode, cfg.to_dict())
        writer = MetricsWriter(out / METRICS_NAME, out / "tensorboard" if cfg.tensorboard else None, start, wandb)
    completed = False
    try:
        if info.is_main:  # after the writers started: a failed start leaves the folder as it was
            save_config(cfg, out / CONFIG_NAME)
        eval_grid, eval_budgets = eval_setup(cfg, model)
        run = _RunState(cfg, info, learner, optimizer, ema, plan, writer, eval_grid, eval_budgets, counters,
                        history, BrokenClips("training data"), scaler)
        result = _train_steps(run, train_data, val_data, start, classes)
        completed = True
    finally:
        if writer is not None:  # also when the training fails: files closed, the W&B run finished
            writer.close(failed=not completed)
    return result


def _train_steps(run: _RunState, train_data: ClipSource, val_data: ClipSource | None, start: int,
                 classes: list[str]) -> TrainResult:
    """Steps ``start`` to ``cfg.steps``, the final validation and the saved model: the part of
    :func:`_run` that its metrics writer is open around."""
    cfg, info, learner, optimizer, ema, scaler = run.cfg, run.info, run.learner, run.optimizer, run.ema, run.scaler
    plan, writer, counters, history = run.plan, run.writer, run.counters, run.history
    out = Path(cfg.out_dir)
    ckpt_dir = out / CKPT_DIR
    model = learner.model
    accum = cfg.optim.accum_steps
    net: torch.nn.Module = learner
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            learner, device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=True,  # single-budget objectives leave the other heads unused
        )
    amp = run.amp
    bar = _progress(cfg.progress, cfg.steps, start) if info.is_main else None
    loader = iter(batch_loader(train_data, plan, start * accum, cfg.steps * accum, cfg.data.workers))
    num_classes = model.num_classes
    bad_in_row = 0
    last: dict = {}
    learner.train()
    t_start = time.perf_counter()
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            lr = cosine_lr(step, cfg.steps, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps,
                           cfg.optim.warmup_lr)
            apply_lr(optimizer, lr)
            sums: dict[str, float] = {}
            finite = True
            clips = 0
            for micro in range(accum):
                batch = next(loader)
                counters["broken_clips"] += len(batch.broken)
                run.broken.add(batch.broken)
                video = batch.video.to(info.device, non_blocking=True)
                target = batch.labels.to(info.device)
                if cfg.optim.mixup > 0 or cfg.optim.cutmix > 0:
                    gen = seeded(cfg.seed, 4, step * accum + micro, info.rank)
                    video, target = mix_batch(video.cpu(), target.cpu(), num_classes, gen, cfg.optim.mixup,
                                              cfg.optim.cutmix, cfg.optim.mixup_prob, cfg.optim.mixup_switch_prob,
                                              cfg.optim.label_smoothing)
                    video, target = video.to(info.device), target.to(info.device)
                sync = contextlib.nullcontext()
                if info.distributed and micro < accum - 1:
                    sync = net.no_sync()  # reduce gradients once, on the last micro-batch
                with sync:
                    with torch.autocast(info.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                        losses = net(video, target)
                    # Backward even a non-finite loss, so that every rank joins the gradient
                    # reduction; the step is dropped below when any rank saw one.
                    scaler.scale(losses["loss"] / accum).backward()
                finite &= bool(torch.isfinite(losses["loss"]).item())
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
                clips += video.shape[0]
            if distributed.any_rank(not finite, info):
                optimizer.zero_grad(set_to_none=True)
                counters["skipped_steps"] += 1
                bad_in_row += 1
                log.warning("step %d: non-finite loss, step skipped (%d in a row)", step + 1, bad_in_row)
                if bad_in_row >= cfg.max_bad_steps:
                    raise TrainingError(f"stopped at step {step + 1}: {bad_in_row} non-finite losses in a row "
                                        f"(lower optim.lr or check the data)")
            else:
                bad_in_row = 0
                grad_norm = None
                scale = scaler.get_scale() if scaler.is_enabled() else None
                if cfg.optim.clip_grad:
                    scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(learner.parameters(), cfg.optim.clip_grad))
                scaler.step(optimizer)  # fp16: skipped when a gradient overflowed
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if scale is not None and scaler.get_scale() < scale:
                    # The scaler lowered the scale: an overflow, the step not taken. Normal while
                    # the scale settles; not a failure (a non-finite loss is).
                    counters["scaler_skipped_steps"] += 1
                    log.info("step %d: fp16 gradients overflowed at loss scale %g; step skipped, scale now %g",
                             step + 1, scale, scaler.get_scale())
                elif ema is not None:
                    ema.update(model)
                if grad_norm is not None:
                    sums["grad_norm"] = grad_norm
            seconds = time.perf_counter() - t0
            done = step + 1
            record = _step_record(done, lr, batch.grid, sums, clips * info.world, seconds,
                                  tokens_per_clip(cfg, model, batch.grid), counters, info)
            last = record
            if writer is not None and (done % cfg.log_every == 0 or done == cfg.steps):
                writer.write(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", grid=str(batch.grid), refresh=False)
            elif info.is_main and (done % max(cfg.steps // 10, 1) == 0 or done == cfg.steps):
                # No terminal for a bar (a log file, CI): a line every tenth of the run instead.
                rate = (done - start) / max(time.perf_counter() - t_start, 1e-9)
                log.info("train step %d/%d  loss %.3f  %.1f clips/s  eta %.0f s", done, cfg.steps,
                         record["loss"], record["clips_per_s"], (cfg.steps - done) / rate)
            if val_data is not None and cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.steps:
                history.append(_evaluate(run, model, val_data, done))
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                _save_state(run, ckpt_dir, done)
    finally:
        if bar is not None:
            bar.close()
    run.broken.report(" while training (each replaced by another clip)")
    final: dict = {k: last.get(k) for k in ("loss", "clips_per_s", "tokens_per_s")}
    final.update(counters)
    if val_data is not None:
        record = _evaluate(run, model, val_data, cfg.steps)
        if ema is not None:
            ema_acc = _evaluate(run, ema.module, val_data, cfg.steps, log_it=False)
            record.update({f"ema_{k}": v for k, v in ema_acc.items() if k not in ("step", "eval_grid")})
        history.append(record)
        final.update({k: v for k, v in record.items() if k != "step"})
    model_path = ema_path = None
    if info.is_main:
        extra = {"train": {"objective": cfg.objective.name, "steps": cfg.steps, "metrics": final}}
        model_path = save_checkpoint(model, out / MODEL_NAME, classes=classes, extra=extra)
        if ema is not None:
            ema.module.name = model.name
            ema_path = save_checkpoint(ema.module, out / EMA_NAME, classes=classes, extra=extra)
        writer.write({"final": True, **final})
    distributed.barrier(info)
    return TrainResult(out, model_path, ema_path, cfg.steps, final, history, model)


def _resume_state(resume: bool | str | Path, ckpt_dir: Path) -> tuple[Path, dict] | None:
    """The training checkpoint to continue from, and its contents.

    ``True``: the newest readable checkpoint in ``ckpt_dir`` (none: a fresh start); a folder: the
    same in that run's checkpoints; a file: that file, which must load. A newest checkpoint that
    does not load (cut short by a crash where renames are not atomic, damaged since) is skipped
    with a warning for the one before it: a later start repeats some steps instead of failing.
    """
    if resume is False or resume is None:
        return None
    if resume is not True:
        path = file_or_directory(resume, "training checkpoint", CheckpointError)  # not a FIFO, not missing
        if path.is_file():
            return path, checkpointing.load_training_state(path)
        ckpt_dir = path / CKPT_DIR if checkpointing.list_checkpoints(path / CKPT_DIR) else path
    found = checkpointing.list_checkpoints(ckpt_dir)
    if not found and resume is not True:
        raise CheckpointError(f"{resume}: holds no training checkpoint")
    for _, candidate in reversed(found):
        try:
            return candidate, checkpointing.load_training_state(candidate)
        except CheckpointError as e:
            log.warning("%s; trying the checkpoint before it", e)
    if found:
        raise CheckpointError(f"{ckpt_dir}: none of its {len(found)} training checkpoints can be read")
    return None


def _step_record(step, lr, grid, losses, clips, seconds, tokens, counters, info) -> dict:
    losses = distributed.mean_over_ranks(losses, info)
    return {
        "step": step,
        "lr": lr,
        **{k: round(v, 6) if math.isfinite(v) else v for k, v in losses.items()},
        "grid": str(grid),
        "tokens_per_clip": tokens,
        "clips_per_s": clips / seconds,
        "tokens_per_s": clips * tokens / seconds,
        "seconds": seconds,
        **counters,
    }


@dataclass
class _RunState:
    """What the loop's helpers (validation, checkpoints) need of a running training."""

    cfg: TrainConfig
    info: distributed.DistInfo
    learner: Learner
    optimizer: torch.optim.Optimizer
    ema: ModelEma | None
    plan: BatchPlan
    writer: MetricsWriter | None  # rank 0 only
    eval_grid: Grid
    eval_budgets: list[int | None]
    counters: dict
    history: list[dict]
    broken: BrokenClips
    scaler: torch.amp.GradScaler | None = None  # enabled for fp16 only

    @property
    def amp(self) -> torch.dtype | None:
        """The autocast dtype of training and validation (None: fp32)."""
        return amp_dtype(self.cfg.precision)


def _evaluate(run: _RunState, model: FluxViT, val_data: ClipSource, step: int, log_it: bool = True) -> dict:
    cfg = run.cfg
    acc = validate(model, val_data, run.eval_grid, run.eval_budgets, run.info, cfg.data.batch_size,
                   cfg.eval.max_clips, run.amp)
    record = {"step": step, "eval_grid": str(run.eval_grid), **acc}
    if log_it:
        log.info("step %d: %s", step, "  ".join(f"{k} {v:.1f}" for k, v in acc.items()))
        if run.writer is not None:
            run.writer.write(record)
    return record


def _save_state(run: _RunState, ckpt_dir: Path, step: int) -> None:
    """Write the training checkpoint of ``step`` (rank 0), with every rank's RNG state."""
    info = run.info
    rng = checkpointing.rng_state()
    if info.distributed:
        import torch.distributed as dist

        gathered: list = [None] * info.world
        dist.all_gather_object(gathered, rng)
        rng_all = gathered
    else:
        rng_all = [rng]
    if info.is_main:
        state = {
            "step": step,
            "model": run.learner.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "plan": run.plan.state_dict(),
            "rng": rng_all,
            "counters": dict(run.counters),
            "history": run.history,
            "config": run.cfg.to_dict(),
        }
        if run.ema is not None:
            state["ema"] = run.ema.state_dict()
        if run.scaler is not None and run.scaler.is_enabled():
            state["scaler"] = run.scaler.state_dict()  # fp16: the loss scale and its growth count
        path = checkpointing.save_training_state(state, ckpt_dir, step, run.cfg.keep_last)
        log.debug("saved %s", path)
    distributed.barrier(info)
