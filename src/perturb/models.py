"""Small image models whose insides a chapter can read: a tiny Vision Transformer and a small residual CNN.

Both take a batch of square images either flat, shape ``(batch, channels * image_size**2)`` (the layout of
:func:`perturb.data.load_digits`), or image-shaped, shape ``(batch, channels, image_size, image_size)``; flat rows
are read in row-major order, channel first. Both return logits of shape ``(batch, num_classes)``.

:class:`TinyViT` keeps its attention weights readable: ``model(x, return_attention=True)`` also returns the list
of per-layer attention maps, each ``(batch, heads, tokens, tokens)`` with rows that sum to one, where token 0 is
the class token and tokens ``1..num_patches`` are the patches in row-major order over the patch grid.
:func:`attention_rollout` combines them across layers (Abnar and Zuidema, 2020).

Used by: vit-patch-robustness (ViT vs CNN under patch perturbations, attention on the attacked patch), and the
explanation chapters that need a model with attention maps or a small convolutional digit classifier.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def as_images(x: torch.Tensor, channels: int, image_size: int) -> torch.Tensor:
    """``x`` as ``(batch, channels, image_size, image_size)``, accepting flat rows or images."""
    if x.dim() == 2:
        if x.shape[1] != channels * image_size * image_size:
            raise ValueError(f"flat input has {x.shape[1]} features, expected {channels * image_size ** 2}")
        return x.reshape(len(x), channels, image_size, image_size)
    if x.dim() == 4 and tuple(x.shape[1:]) == (channels, image_size, image_size):
        return x
    raise ValueError(f"expected (batch, {channels * image_size ** 2}) or (batch, {channels}, {image_size}, "
                     f"{image_size}), got {tuple(x.shape)}")


class SelfAttention(nn.Module):
    """Multi-head self-attention that returns its weights: softmax(Q K^T / (sqrt(d_head) * temperature)).

    ``temperature`` (default 1) divides the logits: above 1 the attention is flatter, below 1 sharper.
    """

    def __init__(self, dim: int, heads: int, temperature: float = 1.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim, self.temperature = heads, dim // heads, temperature
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-2, -1) / (math.sqrt(self.head_dim) * self.temperature)
        attention = logits.softmax(dim=-1)                               # (batch, heads, tokens, tokens)
        out = (attention @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out), attention


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, temperature: float = 1.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, temperature)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        update, attention = self.attn(self.norm1(x))
        x = x + update
        return x + self.mlp(self.norm2(x)), attention


class TinyViT(nn.Module):
    """A Vision Transformer for small images (Dosovitskiy et al., 2021), class token and learned positions.

    The image is cut into non-overlapping ``patch_size`` x ``patch_size`` patches on a grid aligned with the
    top-left corner; each patch is flattened (channel first) and mapped linearly to ``dim``. With
    ``position_embedding=False`` the model is permutation-equivariant in the patch tokens, so its logits do not
    change when the patches are shuffled.
    """

    def __init__(self, image_size: int = 8, patch_size: int = 2, dim: int = 64, depth: int = 3, heads: int = 4,
                 num_classes: int = 10, channels: int = 1, mlp_ratio: float = 2.0,
                 position_embedding: bool = True, temperature: float = 1.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.grid = image_size // patch_size
        self.num_patches = self.grid ** 2
        self.patch_embed = nn.Linear(channels * patch_size ** 2, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches + 1, dim) * 0.02) if position_embedding else None
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, temperature) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, num_patches, channels * patch_size**2): patches in row-major order over the grid."""
        images = as_images(x, self.channels, self.image_size)
        p, g = self.patch_size, self.grid
        patches = images.reshape(len(images), self.channels, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return patches.reshape(len(images), g * g, self.channels * p * p)

    def set_temperature(self, temperature: float) -> None:
        """Use the same attention temperature in every layer."""
        for block in self.blocks:
            block.attn.temperature = temperature

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The input sequence: class token followed by the embedded patches (plus positions)."""
        embedded = self.patch_embed(self.patchify(x))
        sequence = torch.cat([self.cls_token.expand(len(embedded), -1, -1), embedded], dim=1)
        return sequence if self.pos_embed is None else sequence + self.pos_embed

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        h = self.tokens(x)
        attentions = []
        for block in self.blocks:
            h, attention = block(h)
            attentions.append(attention)
        logits = self.head(self.norm(h[:, 0]))
        return (logits, attentions) if return_attention else logits


def attention_rollout(attentions: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020): prod_l (residual * I + (1 - residual) * mean_heads A_l).

    ``attentions`` is the list returned by ``TinyViT(..., return_attention=True)``; the product runs from the
    last layer down to the first, so row 0 of the result says how much the class token at the output draws on
    each input token. Returns (batch, tokens, tokens), rows summing to one.
    """
    rollout = None
    for attention in attentions:
        mixed = attention.mean(dim=1)
        eye = torch.eye(mixed.shape[-1], device=mixed.device, dtype=mixed.dtype)
        layer = residual * eye + (1 - residual) * mixed
        rollout = layer if rollout is None else layer @ rollout
    return rollout


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU (the basic block of He et al., 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class SmallCNN(nn.Module):
    """A small ResNet for small images: a 3x3 stem, ``blocks`` residual blocks, global average pooling, linear."""

    def __init__(self, image_size: int = 8, channels: int = 1, width: int = 16, blocks: int = 3,
                 num_classes: int = 10):
        super().__init__()
        self.image_size, self.channels = image_size, channels
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(as_images(x, self.channels, self.image_size)))
        return self.head(features.mean(dim=(2, 3)))


def small_cnn(image_size: int = 8, channels: int = 1, width: int = 16, blocks: int = 3,
              num_classes: int = 10) -> SmallCNN:
    """A :class:`SmallCNN`; with the defaults, about 14k parameters for 8x8 digits."""
    return SmallCNN(image_size, channels, width, blocks, num_classes)


def num_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
