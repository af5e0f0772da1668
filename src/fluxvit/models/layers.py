"""Building blocks of FluxViT: norms, the attention with local positional embedding, the MLP,
the transformer block and the attention-pooling projector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dim, computed in fp32 (as the release does)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # torch's fused kernel: same numbers in fp32, ~5x faster than the composite below
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


class LayerScale(nn.Module):
    """Per-channel residual-branch scale ``gamma`` (applied in fp32, as the release does)."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))  # not a product: quick on "meta"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * self.gamma.float()).to(x.dtype)


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if torch.is_grad_enabled() or self.training:
            h = self.drop(self.act(h))
        else:
            # Inference: GELU in place saves allocating (and page-faulting) the widest
            # activation of the block, ~7% of a ViT-S forward on CPU.
            torch.ops.aten.gelu_(h)
        return self.drop(self.fc2(h))


class Attention(nn.Module):
    """Multi-head self-attention with q/k RMSNorm and a local positional embedding (LPE).

    The LPE is a depth-wise 1-D convolution over the token sequence applied to the values V
    (all heads, (B, C, N)), added to the attention output before the output projection. With
    kernel size 1 (the release) it is a per-channel affine map of V. Because it rides on V, it
    carries position into the attention output even after tokens were selected away.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = False,
        qk_norm: bool = True,
        lpe_kernel: int = 1,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = RMSNorm(dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim) if qk_norm else nn.Identity()
        self.lpe = (
            nn.Conv1d(dim, dim, lpe_kernel, padding=lpe_kernel // 2, groups=dim) if lpe_kernel else None
        )
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        b, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, N, C)
        q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(
            q.view(b, n, h, -1).transpose(1, 2),
            k.view(b, n, h, -1).transpose(1, 2),
            v.view(b, n, h, -1).transpose(1, 2),
            dropout_p=self.attn_drop if self.training else 0.0,
        )
        out = out.transpose(1, 2).reshape(b, n, c)
        if self.lpe is not None:
            out = self._add_local_pos(out, v)
        return self.proj_drop(self.proj(out))

    def _add_local_pos(self, out: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``out + lpe(V)``. Kernel 1 (the release) is a per-channel affine map of V, done as one
        multiply-add on the (B, N, C) layout: no transposes to (B, C, N) and back, no convolution
        call (~4% of a ViT-S forward on CPU). Same numbers as the convolution."""
        conv = self.lpe
        if conv.kernel_size[0] == 1:
            weight = conv.weight.view(-1)
            if torch.is_grad_enabled():
                return torch.addcmul(out, v, weight) + conv.bias
            return out.addcmul_(v, weight).add_(conv.bias)
        lpe = conv(v.transpose(1, 2)).transpose(1, 2)
        return out + lpe if torch.is_grad_enabled() else out.add_(lpe)


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_norm: bool = True,
        init_values: float | None = 1e-5,
        drop_path: float = 0.0,
        lpe_kernel: int = 1,
    ) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, lpe_kernel=lpe_kernel)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = RMSNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or not isinstance(self.ls1, LayerScale):
            x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
            return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        # Inference: scale-and-add in one fused op (no drop path in eval); same math.
        x = torch.addcmul(x, self.attn(self.norm1(x)), self.ls1.gamma.to(x.dtype))
        return torch.addcmul(x, self.mlp(self.norm2(x)), self.ls2.gamma.to(x.dtype))


class AttentionPooling(nn.Module):
    """Attention-pooling projector: one query (the mean token) attends over all tokens.

    (B, N, C) -> (B, out_dim). LayerNorms on query, keys and values; q/k/v projections with
    bias; ``out_dim`` output projection.
    """

    def __init__(self, dim: int, num_heads: int, out_dim: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"pooling dim {dim} is not divisible by its num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.norm_v = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(self.norm_q(x.mean(dim=1, keepdim=True))).view(b, 1, h, -1).transpose(1, 2)
        k = self.k(self.norm_k(x)).view(b, n, h, -1).transpose(1, 2)
        v = self.v(self.norm_v(x)).view(b, n, h, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, C/h)
        return self.proj(out.reshape(b, c))


class AlignmentProjector(nn.Module):
    """Linear -> LayerNorm -> L2 normalise: maps a clip embedding into the alignment space
    used by Flux-Multi co-training (the release's ``final_clip_decoder_for_projs``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.norm(self.fc(x)), dim=-1)
