"""Panda arm kinematics on MJX: the end-effector pose, its geometric Jacobian, the Jacobian of
points held by the gripper, and the manipulability with its analytic gradient.

One forward pass is ``mjx.kinematics`` on the arm-only model (:func:`jflow.robots.panda.load_arm_model`:
7 joints, 8 bodies). Everything else comes from the joint axes ``a_j`` and anchors ``c_j`` it
returns in the world frame (for a revolute chain the anchor is a point on the axis):

* a point ``x`` rigidly attached to link 7 (e.g. a keypoint of a grasped object) moves with
  ``dx/dq_j = a_j x (x - c_j)``;
* the geometric Jacobian of the ``end_effector`` site at ``p`` is ``J = [J_p; J_r]`` with columns
  ``J_p,j = a_j x (p - c_j)`` and ``J_r,j = a_j`` (world frame, meters and radians);
* its derivative, for joints ``k <= j``: ``dJ_p,j/dq_k = a_k x J_p,j``, ``dJ_r,j/dq_k = a_k x a_j``;
  for ``k > j``: ``dJ_p,j/dq_k = a_j x J_p,k``, ``dJ_r,j/dq_k = 0`` (Haviland and Corke's
  manipulator Hessian, written with cross products);
* the manipulability ``m = sqrt(det(J J^T))`` (Yoshikawa), whose log has the gradient
  ``d log m / dq_k = tr((J J^T)^{-1} dJ/dq_k J^T)``.

All functions take one configuration and are jittable and vmappable. MJX kinematics on CPU
needs XLA's fusion emitters off: jit it with ``jflow.runtime.planning_jit`` (as the planner
does), or call ``jflow.runtime.configure_for_planning()`` before JAX starts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax_dataclasses as jdc
import numpy as np
from jaxtyping import Array, Float

from jflow.robots import panda


@jdc.pytree_dataclass
class ArmState:
    """The forward kinematics of one configuration (world frame, meters)."""

    position: Float[Array, " 3"]
    """Position of the ``end_effector`` site."""
    rotation: Float[Array, "3 3"]
    """``world_from_ee`` rotation of the site (columns: the site's axes)."""
    axes: Float[Array, "7 3"]
    """Unit joint axes ``a_j``."""
    anchors: Float[Array, "7 3"]
    """A point ``c_j`` on each joint axis."""


def point_jacobian(state: ArmState, points: Float[Array, "N 3"]) -> Float[Array, "N 3 7"]:
    """``d x_i / d q`` for world points ``x_i`` rigidly attached to the last link."""
    lever = points[:, None, :] - state.anchors[None]  # [N, 7, 3]
    return jnp.swapaxes(jnp.cross(state.axes[None], lever), 1, 2)


def geometric_jacobian(state: ArmState) -> Float[Array, "6 7"]:
    """``[J_p; J_r]`` of the site (world frame): linear velocity rows, then angular."""
    jp = jnp.cross(state.axes, state.position[None] - state.anchors)  # [7, 3]
    return jnp.concatenate([jp.T, state.axes.T], axis=0)


def jacobian_derivative(state: ArmState) -> Float[Array, "7 6 7"]:
    """``H[k] = dJ / dq_k`` (module docs), ``[joint k, row, column j]``."""
    jac = geometric_jacobian(state)
    jp, axes = jac[:3].T, state.axes  # [7, 3] each (per column j)
    # k <= j: a_k x J_p,j and a_k x a_j;  k > j: a_j x J_p,k and 0.
    ak_x_jpj = jnp.cross(axes[:, None, :], jp[None, :, :])  # [k, j, 3]
    aj_x_jpk = jnp.cross(axes[None, :, :], jp[:, None, :])  # [k, j, 3]
    ak_x_aj = jnp.cross(axes[:, None, :], axes[None, :, :])  # [k, j, 3]
    k_le_j = (jnp.arange(7)[:, None] <= jnp.arange(7)[None, :])[..., None]
    d_jp = jnp.where(k_le_j, ak_x_jpj, aj_x_jpk)
    d_jr = jnp.where(k_le_j, ak_x_aj, 0.0)
    return jnp.concatenate([jnp.swapaxes(d_jp, 1, 2), jnp.swapaxes(d_jr, 1, 2)], axis=1)


def manipulability(state: ArmState) -> Float[Array, ""]:
    """Yoshikawa's ``sqrt(det(J J^T))`` of the site Jacobian (0 at a singularity)."""
    jac = geometric_jacobian(state)
    return jnp.sqrt(jnp.maximum(jnp.linalg.det(jac @ jac.T), 0.0))


def log_manipulability_gradient(state: ArmState) -> Float[Array, " 7"]:
    """``d log m / dq`` (module docs); finite away from singularities."""
    jac = geometric_jacobian(state)
    a = jac @ jac.T + 1e-9 * jnp.eye(6, dtype=jac.dtype)
    b = jnp.linalg.solve(a, jac)  # A^{-1} J, [6, 7]
    h = jacobian_derivative(state)  # [7, 6, 7]
    # tr(A^{-1} H_k J^T) = sum_ij H_k[i, j] (A^{-1} J)[i, j]
    return jnp.einsum("kij,ij->k", h, b)


def float32_limits(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 limits nearest to ``[lower, upper]`` that lie inside it.

    Plain rounding can move a limit outwards (float32(-2.8973) < -2.8973 by 5e-9 rad), so a
    float32 solution clipped to it would fail a float64 ``lower <= q <= upper`` check."""
    lo, hi = np.asarray(lower, np.float32), np.asarray(upper, np.float32)
    lo = np.where(lo.astype(np.float64) < lower, np.nextafter(lo, np.float32(np.inf)), lo)
    hi = np.where(hi.astype(np.float64) > upper, np.nextafter(hi, np.float32(-np.inf)), hi)
    return lo.astype(np.float32), hi.astype(np.float32)


class PandaKinematics:
    """MJX forward kinematics of the Panda arm (build once; :func:`panda_kinematics` shares one)."""

    def __init__(self):
        import mujoco
        from mujoco import mjx

        self.mj_model = panda.load_arm_model()
        # float32 whatever the caller's x64 setting: the instance is shared (panda_kinematics).
        with jax.enable_x64(False):
            self.mjx_model = mjx.put_model(self.mj_model)
            self._data0 = mjx.make_data(self.mjx_model)
        self.site_id = int(
            mujoco.mj_name2id(self.mj_model, mujoco.mjtObj.mjOBJ_SITE, panda.EE_SITE)
        )
        self.lower, self.upper = float32_limits(panda.JOINT_LOWER, panda.JOINT_UPPER)

    def forward(self, q: Float[Array, " 7"], model=None) -> ArmState:
        """Forward kinematics of one configuration ``q`` (rad). ``model`` defaults to the
        stored MJX model, which a jitted caller then compiles in as constants (faster: XLA
        folds the model's numbers into the kernels); pass it as a jit argument instead to keep
        it out of the compiled program."""
        from mujoco import mjx

        model = self.mjx_model if model is None else model
        data = self._data0.replace(qpos=q)
        data = mjx.kinematics(model, data)
        return ArmState(
            position=data.site_xpos[self.site_id],
            rotation=data.site_xmat[self.site_id].reshape(3, 3),
            axes=data.xaxis,
            anchors=data.xanchor,
        )


@functools.lru_cache(maxsize=1)
def panda_kinematics() -> PandaKinematics:
    """The shared :class:`PandaKinematics` (loads the model once per process)."""
    return PandaKinematics()


def rotation_log(m: Float[Array, "3 3"]) -> Float[Array, " 3"]:
    """Axis-angle of a rotation matrix: ``theta / (2 sin theta) * vee(m - m^T)``.

    Cheap and smooth away from ``theta = pi`` (where the axis is ill-defined from the skew part;
    an IK step then still reduces the error). Series near 0."""
    v = jnp.stack([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    cos = jnp.clip((jnp.trace(m) - 1.0) / 2.0, -1.0, 1.0)
    theta = jnp.arccos(cos)
    sin = jnp.sin(theta)
    small = theta < 1e-3
    factor = jnp.where(
        small, 0.5 + theta**2 / 12.0, theta / (2.0 * jnp.where(small, 1.0, jnp.maximum(sin, 1e-6)))
    )
    return factor * v


def solve_spd6(a: Float[Array, "6 6"], b: Float[Array, " 6"]) -> Float[Array, " 6"]:
    """Solve ``a x = b`` for a small symmetric positive definite ``a`` by an unrolled Cholesky
    factorisation (elementwise ops, which batch far better on CPU than LAPACK calls)."""
    n = a.shape[0]
    low = [[None] * n for _ in range(n)]
    for j in range(n):
        d = a[j, j] - sum(low[j][k] ** 2 for k in range(j))
        low[j][j] = jnp.sqrt(jnp.maximum(d, 1e-12))
        for i in range(j + 1, n):
            low[i][j] = (a[i, j] - sum(low[i][k] * low[j][k] for k in range(j))) / low[j][j]
    y = [None] * n
    for i in range(n):
        y[i] = (b[i] - sum(low[i][k] * y[k] for k in range(i))) / low[i][i]
    x = [None] * n
    for i in reversed(range(n)):
        x[i] = (y[i] - sum(low[k][i] * x[k] for k in range(i + 1, n))) / low[i][i]
    return jnp.stack(x)


def pose_error(
    state: ArmState, target_pos: Float[Array, " 3"], target_rot: Float[Array, "3 3"]
) -> tuple[Float[Array, " 3"], Float[Array, " 3"]]:
    """``(p* - p, log(R* R^T))``: the position (m) and rotation (rad, world frame) errors."""
    return target_pos - state.position, rotation_log(target_rot @ state.rotation.T)


def dls_step(
    state: ArmState,
    q: Float[Array, " 7"],
    target_pos: Float[Array, " 3"],
    target_rot: Float[Array, "3 3"],
    *,
    damping: float,
    max_step: float,
    rotation_weight: float,
    lower: Float[Array, " 7"],
    upper: Float[Array, " 7"],
) -> Float[Array, " 7"]:
    """One damped-least-squares IK step from ``q`` (whose kinematics is ``state``):

    e  = [p* - p;  w log(R* R^T)],   J = [J_p; w J_r]
    dq = J^T (J J^T + damping^2 I)^{-1} e,  scaled to norm <= max_step,
    q' = clip(q + dq, lower, upper)."""
    w = jnp.array([1.0, 1.0, 1.0] + [rotation_weight] * 3, q.dtype)
    dp, dr = pose_error(state, target_pos, target_rot)
    err = jnp.concatenate([dp, dr]) * w
    jw = geometric_jacobian(state) * w[:, None]
    dq = jw.T @ solve_spd6(jw @ jw.T + damping**2 * jnp.eye(6, dtype=q.dtype), err)
    norm = jnp.linalg.norm(dq)
    dq = dq * jnp.minimum(1.0, max_step / jnp.maximum(norm, 1e-12))
    return jnp.clip(q + dq, lower, upper)


def joint_limit_margin(q: Float[Array, "*batch 7"]) -> Float[Array, "*batch"]:
    """The smallest distance (rad) of any joint to its nearest limit (negative: outside)."""
    lo = jnp.asarray(panda.JOINT_LOWER, q.dtype)
    hi = jnp.asarray(panda.JOINT_UPPER, q.dtype)
    return jnp.min(jnp.minimum(q - lo, hi - q), axis=-1)


__all__ = [
    "ArmState",
    "PandaKinematics",
    "dls_step",
    "float32_limits",
    "geometric_jacobian",
    "jacobian_derivative",
    "joint_limit_margin",
    "log_manipulability_gradient",
    "manipulability",
    "panda_kinematics",
    "point_jacobian",
    "pose_error",
    "rotation_log",
    "solve_spd6",
]
