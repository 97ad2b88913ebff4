"""Grasp candidates (antipodal, AnyGrasp format), reachability filtering and the plan entry."""

import json

import jax.numpy as jnp
import jaxlie
import numpy as np
import pytest

from jflow.errors import GeometryError
from jflow.geometry.camera import PinholeIntrinsics
from jflow.planning.grasps import (
    GraspCandidates,
    antipodal_grasps,
    filter_reachable_grasps,
    from_anygrasp,
    normals_from_depth,
    object_motions,
    surface_grasps,
)
from jflow.planning.plan import plan_actions, write_plan
from jflow.planning.reachability import IKConfig, panda_reachability
from jflow.planning.synthetic import synthetic_rigid_flow
from jflow.planning.trajectory import TrajectoryConfig
from jflow.robots import panda

IK = IKConfig()  # the same config as test_planning_reachability: one shared compilation


def test_normals_from_depth_of_a_tilted_plane():
    k = PinholeIntrinsics.from_fovy(60.0, 20, 16)
    # Plane n . p = 1 with n = (0, -0.5, -1) normalised: depth z = 1 / (n . ray).
    n = np.array([0.0, -0.5, -1.0]) / np.linalg.norm([0.0, -0.5, -1.0])
    ys, xs = np.mgrid[0:16, 0:20] + 0.5
    rays = np.stack([(xs - 10) / float(k.fx), (ys - 8) / float(k.fy), np.ones_like(xs)], -1)
    depth = (-1.0 / (rays @ n)).astype(np.float32)
    _, normals = normals_from_depth(depth, k)
    inner = normals[1:-1, 1:-1].reshape(-1, 3)
    np.testing.assert_allclose(inner, np.broadcast_to(n, inner.shape), atol=1e-3)
    assert np.all(normals[0] == 0)  # border pixels lack neighbours


def _box_cloud(half, count=1500, seed=0):
    rng = np.random.default_rng(seed)
    pts, nrm = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            p = rng.uniform(-half, half, size=(count // 6, 3))
            p[:, axis] = sign * half[axis]
            n = np.zeros_like(p)
            n[:, axis] = sign
            pts.append(p)
            nrm.append(n)
    return np.concatenate(pts), np.concatenate(nrm)


def test_antipodal_grasps_close_across_the_narrow_side():
    half = np.array([0.1, 0.02, 0.06])  # only the 4 cm side fits the 8 cm gripper
    pts, nrm = _box_cloud(half)
    g = antipodal_grasps(pts + [0.0, 0.5, 2.0], nrm, num_candidates=16)
    assert len(g) == 16
    np.testing.assert_allclose(g.widths, 0.04, atol=0.005)
    rot = g.poses[:, :3, :3]
    np.testing.assert_allclose(
        rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-9
    )
    assert np.all(np.abs(rot[:, 1, 1]) > np.cos(np.radians(20)))  # EE y (closing) ~ world y
    assert np.all(rot[:, 2, 2] < -0.9)  # approach (EE z) straight down, the default hint
    assert np.all(g.scores >= np.cos(np.radians(20)))
    with pytest.raises(GeometryError, match="no antipodal pair"):
        antipodal_grasps(*_box_cloud(np.array([0.1, 0.1, 0.1])))


def test_surface_grasps_approach_a_front_face_head_on():
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(-0.1, 0.1, 400), np.full(400, 0.5), rng.uniform(1.9, 2.1, 400)], 1)
    nrm = np.broadcast_to([0.0, -1.0, 0.0], pts.shape)  # the face looks back at the robot
    g = surface_grasps(pts, nrm, num_candidates=8)
    assert len(g) == 8
    np.testing.assert_allclose(
        g.poses[:, :3, 2], np.broadcast_to([0.0, 1.0, 0.0], (8, 3)), atol=1e-9
    )
    np.testing.assert_allclose(np.abs(g.poses[:, 2, 1]), 1.0, atol=1e-9)  # closing vertical
    np.testing.assert_allclose(g.poses[:, 1, 3], 0.52)  # 2 cm behind the surface
    assert np.all(np.linalg.det(g.poses[:, :3, :3]) > 0.999)


