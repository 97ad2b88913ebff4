"""The SE(3) end-effector trajectory optimiser (3DFlowAction section 4.3 and appendix B).

Given a predicted object flow in the world frame and the grasp (the end-effector pose at frame 0,
``world_from_ee``), find end-effector poses ``P_1 .. P_{T-1}`` (``P_0`` is the grasp) such that the
object, held rigidly, follows the flow. With ``k_i`` the keypoints in the gripper frame
(``k_i = P_0^{-1} x_i(0)``), the object's keypoint ``i`` at step ``t`` is ``P_t k_i``. The cost is
``0.5 * |r|^2`` with the residual blocks

* task (weight ``w_f``): ``sqrt(w_f v_ti / n) (P_t k_i - x_i(t))`` with ``v`` the visibility and
  ``n`` the number of keypoints, so the cost is ``w_f/2`` times the per-frame mean squared error
  (in m^2) summed over frames;
* smoothness (``w_s``): the second difference of the per-step motion in the gripper frame,
  ``v_t = [R_t^T (p_{t+1} - p_t), s vee(R_t^T R_{t+1})]`` (``vee`` of the skew part: ``sin`` of
  the step angle times its axis), ``v_t - v_{t-1}``, rotations scaled by ``s = rotation_scale``
  meters per radian;
* reachability (``w_r``): how far each position lies outside the workspace box and outside the
  arm's reach sphere (zero inside: hinge residuals).

Default weights are Dream2Flow's (section 4.5): task 10, smoothness 1, reachability 100.
Poses are updated around base poses ``B_t`` (the per-frame rigid fits of the flow, or the grasp
held still): ``p_t = p_B + d_t``, ``R_t = R_B exp([w_t]_x)``, a local tangent-space chart of SE(3)
(translation and rotation separately, which keeps the compiled program small).

The solver gets the Gauss-Newton normal equations from the structure
(:func:`trajectory_normal_equations`): the task and reachability blocks of step ``t`` depend on
``d_t`` only and have closed-form Jacobians (``d(R k)/dw = -R [k]_x J_r(w)`` with ``J_r`` the
right Jacobian of SO(3)), so ``J^T J`` is block diagonal plus the banded smoothness part. The
solve is jittable and vmappable (:func:`batched_trajectory_solver`) and differentiable with
respect to the flow and the weights by implicit differentiation (:mod:`jflow.planning.solver`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import jax_dataclasses as jdc
import jaxlie
import numpy as np
from jaxtyping import Array, Float, Int

from jflow.errors import ConfigError, DataError, GeometryError, ShapeError
from jflow.flow.records import ObjectFlow
from jflow.geometry.rigid import rigid_fit
from jflow.geometry.sampling import farthest_point_sampling
from jflow.geometry.transforms import transform_points
from jflow.planning.solver import NormalEquations, SolverConfig, make_solver
from jflow.planning.workspace import Workspace
from jflow.runtime import planning_jit


@jdc.pytree_dataclass
class CostWeights:
    """Weights of the residual blocks (arrays, so gradients can reach them)."""

    task: Float[Array, ""]
    smoothness: Float[Array, ""]
    reachability: Float[Array, ""]

    @staticmethod
    def default(task: float = 10.0, smoothness: float = 1.0, reachability: float = 100.0):
        """Dream2Flow's weights: task 10, smoothness 1, reachability 100."""
        f = jnp.float32
        return CostWeights(
            jnp.asarray(task, f), jnp.asarray(smoothness, f), jnp.asarray(reachability, f)
        )


@dataclasses.dataclass(frozen=True)
class TrajectoryConfig:
    """Settings of the SE(3) trajectory optimiser (hashable; static under jit)."""

    num_keypoints: int = 16
    """Keypoints chosen by farthest point sampling among the points visible at frame 0."""
    rotation_scale: float = 0.1
    """Meters per radian in the smoothness residual."""
    init: Literal["rigid_fit", "hold"] = "rigid_fit"
    """Base poses: per-frame rigid fits of the flow, or the grasp held still."""
    min_motion: float = 0.005
    """A flow whose keypoints all move less than this (m) is static: nothing to plan."""
    workspace: Workspace = Workspace()
    """Copied into each problem by :func:`make_problem` (``problem.bounds``)."""
    solver: SolverConfig = SolverConfig()

    def __post_init__(self):
        if self.num_keypoints < 3:
            raise ConfigError(f"num_keypoints must be >= 3, got {self.num_keypoints}")
        if self.init not in ("rigid_fit", "hold"):
            raise ConfigError(f"init must be 'rigid_fit' or 'hold', got {self.init!r}")


