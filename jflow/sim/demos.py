"""Demonstration trajectories: embodiment-free object motion and scripted (kinematic) robot grasps.

* Human-style demos: the target object's joints follow a minimum-jerk profile from a randomised
  start to a randomised goal (within the success threshold); the kettle (a free body) is lifted
  along an arc to the named burner. The robot is *hidden from rendering* (its geoms sit in geom
  group ``ROBOT_GEOM_GROUP``, switched off): the Franka is mounted in the middle of the kitchen,
  in front of every useful view, so no parking pose is out of view. It still gets a randomised
  pose (recorded in the state).
* Robot demos (tasks with a ``grasp_site``): the end-effector site follows the grasped handle with
  a fixed handle-relative orientation, by damped-least-squares IK on the 7 arm joints (numpy
  with MuJoCo Jacobians), warm-started frame to frame. Kinematic: no contact physics.
"""

from __future__ import annotations

import mujoco
import numpy as np

from jflow.errors import ConfigError, SimulationError
from jflow.sim import kitchen_constants as kc
from jflow.sim.model import KitchenModel
from jflow.sim.tasks import Task


def minimum_jerk(frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Phase ``s [T]`` in ``[0, 1]``: minimum-jerk ``10t^3 - 15t^4 + 6t^5``, optionally with a
    random short hold at the start and end (so motion onset varies between episodes)."""
    t = np.linspace(0.0, 1.0, frames)
    a, b = (0.0, 1.0) if rng is None else (rng.uniform(0.0, 0.12), rng.uniform(0.88, 1.0))
    tau = np.clip((t - a) / (b - a), 0.0, 1.0)
    return 10 * tau**3 - 15 * tau**4 + 6 * tau**5


def _quat_normalize(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q)


def _slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    q0, q1 = _quat_normalize(q0), _quat_normalize(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        return _quat_normalize(q0 + s * (q1 - q0))
    theta = np.arccos(dot)
    return (np.sin((1 - s) * theta) * q0 + np.sin(s * theta) * q1) / np.sin(theta)


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def sample_endpoints(
    kitchen: KitchenModel,
    task: Task,
    rng: np.random.Generator,
    randomize: bool,
    start_spread: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end qpos values ``[k]`` of the task's joints (randomised within the regions).

    ``start_spread`` multiplies the task's start noise (``Task.start_noise``; the goal noise
    stays): above 1 the object starts in a visibly different state from episode to episode
    (a door already ajar, the kettle shifted and turned), which the first frame shows.
    """
    if not start_spread >= 0:
        raise ConfigError(f"start_spread must be >= 0, got {start_spread}")
    start = np.asarray(task.start, np.float64).copy()
    goal = np.asarray(task.goal, np.float64).copy()
    if task.is_free_body:
        start[3:] = _quat_normalize(start[3:])
        goal[3:] = _quat_normalize(goal[3:])
    if randomize:
        for values, noise in (
            (start, np.asarray(task.start_noise) * start_spread),
            (goal, np.asarray(task.goal_noise)),
        ):
            if task.is_free_body:
                values[:2] += rng.uniform(-1, 1, 2) * noise[:2]
                yaw = rng.uniform(-1, 1) * noise[6] * 5.0
                quat = np.zeros(4)
                mujoco.mju_mulQuat(quat, _yaw_quat(yaw), values[3:])
                values[3:] = quat
            else:
                values += rng.uniform(-1, 1, values.shape) * noise
    if not task.is_free_body:
        idx = kitchen.qpos_indices(task.joints)
        lo = np.array([kitchen.model.jnt_range[kitchen.model.joint(j).id][0] for j in task.joints])
        hi = np.array([kitchen.model.jnt_range[kitchen.model.joint(j).id][1] for j in task.joints])
        del idx
        start, goal = np.clip(start, lo, hi), np.clip(goal, lo, hi)
    if not task.is_success(goal):  # noise never pushes the demo's end out of the success region
        goal = np.asarray(task.goal, np.float64).copy()
        if task.is_free_body:
            goal[3:] = _quat_normalize(goal[3:])
    return start, goal


def object_trajectory(
    task: Task,
    start: np.ndarray,
    goal: np.ndarray,
    frames: int,
    rng: np.random.Generator | None = None,
    lift: float | None = None,
) -> np.ndarray:
    """``[T, k]`` qpos values of the task's joints along a smooth demo from ``start`` to ``goal``."""
    s = minimum_jerk(frames, rng)
    if not task.is_free_body:
        return start[None] + s[:, None] * (goal - start)[None]
    height = task.lift if lift is None else lift
    out = np.zeros((frames, 7))
    for i, si in enumerate(s):
        out[i, :3] = start[:3] + si * (goal[:3] - start[:3])
        out[i, 2] += height * np.sin(np.pi * si)
        out[i, 3:] = _slerp(start[3:], goal[3:], si)
    return out


def randomized_scene_qpos(
    kitchen: KitchenModel, task: Task, home: np.ndarray, rng: np.random.Generator, randomize: bool
) -> np.ndarray:
    """Home qpos with small random states of the *other* objects and a perturbed robot pose."""
    qpos = home.copy()
    if not randomize:
        return qpos
    model = kitchen.model
    qpos[:7] += rng.normal(0.0, 0.05, 7)
    target = set(task.joints)
    for joints in kc.OBJECT_JOINTS.values():
        if target & set(joints):
            continue
        for name in joints:
            j = model.joint(name).id
            sl = kitchen.joint_qpos[name]
            if int(model.jnt_type[j]) == mujoco.mjtJoint.mjJNT_FREE:
                qpos[sl.start : sl.start + 2] += rng.uniform(-0.01, 0.01, 2)
                continue
            lo, hi = model.jnt_range[j]
            closed = 0.0 if lo <= 0.0 <= hi else lo
            span = hi - lo
            direction = 1.0 if hi > closed else -1.0
            qpos[sl.start] = np.clip(closed + direction * rng.uniform(0, 0.05) * span, lo, hi)
    return qpos


# --- inverse kinematics -------------------------------------------------------------------------


def _rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector taking ``current`` to ``target`` (3x3 matrices)."""
    err = target @ current.T
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, err.reshape(-1))
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


def solve_ik(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    site: int,
    target_pos: np.ndarray,
    target_mat: np.ndarray,
    iterations: int = 100,
    damping: float = 0.05,
    rotation_weight: float = 0.03,
    tolerance: float = 1e-3,
) -> float:
    """Move ``data.qpos[:7]`` so site ``site`` reaches the target pose; returns the position error.

    Damped least squares on the arm joints (qpos/dof 0..6), clipped to joint limits.
    """
    jacp = np.zeros((3, model.nv))
    jacr = np.zeros((3, model.nv))
    lo, hi = model.jnt_range[:7, 0], model.jnt_range[:7, 1]
    err_pos = np.inf
    for _ in range(iterations):
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        pos = data.site_xpos[site]
        mat = data.site_xmat[site].reshape(3, 3)
        e_pos = target_pos - pos
        e_rot = _rotation_error(target_mat, mat)
        err_pos = float(np.linalg.norm(e_pos))
        if err_pos < tolerance and np.linalg.norm(e_rot) < 10 * tolerance:
            break
        mujoco.mj_jacSite(model, data, jacp, jacr, site)
        jac = np.concatenate([jacp[:, :7], rotation_weight * jacr[:, :7]])
        err = np.concatenate([e_pos, rotation_weight * e_rot])
        dq = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * np.eye(6), err)
        step = np.linalg.norm(dq)
        if step > 0.2:
            dq *= 0.2 / step
        data.qpos[:7] = np.clip(data.qpos[:7] + dq, lo, hi)
    mujoco.mj_kinematics(model, data)
    return err_pos


def robot_trajectory(
    kitchen: KitchenModel,
    model: mujoco.MjModel,
    data: mujoco.MjData,
    task: Task,
    qpos_frames: np.ndarray,
    finger: float = 0.015,
    max_error: float = 0.02,
) -> np.ndarray:
    """Arm+finger qpos ``[T, 9]`` whose end effector holds the task's grasp site in every frame.

    ``qpos_frames [T, nq]`` holds the scene (object joints) per frame; its robot part at frame 0
    seeds the IK. The gripper keeps the orientation of the home pose relative to the handle's
    body. Raises :class:`SimulationError` if the handle is out of reach.
    """
    if task.grasp_site is None:
        raise SimulationError(f"task {task.task_id!r} has no scripted robot demo")
    site = kitchen.site_id(kc.ROBOT_EE_SITE)
    handle = kitchen.site_id(task.grasp_site)
    handle_body = int(model.site_bodyid[handle])
    out = np.zeros((len(qpos_frames), kc.ROBOT_NQ))
    # Home gripper orientation (approach along +y, into the kitchen).
    data.qpos[:] = qpos_frames[0]
    data.qpos[: kc.ROBOT_NQ] = kc.ROBOT_HOME_QPOS
    mujoco.mj_kinematics(model, data)
    grip_home = data.site_xmat[site].reshape(3, 3).copy()
    body0 = data.xmat[handle_body].reshape(3, 3).copy()
    body_from_grip = body0.T @ grip_home
    arm = qpos_frames[0, :7].copy()
    for t, qpos in enumerate(qpos_frames):
        data.qpos[:] = qpos
        data.qpos[:7] = arm
        mujoco.mj_kinematics(model, data)
        target_pos = data.site_xpos[handle].copy()
        target_mat = data.xmat[handle_body].reshape(3, 3) @ body_from_grip
        err = solve_ik(model, data, site, target_pos, target_mat, iterations=300 if t == 0 else 60)
        if err > max_error:
            raise SimulationError(
                f"IK could not reach {task.grasp_site!r} in frame {t} (error {err:.3f} m)"
            )
        arm = data.qpos[:7].copy()
        out[t, :7] = arm
        out[t, 7:9] = finger
    return out
