"""What the flow model is conditioned on, and the trainable encoders that read it.

:class:`Conditioning` is a pytree of arrays (it goes through ``jax.jit`` and sharding):

==================  =========================  ============================================
field               shape, dtype               meaning
==================  =========================  ============================================
``text_tokens``     [B, L, text_dim] float32   frozen text-encoder token embeddings
``text_mask``       [B, L] bool                True on real tokens (all False = no text)
``rgb``             [B, H, W, 3] uint8/float   first RGB frame (uint8 0..255 or float 0..1)
``depth``           [B, H, W] float32          first depth frame, meters
``initial_points``  [B, h, w, 4] float32       frame 0 of the normalised grid flow
==================  =========================  ============================================

Inside the network (:class:`ConditionEncoder`):

- text tokens are projected to ``cond_dim`` and become cross-attention keys; their masked mean
  also enters the global (timestep) embedding;
- the RGB-D frame goes through a small trainable convolutional encoder into an
  ``s x s`` grid of cross-attention tokens (with learned position embeddings) and a pooled
  vector added to the global embedding;
- the initial points' ``(u, v, depth)`` get a sinusoidal (NeRF-style) encoding, which with the
  raw values and visibility is mapped to the first level's width and added to every frame at
  its grid cell (with ``grid_embedding``, plus a learned embedding of the cell itself);
- a learned "null" token is always among the keys, so attention is defined when the text is
  dropped (classifier-free guidance drops the text by zeroing ``text_mask``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jflow.models.config import FlowModelConfig
from jflow.models.init import Conv, GroupNorm, Linear, normal


@struct.dataclass
class Conditioning:
    """The conditioning tensors of a batch (see the module docstring for the layout)."""

    text_tokens: jax.Array
    text_mask: jax.Array
    rgb: jax.Array
    depth: jax.Array
    initial_points: jax.Array

    @property
    def batch_size(self) -> int:
        return self.text_tokens.shape[0]

    def without_text(self) -> Conditioning:
        """The same conditioning with the instruction dropped (all text masked out)."""
        return self.replace(text_mask=jnp.zeros_like(self.text_mask, dtype=bool))

    def drop_text(self, keep: jax.Array) -> Conditioning:
        """Drop the instruction of the examples where ``keep [B]`` is False."""
        return self.replace(text_mask=jnp.logical_and(self.text_mask, keep[:, None]))

    def repeat(self, n: int) -> Conditioning:
        """Each example repeated ``n`` times consecutively (batch ``B`` -> ``B*n``)."""
        return jax.tree.map(lambda a: jnp.repeat(a, n, axis=0), self)

    def concat(self, other: Conditioning) -> Conditioning:
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), self, other)


@struct.dataclass
class EncodedCondition:
    """The conditioning after the network's encoders (computed once per sampling run)."""

    context: jax.Array  # [B, S, cond_dim]
    context_mask: jax.Array  # [B, S] bool
    global_embed: jax.Array  # [B, time_embed_dim]
    point_features: jax.Array  # [B, h/patch, w/patch, channels[0]]


def point_encoding(points: jax.Array, num_freqs: int) -> jax.Array:
    """Sinusoidal encoding of ``[..., 4]`` (u, v, depth, visible) normalised points.

    ``[u, v, d, vis, sin(2^k pi/4 * (u, v, d)), cos(...)]`` for ``k < num_freqs``:
    ``4 + 6 * num_freqs`` features.
    """
    xyz = points[..., :3]
    freqs = (2.0 ** jnp.arange(num_freqs)) * (jnp.pi / 4)
    angles = xyz[..., :, None] * freqs  # [..., 3, F]
    angles = angles.reshape(*xyz.shape[:-1], 3 * num_freqs)
    return jnp.concatenate([points, jnp.sin(angles), jnp.cos(angles)], axis=-1)