@jdc.pytree_dataclass
class WorkspaceBounds:
    """A :class:`Workspace` as arrays, so that every problem of a batch can have its own."""

    lower: Float[Array, " 3"]
    upper: Float[Array, " 3"]
    reach_center: Float[Array, " 3"]
    max_reach: Float[Array, ""]

    @staticmethod
    def from_workspace(workspace: Workspace) -> WorkspaceBounds:
        f = jnp.float32
        return WorkspaceBounds(
            jnp.asarray(workspace.lower, f),
            jnp.asarray(workspace.upper, f),
            jnp.asarray(workspace.reach_center, f),
            jnp.asarray(workspace.max_reach, f),
        )


@jdc.pytree_dataclass
class TrajectoryProblem:
    """One problem: keypoints in the gripper frame and their predicted world positions."""

    keypoints_ee: Float[Array, "N 3"]
    """Keypoints in the end-effector (grasp) frame, meters."""
    targets: Float[Array, "T N 3"]
    """Predicted world positions of the keypoints at every step (the flow), meters."""
    visibility: Float[Array, "T N"]
    """Weight of each target in [0, 1] (0 for points the flow does not see)."""
    ee_start: jaxlie.SE3
    """``world_from_ee`` at frame 0: the grasp."""
    bounds: WorkspaceBounds
    """Where the end effector may go (the reachability residuals)."""


@jdc.pytree_dataclass
class TrajectoryResult:
    """The optimised trajectory (fields gain batch axes under ``vmap``)."""

    ee_poses: jaxlie.SE3
    """``world_from_ee`` for all ``T`` steps (step 0 is the grasp)."""
    keypoint_error: Float[Array, " T"]
    """Visibility-weighted mean distance (m) between the moved keypoints and the flow."""
    cost: Float[Array, ""]
    iterations: Int[Array, ""]


def select_keypoints(flow: ObjectFlow, num_keypoints: int) -> np.ndarray:
    """Indices of ``num_keypoints`` points visible at frame 0, by farthest point sampling."""
    visible = np.asarray(flow.visible[0])
    count = int(visible.sum())
    if count < 3:
        raise GeometryError(
            f"need at least 3 visible points at frame 0 to define keypoints, got {count}"
        )
    k = min(num_keypoints, count)
    return np.asarray(farthest_point_sampling(jnp.asarray(flow.points[0]), k, valid=visible))


def make_problem(
    flow: ObjectFlow, ee_start: jaxlie.SE3, config: TrajectoryConfig = TrajectoryConfig()
) -> TrajectoryProblem:
    """Check a world-frame flow and build the optimiser's problem (eager).

    Raises:
        ConfigError: the flow is not in the world frame.
        ShapeError: wrong shapes or fewer than 2 frames.
        DataError: NaN or inf in the points of visible entries.
        GeometryError: fewer than 3 visible keypoints, or an all-static flow.
    """
    if flow.frame != "world":
        raise ConfigError(
            f"the planner needs a world-frame flow, got frame {flow.frame!r}; "
            "use flow.to_world(world_from_camera)"
        )
    points = np.asarray(flow.points, np.float32)
    visible = np.asarray(flow.visible, bool)
    if points.ndim != 3 or points.shape[-1] != 3 or visible.shape != points.shape[:2]:
        raise ShapeError(
            f"flow points must be [T, N, 3] with visible [T, N], got {points.shape}, {visible.shape}"
        )
    if points.shape[0] < 2:
        raise ShapeError(f"a flow needs at least 2 frames to plan, got {points.shape[0]}")
    if not np.all(np.isfinite(points[visible])):
        raise DataError("the flow contains NaN or inf at visible points")
    if np.asarray(ee_start.wxyz_xyz).shape != (7,) or not np.all(np.isfinite(ee_start.wxyz_xyz)):
        raise ShapeError("ee_start must be one finite SE3 (wxyz_xyz of shape [7])")
    points = np.where(visible[..., None], points, 0.0)
    idx = select_keypoints(
        ObjectFlow(points, visible, flow.tracks, flow.depth, "world"), config.num_keypoints
    )
    targets = points[:, idx]
    vis = visible[:, idx]
    moved = np.linalg.norm(targets - targets[:1], axis=-1)[vis & vis[:1]]
    if moved.size == 0 or float(moved.max()) < config.min_motion:
        raise GeometryError(
            f"the flow is static: no keypoint moves more than {config.min_motion} m "
            f"(max {0.0 if moved.size == 0 else float(moved.max()):.4f} m); nothing to plan"
        )
    keypoints_ee = transform_points(ee_start.inverse(), jnp.asarray(targets[0]))
    return TrajectoryProblem(
        keypoints_ee=keypoints_ee,
        targets=jnp.asarray(targets),
        visibility=jnp.asarray(vis, jnp.float32),
        ee_start=ee_start,
        bounds=WorkspaceBounds.from_workspace(config.workspace),
    )


