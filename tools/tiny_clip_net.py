"""The tiny CLIP's two towers, in PyTorch: an OpenCLIP-style Vision Transformer and causal text transformer.

``QuickGELU``, the pre-LN transformer ``Block`` (attention written out for a plain
ONNX graph), ``VisionTower`` (patch embedding, class token, ``ln_post`` +
projection) and ``TextTower`` (CLIP BPE ids mapped to a compact embedding table,
pooled at the end-of-text token). ``tools/train_tiny_clip.py`` trains and
exports them; like it, this module needs PyTorch, a development-only dependency.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation, x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """Pre-LN transformer block (OpenCLIP's ResidualAttentionBlock), attention written out for a plain ONNX graph."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), QuickGELU() if quick_gelu else nn.GELU(), nn.Linear(hidden, width)
        )

    def attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * (w // self.heads) ** -0.5
        if mask is not None:
            scores = scores + mask
        out = scores.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class VisionTower(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float,
        quick_gelu: bool = False,
    ) -> None:
        super().__init__()
        grid = image_size // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) * width**-0.5)
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, quick_gelu) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv1(image).flatten(2).transpose(1, 2)  # (B, patches, width)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        for block in self.blocks:
            x = block(x)
        return F.normalize(self.ln_post(x[:, 0]) @ self.proj, dim=-1)


class TextTower(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        known_ids: list[int],
        context_length: int,
        vocab_size: int,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float,
        quick_gelu: bool = False,
    ) -> None:
        super().__init__()
        # CLIP id -> row of the compact embedding table; row 0 is "unknown".
        row_of_id = torch.zeros(vocab_size, dtype=torch.int32)
        row_of_id[torch.tensor(known_ids)] = torch.arange(1, len(known_ids) + 1, dtype=torch.int32)
        self.register_buffer("row_of_id", row_of_id)
        self.token_embedding = nn.Embedding(len(known_ids) + 1, width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, quick_gelu) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)
        causal = torch.full((context_length, context_length), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        ids = text.long()
        rows: torch.Tensor = self.row_of_id[ids]  # type: ignore[index]
        x = self.token_embedding(rows.long()) + self.positional_embedding
        for block in self.blocks:
            x = block(x, self.causal_mask)
        x = self.ln_final(x)
        # Pool at the end-of-text token: it has the largest id in CLIP's vocabulary (as OpenCLIP does).
        eot = ids.argmax(dim=-1)
        pooled = torch.gather(x, 1, eot[:, None, None].expand(-1, 1, x.shape[-1])).squeeze(1)
        return F.normalize(pooled @ self.text_projection, dim=-1)
