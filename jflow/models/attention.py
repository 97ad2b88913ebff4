"""Multi-head attention and the spatial transformer of the flow UNet.

Every projection of :class:`Attention` is an ``nnx.Linear`` attribute named ``to_q``, ``to_k``,
``to_v`` or ``to_out``: :func:`jflow.models.lora.apply_lora` wraps those by name.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jflow.models.init import GroupNorm, LayerNorm, Linear


class Attention(nnx.Module):
    """Multi-head scaled dot-product attention over ``[N, L, C]`` tokens.

    Self-attention when ``context`` is None, else cross-attention to ``context [N, S, D]`` with
    an optional key mask ``[N, S]`` (True = attend).
    """

    def __init__(
        self,
        dim: int,
        *,
        context_dim: int | None = None,
        num_heads: int = 4,
        head_dim: int = 0,
        rngs: nnx.Rngs,
    ):
        head_dim = head_dim or dim // num_heads
        inner = head_dim * num_heads
        context_dim = context_dim or dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.to_q = Linear(dim, inner, use_bias=False, rngs=rngs)
        self.to_k = Linear(context_dim, inner, use_bias=False, rngs=rngs)
        self.to_v = Linear(context_dim, inner, use_bias=False, rngs=rngs)
        self.to_out = Linear(inner, dim, rngs=rngs)

    def __call__(
        self, x: jax.Array, context: jax.Array | None = None, mask: jax.Array | None = None
    ) -> jax.Array:
        context = x if context is None else context
        n, lq, _ = x.shape
        lk = context.shape[1]
        h, d = self.num_heads, self.head_dim
        q = self.to_q(x).reshape(n, lq, h, d)
        k = self.to_k(context).reshape(n, lk, h, d)
        v = self.to_v(context).reshape(n, lk, h, d)
        bias = None
        if mask is not None:
            bias = jnp.where(mask[:, None, None, :].astype(bool), 0.0, -1e30).astype(q.dtype)
        out = jax.nn.dot_product_attention(q, k, v, bias=bias).reshape(n, lq, h * d)
        return self.to_out(out)


class FeedForward(nnx.Module):
    """GEGLU feed-forward (as in Stable Diffusion's transformer blocks)."""

    def __init__(self, dim: int, mult: int = 4, *, rngs: nnx.Rngs):
        self.proj_in = Linear(dim, dim * mult * 2, rngs=rngs)
        self.proj_out = Linear(dim * mult, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        a, gate = jnp.split(self.proj_in(x), 2, axis=-1)
        return self.proj_out(a * jax.nn.gelu(gate))


class TransformerBlock(nnx.Module):
    """Pre-norm self-attention, cross-attention to the conditioning tokens, feed-forward."""

    def __init__(
        self,
        dim: int,
        context_dim: int,
        num_heads: int,
        head_dim: int,
        ff_mult: int = 4,
        *,
        rngs: nnx.Rngs,
    ):
        self.norm1 = LayerNorm(dim, rngs=rngs)
        self.attn1 = Attention(dim, num_heads=num_heads, head_dim=head_dim, rngs=rngs)
        self.norm2 = LayerNorm(dim, rngs=rngs)
        self.attn2 = Attention(
            dim, context_dim=context_dim, num_heads=num_heads, head_dim=head_dim, rngs=rngs
        )
        self.norm3 = LayerNorm(dim, rngs=rngs)
        self.ff = FeedForward(dim, ff_mult, rngs=rngs)

    def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, mask)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nnx.Module):
    """Attention within each frame: ``[B*T, h, w, C]`` -> same shape.

    Group norm, a linear projection in, ``depth`` transformer blocks over the ``h*w`` cells of a
    frame (self-attention, then cross-attention to the frame's conditioning tokens), a linear
    projection out and a residual connection. Frames never see each other here.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        *,
        num_heads: int,
        head_dim: int = 0,
        depth: int = 1,
        groups: int = 8,
        ff_mult: int = 4,
        rngs: nnx.Rngs,
    ):
        self.norm = GroupNorm(dim, num_groups=groups, rngs=rngs)
        self.proj_in = Linear(dim, dim, rngs=rngs)
        self.blocks = nnx.List(
            [
                TransformerBlock(dim, context_dim, num_heads, head_dim, ff_mult, rngs=rngs)
                for _ in range(depth)
            ]
        )
        self.proj_out = Linear(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        y = self.proj_in(self.norm(x)).reshape(n, h * w, c)
        for block in self.blocks:
            y = block(y, context, mask)
        return x + self.proj_out(y).reshape(n, h, w, c)