def base_poses(problem: TrajectoryProblem, init: str) -> jaxlie.SE3:
    """Base poses ``B_1 .. B_{T-1}`` for the tangent-space update (jittable)."""
    t = problem.targets.shape[0]
    if init == "hold":
        return jaxlie.SE3(jnp.broadcast_to(problem.ee_start.wxyz_xyz, (t - 1, 7)))
    start = transform_points(problem.ee_start, problem.keypoints_ee)
    w = problem.visibility[1:] * problem.visibility[:1]
    fits = jax.vmap(rigid_fit, in_axes=(None, 0, 0))(start, problem.targets[1:], w)
    moved = fits.target_from_source @ problem.ee_start
    hold = jnp.broadcast_to(problem.ee_start.wxyz_xyz, moved.wxyz_xyz.shape)
    return jaxlie.SE3(jnp.where(fits.valid[:, None], moved.wxyz_xyz, hold))


def skew(v: Float[Array, "*batch 3"]) -> Float[Array, "*batch 3 3"]:
    """``[v]_x``: the matrix with ``[v]_x u = v x u``."""
    zero = jnp.zeros_like(v[..., 0])
    return jnp.stack(
        [
            jnp.stack([zero, -v[..., 2], v[..., 1]], -1),
            jnp.stack([v[..., 2], zero, -v[..., 0]], -1),
            jnp.stack([-v[..., 1], v[..., 0], zero], -1),
        ],
        -2,
    )


def _series_coefficients(omega):
    """``(th^2, sin(th)/th, (1-cos th)/th^2, (th-sin th)/th^3)`` with series near 0."""
    th2 = jnp.sum(omega * omega, axis=-1)[..., None, None]
    small = th2 < 1e-6
    safe = jnp.where(small, 1.0, th2)
    th = jnp.sqrt(safe)
    a = jnp.where(small, 1.0 - th2 / 6.0, jnp.sin(th) / th)
    b = jnp.where(small, 0.5 - th2 / 24.0, (1.0 - jnp.cos(th)) / safe)
    c = jnp.where(small, 1.0 / 6.0 - th2 / 120.0, (th - jnp.sin(th)) / (safe * th))
    return a, b, c


def rotation_exp(omega: Float[Array, "*batch 3"]) -> Float[Array, "*batch 3 3"]:
    """Rodrigues' formula ``exp([omega]_x)`` with a series near 0 (finite gradients at 0)."""
    k = skew(omega)
    a, b, _ = _series_coefficients(omega)
    return jnp.eye(3, dtype=omega.dtype) + a * k + b * (k @ k)


def right_jacobian(omega: Float[Array, "*batch 3"]) -> Float[Array, "*batch 3 3"]:
    """The right Jacobian of SO(3): ``R exp(omega + d) = R exp(omega) exp([J_r(omega) d]_x)``
    to first order, ``J_r = I - (1 - cos th)/th^2 [omega]_x + (th - sin th)/th^3 [omega]_x^2``."""
    k = skew(omega)
    _, b, c = _series_coefficients(omega)
    return jnp.eye(3, dtype=omega.dtype) - b * k + c * (k @ k)


