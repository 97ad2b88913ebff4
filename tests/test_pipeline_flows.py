"""The pipeline's flow transforms, its statistics and its bad-input errors (no simulator).

Wilson intervals against hand-computed values; the rigid-only baseline reproduces a rigid
motion's last frame and moves the points along the hinge's arc in between; the 2D-flow baseline
keeps each point's camera depth at its frame-0 value and its pixels unchanged."""

import jax.numpy as jnp
import jaxlie
import numpy as np
import pytest

from jflow.cli import main
from jflow.errors import ConfigError, DataError, UnknownNameError
from jflow.flow.records import ObjectFlow
from jflow.geometry.camera import PinholeIntrinsics, project
from jflow.pipeline.agent import stretch_time
from jflow.pipeline.evaluation import EvalKitchenConfig, markdown_table, summarize, wilson_interval
from jflow.pipeline.methods import (
    depth_frozen_flow,
    interpolate_motion,
    make_method,
    parse_methods,
    rigid_only_flow,
)

K = PinholeIntrinsics.from_fovy(60.0, 64, 64)
# A camera 2 m in front of the hinge, looking along world +y (OpenCV: x right, y down, z forward).
CAMERA = jaxlie.SE3.from_rotation_and_translation(
    jaxlie.SO3.from_matrix(jnp.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])),
    jnp.array([0.0, -2.0, 1.0]),
)
HINGE = np.array([-0.2, 0.0, 1.0])  # a vertical hinge axis through this point


def _project(points_world):
    m = np.asarray(CAMERA.as_matrix(), np.float64)
    cam = (points_world - m[:3, 3]) @ m[:3, :3]
    pix, z = project(jnp.asarray(cam, jnp.float32), K)
    return np.asarray(pix), np.asarray(z)


def _door_flow(frames=8, angle=-0.8):
    """A 'door': 40 points on a 0.4 x 0.3 m plate swinging about HINGE with a minimum-jerk
    (non-uniform) angle profile, all visible."""
    rng = np.random.default_rng(0)
    local = np.stack(
        [rng.uniform(0.05, 0.4, 40), rng.uniform(-0.02, 0.0, 40), rng.uniform(-0.15, 0.15, 40)], 1
    )
    t = np.linspace(0, 1, frames)
    phase = 10 * t**3 - 15 * t**4 + 6 * t**5
    pts = np.zeros((frames, 40, 3))
    for i, a in enumerate(angle * phase):
        c, s = np.cos(a), np.sin(a)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        pts[i] = local @ rot.T + HINGE
    pix, z = _project(pts)
    return ObjectFlow(
        points=pts.astype(np.float32),
        visible=np.ones((frames, 40), bool),
        tracks=pix.astype(np.float32),
        depth=z.astype(np.float32),
        frame="world",
    )


def test_wilson_interval_matches_hand_computed_values():
    # p = 0.8, n = 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71674, half
    # 1.41602 * sqrt(0.016 + 0.009604) = 0.22658 -> [0.4902, 0.9433] (the textbook values).
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=3e-4) and hi == pytest.approx(0.9433, abs=3e-4)
    # 20/20: centre 1.09604 / 1.19208 = 0.91944, half 1.64419 * 0.049 = 0.08056 -> [0.8389, 1].
    lo, hi = wilson_interval(20, 20)
    assert lo == pytest.approx(0.8389, abs=3e-4) and hi == 1.0
    # 0/5: centre 0.38416 / 1.76832 = 0.21724 = half -> [0, 0.4345].
    lo, hi = wilson_interval(0, 5)
    assert lo == 0.0 and hi == pytest.approx(0.4345, abs=3e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ConfigError, match="successes <= trials"):
        wilson_interval(3, 2)


def test_summary_and_markdown_count_successes_and_failure_stages():
    rows = [
        {"task_id": "a", "method": "oracle", "seed": s, "success": s < 3, "steps": 100 + s,
         "failure_stage": "" if s < 3 else "grasp"}
        for s in range(4)
    ]  # fmt: skip
    summary = summarize(rows, ["a"], ["oracle"])["a"]["oracle"]
    assert (summary["successes"], summary["episodes"], summary["rate"]) == (3, 4, 0.75)
    assert summary["failures"] == {"grasp": 1}
    assert summary["median_steps_to_success"] == 101.0
    lo, hi = summary["wilson95"]
    assert (lo, hi) == pytest.approx(wilson_interval(3, 4))
    text = markdown_table(
        {"tasks": ["a"], "methods": ["oracle"], "summary": {"a": {"oracle": summary}},
         "episodes_per_task": 4, "seeds": [0, 1, 2, 3]}
    )  # fmt: skip
    assert f"| `a` | 3/4 (75%, [{100 * lo:.0f}, {100 * hi:.0f}]) |" in text
    assert "| `a` | oracle | grasp 1 |" in text


