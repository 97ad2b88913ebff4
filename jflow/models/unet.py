"""The flow UNet: an AnimateDiff-style video UNet over grid-layout flows.

::

    noisy flow [B,T,h,w,4] --conv_in--> + point features (per cell, every frame)
      |                                   t --sinusoid--MLP--> temb (+ text / observation global)
      v
    down level 0 (h x w):      [ResBlock -> (SpatialTransformer) -> MotionModule] x n, Downsample
    down level 1 (h/2 x w/2):  [ResBlock -> SpatialTransformer -> MotionModule] x n, Downsample
    ...
    mid:                       ResBlock -> SpatialTransformer -> MotionModule -> ResBlock
    up levels (reverse):       [concat skip -> ResBlock -> (SpatialTr.) -> MotionModule] x (n+1),
                               Upsample
    out: GroupNorm -> SiLU -> conv_out -> [B,T,h,w,4]

With ``frame_patch`` k > 1, each run of k frames enters (and leaves) the UNet as one frame of
k times the channels, so "frame" below means such a group.
ResBlocks, convolutions and spatial transformers act on each frame separately (frames folded
into the batch, group norm per frame); the motion modules act on each grid cell separately,
attending over frames. Spatial transformers (self-attention + cross-attention to the text and
observation tokens) sit on the levels that ``config.attention_levels`` marks (the lower
resolutions by default) and always in the middle.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jflow.errors import DataError, ShapeError
from jflow.models.attention import SpatialTransformer
from jflow.models.conditioning import ConditionEncoder, Conditioning, EncodedCondition
from jflow.models.config import FlowModelConfig
from jflow.models.init import Conv, GroupNorm, Linear
from jflow.models.motion import MotionModule


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding ``[B, dim]`` of (float) timesteps ``[B]`` in [0, N]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def patchify(x: jax.Array, p: int) -> jax.Array:
    """``[N, h, w, C] -> [N, h/p, w/p, p*p*C]`` (space-to-depth)."""
    if p == 1:
        return x
    n, h, w, c = x.shape
    x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h // p, w // p, p * p * c)


def unpatchify(x: jax.Array, p: int) -> jax.Array:
    """Inverse of :func:`patchify`."""
    if p == 1:
        return x
    n, h, w, pc = x.shape
    c = pc // (p * p)
    x = x.reshape(n, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * p, w * p, c)


def frames_to_channels(x: jax.Array, k: int) -> jax.Array:
    """``[B, T, h, w, C] -> [B, T/k, h, w, k*C]``: each run of ``k`` frames as one frame
    (channels frame-major: the first frame's ``C``, then the next's)."""
    if k == 1:
        return x
    b, t, h, w, c = x.shape
    x = x.reshape(b, t // k, k, h, w, c).transpose(0, 1, 3, 4, 2, 5)
    return x.reshape(b, t // k, h, w, k * c)


def channels_to_frames(x: jax.Array, k: int) -> jax.Array:
    """Inverse of :func:`frames_to_channels`."""
    if k == 1:
        return x
    b, t, h, w, kc = x.shape
    x = x.reshape(b, t, h, w, k, kc // k).transpose(0, 1, 4, 2, 3, 5)
    return x.reshape(b, t * k, h, w, kc // k)


def patch_mean(x: jax.Array, p: int) -> jax.Array:
    """Average ``[B, h, w, C]`` features over ``p x p`` patches."""
    if p == 1:
        return x
    b, h, w, c = x.shape
    return x.reshape(b, h // p, p, w // p, p, c).mean(axis=(2, 4))


class ResBlock(nnx.Module):
    """Per-frame ResNet block with group norm and an additive timestep embedding."""

    def __init__(
        self, in_ch: int, out_ch: int, temb_dim: int, groups: int, dropout: float, *, rngs: nnx.Rngs
    ):
        self.norm1 = GroupNorm(in_ch, num_groups=groups, rngs=rngs)
        self.conv1 = Conv(in_ch, out_ch, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.temb = Linear(temb_dim, out_ch, rngs=rngs)
        self.norm2 = GroupNorm(out_ch, num_groups=groups, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None
        self.conv2 = Conv(out_ch, out_ch, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.skip = Conv(in_ch, out_ch, kernel_size=(1, 1), rngs=rngs) if in_ch != out_ch else None

    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        # x [N, h, w, C], temb [N, D] (N = B*T)
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.temb(jax.nn.silu(temb))[:, None, None, :]
        h = jax.nn.silu(self.norm2(h))
        if self.dropout is not None:
            h = self.dropout(h)
        h = self.conv2(h)
        return (x if self.skip is None else self.skip(x)) + h


class Stage(nnx.Module):
    """ResBlock, optional spatial transformer, optional motion module on ``[B, T, h, w, C]``."""

    def __init__(
        self,
        config: FlowModelConfig,
        in_ch: int,
        out_ch: int,
        *,
        attention: bool,
        motion: bool,
        rngs: nnx.Rngs,
    ):
        c = config
        self.res = ResBlock(in_ch, out_ch, c.time_embed_dim, c.groups, c.dropout, rngs=rngs)
        self.attn = (
            SpatialTransformer(
                out_ch,
                c.cond_dim,
                num_heads=c.num_heads,
                head_dim=c.head_dim,
                depth=c.transformer_depth,
                groups=c.groups,
                ff_mult=c.ff_mult,
                rngs=rngs,
            )
            if attention
            else None
        )
        self.motion = (
            MotionModule(
                out_ch,
                num_heads=c.num_heads,
                head_dim=c.head_dim,
                depth=c.motion_depth,
                max_frames=c.motion_max_frames,
                ff_mult=c.ff_mult,
                rngs=rngs,
            )
            if motion
            else None
        )

    def __call__(
        self, x: jax.Array, temb: jax.Array, context: jax.Array, mask: jax.Array
    ) -> jax.Array:
        b, t = x.shape[:2]
        h = self.res(x.reshape(b * t, *x.shape[2:]), temb)
        if self.attn is not None:
            h = self.attn(h, context, mask)
        h = h.reshape(b, t, *h.shape[1:])
        if self.motion is not None:
            h = self.motion(h)
        return h


class Downsample(nnx.Module):
    def __init__(self, ch: int, *, rngs: nnx.Rngs):
        self.conv = Conv(ch, ch, kernel_size=(3, 3), strides=(2, 2), padding="SAME", rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t = x.shape[:2]
        y = self.conv(x.reshape(b * t, *x.shape[2:]))
        return y.reshape(b, t, *y.shape[1:])


class Upsample(nnx.Module):
    def __init__(self, ch: int, *, rngs: nnx.Rngs):
        self.conv = Conv(ch, ch, kernel_size=(3, 3), padding="SAME", rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t = x.shape[:2]
        y = jnp.repeat(jnp.repeat(x.reshape(b * t, *x.shape[2:]), 2, axis=1), 2, axis=2)
        y = self.conv(y)
        return y.reshape(b, t, *y.shape[1:])


class FlowUNet(nnx.Module):
    """The 3D-flow generator: ``(noisy_flow [B,T,h,w,4], t [B], cond) -> [B,T,h,w,4]``.

    ``t`` is the (float) timestep on the DDPM scale ``[0, num_train_steps)``; flow matching
    feeds ``t * num_train_steps`` for ``t`` in [0, 1]. What the output means (noise, v or
    velocity) is set by ``config.objective``.
    """

    def __init__(self, config: FlowModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        ch = c.channels
        temb = c.time_embed_dim
        self.time_mlp1 = Linear(ch[0], temb, rngs=rngs)
        self.time_mlp2 = Linear(temb, temb, rngs=rngs)
        self.cond_encoder = ConditionEncoder(c, rngs=rngs)
        in_ch = c.flow_channels * c.patch_size**2 * c.frame_patch
        self.conv_in = Conv(in_ch, ch[0], kernel_size=(3, 3), padding="SAME", rngs=rngs)

        skip_ch = [ch[0]]
        prev = ch[0]
        down = []
        downsamplers = []
        for level, width in enumerate(ch):
            stages = []
            for _ in range(c.num_res_blocks):
                stages.append(
                    Stage(
                        c,
                        prev,
                        width,
                        attention=c.attention_levels[level],
                        motion=c.motion_at(level),
                        rngs=rngs,
                    )
                )
                prev = width
                skip_ch.append(prev)
            down.append(nnx.List(stages))
            if level < c.num_levels - 1:
                downsamplers.append(Downsample(prev, rngs=rngs))
                skip_ch.append(prev)
        self.down = nnx.List(down)
        self.downsamplers = nnx.List(downsamplers)

        self.mid1 = Stage(c, prev, prev, attention=True, motion=True, rngs=rngs)
        self.mid2 = ResBlock(prev, prev, temb, c.groups, c.dropout, rngs=rngs)

        up = []
        upsamplers = []
        for level in reversed(range(c.num_levels)):
            width = ch[level]
            stages = []
            for _ in range(c.num_res_blocks + 1):
                stages.append(
                    Stage(
                        c,
                        prev + skip_ch.pop(),
                        width,
                        attention=c.attention_levels[level],
                        motion=c.motion_at(level),
                        rngs=rngs,
                    )
                )
                prev = width
            up.append(nnx.List(stages))
            if level > 0:
                upsamplers.append(Upsample(prev, rngs=rngs))
        self.up = nnx.List(up)
        self.upsamplers = nnx.List(upsamplers)
        self.norm_out = GroupNorm(prev, num_groups=c.groups, rngs=rngs)
        self.conv_out = Conv(prev, in_ch, kernel_size=(3, 3), padding="SAME", rngs=rngs)

    # -------------------------------------------------------------------- entry points

    def __call__(self, noisy_flow: jax.Array, t: jax.Array, cond: Conditioning) -> jax.Array:
        """Checks the inputs, encodes the conditioning and denoises (see the class docstring)."""
        self.check_inputs(noisy_flow, t, cond)
        return self.denoise(noisy_flow, t, self.encode(cond))

    def encode(self, cond: Conditioning) -> EncodedCondition:
        return self.cond_encoder(cond)

    def denoise(self, x: jax.Array, t: jax.Array, enc: EncodedCondition) -> jax.Array:
        c = self.config
        x = frames_to_channels(x, c.frame_patch)
        b, nt = x.shape[:2]  # nt: frames after grouping
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
        temb = self.time_mlp2(jax.nn.silu(self.time_mlp1(timestep_embedding(t, c.channels[0]))))
        temb = temb + enc.global_embed
        temb = jnp.repeat(temb, nt, axis=0)  # [B*T, D]
        context = jnp.repeat(enc.context, nt, axis=0)
        mask = jnp.repeat(enc.context_mask, nt, axis=0)

        p = c.patch_size
        h = self.conv_in(patchify(x.reshape(b * nt, *x.shape[2:]), p))
        h = h.reshape(b, nt, *h.shape[1:]) + enc.point_features[:, None]
        skips = [h]
        for level, stages in enumerate(self.down):
            for stage in stages:
                h = stage(h, temb, context, mask)
                skips.append(h)
            if level < c.num_levels - 1:
                h = self.downsamplers[level](h)
                skips.append(h)
        h = self.mid1(h, temb, context, mask)
        h = self.mid2(h.reshape(b * nt, *h.shape[2:]), temb).reshape(h.shape)
        for i, stages in enumerate(self.up):
            for stage in stages:
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = stage(h, temb, context, mask)
            if i < c.num_levels - 1:
                h = self.upsamplers[i](h)
        h = jax.nn.silu(self.norm_out(h.reshape(b * nt, *h.shape[2:])))
        out = unpatchify(self.conv_out(h), p)
        return channels_to_frames(out.reshape(b, nt, *out.shape[1:]), c.frame_patch)

    # -------------------------------------------------------------------- validation

    def check_inputs(self, noisy_flow: jax.Array, t: jax.Array, cond: Conditioning) -> None:
        """ShapeError for shapes that do not match the config; DataError for non-finite
        values (checked only on concrete arrays, i.e. outside ``jax.jit``)."""
        c = self.config
        expected = (c.num_frames, *c.grid_hw, c.flow_channels)
        shape = tuple(noisy_flow.shape)
        if len(shape) != 5 or shape[1:] != expected:
            raise ShapeError(
                f"flow must be [B, {expected[0]}, {expected[1]}, {expected[2]}, {expected[3]}] "
                f"(frames, grid, channels of this model's config), got {shape}"
            )
        check_conditioning(c, cond, batch=shape[0])
        if jnp.ndim(t) not in (0, 1) or (jnp.ndim(t) == 1 and jnp.shape(t)[0] != shape[0]):
            raise ShapeError(f"t must be a scalar or [B={shape[0]}], got shape {jnp.shape(t)}")
        check_finite(noisy_flow, "noisy_flow")
        check_finite(t, "t")


def check_conditioning(config: FlowModelConfig, cond: Conditioning, batch: int | None) -> None:
    b = cond.text_tokens.shape[0] if batch is None else batch
    problems = []
    if cond.text_tokens.ndim != 3 or cond.text_tokens.shape[0] != b:
        problems.append(
            f"text_tokens must be [B={b}, L, {config.text_dim}], got {cond.text_tokens.shape}"
        )
    elif cond.text_tokens.shape[-1] != config.text_dim:
        problems.append(
            f"text_tokens width {cond.text_tokens.shape[-1]} != config.text_dim {config.text_dim} "
            "(was the model built for another text encoder?)"
        )
    elif tuple(cond.text_mask.shape) != tuple(cond.text_tokens.shape[:2]):
        problems.append(
            f"text_mask must be [B, L]={cond.text_tokens.shape[:2]}, got {cond.text_mask.shape}"
        )
    if cond.rgb.ndim != 4 or cond.rgb.shape[0] != b or cond.rgb.shape[-1] != 3:
        problems.append(f"rgb must be [B={b}, H, W, 3], got {cond.rgb.shape}")
    elif tuple(cond.depth.shape) != tuple(cond.rgb.shape[:3]):
        problems.append(f"depth must be [B, H, W]={cond.rgb.shape[:3]}, got {cond.depth.shape}")
    pts = (b, *config.grid_hw, config.flow_channels)
    if tuple(cond.initial_points.shape) != pts:
        problems.append(f"initial_points must be {list(pts)}, got {cond.initial_points.shape}")
    if problems:
        raise ShapeError("bad conditioning: " + "; ".join(problems))
    for name in ("text_tokens", "depth", "initial_points"):
        check_finite(getattr(cond, name), f"cond.{name}")


def check_finite(x, name: str) -> None:
    """DataError if a concrete array holds NaN or inf (no-op on tracers inside jit)."""
    if isinstance(x, jax.core.Tracer):
        return
    arr = np.asarray(x)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise DataError(f"{name} holds {bad} non-finite value(s) (NaN or inf)")


def count_params(model: nnx.Module) -> int:
    """Number of scalar parameters (``nnx.Param``, LoRA included)."""
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
