"""The joint-space trajectory optimiser: the Panda's joint angles through MJX kinematics.

Dream2Flow (section 4.5) optimises the trajectory directly on the Franka's 7 joint angles, with
a flow task term and reachability, smoothness and manipulability terms (weights ``w_f = 10``,
``w_r = 100``, ``w_s = 1``, ``w_m = 0.01``). Here the variables are ``q_1 .. q_{T-1}``
(``q_0`` is the arm's current configuration, holding the grasp) and the object's keypoints
ride on link 7: with ``P(q)`` the ``end_effector`` site pose (MJX forward kinematics,
:class:`jflow.robots.kinematics.PandaKinematics`) and ``k_i = P(q_0)^{-1} x_i(0)`` the keypoints
in the gripper frame, keypoint ``i`` is at ``P(q_t) k_i`` at step ``t``. The cost is
``0.5 |r|^2`` with the residual blocks

* task (``w_f``): ``sqrt(w_f v_ti / n) (P(q_t) k_i - x_i(t))``, as in the SE(3) optimiser
  (:mod:`jflow.planning.trajectory`): ``w_f / 2`` times the per-frame mean squared error in m^2;
* reachability (``w_r``): the joint limits, ``relu(lower + margin - q)`` and
  ``relu(q - upper + margin)`` (rad; they start ``limit_margin`` inside the limits, so that the
  soft term keeps the solution strictly within them), and the workspace box on the site
  position (m);
* smoothness (``w_s``): the second difference ``s (q_{t+1} - 2 q_t + q_{t-1})``, with
  ``s = smoothness_scale`` meters per radian (as the SE(3) optimiser scales rotations), so that
  it weighs joint accelerations on the task's metric scale;
* manipulability (``w_m``): ``relu(log(m_ref / m(q_t)))`` with ``m = sqrt(det(J J^T))`` of the
  site Jacobian (Yoshikawa): zero while ``m >= m_ref``, a log barrier towards singularities
  below it. (An always-active ``m_ref / m`` with ``w_m = 0.01`` outweighed the task, whose
  residuals are millimetres: 15 mm instead of 0.7 mm on the kitchen slide door.)

The Gauss-Newton normal equations are assembled from the structure: every block but smoothness
depends on one step's ``q_t`` and has an analytic Jacobian from the joint axes and anchors MJX
returns (``a_j x (x - c_j)`` for a held point, the manipulator Hessian for ``log m``,
:mod:`jflow.robots.kinematics`); the smoothness Jacobian is a constant banded matrix.

The solve starts from a continuation IK: for each step the damped-least-squares IK of
:mod:`jflow.planning.reachability` runs ``init_iterations`` steps from the previous step's
solution towards the per-frame rigid fit of the flow composed with the grasp, so that the whole
trajectory stays on the arm's current IK branch. It is jittable with the config static and
vmappable over problems (:func:`batched_joint_trajectory_solver`); the solution is
differentiable with respect to the flow and the weights by implicit differentiation
(:mod:`jflow.planning.solver`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import jax_dataclasses as jdc
import jaxlie
import numpy as np
from jaxtyping import Array, Float, Int

from jflow.errors import ConfigError, GeometryError, ShapeError
from jflow.flow.records import ObjectFlow
from jflow.planning.solver import NormalEquations, SolverConfig, make_solver
from jflow.planning.trajectory import (
    TrajectoryConfig,
    TrajectoryProblem,
    WorkspaceBounds,
    base_poses,
    keypoint_errors,
    make_problem,
)
from jflow.planning.workspace import Workspace
from jflow.robots import panda
from jflow.robots.kinematics import (
    ArmState,
    PandaKinematics,
    dls_step,
    geometric_jacobian,
    joint_limit_margin,
    log_manipulability_gradient,
    manipulability,
    panda_kinematics,
    point_jacobian,
)
from jflow.runtime import planning_jit


@jdc.pytree_dataclass
class JointCostWeights:
    """Weights of the residual blocks (arrays, so gradients can reach them)."""

    task: Float[Array, ""]
    smoothness: Float[Array, ""]
    reachability: Float[Array, ""]
    manipulability: Float[Array, ""]

    @staticmethod
    def default(
        task: float = 10.0,
        smoothness: float = 1.0,
        reachability: float = 100.0,
        manipulability: float = 0.01,
    ) -> JointCostWeights:
        """Dream2Flow's weights: task 10, smoothness 1, reachability 100, manipulability 0.01."""
        f = jnp.float32
        return JointCostWeights(
            jnp.asarray(task, f),
            jnp.asarray(smoothness, f),
            jnp.asarray(reachability, f),
            jnp.asarray(manipulability, f),
        )