def test_rigid_only_reproduces_the_last_frame_and_follows_the_hinge_arc():
    flow = _door_flow()
    rigid = rigid_only_flow(flow, K, CAMERA)
    pts, gt = np.asarray(rigid.points), np.asarray(flow.points)
    np.testing.assert_allclose(pts[0], gt[0], atol=1e-5)
    np.testing.assert_allclose(pts[-1], gt[-1], atol=1e-4)
    # In between: a constant-speed rotation about the same hinge (radius and height kept),
    # not the demonstration's minimum-jerk timing.
    radius = np.linalg.norm((gt[0] - HINGE)[:, :2], axis=1)
    for t in range(8):
        np.testing.assert_allclose(
            np.linalg.norm((pts[t] - HINGE)[:, :2], axis=1), radius, atol=1e-4
        )
        np.testing.assert_allclose(pts[t, :, 2], gt[0, :, 2], atol=1e-4)
    angle = np.arctan2(*(pts[4, 0] - HINGE)[[1, 0]]) - np.arctan2(*(pts[0, 0] - HINGE)[[1, 0]])
    assert angle == pytest.approx(-0.8 * 4 / 7, abs=1e-3)
    # Pixels and depth are the projection of the moved points.
    pix, z = _project(pts)
    np.testing.assert_allclose(rigid.tracks, pix, atol=1e-3)
    np.testing.assert_allclose(rigid.depth, z, atol=1e-5)
    assert np.asarray(rigid.visible).all()


def test_interpolated_motion_ends_at_the_motion():
    motion = jaxlie.SE3.from_rotation_and_translation(
        jaxlie.SO3.from_z_radians(0.6), jnp.array([0.1, -0.2, 0.3])
    )
    poses = interpolate_motion(motion, 5)
    np.testing.assert_allclose(poses.wxyz_xyz[0], [1, 0, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(poses.as_matrix()[-1]), np.asarray(motion.as_matrix()), atol=1e-5
    )
    half = jaxlie.SE3(poses.wxyz_xyz[2])
    np.testing.assert_allclose(
        np.asarray((half @ half).as_matrix()), np.asarray(motion.as_matrix()), atol=1e-5
    )


def test_flow_2d_keeps_pixels_and_freezes_depth():
    flow = _door_flow()  # the door swings towards the camera: depth changes by ~0.2 m
    depth = np.asarray(flow.depth)
    assert np.abs(depth[-1] - depth[0]).max() > 0.1
    flat = depth_frozen_flow(flow, K, CAMERA)
    np.testing.assert_allclose(flat.tracks, flow.tracks)
    np.testing.assert_allclose(flat.depth, np.broadcast_to(depth[:1], depth.shape))
    pix, z = _project(np.asarray(flat.points, np.float64))
    np.testing.assert_allclose(z, np.broadcast_to(depth[:1], depth.shape), atol=1e-5)
    np.testing.assert_allclose(pix, flow.tracks, atol=1e-3)
    np.testing.assert_allclose(flat.points[0], flow.points[0], atol=1e-5)
    # The lifted motion is the image-plane motion only: smaller than the 3D motion.
    moved_3d = np.linalg.norm(np.asarray(flow.points[-1] - flow.points[0]), axis=1)
    moved_2d = np.linalg.norm(np.asarray(flat.points[-1] - flat.points[0]), axis=1)
    assert moved_2d.mean() < 0.8 * moved_3d.mean()


def test_stretch_time_resamples_the_first_part_of_a_flow():
    flow = _door_flow(frames=5)
    half = stretch_time(flow, 0.5)  # frames 0, 0.5, 1, 1.5, 2 of the original
    np.testing.assert_allclose(half.points[2], flow.points[1], atol=1e-6)
    np.testing.assert_allclose(half.points[1], 0.5 * (flow.points[0] + flow.points[1]), atol=1e-6)
    np.testing.assert_allclose(half.points[4], flow.points[2], atol=1e-6)
    assert stretch_time(flow, 1.0) is flow


def test_bad_input_names_the_problem(tmp_path, capsys):
    with pytest.raises(UnknownNameError, match="no_plan_check, flow_2d, rigid_only, oracle"):
        parse_methods(["ours", "magic"])
    with pytest.raises(UnknownNameError, match="ours"):
        make_method("magic")
    with pytest.raises(ConfigError, match="--model-run"):
        make_method("ours")
    with pytest.raises(ConfigError, match="--model-run"):
        EvalKitchenConfig(methods=("ours", "oracle")).validate()
    with pytest.raises(ConfigError, match="turn_on_light.*no grasp"):
        EvalKitchenConfig(tasks=("turn_on_light",), methods=("oracle",)).validate()
    with pytest.raises(ConfigError, match="plan_check_max_residual"):
        EvalKitchenConfig(methods=("oracle",), plan_check_max_residual=0.0).validate()
    with pytest.raises(UnknownNameError, match="open_microwave"):
        EvalKitchenConfig(tasks=("open_the_fridge",), methods=("oracle",)).validate()
    assert main(["eval-kitchen", "--methods", "flow_2d", "--out", str(tmp_path)]) == 2
    assert "--model-run" in capsys.readouterr().err
    assert main(["eval-kitchen", "--methods", "dance", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "dance" in err and "rigid_only" in err
    from jflow.pipeline.predictor import FlowPredictor

    with pytest.raises(DataError, match="does not exist"):
        FlowPredictor(tmp_path / "no_run")
    assert not list(tmp_path.iterdir())  # nothing written on bad input
