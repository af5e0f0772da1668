"""FluxViT: a video ViT that runs any sampling grid at any token budget."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.utils.checkpoint
from torch import nn

from fluxvit.errors import ConfigError
from fluxvit.flux.flops import FlopsBreakdown, transformer_macs
from fluxvit.flux.grid import Grid
from fluxvit.flux.selectors import Selector, get_selector
from fluxvit.models.layers import AlignmentProjector, AttentionPooling, Block
from fluxvit.models.pos_embed import DualNormPatchEmbed, GlobalPosEmbed
from fluxvit.typecheck import check_fields


@dataclass
class FluxViTConfig:
    """Everything that defines a FluxViT's shapes and behaviour; saved with every checkpoint."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    patch_size: int = 14
    in_chans: int = 3
    pos_grid: tuple[int, int, int] = (24, 18, 18)  # (T, h, w) of the learnable positional table
    qkv_bias: bool = False
    qk_norm: bool = True
    init_values: float = 1e-5
    clip_embed_dim: int = 768
    pool_heads: int = 16
    num_classes: int = 400
    head_budgets: tuple[int, ...] = (3072, 2048, 1024)  # training budget of each head, in order
    num_align_projs: int = 2
    gpe_kernel: int = 1
    lpe_kernel: int = 1
    drop_path_rate: float = 0.0
    fc_drop_rate: float = 0.0
    default_grid: tuple[int, int] = (8, 224)  # (T, R) used when a caller gives only a budget

    def __post_init__(self) -> None:
        check_fields(self, "model config")  # configs also come from files (checkpoint metadata)
        for name in ("embed_dim", "depth", "num_heads", "patch_size", "in_chans", "clip_embed_dim", "pool_heads",
                     "num_classes", "gpe_kernel", "pos_grid", "head_budgets", "default_grid"):
            value = getattr(self, name)
            if min(value if isinstance(value, tuple) else (value,), default=1) < 1:
                raise ConfigError(f"model config {name!r} must be positive, got {value!r:.60}")
        if self.lpe_kernel < 0:  # 0: no local positional embedding
            raise ConfigError(f"model config 'lpe_kernel' must be >= 0, got {self.lpe_kernel}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"model config 'mlp_ratio' must be positive, got {self.mlp_ratio}")
        if not self.head_budgets:
            raise ConfigError("a FluxViT needs at least one head budget")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FluxViTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**d)


