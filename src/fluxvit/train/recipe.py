"""A training config resolved into the numbers a run will use, without running it.

``fluxvit train CONFIG --dry-run [--world N]`` prints :func:`describe`'s record through
:func:`format_recipe`: clips and videos per optimiser step (repeated augmentation counted),
passes over the data (the release's "epochs"), the learning-rate schedule and every layer
group's peak learning rate, the Flux grids, the objective's budgets and the augmentations. The
arithmetic is the release's (``run_flexible_finetune.py``): an epoch is ``videos //
(videos per step)`` steps, and the release's ``--lr`` is per 256 clips (its ``batch x GPUs x
num_sample / 256`` scaling), so a config's ``optim.lr`` divided by ``clips per step / 256`` is the
number to compare with a release script's. Nothing is decoded, built on a device or written: the
model is made on the meta device for its parameter names, and the training list is read for its
length only (its videos need not exist here).
"""

from __future__ import annotations

import os

import torch

from fluxvit.errors import ConfigError
from fluxvit.train.config import TrainConfig
from fluxvit.typecheck import show

RELEASE_LR_CLIPS = 256  # the release's --lr is per this many clips


def world_size(world: int | None) -> int:
    """``world`` (``--world``), else torchrun's ``WORLD_SIZE``, else 1; a positive integer."""
    if world is None:
        text = os.environ.get("WORLD_SIZE", "1")
        try:
            world = int(text)
        except ValueError:
            raise ConfigError(f"WORLD_SIZE {text!r} is not an integer") from None
    if isinstance(world, bool) or not isinstance(world, int) or not 1 <= world <= 1_000_000:
        raise ConfigError(f"--world must be an integer from 1 to 1000000, got {show(world)}")
    return world


def count_videos(cfg: TrainConfig) -> int:
    """Videos in the training data: the list's (or folder's) records, or the synthetic count."""
    d = cfg.data
    if d.source == "synthetic":
        from fluxvit.data.synthetic import DEFAULT_CLASSES

        return d.train_per_class * len(d.classes or DEFAULT_CLASSES)
    from fluxvit.data.annotations import read_annotations

    return len(read_annotations(d.train, d.root))


def layer_lrs(cfg: TrainConfig) -> list[dict]:
    """Each optimiser group of the student: layer id, weight decay, peak lr and parameter count,
    from the architecture's parameter names (built on the meta device: no memory, no weights)."""
    from fluxvit.models.registry import create_model
    from fluxvit.train.optim import param_groups

    overrides: dict = {"head_budgets": tuple(cfg.model.head_budgets)} if cfg.model.head_budgets else {}
    with torch.device("meta"):
        model = create_model(cfg.model.name, num_classes=cfg.model.num_classes or 1, **overrides)
    depth = model.config.depth
    groups = param_groups({"model": model}, depth, cfg.optim.weight_decay, cfg.optim.layer_decay,
                          model.no_weight_decay())
    out = []
    for g in groups:
        out.append({"layer": g["layer"], "weight_decay": g["weight_decay"], "lr": cfg.optim.lr * g["lr_scale"],
                    "params": sum(p.numel() for p in g["params"]), "names": len(g["names"]),
                    "first": g["names"][0].removeprefix("model.")})
    return out


