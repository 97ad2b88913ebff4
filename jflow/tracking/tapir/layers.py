"""Numerical building blocks that follow Haiku's defaults, which TAPIR's weights expect.

Haiku and Flax differ in details that change the numbers:

* ``hk.LayerNorm`` and ``hk.InstanceNorm`` use ``eps=1e-5`` and the exact variance
  ``mean((x - mean)^2)``; Flax's ``LayerNorm`` defaults to ``1e-6`` and the fast
  ``mean(x^2) - mean^2``.
* ``jax.nn.gelu`` (which Haiku code calls) is the tanh approximation.
* Resizing goes through ``jax.image.resize(..., "bilinear")``, which antialiases when it
  shrinks.

Sampling uses the pixel-corner convention: ``(0, 0)`` is the top-left corner of the
top-left cell, so the centre of cell ``(i, j)`` is ``(i + 0.5, j + 0.5)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from jflow.errors import ConfigError

HAIKU_NORM_EPS = 1e-5


def normalize(
    x: Float[Array, "..."], axes: tuple[int, ...], eps: float = HAIKU_NORM_EPS
) -> Float[Array, "..."]:
    """``(x - mean) / sqrt(var + eps)`` over ``axes`` with the exact (two-pass) variance."""
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def gelu(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """GELU, tanh approximation (``jax.nn.gelu``'s and Haiku code's default)."""
    return jax.nn.gelu(x, approximate=True)


class LayerNorm(nnx.Module):
    """``hk.LayerNorm(axis=-1)``: normalise the channel axis, then scale (and offset)."""

    def __init__(self, dim: int, use_offset: bool = False):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.offset = nnx.Param(jnp.zeros((dim,), jnp.float32)) if use_offset else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = normalize(x, (-1,)) * self.scale[...]
        if self.offset is not None:
            y = y + self.offset[...]
        return y


class InstanceNorm(nnx.Module):
    """``hk.InstanceNorm`` on ``[..., H, W, C]``: normalise over H and W per channel."""

    def __init__(self, dim: int):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.offset = nnx.Param(jnp.zeros((dim,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return normalize(x, (-3, -2)) * self.scale[...] + self.offset[...]


def l2_normalize(x: Float[Array, "... C"]) -> Float[Array, "... C"]:
    """Divide by the channel L2 norm, floored at 1e-6 (``sqrt(max(|x|^2, 1e-12))``)."""
    return x / jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), 1e-12))


def resize_frames(
    frames: Float[Array, "... H W C"], hw: tuple[int, int]
) -> Float[Array, "... h w C"]:
    """Bilinear resize of ``[..., H, W, C]`` to ``hw``, antialiased when shrinking.

    A no-op when the size already matches. Pixel corners stay aligned, so a point at
    ``(x, y)`` maps to ``(x * W' / W, y * H' / H)``.
    """
    h, w = frames.shape[-3:-1]
    if (h, w) == tuple(hw):
        return frames
    shape = frames.shape[:-3] + tuple(hw) + frames.shape[-1:]
    return jax.image.resize(frames, shape, method="bilinear", antialias=True)


def bilinear_sample(
    grid: Float[Array, "*T H W C"],
    yx: Float[Array, "... 2"],
    mode: str = "nearest",
    frame: Int[Array, "..."] | None = None,
) -> Float[Array, "... C"]:
    """Sample ``grid [H, W, C]`` at points ``yx [..., 2]`` (pixel-corner convention).

    With ``frame`` (integers broadcastable to ``yx.shape[:-1]``), ``grid`` is
    ``[T, H, W, C]`` and each point reads its own frame.
    ``mode="nearest"`` clamps to the border cells, ``"constant"`` reads zeros outside:
    the same as ``jax.scipy.ndimage.map_coordinates(order=1)`` at ``yx - 0.5``.
    Returns ``[..., C]``.
    """
    h, w = grid.shape[-3], grid.shape[-2]
    y = yx[..., 0] - 0.5
    x = yx[..., 1] - 0.5
    y0 = jnp.floor(y)
    x0 = jnp.floor(x)
    wy1 = y - y0
    wx1 = x - x0
    y0 = y0.astype(jnp.int32)
    x0 = x0.astype(jnp.int32)
    out = 0.0
    for dy, wy in ((0, 1.0 - wy1), (1, wy1)):
        for dx, wx in ((0, 1.0 - wx1), (1, wx1)):
            yi = y0 + dy
            xi = x0 + dx
            weight = wy * wx
            if mode == "constant":
                inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
                weight = jnp.where(inside, weight, 0.0)
            elif mode != "nearest":
                raise ConfigError(f"unknown sampling mode {mode!r}; known: 'nearest', 'constant'")
            yi = jnp.clip(yi, 0, h - 1)
            xi = jnp.clip(xi, 0, w - 1)
            vals = grid[yi, xi] if frame is None else grid[frame, yi, xi]
            out = out + vals * weight[..., None]
    return out


def soft_argmax(heatmap: Float[Array, "... h w"], radius: float) -> Float[Array, "... 2"]:
    """TAP-Net's soft argmax of a normalised heatmap ``[..., h, w]``.

    Finds the peak cell, then averages the centres ``(j + 0.5, i + 0.5)`` of the cells whose
    centre lies strictly within ``radius`` cells of the peak's, weighted by the heatmap.
    Returns ``[..., 2]`` as ``(x, y)`` in grid cells (pixel-corner convention).
    """
    h, w = heatmap.shape[-2:]
    ys, xs = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing="ij")
    flat = heatmap.reshape(heatmap.shape[:-2] + (h * w,))
    idx = jnp.argmax(flat, axis=-1)
    peak_y = (idx // w).astype(heatmap.dtype)[..., None, None] + 0.5
    peak_x = (idx % w).astype(heatmap.dtype)[..., None, None] + 0.5
    valid = (jnp.square(xs - peak_x) + jnp.square(ys - peak_y)) < radius**2
    weights = heatmap * valid
    total = jnp.maximum(jnp.sum(weights, axis=(-2, -1)), 1e-12)
    px = jnp.sum(weights * xs, axis=(-2, -1)) / total
    py = jnp.sum(weights * ys, axis=(-2, -1)) / total
    return jnp.stack([px, py], axis=-1)


def avg_pool_2x(x: Float[Array, "... H W C"]) -> Float[Array, "... h w C"]:
    """2x2 average pooling with stride 2 and VALID padding on ``[..., H, W, C]``."""
    h, w = x.shape[-3] // 2 * 2, x.shape[-2] // 2 * 2
    x = x[..., :h, :w, :]
    x = x.reshape(x.shape[:-3] + (h // 2, 2, w // 2, 2, x.shape[-1]))
    return jnp.mean(x, axis=(-4, -2))
