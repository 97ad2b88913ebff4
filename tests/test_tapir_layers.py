"""Haiku-default numerics TAPIR's weights rely on: norms, GELU, resizing, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jflow.tracking.tapir.layers import (
    InstanceNorm,
    LayerNorm,
    avg_pool_2x,
    bilinear_sample,
    gelu,
    l2_normalize,
    normalize,
    resize_frames,
    soft_argmax,
)


def test_instance_norm_matches_numpy_with_eps_1e5_and_exact_variance():
    rng = np.random.default_rng(0)
    # A large mean makes the fast variance (E[x^2] - E[x]^2) lose precision in float32.
    x = (rng.normal(size=(2, 5, 6, 3)) * 0.01 + 5.0).astype(np.float32)
    norm = InstanceNorm(3)
    norm.scale[...] = jnp.array([1.0, 2.0, 0.5])
    norm.offset[...] = jnp.array([0.0, 1.0, -1.0])
    got = np.asarray(norm(jnp.asarray(x)))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(1, 2), keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=(1, 2), keepdims=True)
    want = (x64 - mean) / np.sqrt(var + 1e-5) * np.array([1.0, 2.0, 0.5]) + np.array(
        [0.0, 1.0, -1.0]
    )
    np.testing.assert_allclose(got, want, atol=1e-3)
    # Both details matter at this scale: eps 1e-6 (Flax's default) ...
    other = (x64 - mean) / np.sqrt(var + 1e-6) * np.array([1.0, 2.0, 0.5]) + np.array(
        [0.0, 1.0, -1.0]
    )
    assert np.abs(other - want).max() > 0.1
    # ... and the one-pass variance E[x^2] - E[x]^2 in float32.
    xj = jnp.asarray(x)
    m = xj.mean(axis=(1, 2), keepdims=True)
    fast_var = jnp.maximum((xj * xj).mean(axis=(1, 2), keepdims=True) - m * m, 0.0)
    fast = (xj - m) * jax.lax.rsqrt(fast_var + 1e-5) * jnp.array([1.0, 2.0, 0.5]) + jnp.array(
        [0.0, 1.0, -1.0]
    )
    assert np.abs(np.asarray(fast) - want).max() > 10 * np.abs(got - want).max()


def test_layer_norm_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 7)).astype(np.float32) * 3 + 1
    ln = LayerNorm(7, use_offset=True)
    ln.scale[...] = jnp.arange(1.0, 8.0)
    ln.offset[...] = jnp.full((7,), 0.5)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-5) * np.arange(1.0, 8.0) + 0.5
    np.testing.assert_allclose(np.asarray(ln(jnp.asarray(x))), want, rtol=1e-5, atol=1e-5)
    assert LayerNorm(7).offset is None  # the mixer's norms have a scale only
    np.testing.assert_allclose(normalize(jnp.asarray(x), (-1,)).std(-1), 1.0, atol=1e-3)


def test_gelu_is_the_tanh_approximation():
    x = np.linspace(-4, 4, 41)
    tanh = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x, jnp.float32))), tanh, atol=1e-6)
    exact = np.asarray(jax.nn.gelu(jnp.asarray(x, jnp.float32), approximate=False))
    assert np.abs(exact - tanh).max() > 1e-4


def test_resize_is_antialiased_bilinear():
    rng = np.random.default_rng(2)
    frames = jnp.asarray(rng.random((2, 40, 48, 3)), jnp.float32)
    got = resize_frames(frames, (16, 24))
    want = jax.image.resize(frames, (2, 16, 24, 3), "bilinear", antialias=True)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    plain = jax.image.resize(frames, (2, 16, 24, 3), "bilinear", antialias=False)
    assert np.abs(np.asarray(plain) - np.asarray(want)).max() > 1e-2
    assert resize_frames(frames, (40, 48)) is frames


@pytest.mark.parametrize("mode", ["nearest", "constant"])
def test_bilinear_sample_matches_map_coordinates_half_pixel_shifted(mode):
    rng = np.random.default_rng(3)
    grid = rng.normal(size=(5, 6, 2)).astype(np.float32)
    yx = rng.uniform(-1.5, 7.5, size=(30, 2)).astype(np.float32)
    got = np.asarray(bilinear_sample(jnp.asarray(grid), jnp.asarray(yx), mode))
    for c in range(2):
        want = jax.scipy.ndimage.map_coordinates(
            jnp.asarray(grid[..., c]), list((yx - 0.5).T), order=1, mode=mode
        )
        np.testing.assert_allclose(got[:, c], np.asarray(want), atol=1e-5)
    # The centre of cell (i, j) is (i + 0.5, j + 0.5).
    centre = bilinear_sample(jnp.asarray(grid), jnp.array([[2.5, 3.5]]), mode)
    np.testing.assert_allclose(np.asarray(centre)[0], grid[2, 3], atol=1e-6)


def test_bilinear_sample_per_frame():
    grid = jnp.arange(2 * 3 * 3 * 1, dtype=jnp.float32).reshape(2, 3, 3, 1)
    out = bilinear_sample(grid, jnp.array([[0.5, 0.5], [0.5, 0.5]]), "nearest", jnp.array([0, 1]))
    np.testing.assert_allclose(np.asarray(out)[:, 0], [0.0, 9.0])


def test_soft_argmax_by_hand():
    heat = np.zeros((6, 6), np.float32)
    heat[2, 3] = 0.5  # peak, centre (x, y) = (3.5, 2.5)
    heat[2, 4] = 0.3  # within radius 1.5 of the peak
    heat[5, 0] = 0.2  # far away: ignored
    got = np.asarray(soft_argmax(jnp.asarray(heat), 1.5))
    np.testing.assert_allclose(got, [(0.5 * 3.5 + 0.3 * 4.5) / 0.8, 2.5], atol=1e-6)
    # Strictly inside the radius: a cell exactly 1 away is excluded at radius 1.
    np.testing.assert_allclose(
        np.asarray(soft_argmax(jnp.asarray(heat), 1.0)), [3.5, 2.5], atol=1e-6
    )


def test_avg_pool_and_l2_normalize():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_allclose(np.asarray(avg_pool_2x(x))[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    v = l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(np.asarray(v), [[0.6, 0.8], [0.0, 0.0]])