def _pose_arrays(
    base: jaxlie.SE3, deltas: Float[Array, "T1 6"], start: jaxlie.SE3
) -> tuple[Float[Array, "T 3 3"], Float[Array, "T 3"], Float[Array, "T 3 3"]]:
    """Rotations, positions and rotation right-Jacobians of ``[P_0, B_t (+) d_t]``:
    ``p = p_B + d[:3]``, ``R = R_B exp(d[3:])`` (the update the solver's variables parametrise).
    Pose 0 (the grasp) is fixed; its right-Jacobian is the identity and unused."""
    w = deltas[:, 3:]
    rot = base.rotation().as_matrix() @ rotation_exp(w)
    pos = base.translation() + deltas[:, :3]
    jr = right_jacobian(w)
    rot = jnp.concatenate([start.rotation().as_matrix()[None], rot], axis=0)
    pos = jnp.concatenate([start.translation()[None], pos], axis=0)
    jr = jnp.concatenate([jnp.eye(3, dtype=jr.dtype)[None], jr], axis=0)
    return rot, pos, jr


def poses_from_deltas(
    base: jaxlie.SE3, deltas: Float[Array, "T1 6"], start: jaxlie.SE3
) -> jaxlie.SE3:
    """All ``T`` poses ``[P_0, B_1 (+) d_1, ...]`` from the solver's variables."""
    rot, pos, _ = _pose_arrays(base, deltas, start)
    return jaxlie.SE3.from_rotation_and_translation(jaxlie.SO3.from_matrix(rot), pos)


def _vee_skew(m: Float[Array, "*batch 3 3"]) -> Float[Array, "*batch 3"]:
    """``sin(theta) * axis`` of a rotation matrix (its log for the small per-step rotations)."""
    return 0.5 * jnp.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
    )


def _step_linearization(
    rot: Float[Array, "3 3"],
    pos: Float[Array, " 3"],
    jr: Float[Array, "3 3"],
    keypoints_ee: Float[Array, "N 3"],
    target: Float[Array, "N 3"],
    visibility: Float[Array, " N"],
    weights: CostWeights,
    bounds: WorkspaceBounds,
) -> tuple[Float[Array, " R"], Float[Array, "R 6"]]:
    """Task and reachability residuals of one step ``t >= 1`` (they depend on ``P_t`` only) and
    their Jacobian with respect to the step's variables ``d_t = (dp, w)``.

    With ``R = R_B exp(w)``: ``d(R k)/dw = -R [k]_x J_r(w)`` and ``d(R k + p)/d dp = I``."""
    n = keypoints_ee.shape[0]
    moved = keypoints_ee @ rot.T + pos
    scale = jnp.sqrt(weights.task * visibility / n)
    task = scale[:, None] * (moved - target)
    d_rot = -(rot @ skew(keypoints_ee)) @ jr  # [N, 3, 3]
    eye = jnp.broadcast_to(jnp.eye(3, dtype=pos.dtype), d_rot.shape)
    task_jac = scale[:, None, None] * jnp.concatenate([eye, d_rot], axis=-1)  # [N, 3, 6]
    offset = pos - bounds.reach_center
    dist = jnp.sqrt(jnp.sum(offset**2) + 1e-12)
    sr = jnp.sqrt(weights.reachability)
    reach = sr * jnp.concatenate(
        [
            jax.nn.relu(bounds.lower - pos),
            jax.nn.relu(pos - bounds.upper),
            jax.nn.relu(dist - bounds.max_reach)[None],
        ]
    )
    reach_dp = sr * jnp.concatenate(
        [
            -jnp.diag((bounds.lower - pos > 0).astype(pos.dtype)),
            jnp.diag((pos - bounds.upper > 0).astype(pos.dtype)),
            ((dist - bounds.max_reach > 0) * offset / dist)[None],
        ]
    )
    reach_jac = jnp.concatenate([reach_dp, jnp.zeros_like(reach_dp)], axis=-1)  # [7, 6]
    residual = jnp.concatenate([task.ravel(), reach])
    jac = jnp.concatenate([task_jac.reshape(3 * n, 6), reach_jac], axis=0)
    return residual, jac