@dataclasses.dataclass(frozen=True)
class JointTrajectoryConfig:
    """Settings of the joint-space optimiser (hashable; static under jit)."""

    num_keypoints: int = 16
    """Keypoints chosen by farthest point sampling among the points visible at frame 0."""
    smoothness_scale: float = 0.1
    """Meters per radian in the smoothness residual."""
    limit_margin: float = 0.05
    """The joint-limit residual starts this far (rad) inside each limit."""
    manipulability_reference: float = 0.01
    """``m_ref``: the manipulability below which the barrier acts (the Panda's home pose has
    ``m = 0.071``; the kitchen's scripted demos go down to 0.003)."""
    min_motion: float = 0.005
    """A flow whose keypoints all move less than this (m) is static: nothing to plan."""
    init_iterations: int = 8
    """Damped-least-squares steps per trajectory step in the continuation IK (the start)."""
    init_damping: float = 0.05
    init_rotation_weight: float = 0.3
    """Meters per radian in the continuation IK's pose error."""
    workspace: Workspace = Workspace()
    solver: SolverConfig = SolverConfig(max_iterations=30)

    def __post_init__(self):
        if self.num_keypoints < 3:
            raise ConfigError(f"num_keypoints must be >= 3, got {self.num_keypoints}")
        if not (self.smoothness_scale > 0 and self.manipulability_reference > 0):
            raise ConfigError("smoothness_scale and manipulability_reference must be positive")
        if not 0 <= self.limit_margin < 0.5:
            raise ConfigError(f"limit_margin must be in [0, 0.5) rad, got {self.limit_margin}")
        if self.init_iterations < 0:
            raise ConfigError(f"init_iterations must be >= 0, got {self.init_iterations}")


@jdc.pytree_dataclass
class JointTrajectoryProblem:
    """One problem: the keypoints in the gripper frame, their predicted world positions and the
    arm's configuration at frame 0."""

    keypoints_ee: Float[Array, "N 3"]
    """Keypoints in the end-effector frame at ``q_start``, meters."""
    targets: Float[Array, "T N 3"]
    """Predicted world positions of the keypoints at every step (the flow), meters."""
    visibility: Float[Array, "T N"]
    """Weight of each target in [0, 1] (0 for points the flow does not see)."""
    q_start: Float[Array, " 7"]
    """Arm joint angles at frame 0 (rad), holding the grasp."""
    ee_start: jaxlie.SE3
    """``world_from_ee`` of the site at ``q_start``."""
    bounds: WorkspaceBounds


@jdc.pytree_dataclass
class JointTrajectoryResult:
    """The optimised joint trajectory (fields gain batch axes under ``vmap``)."""

    qpos: Float[Array, "T 7"]
    """Arm joint angles for all ``T`` steps (rad; step 0 is ``q_start``)."""
    ee_poses: jaxlie.SE3
    """``world_from_ee`` of the site along the trajectory (forward kinematics of ``qpos``)."""
    keypoint_error: Float[Array, " T"]
    """Visibility-weighted mean distance (m) between the carried keypoints and the flow."""
    limit_margin: Float[Array, " T"]
    """Smallest distance (rad) of any joint to its limit at each step (negative: violated)."""
    manipulability: Float[Array, " T"]
    """Yoshikawa's ``sqrt(det(J J^T))`` at each step."""
    cost: Float[Array, ""]
    iterations: Int[Array, ""]


def forward_kinematics_numpy(q: np.ndarray) -> np.ndarray:
    """``world_from_ee`` (4x4, float64) of the site for one configuration, through MuJoCo's C
    API (no JAX): how problems get their grasp pose without compiling anything."""
    import mujoco

    model = panda_kinematics().mj_model
    data = mujoco.MjData(model)
    data.qpos[:] = q
    mujoco.mj_kinematics(model, data)
    site = panda_kinematics().site_id
    out = np.eye(4)
    out[:3, :3] = data.site_xmat[site].reshape(3, 3)
    out[:3, 3] = data.site_xpos[site]
    return out


