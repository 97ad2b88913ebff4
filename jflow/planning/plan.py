"""``jflow plan``: from a predicted flow and the current RGB-D view to robot actions.

Steps (3DFlowAction section 4): check the flow (fit, render, verify, resample), choose a grasp
the arm reaches before, during and after the motion, optimise the end-effector trajectory that
carries the object along the flow, and optimise the joint trajectory through MJX kinematics
(or solve IK per step). Writes
``plan.npz`` (``ee_poses`` [T, 7] wxyz_xyz world_from_ee, ``joint_trajectory`` [T, 7] rad,
``joint_reachable`` [T], ``keypoint_error`` [T] m, ``grasp_pose`` [4, 4], and for the
joint-space optimiser ``joint_keypoint_error`` [T] m and ``joint_limit_margin`` [T] rad),
``plan.json`` (a summary
and the reason when no plan exists) and ``plan.png`` (current view with the planned gripper path
and the flow's keypoints, beside the predicted final view).

The lead wires the CLI: ``PlanCommand`` is the frozen config, ``run_plan(command)`` the function.
Process settings: none. MJX kinematics and the least-squares solves need XLA's CPU fusion
emitters off; their jitted functions set that for themselves (:func:`jflow.runtime.planning_jit`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jflow.errors import GeometryError, JflowError, OutputError


@dataclasses.dataclass(frozen=True)
class PlanCommand:
    """Plan robot actions for a FlowClip (.npz written by ``FlowClip.to_arrays``)."""

    clip: Path
    """The FlowClip record: observation, instruction and (predicted or ground-truth) flow."""
    out: Path = Path("runs/plan")
    """Folder for plan.npz, plan.json and plan.png."""
    num_keypoints: int = 16
    num_grasps: int = 32
    max_attempts: int = 3
    joint_space: bool = True
    """Optimise the joint trajectory through MJX kinematics (smooth, within the joint limits;
    the first call compiles for a few tens of seconds) instead of solving IK per step."""


JOINT_TOLERANCE = 0.01
"""A joint-space solution reaches a step when its keypoints are this close to the flow (m)."""


@dataclasses.dataclass(frozen=True)
class PlanResult:
    """A plan, or ``ok = False`` with the reason no plan exists."""

    ok: bool
    reason: str
    ee_poses: np.ndarray | None = None
    """``[T, 7]`` wxyz_xyz world_from_ee."""
    joint_trajectory: np.ndarray | None = None
    """``[T, 7]`` arm joint angles (rad)."""
    joint_reachable: np.ndarray | None = None
    """``[T]``: the joint trajectory reaches the step (IK within tolerance, or the joint-space
    solution carries the keypoints within ``JOINT_TOLERANCE`` inside the joint limits)."""
    keypoint_error: np.ndarray | None = None
    """``[T]`` mean keypoint error (m) of the SE(3) trajectory."""
    joint_keypoint_error: np.ndarray | None = None
    """``[T]`` mean keypoint error (m) of the joint trajectory's forward kinematics."""
    joint_limit_margin: np.ndarray | None = None
    """``[T]`` smallest distance (rad) of any joint to its limit."""
    grasp_pose: np.ndarray | None = None
    predicted_image: np.ndarray | None = None


