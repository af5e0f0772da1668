"""Training objectives. Each is an ``nn.Module`` whose forward takes the student, a batch of
video (B, 3, T, H, W) and targets, and returns a dict of named losses plus ``"loss"``, the
weighted total to back-propagate.

* :class:`Supervised` (``fixed``) - cross-entropy at one budget through one head: on a fixed grid,
  the baseline the paper compares against. :class:`SingleBudgetFlux` (``flux``) is the same loss
  on Flux grids, at head 0's budget unless told otherwise.
* :class:`FluxMulti` - the release's co-training: every head at its own budget (head 0 the
  largest), cross-entropy on each, plus a Smooth-L1 alignment of each smaller budget's
  projected, normalised clip feature to the largest budget's detached, normalised one.
* :class:`Distill` - Unmasked-Teacher-style distillation: a frozen teacher sees every token of
  the clip; the student sees the selected tokens; student tokens (through a small projection)
  are aligned to the teacher's tokens at the same space-time positions, and the student's pooled
  feature to the teacher's.

Targets are class ids (B,) or soft targets (B, K) (mixup/cutmix); label smoothing applies to
class ids only, since soft targets already carry it.

Each objective states its own budget rule once (:meth:`Objective.budgets`: the budgets a clip
is run at in one step, which are also the budgets validated) and how it is built from a config
(:meth:`Objective.from_config`); :data:`OBJECTIVES` maps the config's names to the classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from fluxvit.errors import ConfigError
from fluxvit.flux.grid import Grid
from fluxvit.models.fluxvit import FluxViT
from fluxvit.train.teachers import (
    FluxViTTeacher,
    Teacher,
    load_teacher,
    no_pooled_message,
    resample_clip,
    resample_tokens,
)

if TYPE_CHECKING:
    from fluxvit.train.config import ObjectiveConfig, TrainConfig


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits (B, K) against class ids (B,) or probabilities (B, K); fp32."""
    logits = logits.float()
    if target.dim() == 2:
        return F.cross_entropy(logits, target.float())
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(pred, target) over all leading positions; (..., C) each, fp32."""
    return (1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1)).mean()


def clip_budget(budget: int | None, video: torch.Tensor, patch_size: int) -> int | None:
    """``budget`` capped at the tokens the batch's grid has (the release keeps every token of a
    grid smaller than the budget); ``None`` keeps all."""
    t, h, w = video.shape[-3:]
    total = Grid(t, h, w).num_patches(patch_size)
    return None if budget is None or budget >= total else budget


def masked_budget(mask_ratio: float, total: int) -> int | None:
    """Tokens kept of ``total`` when ``mask_ratio`` of them are masked (at least 1; None: all)."""
    keep = max(1, round((1.0 - mask_ratio) * total))
    return None if keep >= total else keep


class Objective(nn.Module):
    """Base: ``forward(model, video, target) -> {"loss": total, name: part, ...}``."""

    @classmethod
    def tokens_per_clip(cls, cfg: ObjectiveConfig, head_budgets: Sequence[int], total: int) -> int:
        """Tokens one clip of a ``total``-token grid sends through the student in a training step
        (all its forwards)."""
        return sum(total if b is None else min(b, total) for b in cls.budgets(cfg, head_budgets))

    @classmethod
    def budgets(cls, cfg: ObjectiveConfig, head_budgets: Sequence[int]) -> list[int | None]:
        """The budgets one clip is run at in a training step, one per forward (None: every
        token), for a student whose heads were trained at ``head_budgets``."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg: TrainConfig, model: FluxViT) -> Objective:
        raise NotImplementedError

    def forward(self, model: FluxViT, video: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class Supervised(Objective):
    """Cross-entropy at ``budget`` tokens (``None``: all) through ``head`` (``None``: the head
    nearest to the tokens of each batch). Config ``fixed``: the budget as given, default all."""

    def __init__(self, budget: int | None = None, head: int | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.budget, self.head, self.label_smoothing = budget, head, label_smoothing

    @classmethod
    def budgets(cls, cfg: ObjectiveConfig, head_budgets: Sequence[int]) -> list[int | None]:
        return [cfg.budget]

    @classmethod
    def from_config(cls, cfg: TrainConfig, model: FluxViT) -> Supervised:
        return cls(cfg.objective.budget, cfg.objective.head, cfg.optim.label_smoothing)

    def forward(self, model: FluxViT, video: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        n = clip_budget(self.budget, video, model.patch_size)
        logits = model(video, num_tokens=n, head=self.head)
        ce = classification_loss(logits, target, self.label_smoothing)
        return {"loss": ce, "ce": ce.detach()}


class SingleBudgetFlux(Supervised):
    """Config ``flux``: cross-entropy on Flux grids at one budget through one head (default: the
    head whose budget is nearest, fixed for the run). The default budget is the release's single
    engine's: its middle head's (2048 of S/B's 3072/2048/1024, through head 1; its k400_single
    recipe), not the largest."""

    @classmethod
    def budgets(cls, cfg: ObjectiveConfig, head_budgets: Sequence[int]) -> list[int | None]:
        return [cfg.budget if cfg.budget is not None else head_budgets[len(head_budgets) // 2]]

    @classmethod
    def from_config(cls, cfg: TrainConfig, model: FluxViT) -> SingleBudgetFlux:
        (budget,) = cls.budgets(cfg.objective, model.budgets)
        head = cfg.objective.head if cfg.objective.head is not None else model.head_for(budget)
        return cls(budget, head, cfg.optim.label_smoothing)


class FluxMulti(Objective):
    """Every head at its own budget + alignment of the smaller budgets to the largest.

    Head i runs at ``model.budgets[i]`` tokens (head 0 the largest, as the release's engine).
    Loss = sum_i CE_i + ``align_weight`` * sum_{i>0} SmoothL1(align_{i-1}(e_i), sg(e_0)/|e_0|),
    with e_i the clip embedding (B, D) of head i and align_j the j-th alignment projector
    (L2-normalised output).
    """

    def __init__(self, align_weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.align_weight, self.label_smoothing = align_weight, label_smoothing

    @classmethod
    def budgets(cls, cfg: ObjectiveConfig, head_budgets: Sequence[int]) -> list[int | None]:
        if cfg.budget is not None:
            raise ConfigError("objective.budget is not used by flux_multi: every head trains at its own "
                              "budget (set model.head_budgets instead)")
        return list(head_budgets)

    @classmethod
    def from_config(cls, cfg: TrainConfig, model: FluxViT) -> FluxMulti:
        return cls(cfg.objective.align_weight, cfg.optim.label_smoothing)

    def forward(self, model: FluxViT, video: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        total = video.new_zeros((), dtype=torch.float32)
        reference = None
        for head, budget in enumerate(model.budgets):
            tokens = model.forward_features(video, clip_budget(budget, video, model.patch_size))
            emb = model.forward_head(tokens, head, pre_logits=True)
            ce = classification_loss(model.classify(emb, head), target, self.label_smoothing)
            parts[f"ce_{budget}"] = ce.detach()
            total = total + ce
            if head == 0:
                # The largest budget teaches the others; it is not pulled towards them.
                reference = F.normalize(emb.detach().float(), dim=-1)
                continue
            aligned = model.align(emb, head - 1).float()
            align = F.smooth_l1_loss(F.normalize(aligned, dim=-1), reference)
            parts[f"align_{budget}"] = align.detach()
            total = total + self.align_weight * align
        parts["loss"] = total
        return parts


class Distill(Objective):
    """UMT-style distillation from a frozen ``teacher``: a FluxViT, or any vision model behind a
    :class:`~fluxvit.train.teachers.Teacher` adapter (``hf:DIR``: a transformers CLIP/SigLIP
    vision model or VideoMAE saved locally).

    The teacher sees the clip with every token (first resampled to ``teacher_grid`` if given:
    frames picked by index, space bilinear) and yields, for each aligned layer, token features
    on its own token grid (B, Tt, ht, wt, C_l), and a pooled feature (B, E) or none. Each layer's
    features are brought to the student's token grid (T, h, w): bilinearly in space, and in time
    by index, each student frame taking the teacher frame at the same time (never a blend of
    frames; :func:`~fluxvit.train.teachers.resample_tokens`).

    The student keeps ``budget`` tokens through its own token selector (capped by the grid), or,
    with ``mask_ratio``, ``max(1, round((1 - mask_ratio) * T*h*w))`` of each batch's grid: this
    follows Flux-UMT, where the student's token selector does Unmasked Teacher's masking (UMT
    masks 80% of the tokens: ``mask_ratio`` 0.8). Its token features (B, N, C) go through one
    ``token_proj`` per aligned layer (LayerNorm + Linear to that layer's width) and are compared
    by cosine with the teacher's features at the kept positions; the token loss is the mean over
    layers (``token``; also ``token_L`` per layer L as configured, when there are several). Its
    pooled feature (head 0, (B, E)) goes through ``pooled_proj`` and is compared with the
    teacher's pooled feature, when the teacher has one (a ``pooled_weight`` without one is a
    :class:`ConfigError`). ``supervised_weight`` adds cross-entropy on head 0. The projections
    are trained with the student and dropped afterwards; the teacher is in no parameter list or
    state dict.
    """

    def __init__(
        self,
        student: FluxViT,
        teacher: Teacher | FluxViT,
        budget: int | None = None,
        teacher_grid: Grid | None = None,
        token_weight: float = 1.0,
        pooled_weight: float = 1.0,
        supervised_weight: float = 0.0,
        label_smoothing: float = 0.0,
        mask_ratio: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(teacher, FluxViT):
            teacher = FluxViTTeacher(teacher)
        teacher.eval().requires_grad_(False)
        if teacher.pooled_dim is None and pooled_weight > 0:
            raise ConfigError(no_pooled_message(teacher.name))
        if mask_ratio is not None and not 0.0 <= mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be at least 0 and less than 1, got {mask_ratio}")
        # A tuple hides the teacher from this module's parameters and state dict, so it is not
        # optimised, not synchronised by DDP and not written into training checkpoints.
        self._teacher = (teacher,)
        c_s, e_s = student.config.embed_dim, student.config.clip_embed_dim
        self.token_proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(c_s), nn.Linear(c_s, c_t))
                                        for c_t in teacher.feature_dims)
        self.pooled_proj = None
        if teacher.pooled_dim is not None:
            self.pooled_proj = nn.Sequential(nn.LayerNorm(e_s), nn.Linear(e_s, teacher.pooled_dim))
        self.budget, self.mask_ratio = budget, mask_ratio
        self.teacher_grid = teacher_grid
        self.token_weight, self.pooled_weight = token_weight, pooled_weight
        self.supervised_weight, self.label_smoothing = supervised_weight, label_smoothing

    @classmethod
    def budgets(cls, cfg: ObjectiveConfig, head_budgets: Sequence[int]) -> list[int | None]:
        # With mask_ratio the tokens kept in training follow each batch's grid (student_budget);
        # this budget is then the one validated.
        return [cfg.budget if cfg.budget is not None else head_budgets[0]]

    @classmethod
    def from_config(cls, cfg: TrainConfig, model: FluxViT) -> Distill:
        o = cfg.objective  # teacher, its checkpoint, layers and grid were checked by the config's validation
        teacher = load_teacher(o.teacher, o.teacher_checkpoint, o.teacher_layers)
        (budget,) = cls.budgets(o, model.budgets)
        return cls(model, teacher, budget, Grid.parse(o.teacher_grid) if o.teacher_grid else None,
                   o.token_weight, o.pooled_weight, o.supervised_weight, cfg.optim.label_smoothing, o.mask_ratio)

    @property
    def teacher(self) -> Teacher:
        return self._teacher[0]

    def _apply(self, fn, recurse=True):  # keep the hidden teacher on the student's device/dtype
        self._teacher[0]._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def student_budget(self, video: torch.Tensor, patch_size: int) -> int | None:
        """Tokens the student keeps of this batch's grid (None: every token): ``mask_ratio``'s
        share of the grid's tokens if set (at least 1), else ``budget`` capped by the grid."""
        if self.mask_ratio is None:
            return clip_budget(self.budget, video, patch_size)
        t, h, w = video.shape[-3:]
        return masked_budget(self.mask_ratio, Grid(t, h, w).num_patches(patch_size))

    @classmethod
    def tokens_per_clip(cls, cfg: ObjectiveConfig, head_budgets: Sequence[int], total: int) -> int:
        if cfg.mask_ratio is None:
            return super().tokens_per_clip(cfg, head_budgets, total)
        return masked_budget(cfg.mask_ratio, total) or total

    @torch.no_grad()
    def teacher_targets(self, video: torch.Tensor, student_patch: int) -> tuple[list[torch.Tensor],
                                                                                torch.Tensor | None]:
        """video (B, 3, T, H, W) -> (for each aligned layer, the teacher's token features on the
        token grid of a student of patch ``student_patch``, (B, T*h*w, C_l) in the student's
        token order; the teacher's pooled feature (B, E) or None)."""
        teacher = self.teacher
        teacher.eval()
        b, _, t, hh, ww = video.shape
        seen = video
        if self.teacher_grid is not None:
            g = self.teacher_grid
            seen = resample_clip(video, g.frames, (g.height, g.width))
        features, pooled = teacher(seen)  # every token of the teacher's grid
        grid = (t, hh // student_patch, ww // student_patch)
        targets = [resample_tokens(f.float(), grid).reshape(b, -1, f.shape[-1]) for f in features]
        return targets, pooled

    def forward(self, model: FluxViT, video: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        t_tokens, t_pooled = self.teacher_targets(video, model.patch_size)
        tokens, kept = model.forward_features(video, self.student_budget(video, model.patch_size),
                                              return_indices=True)
        student = tokens[:, 1:]
        parts: dict[str, torch.Tensor] = {}
        layer_losses = []
        for layer, proj, t_layer in zip(self.teacher.layers, self.token_proj, t_tokens):
            if kept is not None:  # the teacher's features at the student's kept positions
                t_layer = torch.gather(t_layer, 1, kept[..., None].expand(-1, -1, t_layer.shape[-1]))
            loss = cosine_loss(proj(student), t_layer)
            layer_losses.append(loss)
            if len(self.token_proj) > 1:
                parts[f"token_{layer}"] = loss.detach()
        token_loss = torch.stack(layer_losses).mean()
        parts["token"] = token_loss.detach()
        total = self.token_weight * token_loss
        emb = model.forward_head(tokens, 0, pre_logits=True)
        if self.pooled_proj is not None:
            pooled_loss = cosine_loss(self.pooled_proj(emb), t_pooled)
            parts["pooled"] = pooled_loss.detach()
            total = total + self.pooled_weight * pooled_loss
        if self.supervised_weight > 0:
            ce = classification_loss(model.classify(emb, 0), target, self.label_smoothing)
            parts["ce"] = ce.detach()
            total = total + self.supervised_weight * ce
        parts["loss"] = total
        return parts


class Learner(nn.Module):
    """The student and its objective as one module, so that DDP wraps (and synchronises the
    gradients of) both the model and the objective's trainable parts in one forward.

    forward(video (B, 3, T, H, W), target (B,) or (B, K)) -> dict of named losses.
    """

    def __init__(self, model: FluxViT, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, video: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.objective(self.model, video, target)


# The config's objective names -> the classes that implement them.
OBJECTIVES: dict[str, type[Objective]] = {
    "fixed": Supervised,
    "flux": SingleBudgetFlux,
    "flux_multi": FluxMulti,
    "distill": Distill,
}