def make_joint_problem(
    flow: ObjectFlow, q_start, config: JointTrajectoryConfig = JointTrajectoryConfig()
) -> JointTrajectoryProblem:
    """Check a world-frame flow and the start configuration and build the problem (eager).

    Raises:
        ShapeError: ``q_start`` is not 7 finite angles, or the flow has wrong shapes.
        GeometryError: ``q_start`` is outside the joint limits, fewer than 3 visible keypoints,
            or an all-static flow.
        ConfigError, DataError: as :func:`jflow.planning.trajectory.make_problem`.
    """
    q = np.asarray(q_start, np.float64)
    if q.shape != (7,) or not np.all(np.isfinite(q)):
        raise ShapeError(f"q_start must be 7 finite joint angles (rad), got {q}")
    outside = np.flatnonzero((q < panda.JOINT_LOWER) | (q > panda.JOINT_UPPER))
    if outside.size:
        raise GeometryError(
            f"q_start is outside the Panda's joint limits at joints {outside.tolist()}: "
            f"{q[outside].round(3).tolist()} rad"
        )
    ee = forward_kinematics_numpy(q)
    ee_start = jaxlie.SE3.from_matrix(jnp.asarray(ee, jnp.float32))
    se3 = make_problem(
        flow,
        ee_start,
        TrajectoryConfig(
            num_keypoints=config.num_keypoints,
            min_motion=config.min_motion,
            workspace=config.workspace,
        ),
    )
    return JointTrajectoryProblem(
        keypoints_ee=se3.keypoints_ee,
        targets=se3.targets,
        visibility=se3.visibility,
        q_start=jnp.asarray(q, jnp.float32),
        ee_start=ee_start,
        bounds=se3.bounds,
    )


def _se3_problem(problem: JointTrajectoryProblem) -> TrajectoryProblem:
    return TrajectoryProblem(
        keypoints_ee=problem.keypoints_ee,
        targets=problem.targets,
        visibility=problem.visibility,
        ee_start=problem.ee_start,
        bounds=problem.bounds,
    )


def continuation_ik(
    kin: PandaKinematics,
    q_start: Float[Array, " 7"],
    targets: jaxlie.SE3,
    config: JointTrajectoryConfig,
) -> Float[Array, "T1 7"]:
    """Joint angles for ``targets`` (``world_from_ee``, ``[T-1]``), each solved by
    ``config.init_iterations`` DLS steps from the previous one, within the limits (less the
    margin)."""
    lo = kin.lower + config.limit_margin
    hi = kin.upper - config.limit_margin
    rot = targets.rotation().as_matrix()
    pos = targets.translation()

    def one(q, target):
        p, r = target

        def step(_, q):
            return dls_step(
                kin.forward(q),
                q,
                p,
                r,
                damping=config.init_damping,
                max_step=0.4,
                rotation_weight=config.init_rotation_weight,
                lower=lo,
                upper=hi,
            )

        q = jax.lax.fori_loop(0, config.init_iterations, step, q)
        return q, q

    _, qs = jax.lax.scan(one, jnp.clip(q_start, lo, hi), (pos, rot))
    return qs


