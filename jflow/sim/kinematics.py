"""End-effector kinematics of the kitchen's Panda: forward kinematics and numerical IK.

Poses are world_from_ee of the ``end_effector`` site (between the fingertips; its z axis is the
approach direction, the fingers close along its y axis), as 4x4 matrices or jaxlie's
``wxyz_xyz`` layout ``[7]`` (quaternion w, x, y, z, then translation, meters). The IK is damped
least squares on the 7 arm joints with MuJoCo Jacobians (numpy, CPU) on the robot-only model, warm-started from a seed,
with a weak pull towards the seed in the Jacobian's null space, clipped to the joint limits that
both the model and FrankaKitchen's action interface allow (``ROBOT_POSITION_BOUNDS``).
"""

from __future__ import annotations

import dataclasses
import functools

import mujoco
import numpy as np
from jaxtyping import Float

from jflow.errors import ConfigError, ShapeError
from jflow.sim import kitchen_constants as kc

ARM_NQ = 7


def pose_matrix(wxyz_xyz: Float[np.ndarray, " 7"]) -> Float[np.ndarray, "4 4"]:
    """4x4 homogeneous matrix of a ``wxyz_xyz`` pose (the quaternion is normalised)."""
    p = np.asarray(wxyz_xyz, np.float64)
    if p.shape != (7,) or not np.all(np.isfinite(p)):
        raise ShapeError(f"a pose is 7 finite numbers (w, x, y, z, tx, ty, tz), got {p!r}")
    norm = np.linalg.norm(p[:4])
    if norm < 1e-9:
        raise ShapeError("a pose's quaternion has zero norm")
    out = np.eye(4)
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, p[:4] / norm)
    out[:3, :3] = mat.reshape(3, 3)
    out[:3, 3] = p[4:]
    return out


def pose_wxyz_xyz(matrix: Float[np.ndarray, "4 4"]) -> Float[np.ndarray, " 7"]:
    """``wxyz_xyz`` of a 4x4 rigid transform (w >= 0)."""
    m = np.asarray(matrix, np.float64)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(m[:3, :3]).reshape(-1))
    if quat[0] < 0:
        quat = -quat
    return np.concatenate([quat, m[:3, 3]])


def as_pose_matrices(poses) -> Float[np.ndarray, "T 4 4"]:
    """End-effector poses as ``[T, 4, 4]``: from ``[T, 4, 4]``, ``[T, 7]`` wxyz_xyz, or an object
    with a ``wxyz_xyz`` attribute (a batched ``jaxlie.SE3``). Non-finite values: ShapeError."""
    if hasattr(poses, "wxyz_xyz"):
        poses = poses.wxyz_xyz
    arr = np.asarray(poses, np.float64)
    if arr.ndim == 3 and arr.shape[1:] == (4, 4):
        if not np.all(np.isfinite(arr)):
            raise ShapeError("end-effector poses contain NaN or inf")
        return arr.copy()
    if arr.ndim == 2 and arr.shape[1] == 7:
        return np.stack([pose_matrix(p) for p in arr]) if len(arr) else np.zeros((0, 4, 4))
    raise ShapeError(
        f"end-effector poses must be [T, 7] wxyz_xyz or [T, 4, 4] matrices, got shape {arr.shape}"
    )


def rotation_error(target: np.ndarray, current: np.ndarray) -> Float[np.ndarray, " 3"]:
    """World-frame rotation vector (rad) taking rotation matrix ``current`` to ``target``."""
    err = np.ascontiguousarray(target @ current.T)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, err.reshape(-1))
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


@dataclasses.dataclass(frozen=True)
class IKConfig:
    """Damped-least-squares IK settings.

    ``position_tolerance`` (m) and ``rotation_tolerance`` (rad) stop the iterations;
    ``rotation_scale`` (m/rad) weighs orientation against position; ``damping`` regularises the
    solve; ``max_step`` (rad) caps each update; ``posture_gain`` pulls towards the seed in the
    null space; ``limit_margin`` (rad) keeps solutions inside the limits.
    """

    iterations: int = 200
    position_tolerance: float = 1e-3
    rotation_tolerance: float = 1e-2
    rotation_scale: float = 0.2
    damping: float = 0.02
    max_step: float = 0.2
    posture_gain: float = 0.05
    limit_margin: float = 0.02

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.position_tolerance <= 0 or self.rotation_tolerance <= 0:
            raise ConfigError(f"IK iterations and tolerances must be positive: {self}")


@dataclasses.dataclass(frozen=True)
class IKResult:
    """Arm joints ``q [7]`` (rad) and the remaining position (m) and rotation (rad) errors."""

    q: np.ndarray
    position_error: float
    rotation_error: float

    def ok(self, position_tolerance: float = 0.005, rotation_tolerance: float = 0.05) -> bool:
        return self.position_error <= position_tolerance and (
            self.rotation_error <= rotation_tolerance
        )


@functools.cache
def _robot_model() -> mujoco.MjModel:
    from jflow.robots.panda import load_panda_model  # noqa: PLC0415 (compiles a model)

    return load_panda_model()


