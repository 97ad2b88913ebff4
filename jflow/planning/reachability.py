"""Batched reachability: damped-least-squares inverse kinematics of the Panda on MJX.

3DFlowAction (section 4.2) keeps the grasps whose poses before, during and after the motion
the arm can reach, checking each with a call to an IK solver. Here every candidate pose is solved
in one jitted, vmapped call over MJX forward kinematics of the arm-only model
(:class:`jflow.robots.kinematics.PandaKinematics`) and the geometric Jacobian from the joint
axes and anchors it computes.

The solver, per target pose ``(p*, R*)`` of the ``end_effector`` site (world frame):

    e  = [p* - p(q);  w_rot * log(R* R(q)^T)]              (6-vector, m and weighted rad)
    J  = [J_p(q); w_rot * J_r(q)]     (6 x 7: J_p = a_j x (p - c_j), J_r = a_j, joint axes/anchors)
    dq = J^T (J J^T + lambda^2 I)^{-1} e,  scaled to norm <= max_step
    q  <- clip(q + dq, lower, upper)                         (the joint limits, every step)

with the limits of :data:`jflow.robots.panda.JOINT_LOWER` / ``JOINT_UPPER``: the model's joint
ranges intersected with the kitchen env's actuator and position limits (joint 6 >= 0 rad),
rounded inwards to float32 (:func:`jflow.robots.kinematics.float32_limits`) so that a solution
on a limit passes a float64 limit check.

for ``iterations`` steps from each of ``num_seeds`` starting configurations (the home pose, then
fixed pseudo-random ones within the limits); the seed with the smallest final error wins. A pose
is *reachable* when its position error is below ``position_tolerance`` and its rotation error
below ``rotation_tolerance``. :func:`mujoco_reference_ik` runs the same algorithm one candidate at
a time through MuJoCo's C API (``mj_kinematics``, ``mj_comPos``, ``mj_jacSite``): the baseline of
``benchmarks/reachability.py``.

Scene collisions are not checked (the robot-only model has no geoms; see docs/planning.md).
MJX kinematics on CPU needs XLA's fusion emitters off: the solve is compiled with
:func:`jflow.runtime.planning_jit`, which sets that (and fast math) for this function alone.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import jax_dataclasses as jdc
import jaxlie
import numpy as np
from jaxtyping import Array, Bool, Float

from jflow.errors import ConfigError, ShapeError
from jflow.robots import panda
from jflow.robots.kinematics import dls_step, panda_kinematics, pose_error
from jflow.runtime import planning_jit


@dataclasses.dataclass(frozen=True)
class IKConfig:
    """Settings of the damped-least-squares IK (hashable)."""

    iterations: int = 30
    damping: float = 0.05
    """``lambda`` of the damped least squares step."""
    max_step: float = 0.4
    """Largest joint-space step per iteration (rad, l2 norm)."""
    rotation_weight: float = 0.3
    """Meters per radian when mixing rotation and position errors."""
    num_seeds: int = 6
    """Starting configurations per pose. DLS is local: on grasp poses of the synthetic kitchen
    motions, 2 seeds reached 5 of 9 poses, 6 seeds all 9 (same result at 60 iterations)."""
    position_tolerance: float = 0.01
    rotation_tolerance: float = 0.1
    seed: int = 0
    """Seed of the pseudo-random starting configurations after the home pose."""

    def __post_init__(self):
        if self.iterations < 1 or self.num_seeds < 1:
            raise ConfigError(
                f"iterations and num_seeds must be >= 1, got {self.iterations}, {self.num_seeds}"
            )
        if not (self.damping > 0 and self.max_step > 0 and self.rotation_weight > 0):
            raise ConfigError("damping, max_step and rotation_weight must be positive")


@jdc.pytree_dataclass
class IKResult:
    """IK solutions for a batch of target poses (leading axis B)."""

    qpos: Float[Array, "B 7"]
    """Arm joint angles (rad), always within the joint limits."""
    position_error: Float[Array, " B"]
    """Distance (m) between the reached and the target site position."""
    rotation_error: Float[Array, " B"]
    """Angle (rad) between the reached and the target site orientation."""
    reachable: Bool[Array, " B"]


def seed_configurations(config: IKConfig) -> np.ndarray:
    """``[num_seeds, 7]`` starting joint angles: the home pose, then uniform within the limits."""
    rng = np.random.default_rng(config.seed)
    lo, hi = panda.JOINT_LOWER, panda.JOINT_UPPER
    extra = rng.uniform(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo), size=(config.num_seeds - 1, 7))
    return np.concatenate([panda.HOME_QPOS[None], extra], axis=0).astype(np.float32)


class PandaReachability:
    """Batched Panda IK on MJX: ``checker(poses) -> IKResult`` for ``world_from_ee`` poses.

    Build once (it loads the robot-only model and puts it on the device); each call is one
    jitted, vmapped solve over all poses (recompiles only for a new batch size).
    """

    def __init__(self, config: IKConfig = IKConfig(), *, fast_math: bool = True):
        """Prefer :func:`panda_reachability`, which shares one instance (and its compiled
        solves) per config. ``fast_math=False`` compiles the solve with strict IEEE arithmetic
        (slower on CPU; the benchmark compares both)."""
        self.config = config
        self.kinematics = panda_kinematics()
        self.mj_model = self.kinematics.mj_model
        self.mjx_model = self.kinematics.mjx_model
        self.seeds = jnp.asarray(seed_configurations(config))
        # The MJX model is closed over, so it is a compile-time constant: XLA folds the joint
        # axes (all z), the zero joint offsets and the body frames into the fused kernels
        # (8 to 15% less CPU time per solve than passing the model as an argument). XLA's CPU
        # fast math takes a further 11 to 14% off the solve (non-finite poses are refused
        # before it, in __call__).
        self._solve = planning_jit(
            functools.partial(self._solve_batch, self.mjx_model), fast_math=fast_math
        )
        self._fk = planning_jit(jax.vmap(functools.partial(self._site_pose, self.mjx_model)))

    def _site_pose(self, model, q):
        state = self.kinematics.forward(q, model)
        return state.position, state.rotation

    def _solve_seed(self, model, q0, target_pos, target_rot):
        """``iterations`` DLS steps from ``q0``: ``(q, position error, rotation error)``."""
        cfg, kin = self.config, self.kinematics

        def step(i, carry):
            # iterations + 1 passes through one forward kinematics: the last only measures the
            # error (one copy of MJX kinematics in the compiled program, not two).
            q, _, _ = carry
            state = kin.forward(q, model)
            dp, dr = pose_error(state, target_pos, target_rot)
            q_next = dls_step(
                state,
                q,
                target_pos,
                target_rot,
                damping=cfg.damping,
                max_step=cfg.max_step,
                rotation_weight=cfg.rotation_weight,
                lower=kin.lower,
                upper=kin.upper,
            )
            q = jnp.where(i < cfg.iterations, q_next, q)
            return q, jnp.linalg.norm(dp), jnp.linalg.norm(dr)

        init = (q0, jnp.zeros((), q0.dtype), jnp.zeros((), q0.dtype))
        return jax.lax.fori_loop(0, cfg.iterations + 1, step, init)

    def _solve_batch(self, model, target_pos, target_rot) -> IKResult:
        """Every (pose, seed) pair as one flat vmapped batch (``[B * seeds]``; in paired runs
        6 to 14% less CPU time per call than vmapping the seeds inside the poses,
        docs/benchmarks.md), then the best seed of each pose."""
        cfg = self.config
        n, s = target_pos.shape[0], self.seeds.shape[0]
        qs, perr, rerr = jax.vmap(functools.partial(self._solve_seed, model))(
            jnp.tile(self.seeds, (n, 1)),
            jnp.repeat(target_pos, s, axis=0),
            jnp.repeat(target_rot, s, axis=0),
        )
        qs, perr, rerr = qs.reshape(n, s, 7), perr.reshape(n, s), rerr.reshape(n, s)
        best = (jnp.arange(n), jnp.argmin(perr + cfg.rotation_weight * rerr, axis=1))
        perr, rerr = perr[best], rerr[best]
        return IKResult(
            qpos=qs[best],
            position_error=perr,
            rotation_error=rerr,
            reachable=(perr < cfg.position_tolerance) & (rerr < cfg.rotation_tolerance),
        )

    def __call__(self, poses: jaxlie.SE3) -> IKResult:
        """Solve IK for ``world_from_ee`` poses with any leading batch shape ``[*B]``."""
        wxyz_xyz = jnp.asarray(poses.wxyz_xyz, jnp.float32)
        if wxyz_xyz.shape[-1] != 7:
            raise ShapeError(f"poses must be SE3 with wxyz_xyz [..., 7], got {wxyz_xyz.shape}")
        batch = wxyz_xyz.shape[:-1]
        flat = wxyz_xyz.reshape(-1, 7)
        count = flat.shape[0]
        if count == 0:
            raise ShapeError("no poses to check")
        if not isinstance(flat, jax.core.Tracer):
            # Checked before the solve: it is compiled with fast math, under which a NaN may
            # not survive to the result (jflow.runtime.FAST_MATH_OPTIONS).
            bad = np.flatnonzero(~np.all(np.isfinite(np.asarray(flat)), axis=1))
            if bad.size:
                raise ShapeError(
                    f"poses must be finite: {bad.size} of {count} contain NaN or Inf "
                    f"(first at flat index {int(bad[0])})"
                )
        # Pad to a power of two (at least 64) so that varying batch sizes share compilations.
        padded = max(64, 1 << (count - 1).bit_length())
        flat = jnp.concatenate([flat, jnp.broadcast_to(flat[:1], (padded - count, 7))], axis=0)
        se3 = jaxlie.SE3(flat)
        out = self._solve(se3.translation(), se3.rotation().as_matrix())
        return jax.tree.map(lambda a: a[:count].reshape(batch + a.shape[1:]), out)

    def forward_kinematics(self, qpos: Float[Array, "B 7"]) -> jaxlie.SE3:
        """``world_from_ee`` of the site for a batch of arm configurations."""
        pos, rot = self._fk(jnp.asarray(qpos, jnp.float32))
        return jaxlie.SE3.from_rotation_and_translation(jaxlie.SO3.from_matrix(rot), pos)


@functools.lru_cache(maxsize=4)
def panda_reachability(config: IKConfig = IKConfig()) -> PandaReachability:
    """A shared :class:`PandaReachability` for ``config`` (compiles once per batch bucket)."""
    return PandaReachability(config)


def _np_rotation_log(m: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    v = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    if angle < 1e-6:
        return 0.5 * v
    if np.pi - angle < 1e-4:  # near pi: axis from the symmetric part
        sym = (m + np.eye(3)) / 2.0
        axis = sym[np.argmax(np.diag(sym))]
        axis = axis / np.linalg.norm(axis)
        return angle * axis
    return angle / (2.0 * np.sin(angle)) * v


def mujoco_reference_ik(
    target_pos: np.ndarray,
    target_rot: np.ndarray,
    config: IKConfig = IKConfig(),
    model=None,
    *,
    early_exit: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same IK, one candidate at a time, through MuJoCo's C API (the benchmark baseline).

    Args:
        target_pos: ``[B, 3]`` site positions (world, m).
        target_rot: ``[B, 3, 3]`` site rotations.
        early_exit: stop a seed's iterations as soon as the pose is within the tolerances, and
            a candidate's seeds at the first one that reaches it (what a per-call IK loop does
            when it need not mirror a batched one step for step). Decisions are the same;
            solutions differ slightly (fewer steps).

    Returns:
        ``(qpos [B, 7], position_error [B], rotation_error [B], reachable [B])``.
    """
    import mujoco

    model = panda.load_arm_model() if model is None else model
    data = mujoco.MjData(model)
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, panda.EE_SITE)
    qadr, dadr = panda.arm_qpos_indices(model), panda.arm_dof_indices(model)
    seeds = seed_configurations(config).astype(np.float64)
    w = np.array([1.0, 1.0, 1.0] + [config.rotation_weight] * 3)
    jacp, jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
    eye = config.damping**2 * np.eye(6)
    b = len(target_pos)
    out_q, out_p, out_r = np.zeros((b, 7)), np.zeros(b), np.zeros(b)

    def fk(q):
        data.qpos[qadr] = q
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)  # mj_jacSite reads cdof and subtree_com
        return data.site_xpos[site].copy(), data.site_xmat[site].reshape(3, 3).copy()

    for i in range(b):
        best = None
        for q0 in seeds:
            q = q0.copy()
            for _ in range(config.iterations):
                pos, rot = fk(q)
                dp, dr = target_pos[i] - pos, _np_rotation_log(target_rot[i] @ rot.T)
                if early_exit and (
                    np.linalg.norm(dp) < config.position_tolerance
                    and np.linalg.norm(dr) < config.rotation_tolerance
                ):
                    break
                mujoco.mj_jacSite(model, data, jacp, jacr, site)
                jac = np.concatenate([jacp[:, dadr], jacr[:, dadr]]) * w[:, None]
                err = np.concatenate([dp, dr]) * w
                dq = jac.T @ np.linalg.solve(jac @ jac.T + eye, err)
                norm = np.linalg.norm(dq)
                dq *= min(1.0, config.max_step / max(norm, 1e-12))
                q = np.clip(q + dq, panda.JOINT_LOWER, panda.JOINT_UPPER)
            pos, rot = fk(q)
            perr = float(np.linalg.norm(target_pos[i] - pos))
            rerr = float(np.linalg.norm(_np_rotation_log(target_rot[i] @ rot.T)))
            score = perr + config.rotation_weight * rerr
            if best is None or score < best[0]:
                best = (score, q, perr, rerr)
            if early_exit and perr < config.position_tolerance and rerr < config.rotation_tolerance:
                break
        _, out_q[i], out_p[i], out_r[i] = best
    reachable = (out_p < config.position_tolerance) & (out_r < config.rotation_tolerance)
    return out_q, out_p, out_r, reachable


__all__ = [
    "IKConfig",
    "IKResult",
    "PandaReachability",
    "mujoco_reference_ik",
    "panda_reachability",
    "seed_configurations",
]
