"""The SE(3) trajectory optimiser on synthetic rigid flows (door hinge, slide, lift-and-carry)."""

import dataclasses

import jax
import jax.numpy as jnp
import jaxlie
import numpy as np
import pytest

from jflow.errors import ConfigError, DataError, GeometryError
from jflow.flow.records import ObjectFlow
from jflow.planning.solver import SolverConfig
from jflow.planning.synthetic import MOTIONS, synthetic_rigid_flow
from jflow.planning.trajectory import (
    CostWeights,
    TrajectoryConfig,
    base_poses,
    batched_trajectory_solver,
    make_problem,
    optimize_trajectory,
    solve_trajectory,
    trajectory_jacobian,
    trajectory_normal_equations,
    trajectory_residuals,
)

T, N = 10, 48
CONFIG = TrajectoryConfig(num_keypoints=12)


@pytest.fixture(scope="module")
def batch():
    flows = [
        synthetic_rigid_flow(k, num_frames=T, num_points=N, seed=i, occlusion=0.2)
        for i, k in enumerate(MOTIONS)
    ]
    problems = [make_problem(f, g, CONFIG) for f, g, _ in flows]
    # A 4th problem: the lift with a workspace whose top is 3 cm above the grasp (the flow
    # lifts 12 cm). Workspaces are data, so it shares the batch's one compilation.
    lift_flow, lift_grasp, _ = flows[MOTIONS.index("lift_carry")]
    z_top = float(lift_grasp.translation()[2]) + 0.03
    tight = dataclasses.replace(CONFIG.workspace, upper=(1.2, 1.6, z_top))
    problems.append(
        make_problem(lift_flow, lift_grasp, dataclasses.replace(CONFIG, workspace=tight))
    )
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *problems)
    result = batched_trajectory_solver(CONFIG)(stacked, CostWeights.default())
    return flows, problems, result, z_top


def test_vmapped_solve_tracks_the_flow_within_5mm(batch):
    flows, _, result, _ = batch
    errors = np.asarray(result.keypoint_error).mean(axis=1)[:3]
    assert errors.shape == (3,)
    assert np.all(errors < 0.005), dict(zip(MOTIONS, errors, strict=True))
    # The end-effector motion equals the object's true rigid motion (rigid grasp).
    for i, (_, grasp, motions) in enumerate(flows):
        poses = np.asarray(jaxlie.SE3(result.ee_poses.wxyz_xyz[i]).as_matrix())
        true = motions @ np.asarray(grasp.as_matrix())
        assert np.abs(poses[:, :3, 3] - true[:, :3, 3]).max() < 0.01
        np.testing.assert_allclose(poses[0], np.asarray(grasp.as_matrix()), atol=1e-5)


def test_reachability_term_pulls_the_trajectory_into_the_workspace(batch):
    # The optimiser trades tracking for staying in the box (reachability weight 100).
    _, _, result, z_top = batch
    free = np.asarray(result.ee_poses.translation()[MOTIONS.index("lift_carry"), :, 2])
    z = np.asarray(result.ee_poses.translation()[3, :, 2])
    assert free.max() > z_top + 0.05  # the flow lifts well above the box
    assert z.max() < z_top + 0.01  # the solution stays within 1 cm of it
    assert float(result.keypoint_error[3].mean()) > 0.01  # at the price of tracking


def test_implicit_gradient_matches_finite_differences():
    flow, grasp, _ = synthetic_rigid_flow("hinge", num_frames=6, num_points=24, seed=3)
    cfg = TrajectoryConfig(
        num_keypoints=8,
        solver=SolverConfig(tolerance=1e-10, relative_tolerance=0.0, max_iterations=20),
    )
    with jax.enable_x64(True):
        problem = make_problem(flow, grasp, cfg)
        problem = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), problem)
        weights = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), CostWeights.default())
        probe = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)))

        def loss(targets, w):
            prob = dataclasses.replace(problem, targets=targets)
            out = solve_trajectory(prob, w, cfg)
            return jnp.sum(out.ee_poses.translation() * probe)

        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        _, (grad_t, grad_w) = value_and_grad(problem.targets, weights)

        def f(targets, w):
            return value_and_grad(targets, w)[0]

        direction = jnp.asarray(np.random.default_rng(1).normal(size=problem.targets.shape))
        eps = 1e-5
        fd = (
            f(problem.targets + eps * direction, weights)
            - f(problem.targets - eps * direction, weights)
        ) / (2 * eps)
        analytic = jnp.sum(grad_t * direction)
        assert abs(float(analytic)) > 1e-3
        np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-4)
        # And with respect to the smoothness weight.
        bump = dataclasses.replace(weights, smoothness=weights.smoothness + eps)
        drop = dataclasses.replace(weights, smoothness=weights.smoothness - eps)
        fd_w = (f(problem.targets, bump) - f(problem.targets, drop)) / (2 * eps)
        np.testing.assert_allclose(float(grad_w.smoothness), float(fd_w), rtol=1e-3, atol=1e-7)


