"""Building blocks: motion modules start as the identity, temporal attention mixes only along
frames, spatial layers only within frames; attention masks; patchify."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jflow.models import FAST_COMPILE
from jflow.models.attention import Attention, SpatialTransformer
from jflow.models.motion import MotionModule, sinusoidal_frame_encoding
from jflow.models.unet import ResBlock, patchify, unpatchify

fast_jit = partial(jax.jit, compiler_options=FAST_COMPILE)


@partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _apply_jit(graphdef, state, *args):
    return nnx.merge(graphdef, state)(*args)


def _apply(module, *args):
    """Apply a module under jit (compiled once per module structure and input shapes)."""
    return _apply_jit(*nnx.split(module), *args)


def _randomize(module, seed=0, scale=0.3):
    """Give every parameter random values (so zero-initialised projections do something)."""
    graphdef, state = nnx.split(module)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)
    ]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


X = jax.random.normal(jax.random.key(1), (2, 5, 4, 3, 8))  # [B, T, h, w, C]


def test_new_motion_module_is_exactly_identity():
    mm = MotionModule(8, num_heads=2, rngs=nnx.Rngs(0))
    assert not np.any(np.asarray(mm.proj_out.kernel[...]))
    np.testing.assert_array_equal(np.asarray(_apply(mm, X)), np.asarray(X))


def test_motion_module_mixes_only_along_frames():
    mm = _randomize(MotionModule(8, num_heads=2, rngs=nnx.Rngs(0)))
    base = np.asarray(_apply(mm, X))
    assert not np.allclose(base, np.asarray(X))
    pert = X.at[1, 2, 1, 2, 0].add(1.0)  # one channel of one cell of one frame
    diff = np.abs(np.asarray(_apply(mm, pert)) - base).max(axis=-1)  # [B, T, h, w]
    changed = diff > 1e-6
    assert changed[1, :, 1, 2].all(), "every frame of the perturbed cell should change"
    changed[1, :, 1, 2] = False
    assert not changed.any(), "no other cell (or batch element) may change"


def test_spatial_layers_mix_only_within_frames():
    st = _randomize(SpatialTransformer(8, 6, num_heads=2, groups=4, rngs=nnx.Rngs(0)))
    rb = _randomize(ResBlock(8, 8, 4, 4, 0.0, rngs=nnx.Rngs(1)))
    frames = X.reshape(-1, *X.shape[2:])  # [B*T, h, w, C]
    ctx = jax.random.normal(jax.random.key(2), (frames.shape[0], 3, 6))
    mask = jnp.ones((frames.shape[0], 3), bool)
    temb = jnp.ones((frames.shape[0], 4))

    def both(x):
        return np.asarray(_apply(rb, _apply(st, x, ctx, mask), temb))

    base = both(frames)
    pert = frames.at[7, 1, 1, 0].add(1.0)
    diff = np.abs(both(pert) - base).max(axis=(1, 2, 3))
    assert diff[7] > 1e-4
    assert np.all(np.delete(diff, 7) < 1e-6), "other frames must not change"
    assert (np.abs(both(pert) - base)[7].max(-1) > 1e-6).sum() > 1, "cells within a frame mix"


def test_cross_attention_mask_ignores_masked_keys():
    attn = Attention(8, context_dim=6, num_heads=2, rngs=nnx.Rngs(0))
    q = jax.random.normal(jax.random.key(0), (2, 5, 8))
    ctx = jax.random.normal(jax.random.key(1), (2, 4, 6))
    mask = jnp.array([[True, True, False, False]] * 2)
    a = _apply(attn, q, ctx, mask)
    b = _apply(attn, q, ctx.at[:, 2:].set(99.0), mask)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@pytest.mark.parametrize("p", [1, 2, 4])
def test_patchify_round_trip(p):
    x = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3)
    y = patchify(x, p)
    assert y.shape == (2, 8 // p, 8 // p, 3 * p * p)
    np.testing.assert_array_equal(np.asarray(unpatchify(y, p)), np.asarray(x))


def test_frame_encoding_is_sinusoidal():
    enc = sinusoidal_frame_encoding(6, 8)
    assert enc.shape == (6, 8)
    np.testing.assert_allclose(enc[:, 0], np.sin(np.arange(6)), atol=1e-6)
    np.testing.assert_allclose(enc[:, 4], np.cos(np.arange(6)), atol=1e-6)