class PandaKinematics:
    """FK and IK of the ``end_effector`` site, on the robot-only model of
    :func:`jflow.robots.panda.load_panda_model` (the kitchen's Panda at the kitchen's base pose,
    so poses are in the kitchen's world frame; the scene does not change the arm's kinematics)."""

    def __init__(self, config: IKConfig = IKConfig()):
        self.model = _robot_model()
        self.config = config
        self.data = mujoco.MjData(self.model)
        self.site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, kc.ROBOT_EE_SITE)
        bounds = np.asarray(kc.ROBOT_POSITION_BOUNDS[:ARM_NQ])
        lo = np.maximum(self.model.jnt_range[:ARM_NQ, 0], bounds[:, 0])
        hi = np.minimum(self.model.jnt_range[:ARM_NQ, 1], bounds[:, 1])
        self.lower = lo + config.limit_margin
        self.upper = hi - config.limit_margin
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self._eye6 = (config.damping**2) * np.eye(6)
        self._eye7 = np.eye(ARM_NQ)

    def _set(self, arm: np.ndarray) -> None:
        self.data.qpos[:ARM_NQ] = arm
        mujoco.mj_kinematics(self.model, self.data)

    def forward(self, arm: Float[np.ndarray, " 7"]) -> Float[np.ndarray, "4 4"]:
        """world_from_ee (4x4) for arm joints ``arm [7]`` (rad)."""
        arm = np.asarray(arm, np.float64).reshape(-1)
        if arm.shape[0] < ARM_NQ or not np.all(np.isfinite(arm[:ARM_NQ])):
            raise ShapeError(f"forward kinematics needs 7 finite arm joints, got {arm!r}")
        self._set(arm[:ARM_NQ])
        out = np.eye(4)
        out[:3, :3] = self.data.site_xmat[self.site].reshape(3, 3)
        out[:3, 3] = self.data.site_xpos[self.site]
        return out

    def _limited_step(self, jac, err, arm, posture) -> np.ndarray:
        """A damped least-squares step in which joints at a limit that the step would push
        further out are locked (their columns removed), so the others take over."""
        free = np.ones(ARM_NQ, bool)
        dq = np.zeros(ARM_NQ)
        pull = self.config.posture_gain * (posture - arm)
        for _ in range(ARM_NQ):
            j = jac * free[None]
            sol = np.linalg.solve(j @ j.T + self._eye6, np.column_stack([err, j]))
            dq = j.T @ sol[:, 0]
            dq += ((self._eye7 - j.T @ sol[:, 1:]) @ pull) * free
            out = ((arm <= self.lower + 1e-9) & (dq < 0)) | ((arm >= self.upper - 1e-9) & (dq > 0))
            if not (out & free).any():
                break
            free &= ~out
        return dq

    def _errors(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = self.data
        e_pos = target[:3, 3] - d.site_xpos[self.site]
        e_rot = rotation_error(target[:3, :3], d.site_xmat[self.site].reshape(3, 3))
        return e_pos, e_rot

    def solve(self, target: Float[np.ndarray, "4 4"], seed: Float[np.ndarray, " 7"]) -> IKResult:
        """Arm joints putting the site at ``target`` (world_from_ee), iterating from ``seed``
        (rad). Stops when within the tolerances, after ``iterations``, or when the error stalls
        (a limit or a local minimum)."""
        cfg = self.config
        target = np.asarray(target, np.float64)
        if target.shape != (4, 4) or not np.all(np.isfinite(target)):
            raise ShapeError(f"an IK target is a finite 4x4 pose, got shape {target.shape}")
        arm = np.asarray(seed, np.float64).reshape(-1)[:ARM_NQ]
        if arm.shape != (ARM_NQ,) or not np.all(np.isfinite(arm)):
            raise ShapeError(f"an IK seed is 7 finite arm joints, got {seed!r}")
        arm = np.clip(arm, self.lower, self.upper)
        posture = arm.copy()
        m, d = self.model, self.data
        history: list[float] = []
        for it in range(cfg.iterations + 1):
            self._set(arm)
            e_pos, e_rot = self._errors(target)
            pos_err, rot_err = float(np.linalg.norm(e_pos)), float(np.linalg.norm(e_rot))
            if pos_err < cfg.position_tolerance and rot_err < cfg.rotation_tolerance:
                break
            total = pos_err + cfg.rotation_scale * rot_err
            history.append(total)
            if it == cfg.iterations or (it >= 20 and total > 0.99 * history[-11]):
                break
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.site)
            jac = np.concatenate(
                [self._jacp[:, :ARM_NQ], cfg.rotation_scale * self._jacr[:, :ARM_NQ]]
            )
            err = np.concatenate([e_pos, cfg.rotation_scale * e_rot])
            dq = self._limited_step(jac, err, arm, posture)
            step = float(np.abs(dq).max())
            if step > cfg.max_step:
                dq *= cfg.max_step / step
            arm = np.clip(arm + dq, self.lower, self.upper)
        return IKResult(arm.copy(), pos_err, rot_err)

    def reachable_prefix(
        self,
        poses: Float[np.ndarray, "T 4 4"],
        seed: Float[np.ndarray, " 7"],
        *,
        position_tolerance: float = 0.005,
        rotation_tolerance: float = 0.05,
    ) -> tuple[int, Float[np.ndarray, "P 7"]]:
        """How many leading poses of a path the arm reaches, IK warm-started from ``seed`` and
        then pose to pose (one continuous joint path), and their joints ``[P, 7]``."""
        arm = np.asarray(seed, np.float64)[:ARM_NQ]
        out = []
        for pose in poses:
            result = self.solve(pose, arm)
            if not result.ok(position_tolerance, rotation_tolerance):
                break
            arm = result.q
            out.append(arm)
        return len(out), np.asarray(out).reshape(-1, ARM_NQ)
