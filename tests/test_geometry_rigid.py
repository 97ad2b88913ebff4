"""Property tests of jflow.geometry.rigid, in float64 like jaxlie's own tests.

The module runs with x64 enabled through ``jax.enable_x64`` (a context manager), so the rest
of the test session keeps JAX's float32 default. The jitted fits compile once per shape: the
strategies draw seeds, and the point sets have a fixed size.
"""

import jax
import jax.numpy as jnp
import jaxlie
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

from jflow.errors import ConfigError, GeometryError, ShapeError
from jflow.geometry import (
    DEFAULT_COLLINEAR_TOL,
    RigidFit,
    apply_rigid_fit,
    rigid_fit,
    rigid_fit_or_raise,
    robust_rigid_fit,
)

N = 40


pytestmark = pytest.mark.usefixtures("float64")


seeds = st.integers(min_value=0, max_value=2**32 - 1)
property_settings = settings(max_examples=40, deadline=None)

_fit_jit = jax.jit(rigid_fit, static_argnames=("with_scale", "collinear_tol"))
_robust_jit = jax.jit(robust_rigid_fit, static_argnames=("iterations", "with_scale"))


def fit_jit(source, target, weights, *, with_scale=False) -> RigidFit:
    """The jitted fit, called the same way each time so each dtype and shape compiles once."""
    return _fit_jit(source, target, weights, with_scale=with_scale, collinear_tol=None)


def robust_jit(source, target, weights=None, *, trim_fraction=0.2) -> RigidFit:
    if weights is None:
        weights = np.ones(len(source), source.dtype)
    return _robust_jit(source, target, weights, trim_fraction=trim_fraction)


def sample_pose(rng: np.random.Generator) -> jaxlie.SE3:
    return jaxlie.SE3.exp(jnp.asarray(rng.normal(size=6) * np.array([2, 2, 2, 1, 1, 1.0])))


def sample_points(rng: np.random.Generator, n: int = N) -> np.ndarray:
    """A well-spread cloud: uniform in a random box of side 0.2 .. 1 m, somewhere near the origin."""
    return rng.uniform(-0.5, 0.5, (n, 3)) * rng.uniform(0.2, 1.0, 3) + rng.normal(size=3)


def apply(pose: jaxlie.SE3, points: np.ndarray) -> np.ndarray:
    rotation = np.asarray(pose.rotation().as_matrix())
    return points @ rotation.T + np.asarray(pose.translation())


def assert_pose_close(fit: RigidFit, expected: jaxlie.SE3, atol: float = 1e-6) -> None:
    got = fit.target_from_source
    np.testing.assert_allclose(
        got.rotation().as_matrix(), expected.rotation().as_matrix(), rtol=0, atol=atol
    )
    np.testing.assert_allclose(got.translation(), expected.translation(), rtol=0, atol=atol)


def assert_finite_identity(fit: RigidFit) -> None:
    for leaf in jax.tree.leaves(fit):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert not bool(fit.valid)
    np.testing.assert_array_equal(fit.target_from_source.parameters(), [1, 0, 0, 0, 0, 0, 0])
    assert float(fit.scale) == 1.0


def test_module_runs_in_float64():
    assert jnp.zeros(()).dtype == jnp.float64


@property_settings
@given(seed=seeds)
def test_recovers_a_random_pose_from_noise_free_points(seed):
    rng = np.random.default_rng(seed)
    source = sample_points(rng)
    pose = sample_pose(rng)
    for weights in (np.ones(N), rng.uniform(0.1, 2.0, N)):
        fit = fit_jit(source, apply(pose, source), weights)
        assert fit.residual.dtype == jnp.float64
        assert fit.target_from_source.parameters().dtype == jnp.float64
        assert bool(fit.valid)
        assert_pose_close(fit, pose)
        assert float(fit.scale) == 1.0
        assert float(fit.residual) < 1e-9
        np.testing.assert_allclose(apply_rigid_fit(fit, source), apply(pose, source), atol=1e-9)


