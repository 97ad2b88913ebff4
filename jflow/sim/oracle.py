"""A scripted oracle planner: the task's demonstrated object motion, held at the task's grasp.

It stands in for "ground-truth flow -> planner" without jflow.planning: the object's joint path
is the demonstration's (:func:`jflow.sim.demos.object_trajectory` from the current object state
to the goal that :func:`jflow.sim.demos.sample_endpoints` drew for the episode), and the hand
follows the handle rigidly (world_from_ee(t) = world_from_body(t) @ body_from_ee), as
:func:`jflow.sim.demos.robot_trajectory` does kinematically. Unlike those kinematic demos, the
plans here are executed with physics through the env's action interface, so the gripper has to
really pull the door, slide the cabinet or lift the kettle.

:class:`DemoOracle` is a ``plan_fn`` for :func:`jflow.sim.execution.execute_chunks`: from any
state it plans what is left: a grasp (from the pre-grasp pose, or along the approach line when
the open hand is already on it), or, while the object is held (physics contact test), the carry
from the measured hand-object relation, then release and retreat.
"""

from __future__ import annotations

import numpy as np

from jflow.sim.demos import object_trajectory, sample_endpoints
from jflow.sim.env import KitchenEnv, KitchenState
from jflow.sim.execution import PosePlan
from jflow.sim.grasping import (
    GraspGeometry,
    approach_plan,
    carry_and_release,
    concat_plans,
    grasp_spec,
    on_approach_line,
    select_grasp,
)
from jflow.sim.kinematics import PandaKinematics, as_pose_matrices
from jflow.sim.tasks import get_task


