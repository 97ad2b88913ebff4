"""Property tests of jflow.geometry.sampling, in float64 like jaxlie's own tests.

The module runs with x64 enabled through ``jax.enable_x64`` (a context manager), so the rest
of the test session keeps JAX's float32 default. The sampler compiles once per (shape,
``num_samples``): the strategies draw seeds and fixed-size arrays.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jflow.errors import ConfigError, ShapeError
from jflow.geometry import farthest_point_sampling

N = 64


pytestmark = pytest.mark.usefixtures("float64")


seeds = st.integers(min_value=0, max_value=2**32 - 1)
property_settings = settings(max_examples=40, deadline=None)
fps_jit = jax.jit(farthest_point_sampling, static_argnames="num_samples")


def check_fps_properties(
    points: np.ndarray, valid: np.ndarray, indices: np.ndarray, rtol: float = 1e-12
) -> None:
    """Distinct valid samples whose covering radius is at most their smallest gap."""
    assert indices.dtype == np.int32
    assert len(set(indices.tolist())) == len(indices)
    assert np.all(valid[indices])
    dist = np.linalg.norm(points[:, None, :] - points[None, indices, :], axis=-1)  # [N, K]
    covering_radius = dist[valid].min(axis=1).max()
    if len(indices) > 1:
        gaps = dist[indices]
        gaps[np.arange(len(indices)), np.arange(len(indices))] = np.inf
        assert covering_radius <= gaps.min() * (1 + rtol)


def test_module_runs_in_float64():
    assert jnp.zeros(()).dtype == jnp.float64


@property_settings
@given(seed=seeds, num_samples=st.sampled_from([1, 2, 7, 32]), masked=st.booleans())
def test_samples_are_distinct_valid_and_cover_the_points(seed, num_samples, masked):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(N, 3)) * rng.uniform(0.1, 2.0, 3)
    valid = rng.random(N) > 0.5 if masked else np.ones(N, bool)
    if valid.sum() < num_samples:
        valid[:num_samples] = True
    start = int(np.flatnonzero(valid)[rng.integers(valid.sum())])
    assert jnp.asarray(points).dtype == jnp.float64
    indices = np.asarray(
        farthest_point_sampling(points, num_samples, valid=valid, start_index=start)
    )
    assert indices.shape == (num_samples,) and indices[0] == start
    check_fps_properties(points, valid, indices)
    # The jitted call (traced mask and start) agrees.
    np.testing.assert_array_equal(
        fps_jit(points, num_samples, valid=jnp.asarray(valid), start_index=jnp.asarray(start)),
        indices,
    )


@property_settings
@given(
    points=hnp.arrays(
        np.float64, (12, 3), elements=st.sampled_from([0.0, 1.0, -2.5, np.nan, np.inf])
    ),
    valid=hnp.arrays(np.bool_, (12,)),
)
def test_duplicates_and_non_finite_points_are_never_repeated_or_chosen(points, valid):
    """Many coincident points and NaN/inf coordinates: still distinct, finite and valid."""
    usable = valid & np.isfinite(points).all(-1)
    k = int(min(usable.sum(), 6))
    if k == 0:
        return
    indices = np.asarray(fps_jit(points, k, valid=jnp.asarray(usable)))
    check_fps_properties(points, usable, indices)
    # Non-finite points count as invalid even when the mask says valid.
    if np.isfinite(points).all(-1).sum() >= k:
        indices = np.asarray(fps_jit(points, k))
        assert np.all(np.isfinite(points[indices]))
        assert len(set(indices.tolist())) == k


def test_invalid_start_index_falls_back_to_the_first_valid_point():
    points = np.random.default_rng(0).normal(size=(N, 3))
    valid = np.ones(N, bool)
    valid[:5] = False
    assert int(farthest_point_sampling(points, 3, valid=valid, start_index=2)[0]) == 5


def test_traced_mask_with_too_few_valid_points_repeats_the_first_sample():
    points = np.random.default_rng(0).normal(size=(N, 3))
    valid = np.zeros(N, bool)
    valid[[3, 10, 20]] = True
    indices = np.asarray(fps_jit(points, 5, valid=jnp.asarray(valid), start_index=10))
    assert indices[0] == 10
    assert set(indices[:3].tolist()) == {3, 10, 20}
    np.testing.assert_array_equal(indices[3:], [10, 10])


def test_bad_arguments_raise():
    points = np.zeros((N, 3))
    with pytest.raises(ConfigError, match="cannot sample"):
        farthest_point_sampling(points, N + 1)
    valid = np.zeros(N, bool)
    valid[:4] = True
    with pytest.raises(ConfigError, match="only 4 of 64 points are valid"):
        farthest_point_sampling(points, 5, valid=valid)
    with pytest.raises(ConfigError):
        farthest_point_sampling(points, -1)
    with pytest.raises(ConfigError, match="start_index"):
        farthest_point_sampling(points, 2, start_index=N)
    with pytest.raises(ShapeError):
        farthest_point_sampling(np.zeros((2, N, 3)), 2)
    with pytest.raises(ShapeError):
        farthest_point_sampling(points, 2, valid=np.ones(N - 1, bool))
    assert farthest_point_sampling(points, 0).shape == (0,)


@pytest.mark.parametrize("x64", [False, True])
def test_float32_inputs_work_and_return_int32(x64):
    with jax.enable_x64(x64):
        points = np.random.default_rng(1).normal(size=(N, 3)).astype(np.float32)
        indices = fps_jit(points, 16)
        assert indices.dtype == jnp.int32
        check_fps_properties(points.astype(np.float64), np.ones(N, bool), np.asarray(indices), 1e-6)