def _velocities(rot, pos, rotation_scale: float) -> Float[Array, "T1 6"]:
    """The motion from pose t to t+1 in t's frame: ``[R_t^T (p_{t+1} - p_t), s vee(R_t^T
    R_{t+1})]`` for ``t = 0 .. T-2``."""
    ra, rb = rot[:-1], rot[1:]
    rel = jnp.swapaxes(ra, -1, -2)
    v_pos = jnp.einsum("tij,tj->ti", rel, pos[1:] - pos[:-1])
    v_rot = rotation_scale * _vee_skew(rel @ rb)
    return jnp.concatenate([v_pos, v_rot], axis=-1)


def _velocity_jacobians(rot, pos, jr, rotation_scale: float):
    """``d v_t / d d_t`` and ``d v_t / d d_{t+1}`` (``[T-1, 6, 6]`` each) of :func:`_velocities`.

    With right perturbations ``R_a exp(phi_a)``, ``R_b exp(phi_b)`` (``phi = J_r(w) dw``),
    ``M = R_a^T R_b`` and ``u = p_b - p_a``: ``d(R_a^T u)/d phi_a = [R_a^T u]_x``,
    ``d vee_skew(M)/d phi_a = -(tr(M) I - M)/2`` and ``d vee_skew(M)/d phi_b = (tr(M) I - M^T)/2``.
    """
    ra, rb = rot[:-1], rot[1:]
    rat = jnp.swapaxes(ra, -1, -2)
    m = rat @ rb
    v_pos = jnp.einsum("tij,tj->ti", rat, pos[1:] - pos[:-1])
    tr = jnp.trace(m, axis1=-2, axis2=-1)[:, None, None]
    eye = jnp.eye(3, dtype=pos.dtype)
    s = rotation_scale
    zero = jnp.zeros_like(m)
    ja = jnp.concatenate(
        [
            jnp.concatenate([-rat, skew(v_pos) @ jr[:-1]], axis=-1),
            jnp.concatenate([zero, -0.5 * s * (tr * eye - m) @ jr[:-1]], axis=-1),
        ],
        axis=-2,
    )
    jb = jnp.concatenate(
        [
            jnp.concatenate([rat, zero], axis=-1),
            jnp.concatenate([zero, 0.5 * s * (tr * eye - jnp.swapaxes(m, -1, -2)) @ jr[1:]], -1),
        ],
        axis=-2,
    )
    return ja, jb


# The vmap axes of ``_step_linearization``'s arguments after (rot, pos, jr).
_STEP_AXES = (0, 0, 0, None, 0, 0, None, None)


def _linearize(deltas, problem: TrajectoryProblem, base, weights, rotation_scale):
    """Step residuals ``[T-1, R_s]`` with their Jacobian blocks ``[T-1, R_s, 6]``, and the
    smoothness residuals ``[T-2, 6]`` with their banded Jacobian ``[T-2, 3, 6, 6]``: residual
    ``i`` (``s v_{i+1} - s v_i``) depends on variables ``i-1, i, i+1`` (:func:`_band_indices`;
    for ``i = 0`` the first is the fixed grasp and its block is zero)."""
    rot, pos, jr = _pose_arrays(base, deltas, problem.ee_start)
    r_step, j_step = jax.vmap(_step_linearization, in_axes=_STEP_AXES)(
        rot[1:],
        pos[1:],
        jr[1:],
        problem.keypoints_ee,
        problem.targets[1:],
        problem.visibility[1:],
        weights,
        problem.bounds,
    )
    sw = jnp.sqrt(weights.smoothness)
    vel = _velocities(rot, pos, rotation_scale)
    r_smooth = sw * (vel[1:] - vel[:-1])
    # Velocity t joins poses t (ja[t]) and t+1 (jb[t]); pose p is variable p-1.
    ja, jb = _velocity_jacobians(rot, pos, jr, rotation_scale)
    band = sw * jnp.stack([-ja[:-1], ja[1:] - jb[:-1], jb[1:]], axis=1)
    band = band.at[0, 0].set(0.0)
    return r_step, j_step, r_smooth, band


def _band_indices(t1: int) -> Array:
    """``[T-2, 3]`` variable index of each smoothness block (clamped at 0: that block is 0)."""
    return jnp.maximum(jnp.arange(t1 - 1)[:, None] + jnp.arange(3)[None, :] - 1, 0)


