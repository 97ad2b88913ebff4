"""Property tests of jflow.geometry.camera, in float64 like jaxlie's own tests.

The module runs with x64 enabled through ``jax.enable_x64`` (a context manager), so the rest
of the test session keeps JAX's float32 default. Each jitted function compiles once per shape:
the strategies draw seeds and fixed-size arrays.
"""

import jax
import jax.numpy as jnp
import jaxlie
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jflow.geometry import (
    PinholeIntrinsics,
    project,
    project_world,
    sample_depth,
    unproject,
    unproject_to_world,
)

WIDTH, HEIGHT = 64, 48
NUM_POINTS = 32


pytestmark = pytest.mark.usefixtures("float64")


seeds = st.integers(min_value=0, max_value=2**32 - 1)
property_settings = settings(max_examples=40, deadline=None)


def sample_intrinsics(rng: np.random.Generator) -> PinholeIntrinsics:
    f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
    return PinholeIntrinsics(
        fx=f64(rng.uniform(20.0, 2000.0)),
        fy=f64(rng.uniform(20.0, 2000.0)),
        cx=f64(rng.uniform(0.0, WIDTH)),
        cy=f64(rng.uniform(0.0, HEIGHT)),
        width=WIDTH,
        height=HEIGHT,
    )


def sample_pose(rng: np.random.Generator) -> jaxlie.SE3:
    return jaxlie.SE3.exp(jnp.asarray(rng.normal(size=6) * np.array([2, 2, 2, 1, 1, 1.0])))


def sample_camera_points(rng: np.random.Generator) -> np.ndarray:
    depth = rng.uniform(0.05, 20.0, NUM_POINTS)
    xy = rng.uniform(-2.0, 2.0, (NUM_POINTS, 2)) * depth[:, None]  # wider than any image
    return np.concatenate([xy, depth[:, None]], axis=-1)


project_jit = jax.jit(project)
unproject_jit = jax.jit(unproject)
project_world_jit = jax.jit(project_world)
unproject_to_world_jit = jax.jit(unproject_to_world)
sample_depth_jit = jax.jit(sample_depth)


def test_module_runs_in_float64():
    assert jnp.zeros(()).dtype == jnp.float64