class FluxViT(nn.Module):
    """FluxViT (patch 14, tubelet 1): DPN patch embedding, global-local positional embedding,
    token selection to a budget, RMSNorm blocks, one attention-pooling projector and classifier
    per training budget.

    ``model(video, num_tokens=N, head=h)``: video (B, 3, T, H, W) normalised, H and W multiples
    of the patch size; returns logits (B, num_classes) from head ``h`` (default: the head whose
    training budget is nearest to N). As in timm, ``forward_features`` returns the tokens
    (B, 1 + N, C) and ``forward_head(tokens, pre_logits=True)`` the pooled clip embedding.

    Attributes set by loading: ``name`` (the registered architecture), ``class_names`` and
    ``checkpoint_meta`` (the file's metadata record, kept when the model is saved again).
    """

    def __init__(self, config: FluxViTConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = config or FluxViTConfig()
        if overrides:
            cfg = FluxViTConfig.from_dict({**cfg.to_dict(), **overrides})
        self.config = cfg
        self.name: str | None = None
        self.class_names: list[str] | None = None
        self.checkpoint_meta: dict = {}
        c = cfg.embed_dim
        self.patch_embed = DualNormPatchEmbed(cfg.patch_size, c, cfg.in_chans)
        self.pos_embed = GlobalPosEmbed(c, cfg.pos_grid, cfg.gpe_kernel)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth, device="cpu").tolist()  # cpu: buildable on "meta"
        self.blocks = nn.ModuleList(
            Block(c, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.qk_norm, cfg.init_values, rate,
                  cfg.lpe_kernel)
            for rate in rates
        )
        n_heads = len(cfg.head_budgets)
        self.projectors = nn.ModuleList(
            AttentionPooling(c, cfg.pool_heads, cfg.clip_embed_dim) for _ in range(n_heads)
        )
        self.fc_norm = nn.LayerNorm(cfg.clip_embed_dim)
        self.fc_dropout = nn.Dropout(cfg.fc_drop_rate)
        self.heads = nn.ModuleList(nn.Linear(cfg.clip_embed_dim, cfg.num_classes) for _ in range(n_heads))
        self.align_projs = nn.ModuleList(
            AlignmentProjector(cfg.clip_embed_dim) for _ in range(cfg.num_align_projs)
        )
        # Each head's training budget travels with the weights, so no index needs a comment.
        self.register_buffer("head_budgets", torch.tensor(cfg.head_budgets, dtype=torch.long))
        # The same budgets as Python ints, for choosing a head without reading a tensor (which
        # torch.export cannot trace); kept equal to the buffer whenever a state dict is loaded.
        self._budgets: tuple[int, ...] = tuple(int(b) for b in cfg.head_budgets)
        self.register_load_state_dict_post_hook(FluxViT._sync_budgets)
        self.grad_checkpointing = False
        self._init_weights()

    # ------------------------------------------------------------------ init and properties
    def _init_weights(self) -> None:
        if self.cls_token.is_meta:  # built on the "meta" device to learn shapes: no values to set
            return
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for layer_id, blk in enumerate(self.blocks, start=1):  # depth-scaled residual init
            blk.attn.proj.weight.data.div_(math.sqrt(2.0 * layer_id))
            blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer_id))
        for m in self.modules():  # the local PE starts as identity (kernel centre 1)
            if isinstance(m, nn.Conv1d):
                nn.init.zeros_(m.weight)
                m.weight.data[:, :, m.kernel_size[0] // 2] = 1.0
                nn.init.zeros_(m.bias)

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def default_grid(self) -> Grid:
        """The sampling grid (T, R) used when a caller gives only a budget (no budget set)."""
        return Grid(*self.config.default_grid)

    @property
    def budgets(self) -> tuple[int, ...]:
        """Training budget of each head, in head order (plain ints: no tensor is read)."""
        return self._budgets

    @staticmethod
    def _sync_budgets(module: FluxViT, _incompatible) -> None:
        if not module.head_budgets.is_meta:
            module._budgets = tuple(int(b) for b in module.head_budgets.tolist())

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (positions and the class token)."""
        return {"cls_token", "pos_embed.table", "pos_embed.cls"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def head_for(self, num_tokens: int) -> int:
        """Index of the head whose training budget is nearest to ``num_tokens`` (ties: first)."""
        budgets = self.budgets
        return min(range(len(budgets)), key=lambda i: abs(budgets[i] - num_tokens))

    # ------------------------------------------------------------------ forward
    def forward_features(
        self,
        video: torch.Tensor,
        num_tokens: int | None = None,
        selector: str | Selector = "group_dynamic",
        generator: torch.Generator | None = None,
        return_indices: bool = False,
    ):
        """Run the backbone. video (B, 3, T, H, W) -> tokens (B, 1 + N, C), class token first.

        With ``num_tokens`` N < T*L the selector keeps N tokens (scored on the patch
        embeddings, before positions are added); ``return_indices`` also returns the kept
        flat indices (B, N) into T*L (None when all tokens are kept).
        """
        if video.dim() != 5:
            raise ConfigError(f"video must be (B, 3, T, H, W), got shape {tuple(video.shape)}")
        b, _, t, hh, ww = video.shape
        grid = Grid(t, hh, ww, num_tokens)
        _, h, w = grid.patch_grid(self.patch_size)
        n = grid.num_tokens(self.patch_size)
        x = self.patch_embed(video.to(self.cls_token.dtype))  # (B, T, L, C)
        c = x.shape[-1]
        kept = None
        if n < t * h * w:
            kept = get_selector(selector)(x, n, generator=generator)  # (B, N), scored without positions
            n = kept.shape[1]  # the release's rounding may keep a few fewer
        x = x.reshape(b, t * h * w, c) + self.pos_embed(t, h, w)  # global positions, before selection
        if kept is not None:
            # Gathering after the add, not adding ``pos[kept]`` after the gather: the backward of
            # that indexing accumulates with atomic adds on multi-threaded CPUs, so the same seed
            # trained different weights from run to run.
            x = torch.gather(x, 1, kept[..., None].expand(b, n, c))
        cls = (self.cls_token + self.pos_embed.cls).expand(b, -1, -1)
        x = torch.cat([cls.to(x.dtype), x], dim=1)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return (x, kept) if return_indices else x

    def resolve_head(self, num_tokens: int, head: int | None = None) -> int:
        """``head`` checked (negative counts from the end), or for None the head whose training
        budget is nearest to ``num_tokens``, the tokens the transformer sees."""
        if head is None:
            return self.head_for(num_tokens)
        if not -len(self.heads) <= head < len(self.heads):
            raise ConfigError(f"head {head} does not exist; this model has {len(self.heads)} heads")
        return head % len(self.heads)

    def pool(self, tokens: torch.Tensor, head: int) -> torch.Tensor:
        """Tokens (B, 1 + N, C) -> clip embedding (B, clip_embed_dim) through projector ``head``."""
        return self.projectors[head](tokens)

    def classify(self, clip_embedding: torch.Tensor, head: int) -> torch.Tensor:
        """Clip embedding (B, clip_embed_dim) -> logits (B, num_classes) through classifier ``head``."""
        return self.heads[head](self.fc_dropout(self.fc_norm(clip_embedding)))

    def forward_head(self, tokens: torch.Tensor, head: int | None = None, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, 1 + N, C) -> logits (B, num_classes) through ``head`` (default: nearest to
        N); with ``pre_logits`` the clip embedding (B, clip_embed_dim) instead: the projector's
        output, the feature that alignment, distillation and ``fluxvit features`` use."""
        head = self.resolve_head(tokens.shape[1] - 1, head)
        embedding = self.pool(tokens, head)
        return embedding if pre_logits else self.classify(embedding, head)

    def forward(
        self,
        video: torch.Tensor,
        num_tokens: int | None = None,
        head: int | None = None,
        selector: str | Selector = "group_dynamic",
    ) -> torch.Tensor:
        """Logits (B, num_classes) for video (B, 3, T, H, W) at ``num_tokens`` via ``head``."""
        return self.forward_head(self.forward_features(video, num_tokens, selector), head)

    def align(self, clip_embedding: torch.Tensor, index: int) -> torch.Tensor:
        """L2-normalised alignment features (B, D) for Flux-Multi co-training."""
        return self.align_projs[index](clip_embedding)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, directory, push_to_hub: bool = False, repo_id: str | None = None,
                        overwrite: bool = False, **hub_options):
        """Save as a checkpoint folder in the Hugging Face hub's layout (``model.safetensors``,
        ``config.json``, ``classes.txt``, ``README.md``), which ``fluxvit.from_pretrained`` and every
        ``--checkpoint`` load; a non-empty folder only with ``overwrite``; ``push_to_hub`` uploads
        it to ``repo_id``. Returns the folder. See :func:`fluxvit.models.hub.save_pretrained`."""
        from fluxvit.models.hub import save_pretrained  # checkpoint I/O sits above the architecture

        return save_pretrained(self, directory, push_to_hub=push_to_hub, repo_id=repo_id, overwrite=overwrite,
                               **hub_options)

    # ------------------------------------------------------------------ cost
    def estimate_flops(self, grid: Grid | int) -> FlopsBreakdown:
        """Multiply-adds of one forward (one view), by part.

        With C the width, D the depth, N the tokens after selection (+1 class token), P the
        patches sampled, p the patch size, E the clip embedding width and K the classes:

            patch embed   P * 3p^2 * C
            per block     12 * (N+1) * C^2            (qkv 3C^2, proj C^2, MLP 8C^2 at ratio 4)
                        + 2 * (N+1)^2 * C             (QK^T and AV)
            projector     2 * (N+1) * C^2 + C^2 + (N+1) * C + C * E   (k, v, q, scores/AV, out)
            head          E * K

        ``grid`` is a :class:`Grid` (patches counted over the whole grid, budget after
        selection) or a token count N (no selection: P = N). ``.paper`` is the encoder's count
        (the paper's GFLOPs column), ``.total`` the whole forward.
        """
        if isinstance(grid, Grid):
            patches, tokens = grid.num_patches(self.patch_size), grid.num_tokens(self.patch_size)
        else:
            patches = tokens = int(grid)
        cfg = self.config
        return transformer_macs(
            patches=patches,
            tokens=tokens,
            width=cfg.embed_dim,
            depth=cfg.depth,
            mlp_ratio=cfg.mlp_ratio,
            patch_pixels=cfg.in_chans * cfg.patch_size**2,
            clip_dim=cfg.clip_embed_dim,
            num_classes=cfg.num_classes,
        )