class ObservationEncoder(nnx.Module):
    """First RGB-D frame -> ``(tokens [B, s*s, cond_dim], pooled [B, out_dim])``."""

    def __init__(self, config: FlowModelConfig, out_dim: int, *, rngs: nnx.Rngs):
        self.size = config.obs_size
        self.depth_scale = config.obs_depth_scale
        self.max_depth = config.obs_max_depth
        chans = config.obs_channels
        self.stem = Conv(4, chans[0], kernel_size=(3, 3), padding="SAME", rngs=rngs)
        convs, norms = [], []
        prev = chans[0]
        for c in chans:
            convs.append(
                Conv(prev, c, kernel_size=(3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
            )
            norms.append(GroupNorm(c, num_groups=config.groups, rngs=rngs))
            prev = c
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        side = config.obs_size // 2 ** len(chans)
        self.num_tokens = side * side
        self.to_tokens = Linear(prev, config.cond_dim, rngs=rngs)
        self.pos = nnx.Param(normal(0.02)(rngs.params(), (self.num_tokens, config.cond_dim)))
        self.to_global = Linear(prev, out_dim, rngs=rngs)

    def __call__(self, rgb: jax.Array, depth: jax.Array) -> tuple[jax.Array, jax.Array]:
        if rgb.dtype == jnp.uint8:
            rgb = rgb.astype(jnp.float32) / 255.0
        rgb = rgb.astype(jnp.float32) * 2.0 - 1.0
        depth = jnp.clip(depth.astype(jnp.float32), 0.0, self.max_depth)[..., None]
        depth = depth / self.depth_scale
        x = jnp.concatenate([rgb, depth], axis=-1)
        b = x.shape[0]
        if x.shape[1:3] != (self.size, self.size):
            x = jax.image.resize(x, (b, self.size, self.size, 4), method="linear")
        x = self.stem(x)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = jax.nn.silu(norm(conv(x)))
        feats = x.reshape(b, -1, x.shape[-1])
        tokens = self.to_tokens(feats) + self.pos[...]
        pooled = self.to_global(feats.mean(axis=1))
        return tokens, pooled


class ConditionEncoder(nnx.Module):
    """All conditioning -> :class:`EncodedCondition` (see the module docstring)."""

    def __init__(self, config: FlowModelConfig, *, rngs: nnx.Rngs):
        temb = config.time_embed_dim
        self.text_proj = Linear(config.text_dim, config.cond_dim, rngs=rngs)
        self.text_global = Linear(config.cond_dim, temb, rngs=rngs)
        self.null_token = nnx.Param(normal(0.02)(rngs.params(), (1, config.cond_dim)))
        self.observation = ObservationEncoder(config, temb, rngs=rngs)
        self.num_freqs = config.point_freqs
        self.patch_size = config.patch_size
        point_dim = (4 + 6 * config.point_freqs) * config.patch_size**2
        self.point_mlp1 = Linear(point_dim, config.channels[0] * 2, rngs=rngs)
        self.point_mlp2 = Linear(config.channels[0] * 2, config.channels[0], rngs=rngs)
        if config.grid_embedding:
            cells = (config.grid_hw[0] // config.patch_size, config.grid_hw[1] // config.patch_size)
            shape = (*cells, config.channels[0])
            self.grid_embed = nnx.Param(normal(0.02)(rngs.params(), shape))
        else:
            self.grid_embed = None

    def __call__(self, cond: Conditioning) -> EncodedCondition:
        b = cond.text_tokens.shape[0]
        mask = cond.text_mask.astype(bool)
        text = self.text_proj(cond.text_tokens.astype(jnp.float32))
        weights = mask.astype(text.dtype)[..., None]
        pooled_text = (text * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
        obs_tokens, obs_global = self.observation(cond.rgb, cond.depth)
        null = jnp.broadcast_to(self.null_token[...][None], (b, 1, text.shape[-1]))
        context = jnp.concatenate([null, obs_tokens, text], axis=1)
        context_mask = jnp.concatenate([jnp.ones((b, 1 + obs_tokens.shape[1]), bool), mask], axis=1)
        global_embed = self.text_global(pooled_text) + obs_global
        enc = point_encoding(cond.initial_points.astype(jnp.float32), self.num_freqs)
        p = self.patch_size
        if p > 1:  # space-to-depth, as the UNet's input
            _, h, w, f = enc.shape
            enc = enc.reshape(b, h // p, p, w // p, p, f).transpose(0, 1, 3, 2, 4, 5)
            enc = enc.reshape(b, h // p, w // p, p * p * f)
        point_features = self.point_mlp2(jax.nn.silu(self.point_mlp1(enc)))
        if self.grid_embed is not None:
            point_features = point_features + self.grid_embed[...]
        return EncodedCondition(context, context_mask, global_embed, point_features)


def conditioning_from_batch(
    batch: dict, text_tokens: np.ndarray | jax.Array, text_mask: np.ndarray | jax.Array
) -> Conditioning:
    """A :class:`Conditioning` from a pipeline batch (``flow``, ``rgb``, ``depth``) and the
    text encoder's output for ``batch["instruction"]``."""
    return Conditioning(
        text_tokens=jnp.asarray(text_tokens, jnp.float32),
        text_mask=jnp.asarray(text_mask, bool),
        rgb=jnp.asarray(batch["rgb"]),
        depth=jnp.asarray(batch["depth"], jnp.float32),
        initial_points=jnp.asarray(batch["flow"])[:, 0],
    )