def trajectory_residuals(
    deltas: Float[Array, "T1 6"],
    problem: TrajectoryProblem,
    base: jaxlie.SE3,
    weights: CostWeights,
    rotation_scale: float,
) -> Float[Array, " R"]:
    """All residuals (module docs) as one flat vector: for each step ``t = 1 .. T-1`` its task
    and reachability block, then the smoothness residuals. (Step 0 is the fixed grasp: its
    task residual is constant and left out.)

    The smoothness residual is the second difference of the per-step motion in the gripper
    frame: positions ``R_t^T (p_{t+1} - p_t)`` and rotations ``vee(R_t^T R_{t+1})`` (``sin`` of
    the step angle times its axis, the step's log for the small steps of a trajectory).
    """
    rot, pos, _ = _pose_arrays(base, deltas, problem.ee_start)
    n = problem.keypoints_ee.shape[0]
    moved = jnp.einsum("nj,tij->tni", problem.keypoints_ee, rot[1:]) + pos[1:, None]
    scale = jnp.sqrt(weights.task * problem.visibility[1:] / n)
    task = scale[..., None] * (moved - problem.targets[1:])
    b = problem.bounds
    dist = jnp.sqrt(jnp.sum((pos[1:] - b.reach_center) ** 2, axis=-1) + 1e-12)
    reach = jnp.sqrt(weights.reachability) * jnp.concatenate(
        [
            jax.nn.relu(b.lower - pos[1:]),
            jax.nn.relu(pos[1:] - b.upper),
            jax.nn.relu(dist - b.max_reach)[:, None],
        ],
        axis=-1,
    )
    steps = jnp.concatenate([task.reshape(task.shape[0], -1), reach], axis=-1)
    vel = _velocities(rot, pos, rotation_scale)
    smooth = jnp.sqrt(weights.smoothness) * (vel[1:] - vel[:-1])
    return jnp.concatenate([steps.ravel(), smooth.ravel()])


def trajectory_jacobian(
    deltas: Float[Array, "T1 6"],
    problem: TrajectoryProblem,
    base: jaxlie.SE3,
    weights: CostWeights,
    rotation_scale: float,
) -> Float[Array, "R T1x6"]:
    """The dense Jacobian of :func:`trajectory_residuals` with respect to the flattened
    ``deltas``, from the analytic blocks (the solver uses :func:`trajectory_normal_equations`,
    which never forms it; this is the reference the tests compare with ``jax.jacfwd``)."""
    _, j_step, _, band = _linearize(deltas, problem, base, weights, rotation_scale)
    t1, rs = j_step.shape[:2]
    rows = jnp.arange(t1)
    step_jac = jnp.zeros((t1, rs, t1, 6), j_step.dtype).at[rows, :, rows, :].set(j_step)
    smooth_rows = jnp.broadcast_to(jnp.arange(t1 - 1)[:, None], (t1 - 1, 3))
    smooth_jac = (
        jnp.zeros((t1 - 1, 6, t1, 6), band.dtype).at[smooth_rows, :, _band_indices(t1), :].add(band)
    )
    return jnp.concatenate(
        [step_jac.reshape(t1 * rs, t1 * 6), smooth_jac.reshape(-1, t1 * 6)], axis=0
    )


def trajectory_normal_equations(
    deltas: Float[Array, "T1 6"],
    problem: TrajectoryProblem,
    base: jaxlie.SE3,
    weights: CostWeights,
    rotation_scale: float,
) -> NormalEquations:
    """``J^T J`` ``[6(T-1), 6(T-1)]``, ``J^T r`` and the cost of :func:`trajectory_residuals`,
    from the structure: the step blocks give a block-diagonal ``J^T J`` (6x6 per step), each
    smoothness residual adds the 3x3 products of its three 6x6 blocks (a band of width 5
    blocks); no dense ``J`` is formed."""
    r_step, j_step, r_smooth, band = _linearize(deltas, problem, base, weights, rotation_scale)
    t1 = deltas.shape[0]
    rows = jnp.arange(t1)
    idx = _band_indices(t1)
    jtj = jnp.zeros((t1, 6, t1, 6), j_step.dtype)
    jtj = jtj.at[rows, :, rows, :].set(jnp.einsum("tri,trj->tij", j_step, j_step))
    pairs = jnp.einsum("tari,tbrj->tabij", band, band)  # [T-2, 3, 3, 6, 6]
    jtj = jtj.at[idx[:, :, None], :, idx[:, None, :], :].add(pairs)
    jtr = jnp.einsum("tri,tr->ti", j_step, r_step)
    jtr = jtr.at[idx].add(jnp.einsum("tari,tr->tai", band, r_smooth))
    cost = 0.5 * (jnp.sum(r_step**2) + jnp.sum(r_smooth**2))
    return NormalEquations(jtj.reshape(t1 * 6, t1 * 6), jtr.ravel(), cost)


