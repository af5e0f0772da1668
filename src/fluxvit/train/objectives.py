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

from fluxvit.errors import CheckpointError, ConfigError
from fluxvit.flux.grid import Grid
from fluxvit.models.fluxvit import FluxViT

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


class Objective(nn.Module):
    """Base: ``forward(model, video, target) -> {"loss": total, name: part, ...}``."""

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
    """UMT-style distillation from a frozen ``teacher`` (any loadable FluxViT).

    The teacher sees the clip with every token (resampled to ``teacher_grid`` if given) and
    yields token features (B, Tt*ht*wt, Ct) and a pooled feature (B, Et) from its head 0. When
    its token grid differs from the student's (T, h, w) the teacher's feature volume is
    trilinearly interpolated to (T, h, w). The student keeps ``budget`` tokens; its token
    features (B, N, C) go through ``token_proj`` (LayerNorm + Linear to Ct) and are compared by
    cosine with the teacher's features at the kept positions; its pooled feature (head 0,
    (B, E)) goes through ``pooled_proj`` and is compared with the teacher's pooled feature.
    The projections are trained with the student and dropped afterwards.
    """

    def __init__(
        self,
        student: FluxViT,
        teacher: FluxViT,
        budget: int | None = None,
        teacher_grid: Grid | None = None,
        token_weight: float = 1.0,
        pooled_weight: float = 1.0,
        supervised_weight: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        teacher.eval().requires_grad_(False)
        # A tuple hides the teacher from this module's parameters and state dict, so it is not
        # optimised, not synchronised by DDP and not written into training checkpoints.
        self._teacher = (teacher,)
        c_s, c_t = student.config.embed_dim, teacher.config.embed_dim
        e_s, e_t = student.config.clip_embed_dim, teacher.config.clip_embed_dim
        self.token_proj = nn.Sequential(nn.LayerNorm(c_s), nn.Linear(c_s, c_t))
        self.pooled_proj = nn.Sequential(nn.LayerNorm(e_s), nn.Linear(e_s, e_t))
        self.budget = budget
        self.teacher_grid = teacher_grid
        self.token_weight, self.pooled_weight = token_weight, pooled_weight
        self.supervised_weight, self.label_smoothing = supervised_weight, label_smoothing

    @classmethod
    def budgets(cls, cfg: ObjectiveConfig, head_budgets: Sequence[int]) -> list[int | None]:
        return [cfg.budget if cfg.budget is not None else head_budgets[0]]

    @classmethod
    def from_config(cls, cfg: TrainConfig, model: FluxViT) -> Distill:
        from fluxvit.models.registry import create_model

        o = cfg.objective  # teacher, its checkpoint and grid were checked by the config's validation
        try:
            teacher = create_model(o.teacher, checkpoint=o.teacher_checkpoint)
        except (CheckpointError, ConfigError) as e:
            raise ConfigError(f"teacher {o.teacher} from {o.teacher_checkpoint}: cannot be loaded: {e}") from None
        (budget,) = cls.budgets(o, model.budgets)
        return cls(model, teacher, budget, Grid.parse(o.teacher_grid) if o.teacher_grid else None,
                   o.token_weight, o.pooled_weight, o.supervised_weight, cfg.optim.label_smoothing)

    @property
    def teacher(self) -> FluxViT:
        return self._teacher[0]

    def _apply(self, fn, recurse=True):  # keep the hidden teacher on the student's device/dtype
        self._teacher[0]._apply(fn, recurse)
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def teacher_targets(self, video: torch.Tensor, student_patch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, 3, T, H, W) -> (teacher token features on the student's token grid
        (B, T*h*w, Ct) for a student of patch ``student_patch``, teacher pooled feature (B, Et))."""
        teacher = self.teacher
        teacher.eval()
        b, _, t, hh, ww = video.shape
        p = teacher.patch_size
        seen = video
        if self.teacher_grid is not None:
            g = self.teacher_grid
            seen = F.interpolate(video, size=(g.frames, g.height, g.width), mode="trilinear", align_corners=False)
        tokens = teacher.forward_features(seen)  # every token: (B, 1 + Tt*ht*wt, Ct)
        pooled = teacher.forward_head(tokens, 0, pre_logits=True)
        tt, th, tw = seen.shape[2], seen.shape[3] // p, seen.shape[4] // p
        feats = tokens[:, 1:].reshape(b, tt, th, tw, -1)
        target_grid = (t, hh // student_patch, ww // student_patch)
        if (tt, th, tw) != target_grid:
            vol = feats.permute(0, 4, 1, 2, 3).float()
            vol = F.interpolate(vol, size=target_grid, mode="trilinear", align_corners=False)
            feats = vol.permute(0, 2, 3, 4, 1)
        return feats.reshape(b, -1, feats.shape[-1]), pooled

    def forward(self, model: FluxViT, video: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        t_tokens, t_pooled = self.teacher_targets(video, model.patch_size)
        n = clip_budget(self.budget, video, model.patch_size)
        tokens, kept = model.forward_features(video, n, return_indices=True)
        if kept is not None:  # the teacher's features at the student's kept positions
            t_tokens = torch.gather(t_tokens, 1, kept[..., None].expand(-1, -1, t_tokens.shape[-1]))
        token_loss = cosine_loss(self.token_proj(tokens[:, 1:]), t_tokens)
        emb = model.forward_head(tokens, 0, pre_logits=True)
        pooled_loss = cosine_loss(self.pooled_proj(emb), t_pooled)
        total = self.token_weight * token_loss + self.pooled_weight * pooled_loss
        parts = {"token": token_loss.detach(), "pooled": pooled_loss.detach()}
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