@property_settings
@given(seed=seeds)
def test_zero_weight_outliers_do_not_change_the_fit(seed):
    rng = np.random.default_rng(seed)
    source = sample_points(rng)
    pose = sample_pose(rng)
    target = apply(pose, source)
    outliers = rng.choice(N, int(0.3 * N), replace=False)
    target[outliers] = rng.uniform(-100.0, 100.0, (len(outliers), 3))
    target[outliers[:2]] = np.nan  # masked points may hold anything, NaN included
    source[outliers[2]] = np.inf
    weights = np.ones(N)
    weights[outliers] = 0.0
    fit = fit_jit(source, target, weights)
    assert bool(fit.valid)
    assert_pose_close(fit, pose)
    assert float(fit.residual) < 1e-9
    # A boolean visibility mask works the same.
    assert_pose_close(fit_jit(source, target, weights > 0), pose)


@property_settings
@given(seed=seeds)
def test_with_scale_recovers_a_random_similarity(seed):
    rng = np.random.default_rng(seed)
    source = sample_points(rng)
    pose = sample_pose(rng)
    scale = rng.uniform(0.2, 5.0)
    target = apply(pose, scale * source)  # = scale R source + t
    fit = fit_jit(source, target, rng.uniform(0.1, 2.0, N), with_scale=True)
    assert bool(fit.valid)
    np.testing.assert_allclose(fit.scale, scale, rtol=1e-9)
    assert_pose_close(fit, pose)
    np.testing.assert_allclose(apply_rigid_fit(fit, source), target, atol=1e-9)
    # Without scale, the fit is a proper rigid one with a non-zero residual.
    rigid = fit_jit(source, target, np.ones(N))
    assert float(rigid.scale) == 1.0
    assert abs(scale - 1.0) < 1e-3 or float(rigid.residual) > 0.0


def objective(rotation: np.ndarray, source: np.ndarray, target: np.ndarray) -> float:
    """Least-squares cost of the best translation for a given rotation."""
    moved = source @ rotation.T
    return float(np.sum((target - target.mean(0) - (moved - moved.mean(0))) ** 2))


@property_settings
@given(seed=seeds, planar=st.booleans())
def test_mirrored_point_sets_give_the_best_proper_rotation(seed, planar):
    rng = np.random.default_rng(seed)
    source = sample_points(rng)
    if planar:
        source[:, 2] = 0.3
    mirror = np.diag(rng.permutation([-1.0, 1.0, 1.0]))
    target = apply(sample_pose(rng), source @ mirror)
    fit = fit_jit(source, target, np.ones(N))
    assert bool(fit.valid)
    rotation = np.asarray(fit.target_from_source.rotation().as_matrix())
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-9)
    # It is the best proper rotation: no nearby rotation does better.
    best = objective(rotation, source, target)
    for _ in range(10):
        nudge = np.asarray(jaxlie.SO3.exp(jnp.asarray(rng.normal(size=3) * 1e-3)).as_matrix())
        assert best <= objective(nudge @ rotation, source, target) + 1e-12


@pytest.mark.parametrize("count", [0, 1, 2])
def test_fewer_than_three_weighted_points_are_invalid(count):
    rng = np.random.default_rng(count)
    source = sample_points(rng)
    target = apply(sample_pose(rng), source)
    weights = np.zeros(N)
    weights[rng.choice(N, count, replace=False)] = 1.0
    assert_finite_identity(fit_jit(source, target, weights))
    with pytest.raises(GeometryError, match=f"only {count} points with non-zero weight"):
        rigid_fit_or_raise(source, target, weights)


@property_settings
@given(seed=seeds, kind=st.sampled_from(["collinear", "coincident", "near-collinear"]))
def test_collinear_or_coincident_points_are_invalid(seed, kind):
    rng = np.random.default_rng(seed)
    origin, direction = rng.normal(size=3), rng.normal(size=3)
    direction /= np.linalg.norm(direction)  # sigma_1 ~ 0.58 m
    if kind == "coincident":
        source = np.tile(origin, (N, 1))
    else:
        source = origin + rng.uniform(-1.0, 1.0, (N, 1)) * direction
        if kind == "near-collinear":  # sigma_2 / sigma_1 < 1e-4, under DEFAULT_COLLINEAR_TOL
            source += 1e-5 * rng.normal(size=(N, 3))
    target = apply(sample_pose(rng), source)
    for with_scale in (False, True):
        assert_finite_identity(fit_jit(source, target, np.ones(N), with_scale=with_scale))
    with pytest.raises(GeometryError, match="collinear"):
        rigid_fit_or_raise(source, target, np.ones(N))