def plan_actions(
    flows: Sequence,
    instruction: str,
    observation=None,
    grasps=None,
    *,
    trajectory_config=None,
    check_config=None,
    verifier=None,
    ik_config=None,
    num_grasps: int = 32,
    joint_space: bool = True,
    joint_config=None,
) -> PlanResult:
    """Check, grasp, optimise (module docs). ``flows`` is a sequence of ObjectFlow samples or a
    sampler ``attempt -> flows``; ``grasps`` a :class:`GraspCandidates` (else antipodal grasps
    from the observation's depth and object mask, or head-on surface grasps when the view shows
    no opposing surfaces). Problems that make a plan impossible (all
    flows rejected, no reachable grasp, a static flow) come back as ``ok = False`` with the
    reason.

    The joint trajectory: with ``joint_space`` the joint-space optimiser
    (:mod:`jflow.planning.joint_trajectory`, ``joint_config``) starts from the IK solution of
    the chosen grasp; otherwise IK solves each step of the SE(3) trajectory on its own."""
    import jax.numpy as jnp
    import jaxlie

    from jflow.planning.grasps import (
        antipodal_grasps,
        filter_reachable_grasps,
        normals_from_depth,
        object_motions,
        surface_grasps,
    )
    from jflow.planning.plan_check import PlanCheckConfig, check_plan
    from jflow.planning.reachability import IKConfig, panda_reachability
    from jflow.planning.trajectory import TrajectoryConfig, optimize_trajectory

    trajectory_config = trajectory_config or TrajectoryConfig()
    sampler = flows if callable(flows) else (lambda attempt, f=tuple(flows): f)
    check = check_plan(
        sampler, instruction, observation, verifier, check_config or PlanCheckConfig()
    )
    if not check.accepted:
        return PlanResult(False, check.reason)
    flow = check.flow
    predicted = (
        None
        if check.predicted is None
        else np.asarray(check.predicted.image).clip(0, 255).astype(np.uint8)
    )
    try:
        if grasps is None:
            if observation is None:
                return PlanResult(
                    False, "no grasp candidates and no observation to sample them from"
                )
            pts, nrm = normals_from_depth(observation.depth, observation.intrinsics)
            m = np.asarray(observation.object_mask, bool) & (np.linalg.norm(nrm, axis=-1) > 0)
            cam = np.asarray(observation.camera_pose.as_matrix(), np.float64)
            world_pts = pts[m] @ cam[:3, :3].T + cam[:3, 3]
            world_nrm = nrm[m] @ cam[:3, :3].T
            try:
                grasps = antipodal_grasps(world_pts, world_nrm, num_candidates=num_grasps)
            except GeometryError:  # one view of a front face: approach it head-on instead
                grasps = surface_grasps(world_pts, world_nrm, num_candidates=num_grasps)
        checker = panda_reachability(ik_config or IKConfig())
        reach = filter_reachable_grasps(grasps, object_motions(flow), checker)
        best = reach.best()
        grasp_pose = np.asarray(grasps.poses[best])
        start = jaxlie.SE3.from_matrix(jnp.asarray(grasp_pose, jnp.float32))
        traj = optimize_trajectory(flow, start, trajectory_config)
        joint_error = limit_margin = None
        if joint_space:
            from jflow.planning.joint_trajectory import (
                JointTrajectoryConfig,
                optimize_joint_trajectory,
            )

            joint_config = joint_config or JointTrajectoryConfig(
                num_keypoints=trajectory_config.num_keypoints,
                workspace=trajectory_config.workspace,
            )
            q_start = np.asarray(reach.ik.qpos[best, 0])  # the arm holding the grasp at frame 0
            joint = optimize_joint_trajectory(flow, q_start, joint_config)
            qpos = np.asarray(joint.qpos)
            joint_error = np.asarray(joint.keypoint_error)
            limit_margin = np.asarray(joint.limit_margin)
            reached = (joint_error < JOINT_TOLERANCE) & (limit_margin >= 0)
            miss = "the joint trajectory is off the flow by more than 1 cm at"
        else:
            ik = checker(traj.ee_poses)
            qpos, reached = np.asarray(ik.qpos), np.asarray(ik.reachable)
            miss = "IK misses"
    except GeometryError as err:
        return PlanResult(False, str(err), predicted_image=predicted)
    reason = (
        "plan found"
        if reached.all()
        else f"plan found; {miss} {int((~reached).sum())} of {reached.size} steps"
    )
    return PlanResult(
        ok=True,
        reason=reason,
        ee_poses=np.asarray(traj.ee_poses.wxyz_xyz),
        joint_trajectory=qpos,
        joint_reachable=reached,
        keypoint_error=np.asarray(traj.keypoint_error),
        grasp_pose=grasp_pose,
        predicted_image=predicted,
        joint_keypoint_error=joint_error,
        joint_limit_margin=limit_margin,
    )


