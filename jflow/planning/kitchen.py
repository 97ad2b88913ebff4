"""Planning problems from rendered Franka Kitchen episodes: the ground-truth object flow and a
grasp the arm holds at frame 0 (the issue's acceptance cases, used by tests and docs).

For tasks with a scripted robot demo (microwave, slide and hinge cabinet doors) the grasp is the
demo's own: its arm configuration at frame 0 and the end-effector pose it gives. The kettle has
no robot demo; its grasp is top-down above the highest visible points of the kettle at frame 0
(the top of the handle), with the arm configuration from the C-API reference IK. Everything is
in the kitchen's world frame (meters, radians). Rendering needs ``MUJOCO_GL`` set before MuJoCo
starts (``jflow.runtime.configure_rendering``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jflow.errors import GeometryError
from jflow.flow.records import ObjectFlow

RIGID_TASKS: tuple[str, ...] = (
    "open_microwave",
    "open_slide_cabinet",
    "open_hinge_cabinet",
    "move_kettle_to_top_left_burner",
)
"""Kitchen tasks whose object moves rigidly: the microwave door, the two cabinet doors, the
kettle."""

TOP_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
"""``world_from_ee`` rotation of a top-down grasp (the approach axis, EE z, points down)."""


@dataclasses.dataclass(frozen=True)
class KitchenCase:
    """One planning problem from a kitchen episode."""

    task_id: str
    instruction: str
    flow: ObjectFlow
    """Ground-truth object flow, world frame."""
    q_start: np.ndarray
    """``[7]`` arm joint angles (rad) holding the grasp at frame 0."""
    grasp: np.ndarray
    """``[4, 4]`` ``world_from_ee`` of the grasp at frame 0 (forward kinematics of ``q_start``)."""
    demo_qpos: np.ndarray | None
    """``[T, 7]`` the scripted robot demo's arm trajectory, when the task has one."""


def kitchen_case(
    task_id: str,
    seed: int = 0,
    *,
    frames: int = 16,
    resolution: int = 64,
    num_points: int = 128,
) -> KitchenCase:
    """Render ``task_id`` (robot demo when the task has one, else human demo) and build its
    case. Raises :class:`GeometryError` when no grasp can be found for the kettle."""
    from jflow.planning.joint_trajectory import forward_kinematics_numpy
    from jflow.planning.reachability import IKConfig, mujoco_reference_ik
    from jflow.sim.episodes import render_episode
    from jflow.sim.tasks import get_task

    kind = "robot" if get_task(task_id).supports_robot_demo else "human"
    episode = render_episode(
        task_id, seed, kind=kind, frames=frames, resolution=resolution, num_points=num_points
    )
    flow = episode.clip.flow
    demo = None
    if kind == "robot":
        demo = np.asarray(episode.robot_qpos[:, :7], np.float64)
        q_start = demo[0]
    else:
        visible = np.asarray(flow.points[0])[np.asarray(flow.visible[0])]
        if len(visible) < 3:
            raise GeometryError(f"{task_id}: fewer than 3 visible points at frame 0")
        top = visible[visible[:, 2] >= np.quantile(visible[:, 2], 0.9)].mean(axis=0)
        q, _, _, reached = mujoco_reference_ik(top[None], TOP_DOWN[None], IKConfig())
        if not reached[0]:
            raise GeometryError(f"{task_id}: the top-down grasp at {top.round(3)} is out of reach")
        q_start = q[0]
    return KitchenCase(
        task_id=task_id,
        instruction=episode.clip.instruction,
        flow=flow,
        q_start=q_start,
        grasp=forward_kinematics_numpy(q_start),
        demo_qpos=demo,
    )


__all__ = ["RIGID_TASKS", "TOP_DOWN", "KitchenCase", "kitchen_case"]