def test_thin_point_sets_are_valid_down_to_the_collinear_tolerance():
    assert DEFAULT_COLLINEAR_TOL == 1e-3  # these point sets sit 10x either side of it
    rng = np.random.default_rng(6)
    source = rng.normal(size=(N, 3)) * np.array([1.0, 0.01, 0.01])  # sigma_2 / sigma_1 ~ 0.01
    pose = sample_pose(rng)
    fit = fit_jit(source, apply(pose, source), np.ones(N))
    assert bool(fit.valid)
    assert_pose_close(fit, pose)
    strict = _fit_jit(source, apply(pose, source), np.ones(N), collinear_tol=0.05)
    assert_finite_identity(strict)


def scalar_of_everything(fit: RigidFit):
    return (
        jnp.sum(fit.target_from_source.parameters() * jnp.arange(1.0, 8.0))
        + fit.scale
        + fit.residual
    )


@jax.jit
def grad_of_everything(source, target, weights):
    def loss(source, target, weights):
        return scalar_of_everything(rigid_fit(source, target, weights, with_scale=True))

    return jax.grad(loss, argnums=(0, 1, 2))(source, target, weights)


@pytest.mark.parametrize("case", ["two points", "collinear", "coincident", "no weights"])
def test_gradients_are_finite_for_degenerate_inputs(case):
    rng = np.random.default_rng(0)
    source = sample_points(rng)
    weights = np.ones(N)
    if case == "two points":
        weights[2:] = 0.0
    elif case == "collinear":
        source = rng.uniform(size=(N, 1)) * np.array([1.0, 2.0, 3.0])
    elif case == "coincident":
        source = np.ones((N, 3))
    else:
        weights[:] = 0.0
    target = source + 0.1 * rng.normal(size=source.shape)

    grads = grad_of_everything(source, target, weights)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))


@jax.jit
def fit_outputs(source, target):
    fit = rigid_fit(source, target, with_scale=True)
    # The squared residual: smooth at an exact fit, where the residual itself has a kink.
    return fit.target_from_source.parameters(), fit.scale, fit.residual**2


@pytest.mark.parametrize("cloud", ["random", "cube"])
def test_gradient_matches_finite_differences(cloud):
    rng = np.random.default_rng(1)
    # The cube is symmetric: its cross-covariance has three equal singular values, where the
    # SVD's own derivative is NaN.
    cube = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float) - 0.5
    source = cube if cloud == "cube" else sample_points(rng, 8)
    target = apply(sample_pose(rng), 1.3 * source)
    if cloud == "random":
        target += 0.01 * rng.normal(size=source.shape)
    check_grads(
        lambda target: fit_outputs(source, target),
        (target,),
        order=1,
        modes=("fwd", "rev"),
        atol=1e-6,
        rtol=1e-6,
        eps=1e-6,
    )


@property_settings
@given(
    points=hnp.arrays(
        np.float64,
        (6, 3),
        elements=st.floats(-10.0, 10.0, allow_nan=False) | st.sampled_from([np.nan, np.inf]),
    ),
    weights=hnp.arrays(np.float64, (6,), elements=st.sampled_from([0.0, 1.0, 0.5, -1.0, np.nan])),
)
def test_arbitrary_inputs_give_finite_fits_and_proper_rotations(points, weights):
    target = points[::-1] * 2.0 + 1.0
    fit = fit_jit(points, target, weights, with_scale=True)
    for leaf in jax.tree.leaves(fit):
        assert np.all(np.isfinite(np.asarray(leaf)))
    rotation = np.asarray(fit.target_from_source.rotation().as_matrix())
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-9)
    usable = (
        np.isfinite(points).all(-1) & np.isfinite(target).all(-1) & (np.nan_to_num(weights) > 0)
    )
    if usable.sum() < 3:
        assert not bool(fit.valid)