@property_settings
@given(seed=seeds)
def test_project_then_unproject_round_trips_in_camera_frame(seed):
    rng = np.random.default_rng(seed)
    k = sample_intrinsics(rng)
    points = sample_camera_points(rng)
    pixels, depth = project_jit(points, k)
    assert pixels.dtype == jnp.float64 and depth.dtype == jnp.float64
    np.testing.assert_allclose(depth, points[:, 2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(unproject_jit(pixels, depth, k), points, rtol=1e-9, atol=1e-9)

    # And the other way: pixels with depth -> points -> the same pixels.
    pixels = rng.uniform([0.0, 0.0], [WIDTH, HEIGHT], (NUM_POINTS, 2))
    depth = rng.uniform(0.05, 20.0, NUM_POINTS)
    back, back_depth = project_jit(unproject_jit(pixels, depth, k), k)
    np.testing.assert_allclose(back, pixels, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(back_depth, depth, rtol=1e-12, atol=1e-12)


@property_settings
@given(seed=seeds)
def test_project_then_unproject_round_trips_in_world_frame(seed):
    rng = np.random.default_rng(seed)
    k = sample_intrinsics(rng)
    world_from_camera = sample_pose(rng)
    points_cam = sample_camera_points(rng)
    points_world = np.asarray(jax.vmap(world_from_camera.apply)(points_cam))

    pixels, depth = project_world_jit(points_world, k, world_from_camera)
    assert pixels.dtype == jnp.float64
    np.testing.assert_allclose(depth, points_cam[:, 2], rtol=1e-9, atol=1e-9)
    back = unproject_to_world_jit(pixels, depth, k, world_from_camera)
    assert back.dtype == jnp.float64
    np.testing.assert_allclose(back, points_world, rtol=1e-9, atol=1e-9)


def affine_depth_map(rng: np.random.Generator):
    """Depth ``a + b x + c y`` at the pixel centres; positive everywhere on the image."""
    a = rng.uniform(3.0, 5.0)
    b, c = rng.uniform(-0.02, 0.02, 2)  # depth >= 3 - 0.02 * (64 + 48) > 0.7
    ys, xs = np.meshgrid(np.arange(HEIGHT) + 0.5, np.arange(WIDTH) + 0.5, indexing="ij")
    return a + b * xs + c * ys, lambda x, y: a + b * x + c * y


@property_settings
@given(seed=seeds)
def test_sample_depth_is_exact_on_affine_depth_maps(seed):
    rng = np.random.default_rng(seed)
    depth_map, depth_at = affine_depth_map(rng)
    # Anywhere in the image: within half a pixel of the border the sample clamps to the
    # nearest pixel centre.
    pixels = rng.uniform([0.0, 0.0], [WIDTH, HEIGHT], (NUM_POINTS, 2))
    value, valid = sample_depth_jit(depth_map, pixels)
    assert value.dtype == jnp.float64
    assert np.all(valid)
    x = np.clip(pixels[:, 0], 0.5, WIDTH - 0.5)
    y = np.clip(pixels[:, 1], 0.5, HEIGHT - 0.5)
    np.testing.assert_allclose(value, depth_at(x, y), rtol=1e-12, atol=1e-12)

    # Outside the image: invalid and 0.
    outside = pixels + rng.choice([-1.0, 1.0], (NUM_POINTS, 1)) * np.array([WIDTH, 0.0])
    value, valid = sample_depth_jit(depth_map, outside)
    assert not np.any(valid) and np.all(value == 0.0)


@property_settings
@given(seed=seeds, bad=st.sampled_from([0.0, -1.0, np.nan, np.inf]), corner=st.integers(0, 3))
def test_sample_depth_with_an_invalid_neighbour_is_invalid_and_zero(seed, bad, corner):
    rng = np.random.default_rng(seed)
    depth_map, depth_at = affine_depth_map(rng)
    # A point strictly inside the cell between centres (i, j) .. (i + 1, j + 1).
    i = rng.integers(0, HEIGHT - 1)
    j = rng.integers(0, WIDTH - 1)
    frac = rng.uniform(0.01, 0.99, 2)
    point = np.array([j + 0.5 + frac[0], i + 0.5 + frac[1]])
    di, dj = divmod(corner, 2)
    depth_map[i + di, j + dj] = bad

    value, valid = sample_depth_jit(depth_map, point[None])
    assert not bool(valid[0])
    assert float(value[0]) == 0.0

    # Every good pixel's own centre still samples exactly (the bad neighbour has weight 0).
    centres = np.stack(
        np.meshgrid(np.arange(WIDTH) + 0.5, np.arange(HEIGHT) + 0.5, indexing="xy"), axis=-1
    )
    values, valids = sample_depth_jit(depth_map, centres)
    assert np.all(np.isfinite(values))
    good = np.ones((HEIGHT, WIDTH), bool)
    good[i + di, j + dj] = False
    assert np.all(valids == good)
    np.testing.assert_allclose(
        values[good], depth_at(centres[..., 0], centres[..., 1])[good], rtol=1e-12
    )
    assert np.all(values[~good] == 0.0)


def test_sample_depth_never_returns_nan_for_nan_pixels():
    depth_map, _ = affine_depth_map(np.random.default_rng(0))
    pixels = np.array([[np.nan, 3.0], [3.0, np.inf], [-np.inf, np.nan]])
    value, valid = sample_depth_jit(depth_map, pixels)
    assert not np.any(valid) and np.all(value == 0.0)


@pytest.mark.parametrize("x64", [False, True])
def test_float32_inputs_stay_float32(x64):
    with jax.enable_x64(x64):
        k = PinholeIntrinsics.from_fovy(60.0, WIDTH, HEIGHT)
        assert k.fx.dtype == jnp.float32
        points = np.random.default_rng(0).uniform(0.5, 2.0, (NUM_POINTS, 3)).astype(np.float32)
        pose = jaxlie.SE3.exp(jnp.asarray([0.1, 0.2, 0.3, 0.1, 0.0, 0.2], jnp.float32))
        pixels, depth = project_jit(points, k)
        assert pixels.dtype == jnp.float32 and depth.dtype == jnp.float32
        assert unproject_jit(pixels, depth, k).dtype == jnp.float32
        pixels_w, depth_w = project_world_jit(points, k, pose)
        assert pixels_w.dtype == jnp.float32 and depth_w.dtype == jnp.float32
        assert unproject_to_world_jit(pixels_w, depth_w, k, pose).dtype == jnp.float32
        depth_map = np.full((HEIGHT, WIDTH), 2.0, np.float32)
        value, valid = sample_depth_jit(depth_map, pixels)
        assert value.dtype == jnp.float32 and valid.dtype == jnp.bool_
        np.testing.assert_allclose(unproject_jit(pixels, depth, k), points, rtol=1e-5, atol=1e-5)


def test_integer_inputs_are_not_truncated():
    k = PinholeIntrinsics.from_fovy(60.0, WIDTH, HEIGHT)
    pixels, depth = project_jit(np.array([[1, 2, 4]]), k)
    assert jnp.issubdtype(pixels.dtype, jnp.floating)
    np.testing.assert_allclose(pixels[0], [k.fx / 4 + k.cx, k.fy / 2 + k.cy], rtol=1e-6)
    np.testing.assert_allclose(depth, [4.0])
    points = unproject_jit(np.array([[WIDTH // 2 + 10, HEIGHT // 2]]), np.array([1.5]), k)
    np.testing.assert_allclose(points[0], [10 * 1.5 / k.fx, 0.0, 1.5], rtol=1e-6)
    # Integer depth maps (millimetres, say) interpolate instead of rounding the weights.
    depth_map = np.tile(np.arange(WIDTH, dtype=np.uint16) * 10 + 100, (HEIGHT, 1))
    value, valid = sample_depth_jit(depth_map, np.array([[3.75, 5.0]]))
    assert bool(valid[0])
    np.testing.assert_allclose(value, [100 + 10 * 3.25], rtol=1e-6)