def _step_linearization(
    q: Float[Array, " 7"],
    state: ArmState,
    keypoints_ee: Float[Array, "N 3"],
    target: Float[Array, "N 3"],
    visibility: Float[Array, " N"],
    weights: JointCostWeights,
    bounds: WorkspaceBounds,
    config: JointTrajectoryConfig,
    with_jacobian: bool,
):
    """Task, reachability and manipulability residuals of one step (they depend on ``q_t``
    only) and, with ``with_jacobian``, their Jacobian ``[R, 7]``."""
    n = keypoints_ee.shape[0]
    moved = keypoints_ee @ state.rotation.T + state.position
    scale = jnp.sqrt(weights.task * visibility / n)
    task = scale[:, None] * (moved - target)
    sr = jnp.sqrt(weights.reachability)
    lo = jnp.asarray(panda.JOINT_LOWER, q.dtype) + config.limit_margin
    hi = jnp.asarray(panda.JOINT_UPPER, q.dtype) - config.limit_margin
    pos = state.position
    limits = sr * jnp.concatenate([jax.nn.relu(lo - q), jax.nn.relu(q - hi)])
    box = sr * jnp.concatenate([jax.nn.relu(bounds.lower - pos), jax.nn.relu(pos - bounds.upper)])
    m = manipulability(state)
    sm = jnp.sqrt(weights.manipulability)
    manip = sm * jax.nn.relu(jnp.log(config.manipulability_reference / jnp.maximum(m, 1e-9)))
    residual = jnp.concatenate([task.ravel(), limits, box, manip[None]])
    if not with_jacobian:
        return residual
    task_jac = scale[:, None, None] * point_jacobian(state, moved)  # [N, 3, 7]
    limits_jac = sr * jnp.concatenate(
        [-jnp.diag((lo - q > 0).astype(q.dtype)), jnp.diag((q - hi > 0).astype(q.dtype))]
    )
    jp = geometric_jacobian(state)[:3]
    below = (bounds.lower - pos > 0).astype(q.dtype)[:, None]
    above = (pos - bounds.upper > 0).astype(q.dtype)[:, None]
    box_jac = sr * jnp.concatenate([-below * jp, above * jp])
    manip_jac = -sm * (manip > 0) * log_manipulability_gradient(state)
    jac = jnp.concatenate(
        [task_jac.reshape(3 * n, 7), limits_jac, box_jac, manip_jac[None]], axis=0
    )
    return residual, jac


# The vmap axes of ``_step_linearization``'s array arguments.
_STEP_AXES = (0, 0, None, 0, 0, None, None)


def _difference_operator(t: int, order: int) -> np.ndarray:
    """``[T - order, T]``: the ``order``-th finite difference of a sequence of ``T`` values."""
    d = np.eye(t)
    for _ in range(order):
        d = d[1:] - d[:-1]
    return d


def _smoothness_matrix(t1: int, config, dtype) -> Float[Array, "S T1x7"]:
    """The constant second-difference operator on the variables ``[q_1 .. q_{T-1}]``, scaled by
    ``smoothness_scale`` (``q_0`` is fixed, so its column moves to the residual's constant
    part), for all 7 joints."""
    acc = config.smoothness_scale * _difference_operator(t1 + 1, 2)[:, 1:]
    return jnp.asarray(np.kron(acc, np.eye(7)), dtype)


def _smoothness_residuals(qs, problem, weights, config):
    q = jnp.concatenate([problem.q_start[None], qs], axis=0)
    acc = q[2:] - 2.0 * q[1:-1] + q[:-2]
    return jnp.sqrt(weights.smoothness) * config.smoothness_scale * acc.ravel()


def _per_step(qs, problem, weights, config, kin, *, with_jacobian: bool):
    """:func:`_step_linearization` of every step after the first, vmapped (kinematics once)."""
    kin = panda_kinematics() if kin is None else kin
    states = jax.vmap(kin.forward)(qs)
    return jax.vmap(
        functools.partial(_step_linearization, config=config, with_jacobian=with_jacobian),
        in_axes=_STEP_AXES,
    )(
        qs,
        states,
        problem.keypoints_ee,
        problem.targets[1:],
        problem.visibility[1:],
        weights,
        problem.bounds,
    )


def joint_residuals(
    qs: Float[Array, "T1 7"],
    problem: JointTrajectoryProblem,
    weights: JointCostWeights,
    config: JointTrajectoryConfig,
    kin: PandaKinematics | None = None,
) -> Float[Array, " R"]:
    """All residuals (module docs) as one flat vector: each step's task, joint-limit, workspace
    and manipulability block, then the smoothness residuals."""
    steps = _per_step(qs, problem, weights, config, kin, with_jacobian=False)
    return jnp.concatenate([steps.ravel(), _smoothness_residuals(qs, problem, weights, config)])


