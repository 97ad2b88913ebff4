"""Grasps in the kitchen: where the gripper holds each task's object, grasp-and-carry pose plans,
and a physical grasp test.

A :class:`GraspSpec` names the model site the gripper centre (the ``end_effector`` site) holds
and the gripper orientation (the site's z axis is the approach, its y axis the closing axis):

* ``"front"`` keeps the orientation of the robot's home pose: approach along +y into the
  kitchen, fingers closing along the world x axis, across the vertical door handles;
* ``"side"`` approaches horizontally across a horizontal bar (the kettle's handle runs along its
  body's x axis), away from the robot's base, with the fingers closing vertically: the bar rests
  on the lower finger, so the load is carried by contact normal force, not by friction;
* ``"top_down"`` approaches along the body's -z with the fingers closing along its y axis. For
  the kettle it is a friction-only hold, and MuJoCo's soft friction lets the 0.9 kg kettle
  creep down the fingers (about 1.5 cm/s at the 16 N the env's finger servo can squeeze with)
  until it drops; it is kept for objects that are light or cannot be held otherwise. Of the two
  finger orderings the one closer to the current hand orientation is used.

:meth:`GraspGeometry.grasp_candidates` turns the nominal grasp about the bar's axis and tilts it
about the closing axis (a bar is held the same way from all of those), and :func:`select_grasp`
keeps the first candidate whose whole path (joint move to the pre-grasp, approach, carry) the
arm reaches by IK without hitting the kitchen (the reachability filter 3DFlowAction applies to
its grasp candidates).

:func:`approach_plan`, :func:`carry_and_release` and :func:`grasp_and_carry` build the
:class:`~jflow.sim.execution.PosePlan` of a grasp: an open gripper at the pre-grasp pose
(``pre_grasp`` meters back along the approach axis), a straight approach, closing at the grasp
pose, the carry poses (closed), then opening and a straight retreat.
:meth:`GraspGeometry.is_grasped` asks the physics: both fingers touch the object and the gripper
is not shut.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import mujoco
import numpy as np
from jaxtyping import Float

from jflow.errors import ConfigError, ShapeError, UnknownNameError
from jflow.robots.panda import BASE_POS
from jflow.sim import kitchen_constants as kc
from jflow.sim.env import KitchenEnv, KitchenState
from jflow.sim.execution import GRIPPER_CLOSED, GRIPPER_OPEN, PosePlan
from jflow.sim.kinematics import PandaKinematics, as_pose_matrices, rotation_error
from jflow.sim.model import home_qpos
from jflow.sim.tasks import get_task

APPROACHES = ("front", "side", "top_down")


@dataclasses.dataclass(frozen=True)
class GraspSpec:
    """Where and how the gripper holds a task's object.

    Attributes:
      site: model site the gripper centre holds (on the handle's axis).
      approach: ``"front"``, ``"top_down"`` or ``"side"`` (module docs).
      depth_offset: the gripper centre stops this far (m) short of the site along the approach
        axis (0: the handle's axis is between the finger pads' centres; 1 cm short, the door
        handles slid out of the fingertips in 5 of 10 microwave episodes).
      pre_grasp: distance (m) of the pre-grasp pose back along the approach axis.
      retreat: distance (m) the open gripper backs off after the release.
    """

    site: str
    approach: str = "front"
    depth_offset: float = 0.0
    pre_grasp: float = 0.10
    retreat: float = 0.08

    def __post_init__(self) -> None:
        if self.approach not in APPROACHES:
            raise UnknownNameError("grasp approach", self.approach, APPROACHES)
        if self.pre_grasp <= 0 or self.retreat < 0:
            raise ConfigError(f"pre_grasp must be > 0 and retreat >= 0 m: {self}")


_KETTLE_GRASP = GraspSpec("kettle_site", approach="side", depth_offset=0.0, retreat=0.1)


def grasp_spec(task_id: str) -> GraspSpec:
    """The grasp of a task: its ``grasp_site`` (on the handle's axis) held from the front, or
    the kettle's handle (``kettle_site``) from the side. Tasks with neither (knobs, light switch)
    raise ConfigError."""
    task = get_task(task_id)
    if task.is_free_body:
        return _KETTLE_GRASP
    if task.grasp_site is None:
        raise ConfigError(f"task {task_id!r} has no grasp (no grasp_site)")
    return GraspSpec(task.grasp_site, approach="front")


def axis_rotation(axis: np.ndarray, angle: float) -> Float[np.ndarray, "3 3"]:
    """Rotation matrix of ``angle`` rad about the unit vector ``axis``."""
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    quat = np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])
    out = np.zeros(9)
    mujoco.mju_quat2Mat(out, quat)
    return out.reshape(3, 3)


def _half_turn(matrix: np.ndarray) -> np.ndarray:
    """The same approach axis with the fingers swapped (half turn about the local z axis)."""
    return matrix @ np.diag([-1.0, -1.0, 1.0])


class GraspGeometry:
    """Grasp poses on one kitchen model (its own scratch ``MjData``)."""

    def __init__(self, env: KitchenEnv):
        self.env = env
        self.model = env.model
        self.data = mujoco.MjData(self.model)
        self._ee = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, kc.ROBOT_EE_SITE)
        self.data.qpos[:] = home_qpos(env.kitchen)  # home hand orientation: "front"
        mujoco.mj_kinematics(self.model, self.data)
        self.front = self.data.site_xmat[self._ee].reshape(3, 3).copy()
        fingers = {self.model.body(name).id for name in kc.GRIPPER_BODIES}
        base = self.model.body(kc.ROBOT_BASE_BODY).id
        self._robot_bodies = {b for b in range(self.model.nbody) if self._descends(b, base)}
        self._hand_bodies = fingers | {int(self.model.site_bodyid[self._ee])}
        self._finger_geoms = {
            b: {g for g in range(self.model.ngeom) if self.model.geom_bodyid[g] == b}
            for b in fingers
        }

    def site_body_pose(self, qpos: np.ndarray, site: str) -> tuple[np.ndarray, np.ndarray]:
        """``(world_from_body 4x4, site position in the body frame [3])`` at ``qpos``."""
        sid = self.env.kitchen.site_id(site)
        body = int(self.model.site_bodyid[sid])
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        pose = np.eye(4)
        pose[:3, :3] = self.data.xmat[body].reshape(3, 3)
        pose[:3, 3] = self.data.xpos[body]
        return pose, np.asarray(self.model.site_pos[sid], np.float64).copy()

    def ee_pose(self, qpos: np.ndarray) -> np.ndarray:
        """world_from_ee (4x4) at ``qpos``."""
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        out = np.eye(4)
        out[:3, :3] = self.data.site_xmat[self._ee].reshape(3, 3)
        out[:3, 3] = self.data.site_xpos[self._ee]
        return out

    def grasp_pose(self, state: KitchenState, spec: GraspSpec) -> Float[np.ndarray, "4 4"]:
        """world_from_ee at the grasp of ``spec`` in ``state`` (module docs for orientations)."""
        body_pose, site_local = self.site_body_pose(state.qpos, spec.site)
        site = body_pose[:3, :3] @ site_local + body_pose[:3, 3]
        if spec.approach == "front":
            rot = self.front.copy()
        else:
            body_rot = body_pose[:3, :3]
            if spec.approach == "top_down":
                z, y = -body_rot[:, 2], body_rot[:, 1]
            else:  # "side": horizontal approach across the bar, away from the robot's base
                z, y = body_rot[:, 1], body_rot[:, 2]
                if np.dot(z, site - BASE_POS) < 0:
                    z = -z
            rot = np.stack([np.cross(y, z), y, z], axis=1)
            current = self.ee_pose(state.qpos)[:3, :3]
            if np.trace(current.T @ _half_turn(rot)) > np.trace(current.T @ rot):
                rot = _half_turn(rot)
        out = np.eye(4)
        out[:3, :3] = rot
        out[:3, 3] = site - spec.depth_offset * rot[:, 2]
        return out

    def bar_axis(self, state: KitchenState, spec: GraspSpec) -> Float[np.ndarray, " 3"]:
        """World direction of the grasped bar: vertical door handles, the kettle handle's body x."""
        if spec.approach == "front":
            return np.array([0.0, 0.0, 1.0])
        body_pose, _ = self.site_body_pose(state.qpos, spec.site)
        return body_pose[:3, 0].copy()

    def grasp_candidates(
        self,
        state: KitchenState,
        spec: GraspSpec,
        about_bar_deg: tuple[float, ...] = (0, 15, -15, 30, -30, 45, -45),
        tilt_deg: tuple[float, ...] = (0, 15, -15, 30, -30),
    ) -> Float[np.ndarray, "K 4 4"]:
        """Grasp poses equivalent for a bar: the nominal :meth:`grasp_pose` turned about the bar's
        axis (the fingers still close across it), tilted about the closing axis, and with the
        fingers swapped; ordered from the nominal outwards (smallest total turn first)."""
        nominal = self.grasp_pose(state, spec)
        site = nominal[:3, 3] + spec.depth_offset * nominal[:3, 2]
        bar = self.bar_axis(state, spec)
        combos = [(a, b, f) for a in about_bar_deg for b in tilt_deg for f in (0, 1)]
        combos.sort(key=lambda c: abs(c[0]) + abs(c[1]) + 90 * c[2])
        out = np.zeros((len(combos), 4, 4))
        for i, (a, b, flip) in enumerate(combos):
            rot = axis_rotation(bar, np.radians(a)) @ nominal[:3, :3]
            rot = rot @ axis_rotation(np.array([0.0, 1.0, 0.0]), np.radians(b))
            if flip:
                rot = _half_turn(rot)
            out[i] = np.eye(4)
            out[i, :3, :3] = rot
            out[i, :3, 3] = site - spec.depth_offset * rot[:, 2]
        return out

    def robot_collides(
        self,
        scene: np.ndarray,
        arm: np.ndarray,
        allowed: set[int],
        penetration: float = 0.002,
    ) -> bool:
        """Whether the robot, with arm joints ``arm [7]`` and the gripper open in the scene
        ``scene [nq]``, penetrates the kitchen or itself by more than ``penetration`` m anywhere
        except where its hand or fingers touch the ``allowed`` bodies (the grasped object)."""
        m, d = self.model, self.data
        d.qpos[:] = scene
        d.qpos[:7] = arm
        d.qpos[7:9] = kc.ROBOT_POSITION_BOUNDS[7][1]
        mujoco.mj_kinematics(m, d)
        mujoco.mj_collision(m, d)
        for c in d.contact[: d.ncon]:
            if c.dist > -penetration:
                continue
            b1, b2 = int(m.geom_bodyid[c.geom1]), int(m.geom_bodyid[c.geom2])
            r1, r2 = b1 in self._robot_bodies, b2 in self._robot_bodies
            if not (r1 or r2):
                continue  # kitchen against kitchen (the kettle on its burner)
            if r1 and r2:
                return True  # the arm folded onto itself
            robot, other = (b1, b2) if r1 else (b2, b1)
            if other in allowed and robot in self._hand_bodies:
                continue
            return True
        return False

    def finger_contacts(self, state: KitchenState, bodies: set[int]) -> int:
        """How many of the two fingers touch any geom of ``bodies`` in ``state``."""
        m, d = self.model, self.data
        d.qpos[:] = state.qpos
        d.qvel[:] = state.qvel
        mujoco.mj_forward(m, d)
        touching = set()
        for c in d.contact[: d.ncon]:
            b1, b2 = int(m.geom_bodyid[c.geom1]), int(m.geom_bodyid[c.geom2])
            for finger in self._finger_geoms:
                if (b1 == finger and b2 in bodies) or (b2 == finger and b1 in bodies):
                    touching.add(finger)
        return len(touching)

    def _descends(self, body: int, root: int) -> bool:
        while body > 0:
            if body == root:
                return True
            body = int(self.model.body_parentid[body])
        return False

    def object_bodies(self, site: str) -> set[int]:
        """The body holding ``site`` and its descendants (what a grasp of the site can touch)."""
        root = int(self.model.site_bodyid[self.env.kitchen.site_id(site)])
        return {b for b in range(self.model.nbody) if self._descends(b, root)}

    def is_grasped(self, state: KitchenState, spec: GraspSpec, min_width: float = 0.004) -> bool:
        """Both fingers touch the object of ``spec`` and the gripper is not shut."""
        if float(state.qpos[7:9].sum()) < min_width:
            return False
        return self.finger_contacts(state, self.object_bodies(spec.site)) == 2


def line_poses(start: np.ndarray, end: np.ndarray, step: float = 0.01) -> np.ndarray:
    """Poses ``[n, 4, 4]`` from ``start`` (excluded) to ``end`` (included) along the straight
    line between their positions, at most ``step`` m apart, with ``end``'s orientation."""
    dist = float(np.linalg.norm(end[:3, 3] - start[:3, 3]))
    n = max(1, int(np.ceil(dist / step)))
    out = np.repeat(end[None], n, axis=0)
    for k in range(n):
        out[k, :3, 3] = start[:3, 3] + (end[:3, 3] - start[:3, 3]) * (k + 1) / n
    return out


def pre_grasp_pose(grasp: Float[np.ndarray, "4 4"], distance: float) -> Float[np.ndarray, "4 4"]:
    """The grasp pose moved ``distance`` m back along its approach (z) axis."""
    pre = np.asarray(grasp, np.float64).copy()
    pre[:3, 3] -= distance * pre[:3, 2]
    return pre


def on_approach_line(
    ee: Float[np.ndarray, "4 4"],
    finger_opening: float,
    grasp: Float[np.ndarray, "4 4"],
    pre_grasp: float,
) -> bool:
    """Whether an open hand at ``ee`` (``world_from_ee``; ``finger_opening`` the sum of the two
    finger joints, m) lies on the straight line from the pre-grasp pose (``pre_grasp`` m back
    along the approach axis) to ``grasp``, turned like it: within 1 cm of the line, 0.1 rad of
    the grasp's rotation, and between 1 cm before the pre-grasp pose and 5 mm past the grasp.
    An interrupted approach then goes on (:func:`approach_plan` with ``start``) instead of
    starting again."""
    if finger_opening < GRIPPER_OPEN - 0.01:
        return False
    if np.linalg.norm(rotation_error(grasp[:3, :3], ee[:3, :3])) > 0.1:
        return False
    offset = grasp[:3, :3].T @ (ee[:3, 3] - grasp[:3, 3])
    return float(np.linalg.norm(offset[:2])) < 0.01 and -pre_grasp - 0.01 < offset[2] < 0.005


def approach_plan(
    grasp: Float[np.ndarray, "4 4"],
    *,
    pre_grasp: float = 0.10,
    start: Float[np.ndarray, "4 4"] | None = None,
) -> PosePlan:
    """Open gripper at the pre-grasp pose (``pre_grasp`` m back along the approach axis; skipped
    when ``start`` is given: a hand already on the approach line), a straight approach to
    ``grasp`` at most 1 cm per waypoint, then closing there."""
    grasp = np.asarray(grasp, np.float64)
    if grasp.shape != (4, 4) or not np.all(np.isfinite(grasp)):
        raise ShapeError(f"a grasp pose is a finite 4x4 matrix, got shape {grasp.shape}")
    pre = pre_grasp_pose(grasp, pre_grasp)
    poses = [pre[None]] if start is None else []
    line = line_poses(pre if start is None else np.asarray(start, np.float64), grasp)
    poses += [line, grasp[None]]
    gripper = [GRIPPER_OPEN] * (len(line) + (start is None)) + [GRIPPER_CLOSED]
    return PosePlan(np.concatenate(poses), np.asarray(gripper, np.float64))


def carry_and_release(
    carry,
    *,
    release: bool = True,
    retreat: float = 0.08,
    grasp: Float[np.ndarray, "4 4"] | None = None,
) -> PosePlan:
    """The carry poses (world_from_ee: ``[T, 4, 4]``, ``[T, 7]`` wxyz_xyz or a batched
    ``jaxlie.SE3``) with a closed gripper, then (``release``) opening in place (at the last carry
    pose, or at ``grasp`` for an empty carry) and a straight retreat of ``retreat`` m back along
    the approach axis."""
    empty = np.size(getattr(carry, "wxyz_xyz", carry)) == 0
    carry = np.zeros((0, 4, 4)) if empty else as_pose_matrices(carry)
    end = carry[-1] if len(carry) else grasp
    if end is None:
        raise ConfigError("a carry needs at least one pose (or the grasp pose)")
    poses, gripper = [carry], [GRIPPER_CLOSED] * len(carry)
    if release:
        poses.append(np.asarray(end, np.float64)[None])
        gripper.append(GRIPPER_OPEN)
        if retreat > 0:
            back = pre_grasp_pose(end, retreat)
            retreat_poses = line_poses(end, back)
            poses.append(retreat_poses)
            gripper += [GRIPPER_OPEN] * len(retreat_poses)
    return PosePlan(np.concatenate(poses), np.asarray(gripper, np.float64))


def concat_plans(*plans: PosePlan) -> PosePlan:
    """One :class:`PosePlan` running ``plans`` one after the other."""
    return PosePlan(
        np.concatenate([as_pose_matrices(p.ee_poses) for p in plans]),
        np.concatenate([np.asarray(p.gripper, np.float64) for p in plans]),
    )


def grasp_and_carry(
    grasp: Float[np.ndarray, "4 4"],
    carry,
    *,
    pre_grasp: float = 0.10,
    retreat: float = 0.08,
    start: Float[np.ndarray, "4 4"] | None = None,
    release: bool = True,
) -> PosePlan:
    """The whole pose plan of a grasp: :func:`approach_plan` then :func:`carry_and_release`.

    ``carry`` are the hand's world_from_ee poses while it holds the object (``[T, 4, 4]``,
    ``[T, 7]`` wxyz_xyz, or a batched ``jaxlie.SE3``: a planner's ``ee_poses``, whose first pose
    is normally ``grasp``)."""
    return concat_plans(
        approach_plan(grasp, pre_grasp=pre_grasp, start=start),
        carry_and_release(carry, release=release, retreat=retreat, grasp=grasp),
    )


def select_grasp(
    kinematics: PandaKinematics,
    geometry: GraspGeometry,
    state: KitchenState,
    candidates: Float[np.ndarray, "K 4 4"],
    carry_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    spec: GraspSpec,
    *,
    stride: int = 2,
) -> tuple[Float[np.ndarray, "4 4"], float]:
    """The first candidate grasp (in the given order) whose path the arm can follow: the joint
    move from the current arm to the pre-grasp, the approach, and every ``stride``-th carry pose
    (``carry_fn(grasp) -> (poses [T, 4, 4], scene qpos [T, nq])``) along one continuous IK path,
    without the robot hitting the scene (:meth:`GraspGeometry.robot_collides`). If none clears
    all of it, the one that gets furthest. Returns the grasp and that fraction (1.0: all)."""
    best, best_frac = candidates[0], -1.0
    arm0 = state.qpos[:7]
    allowed = geometry.object_bodies(spec.site)
    for grasp in candidates:
        carry, scenes = carry_fn(grasp)
        keep = np.unique(np.r_[np.arange(0, len(carry), stride), len(carry) - 1])
        path = np.concatenate(
            [pre_grasp_pose(grasp, spec.pre_grasp)[None], grasp[None], carry[keep]]
        )
        path_scenes = np.concatenate([state.qpos[None], state.qpos[None], scenes[keep]])
        n, joints = kinematics.reachable_prefix(path, arm0)
        clear = 0
        if n:
            move = arm0[None] + np.linspace(0.0, 1.0, 8)[:, None] * (joints[0] - arm0)[None]
            if not any(geometry.robot_collides(state.qpos, q, allowed) for q in move):
                for q, scene in zip(joints, path_scenes[:n], strict=True):
                    if geometry.robot_collides(scene, q, allowed):
                        break
                    clear += 1
        frac = clear / len(path)
        if frac > best_frac:
            best, best_frac = grasp, frac
        if frac >= 1.0:
            break
    return best, best_frac
