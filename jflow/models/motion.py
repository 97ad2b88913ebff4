"""AnimateDiff-style motion modules: temporal self-attention over the frames of each cell.

A motion module sees ``[B, T, h, w, C]`` and attends only along ``T``, separately for every
grid cell (``B*h*w`` sequences of ``T`` tokens). Its output projection is zero-initialised, so
a freshly inserted module is exactly the identity and a network with new motion modules starts
as the frame-wise network it was built from (AnimateDiff's recipe).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jflow.models.attention import Attention, FeedForward
from jflow.models.init import LayerNorm, Linear, zeros


def sinusoidal_frame_encoding(num_frames: int, dim: int, max_period: float = 10000.0) -> np.ndarray:
    """The transformer's sinusoidal position encoding ``[num_frames, dim]`` (sin | cos halves)."""
    half = dim // 2
    freqs = np.exp(-np.log(max_period) * np.arange(half) / max(half, 1))
    angles = np.arange(num_frames)[:, None] * freqs[None, :]
    enc = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)
    if dim % 2:
        enc = np.concatenate([enc, np.zeros((num_frames, 1))], axis=-1)
    return enc.astype(np.float32)


class TemporalBlock(nnx.Module):
    """Pre-norm temporal self-attention (frame position encoding added first) and feed-forward."""

    def __init__(
        self, dim: int, num_heads: int, head_dim: int, ff_mult: int = 4, *, rngs: nnx.Rngs
    ):
        self.norm1 = LayerNorm(dim, rngs=rngs)
        self.attn = Attention(dim, num_heads=num_heads, head_dim=head_dim, rngs=rngs)
        self.norm2 = LayerNorm(dim, rngs=rngs)
        self.ff = FeedForward(dim, ff_mult, rngs=rngs)

    def __call__(self, x: jax.Array, pos: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x + pos))
        return x + self.ff(self.norm2(x))


class MotionModule(nnx.Module):
    """Temporal transformer over frames, applied per grid cell, with a residual connection.

    ``x [B, T, h, w, C] -> x + proj_out(blocks(proj_in(norm(x))))``; ``proj_out`` starts at
    zero. The norm is a per-token LayerNorm, so no information crosses grid cells.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        head_dim: int = 0,
        depth: int = 1,
        max_frames: int = 32,
        ff_mult: int = 4,
        rngs: nnx.Rngs,
    ):
        self.dim = dim
        self.max_frames = max_frames
        self.norm = LayerNorm(dim, rngs=rngs)
        self.proj_in = Linear(dim, dim, rngs=rngs)
        self.blocks = nnx.List(
            [TemporalBlock(dim, num_heads, head_dim, ff_mult, rngs=rngs) for _ in range(depth)]
        )
        self.proj_out = Linear(dim, dim, kernel_init=zeros, bias_init=zeros, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        seq = jnp.transpose(x, (0, 2, 3, 1, 4)).reshape(b * h * w, t, c)
        y = self.proj_in(self.norm(seq))
        pos = jnp.asarray(sinusoidal_frame_encoding(t, c), y.dtype)[None]
        for block in self.blocks:
            y = block(y, pos)
        y = self.proj_out(y).reshape(b, h, w, t, c)
        return x + jnp.transpose(y, (0, 3, 1, 2, 4))