def demo_endpoints(
    env: KitchenEnv, task_id: str, seed: int, randomize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(start, goal)`` object qpos values that ``env.reset(task_id, seed)`` draws (the same
    random stream: ``default_rng([seed, 7])`` then ``sample_endpoints``)."""
    task = get_task(task_id)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7])
    return sample_endpoints(env.kitchen, task, rng, randomize)


class DemoOracle:
    """``plan_fn(state) -> PosePlan``: grasp the task's handle and move the object along the
    demonstration's path to the episode's goal.

    Args:
      env: the env being executed (its model gives the kinematics).
      task_id, seed, randomize: the episode (its goal as ``env.reset`` drew it).
      spacing: distance (m) between consecutive hand waypoints along the carry.
      release: open the gripper and back off at the end of the carry.
    """

    def __init__(
        self,
        env: KitchenEnv,
        task_id: str,
        seed: int,
        *,
        randomize: bool = True,
        spacing: float = 0.015,
        release: bool = True,
    ):
        self.env = env
        self.task = get_task(task_id)
        self.spec = grasp_spec(task_id)
        self.geometry = GraspGeometry(env)
        self.start, self.goal = demo_endpoints(env, task_id, seed, randomize)
        self.spacing = spacing
        self.release = release
        self._idx = env.kitchen.qpos_indices(self.task.joints)
        self.plans = 0
        self.kinematics = PandaKinematics()
        self.body_from_grasp: np.ndarray | None = None
        """The chosen grasp in the grasped body's frame (chosen at the first plan, and again when
        the object has moved so far that the arm cannot reach it there)."""
        self.reach = 1.0
        """Fraction of the first plan's path the arm reaches (1.0: the whole of it)."""
        self.failure = ""
        """Why the last call returned ``None`` without success (empty otherwise)."""

    def object_path(self, state: KitchenState, lift: float) -> np.ndarray:
        """Object qpos values ``[T, k]`` from the state's to the goal (the demo's profile), the
        current values excluded, ``spacing`` m apart along the grasp site's path."""
        values = state.qpos[self._idx]
        dense = object_trajectory(self.task, values, self.goal, 64, lift=lift)
        sites = self._site_positions(state.qpos, dense)
        length = float(np.linalg.norm(np.diff(sites, axis=0), axis=1).sum())
        frames = int(np.clip(np.ceil(length / self.spacing), 2, 120))
        return object_trajectory(self.task, values, self.goal, frames, lift=lift)[1:]

    def _site_positions(self, scene: np.ndarray, values: np.ndarray) -> np.ndarray:
        """World positions ``[T, 3]`` of the grasp site for object values ``[T, k]``."""
        qpos = scene.copy()
        out = np.zeros((len(values), 3))
        for t, v in enumerate(values):
            qpos[self._idx] = v
            body, local = self.geometry.site_body_pose(qpos, self.spec.site)
            out[t] = body[:3, :3] @ local + body[:3, 3]
        return out

    def carry_path(
        self, state: KitchenState, body_from_ee: np.ndarray, lift: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hand poses ``[T, 4, 4]`` holding the object along its path to the goal, and the scene
        qpos ``[T, nq]`` of every pose (the object moved, the rest as in ``state``)."""
        values = self.object_path(state, lift)
        poses = np.zeros((len(values), 4, 4))
        scenes = np.repeat(state.qpos[None], len(values), axis=0)
        scenes[:, self._idx] = values
        for t, qpos in enumerate(scenes):
            body, _ = self.geometry.site_body_pose(qpos, self.spec.site)
            poses[t] = body @ body_from_ee
        return poses, scenes

    def carry(self, state: KitchenState, body_from_ee: np.ndarray, lift: float) -> np.ndarray:
        """Hand poses ``[T, 4, 4]`` holding the object along its path to the goal."""
        return self.carry_path(state, body_from_ee, lift)[0]

    def _lift(self, state: KitchenState) -> float:
        """Arc height for the rest of a free body's path: the demo's lift, less the height
        already gained, over the first half of the horizontal way; none after it (the rest
        descends straight to the goal)."""
        if not self.task.is_free_body:
            return 0.0
        values = state.qpos[self._idx]
        total = float(np.linalg.norm(self.start[:2] - self.goal[:2]))
        left = float(np.linalg.norm(values[:2] - self.goal[:2]))
        if total < 1e-6 or left < 0.5 * total:
            return 0.0
        return max(self.task.lift - max(float(values[2] - self.goal[2]), 0.0), 0.0)

    def _on_approach_line(self, state: KitchenState, grasp: np.ndarray) -> bool:
        ee = self.geometry.ee_pose(state.qpos)
        return on_approach_line(ee, float(state.qpos[7:9].sum()), grasp, self.spec.pre_grasp)

    def _within_reach(
        self, state: KitchenState, approach: PosePlan | None, carry: np.ndarray
    ) -> PosePlan | None:
        """The plan (approach, carry, release) cut where the arm's reach ends: the approach must
        be reachable whole; the carry stops at its last reachable pose and is released there."""
        seed = state.qpos[:7]
        if approach is not None:
            poses = as_pose_matrices(approach.ee_poses)
            n, joints = self.kinematics.reachable_prefix(poses, seed)
            if n < len(poses):
                self.failure = f"approach pose {n} of {len(poses)} is out of reach"
                return None
            seed = joints[-1]
        n, joints = self.kinematics.reachable_prefix(carry, seed)
        if n == 0 and approach is None:
            self.failure = "the next carry pose is out of reach"
            return None
        tail = carry_and_release(
            carry[:n], release=self.release, retreat=self.spec.retreat, grasp=carry[0]
        )
        if n:
            tail_poses = as_pose_matrices(tail.ee_poses)
            m, _ = self.kinematics.reachable_prefix(tail_poses[n:], joints[-1])
            tail = PosePlan(tail_poses[: n + m], np.asarray(tail.gripper)[: n + m])
        if approach is None:
            return tail
        return concat_plans(approach, tail) if n else approach

    def __call__(self, state: KitchenState) -> PosePlan | None:
        """The rest of the task from ``state``; ``None`` once the object is at its goal (success
        test) and the hand has let go, or when the arm cannot reach the grasp (``failure``
        says why)."""
        grasped = self.geometry.is_grasped(state, self.spec)
        if not grasped and state.success:
            return None
        self.plans += 1
        body, _ = self.geometry.site_body_pose(state.qpos, self.spec.site)
        lift = self._lift(state)
        if grasped:
            body_from_ee = np.linalg.inv(body) @ self.geometry.ee_pose(state.qpos)
            return self._within_reach(state, None, self.carry(state, body_from_ee, lift))
        fresh = self.body_from_grasp is None
        if fresh:
            self._select_grasp(state, body, lift)
        plan = self._grasp_plan(state, body, lift)
        if plan is None and not fresh:  # the object moved (a dropped kettle): choose again
            self._select_grasp(state, body, lift)
            plan = self._grasp_plan(state, body, lift)
        return plan

    def _select_grasp(self, state: KitchenState, body: np.ndarray, lift: float) -> None:
        candidates = self.geometry.grasp_candidates(state, self.spec)
        grasp, self.reach = select_grasp(
            self.kinematics,
            self.geometry,
            state,
            candidates,
            lambda g: self.carry_path(state, np.linalg.inv(body) @ g, lift),
            self.spec,
        )
        self.body_from_grasp = np.linalg.inv(body) @ grasp

    def _grasp_plan(self, state: KitchenState, body: np.ndarray, lift: float) -> PosePlan | None:
        grasp = body @ self.body_from_grasp
        start = self.geometry.ee_pose(state.qpos) if self._on_approach_line(state, grasp) else None
        approach = approach_plan(grasp, pre_grasp=self.spec.pre_grasp, start=start)
        return self._within_reach(state, approach, self.carry(state, self.body_from_grasp, lift))