def draw_plan(result: PlanResult, observation) -> np.ndarray:
    """``[H, 2W, 3]`` uint8: the current view with the gripper path (green, start to end) and
    the predicted final view; only the current view when nothing was predicted."""
    import cv2
    import jax.numpy as jnp
    import jaxlie

    from jflow.geometry.camera import project_world

    rgb = np.ascontiguousarray(np.asarray(observation.rgb, np.uint8).copy())
    if result.ee_poses is not None:
        pos = jaxlie.SE3(jnp.asarray(result.ee_poses)).translation()
        pix, z = project_world(pos, observation.intrinsics, observation.camera_pose)
        pix = np.asarray(pix)
        for a, b, za in zip(pix[:-1], pix[1:], np.asarray(z)[:-1], strict=True):
            if za > 0 and np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
                cv2.line(rgb, tuple(int(v) for v in a), tuple(int(v) for v in b), (0, 255, 0), 1)
    right = result.predicted_image if result.predicted_image is not None else np.zeros_like(rgb)
    return np.concatenate([rgb, np.asarray(right, np.uint8)], axis=1)


def write_plan(result: PlanResult, out: Path, observation=None) -> list[Path]:
    """Write plan.json (always), plan.npz (when a plan exists) and plan.png (with an observation)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "plan.json"]
        summary = {"ok": result.ok, "reason": result.reason}
        if result.ok:
            summary.update(
                steps=int(result.ee_poses.shape[0]),
                mean_keypoint_error_m=float(np.mean(result.keypoint_error)),
                joint_steps_reachable=int(np.sum(result.joint_reachable)),
            )
            arrays = dict(
                ee_poses=result.ee_poses,
                joint_trajectory=result.joint_trajectory,
                joint_reachable=result.joint_reachable,
                keypoint_error=result.keypoint_error,
                grasp_pose=result.grasp_pose,
            )
            if result.joint_keypoint_error is not None:
                summary.update(
                    joint_mean_keypoint_error_m=float(np.mean(result.joint_keypoint_error)),
                    joint_min_limit_margin_rad=float(np.min(result.joint_limit_margin)),
                )
                arrays.update(
                    joint_keypoint_error=result.joint_keypoint_error,
                    joint_limit_margin=result.joint_limit_margin,
                )
            np.savez(out / "plan.npz", **arrays)
            paths.append(out / "plan.npz")
        (out / "plan.json").write_text(json.dumps(summary, indent=2) + "\n")
        if observation is not None:
            import cv2

            image = draw_plan(result, observation)
            cv2.imwrite(str(out / "plan.png"), image[..., ::-1])
            paths.append(out / "plan.png")
    except OSError as err:
        raise OutputError(f"cannot write the plan to {out}: {err}") from err
    return paths


def run_plan(command: PlanCommand) -> PlanResult:
    """The ``jflow plan`` job: load the clip, plan, write the outputs, print the reason."""
    from jflow.runtime import configure_rendering

    configure_rendering()
    from jflow.data.records_io import decode_record
    from jflow.flow.records import FlowClip
    from jflow.planning.plan_check import Observation, PlanCheckConfig
    from jflow.planning.trajectory import TrajectoryConfig

    try:
        data = command.clip.read_bytes()
    except OSError as err:
        raise JflowError(f"cannot read the clip {command.clip}: {err}") from err
    clip = FlowClip.from_arrays(decode_record(data, str(command.clip)))
    observation = Observation(
        clip.rgb, clip.depth, clip.object_mask, clip.intrinsics, clip.camera_pose
    )
    result = plan_actions(
        [clip.flow],
        clip.instruction,
        observation,
        trajectory_config=TrajectoryConfig(num_keypoints=command.num_keypoints),
        check_config=PlanCheckConfig(max_attempts=command.max_attempts),
        num_grasps=command.num_grasps,
        joint_space=command.joint_space,
    )
    write_plan(result, command.out, observation)
    print(f"{'plan' if result.ok else 'no plan'}: {result.reason} -> {command.out}")
    return result


__all__ = [
    "JOINT_TOLERANCE",
    "PlanCommand",
    "PlanResult",
    "draw_plan",
    "plan_actions",
    "run_plan",
    "write_plan",
]
