"""The flow data model: ObjectFlow, FlowClip, grid layout and normalisation."""

import jax
import jax.numpy as jnp
import jaxlie
import numpy as np
import pytest

from jflow.errors import DataError, ShapeError
from jflow.flow import (
    FlowClip,
    FlowStats,
    ObjectFlow,
    denormalize_grid,
    flow_to_grid,
    grid_order,
    grid_queries_in_box,
    grid_to_flow,
    normalize_grid,
    to_grid_order,
)
from jflow.geometry.camera import PinholeIntrinsics, project, unproject
from jflow.geometry.transforms import transform_points


def make_flow(t=5, grid=(4, 4), seed=0) -> tuple[ObjectFlow, PinholeIntrinsics]:
    """A plane of points on a grid, moved by a random rigid motion, seen by a camera."""
    rng = np.random.default_rng(seed)
    k = PinholeIntrinsics.from_fovy(50.0, 64, 48)
    pix0 = grid_queries_in_box(np.array([10.0, 8.0, 50.0, 40.0]), grid)
    depth0 = 1.0 + 0.1 * rng.random(pix0.shape[0])
    pts0 = np.asarray(unproject(pix0, depth0, k))
    pts, vis = [], []
    for i in range(t):
        motion = jaxlie.SE3.exp(jnp.asarray(rng.normal(size=6) * 0.02 * i))
        pts.append(np.asarray(transform_points(motion, pts0)))
        vis.append(rng.random(pix0.shape[0]) > 0.2)
    pts = np.stack(pts).astype(np.float32)
    tracks, depth = project(pts, k)
    flow = ObjectFlow(
        points=pts, visible=np.stack(vis), tracks=np.asarray(tracks), depth=np.asarray(depth)
    )
    return flow, k


def test_grid_round_trip_recovers_points():
    flow, k = make_flow()
    grid = flow_to_grid(flow, (4, 4))
    assert grid.shape == (5, 4, 4, 4)
    back = grid_to_flow(grid, k)
    np.testing.assert_allclose(back.points, flow.points, atol=1e-5)
    np.testing.assert_array_equal(back.visible, flow.visible)
    # Cell (1, 2) holds point 1 * 4 + 2.
    np.testing.assert_allclose(grid[3, 1, 2, :2], flow.tracks[3, 6])


def test_grid_order_sorts_shuffled_grid_back_to_row_major():
    flow, _ = make_flow()
    perm = np.random.default_rng(3).permutation(16)
    shuffled = flow.take_points(perm)
    ordered = to_grid_order(shuffled, (4, 4))
    np.testing.assert_allclose(ordered.tracks, flow.tracks)
    order = grid_order(np.asarray(flow.tracks[0]), (4, 4))
    np.testing.assert_array_equal(order, np.arange(16))


def test_grid_size_mismatch_is_an_error():
    flow, _ = make_flow()
    with pytest.raises(ShapeError, match="4x5 grid holds 20 points, but the flow has 16"):
        flow_to_grid(flow, (4, 5))


def test_normalisation_round_trip_and_statistics():
    flows = [make_flow(seed=s)[0] for s in range(3)]
    grids = [np.asarray(flow_to_grid(f, (4, 4))) for f in flows]
    stats = FlowStats.from_grids(grids)
    stacked = np.concatenate([g[g[..., 3] > 0.5][:, :3] for g in grids])
    np.testing.assert_allclose(stats.mean, stacked.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std, stacked.std(0), rtol=1e-5)
    normed = normalize_grid(grids[0], stats)
    vis = grids[0][..., 3] > 0.5
    assert set(np.unique(np.asarray(normed[..., 3]))) <= {-1.0, 1.0}
    back = denormalize_grid(normed, stats)
    np.testing.assert_allclose(back, grids[0], atol=1e-4)
    assert abs(float(np.asarray(normed)[..., :3][vis].mean())) < 1.5
    assert FlowStats.from_dict(stats.to_dict()) == stats


def test_stats_refuse_empty_and_nonfinite():
    empty = np.zeros((2, 4, 4, 4), np.float32)
    with pytest.raises(DataError, match="0 visible points"):
        FlowStats.from_grids([empty])
    with pytest.raises(DataError, match="finite"):
        FlowStats(mean=(0.0, float("nan"), 0.0), std=(1.0, 1.0, 1.0))


def test_object_flow_is_a_pytree_and_validates():
    flow, k = make_flow()
    leaves = jax.tree_util.tree_leaves(flow)
    assert len(leaves) == 4
    doubled = jax.jit(lambda f: jax.tree_util.tree_map(lambda x: x * 2, f))(
        ObjectFlow(
            points=flow.points,
            visible=flow.visible.astype(np.float32),
            tracks=flow.tracks,
            depth=flow.depth,
        )
    )
    np.testing.assert_allclose(doubled.points, 2 * flow.points)
    flow.validate()
    bad = ObjectFlow(
        points=flow.points, visible=flow.visible[:, :3], tracks=flow.tracks, depth=flow.depth
    )
    with pytest.raises(ShapeError, match=r"visible must have shape \(5, 16\)"):
        bad.validate()
    points = np.array(flow.points)
    points[0, 0, 0] = np.nan
    nan = ObjectFlow(points=points, visible=flow.visible, tracks=flow.tracks, depth=flow.depth)
    with pytest.raises(DataError, match="points contains NaN"):
        nan.validate()


def test_world_camera_round_trip():
    flow, _ = make_flow()
    pose = jaxlie.SE3.exp(jnp.array([0.3, -0.2, 1.0, 0.1, 0.4, -0.3]))
    world = flow.to_world(pose)
    assert world.frame == "world"
    back = world.to_camera(pose)
    np.testing.assert_allclose(back.points, flow.points, atol=1e-5)


def test_flow_clip_arrays_round_trip():
    flow, k = make_flow()
    rng = np.random.default_rng(0)
    clip = FlowClip(
        rgb=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
        depth=rng.random((48, 64)).astype(np.float32),
        intrinsics=k,
        camera_pose=jaxlie.SE3.exp(jnp.array([0.1, 0.2, 0.3, 0.0, 0.1, 0.0])),
        object_mask=rng.random((48, 64)) > 0.5,
        instruction="open the microwave",
        task_id="microwave_open",
        flow=flow,
        video=rng.integers(0, 255, (5, 48, 64, 3), dtype=np.uint8),
    ).validate()
    back = FlowClip.from_arrays(clip.to_arrays()).validate()
    assert back.instruction == "open the microwave" and back.task_id == "microwave_open"
    np.testing.assert_allclose(back.camera_pose.wxyz_xyz, clip.camera_pose.wxyz_xyz, atol=1e-6)
    np.testing.assert_allclose(back.intrinsics.as_matrix(), k.as_matrix(), rtol=1e-6)
    np.testing.assert_array_equal(back.video, clip.video)
    assert back.depth_video is None
    arrays = clip.to_arrays()
    del arrays["flow_points"], arrays["rgb"]
    with pytest.raises(DataError, match="missing the fields: rgb, flow_points"):
        FlowClip.from_arrays(arrays)