def describe(cfg: TrainConfig, world: int | None = None, num_videos: int | None = None) -> dict:
    """The resolved recipe of ``cfg`` on ``world`` processes (see the module docstring)."""
    from fluxvit.models.registry import model_config
    from fluxvit.train.objectives import OBJECTIVES

    world = world_size(world)
    d, o = cfg.data, cfg.optim
    videos = count_videos(cfg) if num_videos is None else num_videos
    if videos < 1:
        raise ConfigError("the training data has no videos")
    clips_per_step = d.batch_size * o.accum_steps * world
    videos_per_step = clips_per_step // d.repeated_aug
    steps_per_epoch = videos // videos_per_step if videos_per_step else 0
    arch = model_config(cfg.model.name, **({"head_budgets": cfg.model.head_budgets} if cfg.model.head_budgets else {}))
    grids = cfg.flux.grids(arch.patch_size)
    budgets = OBJECTIVES[cfg.objective.name].budgets(cfg.objective, arch.head_budgets)
    e = d.random_erasing
    return {
        "config": {"model": cfg.model.name, "objective": cfg.objective.name, "precision": cfg.precision},
        "batch": {
            "world": world,
            "clips_per_rank": d.batch_size,
            "repeated_aug": d.repeated_aug,
            "videos_per_rank": d.batch_size // d.repeated_aug,
            "accum_steps": o.accum_steps,
            "clips_per_step": clips_per_step,
            "videos_per_step": videos_per_step,
        },
        "schedule": {
            "videos": videos,
            "steps": cfg.steps,
            "steps_per_epoch": steps_per_epoch,
            # the release's epochs (a remainder of videos left out of each); passes: videos seen / videos
            "epochs": cfg.steps / steps_per_epoch if steps_per_epoch else None,
            "passes": cfg.steps * videos_per_step / videos,
            "warmup_steps": o.warmup_steps,
            "warmup_epochs": o.warmup_steps / steps_per_epoch if steps_per_epoch else None,
            "lr": o.lr,
            "lr_per_256_clips": o.lr * RELEASE_LR_CLIPS / clips_per_step,
            "min_lr": o.min_lr,
            "warmup_lr": o.warmup_lr,
            "layer_decay": o.layer_decay,
            "weight_decay": o.weight_decay,
        },
        "layer_groups": layer_lrs(cfg),
        "grids": {
            "count": len(grids),
            "per": cfg.flux.grid_per,
            "frames": sorted({g.frames for g in grids}),
            "sizes": sorted({g.height for g in grids}),
            "tokens": [min(g.num_patches(arch.patch_size) for g in grids),
                       max(g.num_patches(arch.patch_size) for g in grids)],
            "budgets": list(budgets),
        },
        "augmentation": {
            "crop_scale": list(d.crop_scale), "crop_ratio": list(d.crop_ratio), "flip": d.flip,
            "rand_augment": d.rand_augment,
            "random_erasing": {"prob": e.prob, "mode": e.mode, "count": e.count, "per_clip": e.per_clip}
            if e.prob > 0 else None,
            "mixup": o.mixup, "cutmix": o.cutmix, "label_smoothing": o.label_smoothing,
            "resize": d.resize, "drop_path": cfg.model.drop_path,
        },
    }


def format_recipe(r: dict) -> str:
    """The record of :func:`describe` as the lines ``--dry-run`` prints."""
    b, s, g, a = r["batch"], r["schedule"], r["grids"], r["augmentation"]
    c = r["config"]
    epochs = f"{s['epochs']:.2f}" if s["epochs"] is not None else "-"
    warm = f" ({s['warmup_epochs']:.2f} epochs)" if s["warmup_epochs"] is not None else ""
    lines = [
        f"recipe: {c['model']}, objective {c['objective']}, {c['precision']}, on {b['world']} process(es)",
        f"  batch      {b['clips_per_rank']} clips per process per micro-step = {b['videos_per_rank']} videos x "
        f"{b['repeated_aug']} augmentations; x {b['accum_steps']} accumulation x {b['world']} processes = "
        f"{b['clips_per_step']} clips ({b['videos_per_step']} videos) per optimiser step",
        f"  schedule   {s['steps']} steps over {s['videos']} videos: {s['steps_per_epoch']} steps per epoch, "
        f"{epochs} epochs ({s['passes']:.3f} passes over the videos); warm-up {s['warmup_steps']} steps{warm}",
        f"  lr         peak {s['lr']:.4g} (= {s['lr_per_256_clips']:.4g} per 256 clips), min {s['min_lr']:.4g}, "
        f"warm-up from {s['warmup_lr']:.4g}; layer decay {s['layer_decay']:g}, weight decay {s['weight_decay']:g}",
    ]
    for lg in r["layer_groups"]:
        decay = "decay" if lg["weight_decay"] else "no decay"
        lines.append(f"    layer {lg['layer']:>3}  {decay:8}  lr {lg['lr']:.4g}  {lg['names']} tensors, "
                     f"{lg['params']:,} values (first: {lg['first']})")
    lines += [
        f"  grids      {g['count']} ({'one per optimiser step' if g['per'] == 'step' else 'one per process batch'}): "
        f"frames {g['frames']}, sizes {g['sizes']}, {g['tokens'][0]}-{g['tokens'][1]} tokens; budgets "
        f"{['all' if x is None else x for x in g['budgets']]}",
        f"  augment    crop scale {a['crop_scale']} ratio {[round(x, 4) for x in a['crop_ratio']]}, "
        f"flip {'on' if a['flip'] else 'off'}, RandAugment {a['rand_augment'] or 'off'}, random erasing "
        + (f"p {a['random_erasing']['prob']:g} {a['random_erasing']['mode']} x{a['random_erasing']['count']}"
           f"{' per clip' if a['random_erasing']['per_clip'] else ' per frame'}" if a["random_erasing"] else "off")
        + f", mixup {a['mixup']:g}, cutmix {a['cutmix']:g}, label smoothing {a['label_smoothing']:g}, "
        f"drop path {a['drop_path']:g}, resize {a['resize']}",
    ]
    return "\n".join(lines)

