"""The joint-space optimiser (MJX kinematics): structure of its normal equations, kitchen
ground-truth flows within the joint limits, the plan entry point and bad input."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import jaxlie
import numpy as np
import pytest

from jflow.errors import ConfigError, GeometryError, ShapeError
from jflow.planning.grasps import GraspCandidates
from jflow.planning.joint_trajectory import (
    JointCostWeights,
    JointTrajectoryConfig,
    forward_kinematics_numpy,
    joint_normal_equations,
    joint_residuals,
    make_joint_problem,
    optimize_joint_trajectory,
)
from jflow.planning.kitchen import RIGID_TASKS, kitchen_case
from jflow.planning.plan import plan_actions, write_plan
from jflow.planning.reachability import IKConfig
from jflow.planning.synthetic import synthetic_rigid_flow
from jflow.planning.trajectory import keypoint_errors, make_problem
from jflow.robots import panda

Q0 = np.array([0.8, -0.5, -0.3, -2.2, 0.2, 1.9, 0.6])  # an in-limit arm configuration


def test_normal_equations_match_the_residuals():
    # J^T J and J^T r assembled from the analytic per-step blocks (joint axes and anchors,
    # manipulator Hessian: checked against the C API in test_robots_kinematics.py) and the
    # constant smoothness band, against central differences of the residuals along random
    # directions v: |J v|^2 = v^T (J^T J) v and r . J v = (J^T r) . v, in float64. One joint
    # is pushed past its limit and the workspace top is tight, so that every residual block
    # is active. (Central differences rather than jax.jacfwd through MJX: half the compile.)
    flow, _, _ = synthetic_rigid_flow("hinge", num_frames=4, num_points=16, seed=2)
    cfg = JointTrajectoryConfig(num_keypoints=6, manipulability_reference=0.2)
    with jax.enable_x64(True):
        f64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)  # noqa: E731
        problem = f64(make_joint_problem(flow, Q0, cfg))
        top = float(problem.ee_start.translation()[2]) + 0.02
        upper = jnp.array([1.2, 1.6, top])
        problem = dataclasses.replace(
            problem, bounds=dataclasses.replace(problem.bounds, upper=upper)
        )
        # Weights that give every block a visible share of J^T J (the defaults leave
        # smoothness and manipulability below 1% of it).
        weights = f64(JointCostWeights.default(smoothness=1000.0, manipulability=10.0))
        rng = np.random.default_rng(0)
        qs = jnp.asarray(Q0 + rng.normal(scale=0.15, size=(3, 7)))
        qs = qs.at[0, 3].set(panda.JOINT_UPPER[3] + 0.02).at[1, 2].add(0.3)
        residuals = jax.jit(lambda q: joint_residuals(q, problem, weights, cfg))
        normal = jax.jit(lambda q: joint_normal_equations(q, problem, weights, cfg))(qs)
        r = np.asarray(residuals(qs))
        steps = r[: 3 * 39].reshape(3, 39)  # per step: 18 task, 14 limit, 6 box, 1 manipulability
        assert steps[0, 18:32].max() > 0 and steps[:, 32:38].max() > 0 and steps[:, 38].min() > 0
        np.testing.assert_allclose(float(normal.cost), 0.5 * r @ r, rtol=1e-9)
        jtj, jtr = np.asarray(normal.jtj), np.asarray(normal.jtr)
        h = 1e-6
        for v in rng.normal(size=(4, 21)):
            v /= np.linalg.norm(v)
            dq = jnp.asarray(h * v.reshape(3, 7))
            jv = (np.asarray(residuals(qs + dq)) - np.asarray(residuals(qs - dq))) / (2 * h)
            np.testing.assert_allclose(v @ jtj @ v, jv @ jv, rtol=1e-5)
            # (|v| = 1: the scale of J^T r . v is |J^T r|; the manipulability gradient's 1e-9
            # regularisation of J J^T leaves about 1e-6 of it.)
            np.testing.assert_allclose(jtr @ v, r @ jv, atol=1e-5 * np.linalg.norm(jtr))


@pytest.fixture(scope="module")
def kitchen():
    cases = [kitchen_case(task, frames=16, resolution=64) for task in RIGID_TASKS]
    return cases, [optimize_joint_trajectory(c.flow, c.q_start) for c in cases]


def test_joint_solution_tracks_kitchen_flows_within_the_joint_limits(kitchen):
    cases, results = kitchen
    report = {}
    for case, res in zip(cases, results, strict=True):
        err = np.asarray(res.keypoint_error)
        margin = np.asarray(res.limit_margin)
        report[case.task_id] = (round(float(err.mean()) * 1e3, 2), round(float(margin.min()), 3))
        # Hard limits hold at every step; the soft limit term keeps steps >= 1 about
        # limit_margin (0.05 rad) inside them.
        assert margin.min() >= 0.0, case.task_id
        assert margin[1:].min() > 0.04, case.task_id
        q = np.asarray(res.qpos)
        np.testing.assert_allclose(q[0], case.q_start, atol=1e-6)
        assert np.abs(np.diff(q, axis=0)).max() < 0.5  # no IK branch switches
    print("joint-space mean keypoint error (mm), min limit margin (rad):", report)
    # Measured: slide 0.44, hinge 0.77, kettle 0.44 mm. The microwave handle is at the edge
    # of the arm's reach (the scripted demo holds joint 2 at its limit): 23 mm.
    for task in ("open_slide_cabinet", "open_hinge_cabinet", "move_kettle_to_top_left_burner"):
        assert report[task][0] < 5.0, report


def test_joint_solution_beats_the_scripted_demo_arm(kitchen):
    # The robot demos' own arm trajectories (per-frame IK to the handle, 2 cm tolerance)
    # carried as a rigid grasp, against the optimiser's, on the same keypoints.
    cases, results = kitchen
    for case, res in zip(cases, results, strict=True):
        if case.demo_qpos is None:
            continue
        demo = jnp.asarray(np.stack([forward_kinematics_numpy(q) for q in case.demo_qpos]))
        problem = make_problem(case.flow, jaxlie.SE3.from_matrix(demo[0]))
        demo_err = float(jnp.mean(keypoint_errors(jaxlie.SE3.from_matrix(demo), problem)))
        ours = float(np.mean(res.keypoint_error))
        assert ours < 0.5 * demo_err, (case.task_id, ours, demo_err)


def test_plan_actions_optimises_the_joint_trajectory(kitchen, tmp_path):
    cases, _ = kitchen
    case = cases[RIGID_TASKS.index("open_slide_cabinet")]
    grasps = GraspCandidates(case.grasp[None], np.array([0.04]), np.array([1.0]))
    result = plan_actions([case.flow], case.instruction, grasps=grasps, ik_config=IKConfig())
    assert result.ok and result.reason == "plan found", result.reason
    assert result.joint_trajectory.shape == (16, 7) and result.joint_reachable.all()
    assert float(result.joint_keypoint_error.mean()) < 0.005
    assert float(result.joint_limit_margin.min()) > 0.0
    write_plan(result, tmp_path)
    saved = np.load(tmp_path / "plan.npz")
    assert saved["joint_keypoint_error"].shape == (16,)
    summary = json.loads((tmp_path / "plan.json").read_text())
    assert summary["joint_min_limit_margin_rad"] > 0 and summary["joint_steps_reachable"] == 16


def test_bad_start_configurations_and_config():
    flow, _, _ = synthetic_rigid_flow("slide", num_frames=4, num_points=16)
    with pytest.raises(ShapeError, match="7 finite"):
        make_joint_problem(flow, Q0[:6])
    with pytest.raises(ShapeError, match="7 finite"):
        make_joint_problem(flow, np.where(np.arange(7) == 2, np.nan, Q0))
    outside = Q0.copy()
    outside[3] = panda.JOINT_UPPER[3] + 0.1
    with pytest.raises(GeometryError, match=r"outside the Panda's joint limits at joints \[3\]"):
        make_joint_problem(flow, outside)
    static = dataclasses.replace(flow, points=np.broadcast_to(flow.points[:1], flow.points.shape))
    with pytest.raises(GeometryError, match="static"):
        make_joint_problem(static, Q0)
    with pytest.raises(ConfigError, match="limit_margin"):
        JointTrajectoryConfig(limit_margin=-0.1)