def test_anygrasp_format_conversion():
    # AnyGrasp: x = approach, y = closing. Approach along camera z, closing along camera x.
    r = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])[None]  # columns x, y, z
    cam = jaxlie.SE3.from_translation(jnp.array([0.0, 0.0, 1.0]))
    g = from_anygrasp(r, np.array([[0.1, 0.0, 0.5]]), np.array([0.05]), np.array([0.9]), cam)
    np.testing.assert_allclose(g.poses[0, :3, 2], r[0, :, 0])  # EE z = AnyGrasp x
    np.testing.assert_allclose(g.poses[0, :3, 1], r[0, :, 1])  # EE y = AnyGrasp y
    np.testing.assert_allclose(g.poses[0, :3, 3], [0.1, 0.0, 1.5])
    assert np.linalg.det(g.poses[0, :3, :3]) == pytest.approx(1.0)


def _candidates(grasp):
    near = np.asarray(grasp.as_matrix(), np.float64)
    far = near.copy()
    far[:3, 3] = panda.shoulder_position() + [0.0, 1.6, 0.0]  # 1.6 m away: out of reach
    return GraspCandidates(np.stack([far, near]), np.array([0.04, 0.04]), np.array([0.9, 0.5]))


def test_reachable_grasps_at_start_middle_and_end():
    flow, grasp, _ = synthetic_rigid_flow("lift_carry", num_frames=8, num_points=40)
    reach = filter_reachable_grasps(
        _candidates(grasp), object_motions(flow), panda_reachability(IK)
    )
    assert reach.steps == (0, 4, 7)
    np.testing.assert_array_equal(reach.reachable, [[False] * 3, [True] * 3])
    assert reach.best() == 1  # the higher-scored candidate is out of reach
    only_far = GraspCandidates(_candidates(grasp).poses[:1], np.array([0.04]), np.array([1.0]))
    out = filter_reachable_grasps(only_far, object_motions(flow), panda_reachability(IK))
    with pytest.raises(GeometryError, match="no reachable grasp"):
        out.best()


def test_plan_actions_end_to_end_and_outputs(tmp_path):
    flow, grasp, motions = synthetic_rigid_flow("hinge", num_frames=8, num_points=40, occlusion=0.1)
    result = plan_actions(
        [flow],
        "open the cabinet door",
        grasps=_candidates(grasp),
        ik_config=IK,
        trajectory_config=TrajectoryConfig(num_keypoints=12),
        joint_space=False,  # per-step IK here; the joint-space path: test_planning_joint.py
    )
    assert result.ok, result.reason
    assert float(result.keypoint_error.mean()) < 0.005
    q = result.joint_trajectory
    assert q.shape == (8, 7)
    assert np.all(q >= panda.JOINT_LOWER - 1e-6) and np.all(q <= panda.JOINT_UPPER + 1e-6)
    assert result.joint_reachable.mean() >= 0.75
    paths = write_plan(result, tmp_path)
    saved = np.load(tmp_path / "plan.npz")
    assert saved["ee_poses"].shape == (8, 7) and saved["joint_trajectory"].shape == (8, 7)
    assert json.loads((tmp_path / "plan.json").read_text())["ok"] is True
    assert len(paths) == 2
    # No reachable grasp: a result that says why, and plan.json records it.
    far_only = GraspCandidates(_candidates(grasp).poses[:1], np.array([0.04]), np.array([1.0]))
    none = plan_actions([flow], "open the cabinet door", grasps=far_only, ik_config=IK)
    assert not none.ok and "no reachable grasp" in none.reason
    write_plan(none, tmp_path / "none")
    assert (
        "no reachable grasp" in json.loads((tmp_path / "none" / "plan.json").read_text())["reason"]
    )
    # A flow that goes through the table: rejected by the plan check.
    sunk = np.array(flow.points)
    sunk[:, :, 2] -= np.linspace(0.0, 0.8, 8)[:, None]
    import dataclasses

    bad = plan_actions(
        [dataclasses.replace(flow, points=sunk.astype(np.float32))],
        "open the door",
        grasps=far_only,
        ik_config=IK,
    )
    assert not bad.ok and "table" in bad.reason