def joint_normal_equations(
    qs: Float[Array, "T1 7"],
    problem: JointTrajectoryProblem,
    weights: JointCostWeights,
    config: JointTrajectoryConfig,
    kin: PandaKinematics | None = None,
) -> NormalEquations:
    """``J^T J`` ``[7(T-1), 7(T-1)]``, ``J^T r`` and the cost of :func:`joint_residuals`: block
    diagonal per step plus the constant banded smoothness part."""
    r_step, j_step = _per_step(qs, problem, weights, config, kin, with_jacobian=True)
    t1 = qs.shape[0]
    blocks = jnp.einsum("tri,trj->tij", j_step, j_step)
    rows = jnp.arange(t1)
    jtj = jnp.zeros((t1, 7, t1, 7), blocks.dtype).at[rows, :, rows, :].set(blocks)
    d = _smoothness_matrix(t1, config, qs.dtype) * jnp.sqrt(weights.smoothness)
    r_smooth = _smoothness_residuals(qs, problem, weights, config)
    jtj = jtj.reshape(t1 * 7, t1 * 7) + d.T @ d
    jtr = jnp.einsum("tri,tr->ti", j_step, r_step).ravel() + d.T @ r_smooth
    cost = 0.5 * (jnp.sum(r_step**2) + jnp.sum(r_smooth**2))
    return NormalEquations(jtj, jtr, cost)


def solve_joint_trajectory(
    problem: JointTrajectoryProblem,
    weights: JointCostWeights | None = None,
    config: JointTrajectoryConfig = JointTrajectoryConfig(),
) -> JointTrajectoryResult:
    """Optimise one problem (jittable with ``config`` static; vmappable over problems)."""
    weights = JointCostWeights.default() if weights is None else weights
    kin = panda_kinematics()
    targets = jax.tree.map(jax.lax.stop_gradient, base_poses(_se3_problem(problem), "rigid_fit"))
    q_init = jax.lax.stop_gradient(continuation_ik(kin, problem.q_start, targets, config))

    def residual(qs, prob, w):
        return joint_residuals(qs, prob, w, config, kin)

    def normal(qs, prob, w):
        return joint_normal_equations(qs, prob, w, config, kin)

    out = make_solver(config.solver)(residual, q_init, problem, weights, normal_fn=normal)
    q = jnp.concatenate([problem.q_start[None], out.params], axis=0)
    states = jax.vmap(kin.forward)(q)
    poses = jaxlie.SE3.from_rotation_and_translation(
        jaxlie.SO3.from_matrix(states.rotation), states.position
    )
    return JointTrajectoryResult(
        qpos=q,
        ee_poses=poses,
        keypoint_error=keypoint_errors(poses, _se3_problem(problem)),
        limit_margin=joint_limit_margin(q),
        manipulability=jax.vmap(manipulability)(states),
        cost=out.cost,
        iterations=out.iterations,
    )


def batched_joint_trajectory_solver(config: JointTrajectoryConfig = JointTrajectoryConfig()):
    """A jitted ``f(problems, weights) -> JointTrajectoryResult`` over a leading batch axis of
    problems (same ``T`` and ``N``); ``weights`` is shared."""

    def one(problem, weights):
        return solve_joint_trajectory(problem, weights, config)

    return planning_jit(jax.vmap(one, in_axes=(0, None)))


_solve_jit = planning_jit(solve_joint_trajectory, static_argnames=("config",))


def optimize_joint_trajectory(
    flow: ObjectFlow,
    q_start,
    config: JointTrajectoryConfig = JointTrajectoryConfig(),
    weights: JointCostWeights | None = None,
) -> JointTrajectoryResult:
    """Check ``flow`` (world frame) and ``q_start`` (the arm holding the grasp), build the
    problem and solve it: the one-call entry point."""
    problem = make_joint_problem(flow, q_start, config)
    return _solve_jit(problem, JointCostWeights.default() if weights is None else weights, config)


__all__ = [
    "JointCostWeights",
    "JointTrajectoryConfig",
    "JointTrajectoryProblem",
    "JointTrajectoryResult",
    "batched_joint_trajectory_solver",
    "continuation_ik",
    "forward_kinematics_numpy",
    "joint_normal_equations",
    "joint_residuals",
    "make_joint_problem",
    "optimize_joint_trajectory",
    "solve_joint_trajectory",
]