def test_analytic_jacobian_and_normal_equations_match_autodiff(float64):
    # The solver never forms J: it gets J^T J and J^T r from the analytic per-step blocks
    # (right Jacobians of SO(3)) and the banded smoothness block. Away from zero deltas, with
    # the workspace top and the reach sphere active.
    flow, grasp, _ = synthetic_rigid_flow("lift_carry", num_frames=6, num_points=20, seed=1)
    problem = jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64), make_problem(flow, grasp, TrajectoryConfig(8))
    )
    top = problem.bounds.upper.at[2].set(float(grasp.translation()[2]) + 0.03)
    problem = dataclasses.replace(
        problem,
        bounds=dataclasses.replace(problem.bounds, upper=top, max_reach=jnp.asarray(0.5)),
    )
    weights = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), CostWeights.default())
    base = base_poses(problem, "hold")
    deltas = jnp.asarray(np.random.default_rng(0).normal(scale=0.3, size=(5, 6)))

    @jax.jit
    def evaluate(d):
        def res(x):
            return trajectory_residuals(x.reshape(5, 6), problem, base, weights, 0.1)

        return (
            res(d.ravel()),
            jax.jacfwd(res)(d.ravel()),
            trajectory_jacobian(d, problem, base, weights, 0.1),
            trajectory_normal_equations(d, problem, base, weights, 0.1),
        )

    r, auto, analytic, normal = evaluate(deltas)
    np.testing.assert_allclose(analytic, auto, atol=1e-12)
    np.testing.assert_allclose(normal.jtj, auto.T @ auto, atol=1e-10)
    np.testing.assert_allclose(normal.jtr, auto.T @ r, atol=1e-10)
    np.testing.assert_allclose(float(normal.cost), 0.5 * float(r @ r), rtol=1e-12)
    assert float(jnp.max(r[len(r) - 24 :] ** 2)) > 0  # smoothness residuals are non-zero


def test_bad_flows_raise_clear_errors():
    flow, grasp, _ = synthetic_rigid_flow("slide", num_frames=4, num_points=16)
    with pytest.raises(ConfigError, match="world-frame"):
        make_problem(dataclasses.replace(flow, frame="camera"), grasp)
    nan = np.array(flow.points)
    nan[2, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        make_problem(dataclasses.replace(flow, points=nan), grasp)
    static = np.broadcast_to(flow.points[:1], flow.points.shape)
    with pytest.raises(GeometryError, match="static"):
        make_problem(dataclasses.replace(flow, points=static), grasp)
    hidden = np.zeros_like(flow.visible)
    hidden[:, :2] = True
    with pytest.raises(GeometryError, match="at least 3 visible"):
        make_problem(dataclasses.replace(flow, visible=hidden), grasp)
    with pytest.raises(ConfigError, match="num_keypoints"):
        TrajectoryConfig(num_keypoints=2)
    assert isinstance(flow, ObjectFlow)
    _ = optimize_trajectory  # the eager entry point is exercised in test_planning_plan.py


def test_jaxopt_backend_reaches_the_same_trajectory():
    flow, grasp, _ = synthetic_rigid_flow("slide", num_frames=6, num_points=24, seed=2)
    results = {}
    for backend in ("jflow", "jaxopt"):
        cfg = TrajectoryConfig(
            num_keypoints=8, solver=SolverConfig(backend=backend, max_iterations=30)
        )
        problem = make_problem(flow, grasp, cfg)
        results[backend] = solve_trajectory(problem, CostWeights.default(), cfg)
    ours, theirs = results["jflow"], results["jaxopt"]
    np.testing.assert_allclose(float(theirs.cost), float(ours.cost), rtol=1e-2, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(theirs.ee_poses.translation()),
        np.asarray(ours.ee_poses.translation()),
        atol=1e-3,
    )
    assert float(np.max(np.asarray(theirs.keypoint_error))) < 0.005
    with pytest.raises(ConfigError, match="least-squares backend"):
        SolverConfig(backend="scipy")