def solve_trajectory(
    problem: TrajectoryProblem,
    weights: CostWeights | None = None,
    config: TrajectoryConfig = TrajectoryConfig(),
) -> TrajectoryResult:
    """Optimise one problem (jittable with ``config`` static; vmappable over problems).

    Differentiable with respect to ``problem.targets``, ``problem.visibility`` and ``weights``
    (implicit differentiation when ``config.solver.implicit_diff``).
    """
    weights = CostWeights.default() if weights is None else weights
    base = jax.tree.map(jax.lax.stop_gradient, base_poses(problem, config.init))
    t = problem.targets.shape[0]
    solve = make_solver(config.solver)

    def residual(deltas, prob, w):
        return trajectory_residuals(deltas, prob, base, w, config.rotation_scale)

    def normal(deltas, prob, w):
        return trajectory_normal_equations(deltas, prob, base, w, config.rotation_scale)

    out = solve(
        residual, jnp.zeros((t - 1, 6), problem.targets.dtype), problem, weights, normal_fn=normal
    )
    poses = poses_from_deltas(base, out.params, problem.ee_start)
    return TrajectoryResult(
        ee_poses=poses,
        keypoint_error=keypoint_errors(poses, problem),
        cost=out.cost,
        iterations=out.iterations,
    )


def keypoint_errors(poses: jaxlie.SE3, problem: TrajectoryProblem) -> Float[Array, " T"]:
    """Visibility-weighted mean distance (m) per step between ``poses``' keypoints and the flow."""
    moved = jax.vmap(transform_points, in_axes=(0, None))(poses, problem.keypoints_ee)
    d = jnp.linalg.norm(moved - problem.targets, axis=-1)
    w = problem.visibility
    return jnp.sum(w * d, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1e-9)


def batched_trajectory_solver(config: TrajectoryConfig = TrajectoryConfig()):
    """A jitted ``f(problems, weights) -> TrajectoryResult`` over a leading batch axis of
    problems (all with the same ``T`` and ``N``); ``weights`` is shared."""

    def one(problem, weights):
        return solve_trajectory(problem, weights, config)

    return planning_jit(jax.vmap(one, in_axes=(0, None)))


def optimize_trajectory(
    flow: ObjectFlow,
    ee_start: jaxlie.SE3,
    config: TrajectoryConfig = TrajectoryConfig(),
    weights: CostWeights | None = None,
) -> TrajectoryResult:
    """Check ``flow`` (world frame), build the problem and solve it: the one-call entry point.

    This is also the acceptance check on kitchen episodes: pass the ground-truth object flow in
    the world frame and any grasp pose; ``result.keypoint_error.mean()`` is the mean keypoint
    error in meters.
    """
    problem = make_problem(flow, ee_start, config)
    return _solve_jit(problem, CostWeights.default() if weights is None else weights, config)


_solve_jit = planning_jit(solve_trajectory, static_argnames=("config",))

__all__ = [
    "CostWeights",
    "TrajectoryConfig",
    "TrajectoryProblem",
    "TrajectoryResult",
    "WorkspaceBounds",
    "base_poses",
    "batched_trajectory_solver",
    "keypoint_errors",
    "make_problem",
    "optimize_trajectory",
    "poses_from_deltas",
    "rotation_exp",
    "right_jacobian",
    "select_keypoints",
    "skew",
    "solve_trajectory",
    "trajectory_jacobian",
    "trajectory_normal_equations",
    "trajectory_residuals",
]