def test_vmap_fits_frame_zero_to_every_frame():
    rng = np.random.default_rng(2)
    points0 = sample_points(rng)
    poses = [sample_pose(rng) for _ in range(5)]
    flow = np.stack([apply(p, points0) for p in poses])  # [T, N, 3]
    visible = rng.random((5, N)) > 0.2
    weights = (visible[0] & visible).astype(np.float64)

    @jax.jit
    def fit_and_move(points0, flow, weights):
        fits = jax.vmap(rigid_fit, in_axes=(None, 0, 0))(points0, flow, weights)
        return fits, jax.vmap(apply_rigid_fit, in_axes=(0, None))(fits, points0)

    fits, moved = fit_and_move(flow[0], flow, weights)
    assert fits.valid.shape == (5,) and fits.target_from_source.parameters().shape == (5, 7)
    np.testing.assert_allclose(moved, flow, atol=1e-9)
    for t in range(5):
        single = fit_jit(flow[0], flow[t], weights[t])
        np.testing.assert_allclose(
            fits.target_from_source.parameters()[t],
            single.target_from_source.parameters(),
            atol=1e-12,
        )


@property_settings
@given(seed=seeds)
def test_robust_fit_ignores_unmasked_gross_outliers(seed):
    rng = np.random.default_rng(seed)
    source = sample_points(rng)
    pose = sample_pose(rng)
    target = apply(pose, source)
    outliers = rng.choice(N, int(0.15 * N), replace=False)
    offsets = rng.normal(size=(len(outliers), 3))
    offsets *= rng.uniform(0.5, 10.0, (len(outliers), 1)) / np.linalg.norm(
        offsets, axis=1, keepdims=True
    )
    target[outliers] += offsets
    fit = robust_jit(source, target)
    assert bool(fit.valid)
    assert_pose_close(fit, pose)
    assert float(fit.residual) < 1e-9
    # The plain fit is pulled away by the same outliers.
    assert float(fit_jit(source, target, np.ones(N)).residual) > 1e-3


def test_robust_fit_without_outliers_equals_the_plain_fit():
    rng = np.random.default_rng(3)
    source = sample_points(rng)
    target = apply(sample_pose(rng), source) + 1e-3 * rng.normal(size=(N, 3))
    plain = fit_jit(source, target, np.ones(N))
    robust = robust_jit(source, target, trim_fraction=0.0)
    np.testing.assert_allclose(
        robust.target_from_source.parameters(), plain.target_from_source.parameters(), atol=1e-12
    )


def test_robust_fit_keeps_the_last_valid_fit_when_trimming_leaves_too_few_points():
    rng = np.random.default_rng(4)
    source = sample_points(rng)
    pose = sample_pose(rng)
    weights = np.zeros(N)
    weights[:4] = 1.0  # trimming half leaves 2 points: too few for a fit
    fit = robust_jit(source, apply(pose, source), weights, trim_fraction=0.5)
    assert bool(fit.valid)
    assert_pose_close(fit, pose)


def test_bad_arguments_raise():
    source = np.zeros((N, 3))
    with pytest.raises(ShapeError):
        rigid_fit(source, np.zeros((N, 2)))
    with pytest.raises(ShapeError):
        rigid_fit(np.zeros((2, N, 3)), np.zeros((2, N, 3)))
    with pytest.raises(ShapeError):
        rigid_fit(source, source, np.ones(N + 1))
    with pytest.raises(ConfigError):
        robust_rigid_fit(source, source, trim_fraction=1.0)
    with pytest.raises(ConfigError):
        robust_rigid_fit(source, source, iterations=-1)
    with pytest.raises(ConfigError, match="under jit"):
        jax.jit(rigid_fit_or_raise)(source, source)


@pytest.mark.parametrize("x64", [False, True])
def test_float32_inputs_stay_float32(x64):
    with jax.enable_x64(x64):
        rng = np.random.default_rng(5)
        source = sample_points(rng).astype(np.float32)
        pose = sample_pose(rng)
        target = apply(pose, source).astype(np.float32)
        fits = [fit_jit(source, target, np.ones(N, np.float32), with_scale=True)]
        if x64:  # the trimmed fit, once
            fits.append(robust_jit(source, target))
        for fit in fits:
            for leaf in jax.tree.leaves((fit.target_from_source, fit.scale, fit.residual)):
                assert leaf.dtype == jnp.float32
            assert bool(fit.valid)
            assert apply_rigid_fit(fit, source).dtype == jnp.float32
            assert_pose_close(fit, pose, atol=1e-4)
